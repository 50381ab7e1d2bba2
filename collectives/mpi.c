/* mpi.c: the MPI backend for host buffers.
 *
 * One communication thread owns every MPI call after initialisation and runs requests in issue
 * order, so the compute thread never blocks on a transfer it did not ask to wait for, and Open
 * MPI, which progresses a collective only while some thread is inside MPI, is always inside MPI
 * while there is work.
 *
 *   compute thread                     comm thread
 *   coll_allreduce() -> queue ----->   pop; publish "started #seq" in node-shared memory
 *   ... backward continues ...         fingerprint check (every check_every ops)
 *                                      MPI_Allreduce chunk 0, chunk 1, ... (chunk_bytes each)
 *   coll_wait() <--- cond signal ---   publish "done #seq"; complete
 *
 * Large allreduces and broadcasts run as a sequence of chunk_bytes calls: Open MPI's shared-memory
 * allreduce is fastest for 1-4 MiB messages (13-14 GB/s busbw here) and falls to 1.8 GB/s from
 * 32 MiB up (docs/collectives.md).
 *
 * Progress slots: every rank publishes (started seq, done seq, and the fingerprint of its current
 * operation) in a window of node-shared memory (MPI_Win_allocate_shared), which other ranks of the
 * node read with plain loads. A timed-out rank can thus tell, without any MPI call, which ranks of
 * its node are behind, or in a different operation.
 *
 * Where the world is one node, every collective runs in shared memory (shm.c).
 * Where it spans nodes of 2+ ranks each, all-reduce runs hierarchically on this thread: shm.c
 * reduce-scatters each chunk inside the node, reduce_across all-reduces each part between nodes
 * over `cross` (the ranks with the same node rank), shm.c all-gathers it (docs/collectives.md).
 *
 * mpi_types.c maps dtypes and reductions to MPI (16-bit floats by user-defined operations);
 * mpi_wait.c decides how this thread waits for MPI (spinning, or testing and sleeping). */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "coll_internal.h"
#include "coll_progress.h"
#include "em_env.h"
#include "mpi_types.h"
#include "mpi_wait.h"

#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long the idle comm thread spins before it sleeps. */
#define SPIN_S 50e-6
/* Host names kept per rank for the timeout reports (longer ones are cut). */
#define HOST_LEN 64
/* Other nodes named one by one in a report; more are counted. */
#define REPORT_HOSTS 8

/* SLOT_PID and SLOT_BIRTH (the process's start time, /proc/PID/stat field 22) let a timed-out rank
 * tell a stopped peer on its node from a slow one. */
enum {
  SLOT_STARTED,
  SLOT_DONE,
  SLOT_KIND,
  SLOT_DTYPE,
  SLOT_COUNT,
  SLOT_ROOT,
  SLOT_OP,
  SLOT_PID,
  SLOT_BIRTH,
  SLOT_N
};

typedef struct {
  coll_comm *c;
  MPI_Comm comm; /* private duplicate of the world, errors returned not fatal */
  MPI_Comm node; /* ranks sharing this node */
  MPI_Win win;
  int64_t *slots; /* node_size * SLOT_N, node-shared; NULL if the window could not be made */
  int node_rank, node_size;
  int *node_world; /* world rank of each node rank */
  char *hosts;     /* size * HOST_LEN: each world rank's host name, for reports; NULL if unknown */
  coll_shm *shm;   /* all ranks on this node: the shared-memory all-reduce, else NULL */
  /* Several nodes of node_size >= 2 ranks each: the hierarchical all-reduce, over this node's
   * segment (hier) and cross, the ranks of every node with my node rank; else NULL, NULL. */
  coll_shm *hier;
  MPI_Comm cross;
  pthread_t thread;
  bool thread_started;
  pthread_mutex_t qlock;
  pthread_cond_t qcond;
  coll_req *head, *tail;
  bool busy; /* an operation is running (comm thread or a blocking caller); under qlock */
  bool sleep_waits; /* all-reduces through MPI are waited for by testing and sleeping (mpi_wait.h) */
  bool named_behind; /* a timeout report of this rank named a rank behind (atomic) */
  bool stop;
} mpi_state;

static void slot_store(mpi_state *s, int field, int64_t v) {
  if (s->slots) __atomic_store_n(&s->slots[s->node_rank * SLOT_N + field], v, __ATOMIC_RELEASE);
}

static int64_t slot_load(const mpi_state *s, int node_rank, int field) {
  return __atomic_load_n(&s->slots[node_rank * SLOT_N + field], __ATOMIC_ACQUIRE);
}

/* "MPI_Allreduce failed: <MPI's message>" */
static em_status mpi_error(int err, const char *what, const coll_req *r, char *msg, size_t n) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(err, text, &len);
  coll_fingerprint f = coll__fingerprint(r);
  char d[160];
  snprintf(msg, n, "%s: %s failed on rank %d: %s", coll__describe(&f, d, sizeof d), what,
           r->comm->rank, text);
  return EM_ERR_COMM;
}

