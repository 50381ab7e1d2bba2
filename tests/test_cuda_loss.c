/* test_cuda_loss.c: the CUDA table's losses (cross_entropy, nll, mse and their backwards),
 * embedding, dropout and linear's bias gradient against the CPU table, on cuda:0; every case
 * skips without a CUDA device.
 *
 * The kernels are called through the tables (em__kernels(dev)->slot) with the same inputs on both
 * devices: the front ends of cross_entropy, nll_loss and embedding also need check_index, and
 * dropout's backward em_mul, slots of other CUDA families. Where the CUDA table has those, the
 * front-end cases run too (forward and, via em_backward_ex, the gradients). */
#include "cudautil.h"

#include "core/kernels.h"

#include <math.h>
#include <stdio.h>

static const em_kernels *cpu_k(void) { return em__kernels(EM_DEVICE_CPU); }
static const em_kernels *gpu_k(void) { return em__kernels(EM_DEVICE_CUDA(0)); }

/* An uninitialised (poisoned) f32 or other tensor on cuda:0, or on the CPU. */
static em_tensor *gpu_empty(em_dtype dt, int ndim, const int64_t *shape) {
  em_tensor *t = em__empty_on(EM_DEVICE_CUDA(0), dt, ndim, shape);
  cr_assert_not_null(t, "%s", em_last_error());
  return t;
}
static em_tensor *cpu_empty(em_dtype dt, int ndim, const int64_t *shape) {
  em_tensor *t = em_empty(dt, ndim, shape);
  cr_assert_not_null(t, "%s", em_last_error());
  return t;
}

static void ok(em_status st, const char *what) {
  cr_assert_eq(st, EM_OK, "%s: %s", what, em_last_error());
}

/* N labels in [0, C), every third one (when ignore_some) set to ignore; *count = the others. */
static em_tensor *make_labels(em_rng *r, int64_t N, int64_t C, em_dtype dt, bool ignore_some,
                              int64_t ignore, int64_t *count) {
  em_tensor *t = cpu_empty(dt, 1, &N);
  *count = 0;
  for (int64_t i = 0; i < N; i++) {
    int64_t y = (int64_t)(em_rng_next_u64(r) % (uint64_t)(C > 0 ? C : 1));
    if (C == 0 || (ignore_some && i % 3 == 1))
      y = ignore;
    else
      (*count)++;
    em_set(t, i, (double)y);
  }
  return t;
}

static const char *red_name(em_reduction red) {
  return red == EM_REDUCE_MEAN ? "mean" : red == EM_REDUCE_SUM ? "sum" : "none";
}

/* ---- cross entropy ------------------------------------------------------------------------------
 */
/* lse and the loss, then the gradient for a random upstream gradient, on both devices.
 * Bounds: the CPU's exp is a polynomial (~1 ulp), the GPU's expf another (~2 ulp), and the row
 * sums are float64 in different orders, so lse agrees to a few float ulps; the loss l = lse - x_y
 * is a difference (absolute error ~ulp(lse)), and so is the label's gradient s (p - 1). */
