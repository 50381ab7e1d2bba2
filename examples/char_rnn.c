/* char_rnn.c: a character-level LSTM language model trained on a text file, data-parallel over
 * however many ranks it was started with (one without a launcher), then sampling some text.
 *
 *   ddprun -n 2 ./build/examples/char_rnn --steps 300       # or mpirun -np 2, or no launcher
 *
 * The model is em_char_rnn(vocab, hidden, layers): an embedding, a stack of LSTM cells and a linear
 * head. Its forward is written out below (forward()): an RNN is a C for loop over time steps, and
 * autograd records the unrolled graph as the loop runs.
 *
 * Data: the text's bytes, the vocabulary being the distinct bytes it contains. The first 90% is
 * for training, the rest for validation. Training uses truncated backpropagation through time:
 * the training part is cut into batch * ranks contiguous streams, rank r owning streams
 * [r * batch, (r + 1) * batch); each step reads the next window of seq bytes of each of its
 * streams, predicts every next byte, and carries the LSTM state into the next window, detached
 * (the gradient stops at the window's start). When the streams run out they start again from a
 * zero state. Losses are in bits per byte (cross-entropy / ln 2), to compare with the unigram
 * entropy of the text's bytes: what a model that ignores context achieves at best.
 *
 * usage: [ddprun -n W] char_rnn [--steps N] [--hidden N] [--layers N] [--seq N] [--batch N]
 *                               [--lr X] [--text FILE] [--seed N] [--temp X] [--threads N]
 *                               [--eval-every N] */
#include "ember.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LAYERS 8
#define MAX_SEQ 1024

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *what) {
  ddp_eprint("char_rnn: %s: %s\n", what, em_last_error());
  return 1;
}

/* ---- the text -------------------------------------------------------------------------------- */
typedef struct {
  int64_t n;                  /* bytes */
  int64_t *id;                /* n token ids */
  int vocab;                  /* distinct bytes */
  unsigned char byte_of[256]; /* id -> byte */
  double unigram_bpb;         /* entropy of the byte frequencies, bits per byte */
} text;

