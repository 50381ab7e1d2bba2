# coll_tests.cmake: the multi-rank tests of the communicator (issue 3); included by
# tests/mpi/CMakeLists.txt. All test names start with coll_ (ctest -R coll).
#
#   coll_ops_*          every operation, f32 from 1 element to 3 Mi, i32/i64/u8/bf16/f16, argument
#                       errors; default chunk and 4 KiB chunks; fingerprint checks off or sparse
#                       (coll_ops_mpi_*: through MPI, not the shared-memory all-reduce)
#   coll_ops_blocking_* the blocking forms (coll_run_*), run by the calling thread in shared memory
#   coll_shared_*       coll_alloc_shared, and in-place allreduces that reduce in it unstaged
#   coll_allreduce_big  64 Mi elements (256 MB a buffer), 2 and 4 ranks
#   coll_async_*        64 outstanding requests, polling, ordering, detach, explicit timeouts;
#                       the storm: timeout reports while detached requests complete
#   coll_mismatch_*     ranks disagree: an error naming both sides, non-zero exit, no hang
#   coll_ops_hier_*     hierarchical all-reduce: this machine cut into nodes (EMBER_COLL_NODE_RANKS)
#   coll_hang_*         a rank never joins: the job is aborted with a report within seconds
#   coll_die_*          a rank dies mid-operation: the job ends, no hang
#   coll_bootstrap_*    ddp_init at 1 rank without mpirun, and at 2-4 ranks
#
# EMBER_COLL_TIMEOUT is set short enough that a broken collective fails the test in a minute
# rather than hanging for the communicator's 300 s default.
set(EMBER_COLL_TEST_DIR ${CMAKE_CURRENT_SOURCE_DIR})

# ember_coll_expect_fail(NAME NP LIMIT_S SOURCE [EXPECT expect_fail.sh options...]
#                        [ARGS program args...] [ENV VAR=value...])
# Runs SOURCE's program on NP ranks through expect_fail.sh: it must exit non-zero within LIMIT_S
# seconds and its output must satisfy the EXPECT patterns (-e must match, -x must not).
function(ember_coll_expect_fail name np limit src)
  cmake_parse_arguments(PARSE_ARGV 4 X "" "" "EXPECT;ARGS;ENV")
  ember_mpi_program(${src})
  get_filename_component(prog ${src} NAME_WE)
  add_test(NAME ${name}
           COMMAND ${EMBER_COLL_TEST_DIR}/expect_fail.sh -t ${limit} ${X_EXPECT} --
                   ${EMBER_COLL_TEST_DIR}/mpirun.sh ${np} ${limit} $<TARGET_FILE:${prog}>
                   ${X_ARGS})
  math(EXPR ctest_limit "${limit} + 30")
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ctest_limit} PROCESSORS ${np}
                                          ENVIRONMENT "${X_ENV}")
endfunction()

foreach(np 2 3 4)
  ember_mpi_test(coll_ops_np${np} ${np} test_coll_ops.c)
  ember_mpi_test(coll_ops_chunk4k_np${np} ${np} test_coll_ops.c --max-count 262145)
  set_tests_properties(coll_ops_np${np} PROPERTIES ENVIRONMENT "EMBER_COLL_TIMEOUT=60")
  set_tests_properties(coll_ops_chunk4k_np${np} PROPERTIES
                       ENVIRONMENT "EMBER_COLL_TIMEOUT=60;EMBER_COLL_CHUNK_BYTES=4096")
  ember_mpi_test(coll_bootstrap_np${np} ${np} test_coll_bootstrap.c)
  set_tests_properties(coll_bootstrap_np${np} PROPERTIES ENVIRONMENT "EMBER_DEVICE=cpu")
endforeach()
# Blocking forms (coll_run_*): the calling thread runs allreduce, broadcast and barrier in shared
# memory; 4 KiB chunks at 3 ranks make a few thousand elements many chunks.
foreach(np 2 3 4)
  ember_mpi_test(coll_ops_blocking_np${np} ${np} test_coll_ops.c --max-count 262145 --blocking)
  set_tests_properties(coll_ops_blocking_np${np} PROPERTIES ENVIRONMENT "EMBER_COLL_TIMEOUT=60")
endforeach()
set_tests_properties(coll_ops_blocking_np3 PROPERTIES
                     ENVIRONMENT "EMBER_COLL_TIMEOUT=60;EMBER_COLL_CHUNK_BYTES=4096")
# Node-shared memory (coll_alloc_shared) and the all-reduce that reduces in it without staging.
foreach(np 2 3 4)
  ember_mpi_test(coll_shared_np${np} ${np} test_coll_shared.c)
  set_tests_properties(coll_shared_np${np} PROPERTIES ENVIRONMENT "EMBER_COLL_TIMEOUT=60")
