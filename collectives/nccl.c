/* nccl.c: the communicator backend for CUDA buffers. Every operation is one NCCL call on a
 * dedicated non-blocking stream, ordered after the kernels that produced its buffers by an event,
 * and completed by polling an event recorded after it (no thread):
 *
 *   caller's thread        legacy stream: ... producer kernels ... [ready]
 *   start(r) ------------------------------------------------------+
 *                                                                  v (cudaStreamWaitEvent)
 *                          comm stream:   [wait ready] [ncclAllReduce #5] [done #5] [wait] ...
 *   poll() -> cudaEventQuery(done #5) -> ncclCommGetAsyncError -> coll__complete(#5)
 *
 * Requests in flight form a FIFO (r->next) in issue order. One stream runs them in that order, so
 * a poll completes every request from the head whose event has fired: a request that nobody
 * waits for (detached) is completed by the next poll of any later one, or by destroy.
 *
 * The unique id travels from rank 0 over the MPI communicator given at creation (a world of 1
 * needs none). The NCCL communicator is non-blocking (ncclConfig_t.blocking = 0), so that no
 * NCCL call can hang: a call that answers ncclInProgress (initialisation waiting for its peers,
 * a collective connecting lazily, finalize) is polled with ncclCommGetAsyncError until it
 * settles, at most for the communicator's timeout (EMBER_COLL_TIMEOUT); past it the NCCL
 * communicator is aborted (ncclCommAbort) and the operation fails naming the timeout. After an
 * asynchronous NCCL error (a peer died, a network error), found by the poll of every wait, the
 * NCCL communicator is aborted at once (which stops its kernels), every request in flight fails
 * with NCCL's message and the communicator is marked failed.
 *
 * Threads: start, poll, progress_report and destroy take the state's lock (lock order: this lock,
 * then comm->lock; coll__complete is called with neither held). They may run on any thread: each
 * makes the communicator's device current and restores the caller's. */
#include "coll_internal.h"
#include "coll_progress.h"

#include <cuda_runtime_api.h>
#include <nccl.h>
#ifdef EMBER_HAVE_MPI
#include <mpi.h>
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
  coll_comm *c;
  int device; /* CUDA ordinal */
  ncclComm_t comm;
  cudaStream_t stream;   /* communication stream (non-blocking: no implicit legacy sync) */
  cudaEvent_t ready;     /* recorded on the legacy stream before each operation */
  int32_t *barrier_buf;  /* one device int: a barrier is an allreduce of it */
  pthread_mutex_t lock;  /* everything below */
  coll_req *head, *tail; /* in flight, issue order; r->backend_data is its done event */
  cudaEvent_t *pool;     /* spare done events */
  int npool, cap;
  uint64_t last_done; /* seq of the last request completed successfully */
  int64_t in_flight;
  char failed[512]; /* non-empty: the first failure; no new operation starts */
  bool broken;      /* results in flight are lost too (asynchronous or CUDA error, timeout) */
} nccl_state;

/* ---- check macros -----------------------------------------------------------------------------
 * The enclosing function has `em_status st`, a `const char *ctx` naming what it is doing (the
 * operation and the rank) and a `cleanup:` label. Each records the foreign message and jumps. */
#define CUDA_CHECK(call)                                                                           \
  do {                                                                                             \
    cudaError_t e_ = (call);                                                                       \
    if (e_ != cudaSuccess) {                                                                       \
      (void)cudaGetLastError(); /* clear a non-sticky error so later calls are not poisoned */     \
      st = em_set_error(EM_ERR_BACKEND, "%s: %s failed: %s (%s)", ctx, #call,                      \
                        cudaGetErrorString(e_), cudaGetErrorName(e_));                             \
      goto cleanup;                                                                                \
    }                                                                                              \
  } while (0)

#define NCCL_CHECK(call)                                                                           \
  do {                                                                                             \
    ncclResult_t n_ = (call);                                                                      \
    if (n_ != ncclSuccess) {                                                                       \
      const char *last_ = ncclGetLastError(NULL);                                                  \
      st = em_set_error(EM_ERR_BACKEND, "%s: %s failed: %s%s%s", ctx, #call,                       \
                        ncclGetErrorString(n_), last_ && *last_ ? ": " : "", last_ ? last_ : "");  \
      goto cleanup;                                                                                \
    }                                                                                              \
  } while (0)