static void check_cross_entropy(em_rng *r, int64_t N, int64_t C, em_dtype ldt, bool ignore_some,
                                em_reduction red) {
  char what[160];
  snprintf(what, sizeof what, "cross_entropy (%lld, %lld) %s labels, %s%s", (long long)N,
           (long long)C, em_dtype_name(ldt), red_name(red), ignore_some ? ", some ignored" : "");
  const int64_t ignore = -100;
  int64_t count;
  em_tensor *x = tu_rand(r, EM_SHAPE(N, C), -6, 6, false);
  em_tensor *lab = make_labels(r, N, C, ldt, ignore_some, ignore, &count);
  em_tensor *xd = tu_cuda(x), *labd = tu_cuda(lab);
  bool none = red == EM_REDUCE_NONE;
  em_tensor *lse = cpu_empty(EM_F32, 1, &N), *lsed = gpu_empty(EM_F32, 1, &N);
  em_tensor *loss = none ? cpu_empty(EM_F32, 1, &N) : cpu_empty(EM_F32, 0, NULL);
  em_tensor *lossd = none ? gpu_empty(EM_F32, 1, &N) : gpu_empty(EM_F32, 0, NULL);
  ok(cpu_k()->cross_entropy(x, lab, ignore, red, count, lse, loss), what);
  ok(gpu_k()->cross_entropy(xd, labd, ignore, red, count, lsed, lossd), what);
  tu_assert_same(lse, lsed, 1e-6, 2e-6, what);
  tu_assert_same(loss, lossd, 1e-5, 1e-5, what);

  em_tensor *gy = none ? tu_rand(r, EM_SHAPE(N), -1, 1, false) : tu_rand(r, 0, NULL, 0.5, 2, false);
  em_tensor *gyd = tu_cuda(gy);
  double scale = red == EM_REDUCE_MEAN ? 1.0 / (double)count : 1.0;
  em_tensor *gx = cpu_empty(EM_F32, 2, x->shape), *gxd = gpu_empty(EM_F32, 2, x->shape);
  ok(cpu_k()->cross_entropy_backward(x, lab, lse, ignore, gy, red, scale, gx), what);
  ok(gpu_k()->cross_entropy_backward(xd, labd, lsed, ignore, gyd, red, scale, gxd), what);
  tu_assert_same(gx, gxd, 1e-5, 1e-6, what);
}

Test(cuda_loss, cross_entropy_matches_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(11);
  /* 70000 rows: more than the forward's 65535 blocks, which then stride over the rows */
  static const int64_t shapes[][2] = {{1, 1},   {7, 10}, {33, 1000}, {5, 3001},
                                      {300, 3}, {0, 4},  {70000, 2}};
  static const em_reduction reds[] = {EM_REDUCE_NONE, EM_REDUCE_SUM, EM_REDUCE_MEAN};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (size_t k = 0; k < 3; k++)
      for (int w = 0; w < 2; w++)
        for (int ig = 0; ig < 2; ig++) {
          if (shapes[s][0] == 0 && reds[k] == EM_REDUCE_MEAN) continue; /* NaN: below */
          check_cross_entropy(&r, shapes[s][0], shapes[s][1], w ? EM_I64 : EM_I32, ig, reds[k]);
        }
  TU_END;
}

/* Every row ignored: lse and the losses 0, a mean over no rows NaN (0 / 0), as on the CPU; also
 * C == 0, which only ignored rows allow. */
Test(cuda_loss, cross_entropy_all_ignored) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(12);
  for (int64_t C = 0; C <= 5; C += 5) {
    int64_t N = 4, count;
    em_tensor *x = tu_rand(&r, EM_SHAPE(N, C), -1, 1, false);
    em_tensor *lab = make_labels(&r, N, 0, EM_I64, false, -1, &count);
    cr_assert_eq(count, 0);
    em_tensor *lsed = gpu_empty(EM_F32, 1, &N), *sumd = gpu_empty(EM_F32, 0, NULL);
    em_tensor *meand = gpu_empty(EM_F32, 0, NULL);
    ok(gpu_k()->cross_entropy(tu_cuda(x), tu_cuda(lab), -1, EM_REDUCE_SUM, 0, lsed, sumd), "sum");
    ok(gpu_k()->cross_entropy(tu_cuda(x), tu_cuda(lab), -1, EM_REDUCE_MEAN, 0, lsed, meand),
       "mean");
    em_tensor *lse = tu_host(lsed);
    for (int64_t i = 0; i < N; i++) cr_assert_eq(em_get(lse, i), 0.0, "lse[%lld]", (long long)i);
    cr_assert_eq(em_get(tu_host(sumd), 0), 0.0);
    cr_assert(isnan(em_get(tu_host(meand), 0)), "a mean over no rows is NaN");
  }
  TU_END;
}

