/* args.c: ember-collbench's command line (collbench.h). */
#include "collbench.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
  fprintf(f,
          "usage: mpirun -np N ember-collbench [options]\n"
          "  -b, --min-bytes SIZE   smallest size (default 4K; K, M, G are powers of 1024)\n"
          "  -e, --max-bytes SIZE   largest size (default 256M)\n"
          "  -f, --factor F         size multiplier between rows (default 2)\n"
          "  -n, --iters N          operations per timed round (default 50; fewer for large\n"
          "                         sizes: at most --round-bytes per round, at least 3)\n"
          "      --round-bytes SIZE bytes per timed round for large sizes (default 256M)\n"
          "  -w, --warmup N         untimed operations per size and implementation (default 5)\n"
          "  -r, --rounds N         timed rounds per size; the median is shown (default 7)\n"
          "  -o, --ops LIST         allreduce,broadcast,reduce_scatter,allgather or all\n"
          "      --check            verify every result bit for bit (default)\n"
          "      --no-check         do not verify\n"
          "      --no-mpi           do not time raw MPI\n"
          "      --chunk-bytes N    coll_options.chunk_bytes for the table (default: environment,\n"
          "                         else 1 MiB)\n"
          "      --check-every N    coll_options.check_every for the table and sweep (-1 off)\n"
          "      --no-table         skip the table\n"
          "      --no-check-cost    skip the fingerprint-check cost section\n"
          "      --no-sweep         skip the chunk-size sweep\n"
          "      --sweep-bytes SIZE allreduce size of the chunk sweep (default 64M)\n");
}

static bool parse_size(const char *s, int64_t *out) {
  char *end;
  long long v = strtoll(s, &end, 10);
  int64_t m = 1;
  if (*end == 'K' || *end == 'k')
    m = 1 << 10, end++;
  else if (*end == 'M' || *end == 'm')
    m = 1 << 20, end++;
  else if (*end == 'G' || *end == 'g')
    m = 1 << 30, end++;
  if (end == s || *end || v <= 0 || v > ((int64_t)1 << 40) / m) return false;
  *out = (int64_t)v * m;
  return true;
}

static bool parse_ops(char *s, bool *ops) {
  memset(ops, 0, NKINDS * sizeof *ops);
  for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
    bool all = !strcmp(tok, "all"), found = all;
    for (int k = 0; k < NKINDS; k++)
      if (all || !strcmp(tok, coll_kind_name((coll_kind)k))) ops[k] = found = true;
    if (!found) return false;
  }
  return true;
}

/* Option values from optarg: false, with a message naming the option in em_last_error(), if
 * optarg is not one. */
static bool int_opt(const char *name, int lo, int *out) {
  int64_t v;
  if (em_arg_int(name, optarg, lo, 1000000, &v) != EM_OK) return false;
  *out = (int)v;
  return true;
}

static bool size_opt(const char *name, int64_t *out) {
  if (parse_size(optarg, out)) return true;
  em_set_error(EM_ERR_INVALID,
               "%s '%s': expected a size in bytes such as 4096, 64K or 1G (at most 1024G)", name,
               optarg);
  return false;
}

static bool ops_opt(bool *ops) {
  char list[256];
  snprintf(list, sizeof list, "%s", optarg); /* parse_ops cuts its string up */
  if (strlen(optarg) < sizeof list && parse_ops(list, ops)) return true;
  em_set_error(EM_ERR_INVALID,
               "--ops '%s': expected all, or a comma-separated list of allreduce, broadcast, "
               "reduce_scatter, allgather",
               optarg);
  return false;
}

