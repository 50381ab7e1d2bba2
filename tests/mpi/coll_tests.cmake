# Multi-rank tests of the communicator (issue 3): included by tests/mpi/CMakeLists.txt.
ember_mpi_test(coll_ops_np2 2 test_coll_ops.c)
