/* coll_internal.h: private to collectives/. The request and communicator layouts and the backend
 * operation table.
 *
 *   coll.c      front end: argument checks, sequence numbers, requests, waits and timeouts,
 *               the timeout report, dispatch by device
 *   mpi.c       host buffers: a communication thread runs requests FIFO with MPI (chunked),
 *               fingerprint checks, per-rank progress in node-shared memory
 *   self.c      host buffers when the build has no MPI: a world of 1
 *   nccl.c      CUDA buffers: NCCL on its own stream, ordered after producers by events
 *
 * Request life: coll.c fills it and calls backend->start; the backend completes it by calling
 * coll__complete (any thread); waiters sleep on the communicator's condition variable. */
#ifndef EMBER_COLL_INTERNAL_H
#define EMBER_COLL_INTERNAL_H

#include "coll.h"

#include <pthread.h>

typedef enum { REQ_QUEUED = 0, REQ_RUNNING = 1, REQ_DONE = 2 } coll_req_state;

/* COLL_ALLOC_SHARED requests: count = bytes, send = the void ** to fill; COLL_FREE_SHARED:
 * send = the pointer. Backends without shared memory complete an allocation with NULL. */

struct coll_req {
  coll_comm *comm;
  const struct coll_backend *backend;
  coll_kind kind;
  coll_redop op;
  em_dtype dtype;
  int64_t count; /* elements per rank, as the caller gave it */
  int root;
  void *send, *recv;
  em_device device;
  uint64_t seq; /* 1, 2, ... per communicator, in issue order */
  char label[96]; /* what the caller said it is (coll_label), or "" */
  /* completion (under comm->lock) */
  coll_req_state state;
  bool detached; /* freed by the completer */
  em_status status;
  char msg[768];
  double t_issued, t_started, t_done; /* monotonic seconds */
  struct coll_req *next;      /* backend queue link */
  void *backend_data;         /* e.g. the NCCL completion event */
};

/* A fingerprint: what each rank believes the current operation is. */
typedef struct {
  int64_t seq, kind, dtype, count, root, op;
} coll_fingerprint;
coll_fingerprint coll__fingerprint(const coll_req *r);
uint64_t coll__fingerprint_hash(const coll_fingerprint *f);
/* "allreduce #5 (f32 x 1000, sum)" into buf. */
const char *coll__describe(const coll_fingerprint *f, char *buf, size_t n);
/* The same for a request, with its label: "allreduce #5 (f32 x 1000, avg) [DDP bucket 1 of 3]". */
const char *coll__describe_req(const coll_req *r, char *buf, size_t n);
/* "collective mismatch: ranks issued different operations: rank 0,2: allreduce #5 (...); rank 1:
 * ..." into msg, ranks grouped by fingerprint. all[i] is the fingerprint of rank ranks[i]
 * (ranks NULL: of rank i), for i < W. */
void coll__mismatch_message(const coll_fingerprint *all, const int *ranks, int W, char *msg,
                            size_t n);

typedef struct coll_backend {
  const char *name;
  /* Take r (state QUEUED) and run it eventually, in issue order; complete with coll__complete. */
  em_status (*start)(void *state, coll_req *r);
  /* For a timeout report: append to buf what is known of other ranks' progress (who is behind,
   * which operation each is in). */
  void (*progress_report)(void *state, const coll_req *r, char *buf, size_t n);
  /* Run r (QUEUED, not started) on the calling thread now, if the backend can without a hand-off
   * and nothing is queued or running ahead of it. True: r ran; it is complete, or its wait
   * passed the communicator's timeout (state still REQ_RUNNING, status EM_ERR_TIMEOUT, msg
   * set). False: start it as usual. NULL: never. */
  bool (*run_here)(void *state, coll_req *r);
  /* Poll-driven completion (NCCL): called by waiters; may complete r. NULL if thread-driven. */
  void (*poll)(void *state, coll_req *r);
  /* Abort the job: does not return when possible. */
  void (*abort)(void *state);
  /* Stop and free (all requests completed). */
  void (*destroy)(void *state);
  void *state;
} coll_backend;

