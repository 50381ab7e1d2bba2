/* cpu/elementwise.c: the CPU's elementwise kernels. Binary ops with broadcasting and the affine
 * map are plain loops (compiled for AVX-512/AVX2, picked at load time); unary ops run on oneDNN
 * eltwise primitives:
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
 * The data is contiguous and seen by oneDNN as one 1-D f32 array of numel elements, so a primitive
 * is cached per (algorithm, alpha, beta, numel) and shared by every shape with that many elements.
 * The backward primitive is built with the forward one as its hint. */
#include "cpu/cpu.h"
#include "cpu/dnnl.h"

#include <stdio.h>

/* ---- binary ops with broadcasting ------------------------------------------------------------ */
/* Strides of t seen in an n-dim broadcast output: 0 on broadcast dims. */
static void broadcast_strides(const em_tensor *t, int n, int64_t *st) {
  for (int d = 0; d < n; d++) {
    int dt = d - (n - t->ndim);
    st[d] = (dt < 0 || t->shape[dt] == 1) ? 0 : t->strides[dt];
  }
}

static inline float apply(em_binop op, float x, float y) {
  switch (op) {
  case EM_BINARY_ADD: return x + y;
  case EM_BINARY_SUB: return x - y;
  case EM_BINARY_MUL: return x * y;
  default: return x / y;
  }
}

EM_SIMD_CLONES static void binary_kernel(em_binop op, const em_tensor *a, const em_tensor *b,
                                         em_tensor *out) {
  const float *pa = em_data_f32(a), *pb = em_data_f32(b);
  float *po = em_data_f32(out);
  int64_t n = em_numel(out);
  if (em__same_shape(a, b) && em_is_contiguous(a) && em_is_contiguous(b)) {
    switch (op) {
    case EM_BINARY_ADD:
      for (int64_t i = 0; i < n; i++) po[i] = pa[i] + pb[i];
      break;
    case EM_BINARY_SUB:
      for (int64_t i = 0; i < n; i++) po[i] = pa[i] - pb[i];
      break;
    case EM_BINARY_MUL:
      for (int64_t i = 0; i < n; i++) po[i] = pa[i] * pb[i];
      break;
    case EM_BINARY_DIV:
      for (int64_t i = 0; i < n; i++) po[i] = pa[i] / pb[i];
      break;
    }
    return;
  }
  int nd = out->ndim;
  int64_t sa[EM_MAX_DIMS], sb[EM_MAX_DIMS];
  broadcast_strides(a, nd, sa);
  broadcast_strides(b, nd, sb);
  if (nd == 0) {
    po[0] = apply(op, pa[0], pb[0]);
    return;
  }
  /* Innermost dim as a tight loop, the outer dims with an index counter. */
  int64_t inner = out->shape[nd - 1], ia = sa[nd - 1], ib = sb[nd - 1];
  int64_t idx[EM_MAX_DIMS] = {0}, oa = 0, ob = 0;
  for (int64_t k = 0; k < n; k += inner) {
    float *o = po + k;
    const float *xa = pa + oa, *xb = pb + ob;
    for (int64_t i = 0; i < inner; i++) o[i] = apply(op, xa[i * ia], xb[i * ib]);
    for (int d = nd - 2; d >= 0; d--) {
      oa += sa[d];
      ob += sb[d];
      if (++idx[d] < out->shape[d]) break;
      oa -= sa[d] * out->shape[d];
      ob -= sb[d] * out->shape[d];
      idx[d] = 0;
    }
  }
}

em_status em__cpu_binary(em_binop op, const em_tensor *a, const em_tensor *b, em_tensor *out) {
  binary_kernel(op, a, b, out);
  return EM_OK;
}

em_status em__cpu_affine(const em_tensor *x, float mul, float add, em_tensor *y) {
  const float *px = em_data_f32(x);
  float *py = em_data_f32(y);
  for (int64_t i = 0, n = em_numel(y); i < n; i++) py[i] = px[i] * mul + add;
  return EM_OK;
}

