/* test_coll_nccl.c: the NCCL backend (collectives/nccl.c) on cuda:0 in a world of one rank, driven
 * through the public coll_* calls on a communicator made the way ddp_init makes it
 * (coll__comm_new + coll__nccl_new, no MPI needed for one rank).
 *
 * Oracle: every rank's input is a small integer pattern val(rank, i), exact in every dtype, so
 * the expected result is computed on the host over all ranks and compared bit for bit (the
 * reference is written for any world size; here it is 1). Every device buffer has GUARD elements
 * of SENTINEL bytes past its end, checked after each operation, and out-of-place send buffers must
 * come back unchanged.
 *
 * Skips when the build has no NCCL or no CUDA device is usable (any CUDA error counts as none). */
#include "testutil.h"

#ifdef EMBER_HAVE_NCCL
#include "coll_internal.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD 16      /* elements past the end of every device buffer */
#define SENTINEL 0x5a /* their byte value */
#define WAIT_S 60.0   /* explicit timeout: a hang fails the test instead of aborting it */

static const int64_t sizes[] = {1, 1000, (1 << 20) + 3};
#define NSIZES ((int)(sizeof sizes / sizeof sizes[0]))

/* ---- the communicator ------------------------------------------------------------------------ */
static coll_comm *open_comm(void) {
  if (em_cuda_device_count() == 0) cr_skip_test("no usable CUDA device");
  coll_comm *c = coll__comm_new(NULL, 0, 1, 0);
  cr_assert(c, "coll__comm_new: %s", em_last_error());
  if (!c->device) c->device = coll__nccl_new(c, 0, NULL);
  cr_assert(c->device, "coll__nccl_new: %s", em_last_error());
  cr_assert_str_eq(coll_backend_name(c, EM_CUDA), "nccl");
  return c;
}

#define CUDA_OK(call)                                                                              \
  do {                                                                                             \
    cudaError_t e_ = (call);                                                                       \
    cr_assert_eq(e_, cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));                        \
  } while (0)

/* ---- inputs and the host reference ----------------------------------------------------------- */
/* Rank q's element i: an integer in [-30, 30] ([0, 60] for u8), exact in bf16 and f16 even when
 * summed over up to 8 ranks. */
static double val(em_dtype dt, int q, int64_t i) {
  int64_t v = (i * 7 + q * 13 + 5) % 61;
  return dt == EM_U8 ? (double)v : (double)(v - 30);
}

/* op over ranks of val(q, i), as the collective should compute it. */
static double reduce_ref(em_dtype dt, coll_redop op, int W, int64_t i) {
  double acc = val(dt, 0, i);
  for (int q = 1; q < W; q++) {
    double x = val(dt, q, i);
    if (op == COLL_MAX)
      acc = x > acc ? x : acc;
    else if (op == COLL_MIN)
      acc = x < acc ? x : acc;
    else
      acc += x;
  }
  return op == COLL_AVG ? acc / W : acc;
}

/* A host tensor of n elements of dt, h[i] = f(i) (scope-owned). */
static em_tensor *host_of(em_dtype dt, int64_t n, double (*f)(em_dtype, int64_t, const void *),
                          const void *ctx) {
  em_tensor *t = em_empty(dt, 1, (int64_t[]){n});
  cr_assert(t, "%s", em_last_error());
  for (int64_t i = 0; i < n; i++) em_set(t, i, f(dt, i, ctx));
  return t;
}
typedef struct {
  int rank;
  int64_t base;
} input_ctx;
static double input_at(em_dtype dt, int64_t i, const void *ctx) {
  const input_ctx *x = ctx;
  return val(dt, x->rank, x->base + i);
}
typedef struct {
  coll_redop op;
  int W;
  int64_t base;
} reduce_ctx;
static double reduce_at(em_dtype dt, int64_t i, const void *ctx) {
  const reduce_ctx *x = ctx;
  return reduce_ref(dt, x->op, x->W, x->base + i);
}
typedef struct {
  int64_t count; /* per rank */
} gather_ctx;
static double gather_at(em_dtype dt, int64_t i, const void *ctx) {
  const gather_ctx *x = ctx;
  return val(dt, (int)(i / x->count), i % x->count);
}
/* This rank's input: val(rank, base + i). */
static em_tensor *input_of(em_dtype dt, int rank, int64_t base, int64_t n) {
  return host_of(dt, n, input_at, &(input_ctx){rank, base});
}