/* Compare r's fingerprint across ranks: one 16-byte allreduce; on a difference, gather every
 * rank's fingerprint and name them. */
static em_status check_fingerprint(mpi_state *s, const coll_req *r, char *msg, size_t n) {
  coll_fingerprint f = coll__fingerprint(r);
  int64_t h = (int64_t)(coll__fingerprint_hash(&f) >> 1), v[2] = {h, -h};
  int err = MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_INT64_T, MPI_MAX, s->comm);
  if (err != MPI_SUCCESS) return mpi_error(err, "fingerprint check", r, msg, n);
  if (v[0] == h && -v[1] == h) return EM_OK;
  int W = s->c->size;
  coll_fingerprint *all = malloc((size_t)W * sizeof *all);
  if (!all) {
    snprintf(msg, n, "collective mismatch at operation #%lld (out of memory naming the ranks)",
             (long long)f.seq);
    return EM_ERR_COMM;
  }
  err = MPI_Allgather(&f, 6, MPI_INT64_T, all, 6, MPI_INT64_T, s->comm);
  if (err != MPI_SUCCESS) {
    free(all);
    return mpi_error(err, "fingerprint gather", r, msg, n);
  }
  coll__mismatch_message(all, NULL, W, msg, n);
  free(all);
  return EM_ERR_COMM;
}

/* MPI_Allreduce, or where the comm thread should not spin (mpi_wait.h) its non-blocking form
 * waited for by testing and sleeping. */
static int allreduce_mpi(mpi_state *s, const void *send, void *recv, int count, MPI_Datatype t,
                         MPI_Op op, MPI_Comm comm) {
  if (!s->sleep_waits) return MPI_Allreduce(send, recv, count, t, op, comm);
  MPI_Request q;
  int err = MPI_Iallreduce(send, recv, count, t, op, comm, &q);
  if (err == MPI_SUCCESS) err = coll__mpi_wait(&q, true);
  if (err == MPI_SUCCESS) {
    pthread_mutex_lock(&s->c->lock);
    s->c->stats.sleeping_waits++;
    pthread_mutex_unlock(&s->c->lock);
  }
  return err;
}

/* The hierarchical all-reduce's step between nodes (coll_shm_across): this node's reduced part
 * of a chunk, all-reduced in place with the same part of every other node. */
typedef struct {
  mpi_state *s;
  const coll_req *r;
} across_ctx;

static em_status reduce_across(void *arg, void *part, int64_t count, char *msg, size_t n) {
  const across_ctx *a = arg;
  int err = allreduce_mpi(a->s, MPI_IN_PLACE, part, (int)count, coll__mpi_type(a->r->dtype),
                         coll__mpi_reduce_op(a->r->dtype, a->r->op), a->s->cross);
  return err == MPI_SUCCESS ? EM_OK : mpi_error(err, "MPI_Allreduce across nodes", a->r, msg, n);
}

