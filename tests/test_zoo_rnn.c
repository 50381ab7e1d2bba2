/* test_zoo_rnn.c: the recurrent cells (em_lstm_cell, em_gru_cell) and the character RNN
 * (em_char_rnn), against the three oracles of STYLE.md:
 *   - a float64 loop for one step of each cell;
 *   - finite differences for the gradients of a cell step (inputs, state and weights) and of a
 *     small char RNN's weights;
 *   - PyTorch (tests/ref/rnn_ref.py, torch 1.13): LSTMCell and GRUCell over 16 steps (every h and
 *     c, the loss, every parameter's gradient and the initial state's), and the char RNN's peer
 *     (logits, cross-entropy, every gradient, then 5 Adam steps), all within 1e-4 relative.
 * Also: names equal the peer's state_dict keys, the carried state of em_char_rnn_forward (two
 * calls of 8 steps equal one of 16, values and gradients), and clear errors for bad inputs. */
#include "torchref.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define TOL 1e-4

/* ---- names, shapes, initialisation ----------------------------------------------------------- */
static const char *const CELL_NAMES[] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};

/* Every parameter of m lies in [-bound, bound] and they are not all equal. */
static void assert_uniform_init(em_module *m, double bound) {
  em_params p = em_parameters(m);
  for (int i = 0; i < p.n; i++) {
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t k = 0; k < p.numel[i]; k++) {
      double v = em_get(p.t[i], k);
      lo = fmin(lo, v);
      hi = fmax(hi, v);
    }
    cr_assert(lo >= -bound && hi <= bound && hi > lo, "%s in [%g, %g], bound %g", p.names[i], lo,
              hi, bound);
  }
}

Test(rnn, cell_names_shapes_and_init) {
  TU_BEGIN;
  em_module *lstm = em_lstm_cell(5, 7), *gru = em_gru_cell(5, 7);
  cr_assert(lstm && gru, "%s", em_last_error());
  tu_assert_names(lstm, 4, CELL_NAMES, 4);
  tu_assert_names(gru, 4, CELL_NAMES, 4);
  cr_assert_str_eq(em_module_type(lstm), "LSTMCell");
  cr_assert_str_eq(em_module_type(gru), "GRUCell");
  const int64_t want[2][4][2] = {{{28, 5}, {28, 7}, {28, 0}, {28, 0}},
                                 {{21, 5}, {21, 7}, {21, 0}, {21, 0}}};
  em_module *cells[2] = {lstm, gru};
  for (int k = 0; k < 2; k++) {
    for (int i = 0; i < 4; i++) {
      em_tensor *t = em_module_get(cells[k], CELL_NAMES[i]);
      cr_assert_eq(t->ndim, want[k][i][1] ? 2 : 1, "%s", CELL_NAMES[i]);
      cr_assert_eq(t->shape[0], want[k][i][0], "%s", CELL_NAMES[i]);
      if (want[k][i][1]) cr_assert_eq(t->shape[1], want[k][i][1], "%s", CELL_NAMES[i]);
    }
    assert_uniform_init(cells[k], 1 / sqrt(7.0));
  }
  em_module_free(lstm);
  em_module_free(gru);
  TU_END;
}

Test(rnn, char_rnn_names) {
  TU_BEGIN;
  em_module *m = em_char_rnn(20, 16, 2);
  cr_assert_not_null(m, "%s", em_last_error());
  static const char *const names[] = {"embed.weight",      "cells.0.weight_ih", "cells.0.weight_hh",
                                      "cells.0.bias_ih",   "cells.0.bias_hh",   "cells.1.weight_ih",
                                      "cells.1.weight_hh", "cells.1.bias_ih",   "cells.1.bias_hh",
                                      "head.weight",       "head.bias"};
  tu_assert_names(m, 11, names, 11);
  em_params p = em_parameters(m);
  int64_t total = 0;
  for (int i = 0; i < p.n; i++) total += p.numel[i];
  /* embed 20*16 + 2 cells * (64*16 * 2 + 64 * 2) + head 16*20 + 20 */
  cr_assert_eq(total, 320 + 2 * (2048 + 128) + 320 + 20);
  em_module_free(m);
  TU_END;
}

