# Fails when any source under src/ calls nlohmann's dump() directly: text
# from outside may be invalid UTF-8, and a plain dump throws on it. Use
# virtcap::dump_json (src/common/json_text.h), the one place that may call it.
# Usage: cmake -DSRC_DIR=<repo>/src -P no_bare_dump.cmake
file(GLOB_RECURSE _files ${SRC_DIR}/*.cpp ${SRC_DIR}/*.h ${SRC_DIR}/*.hpp)
set(_bad "")
foreach(_f IN LISTS _files)
  if(_f MATCHES "/common/json_text\\.cpp$")
    continue()
  endif()
  file(STRINGS ${_f} _hits REGEX "(\\.|->)[ \t]*dump[ \t]*\\(")
  foreach(_h IN LISTS _hits)
    string(APPEND _bad "\n  ${_f}: ${_h}")
  endforeach()
endforeach()
if(_bad)
  message(FATAL_ERROR "bare JSON dump() calls (use virtcap::dump_json from common/json_text.h):${_bad}")
endif()
message(STATUS "no bare dump() in ${SRC_DIR}")