/* Run one operation with MPI; chunked where that is faster. */
static em_status execute(mpi_state *s, coll_req *r, char *msg, size_t n) {
  MPI_Datatype t = coll__mpi_type(r->dtype);
  size_t es = em_dtype_size(r->dtype);
  int64_t chunk = s->c->opts.chunk_bytes / (int64_t)es;
  if (chunk < 1) chunk = 1;
  if (chunk > (1 << 30)) chunk = 1 << 30;
  int W = s->c->size, err = MPI_SUCCESS;
  char *send = r->send, *recv = r->recv;
  switch (r->kind) {
  case COLL_ALLREDUCE: {
    bool in_place = send == recv;
    for (int64_t off = 0; off < r->count && err == MPI_SUCCESS; off += chunk) {
      int len = (int)(r->count - off < chunk ? r->count - off : chunk);
      err = allreduce_mpi(s, in_place ? MPI_IN_PLACE : send + off * (int64_t)es,
                          recv + off * (int64_t)es, len, t, coll__mpi_reduce_op(r->dtype, r->op), s->comm);
    }
    if (err == MPI_SUCCESS && r->op == COLL_AVG) coll__mpi_avg_divide(r->dtype, recv, r->count, W);
    if (err != MPI_SUCCESS) return mpi_error(err, "MPI_Allreduce", r, msg, n);
    return EM_OK;
  }
  case COLL_BROADCAST:
    for (int64_t off = 0; off < r->count && err == MPI_SUCCESS; off += chunk) {
      int len = (int)(r->count - off < chunk ? r->count - off : chunk);
      err = MPI_Bcast(recv + off * (int64_t)es, len, t, r->root, s->comm);
    }
    return err == MPI_SUCCESS ? EM_OK : mpi_error(err, "MPI_Bcast", r, msg, n);
  case COLL_REDUCE_SCATTER:
    err = MPI_Reduce_scatter_block(send == recv ? MPI_IN_PLACE : send, recv, (int)r->count, t,
                                   coll__mpi_reduce_op(r->dtype, r->op), s->comm);
    if (err == MPI_SUCCESS && r->op == COLL_AVG) coll__mpi_avg_divide(r->dtype, recv, r->count, W);
    return err == MPI_SUCCESS ? EM_OK : mpi_error(err, "MPI_Reduce_scatter_block", r, msg, n);
  case COLL_ALLGATHER: {
    bool in_place = send == recv + (int64_t)s->c->rank * r->count * (int64_t)es;
    err = MPI_Allgather(in_place ? MPI_IN_PLACE : send, (int)r->count, t, recv, (int)r->count, t,
                        s->comm);
    return err == MPI_SUCCESS ? EM_OK : mpi_error(err, "MPI_Allgather", r, msg, n);
  }
  case COLL_BARRIER:
    err = MPI_Barrier(s->comm);
    return err == MPI_SUCCESS ? EM_OK : mpi_error(err, "MPI_Barrier", r, msg, n);
  case COLL_ALLOC_SHARED: /* no shared-memory path or no segment: ordinary memory (NULL) */
    if (s->shm && coll__shm_alloc(s->shm, (size_t)r->count, r->send, msg, n) != EM_OK) {
      if (s->c->rank == 0) fprintf(stderr, "[rank 0] ember: %s; using ordinary memory\n", msg);
      msg[0] = 0;
    }
    return EM_OK;
  case COLL_FREE_SHARED:
    if (!s->shm) {
      snprintf(msg, n, "coll_free_shared: %p is not memory from coll_alloc_shared", r->send);
      return EM_ERR_INVALID;
    }
    return coll__shm_release(s->shm, r->send, msg, n);
  }
  return EM_ERR_INVALID;
}

/* Run r on this thread: publish it in the progress slot, check its fingerprint when due, run
 * it in shared memory or with MPI. limit bounds each shared-memory wait. msg: the error. */
static em_status perform(mpi_state *s, coll_req *r, double limit, char *msg, size_t n) {
  coll_comm *c = s->c;
  pthread_mutex_lock(&c->lock);
  r->state = REQ_RUNNING;
  r->t_started = coll__now();
  bool failed = c->failed[0] != 0;
  if (failed) snprintf(msg, n, "the communicator has failed earlier: %.900s", c->failed);
  pthread_mutex_unlock(&c->lock);
  if (failed) return EM_ERR_COMM;
  coll_fingerprint f = coll__fingerprint(r);
  slot_store(s, SLOT_KIND, f.kind);
  slot_store(s, SLOT_DTYPE, f.dtype);
  slot_store(s, SLOT_COUNT, f.count);
  slot_store(s, SLOT_ROOT, f.root);
  slot_store(s, SLOT_OP, f.op);
  slot_store(s, SLOT_STARTED, f.seq);
  char what[COLL_PROGRESS_WHAT];
  coll__progress_started(f.seq, coll__describe_req(r, what, sizeof what));
  double t0 = coll__now(), tc = 0;
  em_status st = EM_OK;
  int every = c->opts.check_every;
  bool check = every > 0 && r->seq % (uint64_t)every == 0;
  bool here = coll__shm_runs(s->shm, r); /* the check rides in the shared-memory pass */
  /* Hierarchical: s->shm is NULL then, so the check goes through MPI over the whole world. */
  bool hier = r->kind == COLL_ALLREDUCE && coll__shm_runs(s->hier, r);
  if (check && !here) {
    st = s->shm ? coll__shm_check(s->shm, r, limit, msg, n) : check_fingerprint(s, r, msg, n);
    tc = coll__now() - t0;
  }
  if (st == EM_OK && here) {
    st = coll__shm_run(s->shm, r, check, limit, msg, n); /* avg divided there */
  } else if (st == EM_OK && hier) { /* summed inside and across nodes, then divided */
    across_ctx a = {s, r};
    st = coll__shm_allreduce_across(s->hier, r, reduce_across, &a, limit, msg, n);
    if (st == EM_OK && r->op == COLL_AVG) coll__mpi_avg_divide(r->dtype, r->recv, r->count, c->size);
  } else if (st == EM_OK) {
    st = execute(s, r, msg, n);
  }
  double busy = coll__now() - t0;
  if (st == EM_OK) slot_store(s, SLOT_DONE, f.seq);
  pthread_mutex_lock(&c->lock);
  if (check) c->stats.checks++;
  if (hier && st == EM_OK) c->stats.hierarchical++;
  c->stats.check_s += tc;
  c->stats.busy_s += busy;
  pthread_mutex_unlock(&c->lock);
  return st;
}

