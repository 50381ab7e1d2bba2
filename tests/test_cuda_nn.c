/* test_cuda_nn.c: the CUDA table's layer norm (forward, backward), fused optimizer updates (SGD
 * with momentum, dampening, nesterov and weight decay; Adam; AdamW) and 16-bit conversions
 * (to_half, from_half) against the CPU table, on cuda:0; every case skips without a CUDA device.
 *
 * The update slots are called directly, with the scalars that optim/optim.c's step computes, and
 * through the optimizers (em_sgd, em_adam, em_adamw over CUDA parameters: their state on the
 * GPU, em_step, em_zero_grad). */
#include "cudautil.h"

#include "core/kernels.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const em_kernels *cpu_k(void) { return em__kernels(EM_DEVICE_CPU); }
static const em_kernels *gpu_k(void) { return em__kernels(EM_DEVICE_CUDA(0)); }

static em_tensor *gpu_empty(int ndim, const int64_t *shape) {
  em_tensor *t = em__empty_on(EM_DEVICE_CUDA(0), EM_F32, ndim, shape);
  cr_assert_not_null(t, "%s", em_last_error());
  return t;
}
static em_tensor *cpu_empty(int ndim, const int64_t *shape) {
  em_tensor *t = em_empty(EM_F32, ndim, shape);
  cr_assert_not_null(t, "%s", em_last_error());
  return t;
}

static void ok(em_status st, const char *what) {
  cr_assert_eq(st, EM_OK, "%s: %s", what, em_last_error());
}

/* ---- layer norm ---------------------------------------------------------------------------------
 */
/* Bounds: both devices sum in float, in different orders (the CPU in 16 lanes, the GPU in a block
 * tree and, for dw/db, in row chunks): the mean, the variance and the backward's sums agree to
 * rounding, ~1e-6 of the values summed, and y, dx inherit that as an absolute error. */
#define LN_RTOL 1e-5
#define LN_ATOL 2e-5

static void check_layer_norm(em_rng *r, int64_t R, int64_t D, bool want_dx) {
  char what[96];
  snprintf(what, sizeof what, "layer_norm (%lld, %lld)%s", (long long)R, (long long)D,
           want_dx ? "" : " without dx");
  const float eps = 1e-5f;
  /* an offset and a scale per row, so that the mean and rstd are far from 0 and 1 */
  em_tensor *x = tu_rand(r, EM_SHAPE(R, D), -1, 1, false);
  for (int64_t i = 0; i < R * D; i++)
    em_set(x, i,
           em_get(x, i) * (1 + (double)(i / (D ? D : 1) % 5)) + (double)(i / (D ? D : 1) % 3));
  em_tensor *w = tu_rand(r, EM_SHAPE(D), 0.5, 1.5, false),
            *b = tu_rand(r, EM_SHAPE(D), -1, 1, false);
  em_tensor *xd = tu_cuda(x), *wd = tu_cuda(w), *bd = tu_cuda(b);
  em_tensor *y = cpu_empty(2, x->shape), *yd = gpu_empty(2, x->shape);
  em_tensor *mean = cpu_empty(1, &R), *rstd = cpu_empty(1, &R);
  em_tensor *meand = gpu_empty(1, &R), *rstdd = gpu_empty(1, &R);
  ok(cpu_k()->layer_norm(x, w, b, eps, y, mean, rstd), what);
  ok(gpu_k()->layer_norm(xd, wd, bd, eps, yd, meand, rstdd), what);
  tu_assert_same(mean, meand, 1e-6, 1e-6, what);
  tu_assert_same(rstd, rstdd, 1e-5, 0, what);
  tu_assert_same(y, yd, LN_RTOL, LN_ATOL, what);

  em_tensor *dy = tu_rand(r, EM_SHAPE(R, D), -1, 1, false), *dyd = tu_cuda(dy);
  em_tensor *dx = want_dx ? cpu_empty(2, x->shape) : NULL;
  em_tensor *dxd = want_dx ? gpu_empty(2, x->shape) : NULL;
  em_tensor *dw = cpu_empty(1, &D), *db = cpu_empty(1, &D);
  em_tensor *dwd = gpu_empty(1, &D), *dbd = gpu_empty(1, &D);
  /* both devices from the CPU's statistics, so only the backward's own sums differ */
  ok(cpu_k()->layer_norm_backward(x, dy, mean, rstd, w, dx, dw, db), what);
  ok(gpu_k()->layer_norm_backward(xd, dyd, tu_cuda(mean), tu_cuda(rstd), wd, dxd, dwd, dbd), what);
  if (want_dx) tu_assert_same(dx, dxd, LN_RTOL, LN_ATOL, what);
  /* dw, db: sums over R rows of terms of size ~1 */
  double atol = LN_ATOL * sqrt((double)(R > 1 ? R : 1));
  tu_assert_same(dw, dwd, LN_RTOL, atol, what);
  tu_assert_same(db, dbd, LN_RTOL, atol, what);
}

