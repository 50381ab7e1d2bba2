/* test_ops_conv.c: em_conv2d forward against a float64 direct-convolution loop (stride, padding,
 * dilation, groups, with and without bias), gradients by finite differences, and the shape
 * checks. */
#include "testutil.h"

#include <string.h>

typedef struct {
  int64_t N, C, H, W, O, KH, KW, OH, OW;
  int s[2], p[2], d[2], g;
} geom;

static geom make_geom(const int64_t *xs, const int64_t *ws, const em_conv2d_opts *o) {
  geom c = {xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], 0, 0, {0}, {0}, {0}, 0};
  for (int k = 0; k < 2; k++) {
    c.s[k] = o && o->stride[k] ? o->stride[k] : 1;
    c.p[k] = o ? o->padding[k] : 0;
    c.d[k] = o && o->dilation[k] ? o->dilation[k] : 1;
  }
  c.g = o && o->groups ? o->groups : 1;
  c.OH = (c.H + 2 * c.p[0] - c.d[0] * (c.KH - 1) - 1) / c.s[0] + 1;
  c.OW = (c.W + 2 * c.p[1] - c.d[1] * (c.KW - 1) - 1) / c.s[1] + 1;
  return c;
}

/* y[n][o][i][j] = b[o] + sum over c in the group of o, kh, kw of
 *   x[n][c][i s - p + kh d][j s - p + kw d] w[o][c - group start][kh][kw] */
static double *ref_conv(const em_tensor *x, const em_tensor *w, const em_tensor *b, const geom *c) {
  int64_t cg = c->C / c->g, og = c->O / c->g;
  double *y = calloc((size_t)(c->N * c->O * c->OH * c->OW) + 1, sizeof *y);
  for (int64_t n = 0; n < c->N; n++)
    for (int64_t o = 0; o < c->O; o++)
      for (int64_t i = 0; i < c->OH; i++)
        for (int64_t j = 0; j < c->OW; j++) {
          double acc = b ? em_get(b, o) : 0;
          int64_t grp = o / og;
          for (int64_t ci = 0; ci < cg; ci++)
            for (int64_t kh = 0; kh < c->KH; kh++)
              for (int64_t kw = 0; kw < c->KW; kw++) {
                int64_t h = i * c->s[0] - c->p[0] + kh * c->d[0];
                int64_t ww = j * c->s[1] - c->p[1] + kw * c->d[1];
                if (h < 0 || h >= c->H || ww < 0 || ww >= c->W) continue;
                int64_t ch = grp * cg + ci;
                acc += em_get(x, ((n * c->C + ch) * c->H + h) * c->W + ww) *
                       em_get(w, ((o * cg + ci) * c->KH + kh) * c->KW + kw);
              }
          y[((n * c->O + o) * c->OH + i) * c->OW + j] = acc;
        }
  return y;
}

static void check_forward(em_rng *r, const int64_t *xs, const int64_t *ws, bool bias,
                          const em_conv2d_opts *o, const char *what) {
  em_tensor *x = tu_rand(r, 4, xs, -1, 1, false);
  em_tensor *w = tu_rand(r, 4, ws, -1, 1, false);
  em_tensor *b = bias ? tu_rand(r, EM_SHAPE(ws[0]), -1, 1, false) : NULL;
  geom c = make_geom(xs, ws, o);
  em_tensor *y = em_conv2d(x, w, b, o);
  cr_assert_not_null(y, "%s: %s", what, em_last_error());
  cr_assert(y->ndim == 4 && y->shape[0] == c.N && y->shape[1] == c.O && y->shape[2] == c.OH &&
                y->shape[3] == c.OW,
            "%s: output shape [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld, %lld]", what,
            (long long)y->shape[0], (long long)y->shape[1], (long long)y->shape[2],
            (long long)y->shape[3], (long long)c.N, (long long)c.O, (long long)c.OH,
            (long long)c.OW);
  double *ref = ref_conv(x, w, b, &c);
  tu_assert_close(y, ref, em_numel(y), 1e-4, 1e-4, what);
  free(ref);
}

