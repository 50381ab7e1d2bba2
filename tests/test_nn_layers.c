/* test_nn_layers.c: each layer module's forward against a float64 loop (Linear, Conv2d,
 * BatchNorm2d train/eval with running statistics, LayerNorm, Embedding, Dropout, ReLU/GELU/Tanh,
 * Flatten, MaxPool2d, Sequential), em_init_normal's distribution, the zoo's names, shapes and
 * forward, and the DESIGN.md loop. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- layers against float64 loops ------------------------------------------------------------ */
Test(layers, linear) {
  em_scope s = em_scope_begin();
  em_module *l = em_linear_new(5, 3, true);
  em_tensor *x = tu_ramp(EM_SHAPE(2, 5), 1.5, 0.2);
  em_tensor *y = em_forward(l, x), *w = em_module_get(l, "weight"), *b = em_module_get(l, "bias");
  double ref[6];
  for (int n = 0; n < 2; n++)
    for (int o = 0; o < 3; o++) {
      ref[n * 3 + o] = em_get(b, o);
      for (int i = 0; i < 5; i++) ref[n * 3 + o] += em_get(x, n * 5 + i) * em_get(w, o * 5 + i);
    }
  tu_assert_close(y, ref, 6, 1e-5, 1e-6, "linear");
  cr_assert(y->ndim == 2 && y->shape[1] == 3);
  em_module_free(l);
  em_scope_end(s);
}

Test(layers, conv2d) {
  em_scope s = em_scope_begin();
  enum { N = 2, C = 3, H = 5, W = 6, O = 4, K = 3, P = 1, S = 2, OH = 3, OW = 3 };
  em_module *cv =
      em_conv2d_new(C, O, K, &(em_conv2d_opts){.padding = {P, P}, .stride = {S, S}}, true);
  em_tensor *x = tu_ramp(EM_SHAPE(N, C, H, W), 1, 0.3);
  em_tensor *y = em_forward(cv, x), *w = em_module_get(cv, "weight"),
            *b = em_module_get(cv, "bias");
  double ref[N * O * OH * OW];
  for (int n = 0; n < N; n++)
    for (int o = 0; o < O; o++)
      for (int i = 0; i < OH; i++)
        for (int j = 0; j < OW; j++) {
          double acc = em_get(b, o);
          for (int c = 0; c < C; c++)
            for (int u = 0; u < K; u++)
              for (int v = 0; v < K; v++) {
                int hi = i * S - P + u, wj = j * S - P + v;
                if (hi < 0 || hi >= H || wj < 0 || wj >= W) continue;
                acc += em_get(x, ((n * C + c) * H + hi) * W + wj) *
                       em_get(w, ((o * C + c) * K + u) * K + v);
              }
          ref[((n * O + o) * OH + i) * OW + j] = acc;
        }
  tu_assert_close(y, ref, N * O * OH * OW, 1e-5, 1e-5, "conv2d");
  em_module_free(cv);
  em_scope_end(s);
}

/* Per-channel batch statistics of x (N, C, HW): mean and biased variance. */
static void channel_stats(em_tensor *x, int N, int C, int HW, double *mean, double *var) {
  for (int c = 0; c < C; c++) {
    double s1 = 0, s2 = 0;
    for (int n = 0; n < N; n++)
      for (int k = 0; k < HW; k++) {
        double v = em_get(x, (n * C + c) * HW + k);
        s1 += v;
        s2 += v * v;
      }
    mean[c] = s1 / (N * HW);
    var[c] = s2 / (N * HW) - mean[c] * mean[c];
  }
}

