#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
/* test_coll_ops.c: every collective on real ranks against a host reference, bit for bit.
 *
 *   mpirun.sh NP LIMIT test_coll_ops [--max-count N] [--big] [--blocking]
 *
 * Inputs are small integers (in f32 too), so a sum is exact in any order and the result is
 * compared with memcmp, not a tolerance:
 *
 *   sum/avg  rank r, element i:  (r + 1) * ((i * 7 + 3) % 13)   sum = W(W+1)/2 * ((i*7+3) % 13)
 *   max/min  rank r, element i:  (i * 7 + 3 + 5 r) % 13 - 6      (ranks differ at every i)
 *
 * so the average (sum / W) is exact for W = 2, 3, 4 whether divided or multiplied by 1/W. i32,
 * i64 (values past 2^32) and u8 scale these; bf16 and f16 hold them exactly too. Every buffer is
 * followed by a guard region that the operation must not touch (the buffer handed over is larger
 * than count), out-of-place sends are checked unchanged, and both layouts of coll.h's in-place rule
 * are run.
 *
 * Sizes run from 1 element past several chunks with a ragged last one; the registration runs the
 * program once with the default chunk (1 MiB) and once with EMBER_COLL_CHUNK_BYTES=4096, which
 * makes sizes of a few thousand elements many chunks. --big runs only the 64 Mi-element allreduce
 * (256 MB per buffer). --blocking runs every operation through its blocking form
 * (coll_run_allreduce and the others: the calling thread runs it in shared memory). Also: argument errors (NULL, no hang), barrier semantics (nobody leaves
 * before the last arrives, from CLOCK_REALTIME, which all ranks of one node share), tensors via
 * coll_buf_of, the options and statistics (EMBER_COLL_CHECK_EVERY changes how many fingerprint
 * checks run, never the results). */
#include "mpi_check.h"

#include <sched.h>
#include <unistd.h>

#define GUARD 16 /* elements past count in every buffer */
#define SEND_GUARD 0x5A
#define RECV_FILL 0xA5

static coll_comm *comm;
static int rank, world;
static int64_t ops_done; /* operations this program waited for successfully */
static int64_t allreduces_done; /* of which run_allreduce's */
static bool verbose;     /* EMBER_TEST_VERBOSE set: every operation's wait time on rank 0 */
static bool blocking;    /* --blocking: operations through coll_run_allreduce and the others */
static int64_t run_here; /* --blocking operations (the shared memory runs every kind): with
                            nothing queued, the calling thread runs each */

/* ---- values ------------------------------------------------------------------------------ */
static int64_t base_sum(int r, int64_t i) { return (int64_t)(r + 1) * ((i * 7 + 3) % 13); }
static int64_t base_ord(int r, int64_t i) { return (i * 7 + 3 + 5 * r) % 13 - 6; }
static int64_t base_bcast(int r, int64_t i) { return (int64_t)(r + 1) * 16 + (i * 7 + 3) % 13; }

/* The integer that element i of rank r holds for reduction op in dtype dt. */
static int64_t value(em_dtype dt, coll_redop op, int r, int64_t i) {
  bool ord = op == COLL_MAX || op == COLL_MIN;
  int64_t v = ord ? base_ord(r, i) : base_sum(r, i);
  switch (dt) {
  case EM_I32: return v * 100000;
  case EM_I64: return v * ((int64_t)1 << 35) + (ord ? r : 0);
  case EM_U8: return ord ? (v + 6) * 19 : v;
  default: return v;
  }
}

/* f32 -> bf16 or f16 bits. Only for the values used here, which both hold exactly (integers of
 * magnitude < 256 and halves): no rounding is needed, so this is an oracle independent of the
 * library's conversions. */
static uint16_t half_bits(em_dtype dt, float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  if (dt == EM_BF16) return (uint16_t)(b >> 16);
  uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
  if ((b & 0x7fffffff) == 0) return sign;
  int e = (int)((b >> 23) & 0xff) - 127 + 15;
  return (uint16_t)(sign | (e << 10) | ((b >> 13) & 0x3ff));
}

static void put_float(void *p, int64_t i, em_dtype dt, float f) {
  if (dt == EM_F32)
    ((float *)p)[i] = f;
  else
    ((uint16_t *)p)[i] = half_bits(dt, f);
}

