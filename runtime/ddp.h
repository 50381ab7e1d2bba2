/* ddp.h: ddp_wrap, the one call that makes a model data-parallel.
 *
 *   ddp_init(&argc, &argv);
 *   em_module *model = em_mlp(784, (int[]){1024, 1024}, 2, 10);
 *   ddp_model *ddp = ddp_wrap(model, NULL);     // remove this line: a single-process program
 *   ... em_forward, em_backward(loss), em_step, em_zero_grad as before ...
 *   ddp_free(ddp);
 *
 * At wrap time every rank must hold the same parameters (names, shapes, dtypes: checked, the
 * error names the first difference and the rank); rank 0's parameters and buffers are broadcast
 * to all, and a checksum confirms it.
 *
 * Buckets. Parameters are grouped into buckets of at most bucket_cap_mb, in the order their
 * gradients become ready in backward. Gradients live in one flat buffer from the start: each
 * parameter's .grad is a view into its bucket, so there is no copy in or out.
 *
 *   grads: | bucket 0: fc3.weight fc3.bias | bucket 1: fc2.weight fc2.bias | bucket 2: ... |
 *            ^ launched first                ^ launched when its last gradient is final
 *
 * Bucket order. The first plan (ddp_wrap) takes reverse registration order: roughly the order
 * backward makes gradients ready when layers are registered in the order they are applied. At the
 * end of the first synced backward, once every bucket has completed, the reducer rebuilds the
 * plan, once, in the order the gradients actually became ready on rank 0 (rank 0's order is
 * broadcast, so every rank lays out the same plan; the plans' fingerprints are compared again),
 * as PyTorch's reducer does after its first iteration. Parameters whose gradient did not become
 * ready on rank 0 in that pass (unused there) go last, in reverse registration order. If that
 * pass failed on some rank, the next synced pass is observed instead. The gradients' values are
 * carried into the new buffer and each .grad is re-pointed at its new view: read p->grad afresh
 * after that backward rather than keep an earlier .grad pointer (it holds the old values and is
 * no longer updated). static_bucket_order keeps the first plan. A world of one has no synced
 * pass, so its plan stays the first one. ddp_bucket_params lists a bucket's parameters.
 *
 * Overlap. When the last gradient of a bucket is final (the engine's grad-ready hook), the bucket's
 * all-reduce starts at once, in bucket order on every rank, while backward goes on; at the end of
 * backward the reducer waits for every bucket. Gradients end averaged over the world: the
 * communicator's AVG (sum, then divide by the world size, in f32).
 *
 * Unused parameters: the engine says before backward runs which parameters this pass will reach;
 * the others are marked ready at once (their gradient region holds what .grad held, normally zero
 * after em_zero_grad), so a step never stalls. A parameter unused on every rank keeps its gradient
 * untouched, as in PyTorch (a small all-reduce of the used-flags finds them).
 *
 * In a world of one rank the reducer does nothing (the gradients are the average already).
 *
 * Devices. Every parameter is f32 and on one device: this rank's ddp_device() (cuda:N when the
 * rank has a GPU: move the model there with em_module_to before wrapping), or the CPU. A model on
 * the GPU keeps its gradient buckets there and all-reduces them with NCCL (ncclAvg), compression
 * converting on the device, overlapped with backward by default; a CPU model reduces over MPI as
 * always. A parameter on another device than the rest, or a GPU model on another GPU than
 * ddp_device(), is an error naming the parameter and both devices. Every rank wraps its model on
 * the same kind of device. docs/ddp.md, "On GPUs".
 *
 * A backward pass that reaches none of the model's parameters (another model's) is not reduced;
 * every rank must run each backward that reaches the model, as with PyTorch.
 *
 * Buffers (batch-norm running statistics) are broadcast from rank 0 at the end of every synced
 * backward, so that all ranks evaluate with the same statistics (PyTorch broadcasts them before
 * each forward; Ember sees no forward, and the end of backward is the same point in the step).
 */
#ifndef EMBER_DDP_H
#define EMBER_DDP_H

#include "coll.h"
#include "em_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ddp_model ddp_model;

typedef enum {
  DDP_COMPRESS_NONE = 0,
  DDP_COMPRESS_BF16 = 1, /* cast to bf16 (after dividing by the world size), sum, cast back */
  DDP_COMPRESS_FP16 = 2, /* the same with IEEE half */
} ddp_compression;

