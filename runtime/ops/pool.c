/* ops_pool.c: 2-D max and average pooling on oneDNN's pooling primitive, and adaptive average
 * pooling.
 *
 *   x (N, C, H, W) -> (N, C, OH, OW),  OH = (H + 2 ph - kh) / sh + 1  (floor, as PyTorch)
 *
 * Max pooling in training keeps oneDNN's workspace (where each maximum came from) in the node, so
 * that backward scatters dy to exactly those elements. Average pooling divides by the whole
 * window (count_include_pad) or by the part inside the input (dnnl_pooling_avg_exclude_padding).
 * Pooling runs on plain nchw, the layout the tensors have: no reorders.
 *
 * Adaptive average pooling uses PyTorch's windows: output row i averages input rows
 * floor(i H / OH) .. ceil((i + 1) H / OH) - 1. When OH divides H (and OW divides W) that is a plain
 * average pool with kernel = stride = H / OH; otherwise a C loop does it. */
#include "cpu/dnnl.h"

#include <stdio.h>
#include <string.h>

typedef struct {
  int64_t N, C, H, W, OH, OW;
  int64_t k[2], s[2], p[2];
  int64_t alg; /* dnnl_alg_kind_t */
} pool_geom;

enum { POOL_GEOM_INTS = 13 };

static void pool_pack(const pool_geom *g, int64_t *v) {
  int64_t t[POOL_GEOM_INTS] = {g->N,    g->C,    g->H,    g->W,    g->OH,   g->OW, g->k[0],
                               g->k[1], g->s[0], g->s[1], g->p[0], g->p[1], g->alg};
  memcpy(v, t, sizeof t);
}

static pool_geom pool_unpack(const int64_t *v) {
  return (pool_geom){.N = v[0],
                     .C = v[1],
                     .H = v[2],
                     .W = v[3],
                     .OH = v[4],
                     .OW = v[5],
                     .k = {v[6], v[7]},
                     .s = {v[8], v[9]},
                     .p = {v[10], v[11]},
                     .alg = v[12]};
}

typedef struct {
  const pool_geom *g;
  dnnl_memory_desc_t src, dst;
  dnnl_prop_kind_t prop;
  const_dnnl_primitive_desc_t hint;
} pool_build_ctx;

static dnnl_status_t build_fwd(void *vctx, dnnl_primitive_desc_t *pd) {
  pool_build_ctx *x = vctx;
  const pool_geom *g = x->g;
  dnnl_pooling_desc_t d;
  dnnl_dims_t k = {g->k[0], g->k[1]}, s = {g->s[0], g->s[1]}, p = {g->p[0], g->p[1]};
  dnnl_status_t st = dnnl_pooling_forward_desc_init(&d, x->prop, (dnnl_alg_kind_t)g->alg, &x->src,
                                                    &x->dst, s, k, p, p);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), NULL);
}

static dnnl_status_t build_bwd(void *vctx, dnnl_primitive_desc_t *pd) {
  pool_build_ctx *x = vctx;
  const pool_geom *g = x->g;
  dnnl_pooling_desc_t d;
  dnnl_dims_t k = {g->k[0], g->k[1]}, s = {g->s[0], g->s[1]}, p = {g->p[0], g->p[1]};
  dnnl_status_t st =
      dnnl_pooling_backward_desc_init(&d, (dnnl_alg_kind_t)g->alg, &x->src, &x->dst, s, k, p, p);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), x->hint);
}

static const em_dnnl_prim *pool_prim(const pool_geom *g, bool training, bool backward,
                                     pool_build_ctx *x) {
  *x = (pool_build_ctx){.g = g,
                        .src = em__dnnl_md(4, (int64_t[]){g->N, g->C, g->H, g->W}),
                        .dst = em__dnnl_md(4, (int64_t[]){g->N, g->C, g->OH, g->OW}),
                        .prop = training ? dnnl_forward_training : dnnl_forward_inference};
  char key[384]; /* 10 numbers of 20 digits fit: never truncated */
  snprintf(key, sizeof key, "pool%d f32 x%lldx%lldx%lldx%lld k%lldx%lld s%lldx%lld p%lldx%lld %s",
           (int)g->alg, (long long)g->N, (long long)g->C, (long long)g->H, (long long)g->W,
           (long long)g->k[0], (long long)g->k[1], (long long)g->s[0], (long long)g->s[1],
           (long long)g->p[0], (long long)g->p[1], training ? "train" : "infer");
  const em_dnnl_prim *fwd = em__dnnl_get(key, build_fwd, x);
  if (!fwd || !backward) return fwd;
  x->hint = fwd->pd;
  strncat(key, " bwd", sizeof key - strlen(key) - 1);
  return em__dnnl_get(key, build_bwd, x);
}