/* The comm thread's run: perform, fail the communicator on an error, complete. Shared-memory
 * waits get a backstop past the collective timeout: a waiter in coll_wait reports and aborts
 * first, with the progress of every rank; this one ends operations nobody waits for. */
static void run(mpi_state *s, coll_req *r) {
  char msg[1024] = "";
  em_status st = perform(s, r, s->c->opts.timeout_s * 1.5 + 1, msg, sizeof msg);
  /* Idle before the waiter wakes: its next blocking operation may then run on its own thread. */
  pthread_mutex_lock(&s->qlock);
  s->busy = false;
  pthread_mutex_unlock(&s->qlock);
  if (st != EM_OK) coll__fail(s->c, msg);
  coll__complete(r, st, st == EM_OK ? NULL : msg);
}

static void *comm_thread(void *arg) {
  mpi_state *s = arg;
  for (;;) {
    /* Spin briefly before sleeping: a request issued right after the last one (a bucket
     * after a bucket) then starts without a futex wake-up. */
    for (double t0 = coll__now(); !__atomic_load_n(&s->head, __ATOMIC_ACQUIRE) &&
                                  !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE) &&
                                  coll__now() - t0 < SPIN_S;)
      sched_yield();
    pthread_mutex_lock(&s->qlock);
    while ((!s->head || s->busy) && !s->stop) pthread_cond_wait(&s->qcond, &s->qlock);
    coll_req *r = s->busy ? NULL : s->head;
    if (r) {
      s->head = r->next;
      if (!s->head) s->tail = NULL;
      s->busy = true;
    }
    pthread_mutex_unlock(&s->qlock);
    if (!r) break; /* stop requested and the queue is empty */
    run(s, r);
  }
  return NULL;
}

/* A blocking operation the shared memory can run, with nothing queued or running ahead of it:
 * the caller runs it (see coll_backend.run_here). Its waits are bounded by the collective
 * timeout itself, since no other thread is waiting to report. Never a hierarchical all-reduce
 * (s->shm is NULL then): it calls MPI, which only the comm thread may. */
static bool mpi_run_here(void *state, coll_req *r) {
  mpi_state *s = state;
  if (!coll__shm_runs(s->shm, r)) return false;
  pthread_mutex_lock(&s->qlock);
  bool idle = !s->head && !s->busy && !s->stop;
  if (idle) s->busy = true;
  pthread_mutex_unlock(&s->qlock);
  if (!idle) return false;
  char msg[1024] = "";
  em_status st = perform(s, r, s->c->opts.timeout_s, msg, sizeof msg);
  if (st == EM_ERR_TIMEOUT) { /* the caller reports and aborts, like coll_wait */
    r->status = st;
    snprintf(r->msg, sizeof r->msg, "%.760s", msg);
  } else {
    if (st != EM_OK) coll__fail(s->c, msg);
    pthread_mutex_lock(&s->c->lock);
    s->c->stats.by_caller++;
    pthread_mutex_unlock(&s->c->lock);
    coll__complete(r, st, st == EM_OK ? NULL : msg);
  }
  pthread_mutex_lock(&s->qlock);
  s->busy = false;
  if (s->head) pthread_cond_signal(&s->qcond); /* issued meanwhile by another thread */
  pthread_mutex_unlock(&s->qlock);
  return true;
}

static em_status mpi_start(void *state, coll_req *r) {
  mpi_state *s = state;
  if (r->kind != COLL_BARRIER && coll__mpi_type(r->dtype) == MPI_DATATYPE_NULL)
    return em_set_error(EM_ERR_UNSUPPORTED, "%s: dtype %s is not supported on host buffers (MPI)",
                        coll_kind_name(r->kind), em_dtype_name(r->dtype));
  if ((r->kind == COLL_REDUCE_SCATTER || r->kind == COLL_ALLGATHER) && r->count > (1 << 30))
    return em_set_error(EM_ERR_UNSUPPORTED, "%s: count %lld is above 2^30 elements per rank",
                        coll_kind_name(r->kind), (long long)r->count);
  pthread_mutex_lock(&s->qlock);
  r->next = NULL;
  if (s->tail)
    s->tail->next = r;
  else
    __atomic_store_n(&s->head, r, __ATOMIC_RELEASE);
  s->tail = r;
  pthread_cond_signal(&s->qcond);
  pthread_mutex_unlock(&s->qlock);
  return EM_OK;
}

