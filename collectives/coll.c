/* coll.c: the communicator's front end. Checks arguments (counts in elements against buffer
 * sizes, dtypes, devices, roots), numbers operations, hands them to the backend that owns the
 * buffers' device, and implements waiting with timeouts and the timeout report. */
#include "coll_internal.h"
#include "coll_progress.h"
#include "em_env.h"

#include <stdarg.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *kind_names[] = {"allreduce", "broadcast",    "reduce_scatter", "allgather",
                                   "barrier",   "alloc_shared", "free_shared"};
static const char *redop_names[] = {"sum", "avg", "max", "min"};

const char *coll_kind_name(coll_kind k) {
  return (unsigned)k <= (unsigned)COLL_FREE_SHARED ? kind_names[k] : "?";
}
const char *coll_redop_name(coll_redop o) { return (unsigned)o <= COLL_MIN ? redop_names[o] : "?"; }

double coll__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double coll_now(void) { return coll__now(); }

coll_buf coll_buf_of(const em_tensor *t) {
  coll_buf b = {0};
  if (!t || !em_is_contiguous(t)) return b;
  b.ptr = em_data(t);
  b.numel = em_numel(t);
  b.dtype = t->dtype;
  b.device = t->device;
  return b;
}

/* coll_label's text for the next operation this thread issues. */
static _Thread_local char next_label[sizeof((coll_req *)0)->label];

void coll_label(const char *fmt, ...) {
  next_label[0] = 0;
  if (!fmt) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(next_label, sizeof next_label, fmt, ap);
  va_end(ap);
}

coll_fingerprint coll__fingerprint(const coll_req *r) {
  return (coll_fingerprint){(int64_t)r->seq, r->kind, r->dtype, r->count, r->root, r->op};
}

uint64_t coll__fingerprint_hash(const coll_fingerprint *f) {
  const int64_t *v = &f->seq;
  uint64_t h = 1469598103934665603ull;
  for (int k = 0; k < 6; k++) {
    h ^= (uint64_t)v[k];
    h *= 1099511628211ull;
    h ^= h >> 29;
  }
  return h;
}

const char *coll__describe(const coll_fingerprint *f, char *buf, size_t n) {
  coll_kind k = (coll_kind)f->kind;
  if (k == COLL_BARRIER || k == COLL_FREE_SHARED)
    snprintf(buf, n, "%s #%lld", coll_kind_name(k), (long long)f->seq);
  else if (k == COLL_ALLOC_SHARED)
    snprintf(buf, n, "alloc_shared #%lld (%lld bytes)", (long long)f->seq, (long long)f->count);
  else if (k == COLL_BROADCAST)
    snprintf(buf, n, "broadcast #%lld (%s x %lld, root %lld)", (long long)f->seq,
             em_dtype_name((em_dtype)f->dtype), (long long)f->count, (long long)f->root);
  else if (k == COLL_ALLGATHER)
    snprintf(buf, n, "allgather #%lld (%s x %lld)", (long long)f->seq,
             em_dtype_name((em_dtype)f->dtype), (long long)f->count);
  else
    snprintf(buf, n, "%s #%lld (%s x %lld, %s)", coll_kind_name(k), (long long)f->seq,
             em_dtype_name((em_dtype)f->dtype), (long long)f->count,
             coll_redop_name((coll_redop)f->op));
  return buf;
}

const char *coll__describe_req(const coll_req *r, char *buf, size_t n) {
  coll_fingerprint f = coll__fingerprint(r);
  coll__describe(&f, buf, n);
  size_t k = strlen(buf);
  if (r->label[0] && k < n) snprintf(buf + k, n - k, " [%s]", r->label);
  return buf;
}

void coll__mismatch_message(const coll_fingerprint *all, const int *ranks, int W, char *msg,
                            size_t n) {
  int k = snprintf(msg, n, "collective mismatch: ranks issued different operations:");
  char *seen = calloc((size_t)W, 1);
  for (int i = 0; i < W && seen && k >= 0 && (size_t)k < n; i++) {
    if (seen[i]) continue;
    char d[160];
    k += snprintf(msg + k, n - (size_t)k, " rank %d", ranks ? ranks[i] : i);
    int shown = 1;
    for (int j = i + 1; j < W; j++) {
      if (memcmp(&all[i], &all[j], sizeof all[i]) == 0) {
        seen[j] = 1;
        if (shown++ < 8 && (size_t)k < n)
          k += snprintf(msg + k, n - (size_t)k, ",%d", ranks ? ranks[j] : j);
      }
    }
    if (shown > 8 && (size_t)k < n) k += snprintf(msg + k, n - (size_t)k, ",... (%d ranks)", shown);
    if ((size_t)k < n)
      k += snprintf(msg + k, n - (size_t)k, ": %s;", coll__describe(&all[i], d, sizeof d));
  }
  free(seen);
}