static void put(void *p, int64_t i, em_dtype dt, int64_t v) {
  switch (dt) {
  case EM_F32:
  case EM_BF16:
  case EM_F16: put_float(p, i, dt, (float)v); break;
  case EM_I32: ((int32_t *)p)[i] = (int32_t)v; break;
  case EM_I64: ((int64_t *)p)[i] = v; break;
  case EM_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
  default: break;
  }
}

/* n elements of rank r's input, indices first .. first + n - 1. */
static void fill(void *p, int64_t n, em_dtype dt, coll_redop op, int r, int64_t first) {
  for (int64_t i = 0; i < n; i++) put(p, i, dt, value(dt, op, r, first + i));
}

/* The reduction over all ranks of indices first .. first + n - 1, computed on the host. */
static void reduce_ref(void *p, int64_t n, em_dtype dt, coll_redop op, int64_t first) {
  for (int64_t i = 0; i < n; i++) {
    int64_t acc = value(dt, op, 0, first + i);
    for (int r = 1; r < world; r++) {
      int64_t v = value(dt, op, r, first + i);
      acc = op == COLL_MAX ? (v > acc ? v : acc) : op == COLL_MIN ? (v < acc ? v : acc) : acc + v;
    }
    if (op == COLL_AVG)
      put_float(p, i, dt, (float)acc / (float)world);
    else
      put(p, i, dt, acc);
  }
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "[rank %d] out of memory (%zu bytes)\n", rank, n);
    exit(2);
  }
  return p;
}

/* The status of an operation that ran (or failed to); counts successes. */
static bool finished(em_status s, const char *what, double t0) {
  if (verbose && rank == 0) printf("  %-60s %8.3f ms\n", what, 1e3 * (chk_now() - t0));
  if (!CHECK(s == EM_OK, "%s: %s: %s", what, em_status_str(s), em_last_error())) return false;
  ops_done++;
  return true;
}

/* Waits for r (issued by the caller) with the communicator's timeout; counts successes. */
static bool finish(coll_req *r, const char *what) {
  if (!CHECK(r != NULL, "%s: not issued: %s", what, em_last_error())) return false;
  double t0 = chk_now();
  return finished(coll_wait(r, COLL_TIMEOUT_DEFAULT), what, t0);
}