/* The operation node rank i has started and not finished, from its slot: true if there is one. */
static bool slot_running(const mpi_state *s, int i, coll_fingerprint *f) {
  int64_t started = slot_load(s, i, SLOT_STARTED);
  if (started <= slot_load(s, i, SLOT_DONE)) return false;
  *f = (coll_fingerprint){started,
                          slot_load(s, i, SLOT_KIND),
                          slot_load(s, i, SLOT_DTYPE),
                          slot_load(s, i, SLOT_COUNT),
                          slot_load(s, i, SLOT_ROOT),
                          slot_load(s, i, SLOT_OP)};
  return true;
}

/* Process pid's state letter (/proc/PID/stat field 3) into *state; returns its start time (field
 * 22, clock ticks since boot), -1 if the file cannot be read or parsed. */
static int64_t proc_stat(int64_t pid, char *state) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t len = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[len] = 0;
  char *p = strrchr(buf, ')'); /* the command name, in parentheses, may hold anything */
  if (!p || sscanf(p + 1, " %c", state) != 1) return -1;
  for (int field = 3; field < 22 && p; field++) p = strchr(p + 1, ' ');
  return p ? strtoll(p + 1, NULL, 10) : -1;
}

/* Node rank i's process is stopped (SIGSTOP, a debugger): it will not progress however long we
 * wait. Checked against its published start time, so a reused pid, or a peer in another PID
 * namespace, is never taken for it. */
static bool peer_stopped(const mpi_state *s, int i) {
  char state = 0;
  int64_t pid = slot_load(s, i, SLOT_PID), birth = slot_load(s, i, SLOT_BIRTH);
  return pid > 0 && birth >= 0 && proc_stat(pid, &state) == birth && (state == 'T' || state == 't');
}

static const char *host_of(const mpi_state *s, int w) {
  return s->hosts ? s->hosts + (size_t)w * HOST_LEN : "?";
}

static bool on_my_node(const mpi_state *s, int w) {
  for (int i = 0; i < s->node_size; i++)
    if (s->node_world[i] == w) return true;
  return false;
}

/* Rank w runs on another node than this rank, on host h. */
static bool other_on(const mpi_state *s, int w, const char *h) {
  return !on_my_node(s, w) && !strcmp(host_of(s, w), h);
}

/* " node2 (ranks 2-3), node3 (rank 4)": the ranks of other nodes grouped by host, in rank order,
 * as ranges; past REPORT_HOSTS hosts, a count. Returns the characters written (snprintf's count,
 * possibly past n). For a timeout report only: quadratic in the world size. */
static size_t other_nodes(const mpi_state *s, char *buf, size_t n) {
  size_t k = 0;
  int listed = 0, more = 0, size = s->c->size;
#define ADD(...)                                                                                   \
  do {                                                                                             \
    if (k < n) k += (size_t)snprintf(buf + k, n - k, __VA_ARGS__);                                 \
  } while (0)
  for (int w = 0; w < size; w++) {
    const char *h = host_of(s, w);
    if (on_my_node(s, w)) continue;
    bool seen = false; /* host h came up at an earlier rank */
    for (int v = 0; v < w && !seen; v++) seen = other_on(s, v, h);
    if (seen) continue;
    if (listed == REPORT_HOSTS) {
      more++;
      continue;
    }
    int count = 0;
    for (int v = w; v < size; v++) count += other_on(s, v, h);
    ADD("%s %s (rank%s", listed++ ? "," : "", h, count == 1 ? "" : "s");
    for (int v = w, runs = 0; v < size; v++) {
      if (!other_on(s, v, h)) continue;
      int end = v; /* a run of consecutive ranks on h: v..end */
      while (end + 1 < size && other_on(s, end + 1, h)) end++;
      ADD("%s%d", runs++ ? ", " : " ", v);
      if (end > v) ADD("-%d", end);
      v = end;
    }
    ADD(")");
  }
  if (more) ADD(" and %d more node%s", more, more == 1 ? "" : "s");
#undef ADD
  return k;
}

