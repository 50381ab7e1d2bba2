/* ops_unary.c: elementwise unary ops on oneDNN eltwise primitives, and em_where.
 *
 *   op       oneDNN algorithm (alpha, beta)          backward reads
 *   exp      exp_use_dst_for_bwd                     y
 *   log      log                                     x
 *   sqrt     sqrt_use_dst_for_bwd                    y
 *   pow      pow (1, exponent): 1 * x^exponent       x
 *   relu     relu_use_dst_for_bwd (0)                y
 *   gelu     gelu_erf: x * Phi(x), exact erf form    x
 *   tanh     tanh_use_dst_for_bwd                    y
 *   sigmoid  logistic_use_dst_for_bwd                y
 *   clamp    clip (lo, hi)                           x
 *
 * Any input shape x (...) -> y (...): the data is contiguous (em__contig) and seen by oneDNN as
 * one 1-D f32 array of numel elements, so a primitive is cached per (algorithm, alpha, beta,
 * numel) and shared by every shape with that many elements. The backward primitive is built
 * with the forward one as its hint and takes the saved x or y (the "backward reads" column).
 *
 * em_where(cond, a, b) is a plain C loop with NumPy broadcasting of all three operands. */
#include "em_internal.h"

#include <stdio.h>
#include <string.h>

/* ---- oneDNN eltwise ------------------------------------------------------------------------ */
typedef struct {
  const char *name;
  dnnl_alg_kind_t alg;
  bool use_dst; /* backward takes y instead of x */
} elt_kind;

typedef struct {
  dnnl_alg_kind_t alg;
  float alpha, beta;
  int64_t n;
  const_dnnl_primitive_desc_t hint; /* forward pd, for backward builds */
} elt_ctx;

static dnnl_status_t build_fwd(void *ctx, dnnl_primitive_desc_t *pd) {
  const elt_ctx *c = ctx;
  dnnl_memory_desc_t md = em__dnnl_md(1, &c->n);
  dnnl_eltwise_desc_t d;
  dnnl_status_t st =
      dnnl_eltwise_forward_desc_init(&d, dnnl_forward_training, c->alg, &md, c->alpha, c->beta);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), NULL);
}

static dnnl_status_t build_bwd(void *ctx, dnnl_primitive_desc_t *pd) {
  const elt_ctx *c = ctx;
  dnnl_memory_desc_t md = em__dnnl_md(1, &c->n);
  dnnl_eltwise_desc_t d;
  dnnl_status_t st = dnnl_eltwise_backward_desc_init(&d, c->alg, &md, &md, c->alpha, c->beta);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), c->hint);
}

/* Cached forward (bwd false) or backward primitive for this algorithm and size. */
static const em_dnnl_prim *elt_prim(dnnl_alg_kind_t alg, float alpha, float beta, int64_t n,
                                    bool bwd) {
  char key[128];
  elt_ctx c = {alg, alpha, beta, n, NULL};
  const char *fmt = "eltwise %s alg=%d a=%a b=%a n=%lld";
  snprintf(key, sizeof key, fmt, "fwd", (int)alg, (double)alpha, (double)beta, (long long)n);
  const em_dnnl_prim *f = em__dnnl_get(key, build_fwd, &c);
  if (!f || !bwd) return f;
  /* The hint is fetched before the backward lookup: the cache calls build under its lock. */
  c.hint = f->pd;
  snprintf(key, sizeof key, fmt, "bwd", (int)alg, (double)alpha, (double)beta, (long long)n);
  return em__dnnl_get(key, build_bwd, &c);
}

static em_status unary_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[0];
  em_tensor *g = em_empty(EM_F32, a->ndim, a->shape);
  if (!g) return em_last_status();
  int64_t numel = em_numel(g);
  if (numel > 0) {
    const em_dnnl_prim *p =
        elt_prim((dnnl_alg_kind_t)n->i[0], (float)n->f[0], (float)n->f[1], numel, true);
    if (!p) return em_last_status();
    dnnl_memory_desc_t md = em__dnnl_md(1, &numel);
    em_dnnl_arg args[3] = {
        {n->i[1] ? DNNL_ARG_DST : DNNL_ARG_SRC, &md, em_data(n->saved[0])},
        {DNNL_ARG_DIFF_DST, &md, em_data(gout)},
        {DNNL_ARG_DIFF_SRC, &md, em_data(g)},
    };
    em_status st = em__dnnl_exec(n->op, p, 3, args);
    if (st != EM_OK) return st;
  }
  gin[0] = g;
  return EM_OK;
}