/* ---- device buffers -------------------------------------------------------------------------- */
typedef struct {
  char *d;
  int64_t n; /* usable elements; GUARD more follow */
  em_dtype dt;
} dbuf;

static dbuf dev_new(em_dtype dt, int64_t n) {
  dbuf b = {NULL, n, dt};
  size_t bytes = (size_t)(n + GUARD) * em_dtype_size(dt);
  CUDA_OK(cudaMalloc((void **)&b.d, bytes));
  CUDA_OK(cudaMemset(b.d, SENTINEL, bytes));
  return b;
}
static void dev_free(dbuf b) { CUDA_OK(cudaFree(b.d)); }
/* Element off of b as a coll_buf of n elements. */
static coll_buf cbuf_at(dbuf b, int64_t off, int64_t n) {
  coll_buf c = {b.d + (size_t)off * em_dtype_size(b.dt), n, b.dt, {EM_CUDA, 0}};
  return c;
}
static coll_buf cbuf(dbuf b) { return cbuf_at(b, 0, b.n); }
static void dev_put(dbuf b, int64_t off, const em_tensor *h) {
  size_t es = em_dtype_size(b.dt);
  CUDA_OK(cudaMemcpy(b.d + (size_t)off * es, em_data(h), (size_t)em_numel(h) * es,
                     cudaMemcpyHostToDevice));
}
static em_tensor *dev_get(dbuf b, int64_t off, int64_t n) {
  em_tensor *h = em_empty(b.dt, 1, (int64_t[]){n});
  cr_assert(h, "%s", em_last_error());
  size_t es = em_dtype_size(b.dt);
  CUDA_OK(cudaMemcpy(em_data(h), b.d + (size_t)off * es, (size_t)n * es, cudaMemcpyDeviceToHost));
  return h;
}

/* got and want hold the same bytes; names the first differing element. */
static void assert_same(const em_tensor *got, const em_tensor *want, const char *what) {
  int64_t n = em_numel(want);
  size_t es = em_dtype_size(want->dtype);
  cr_assert_eq(em_numel(got), n, "%s: %lld elements, want %lld", what, (long long)em_numel(got),
               (long long)n);
  if (memcmp(em_data(got), em_data(want), (size_t)n * es) == 0) return;
  for (int64_t i = 0; i < n; i++)
    if (memcmp((const char *)em_data(got) + i * es, (const char *)em_data(want) + i * es, es))
      cr_assert_fail("%s: element %lld of %lld is %g, want %g", what, (long long)i, (long long)n,
                     em_get(got, i), em_get(want, i));
}

static void assert_guard(dbuf b, const char *what) {
  size_t es = em_dtype_size(b.dt), bytes = GUARD * es;
  unsigned char tail[GUARD * 8];
  CUDA_OK(cudaMemcpy(tail, b.d + (size_t)b.n * es, bytes, cudaMemcpyDeviceToHost));
  for (size_t k = 0; k < bytes; k++)
    cr_assert_eq(tail[k], SENTINEL, "%s: wrote past the end of its buffer (byte %zu of the guard)",
                 what, k);
}

static void run_ok(coll_req *r, const char *what) {
  cr_assert(r, "%s: not issued: %s", what, em_last_error());
  em_status st = coll_wait(r, WAIT_S);
  cr_assert_eq(st, EM_OK, "%s: %s (%s)", what, em_status_str(st), em_last_error());
}

/* ---- allreduce ------------------------------------------------------------------------------- */
static void check_allreduce(coll_comm *c, em_dtype dt, coll_redop op, int64_t n, bool in_place) {
  char what[128];
  snprintf(what, sizeof what, "allreduce %s %s x %lld %s", coll_redop_name(op), em_dtype_name(dt),
           (long long)n, in_place ? "in place" : "out of place");
  em_scope s = em_scope_begin();
  int W = coll_size(c), rank = coll_rank(c);
  em_tensor *in = input_of(dt, rank, 0, n);
  em_tensor *want = host_of(dt, n, reduce_at, &(reduce_ctx){op, W, 0});
  dbuf send = dev_new(dt, n), recv = in_place ? send : dev_new(dt, n);
  dev_put(send, 0, in);
  run_ok(coll_allreduce(c, cbuf(send), cbuf(recv), n, op), what);
  assert_same(dev_get(recv, 0, n), want, what);
  assert_guard(recv, what);
  if (!in_place) {
    assert_same(dev_get(send, 0, n), in, what); /* the input is left alone */
    assert_guard(send, what);
    dev_free(recv);
  }
  dev_free(send);
  em_scope_end(s);
}

