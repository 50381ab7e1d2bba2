# coll_single.cmake: the communicator's world-of-1 tests: test_coll_bootstrap run directly,
# without mpirun. They need no MPI (the "self" backend serves a build without it), so
# tests/mpi/CMakeLists.txt may include this file before its "no MPI: return" guard; with MPI it is
# also reached through coll_tests.cmake, and the guard below keeps it to one inclusion.
include_guard(GLOBAL)

# Without a launcher: a world of 1. And start-up errors: EMBER_DEVICE=cuda without a GPU (skips
# itself where a GPU is present), an unknown EMBER_DEVICE value, malformed or out-of-range
# EMBER_COLL_* values (each case: name, the message's pattern, EMBER_DEVICE, one more variable).
# These run the program directly, so they take mpirun.sh's sanitizer settings here (Open MPI's
# singleton keeps allocations until exit: tests/lsan.supp).
set(lsan_supp ${CMAKE_SOURCE_DIR}/tests/lsan.supp)
set(single_env "OMPI_MCA_mca_base_component_disable_dlclose=1"
               "LSAN_OPTIONS=suppressions=${lsan_supp}:print_suppressions=0"
               "ASAN_OPTIONS=fast_unwind_on_malloc=0")
if(NOT TARGET test_coll_bootstrap)
  add_executable(test_coll_bootstrap ${CMAKE_CURRENT_LIST_DIR}/test_coll_bootstrap.c)
  target_link_libraries(test_coll_bootstrap PRIVATE ember)
  target_include_directories(test_coll_bootstrap PRIVATE ${CMAKE_CURRENT_LIST_DIR})
endif()
set(single_cases single:--single:cpu: cuda_missing:cuda:cuda: bad_device:EMBER_DEVICE=tpu:tpu:
    bad_timeout:EMBER_COLL_TIMEOUT=soon:cpu:EMBER_COLL_TIMEOUT=soon
    bad_chunk:EMBER_COLL_CHUNK_BYTES=1e999:cpu:EMBER_COLL_CHUNK_BYTES=1e999
    bad_check_every:check_every=0:cpu:EMBER_COLL_CHECK_EVERY=0)
# EMBER_COLL_SHM chooses between two MPI paths: only the MPI backend reads it.
if(EMBER_HAVE_MPI)
  list(APPEND single_cases bad_shm:EMBER_COLL_SHM=2:cpu:EMBER_COLL_SHM=2)
endif()
foreach(t ${single_cases})
  string(REPLACE ":" ";" t ${t})
  list(GET t 0 name)
  list(GET t 1 arg)
  list(GET t 2 device)
  list(GET t 3 extra)
  set(env ${single_env} EMBER_DEVICE=${device} ${extra})
  if(arg STREQUAL "--single")
    add_test(NAME coll_bootstrap_${name} COMMAND test_coll_bootstrap --single)
  else()
    add_test(NAME coll_bootstrap_${name} COMMAND test_coll_bootstrap --init-error ${arg})
  endif()
  set_tests_properties(coll_bootstrap_${name} PROPERTIES TIMEOUT 60 ENVIRONMENT "${env}")
endforeach()