endforeach()
ember_mpi_test(coll_shared_chunk4k_np3 3 test_coll_shared.c)
set_tests_properties(coll_shared_chunk4k_np3 PROPERTIES
                     ENVIRONMENT "EMBER_COLL_TIMEOUT=60;EMBER_COLL_CHUNK_BYTES=4096")
ember_mpi_test(coll_shared_noshm_np2 2 test_coll_shared.c)
set_tests_properties(coll_shared_noshm_np2 PROPERTIES
                     ENVIRONMENT "EMBER_COLL_TIMEOUT=60;EMBER_COLL_SHM=0")
# The same through MPI: ranks of one node all-reduce in shared memory (collectives/shm.c) by
# default, so these keep the MPI path tested.
foreach(np 2 3)
  ember_mpi_test(coll_ops_mpi_np${np} ${np} test_coll_ops.c --max-count 65537)
  set_tests_properties(coll_ops_mpi_np${np} PROPERTIES
                       ENVIRONMENT "EMBER_COLL_TIMEOUT=60;EMBER_COLL_SHM=0")
endforeach()
# Fingerprint checks off, and every third operation: same results, fewer checks.
ember_mpi_test(coll_ops_nocheck_np2 2 test_coll_ops.c --max-count 65537)
set_tests_properties(coll_ops_nocheck_np2 PROPERTIES
                     ENVIRONMENT "EMBER_COLL_TIMEOUT=60;EMBER_COLL_CHECK_EVERY=-1")
ember_mpi_test(coll_ops_check3_np3 3 test_coll_ops.c --max-count 65537)
set_tests_properties(coll_ops_check3_np3 PROPERTIES
                     ENVIRONMENT "EMBER_COLL_TIMEOUT=60;EMBER_COLL_CHECK_EVERY=3")
# Hierarchical across nodes: EMBER_COLL_NODE_RANKS cuts this machine into nodes of k ranks, so
# shared memory runs inside each and MPI between them. 2 nodes x 2 ranks (default chunk, and
# 4 KiB chunks: many chunks through MPI), and 3 nodes x 1 rank (falls back to MPI).
ember_mpi_test(coll_ops_hier_np4 4 test_coll_ops.c --max-count 65537)
set_tests_properties(coll_ops_hier_np4 PROPERTIES
                     ENVIRONMENT "EMBER_COLL_TIMEOUT=60;EMBER_COLL_NODE_RANKS=2")
ember_mpi_test(coll_ops_hier_chunk4k_np4 4 test_coll_ops.c --max-count 65537 --blocking)
set_tests_properties(coll_ops_hier_chunk4k_np4 PROPERTIES ENVIRONMENT
                     "EMBER_COLL_TIMEOUT=60;EMBER_COLL_NODE_RANKS=2;EMBER_COLL_CHUNK_BYTES=4096")
ember_mpi_test(coll_ops_hier_1pernode_np3 3 test_coll_ops.c --max-count 65537)
set_tests_properties(coll_ops_hier_1pernode_np3 PROPERTIES
                     ENVIRONMENT "EMBER_COLL_TIMEOUT=60;EMBER_COLL_NODE_RANKS=1")
# The comm thread's sleeping wait for MPI all-reduces (collectives/mpi_wait.h), asked for: through
# MPI on one node, and between nodes of the hierarchical all-reduce; values as everywhere else.
ember_mpi_test(coll_ops_sleep_np3 3 test_coll_ops.c --max-count 65537)
set_tests_properties(coll_ops_sleep_np3 PROPERTIES
                     ENVIRONMENT "EMBER_COLL_TIMEOUT=60;EMBER_COLL_SHM=0;EMBER_COLL_WAIT=sleep")
ember_mpi_test(coll_ops_hier_sleep_np4 4 test_coll_ops.c --max-count 65537)
set_tests_properties(coll_ops_hier_sleep_np4 PROPERTIES ENVIRONMENT
                     "EMBER_COLL_TIMEOUT=60;EMBER_COLL_NODE_RANKS=2;EMBER_COLL_WAIT=sleep")
ember_mpi_test(coll_ops_spin_np3 3 test_coll_ops.c --max-count 65537)
set_tests_properties(coll_ops_spin_np3 PROPERTIES
                     ENVIRONMENT "EMBER_COLL_TIMEOUT=60;EMBER_COLL_SHM=0;EMBER_COLL_WAIT=spin")