Test(cuda_nn, layer_norm_matches_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(21);
  /* 70000 rows: more than the 65535 blocks of the row kernels, which then stride */
  static const int64_t shapes[][2] = {{1, 1},    {4, 7},    {64, 768}, {300, 33},
                                      {9000, 5}, {2, 1500}, {0, 5},    {70000, 3}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int dx = 0; dx < 2; dx++) check_layer_norm(&r, shapes[s][0], shapes[s][1], dx);
  TU_END;
}

/* D == 0: the statistics are zeros, and the backward has nothing to write. */
Test(cuda_nn, layer_norm_empty_rows) {
  TU_NEED_CUDA();
  TU_BEGIN;
  int64_t R = 3, D = 0;
  em_tensor *xd = gpu_empty(2, (int64_t[]){R, D}), *wd = gpu_empty(1, &D), *bd = gpu_empty(1, &D);
  em_tensor *yd = gpu_empty(2, xd->shape), *meand = gpu_empty(1, &R), *rstdd = gpu_empty(1, &R);
  ok(gpu_k()->layer_norm(xd, wd, bd, 1e-5f, yd, meand, rstdd), "layer_norm D 0");
  em_tensor *zeros = em_zeros(EM_F32, 1, &R);
  tu_assert_same(zeros, meand, 0, 0, "mean, D 0");
  tu_assert_same(zeros, rstdd, 0, 0, "rstd, D 0");
  TU_END;
}

/* The front end (its slots are fill, copy_view and the layer norm's): over the last two dims, with
 * and without weight and bias; forward on a transposed (non-contiguous) x, and every gradient
 * through em_backward_ex (seeded on the output's device). */
Test(cuda_nn, layer_norm_front_end) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(22);
  for (int affine = 0; affine < 2; affine++) {
    em_tensor *w = affine ? tu_rand(&r, EM_SHAPE(4, 6), 0.5, 1.5, true) : NULL;
    em_tensor *b = affine ? tu_rand(&r, EM_SHAPE(4, 6), -1, 1, true) : NULL;
    em_tensor *wd = affine ? tu_cuda(w) : NULL, *bd = affine ? tu_cuda(b) : NULL;
    /* (6, 5, 4, 3) transposed: (3, 5, 4, 6) */
    em_tensor *xt = tu_rand(&r, EM_SHAPE(6, 5, 4, 3), -2, 2, false), *xtd = tu_cuda(xt);
    bool prev = em_no_grad_begin(); /* w and b require grad: no graph for this part */
    em_tensor *yt = em_layer_norm(em_transpose(xt, 0, 3), 2, w, b, 1e-5f);
    em_tensor *ytd = em_layer_norm(em_transpose(xtd, 0, 3), 2, wd, bd, 1e-5f);
    em_no_grad_end(prev);
    tu_assert_same(yt, ytd, LN_RTOL, LN_ATOL, "em_layer_norm, transposed x");

    em_tensor *x = tu_rand(&r, EM_SHAPE(3, 5, 4, 6), -2, 2, true), *xd = tu_cuda(x);
    em_tensor *y = em_layer_norm(x, 2, w, b, 1e-5f), *yd = em_layer_norm(xd, 2, wd, bd, 1e-5f);
    tu_assert_same(y, yd, LN_RTOL, LN_ATOL, "em_layer_norm");
    em_tensor *dy = tu_rand(&r, y->ndim, y->shape, -1, 1, false);
    ok(em_backward_ex(y, dy, NULL), "backward (cpu)");
    ok(em_backward_ex(yd, tu_cuda(dy), NULL), "backward (cuda)");
    tu_assert_same(x->grad, xd->grad, LN_RTOL, LN_ATOL, "em_layer_norm dx");
    if (affine) {
      tu_assert_same(w->grad, wd->grad, LN_RTOL, LN_ATOL * 4, "em_layer_norm dw");
      tu_assert_same(b->grad, bd->grad, LN_RTOL, LN_ATOL * 4, "em_layer_norm db");
    }
  }
  TU_END;
}

/* ---- optimizer updates --------------------------------------------------------------------------
 */