static void mpi_progress_report(void *state, const coll_req *r, char *buf, size_t n) {
  mpi_state *s = state;
  size_t k = 0;
#define ADD(...)                                                                                   \
  do {                                                                                             \
    if (k < n) k += (size_t)snprintf(buf + k, n - k, __VA_ARGS__);                                 \
  } while (0)
  if (!s->slots) {
    ADD("; progress of other ranks unknown (no node-shared memory)");
    return;
  }
  /* Compare with what this rank's comm thread is inside now (r may be queued behind it), read
   * from this rank's own progress slot: the request itself may be freed at any moment. */
  coll_fingerprint mine = coll__fingerprint(r);
  if (slot_running(s, s->node_rank, &mine) && mine.seq != (int64_t)r->seq) {
    char d[160];
    ADD("; this rank is inside %s", coll__describe(&mine, d, sizeof d));
  }
  int behind = 0;
  for (int i = 0; i < s->node_size; i++) {
    if (i == s->node_rank) continue;
    int64_t started = slot_load(s, i, SLOT_STARTED), done = slot_load(s, i, SLOT_DONE);
    int w = s->node_world[i];
    if (started < mine.seq) {
      ADD("; rank %d is behind (on %s): it has not started #%lld (last completed #%lld)", w,
          host_of(s, w), (long long)mine.seq, (long long)done);
      behind++;
    } else if (started == mine.seq && done < mine.seq) {
      coll_fingerprint other = {started,
                                slot_load(s, i, SLOT_KIND),
                                slot_load(s, i, SLOT_DTYPE),
                                slot_load(s, i, SLOT_COUNT),
                                slot_load(s, i, SLOT_ROOT),
                                slot_load(s, i, SLOT_OP)};
      char d[160];
      if (memcmp(&other, &mine, sizeof mine) != 0)
        ADD("; rank %d is in a different operation: %s", w, coll__describe(&other, d, sizeof d));
      else
        ADD("; rank %d is in the same operation", w);
    } else if (done >= mine.seq) {
      ADD("; rank %d has completed #%lld", w, (long long)done);
    }
    if (peer_stopped(s, i)) {
      ADD(", but stopped: rank %d's process (pid %lld on %s) is in state T (SIGSTOP or a "
          "debugger)",
          w, (long long)slot_load(s, i, SLOT_PID), host_of(s, w));
      behind++;
    }
  }
  int others = s->c->size - s->node_size;
  if (behind) __atomic_store_n(&s->named_behind, true, __ATOMIC_RELEASE);
  if (others > 0) {
    ADD("; %d rank%s on other nodes, progress unknown:", others, others == 1 ? "" : "s");
    if (k < n) k += other_nodes(s, buf + k, n - k);
  }
  if (!behind && s->node_size > 1 && others == 0) ADD("; no rank of this node is behind");
#undef ADD
}

/* Across nodes a rank sees only its own node's progress. One whose report named nobody behind
 * lets the others report first (1 s), so that the rank on the missing rank's node names it
 * before the first abort kills everyone. */
static void mpi_abort(void *state) {
  mpi_state *s = state;
  if (s && s->node_size < s->c->size && !__atomic_load_n(&s->named_behind, __ATOMIC_ACQUIRE)) {
    struct timespec grace = {1, 0};
    nanosleep(&grace, NULL);
  }
  MPI_Abort(MPI_COMM_WORLD, 70);
}

static void mpi_destroy(void *state) {
  mpi_state *s = state;
  if (!s) return;
  if (s->thread_started) {
    pthread_mutex_lock(&s->qlock);
    __atomic_store_n(&s->stop, true, __ATOMIC_RELEASE);
    pthread_cond_signal(&s->qcond);
    pthread_mutex_unlock(&s->qlock);
    /* The thread finishes the queued operations first; they may wait on a rank that is gone,
     * so the join is bounded by the communicator's timeout like every other wait. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)s->c->opts.timeout_s + 1;
    if (pthread_timedjoin_np(s->thread, NULL, &ts) != 0) {
      char what[1536] = "";
      coll_fingerprint f;
      if (s->slots && slot_running(s, s->node_rank, &f)) { /* from the slot: no request pointer */
        char d[160];
        coll_req probe = {.comm = s->c,
                          .seq = (uint64_t)f.seq,
                          .kind = (coll_kind)f.kind,
                          .dtype = (em_dtype)f.dtype,
                          .count = f.count,
                          .root = (int)f.root,
                          .op = (coll_redop)f.op};
        int k = snprintf(what, sizeof what, ": stuck in %s", coll__describe(&f, d, sizeof d));
        mpi_progress_report(s, &probe, what + k, sizeof what - (size_t)k);
      }
      fprintf(stderr,
              "[rank %d] ember: aborting the job: shutting down the communicator: queued "
              "operations did not finish within %.0f s (a rank is missing or behind)%s\n",
              s->c->rank, s->c->opts.timeout_s, what);
      fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 70);
    }
  }
  coll__shm_free(s->shm);
  coll__shm_free(s->hier);
  if (s->cross != MPI_COMM_NULL) MPI_Comm_free(&s->cross);
  if (s->slots) MPI_Win_free(&s->win);
  if (s->node != MPI_COMM_NULL) MPI_Comm_free(&s->node);
  if (s->comm != MPI_COMM_NULL) MPI_Comm_free(&s->comm);
  pthread_cond_destroy(&s->qcond);
  pthread_mutex_destroy(&s->qlock);
  free(s->node_world);
  free(s->hosts);
  free(s);
}

/* EMBER_COLL_NODE_RANKS=k (for tests and tuning on one machine): each real node is cut into
 * nodes of k consecutive node ranks, so shared memory runs inside each and MPI between them. k
 * must divide every node's size, and every rank must give the same k. */
