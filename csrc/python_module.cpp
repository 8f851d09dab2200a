// `import actattn._C` loads this library, whose static initialisers register the ops with torch. The
// ops are reached through torch.ops.actattn; the module itself only carries the option names
// (SCORE_ACTIVATIONS, FEATURE_MAPS, CAUSAL_ALIGNMENTS) from names.h, so that Python reads the table C++ parses with,
// and cpu_isa(), the build of the CPU kernels that runs (kernels/cpu_isa.h).
#include <Python.h>

#include <exception>

#include "../kernels/cpu_isa.h"
#include "names.h"

namespace {

template <typename Enum, size_t N>
PyObject* names_tuple(const std::array<actattn::NamedChoice<Enum>, N>& choices) {
  PyObject* tuple = PyTuple_New(N);
  if (tuple == nullptr) return nullptr;
  for (size_t i = 0; i < N; ++i) {
    PyObject* name = PyUnicode_FromString(choices[i].name);
    if (name == nullptr) {
      Py_DECREF(tuple);
      return nullptr;
    }
    PyTuple_SET_ITEM(tuple, i, name);  // steals the reference
  }
  return tuple;
}

template <typename Enum, size_t N>
bool add_names(PyObject* module, const char* attribute, const std::array<actattn::NamedChoice<Enum>, N>& choices) {
  PyObject* tuple = names_tuple(choices);
  if (tuple == nullptr) return false;
  if (PyModule_AddObject(module, attribute, tuple) < 0) {  // steals the reference on success only
    Py_DECREF(tuple);
    return false;
  }
  return true;
}

PyObject* cpu_isa(PyObject*, PyObject*) {
  try {
    return PyUnicode_FromString(actattn::cpu_isa());
  } catch (const std::exception& error) {  // ACTATTN_CPU_ISA names a build this CPU cannot run
    PyErr_SetString(PyExc_RuntimeError, error.what());
    return nullptr;
  }
}

PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "The build of the CPU kernels that runs: avx512, avx2 or baseline."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "actattn's registered torch operators", -1,
                                          methods};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  if (!add_names(module, "SCORE_ACTIVATIONS", actattn::kScoreActivations) ||
      !add_names(module, "FEATURE_MAPS", actattn::kFeatureMaps) ||
      !add_names(module, "CAUSAL_ALIGNMENTS", actattn::kCausalAlignments)) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}
