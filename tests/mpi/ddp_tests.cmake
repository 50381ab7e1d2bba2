# ddp_tests.cmake: the multi-rank tests of ddp_wrap (the reducer, runtime/ddp.c); included by
# tests/mpi/CMakeLists.txt. All test names start with ddp_ (ctest -R ddp).
#
#   ddp_equiv_*      W ranks train to the parameters of one process (MLP, CNN; 2 ranks even, 3
#                    ranks uneven 22/21/21; bf16 and fp16 compression with looser tolerances)
#   ddp_nosync_*     4 micro-batches, 3 under ddp_no_sync, equal the full-batch step; also with a
#                    different head per micro-batch; ddp_no_sync refused during backward
#   ddp_unused_*     a head skipped on rank 0 only (averaged with zeros) or on every rank (its
#                    .grad stays untouched, bit for bit)
#   ddp_baduse_*     wrap before ddp_init, models or bucket plans differing across ranks, wrapping
#                    twice, a replaced .grad: errors naming the fault, on every rank, no hang
#   ddp_misc_np2     determinism (two runs, bit-identical), the timeline file (JSON, its events),
#                    statistics and bucket layout
#   ddp_unrelated_*  a backward that reaches none of the wrapped parameters (another model's)
#                    does not communicate
#   ddp_order_*      buckets rebuilt once in rank 0's grad-ready order after the first synced
#                    pass (layers registered a, b, c, applied c, b, a; an unused head), against a
#                    hand-written plan; values across the rebuild and no_sync; static_bucket_order
#
# EMBER_COLL_TIMEOUT is short so that a reducer that stalls fails the test in seconds rather
# than after the communicator's 300 s default.
set(ddp_env "EMBER_COLL_TIMEOUT=30;EMBER_DEVICE=cpu")

function(ember_ddp_test name np src)
  ember_mpi_test(${name} ${np} ${src} ${ARGN})
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "${ddp_env}" TIMEOUT 120)
endfunction()

ember_ddp_test(ddp_equiv_mlp_np2 2 test_ddp_equiv.c --model mlp --bucket-mb 0.004)
ember_ddp_test(ddp_equiv_cnn_np2 2 test_ddp_equiv.c --model cnn --bucket-mb 0.5)
ember_ddp_test(ddp_equiv_mlp_np3 3 test_ddp_equiv.c --model mlp --bucket-mb 0.004)
ember_ddp_test(ddp_equiv_cnn_np3 3 test_ddp_equiv.c --model cnn)
ember_ddp_test(ddp_equiv_mlp_bf16_np2 2 test_ddp_equiv.c --model mlp --compress bf16)
ember_ddp_test(ddp_equiv_mlp_fp16_np3 3 test_ddp_equiv.c --model mlp --compress fp16
               --bucket-mb 0.004)
ember_ddp_test(ddp_equiv_cnn_bf16_np2 2 test_ddp_equiv.c --model cnn --compress bf16)
ember_ddp_test(ddp_nosync_np2 2 test_ddp_nosync.c)
ember_ddp_test(ddp_nosync_branches_np2 2 test_ddp_nosync.c --branches)
ember_ddp_test(ddp_nosync_branches_np3 3 test_ddp_nosync.c --branches)
ember_ddp_test(ddp_unused_one_np2 2 test_ddp_unused.c --case one)
ember_ddp_test(ddp_unused_one_np3 3 test_ddp_unused.c --case one)
ember_ddp_test(ddp_unused_all_np2 2 test_ddp_unused.c --case all)
ember_ddp_test(ddp_baduse_np2 2 test_ddp_baduse.c)
ember_ddp_test(ddp_baduse_np3 3 test_ddp_baduse.c)
ember_ddp_test(ddp_misc_np2 2 test_ddp_misc.c ${CMAKE_CURRENT_BINARY_DIR}/ddp_timeline_%r.json)
# The same through MPI: gradients in ordinary memory, buckets staged.
ember_ddp_test(ddp_misc_noshm_np2 2 test_ddp_misc.c
               ${CMAKE_CURRENT_BINARY_DIR}/ddp_timeline_noshm_%r.json)
set_tests_properties(ddp_misc_noshm_np2 PROPERTIES ENVIRONMENT "${ddp_env};EMBER_COLL_SHM=0")
# A backward through an unrelated model on one rank only must not desynchronise the ranks.
ember_ddp_test(ddp_unrelated_backward_np2 2 test_ddp_unrelated.c)
ember_ddp_test(ddp_order_np2 2 test_ddp_order.c)
ember_ddp_test(ddp_order_np3 3 test_ddp_order.c)