Test(layers, batchnorm2d_train_and_eval) {
  em_scope s = em_scope_begin();
  enum { N = 3, C = 2, HW = 6 };
  em_module *bn = em_batchnorm2d_new(C);
  em_module_set_param(bn, "weight", (float[]){1.5f, -0.5f}, 2);
  em_module_set_param(bn, "bias", (float[]){0.25f, 1.0f}, 2);
  em_tensor *x = tu_ramp(EM_SHAPE(N, C, 2, 3), 2, 0.1);
  double mean[C], var[C], ref[N * C * HW], w[] = {1.5, -0.5}, b[] = {0.25, 1.0};
  channel_stats(x, N, C, HW, mean, var);
  em_tensor *y = em_forward(bn, x);
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      for (int k = 0; k < HW; k++) {
        int i = (n * C + c) * HW + k;
        ref[i] = (em_get(x, i) - mean[c]) / sqrt(var[c] + 1e-5) * w[c] + b[c];
      }
  tu_assert_close(y, ref, N * C * HW, 1e-4, 1e-5, "batchnorm train");
  double rm[C], rv[C];
  int cnt = N * HW;
  for (int c = 0; c < C; c++) {
    rm[c] = 0.1 * mean[c];
    rv[c] = 0.9 + 0.1 * var[c] * cnt / (cnt - 1); /* unbiased, as PyTorch */
  }
  tu_assert_close(em_module_get(bn, "running_mean"), rm, C, 1e-5, 1e-6, "running_mean");
  tu_assert_close(em_module_get(bn, "running_var"), rv, C, 1e-5, 1e-6, "running_var");
  cr_assert_eq(em_get(em_module_get(bn, "num_batches_tracked"), 0), 1.0);
  em_module_eval(bn);
  y = em_forward(bn, x);
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      for (int k = 0; k < HW; k++) {
        int i = (n * C + c) * HW + k;
        ref[i] = (em_get(x, i) - rm[c]) / sqrt(rv[c] + 1e-5) * w[c] + b[c];
      }
  tu_assert_close(y, ref, N * C * HW, 1e-4, 1e-5, "batchnorm eval");
  cr_assert_eq(em_get(em_module_get(bn, "num_batches_tracked"), 0), 1.0, "eval must not count");
  tu_assert_error(em_forward(bn, tu_ramp(EM_SHAPE(2, 2), 1, 0)), "BatchNorm2d", "[2, 2]");
  em_module_free(bn);
  em_scope_end(s);
}

Test(layers, layernorm) {
  em_scope s = em_scope_begin();
  em_module *ln = em_layernorm_new(EM_SHAPE(2, 3));
  float w[6] = {1, 2, 3, -1, 0.5f, 1}, b[6] = {0, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  em_module_set_param(ln, "weight", w, 6);
  em_module_set_param(ln, "bias", b, 6);
  em_tensor *x = tu_ramp(EM_SHAPE(4, 2, 3), 3, 0.7);
  em_tensor *y = em_forward(ln, x);
  double ref[24];
  for (int r = 0; r < 4; r++) {
    double m = 0, v = 0;
    for (int k = 0; k < 6; k++) m += em_get(x, r * 6 + k) / 6;
    for (int k = 0; k < 6; k++) v += pow(em_get(x, r * 6 + k) - m, 2) / 6;
    for (int k = 0; k < 6; k++)
      ref[r * 6 + k] = (em_get(x, r * 6 + k) - m) / sqrt(v + 1e-5) * w[k] + b[k];
  }
  tu_assert_close(y, ref, 24, 1e-4, 1e-5, "layernorm");
  em_module_free(ln);
  em_scope_end(s);
}

Test(layers, embedding) {
  em_scope s = em_scope_begin();
  em_module *e = em_embedding_new(6, 4);
  em_tensor *idx = em_from_data(EM_I64, EM_SHAPE(2, 2), (int64_t[]){5, 0, 2, 5});
  em_tensor *y = em_forward(e, idx), *w = em_module_get(e, "weight");
  double ref[16];
  const int rows[] = {5, 0, 2, 5};
  for (int r = 0; r < 4; r++)
    for (int d = 0; d < 4; d++) ref[r * 4 + d] = em_get(w, rows[r] * 4 + d);
  tu_assert_close(y, ref, 16, 0, 0, "embedding");
  cr_assert(y->ndim == 3 && y->shape[2] == 4);
  em_module_free(e);
  em_scope_end(s);
}

/* em_init_normal: N(mean, std) from the default generator (sample moments of 200000 draws within
 * 5 standard errors), reproducible by seed; bad tensors and arguments are errors. */
Test(layers, init_normal) {
  TU_BEGIN;
  em_tensor *t = em_empty(EM_F32, EM_SHAPE(400, 500)), *u = em_empty(EM_F32, EM_SHAPE(400, 500));
  em_manual_seed(11);
  cr_assert_eq(em_init_normal(t, 0.5f, 2.0f), EM_OK, "%s", em_last_error());
  em_manual_seed(11);
  cr_assert_eq(em_init_normal(u, 0.5f, 2.0f), EM_OK, "%s", em_last_error());
  const float *p = em_data_f32(t);
  int64_t n = em_numel(t);
  double s1 = 0, s2 = 0;
  for (int64_t i = 0; i < n; i++) s1 += p[i], s2 += (double)p[i] * p[i];
  double mean = s1 / n, sd = sqrt(s2 / n - mean * mean);
  cr_assert(fabs(mean - 0.5) < 5 * 2.0 / sqrt((double)n), "mean %g", mean);
  cr_assert(fabs(sd - 2.0) < 5 * 2.0 / sqrt(2.0 * n), "std %g", sd);
  cr_assert_eq(memcmp(p, em_data_f32(u), (size_t)n * sizeof(float)), 0, "same seed, same draws");
  cr_assert_eq(em_init_normal(t, 0, -1), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "std >= 0"), "%s", em_last_error());
  cr_assert_eq(em_init_normal(em_zeros(EM_I64, EM_SHAPE(3)), 0, 1), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "f32"), "%s", em_last_error());
  cr_assert_eq(em_init_normal(em_transpose(t, 0, 1), 0, 1), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "not contiguous"), "%s", em_last_error());
  cr_assert_eq(em_init_normal(NULL, 0, 1), EM_ERR_INVALID);
  em_clear_error();
  TU_END;
}

