/* ops_softmax.c: softmax and log_softmax over any dim, on oneDNN softmax_v2 primitives
 * (algorithms softmax_accurate and softmax_log), forward and backward.
 *
 * The contiguous input x (d0, ..., dim, ..., dn) is seen as a 3-D array
 *
 *   (O, R, K)    O = product of the dims before dim, R = size of dim, K = product after
 *
 * (2-D (O, R) when K == 1, oneDNN's dense fast path), with the axis on R. A primitive is cached
 * per (algorithm, O, R, K): every shape that collapses to the same triple shares it. Backward
 * reads the saved output y: dx = y * (dy - sum(dy * y)) for softmax, dy - exp(y) * sum(dy) for
 * log_softmax. */
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

/* Fill c for a tensor of this shape reduced over dim d. */
static void sm_geometry(sm_ctx *c, const em_tensor *t, int d) {
  int64_t O = 1, R = 1, K = 1;
  for (int k = 0; k < t->ndim; k++) {
    if (k < d)
      O *= t->shape[k];
    else if (k == d)
      R = t->shape[k];
    else
      K *= t->shape[k];
  }
  c->dims[0] = O;
  c->dims[1] = R;
  c->dims[2] = K;
  c->ndim = K == 1 ? 2 : 3;
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

static em_status softmax_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[0], *y = n->saved[0];
  em_tensor *g = em_empty(EM_F32, a->ndim, a->shape);
  if (!g) return em_last_status();
  if (em_numel(g) > 0) {
    sm_ctx c = {.alg = (dnnl_alg_kind_t)n->i[0]};
    sm_geometry(&c, a, (int)n->i[1]);
    const em_dnnl_prim *p = sm_prim(&c, true);
    if (!p) return em_last_status();
    dnnl_memory_desc_t md = em__dnnl_md(c.ndim, c.dims);
    em_dnnl_arg args[3] = {
        {DNNL_ARG_DST, &md, em_data(y)},
        {DNNL_ARG_DIFF_DST, &md, em_data(gout)},
        {DNNL_ARG_DIFF_SRC, &md, em_data(g)},
    };
    em_status st = em__dnnl_exec(n->op, p, 3, args);
    if (st != EM_OK) return st;
  }
  gin[0] = g;
  return EM_OK;
}

static em_tensor *softmax_impl(const char *op, dnnl_alg_kind_t alg, em_tensor *a, int dim) {
  EM_CHECK_INPUT(a, op);
  if (!em__check_f32(op, a, "input") || !em__check_cpu(op, a)) return NULL;
  int nd = a->ndim ? a->ndim : 1; /* a 0-d tensor accepts dim 0 / -1, as PyTorch */
  int d = dim < 0 ? dim + nd : dim;
  if (d < 0 || d >= nd) {
    char s[EM_SHAPE_STR_LEN];
    em_set_error(EM_ERR_INVALID, "%s: dim %d out of range for input %s (%d dimensions)", op, dim,
                 em_shape_str(a, s, sizeof s), a->ndim);
    return NULL;
  }
  em_tensor *x = em__contig(a);
  em_tensor *y = x ? em_empty(EM_F32, a->ndim, a->shape) : NULL;
  if (!y) return NULL;
  if (em_numel(y) > 0) {
    sm_ctx c = {.alg = alg};
    sm_geometry(&c, a, d);
    const em_dnnl_prim *p = sm_prim(&c, false);
    if (!p) return NULL;
    dnnl_memory_desc_t md = em__dnnl_md(c.ndim, c.dims);
    em_dnnl_arg args[2] = {{DNNL_ARG_SRC, &md, em_data(x)}, {DNNL_ARG_DST, &md, em_data(y)}};
    if (em__dnnl_exec(op, p, 2, args) != EM_OK) return NULL;
  }
  em_node *n = em__record(y, op, softmax_backward, 1, &a);
  if (n) {
    n->i[0] = alg;
    n->i[1] = d;
    em__save(n, y);
  }
  return y;
}

/* Runs in a private scope so that a contiguous copy of a does not outlive the op. */
static em_tensor *softmax(const char *op, dnnl_alg_kind_t alg, em_tensor *a, int dim) {
  em_scope s = em_scope_begin();
  return em__op_end(s, softmax_impl(op, alg, a, dim));
}

em_tensor *em_softmax(em_tensor *a, int dim) {
  return softmax("softmax", dnnl_softmax_accurate, a, dim);
}

em_tensor *em_log_softmax(em_tensor *a, int dim) {
  return softmax("log_softmax", dnnl_softmax_log, a, dim);
}