/* ---- nll ----------------------------------------------------------------------------------------
 */
/* logp is a transposed view (strides (1, N)) when transposed: the slot reads any strides. The
 * loss is a gather (exact), its reduction a float64 sum in another order (an ulp). */
static void check_nll(em_rng *r, int64_t N, int64_t C, bool transposed, em_dtype ldt,
                      em_reduction red) {
  char what[160];
  snprintf(what, sizeof what, "nll (%lld, %lld)%s %s labels, %s", (long long)N, (long long)C,
           transposed ? " transposed" : "", em_dtype_name(ldt), red_name(red));
  const int64_t ignore = 2;
  int64_t count;
  em_tensor *base = transposed ? tu_rand(r, EM_SHAPE(C, N), -5, 0, false)
                               : tu_rand(r, EM_SHAPE(N, C), -5, 0, false);
  em_tensor *based = tu_cuda(base);
  em_tensor *logp = transposed ? em_transpose(base, 0, 1) : base;
  em_tensor *logpd = transposed ? em_transpose(based, 0, 1) : based;
  cr_assert(logp && logpd, "%s", em_last_error());
  em_tensor *lab = make_labels(r, N, C, ldt, true, ignore, &count);
  em_tensor *labd = tu_cuda(lab);
  bool none = red == EM_REDUCE_NONE;
  em_tensor *loss = none ? cpu_empty(EM_F32, 1, &N) : cpu_empty(EM_F32, 0, NULL);
  em_tensor *lossd = none ? gpu_empty(EM_F32, 1, &N) : gpu_empty(EM_F32, 0, NULL);
  ok(cpu_k()->nll(logp, lab, ignore, red, count, loss), what);
  ok(gpu_k()->nll(logpd, labd, ignore, red, count, lossd), what);
  tu_assert_same(loss, lossd, none ? 0 : 1e-6, 0, what);

  em_tensor *gy = none ? tu_rand(r, EM_SHAPE(N), -1, 1, false) : tu_rand(r, 0, NULL, 0.5, 2, false);
  double scale = red == EM_REDUCE_MEAN ? 1.0 / (double)count : 1.0;
  int64_t shape[2] = {N, C};
  em_tensor *gx = cpu_empty(EM_F32, 2, shape), *gxd = gpu_empty(EM_F32, 2, shape);
  ok(cpu_k()->nll_backward(lab, ignore, gy, red, scale, gx), what);
  ok(gpu_k()->nll_backward(labd, ignore, tu_cuda(gy), red, scale, gxd), what);
  tu_assert_same(gx, gxd, 0, 0, what);
}

Test(cuda_loss, nll_matches_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(13);
  static const int64_t shapes[][2] = {{1, 3}, {9, 5}, {1000, 17}, {4097, 3}, {0, 3}};
  static const em_reduction reds[] = {EM_REDUCE_NONE, EM_REDUCE_SUM, EM_REDUCE_MEAN};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (size_t k = 0; k < 3; k++)
      for (int t = 0; t < 2; t++) {
        if (shapes[s][0] == 0 && reds[k] == EM_REDUCE_MEAN) continue;
        check_nll(&r, shapes[s][0], shapes[s][1], t, t ? EM_I32 : EM_I64, reds[k]);
      }
  TU_END;
}

/* ---- mse ----------------------------------------------------------------------------------------
 */
/* Per element: exact (one subtraction, one product). Reduced: float64 sums in another order,
 * rounded to float (an ulp). Backward: the same products as the CPU, exact. */
