/* nn/rnn.c: recurrent cells (torch.nn.LSTMCell, GRUCell) and a character-level language model
 * whose forward is a plain C for loop over time steps (see em_nn.h for the contracts).
 *
 * A cell is one time step built from ordinary ops, so autograd records the unrolled graph as the
 * loop runs; backward through time is just backward. The formulas are ATen's CPU ones
 * (aten/src/ATen/native/RNN.cpp), so values agree with PyTorch to rounding:
 *
 *   LSTM  gates = x W_ih^T + b_ih + h W_hh^T + b_hh           (N, 4H): chunks i | f | g | o
 *         c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')
 *   GRU   gi = x W_ih^T + b_ih,  gh = h W_hh^T + b_hh          (N, 3H): chunks r | z | n
 *         r = sigmoid(gi_r + gh_r);  z = sigmoid(gi_z + gh_z);  n = tanh(gi_n + r * gh_n)
 *         h' = (1 - z) * n + z * h, computed as n + z * (h - n) as ATen does
 *
 * A missing state (NULL h or c) is a tensor of zeros, not a skipped term: W_hh then still gets a
 * (zero) gradient and b_hh its real one, as in PyTorch. */
#include "core/internal.h"
#include "em_nn.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the cells ------------------------------------------------------------------------------- */
typedef struct {
  em_tensor *w_ih, *w_hh, *b_ih, *b_hh; /* borrowed: the module owns them */
  int64_t input, hidden;
} cell_ctx;

/* A parameter ~ U(-bound, bound) from the default generator, registered with m under name.
 * Returns it (borrowed from m) or NULL with the error set. */
static em_tensor *uniform_param(em_module *m, const char *name, int64_t rows, int64_t cols,
                                double bound) {
  int64_t shape[2] = {rows, cols};
  em_tensor *t = em__alloc_noscope(EM_F32, cols ? 2 : 1, shape, false);
  if (!t) return NULL;
  float *p = em_data_f32(t), lo = (float)-bound, w = (float)(2 * bound);
  em_rng *rng = em_default_rng();
  for (int64_t i = 0, n = em_numel(t); i < n; i++) p[i] = lo + w * em_rng_uniform(rng);
  em_status st = em_module_add_param(m, name, t);
  em_release(t);
  return st == EM_OK ? t : NULL;
}

static em_tensor *lstm_forward(em_module *m, em_tensor *x);
static em_tensor *gru_forward(em_module *m, em_tensor *x);

/* An LSTMCell (gates 4) or GRUCell (gates 3): parameters drawn in PyTorch's registration order
 * (weight_ih, weight_hh, bias_ih, bias_hh), all from U(-1/sqrt(H), 1/sqrt(H)). */
static em_module *cell_new(const char *type, int gates, int input, int hidden) {
  if (input <= 0 || hidden <= 0) {
    em_set_error(EM_ERR_INVALID, "%s: input_size and hidden_size must be > 0, got %d and %d", type,
                 input, hidden);
    return NULL;
  }
  cell_ctx *c = calloc(1, sizeof *c);
  if (!c) {
    em_set_error(EM_ERR_NOMEM, "%s: out of memory", type);
    return NULL;
  }
  c->input = input;
  c->hidden = hidden;
  em_module *m = em_module_new(type, gates == 4 ? lstm_forward : gru_forward, c, free);
  if (!m) return NULL;
  double bound = 1.0 / sqrt((double)hidden);
  int64_t G = (int64_t)gates * hidden;
  if (!(c->w_ih = uniform_param(m, "weight_ih", G, input, bound)) ||
      !(c->w_hh = uniform_param(m, "weight_hh", G, hidden, bound)) ||
      !(c->b_ih = uniform_param(m, "bias_ih", G, 0, bound)) ||
      !(c->b_hh = uniform_param(m, "bias_hh", G, 0, bound))) {
    em_module_free(m);
    return NULL;
  }
  return m;
}

em_module *em_lstm_cell(int input_size, int hidden_size) {
  return cell_new("LSTMCell", 4, input_size, hidden_size);
}

em_module *em_gru_cell(int input_size, int hidden_size) {
  return cell_new("GRUCell", 3, input_size, hidden_size);
}

