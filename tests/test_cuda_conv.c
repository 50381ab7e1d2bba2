/* test_cuda_conv.c: the CUDA table's convolution (cuDNN, runtime/cuda/conv.cu), pooling and
 * adaptive pooling (runtime/cuda/pool.cu) and batch normalisation (runtime/cuda/batch_norm.cu)
 * against the CPU's (oneDNN and plain loops).
 *
 * Forward passes go through the front ends (em_conv2d, em_max_pool2d, em_avg_pool2d,
 * em_adaptive_avg_pool2d, em_batch_norm with its running statistics) on random inputs and their
 * cuda:0 copies. Backward passes call the backward slots directly (em__kernels(dev)->..., with
 * what each device's forward slot kept for them), on both devices with the same upstream
 * gradient: em_backward would also need the engine's accumulate slot, another engineer's work.
 *
 * Bounds: cuDNN and oneDNN sum a convolution's C/groups * KH * KW products (at most 72 here, of
 * values in [-1, 1)) in different orders: |cuda - cpu| <= 2e-5 + 1e-5 |cpu|. Pooling windows
 * and batch-norm statistics are short sums or float64 sums: 1e-5 relative, 1e-6 absolute. Max
 * pooling and its backward pick elements, and adaptive pooling does the CPU's arithmetic in its
 * order: exact. */
#include "cudautil.h"

#include "core/kernels.h"

#include <stdio.h>

static const em_kernels *cpu_k(void) { return em__kernels(EM_DEVICE_CPU); }
static const em_kernels *cuda_k(void) { return em__kernels(EM_DEVICE_CUDA(0)); }

static em_tensor *empty_like_on(em_device d, const em_tensor *t) {
  return em__empty_on(d, EM_F32, t->ndim, t->shape);
}

/* ---- convolution ----------------------------------------------------------------------------- */
typedef struct {
  int64_t x[4], w[4];
  em_conv2d_opts o;
  bool bias;
} conv_case;

static em_conv2d_geom conv_geom(const conv_case *c) {
  em_conv2d_geom g = {.N = c->x[0],
                      .C = c->x[1],
                      .H = c->x[2],
                      .W = c->x[3],
                      .O = c->w[0],
                      .KH = c->w[2],
                      .KW = c->w[3],
                      .bias = c->bias};
  for (int d = 0; d < 2; d++) {
    g.stride[d] = c->o.stride[d] ? c->o.stride[d] : 1;
    g.padding[d] = c->o.padding[d];
    g.dilation[d] = c->o.dilation[d] ? c->o.dilation[d] : 1;
  }
  g.groups = c->o.groups ? c->o.groups : 1;
  g.OH = (g.H + 2 * g.padding[0] - g.dilation[0] * (g.KH - 1) - 1) / g.stride[0] + 1;
  g.OW = (g.W + 2 * g.padding[1] - g.dilation[1] * (g.KW - 1) - 1) / g.stride[1] + 1;
  return g;
}

/* gx, gw, gb of one device for gy, through its own forward slot (for what it keeps). */
static void conv_grads(const em_kernels *k, em_device dev, const em_conv2d_geom *g, em_tensor *x,
                       em_tensor *w, em_tensor *b, em_tensor *gy, em_tensor **out) {
  em_tensor *y = em__empty_on(dev, EM_F32, EM_SHAPE(g->N, g->O, g->OH, g->OW)), *xs, *ws;
  cr_assert_eq(k->conv2d(g, x, w, b, y, &xs, &ws), EM_OK, "%s", em_last_error());
  out[0] = empty_like_on(dev, x);
  out[1] = empty_like_on(dev, w);
  out[2] = b ? empty_like_on(dev, b) : NULL;
  cr_assert_eq(k->conv2d_backward(g, xs ? xs : x, ws ? ws : w, gy, out[0], out[1], out[2]), EM_OK,
               "%s", em_last_error());
}