Test(coll_nccl, allreduce_f32) {
  coll_comm *c = open_comm();
  TU_BEGIN;
  for (int k = 0; k < NSIZES; k++)
    for (int op = COLL_SUM; op <= COLL_MIN; op++)
      for (int ip = 0; ip < 2; ip++) check_allreduce(c, EM_F32, (coll_redop)op, sizes[k], ip);
  TU_END;
  coll__comm_free(c);
}

Test(coll_nccl, allreduce_dtypes) {
  coll_comm *c = open_comm();
  TU_BEGIN;
  const em_dtype dts[] = {EM_BF16, EM_F16, EM_I32, EM_I64, EM_U8};
  for (int d = 0; d < 5; d++)
    for (int op = COLL_SUM; op <= COLL_MIN; op++) {
      bool fl = dts[d] == EM_BF16 || dts[d] == EM_F16;
      if (op == COLL_AVG && !fl) continue; /* rejected: see bad_arguments */
      for (int ip = 0; ip < 2; ip++) check_allreduce(c, dts[d], (coll_redop)op, 1000, ip);
    }
  TU_END;
  coll__comm_free(c);
}

/* ---- broadcast ------------------------------------------------------------------------------- */
Test(coll_nccl, broadcast) {
  coll_comm *c = open_comm();
  TU_BEGIN;
  int rank = coll_rank(c);
  for (int k = 0; k < NSIZES; k++)
    for (int root = 0; root < coll_size(c); root++) {
      em_scope s = em_scope_begin();
      char what[96];
      snprintf(what, sizeof what, "broadcast f32 x %lld root %d", (long long)sizes[k], root);
      int64_t n = sizes[k];
      dbuf b = dev_new(EM_F32, n);
      dev_put(b, 0, input_of(EM_F32, rank, 0, n));
      run_ok(coll_broadcast(c, cbuf(b), n, root), what);
      assert_same(dev_get(b, 0, n), input_of(EM_F32, root, 0, n), what);
      assert_guard(b, what);
      dev_free(b);
      em_scope_end(s);
    }
  TU_END;
  coll__comm_free(c);
}

/* ---- reduce_scatter -------------------------------------------------------------------------- */
/* Rank r's send is val(r, 0 .. W*n); rank r gets op over ranks of block r. In place (send == recv,
 * W*n elements) the result is at recv[0, n), as coll.h says. */
static void check_reduce_scatter(coll_comm *c, coll_redop op, int64_t n, bool in_place) {
  char what[128];
  snprintf(what, sizeof what, "reduce_scatter %s f32 x %lld %s", coll_redop_name(op), (long long)n,
           in_place ? "in place" : "out of place");
  em_scope s = em_scope_begin();
  int W = coll_size(c), rank = coll_rank(c);
  em_tensor *in = input_of(EM_F32, rank, 0, W * n);
  em_tensor *want = host_of(EM_F32, n, reduce_at, &(reduce_ctx){op, W, (int64_t)rank * n});
  dbuf send = dev_new(EM_F32, W * n), recv = in_place ? send : dev_new(EM_F32, n);
  dev_put(send, 0, in);
  run_ok(coll_reduce_scatter(c, cbuf(send), cbuf(recv), n, op), what);
  assert_same(dev_get(recv, 0, n), want, what);
  assert_guard(recv, what);
  if (!in_place) {
    assert_same(dev_get(send, 0, W * n), in, what);
    assert_guard(send, what);
    dev_free(recv);
  }
  dev_free(send);
  em_scope_end(s);
}

Test(coll_nccl, reduce_scatter) {
  coll_comm *c = open_comm();
  TU_BEGIN;
  for (int k = 0; k < NSIZES; k++)
    for (int op = COLL_SUM; op <= COLL_MIN; op++)
      for (int ip = 0; ip < 2; ip++) check_reduce_scatter(c, (coll_redop)op, sizes[k], ip);
  TU_END;
  coll__comm_free(c);
}

