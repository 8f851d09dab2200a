// `import actattn._C` loads this library, whose static initialisers register the ops with torch.
// The module itself is empty: everything is reached through torch.ops.actattn.
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "actattn's registered torch operators", -1,
                                          nullptr};
  return PyModule_Create(&module_def);
}
}
