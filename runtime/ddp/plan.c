/* ddp/plan.c: the bucket plan and the memory laid out by it (the flat gradient buffer, node-shared
 * where it can be, the compression buffer, every parameter's .grad view), the first plan, and its
 * rebuild in the order gradients became ready. The pass itself is in ddp.c. */
#include "core/hash.h"
#include "core/internal.h"
#include "ddp/internal.h"
#include "em_env.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buckets ------------------------------------------------------------------------------------
 */
/* The bucket size in MB: the option, else EMBER_DDP_BUCKET_MB, else 4. */
static em_status bucket_cap_mb(const ddp_options *o, double *mb) {
  if (o->bucket_cap_mb > 0) {
    *mb = o->bucket_cap_mb;
    return EM_OK;
  }
  return em_env_num("EMBER_DDP_BUCKET_MB", mb);
}

/* Releases what l holds. Node-shared gradient memory: its contents move to private memory first
 * (a .grad somebody still holds keeps its values); collective, the memory goes back to the
 * communicator now, else (ddp_free, which is not collective) at ddp_finalize. */
void ddp__layout_free(const ddp_model *d, layout *l, bool collective) {
  for (int i = 0; l->views && i < d->n_params; i++) em_release(l->views[i]);
  if (l->half_t)
    em_release(l->half_t);
  else if (!l->half_shared)
    free(l->half);
  else if (collective)
    coll_free_shared(d->comm, l->half_shared);
  if (l->shared && l->grads && em__storage_privatize(l->grads->storage) != EM_OK)
    l->shared = NULL; /* out of memory: leave the window mapped, the views keep pointing at it */
  if (l->shared && collective) coll_free_shared(d->comm, l->shared);
  em_release(l->grads);
  free(l->views);
  free(l->buckets);
  free(l->order);
  free(l->goff);
  *l = (layout){0};
}

/* Floats in the flat gradient buffer: every parameter padded, in any order. */
static int64_t grads_numel(const ddp_model *d) {
  int64_t total = 0;
  for (int i = 0; i < d->n_params; i++) total += em_arena_align(em_numel(d->params[i]));
  return total ? total : 1;
}

/* The memory a layout all-reduces: the zeroed flat gradient buffer and, with compression, one
 * 16-bit buffer of the same length (bucket k's at its offset). On a GPU both are device memory.
 * On the CPU, whichever of the two the buckets all-reduce in place (the gradients without
 * compression or hook, the 16-bit buffer with compression) is node-shared memory when the
 * communicator has it, so that each bucket reduces straight from every rank's copy instead of
 * staging it; the rest is ordinary memory. Collective: every rank makes the same allocations,
 * whatever fails locally (every rank's model is on the same kind of device: ddp_wrap checked). */
static em_status layout_buffers(const ddp_model *d, layout *l) {
  int64_t numel = grads_numel(d);
  bool compress = d->opts.compression != DDP_COMPRESS_NONE && !d->opts.hook;
  if (d->dev.kind != EM_CPU) { /* device memory: nothing node-shared, no collective here */
    l->grads = em__alloc_on(d->dev, EM_F32, 1, &numel, true);
    if (l->grads && compress) {
      em_dtype h = d->opts.compression == DDP_COMPRESS_BF16 ? EM_BF16 : EM_F16;
      if ((l->half_t = em__alloc_on(d->dev, h, 1, &numel, false)))
        l->half = em_data(l->half_t);
      else
        return em_last_status();
    }
    return l->grads ? EM_OK : em_last_status();
  }
  bool plain = d->opts.compression == DDP_COMPRESS_NONE && !d->opts.hook;
  void *p = plain ? coll_alloc_shared(d->comm, (size_t)numel * sizeof(float)) : NULL;
  l->grads = p ? em__tensor_over(p, EM_F32, 1, &numel) : NULL;
  if (l->grads)
    l->shared = p;
  else
    l->grads = em__alloc_noscope(EM_F32, 1, &numel, true);
  if (compress) {
    size_t bytes = (size_t)numel * sizeof(uint16_t);
    l->half = l->half_shared = coll_alloc_shared(d->comm, bytes);
    if (!l->half) l->half = malloc(bytes);
    if (!l->half) return em_set_error(EM_ERR_NOMEM, "out of memory for the compression buffer");
  }
  return l->grads ? EM_OK : em_last_status();
}

/* Lays the parameters out in `order` (all n_params indices, each once): buckets of whole
 * parameters, a new one whenever the next parameter would take the current one past d->cap; a
 * zeroed gradient buffer (layout_buffers: collective) and every parameter's view into it; the
 * compression buffers. On failure l holds what was acquired (layout_free releases it). */
