/* test_zoo_gpt.c: em_gpt against a nanoGPT-equivalent PyTorch model (tests/ref/gpt_ref.py, run
 * with Debian's python3 + torch), and its own properties.
 *
 * Tiny config (vocab 64, block 16, 2 layers, 2 heads, n_embd 32, dropout 0, bias), tokens (2, 16),
 * the same initial weights loaded by name:
 *   logits, loss, every gradient (wte's with the tied head's part):  relative norm <= 1e-4
 *   10 AdamW steps (lr 1e-3, weight decay 0.1, betas 0.9/0.95):     each loss within 1e-4
 *                                                                    relative, final weights close
 * and: the names, order and count of the parameters (tiny and GPT-2 small's 124,439,808), the tied
 * head, the initialisation, causality (a later token never changes an earlier logit), dropout in
 * training and eval mode, and the errors for bad configs and tokens. */
#include "torchref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 2
#define T 16
#define STEPS 10

static const em_gpt_config TINY = {.vocab_size = 64,
                                   .block_size = 16,
                                   .n_layer = 2,
                                   .n_head = 2,
                                   .n_embd = 32,
                                   .dropout = 0,
                                   .bias = true};

static em_module *tiny(void) {
  em_module *m = em_gpt(&TINY);
  cr_assert_not_null(m, "%s", em_last_error());
  return m;
}

/* The cross entropy of logits (N, T, V) against targets (N, T), as nanoGPT computes it. */
static em_tensor *loss_of(em_tensor *logits, em_tensor *targets) {
  int64_t V = logits ? logits->shape[2] : 0;
  return em_cross_entropy(em_reshape(logits, EM_SHAPE(-1, V)), em_reshape(targets, EM_SHAPE(-1)));
}

static void batch(tr_ref *r, int step, em_tensor **x, em_tensor **y) {
  char key[32];
  snprintf(key, sizeof key, "x.%d", step);
  *x = tr_tensor(r, EM_I64, EM_SHAPE(N, T), key);
  snprintf(key, sizeof key, "y.%d", step);
  *y = tr_tensor(r, EM_I64, EM_SHAPE(N, T), key);
}

/* nanoGPT's parameter names for n_layer layers, in named_parameters() order (malloc'd). */
static char **nanogpt_names(int n_layer, int *n) {
  static const char *per_layer[] = {"ln_1.weight",      "ln_1.bias",          "attn.c_attn.weight",
                                    "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
                                    "ln_2.weight",      "ln_2.bias",          "mlp.c_fc.weight",
                                    "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias"};
  *n = 4 + 12 * n_layer;
  char **names = calloc((size_t)*n, sizeof *names);
  int k = 0;
  names[k++] = strdup("transformer.wte.weight");
  names[k++] = strdup("transformer.wpe.weight");
  for (int l = 0; l < n_layer; l++)
    for (int j = 0; j < 12; j++) {
      char buf[96];
      snprintf(buf, sizeof buf, "transformer.h.%d.%s", l, per_layer[j]);
      names[k++] = strdup(buf);
    }
  names[k++] = strdup("transformer.ln_f.weight");
  names[k++] = strdup("transformer.ln_f.bias");
  return names;
}

static int64_t count_params(em_module *m) {
  int64_t total = 0;
  for (int i = 0, n = em_module_num_params(m); i < n; i++)
    total += em_numel(em_module_tensor_at(m, i));
  return total;
}

Test(gpt, names_match_nanogpt_and_the_head_is_tied) {
  tr_ref *r = tr_run("gpt_ref.py", NULL);
  em_module *m = tiny();
  int n;
  char **names = nanogpt_names(TINY.n_layer, &n);
  tu_assert_names(m, n, (const char *const *)names, n); /* parameters only, no buffers */
  cr_assert_eq(n, (int)tr_get(r, NULL, "n_state")[0], "the script's state_dict has %g keys",
               tr_get(r, NULL, "n_state")[0]);
  tr_load_module(r, m, "param."); /* every Ember name is one of the script's */
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
  /* lm_head.weight is the token embedding itself, listed once */
  em_tensor *wte = em_module_get(m, "transformer.wte.weight");
  cr_assert_not_null(wte, "%s", em_last_error());
  cr_assert_eq(em_module_get(m, "lm_head.weight"), wte);
  cr_assert_eq(wte->shape[0], 64);
  cr_assert_eq(wte->shape[1], 32);
  em_module_free(m);
  tr_free(r);
}