#ifdef EMBER_HAVE_MPI
#define MPI_CHECK(call)                                                                            \
  do {                                                                                             \
    int m_ = (call);                                                                               \
    if (m_ != MPI_SUCCESS) {                                                                       \
      char text_[MPI_MAX_ERROR_STRING];                                                            \
      int len_ = 0;                                                                                \
      if (MPI_Error_string(m_, text_, &len_) != MPI_SUCCESS) snprintf(text_, sizeof text_, "?");   \
      st = em_set_error(EM_ERR_BACKEND, "%s: %s failed: %s", ctx, #call, text_);                   \
      goto cleanup;                                                                                \
    }                                                                                              \
  } while (0)
#endif

/* A call on the non-blocking communicator that must complete before the next: NCCL's answer, or
 * after ncclInProgress the state it settles in, polled until the communicator's timeout; past it
 * the communicator is aborted and the function fails naming the timeout. Needs `nccl_state *s`
 * besides what NCCL_CHECK needs. */
#define NCCL_SETTLE(call)                                                                          \
  do {                                                                                             \
    double limit_ = s->c->opts.timeout_s > 0 ? s->c->opts.timeout_s : 300;                       \
    ncclResult_t r_ = (call); /* first: an init call sets s->comm */                               \
    r_ = settle(s->comm, r_, coll__now() + limit_);                                                \
    if (r_ == ncclInProgress) {                                                                    \
      st = em_set_error(EM_ERR_TIMEOUT,                                                            \
                        "%s: %s did not complete within %.0f s (EMBER_COLL_TIMEOUT): a rank may "  \
                        "be missing or stuck; NCCL communicator aborted",                          \
                        ctx, #call, limit_);                                                       \
      if (s->comm) (void)ncclCommAbort(s->comm);                                                   \
      s->comm = NULL;                                                                              \
      s->broken = true;                                                                            \
      goto cleanup;                                                                                \
    }                                                                                              \
    NCCL_CHECK(r_);                                                                                \
  } while (0)

/* ---- small helpers --------------------------------------------------------------------------- */
/* r from a call on a non-blocking communicator: while ncclInProgress, poll the communicator's
 * state (ncclCommGetAsyncError) until it is something else or the monotonic clock passes
 * deadline (then ncclInProgress is returned). */
static ncclResult_t settle(ncclComm_t comm, ncclResult_t r, double deadline) {
  while (r == ncclInProgress && comm) {
    if (coll__now() > deadline) return ncclInProgress;
    struct timespec nap = {0, 100000};
    nanosleep(&nap, NULL);
    ncclResult_t q = ncclCommGetAsyncError(comm, &r);
    if (q != ncclSuccess) r = q;
  }
  return r;
}

static bool nccl_dtype(em_dtype dt, ncclDataType_t *out) {
  switch (dt) {
  case EM_F32: *out = ncclFloat32; return true;
  case EM_BF16: *out = ncclBfloat16; return true;
  case EM_F16: *out = ncclFloat16; return true;
  case EM_I32: *out = ncclInt32; return true;
  case EM_I64: *out = ncclInt64; return true;
  case EM_U8: *out = ncclUint8; return true;
  default: return false;
  }
}

static bool is_float(em_dtype dt) { return dt == EM_F32 || dt == EM_BF16 || dt == EM_F16; }

static bool nccl_redop(coll_redop op, em_dtype dt, ncclRedOp_t *out) {
  switch (op) {
  case COLL_SUM: *out = ncclSum; return true;
  case COLL_AVG: *out = ncclAvg; return is_float(dt); /* NCCL's avg of ints truncates: refuse */
  case COLL_MAX: *out = ncclMax; return true;
  case COLL_MIN: *out = ncclMin; return true;
  default: return false;
  }
}

/* Make the communicator's device current; returns the caller's (-1 if unknown) for restore. */
static int enter_device(const nccl_state *s) {
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) {
    (void)cudaGetLastError();
    prev = -1;
  }
  if (prev != s->device) (void)cudaSetDevice(s->device);
  return prev;
}
static void leave_device(const nccl_state *s, int prev) {
  if (prev >= 0 && prev != s->device) (void)cudaSetDevice(prev);
}

/* Do [a, a + an) and [b, b + bn) (bytes) overlap? */
static bool overlaps(const void *a, size_t an, const void *b, size_t bn) {
  uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
  return an && bn && x < y + bn && y < x + an;
}

/* Under s->lock. */
static cudaError_t pool_get(nccl_state *s, cudaEvent_t *ev) {
  if (s->npool > 0) {
    *ev = s->pool[--s->npool];
    return cudaSuccess;
  }
  return cudaEventCreateWithFlags(ev, cudaEventDisableTiming);
}
static void pool_put(nccl_state *s, cudaEvent_t ev) {
  if (!ev) return;
  if (s->npool == s->cap) {
    int cap = s->cap ? 2 * s->cap : 16;
    cudaEvent_t *p = realloc(s->pool, (size_t)cap * sizeof *p);
    if (!p) {
      (void)cudaEventDestroy(ev);
      return;
    }
    s->pool = p;
    s->cap = cap;
  }
  s->pool[s->npool++] = ev;
}

/* Under s->lock: the reason NCCL gives for an asynchronous failure, or false if none. */
static bool async_error(nccl_state *s, char *why, size_t n) {
  if (!s->comm) return false;
  ncclResult_t err = ncclSuccess;
  ncclResult_t q = ncclCommGetAsyncError(s->comm, &err);
  if (q != ncclSuccess) err = q;
  if (err == ncclSuccess || err == ncclInProgress) return false;
  const char *last = ncclGetLastError(s->comm);
  snprintf(why, n, "NCCL asynchronous error on rank %d (cuda:%d): %s%s%s", s->c->rank, s->device,
           ncclGetErrorString(err), last && *last ? ": " : "", last ? last : "");
  return true;
}

/* Under s->lock: mark the backend failed (first reason wins); broken: what is in flight is lost
 * as well. A failure to issue (a CUDA or NCCL call in start) leaves earlier requests running. */
static void set_failed(nccl_state *s, const char *why, bool broken) {
  if (!s->failed[0]) snprintf(s->failed, sizeof s->failed, "%s", why);
  s->broken |= broken;
}

/* Under s->lock: move the finished requests out of the FIFO. Requests whose done event fired go
 * to *ok in order; once the backend is broken, every request left goes to *bad. Their events go
 * back to the pool. */
static void collect(nccl_state *s, coll_req **ok, coll_req **bad) {
  coll_req **okt = ok, **badt = bad;
  *ok = *bad = NULL;
  char why[512];
  if (s->head && !s->broken && async_error(s, why, sizeof why)) {
    set_failed(s, why, true);
    /* NCCL's way out of an asynchronous error: abort, which stops its kernels, so the stream
     * drains and later CUDA work is not stuck behind them. */
    (void)ncclCommAbort(s->comm);
    s->comm = NULL;
  }
  while (s->head && !s->broken) {
    coll_req *q = s->head;
    cudaError_t e = cudaEventQuery((cudaEvent_t)q->backend_data);
    if (e == cudaErrorNotReady) break;
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      snprintf(why, sizeof why, "CUDA error on rank %d (cuda:%d) while waiting: %s (%s)",
               s->c->rank, s->device, cudaGetErrorString(e), cudaGetErrorName(e));
      set_failed(s, why, true);
      break;
    }
    s->head = q->next;
    q->next = NULL;
    pool_put(s, (cudaEvent_t)q->backend_data);
    q->backend_data = NULL;
    s->last_done = q->seq;
    s->in_flight--;
    *okt = q;
    okt = &q->next;
  }
  if (s->broken) {
    while (s->head) {
      coll_req *q = s->head;
      s->head = q->next;
      q->next = NULL;
      pool_put(s, (cudaEvent_t)q->backend_data);
      q->backend_data = NULL;
      s->in_flight--;
      *badt = q;
      badt = &q->next;
    }
  }
  if (!s->head) s->tail = NULL;
}