/* ---- allgather ------------------------------------------------------------------------------- */
/* Rank q sends val(q, 0 .. n); recv[q*n + i] = val(q, i). In place: send is recv's block `rank`. */
static void check_allgather(coll_comm *c, int64_t n, bool in_place) {
  char what[96];
  snprintf(what, sizeof what, "allgather f32 x %lld %s", (long long)n,
           in_place ? "in place" : "out of place");
  em_scope s = em_scope_begin();
  int W = coll_size(c), rank = coll_rank(c);
  em_tensor *in = input_of(EM_F32, rank, 0, n);
  em_tensor *want = host_of(EM_F32, W * n, gather_at, &(gather_ctx){n});
  dbuf recv = dev_new(EM_F32, W * n);
  if (in_place) {
    dev_put(recv, (int64_t)rank * n, in);
    run_ok(coll_allgather(c, cbuf_at(recv, (int64_t)rank * n, n), cbuf(recv), n), what);
  } else {
    dbuf send = dev_new(EM_F32, n);
    dev_put(send, 0, in);
    run_ok(coll_allgather(c, cbuf(send), cbuf(recv), n), what);
    assert_same(dev_get(send, 0, n), in, what);
    assert_guard(send, what);
    dev_free(send);
  }
  assert_same(dev_get(recv, 0, W * n), want, what);
  assert_guard(recv, what);
  dev_free(recv);
  em_scope_end(s);
}

Test(coll_nccl, allgather) {
  coll_comm *c = open_comm();
  TU_BEGIN;
  for (int k = 0; k < NSIZES; k++)
    for (int ip = 0; ip < 2; ip++) check_allgather(c, sizes[k], ip);
  TU_END;
  coll__comm_free(c);
}

/* ---- barrier, ordering, detach, reports ------------------------------------------------------ */
/* coll_barrier goes to the host backend; the NCCL barrier is reached through the table. */
static coll_req *nccl_barrier(coll_comm *c) {
  coll_req *r = calloc(1, sizeof *r);
  cr_assert(r);
  r->comm = c;
  r->backend = c->device;
  r->kind = COLL_BARRIER;
  r->dtype = EM_U8;
  r->device = (em_device){EM_CUDA, 0};
  r->state = REQ_QUEUED;
  r->t_issued = coll__now();
  pthread_mutex_lock(&c->lock);
  r->seq = c->next_seq++;
  pthread_mutex_unlock(&c->lock);
  if (c->device->start(c->device->state, r) != EM_OK) {
    free(r);
    return NULL;
  }
  return r;
}

Test(coll_nccl, many_in_flight) {
  coll_comm *c = open_comm();
  TU_BEGIN;
  enum { K = 8 };
  const int64_t n = (1 << 20) + 3;
  int W = coll_size(c), rank = coll_rank(c);
  em_tensor *in = input_of(EM_F32, rank, 0, n);
  em_tensor *want = host_of(EM_F32, n, reduce_at, &(reduce_ctx){COLL_SUM, W, 0});
  dbuf b[K];
  coll_req *r[K];
  for (int k = 0; k < K; k++) {
    b[k] = dev_new(EM_F32, n);
    dev_put(b[k], 0, in);
  }
  coll_stats s0 = coll_get_stats(c);
  for (int k = 0; k < K; k++) {
    r[k] = coll_allreduce(c, cbuf(b[k]), cbuf(b[k]), n, COLL_SUM);
    cr_assert(r[k], "allreduce %d: %s", k, em_last_error());
  }
  coll_req *bar = nccl_barrier(c);
  cr_assert(bar, "barrier: %s", em_last_error());
  coll_req_detach(r[0]); /* completed (and freed) by a later poll */
  run_ok(bar, "barrier");
  for (int k = K - 1; k >= 1; k--) { /* last first: the FIFO completes the earlier ones */
    cr_assert(coll_test(r[k]), "allreduce %d not done after a later barrier", k);
    run_ok(r[k], "allreduce");
  }
  coll_stats s1 = coll_get_stats(c);
  cr_assert_eq(s1.ops - s0.ops, K + 1, "completed %lld operations, want %d",
               (long long)(s1.ops - s0.ops), K + 1);
  cr_assert_eq(s1.bytes - s0.bytes, (int64_t)K * n * 4);
  for (int k = 0; k < K; k++) {
    assert_same(dev_get(b[k], 0, n), want, "in-flight allreduce");
    dev_free(b[k]);
  }
  char report[1024] = "";
  c->device->progress_report(c->device->state, NULL, report, sizeof report);
  char last[64];
  snprintf(last, sizeof last, "last completed #%d", K + 1);
  cr_assert(strstr(report, last), "progress report: %s", report);
  cr_assert(strstr(report, "0 in flight"), "progress report: %s", report);
  cr_assert(strstr(report, "no asynchronous error"), "progress report: %s", report);
  TU_END;
  coll__comm_free(c);
}