Test(layers, dropout_seeded_and_eval_identity) {
  em_scope s = em_scope_begin();
  em_manual_seed(3);
  em_module *d1 = em_dropout_new(0.25f);
  em_manual_seed(3);
  em_module *d2 = em_dropout_new(0.25f);
  em_tensor *x = em_full(EM_F32, EM_SHAPE(4000), 2.0);
  em_tensor *y1 = em_forward(d1, x), *y2 = em_forward(d2, x);
  cr_assert_not_null(y1, "%s", em_last_error());
  int zeros = 0;
  for (int64_t k = 0; k < 4000; k++) {
    double v = em_get(y1, k);
    cr_assert(v == 0 || fabs(v - 2.0 / 0.75) < 1e-6, "dropout value %g", v);
    zeros += v == 0;
    cr_assert_eq(v, em_get(y2, k), "same seed, different mask at %lld", (long long)k);
  }
  cr_assert(zeros > 850 && zeros < 1150, "%d of 4000 dropped at p = 0.25", zeros);
  em_tensor *y3 = em_forward(d1, x); /* the generator advances: a new mask */
  bool differs = false;
  for (int64_t k = 0; k < 4000 && !differs; k++) differs = em_get(y3, k) != em_get(y1, k);
  cr_assert(differs);
  em_module_eval(d1);
  double ref[4000];
  for (int k = 0; k < 4000; k++) ref[k] = 2.0;
  tu_assert_close(em_forward(d1, x), ref, 4000, 0, 0, "dropout eval");
  tu_assert_error((void *)em_dropout_new(1.5f), "p must be in [0, 1]", NULL);
  em_module_free(d1);
  em_module_free(d2);
  em_scope_end(s);
}

Test(layers, activations_flatten_maxpool) {
  em_scope s = em_scope_begin();
  em_tensor *x = tu_ramp(EM_SHAPE(2, 3, 4, 6), 2, 0.4);
  int64_t n = em_numel(x);
  double ref[144];
  em_module *acts[] = {em_relu_new(), em_gelu_new(), em_tanh_new()};
  for (int a = 0; a < 3; a++) {
    for (int64_t k = 0; k < n; k++) {
      double v = em_get(x, k);
      ref[k] = a == 0 ? fmax(v, 0) : a == 1 ? 0.5 * v * (1 + erf(v / sqrt(2))) : tanh(v);
    }
    tu_assert_close(em_forward(acts[a], x), ref, n, 1e-5, 1e-6, em_module_type(acts[a]));
    em_module_free(acts[a]);
  }
  em_module *fl = em_flatten_new(1, -1);
  em_tensor *f = em_forward(fl, x);
  cr_assert(f && f->ndim == 2 && f->shape[0] == 2 && f->shape[1] == 72);
  for (int64_t k = 0; k < n; k++) ref[k] = em_get(x, k);
  tu_assert_close(f, ref, n, 0, 0, "flatten");
  em_module_free(fl);
  /* MaxPool2d(3, stride 2, padding 1) on (2, 3, 4, 6) -> (2, 3, 2, 3). */
  em_module *mp = em_max_pool2d_new(3, 2, 1);
  em_tensor *y = em_forward(mp, x);
  cr_assert(y && y->shape[2] == 2 && y->shape[3] == 3, "%s", em_last_error());
  for (int nc = 0; nc < 6; nc++)
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 3; j++) {
        double m = -INFINITY;
        for (int u = 0; u < 3; u++)
          for (int v = 0; v < 3; v++) {
            int hi = 2 * i - 1 + u, wj = 2 * j - 1 + v;
            if (hi >= 0 && hi < 4 && wj >= 0 && wj < 6)
              m = fmax(m, em_get(x, nc * 24 + hi * 6 + wj));
          }
        ref[(nc * 2 + i) * 3 + j] = m;
      }
  tu_assert_close(y, ref, 36, 0, 0, "max_pool2d");
  em_module_free(mp);
  em_scope_end(s);
}