/* 0: run; 1: help printed; 2: bad arguments (message printed on rank 0). */
int collbench_parse_args(int argc, char **argv, int rank, bench_args *a) {
  *a = (bench_args){.min_bytes = 4 << 10,
                    .max_bytes = 256 << 20,
                    .sweep_bytes = 64 << 20,
                    .round_bytes = 256 << 20,
                    .factor = 2,
                    .iters = 50,
                    .warmup = 5,
                    .rounds = 7,
                    .ops = {1, 1, 1, 1},
                    .check = true,
                    .mpi = true,
                    .table = true,
                    .check_cost = true,
                    .sweep = true};
  enum {
    SWEEP_BYTES = 0x100, /* long-only options */
    ROUND_BYTES,
    CHUNK_BYTES,
    CHECK_EVERY,
    CHECK,
    NO_CHECK,
    NO_MPI,
    NO_TABLE,
    NO_CHECK_COST,
    NO_SWEEP
  };
  static const struct option opts[] = {{"min-bytes", required_argument, NULL, 'b'},
                                       {"max-bytes", required_argument, NULL, 'e'},
                                       {"sweep-bytes", required_argument, NULL, SWEEP_BYTES},
                                       {"round-bytes", required_argument, NULL, ROUND_BYTES},
                                       {"chunk-bytes", required_argument, NULL, CHUNK_BYTES},
                                       {"factor", required_argument, NULL, 'f'},
                                       {"iters", required_argument, NULL, 'n'},
                                       {"warmup", required_argument, NULL, 'w'},
                                       {"rounds", required_argument, NULL, 'r'},
                                       {"check-every", required_argument, NULL, CHECK_EVERY},
                                       {"ops", required_argument, NULL, 'o'},
                                       {"check", no_argument, NULL, CHECK},
                                       {"no-check", no_argument, NULL, NO_CHECK},
                                       {"no-mpi", no_argument, NULL, NO_MPI},
                                       {"no-table", no_argument, NULL, NO_TABLE},
                                       {"no-check-cost", no_argument, NULL, NO_CHECK_COST},
                                       {"no-sweep", no_argument, NULL, NO_SWEEP},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  opterr = rank == 0; /* getopt_long's own complaints, once */
  for (int c; (c = getopt_long(argc, argv, "b:e:f:n:w:r:o:h", opts, NULL)) != -1;) {
    bool ok = true;
    switch (c) {
    case 'b': ok = size_opt("--min-bytes", &a->min_bytes); break;
    case 'e': ok = size_opt("--max-bytes", &a->max_bytes); break;
    case SWEEP_BYTES: ok = size_opt("--sweep-bytes", &a->sweep_bytes); break;
    case ROUND_BYTES: ok = size_opt("--round-bytes", &a->round_bytes); break;
    case CHUNK_BYTES: ok = size_opt("--chunk-bytes", &a->coll.chunk_bytes); break;
    case 'f': ok = int_opt("--factor", 2, &a->factor); break;
    case 'n': ok = int_opt("--iters", 1, &a->iters); break;
    case 'w': ok = int_opt("--warmup", 0, &a->warmup); break;
    case 'r': ok = int_opt("--rounds", 1, &a->rounds); break;
    case CHECK_EVERY: /* -1: off; 0 would mean "the environment's" */
      ok = int_opt("--check-every", -1, &a->coll.check_every);
      if (ok && a->coll.check_every == 0) {
        em_set_error(EM_ERR_INVALID, "--check-every 0: expected -1 (off) or 1 or more");
        ok = false;
      }
      break;
    case 'o': ok = ops_opt(a->ops); break;
    case CHECK: a->check = true; break;
    case NO_CHECK: a->check = false; break;
    case NO_MPI: a->mpi = false; break;
    case NO_TABLE: a->table = false; break;
    case NO_CHECK_COST: a->check_cost = false; break;
    case NO_SWEEP: a->sweep = false; break;
    case 'h':
      if (rank == 0) usage(stdout);
      return 1;
    default: /* getopt_long said what */
      if (rank == 0) usage(stderr);
      return 2;
    }
    if (!ok) {
      if (rank == 0) {
        fprintf(stderr, "ember-collbench: %s\n", em_last_error());
        usage(stderr);
      }
      return 2;
    }
  }
  if (optind < argc) {
    if (rank == 0) fprintf(stderr, "ember-collbench: unexpected arguments after the options\n");
    return 2;
  }
  if (a->min_bytes > a->max_bytes) {
    if (rank == 0) fprintf(stderr, "ember-collbench: --min-bytes is above --max-bytes\n");
    return 2;
  }
  return 0;
}

/* Reads /proc/loadavg's first field ("?" if unreadable). */