Test(conv2d, forward_default) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(1);
  check_forward(&r, (int64_t[]){2, 3, 7, 6}, (int64_t[]){4, 3, 3, 3}, true, NULL, "3x3 bias");
  check_forward(&r, (int64_t[]){2, 3, 7, 6}, (int64_t[]){4, 3, 3, 3}, false, NULL, "3x3 no bias");
  check_forward(&r, (int64_t[]){1, 5, 4, 4}, (int64_t[]){3, 5, 1, 1}, true, NULL, "1x1");
  check_forward(&r, (int64_t[]){3, 2, 3, 3}, (int64_t[]){2, 2, 3, 3}, true, NULL, "output 1x1");
  em_scope_end(s);
}

Test(conv2d, forward_options) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(2);
  em_conv2d_opts stride2 = {.stride = {2, 2}, .padding = {1, 1}};
  check_forward(&r, (int64_t[]){2, 3, 9, 8}, (int64_t[]){4, 3, 3, 3}, true, &stride2,
                "stride 2 padding 1");
  em_conv2d_opts dil2 = {.dilation = {2, 2}, .padding = {2, 2}};
  check_forward(&r, (int64_t[]){2, 2, 8, 7}, (int64_t[]){3, 2, 3, 3}, true, &dil2,
                "dilation 2 padding 2");
  em_conv2d_opts groups2 = {.groups = 2, .padding = {1, 1}};
  check_forward(&r, (int64_t[]){2, 4, 6, 6}, (int64_t[]){6, 2, 3, 3}, true, &groups2, "groups 2");
  em_conv2d_opts depthwise = {.groups = 4, .padding = {1, 1}};
  check_forward(&r, (int64_t[]){2, 4, 5, 5}, (int64_t[]){4, 1, 3, 3}, false, &depthwise,
                "depthwise");
  em_conv2d_opts mixed = {.stride = {1, 2}, .padding = {0, 1}, .dilation = {1, 2}};
  check_forward(&r, (int64_t[]){2, 3, 6, 9}, (int64_t[]){2, 3, 2, 3}, true, &mixed,
                "2x3 kernel, stride 1x2, padding 0x1, dilation 1x2");
  em_conv2d_opts all = {.stride = {2, 2}, .padding = {1, 1}, .dilation = {2, 2}, .groups = 2};
  check_forward(&r, (int64_t[]){2, 4, 9, 9}, (int64_t[]){4, 2, 3, 3}, false, &all,
                "stride 2, padding 1, dilation 2, groups 2, no bias");
  em_scope_end(s);
}

Test(conv2d, small_cnn_shape) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(3);
  em_conv2d_opts pad1 = {.padding = {1, 1}};
  check_forward(&r, (int64_t[]){4, 8, 14, 14}, (int64_t[]){16, 8, 3, 3}, true, &pad1,
                "8 -> 16 channels, 14x14, padding 1");
  em_scope_end(s);
}

Test(conv2d, non_contiguous_input) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(4);
  em_tensor *xt = tu_rand(&r, EM_SHAPE(2, 3, 5, 6), -1, 1, false);
  em_tensor *x = em_transpose(xt, 2, 3); /* (2, 3, 6, 5) view */
  em_tensor *w = tu_rand(&r, EM_SHAPE(2, 3, 3, 3), -1, 1, false);
  em_tensor *y = em_conv2d(x, w, NULL, NULL);
  em_tensor *xc = em_contiguous(x);
  geom c = make_geom(xc->shape, w->shape, NULL);
  double *ref = ref_conv(xc, w, NULL, &c);
  tu_assert_close(y, ref, em_numel(y), 1e-4, 1e-4, "transposed view input");
  free(ref);
  em_scope_end(s);
}