size_t coll__payload_bytes(const coll_req *r) {
  size_t es = em_dtype_size(r->dtype);
  switch (r->kind) {
  case COLL_REDUCE_SCATTER:
  case COLL_ALLGATHER: return (size_t)r->count * (size_t)r->comm->size * es;
  case COLL_BARRIER:
  case COLL_ALLOC_SHARED:
  case COLL_FREE_SHARED: return 0;
  default: return (size_t)r->count * es;
  }
}

/* ---- the communicator ------------------------------------------------------------------------ */
coll_comm *coll__comm_new(const coll_options *opts, int rank, int size, int cuda_device) {
  (void)cuda_device;
  coll_comm *c = calloc(1, sizeof *c);
  if (!c) {
    em_set_error(EM_ERR_NOMEM, "communicator: out of memory");
    return NULL;
  }
  c->rank = rank;
  c->size = size;
  c->next_seq = 1;
  coll_options o = opts ? *opts : (coll_options){0};
  /* Zero options take the environment (or its defaults); explicit negatives are errors below. */
  int64_t chunk, every;
  em_status st = EM_OK;
  if (o.timeout_s == 0) st = em_env_num("EMBER_COLL_TIMEOUT", &o.timeout_s);
  if (st == EM_OK && o.chunk_bytes == 0 &&
      (st = em_env_int("EMBER_COLL_CHUNK_BYTES", &chunk)) == EM_OK)
    o.chunk_bytes = chunk;
  if (st == EM_OK && o.check_every == 0 &&
      (st = em_env_int("EMBER_COLL_CHECK_EVERY", &every)) == EM_OK)
    o.check_every = (int)every;
  if (st != EM_OK) {
    free(c);
    return NULL;
  }
  if (!(o.timeout_s > 0) || o.chunk_bytes < 64 || o.check_every == 0 || o.check_every < -1) {
    em_set_error(EM_ERR_INVALID,
                 "communicator: bad settings timeout_s=%g (EMBER_COLL_TIMEOUT, > 0), "
                 "chunk_bytes=%lld (EMBER_COLL_CHUNK_BYTES, >= 64), check_every=%d "
                 "(EMBER_COLL_CHECK_EVERY, >= 1 or -1 for off)",
                 o.timeout_s, (long long)o.chunk_bytes, o.check_every);
    free(c);
    return NULL;
  }
  c->opts = o;
  coll__progress_open(rank);
  pthread_mutex_init(&c->lock, NULL);
  /* Waits time out on the monotonic clock: a wall-clock step must not stretch or cut them. */
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->done, &ca);
  pthread_condattr_destroy(&ca);
  return c;
}