/* One operation: issued and waited, or with --blocking its blocking form (same arguments). */
#define RUN_OP(what, name, ...)                                                                    \
  (blocking ? (run_here++, finished(coll_run_##name(__VA_ARGS__), what, chk_now()))              \
            : finish(coll_##name(__VA_ARGS__), what))

/* ---- the operations ------------------------------------------------------------------------ */
static void run_allreduce(em_dtype dt, int64_t n, coll_redop op, bool inplace) {
  size_t es = em_dtype_size(dt), nb = (size_t)n * es, gb = GUARD * es;
  char what[160];
  snprintf(what, sizeof what, "allreduce %s x %" PRId64 " %s %s", em_dtype_name(dt), n,
           coll_redop_name(op), inplace ? "in place" : "out of place");
  char *send = xmalloc(nb + gb), *recv = inplace ? send : xmalloc(nb + gb), *want = xmalloc(nb);
  fill(send, n, dt, op, rank, 0);
  memset(send + nb, SEND_GUARD, gb);
  if (!inplace) memset(recv, RECV_FILL, nb + gb);
  if (RUN_OP(what, allreduce, comm, coll_host_buf(send, n + GUARD, dt),
             coll_host_buf(recv, n + GUARD, dt), n, op)) {
    allreduces_done++;
    reduce_ref(want, n, dt, op, 0);
    CHECK_SAME(recv, want, n, dt, what);
    CHECK_GUARD(recv + nb, gb, inplace ? SEND_GUARD : RECV_FILL, what);
    if (!inplace) {
      fill(want, n, dt, op, rank, 0);
      CHECK_SAME(send, want, n, dt, "out-of-place send changed");
      CHECK_GUARD(send + nb, gb, SEND_GUARD, what);
    }
  }
  free(want);
  if (!inplace) free(recv);
  free(send);
}

static void run_broadcast(em_dtype dt, int64_t n, int root) {
  size_t es = em_dtype_size(dt), nb = (size_t)n * es, gb = GUARD * es;
  char what[160];
  snprintf(what, sizeof what, "broadcast %s x %" PRId64 " root %d", em_dtype_name(dt), n, root);
  char *buf = xmalloc(nb + gb), *want = xmalloc(nb);
  for (int64_t i = 0; i < n; i++) {
    int64_t v = base_bcast(root, i);
    put(want, i, dt, dt == EM_I64 ? v * ((int64_t)1 << 33) : v);
  }
  if (rank == root)
    memcpy(buf, want, nb);
  else
    memset(buf, RECV_FILL, nb);
  memset(buf + nb, SEND_GUARD, gb);
  if (RUN_OP(what, broadcast, comm, coll_host_buf(buf, n + GUARD, dt), n, root)) {
    CHECK_SAME(buf, want, n, dt, what);
    CHECK_GUARD(buf + nb, gb, SEND_GUARD, what);
  }
  free(want);
  free(buf);
}

/* send: world * n elements; rank r's result is recv[0, n) (in place: the same buffer). */
static void run_reduce_scatter(em_dtype dt, int64_t n, coll_redop op, bool inplace) {
  size_t es = em_dtype_size(dt), nb = (size_t)n * es, gb = GUARD * es;
  size_t sb = (size_t)world * nb;
  char what[160];
  snprintf(what, sizeof what, "reduce_scatter %s x %" PRId64 " %s %s", em_dtype_name(dt), n,
           coll_redop_name(op), inplace ? "in place" : "out of place");
  char *send = xmalloc(sb + gb), *want = xmalloc(sb);
  char *recv = inplace ? send : xmalloc(nb + gb);
  fill(send, (int64_t)world * n, dt, op, rank, 0);
  memset(send + sb, SEND_GUARD, gb);
  if (!inplace) memset(recv, RECV_FILL, nb + gb);
  int64_t recv_numel = inplace ? (int64_t)world * n + GUARD : n + GUARD;
  if (RUN_OP(what, reduce_scatter, comm, coll_host_buf(send, (int64_t)world * n + GUARD, dt),
             coll_host_buf(recv, recv_numel, dt), n, op)) {
    reduce_ref(want, n, dt, op, (int64_t)rank * n);
    CHECK_SAME(recv, want, n, dt, what);
    if (inplace) {
      CHECK_GUARD(send + sb, gb, SEND_GUARD, what);
    } else {
      CHECK_GUARD(recv + nb, gb, RECV_FILL, what);
      fill(want, (int64_t)world * n, dt, op, rank, 0);
      CHECK_SAME(send, want, (int64_t)world * n, dt, "out-of-place send changed");
      CHECK_GUARD(send + sb, gb, SEND_GUARD, what);
    }
  }
  free(want);
  if (!inplace) free(recv);
  free(send);
}

/* recv: world * n elements, rank r's n at [r n, (r+1) n); in place: send = recv + rank * n. */
static void run_allgather(em_dtype dt, int64_t n, bool inplace) {
  size_t es = em_dtype_size(dt), nb = (size_t)n * es, gb = GUARD * es;
  size_t rb = (size_t)world * nb;
  char what[160];
  snprintf(what, sizeof what, "allgather %s x %" PRId64 " %s", em_dtype_name(dt), n,
           inplace ? "in place" : "out of place");
  char *recv = xmalloc(rb + gb), *want = xmalloc(rb);
  char *send = inplace ? recv + (size_t)rank * nb : xmalloc(nb + gb);
  for (int r = 0; r < world; r++)
    for (int64_t i = 0; i < n; i++) put(want + (size_t)r * nb, i, dt, base_bcast(r, i));
  memset(recv, RECV_FILL, rb + gb);
  memcpy(send, want + (size_t)rank * nb, nb);
  if (!inplace) memset(send + nb, SEND_GUARD, gb);
  if (RUN_OP(what, allgather, comm, coll_host_buf(send, inplace ? n : n + GUARD, dt),
             coll_host_buf(recv, (int64_t)world * n + GUARD, dt), n)) {
    CHECK_SAME(recv, want, (int64_t)world * n, dt, what);
    CHECK_GUARD(recv + rb, gb, RECV_FILL, what);
    if (!inplace) {
      CHECK_SAME(send, want + (size_t)rank * nb, n, dt, "out-of-place send changed");
      CHECK_GUARD(send + nb, gb, SEND_GUARD, what);
    }
  }
  if (!inplace) free(send);
  free(want);
  free(recv);
}

static int64_t realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Nobody leaves a barrier before the last rank entered it: rank r arrives (r + round) % world
 * times 40 ms late; arrival and departure times are gathered and compared. Then a burst. */
static void run_barrier(void) {
  int64_t *times = xmalloc(sizeof(int64_t) * 2 * (size_t)world);
  for (int round = 0; round < 3; round++) {
    usleep((useconds_t)(((rank + round) % world) * 40000));
    int64_t t[2];
    t[0] = realtime_ns();
    bool ok = RUN_OP("barrier", barrier, comm);
    t[1] = realtime_ns();
    ok &= finish(coll_allgather(comm, coll_host_buf(t, 2, EM_I64),
                                coll_host_buf(times, 2 * world, EM_I64), 2),
                 "allgather of barrier times");
    if (!ok) continue;
    int64_t last_in = times[0];
    for (int r = 1; r < world; r++)
      if (times[2 * r] > last_in) last_in = times[2 * r];
    for (int r = 0; r < world; r++)
      CHECK(times[2 * r + 1] >= last_in,
            "round %d: rank %d left the barrier %.3f ms before the last rank entered it", round, r,
            1e-6 * (double)(last_in - times[2 * r + 1]));
  }
  free(times);
  /* 100 barriers issued back to back, then waited in order. */
  coll_req *reqs[100];
  for (int i = 0; i < 100; i++) reqs[i] = coll_barrier(comm);
  for (int i = 0; i < 100; i++) finish(reqs[i], "barrier burst");
}

/* ---- argument errors: local, the same on every rank, so no rank is left waiting ------------- */
static void expect_null(coll_req *r, em_status want, const char *what, const char *needle) {
  if (!CHECK(r == NULL, "%s: accepted", what)) {
    coll_wait(r, COLL_TIMEOUT_DEFAULT);
    return;
  }
  CHECK(em_last_status() == want, "%s: status %s, want %s (%s)", what,
        em_status_str(em_last_status()), em_status_str(want), em_last_error());
  CHECK(em_last_error()[0] != '\0', "%s: no message", what);
  if (needle) CHECK_STR(em_last_error(), needle);
}

static void run_argument_errors(void) {
  float a[8] = {0}, b[8] = {0};
  int32_t ia[8] = {0};
  coll_buf fa = coll_host_buf(a, 8, EM_F32), fb = coll_host_buf(b, 8, EM_F32);
  expect_null(coll_allreduce(comm, fa, fb, 9, COLL_SUM), EM_ERR_INVALID, "count > numel", NULL);
  expect_null(coll_allreduce(comm, fa, fb, -1, COLL_SUM), EM_ERR_INVALID, "count -1", NULL);
  expect_null(coll_allreduce(comm, fa, coll_host_buf(ia, 8, EM_I32), 8, COLL_SUM), EM_ERR_INVALID,
              "send f32, recv i32", NULL);
  expect_null(
      coll_allreduce(comm, coll_host_buf(ia, 8, EM_I32), coll_host_buf(ia, 8, EM_I32), 8, COLL_AVG),
      EM_ERR_INVALID, "avg of i32", NULL);
  expect_null(coll_allreduce(comm, fa, fb, 8, (coll_redop)7), EM_ERR_INVALID, "redop 7", NULL);
  expect_null(coll_allreduce(comm, coll_host_buf(NULL, 8, EM_F32), fb, 8, COLL_SUM), EM_ERR_INVALID,
              "NULL send", NULL);
  expect_null(coll_allreduce(NULL, fa, fb, 8, COLL_SUM), EM_ERR_STATE, "NULL comm", "ddp_init");
  expect_null(coll_broadcast(comm, fa, 8, world), EM_ERR_INVALID, "root = world", "root");
  expect_null(coll_broadcast(comm, fa, 8, -1), EM_ERR_INVALID, "root -1", "root");
  expect_null(coll_reduce_scatter(comm, fa, fb, 8 / world + 1, COLL_SUM), EM_ERR_INVALID,
              "reduce_scatter send < world * count", NULL);
  expect_null(coll_allgather(comm, fa, fb, 8 / world + 1), EM_ERR_INVALID,
              "allgather recv < world * count", NULL);
  coll_buf gpu = fb;
  gpu.device = (em_device){EM_CUDA, 0};
  expect_null(coll_allreduce(comm, fa, gpu, 8, COLL_SUM), EM_ERR_INVALID, "cpu send, cuda recv",
              NULL);
  coll_req_detach(NULL);

  /* Tensors: a contiguous one is its storage; a transposed view is refused by name. */
  float data[6] = {1, 2, 3, 4, 5, 6};
  em_tensor *t = em_from_data(EM_F32, 2, (int64_t[]){2, 3}, data);
  coll_buf tb = coll_buf_of(t);
  CHECK(tb.ptr == em_data(t) && tb.numel == 6 && tb.dtype == EM_F32 && tb.device.kind == EM_CPU,
        "coll_buf_of: ptr %p numel %" PRId64, tb.ptr, tb.numel);
  if (finish(coll_allreduce(comm, tb, tb, 6, COLL_MAX), "allreduce of a tensor"))
    CHECK_SAME(em_data(t), data, 6, EM_F32, "allreduce max of a tensor");
  em_tensor *tt = em_transpose(t, 0, 1);
  coll_buf ttb = coll_buf_of(tt);
  CHECK(ttb.ptr == NULL, "coll_buf_of(transposed view) = %p, want NULL", ttb.ptr);
  expect_null(coll_allreduce(comm, ttb, ttb, 6, COLL_SUM), EM_ERR_INVALID, "non-contiguous", NULL);
  em_release(tt);
  em_release(t);
  coll_buf nb = coll_buf_of(NULL);
  CHECK(nb.ptr == NULL, "coll_buf_of(NULL)");
}

/* ---- driver ---------------------------------------------------------------------------------- */
static const int64_t sizes[] = {1,    2,    3,     7,      64,     1000,   1023,   1024,
                                1025, 3073, 65537, 262143, 262144, 262145, 524305, 3145735};
static const coll_redop redops[] = {COLL_SUM, COLL_AVG, COLL_MAX, COLL_MIN};
static const int64_t int_sizes[] = {1, 7, 1000, 1025, 5000, 70001};
static const em_dtype int_dtypes[] = {EM_I32, EM_I64, EM_U8};
static const int64_t half_sizes[] = {1, 7, 1000, 1025, 5000, 70001, 600001};
static const em_dtype half_dtypes[] = {EM_BF16, EM_F16};

static void run_all(int64_t max_count) {
  run_argument_errors();
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes && sizes[k] <= max_count; k++) {
    int64_t n = sizes[k];
    bool big = n > 300000; /* fewer combinations: a few reductions and layouts each */
    for (int o = 0; o < 4; o++)
      for (int ip = 0; ip < 2; ip++) {
        if (big && ip != (o == COLL_SUM || o == COLL_MIN)) continue;
        run_allreduce(EM_F32, n, redops[o], ip);
        run_reduce_scatter(EM_F32, n, redops[o], !ip);
      }
    for (int root = 0; root < world; root++)
      if (!big || root == world - 1) run_broadcast(EM_F32, n, root);
    run_allgather(EM_F32, n, false);
    run_allgather(EM_F32, n, true);
  }
  for (size_t d = 0; d < 3; d++)
    for (size_t k = 0; k < sizeof int_sizes / sizeof *int_sizes; k++) {
      int64_t n = int_sizes[k];
      for (int o = 0; o < 4; o++) {
        if (redops[o] == COLL_AVG) continue;
        run_allreduce(int_dtypes[d], n, redops[o], k % 2);
        run_allreduce(int_dtypes[d], n, redops[o], !(k % 2));
        run_reduce_scatter(int_dtypes[d], n, redops[o], (k + (size_t)o) % 2);
      }
      run_broadcast(int_dtypes[d], n, (int)(k % (size_t)world));
      run_allgather(int_dtypes[d], n, k % 2);
    }
  for (size_t d = 0; d < 2; d++) /* 16-bit floats: reduced in f32 by the backend */
    for (size_t k = 0; k < sizeof half_sizes / sizeof *half_sizes; k++) {
      int64_t n = half_sizes[k];
      for (int o = 0; o < 4; o++) {
        run_allreduce(half_dtypes[d], n, redops[o], (k + (size_t)o) % 2);
        run_reduce_scatter(half_dtypes[d], n, redops[o], (k + (size_t)o + 1) % 2);
      }
      run_broadcast(half_dtypes[d], n, (int)((k + 1) % (size_t)world));
      run_allgather(half_dtypes[d], n, (k + 1) % 2);
    }
  run_barrier();
}

/* 64 Mi elements (256 MB a buffer): in place sum, out of place avg on a ragged count. */
static void run_big(void) {
  const int64_t n = (int64_t)64 << 20;
  float *buf = xmalloc((size_t)n * 4), *out = xmalloc((size_t)n * 4);
  fill(buf, n, EM_F32, COLL_SUM, rank, 0);
  const float T = (float)(world * (world + 1) / 2);
  if (finish(coll_allreduce(comm, coll_host_buf(buf, n, EM_F32), coll_host_buf(buf, n, EM_F32), n,
                            COLL_SUM),
             "allreduce f32 x 64Mi sum in place")) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
      if (buf[i] != T * (float)((i * 7 + 3) % 13) && bad++ == 0) first = i;
    CHECK(bad == 0, "64Mi sum: %" PRId64 " elements wrong, first [%" PRId64 "] = %g, want %g", bad,
          first, bad ? (double)buf[first] : 0.0,
          bad ? (double)(T * (float)((first * 7 + 3) % 13)) : 0.0);
  }
  const int64_t m = n - 3;
  fill(buf, m, EM_F32, COLL_AVG, rank, 0);
  memset(out, RECV_FILL, (size_t)n * 4);
  if (finish(coll_allreduce(comm, coll_host_buf(buf, n, EM_F32), coll_host_buf(out, n, EM_F32), m,
                            COLL_AVG),
             "allreduce f32 x (64Mi - 3) avg out of place")) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < m; i++)
      if (out[i] != T * (float)((i * 7 + 3) % 13) / (float)world && bad++ == 0) first = i;
    CHECK(bad == 0, "64Mi-3 avg: %" PRId64 " elements wrong, first [%" PRId64 "] = %g", bad, first,
          bad ? (double)out[first] : 0.0);
    CHECK_GUARD(out + m, 12, RECV_FILL, "64Mi-3 avg: elements past count");
  }
  free(out);
  free(buf);
}

