/* coll.h: the communicator. One API over MPI (host buffers) and NCCL (device buffers):
 * allreduce, broadcast, reduce_scatter, allgather and barrier, all asynchronous.
 *
 *   coll_comm *c = ddp_comm();                                  // made by ddp_init()
 *   coll_req *r = coll_allreduce(c, coll_buf_of(grad), coll_buf_of(grad), n, COLL_AVG);
 *   ... compute ...
 *   if (coll_wait(r, COLL_TIMEOUT_DEFAULT) != EM_OK) fprintf(stderr, "%s\n", em_last_error());
 *
 * Every rank must issue the same operations in the same order (as with MPI and NCCL). Requests
 * run in the order they were issued. The backend is chosen by the buffers' device: CPU buffers go
 * to the MPI backend, whose own communication thread makes every MPI call, so the caller never
 * blocks on a transfer it did not ask to wait for; CUDA buffers go to NCCL on its own stream.
 *
 * Safety. Waits time out. A fingerprint of each operation (sequence number, kind, dtype, count,
 * root, reduction) is compared across ranks before it runs (every check_every operations), so a
 * mismatched collective is an error naming both sides instead of a hang or a wrong sum. When a
 * wait with the communicator's own timeout expires, the communicator reports the operation this
 * rank is stuck in and the ranks that are behind, and aborts the job (MPI_Abort/ncclCommAbort) so
 * that no rank hangs forever.
 *
 * Counts are in elements, never bytes, and are checked against the buffers' sizes. */
#ifndef EMBER_COLL_H
#define EMBER_COLL_H

#include "em_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct coll_comm coll_comm;
typedef struct coll_req coll_req;

typedef enum { COLL_SUM = 0, COLL_AVG = 1, COLL_MAX = 2, COLL_MIN = 3 } coll_redop;
typedef enum {
  COLL_ALLREDUCE = 0,
  COLL_BROADCAST = 1,
  COLL_REDUCE_SCATTER = 2,
  COLL_ALLGATHER = 3,
  COLL_BARRIER = 4,
  COLL_ALLOC_SHARED = 5, /* coll_alloc_shared and coll_free_shared: run in order like the others */
  COLL_FREE_SHARED = 6,
} coll_kind;
const char *coll_kind_name(coll_kind k);   /* "allreduce" ... */
const char *coll_redop_name(coll_redop o); /* "sum" ... */

/* A buffer: where it is, and how many elements of which dtype it holds. Borrowed: it must stay
 * valid until the request using it has completed. */
typedef struct {
  void *ptr;
  int64_t numel;
  em_dtype dtype;
  em_device device;
} coll_buf;
/* The buffer of a contiguous tensor (an empty buffer, ptr NULL, if t is NULL or not contiguous;
 * the operation then fails naming it). */
coll_buf coll_buf_of(const em_tensor *t);
/* A host buffer of n elements. */
static inline coll_buf coll_host_buf(void *ptr, int64_t n, em_dtype dt) {
  coll_buf b = {ptr, n, dt, {EM_CPU, 0}};
  return b;
}

/* Options; zero fields take the environment variable, else the default:
 *   timeout_s    EMBER_COLL_TIMEOUT (seconds)         300
 *   chunk_bytes  EMBER_COLL_CHUNK_BYTES               1 MiB (see docs/collectives.md)
 *   check_every  EMBER_COLL_CHECK_EVERY (ops; -1 off)  1: check every operation */
typedef struct {
  double timeout_s;
  int64_t chunk_bytes;
  int check_every;
} coll_options;

/* ---- operations -------------------------------------------------------------------------------
 * Each returns a new request (owned by the caller until coll_wait consumes it) or NULL with the
 * error set (bad count, dtype, buffer, root, or a communicator that has failed). All buffers of an
 * operation are on one device. send and recv may be the same buffer (in place) where noted. */

/* recv[0, count) = op over ranks of send[0, count). In place when send.ptr == recv.ptr. AVG is
 * for floating dtypes (the sum divided by the world size). */
coll_req *coll_allreduce(coll_comm *c, coll_buf send, coll_buf recv, int64_t count, coll_redop op);
/* buf[0, count) of rank root is copied to every rank. */
coll_req *coll_broadcast(coll_comm *c, coll_buf buf, int64_t count, int root);
/* send holds world * count elements; rank r receives op over ranks of send[r*count, (r+1)*count)
 * into recv[0, count). In place when send.ptr == recv.ptr (recv then holds world * count). */
coll_req *coll_reduce_scatter(coll_comm *c, coll_buf send, coll_buf recv, int64_t count,
                              coll_redop op);
/* recv holds world * count elements; rank r's send[0, count) lands in recv[r*count, ...). In place
 * when send.ptr == recv.ptr + rank * count elements. */
coll_req *coll_allgather(coll_comm *c, coll_buf send, coll_buf recv, int64_t count);
/* Completes when every rank has reached it (on the MPI backend). */
coll_req *coll_barrier(coll_comm *c);

