# find_package(actattn) for the library the Python package carries (pip install actattn): point CMake at
#   CMAKE_PREFIX_PATH="$(python -c 'import actattn; print(actattn.cmake_prefix_path)')"
# to get the imported target actattn::actattn: actattn/lib/libactattn.so, the header <actattn/actattn.h>
# (actattn/include) and the LibTorch of the torch package installed next to actattn, the one the library
# was built against. (A CMake build of actattn installs its own, generated, config: see CMakeLists.txt.)
get_filename_component(_actattn_package "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

include(CMakeFindDependencyMacro)
find_dependency(Torch HINTS "${_actattn_package}/../torch/share/cmake/Torch")

if(NOT TARGET actattn::actattn)
  add_library(actattn::actattn SHARED IMPORTED)
  set_target_properties(actattn::actattn PROPERTIES
    IMPORTED_LOCATION "${_actattn_package}/lib/libactattn.so"
    INTERFACE_INCLUDE_DIRECTORIES "${_actattn_package}/include"
    INTERFACE_LINK_LIBRARIES "${TORCH_LIBRARIES}"
    # The ops register themselves when the library loads: keep it even if a program calls none of its
    # functions directly.
    INTERFACE_LINK_OPTIONS "LINKER:--no-as-needed")
endif()
if(NOT EXISTS "${_actattn_package}/lib/libactattn.so")
  set(actattn_FOUND FALSE)
  set(actattn_NOT_FOUND_MESSAGE "${_actattn_package}/lib/libactattn.so is missing: actattn is not built")
endif()
unset(_actattn_package)