Test(cuda_conv, conv2d_forward_and_backward) {
  TU_NEED_CUDA();
  if (!cuda_k()->conv2d) cr_skip_test("this build has no cuDNN: conv2d is not on cuda");
  TU_BEGIN;
  em_rng r = em_rng_new(21);
  static const conv_case cases[] = {
      {{2, 3, 9, 11}, {4, 3, 3, 3}, {.padding = {1, 1}}, true},
      {{3, 4, 13, 10},
       {6, 4, 3, 2},
       {.stride = {2, 1}, .padding = {1, 2}, .dilation = {2, 1}},
       false},
      {{2, 4, 7, 7}, {6, 2, 3, 3}, {.groups = 2, .stride = {2, 2}}, true},
      {{1, 5, 8, 8}, {5, 1, 3, 3}, {.groups = 5, .padding = {1, 1}}, true}, /* depthwise */
      {{4, 8, 5, 3}, {7, 8, 1, 1}, {.groups = 1}, true},                    /* 1x1 */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const conv_case *c = &cases[i];
    char what[48];
    snprintf(what, sizeof what, "conv case %zu", i);
    em_tensor *x = tu_rand(&r, 4, c->x, -1, 1, false), *w = tu_rand(&r, 4, c->w, -1, 1, false);
    em_tensor *b = c->bias ? tu_rand(&r, EM_SHAPE(c->w[0]), -1, 1, false) : NULL;
    em_tensor *xd = tu_cuda(x), *wd = tu_cuda(w), *bd = b ? tu_cuda(b) : NULL;
    em_tensor *y = em_conv2d(x, w, b, &c->o);
    tu_assert_same(y, em_conv2d(xd, wd, bd, &c->o), 1e-5, 2e-5, what);
    em_conv2d_geom g = conv_geom(c);
    cr_assert_eq(g.OH, y->shape[2]);
    cr_assert_eq(g.OW, y->shape[3]);
    em_tensor *gy = tu_rand(&r, y->ndim, y->shape, -1, 1, false), *gc[3], *gd[3];
    conv_grads(cpu_k(), EM_DEVICE_CPU, &g, x, w, b, gy, gc);
    conv_grads(cuda_k(), EM_DEVICE_CUDA(0), &g, xd, wd, bd, tu_cuda(gy), gd);
    tu_assert_same(gc[0], gd[0], 1e-5, 2e-5, "conv gx");
    /* gw sums N * OH * OW products (up to 3 * 7 * 10 here) */
    tu_assert_same(gc[1], gd[1], 1e-5, 1e-4, "conv gw");
    if (b) tu_assert_same(gc[2], gd[2], 1e-5, 1e-4, "conv gb");
  }
  TU_END;
}

Test(cuda_conv, conv2d_without_input_channels_is_the_bias) {
  TU_NEED_CUDA();
  if (!cuda_k()->conv2d) cr_skip_test("this build has no cuDNN: conv2d is not on cuda");
  TU_BEGIN;
  em_rng r = em_rng_new(22);
  conv_case c = {{2, 0, 5, 5}, {3, 0, 3, 3}, {.padding = {1, 1}}, true};
  em_tensor *x = tu_rand(&r, 4, c.x, -1, 1, false), *w = tu_rand(&r, 4, c.w, -1, 1, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(3), -1, 1, false);
  em_tensor *y = em_conv2d(x, w, b, &c.o);
  tu_assert_same(y, em_conv2d(tu_cuda(x), tu_cuda(w), tu_cuda(b), &c.o), 0, 0, "C == 0");
  em_conv2d_geom g = conv_geom(&c);
  em_tensor *gy = tu_rand(&r, y->ndim, y->shape, -1, 1, false), *gc[3], *gd[3];
  conv_grads(cpu_k(), EM_DEVICE_CPU, &g, x, w, b, gy, gc);
  conv_grads(cuda_k(), EM_DEVICE_CUDA(0), &g, tu_cuda(x), tu_cuda(w), tu_cuda(b), tu_cuda(gy), gd);
  tu_assert_same(gc[2], gd[2], 1e-5, 1e-5, "C == 0: gb");
  TU_END;
}