/* With no lock held: complete what collect() returned. A detached request is freed by
 * coll__complete, so the link is read first. */
static void finish(nccl_state *s, coll_req *ok, coll_req *bad, const char *why) {
  for (coll_req *q = ok, *next; q; q = next) {
    next = q->next;
    q->next = NULL;
    coll__complete(q, EM_OK, NULL);
  }
  if (bad) coll__fail(s->c, why);
  for (coll_req *q = bad, *next; q; q = next) {
    next = q->next;
    q->next = NULL;
    char what[160], msg[768];
    coll_fingerprint f = coll__fingerprint(q);
    snprintf(msg, sizeof msg, "nccl %s: %s", coll__describe(&f, what, sizeof what), why);
    coll__complete(q, EM_ERR_COMM, msg);
  }
}

static void poll_all(nccl_state *s) {
  coll_req *ok, *bad;
  char why[512];
  pthread_mutex_lock(&s->lock);
  int prev = enter_device(s);
  collect(s, &ok, &bad);
  leave_device(s, prev);
  snprintf(why, sizeof why, "%s", s->failed);
  pthread_mutex_unlock(&s->lock);
  finish(s, ok, bad, why);
}

/* ---- the operation table --------------------------------------------------------------------- */
static em_status nccl_start(void *state, coll_req *r) {
  nccl_state *s = state;
  em_status st = EM_OK;
  char what[160], ctxbuf[256];
  coll_fingerprint f = coll__fingerprint(r);
  snprintf(ctxbuf, sizeof ctxbuf, "nccl %s on rank %d (cuda:%d)",
           coll__describe(&f, what, sizeof what), s->c->rank, s->device);
  const char *ctx = ctxbuf;
  ncclDataType_t dt = ncclFloat32;
  ncclRedOp_t op = ncclSum;
  if (r->kind != COLL_BARRIER) {
    if (!nccl_dtype(r->dtype, &dt))
      return em_set_error(EM_ERR_UNSUPPORTED, "%s: NCCL has no %s", ctx, em_dtype_name(r->dtype));
    if (r->device.kind != EM_CUDA || r->device.index != s->device)
      return em_set_error(EM_ERR_INVALID, "%s: buffers are on %s:%d, the communicator on cuda:%d",
                          ctx, r->device.kind == EM_CUDA ? "cuda" : "cpu", r->device.index,
                          s->device);
  }
  if ((r->kind == COLL_ALLREDUCE || r->kind == COLL_REDUCE_SCATTER) &&
      !nccl_redop(r->op, r->dtype, &op))
    return em_set_error(EM_ERR_INVALID, "%s: %s is not defined for %s", ctx, coll_redop_name(r->op),
                        em_dtype_name(r->dtype));
  if (r->count < 0) return em_set_error(EM_ERR_INVALID, "%s: negative count", ctx);
  size_t n = (size_t)r->count, es = em_dtype_size(r->dtype), W = (size_t)s->c->size;
  size_t rank = (size_t)s->c->rank;
  char *send = r->send, *recv = r->recv;
  /* NCCL's results are undefined when send and receive overlap other than in its in-place
   * layouts; the front end does not look at overlap, so refuse it here. */
  bool bad_overlap = false;
  switch (r->kind) {
  case COLL_ALLREDUCE: bad_overlap = send != recv && overlaps(send, n * es, recv, n * es); break;
  case COLL_REDUCE_SCATTER:
    bad_overlap = send != recv && overlaps(send, W * n * es, recv, n * es);
    break;
  case COLL_ALLGATHER:
    bad_overlap = send != recv + rank * n * es && overlaps(send, n * es, recv, W * n * es);
    break;
  default: break;
  }
  if (bad_overlap)
    return em_set_error(EM_ERR_INVALID,
                        "%s: send and receive buffers overlap but are not the in-place layout "
                        "(see coll.h)",
                        ctx);

  cudaEvent_t done = NULL;
  /* Once issuing, a CUDA/NCCL failure leaves this rank out of step with the others (they run the
   * operation, it does not): the communicator is marked failed. */
  bool issuing = false;
  pthread_mutex_lock(&s->lock);
  int prev = enter_device(s);
  if (s->failed[0]) {
    st = em_set_error(EM_ERR_COMM, "%s: the NCCL communicator has failed: %s", ctx, s->failed);
    goto cleanup;
  }
  issuing = true;
  CUDA_CHECK(pool_get(s, &done));
  /* Order after the producers: everything issued so far to the legacy default stream (and so to
   * every blocking stream) finishes before the NCCL kernel reads the buffers. */
  CUDA_CHECK(cudaEventRecord(s->ready, cudaStreamLegacy));
  CUDA_CHECK(cudaStreamWaitEvent(s->stream, s->ready, 0));
  switch (r->kind) {
  case COLL_ALLREDUCE: NCCL_SETTLE(ncclAllReduce(send, recv, n, dt, op, s->comm, s->stream)); break;
  case COLL_BROADCAST:
    /* coll.c gives send == recv == the buffer: NCCL's in-place broadcast. */
    NCCL_SETTLE(ncclBroadcast(recv, recv, n, dt, r->root, s->comm, s->stream));
    break;
  case COLL_REDUCE_SCATTER:
    /* coll.h: in place (send == recv) puts rank r's block at recv[0, count), as MPI's
     * MPI_Reduce_scatter_block(MPI_IN_PLACE) does. NCCL's in-place layout instead is
     * recv == send + rank * count, the result staying at block `rank`. So in place we run
     * NCCL's in-place form and then, on ranks > 0, copy block `rank` down to block 0 on the same
     * stream (the two blocks are disjoint): one extra device copy of count elements. Out of
     * place (disjoint buffers, checked above) maps directly. */
    if (send == recv) {
      char *mine = send + rank * n * es;
      NCCL_SETTLE(ncclReduceScatter(send, mine, n, dt, op, s->comm, s->stream));
      if (rank > 0 && n > 0)
        CUDA_CHECK(cudaMemcpyAsync(recv, mine, n * es, cudaMemcpyDeviceToDevice, s->stream));
    } else {
      NCCL_SETTLE(ncclReduceScatter(send, recv, n, dt, op, s->comm, s->stream));
    }
    break;
  case COLL_ALLGATHER:
    /* In place when send == recv + rank * count: the layout of coll.h and of NCCL alike. */
    NCCL_SETTLE(ncclAllGather(send, recv, n, dt, s->comm, s->stream));
    break;
  case COLL_BARRIER:
    NCCL_SETTLE(
        ncclAllReduce(s->barrier_buf, s->barrier_buf, 1, ncclInt32, ncclSum, s->comm, s->stream));
    break;
  default: st = em_set_error(EM_ERR_INVALID, "%s: unknown operation kind", ctx); goto cleanup;
  }
  CUDA_CHECK(cudaEventRecord(done, s->stream));
  r->backend_data = done;
  done = NULL;
  r->next = NULL;
  if (s->tail)
    s->tail->next = r;
  else
    s->head = r;
  s->tail = r;
  s->in_flight++;
  pthread_mutex_lock(&s->c->lock);
  r->state = REQ_RUNNING;
  r->t_started = coll__now();
  pthread_mutex_unlock(&s->c->lock);
  char labelled[COLL_PROGRESS_WHAT];
  coll__progress_started(f.seq, coll__describe_req(r, labelled, sizeof labelled));
cleanup:
  if (done) pool_put(s, done);
  if (st != EM_OK && issuing) {
    set_failed(s, em_last_error(), false);
    coll__fail(s->c, em_last_error());
  }
  leave_device(s, prev);
  pthread_mutex_unlock(&s->lock);
  if (st == EM_OK) poll_all(s); /* completes finished (possibly detached) earlier requests */
  return st;
}