/* ---- unary ops on oneDNN eltwise ------------------------------------------------------------- */
static const struct {
  const char *name;
  dnnl_alg_kind_t alg;
} elt[EM_UNARY_COUNT] = {
    [EM_UNARY_EXP] = {"exp", dnnl_eltwise_exp_use_dst_for_bwd},
    [EM_UNARY_LOG] = {"log", dnnl_eltwise_log},
    [EM_UNARY_SQRT] = {"sqrt", dnnl_eltwise_sqrt_use_dst_for_bwd},
    [EM_UNARY_POW] = {"pow", dnnl_eltwise_pow},
    [EM_UNARY_RELU] = {"relu", dnnl_eltwise_relu_use_dst_for_bwd},
    [EM_UNARY_GELU] = {"gelu", dnnl_eltwise_gelu_erf},
    [EM_UNARY_TANH] = {"tanh", dnnl_eltwise_tanh_use_dst_for_bwd},
    [EM_UNARY_SIGMOID] = {"sigmoid", dnnl_eltwise_logistic_use_dst_for_bwd},
    [EM_UNARY_CLAMP] = {"clamp", dnnl_eltwise_clip},
};

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

em_status em__cpu_unary(em_unop op, float alpha, float beta, const em_tensor *x, em_tensor *y) {
  int64_t numel = em_numel(y);
  if (numel == 0) return EM_OK;
  const em_dnnl_prim *p = elt_prim(elt[op].alg, alpha, beta, numel, false);
  if (!p) return em_last_status();
  dnnl_memory_desc_t md = em__dnnl_md(1, &numel);
  em_dnnl_arg args[2] = {{DNNL_ARG_SRC, &md, em_data(x)}, {DNNL_ARG_DST, &md, em_data(y)}};
  return em__dnnl_exec(elt[op].name, p, 2, args);
}

em_status em__cpu_unary_backward(em_unop op, float alpha, float beta, const em_tensor *saved,
                                 const em_tensor *gy, em_tensor *gx) {
  int64_t numel = em_numel(gx);
  if (numel == 0) return EM_OK;
  const em_dnnl_prim *p = elt_prim(elt[op].alg, alpha, beta, numel, true);
  if (!p) return em_last_status();
  dnnl_memory_desc_t md = em__dnnl_md(1, &numel);
  em_dnnl_arg args[3] = {
      {em__unary_uses_output(op) ? DNNL_ARG_DST : DNNL_ARG_SRC, &md, em_data(saved)},
      {DNNL_ARG_DIFF_DST, &md, em_data(gy)},
      {DNNL_ARG_DIFF_SRC, &md, em_data(gx)},
  };
  return em__dnnl_exec(elt[op].name, p, 3, args);
}

/* ---- where ----------------------------------------------------------------------------------- */
em_status em__cpu_nonzero_mask(const em_tensor *c, em_tensor *m) {
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
  return EM_OK;
}

em_status em__cpu_where(const em_tensor *m, const em_tensor *a, const em_tensor *b,
                        em_tensor *out) {
  int nd = out->ndim;
  int64_t n = em_numel(out);
  const uint8_t *pm = em_data(m);
  const float *pa = em_data_f32(a), *pb = em_data_f32(b);
  float *po = em_data_f32(out);
  if (nd == 0 || n == 0) {
    if (n) po[0] = pm[0] ? pa[0] : pb[0];
    return EM_OK;
  }
  if (em__same_shape(m, out) && em__same_shape(a, out) && em__same_shape(b, out) &&
      em_is_contiguous(a) && em_is_contiguous(b)) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) po[i] = pm[i] ? pa[i] : pb[i];
    return EM_OK;
  }
  int64_t sm[EM_MAX_DIMS], sa[EM_MAX_DIMS], sb[EM_MAX_DIMS];
  broadcast_strides(m, nd, sm);
  broadcast_strides(a, nd, sa);
  broadcast_strides(b, nd, sb);
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
  return EM_OK;
}
