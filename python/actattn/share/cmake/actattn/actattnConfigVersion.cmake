# The version of the Python package this file comes with (actattn/__init__.py: the one place it is
# written); a request is met by the same major.minor and a patch at least as new (CMake's SameMinorVersion).
file(STRINGS "${CMAKE_CURRENT_LIST_DIR}/../../../__init__.py" _actattn_version_line REGEX "^__version__ = ")
string(REGEX MATCH "[0-9]+\\.[0-9]+\\.[0-9]+" PACKAGE_VERSION "${_actattn_version_line}")
unset(_actattn_version_line)

set(PACKAGE_VERSION_COMPATIBLE FALSE)
if(PACKAGE_FIND_VERSION)
  string(REGEX MATCH "^[0-9]+\\.[0-9]+" _actattn_major_minor "${PACKAGE_VERSION}")
  if("${PACKAGE_FIND_VERSION_MAJOR}.${PACKAGE_FIND_VERSION_MINOR}" VERSION_EQUAL _actattn_major_minor
     AND NOT PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION)
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
    if(PACKAGE_VERSION VERSION_EQUAL PACKAGE_FIND_VERSION)
      set(PACKAGE_VERSION_EXACT TRUE)
    endif()
  endif()
  unset(_actattn_major_minor)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