/* ---- pooling --------------------------------------------------------------------------------- */
static em_pool2d_geom pool_geom(const em_tensor *x, const em_pool2d_opts *o, em_pool_kind kind) {
  em_pool2d_geom g = {
      .kind = kind, .N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3]};
  for (int d = 0; d < 2; d++) {
    g.kernel[d] = o->kernel[d];
    g.stride[d] = o->stride[d] ? o->stride[d] : o->kernel[d];
    g.padding[d] = o->padding[d];
  }
  g.OH = (g.H + 2 * g.padding[0] - g.kernel[0]) / g.stride[0] + 1;
  g.OW = (g.W + 2 * g.padding[1] - g.kernel[1]) / g.stride[1] + 1;
  return g;
}

/* gx of one device for gy, through its own forward slot (for its workspace). */
static em_tensor *pool_grad(const em_kernels *k, em_device dev, const em_pool2d_geom *g,
                            em_tensor *x, em_tensor *gy) {
  em_tensor *y = em__empty_on(dev, EM_F32, EM_SHAPE(g->N, g->C, g->OH, g->OW)), *ws = NULL;
  cr_assert_eq(k->pool2d(g, x, y, &ws), EM_OK, "%s", em_last_error());
  em_tensor *gx = empty_like_on(dev, x);
  cr_assert_eq(k->pool2d_backward(g, ws, gy, gx), EM_OK, "%s", em_last_error());
  return gx;
}

Test(cuda_conv, pooling_forward_and_backward) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(23);
  static const em_pool2d_opts opts[] = {
      {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}},
      {.kernel = {2, 3}, .stride = {1, 2}, .padding = {1, 0}},
      {.kernel = {2, 2}},
      {.kernel = {3, 2}, .stride = {2, 1}, .padding = {1, 1}, .count_include_pad = true},
  };
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 3, 9, 11), -1, 1, false), *xd = tu_cuda(x);
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "max_pool2d case %zu", i);
    em_tensor *y = em_max_pool2d(x, &opts[i]);
    tu_assert_same(y, em_max_pool2d(xd, &opts[i]), 0, 0, what);
    em_tensor *gy = tu_rand(&r, y->ndim, y->shape, -1, 1, false), *gyd = tu_cuda(gy);
    em_pool2d_geom g = pool_geom(x, &opts[i], EM_POOL_MAX);
    /* overlapping windows add several gradients into one element: summation order */
    tu_assert_same(pool_grad(cpu_k(), EM_DEVICE_CPU, &g, x, gy),
                   pool_grad(cuda_k(), EM_DEVICE_CUDA(0), &g, xd, gyd), 1e-6, 1e-6, what);
    snprintf(what, sizeof what, "avg_pool2d case %zu", i);
    em_tensor *a = em_avg_pool2d(x, &opts[i]);
    tu_assert_same(a, em_avg_pool2d(xd, &opts[i]), 1e-5, 1e-6, what);
    g = pool_geom(x, &opts[i],
                  opts[i].count_include_pad ? EM_POOL_AVG_INCLUDE_PAD : EM_POOL_AVG_EXCLUDE_PAD);
    tu_assert_same(pool_grad(cpu_k(), EM_DEVICE_CPU, &g, x, gy),
                   pool_grad(cuda_k(), EM_DEVICE_CUDA(0), &g, xd, gyd), 1e-5, 1e-6, what);
  }
  /* eval (no workspace asked for) gives the same maxima */
  em_pool2d_geom g = pool_geom(x, &opts[0], EM_POOL_MAX);
  em_tensor *y = em__empty_on(xd->device, EM_F32, EM_SHAPE(g.N, g.C, g.OH, g.OW));
  cr_assert_eq(cuda_k()->pool2d(&g, xd, y, NULL), EM_OK, "%s", em_last_error());
  tu_assert_same(em_max_pool2d(x, &opts[0]), y, 0, 0, "max_pool2d without workspace");
  TU_END;
}

