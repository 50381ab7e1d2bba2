# dl_tests.cmake: the data loader on real ranks (issue 5); included by tests/mpi/CMakeLists.txt.
#   dl_ranks_{2,3}  loaders take rank and world from ddp_init; per epoch the ranks' real samples
#                   cover the test set exactly once, equal batch counts, epochs differ; exact
#                   evaluation gives each sample to one rank (10000 is not divisible by 3)
ember_mpi_test(dl_ranks_2 2 test_dl_ranks.c)
ember_mpi_test(dl_ranks_3 3 test_dl_ranks.c)