static em_tensor *unary_impl(const elt_kind *k, em_tensor *a, float alpha, float beta) {
  EM_CHECK_INPUT(a, k->name);
  if (!em__check_f32(k->name, a, "input") || !em__check_cpu(k->name, a)) return NULL;
  em_tensor *x = em__contig(a);
  em_tensor *y = x ? em_empty(EM_F32, a->ndim, a->shape) : NULL;
  if (!y) return NULL;
  int64_t numel = em_numel(y);
  if (numel > 0) {
    const em_dnnl_prim *p = elt_prim(k->alg, alpha, beta, numel, false);
    if (!p) return NULL;
    dnnl_memory_desc_t md = em__dnnl_md(1, &numel);
    em_dnnl_arg args[2] = {{DNNL_ARG_SRC, &md, em_data(x)}, {DNNL_ARG_DST, &md, em_data(y)}};
    if (em__dnnl_exec(k->name, p, 2, args) != EM_OK) return NULL;
  }
  em_node *n = em__record(y, k->name, unary_backward, 1, &a);
  if (n) {
    n->i[0] = k->alg;
    n->i[1] = k->use_dst;
    n->f[0] = alpha;
    n->f[1] = beta;
    em__save(n, k->use_dst ? y : x);
  }
  return y;
}

/* Runs in a private scope so that the contiguous copy of a does not outlive the op. */
static em_tensor *unary(const elt_kind *k, em_tensor *a, float alpha, float beta) {
  em_scope s = em_scope_begin();
  return em__op_end(s, unary_impl(k, a, alpha, beta));
}

static const elt_kind K_EXP = {"exp", dnnl_eltwise_exp_use_dst_for_bwd, true};
static const elt_kind K_LOG = {"log", dnnl_eltwise_log, false};
static const elt_kind K_SQRT = {"sqrt", dnnl_eltwise_sqrt_use_dst_for_bwd, true};
static const elt_kind K_POW = {"pow", dnnl_eltwise_pow, false};
static const elt_kind K_RELU = {"relu", dnnl_eltwise_relu_use_dst_for_bwd, true};
static const elt_kind K_GELU = {"gelu", dnnl_eltwise_gelu_erf, false};
static const elt_kind K_TANH = {"tanh", dnnl_eltwise_tanh_use_dst_for_bwd, true};
static const elt_kind K_SIGMOID = {"sigmoid", dnnl_eltwise_logistic_use_dst_for_bwd, true};
static const elt_kind K_CLAMP = {"clamp", dnnl_eltwise_clip, false};

em_tensor *em_exp(em_tensor *a) { return unary(&K_EXP, a, 0, 0); }
em_tensor *em_log(em_tensor *a) { return unary(&K_LOG, a, 0, 0); }
em_tensor *em_sqrt(em_tensor *a) { return unary(&K_SQRT, a, 0, 0); }
em_tensor *em_pow(em_tensor *a, float exponent) { return unary(&K_POW, a, 1.0f, exponent); }
em_tensor *em_relu(em_tensor *a) { return unary(&K_RELU, a, 0, 0); }
em_tensor *em_gelu(em_tensor *a) { return unary(&K_GELU, a, 0, 0); }
em_tensor *em_tanh(em_tensor *a) { return unary(&K_TANH, a, 0, 0); }
em_tensor *em_sigmoid(em_tensor *a) { return unary(&K_SIGMOID, a, 0, 0); }
/* As torch.clamp: min(max(x, lo), hi), so lo > hi gives hi everywhere. The gradient passes
 * where lo < x <= hi (oneDNN's clip rule; PyTorch also passes it at x == lo). */
em_tensor *em_clamp(em_tensor *a, float lo, float hi) { return unary(&K_CLAMP, a, lo, hi); }

/* ---- where -------------------------------------------------------------------------------- */

/* Broadcast shape of the n tensors; false (error naming cond, a and b) if incompatible. */
static bool where_shape(em_tensor *const *t, int *ndim, int64_t *shape) {
  int n = 0;
  for (int k = 0; k < 3; k++)
    if (t[k]->ndim > n) n = t[k]->ndim;
  for (int d = 0; d < n; d++) {
    int64_t s = 1;
    for (int k = 0; k < 3; k++) {
      int dk = d - (n - t[k]->ndim);
      int64_t sk = dk >= 0 ? t[k]->shape[dk] : 1;
      if (sk == 1) continue;
      if (s != 1 && s != sk) {
        char c[EM_SHAPE_STR_LEN], x[EM_SHAPE_STR_LEN], y[EM_SHAPE_STR_LEN];
        em_set_error(EM_ERR_INVALID,
                     "where: shapes cond %s, a %s and b %s cannot be broadcast (dimension %d)",
                     em_shape_str(t[0], c, sizeof c), em_shape_str(t[1], x, sizeof x),
                     em_shape_str(t[2], y, sizeof y), d);
        return false;
      }
      s = sk;
    }
    shape[d] = s;
  }
  *ndim = n;
  return true;
}

/* Strides of t seen in an n-dim broadcast output: 0 on broadcast dims. */
static void bcast_strides(const em_tensor *t, int n, int64_t *st) {
  for (int d = 0; d < n; d++) {
    int dt = d - (n - t->ndim);
    st[d] = (dt < 0 || t->shape[dt] == 1) ? 0 : t->strides[dt];
  }
}