foreach(np 2 4)
  ember_mpi_test(coll_allreduce_big_np${np} ${np} test_coll_ops.c --big)
  set_tests_properties(coll_allreduce_big_np${np} PROPERTIES ENVIRONMENT "EMBER_COLL_TIMEOUT=60")
endforeach()
foreach(np 2 3)
  ember_mpi_test(coll_async_np${np} ${np} test_coll_async.c)
  set_tests_properties(coll_async_np${np} PROPERTIES ENVIRONMENT "EMBER_COLL_TIMEOUT=60")
endforeach()
# Timeout reports racing with detached requests that complete (a use-after-free under ASan).
ember_mpi_test(coll_async_storm_np2 2 test_coll_async.c --storm)
set_tests_properties(coll_async_storm_np2 PROPERTIES ENVIRONMENT "EMBER_COLL_TIMEOUT=60")

# Rank 0 all-reduces in shared memory, rank 1 in ordinary memory: both fail, saying so.
ember_coll_expect_fail(coll_shared_mismatch_np2 2 30 test_coll_shared.c
  EXPECT -e "^[[]rank 0[]] allreduce: .*different kinds of buffer.*rank 0: shared.*rank 1: ordinary"
         -e "^[[]rank 1[]] allreduce: .*different kinds of buffer.*rank 0: shared.*rank 1: ordinary"
         -x "test_coll_shared[.]c:[0-9]+:"
  ARGS --mismatch ENV EMBER_COLL_TIMEOUT=20)

# Rank 1 disagrees; every rank must print its own message naming both sides, and no self-check
# of the program may fail (those print "test_coll_mismatch.c:LINE:").
set(no_self_check_failed -x "test_coll_mismatch[.]c:[0-9]+:")
ember_coll_expect_fail(coll_mismatch_count_np2 2 30 test_coll_mismatch.c
  EXPECT -e "^[[]rank 0[]] .*mismatch.*(1000.*999|999.*1000)"
         -e "^[[]rank 1[]] .*mismatch.*(1000.*999|999.*1000)" ${no_self_check_failed}
  ARGS --mode count ENV EMBER_COLL_TIMEOUT=20)
ember_coll_expect_fail(coll_mismatch_count_np3 3 30 test_coll_mismatch.c
  EXPECT -e "^[[]rank 0[]] .*mismatch.*(1000.*999|999.*1000)"
         -e "^[[]rank 1[]] .*mismatch.*(1000.*999|999.*1000)"
         -e "^[[]rank 2[]] .*mismatch.*(1000.*999|999.*1000)" ${no_self_check_failed}
  ARGS --mode count ENV EMBER_COLL_TIMEOUT=20)
ember_coll_expect_fail(coll_mismatch_kind_np2 2 30 test_coll_mismatch.c
  EXPECT -e "^[[]rank 0[]] .*mismatch.*broadcast" -e "^[[]rank 1[]] .*mismatch.*broadcast"
         ${no_self_check_failed}
  ARGS --mode kind ENV EMBER_COLL_TIMEOUT=20)
ember_coll_expect_fail(coll_mismatch_op_np2 2 30 test_coll_mismatch.c
  EXPECT -e "^[[]rank 0[]] .*mismatch.*max" -e "^[[]rank 1[]] .*mismatch.*max"
         ${no_self_check_failed}
  ARGS --mode op ENV EMBER_COLL_TIMEOUT=20)
# The fault tests of issue 17 (docs/reliability.md): the dtype (same bytes), in shared memory and
# one rank per node (the check then goes through MPI), and a count mismatch through MPI on 3 ranks.
set(dtype_both -e "^[[]rank 0[]] .*mismatch.*(f32 x 1000.*i32 x 1000|i32 x 1000.*f32 x 1000)"
               -e "^[[]rank 1[]] .*mismatch.*(f32 x 1000.*i32 x 1000|i32 x 1000.*f32 x 1000)")
ember_coll_expect_fail(fault_mismatch_dtype_np2 2 30 test_coll_mismatch.c
  EXPECT ${dtype_both} ${no_self_check_failed} ARGS --mode dtype ENV EMBER_COLL_TIMEOUT=20)
ember_coll_expect_fail(fault_mismatch_dtype_nodes_np2 2 30 test_coll_mismatch.c
  EXPECT ${dtype_both} ${no_self_check_failed} ARGS --mode dtype
  ENV EMBER_COLL_TIMEOUT=20 EMBER_COLL_NODE_RANKS=1)
ember_coll_expect_fail(fault_mismatch_count_mpi_np3 3 30 test_coll_mismatch.c
  EXPECT -e "^[[]rank 0[]] .*mismatch.*(1000.*999|999.*1000)"
         -e "^[[]rank 2[]] .*mismatch.*(1000.*999|999.*1000)" ${no_self_check_failed}
  ARGS --mode count ENV EMBER_COLL_TIMEOUT=20 EMBER_COLL_SHM=0)