static void nccl_poll(void *state, coll_req *r) {
  (void)r; /* the stream is in order: draining from the head reaches r when it is done */
  poll_all(state);
}

static void nccl_progress_report(void *state, const coll_req *r, char *buf, size_t n) {
  nccl_state *s = state;
  (void)r;
  char why[512] = "", oldest[160] = "none";
  /* The report is written when a wait timed out: the thread holding the lock may be the one
   * stuck (inside an NCCL call that waits for peers to connect), so do not wait for it. */
  if (pthread_mutex_trylock(&s->lock) != 0) {
    snprintf(buf, n, "; nccl on rank %d (cuda:%d): another thread is inside an NCCL call",
             s->c->rank, s->device);
    return;
  }
  if (!s->failed[0]) async_error(s, why, sizeof why);
  if (s->head) {
    coll_fingerprint f = coll__fingerprint(s->head);
    coll__describe(&f, oldest, sizeof oldest);
  }
  snprintf(buf, n,
           "; nccl on rank %d (cuda:%d): last completed #%llu, %lld in flight (oldest %s), %s%s "
           "(NCCL cannot tell which peers are behind: see the other ranks' reports)",
           s->c->rank, s->device, (unsigned long long)s->last_done, (long long)s->in_flight, oldest,
           s->failed[0] || why[0] ? "failed: " : "no asynchronous error",
           s->failed[0] ? s->failed : why);
  pthread_mutex_unlock(&s->lock);
}