/* Fill g; false with an error naming x's shape and the options if they do not fit. */
static bool pool_setup(const char *op, const em_tensor *x, const em_pool2d_opts *o, int64_t alg,
                       pool_geom *g) {
  char sx[EM_SHAPE_STR_LEN];
  em_shape_str(x, sx, sizeof sx);
  if (!o) {
    em_set_error(EM_ERR_INVALID, "%s: x %s: options (kernel size) are required", op, sx);
    return false;
  }
  if (x->ndim != 4) {
    em_set_error(EM_ERR_INVALID, "%s: x %s must be (N, C, H, W)", op, sx);
    return false;
  }
  *g = (pool_geom){
      .N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .alg = alg};
  for (int d = 0; d < 2; d++) {
    g->k[d] = o->kernel[d];
    g->s[d] = o->stride[d] ? o->stride[d] : o->kernel[d];
    g->p[d] = o->padding[d];
    int64_t in = x->shape[2 + d];
    if (g->k[d] < 1 || g->s[d] < 1 || g->p[d] < 0 || 2 * g->p[d] > g->k[d]) {
      em_set_error(EM_ERR_INVALID,
                   "%s: x %s: kernel %lldx%lld, stride %lldx%lld, padding %lldx%lld: need kernel "
                   "and stride >= 1 and 0 <= padding <= kernel / 2",
                   op, sx, (long long)o->kernel[0], (long long)o->kernel[1],
                   (long long)o->stride[0], (long long)o->stride[1], (long long)o->padding[0],
                   (long long)o->padding[1]);
      return false;
    }
    if (in + 2 * g->p[d] < g->k[d]) {
      em_set_error(EM_ERR_INVALID, "%s: kernel %lldx%lld does not fit in x %s padded by %lldx%lld",
                   op, (long long)o->kernel[0], (long long)o->kernel[1], sx,
                   (long long)o->padding[0], (long long)o->padding[1]);
      return false;
    }
  }
  g->OH = (g->H + 2 * g->p[0] - g->k[0]) / g->s[0] + 1;
  g->OW = (g->W + 2 * g->p[1] - g->k[1]) / g->s[1] + 1;
  return true;
}

static em_status pool_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  pool_geom g = pool_unpack(n->i);
  em_tensor *dx = em_empty(EM_F32, 4, n->inputs[0]->shape);
  if (!dx) return em_last_status();
  if (em_numel(dx) > 0) {
    pool_build_ctx x;
    const em_dnnl_prim *p = pool_prim(&g, true, true, &x);
    if (!p) return em_last_status();
    em_dnnl_arg args[3] = {{DNNL_ARG_DIFF_DST, &x.dst, em_data(gout)},
                           {DNNL_ARG_DIFF_SRC, &x.src, em_data(dx)},
                           {DNNL_ARG_WORKSPACE, NULL, NULL}};
    int nargs = 2;
    if (g.alg == dnnl_pooling_max) {
      args[2].md = em__dnnl_query_md(p, dnnl_query_workspace_md, 0);
      args[2].ptr = em_data(n->saved[0]);
      nargs = 3;
    }
    em_status st = em__dnnl_exec(n->op, p, nargs, args);
    if (st != EM_OK) return st;
  }
  gin[0] = dx;
  return EM_OK;
}

static em_tensor *pool(const char *op, em_tensor *x, const em_pool2d_opts *o, int64_t alg) {
  EM_CHECK_INPUT(x, op);
  if (!em__check_f32(op, x, "x") || !em__check_cpu(op, x)) return NULL;
  pool_geom g;
  if (!pool_setup(op, x, o, alg, &g)) return NULL;
  em_tensor *cx = em__contig(x);
  em_tensor *out = cx ? em_empty(EM_F32, EM_SHAPE(g.N, g.C, g.OH, g.OW)) : NULL;
  if (!out) return NULL;
  bool training = em_grad_enabled() && x->requires_grad;
  em_tensor *ws = NULL;
  if (em_numel(out) > 0) {
    pool_build_ctx b;
    const em_dnnl_prim *p = pool_prim(&g, training, false, &b);
    if (!p) return NULL;
    em_dnnl_arg args[3] = {{DNNL_ARG_SRC, &b.src, em_data(cx)},
                           {DNNL_ARG_DST, &b.dst, em_data(out)},
                           {DNNL_ARG_WORKSPACE, NULL, NULL}};
    int nargs = 2;
    if (training && alg == dnnl_pooling_max) {
      const dnnl_memory_desc_t *wmd = em__dnnl_query_md(p, dnnl_query_workspace_md, 0);
      size_t bytes = wmd ? dnnl_memory_desc_get_size(wmd) : 0;
      ws = em_empty(EM_U8, EM_SHAPE((int64_t)bytes));
      if (!ws) return NULL;
      args[2].md = wmd;
      args[2].ptr = em_data(ws);
      nargs = 3;
    }
    if (em__dnnl_exec(op, p, nargs, args) != EM_OK) return NULL;
  }
  em_node *n = em__record(out, op, pool_backward, 1, &x);
  if (n) {
    pool_pack(&g, n->i);
    if (ws) em__save(n, ws);
  }
  return out;
}