struct coll_comm {
  int rank, size;
  coll_options opts;
  coll_backend *host;   /* mpi or self */
  coll_backend *device; /* nccl, or NULL */
  pthread_mutex_t lock;
  pthread_cond_t done;
  uint64_t next_seq;
  char failed[768]; /* non-empty: the communicator failed (mismatch, MPI error): later ops fail */
  coll_stats stats;
};

/* Called by a backend when r finished (status, and msg for errors). Thread-safe. */
void coll__complete(coll_req *r, em_status status, const char *msg);
/* Mark the communicator failed: every later operation fails with this message. */
void coll__fail(coll_comm *c, const char *msg);
double coll__now(void);
size_t coll__payload_bytes(const coll_req *r); /* per rank, for statistics */

/* Backend constructors (NULL with the error set on failure). */
#ifdef EMBER_HAVE_MPI
coll_backend *coll__mpi_new(coll_comm *c, void *mpi_comm /* MPI_Comm * */);
#endif
coll_backend *coll__self_new(coll_comm *c);
#ifdef EMBER_HAVE_NCCL
coll_backend *coll__nccl_new(coll_comm *c, int cuda_device,
                             void *mpi_comm /* MPI_Comm * or NULL */);
#endif

#ifdef EMBER_HAVE_MPI
/* Collectives between the ranks of one node through a shared segment (shm.c): all-reduce,
 * broadcast, reduce-scatter, all-gather, barrier, and the fingerprint check. coll__shm_new is collective over node_comm (an
 * MPI_Comm *): NULL with the error set on every rank when any rank cannot map the segment.
 * world[node rank] is each node rank's rank in the communicator (borrowed; names ranks in
 * messages, finds a broadcast's root). chunk: bytes per pipeline stage.
 * The rest makes no MPI call, so any thread may run it, one operation at a time, in issue order:
 *   coll__shm_runs   whether r can run here (kind, dtype, reduction)
 *   coll__shm_run    run r; check: compare fingerprints across ranks first (in the same pass)
 *   coll__shm_check  only the fingerprint check, for an operation that then runs with MPI
 * Errors: EM_ERR_TIMEOUT when a wait passed limit seconds (msg names the rank waited for),
 * EM_ERR_COMM on a mismatch (msg names every rank's operation). */
#define COLL_SHM_MAX_RANKS 256
typedef struct coll_shm coll_shm;
coll_shm *coll__shm_new(void *node_comm, int rank, int size, const int *world, int64_t chunk);
bool coll__shm_runs(const coll_shm *s, const coll_req *r);
em_status coll__shm_run(coll_shm *s, const coll_req *r, bool check, double limit, char *msg,
                        size_t n);
em_status coll__shm_check(coll_shm *s, const coll_req *r, double limit, char *msg, size_t n);
/* Hierarchical all-reduce (the node is one of several alike): phases 1 and 2 of the staged
 * all-reduce leave my reduced part of each chunk in my stage, across(arg, part, count, msg, n)
 * reduces it in place with the same part on every other node (MPI, so only the comm thread may
 * run this), phase 3 copies every part out. No fingerprint check here (the headers only cover
 * the node: the caller checks through MPI); never in a coll_alloc_shared region; avg left as a
 * sum. */
typedef em_status (*coll_shm_across)(void *arg, void *part, int64_t count, char *msg, size_t n);
em_status coll__shm_allreduce_across(coll_shm *s, const coll_req *r, coll_shm_across across,
                                     void *arg, double limit, char *msg, size_t n);
/* coll_alloc_shared and coll_free_shared on the comm thread (MPI calls, collective over the
 * node): a zeroed region every rank maps; an in-place allreduce inside it is not staged. */
em_status coll__shm_alloc(coll_shm *s, size_t bytes, void **out, char *msg, size_t n);
em_status coll__shm_release(coll_shm *s, void *p, char *msg, size_t n);
void coll__shm_free(coll_shm *s);
#endif

/* The communicator over MPI_COMM_WORLD (or a world of 1), made by ddp_init. */
coll_comm *coll__comm_new(const coll_options *opts, int rank, int size, int cuda_device);
void coll__comm_free(coll_comm *c);

#endif
