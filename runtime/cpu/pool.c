/* cpu/pool.c: the CPU's pooling kernels. Max and average pooling run on oneDNN's pooling
 * primitive, on plain nchw (the layout the tensors have: no reorders); adaptive average pooling
 * with windows that do not tile the input is a plain loop.
 *
 * Max pooling in training keeps oneDNN's workspace (where each maximum came from): the forward
 * hands it to the front end, which saves it in the node, so that backward scatters dy to exactly
 * those elements. Primitives are cached per geometry and propagation kind (training or
 * inference); the backward one is built with the training forward one as its hint. */
#include "cpu/cpu.h"
#include "cpu/dnnl.h"

#include <stdio.h>
#include <string.h>

static dnnl_alg_kind_t pool_alg(em_pool_kind kind) {
  switch (kind) {
  case EM_POOL_MAX: return dnnl_pooling_max;
  case EM_POOL_AVG_INCLUDE_PAD: return dnnl_pooling_avg_include_padding;
  default: return dnnl_pooling_avg_exclude_padding;
  }
}

/* For oneDNN's messages. */
static const char *pool_name(em_pool_kind kind) {
  return kind == EM_POOL_MAX ? "max_pool2d" : "avg_pool2d";
}

typedef struct {
  const em_pool2d_geom *g;
  dnnl_alg_kind_t alg;
  dnnl_memory_desc_t src, dst;
  dnnl_prop_kind_t prop;
  const_dnnl_primitive_desc_t hint;
} pool_build_ctx;

static dnnl_status_t build_fwd(void *vctx, dnnl_primitive_desc_t *pd) {
  pool_build_ctx *x = vctx;
  const em_pool2d_geom *g = x->g;
  dnnl_pooling_desc_t d;
  dnnl_dims_t k = {g->kernel[0], g->kernel[1]}, s = {g->stride[0], g->stride[1]},
              p = {g->padding[0], g->padding[1]};
  dnnl_status_t st =
      dnnl_pooling_forward_desc_init(&d, x->prop, x->alg, &x->src, &x->dst, s, k, p, p);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), NULL);
}

static dnnl_status_t build_bwd(void *vctx, dnnl_primitive_desc_t *pd) {
  pool_build_ctx *x = vctx;
  const em_pool2d_geom *g = x->g;
  dnnl_pooling_desc_t d;
  dnnl_dims_t k = {g->kernel[0], g->kernel[1]}, s = {g->stride[0], g->stride[1]},
              p = {g->padding[0], g->padding[1]};
  dnnl_status_t st = dnnl_pooling_backward_desc_init(&d, x->alg, &x->src, &x->dst, s, k, p, p);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), x->hint);
}

static const em_dnnl_prim *pool_prim(const em_pool2d_geom *g, bool training, bool backward,
                                     pool_build_ctx *x) {
  *x = (pool_build_ctx){.g = g,
                        .alg = pool_alg(g->kind),
                        .src = em__dnnl_md(4, (int64_t[]){g->N, g->C, g->H, g->W}),
                        .dst = em__dnnl_md(4, (int64_t[]){g->N, g->C, g->OH, g->OW}),
                        .prop = training ? dnnl_forward_training : dnnl_forward_inference};
  char key[384]; /* 10 numbers of 20 digits fit: never truncated */
  snprintf(key, sizeof key, "pool%d f32 x%lldx%lldx%lldx%lld k%lldx%lld s%lldx%lld p%lldx%lld %s",
           (int)x->alg, (long long)g->N, (long long)g->C, (long long)g->H, (long long)g->W,
           (long long)g->kernel[0], (long long)g->kernel[1], (long long)g->stride[0],
           (long long)g->stride[1], (long long)g->padding[0], (long long)g->padding[1],
           training ? "train" : "infer");
  const em_dnnl_prim *fwd = em__dnnl_get(key, build_fwd, x);
  if (!fwd || !backward) return fwd;
  x->hint = fwd->pd;
  strncat(key, " bwd", sizeof key - strlen(key) - 1);
  return em__dnnl_get(key, build_bwd, x);
}

em_status em__cpu_pool2d(const em_pool2d_geom *g, const em_tensor *x, em_tensor *y,
                         em_tensor **ws) {
  bool training = ws != NULL;
  if (ws) *ws = NULL;
  if (em_numel(y) == 0) return EM_OK;
  pool_build_ctx b;
  const em_dnnl_prim *p = pool_prim(g, training, false, &b);
  if (!p) return em_last_status();
  em_dnnl_arg args[3] = {{DNNL_ARG_SRC, &b.src, em_data(x)},
                         {DNNL_ARG_DST, &b.dst, em_data(y)},
                         {DNNL_ARG_WORKSPACE, NULL, NULL}};
  int nargs = 2;
  if (training && g->kind == EM_POOL_MAX) {
    const dnnl_memory_desc_t *wmd = em__dnnl_query_md(p, dnnl_query_workspace_md, 0);
    size_t bytes = wmd ? dnnl_memory_desc_get_size(wmd) : 0;
    em_tensor *w = em_empty(EM_U8, EM_SHAPE((int64_t)bytes));
    if (!w) return em_last_status();
    *ws = w;
    args[2].md = wmd;
    args[2].ptr = em_data(w);
    nargs = 3;
  }
  return em__dnnl_exec(pool_name(g->kind), p, nargs, args);
}

em_status em__cpu_pool2d_backward(const em_pool2d_geom *g, const em_tensor *ws, const em_tensor *gy,
                                  em_tensor *gx) {
  if (em_numel(gx) == 0) return EM_OK;
  pool_build_ctx x;
  const em_dnnl_prim *p = pool_prim(g, true, true, &x);
  if (!p) return em_last_status();
  em_dnnl_arg args[3] = {{DNNL_ARG_DIFF_DST, &x.dst, em_data(gy)},
                         {DNNL_ARG_DIFF_SRC, &x.src, em_data(gx)},
                         {DNNL_ARG_WORKSPACE, NULL, NULL}};
  int nargs = 2;
  if (g->kind == EM_POOL_MAX) {
    args[2].md = em__dnnl_query_md(p, dnnl_query_workspace_md, 0);
    args[2].ptr = em_data(ws);
    nargs = 3;
  }
  return em__dnnl_exec(pool_name(g->kind), p, nargs, args);
}

/* ---- adaptive average pooling --------------------------------------------------------- */
static inline int64_t win_start(int64_t i, int64_t in, int64_t out) { return i * in / out; }
static inline int64_t win_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

/* Forward: y[i][j] = mean of x over the window. Backward: dx += dy / area. Both over planes
 * (N*C) of (H, W) and (OH, OW). */
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

em_status em__cpu_adaptive_avg_pool2d(const em_tensor *x, em_tensor *y) {
  const int64_t *s = x->shape;
  adaptive_loop(false, em_data_f32(x), em_data_f32(y), s[0] * s[1], s[2], s[3], y->shape[2],
                y->shape[3]);
  return EM_OK;
}

em_status em__cpu_adaptive_avg_pool2d_backward(const em_tensor *gy, em_tensor *gx) {
  const int64_t *s = gx->shape;
  memset(em_data(gx), 0, (size_t)em_numel(gx) * sizeof(float));
  adaptive_loop(true, em_data_f32(gx), em_data_f32(gy), s[0] * s[1], s[2], s[3], gy->shape[2],
                gy->shape[3]);
  return EM_OK;
}