/* ---- one step against a float64 loop --------------------------------------------------------- */
static double sigm(double v) { return 1 / (1 + exp(-v)); }

/* Row n's gate pre-activation j: sum_k a[n,k] W[j,k] + b[j]. */
static double affine(em_tensor *a, em_tensor *w, em_tensor *b, int n, int j) {
  int64_t K = a->shape[1];
  double s = em_get(b, j);
  for (int64_t k = 0; k < K; k++) s += em_get(a, n * K + k) * em_get(w, j * K + k);
  return s;
}

Test(rnn, lstm_step_matches_float64_loop) {
  TU_BEGIN;
  enum { N = 2, I = 3, H = 4 };
  em_module *cell = em_lstm_cell(I, H);
  em_tensor *x = tu_ramp(EM_SHAPE(N, I), 1.2, 0.1), *h = tu_ramp(EM_SHAPE(N, H), 0.8, 0.7),
            *c = tu_ramp(EM_SHAPE(N, H), 1.5, 1.3), *h2, *c2;
  cr_assert_eq(em_lstm_cell_step(cell, x, h, c, &h2, &c2), EM_OK, "%s", em_last_error());
  em_tensor *wi = em_module_get(cell, "weight_ih"), *wh = em_module_get(cell, "weight_hh"),
            *bi = em_module_get(cell, "bias_ih"), *bh = em_module_get(cell, "bias_hh");
  double ref_h[N * H], ref_c[N * H];
  for (int n = 0; n < N; n++)
    for (int j = 0; j < H; j++) {
      double g[4];
      for (int q = 0; q < 4; q++)
        g[q] = affine(x, wi, bi, n, q * H + j) + affine(h, wh, bh, n, q * H + j);
      double cc = sigm(g[1]) * em_get(c, n * H + j) + sigm(g[0]) * tanh(g[2]);
      ref_c[n * H + j] = cc;
      ref_h[n * H + j] = sigm(g[3]) * tanh(cc);
    }
  tu_assert_close(h2, ref_h, N * H, 1e-5, 1e-6, "lstm h'");
  tu_assert_close(c2, ref_c, N * H, 1e-5, 1e-6, "lstm c'");
  em_module_free(cell);
  TU_END;
}

Test(rnn, gru_step_matches_float64_loop) {
  TU_BEGIN;
  enum { N = 2, I = 3, H = 4 };
  em_module *cell = em_gru_cell(I, H);
  em_tensor *x = tu_ramp(EM_SHAPE(N, I), 1.2, 0.1), *h = tu_ramp(EM_SHAPE(N, H), 0.8, 0.7);
  em_tensor *h2 = em_gru_cell_step(cell, x, h);
  cr_assert_not_null(h2, "%s", em_last_error());
  em_tensor *wi = em_module_get(cell, "weight_ih"), *wh = em_module_get(cell, "weight_hh"),
            *bi = em_module_get(cell, "bias_ih"), *bh = em_module_get(cell, "bias_hh");
  double ref[N * H];
  for (int n = 0; n < N; n++)
    for (int j = 0; j < H; j++) {
      double r = sigm(affine(x, wi, bi, n, j) + affine(h, wh, bh, n, j));
      double z = sigm(affine(x, wi, bi, n, H + j) + affine(h, wh, bh, n, H + j));
      double nn = tanh(affine(x, wi, bi, n, 2 * H + j) + r * affine(h, wh, bh, n, 2 * H + j));
      ref[n * H + j] = (1 - z) * nn + z * em_get(h, n * H + j);
    }
  tu_assert_close(h2, ref, N * H, 1e-5, 1e-6, "gru h'");
  /* em_forward is one step from a zero state. */
  em_tensor *h0 = em_zeros(EM_F32, EM_SHAPE(N, H));
  em_tensor *a = em_forward(cell, x), *b = em_gru_cell_step(cell, x, h0);
  cr_assert(a && b, "%s", em_last_error());
  cr_assert_eq(tu_rel_err(em_data_f32(a), em_data_f32(b), N * H), 0.0);
  em_module_free(cell);
  TU_END;
}

