/* collbench.c: ember-collbench, a bandwidth table for Ember's collectives in the style of
 * nccl-tests, with raw MPI on the same buffers in the same run as the peer.
 *
 *   mpirun -np 2 build/collectives/bench/ember-collbench [options]      (--help lists them)
 *
 * Every operation is f32, sum, out of place (broadcast: in place, root 0), on host buffers, so
 * it runs on the MPI backend. For each operation and size:
 *
 *   warm-up      w x ember op, w x MPI op
 *   round k      ember barrier; 1 ember op (untimed); t0; iters x (issue; coll_wait); t1
 *   (k = 1..R)   ember barrier; 1 MPI op (untimed);   t0; iters x MPI_<op> from this thread; t1
 *
 * (which of the two goes first alternates from round to round). A round's time per operation is
 * (t1 - t0) / iters on the slowest rank; the table shows the median over the R rounds. Raw MPI runs
 * on the main thread while Ember's comm thread is idle (every Ember request has been waited for;
 * MPI is initialised with MPI_THREAD_MULTIPLE). The untimed op after each barrier keeps the comm
 * thread's post-barrier spin (mpi.c, SPIN_S) out of the peer's timed window, and the barrier's skew
 * out of both.
 *
 * Sizes as in nccl-tests: size is the largest buffer of the operation (the send buffer of
 * reduce_scatter, the receive buffer of allgather), count = size / 4 elements, algbw = size /
 * time, busbw = algbw x 2(n-1)/n (allreduce), (n-1)/n (reduce_scatter, allgather), 1
 * (broadcast); GB/s are 1e9 bytes per second.
 *
 * Check (on by default): after the timed rounds the receive buffer is filled with NaNs, the op
 * runs once more and every element is compared bit for bit with the expected value; the send
 * buffer must be unchanged. Inputs are small integers, so every sum is exact in any order:
 *
 *   allreduce, reduce_scatter   rank r, element j of send:  (r + 1) * ((j * 7 + 3) % 13)
 *   allgather, broadcast        rank r, element j of send:  16 (r + 1) + (j * 7 + 3) % 13
 *
 * #wrong is the number of wrong elements summed over ranks (0 expected).
 *
 * Two more sections, each a sequence of ddp_init_ex / ddp_finalize sessions inside the one
 * MPI_Init_thread made here (ddp_finalize leaves MPI running when it did not start it):
 *   check cost   allreduce with check_every = 1 and -1 (off), sessions alternating per round, at a
 *                few sizes; also coll_get_stats' check_s / checks over each round (per check)
 *   chunk sweep  a 64 MiB allreduce with chunk_bytes = 64 KiB .. 16 MiB, one session each, with
 *                raw MPI_Allreduce of the same size in every round
 *
 * Output ends with one BENCH line per measurement (DESIGN.md, "Performance rules"). */
#include "collbench.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_RESULTS 512

/* Ember issue + coll_wait (the comm thread runs it), Ember's blocking form (coll_run_*: the
 * calling thread runs it where the shared memory can), raw MPI. */
typedef enum { IMPL_EMBER = 0, IMPL_RUN = 1, IMPL_MPI = 2, IMPL_SHARED = 3, NIMPL = 4 } impl;
/* IMPL_SHARED: allreduce only, blocking, in place in memory from coll_alloc_shared (unstaged). */

typedef struct {
  const char *section; /* BENCH case */
  coll_kind kind;
  int64_t bytes, count, chunk_bytes;
  int iters, check_every;
  double t[NIMPL];        /* median seconds per op by impl (< 0: not measured) */
  long long wrong[NIMPL]; /* -1: not checked */
  double check_us;        /* seconds per fingerprint check x 1e6 (median), < 0: not measured */
} result;

static int rank, world;
static coll_comm *comm;
static coll_options session_opts; /* in effect in the current or last session */
static float *buf_a, *buf_b;      /* the largest size of any section, each */
static float *shared;             /* the table's largest size, from coll_alloc_shared, or NULL */
static int64_t shared_cap;        /* elements */
static result results[MAX_RESULTS];
static int nresults;