/* cell's ctx if it is a module of the given type; else NULL with an error naming op. */
static cell_ctx *cell_of(em_module *cell, const char *type, const char *op) {
  if (cell && strcmp(em_module_type(cell), type) == 0) return em_module_ctx(cell);
  em_set_error(EM_ERR_INVALID, "%s: needs a %s module, got %s", op, type,
               cell ? em_module_type(cell) : "NULL");
  return NULL;
}

/* x is (N, input) f32 and each state given is (N, hidden); else false with an error naming op
 * and the shapes. A NULL x keeps the error that produced it. */
static bool check_step(const char *op, const cell_ctx *c, em_tensor *x, em_tensor *h,
                       em_tensor *cs) {
  if (!x) {
    if (em_last_status() == EM_OK) em_set_error(EM_ERR_INVALID, "%s: input x is NULL", op);
    return false;
  }
  char a[EM_SHAPE_STR_LEN], b[EM_SHAPE_STR_LEN];
  if (x->dtype != EM_F32 || x->ndim != 2 || x->shape[1] != c->input) {
    em_set_error(EM_ERR_INVALID, "%s: x must be f32 (N, %lld) (input_size %lld), got %s %s", op,
                 (long long)c->input, (long long)c->input, em_dtype_name(x->dtype),
                 em_shape_str(x, a, sizeof a));
    return false;
  }
  em_tensor *state[2] = {h, cs};
  const char *name[2] = {"h", "c"};
  for (int k = 0; k < 2; k++) {
    em_tensor *s = state[k];
    if (s && (s->dtype != EM_F32 || s->ndim != 2 || s->shape[0] != x->shape[0] ||
              s->shape[1] != c->hidden)) {
      em_set_error(EM_ERR_INVALID,
                   "%s: %s must be f32 (N, hidden) = (%lld, %lld) for x %s, got %s %s", op, name[k],
                   (long long)x->shape[0], (long long)c->hidden, em_shape_str(x, a, sizeof a),
                   em_dtype_name(s->dtype), em_shape_str(s, b, sizeof b));
      return false;
    }
  }
  return true;
}

/* s, or zeros (N, hidden) on x's device when s is NULL (scope-owned). */
static em_tensor *state_or_zeros(em_tensor *s, const em_tensor *x, int64_t hidden) {
  if (s) return s;
  int64_t shape[2] = {x->shape[0], hidden};
  return em__scope_adopt(em__alloc_on(x->device, EM_F32, 2, shape, true));
}

/* Close the step's private scope s, handing a and b (either may be NULL) to the caller's. */
static void hand_out(em_scope s, em_tensor **a, em_tensor **b) {
  em_retain(*a);
  if (b) em_retain(*b);
  em_scope_end(s);
  em__scope_adopt(*a);
  if (b) em__scope_adopt(*b);
}

em_status em_lstm_cell_step(em_module *cell, em_tensor *x, em_tensor *h, em_tensor *c,
                            em_tensor **h_out, em_tensor **c_out) {
  const char *op = "lstm_cell_step";
  if (!h_out || !c_out)
    return em_set_error(EM_ERR_INVALID, "%s: h_out and c_out must not be NULL", op);
  *h_out = *c_out = NULL;
  cell_ctx *p = cell_of(cell, "LSTMCell", op);
  if (!p || !check_step(op, p, x, h, c)) return em_last_status();
  int64_t H = p->hidden;
  em_scope s = em_scope_begin(); /* the gates and activations end here unless autograd keeps them */
  h = state_or_zeros(h, x, H);
  c = state_or_zeros(c, x, H);
  em_tensor *gates = em_add(em_linear(x, p->w_ih, p->b_ih), em_linear(h, p->w_hh, p->b_hh));
  em_tensor *i = em_sigmoid(em_narrow(gates, 1, 0 * H, H));
  em_tensor *f = em_sigmoid(em_narrow(gates, 1, 1 * H, H));
  em_tensor *g = em_tanh(em_narrow(gates, 1, 2 * H, H));
  em_tensor *o = em_sigmoid(em_narrow(gates, 1, 3 * H, H));
  em_tensor *c2 = em_add(em_mul(f, c), em_mul(i, g));
  em_tensor *h2 = em_mul(o, em_tanh(c2));
  if (!h2) {
    em_scope_end(s);
    return em_last_status() != EM_OK ? em_last_status()
                                     : em_set_error(EM_ERR_INVALID, "%s: step failed", op);
  }
  hand_out(s, &h2, &c2);
  *h_out = h2;
  *c_out = c2;
  return EM_OK;
}