int main(int argc, char **argv) {
  em_status s = ddp_init(&argc, &argv);
  if (s != EM_OK) {
    fprintf(stderr, "[rank %d] ddp_init: %s: %s\n", chk_rank(), em_status_str(s), em_last_error());
    return 1;
  }
  int64_t max_count = 3145735;
  bool big = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--big"))
      big = true;
    else if (!strcmp(argv[i], "--blocking"))
      blocking = true;
    else if (!strcmp(argv[i], "--max-count") && i + 1 < argc)
      max_count = atoll(argv[++i]);
    else {
      fprintf(stderr, "usage: test_coll_ops [--max-count N] [--big] [--blocking]\n");
      return 2;
    }
  }
  verbose = getenv("EMBER_TEST_VERBOSE") != NULL;
  comm = ddp_comm();
  rank = ddp_rank();
  world = ddp_world_size();
  CHECK(comm != NULL && coll_size(comm) == world && coll_rank(comm) == rank,
        "communicator: %p rank %d size %d", (void *)comm, comm ? coll_rank(comm) : -1,
        comm ? coll_size(comm) : -1);
  CHECK(world >= 2, "world %d: run under mpirun with 2 or more ranks", world);
  if (!comm || world < 2) return chk_finish("test_coll_ops");

  const char *chunk_env = getenv("EMBER_COLL_CHUNK_BYTES");
  coll_options o = coll_get_options(comm);
  int64_t want_chunk = chunk_env ? atoll(chunk_env) : 1 << 20;
  CHECK(o.chunk_bytes == want_chunk, "chunk_bytes %" PRId64 ", want %" PRId64, o.chunk_bytes,
        want_chunk);
  const char *every_env = getenv("EMBER_COLL_CHECK_EVERY");
  int want_every = every_env ? atoi(every_env) : 1;
  CHECK(o.check_every == want_every, "check_every %d, want %d", o.check_every, want_every);
  CHECK(!strcmp(coll_backend_name(comm, EM_CPU) ? coll_backend_name(comm, EM_CPU) : "", "mpi"),
        "host backend %s, want mpi", coll_backend_name(comm, EM_CPU));
  CHECK(!strcmp(coll_kind_name(COLL_ALLREDUCE), "allreduce") &&
            !strcmp(coll_kind_name(COLL_BROADCAST), "broadcast") &&
            !strcmp(coll_kind_name(COLL_ALLGATHER), "allgather") &&
            !strcmp(coll_kind_name(COLL_BARRIER), "barrier") &&
            coll_kind_name(COLL_REDUCE_SCATTER)[0] != '\0',
        "coll_kind_name");
  CHECK(!strcmp(coll_redop_name(COLL_SUM), "sum") && !strcmp(coll_redop_name(COLL_AVG), "avg") &&
            !strcmp(coll_redop_name(COLL_MAX), "max") && !strcmp(coll_redop_name(COLL_MIN), "min"),
        "coll_redop_name");

  double t0 = chk_now();
  if (big)
    run_big();
  else
    run_all(max_count);

  coll_stats st = coll_get_stats(comm);
  CHECK(st.ops == ops_done, "stats.ops %" PRId64 ", %" PRId64 " operations completed", st.ops,
        ops_done);
  /* In shared memory (one node, EMBER_COLL_SHM not 0) every blocking allreduce, broadcast and
   * barrier ran on this thread; through MPI none did, nor hierarchically (EMBER_COLL_NODE_RANKS
   * cuts this machine into several nodes): that path calls MPI, so only the comm thread runs it.
   * With nodes of 2+ ranks every all-reduce is hierarchical; with 1 rank per node none. */
  const char *shm_env = getenv("EMBER_COLL_SHM"), *k_env = getenv("EMBER_COLL_NODE_RANKS");
  bool shm = !(shm_env && !strcmp(shm_env, "0"));
  int k = k_env && atoi(k_env) > 0 ? atoi(k_env) : world;
  int64_t want_here = shm && k == world ? run_here : 0;
  CHECK(st.by_caller == want_here, "stats.by_caller %" PRId64 ", want %" PRId64, st.by_caller,
        want_here);
  bool hier = shm && k >= 2 && k < world;
  CHECK(hier ? st.hierarchical >= allreduces_done : st.hierarchical == 0,
        "stats.hierarchical %" PRId64 " with %" PRId64 " all-reduces, EMBER_COLL_NODE_RANKS=%s",
        st.hierarchical, allreduces_done, k_env ? k_env : "(unset)");
  /* All-reduces through MPI (EMBER_COLL_SHM=0, or between nodes) wait by testing and sleeping
   * with EMBER_COLL_WAIT=sleep, or by default where the ranks outnumber the CPUs: under
   * mpirun.sh (--bind-to none) every rank inherits this process's CPU set, so more ranks than it
   * holds. In shared memory on one node, never. */
  const char *wait_env = getenv("EMBER_COLL_WAIT");
  cpu_set_t cpus;
  CHECK(sched_getaffinity(0, sizeof cpus, &cpus) == 0, "sched_getaffinity failed");
  bool sleeps = wait_env && !strcmp(wait_env, "sleep")  ? true
                : wait_env && !strcmp(wait_env, "spin") ? false
                                                        : world > CPU_COUNT(&cpus);
  bool via_mpi = (!shm || k < world) && allreduces_done > 0; /* several nodes: MPI between */
  CHECK(via_mpi && sleeps ? st.sleeping_waits > 0 : st.sleeping_waits == 0,
        "stats.sleeping_waits %" PRId64 ": want %s (EMBER_COLL_WAIT=%s, %d ranks, %d CPUs, "
        "all-reduces %s)",
        st.sleeping_waits, via_mpi && sleeps ? "> 0" : "0", wait_env ? wait_env : "(unset)", world,
        CPU_COUNT(&cpus), via_mpi ? "through MPI" : "in shared memory");
  /* Every operation here succeeded, so they are numbered 1..ops and every k-th is checked. */
  int64_t want_checks = o.check_every > 0 ? st.ops / o.check_every : 0;
  CHECK(st.checks == want_checks,
        "stats.checks %" PRId64 " with check_every %d and %" PRId64 " operations, want %" PRId64,
        st.checks, o.check_every, st.ops, want_checks);
  CHECK(st.bytes > 0 && st.busy_s > 0, "stats.bytes %" PRId64 " busy_s %g", st.bytes, st.busy_s);
  if (verbose && rank == 0)
    printf("test_coll_ops: %" PRId64 " operations in %.2f s\n", ops_done, chk_now() - t0);
  return chk_finish(big ? "test_coll_ops --big" : "test_coll_ops");
}