/* Several parameters of odd sizes, updated for a few steps with new random gradients each step on
 * both devices, compared after every step. Bounds: the same float expressions on both devices;
 * either may fuse a multiply-add (the CPU's AVX2/AVX-512 builds, nvcc), an ulp per operation, a few
 * ulps of the parameters after the steps. */
#define OPT_RTOL 2e-6
#define OPT_ATOL 1e-7
#define OPT_STEPS 4

static const int64_t opt_sizes[] = {1, 7, 1000, 70001};
#define OPT_N ((int)(sizeof opt_sizes / sizeof opt_sizes[0]))

typedef struct {
  em_tensor *p[OPT_N], *s0[OPT_N], *s1[OPT_N]; /* the parameter and its state (zeros) */
} opt_set;

/* The same random parameters on both devices, state zeros. */
static void opt_sets(em_rng *r, opt_set *c, opt_set *g) {
  for (int i = 0; i < OPT_N; i++) {
    c->p[i] = tu_rand(r, EM_SHAPE(opt_sizes[i]), -1, 1, false);
    c->s0[i] = em_zeros(EM_F32, 1, &opt_sizes[i]);
    c->s1[i] = em_zeros(EM_F32, 1, &opt_sizes[i]);
    g->p[i] = tu_cuda(c->p[i]);
    g->s0[i] = tu_cuda(c->s0[i]);
    g->s1[i] = tu_cuda(c->s1[i]);
  }
}

static float *f(em_tensor *t) { return (float *)em_data(t); }

typedef struct {
  double lr, wd, mom, damp;
  bool nesterov;
} sgd_cfg;

static void check_sgd(em_rng *r, const sgd_cfg *o) {
  char what[128];
  snprintf(what, sizeof what, "sgd lr %g wd %g momentum %g dampening %g%s", o->lr, o->wd, o->mom,
           o->damp, o->nesterov ? " nesterov" : "");
  opt_set c, g;
  opt_sets(r, &c, &g);
  for (int step = 0; step < OPT_STEPS; step++)
    for (int i = 0; i < OPT_N; i++) {
      em_tensor *gr = tu_rand(r, EM_SHAPE(opt_sizes[i]), -1, 1, false), *grd = tu_cuda(gr);
      bool momentum = o->mom != 0, first = step == 0;
      ok(cpu_k()->sgd_update(opt_sizes[i], f(c.p[i]), f(gr), momentum ? f(c.s0[i]) : NULL,
                             (float)o->lr, (float)o->wd, (float)o->mom, (float)o->damp, first,
                             o->nesterov),
         what);
      ok(gpu_k()->sgd_update(opt_sizes[i], f(g.p[i]), f(grd), momentum ? f(g.s0[i]) : NULL,
                             (float)o->lr, (float)o->wd, (float)o->mom, (float)o->damp, first,
                             o->nesterov),
         what);
      tu_assert_same(c.p[i], g.p[i], OPT_RTOL, OPT_ATOL, what);
      if (momentum) tu_assert_same(c.s0[i], g.s0[i], OPT_RTOL, OPT_ATOL, what);
    }
}

Test(cuda_nn, sgd_steps_match_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(23);
  static const sgd_cfg cfgs[] = {
      {0.1, 0, 0, 0, false},        {0.05, 1e-2, 0, 0, false}, {0.1, 0, 0.9, 0, false},
      {0.1, 1e-3, 0.9, 0.1, false}, {0.1, 1e-3, 0.9, 0, true}, {0.01, 0, 0.5, 0, true},
  };
  for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) check_sgd(&r, &cfgs[k]);
  TU_END;
}

typedef struct {
  double lr, b1, b2, eps, wd;
  bool adamw;
} adam_cfg;