Test(conv2d, empty_batch) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(8);
  em_tensor *x = tu_rand(&r, EM_SHAPE(0, 3, 5, 5), -1, 1, true);
  em_tensor *w = tu_rand(&r, EM_SHAPE(4, 3, 3, 3), -1, 1, true);
  em_tensor *b = tu_rand(&r, EM_SHAPE(4), -1, 1, true);
  em_tensor *y = em_conv2d(x, w, b, &(em_conv2d_opts){.padding = {1, 1}});
  cr_assert(y && y->shape[0] == 0 && y->shape[1] == 4 && y->shape[2] == 5 && y->shape[3] == 5, "%s",
            em_last_error());
  cr_assert_eq(em_backward(em_sum(y, 0, NULL, false)), EM_OK, "%s", em_last_error());
  double zeros[4 * 3 * 3 * 3] = {0};
  tu_assert_close(w->grad, zeros, 4 * 3 * 3 * 3, 0, 0, "no samples: zero weight gradient");
  tu_assert_close(b->grad, zeros, 4, 0, 0, "no samples: zero bias gradient");
  em_scope_end(s);
}

Test(conv2d, bad_shapes) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(5);
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 3, 5, 5), -1, 1, false);
  em_tensor *w_ch = tu_rand(&r, EM_SHAPE(4, 2, 3, 3), -1, 1, false);
  tu_assert_error(em_conv2d(x, w_ch, NULL, NULL), "[2, 3, 5, 5]", "[4, 2, 3, 3]");
  em_conv2d_opts g2 = {.groups = 2};
  tu_assert_error(em_conv2d(x, w_ch, NULL, &g2), "[2, 3, 5, 5]", "groups 2");
  em_tensor *w_big = tu_rand(&r, EM_SHAPE(4, 3, 6, 3), -1, 1, false);
  tu_assert_error(em_conv2d(x, w_big, NULL, NULL), "[4, 3, 6, 3]", "does not fit");
  em_conv2d_opts dil = {.dilation = {3, 3}};
  em_tensor *w3 = tu_rand(&r, EM_SHAPE(4, 3, 3, 3), -1, 1, false);
  tu_assert_error(em_conv2d(x, w3, NULL, &dil), "[2, 3, 5, 5]", "dilated 7x7");
  em_tensor *b = tu_rand(&r, EM_SHAPE(5), -1, 1, false);
  tu_assert_error(em_conv2d(x, w3, b, NULL), "[5]", "[4, 3, 3, 3]");
  em_tensor *x3 = tu_rand(&r, EM_SHAPE(3, 5, 5), -1, 1, false);
  tu_assert_error(em_conv2d(x3, w3, NULL, NULL), "[3, 5, 5]", "[4, 3, 3, 3]");
  em_conv2d_opts neg = {.padding = {-1, 0}};
  tu_assert_error(em_conv2d(x, w3, NULL, &neg), "[2, 3, 5, 5]", "padding -1");
  tu_assert_error(em_conv2d(NULL, w3, NULL, NULL), "conv2d", "NULL");
  em_scope_end(s);
}

/* ---- gradients --------------------------------------------------------------------------- */
static em_tensor *f_conv(em_tensor **in, void *ctx) { return em_conv2d(in[0], in[1], in[2], ctx); }
static em_tensor *f_conv_nobias(em_tensor **in, void *ctx) {
  return em_conv2d(in[0], in[1], NULL, ctx);
}

static void check_grad(em_rng *r, const int64_t *xs, const int64_t *ws, bool bias,
                       em_conv2d_opts *o, const char *what) {
  em_tensor *in[3] = {tu_rand(r, 4, xs, -1, 1, true), tu_rand(r, 4, ws, -1, 1, true),
                      bias ? tu_rand(r, EM_SHAPE(ws[0]), -1, 1, true) : NULL};
  tu_gradcheck(bias ? f_conv : f_conv_nobias, bias ? 3 : 2, in, o, 1e-2, 1e-2, what);
}

