/* cpu/conv.c: the CPU's 2-D convolution kernels (forward, backward data, backward weights with the
 * bias gradient) on oneDNN's convolution primitives. The geometry comes from the front end
 * (ops/conv.c).
 *
 * Layouts. Tensors are plain nchw / oihw (grouped: goihw, the same bytes). The primitives are
 * created with "any" layouts, so oneDNN picks its blocked formats (nChw16c, OIhw16i16o) and its
 * direct JIT kernels; on plain nchw it would run im2col + gemm, 2-3x slower on the small CNN's
 * layers even counting the reorders. Each tensor is reordered only where the chosen layout
 * differs from the plain one:
 *
 *   forward:   x, w --reorder--> conv --> y blocked --reorder--> y   (blocked x, w kept)
 *   backward:  dy --reorder--> bwd data    --> dx blocked --reorder--> dx
 *                          \-> bwd weights --> dw blocked --reorder--> dw, db plain
 *
 * The blocked x and w are handed to the front end as the forward's xs and ws, which it saves for
 * the backward. oneDNN counts dilation from 0 (PyTorch's dilation minus 1). All primitives and
 * reorders are cached per geometry; the backward ones are built with the forward one as their
 * hint. */
#include "cpu/cpu.h"
#include "cpu/dnnl.h"

#include <stdio.h>
#include <string.h>

/* The user's (plain) memory descriptors and the spatial parameters in oneDNN's terms. */
typedef struct {
  dnnl_memory_desc_t src, wei, bias, dst;
  dnnl_dims_t strides, dil, pad;
} conv_mds;

static conv_mds conv_make_mds(const em_conv2d_geom *c) {
  conv_mds m;
  m.src = em__dnnl_md(4, (int64_t[]){c->N, c->C, c->H, c->W});
  m.dst = em__dnnl_md(4, (int64_t[]){c->N, c->O, c->OH, c->OW});
  if (c->groups == 1)
    m.wei = em__dnnl_md(4, (int64_t[]){c->O, c->C, c->KH, c->KW});
  else
    m.wei =
        em__dnnl_md(5, (int64_t[]){c->groups, c->O / c->groups, c->C / c->groups, c->KH, c->KW});
  m.bias = em__dnnl_md(1, (int64_t[]){c->O});
  for (int k = 0; k < 2; k++) {
    m.strides[k] = c->stride[k];
    m.dil[k] = c->dilation[k] - 1;
    m.pad[k] = c->padding[k];
  }
  return m;
}

/* Same dims, layout left to the primitive. */
static dnnl_memory_desc_t any_md(const dnnl_memory_desc_t *plain) {
  dnnl_memory_desc_t md;
  dnnl_memory_desc_init_by_tag(&md, plain->ndims, plain->dims, dnnl_f32, dnnl_format_tag_any);
  return md;
}

/* Base of the cache keys of one geometry's primitives ("<base> fwd", "<base> bwd_data", ...). */
#define CONV_KEY_LEN 512 /* 16 numbers of 20 digits fit: never truncated */
static void conv_key(char *buf, size_t n, const em_conv2d_geom *c) {
  snprintf(buf, n,
           "conv2d f32 x%lldx%lldx%lldx%lld w%lldx%lldx%lld s%lldx%lld p%lldx%lld d%lldx%lld "
           "g%lld%s",
           (long long)c->N, (long long)c->C, (long long)c->H, (long long)c->W, (long long)c->O,
           (long long)c->KH, (long long)c->KW, (long long)c->stride[0], (long long)c->stride[1],
           (long long)c->padding[0], (long long)c->padding[1], (long long)c->dilation[0],
           (long long)c->dilation[1], (long long)c->groups, c->bias ? " bias" : "");
}

typedef struct {
  conv_mds m;
  const_dnnl_primitive_desc_t hint;
  bool bias;
} conv_build_ctx;