static em_status split_node(mpi_state *s, int rank) {
  int64_t k = 0;
  MPI_Comm_rank(s->node, &s->node_rank);
  MPI_Comm_size(s->node, &s->node_size);
  em_status st = em_env_int("EMBER_COLL_NODE_RANKS", &k);
  char why[256] = "";
  if (st != EM_OK)
    snprintf(why, sizeof why, "%s", em_last_error());
  else if (k > 0 && s->node_size % k != 0)
    snprintf(why, sizeof why,
             "EMBER_COLL_NODE_RANKS=%lld: must divide the ranks of each node (rank %d's node has "
             "%d)",
             (long long)k, rank, s->node_size);
  int v[3] = {(int)k, -(int)k, !why[0]}; /* min k, -max k, all valid */
  MPI_Allreduce(MPI_IN_PLACE, v, 3, MPI_INT, MPI_MIN, s->comm);
  if (why[0]) return em_set_error(EM_ERR_INVALID, "%s", why);
  if (!v[2] || v[0] != -v[1])
    return em_set_error(EM_ERR_INVALID, "EMBER_COLL_NODE_RANKS: %s on another rank",
                        v[2] ? "a different value" : "a bad value");
  if (k == 0 || k == s->node_size) return EM_OK;
  MPI_Comm part;
  if (MPI_Comm_split(s->node, s->node_rank / (int)k, s->node_rank, &part) != MPI_SUCCESS)
    return em_set_error(EM_ERR_BACKEND, "EMBER_COLL_NODE_RANKS=%lld: MPI_Comm_split failed",
                        (long long)k);
  MPI_Comm_free(&s->node);
  s->node = part;
  return EM_OK;
}

/* Every rank's host name, so that a timeout report can say where a rank is (collective over the
 * world). Reports do without when memory is short. */
static void gather_hosts(mpi_state *s) {
  char mine[HOST_LEN] = "";
  if (gethostname(mine, sizeof mine - 1) != 0) snprintf(mine, sizeof mine, "?");
  s->hosts = malloc((size_t)s->c->size * HOST_LEN);
  int ok = s->hosts != NULL;
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_LAND, s->comm); /* all gather, or none */
  if (ok)
    MPI_Allgather(mine, HOST_LEN, MPI_CHAR, s->hosts, HOST_LEN, MPI_CHAR, s->comm);
  else {
    free(s->hosts);
    s->hosts = NULL;
  }
}

/* The world spans nodes: all-reduce hierarchically when every node has the same number of ranks,
 * at least 2 (and use_shm), else through MPI. Collective over the world; rank 0 logs the choice
 * and the layout once. */
static em_status setup_hierarchical(mpi_state *s, int use_shm) {
  coll_comm *c = s->c;
  int v[2] = {s->node_size, -s->node_size}, nodes = s->node_rank == 0;
  MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_INT, MPI_MIN, s->comm);
  MPI_Allreduce(MPI_IN_PLACE, &nodes, 1, MPI_INT, MPI_SUM, s->comm);
  int lo = v[0], hi = -v[1];
  const char *why = !use_shm   ? "EMBER_COLL_SHM=0"
                    : lo != hi ? "nodes of different sizes"
                    : lo < 2   ? "one rank per node"
                               : NULL;
  int ok = 0;
  if (!why) {
    s->hier =
        coll__shm_new(&s->node, s->node_rank, s->node_size, s->node_world, c->opts.chunk_bytes);
    ok = s->hier != NULL;
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_LAND, s->comm); /* every node has one */
    if (!ok) {
      why = "no node-shared segment on some node";
      coll__shm_free(s->hier); /* collective over the node, whose ranks agree */
      s->hier = NULL;
    }
    em_clear_error();
  }
  /* Every rank splits (collective over the world); ranks of one node rank, in world order. */
  if (ok && (MPI_Comm_split(s->comm, s->node_rank, c->rank, &s->cross) != MPI_SUCCESS ||
             MPI_Comm_set_errhandler(s->cross, MPI_ERRORS_RETURN) != MPI_SUCCESS))
    return em_set_error(EM_ERR_BACKEND, "MPI communicator: splitting the world by node rank "
                                        "for the hierarchical all-reduce failed");
  if (c->rank != 0) return EM_OK;
  if (lo == hi)
    fprintf(stderr, "[rank 0] ember: %d nodes x %d rank%s, all-reduce %s%s%s\n", nodes, lo,
            lo == 1 ? "" : "s", ok ? "hierarchical (shared memory + MPI)" : "through MPI",
            why ? ": " : "", why ? why : "");
  else
    fprintf(stderr, "[rank 0] ember: %d nodes of %d to %d ranks, all-reduce through MPI: %s\n",
            nodes, lo, hi, why);
  return EM_OK;
}

