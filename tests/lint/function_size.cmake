# Fails when a function under src/ or include/ is over 80 lines (docs/design.md,
# "Modules"): split it along its seams. The scan is function_size.awk.
# Usage: cmake -DAWK=<awk> -DROOT=<repo> -P function_size.cmake
file(GLOB_RECURSE _files ${ROOT}/src/*.cpp ${ROOT}/src/*.h ${ROOT}/include/*.h)
list(SORT _files)
execute_process(COMMAND ${AWK} -v MAX=80 -f ${CMAKE_CURRENT_LIST_DIR}/function_size.awk ${_files}
                RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "functions over 80 lines (split them along their seams):\n${_out}${_err}")
endif()
list(LENGTH _files _n)
message(STATUS "no function over 80 lines in ${_n} files")