Test(cuda_conv, adaptive_avg_pool_matches_bit_for_bit) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(24);
  static const int64_t shapes[][6] = {{2, 3, 10, 7, 3, 4}, {1, 2, 5, 5, 7, 3}, {3, 1, 1, 9, 1, 2}};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const int64_t *s = shapes[i];
    em_tensor *x = tu_rand(&r, 4, s, -1, 1, false), *xd = tu_cuda(x);
    char what[48];
    snprintf(what, sizeof what, "adaptive case %zu", i);
    tu_assert_same(em_adaptive_avg_pool2d(x, (int)s[4], (int)s[5]),
                   em_adaptive_avg_pool2d(xd, (int)s[4], (int)s[5]), 0, 0, what);
    em_tensor *gy = tu_rand(&r, EM_SHAPE(s[0], s[1], s[4], s[5]), -1, 1, false);
    em_tensor *gx = empty_like_on(EM_DEVICE_CPU, x), *gxd = empty_like_on(xd->device, xd);
    cr_assert_eq(cpu_k()->adaptive_avg_pool2d_backward(gy, gx), EM_OK);
    cr_assert_eq(cuda_k()->adaptive_avg_pool2d_backward(tu_cuda(gy), gxd), EM_OK, "%s",
                 em_last_error());
    tu_assert_same(gx, gxd, 0, 0, what);
  }
  TU_END;
}

/* ---- batch norm ------------------------------------------------------------------------------ */
/* Forward through em_batch_norm (training updates the running statistics in place; eval uses
 * them), then the backward slot on both devices with the statistics their forward slots gave. */