static void check_adam(em_rng *r, const adam_cfg *o) {
  char what[128];
  snprintf(what, sizeof what, "%s lr %g betas %g %g eps %g weight decay %g",
           o->adamw ? "adamw" : "adam", o->lr, o->b1, o->b2, o->eps, o->wd);
  opt_set c, g;
  opt_sets(r, &c, &g);
  for (int step = 1; step <= OPT_STEPS; step++) {
    /* the scalars as optim/optim.c's step computes them (float64, rounded to float) */
    double bc1 = 1 - pow(o->b1, step), bc2 = 1 - pow(o->b2, step);
    float l2 = o->adamw ? 0.0f : (float)o->wd;
    float decay = o->adamw ? (float)(1 - o->lr * o->wd) : 1.0f;
    float nss = (float)-(o->lr / bc1), bc2s = (float)sqrt(bc2);
    for (int i = 0; i < OPT_N; i++) {
      em_tensor *gr = tu_rand(r, EM_SHAPE(opt_sizes[i]), -1, 1, false), *grd = tu_cuda(gr);
      ok(cpu_k()->adam_update(opt_sizes[i], f(c.p[i]), f(gr), f(c.s0[i]), f(c.s1[i]), (float)o->b1,
                              (float)o->b2, l2, decay, nss, bc2s, (float)o->eps),
         what);
      ok(gpu_k()->adam_update(opt_sizes[i], f(g.p[i]), f(grd), f(g.s0[i]), f(g.s1[i]), (float)o->b1,
                              (float)o->b2, l2, decay, nss, bc2s, (float)o->eps),
         what);
      tu_assert_same(c.p[i], g.p[i], OPT_RTOL, OPT_ATOL, what);
      tu_assert_same(c.s0[i], g.s0[i], OPT_RTOL, OPT_ATOL, what);
      tu_assert_same(c.s1[i], g.s1[i], OPT_RTOL, OPT_ATOL, what);
    }
  }
}

Test(cuda_nn, adam_and_adamw_steps_match_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(24);
  static const adam_cfg cfgs[] = {
      {1e-3, 0.9, 0.999, 1e-8, 0, false},
      {1e-2, 0.8, 0.99, 1e-6, 0.1, false},
      {1e-3, 0.9, 0.999, 1e-8, 1e-2, true},
  };
  for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) check_adam(&r, &cfgs[k]);
  TU_END;
}

/* The optimizers over CUDA parameters, against the same optimizers over their CPU copies: the
 * state arena on the GPU (optim/optim.c allocates it on the parameters' device), the update slots
 * with raw device pointers, a parameter without a gradient skipped, and em_zero_grad through the
 * zero slot. */
static em_optim *make_optim(int kind, em_tensor **p) {
  em_params ps = {.n = OPT_N, .t = p};
  em_optim *o = kind == 0   ? em_sgd(ps, .lr = 0.1, .momentum = 0.9, .weight_decay = 1e-3)
                : kind == 1 ? em_adam(ps, .lr = 1e-2, .weight_decay = 0.1)
                            : em_adamw(ps, .lr = 1e-3);
  cr_assert_not_null(o, "%s", em_last_error());
  return o;
}

static void check_optim_front_end(em_rng *r, int kind) {
  static const char *names[] = {"em_sgd (momentum)", "em_adam", "em_adamw"};
  em_tensor *pc[OPT_N], *pg[OPT_N];
  for (int i = 0; i < OPT_N; i++) {
    pc[i] = tu_rand(r, EM_SHAPE(opt_sizes[i]), -1, 1, true);
    pg[i] = tu_cuda(pc[i]);
  }
  em_optim *oc = make_optim(kind, pc), *og = make_optim(kind, pg);
  for (int step = 0; step < OPT_STEPS; step++) {
    for (int i = 0; i < OPT_N; i++) {
      bool skip = step == 1 && i == 1; /* no gradient: not updated, its step count stays */
      em_tensor *gr = skip ? NULL : tu_rand(r, EM_SHAPE(opt_sizes[i]), -1, 1, false);
      ok(em_set_grad(pc[i], gr), "set_grad (cpu)");
      ok(em_set_grad(pg[i], gr ? tu_cuda(gr) : NULL), "set_grad (cuda)");
    }
    ok(em_step(oc), "step (cpu)");
    ok(em_step(og), "step (cuda)");
    for (int i = 0; i < OPT_N; i++) tu_assert_same(pc[i], pg[i], OPT_RTOL, OPT_ATOL, names[kind]);
    int ns = em_optim_num_state(og);
    cr_assert_eq(ns, em_optim_num_state(oc));
    for (int k = 0; k < ns; k++) {
      const char *name;
      em_tensor *sc = em_optim_state_at(oc, k, &name), *sg = em_optim_state_at(og, k, NULL);
      if (sc->dtype == EM_I64) { /* param_steps: host bookkeeping on both */
        for (int i = 0; i < OPT_N; i++) cr_assert_eq(em_get(sg, i), em_get(sc, i), "%s", name);
        continue;
      }
      tu_assert_same(sc, sg, OPT_RTOL, OPT_ATOL, name); /* asserts sg is on the GPU */
    }
  }
  ok(em_zero_grad(og), "zero_grad (cuda)");
  for (int i = 0; i < OPT_N; i++)
    tu_assert_same(em_zeros(EM_F32, 1, &opt_sizes[i]), pg[i]->grad, 0, 0, "zero_grad");
  em_optim_free(oc);
  em_optim_free(og);
}