/* The public ops run in a private scope: contiguous copies end with the op. */
em_tensor *em_max_pool2d(em_tensor *x, const em_pool2d_opts *opts) {
  em_scope s = em_scope_begin();
  return em__op_end(s, pool("max_pool2d", x, opts, dnnl_pooling_max));
}

em_tensor *em_avg_pool2d(em_tensor *x, const em_pool2d_opts *opts) {
  em_scope s = em_scope_begin();
  return em__op_end(s, pool("avg_pool2d", x, opts,
                            opts && opts->count_include_pad ? dnnl_pooling_avg_include_padding
                                                            : dnnl_pooling_avg_exclude_padding));
}

/* ---- adaptive average pooling --------------------------------------------------------- */
static inline int64_t win_start(int64_t i, int64_t in, int64_t out) { return i * in / out; }
static inline int64_t win_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

/* Forward (dir 0): y[i][j] = mean of x over the window. Backward (dir 1): dx += dy / area. Both
 * over N*C planes of (H, W) and (OH, OW). */
static void adaptive_loop(bool backward, float *x, float *y, int64_t planes, int64_t H, int64_t W,
                          int64_t OH, int64_t OW) {
  for (int64_t p = 0; p < planes; p++) {
    float *xp = x + p * H * W, *yp = y + p * OH * OW;
    for (int64_t i = 0; i < OH; i++) {
      int64_t h0 = win_start(i, H, OH), h1 = win_end(i, H, OH);
      for (int64_t j = 0; j < OW; j++) {
        int64_t w0 = win_start(j, W, OW), w1 = win_end(j, W, OW);
        float inv = 1.0f / (float)((h1 - h0) * (w1 - w0));
        if (backward) {
          float g = yp[i * OW + j] * inv;
          for (int64_t h = h0; h < h1; h++)
            for (int64_t w = w0; w < w1; w++) xp[h * W + w] += g;
        } else {
          float acc = 0;
          for (int64_t h = h0; h < h1; h++)
            for (int64_t w = w0; w < w1; w++) acc += xp[h * W + w];
          yp[i * OW + j] = acc * inv;
        }
      }
    }
  }
}

static em_status adaptive_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  const int64_t *s = n->inputs[0]->shape;
  em_tensor *dx = em_zeros(EM_F32, 4, s);
  if (!dx) return em_last_status();
  adaptive_loop(true, em_data_f32(dx), em_data_f32(gout), s[0] * s[1], s[2], s[3], n->i[0],
                n->i[1]);
  gin[0] = dx;
  return EM_OK;
}

static em_tensor *adaptive_impl(em_tensor *x, int oh, int ow) {
  static const char *op = "adaptive_avg_pool2d";
  EM_CHECK_INPUT(x, op);
  if (!em__check_f32(op, x, "x") || !em__check_cpu(op, x)) return NULL;
  char sx[EM_SHAPE_STR_LEN];
  if (x->ndim != 4 || oh < 1 || ow < 1) {
    em_set_error(EM_ERR_INVALID, "%s: x %s must be (N, C, H, W) and the output size %dx%d >= 1x1",
                 op, em_shape_str(x, sx, sizeof sx), oh, ow);
    return NULL;
  }
  int64_t H = x->shape[2], W = x->shape[3];
  if (H > 0 && W > 0 && H % oh == 0 && W % ow == 0) {
    em_pool2d_opts o = {.kernel = {(int)(H / oh), (int)(W / ow)}};
    return pool(op, x, &o, dnnl_pooling_avg_exclude_padding);
  }
  if (H == 0 || W == 0) {
    em_set_error(EM_ERR_INVALID, "%s: x %s has an empty plane", op, em_shape_str(x, sx, sizeof sx));
    return NULL;
  }
  em_tensor *cx = em__contig(x);
  em_tensor *out = cx ? em_empty(EM_F32, EM_SHAPE(x->shape[0], x->shape[1], oh, ow)) : NULL;
  if (!out) return NULL;
  adaptive_loop(false, em_data_f32(cx), em_data_f32(out), x->shape[0] * x->shape[1], H, W, oh, ow);
  em_node *n = em__record(out, op, adaptive_backward, 1, &x);
  if (n) {
    n->i[0] = oh;
    n->i[1] = ow;
  }
  return out;
}

em_tensor *em_adaptive_avg_pool2d(em_tensor *x, int oh, int ow) {
  em_scope s = em_scope_begin();
  return em__op_end(s, adaptive_impl(x, oh, ow));
}