static void check_bn(em_rng *r, int nd, const int64_t *shape, bool affine, bool training) {
  int64_t C = shape[1];
  em_tensor *x = tu_rand(r, nd, shape, -2, 3, false), *xd = tu_cuda(x);
  em_tensor *w = affine ? tu_rand(r, EM_SHAPE(C), 0.5f, 1.5f, false) : NULL;
  em_tensor *b = affine ? tu_rand(r, EM_SHAPE(C), -1, 1, false) : NULL;
  em_tensor *wd = w ? tu_cuda(w) : NULL, *bd = b ? tu_cuda(b) : NULL;
  em_tensor *rm = tu_rand(r, EM_SHAPE(C), -1, 1, false), *rv = tu_rand(r, EM_SHAPE(C), 1, 2, false);
  em_tensor *rmd = tu_cuda(rm), *rvd = tu_cuda(rv);
  char what[64];
  snprintf(what, sizeof what, "batch_norm %dd C=%lld %s%s", nd, (long long)C,
           training ? "train" : "eval", affine ? " affine" : "");
  tu_assert_same(em_batch_norm(x, w, b, rm, rv, training, 0.1f, 1e-5f),
                 em_batch_norm(xd, wd, bd, rmd, rvd, training, 0.1f, 1e-5f), 1e-5, 1e-5, what);
  tu_assert_same(rm, rmd, 1e-6, 1e-7, "running_mean");
  tu_assert_same(rv, rvd, 1e-6, 1e-7, "running_var");
  /* the slots: statistics, then every gradient */
  em_tensor *mean = em_empty(EM_F32, EM_SHAPE(C)), *var = em_empty(EM_F32, EM_SHAPE(C));
  em_tensor *meand = em__empty_on(xd->device, EM_F32, EM_SHAPE(C));
  em_tensor *vard = em__empty_on(xd->device, EM_F32, EM_SHAPE(C));
  if (!training) { /* eval: the running statistics are the inputs */
    mean = em_contiguous(rm);
    var = em_contiguous(rv);
    meand = rmd;
    vard = rvd;
  }
  em_tensor *y = empty_like_on(EM_DEVICE_CPU, x), *yd = empty_like_on(xd->device, xd);
  cr_assert_eq(cpu_k()->batch_norm(x, w, b, training, 1e-5f, y, mean, var), EM_OK);
  cr_assert_eq(cuda_k()->batch_norm(xd, wd, bd, training, 1e-5f, yd, meand, vard), EM_OK, "%s",
               em_last_error());
  tu_assert_same(mean, meand, 1e-5, 1e-6, "batch mean");
  tu_assert_same(var, vard, 1e-5, 1e-6, "batch var");
  em_tensor *gy = tu_rand(r, nd, shape, -1, 1, false), *gyd = tu_cuda(gy);
  em_tensor *dx = empty_like_on(EM_DEVICE_CPU, x), *dxd = empty_like_on(xd->device, xd);
  em_tensor *dw = em_empty(EM_F32, EM_SHAPE(C)), *db = em_empty(EM_F32, EM_SHAPE(C));
  em_tensor *dwd = em__empty_on(xd->device, EM_F32, EM_SHAPE(C));
  em_tensor *dbd = em__empty_on(xd->device, EM_F32, EM_SHAPE(C));
  cr_assert_eq(cpu_k()->batch_norm_backward(x, gy, mean, var, w, b, training, 1e-5f, dx,
                                            affine ? dw : NULL, affine ? db : NULL),
               EM_OK);
  cr_assert_eq(cuda_k()->batch_norm_backward(xd, gyd, meand, vard, wd, bd, training, 1e-5f, dxd,
                                             affine ? dwd : NULL, affine ? dbd : NULL),
               EM_OK, "%s", em_last_error());
  tu_assert_same(dx, dxd, 1e-4, 1e-5, "batch_norm dx");
  if (affine) {
    tu_assert_same(dw, dwd, 1e-5, 1e-5, "batch_norm dw");
    tu_assert_same(db, dbd, 1e-5, 1e-5, "batch_norm db");
  }
}

Test(cuda_conv, batch_norm_train_eval_and_running_stats) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(25);
  for (int t = 0; t < 2; t++)
    for (int a = 0; a < 2; a++) {
      check_bn(&r, 4, (int64_t[]){4, 3, 5, 6}, a, t);
      check_bn(&r, 2, (int64_t[]){8, 5}, a, t); /* (N, C): one value per channel and row */
      check_bn(&r, 3, (int64_t[]){3, 7, 33}, a, t);
      /* 1200 values per channel: more than a block's 256 threads, each striding over several */
      check_bn(&r, 4, (int64_t[]){12, 2, 10, 10}, a, t);
    }
  TU_END;
}

/* The running statistics may be views (strides): the update writes them where they lie. */
Test(cuda_conv, batch_norm_update_stats_on_strided_views) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(26);
  em_tensor *base = tu_rand(&r, EM_SHAPE(8), 0, 1, false), *based = tu_cuda(base);
  em_tensor *rm = em_slice(base, 0, 0, 8, 2), *rmd = em_slice(based, 0, 0, 8, 2); /* stride 2 */
  cr_assert(rmd && !em_is_contiguous(rmd) && em_shares_storage(rmd, based));
  em_tensor *mean = tu_rand(&r, EM_SHAPE(4), -1, 1, false),
            *var = tu_rand(&r, EM_SHAPE(4), 0, 1, false);
  cr_assert_eq(cpu_k()->batch_norm_update_stats(rm, NULL, mean, var, 0.25f, 10), EM_OK);
  cr_assert_eq(cuda_k()->batch_norm_update_stats(rmd, NULL, tu_cuda(mean), tu_cuda(var), 0.25f, 10),
               EM_OK, "%s", em_last_error());
  tu_assert_same(base, based, 0, 0, "running_mean view (and its untouched neighbours)");
  TU_END;
}