/* A bucket as a communication hook sees it: reduce data[0, count) in place across ranks. */
typedef struct {
  int index;   /* launch order, 0 first */
  float *data; /* the bucket's gradients (f32), in the memory of device */
  int64_t count;
  coll_comm *comm;
  em_device device; /* the model's device: the CPU, or cuda:N (then data is device memory) */
} ddp_bucket_view;
/* Start the reduction of b and return its request (the reducer waits for it at the end of
 * backward), or NULL with the error set. The default is coll_allreduce(..., COLL_AVG). */
typedef coll_req *(*ddp_comm_hook)(const ddp_bucket_view *b, void *ctx);

/* When the bucket all-reduces run. ON: each as soon as its gradients are ready, while backward
 * goes on (PyTorch's reducer). OFF: all of them after backward ends, in order (a blocking
 * all-reduce after backward). AUTO: ON for a model on a GPU (NCCL runs on its own stream and
 * takes no core from backward). For a CPU model, ON when the comm thread has a core of its own,
 * that is when
 * this rank may count on more CPUs than it has compute threads (em_num_threads): the CPUs of its
 * affinity mask, or, when the mask holds every CPU (not bound), its share of them among the
 * node's ranks; else OFF, since a comm thread sharing the compute thread's core only takes time
 * from backward (measured in docs/ddp.md). ddp_get_stats(d).overlap says what is in effect. */
typedef enum { DDP_OVERLAP_AUTO = 0, DDP_OVERLAP_ON = 1, DDP_OVERLAP_OFF = 2 } ddp_overlap;

/* Zero fields take the environment, then the default:
 *   bucket_cap_mb  EMBER_DDP_BUCKET_MB   4 (docs/ddp.md: measured on this machine)
 *   overlap        EMBER_DDP_OVERLAP     auto (auto, on or off)
 *   timeline       EMBER_TIMELINE        none: a Chrome trace file per rank ("%r" -> rank)  */
typedef struct {
  double bucket_cap_mb;
  ddp_compression compression;
  ddp_comm_hook hook; /* overrides compression */
  void *hook_ctx;
  bool no_broadcast_buffers;
  const char *timeline;
  ddp_overlap overlap;
  /* Keep the first plan (reverse registration order) instead of rebuilding the buckets in the
   * order gradients became ready in the first synced backward (see "Bucket order" above). */
  bool static_bucket_order;
} ddp_options;

/* Wrap model (not owned; it must outlive the result). NULL opts = defaults. Needs ddp_init.
 * Returns NULL with the error set: not initialised, wrapped already, parameters not f32 or on
 * several devices (see "Devices" above), models differ across ranks, plans differ across ranks.
 * Collective: every rank calls it. */
ddp_model *ddp_wrap(em_module *model, const ddp_options *opts);
/* Unhook and free (NULL ok). The parameters keep their values; their .grad stay valid tensors
 * (moved out of node-shared memory, which goes back to the communicator at ddp_finalize). Not
 * collective. ddp_finalize frees every model still wrapped, so a program may end with
 * ddp_finalize alone (then free the model after ddp_finalize: it must outlive its wrapper). */
void ddp_free(ddp_model *d);

/* Gradient accumulation: while on, backward passes do not communicate; the next synced backward
 * reduces everything accumulated since the last one. */
em_status ddp_no_sync(ddp_model *d, bool on);

typedef struct {
  int64_t steps;         /* synced backward passes */
  double forward_s;      /* last step: from the end of the previous backward to this one's start */
  double backward_s;     /* last step: backward, including the wait for the buckets */
  double comm_s;         /* last step: sum over buckets of launch -> completion */
  double comm_exposed_s; /* last step: time backward's end waited for communication */
  double comm_overlapped_s; /* comm_s - comm_exposed_s (>= 0) */
  int n_buckets;
  bool buckets_shared; /* what buckets all-reduce (the gradients, or with compression their
                          16-bit copies) is node-shared memory: they all-reduce unstaged */
  bool overlap;      /* buckets all-reduce during backward (ddp_options.overlap resolved) */
} ddp_stats;
ddp_stats ddp_get_stats(const ddp_model *d);
/* Bucket i: element count (padding included) and number of parameters. -1 if i is out of range. */
int64_t ddp_bucket_numel(const ddp_model *d, int i, int *n_params);
/* Bucket i's parameters in the order they are laid out, as indices into em_parameters(model)
 * (registration order): the first min(max, count) are written to idx (idx may be NULL). Returns
 * the bucket's parameter count, or -1 if i is out of range. */
int ddp_bucket_params(const ddp_model *d, int i, int *idx, int max);

#ifdef __cplusplus
}
#endif
#endif
