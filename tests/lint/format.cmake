# Fails when a C++ file is not as clang-format-14 would write it (.clang-format
# at the root; issue 20, item 8). X-macro tables are fenced with
# `// clang-format off` / `// clang-format on`. tests/compile_fail/ is left as
# written: its cases are about the compiler's first diagnostic, not layout.
# Fix with: clang-format-14 -i FILE...
# Usage: cmake -DCLANG_FORMAT=<clang-format-14> -DROOT=<repo> -P format.cmake
file(GLOB_RECURSE _files ${ROOT}/src/*.cpp ${ROOT}/src/*.h ${ROOT}/include/*.h ${ROOT}/tests/*.cpp
     ${ROOT}/tests/*.h ${ROOT}/bench/*.cpp ${ROOT}/bench/*.h)
list(FILTER _files EXCLUDE REGEX "/tests/compile_fail/")
list(SORT _files)
execute_process(COMMAND ${CLANG_FORMAT} --dry-run --Werror ${_files} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out
                ERROR_VARIABLE _err)
if(NOT _rc EQUAL 0)
  string(REGEX MATCHALL "[^\n]*: error: code should be clang-formatted[^\n]*" _bad "${_err}")
  set(_files_bad "")
  foreach(_line IN LISTS _bad)
    string(REGEX REPLACE ":[0-9]+:[0-9]+: error.*" "" _f "${_line}")
    list(APPEND _files_bad "${_f}")
  endforeach()
  list(REMOVE_DUPLICATES _files_bad)
  list(JOIN _files_bad "\n  " _list)
  message(FATAL_ERROR "not clang-formatted (run clang-format-14 -i on them):\n  ${_list}\n${_out}")
endif()
list(LENGTH _files _n)
message(STATUS "${_n} files clang-formatted")