static void nccl_abort(void *state) {
  nccl_state *s = state;
  /* No lock: a thread may be stuck inside NCCL holding it; this is the way out. */
  if (s->comm) {
    (void)ncclCommAbort(s->comm);
    s->comm = NULL;
  }
  set_failed(s, "aborted", true);
#ifdef EMBER_HAVE_MPI
  int up = 0, down = 0;
  if (MPI_Initialized(&up) == MPI_SUCCESS && up && MPI_Finalized(&down) == MPI_SUCCESS && !down)
    MPI_Abort(MPI_COMM_WORLD, 70);
#endif
}

static void nccl_destroy(void *state) {
  nccl_state *s = state;
  if (!s) return;
  pthread_mutex_lock(&s->lock);
  int prev = enter_device(s);
  /* Drain the stream, but never wait forever: on an asynchronous error or after the
   * communicator's timeout, abort NCCL (which unblocks its kernels) instead. */
  char why[512];
  double t0 = coll__now(), limit = s->c->opts.timeout_s > 0 ? s->c->opts.timeout_s : 300;
  while (s->stream) {
    cudaError_t e = cudaStreamQuery(s->stream);
    if (e != cudaErrorNotReady) {
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        set_failed(s, cudaGetErrorString(e), true);
      }
      break;
    }
    if (async_error(s, why, sizeof why)) {
      set_failed(s, why, true);
      break;
    }
    if (coll__now() - t0 > limit) {
      snprintf(why, sizeof why,
               "NCCL communicator destroyed on rank %d with operations still running after "
               "%.0f s",
               s->c->rank, limit);
      set_failed(s, why, true);
      break;
    }
    struct timespec nap = {0, 100000};
    nanosleep(&nap, NULL);
  }
  if (s->failed[0] && s->comm) {
    (void)ncclCommAbort(s->comm);
    s->comm = NULL;
  }
  /* Requests nobody waited for (detached): complete them now. */
  coll_req *ok = NULL, *bad = NULL, *none = NULL;
  collect(s, &ok, &bad);
  if (s->head) { /* the stream drained, so this is only an event that has not caught up */
    set_failed(s, "NCCL communicator destroyed with operations in flight", true);
    collect(s, &none, &bad);
  }
  snprintf(why, sizeof why, "%s", s->failed);
  pthread_mutex_unlock(&s->lock);
  finish(s, ok, bad, why);

  if (s->comm) {
    /* Finalize flushes; non-blocking, it settles within the timeout or the communicator is
     * aborted. */
    if (settle(s->comm, ncclCommFinalize(s->comm), coll__now() + limit) == ncclSuccess)
      (void)ncclCommDestroy(s->comm);
    else
      (void)ncclCommAbort(s->comm);
    s->comm = NULL;
  }
  for (int k = 0; k < s->npool; k++) (void)cudaEventDestroy(s->pool[k]);
  free(s->pool);
  if (s->ready) (void)cudaEventDestroy(s->ready);
  if (s->barrier_buf) (void)cudaFree(s->barrier_buf);
  if (s->stream) (void)cudaStreamDestroy(s->stream);
  (void)cudaGetLastError();
  leave_device(s, prev);
  pthread_mutex_destroy(&s->lock);
  free(s);
}