/* Names the next operation the calling thread issues, in timeout reports and in ddprun's stall
 * report: coll_label("DDP bucket %d of %d", k + 1, n). It applies to that one operation (an
 * operation issued by another thread is not affected); "" or NULL clears it. */
void coll_label(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- completion --------------------------------------------------------------------------------
 */
#define COLL_TIMEOUT_DEFAULT 0.0
/* Waits for r. timeout_s > 0: at most that long; on expiry returns EM_ERR_TIMEOUT with a message
 * naming the operation and the ranks that are behind, and r stays valid (wait again, or let it
 * run). timeout_s == COLL_TIMEOUT_DEFAULT: the communicator's timeout; on expiry the report goes
 * to stderr and the communicator aborts the job. Any other return consumes r: it is freed and
 * the operation's status is returned (EM_OK, or an error whose message names the operation). */
em_status coll_wait(coll_req *r, double timeout_s);
/* coll_wait that also gives the moment r completed (monotonic seconds, as coll_now()). */
em_status coll_wait_ex(coll_req *r, double timeout_s, double *t_done);
/* The monotonic clock the communicator uses (seconds). */
double coll_now(void);
/* True once r has completed (coll_wait then returns at once). Does not consume r. */
bool coll_test(coll_req *r);
/* Give up ownership of r without waiting: it completes on its own (its buffers must stay valid
 * until then) and is freed then. NULL ok. */
void coll_req_detach(coll_req *r);
/* Issue and wait with the default timeout. */
em_status coll_run(coll_req *r);

/* Blocking operations: the same as coll_run(coll_allreduce(...)) and so on, with the same
 * arguments and errors (r is NULL: the error of the issue). When the operation can run in the
 * node's shared memory (all ranks on one node: every kind of operation) and nothing is
 * queued ahead of it, the calling thread runs it itself: no hand-off to the comm thread and back,
 * which costs microseconds each way and more when the threads share a core. */
em_status coll_run_allreduce(coll_comm *c, coll_buf send, coll_buf recv, int64_t count,
                             coll_redop op);
em_status coll_run_broadcast(coll_comm *c, coll_buf buf, int64_t count, int root);
em_status coll_run_reduce_scatter(coll_comm *c, coll_buf send, coll_buf recv, int64_t count,
                                  coll_redop op);
em_status coll_run_allgather(coll_comm *c, coll_buf send, coll_buf recv, int64_t count);
em_status coll_run_barrier(coll_comm *c);

/* ---- node-shared memory ------------------------------------------------------------------------
 * coll_alloc_shared: bytes of zeroed host memory that every rank of this node maps
 * (MPI_Win_allocate_shared, made on the comm thread). An in-place allreduce of a range of it is
 * then not staged: each rank reduces straight from every rank's copy, with less than half the
 * memory traffic. Every rank must pass the same range of its own allocation (as DDP's gradient
 * buckets do); ranks that disagree fail the operation with a message saying so. Collective: every
 * rank calls it with the same size, in the same order as its other operations. NULL, with no error
 * set, when there is no shared-memory path (ranks on several nodes, EMBER_COLL_SHM=0, a world of
 * 1) or the memory cannot be had: use ordinary memory then.
 * coll_free_shared: collective; after every operation on the memory completed. NULL is a no-op. */
void *coll_alloc_shared(coll_comm *c, size_t bytes);
em_status coll_free_shared(coll_comm *c, void *p);

/* ---- the communicator ---------------------------------------------------------------------------
 */
int coll_rank(const coll_comm *c);
int coll_size(const coll_comm *c);
/* The backend that serves buffers of this device kind ("mpi", "self", "nccl"), or NULL. */
const char *coll_backend_name(const coll_comm *c, em_device_kind dev);
/* Settings in effect (after the environment and defaults were applied). */
coll_options coll_get_options(const coll_comm *c);

typedef struct {
  int64_t ops;    /* operations completed */
  int64_t bytes;  /* payload bytes of those operations (per rank) */
  int64_t checks; /* fingerprint checks run */
  double check_s; /* seconds spent in fingerprint checks (comm thread) */
  double busy_s;  /* seconds spent in operations (comm thread or caller), checks included */
  int64_t by_caller; /* operations the calling thread ran itself (blocking forms, shared memory) */
  int64_t hierarchical; /* all-reduces run in shared memory inside nodes and MPI across them */
  /* MPI all-reduces (or their steps across nodes) that the comm thread waited for by testing and
   * sleeping instead of spinning in MPI: where ranks outnumber their machine's CPUs, or
   * EMBER_COLL_WAIT=sleep (docs/collectives.md) */
  int64_t sleeping_waits;
} coll_stats;
coll_stats coll_get_stats(const coll_comm *c);

/* Report why (stderr, prefixed with the rank) and abort every rank: MPI_Abort / ncclCommAbort.
 * Does not return when MPI is running; in a world of 1 without MPI it calls abort(). */
void coll_abort(coll_comm *c, const char *why);

#ifdef __cplusplus
}
#endif
#endif