Test(conv2d, grad) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(6);
  check_grad(&r, (int64_t[]){2, 2, 4, 4}, (int64_t[]){3, 2, 3, 3}, true, NULL, "grad default");
  em_conv2d_opts stride2 = {.stride = {2, 2}, .padding = {1, 1}};
  check_grad(&r, (int64_t[]){2, 2, 5, 5}, (int64_t[]){2, 2, 3, 3}, true, &stride2,
             "grad stride 2 padding 1");
  em_conv2d_opts dil2 = {.dilation = {2, 2}, .padding = {1, 1}};
  check_grad(&r, (int64_t[]){1, 2, 5, 5}, (int64_t[]){2, 2, 3, 3}, false, &dil2,
             "grad dilation 2, no bias");
  em_conv2d_opts groups2 = {.groups = 2};
  check_grad(&r, (int64_t[]){2, 4, 4, 4}, (int64_t[]){4, 2, 2, 2}, true, &groups2, "grad groups 2");
  em_scope_end(s);
}

Test(conv2d, grad_partial) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(7);
  /* only x needs a gradient (a frozen layer), then only the bias */
  em_tensor *in[3] = {tu_rand(&r, EM_SHAPE(2, 2, 4, 4), -1, 1, true),
                      tu_rand(&r, EM_SHAPE(3, 2, 3, 3), -1, 1, false),
                      tu_rand(&r, EM_SHAPE(3), -1, 1, false)};
  tu_gradcheck(f_conv, 3, in, NULL, 1e-2, 1e-2, "grad of x only");
  em_tensor *in2[3] = {tu_rand(&r, EM_SHAPE(2, 2, 4, 4), -1, 1, false),
                       tu_rand(&r, EM_SHAPE(3, 2, 3, 3), -1, 1, false),
                       tu_rand(&r, EM_SHAPE(3), -1, 1, true)};
  tu_gradcheck(f_conv, 3, in2, NULL, 1e-2, 1e-2, "grad of bias only");
  em_scope_end(s);
}

Test(conv2d, no_scope_no_leak) {
  /* outside any scope the caller owns the result; copies and reordered buffers must not leak */
  int64_t before = em_live_tensors();
  em_rng r = em_rng_new(9);
  em_tensor *x = em_rand_uniform(EM_SHAPE(2, 16, 6, 5), -1, 1, &r);
  em_tensor *xt = em_transpose(x, 2, 3);
  em_tensor *w = em_rand_uniform(EM_SHAPE(16, 16, 3, 3), -1, 1, &r);
  em_set_requires_grad(w, true);
  em_tensor *y = em_conv2d(xt, w, NULL, &(em_conv2d_opts){.padding = {1, 1}});
  cr_assert_not_null(y, "%s", em_last_error());
  em_release(y);
  em_release(w);
  em_release(xt);
  em_release(x);
  cr_assert_eq(em_live_tensors(), before);
}

/* Tensors on a device without conv kernels get an error, not a CPU kernel run on device memory.
 * CPU tensors posing as cuda:0 are enough: mixed devices are named before any kernel runs, and
 * without a GPU cuda:0 has no kernels ("no device cuda:0"). With a GPU, cuda:0's kernels would
 * read this CPU memory: that part is not asked there (test_cuda_conv covers the GPU). */
Test(conv2d, cuda_inputs_not_supported) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(10);
  em_tensor *x = tu_rand(&r, EM_SHAPE(1, 2, 4, 4), -1, 1, false);
  em_tensor *w = tu_rand(&r, EM_SHAPE(3, 2, 3, 3), -1, 1, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(3), -1, 1, false);
  w->device = EM_DEVICE_CUDA(0);
  tu_assert_error(em_conv2d(x, w, NULL, NULL),
                  "conv2d: weight is on cuda:0 but the input is on cpu", NULL);
  x->device = EM_DEVICE_CUDA(0);
  tu_assert_error(em_conv2d(x, w, b, NULL), "conv2d: bias is on cpu but the input is on cuda:0",
                  NULL);
  if (em_cuda_device_count() == 0) {
    em_tensor *y = em_conv2d(x, w, NULL, NULL);
    cr_assert_eq(em_last_status(), EM_ERR_UNSUPPORTED, "%s", em_last_error());
    tu_assert_error(y, "conv2d: no device cuda:0", NULL);
  }
  x->device = w->device = EM_DEVICE_CPU; /* back home before the scope frees them */
  em_scope_end(s);
}