/* ---- finite differences ---------------------------------------------------------------------- */
/* inputs: x, h, c, then the cell's four parameters (perturbed in place by tu_gradcheck). */
static em_tensor *lstm_step_fn(em_tensor **in, void *ctx) {
  em_tensor *h, *c;
  if (em_lstm_cell_step(ctx, in[0], in[1], in[2], &h, &c) != EM_OK) return NULL;
  return em_concat(2, (em_tensor *[]){h, c}, 1);
}

static em_tensor *gru_step_fn(em_tensor **in, void *ctx) {
  return em_gru_cell_step(ctx, in[0], in[1]);
}

static void gradcheck_cell(em_module *cell, tu_fn fn, int n_state, const char *what) {
  enum { N = 2, I = 3, H = 2 };
  em_rng r = em_rng_new(7);
  em_tensor *in[7];
  int n = 0;
  in[n++] = tu_rand(&r, EM_SHAPE(N, I), -1, 1, true);
  for (int k = 0; k < n_state; k++) in[n++] = tu_rand(&r, EM_SHAPE(N, H), -1, 1, true);
  em_params p = em_parameters(cell);
  for (int i = 0; i < p.n; i++) in[n++] = p.t[i];
  tu_gradcheck(fn, n, in, cell, 1e-2, 3e-3, what);
}

Test(rnn, cell_steps_gradcheck) {
  TU_BEGIN;
  em_module *lstm = em_lstm_cell(3, 2), *gru = em_gru_cell(3, 2);
  gradcheck_cell(lstm, lstm_step_fn, 2, "lstm step: x, h, c, weights");
  gradcheck_cell(gru, gru_step_fn, 1, "gru step: x, h, weights");
  em_module_free(lstm);
  em_module_free(gru);
  TU_END;
}

/* inputs: the char RNN's parameters; ctx: the module. Tokens fixed: (2, 3) over vocab 5. */
static em_tensor *char_rnn_fn(em_tensor **in, void *ctx) {
  (void)in;
  em_tensor *tok = em_from_data(EM_I64, EM_SHAPE(2, 3), (int64_t[]){0, 3, 4, 2, 2, 1});
  return em_forward(ctx, tok);
}

Test(rnn, char_rnn_gradcheck) {
  TU_BEGIN;
  em_module *m = em_char_rnn(5, 3, 2);
  em_params p = em_parameters(m);
  tu_gradcheck(char_rnn_fn, p.n, p.t, m, 1e-2, 3e-3, "char rnn (5, 3, 2) weights");
  em_module_free(m);
  TU_END;
}