/* ---- creation -------------------------------------------------------------------------------- */
coll_backend *coll__nccl_new(coll_comm *c, int cuda_device, void *mpi_comm) {
  em_status st = EM_OK;
  char ctxbuf[160];
  snprintf(ctxbuf, sizeof ctxbuf, "nccl init on rank %d of %d (cuda:%d)", c ? c->rank : -1,
           c ? c->size : 0, cuda_device);
  const char *ctx = ctxbuf;
  if (!c) {
    em_set_error(EM_ERR_INVALID, "%s: no communicator", ctx);
    return NULL;
  }
#ifndef EMBER_HAVE_MPI
  if (mpi_comm) {
    em_set_error(EM_ERR_INVALID, "%s: an MPI communicator was given to a build without MPI", ctx);
    return NULL;
  }
#endif
  if (c->size > 1 && !mpi_comm) {
    em_set_error(EM_ERR_UNSUPPORTED,
                 "%s: a world of %d needs MPI to share NCCL's unique id (this build %s MPI)", ctx,
                 c->size,
#ifdef EMBER_HAVE_MPI
                 "has, but no MPI communicator was given"
#else
                 "has no"
#endif
    );
    return NULL;
  }
  /* The table is freed by coll__comm_free, the state by nccl_destroy. */
  nccl_state *s = calloc(1, sizeof *s);
  coll_backend *b = calloc(1, sizeof *b);
  if (!s || !b) {
    free(s);
    free(b);
    em_set_error(EM_ERR_NOMEM, "%s: out of memory", ctx);
    return NULL;
  }
  pthread_mutex_init(&s->lock, NULL);
  s->c = c;
  s->device = cuda_device;
  *b = (coll_backend){.name = "nccl",
                      .start = nccl_start,
                      .progress_report = nccl_progress_report,
                      .poll = nccl_poll,
                      .abort = nccl_abort,
                      .destroy = nccl_destroy,
                      .state = s};

  /* Every rank must enter ncclCommInitRank or none: one that failed to set its device (or rank 0
   * failing to make the id) would leave the others blocked in it. So the ranks first agree. The
   * device stays current on the calling thread (ddp_init's device). */
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  char local[512] = "";
  cudaError_t ce = cudaSetDevice(cuda_device);
  if (ce != cudaSuccess) {
    (void)cudaGetLastError();
    snprintf(local, sizeof local, "cudaSetDevice(%d) failed: %s (%s)", cuda_device,
             cudaGetErrorString(ce), cudaGetErrorName(ce));
  } else if (c->rank == 0) {
    ncclResult_t ne = ncclGetUniqueId(&id);
    if (ne != ncclSuccess) {
      const char *last = ncclGetLastError(NULL);
      snprintf(local, sizeof local, "ncclGetUniqueId failed: %s%s%s", ncclGetErrorString(ne),
               last && *last ? ": " : "", last ? last : "");
    }
  }
#ifdef EMBER_HAVE_MPI
  if (mpi_comm && c->size > 1) {
    MPI_Comm mc = *(MPI_Comm *)mpi_comm;
    int mine[2] = {local[0] ? 0 : 1, c->rank}, all[2] = {1, 0};
    MPI_CHECK(MPI_Allreduce(mine, all, 1, MPI_2INT, MPI_MINLOC, mc));
    if (!all[0]) {
      if (local[0])
        st = em_set_error(EM_ERR_BACKEND, "%s: %s", ctx, local);
      else
        st = em_set_error(EM_ERR_BACKEND, "%s: rank %d could not start NCCL (see its message)", ctx,
                          all[1]);
      goto cleanup;
    }
    MPI_CHECK(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, mc));
  }
