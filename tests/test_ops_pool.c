/* test_ops_pool.c: em_max_pool2d, em_avg_pool2d (count_include_pad on and off) and
 * em_adaptive_avg_pool2d (divisible and not) against float64 loops, gradients by finite
 * differences (max pool on distinct, well separated values so that no step changes the argmax),
 * and the shape checks. */
#include "testutil.h"

#include <math.h>

/* (N, C, H, W) with the values of a random permutation of 0..n-1, scaled to [-2, 2): distinct
 * and at least 4/n apart. */
static em_tensor *distinct(em_rng *r, int64_t N, int64_t C, int64_t H, int64_t W, bool grad) {
  int64_t n = N * C * H * W;
  float *v = malloc((size_t)n * sizeof *v);
  int64_t *perm = malloc((size_t)n * sizeof *perm);
  em_rng_permutation(r, perm, n);
  for (int64_t i = 0; i < n; i++) v[i] = (float)perm[i] * 4.0f / (float)n - 2.0f;
  free(perm);
  em_tensor *t = em_from_data(EM_F32, EM_SHAPE(N, C, H, W), v);
  free(v);
  if (grad) em_set_requires_grad(t, true);
  return t;
}

typedef enum { REF_MAX, REF_AVG_INC, REF_AVG_EXC } ref_kind;

static double *ref_pool(const em_tensor *x, const em_pool2d_opts *o, ref_kind kind, int64_t *oh_out,
                        int64_t *ow_out) {
  int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  int kh = o->kernel[0], kw = o->kernel[1];
  int sh = o->stride[0] ? o->stride[0] : kh, sw = o->stride[1] ? o->stride[1] : kw;
  int ph = o->padding[0], pw = o->padding[1];
  int64_t OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
  double *y = calloc((size_t)(N * C * OH * OW) + 1, sizeof *y);
  for (int64_t p = 0; p < N * C; p++)
    for (int64_t i = 0; i < OH; i++)
      for (int64_t j = 0; j < OW; j++) {
        double acc = kind == REF_MAX ? -INFINITY : 0;
        int count = 0;
        for (int a = 0; a < kh; a++)
          for (int b = 0; b < kw; b++) {
            int64_t h = i * sh - ph + a, w = j * sw - pw + b;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            double v = em_get(x, (p * H + h) * W + w);
            acc = kind == REF_MAX ? fmax(acc, v) : acc + v;
            count++;
          }
        if (kind == REF_AVG_INC) acc /= kh * kw;
        if (kind == REF_AVG_EXC) acc /= count;
        y[(p * OH + i) * OW + j] = acc;
      }
  *oh_out = OH;
  *ow_out = OW;
  return y;
}

static void check_pool(em_tensor *x, const em_pool2d_opts *o, ref_kind kind, const char *what) {
  int64_t OH, OW;
  double *ref = ref_pool(x, o, kind, &OH, &OW);
  em_tensor *y = kind == REF_MAX ? em_max_pool2d(x, o) : em_avg_pool2d(x, o);
  cr_assert_not_null(y, "%s: %s", what, em_last_error());
  cr_assert(y->ndim == 4 && y->shape[0] == x->shape[0] && y->shape[1] == x->shape[1] &&
                y->shape[2] == OH && y->shape[3] == OW,
            "%s: output %lldx%lld, expected %lldx%lld", what, (long long)y->shape[2],
            (long long)y->shape[3], (long long)OH, (long long)OW);
  tu_assert_close(y, ref, em_numel(y), 1e-5, 1e-6, what);
  free(ref);
}

Test(max_pool2d, forward) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(1);
  em_tensor *x = distinct(&r, 2, 3, 8, 7, false);
  check_pool(x, &(em_pool2d_opts){.kernel = {2, 2}}, REF_MAX, "2x2");
  check_pool(x, &(em_pool2d_opts){.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}}, REF_MAX,
             "3x3 stride 2 padding 1");
  check_pool(x, &(em_pool2d_opts){.kernel = {2, 3}, .stride = {1, 2}, .padding = {1, 0}}, REF_MAX,
             "2x3 stride 1x2 padding 1x0");
  check_pool(x, &(em_pool2d_opts){.kernel = {8, 7}}, REF_MAX, "global");
  /* inference (no graph): the primitive without workspace */
  bool prev = em_no_grad_begin();
  check_pool(x, &(em_pool2d_opts){.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}}, REF_MAX,
             "3x3 stride 2 padding 1, no grad");
  em_no_grad_end(prev);
  /* all-negative windows at the padded border: padding never wins */
  em_tensor *neg = em_full(EM_F32, EM_SHAPE(1, 1, 3, 3), -5.0);
  check_pool(neg, &(em_pool2d_opts){.kernel = {2, 2}, .stride = {1, 1}, .padding = {1, 1}}, REF_MAX,
             "negative input with padding");
  em_scope_end(s);
}