Test(gpt, parameter_counts) {
  tr_ref *r = tr_run("gpt_ref.py", NULL);
  em_module *m = tiny();
  /* wte 64*32 + wpe 16*32 + 2 * (4*32 layer norms + 32*96+96 + 32*32+32 + 32*128+128 + 128*32+32)
   * + ln_f 2*32 */
  cr_assert_eq(count_params(m), 28032);
  cr_assert_eq(count_params(m), (int64_t)tr_get(r, NULL, "n_params")[0]);
  em_module_free(m);
  tr_free(r);
  /* GPT-2 small (124M): built once, ~500 MB */
  em_module *g = em_gpt(&(em_gpt_config){.vocab_size = 50257,
                                         .block_size = 1024,
                                         .n_layer = 12,
                                         .n_head = 12,
                                         .n_embd = 768,
                                         .dropout = 0.1f,
                                         .bias = true});
  cr_assert_not_null(g, "%s", em_last_error());
  cr_assert_eq(count_params(g), 124439808);
  em_module_free(g);
}

Test(gpt, forward_backward_matches_pytorch) {
  tr_ref *r = tr_run("gpt_ref.py", NULL);
  TU_BEGIN;
  em_module *m = tiny();
  tr_load_module(r, m, "param.");
  em_tensor *x, *y;
  batch(r, 0, &x, &y);
  em_tensor *logits = em_forward(m, x);
  em_tensor *loss = loss_of(logits, y);
  cr_assert_not_null(loss, "%s", em_last_error());
  cr_assert_eq(logits->ndim, 3);
  cr_assert(logits->shape[0] == N && logits->shape[1] == T && logits->shape[2] == 64);
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  tr_check(r, logits, 1e-4, "logits");
  tr_check(r, loss, 1e-4, "loss");
  tr_check_grads(r, m, 1e-4, "grad.");
  em_module_free(m);
  TU_END;
  tr_free(r);
}

/* The key part of c_attn's bias, columns [C, 2C): it adds q . b_k to every score of a row, which
 * the softmax removes, so its gradient is zero up to rounding. AdamW normalises that noise to
 * steps of about lr either way, which no two implementations share: it is compared only by the
 * size of its entries, and the rest of the bias by value. */
static void check_c_attn_bias(tr_ref *r, em_tensor *got, const char *key) {
  int64_t n;
  const float *want = tr_get(r, &n, "%s", key);
  int64_t C = n / 3;
  cr_assert_eq(em_numel(got), n);
  const float *g = em_data_f32(got);
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < n; i++) {
    if (i >= C && i < 2 * C) {
      cr_assert(fabs(g[i]) <= 1.1 * STEPS * 1e-3, "%s[%lld] = %g", key, (long long)i, g[i]);
      continue;
    }
    diff += (g[i] - want[i]) * (double)(g[i] - want[i]);
    norm += want[i] * (double)want[i];
  }
  cr_assert(sqrt(diff / norm) <= 1e-4, "%s (q and v parts): relative error %g", key,
            sqrt(diff / norm));
}

Test(gpt, adamw_10_steps_match_pytorch) {
  tr_ref *r = tr_run("gpt_ref.py", NULL);
  em_module *m = tiny();
  tr_load_module(r, m, "param.");
  em_params p = em_parameters(m);
  em_optim *opt = em_adamw(p, .lr = 1e-3, .weight_decay = 0.1, .beta1 = 0.9, .beta2 = 0.95);
  cr_assert_not_null(opt, "%s", em_last_error());
  const float *want = tr_get(r, NULL, "adamw.losses");
  for (int step = 0; step < STEPS; step++) {
    em_scope s = em_scope_begin();
    em_tensor *x, *y;
    batch(r, step, &x, &y);
    em_zero_grad(opt);
    em_tensor *loss = loss_of(em_forward(m, x), y);
    cr_assert_not_null(loss, "%s", em_last_error());
    cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
    cr_assert_eq(em_step(opt), EM_OK, "%s", em_last_error());
    double got = em_get(loss, 0);
    cr_assert(fabs(got - want[step]) <= 1e-4 * fabs(want[step]), "step %d: loss %.8f, PyTorch %.8f",
              step, got, want[step]);
    em_scope_end(s);
  }
  for (int i = 0; i < p.n; i++) {
    char key[160];
    snprintf(key, sizeof key, "adamw.final.%s", p.names[i]);
    if (strstr(p.names[i], "c_attn.bias"))
      check_c_attn_bias(r, p.t[i], key);
    else
      tr_check(r, p.t[i], 1e-4, key);
  }
  em_optim_free(opt);
  em_module_free(m);
  tr_free(r);
}

/* Mean and standard deviation of t's values. */
static void moments(const em_tensor *t, double *mean, double *std) {
  double s = 0, s2 = 0;
  int64_t n = em_numel(t);
  for (int64_t i = 0; i < n; i++) {
    double v = em_get(t, i);
    s += v;
    s2 += v * v;
  }
  *mean = s / n;
  *std = sqrt(s2 / n - *mean * *mean);
}