static dnnl_status_t build_fwd(void *vctx, dnnl_primitive_desc_t *pd) {
  conv_build_ctx *x = vctx;
  dnnl_memory_desc_t src = any_md(&x->m.src), wei = any_md(&x->m.wei), dst = any_md(&x->m.dst);
  dnnl_convolution_desc_t d;
  dnnl_status_t st = dnnl_dilated_convolution_forward_desc_init(
      &d, dnnl_forward_training, dnnl_convolution_direct, &src, &wei, x->bias ? &x->m.bias : NULL,
      &dst, x->m.strides, x->m.dil, x->m.pad, x->m.pad);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), NULL);
}

static dnnl_status_t build_bwd_data(void *vctx, dnnl_primitive_desc_t *pd) {
  conv_build_ctx *x = vctx;
  dnnl_memory_desc_t src = any_md(&x->m.src), wei = any_md(&x->m.wei), dst = any_md(&x->m.dst);
  dnnl_convolution_desc_t d;
  dnnl_status_t st = dnnl_dilated_convolution_backward_data_desc_init(
      &d, dnnl_convolution_direct, &src, &wei, &dst, x->m.strides, x->m.dil, x->m.pad, x->m.pad);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), x->hint);
}

static dnnl_status_t build_bwd_weights(void *vctx, dnnl_primitive_desc_t *pd) {
  conv_build_ctx *x = vctx;
  dnnl_memory_desc_t src = any_md(&x->m.src), wei = any_md(&x->m.wei), dst = any_md(&x->m.dst);
  dnnl_convolution_desc_t d;
  dnnl_status_t st = dnnl_dilated_convolution_backward_weights_desc_init(
      &d, dnnl_convolution_direct, &src, &wei, x->bias ? &x->m.bias : NULL, &dst, x->m.strides,
      x->m.dil, x->m.pad, x->m.pad);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), x->hint);
}

/* ---- reorders between the plain and the primitive's layouts ---------------------------- */
typedef struct {
  const dnnl_memory_desc_t *from, *to;
} reorder_ctx;

static dnnl_status_t build_reorder(void *vctx, dnnl_primitive_desc_t *pd) {
  reorder_ctx *r = vctx;
  dnnl_engine_t e = em__dnnl_engine();
  return dnnl_reorder_primitive_desc_create(pd, r->from, e, r->to, e, NULL);
}

/* Copy src (layout from) to dst (layout to); the pair is cached as "<conv key> <tag>". */
static em_status reorder(const char *key, const char *tag, const dnnl_memory_desc_t *from,
                         void *src, const dnnl_memory_desc_t *to, void *dst) {
  char k[CONV_KEY_LEN + 32];
  snprintf(k, sizeof k, "%s reorder %.20s", key, tag);
  reorder_ctx r = {from, to};
  const em_dnnl_prim *p = em__dnnl_get(k, build_reorder, &r);
  if (!p) return em_last_status();
  em_dnnl_arg args[2] = {{DNNL_ARG_FROM, from, src}, {DNNL_ARG_TO, to, dst}};
  return em__dnnl_exec("conv2d", p, 2, args);
}

/* A new scope-owned buffer for memory of descriptor md. */
static em_tensor *buffer_for(const dnnl_memory_desc_t *md) {
  size_t bytes = dnnl_memory_desc_get_size(md);
  return em_empty(EM_F32, EM_SHAPE((int64_t)((bytes + 3) / 4)));
}

/* Data at ptr in layout have, seen in layout want: ptr itself if they agree, else a reordered
 * copy in a new buffer (*buf). NULL (error set) on failure. */
static void *as_layout(const char *key, const char *tag, const dnnl_memory_desc_t *have, void *ptr,
                       const dnnl_memory_desc_t *want, em_tensor **buf) {
  *buf = NULL;
  if (dnnl_memory_desc_equal(have, want)) return ptr;
  *buf = buffer_for(want);
  if (!*buf || reorder(key, tag, have, ptr, want, em_data(*buf)) != EM_OK) return NULL;
  return em_data(*buf);
}

/* Where a primitive writes an output of layout have that belongs at ptr in layout want: ptr
 * itself, or a new buffer (*buf) to reorder from afterwards (out_finish). */
static void *out_buffer(const dnnl_memory_desc_t *have, const dnnl_memory_desc_t *want, void *ptr,
                        em_tensor **buf) {
  *buf = NULL;
  if (dnnl_memory_desc_equal(have, want)) return ptr;
  *buf = buffer_for(have);
  return *buf ? em_data(*buf) : NULL;
}