Test(avg_pool2d, forward) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(2);
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 3, 7, 6), -1, 1, false);
  check_pool(x, &(em_pool2d_opts){.kernel = {2, 2}}, REF_AVG_EXC, "2x2");
  em_pool2d_opts inc = {
      .kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .count_include_pad = true};
  check_pool(x, &inc, REF_AVG_INC, "3x3 stride 2 padding 1, count_include_pad");
  em_pool2d_opts exc = inc;
  exc.count_include_pad = false;
  check_pool(x, &exc, REF_AVG_EXC, "3x3 stride 2 padding 1, padding excluded");
  check_pool(x,
             &(em_pool2d_opts){
                 .kernel = {3, 2}, .stride = {1, 2}, .padding = {1, 1}, .count_include_pad = true},
             REF_AVG_INC, "3x2 stride 1x2");
  em_scope_end(s);
}

/* PyTorch's adaptive windows: rows floor(i H / OH) .. ceil((i + 1) H / OH) - 1. */
static double *ref_adaptive(const em_tensor *x, int64_t OH, int64_t OW) {
  int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  double *y = calloc((size_t)(N * C * OH * OW) + 1, sizeof *y);
  for (int64_t p = 0; p < N * C; p++)
    for (int64_t i = 0; i < OH; i++)
      for (int64_t j = 0; j < OW; j++) {
        int64_t h0 = (int64_t)floor((double)(i * H) / OH);
        int64_t h1 = (int64_t)ceil((double)((i + 1) * H) / OH);
        int64_t w0 = (int64_t)floor((double)(j * W) / OW);
        int64_t w1 = (int64_t)ceil((double)((j + 1) * W) / OW);
        double acc = 0;
        for (int64_t h = h0; h < h1; h++)
          for (int64_t w = w0; w < w1; w++) acc += em_get(x, (p * H + h) * W + w);
        y[(p * OH + i) * OW + j] = acc / (double)((h1 - h0) * (w1 - w0));
      }
  return y;
}

static void check_adaptive(em_tensor *x, int oh, int ow, const char *what) {
  double *ref = ref_adaptive(x, oh, ow);
  em_tensor *y = em_adaptive_avg_pool2d(x, oh, ow);
  cr_assert(y && y->ndim == 4 && y->shape[2] == oh && y->shape[3] == ow, "%s: %s", what,
            em_last_error());
  tu_assert_close(y, ref, em_numel(y), 1e-5, 1e-6, what);
  free(ref);
}

Test(adaptive_avg_pool2d, forward) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(3);
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 3, 6, 8), -1, 1, false);
  check_adaptive(x, 3, 4, "divisible 6x8 -> 3x4");
  check_adaptive(x, 1, 1, "global 6x8 -> 1x1");
  check_adaptive(x, 4, 3, "not divisible 6x8 -> 4x3");
  check_adaptive(x, 5, 5, "not divisible 6x8 -> 5x5");
  check_adaptive(x, 7, 9, "larger than the input 6x8 -> 7x9");
  check_adaptive(x, 6, 8, "identity");
  em_scope_end(s);
}

Test(pool, bad_shapes) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(4);
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 3, 4, 4), -1, 1, false);
  tu_assert_error(em_max_pool2d(x, &(em_pool2d_opts){.kernel = {5, 5}}), "[2, 3, 4, 4]",
                  "does not fit");
  tu_assert_error(em_avg_pool2d(x, &(em_pool2d_opts){.kernel = {2, 2}, .padding = {2, 2}}),
                  "[2, 3, 4, 4]", "padding 2x2");
  tu_assert_error(em_max_pool2d(x, &(em_pool2d_opts){.kernel = {0, 2}}), "max_pool2d",
                  "kernel 0x2");
  tu_assert_error(em_max_pool2d(x, NULL), "max_pool2d", "[2, 3, 4, 4]");
  em_tensor *x3 = tu_rand(&r, EM_SHAPE(3, 4, 4), -1, 1, false);
  tu_assert_error(em_max_pool2d(x3, &(em_pool2d_opts){.kernel = {2, 2}}), "max_pool2d",
                  "[3, 4, 4]");
  tu_assert_error(em_adaptive_avg_pool2d(x, 0, 2), "adaptive_avg_pool2d", "[2, 3, 4, 4]");
  tu_assert_error(em_adaptive_avg_pool2d(x3, 2, 2), "adaptive_avg_pool2d", "[3, 4, 4]");
  tu_assert_error(em_avg_pool2d(NULL, &(em_pool2d_opts){.kernel = {2, 2}}), "avg_pool2d", "NULL");
  em_scope_end(s);
}

