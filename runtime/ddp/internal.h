/* ddp/internal.h: private to runtime/ddp/. The reducer's state, shared by the pass (ddp.c) and
 * the bucket plan (plan.c). */
#ifndef EMBER_DDP_INTERNAL_H
#define EMBER_DDP_INTERNAL_H

#include "ddp.h"
#include "em_timeline.h"

typedef struct {
  int64_t off, len; /* in the flat gradient buffer, len includes padding */
  int first, n;     /* its parameters: order[first .. first + n) */
  int pending;
  coll_req *req;
  double t_launch, t_done;
  uint16_t *half; /* compression: its part of the layout's 16-bit buffer (len) */
} bucket;

/* A bucket plan and the gradient memory laid out by it; a rebuild replaces one whole. Parameter
 * indices are registration order (em_parameters); order[] is launch order:
 *
 *   order:  | 5  4  | 3  2  | 1  0  |         bucket 0 = order[0, 2), launched first
 *   grads:  | p5 p4 | p3 p2 | p1 p0 |         p_i at goff[i], padded to 16 floats */
typedef struct {
  int n_buckets;
  int *order;        /* n_params parameter indices, bucket after bucket */
  int64_t *goff;     /* by parameter index: offset in grads */
  bucket *buckets;   /* n_buckets of them (n_params allocated) */
  em_tensor *grads;  /* flat f32 gradient buffer (owned), on the model's device */
  void *shared;      /* grads' memory when it is node-shared (coll_alloc_shared), else NULL */
  uint16_t *half;    /* compression: the 16-bit buffer, bucket k's at buckets[k].off, or NULL */
  void *half_shared; /* half when it is node-shared, else NULL (half is malloc'd) */
  em_tensor *half_t; /* on a GPU: the tensor that owns half (em__alloc_on), else NULL */
  em_tensor **views; /* by parameter index: its .grad, a view into grads (owned reference) */
} layout;

typedef struct {
  ddp_model *d;
  int index; /* parameter index (registration order) */
  int bucket;
} param_slot;

struct ddp_model {
  em_module *model;
  coll_comm *comm;
  em_device dev; /* where every parameter, gradient and bucket lives: the CPU or cuda:N */
  ddp_options opts;
  int n_params;
  em_tensor **params; /* borrowed (the module owns them) */
  const char **names; /* borrowed */
  int64_t cap;        /* bucket size cap in floats */
  layout lay;
  param_slot *slots;
  /* bucket order from observation (see "order" below) */
  bool order_settled; /* the order will not change again */
  int *seen;          /* this synced pass: parameter indices in grad-ready order */
  int n_seen;
  int64_t *proposal; /* rank 0's order, broadcast */
  uint8_t *mark;     /* scratch: one flag per parameter */
  int *hook_ids;
  int observer;
  /* pass state */
  bool no_sync, in_sync_pass;
  int next_launch;
  uint8_t *used;     /* per param: used by a backward since the last synced pass */
  uint8_t *used_all; /* all-reduced (max) copy */
  coll_req *used_req;
  float *saved; /* gradients of parameters this rank did not use (restore if no rank did); on
                   dev: malloc'd on the CPU, else the memory of saved_t */
  em_tensor *saved_t;
  bool sync_single; /* reduce in a world of one as well (ddp__sync_single) */
  em_status launch_error;
  char launch_msg[512];
  /* timing */
  double t_begin, t_last_end, t_wait0;
  ddp_stats stats;
  em_timeline *tl;
};

/* Small collectives on host data (ddp.c): an allreduce of n int64 in place; whether v is the same
 * on every rank (max == min). */
em_status ddp__run_i64(coll_comm *c, int64_t *v, int n, coll_redop op);
em_status ddp__agree(coll_comm *c, int64_t v, bool *same);
/* dst[0, n) = src[0, n), floats in d->dev's memory (memcpy on the CPU, the table's copy on a GPU,
 * ordered with the compute stream). */
em_status ddp__copy_floats(const ddp_model *d, float *dst, const float *src, int64_t n);
/* Run the whole reduction (buckets, all-reduce, compression, hooks) also in a world of one, where
 * the reducer otherwise does nothing: a test of the reducer on one GPU, where NCCL cannot hold
 * two ranks. The average of one rank is its own gradient (compression rounds it). Not
 * collective; set it before the backward pass. */
void ddp__sync_single(ddp_model *d, bool on);
/* A synced pass over the gradients every parameter's .grad holds now, as if a backward had just
 * made each of them ready (all buckets launch at once): the reducer without a backward pass, for
 * tests whose device has no op kernels yet. Collective; not during a backward. */
em_status ddp__reduce_now(ddp_model *d);

/* The plan (plan.c). ddp__plan_buckets: the first plan and its memory (collective).
 * ddp__layout_free: release a layout (collective: node-shared memory goes back now; else at
 * ddp_finalize). ddp__bind_grads: every .grad to its view in d->lay, keeping values.
 * ddp__point_slots: every parameter's bucket index. ddp__rebuild_order: at the end of a synced
 * pass until the order is settled (collective). */
em_status ddp__plan_buckets(ddp_model *d);
void ddp__layout_free(const ddp_model *d, layout *l, bool collective);
em_status ddp__bind_grads(ddp_model *d);
void ddp__point_slots(ddp_model *d);
em_status ddp__rebuild_order(ddp_model *d, bool pass_ok);

#endif
