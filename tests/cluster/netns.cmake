# netns.cmake: jobs across the network-namespace cluster (cluster/netns/, docs/multinode.md);
# included by tests/cluster/CMakeLists.txt. Names contain "netns" (ctest -R netns).
#
#   netns_equiv_2x1   2 nodes x 1 rank: test_ddp_equiv trains to the 1-process parameters, MPI
#                     over TCP between the nodes (no hierarchical all-reduce: one rank per node)
#   netns_equiv_2x2   2 nodes x 2 ranks: the same, with the hierarchical all-reduce (shared
#                     memory inside a node, TCP across), seen in rank 0's log line and in
#                     coll_stats.hierarchical
#   netns_stop        rank 3 (node2) stopped with SIGSTOP: every rank ends within the collective
#                     timeout, the report names node2, rank 3 and the all-reduce, and ddprun's
#                     "stalled:" line names rank 3
#   netns_linkdown    node2's switch port taken down mid-run: the same kind of report
#
# Each brings the cluster up (after removing one left by a killed run) and down, and checks that no
# process is left in the nodes. They need root and iproute2; otherwise each exits 77 (skipped)
# with a message. RESOURCE_LOCK netns: one at a time (they share the namespace names).
if(NOT EMBER_HAVE_MPI)
  message(STATUS "Ember: no MPI, netns cluster tests not built")
  return()
endif()

add_executable(netns_train ${CMAKE_CURRENT_SOURCE_DIR}/netns_train.c)
target_link_libraries(netns_train PRIVATE ember)

foreach(case equiv_2x1 equiv_2x2 stop linkdown)
  add_test(NAME netns_${case}
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_netns.sh ${case} $<TARGET_FILE:ddprun>
                   $<TARGET_FILE:test_ddp_equiv> $<TARGET_FILE:netns_train>)
  set_tests_properties(netns_${case} PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
                                                RESOURCE_LOCK netns PROCESSORS 2)
endforeach()