/* ---- PyTorch --------------------------------------------------------------------------------- */
/* The 16-step run of tests/ref/rnn_ref.py for one cell (tag "lstm" or "gru"). */
static void cell_vs_torch(tr_ref *R, const char *tag, bool lstm) {
  enum { STEPS = 16, N = 3, I = 5, H = 7 };
  em_scope s = em_scope_begin();
  em_module *cell = lstm ? em_lstm_cell(I, H) : em_gru_cell(I, H);
  cr_assert_not_null(cell, "%s", em_last_error());
  char key[64], prefix[64];
  snprintf(prefix, sizeof prefix, "%s.param.", tag);
  tr_load_module(R, cell, prefix); /* every Ember name is a state_dict key ... */
  cr_assert_eq(tr_get(R, NULL, "%s.n_keys", tag)[0], em_module_num_tensors(cell),
               "%s: state_dict and Ember differ in size", tag); /* ... and there are no others */
  snprintf(key, sizeof key, "%s.x", tag);
  em_tensor *xs = tr_tensor(R, EM_F32, EM_SHAPE(STEPS, N, I), key);
  snprintf(key, sizeof key, "%s.wh", tag);
  em_tensor *wh = tr_tensor(R, EM_F32, EM_SHAPE(STEPS, N, H), key);
  snprintf(key, sizeof key, "%s.wc", tag);
  em_tensor *wc = tr_tensor(R, EM_F32, EM_SHAPE(STEPS, N, H), key);
  snprintf(key, sizeof key, "%s.h0", tag);
  em_tensor *h0 = tr_tensor(R, EM_F32, EM_SHAPE(N, H), key);
  snprintf(key, sizeof key, "%s.c0", tag);
  em_tensor *c0 = tr_tensor(R, EM_F32, EM_SHAPE(N, H), key);
  em_set_requires_grad(h0, true);
  em_set_requires_grad(c0, true);

  em_tensor *h = h0, *c = c0, *loss = em_zeros(EM_F32, 0, NULL);
  for (int t = 0; t < STEPS; t++) { /* an RNN is a for loop */
    em_tensor *x = em_reshape(em_narrow(xs, 0, t, 1), EM_SHAPE(N, I));
    em_tensor *wht = em_reshape(em_narrow(wh, 0, t, 1), EM_SHAPE(N, H));
    if (lstm) {
      cr_assert_eq(em_lstm_cell_step(cell, x, h, c, &h, &c), EM_OK, "%s", em_last_error());
      em_tensor *wct = em_reshape(em_narrow(wc, 0, t, 1), EM_SHAPE(N, H));
      loss = em_add(loss, em_sum(em_mul(c, wct), 0, NULL, false));
      snprintf(key, sizeof key, "%s.c.%d", tag, t);
      tr_check(R, c, TOL, key);
    } else {
      h = em_gru_cell_step(cell, x, h);
    }
    loss = em_add(loss, em_sum(em_mul(h, wht), 0, NULL, false));
    snprintf(key, sizeof key, "%s.h.%d", tag, t);
    tr_check(R, h, TOL, key);
  }
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  snprintf(key, sizeof key, "%s.loss", tag);
  tr_check(R, loss, TOL, key);
  snprintf(prefix, sizeof prefix, "%s.grad.", tag);
  tr_check_grads(R, cell, TOL, prefix);
  snprintf(key, sizeof key, "%s.grad_h0", tag);
  tr_check(R, h0->grad, TOL, key);
  if (lstm) {
    snprintf(key, sizeof key, "%s.grad_c0", tag);
    tr_check(R, c0->grad, TOL, key);
  }
  /* One step from a zero state: em_forward(cell, x) against cell(x) without hx. */
  snprintf(key, sizeof key, "%s.zero_state_h", tag);
  tr_check(R, em_forward(cell, em_reshape(em_narrow(xs, 0, 0, 1), EM_SHAPE(N, I))), TOL, key);
  em_module_free(cell);
  em_scope_end(s);
}

Test(rnn, cells_16_steps_vs_torch) {
  tr_ref *R = tr_run("rnn_ref.py", "cells");
  cell_vs_torch(R, "lstm", true);
  cell_vs_torch(R, "gru", false);
  tr_free(R);
}

enum { V = 20, HID = 16, LAYERS = 2, B = 2, T = 16, ADAM_STEPS = 5 };

/* Mean cross-entropy of logits (B, T, V) against targets (B, T) over all positions. */
static em_tensor *lm_loss(em_tensor *logits, em_tensor *targets) {
  return em_cross_entropy(em_reshape(logits, EM_SHAPE(B * T, V)),
                          em_reshape(targets, EM_SHAPE(B * T)));
}

