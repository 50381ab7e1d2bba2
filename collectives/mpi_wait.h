/* mpi_wait.h: how the comm thread waits for an MPI all-reduce (private to mpi.c and mpi_wait.c).
 *
 * Open MPI moves a transfer only while some thread is inside MPI, and its blocking calls spin
 * there. With a core per rank that is the fastest wait. Where ranks outnumber the CPUs of their
 * machine (several ranks, or several network-namespace "nodes", on the same cores), the spinning
 * comm threads take the cores that the ranks they wait for need: measured on 2 cores, 4 nodes x 1
 * rank trained at 790 samples/s spinning and 3,110 sleeping (docs/collectives.md). Then the comm
 * thread issues the non-blocking form and sleeps between tests instead. */
#ifndef EMBER_MPI_WAIT_H
#define EMBER_MPI_WAIT_H

#include <mpi.h>
#include <stdbool.h>

/* Whether to sleep between tests: EMBER_COLL_WAIT (spin, sleep), or with auto (the default) when
 * the ranks on this rank's machine (same boot id) outnumber the CPUs they may run on together.
 * Collective over comm; every rank gets the same answer. *why: what was found, for the log.
 * Returns false with the error set on a bad EMBER_COLL_WAIT (on any rank). */
bool coll__mpi_wait_mode(MPI_Comm comm, bool *sleep, char *why, size_t n);
/* Waits for req: MPI_Wait, or (sleep) tests it, spinning for a few microseconds, then sleeping
 * between tests. Returns MPI's error code. */
int coll__mpi_wait(MPI_Request *req, bool sleep);

#endif
