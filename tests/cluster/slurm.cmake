# Slurm tests (docs/slurm.md): a real local cluster (cluster/slurm/local-cluster.sh, two slurmd
# in their own network namespaces), the batch jobs on one and two nodes, and the scaling sweep as
# a job array. slurm_up brings the cluster up for the others and slurm_down takes it down and
# checks that nothing is left; they share one lock, so no two of them ever overlap. Each skips
# (77) with what to install when slurm-wlm, munge or iproute2 are missing or we are not root.
if(NOT EMBER_HAVE_MPI)
  message(STATUS "Ember: no MPI, Slurm tests not built")
  return()
endif()
set(here ${CMAKE_CURRENT_LIST_DIR})
set(src ${CMAKE_SOURCE_DIR})
# The pointer to this build tree's cluster: two build trees (Release, ASan) never share one.
set(slurm_state ${CMAKE_CURRENT_BINARY_DIR}/slurm.current)

add_test(NAME slurm_up COMMAND ${here}/slurm_cluster.sh up ${src})
add_test(NAME slurm_job_1node COMMAND ${here}/slurm_job.sh 1node ${CMAKE_BINARY_DIR} ${src})
add_test(NAME slurm_job_2nodes COMMAND ${here}/slurm_job.sh 2nodes ${CMAKE_BINARY_DIR} ${src})
add_test(NAME slurm_sweep COMMAND ${here}/slurm_sweep.sh ${CMAKE_BINARY_DIR} ${src})
add_test(NAME slurm_down COMMAND ${here}/slurm_cluster.sh down ${src})
set(slurm_tests slurm_up slurm_job_1node slurm_job_2nodes slurm_sweep slurm_down)
set_tests_properties(slurm_up PROPERTIES FIXTURES_SETUP slurm_cluster TIMEOUT 120)
set_tests_properties(slurm_down PROPERTIES FIXTURES_CLEANUP slurm_cluster TIMEOUT 120)
set_tests_properties(slurm_job_1node slurm_job_2nodes slurm_sweep PROPERTIES
                     FIXTURES_REQUIRED slurm_cluster TIMEOUT 400 PROCESSORS 2)
set(lsan "suppressions=${CMAKE_SOURCE_DIR}/tests/lsan.supp:print_suppressions=0")
set(asan "fast_unwind_on_malloc=0:detect_leaks=1:abort_on_error=1")
set_tests_properties(${slurm_tests} PROPERTIES RESOURCE_LOCK ember_slurm SKIP_RETURN_CODE 77
  ENVIRONMENT "EMBER_SLURM_STATE=${slurm_state};OMPI_MCA_mca_base_component_disable_dlclose=1;\
LSAN_OPTIONS=${lsan};ASAN_OPTIONS=${asan}")