Test(cuda_nn, optimizers_over_cuda_parameters) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(25);
  for (int kind = 0; kind < 3; kind++) check_optim_front_end(&r, kind);
  TU_END;
}

/* ---- 16-bit conversions -------------------------------------------------------------------------
 */
/* NaN in either 16-bit format: all exponent bits set and a nonzero mantissa. */
static bool half_is_nan(em_dtype dt, uint16_t h) {
  return dt == EM_BF16 ? (h & 0x7f80u) == 0x7f80u && (h & 0x7fu)
                       : (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
}

/* to_half (scale * x, rounded to nearest even) and from_half on raw device memory: the CPU's bits
 * exactly (em_half.h), NaN payloads aside. x: every kind of float (random bit patterns: NaN,
 * infinities, subnormals, values past the 16-bit range) and values within f16's range down to its
 * subnormals, plus exact ties; the 16-bit inputs of from_half are every pattern. */
Test(cuda_nn, half_conversions_match_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(26);
  int64_t n = 70001;
  em_tensor *x = cpu_empty(1, &n);
  float *px = f(x);
  static const float specials[] = {0.0f,  -0.0f,       INFINITY,    -INFINITY,
                                   NAN,   65504.0f,    65520.0f,    6e-8f,
                                   3e-8f, 1.00390625f, 1.01171875f, 1.00048828125f};
  int64_t ns = (int64_t)(sizeof specials / sizeof specials[0]);
  for (int64_t i = 0; i < n; i++) {
    uint64_t u = em_rng_next_u64(&r);
    if (i < ns) {
      px[i] = specials[i];
    } else if (i % 2) { /* any bit pattern */
      uint32_t bits = (uint32_t)u;
      memcpy(&px[i], &bits, sizeof bits);
    } else { /* within f16's range, its subnormals included */
      float m = (float)(u >> 40) / 16777216.0f + 0.5f;
      px[i] = ldexpf((u & 1) ? -m : m, (int)((u >> 1) % 46) - 28);
    }
  }
  em_tensor *xd = tu_cuda(x);
  static const em_dtype dts[] = {EM_BF16, EM_F16};
  static const float scales[] = {1.0f, 0.3f};
  for (int d = 0; d < 2; d++)
    for (int s = 0; s < 2; s++) {
      char what[64];
      snprintf(what, sizeof what, "to_half %s scale %g", em_dtype_name(dts[d]), scales[s]);
      em_tensor *hc = em_empty(dts[d], 1, &n);
      em_tensor *hd = em__empty_on(EM_DEVICE_CUDA(0), dts[d], 1, &n);
      cr_assert(hc && hd, "%s", em_last_error());
      ok(cpu_k()->to_half(0, dts[d], (uint16_t *)em_data(hc), px, n, scales[s]), what);
      ok(gpu_k()->to_half(0, dts[d], (uint16_t *)em_data(hd), (const float *)em_data(xd), n,
                          scales[s]),
         what);
      const uint16_t *a = (const uint16_t *)em_data(hc),
                     *b = (const uint16_t *)em_data(tu_host(hd));
      for (int64_t i = 0; i < n; i++)
        cr_assert(a[i] == b[i] || (half_is_nan(dts[d], a[i]) && half_is_nan(dts[d], b[i])),
                  "%s: element %lld (%.9g): cuda 0x%04x, cpu 0x%04x", what, (long long)i,
                  (double)px[i], b[i], a[i]);
    }
  /* from_half: every 16-bit pattern */
  int64_t m = 65536;
  for (int d = 0; d < 2; d++) {
    em_tensor *h = em_empty(dts[d], 1, &m);
    uint16_t *ph = (uint16_t *)em_data(h);
    for (int64_t i = 0; i < m; i++) ph[i] = (uint16_t)i;
    em_tensor *yc = cpu_empty(1, &m), *yd = gpu_empty(1, &m);
    ok(cpu_k()->from_half(0, dts[d], f(yc), ph, m), "from_half (cpu)");
    ok(gpu_k()->from_half(0, dts[d], (float *)em_data(yd), (const uint16_t *)em_data(tu_cuda(h)),
                          m),
       "from_half (cuda)");
    tu_assert_same(yc, yd, 0, 0, dts[d] == EM_BF16 ? "from_half bf16" : "from_half f16");
  }
  TU_END;
}