static void batch(tr_ref *R, int s, em_tensor **tok, em_tensor **tgt) {
  char key[64];
  snprintf(key, sizeof key, "rnn.tokens.%d", s);
  *tok = tr_tensor(R, EM_I64, EM_SHAPE(B, T), key);
  snprintf(key, sizeof key, "rnn.targets.%d", s);
  *tgt = tr_tensor(R, EM_I64, EM_SHAPE(B, T), key);
}

Test(rnn, char_rnn_vs_torch_and_adam_steps) {
  tr_ref *R = tr_run("rnn_ref.py", "char_rnn");
  em_module *m = em_char_rnn(V, HID, LAYERS);
  cr_assert_not_null(m, "%s", em_last_error());
  tr_load_module(R, m, "rnn.param.");
  cr_assert_eq(tr_get(R, NULL, "rnn.n_keys")[0], em_module_num_tensors(m));

  em_scope s = em_scope_begin();
  em_tensor *tok, *tgt;
  batch(R, 0, &tok, &tgt);
  em_tensor *logits = em_forward(m, tok), *loss = lm_loss(logits, tgt);
  cr_assert_not_null(loss, "%s", em_last_error());
  cr_assert_eq(logits->ndim, 3);
  cr_assert(logits->shape[0] == B && logits->shape[1] == T && logits->shape[2] == V);
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  tr_check(R, logits, TOL, "rnn.logits");
  tr_check(R, loss, TOL, "rnn.loss");
  tr_check_grads(R, m, TOL, "rnn.grad.");
  em_scope_end(s);

  em_params p = em_parameters(m);
  em_optim *opt = em_adam(p, .lr = 1e-2);
  cr_assert_not_null(opt, "%s", em_last_error());
  const float *want = tr_get(R, NULL, "rnn.adam.losses");
  for (int step = 0; step < ADAM_STEPS; step++) {
    s = em_scope_begin();
    batch(R, step, &tok, &tgt);
    cr_assert_eq(em_zero_grad(opt), EM_OK);
    loss = lm_loss(em_forward(m, tok), tgt);
    cr_assert_not_null(loss, "%s", em_last_error());
    cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
    cr_assert_eq(em_step(opt), EM_OK, "%s", em_last_error());
    double got = em_get(loss, 0);
    cr_assert(fabs(got - want[step]) <= TOL * fabs(want[step]),
              "Adam step %d: loss %.8f, PyTorch %.8f", step, got, want[step]);
    em_scope_end(s);
  }
  for (int i = 0; i < p.n; i++) {
    char key[160];
    snprintf(key, sizeof key, "rnn.adam.final.%s", p.names[i]);
    tr_check(R, p.t[i], TOL, key);
  }
  em_optim_free(opt);
  em_module_free(m);
  tr_free(R);
}

/* ---- carried state --------------------------------------------------------------------------- */
/* sum(logits * w) with fixed weights, and the gradients it gives every parameter (copied out). */
static em_tensor *weighted(em_tensor *logits) {
  em_tensor *w = tu_ramp(logits->ndim, logits->shape, 1.0, 0.5);
  return em_sum(em_mul(logits, w), 0, NULL, false);
}