static em_status layout_new(const ddp_model *d, const int *order, layout *l) {
  size_t n = (size_t)(d->n_params ? d->n_params : 1);
  *l = (layout){0};
  /* The buffer first: its size does not depend on the order, and every rank must reach the
   * collective allocation even if an allocation below fails. */
  em_status st = layout_buffers(d, l);
  if (st != EM_OK) return st;
  l->order = malloc(n * sizeof *l->order);
  l->goff = malloc(n * sizeof *l->goff);
  l->buckets = calloc(n, sizeof *l->buckets);
  l->views = calloc(n, sizeof *l->views);
  if (!l->order || !l->goff || !l->buckets || !l->views)
    return em_set_error(EM_ERR_NOMEM, "out of memory planning the buckets of %d parameters",
                        d->n_params);
  int64_t off = 0;
  bucket *b = NULL;
  for (int k = 0; k < d->n_params; k++) {
    int i = order[k];
    int64_t len = em_arena_align(em_numel(d->params[i]));
    if (!b || (b->len > 0 && b->len + len > d->cap)) {
      b = &l->buckets[l->n_buckets++];
      b->off = off;
      b->first = k;
    }
    l->order[k] = i;
    l->goff[i] = off;
    b->len += len;
    b->n++;
    off += len;
  }
  for (int i = 0; i < d->n_params; i++) {
    em_tensor *p = d->params[i];
    int64_t st[EM_MAX_DIMS];
    em__contig_strides(p->ndim, p->shape, st);
    em_scope s = em_scope_begin();
    l->views[i] = em_retain(em__view(l->grads, p->ndim, p->shape, st, l->goff[i]));
    em_scope_end(s);
    if (!l->views[i]) return em_last_status();
  }
  for (int k = 0; l->half && k < l->n_buckets; k++)
    l->buckets[k].half = l->half + l->buckets[k].off;
  return EM_OK;
}

/* What ranks compare: the number of buckets, each one's size and parameter count, the order. */
static int64_t layout_fingerprint(const layout *l, int n_params) {
  uint64_t h = em__fnv1a(EM__FNV_OFFSET, &l->n_buckets, sizeof l->n_buckets);
  for (int k = 0; k < l->n_buckets; k++) {
    h = em__fnv1a(h, &l->buckets[k].len, sizeof l->buckets[k].len);
    h = em__fnv1a(h, &l->buckets[k].n, sizeof l->buckets[k].n);
  }
  h = em__fnv1a(h, l->order, (size_t)n_params * sizeof *l->order);
  return (int64_t)(h >> 1);
}

/* The first plan: reverse registration order (the order a plain chain of layers produces its
 * gradients in). Collective: every rank reaches the plan's comparison, also a rank whose
 * EMBER_DDP_BUCKET_MB is bad or that ran out of memory (it offers -1, which no real plan's
 * fingerprint equals, and returns its own error; the others then see plans that differ). */
em_status ddp__plan_buckets(ddp_model *d) {
  double cap_mb = 0;
  em_status lst = bucket_cap_mb(&d->opts, &cap_mb);
  if (lst == EM_OK) {
    d->cap = (int64_t)(cap_mb * 1048576.0 / sizeof(float));
    int *rev = malloc((size_t)(d->n_params ? d->n_params : 1) * sizeof *rev);
    if (!rev) lst = em_set_error(EM_ERR_NOMEM, "out of memory");
    for (int k = 0; rev && k < d->n_params; k++) rev[k] = d->n_params - 1 - k;
    if (rev) lst = layout_new(d, rev, &d->lay);
    free(rev);
  }
  if (!d->lay.grads) { /* failed before the buffers: still make the collective allocations */
    layout none = {0};
    layout_buffers(d, &none);
    ddp__layout_free(d, &none, false); /* shared windows stay until finalize */
  }
  char why[512];
  snprintf(why, sizeof why, "%s", lst == EM_OK ? "" : em_last_error());
  bool same;
  em_status st =
      ddp__agree(d->comm, lst == EM_OK ? layout_fingerprint(&d->lay, d->n_params) : -1, &same);
  if (st == EM_OK && !same) {
    int64_t nb[2] = {d->lay.n_buckets, -(int64_t)d->lay.n_buckets};
    ddp__run_i64(d->comm, nb, 2, COLL_MAX);
    st = em_set_error(EM_ERR_INVALID,
                      "ddp_wrap: bucket plans differ across ranks (rank %d: %d buckets of at most "
                      "%.3g MB; bucket counts range %lld..%lld): set the same bucket_cap_mb "
                      "(EMBER_DDP_BUCKET_MB) on every rank",
                      coll_rank(d->comm), d->lay.n_buckets, cap_mb, (long long)-nb[1],
                      (long long)nb[0]);
  }
  if (st == EM_OK || lst == EM_OK) return st;
  return em_set_error(lst, "ddp_wrap: %s", why);
}

/* Point every parameter's .grad at its view in d->lay, keeping the values .grad holds now (the
 * caller's gradients at wrap time, the previous layout's at a rebuild). Local. */