em_tensor *em_gru_cell_step(em_module *cell, em_tensor *x, em_tensor *h) {
  const char *op = "gru_cell_step";
  cell_ctx *p = cell_of(cell, "GRUCell", op);
  if (!p || !check_step(op, p, x, h, NULL)) return NULL;
  int64_t H = p->hidden;
  em_scope s = em_scope_begin();
  h = state_or_zeros(h, x, H);
  em_tensor *gi = em_linear(x, p->w_ih, p->b_ih), *gh = em_linear(h, p->w_hh, p->b_hh);
  em_tensor *r = em_sigmoid(em_add(em_narrow(gi, 1, 0 * H, H), em_narrow(gh, 1, 0 * H, H)));
  em_tensor *z = em_sigmoid(em_add(em_narrow(gi, 1, 1 * H, H), em_narrow(gh, 1, 1 * H, H)));
  em_tensor *n = em_tanh(em_add(em_narrow(gi, 1, 2 * H, H), em_mul(r, em_narrow(gh, 1, 2 * H, H))));
  em_tensor *h2 = em_add(n, em_mul(z, em_sub(h, n)));
  hand_out(s, &h2, NULL);
  return h2;
}

/* em_forward(cell, x): one step from a zero state. */
static em_tensor *lstm_forward(em_module *m, em_tensor *x) {
  em_tensor *h = NULL, *c = NULL;
  return em_lstm_cell_step(m, x, NULL, NULL, &h, &c) == EM_OK ? h : NULL;
}

static em_tensor *gru_forward(em_module *m, em_tensor *x) { return em_gru_cell_step(m, x, NULL); }

/* ---- the character RNN ----------------------------------------------------------------------- */
typedef struct {
  em_module *embed, *head; /* borrowed: children of the module */
  int vocab, hidden, layers;
  em_module *cells[]; /* layers LSTM cells, children of the "cells" list */
} char_rnn_ctx;

static em_tensor *char_rnn_module_forward(em_module *m, em_tensor *tokens) {
  return em_char_rnn_forward(m, tokens, NULL, NULL);
}

/* child registered with parent under name, or NULL with the error set (a NULL child, from a
 * constructor that failed, keeps that constructor's message). */
static em_module *attach(em_module *parent, const char *name, em_module *child) {
  if (!child) return NULL;
  return em_module_add_child(parent, name, child) == EM_OK ? child : NULL;
}

em_module *em_char_rnn(int vocab, int hidden, int layers) {
  if (vocab <= 0 || hidden <= 0 || layers <= 0) {
    em_set_error(EM_ERR_INVALID, "char_rnn: vocab, hidden and layers must be > 0, got %d, %d, %d",
                 vocab, hidden, layers);
    return NULL;
  }
  char_rnn_ctx *c = calloc(1, sizeof *c + (size_t)layers * sizeof c->cells[0]);
  if (!c) {
    em_set_error(EM_ERR_NOMEM, "char_rnn: out of memory");
    return NULL;
  }
  c->vocab = vocab;
  c->hidden = hidden;
  c->layers = layers;
  em_module *m = em_module_new("CharRNN", char_rnn_module_forward, c, free);
  if (!m) return NULL;
  /* Built in PyTorch's order (embed, cells, head), one statement each, so the initial weights are
   * drawn in the order the peer's constructor draws them. The list has no forward of its own, as
   * nn.ModuleList. */
  em_module *list;
  if (!(c->embed = attach(m, "embed", em_embedding_new(vocab, hidden))) ||
      !(list = attach(m, "cells", em_module_new("ModuleList", NULL, NULL, NULL))))
    goto fail;
  for (int l = 0; l < layers; l++) {
    char name[16];
    snprintf(name, sizeof name, "%d", l);
    if (!(c->cells[l] = attach(list, name, em_lstm_cell(hidden, hidden)))) goto fail;
  }
  if (!(c->head = attach(m, "head", em_linear_new(hidden, vocab, true)))) goto fail;
  return m;
fail:
  em_module_free(m);
  return NULL;
}