Test(layers, sequential_chains_and_propagates_errors) {
  em_scope s = em_scope_begin();
  em_module *seq = em_sequential(em_linear_new(4, 3, true), em_tanh_new());
  cr_assert_not_null(seq);
  em_tensor *x = tu_ramp(EM_SHAPE(2, 4), 1, 0);
  em_tensor *w = em_module_get(seq, "0.weight"), *b = em_module_get(seq, "0.bias");
  double ref[6];
  for (int n = 0; n < 2; n++)
    for (int o = 0; o < 3; o++) {
      double acc = em_get(b, o);
      for (int i = 0; i < 4; i++) acc += em_get(x, n * 4 + i) * em_get(w, o * 4 + i);
      ref[n * 3 + o] = tanh(acc);
    }
  tu_assert_close(em_forward(seq, x), ref, 6, 1e-5, 1e-6, "sequential");
  cr_assert_str_eq(em_module_child_name(seq, 1), "1");
  cr_assert_str_eq(em_module_type(em_module_child_at(seq, 1)), "Tanh");
  /* Empty Sequential: identity. */
  em_module *id = em_sequential_new(0, NULL);
  em_tensor *y = em_forward(id, x);
  cr_assert_eq(y, x);
  /* A failed constructor inside em_sequential: NULL, its own message, no leak. */
  tu_assert_error(
      (void *)em_sequential(em_linear_new(4, 3, true), em_linear_new(0, 3, true), em_relu_new()),
      "linear_new: in must be > 0", NULL);
  /* A shape error inside the chain names the op. */
  tu_assert_error(em_forward(seq, tu_ramp(EM_SHAPE(2, 5), 1, 0)),
                  "Sequential layer 0 (Linear): ", "linear");
  em_module_free(seq);
  em_module_free(id);
  em_scope_end(s);
}