/* ---- small helpers --------------------------------------------------------------------------- */
static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "[rank %d] ember-collbench: %s: %s\n", rank, what, em_last_error());
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median of v[0, n) (sorts v). */
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Elementwise max over ranks, in place (main thread; no Ember request is pending). */
static void max_over_ranks(double *v, int n) {
  MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
}

static double bus_factor(coll_kind k) {
  double n = world;
  switch (k) {
  case COLL_ALLREDUCE: return 2.0 * (n - 1) / n;
  case COLL_REDUCE_SCATTER:
  case COLL_ALLGATHER: return (n - 1) / n;
  default: return 1.0;
  }
}

/* The count argument of the operation for a size in bytes (per-rank block for reduce_scatter
 * and allgather), and the size actually moved (a multiple of world * 4 for those two). */
static int64_t op_count(coll_kind k, int64_t bytes) {
  int64_t n = bytes / (int64_t)sizeof(float);
  return k == COLL_REDUCE_SCATTER || k == COLL_ALLGATHER ? n / world : n;
}
static int64_t op_bytes(coll_kind k, int64_t count) {
  int64_t n = k == COLL_REDUCE_SCATTER || k == COLL_ALLGATHER ? count * world : count;
  return n * (int64_t)sizeof(float);
}

static int iters_for(const bench_args *a, int64_t bytes) {
  int64_t n = a->round_bytes / (bytes > 0 ? bytes : 1);
  if (n < 3) n = 3;
  return n < a->iters ? (int)n : a->iters;
}

/* ---- sessions: one communicator each --------------------------------------------------------- */
static void session_open(const coll_options *o) {
  if (ddp_init_ex(NULL, NULL, o) != EM_OK) die("ddp_init_ex");
  comm = ddp_comm();
  session_opts = coll_get_options(comm);
}

/* The table's shared buffer (NULL when the communicator has no shared-memory path). */
static void shared_open(int64_t bytes) {
  shared_cap = bytes / (int64_t)sizeof(float);
  shared = coll_alloc_shared(comm, (size_t)bytes);
}

static void shared_close(void) {
  if (shared && coll_free_shared(comm, shared) != EM_OK) die("coll_free_shared");
  shared = NULL;
}

static void session_close(void) {
  if (ddp_finalize() != EM_OK) die("ddp_finalize");
  comm = NULL;
}

static void ember_barrier(void) {
  if (coll_wait(coll_barrier(comm), COLL_TIMEOUT_DEFAULT) != EM_OK) die("barrier");
}

/* ---- the operations -------------------------------------------------------------------------- */
/* Buffers: allreduce a -> b; reduce_scatter a (world * count) -> b (count); allgather
 * a (count) -> b (world * count); broadcast b. */
static void run_ember(coll_kind k, int64_t count) {
  coll_buf a = coll_host_buf(buf_a, op_bytes(k, count) / 4, EM_F32);
  coll_buf b = coll_host_buf(buf_b, op_bytes(k, count) / 4, EM_F32);
  coll_req *r = NULL;
  switch (k) {
  case COLL_ALLREDUCE: r = coll_allreduce(comm, a, b, count, COLL_SUM); break;
  case COLL_BROADCAST: r = coll_broadcast(comm, b, count, 0); break;
  case COLL_REDUCE_SCATTER: r = coll_reduce_scatter(comm, a, b, count, COLL_SUM); break;
  case COLL_ALLGATHER: r = coll_allgather(comm, a, b, count); break;
  default: break;
  }
  if (coll_wait(r, COLL_TIMEOUT_DEFAULT) != EM_OK) die(coll_kind_name(k));
}