Test(gpt, initialisation_as_nanogpt) {
  em_manual_seed(3);
  em_module *m = em_gpt(&(em_gpt_config){
      .vocab_size = 256, .block_size = 64, .n_layer = 4, .n_head = 4, .n_embd = 64, .bias = true});
  cr_assert_not_null(m, "%s", em_last_error());
  struct {
    const char *name;
    double std; /* 0: constant */
    double value;
  } want[] = {
      {"transformer.wte.weight", 0.02, 0},
      {"transformer.wpe.weight", 0.02, 0},
      {"transformer.h.0.attn.c_attn.weight", 0.02, 0},
      {"transformer.h.3.mlp.c_fc.weight", 0.02, 0},
      {"transformer.h.1.attn.c_proj.weight", 0.02 / sqrt(8.0), 0},
      {"transformer.h.2.mlp.c_proj.weight", 0.02 / sqrt(8.0), 0},
      {"transformer.h.0.attn.c_attn.bias", 0, 0},
      {"transformer.h.3.mlp.c_proj.bias", 0, 0},
      {"transformer.h.2.ln_1.weight", 0, 1},
      {"transformer.h.2.ln_2.bias", 0, 0},
      {"transformer.ln_f.weight", 0, 1},
  };
  for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
    em_tensor *t = em_module_get(m, want[k].name);
    cr_assert_not_null(t, "%s", em_last_error());
    double mean, std;
    moments(t, &mean, &std);
    if (want[k].std > 0) { /* >= 4096 draws: 5% on the std, 3 standard errors on the mean */
      cr_assert(fabs(std / want[k].std - 1) < 0.05, "%s: std %g, want %g", want[k].name, std,
                want[k].std);
      cr_assert(fabs(mean) < 3 * want[k].std / sqrt((double)em_numel(t)), "%s: mean %g",
                want[k].name, mean);
    } else {
      cr_assert(std == 0 && mean == want[k].value, "%s: mean %g std %g, want all %g", want[k].name,
                mean, std, want[k].value);
    }
  }
  em_module_free(m);
}

Test(gpt, no_bias_config) {
  em_gpt_config cfg = TINY;
  cfg.bias = false;
  em_module *m = em_gpt(&cfg);
  cr_assert_not_null(m, "%s", em_last_error());
  /* wte, wpe, 2 x (ln_1, c_attn, c_proj, ln_2, c_fc, c_proj weights), ln_f; no biases: per
   * layer 4 x 32 (layer norms, the projections), 96 (c_attn), 128 (c_fc), and ln_f's 32 */
  cr_assert_eq(em_module_num_params(m), 2 + 2 * 6 + 1);
  cr_assert_eq(count_params(m), 28032 - 2 * (4 * 32 + 96 + 128) - 32);
  TU_BEGIN;
  em_tensor *x = em_zeros(EM_I64, EM_SHAPE(1, 5));
  em_tensor *logits = em_forward(m, x);
  cr_assert_not_null(logits, "%s", em_last_error());
  cr_assert(logits->shape[1] == 5 && logits->shape[2] == 64);
  TU_END;
  em_module_free(m);
}

/* Changing token t leaves the logits at positions before t as they were: the mask works. Also a
 * shorter sequence gives the same logits as the prefix of a longer one. */
Test(gpt, causal) {
  TU_BEGIN;
  em_module *m = tiny();
  em_tensor *a = em_empty(EM_I64, EM_SHAPE(1, T));
  for (int t = 0; t < T; t++) em_set(a, t, (t * 7 + 3) % 64);
  em_tensor *la = em_forward(m, a);
  cr_assert_not_null(la, "%s", em_last_error());
  for (int changed = 0; changed < T; changed += 5) {
    em_tensor *b = em_clone(a);
    em_set(b, changed, (em_get(a, changed) + 11));
    em_tensor *lb = em_forward(m, b);
    cr_assert_not_null(lb, "%s", em_last_error());
    for (int64_t i = 0; i < (int64_t)changed * 64; i++)
      cr_assert_eq(em_get(lb, i), em_get(la, i), "change at %d moved logit %lld", changed,
                   (long long)i);
    double moved = 0;
    for (int64_t i = (int64_t)changed * 64; i < (int64_t)(changed + 1) * 64; i++)
      moved += fabs(em_get(lb, i) - em_get(la, i));
    cr_assert(moved > 0, "change at %d did not move its own logits", changed);
  }
  em_tensor *prefix = em_forward(m, em_narrow(a, 1, 0, 5));
  cr_assert_not_null(prefix, "%s", em_last_error());
  for (int64_t i = 0; i < 5 * 64; i++)
    cr_assert(fabs(em_get(prefix, i) - em_get(la, i)) <= 1e-5 * (1 + fabs(em_get(la, i))),
              "prefix logit %lld", (long long)i);
  em_module_free(m);
  TU_END;
}

