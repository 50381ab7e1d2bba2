/* collbench.h: what ember-collbench's parts share: its options and their parsing (args.c). */
#ifndef EMBER_COLLBENCH_H
#define EMBER_COLLBENCH_H

#include <ember.h>

#define NKINDS 4 /* allreduce .. allgather */

typedef struct {
  int64_t min_bytes, max_bytes, sweep_bytes, round_bytes;
  int factor, iters, warmup, rounds;
  bool ops[NKINDS];
  bool check, mpi, table, check_cost, sweep;
  coll_options coll; /* passed to ddp_init_ex for the table (zero fields: environment/default) */
} bench_args;

/* Fills a from the command line (defaults first). 0: run; 1: help printed; 2: bad arguments
 * (message printed on rank 0). */
int collbench_parse_args(int argc, char **argv, int rank, bench_args *a);

#endif