/* ---- gradients --------------------------------------------------------------------------- */
static em_tensor *f_max(em_tensor **in, void *ctx) { return em_max_pool2d(in[0], ctx); }
static em_tensor *f_avg(em_tensor **in, void *ctx) { return em_avg_pool2d(in[0], ctx); }
static em_tensor *f_adaptive(em_tensor **in, void *ctx) {
  const int *o = ctx;
  return em_adaptive_avg_pool2d(in[0], o[0], o[1]);
}

Test(max_pool2d, grad) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(5);
  em_tensor *x = distinct(&r, 2, 2, 5, 5, true);
  em_pool2d_opts o2 = {.kernel = {2, 2}};
  tu_gradcheck(f_max, 1, &x, &o2, 1e-3, 1e-2, "max 2x2");
  em_pool2d_opts o3 = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}};
  tu_gradcheck(f_max, 1, &x, &o3, 1e-3, 1e-2, "max 3x3 stride 2 padding 1 (overlapping)");
  em_scope_end(s);
}

Test(avg_pool2d, grad) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(6);
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 2, 5, 4), -1, 1, true);
  em_pool2d_opts inc = {
      .kernel = {3, 3}, .stride = {2, 1}, .padding = {1, 1}, .count_include_pad = true};
  tu_gradcheck(f_avg, 1, &x, &inc, 1e-2, 1e-2, "avg count_include_pad");
  em_pool2d_opts exc = inc;
  exc.count_include_pad = false;
  tu_gradcheck(f_avg, 1, &x, &exc, 1e-2, 1e-2, "avg padding excluded");
  em_scope_end(s);
}

Test(adaptive_avg_pool2d, grad) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(7);
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 2, 6, 4), -1, 1, true);
  int div[2] = {3, 2}, odd[2] = {4, 3}, big[2] = {7, 5};
  tu_gradcheck(f_adaptive, 1, &x, div, 1e-2, 1e-2, "adaptive divisible");
  tu_gradcheck(f_adaptive, 1, &x, odd, 1e-2, 1e-2, "adaptive not divisible");
  tu_gradcheck(f_adaptive, 1, &x, big, 1e-2, 1e-2, "adaptive larger than the input");
  em_scope_end(s);
}

Test(pool, no_scope_no_leak) {
  int64_t before = em_live_tensors();
  em_rng r = em_rng_new(8);
  em_tensor *x = em_rand_uniform(EM_SHAPE(2, 3, 6, 5), -1, 1, &r);
  em_set_requires_grad(x, true);
  em_tensor *xt = em_transpose(x, 2, 3); /* non-contiguous: copied */
  em_tensor *y1 = em_max_pool2d(xt, &(em_pool2d_opts){.kernel = {2, 2}});
  em_tensor *y2 = em_avg_pool2d(xt, &(em_pool2d_opts){.kernel = {2, 2}});
  em_tensor *y3 = em_adaptive_avg_pool2d(xt, 4, 3);
  cr_assert(y1 && y2 && y3, "%s", em_last_error());
  em_release(y1);
  em_release(y2);
  em_release(y3);
  em_release(xt);
  em_release(x);
  cr_assert_eq(em_live_tensors(), before);
}

/* A tensor on a device without pooling kernels gets an error, not a CPU kernel run on device
 * memory. A CPU tensor posing as cuda:0 is enough where there is no GPU: cuda:0 has no kernels
 * then, and the ops fail before anything reads it ("no device cuda:0"). With a GPU, cuda:0's
 * kernels would read this CPU memory: skipped there (test_cuda_conv covers the GPU). */
static void assert_unsupported(em_tensor *y, const char *op) {
  cr_assert_eq(em_last_status(), EM_ERR_UNSUPPORTED, "%s: %s", op, em_last_error());
  tu_assert_error(y, op, "no device cuda:0");
}

Test(pool, cuda_input_not_supported) {
  if (em_cuda_device_count() > 0) cr_skip_test("a CUDA device is present");
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(9);
  em_tensor *x = tu_rand(&r, EM_SHAPE(1, 2, 6, 6), -1, 1, false);
  x->device = EM_DEVICE_CUDA(0);
  em_pool2d_opts k2 = {.kernel = {2, 2}};
  assert_unsupported(em_max_pool2d(x, &k2), "max_pool2d: ");
  assert_unsupported(em_avg_pool2d(x, &k2), "avg_pool2d: ");
  assert_unsupported(em_adaptive_avg_pool2d(x, 3, 2), "adaptive_avg_pool2d: "); /* as avg pool */
  assert_unsupported(em_adaptive_avg_pool2d(x, 4, 4), "adaptive_avg_pool2d: "); /* own kernel */
  x->device = EM_DEVICE_CPU; /* back home before the scope frees it */
  em_scope_end(s);
}