Test(rnn, char_rnn_state_carries_across_calls) {
  TU_BEGIN;
  em_module *m = em_char_rnn(V, HID, LAYERS);
  em_params p = em_parameters(m);
  em_rng r = em_rng_new(3);
  int64_t tokens[B * T];
  for (int i = 0; i < B * T; i++) tokens[i] = (int64_t)(em_rng_next_u64(&r) % V);
  em_tensor *tok = em_from_data(EM_I64, EM_SHAPE(B, T), tokens);

  /* One call of 16 steps from a zero state (NULL entries), keeping the final state. */
  em_tensor *h1[LAYERS] = {NULL}, *c1[LAYERS] = {NULL};
  em_tensor *whole = em_char_rnn_forward(m, tok, h1, c1);
  cr_assert_not_null(whole, "%s", em_last_error());
  cr_assert(h1[0] && h1[1] && c1[0] && c1[1]);
  cr_assert(h1[1]->ndim == 2 && h1[1]->shape[0] == B && h1[1]->shape[1] == HID);
  cr_assert_eq(em_backward(weighted(whole)), EM_OK, "%s", em_last_error());
  em_tensor *g_whole[16];
  for (int i = 0; i < p.n; i++) g_whole[i] = em_clone(p.t[i]->grad);
  /* em_forward is the same forward. */
  em_tensor *plain = em_forward(m, tok);
  cr_assert_eq(tu_rel_err(em_data_f32(plain), em_data_f32(whole), em_numel(whole)), 0.0);

  /* Two calls of 8, the state carried (not detached: backward runs through both). */
  for (int i = 0; i < p.n; i++) em_set_grad(p.t[i], NULL);
  em_tensor *h2[LAYERS] = {NULL}, *c2[LAYERS] = {NULL};
  em_tensor *a = em_char_rnn_forward(m, em_narrow(tok, 1, 0, T / 2), h2, c2);
  em_tensor *b = em_char_rnn_forward(m, em_narrow(tok, 1, T / 2, T / 2), h2, c2);
  em_tensor *halves = em_concat(2, (em_tensor *[]){a, b}, 1);
  cr_assert_not_null(halves, "%s", em_last_error());
  cr_assert(tu_rel_err(em_data_f32(halves), em_data_f32(whole), em_numel(whole)) <= 1e-6);
  for (int l = 0; l < LAYERS; l++) {
    cr_assert(tu_rel_err(em_data_f32(h2[l]), em_data_f32(h1[l]), B * HID) <= 1e-6, "h[%d]", l);
    cr_assert(tu_rel_err(em_data_f32(c2[l]), em_data_f32(c1[l]), B * HID) <= 1e-6, "c[%d]", l);
  }
  cr_assert_eq(em_backward(weighted(halves)), EM_OK, "%s", em_last_error());
  for (int i = 0; i < p.n; i++)
    cr_assert(tu_rel_err(em_data_f32(p.t[i]->grad), em_data_f32(g_whole[i]), p.numel[i]) <= 1e-5,
              "gradient of %s", p.names[i]);
  em_module_free(m);
  TU_END;
}