/* cond of any dtype -> contiguous u8 0/1 with cond's shape. */
static em_tensor *cond_mask(em_tensor *cond) {
  if (cond->dtype == EM_U8 && em_is_contiguous(cond)) return cond;
  em_tensor *c = em__contig(cond);
  em_tensor *m = c ? em_empty(EM_U8, cond->ndim, cond->shape) : NULL;
  if (!m) return NULL;
  uint8_t *pm = em_data(m);
  int64_t n = em_numel(m);
  const void *p = em_data(c);
  switch (c->dtype) {
  case EM_F32:
    for (int64_t i = 0; i < n; i++) pm[i] = ((const float *)p)[i] != 0;
    break;
  case EM_I64:
    for (int64_t i = 0; i < n; i++) pm[i] = ((const int64_t *)p)[i] != 0;
    break;
  case EM_I32:
    for (int64_t i = 0; i < n; i++) pm[i] = ((const int32_t *)p)[i] != 0;
    break;
  case EM_U8:
    for (int64_t i = 0; i < n; i++) pm[i] = ((const uint8_t *)p)[i] != 0;
    break;
  default: {
    const uint16_t *h = p; /* bf16/f16: nonzero unless +0 or -0 */
    for (int64_t i = 0; i < n; i++) pm[i] = (h[i] & 0x7fff) != 0;
  }
  }
  return m;
}

static void where_kernel(const em_tensor *m, const em_tensor *a, const em_tensor *b,
                         em_tensor *out) {
  int nd = out->ndim;
  int64_t n = em_numel(out);
  const uint8_t *pm = em_data(m);
  const float *pa = em_data_f32(a), *pb = em_data_f32(b);
  float *po = em_data_f32(out);
  if (nd == 0 || n == 0) {
    if (n) po[0] = pm[0] ? pa[0] : pb[0];
    return;
  }
  if (em__same_shape(m, out) && em__same_shape(a, out) && em__same_shape(b, out) &&
      em_is_contiguous(a) && em_is_contiguous(b)) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) po[i] = pm[i] ? pa[i] : pb[i];
    return;
  }
  int64_t sm[EM_MAX_DIMS], sa[EM_MAX_DIMS], sb[EM_MAX_DIMS];
  bcast_strides(m, nd, sm);
  bcast_strides(a, nd, sa);
  bcast_strides(b, nd, sb);
  int64_t inner = out->shape[nd - 1], im = sm[nd - 1], ia = sa[nd - 1], ib = sb[nd - 1];
  int64_t idx[EM_MAX_DIMS] = {0}, om = 0, oa = 0, ob = 0;
  for (int64_t k = 0; k < n; k += inner) {
    float *o = po + k;
    const uint8_t *xm = pm + om;
    const float *xa = pa + oa, *xb = pb + ob;
    for (int64_t i = 0; i < inner; i++) o[i] = xm[i * im] ? xa[i * ia] : xb[i * ib];
    for (int d = nd - 2; d >= 0; d--) {
      om += sm[d];
      oa += sa[d];
      ob += sb[d];
      if (++idx[d] < out->shape[d]) break;
      om -= sm[d] * out->shape[d];
      oa -= sa[d] * out->shape[d];
      ob -= sb[d] * out->shape[d];
      idx[d] = 0;
    }
  }
}

static em_status where_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[1], *b = n->inputs[2], *m = n->saved[0];
  em_tensor *zero = em_scalar(0.0f);
  if (a->requires_grad) {
    em_tensor *ga = em_where(m, gout, zero);
    gin[1] = ga ? em__sum_to(ga, a->ndim, a->shape) : NULL;
    if (!gin[1]) return em_last_status();
  }
  if (b->requires_grad) {
    em_tensor *gb = em_where(m, zero, gout);
    gin[2] = gb ? em__sum_to(gb, b->ndim, b->shape) : NULL;
    if (!gin[2]) return em_last_status();
  }
  return EM_OK;
}

static em_tensor *where_impl(em_tensor *cond, em_tensor *a, em_tensor *b) {
  EM_CHECK_INPUT(cond, "where");
  EM_CHECK_INPUT(a, "where");
  EM_CHECK_INPUT(b, "where");
  if (!em__check_f32("where", a, "a") || !em__check_f32("where", b, "b")) return NULL;
  if (!em__check_cpu("where", cond) || !em__check_cpu("where", a) || !em__check_cpu("where", b))
    return NULL;
  em_tensor *ts[3] = {cond, a, b};
  int nd;
  int64_t shape[EM_MAX_DIMS];
  if (!where_shape(ts, &nd, shape)) return NULL;
  em_tensor *m = cond_mask(cond);
  em_tensor *out = m ? em_empty(EM_F32, nd, shape) : NULL;
  if (!out) return NULL;
  where_kernel(m, a, b, out);
  em_node *n = em__record(out, "where", where_backward, 3, ts);
  if (n) em__save(n, m);
  return out;
}

em_tensor *em_where(em_tensor *cond, em_tensor *a, em_tensor *b) {
  em_scope s = em_scope_begin(); /* the u8 mask and copies are op-private */
  return em__op_end(s, where_impl(cond, a, b));
}