static void check_mse(em_rng *r, int ndim, const int64_t *shape, em_reduction red) {
  char what[96];
  snprintf(what, sizeof what, "mse %lld elements, %s", (long long)em__shape_numel(ndim, shape),
           red_name(red));
  em_tensor *a = tu_rand(r, ndim, shape, -2, 2, false), *b = tu_rand(r, ndim, shape, -2, 2, false);
  em_tensor *ad = tu_cuda(a), *bd = tu_cuda(b);
  bool none = red == EM_REDUCE_NONE;
  em_tensor *loss = none ? cpu_empty(EM_F32, ndim, shape) : cpu_empty(EM_F32, 0, NULL);
  em_tensor *lossd = none ? gpu_empty(EM_F32, ndim, shape) : gpu_empty(EM_F32, 0, NULL);
  ok(cpu_k()->mse(a, b, red, loss), what);
  ok(gpu_k()->mse(ad, bd, red, lossd), what);
  tu_assert_same(loss, lossd, none ? 0 : 1e-6, 0, what);

  em_tensor *gy = none ? tu_rand(r, ndim, shape, -1, 1, false) : tu_rand(r, 0, NULL, 0.5, 2, false);
  double scale = red == EM_REDUCE_MEAN ? 1.0 / (double)em_numel(a) : 1.0;
  em_tensor *ga = cpu_empty(EM_F32, ndim, shape), *gad = gpu_empty(EM_F32, ndim, shape);
  ok(cpu_k()->mse_backward(a, b, gy, red, scale, ga), what);
  ok(gpu_k()->mse_backward(ad, bd, tu_cuda(gy), red, scale, gad), what);
  tu_assert_same(ga, gad, 0, 0, what);
}

Test(cuda_loss, mse_matches_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(14);
  static const em_reduction reds[] = {EM_REDUCE_NONE, EM_REDUCE_SUM, EM_REDUCE_MEAN};
  for (size_t k = 0; k < 3; k++) {
    check_mse(&r, EM_SHAPE(1), reds[k]);
    check_mse(&r, EM_SHAPE(3, 333, 7), reds[k]);
    check_mse(&r, EM_SHAPE(300001), reds[k]); /* more blocks than the 1024 partial sums */
    if (reds[k] != EM_REDUCE_MEAN) check_mse(&r, EM_SHAPE(0, 5), reds[k]);
  }
  TU_END;
}

/* The mse front end runs on the loss slots alone: forward, and the gradient of a (b does not
 * require grad: its gradient would need em_neg). */
Test(cuda_loss, mse_front_end) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(15);
  em_tensor *a = tu_rand(&r, EM_SHAPE(17, 9), -1, 1, true);
  em_tensor *b = tu_rand(&r, EM_SHAPE(17, 9), -1, 1, false);
  em_tensor *ad = tu_cuda(a), *bd = tu_cuda(b);
  em_tensor *l = em_mse_loss(a, b, EM_REDUCE_MEAN), *ld = em_mse_loss(ad, bd, EM_REDUCE_MEAN);
  tu_assert_same(l, ld, 1e-6, 0, "mse_loss mean");
  ok(em_backward(l), "backward (cpu)");
  /* the seed on the loss's device */
  em_tensor *seed = em_to(em_scalar(1.0f), EM_DEVICE_CUDA(0));
  ok(em_backward_ex(ld, seed, NULL), "backward (cuda)");
  tu_assert_same(a->grad, ad->grad, 1e-6, 1e-9, "mse_loss d/da");
  TU_END;
}

/* The cross-entropy and nll front ends, once the CUDA table has check_index (another family):
 * forward and the gradient of the logits through em_backward_ex. */
