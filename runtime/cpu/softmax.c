/* cpu/softmax.c: the CPU's softmax and log_softmax kernels, on oneDNN softmax_v2 primitives
 * (algorithms softmax_accurate and softmax_log), forward and backward.
 *
 * The contiguous x (d0, ..., dim, ..., dn) is seen as a 3-D array
 *
 *   (O, R, K)    O = product of the dims before dim, R = size of dim, K = product after
 *
 * (2-D (O, R) when K == 1, oneDNN's dense fast path), with the axis on R. A primitive is cached
 * per (algorithm, O, R, K): every shape that collapses to the same triple shares it. Backward
 * reads the saved output y: dx = y * (dy - sum(dy * y)) for softmax, dy - exp(y) * sum(dy) for
 * log_softmax. */
#include "cpu/cpu.h"
#include "cpu/dnnl.h"

#include <stdio.h>

typedef struct {
  dnnl_alg_kind_t alg;
  int ndim;
  int64_t dims[3];
  const_dnnl_primitive_desc_t hint; /* forward pd, for backward builds */
} sm_ctx;

static dnnl_status_t build_fwd(void *ctx, dnnl_primitive_desc_t *pd) {
  const sm_ctx *c = ctx;
  dnnl_memory_desc_t md = em__dnnl_md(c->ndim, c->dims);
  dnnl_softmax_v2_desc_t d;
  dnnl_status_t st =
      dnnl_softmax_v2_forward_desc_init(&d, dnnl_forward_training, c->alg, &md, &md, 1);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), NULL);
}

static dnnl_status_t build_bwd(void *ctx, dnnl_primitive_desc_t *pd) {
  const sm_ctx *c = ctx;
  dnnl_memory_desc_t md = em__dnnl_md(c->ndim, c->dims);
  dnnl_softmax_v2_desc_t d;
  dnnl_status_t st = dnnl_softmax_v2_backward_desc_init(&d, c->alg, &md, &md, &md, 1);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), c->hint);
}

/* The (O, R, K) view of a tensor of this shape reduced over dim d, for algorithm log or not. */
static sm_ctx sm_geometry(bool log, const em_tensor *t, int d) {
  int64_t O = 1, R = 1, K = 1;
  for (int k = 0; k < t->ndim; k++) {
    if (k < d)
      O *= t->shape[k];
    else if (k == d)
      R = t->shape[k];
    else
      K *= t->shape[k];
  }
  return (sm_ctx){.alg = log ? dnnl_softmax_log : dnnl_softmax_accurate,
                  .ndim = K == 1 ? 2 : 3,
                  .dims = {O, R, K}};
}

static const em_dnnl_prim *sm_prim(sm_ctx *c, bool bwd) {
  char key[128];
  const char *fmt = "softmax %s alg=%d %lldx%lldx%lld";
  snprintf(key, sizeof key, fmt, "fwd", (int)c->alg, (long long)c->dims[0], (long long)c->dims[1],
           (long long)c->dims[2]);
  c->hint = NULL;
  const em_dnnl_prim *f = em__dnnl_get(key, build_fwd, c);
  if (!f || !bwd) return f;
  c->hint = f->pd; /* fetched first: the cache calls build under its lock */
  snprintf(key, sizeof key, fmt, "bwd", (int)c->alg, (long long)c->dims[0], (long long)c->dims[1],
           (long long)c->dims[2]);
  return em__dnnl_get(key, build_bwd, c);
}

static const char *sm_name(bool log) { return log ? "log_softmax" : "softmax"; }

em_status em__cpu_softmax(bool log, const em_tensor *x, int dim, em_tensor *y) {
  if (em_numel(y) == 0) return EM_OK;
  sm_ctx c = sm_geometry(log, x, dim);
  const em_dnnl_prim *p = sm_prim(&c, false);
  if (!p) return em_last_status();
  dnnl_memory_desc_t md = em__dnnl_md(c.ndim, c.dims);
  em_dnnl_arg args[2] = {{DNNL_ARG_SRC, &md, em_data(x)}, {DNNL_ARG_DST, &md, em_data(y)}};
  return em__dnnl_exec(sm_name(log), p, 2, args);
}

em_status em__cpu_softmax_backward(bool log, const em_tensor *y, const em_tensor *dy, int dim,
                                   em_tensor *dx) {
  if (em_numel(dx) == 0) return EM_OK;
  sm_ctx c = sm_geometry(log, dx, dim);
  const em_dnnl_prim *p = sm_prim(&c, true);
  if (!p) return em_last_status();
  dnnl_memory_desc_t md = em__dnnl_md(c.ndim, c.dims);
  em_dnnl_arg args[3] = {
      {DNNL_ARG_DST, &md, em_data(y)},
      {DNNL_ARG_DIFF_DST, &md, em_data(dy)},
      {DNNL_ARG_DIFF_SRC, &md, em_data(dx)},
  };
  return em__dnnl_exec(sm_name(log), p, 3, args);
}