void coll__comm_free(coll_comm *c) {
  if (!c) return;
  if (c->device) c->device->destroy(c->device->state);
  if (c->host) c->host->destroy(c->host->state);
  free(c->device);
  free(c->host);
  pthread_cond_destroy(&c->done);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

int coll_rank(const coll_comm *c) { return c ? c->rank : 0; }
int coll_size(const coll_comm *c) { return c ? c->size : 1; }
coll_options coll_get_options(const coll_comm *c) { return c ? c->opts : (coll_options){0}; }

const char *coll_backend_name(const coll_comm *c, em_device_kind dev) {
  if (!c) return NULL;
  const coll_backend *b = dev == EM_CUDA ? c->device : c->host;
  return b ? b->name : NULL;
}

coll_stats coll_get_stats(const coll_comm *c) {
  coll_stats s = {0};
  if (!c) return s;
  pthread_mutex_lock((pthread_mutex_t *)&c->lock);
  s = c->stats;
  pthread_mutex_unlock((pthread_mutex_t *)&c->lock);
  return s;
}

void coll__fail(coll_comm *c, const char *msg) {
  pthread_mutex_lock(&c->lock);
  if (!c->failed[0]) snprintf(c->failed, sizeof c->failed, "%s", msg);
  pthread_mutex_unlock(&c->lock);
}

void coll_abort(coll_comm *c, const char *why) {
  fprintf(stderr, "[rank %d] ember: aborting the job: %s\n", c ? c->rank : 0, why);
  fflush(stderr);
  if (c && c->device && c->device->abort) c->device->abort(c->device->state);
  if (c && c->host && c->host->abort) c->host->abort(c->host->state);
  abort();
}

/* ---- issuing ----------------------------------------------------------------------------------
 */
static bool check_buf(const char *op, const char *what, coll_buf b, int64_t need, em_dtype dt,
                      em_device dev) {
  if (!b.ptr && need > 0) {
    em_set_error(EM_ERR_INVALID, "%s: %s buffer is empty (NULL, or a non-contiguous tensor)", op,
                 what);
    return false;
  }
  if (b.dtype != dt) {
    em_set_error(EM_ERR_INVALID, "%s: %s buffer is %s, the operation is on %s", op, what,
                 em_dtype_name(b.dtype), em_dtype_name(dt));
    return false;
  }
  if (b.device.kind != dev.kind || b.device.index != dev.index) {
    em_set_error(EM_ERR_INVALID, "%s: buffers are on different devices", op);
    return false;
  }
  if (b.numel < need) {
    em_set_error(EM_ERR_INVALID, "%s: %s buffer holds %lld elements, the operation needs %lld", op,
                 what, (long long)b.numel, (long long)need);
    return false;
  }
  return true;
}

/* A checked, numbered request for the operation, not yet started (NULL with the error set). */
static coll_req *prepare(coll_comm *c, coll_kind kind, coll_redop op, coll_buf send, coll_buf recv,
                         int64_t count, int root) {
  const char *name = coll_kind_name(kind);
  char label[sizeof next_label]; /* the label is this operation's, even if it is refused */
  memcpy(label, next_label, sizeof label);
  next_label[0] = 0;
  if (!c) {
    em_set_error(EM_ERR_STATE, "%s: no communicator (call ddp_init first)", name);
    return NULL;
  }
  if (count < 0) {
    em_set_error(EM_ERR_INVALID, "%s: negative count %lld", name, (long long)count);
    return NULL;
  }
  em_dtype dt = kind == COLL_BARRIER ? EM_U8 : recv.dtype;
  em_device dev = kind == COLL_BARRIER ? EM_DEVICE_CPU : recv.device;
  if ((unsigned)op > COLL_MIN) {
    em_set_error(EM_ERR_INVALID, "%s: unknown reduction %d", name, (int)op);
    return NULL;
  }
  if (op == COLL_AVG && dt != EM_F32 && dt != EM_BF16 && dt != EM_F16) {
    em_set_error(EM_ERR_INVALID, "%s: avg needs a floating dtype, got %s", name, em_dtype_name(dt));
    return NULL;
  }
  int64_t W = c->size, need_send = count, need_recv = count;
  switch (kind) {
  case COLL_BROADCAST:
    if (root < 0 || root >= c->size) {
      em_set_error(EM_ERR_INVALID, "broadcast: root %d is not a rank of a world of %d", root,
                   c->size);
      return NULL;
    }
    send = recv;
    break;
  case COLL_REDUCE_SCATTER:
    need_send = W * count;
    need_recv = send.ptr == recv.ptr ? W * count : count;
    break;
  case COLL_ALLGATHER:
    need_recv = W * count;
    if (send.ptr && send.ptr == (char *)recv.ptr + (size_t)(c->rank * count) * em_dtype_size(dt)) {
      need_send = 0; /* in place: the send block is inside recv */
      send = recv;
      send.ptr = (char *)recv.ptr + (size_t)(c->rank * count) * em_dtype_size(dt);
    }
    break;
  default: break;
  }
  if (kind != COLL_BARRIER) {
    if (!check_buf(name, "receive", recv, need_recv, dt, dev)) return NULL;
    if (need_send && !check_buf(name, "send", send, need_send, dt, dev)) return NULL;
  }
  coll_backend *be = dev.kind == EM_CUDA ? c->device : c->host;
  if (!be) {
    em_set_error(EM_ERR_UNSUPPORTED, "%s: no communicator backend for %s buffers in this build",
                 name, dev.kind == EM_CUDA ? "CUDA" : "host");
    return NULL;
  }
  coll_req *r = calloc(1, sizeof *r);
  if (!r) {
    em_set_error(EM_ERR_NOMEM, "%s: out of memory", name);
    return NULL;
  }
  r->comm = c;
  r->backend = be;
  r->kind = kind;
  r->op = op;
  r->dtype = dt;
  r->count = kind == COLL_BARRIER ? 0 : count;
  r->root = kind == COLL_BROADCAST ? root : 0;
  r->send = send.ptr;
  r->recv = recv.ptr;
  r->device = dev;
  r->state = REQ_QUEUED;
  r->t_issued = coll__now();
  memcpy(r->label, label, sizeof r->label);
  pthread_mutex_lock(&c->lock);
  if (c->failed[0]) {
    em_set_error(EM_ERR_COMM, "%s: the communicator has failed earlier: %.700s", name, c->failed);
    pthread_mutex_unlock(&c->lock);
    free(r);
    return NULL;
  }
  r->seq = c->next_seq++;
  pthread_mutex_unlock(&c->lock);
  return r;
}

static coll_req *issue(coll_comm *c, coll_kind kind, coll_redop op, coll_buf send, coll_buf recv,
                       int64_t count, int root) {
  coll_req *r = prepare(c, kind, op, send, recv, count, root);
  if (r && r->backend->start(r->backend->state, r) != EM_OK) {
    free(r);
    return NULL;
  }
  return r;
}

static void timeout_report(coll_req *r, double waited, char *buf, size_t n);

/* Issue and wait with the communicator's timeout; the calling thread runs r itself when the
 * backend can (coll_run_allreduce and the others). */
static em_status run_now(coll_req *r) {
  if (!r) return em_last_status();
  const coll_backend *be = r->backend;
  if (be->run_here && be->run_here(be->state, r)) {
    if (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) != REQ_DONE) { /* timed out: as coll_wait */
      char report[2048];
      timeout_report(r, coll__now() - r->t_started, report, sizeof report);
      coll_abort(r->comm, report); /* does not return */
    }
  } else if (be->start(be->state, r) != EM_OK) {
    free(r);
    return em_last_status();
  }
  return coll_wait(r, COLL_TIMEOUT_DEFAULT);
}