Test(cuda_loss, cross_entropy_and_nll_front_ends) {
  TU_NEED_CUDA();
  if (!gpu_k()->check_index) cr_skip_test("check_index is not in the CUDA table yet");
  TU_BEGIN;
  em_rng r = em_rng_new(16);
  int64_t count;
  em_tensor *x = tu_rand(&r, EM_SHAPE(13, 37), -3, 3, true);
  em_tensor *lab = make_labels(&r, 13, 37, EM_I64, true, -100, &count);
  em_tensor *xd = tu_cuda(x), *labd = tu_cuda(lab);
  em_tensor *l = em_cross_entropy(x, lab), *ld = em_cross_entropy(xd, labd);
  tu_assert_same(l, ld, 1e-5, 1e-6, "em_cross_entropy");
  em_tensor *seed = em_to(em_scalar(1.0f), EM_DEVICE_CUDA(0));
  ok(em_backward(l), "backward (cpu)");
  ok(em_backward_ex(ld, seed, NULL), "backward (cuda)");
  tu_assert_same(x->grad, xd->grad, 1e-5, 1e-7, "em_cross_entropy d/dx");

  em_tensor *p = tu_rand(&r, EM_SHAPE(13, 37), -4, 0, true), *pd = tu_cuda(p);
  em_tensor *n = em_nll_loss(p, lab, EM_REDUCE_SUM, -100);
  em_tensor *nd = em_nll_loss(pd, labd, EM_REDUCE_SUM, -100);
  tu_assert_same(n, nd, 1e-6, 0, "em_nll_loss");
  ok(em_backward(n), "backward (cpu)");
  ok(em_backward_ex(nd, seed, NULL), "backward (cuda)");
  tu_assert_same(p->grad, pd->grad, 0, 0, "em_nll_loss d/dlogp");
  TU_END;
}

/* ---- embedding ----------------------------------------------------------------------------------
 */
/* The lookup is a copy (exact). The backward adds repeated rows with atomicAdd in the GPU's order:
 * rounding of sums of a few terms, hence the small bound (rows hit once are exact). */
static void check_embedding(em_rng *r, int64_t V, int64_t D, int64_t n) {
  char what[96];
  snprintf(what, sizeof what, "embedding V %lld D %lld, %lld indices", (long long)V, (long long)D,
           (long long)n);
  em_tensor *w = tu_rand(r, EM_SHAPE(V, D), -1, 1, false);
  em_tensor *ix = cpu_empty(EM_I64, 1, &n);
  for (int64_t p = 0; p < n; p++) /* small range: indices repeat */
    em_set(ix, p, (double)(em_rng_next_u64(r) % (uint64_t)(V < 4 ? V : V / 2 + 1)));
  em_tensor *wd = tu_cuda(w), *ixd = tu_cuda(ix);
  int64_t oshape[2] = {n, D};
  em_tensor *out = cpu_empty(EM_F32, 2, oshape), *outd = gpu_empty(EM_F32, 2, oshape);
  ok(cpu_k()->embedding(w, ix, out), what);
  ok(gpu_k()->embedding(wd, ixd, outd), what);
  tu_assert_same(out, outd, 0, 0, what);

  em_tensor *gy = tu_rand(r, 2, oshape, -1, 1, false);
  em_tensor *gw = cpu_empty(EM_F32, 2, w->shape), *gwd = gpu_empty(EM_F32, 2, w->shape);
  ok(cpu_k()->embedding_backward(ix, gy, gw), what);
  ok(gpu_k()->embedding_backward(ixd, tu_cuda(gy), gwd), what);
  tu_assert_same(gw, gwd, 1e-6, 1e-6, what);
}

Test(cuda_loss, embedding_matches_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(17);
  check_embedding(&r, 1, 1, 1);
  check_embedding(&r, 10, 7, 25);
  check_embedding(&r, 1000, 33, 513);
  check_embedding(&r, 50, 768, 64);
  check_embedding(&r, 5, 3, 0);
  TU_END;
}

/* ---- dropout ------------------------------------------------------------------------------------
 */
/* The mask is the CPU's bit for bit (the same counter-based draws), so are y (one product), and
 * the generator's counter after the call; twice in a row, so the second call starts where the
 * first left the counter. p == 1 makes no draws and may have no generator. */