# Rank 1 sleeps 60 s in front of an allreduce; the 2 s timeout must abort the job with a report
# naming the timeout, the operation and rank 1 as behind, well before rank 1 would wake.
ember_coll_expect_fail(coll_hang_np2 2 25 test_coll_hang.c
  EXPECT -e "timeout" -e "allreduce" -e "rank 1 .*behind" -x "UNEXPECTED"
  ENV EMBER_COLL_TIMEOUT=2)
ember_coll_expect_fail(coll_hang_np3 3 25 test_coll_hang.c
  EXPECT -e "timeout" -e "allreduce" -e "rank 1 .*behind" -x "UNEXPECTED" -x "rank 2 is behind"
  ENV EMBER_COLL_TIMEOUT=2)
# Without fingerprint checks rank 0 goes straight into the shared-memory all-reduce and waits
# there for rank 1's input: the report still names the operation and rank 1.
ember_coll_expect_fail(coll_hang_shm_np2 2 25 test_coll_hang.c
  EXPECT -e "timeout" -e "allreduce" -e "rank 1 .*behind"
         -x "UNEXPECTED"
  ENV EMBER_COLL_TIMEOUT=2 EMBER_COLL_CHECK_EVERY=-1)
# The blocking form: rank 0 runs the all-reduce on its own thread; the report comes from there.
ember_coll_expect_fail(coll_hang_blocking_np2 2 25 test_coll_hang.c
  EXPECT -e "timeout" -e "allreduce" -e "rank 1 .*behind" -x "UNEXPECTED"
  ARGS --blocking ENV EMBER_COLL_TIMEOUT=2)
# Rank 1 dies in the middle of a 64 MiB shared-memory all-reduce: the job ends, no hang.
ember_coll_expect_fail(coll_die_np2 2 25 test_coll_hang.c
  EXPECT -e "exit|abort|timeout" -x "UNEXPECTED"
  ARGS --die ENV EMBER_COLL_TIMEOUT=5)
ember_coll_expect_fail(coll_die_np3 3 25 test_coll_hang.c
  EXPECT -e "exit|abort|timeout" -x "UNEXPECTED"
  ARGS --die ENV EMBER_COLL_TIMEOUT=5)
# Across nodes (2 x 2): rank 0 waits in the fingerprint check through MPI; the report still
# names rank 1, on its node, as behind. The layout is logged once, by rank 0.
ember_coll_expect_fail(coll_hang_hier_np4 4 25 test_coll_hang.c
  EXPECT -e "timeout" -e "allreduce" -e "rank 1 .*behind" -x "UNEXPECTED"
         -e "^[[]rank 0[]] ember: 2 nodes x 2 ranks, all-reduce hierarchical"
         -x "^[[]rank [1-3][]] ember: [0-9]+ nodes"
  ENV EMBER_COLL_TIMEOUT=2 EMBER_COLL_NODE_RANKS=2)
# A value that does not divide the node: ddp_init fails, naming the variable (every rank fails;
# the first to exit ends the job, so not every rank's line may be printed).
ember_coll_expect_fail(coll_node_ranks_bad_np4 4 25 test_coll_hang.c
  EXPECT -e "^[[]rank [0-3][]] ddp_init: .*EMBER_COLL_NODE_RANKS=3: must divide .* has 4"
         -x "UNEXPECTED"
  ENV EMBER_COLL_TIMEOUT=2 EMBER_COLL_NODE_RANKS=3)
ember_coll_expect_fail(coll_wait_bad_np2 2 25 test_coll_hang.c
  EXPECT -e "^[[]rank [0-1][]] ddp_init: .*EMBER_COLL_WAIT=fast: expected one of auto, spin, sleep" -x "UNEXPECTED"
  ENV EMBER_COLL_TIMEOUT=2 EMBER_COLL_WAIT=fast)
# The same through ddp_finalize: rank 0 finalizes with an allreduce queued that rank 1 never
# issues. ddp_finalize is bounded by the timeout too, and its report names the operation and rank 1.
ember_coll_expect_fail(coll_hang_finalize_np2 2 25 test_coll_hang.c
  EXPECT -e "timeout|did not finish" -e "allreduce" -e "rank 1 .*behind" -x "UNEXPECTED"
  ARGS --finalize ENV EMBER_COLL_TIMEOUT=2)

# The world-of-1 tests (no mpirun) are in coll_single.cmake, which also builds without MPI.
include(${CMAKE_CURRENT_LIST_DIR}/coll_single.cmake)