#endif
  if (local[0]) {
    st = em_set_error(EM_ERR_BACKEND, "%s: %s", ctx, local);
    goto cleanup;
  }
  /* Non-blocking, so that a rank that never arrives cannot hang this one: initialisation is
   * polled until it settles, at most for the communicator's timeout (NCCL_SETTLE). */
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  NCCL_SETTLE(ncclCommInitRankConfig(&s->comm, c->size, id, c->rank, &config));
  /* The highest priority the device offers: gradient buckets should not queue behind compute. */
  int lo = 0, hi = 0;
  CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
  CUDA_CHECK(cudaStreamCreateWithPriority(&s->stream, cudaStreamNonBlocking, hi));
  CUDA_CHECK(cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming));
  CUDA_CHECK(cudaMalloc((void **)&s->barrier_buf, sizeof *s->barrier_buf));
  CUDA_CHECK(cudaMemsetAsync(s->barrier_buf, 0, sizeof *s->barrier_buf, s->stream));
  (void)lo;
  return b;

cleanup:
  if (s->comm) (void)ncclCommAbort(s->comm);
  if (s->barrier_buf) (void)cudaFree(s->barrier_buf);
  if (s->ready) (void)cudaEventDestroy(s->ready);
  if (s->stream) (void)cudaStreamDestroy(s->stream);
  (void)cudaGetLastError();
  pthread_mutex_destroy(&s->lock);
  free(s);
  free(b);
  (void)st;
  return NULL;
}