/* ---- zoo ------------------------------------------------------------------------------------- */
Test(zoo, mlp_names_shapes_forward) {
  em_scope s = em_scope_begin();
  em_module *m = em_mlp(12, (int[]){8, 6}, 2, 4);
  const char *names[] = {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"};
  const int64_t rows[] = {8, 8, 6, 6, 4, 4}, cols[] = {12, 0, 8, 0, 6, 0};
  tu_assert_names(m, 6, names, 6);
  for (int i = 0; i < 6; i++) {
    em_tensor *t = em_module_tensor_at(m, i);
    cr_assert_eq(t->shape[0], rows[i], "%s", names[i]);
    if (cols[i]) cr_assert_eq(t->shape[1], cols[i], "%s", names[i]);
  }
  cr_assert_str_eq(em_module_type(em_module_child_at(m, 3)), "ReLU");
  em_tensor *y = em_forward(m, tu_ramp(EM_SHAPE(5, 12), 1, 0));
  cr_assert(y && y->shape[0] == 5 && y->shape[1] == 4, "%s", em_last_error());
  em_module *single = em_mlp(3, NULL, 0, 2);
  tu_assert_names(single, 2, (const char *[]){"0.weight", "0.bias"}, 2);
  tu_assert_error((void *)em_mlp(3, (int[]){0}, 1, 2), "hidden[0]", NULL);
  em_module_free(m);
  em_module_free(single);
  em_scope_end(s);
}

Test(zoo, small_cnn_names_shapes_and_forward) {
  em_scope s = em_scope_begin();
  em_module *m = em_small_cnn(1, 28, 28, 10);
  cr_assert_not_null(m, "%s", em_last_error());
  const char *names[] = {"0.weight", "0.bias", "3.weight", "3.bias",
                         "7.weight", "7.bias", "9.weight", "9.bias"};
  tu_assert_names(m, 8, names, 8);
  const int64_t w0[] = {32, 1, 5, 5}, w3[] = {64, 32, 5, 5};
  for (int d = 0; d < 4; d++) {
    cr_assert_eq(em_module_get(m, "0.weight")->shape[d], w0[d]);
    cr_assert_eq(em_module_get(m, "3.weight")->shape[d], w3[d]);
  }
  cr_assert_eq(em_module_get(m, "7.weight")->shape[1], 64 * 7 * 7);
  cr_assert_eq(em_module_get(m, "7.weight")->shape[0], 1024);
  cr_assert_eq(em_module_get(m, "9.weight")->shape[0], 10);
  const char *types[] = {"Conv2d",    "ReLU",    "MaxPool2d", "Conv2d", "ReLU",
                         "MaxPool2d", "Flatten", "Linear",    "ReLU",   "Linear"};
  cr_assert_eq(em_module_num_children(m), 10);
  for (int i = 0; i < 10; i++) cr_assert_str_eq(em_module_type(em_module_child_at(m, i)), types[i]);
  /* Forward equals the same ops called by hand. */
  em_tensor *x = tu_ramp(EM_SHAPE(2, 1, 28, 28), 1, 0.1);
  em_tensor *y = em_forward(m, x);
  cr_assert(y && y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 10, "%s", em_last_error());
  const em_conv2d_opts pad = {.padding = {2, 2}};
  const em_pool2d_opts pool = {.kernel = {2, 2}};
  em_tensor *h = em_max_pool2d(
      em_relu(em_conv2d(x, em_module_get(m, "0.weight"), em_module_get(m, "0.bias"), &pad)), &pool);
  h = em_max_pool2d(
      em_relu(em_conv2d(h, em_module_get(m, "3.weight"), em_module_get(m, "3.bias"), &pad)), &pool);
  h = em_relu(
      em_linear(em_flatten(h, 1, -1), em_module_get(m, "7.weight"), em_module_get(m, "7.bias")));
  h = em_linear(h, em_module_get(m, "9.weight"), em_module_get(m, "9.bias"));
  cr_assert_not_null(h, "%s", em_last_error());
  double ref[20];
  for (int k = 0; k < 20; k++) ref[k] = em_get(h, k);
  tu_assert_close(y, ref, 20, 0, 0, "small_cnn forward");
  tu_assert_error((void *)em_small_cnn(1, 3, 28, 10), "h >= 4", NULL);
  em_module_free(m);
  em_scope_end(s);
}

/* The loop from DESIGN.md, as written there (one device, a fixed batch). */
Test(zoo, design_example_trains) {
  em_manual_seed(0);
  em_module *model = em_mlp(784, (int[]){1024, 1024}, 2, 10);
  em_optim *opt = em_sgd(em_parameters(model), .lr = 0.05, .momentum = 0.9);
  cr_assert(model && opt, "%s", em_last_error());
  em_rng r = em_rng_new(5);
  em_tensor *x = em_rand_uniform(EM_SHAPE(8, 784), 0, 1, &r);
  int64_t labels[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  em_tensor *y = em_from_data(EM_I64, EM_SHAPE(8), labels);
  em_tensor *w = em_module_get(model, "4.bias");
  float *arena = em_parameters(model).arena;
  double first = 0, last = 0;
  for (int step = 0; step < 5; step++) {
    em_scope s = em_scope_begin();
    em_tensor *loss = em_cross_entropy(em_forward(model, x), y);
    cr_assert_not_null(loss, "%s", em_last_error());
    cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
    double before = em_get(w, 3), g = em_get(w->grad, 3);
    em_step(opt);
    em_zero_grad(opt);
    if (step == 0) cr_assert_float_eq(em_get(w, 3), (float)(before - 0.05 * g), 1e-7);
    if (step == 0) first = em_get(loss, 0);
    last = em_get(loss, 0);
    em_scope_end(s);
  }
  cr_assert(last < first, "loss did not decrease: %g -> %g", first, last);
  cr_assert_eq(em_parameters(model).arena, arena, "parameters left the arena");
  cr_assert_eq(em_data_f32(w), arena + em_parameters(model).offset[5]);
  em_optim_free(opt);
  em_module_free(model);
  em_release(x);
  em_release(y);
}