/* A request nobody waits for is completed at destroy (no leak, no hang: run under ASan). */
Test(coll_nccl, detached_at_destroy) {
  coll_comm *c = open_comm();
  dbuf b = dev_new(EM_F32, 1000);
  coll_req *r = coll_allreduce(c, cbuf(b), cbuf(b), 1000, COLL_SUM);
  cr_assert(r, "%s", em_last_error());
  coll_req_detach(r);
  coll__comm_free(c);
  dev_free(b);
}

/* ---- bad arguments --------------------------------------------------------------------------- */
static void assert_rejected(coll_req *r, em_status want, const char *needle, const char *what) {
  cr_assert_null(r, "%s: accepted", what);
  cr_assert_eq(em_last_status(), want, "%s: status %s, want %s (%s)", what,
               em_status_str(em_last_status()), em_status_str(want), em_last_error());
  cr_assert(strstr(em_last_error(), needle), "%s: message '%s' lacks '%s'", what, em_last_error(),
            needle);
  em_clear_error();
}

Test(coll_nccl, bad_arguments) {
  coll_comm *c = open_comm();
  TU_BEGIN;
  const int64_t n = 1000;
  int W = coll_size(c);
  dbuf f = dev_new(EM_F32, W * n), g = dev_new(EM_F32, W * n), i32 = dev_new(EM_I32, n);
  dbuf h32 = dev_new(EM_F32, n);
  coll_buf host = coll_host_buf(calloc((size_t)n, 4), n, EM_F32);
  cr_assert(host.ptr);
  assert_rejected(coll_allreduce(c, cbuf(f), cbuf(g), W * n + 1, COLL_SUM), EM_ERR_INVALID, "needs",
                  "allreduce count > numel");
  assert_rejected(coll_allreduce(c, cbuf(f), cbuf(g), -1, COLL_SUM), EM_ERR_INVALID, "negative",
                  "allreduce count < 0");
  assert_rejected(coll_allreduce(c, cbuf(i32), cbuf(i32), n, COLL_AVG), EM_ERR_INVALID, "avg",
                  "avg of i32");
  assert_rejected(coll_allreduce(c, cbuf(i32), cbuf(h32), n, COLL_SUM), EM_ERR_INVALID, "i32",
                  "dtype mismatch");
  assert_rejected(coll_allreduce(c, host, cbuf(h32), n, COLL_SUM), EM_ERR_INVALID,
                  "different devices", "host send, device recv");
  assert_rejected(coll_broadcast(c, cbuf(f), W * n + 1, 0), EM_ERR_INVALID, "needs",
                  "broadcast count > numel");
  assert_rejected(coll_broadcast(c, cbuf(f), n, W), EM_ERR_INVALID, "root", "broadcast root");
  assert_rejected(coll_reduce_scatter(c, cbuf_at(f, 0, W * n - 1), cbuf(h32), n, COLL_SUM),
                  EM_ERR_INVALID, "send", "reduce_scatter send short");
  assert_rejected(coll_allgather(c, cbuf(h32), cbuf_at(g, 0, W * n - 1), n), EM_ERR_INVALID,
                  "receive", "allgather recv short");
  /* Overlapping buffers that are not the in-place layout: NCCL would race; the backend refuses. */
  assert_rejected(coll_allreduce(c, cbuf_at(f, 0, n), cbuf_at(f, 1, n), n, COLL_SUM),
                  EM_ERR_INVALID, "overlap", "allreduce overlap");
  /* A refused operation does not fail the communicator. */
  check_allreduce(c, EM_F32, COLL_SUM, n, true);
  free(host.ptr);
  dev_free(f);
  dev_free(g);
  dev_free(i32);
  dev_free(h32);
  TU_END;
  coll__comm_free(c);
}

#else /* !EMBER_HAVE_NCCL */

Test(coll_nccl, unavailable) { cr_skip_test("this build has no NCCL (EMBER_NCCL)"); }

#endif
