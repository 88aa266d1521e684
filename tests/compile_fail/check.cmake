# Usage: cmake -DCXX=... -DSRC=case.cpp -DINCLUDES=a;b [-DEXPECT_REJECT=ON] -P check.cmake
#
# A case with a "// EXPECT-ERROR: <regex>" line must fail to compile, and the
# FIRST diagnostic "error:" line must match <regex>. Only diagnostic lines
# count: the compiler runs with -fno-diagnostics-show-caret, so the source
# line it would echo back (which may contain the expected text) is never
# matched. A case without the line is a control that must compile.
#
# EXPECT_REJECT=ON inverts the verdict for a wrong-reason control: the case
# must fail to compile, but NOT with its expected first error; the harness
# passing it would mean the harness cannot tell the right failure from any
# failure.
file(READ ${SRC} _text)
set(_args -std=c++20 -fsyntax-only -fno-diagnostics-show-caret -fdiagnostics-color=never)
foreach(_inc IN LISTS INCLUDES)
  list(APPEND _args -I${_inc})
endforeach()
execute_process(COMMAND ${CMAKE_COMMAND} -E env LC_ALL=C ${CXX} ${_args} ${SRC}
                RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)

# verdict: compiled | right_error | wrong_error
set(_first "")
string(REGEX MATCH "[^\n]*: (fatal )?error: [^\n]*" _first "${_err}")
if(_rc EQUAL 0)
  set(_verdict compiled)
else()
  set(_verdict wrong_error)
endif()
string(REGEX MATCH "// EXPECT-ERROR: ([^\n]*)" _m "${_text}")
set(_expect "${CMAKE_MATCH_1}")
if(_m AND NOT _rc EQUAL 0 AND _first)
  # Match only the message, after "error: ", not the file name before it.
  string(REGEX REPLACE "^.*: (fatal )?error: " "" _message "${_first}")
  if(_message MATCHES "${_expect}")
    set(_verdict right_error)
  endif()
endif()

if(EXPECT_REJECT)
  if(NOT _m)
    message(FATAL_ERROR "wrong-reason control ${SRC} has no EXPECT-ERROR line")
  endif()
  if(_verdict STREQUAL wrong_error)
    message(STATUS "harness rejects the wrong-reason control, as it must (first error: ${_first})")
    return()
  endif()
  message(FATAL_ERROR "the harness would accept ${SRC} (${_verdict}), which fails for the wrong reason:\n${_err}")
endif()

if(NOT _m)
  # A control case: it must compile.
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "control case ${SRC} failed to compile:\n${_err}")
  endif()
  message(STATUS "control case compiled")
  return()
endif()
if(_verdict STREQUAL compiled)
  message(FATAL_ERROR "${SRC} compiled, but it must not (expected: ${_expect})")
endif()
if(_verdict STREQUAL wrong_error)
  message(FATAL_ERROR "${SRC} failed to compile, but its first error is not the expected '${_expect}':\n"
                      "first error: ${_first}\n\nall output:\n${_err}")
endif()
message(STATUS "failed to compile as expected: ${_first}")