static em_status out_finish(const char *key, const char *tag, const dnnl_memory_desc_t *have,
                            em_tensor *buf, const dnnl_memory_desc_t *want, void *ptr) {
  return buf ? reorder(key, tag, have, em_data(buf), want, ptr) : EM_OK;
}

/* The forward primitive; key gets the geometry's base key (CONV_KEY_LEN). */
static const em_dnnl_prim *conv_fwd_prim(const em_conv2d_geom *c, conv_build_ctx *x, char *key) {
  char k[CONV_KEY_LEN + 8];
  conv_key(key, CONV_KEY_LEN, c);
  snprintf(k, sizeof k, "%s fwd", key);
  *x = (conv_build_ctx){.m = conv_make_mds(c), .bias = c->bias};
  return em__dnnl_get(k, build_fwd, x);
}

#define QMD(p, what) em__dnnl_query_md(p, dnnl_query_##what##_md, 0)

em_status em__cpu_conv2d(const em_conv2d_geom *c, const em_tensor *x, const em_tensor *w,
                         const em_tensor *b, em_tensor *y, em_tensor **xs, em_tensor **ws) {
  *xs = *ws = NULL;
  if (c->N == 0 || c->O == 0) return EM_OK;
  if (c->C == 0) { /* empty sum: bias only */
    float *py = em_data_f32(y);
    for (int64_t i = 0, hw = c->OH * c->OW; i < c->N * c->O * hw; i++)
      py[i] = b ? em_data_f32(b)[i / hw % c->O] : 0.0f;
    return EM_OK;
  }
  char key[CONV_KEY_LEN];
  conv_build_ctx bx;
  const em_dnnl_prim *p = conv_fwd_prim(c, &bx, key);
  if (!p) return em_last_status();
  const dnnl_memory_desc_t *src = QMD(p, src), *wei = QMD(p, weights), *dst = QMD(p, dst);
  em_tensor *xb, *wb, *yb;
  void *px = as_layout(key, "x>fwd", &bx.m.src, em_data(x), src, &xb);
  void *pw = px ? as_layout(key, "w>fwd", &bx.m.wei, em_data(w), wei, &wb) : NULL;
  void *py = pw ? out_buffer(dst, &bx.m.dst, em_data(y), &yb) : NULL;
  if (!py) return em_last_status();
  em_dnnl_arg args[4] = {{DNNL_ARG_SRC, src, px},
                         {DNNL_ARG_WEIGHTS, wei, pw},
                         {DNNL_ARG_DST, dst, py},
                         {DNNL_ARG_BIAS, &bx.m.bias, b ? em_data(b) : NULL}};
  em_status st = em__dnnl_exec("conv2d", p, b ? 4 : 3, args);
  if (st == EM_OK) st = out_finish(key, "y<fwd", dst, yb, &bx.m.dst, em_data(y));
  *xs = xb; /* x and w in the forward primitive's layouts, when they differ from the plain ones */
  *ws = wb;
  return st;
}

/* dx = conv backward data (dy, w); *pg and *g_md: dy in the primitive's layout, which the weights
 * pass reuses when its layout agrees. */
static em_status conv_bwd_data(const char *key, conv_build_ctx *bx, const em_dnnl_prim *fwd,
                               const em_tensor *gy, const em_tensor *ws, em_tensor *dx, void **pg,
                               const dnnl_memory_desc_t **g_md) {
  char k[CONV_KEY_LEN + 16];
  snprintf(k, sizeof k, "%s bwd_data", key);
  const em_dnnl_prim *p = em__dnnl_get(k, build_bwd_data, bx);
  if (!p) return em_last_status();
  const dnnl_memory_desc_t *dd = QMD(p, diff_dst), *wei = QMD(p, weights), *ds = QMD(p, diff_src);
  em_tensor *gb, *wb, *dxb;
  void *g = as_layout(key, "dy>bwd_data", &bx->m.dst, em_data(gy), dd, &gb);
  void *pw = g ? as_layout(key, "w>bwd_data", QMD(fwd, weights), em_data(ws), wei, &wb) : NULL;
  void *pdx = pw ? out_buffer(ds, &bx->m.src, em_data(dx), &dxb) : NULL;
  if (!pdx) return em_last_status();
  em_dnnl_arg args[3] = {
      {DNNL_ARG_DIFF_DST, dd, g}, {DNNL_ARG_WEIGHTS, wei, pw}, {DNNL_ARG_DIFF_SRC, ds, pdx}};
  em_status st = em__dnnl_exec("conv2d backward", p, 3, args);
  if (st == EM_OK) st = out_finish(key, "dx<bwd_data", ds, dxb, &bx->m.src, em_data(dx));
  *pg = g;
  *g_md = dd;
  return st;
}