/* Dropout (embeddings, attention weights, residual branches) in training mode: masks vary, the
 * gradient flows; eval mode is the model without dropout. */
Test(gpt, dropout_in_training_and_eval) {
  TU_BEGIN;
  em_gpt_config cfg = TINY;
  cfg.dropout = 0.2f;
  em_module *d = em_gpt(&cfg);
  cr_assert_not_null(d, "%s", em_last_error());
  em_module *plain = tiny();
  em_params pd = em_parameters(d), pp = em_parameters(plain);
  cr_assert_eq(pd.n, pp.n);
  for (int i = 0; i < pp.n; i++)
    memcpy(em_data_f32(pd.t[i]), em_data_f32(pp.t[i]), (size_t)pp.numel[i] * sizeof(float));
  em_tensor *x = em_empty(EM_I64, EM_SHAPE(N, T));
  em_tensor *y = em_empty(EM_I64, EM_SHAPE(N, T));
  for (int i = 0; i < N * T; i++) {
    em_set(x, i, (i * 5) % 64);
    em_set(y, i, (i * 3 + 1) % 64);
  }
  em_tensor *ref = em_forward(plain, x);
  em_tensor *l1 = em_forward(d, x), *l2 = em_forward(d, x);
  cr_assert(l1 && l2 && ref, "%s", em_last_error());
  double d12 = 0, d1r = 0;
  for (int64_t i = 0; i < em_numel(ref); i++) {
    cr_assert(isfinite(em_get(l1, i)));
    d12 += fabs(em_get(l1, i) - em_get(l2, i));
    d1r += fabs(em_get(l1, i) - em_get(ref, i));
  }
  cr_assert(d12 > 0 && d1r > 0, "training-mode dropout changed nothing (%g, %g)", d12, d1r);
  em_tensor *loss = loss_of(l1, y);
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  for (int i = 0; i < pd.n; i++) {
    cr_assert_not_null(pd.t[i]->grad, "%s has no gradient", pd.names[i]);
    for (int64_t k = 0; k < pd.numel[i]; k++) cr_assert(isfinite(em_get(pd.t[i]->grad, k)));
  }
  em_module_eval(d);
  em_tensor *le = em_forward(d, x);
  cr_assert_not_null(le, "%s", em_last_error());
  for (int64_t i = 0; i < em_numel(ref); i++)
    cr_assert_eq(em_get(le, i), em_get(ref, i), "eval logit %lld", (long long)i);
  em_module_free(d);
  em_module_free(plain);
  TU_END;
}

Test(gpt, errors) {
  TU_BEGIN;
  em_gpt_config cfg = TINY;
  cfg.n_embd = 30;
  cfg.n_head = 4;
  tu_assert_error((em_tensor *)em_gpt(&cfg), "n_embd (30)", "multiple of n_head (4)");
  cfg = TINY;
  cfg.vocab_size = 0;
  tu_assert_error((em_tensor *)em_gpt(&cfg), "gpt", "vocab_size (0)");
  cfg = TINY;
  cfg.n_layer = -1;
  tu_assert_error((em_tensor *)em_gpt(&cfg), "gpt", "n_layer (-1)");
  cfg = TINY;
  cfg.dropout = 1;
  tu_assert_error((em_tensor *)em_gpt(&cfg), "gpt", "dropout");
  tu_assert_error((em_tensor *)em_gpt(NULL), "gpt", "NULL");

  em_module *m = tiny();
  /* longer than block_size */
  tu_assert_error(em_forward(m, em_zeros(EM_I64, EM_SHAPE(2, 17))), "sequence length 17",
                  "block_size 16");
  /* a token outside the vocabulary, named with its position */
  em_tensor *x = em_zeros(EM_I64, EM_SHAPE(2, 8));
  em_set(x, 11, 64);
  tu_assert_error(em_forward(m, x), "gpt: tokens",
                  "index 64 at position 11 is out of range [0, 64)");
  em_set(x, 11, -1);
  tu_assert_error(em_forward(m, x), "gpt: tokens", "out of range");
  /* wrong rank or dtype */
  tu_assert_error(em_forward(m, em_zeros(EM_I64, EM_SHAPE(8))), "gpt: tokens", "[8]");
  tu_assert_error(em_forward(m, em_zeros(EM_F32, EM_SHAPE(2, 8))), "gpt: tokens", "f32");
  em_module_free(m);
  TU_END;
}