static void run_mpi(coll_kind k, int64_t count) {
  int n = (int)count, err = MPI_ERR_OTHER;
  switch (k) {
  case COLL_ALLREDUCE:
    err = MPI_Allreduce(buf_a, buf_b, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    break;
  case COLL_BROADCAST: err = MPI_Bcast(buf_b, n, MPI_FLOAT, 0, MPI_COMM_WORLD); break;
  case COLL_REDUCE_SCATTER:
    err = MPI_Reduce_scatter_block(buf_a, buf_b, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    break;
  case COLL_ALLGATHER:
    err = MPI_Allgather(buf_a, n, MPI_FLOAT, buf_b, n, MPI_FLOAT, MPI_COMM_WORLD);
    break;
  default: break;
  }
  if (err != MPI_SUCCESS) MPI_Abort(MPI_COMM_WORLD, 1); /* MPI_COMM_WORLD's handler is fatal */
}

/* The same through the blocking forms. */
static void run_ember_blocking(coll_kind k, int64_t count) {
  coll_buf a = coll_host_buf(buf_a, op_bytes(k, count) / 4, EM_F32);
  coll_buf b = coll_host_buf(buf_b, op_bytes(k, count) / 4, EM_F32);
  em_status st = EM_ERR_INVALID;
  switch (k) {
  case COLL_ALLREDUCE: st = coll_run_allreduce(comm, a, b, count, COLL_SUM); break;
  case COLL_BROADCAST: st = coll_run_broadcast(comm, b, count, 0); break;
  case COLL_REDUCE_SCATTER: st = coll_run_reduce_scatter(comm, a, b, count, COLL_SUM); break;
  case COLL_ALLGATHER: st = coll_run_allgather(comm, a, b, count); break;
  default: break;
  }
  if (st != EM_OK) die(coll_kind_name(k));
}

/* In place in shared memory: the values grow every time (timing only; check_op refills). */
static void run_ember_shared(int64_t count) {
  coll_buf b = coll_host_buf(shared, count, EM_F32);
  if (coll_run_allreduce(comm, b, b, count, COLL_SUM) != EM_OK) die("allreduce in shared memory");
}

static void run_op(impl im, coll_kind k, int64_t count) {
  if (im == IMPL_SHARED)
    run_ember_shared(count);
  else if (im == IMPL_EMBER)
    run_ember(k, count);
  else if (im == IMPL_RUN)
    run_ember_blocking(k, count);
  else
    run_mpi(k, count);
}

/* One round: seconds per operation on this rank. delta (may be NULL): the communicator's
 * statistics over the timed operations. */
static double time_round(impl im, coll_kind k, int64_t count, int iters, coll_stats *delta) {
  ember_barrier();
  run_op(im, k, count);
  coll_stats s0 = coll_get_stats(comm);
  double t0 = now();
  for (int i = 0; i < iters; i++) run_op(im, k, count);
  double t = (now() - t0) / iters;
  if (delta) {
    coll_stats s1 = coll_get_stats(comm);
    *delta = (coll_stats){s1.ops - s0.ops, s1.bytes - s0.bytes, s1.checks - s0.checks,
                          s1.check_s - s0.check_s, s1.busy_s - s0.busy_s};
  }
  return t;
}

/* ---- inputs and the check -------------------------------------------------------------------- */
static float v_sum(int r, int64_t j) { return (float)((r + 1) * ((j * 7 + 3) % 13)); }
static float v_gather(int r, int64_t j) { return (float)(16 * (r + 1) + (j * 7 + 3) % 13); }
static float sum_over_ranks(int64_t j) {
  return (float)((int64_t)world * (world + 1) / 2 * ((j * 7 + 3) % 13));
}

/* The send buffer of kind k over n elements; values depend on the index only, so a prefix is
 * right for every smaller size. Broadcast: the root's data in b, the others' b garbage. */
static void fill_inputs(coll_kind k, int64_t n) {
  for (int64_t j = 0; j < n; j++) switch (k) {
    case COLL_ALLREDUCE:
    case COLL_REDUCE_SCATTER: buf_a[j] = v_sum(rank, j); break;
    case COLL_ALLGATHER: buf_a[j] = v_gather(rank, j); break;
    default: buf_b[j] = rank == 0 ? v_gather(0, j) : -1.0f; break;
    }
}

static bool same_bits(float x, float y) { return memcmp(&x, &y, sizeof x) == 0; }

/* Runs the op once into a NaN-filled receive buffer and counts wrong elements (receive, and
 * send changed), summed over ranks. */
static long long check_op(impl im, coll_kind k, int64_t count) {
  int64_t nrecv = k == COLL_ALLGATHER ? count * world : count;
  int64_t nsend = k == COLL_REDUCE_SCATTER ? count * world : count;
  long long wrong = 0;
  if (im == IMPL_SHARED) { /* in place: the input is the output */
    for (int64_t j = 0; j < count; j++) shared[j] = v_sum(rank, j);
    ember_barrier();
    run_op(im, k, count);
    for (int64_t i = 0; i < count; i++) wrong += !same_bits(shared[i], sum_over_ranks(i));
    MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    return wrong;
  }
  if (k != COLL_BROADCAST || rank != 0) memset(buf_b, 0xff, (size_t)nrecv * sizeof(float));
  ember_barrier();
  run_op(im, k, count);
  for (int64_t i = 0; i < nrecv; i++) {
    float want = 0;
    switch (k) {
    case COLL_ALLREDUCE: want = sum_over_ranks(i); break;
    case COLL_BROADCAST: want = v_gather(0, i); break;
    case COLL_REDUCE_SCATTER: want = sum_over_ranks(rank * count + i); break;
    case COLL_ALLGATHER: want = v_gather((int)(i / count), i % count); break;
    default: break;
    }
    wrong += !same_bits(buf_b[i], want);
  }
  if (k != COLL_BROADCAST)
    for (int64_t j = 0; j < nsend; j++)
      wrong += !same_bits(buf_a[j], k == COLL_ALLGATHER ? v_gather(rank, j) : v_sum(rank, j));
  MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
  return wrong;
}

/* ---- one measurement: ember (and mpi) for one op and size ------------------------------------ */
static result *new_result(const char *section, coll_kind k, int64_t count, int iters) {
  if (nresults == MAX_RESULTS) {
    fprintf(stderr, "ember-collbench: more than %d results\n", MAX_RESULTS);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  result *r = &results[nresults++];
  *r = (result){.section = section,
                .kind = k,
                .count = count,
                .bytes = op_bytes(k, count),
                .iters = iters,
                .t = {-1, -1, -1, -1},
                .wrong = {-1, -1, -1, -1},
                .check_us = -1};
  r->chunk_bytes = session_opts.chunk_bytes;
  r->check_every = session_opts.check_every;
  return r;
}

/* Rounds of ember and mpi alternating; medians over rounds of the slowest rank's times. */
static void measure(const bench_args *a, result *res, bool with_mpi) {
  int R = a->rounds, w = a->warmup < res->iters ? a->warmup : res->iters;
  impl ims[NIMPL];
  int nimpl = 0;
  ims[nimpl++] = IMPL_EMBER;
  ims[nimpl++] = IMPL_RUN;
  if (with_mpi) ims[nimpl++] = IMPL_MPI;
  if (shared && res->kind == COLL_ALLREDUCE && res->count <= shared_cap) ims[nimpl++] = IMPL_SHARED;
  double *t = calloc((size_t)(NIMPL * R), sizeof *t);
  if (!t) MPI_Abort(MPI_COMM_WORLD, 1);
  for (int j = 0; j < nimpl; j++)
    for (int i = 0; i < w; i++) run_op(ims[j], res->kind, res->count);
  for (int k = 0; k < R; k++)
    for (int j = 0; j < nimpl; j++) {
      int im = ims[(j + k) % nimpl]; /* each goes first in turn */
      t[im * R + k] = time_round((impl)im, res->kind, res->count, res->iters, NULL);
    }
  max_over_ranks(t, NIMPL * R);
  for (int j = 0; j < nimpl; j++) res->t[ims[j]] = median(t + ims[j] * R, R);
  if (a->check)
    for (int j = 0; j < nimpl; j++) res->wrong[ims[j]] = check_op(ims[j], res->kind, res->count);
  free(t);
}

/* ---- printing -------------------------------------------------------------------------------- */
static double gbs(int64_t bytes, double s) { return s > 0 ? (double)bytes / s * 1e-9 : 0; }

static void print_wrong(long long w) {
  if (w < 0)
    printf(" %7s", "-");
  else
    printf(" %7lld", w);
}

static void print_table_header(coll_kind k, const bench_args *a) {
  static const char *mpi_names[] = {"MPI_Allreduce", "MPI_Bcast", "MPI_Reduce_scatter_block",
                                    "MPI_Allgather"};
  printf("\n# %s: float, %s, %s, %d ranks; median of %d rounds; busbw = algbw x %.3g\n",
         coll_kind_name(k), k == COLL_BROADCAST ? "root 0" : "sum",
         k == COLL_BROADCAST ? "in place" : "out of place", world, a->rounds, bus_factor(k));
  printf("# %46s%-36s%-36s", "", "ember (issue + coll_wait)", "ember (blocking coll_run_*)");
  if (a->mpi) printf("raw %s on the same buffers", mpi_names[k]);
  printf("\n# %10s %11s %6s %6s %5s %6s", "size", "count", "type", "redop", "root", "iters");
  for (int im = 0; im < (a->mpi ? IMPL_SHARED : IMPL_MPI); im++)
    printf(" %9s %8s %8s %7s", "time", "algbw", "busbw", "#wrong");
  if (a->mpi) printf(" %9s %9s", "mpi/async", "mpi/block");
  if (shared && k == COLL_ALLREDUCE)
    printf("  in shared memory: %9s %8s %7s%s", "time", "busbw", "#wrong",
           a->mpi ? " mpi/shared" : "");
  printf("\n# %10s %11s %6s %6s %5s %6s", "(B)", "(elements)", "", "", "", "");
  for (int im = 0; im < (a->mpi ? IMPL_SHARED : IMPL_MPI); im++)
    printf(" %9s %8s %8s %7s", "(us)", "(GB/s)", "(GB/s)", "");
  printf("\n");
}

static void print_row(const result *r) {
  double f = bus_factor(r->kind);
  bool bc = r->kind == COLL_BROADCAST;
  printf("  %10lld %11lld %6s %6s %5d %6d", (long long)r->bytes, (long long)(r->bytes / 4), "float",
         bc ? "none" : "sum", bc ? 0 : -1, r->iters);
  for (int im = 0; im < IMPL_SHARED; im++) {
    if (r->t[im] < 0) continue;
    double bw = gbs(r->bytes, r->t[im]);
    printf(" %9.1f %8.3f %8.3f", r->t[im] * 1e6, bw, bw * f);
    print_wrong(r->wrong[im]);
  }
  if (r->t[IMPL_MPI] >= 0)
    printf(" %8.2fx %8.2fx", r->t[IMPL_MPI] / r->t[IMPL_EMBER], r->t[IMPL_MPI] / r->t[IMPL_RUN]);
  if (r->t[IMPL_SHARED] >= 0) {
    double bw = gbs(r->bytes, r->t[IMPL_SHARED]);
    printf(" %9.1f %8.3f", r->t[IMPL_SHARED] * 1e6, bw * f);
    print_wrong(r->wrong[IMPL_SHARED]);
    if (r->t[IMPL_MPI] >= 0) printf(" %8.2fx", r->t[IMPL_MPI] / r->t[IMPL_SHARED]);
  }
  printf("\n");
  fflush(stdout);
}

static void print_bench_lines(void) {
  static const char *impl_names[] = {"ember mode=async", "ember mode=blocking", "mpi",
                                     "ember mode=shared"};
  printf("\n");
  for (int i = 0; i < nresults; i++) {
    const result *r = &results[i];
    for (int im = 0; im < NIMPL; im++) {
      if (r->t[im] < 0) continue;
      double bw = gbs(r->bytes, r->t[im]);
      printf("BENCH suite=coll case=%s impl=%s ranks=%d bytes=%lld busbw_gbs=%.3f algbw_gbs=%.3f "
             "time_us=%.2f",
             r->section, impl_names[im], world, (long long)r->bytes, bw * bus_factor(r->kind), bw,
             r->t[im] * 1e6);
      if (im != IMPL_MPI)
        printf(" chunk_bytes=%lld check_every=%d", (long long)r->chunk_bytes, r->check_every);
      if (r->wrong[im] >= 0) printf(" wrong=%lld", r->wrong[im]);
      if (im != IMPL_MPI && r->check_us >= 0) printf(" check_us=%.2f", r->check_us);
      printf(" iters=%d stat=median\n", r->iters);
    }
  }
}

/* ---- the three sections ---------------------------------------------------------------------- */
static void run_table(const bench_args *a) {
  session_open(&a->coll);
  if (a->ops[COLL_ALLREDUCE]) shared_open(a->max_bytes);
  coll_options o = coll_get_options(comm);
  if (rank == 0)
    printf("# table: chunk_bytes %lld, check_every %d, timeout %g s; warm-up %d, iters %d "
           "(fewer above %lld MiB per round, at least 3), rounds %d\n",
           (long long)o.chunk_bytes, o.check_every, o.timeout_s, a->warmup, a->iters,
           (long long)(a->round_bytes >> 20), a->rounds);
  for (int k = 0; k < NKINDS; k++) {
    if (!a->ops[k]) continue;
    fill_inputs((coll_kind)k, a->max_bytes / 4);
    if (rank == 0) print_table_header((coll_kind)k, a);
    for (int64_t bytes = a->min_bytes; bytes <= a->max_bytes; bytes *= a->factor) {
      int64_t count = op_count((coll_kind)k, bytes);
      if (count < 1) continue;
      result *r =
          new_result(coll_kind_name((coll_kind)k), (coll_kind)k, count, iters_for(a, bytes));
      measure(a, r, a->mpi);
      if (rank == 0) print_row(r);
    }
  }
  shared_close();
  session_close();
}

/* allreduce with check_every = 1 and -1, sessions alternating (order flipped every round). */
static const int64_t check_sizes[] = {4 << 10, 64 << 10, 1 << 20, 16 << 20};
enum { NS = sizeof check_sizes / sizeof check_sizes[0] };

static void run_check_cost(const bench_args *a) {
  const int64_t *sizes = check_sizes;
  int R = a->rounds;
  /* t[(on * NS + s) * R + k]: seconds per op; t[(2 * NS + s) * R + k]: seconds per check */
  double *t = calloc((size_t)(3 * NS * R), sizeof *t);
  int iters[NS];
  if (!t) MPI_Abort(MPI_COMM_WORLD, 1);
  for (int s = 0; s < NS; s++) iters[s] = iters_for(a, sizes[s]);
  fill_inputs(COLL_ALLREDUCE, sizes[NS - 1] / 4);
  for (int k = 0; k < R; k++)
    for (int o = 0; o < 2; o++) {
      int on = (o + k) % 2 == 0; /* on first in even rounds */
      coll_options opts = a->coll;
      opts.check_every = on ? 1 : -1;
      session_open(&opts);
      for (int s = 0; s < NS; s++) {
        int64_t n = sizes[s] / 4;
        coll_stats d;
        for (int i = 0; i < a->warmup; i++) run_ember(COLL_ALLREDUCE, n);
        t[(on * NS + s) * R + k] = time_round(IMPL_EMBER, COLL_ALLREDUCE, n, iters[s], &d);
        if (on) t[(2 * NS + s) * R + k] = d.checks ? d.check_s / (double)d.checks : 0;
      }
      session_close();
    }
  max_over_ranks(t, 3 * NS * R);
  if (rank == 0) {
    printf("\n# fingerprint check cost: allreduce (float, sum), check_every 1 against -1 (off); "
           "sessions alternate, median of %d rounds;\n# per check = coll_get_stats check_s / "
           "checks over a round's timed operations (slowest rank; includes waiting for the\n"
           "# other ranks to reach the check), median of the rounds\n",
           R);
    printf("# %10s %6s %10s %10s %10s %8s %10s %10s %10s\n", "size", "iters", "time on", "time off",
           "on - off", "on/off", "busbw on", "busbw off", "per check");
    printf("# %10s %6s %10s %10s %10s %8s %10s %10s %10s\n", "(B)", "", "(us)", "(us)", "(us)", "",
           "(GB/s)", "(GB/s)", "(us)");
  }
  for (int s = 0; s < NS; s++) {
    result *on = new_result("allreduce_check_on", COLL_ALLREDUCE, sizes[s] / 4, iters[s]);
    result *off = new_result("allreduce_check_off", COLL_ALLREDUCE, sizes[s] / 4, iters[s]);
    on->t[0] = median(t + (NS + s) * R, R);
    off->t[0] = median(t + s * R, R);
    on->check_every = 1;
    off->check_every = -1;
    on->check_us = median(t + (2 * NS + s) * R, R) * 1e6;
    double f = bus_factor(COLL_ALLREDUCE);
    if (rank == 0)
      printf("  %10lld %6d %10.1f %10.1f %10.1f %8.2f %10.3f %10.3f %10.1f\n", (long long)sizes[s],
             iters[s], on->t[0] * 1e6, off->t[0] * 1e6, (on->t[0] - off->t[0]) * 1e6,
             on->t[0] / off->t[0], gbs(sizes[s], on->t[0]) * f, gbs(sizes[s], off->t[0]) * f,
             on->check_us);
  }
  free(t);
}

/* One allreduce size, one session per chunk size; raw MPI_Allreduce as reference each round. */
static void run_sweep(const bench_args *a) {
  enum { NC = 9 }; /* 64 KiB .. 16 MiB */
  int R = a->rounds;
  int64_t bytes = a->sweep_bytes, n = bytes / 4;
  int iters = iters_for(a, bytes), w = a->warmup < 2 ? a->warmup : 2;
  double *t = calloc((size_t)((NC + 1) * R), sizeof *t);
  if (!t) MPI_Abort(MPI_COMM_WORLD, 1);
  fill_inputs(COLL_ALLREDUCE, n);
  for (int k = 0; k < R; k++) {
    for (int j = 0; j < NC; j++) {
      int c = (j + k) % NC; /* rotate the order so drift does not favour one chunk size */
      coll_options opts = a->coll;
      opts.chunk_bytes = (int64_t)65536 << c;
      session_open(&opts);
      for (int i = 0; i < w; i++) run_ember(COLL_ALLREDUCE, n);
      t[c * R + k] = time_round(IMPL_EMBER, COLL_ALLREDUCE, n, iters, NULL);
      if (a->mpi && j == NC - 1) { /* the peer, in the last session of the round */
        for (int i = 0; i < w; i++) run_mpi(COLL_ALLREDUCE, n);
        t[NC * R + k] = time_round(IMPL_MPI, COLL_ALLREDUCE, n, iters, NULL);
      }
      session_close();
    }
  }
  max_over_ranks(t, (NC + 1) * R);
  double t_mpi = a->mpi ? median(t + NC * R, R) : -1, f = bus_factor(COLL_ALLREDUCE);
  if (rank == 0) {
    printf("\n# chunk sweep: allreduce of %lld bytes (float, sum), one session per chunk_bytes, "
           "%d iters, median of %d rounds",
           (long long)bytes, iters, R);
    if (a->mpi)
      printf("; raw MPI_Allreduce (one call): %.1f us, busbw %.3f GB/s", t_mpi * 1e6,
             gbs(bytes, t_mpi) * f);
    printf("\n");
    printf("# %11s %9s %8s %9s\n", "chunk_bytes", "time", "busbw", a->mpi ? "ember/mpi" : "");
    printf("# %11s %9s %8s\n", "(B)", "(us)", "(GB/s)");
  }
  for (int c = 0; c < NC; c++) {
    result *r = new_result("allreduce_chunk", COLL_ALLREDUCE, n, iters);
    r->chunk_bytes = (int64_t)65536 << c;
    r->t[0] = median(t + c * R, R);
    if (rank == 0) {
      printf("  %11lld %9.1f %8.3f", (long long)r->chunk_bytes, r->t[0] * 1e6,
             gbs(bytes, r->t[0]) * f);
      if (a->mpi) printf(" %8.2fx", t_mpi / r->t[0]);
      printf("\n");
    }
  }
  if (a->mpi) {
    result *m = new_result("allreduce_chunk", COLL_ALLREDUCE, n, iters);
    m->t[0] = -1;
    m->t[1] = t_mpi;
  }
  free(t);
}

static void load_average(char *buf, size_t n) {
  snprintf(buf, n, "?");
  FILE *f = fopen("/proc/loadavg", "r");
  if (!f) return;
  if (fscanf(f, "%31s", buf) != 1) snprintf(buf, n, "?");
  fclose(f);
}

int main(int argc, char **argv) {
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
    fprintf(stderr, "ember-collbench: MPI_Init_thread failed\n");
    return 1;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  bench_args a;
  int st = collbench_parse_args(argc, argv, rank, &a);
  if (st == 0 && provided < MPI_THREAD_MULTIPLE) {
    if (rank == 0) fprintf(stderr, "ember-collbench: MPI gives no MPI_THREAD_MULTIPLE\n");
    st = 2;
  }
  if (st) {
    MPI_Finalize();
    return st == 1 ? 0 : 2;
  }
  int64_t cap_bytes = a.table ? a.max_bytes : 0; /* the largest buffer any section uses */
  if (a.check_cost && cap_bytes < check_sizes[NS - 1]) cap_bytes = check_sizes[NS - 1];
  if (a.sweep && cap_bytes < a.sweep_bytes) cap_bytes = a.sweep_bytes;
  size_t cap = (size_t)cap_bytes / sizeof(float) + 1;
  buf_a = malloc(cap * sizeof(float));
  buf_b = malloc(cap * sizeof(float));
  if (!buf_a || !buf_b) {
    fprintf(stderr, "[rank %d] ember-collbench: cannot allocate 2 x %lld bytes\n", rank,
            (long long)cap_bytes);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  memset(buf_a, 0, cap * sizeof(float)); /* touch every page before anything is timed */
  memset(buf_b, 0, cap * sizeof(float));
  if (rank == 0) {
    char host[256] = "?", date[64] = "?", load[32], lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    time_t tt = time(NULL);
    gethostname(host, sizeof host);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %z", localtime(&tt));
    load_average(load, sizeof load);
    MPI_Get_library_version(lib, &len);
    char *nl = strchr(lib, '\n');
    if (nl) *nl = 0;
    printf("# ember-collbench: %d ranks, %s, host %s, %ld cores online, load average %s\n", world,
           date, host, sysconf(_SC_NPROCESSORS_ONLN), load);
    printf("# MPI: %s\n", lib);
  }
  if (a.table) run_table(&a);
  if (a.check_cost) run_check_cost(&a);
  if (a.sweep) run_sweep(&a);
  if (rank == 0) print_bench_lines();
  free(buf_a);
  free(buf_b);
  MPI_Finalize();
  return 0;
}
