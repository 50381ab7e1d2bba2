# The libFuzzer harnesses (tests/fuzz/, docs/reliability.md) from the main build. libFuzzer is
# clang's: the harnesses are their own project (tests/fuzz/CMakeLists.txt), configured with clang
# as an ExternalProject in <build>/fuzz. EMBER_FUZZ: AUTO (default: in the Asan build, when clang
# with -fsanitize=fuzzer is found), ON (required), OFF.
#   ctest -R fuzz        each harness for FUZZ_CTEST_SECONDS (10) on its seed corpus, and the
#                        regression inputs (tests/fuzz/regress/) replayed
#   make fuzz            the same harnesses for FUZZ_SECONDS each (tests/fuzz/run.sh)
set(EMBER_FUZZ AUTO CACHE STRING "Build the libFuzzer harnesses (AUTO: in the Asan build, ON, OFF)")
set(EMBER_FUZZ_HARNESSES config ckpt idx tokens loader_state ddprun_args train_args)

set(fuzz_wanted FALSE)
if(EMBER_FUZZ STREQUAL "ON" OR (EMBER_FUZZ STREQUAL "AUTO" AND CMAKE_BUILD_TYPE STREQUAL "Asan"))
  set(fuzz_wanted TRUE)
endif()
set(fuzz_ok FALSE)
if(fuzz_wanted)
  find_program(EMBER_FUZZ_CC NAMES clang clang-14)
  if(EMBER_FUZZ_CC)
    # Compiles and links a fuzz target: clang alone is not enough, libFuzzer's runtime
    # (libclang-rt-14-dev on Debian) must be there too.
    set(probe ${CMAKE_CURRENT_BINARY_DIR}/fuzz_probe.c)
    file(WRITE ${probe} "#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput("
                        "const uint8_t *d, size_t n) { return 0; }\n")
    execute_process(COMMAND ${EMBER_FUZZ_CC} -fsanitize=fuzzer,address,undefined ${probe} -o
                            ${CMAKE_CURRENT_BINARY_DIR}/fuzz_probe
                    RESULT_VARIABLE probe_rc OUTPUT_QUIET ERROR_VARIABLE probe_err)
    if(probe_rc EQUAL 0)
      set(fuzz_ok TRUE)
    endif()
  endif()
  if(NOT fuzz_ok)
    set(why "no clang that links -fsanitize=fuzzer (apt-get install clang libclang-rt-14-dev)")
    if(EMBER_FUZZ STREQUAL "ON")
      message(FATAL_ERROR "EMBER_FUZZ=ON: ${why}")
    endif()
    message(STATUS "Ember: fuzz harnesses skipped: ${why}")
  endif()
endif()

if(fuzz_ok)
  message(STATUS "Ember: fuzz harnesses built with ${EMBER_FUZZ_CC} in ${CMAKE_BINARY_DIR}/fuzz")
  include(ExternalProject)
  set(EMBER_FUZZ_DIR ${CMAKE_BINARY_DIR}/fuzz)
  ExternalProject_Add(ember_fuzz
    SOURCE_DIR ${CMAKE_SOURCE_DIR}/tests/fuzz
    BINARY_DIR ${EMBER_FUZZ_DIR}
    CMAKE_ARGS -DCMAKE_C_COMPILER=${EMBER_FUZZ_CC} -DCMAKE_BUILD_TYPE=
    BUILD_ALWAYS ON
    INSTALL_COMMAND ""
    USES_TERMINAL_BUILD ON)
  set(fuzz_run ${CMAKE_SOURCE_DIR}/tests/fuzz/run.sh)
  add_test(NAME fuzz_seeds COMMAND ${fuzz_run} --seeds-only ${EMBER_FUZZ_DIR})
  set_tests_properties(fuzz_seeds PROPERTIES TIMEOUT 60 FIXTURES_SETUP fuzz_corpus)
  foreach(h ${EMBER_FUZZ_HARNESSES})
    # A fixed seed and 5000 executions (at most 30 s): the suite's run repeats exactly.
    set(fuzz_env "FUZZ_SEED=1" "FUZZ_RUNS=5000")
    if(h STREQUAL "ddprun_args")
      # ddprun's parser leaves its allocations to the process exit after a usage error
      # (tests/fuzz/ddprun_args.c): no leak report at exit either, whatever ASAN_OPTIONS says.
      list(APPEND fuzz_env "ASAN_OPTIONS=detect_leaks=0")
    endif()
    add_test(NAME fuzz_${h} COMMAND ${fuzz_run} --seconds 30 ${EMBER_FUZZ_DIR} ${h})
    set_tests_properties(fuzz_${h} PROPERTIES TIMEOUT 120 FIXTURES_REQUIRED fuzz_corpus
                         ENVIRONMENT "${fuzz_env}")
  endforeach()
  add_test(NAME fuzz_regressions COMMAND ${fuzz_run} --regressions ${EMBER_FUZZ_DIR})
  set_tests_properties(fuzz_regressions PROPERTIES TIMEOUT 120)
else()
  add_test(NAME fuzz_skipped COMMAND ${CMAKE_COMMAND} -E echo
           "fuzz harnesses not built (EMBER_FUZZ=${EMBER_FUZZ}, build type ${CMAKE_BUILD_TYPE})")
  set_tests_properties(fuzz_skipped PROPERTIES SKIP_REGULAR_EXPRESSION "not built")
endif()