/* Read path into t: bytes as token ids, the vocabulary, the unigram entropy. */
static em_status text_load(const char *path, text *t) {
  FILE *f = fopen(path, "rb");
  if (!f) return em_set_error(EM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  int64_t count[256] = {0}, cap = 1 << 16;
  unsigned char *buf = malloc((size_t)cap);
  t->n = 0;
  for (size_t got; buf && (got = fread(buf + t->n, 1, (size_t)(cap - t->n), f)) > 0;) {
    t->n += (int64_t)got;
    if (t->n == cap) {
      unsigned char *b = realloc(buf, (size_t)(cap *= 2));
      if (!b) free(buf);
      buf = b;
    }
  }
  bool bad = ferror(f);
  fclose(f);
  if (!buf) return em_set_error(EM_ERR_NOMEM, "%s: out of memory reading it", path);
  if (bad) {
    free(buf);
    return em_set_error(EM_ERR_IO, "%s: read error", path);
  }
  int id_of[256];
  for (int64_t i = 0; i < t->n; i++) count[buf[i]]++;
  t->vocab = 0;
  t->unigram_bpb = 0;
  for (int b = 0; b < 256; b++) {
    if (!count[b]) continue;
    double p = (double)count[b] / (double)t->n;
    t->unigram_bpb -= p * log2(p);
    t->byte_of[t->vocab] = (unsigned char)b;
    id_of[b] = t->vocab++;
  }
  t->id = malloc((size_t)(t->n ? t->n : 1) * sizeof *t->id);
  for (int64_t i = 0; t->id && i < t->n; i++) t->id[i] = id_of[buf[i]];
  free(buf);
  return t->id ? EM_OK : em_set_error(EM_ERR_NOMEM, "%s: out of memory", path);
}

/* ---- the model's forward, written out -------------------------------------------------------- */
typedef struct {
  em_module *embed, *cells[MAX_LAYERS], *head; /* parts of em_char_rnn, found by name */
  int layers, hidden;
} parts;

/* tokens (B, T) -> logits (B, T, vocab). h and c hold each layer's state (B, hidden), NULL for
 * zeros; they are replaced by the state after the last step. This is em_char_rnn_forward's loop,
 * written here to be seen: */
static em_tensor *forward(const parts *p, em_tensor *tokens, em_tensor **h, em_tensor **c) {
  int64_t B = tokens->shape[0], T = tokens->shape[1];
  em_tensor *x = em_forward(p->embed, tokens), *out[MAX_SEQ]; /* x (B, T, hidden) */
  if (!x) return NULL;
  for (int64_t t = 0; t < T; t++) { /* an RNN is a for loop */
    em_tensor *in = em_reshape(em_narrow(x, 1, t, 1), EM_SHAPE(B, p->hidden)); /* byte t */
    for (int l = 0; l < p->layers; l++) {
      if (em_lstm_cell_step(p->cells[l], in, h[l], c[l], &h[l], &c[l]) != EM_OK) return NULL;
      in = h[l]; /* layer l's output is layer l + 1's input */
    }
    out[t] = in;
  }
  return em_forward(p->head, em_stack((int)T, out, 1)); /* (B, T, hidden) -> (B, T, vocab) */
}

/* The next window of every stream: tokens [s + pos, s + pos + T) and targets one byte later,
 * for streams starting at first + k * len, k in [0, B). Scope-owned (B, T) i64 tensors. */
static void window(const text *tx, int64_t first, int64_t len, int B, int T, int64_t pos,
                   em_tensor **tokens, em_tensor **targets) {
  *tokens = em_empty(EM_I64, EM_SHAPE(B, T));
  *targets = em_empty(EM_I64, EM_SHAPE(B, T));
  if (!*tokens || !*targets) return;
  int64_t *a = em_data(*tokens), *b = em_data(*targets);
  for (int k = 0; k < B; k++)
    for (int t = 0; t < T; t++) {
      int64_t i = first + k * len + pos + t;
      a[k * T + t] = tx->id[i];
      b[k * T + t] = tx->id[i + 1];
    }
}

/* Mean cross-entropy in nats of logits (B, T, V) against targets (B, T). */
static em_tensor *lm_loss(em_tensor *logits, em_tensor *targets, int vocab) {
  return em_cross_entropy(em_reshape(logits, EM_SHAPE(-1, vocab)),
                          em_reshape(targets, EM_SHAPE(-1)));
}

/* Keep the state for the next window without its history: a detached reference owned here. */
static void carry(em_tensor **kept, em_tensor *const *now, int layers) {
  for (int l = 0; l < 2 * layers; l++) {
    em_tensor *d = em_retain(em_detach(now[l]));
    em_release(kept[l]);
    kept[l] = d;
  }
}

static void drop(em_tensor **state, int layers) {
  for (int l = 0; l < 2 * layers; l++) {
    em_release(state[l]);
    state[l] = NULL;
  }
}

/* Validation bits per byte: the held-out part as 16 streams read in windows of seq bytes, the
 * state carried through each stream. Every rank computes the same value. -1 on error. */
static double validate(const parts *p, const text *tx, int64_t val0, int seq) {
  enum { VB = 16 };
  int64_t len = (tx->n - val0) / VB, windows = (len - 1) / seq;
  bool prev = em_no_grad_begin();
  em_tensor *state[2 * MAX_LAYERS] = {NULL};
  double nats = 0;
  for (int64_t w = 0; w < windows; w++) {
    em_scope s = em_scope_begin();
    em_tensor *tok, *tgt, *now[2 * MAX_LAYERS];
    window(tx, val0, len, VB, seq, w * seq, &tok, &tgt);
    memcpy(now, state, sizeof now);
    em_tensor *loss = lm_loss(forward(p, tok, now, now + p->layers), tgt, tx->vocab);
    if (loss) {
      nats += em_get(loss, 0);
      carry(state, now, p->layers);
    }
    em_scope_end(s);
    if (!loss) windows = -1;
  }
  drop(state, p->layers);
  em_no_grad_end(prev);
  return windows > 0 ? nats / (double)windows / log(2.0) : -1;
}

/* Feed the model prime, then draw n bytes, each from softmax(logits / temp) given all before it,
 * printing them. Bytes of prime that the text lacks are left out. */
static em_status sample(const parts *p, const text *tx, const char *prime, int n, double temp,
                        uint64_t seed) {
  int64_t ids[64], len = 0; /* what the next forward reads: the prime, then one byte at a time */
  for (const char *q = prime; *q && len < 64; q++)
    for (int v = 0; v < tx->vocab; v++)
      if (tx->byte_of[v] == (unsigned char)*q) ids[len++] = v;
  if (len == 0) ids[len++] = 0;
  bool prev = em_no_grad_begin();
  em_rng rng = em_rng_new(seed);
  em_tensor *state[2 * MAX_LAYERS] = {NULL};
  em_status st = EM_OK;
  printf("---- sample (temperature %.2f) ----\n", temp);
  for (int64_t i = 0; i < len; i++) putchar(tx->byte_of[ids[i]]);
  for (int i = 0; i < n && st == EM_OK; i++) {
    em_scope s = em_scope_begin();
    em_tensor *now[2 * MAX_LAYERS];
    memcpy(now, state, sizeof now);
    em_tensor *tok = em_from_data(EM_I64, EM_SHAPE(1, len), ids);
    em_tensor *logits = tok ? forward(p, tok, now, now + p->layers) : NULL; /* (1, len, V) */
    em_tensor *prob =
        em_softmax(em_mul_scalar(em_narrow(logits, 1, len - 1, 1), (float)(1 / temp)), -1);
    if (prob) {
      double u = em_rng_uniform(&rng), acc = 0;
      int64_t next = tx->vocab - 1;
      for (int v = 0; v < tx->vocab; v++)
        if ((acc += em_get(prob, v)) > u) {
          next = v;
          break;
        }
      putchar(tx->byte_of[next]);
      ids[0] = next;
      len = 1;
      carry(state, now, p->layers);
    } else {
      st = em_last_status();
    }
    em_scope_end(s);
  }
  printf("\n---- end of sample ----\n");
  drop(state, p->layers);
  em_no_grad_end(prev);
  return st;
}

/* ---- options --------------------------------------------------------------------------------- */
static int usage(const char *msg) {
  if (msg) fprintf(stderr, "char_rnn: %s\n", msg);
  fprintf(stderr, "usage: char_rnn [--steps N] [--hidden N] [--layers N] [--seq N] [--batch N] "
                  "[--lr X] [--text FILE] [--seed N] [--temp X] [--threads N] [--eval-every N]\n");
  return 2;
}

static bool int_opt(const char *name, int64_t lo, int64_t hi, int *out) {
  int64_t v;
  if (em_arg_int(name, optarg, lo, hi, &v) != EM_OK) return false;
  *out = (int)v;
  return true;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"steps", required_argument, NULL, 's'},      {"hidden", required_argument, NULL, 'h'},
      {"layers", required_argument, NULL, 'L'},     {"seq", required_argument, NULL, 'q'},
      {"batch", required_argument, NULL, 'b'},      {"lr", required_argument, NULL, 'l'},
      {"text", required_argument, NULL, 'x'},       {"seed", required_argument, NULL, 'S'},
      {"temp", required_argument, NULL, 'T'},       {"threads", required_argument, NULL, 't'},
      {"eval-every", required_argument, NULL, 'e'}, {NULL, 0, NULL, 0}};
  int steps = 300, hidden = 128, layers = 2, seq = 64, batch = 16, seed = 0, threads = 1,
      eval_every = 100;
  double lr = 1e-2, temp = 0.8;
  const char *path = "/usr/share/common-licenses/GPL-3";
  for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
    bool ok = true;
    switch (c) {
    case 's': ok = int_opt("--steps", 1, 10000000, &steps); break;
    case 'h': ok = int_opt("--hidden", 1, 4096, &hidden); break;
    case 'L': ok = int_opt("--layers", 1, MAX_LAYERS, &layers); break;
    case 'q': ok = int_opt("--seq", 1, MAX_SEQ, &seq); break;
    case 'b': ok = int_opt("--batch", 1, 4096, &batch); break;
    case 'l': ok = em_arg_num("--lr", optarg, 1e-9, 1, &lr) == EM_OK; break;
    case 'x': path = optarg; break;
    case 'S': ok = int_opt("--seed", 0, INT32_MAX, &seed); break;
    case 'T': ok = em_arg_num("--temp", optarg, 0.01, 10, &temp) == EM_OK; break;
    case 't': ok = int_opt("--threads", 1, 4096, &threads); break;
    case 'e': ok = int_opt("--eval-every", 1, 10000000, &eval_every); break;
    default: return usage(NULL);
    }
    if (!ok) return usage(em_last_error());
  }
  if (optind < argc) return usage("unexpected arguments after the options");
  if (ddp_init(&argc, &argv) != EM_OK) return fail("ddp_init");
  int W = ddp_world_size(), R = ddp_rank();
  em_set_num_threads(threads);

  text tx;
  if (text_load(path, &tx) != EM_OK) return fail("text");
  int64_t val0 = tx.n * 9 / 10;                     /* first byte held out */
  int64_t stream_len = val0 / ((int64_t)batch * W); /* bytes per training stream */
  int64_t windows = (stream_len - 1) / seq;         /* windows per pass over the streams */
  if (windows < 1 || (tx.n - val0) / 16 < seq + 1) {
    ddp_eprint("char_rnn: %s: %lld bytes are too few for %d ranks x %d streams of windows of "
               "%d bytes (and 16 validation streams of %d)\n",
               path, (long long)tx.n, W, batch, seq, seq + 1);
    return 1;
  }
  ddp_print0("%s: %lld bytes, %d distinct; unigram entropy %.3f bits/byte; %d rank%s x %d "
             "streams of %lld bytes, windows of %d; LSTM %d x %d, Adam lr %g\n",
             path, (long long)tx.n, tx.vocab, tx.unigram_bpb, W, W > 1 ? "s" : "", batch,
             (long long)stream_len, seq, layers, hidden, lr);

  em_manual_seed((uint64_t)seed);
  em_module *model = em_char_rnn(tx.vocab, hidden, layers);
  ddp_model *ddp = model ? ddp_wrap(model, NULL) : NULL; /* the one line for data parallelism */
  em_optim *opt = ddp ? em_adam(em_parameters(model), .lr = lr) : NULL;
  if (!opt) return fail("model");
  parts p = {.embed = em_module_find(model, "embed"),
             .head = em_module_find(model, "head"),
             .layers = layers,
             .hidden = hidden};
  for (int l = 0; l < layers; l++) {
    char name[32];
    snprintf(name, sizeof name, "cells.%d", l);
    p.cells[l] = em_module_find(model, name);
  }

  em_tensor *state[2 * MAX_LAYERS] = {NULL}; /* h[0..layers), then c: carried between windows */
  double t0 = now_s(), loss_sum = 0, val_bpb = -1;
  int loss_n = 0;
  for (int step = 1; step <= steps; step++) {
    int64_t w = (step - 1) % windows;
    if (w == 0) drop(state, layers); /* back to the streams' start: from a zero state */
    em_scope s = em_scope_begin();
    em_tensor *tok, *tgt, *now[2 * MAX_LAYERS];
    window(&tx, (int64_t)R * batch * stream_len, stream_len, batch, seq, w * seq, &tok, &tgt);
    memcpy(now, state, sizeof now);
    em_tensor *loss = lm_loss(forward(&p, tok, now, now + layers), tgt, tx.vocab);
    if (!loss || em_zero_grad(opt) != EM_OK || em_backward(loss) != EM_OK || em_step(opt) != EM_OK)
      return fail("training step");
    carry(state, now, layers); /* truncated BPTT: the next window starts from this state */
    loss_sum += em_get(loss, 0);
    loss_n++;
    em_scope_end(s);
    if (step % eval_every == 0 || step == steps) {
      if ((val_bpb = validate(&p, &tx, val0, seq)) < 0) return fail("validation");
      ddp_print0("step %d/%d  train %.3f bits/byte (rank 0)  val %.3f bits/byte  %.1f s\n", step,
                 steps, loss_sum / loss_n / log(2.0), val_bpb, now_s() - t0);
      loss_sum = 0;
      loss_n = 0;
    }
  }
  double total = now_s() - t0;
  drop(state, layers);
  if (R == 0 && sample(&p, &tx, "This License", 200, temp, (uint64_t)seed + 1) != EM_OK)
    return fail("sampling");
  ddp_print0("RESULT val_bpb=%.3f unigram_bpb=%.3f below=%s steps=%d time_s=%.1f ranks=%d\n",
             val_bpb, tx.unigram_bpb, val_bpb < tx.unigram_bpb ? "yes" : "no", steps, total, W);
  em_optim_free(opt);
  ddp_free(ddp);
  em_module_free(model);
  free(tx.id);
  ddp_finalize();
  return 0;
}