static void check_dropout(em_rng *r, int64_t n, float p) {
  char what[96];
  snprintf(what, sizeof what, "dropout %lld elements, p %g", (long long)n, p);
  em_tensor *x = tu_rand(r, EM_SHAPE(n), -1, 1, false), *xd = tu_cuda(x);
  em_rng gc = em_rng_new(99), gg = em_rng_new(99);
  gc.counter = gg.counter = 12345; /* a generator that has been used */
  for (int call = 0; call < 2; call++) {
    em_tensor *m = cpu_empty(EM_F32, 1, &n), *y = cpu_empty(EM_F32, 1, &n);
    em_tensor *md = gpu_empty(EM_F32, 1, &n), *yd = gpu_empty(EM_F32, 1, &n);
    ok(cpu_k()->dropout(x, p, p == 1.0f ? NULL : &gc, m, y), what);
    ok(gpu_k()->dropout(xd, p, p == 1.0f ? NULL : &gg, md, yd), what);
    tu_assert_same(m, md, 0, 0, what);
    tu_assert_same(y, yd, 0, 0, what);
    cr_assert_eq(gg.counter, gc.counter, "%s: rng counter cuda %llu, cpu %llu", what,
                 (unsigned long long)gg.counter, (unsigned long long)gc.counter);
    cr_assert_eq(gc.counter, 12345 + (p == 1.0f ? 0 : (uint64_t)(call + 1) * (uint64_t)n),
                 "%s: the cpu's draws", what);
  }
}

Test(cuda_loss, dropout_is_bit_exact) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(18);
  static const float ps[] = {0.1f, 0.5f, 0.999f, 1.0f};
  for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
    check_dropout(&r, 1, ps[k]);
    check_dropout(&r, 1000, ps[k]);
    check_dropout(&r, 100003, ps[k]);
    check_dropout(&r, 0, ps[k]);
  }
  TU_END;
}

/* The dropout front end (forward): the same mask from the same seed on both devices. */
Test(cuda_loss, dropout_front_end) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(19);
  em_tensor *x = tu_rand(&r, EM_SHAPE(6, 50, 7), -1, 1, false), *xd = tu_cuda(x);
  em_rng gc = em_rng_new(5), gg = em_rng_new(5);
  /* a transposed view: the front end makes it contiguous first (copy_view) */
  em_tensor *y = em_dropout(em_transpose(x, 0, 2), 0.3f, true, &gc);
  em_tensor *yd = em_dropout(em_transpose(xd, 0, 2), 0.3f, true, &gg);
  tu_assert_same(y, yd, 0, 0, "em_dropout");
  cr_assert_eq(gg.counter, gc.counter);
  TU_END;
}

/* ---- linear's bias gradient ---------------------------------------------------------------------
 */
/* db (+)= the rows of dy added one after another: the CPU's order, so bit for bit. */
static void check_bias_grad(em_rng *r, int64_t R, int64_t N, bool accumulate) {
  char what[96];
  snprintf(what, sizeof what, "linear_bias_grad (%lld, %lld)%s", (long long)R, (long long)N,
           accumulate ? " accumulate" : "");
  em_tensor *dy = tu_rand(r, EM_SHAPE(R, N), -1, 1, false);
  em_tensor *db = tu_rand(r, EM_SHAPE(N), -1, 1, false); /* the sum to add to, or overwritten */
  em_tensor *dbd = tu_cuda(db);
  ok(cpu_k()->linear_bias_grad(dy, db, accumulate), what);
  ok(gpu_k()->linear_bias_grad(tu_cuda(dy), dbd, accumulate), what);
  tu_assert_same(db, dbd, 0, 0, what);
}

Test(cuda_loss, linear_bias_grad_is_bit_exact) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(20);
  static const int64_t shapes[][2] = {{1, 1}, {7, 5}, {257, 300}, {4096, 3}, {0, 4}, {3, 1030}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int acc = 0; acc < 2; acc++) check_bias_grad(&r, shapes[s][0], shapes[s][1], acc);
  TU_END;
}