em_status ddp__bind_grads(ddp_model *d) {
  for (int i = 0; i < d->n_params; i++) {
    em_tensor *p = d->params[i], *v = d->lay.views[i];
    if (p->grad && p->grad != v) {
      em_scope s = em_scope_begin();
      em_tensor *g = em__contig(p->grad);
      em_status e = g ? ddp__copy_floats(d, em_data_f32(v), em_data_f32(g), em_numel(p))
                      : em_last_status();
      em_scope_end(s);
      if (e != EM_OK) return e;
    }
    em_status e = em_set_grad(p, v);
    if (e != EM_OK) return e;
  }
  return EM_OK;
}

/* Which bucket each parameter's grad-ready hook counts down. */
void ddp__point_slots(ddp_model *d) {
  for (int k = 0; k < d->lay.n_buckets; k++)
    for (int j = 0; j < d->lay.buckets[k].n; j++) {
      int i = d->lay.order[d->lay.buckets[k].first + j];
      d->slots[i] = (param_slot){d, i, k};
    }
}

/* ---- bucket order from observation -------------------------------------------------------------
 * The first plan assumes gradients become ready in reverse registration order; a model that
 * registers its layers in another order than it applies them, or a linear layer (weight ready
 * before bias), breaks that, and a bucket then waits for a gradient that comes late. As PyTorch's
 * reducer does, the first synced pass notes the order the grad-ready hooks fire in; at its end,
 * once every bucket has completed, rank 0's order is broadcast and every rank lays its buckets out
 * by it (the fingerprint comparison still guards the plan), copies the gradients across and
 * re-points every .grad. Parameters whose hook did not fire on rank 0 (unused there) go last, in
 * reverse registration order. Once only: later passes may take other branches, and each rebuild
 * costs a copy of every gradient. */

/* Rank 0: its observed order, completed to a permutation of the parameters, in d->proposal. */
static void propose_order(ddp_model *d) {
  int k = 0;
  memset(d->mark, 0, (size_t)d->n_params);
  for (int j = 0; j < d->n_seen; j++)
    if (!d->mark[d->seen[j]]) {
      d->mark[d->seen[j]] = 1;
      d->proposal[k++] = d->seen[j];
    }
  for (int i = d->n_params - 1; i >= 0; i--)
    if (!d->mark[i]) d->proposal[k++] = i;
}

/* The proposal as parameter indices in order, if it is a permutation; else NULL. In d->seen. */
static int *proposed_order(ddp_model *d) {
  memset(d->mark, 0, (size_t)d->n_params);
  for (int k = 0; k < d->n_params; k++) {
    int64_t i = d->proposal[k];
    if (i < 0 || i >= d->n_params || d->mark[i]) return NULL;
    d->mark[i] = 1;
    d->seen[k] = (int)i;
  }
  return d->seen;
}

/* Collective: every rank calls it at the end of every synced pass until the order is settled.
 * pass_ok: this rank's pass went through; unless every rank's did, nothing changes (the next
 * synced pass observes again). Ranks decide alike, so the plans stay equal. */
em_status ddp__rebuild_order(ddp_model *d, bool pass_ok) {
  int64_t ok = pass_ok;
  em_status st = ddp__run_i64(d->comm, &ok, 1, COLL_MIN);
  if (st != EM_OK || !ok) return st;
  d->order_settled = true;
  if (coll_rank(d->comm) == 0) propose_order(d);
  coll_buf pb = coll_host_buf(d->proposal, d->n_params, EM_I64);
  if ((st = coll_run_broadcast(d->comm, pb, d->n_params, 0)) != EM_OK) return st;
  int *order = proposed_order(d); /* the same on every rank: so is every decision below */
  if (!order)
    return em_set_error(EM_ERR_COMM,
                        "ddp: rank 0's bucket order is not a permutation of %d parameters",
                        d->n_params);
  if (!memcmp(order, d->lay.order, (size_t)d->n_params * sizeof *order)) return EM_OK;
  layout l;
  em_status lst = layout_new(d, order, &l);
  char why[512];
  snprintf(why, sizeof why, "%s", lst == EM_OK ? "" : em_last_error());
  bool same;
  st = ddp__agree(d->comm, lst == EM_OK ? layout_fingerprint(&l, d->n_params) : -1, &same);
  if (st == EM_OK && !same)
    st = em_set_error(lst != EM_OK ? lst : EM_ERR_INVALID,
                      "ddp: the buckets rebuilt in gradient-ready order differ across ranks (rank "
                      "%d: %d buckets%s%s); the previous plan stays",
                      coll_rank(d->comm), l.n_buckets, lst != EM_OK ? ": " : "", why);
  if (st != EM_OK) {
    ddp__layout_free(d, &l, true);
    return st;
  }
  /* Commit: the new layout takes the gradients (bind_grads copies them from the old views). */
  assert(em_numel(l.grads) == em_numel(d->lay.grads)); /* so d->saved still fits */
  layout old = d->lay;
  d->lay = l;
  st = ddp__bind_grads(d);
  ddp__layout_free(d, &old, true);
  ddp__point_slots(d);
  d->stats.n_buckets = d->lay.n_buckets;
  d->stats.buckets_shared = d->lay.shared || d->lay.half_shared;
  return st;
}