/* Prefix the last error's message with the context given (printf format); returns its status. */
__attribute__((format(printf, 1, 2))) static em_status with_context(const char *fmt, ...) {
  char where[256], msg[768]; /* the message is copied first: it is an argument of the next one */
  snprintf(msg, sizeof msg, "%s", em_last_error());
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(where, sizeof where, fmt, ap);
  va_end(ap);
  em_status st = em_last_status() != EM_OK ? em_last_status() : EM_ERR_INVALID;
  return em_set_error(st, "%s: %s", where, msg);
}

/* The time loop. tokens (N, T) -> logits (N, T, vocab):
 *
 *   x = embed(tokens)                           (N, T, H)
 *   for t in 0..T-1:
 *     in = x[:, t]                              (N, H)
 *     for l in 0..layers-1:  h[l], c[l] = cells[l](in, (h[l], c[l]));  in = h[l]
 *     out[t] = in
 *   logits = head(stack(out, dim 1))            (N, T, vocab) */
em_tensor *em_char_rnn_forward(em_module *m, em_tensor *tokens, em_tensor **h, em_tensor **c) {
  const char *op = "char_rnn_forward";
  if (!m || strcmp(em_module_type(m), "CharRNN") != 0) {
    em_set_error(EM_ERR_INVALID, "%s: expected a CharRNN (em_char_rnn), got %s", op,
                 m ? em_module_type(m) : "NULL");
    return NULL;
  }
  EM_CHECK_INPUT(tokens, op);
  char_rnn_ctx *p = em_module_ctx(m);
  char b[EM_SHAPE_STR_LEN];
  if (tokens->ndim != 2 || tokens->shape[1] < 1 || tokens->shape[1] > INT32_MAX ||
      (tokens->dtype != EM_I64 && tokens->dtype != EM_I32)) {
    em_set_error(EM_ERR_INVALID, "%s: tokens must be i64 or i32 (N, T) with T >= 1, got %s %s", op,
                 em_dtype_name(tokens->dtype), em_shape_str(tokens, b, sizeof b));
    return NULL;
  }
  int64_t N = tokens->shape[0], T = tokens->shape[1], H = p->hidden;
  int L = p->layers;
  em_tensor **outs = calloc((size_t)T, sizeof *outs);
  em_tensor **state = calloc(2 * (size_t)L, sizeof *state); /* h[0..L), then c[0..L) */
  if (!outs || !state) {
    free(outs);
    free(state);
    em_set_error(EM_ERR_NOMEM, "%s: out of memory for %lld steps", op, (long long)T);
    return NULL;
  }
  for (int l = 0; l < L; l++) {
    state[l] = h ? h[l] : NULL;
    state[L + l] = c ? c[l] : NULL;
  }
  em_scope s = em_scope_begin();
  em_tensor *logits = NULL, *x = em_forward(p->embed, tokens); /* range-checks the tokens */
  em_status st = EM_OK;
  if (!x)
    st = with_context("%s: tokens %s (vocab %d)", op, em_shape_str(tokens, b, sizeof b), p->vocab);
  for (int64_t t = 0; t < T && st == EM_OK; t++) {
    em_tensor *in = em_reshape(em_narrow(x, 1, t, 1), 2, (int64_t[]){N, H});
    for (int l = 0; l < L && st == EM_OK; l++) {
      st = em_lstm_cell_step(p->cells[l], in, state[l], state[L + l], &state[l], &state[L + l]);
      if (st != EM_OK) st = with_context("%s: step %lld, layer %d", op, (long long)t, l);
      in = state[l];
    }
    outs[t] = in;
  }
  if (st == EM_OK) logits = em_forward(p->head, em_stack((int)T, outs, 1));
  if (logits) { /* hand the logits and the final state to the caller's scope */
    for (int l = 0; l < 2 * L; l++) em_retain(state[l]);
    em_retain(logits);
  }
  em_scope_end(s);
  if (logits) {
    em__scope_adopt(logits);
    for (int l = 0; l < 2 * L; l++) em__scope_adopt(state[l]);
    for (int l = 0; l < L; l++) {
      if (h) h[l] = state[l];
      if (c) c[l] = state[L + l];
    }
  }
  free(outs);
  free(state);
  return logits;
}