coll_backend *coll__mpi_new(coll_comm *c, void *mpi_comm) {
  mpi_state *s = calloc(1, sizeof *s);
  coll_backend *b = calloc(1, sizeof *b);
  if (!s || !b) {
    free(s);
    free(b);
    em_set_error(EM_ERR_NOMEM, "MPI communicator: out of memory");
    return NULL;
  }
  s->c = c;
  s->comm = s->node = s->cross = MPI_COMM_NULL;
  pthread_mutex_init(&s->qlock, NULL);
  pthread_cond_init(&s->qcond, NULL);
  MPI_Comm world = *(MPI_Comm *)mpi_comm;
  if (MPI_Comm_dup(world, &s->comm) != MPI_SUCCESS ||
      MPI_Comm_set_errhandler(s->comm, MPI_ERRORS_RETURN) != MPI_SUCCESS ||
      MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &s->node) !=
          MPI_SUCCESS) {
    em_set_error(EM_ERR_BACKEND, "MPI communicator: duplicating or splitting the world failed");
    goto fail;
  }
  if (split_node(s, c->rank) != EM_OK) goto fail;
  gather_hosts(s);
  MPI_Comm_rank(s->node, &s->node_rank);
  MPI_Comm_size(s->node, &s->node_size);
  s->node_world = calloc((size_t)s->node_size, sizeof *s->node_world);
  if (!s->node_world) goto nomem;
  MPI_Allgather(&c->rank, 1, MPI_INT, s->node_world, 1, MPI_INT, s->node);
  /* Progress slots; without them timeouts still work, with less to say. */
  int64_t *mine = NULL;
  MPI_Comm_set_errhandler(s->node, MPI_ERRORS_RETURN);
  if (MPI_Win_allocate_shared((MPI_Aint)(SLOT_N * sizeof(int64_t)), sizeof(int64_t), MPI_INFO_NULL,
                              s->node, &mine, &s->win) == MPI_SUCCESS) {
    MPI_Aint size;
    int disp;
    int64_t *base = NULL;
    if (MPI_Win_shared_query(s->win, 0, &size, &disp, &base) == MPI_SUCCESS && base) {
      s->slots = base;
      memset(mine, 0, SLOT_N * sizeof(int64_t));
      char state;
      mine[SLOT_PID] = getpid();
      mine[SLOT_BIRTH] = proc_stat(getpid(), &state);
    } else {
      MPI_Win_free(&s->win);
    }
  }
  MPI_Barrier(s->node); /* every slot is zeroed before anyone reads one */
  /* One node holds the whole world: all-reduce in shared memory; several: hierarchically
   * (EMBER_COLL_SHM=0: MPI). */
  int64_t want = 1;
  int use_shm = em_env_int("EMBER_COLL_SHM", &want) == EM_OK ? (int)want : -1;
  MPI_Allreduce(MPI_IN_PLACE, &use_shm, 1, MPI_INT, MPI_MIN, s->comm); /* every rank agrees */
  if (use_shm < 0) {
    if (em_last_status() == EM_OK)
      em_set_error(EM_ERR_INVALID, "EMBER_COLL_SHM: a bad value on another rank");
    goto fail;
  }
  char why[160];
  if (!coll__mpi_wait_mode(s->comm, &s->sleep_waits, why, sizeof why)) goto fail;
  /* Said once where all-reduces go through MPI (several nodes, or EMBER_COLL_SHM=0). */
  if (c->rank == 0 && c->size > 1 && (!use_shm || s->node_size < c->size))
    fprintf(stderr, "[rank 0] ember: MPI all-reduces wait %s: %s\n",
            s->sleep_waits ? "by testing and sleeping" : "in MPI (spinning)", why);
  if (use_shm && s->node_size == c->size && c->size > 1) {
    s->shm = coll__shm_new(&s->node, s->node_rank, s->node_size, s->node_world,
                           c->opts.chunk_bytes);
    if (!s->shm && c->rank == 0)
      fprintf(stderr, "[rank 0] ember: %s; all-reduce goes through MPI\n", em_last_error());
    em_clear_error();
  } else if (s->node_size < c->size && setup_hierarchical(s, use_shm) != EM_OK) {
    goto fail;
  }
  if (pthread_create(&s->thread, NULL, comm_thread, s) != 0) {
    em_set_error(EM_ERR_BACKEND, "MPI communicator: cannot start the communication thread");
    goto fail;
  }
  s->thread_started = true;
  *b = (coll_backend){.name = "mpi",
                      .start = mpi_start,
                      .run_here = mpi_run_here,
                      .progress_report = mpi_progress_report,
                      .abort = mpi_abort,
                      .destroy = mpi_destroy,
                      .state = s};
  return b;
nomem:
  em_set_error(EM_ERR_NOMEM, "MPI communicator: out of memory");
fail:
  mpi_destroy(s);
  free(b);
  return NULL;
}