coll_req *coll_allreduce(coll_comm *c, coll_buf send, coll_buf recv, int64_t count, coll_redop op) {
  return issue(c, COLL_ALLREDUCE, op, send, recv, count, 0);
}
coll_req *coll_broadcast(coll_comm *c, coll_buf buf, int64_t count, int root) {
  return issue(c, COLL_BROADCAST, COLL_SUM, buf, buf, count, root);
}
coll_req *coll_reduce_scatter(coll_comm *c, coll_buf send, coll_buf recv, int64_t count,
                              coll_redop op) {
  return issue(c, COLL_REDUCE_SCATTER, op, send, recv, count, 0);
}
coll_req *coll_allgather(coll_comm *c, coll_buf send, coll_buf recv, int64_t count) {
  return issue(c, COLL_ALLGATHER, COLL_SUM, send, recv, count, 0);
}
coll_req *coll_barrier(coll_comm *c) {
  coll_buf none = {0};
  return issue(c, COLL_BARRIER, COLL_SUM, none, none, 0, 0);
}

em_status coll_run_allreduce(coll_comm *c, coll_buf send, coll_buf recv, int64_t count,
                             coll_redop op) {
  return run_now(prepare(c, COLL_ALLREDUCE, op, send, recv, count, 0));
}
em_status coll_run_broadcast(coll_comm *c, coll_buf buf, int64_t count, int root) {
  return run_now(prepare(c, COLL_BROADCAST, COLL_SUM, buf, buf, count, root));
}
em_status coll_run_reduce_scatter(coll_comm *c, coll_buf send, coll_buf recv, int64_t count,
                                  coll_redop op) {
  return run_now(prepare(c, COLL_REDUCE_SCATTER, op, send, recv, count, 0));
}
em_status coll_run_allgather(coll_comm *c, coll_buf send, coll_buf recv, int64_t count) {
  return run_now(prepare(c, COLL_ALLGATHER, COLL_SUM, send, recv, count, 0));
}
em_status coll_run_barrier(coll_comm *c) {
  coll_buf none = {0};
  return run_now(prepare(c, COLL_BARRIER, COLL_SUM, none, none, 0, 0));
}

/* A request for a shared allocation or its release: like a barrier, with the pointer in send. */
static coll_req *shared_request(coll_comm *c, coll_kind kind, void *ptr, size_t bytes) {
  coll_req *r = prepare(c, COLL_BARRIER, COLL_SUM, (coll_buf){0}, (coll_buf){0}, 0, 0);
  if (r) {
    r->kind = kind;
    r->count = (int64_t)bytes;
    r->send = ptr;
  }
  return r;
}

void *coll_alloc_shared(coll_comm *c, size_t bytes) {
  void *p = NULL;
  if (c && c->size > 1 && run_now(shared_request(c, COLL_ALLOC_SHARED, &p, bytes)) != EM_OK)
    return NULL;
  if (!p) em_clear_error();
  return p;
}

