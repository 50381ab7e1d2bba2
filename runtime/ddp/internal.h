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
  em_tensor *grads;  /* flat f32 gradient buffer (owned) */
  void *shared;      /* grads' memory when it is node-shared (coll_alloc_shared), else NULL */
  uint16_t *half;    /* compression: the 16-bit buffer, bucket k's at buckets[k].off, or NULL */
  void *half_shared; /* half when it is node-shared, else NULL (half is malloc'd) */
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
  float *saved; /* gradients of parameters this rank did not use (restore if no rank did) */
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