/* ---- bad inputs ------------------------------------------------------------------------------ */
Test(rnn, bad_inputs_are_clear_errors) {
  TU_BEGIN;
  em_module *lstm = em_lstm_cell(5, 7), *gru = em_gru_cell(5, 7), *m = em_char_rnn(V, HID, 1);
  em_tensor *x = em_zeros(EM_F32, EM_SHAPE(3, 5)), *h = em_zeros(EM_F32, EM_SHAPE(3, 7));
  em_tensor *ho = NULL, *co = NULL;

  /* Wrong feature size of x, h of the wrong shape, c of the wrong batch. */
  cr_assert_neq(em_lstm_cell_step(lstm, em_zeros(EM_F32, EM_SHAPE(3, 4)), h, h, &ho, &co), EM_OK);
  cr_assert_null(ho);
  tu_assert_error(NULL, "lstm_cell_step: x must be f32 (N, 5)", "got f32 [3, 4]");
  cr_assert_neq(em_lstm_cell_step(lstm, x, em_zeros(EM_F32, EM_SHAPE(3, 6)), h, &ho, &co), EM_OK);
  tu_assert_error(NULL, "h must be f32 (N, hidden) = (3, 7)", "got f32 [3, 6]");
  cr_assert_neq(em_lstm_cell_step(lstm, x, h, em_zeros(EM_F32, EM_SHAPE(2, 7)), &ho, &co), EM_OK);
  tu_assert_error(NULL, "c must be f32 (N, hidden) = (3, 7)", "got f32 [2, 7]");
  tu_assert_error(em_gru_cell_step(gru, em_zeros(EM_F32, EM_SHAPE(3, 5, 1)), h),
                  "gru_cell_step: x must be f32 (N, 5)", "[3, 5, 1]");
  tu_assert_error(em_gru_cell_step(gru, x, em_zeros(EM_F32, EM_SHAPE(7))), "h must be", "[7]");
  tu_assert_error(em_forward(lstm, em_zeros(EM_I64, EM_SHAPE(3, 5))), "x must be f32",
                  "got i64 [3, 5]");
  /* The wrong kind of cell, a missing output pointer. */
  tu_assert_error(em_gru_cell_step(lstm, x, NULL), "gru_cell_step: needs a GRUCell module",
                  "got LSTMCell");
  cr_assert_neq(em_lstm_cell_step(gru, x, NULL, NULL, &ho, &co), EM_OK);
  tu_assert_error(NULL, "needs a LSTMCell module", "got GRUCell");
  cr_assert_neq(em_lstm_cell_step(lstm, x, NULL, NULL, &ho, NULL), EM_OK);
  tu_assert_error(NULL, "h_out and c_out", NULL);
  /* A NULL input keeps the error that made it. */
  em_set_error(EM_ERR_INVALID, "earlier failure");
  tu_assert_error(em_gru_cell_step(gru, NULL, h), "earlier failure", NULL);

  /* Tokens out of range, of the wrong dtype or rank; a state of the wrong shape. */
  em_tensor *tok = em_from_data(EM_I64, EM_SHAPE(1, 3), (int64_t[]){1, V, 2});
  tu_assert_error(em_forward(m, tok), "char_rnn_forward: tokens [1, 3] (vocab 20)",
                  "index 20 at position 1 is out of range [0, 20)");
  tok = em_from_data(EM_I64, EM_SHAPE(1, 3), (int64_t[]){1, -1, 2});
  tu_assert_error(em_forward(m, tok), "index -1 at position 1", NULL);
  tu_assert_error(em_forward(m, em_zeros(EM_F32, EM_SHAPE(1, 3))), "tokens must be i64 or i32",
                  "f32 [1, 3]");
  tu_assert_error(em_forward(m, em_zeros(EM_I64, EM_SHAPE(3))), "(N, T)", "i64 [3]");
  tu_assert_error(em_forward(m, em_zeros(EM_I64, EM_SHAPE(2, 0))), "T >= 1", "[2, 0]");
  em_tensor *hs[1] = {em_zeros(EM_F32, EM_SHAPE(2, HID))};
  tu_assert_error(em_char_rnn_forward(m, em_zeros(EM_I64, EM_SHAPE(3, 4)), hs, NULL),
                  "char_rnn_forward: step 0, layer 0: lstm_cell_step: h must be f32 (N, hidden) "
                  "= (3, 16)",
                  "got f32 [2, 16]");
  cr_assert_eq(hs[0]->shape[0], 2, "the state array is left as it was");
  tu_assert_error(em_char_rnn_forward(lstm, em_zeros(EM_I64, EM_SHAPE(3, 4)), NULL, NULL),
                  "char_rnn_forward: expected a CharRNN", "got LSTMCell");

  /* Bad sizes at construction. */
  cr_assert_null(em_lstm_cell(0, 4));
  tu_assert_error(NULL, "LSTMCell: input_size and hidden_size must be > 0", "got 0 and 4");
  cr_assert_null(em_gru_cell(4, -1));
  tu_assert_error(NULL, "GRUCell", "got 4 and -1");
  cr_assert_null(em_char_rnn(V, HID, 0));
  tu_assert_error(NULL, "char_rnn: vocab, hidden and layers must be > 0", "20, 16, 0");
  em_module_free(lstm);
  em_module_free(gru);
  em_module_free(m);
  TU_END;
}