em_status coll_free_shared(coll_comm *c, void *p) {
  if (!p) return EM_OK;
  return run_now(shared_request(c, COLL_FREE_SHARED, p, 0));
}

/* ---- completion --------------------------------------------------------------------------------
 */
void coll__complete(coll_req *r, em_status status, const char *msg) {
  coll_comm *c = r->comm;
  pthread_mutex_lock(&c->lock);
  r->status = status;
  if (msg) snprintf(r->msg, sizeof r->msg, "%s", msg);
  r->t_done = coll__now();
  if (status == EM_OK) coll__progress_done((int64_t)r->seq);
  __atomic_store_n(&r->state, REQ_DONE, __ATOMIC_RELEASE);
  if (status == EM_OK) {
    c->stats.ops++;
    c->stats.bytes += (int64_t)coll__payload_bytes(r);
  }
  bool free_it = r->detached;
  pthread_cond_broadcast(&c->done);
  pthread_mutex_unlock(&c->lock);
  if (free_it) free(r);
}

bool coll_test(coll_req *r) {
  if (!r) return false;
  if (r->backend->poll && r->state != REQ_DONE) r->backend->poll(r->backend->state, r);
  pthread_mutex_lock(&r->comm->lock);
  bool done = r->state == REQ_DONE;
  pthread_mutex_unlock(&r->comm->lock);
  return done;
}

void coll_req_detach(coll_req *r) {
  if (!r) return;
  pthread_mutex_lock(&r->comm->lock);
  bool done = r->state == REQ_DONE;
  r->detached = !done;
  pthread_mutex_unlock(&r->comm->lock);
  if (done) free(r);
}

/* The timeout report: what this rank waits for, how long, and what is known of the others. */
static void timeout_report(coll_req *r, double waited, char *buf, size_t n) {
  char what[260];
  coll__describe_req(r, what, sizeof what);
  char host[64] = "?";
  gethostname(host, sizeof host - 1);
  int k = snprintf(buf, n, "rank %d (on %s): timeout after %.1f s waiting for %s (%s, %s)",
                   r->comm->rank, host, waited, what,
                   r->state == REQ_RUNNING ? "in progress" : "queued behind earlier operations",
                   r->backend->name);
  if (k > 0 && (size_t)k < n && r->backend->progress_report)
    r->backend->progress_report(r->backend->state, r, buf + k, n - (size_t)k);
}

em_status coll_wait(coll_req *r, double timeout_s) { return coll_wait_ex(r, timeout_s, NULL); }

em_status coll_wait_ex(coll_req *r, double timeout_s, double *t_done) {
  if (!r) {
    if (em_last_status() == EM_OK) em_set_error(EM_ERR_INVALID, "coll_wait: request is NULL");
    return em_last_status();
  }
  coll_comm *c = r->comm;
  bool fatal = !(timeout_s > 0);
  double limit = fatal ? c->opts.timeout_s : timeout_s, t0 = coll__now();
  /* Spin a little first: small operations finish in microseconds, a futex sleep and wake-up
   * costs several. */
  while (!r->backend->poll && __atomic_load_n(&r->state, __ATOMIC_ACQUIRE) != REQ_DONE &&
         coll__now() - t0 < 50e-6 && coll__now() - t0 < limit)
    sched_yield();
  pthread_mutex_lock(&c->lock);
  while (r->state != REQ_DONE) {
    double left = t0 + limit - coll__now();
    if (left <= 0) break;
    if (r->backend->poll) { /* poll-driven backend: check, then nap briefly */
      pthread_mutex_unlock(&c->lock);
      r->backend->poll(r->backend->state, r);
      struct timespec nap = {0, 50000};
      nanosleep(&nap, NULL);
      pthread_mutex_lock(&c->lock);
      continue;
    }
    double slice = left < 0.5 ? left : 0.5;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double t = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec + slice;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&c->done, &c->lock, &ts);
  }
  bool done = r->state == REQ_DONE;
  pthread_mutex_unlock(&c->lock);
  if (!done) {
    char report[2048];
    timeout_report(r, coll__now() - t0, report, sizeof report);
    if (fatal) coll_abort(c, report); /* does not return */
    return em_set_error(EM_ERR_TIMEOUT, "%s", report);
  }
  em_status st = r->status;
  if (st != EM_OK) em_set_error(st, "%s", r->msg);
  if (t_done) *t_done = r->t_done;
  free(r);
  return st;
}

em_status coll_run(coll_req *r) { return coll_wait(r, COLL_TIMEOUT_DEFAULT); }