/* dw (and db) = conv backward weights (x, dy); reuses dy's reorder when the layouts agree. */
static em_status conv_bwd_weights(const char *key, conv_build_ctx *bx, const em_dnnl_prim *fwd,
                                  const em_tensor *gy, void *g, const dnnl_memory_desc_t *g_md,
                                  const em_tensor *xs, em_tensor *dw, em_tensor *db) {
  char k[CONV_KEY_LEN + 16];
  snprintf(k, sizeof k, "%s bwd_weights", key);
  const em_dnnl_prim *p = em__dnnl_get(k, build_bwd_weights, bx);
  if (!p) return em_last_status();
  const dnnl_memory_desc_t *dd = QMD(p, diff_dst), *src = QMD(p, src), *dwm = QMD(p, diff_weights);
  em_tensor *gb, *xb, *dwb;
  if (!g || !dnnl_memory_desc_equal(dd, g_md))
    g = as_layout(key, "dy>bwd_weights", &bx->m.dst, em_data(gy), dd, &gb);
  void *px = g ? as_layout(key, "x>bwd_weights", QMD(fwd, src), em_data(xs), src, &xb) : NULL;
  void *pdw = px ? out_buffer(dwm, &bx->m.wei, em_data(dw), &dwb) : NULL;
  if (!pdw) return em_last_status();
  em_dnnl_arg args[4] = {{DNNL_ARG_SRC, src, px},
                         {DNNL_ARG_DIFF_DST, dd, g},
                         {DNNL_ARG_DIFF_WEIGHTS, dwm, pdw},
                         {DNNL_ARG_DIFF_BIAS, &bx->m.bias, db ? em_data(db) : NULL}};
  em_status st = em__dnnl_exec("conv2d backward", p, db ? 4 : 3, args);
  if (st == EM_OK) st = out_finish(key, "dw<bwd_weights", dwm, dwb, &bx->m.wei, em_data(dw));
  return st;
}

static void zero(em_tensor *t) {
  if (t) memset(em_data(t), 0, (size_t)em_numel(t) * sizeof(float));
}

em_status em__cpu_conv2d_backward(const em_conv2d_geom *c, const em_tensor *xs, const em_tensor *ws,
                                  const em_tensor *gy, em_tensor *gx, em_tensor *gw,
                                  em_tensor *gb) {
  zero(gb);
  if (c->N == 0 || c->O == 0 || c->C == 0) { /* empty sums: zeros, and the bias gradient */
    zero(gx);
    zero(gw);
    if (gb) {
      const float *g = em_data_f32(gy);
      float *pb = em_data_f32(gb);
      for (int64_t i = 0, hw = c->OH * c->OW; i < c->N * c->O * hw; i++) pb[i / hw % c->O] += g[i];
    }
    return EM_OK;
  }
  char key[CONV_KEY_LEN];
  conv_build_ctx bx;
  const em_dnnl_prim *fwd = conv_fwd_prim(c, &bx, key);
  if (!fwd) return em_last_status();
  bx.hint = fwd->pd;
  void *g = NULL;
  const dnnl_memory_desc_t *g_md = NULL;
  em_status st = EM_OK;
  if (gx) st = conv_bwd_data(key, &bx, fwd, gy, ws, gx, &g, &g_md);
  if (st == EM_OK && gw) st = conv_bwd_weights(key, &bx, fwd, gy, g, g_md, xs, gw, gb);
  return st;
}
