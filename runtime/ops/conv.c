/* ops_conv.c: 2-D convolution (stride, padding, dilation, groups, optional bias) on oneDNN's
 * convolution primitives: forward, backward data and backward weights (with the bias gradient).
 *
 *   x (N, C, H, W), w (O, C/g, KH, KW), bias (O) -> y (N, O, OH, OW)
 *   OH = (H + 2 ph - (dh (KH - 1) + 1)) / sh + 1   (floor, as PyTorch), OW likewise
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
 * oneDNN counts dilation from 0 (PyTorch's dilation minus 1). All primitives and reorders are
 * cached per geometry; the backward ones are built with the forward one as their hint. */
#include "cpu/dnnl.h"

#include <stdio.h>
#include <string.h>

typedef struct {
  int64_t N, C, H, W, O, KH, KW, OH, OW;
  int64_t s[2], p[2], d[2]; /* stride, padding, dilation (PyTorch's: 1 = none) */
  int64_t g;
  bool bias;
} conv_geom;

/* The user's (plain) memory descriptors and the spatial parameters in oneDNN's terms. */
typedef struct {
  dnnl_memory_desc_t src, wei, bias, dst;
  dnnl_dims_t strides, dil, pad;
} conv_mds;

static conv_mds conv_make_mds(const conv_geom *c) {
  conv_mds m;
  m.src = em__dnnl_md(4, (int64_t[]){c->N, c->C, c->H, c->W});
  m.dst = em__dnnl_md(4, (int64_t[]){c->N, c->O, c->OH, c->OW});
  if (c->g == 1)
    m.wei = em__dnnl_md(4, (int64_t[]){c->O, c->C, c->KH, c->KW});
  else
    m.wei = em__dnnl_md(5, (int64_t[]){c->g, c->O / c->g, c->C / c->g, c->KH, c->KW});
  m.bias = em__dnnl_md(1, (int64_t[]){c->O});
  for (int k = 0; k < 2; k++) {
    m.strides[k] = c->s[k];
    m.dil[k] = c->d[k] - 1;
    m.pad[k] = c->p[k];
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
static void conv_key(char *buf, size_t n, const conv_geom *c) {
  snprintf(buf, n,
           "conv2d f32 x%lldx%lldx%lldx%lld w%lldx%lldx%lld s%lldx%lld p%lldx%lld d%lldx%lld "
           "g%lld%s",
           (long long)c->N, (long long)c->C, (long long)c->H, (long long)c->W, (long long)c->O,
           (long long)c->KH, (long long)c->KW, (long long)c->s[0], (long long)c->s[1],
           (long long)c->p[0], (long long)c->p[1], (long long)c->d[0], (long long)c->d[1],
           (long long)c->g, c->bias ? " bias" : "");
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
static const em_dnnl_prim *conv_fwd_prim(const conv_geom *c, conv_build_ctx *x, char *key) {
  char k[CONV_KEY_LEN + 8];
  conv_key(key, CONV_KEY_LEN, c);
  snprintf(k, sizeof k, "%s fwd", key);
  *x = (conv_build_ctx){.m = conv_make_mds(c), .bias = c->bias};
  return em__dnnl_get(k, build_fwd, x);
}

#define QMD(p, what) em__dnnl_query_md(p, dnnl_query_##what##_md, 0)

/* Fill c from the shapes and options; false with an error naming every shape if they do not fit. */
static bool conv_setup(const em_tensor *x, const em_tensor *w, const em_tensor *bias,
                       const em_conv2d_opts *o, conv_geom *c) {
  char sx[EM_SHAPE_STR_LEN], sw[EM_SHAPE_STR_LEN], sb[EM_SHAPE_STR_LEN];
  em_shape_str(x, sx, sizeof sx);
  em_shape_str(w, sw, sizeof sw);
  if (x->ndim != 4 || w->ndim != 4) {
    em_set_error(EM_ERR_INVALID,
                 "conv2d: x %s and weight %s must be (N, C, H, W) and "
                 "(O, C/groups, KH, KW)",
                 sx, sw);
    return false;
  }
  em_conv2d_opts def = {0};
  if (!o) o = &def;
  *c = (conv_geom){.N = x->shape[0],
                   .C = x->shape[1],
                   .H = x->shape[2],
                   .W = x->shape[3],
                   .O = w->shape[0],
                   .KH = w->shape[2],
                   .KW = w->shape[3],
                   .g = o->groups ? o->groups : 1,
                   .bias = bias != NULL};
  for (int k = 0; k < 2; k++) {
    c->s[k] = o->stride[k] ? o->stride[k] : 1;
    c->d[k] = o->dilation[k] ? o->dilation[k] : 1;
    c->p[k] = o->padding[k];
    if (c->s[k] < 1 || c->d[k] < 1 || c->p[k] < 0) {
      em_set_error(EM_ERR_INVALID,
                   "conv2d: x %s, weight %s: stride %lld, dilation %lld must be >= 1 and "
                   "padding %lld >= 0",
                   sx, sw, (long long)c->s[k], (long long)c->d[k], (long long)c->p[k]);
      return false;
    }
  }
  if (c->g < 1 || c->C % c->g || c->O % c->g || w->shape[1] * c->g != c->C) {
    em_set_error(EM_ERR_INVALID,
                 "conv2d: x %s and weight %s do not fit with groups %lld: need C divisible by "
                 "groups, O divisible by groups and weight (O, C/groups, KH, KW)",
                 sx, sw, (long long)c->g);
    return false;
  }
  if (bias && (bias->ndim != 1 || bias->shape[0] != c->O)) {
    em_set_error(EM_ERR_INVALID, "conv2d: bias %s does not match weight %s (need [%lld])",
                 em_shape_str(bias, sb, sizeof sb), sw, (long long)c->O);
    return false;
  }
  int64_t ekh = c->d[0] * (c->KH - 1) + 1, ekw = c->d[1] * (c->KW - 1) + 1;
  if (c->KH < 1 || c->KW < 1 || ekh > c->H + 2 * c->p[0] || ekw > c->W + 2 * c->p[1]) {
    em_set_error(EM_ERR_INVALID,
                 "conv2d: kernel of weight %s (dilated %lldx%lld) does not fit in x %s padded by "
                 "%lldx%lld",
                 sw, (long long)ekh, (long long)ekw, sx, (long long)c->p[0], (long long)c->p[1]);
    return false;
  }
  c->OH = (c->H + 2 * c->p[0] - ekh) / c->s[0] + 1;
  c->OW = (c->W + 2 * c->p[1] - ekw) / c->s[1] + 1;
  return true;
}

/* The geometry fits the node's 16 integer slots exactly. */
static void conv_pack(const conv_geom *c, int64_t *v) {
  int64_t t[16] = {c->N,  c->C,    c->H,    c->W,    c->O,    c->KH,   c->KW,   c->OH,
                   c->OW, c->s[0], c->s[1], c->p[0], c->p[1], c->d[0], c->d[1], c->g};
  memcpy(v, t, sizeof t);
}

static void conv_unpack(const int64_t *v, bool bias, conv_geom *c) {
  *c = (conv_geom){.N = v[0],
                   .C = v[1],
                   .H = v[2],
                   .W = v[3],
                   .O = v[4],
                   .KH = v[5],
                   .KW = v[6],
                   .OH = v[7],
                   .OW = v[8],
                   .s = {v[9], v[10]},
                   .p = {v[11], v[12]},
                   .d = {v[13], v[14]},
                   .g = v[15],
                   .bias = bias};
}

static em_status conv_backward(em_node *n, em_tensor *gout, em_tensor **gin);

/* y = conv(cx, cw) + cb; sets *xs, *ws to x and w in the forward primitive's layouts. */
static em_status conv_forward(const conv_geom *c, em_tensor *cx, em_tensor *cw, em_tensor *cb,
                              em_tensor *out, em_tensor **xs, em_tensor **ws) {
  *xs = cx;
  *ws = cw;
  if (c->N == 0 || c->O == 0) return EM_OK;
  if (c->C == 0) { /* empty sum: bias only */
    float *po = em_data_f32(out);
    for (int64_t i = 0, hw = c->OH * c->OW; i < c->N * c->O * hw; i++)
      po[i] = cb ? em_data_f32(cb)[i / hw % c->O] : 0.0f;
    return EM_OK;
  }
  char key[CONV_KEY_LEN];
  conv_build_ctx bx;
  const em_dnnl_prim *p = conv_fwd_prim(c, &bx, key);
  if (!p) return em_last_status();
  const dnnl_memory_desc_t *src = QMD(p, src), *wei = QMD(p, weights), *dst = QMD(p, dst);
  em_tensor *xb, *wb, *yb;
  void *px = as_layout(key, "x>fwd", &bx.m.src, em_data(cx), src, &xb);
  void *pw = px ? as_layout(key, "w>fwd", &bx.m.wei, em_data(cw), wei, &wb) : NULL;
  void *py = pw ? out_buffer(dst, &bx.m.dst, em_data(out), &yb) : NULL;
  if (!py) return em_last_status();
  em_dnnl_arg args[4] = {{DNNL_ARG_SRC, src, px},
                         {DNNL_ARG_WEIGHTS, wei, pw},
                         {DNNL_ARG_DST, dst, py},
                         {DNNL_ARG_BIAS, &bx.m.bias, cb ? em_data(cb) : NULL}};
  em_status st = em__dnnl_exec("conv2d", p, cb ? 4 : 3, args);
  if (st == EM_OK) st = out_finish(key, "y<fwd", dst, yb, &bx.m.dst, em_data(out));
  if (xb) *xs = xb;
  if (wb) *ws = wb;
  return st;
}

static em_tensor *conv_impl(em_tensor *x, em_tensor *w, em_tensor *bias,
                            const em_conv2d_opts *opts) {
  static const char *op = "conv2d";
  EM_CHECK_INPUT(x, op);
  EM_CHECK_INPUT(w, op);
  if (!em__check_f32(op, x, "x") || !em__check_f32(op, w, "weight")) return NULL;
  if (!em__check_cpu(op, x) || !em__check_cpu(op, w)) return NULL;
  if (bias && (!em__check_f32(op, bias, "bias") || !em__check_cpu(op, bias))) return NULL;
  conv_geom c;
  if (!conv_setup(x, w, bias, opts, &c)) return NULL;
  em_tensor *cx = em__contig(x), *cw = em__contig(w), *cb = bias ? em__contig(bias) : NULL;
  if (!cx || !cw || (bias && !cb)) return NULL;
  em_tensor *out = em_empty(EM_F32, EM_SHAPE(c.N, c.O, c.OH, c.OW)), *xs, *ws;
  if (!out || conv_forward(&c, cx, cw, cb, out, &xs, &ws) != EM_OK) return NULL;
  em_tensor *ins[3] = {x, w, bias};
  em_node *n = em__record(out, op, conv_backward, bias ? 3 : 2, ins);
  if (n) {
    em__save(n, xs); /* x and w in the forward primitive's layouts */
    em__save(n, ws);
    conv_pack(&c, n->i);
  }
  return out;
}

/* The public op runs in a private scope: contiguous copies and reordered buffers that are not
 * saved for backward end with the op. */
em_tensor *em_conv2d(em_tensor *x, em_tensor *w, em_tensor *bias, const em_conv2d_opts *opts) {
  em_scope s = em_scope_begin();
  return em__op_end(s, conv_impl(x, w, bias, opts));
}

/* dx = conv backward data (dy, w); gb caches dy in the primitive's layout for the weights pass. */
static em_status conv_bwd_data(const char *key, conv_build_ctx *bx, const em_dnnl_prim *fwd,
                               em_tensor *gout, em_tensor *ws, em_tensor *dx, void **pg,
                               const dnnl_memory_desc_t **g_md) {
  char k[CONV_KEY_LEN + 16];
  snprintf(k, sizeof k, "%s bwd_data", key);
  const em_dnnl_prim *p = em__dnnl_get(k, build_bwd_data, bx);
  if (!p) return em_last_status();
  const dnnl_memory_desc_t *dd = QMD(p, diff_dst), *wei = QMD(p, weights), *ds = QMD(p, diff_src);
  em_tensor *gb, *wb, *dxb;
  void *g = as_layout(key, "dy>bwd_data", &bx->m.dst, em_data(gout), dd, &gb);
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
                                  em_tensor *gout, void *g, const dnnl_memory_desc_t *g_md,
                                  em_tensor *xs, em_tensor *dw, em_tensor *db) {
  char k[CONV_KEY_LEN + 16];
  snprintf(k, sizeof k, "%s bwd_weights", key);
  const em_dnnl_prim *p = em__dnnl_get(k, build_bwd_weights, bx);
  if (!p) return em_last_status();
  const dnnl_memory_desc_t *dd = QMD(p, diff_dst), *src = QMD(p, src), *dwm = QMD(p, diff_weights);
  em_tensor *gb, *xb, *dwb;
  if (!g || !dnnl_memory_desc_equal(dd, g_md))
    g = as_layout(key, "dy>bwd_weights", &bx->m.dst, em_data(gout), dd, &gb);
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

static em_status conv_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  conv_geom c;
  conv_unpack(n->i, n->n_in == 3, &c);
  em_tensor *xs = n->saved[0], *ws = n->saved[1];
  bool need_x = n->inputs[0]->requires_grad, need_w = n->inputs[1]->requires_grad;
  bool need_b = c.bias && n->inputs[2]->requires_grad;
  bool run = c.N > 0 && c.O > 0 && c.C > 0; /* otherwise the gradients are zeros or empty */
  em_tensor *dx = NULL, *dw = NULL, *db = NULL;
  if (need_x && !(dx = (run ? em_empty : em_zeros)(EM_F32, 4, n->inputs[0]->shape)))
    return em_last_status();
  /* the weights primitive of a conv with bias always writes the bias gradient too */
  if ((need_w || need_b) && !(dw = (run ? em_empty : em_zeros)(EM_F32, 4, n->inputs[1]->shape)))
    return em_last_status();
  if (dw && c.bias && !(db = em_zeros(EM_F32, EM_SHAPE(c.O)))) return em_last_status();
  if (run) {
    char key[CONV_KEY_LEN];
    conv_build_ctx bx;
    const em_dnnl_prim *fwd = conv_fwd_prim(&c, &bx, key);
    if (!fwd) return em_last_status();
    bx.hint = fwd->pd;
    void *g = NULL;
    const dnnl_memory_desc_t *g_md = NULL;
    em_status st = EM_OK;
    if (dx) st = conv_bwd_data(key, &bx, fwd, gout, ws, dx, &g, &g_md);
    if (st == EM_OK && dw) st = conv_bwd_weights(key, &bx, fwd, gout, g, g_md, xs, dw, db);
    if (st != EM_OK) return st;
  } else if (db) { /* C == 0: the bias gradient is still the sum of dy over N, OH, OW */
    const float *g = em_data_f32(gout);
    float *pb = em_data_f32(db);
    for (int64_t i = 0, hw = c.OH * c.OW; i < c.N * c.O * hw; i++) pb[i / hw % c.O] += g[i];
  }
  gin[0] = dx;
  gin[1] = need_w ? dw : NULL;
  if (c.bias) gin[2] = need_b ? db : NULL;
  return EM_OK;
}
