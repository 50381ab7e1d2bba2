/* lm.c: ember-train's language-model data, validation loss and sampling (model.h).
 *
 * Data: windows of seq_len + 1 tokens (dl_text_open's bytes or dl_tokens_open's shards); a
 * window's first seq_len tokens are the inputs and its last seq_len the targets (train_loss).
 *
 *   text:    | training: [0, 1 - val_fraction) .............. | validation: the rest |
 *   tokens:  data.path's shards for training, data.val_path's for validation
 *
 * Sampling (rank 0, after training) continues a prompt one token at a time: the GPT reads the
 * last block_size tokens each step; the char RNN carries its LSTM state and reads one token. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The prompt's length in tokens (at most; the validation text's first window bounds it). */
#define PROMPT_TOKENS 32

em_status train_lm_data_open(train_data *d, const train_opts *o) {
  memset(d, 0, sizeof *d);
  d->unigram_bits = -1;
  if (o->dataset == DATA_TEXT) {
    d->train_set = dl_text_open(o->data_path, o->seq_len, 0, 1 - o->val_fraction, &d->unigram_bits);
    d->test_set =
        d->train_set ? dl_text_open(o->data_path, o->seq_len, 1 - o->val_fraction, 1, NULL) : NULL;
    if (!d->test_set) return em_last_status();
  } else {
    d->train_set = dl_tokens_open(o->data_path, o->seq_len);
    if (!d->train_set) return em_last_status();
    if (*o->val_path && !(d->test_set = dl_tokens_open(o->val_path, o->seq_len)))
      return em_last_status();
  }
  d->train = dl_loader_new(d->train_set, &(dl_options){.batch = o->batch,
                                                       .shuffle = true,
                                                       .workers = (int)o->workers,
                                                       .seed = (uint64_t)o->seed});
  if (!d->train) return em_last_status();
  if (d->test_set &&
      !(d->test = dl_loader_new(
            d->test_set,
            &(dl_options){.batch = o->eval_batch, .exact = true, .workers = (int)o->workers})))
    return em_last_status();
  return EM_OK;
}

double train_val_loss(em_module *model, const train_opts *o, train_data *d) {
  if (!d->test) return NAN;
  bool prev = em_no_grad_begin();
  bool training = em_module_is_training(model);
  em_module_eval(model);
  /* this rank's loss x tokens, tokens (exact below 2^24), failed: f32 sums over the ranks */
  double loss_sum = 0, tokens = 0;
  bool failed = false;
  for (dl_batch b; !failed && dl_next(d->test, &b);) {
    em_scope s = em_scope_begin();
    em_tensor *loss = train_loss(model, o, &b);
    double n = (double)b.real * (double)(b.x->shape[1] - 1);
    if (loss) {
      loss_sum += em_get(loss, 0) * n;
      tokens += n;
    }
    failed = !loss;
    em_scope_end(s);
  }
  em_module_train(model, training);
  em_no_grad_end(prev);
  failed = failed || dl_status(d->test) != EM_OK;
  float sums[3] = {(float)loss_sum, (float)tokens, failed};
  /* every rank joins the sum, also after a local error, so that none waits for the others */
  if (train_sum_over_ranks(sums, 3, EM_F32) != EM_OK) return -1;
  if (sums[2] > 0) {
    if (!failed) em_set_error(EM_ERR_COMM, "validation failed on another rank");
    return -1;
  }
  return sums[1] > 0 ? (double)sums[0] / (double)sums[1] : NAN;
}

/* A token drawn from softmax(logits / temperature) over v entries. */
static int64_t draw(const float *logits, int64_t v, double temperature, em_rng *g, double *p) {
  double mx = -INFINITY, total = 0;
  for (int64_t i = 0; i < v; i++) mx = logits[i] > mx ? logits[i] : mx;
  for (int64_t i = 0; i < v; i++) total += p[i] = exp((logits[i] - mx) / temperature);
  double u = em_rng_uniform(g) * total;
  for (int64_t i = 0; i < v; i++)
    if ((u -= p[i]) < 0) return i;
  return v - 1;
}

static void put_token(FILE *f, const train_opts *o, int64_t t) {
  if (o->dataset != DATA_TEXT)
    fprintf(f, "%lld ", (long long)t);
  else if (t == '\n' || t == '\t' || (t >= 32 && t < 127) || t >= 128)
    fputc((int)t, f); /* bytes >= 128: pieces of UTF-8 characters */
  else
    fputc('?', f);
}

/* The next token's logits (V) after the tokens ctx[0..n): the GPT reads the last block_size of
 * them; the char RNN reads ctx[n-1] only (or all n at the start, when *h is NULL), carrying its
 * state in h and c (retained tensors, one per layer). */
static em_status next_logits(em_module *model, const train_opts *o, const int64_t *ctx, int64_t n,
                             em_tensor **h, em_tensor **c, float *out) {
  em_scope s = em_scope_begin();
  int64_t first =
      o->model == MODEL_GPT ? (n > o->seq_len ? n - o->seq_len : 0) : (h[0] ? n - 1 : 0);
  em_tensor *in = em_to(em_from_data(EM_I64, EM_SHAPE(1, n - first), ctx + first), o->on);
  em_tensor *logits = NULL;
  if (o->model == MODEL_GPT) {
    logits = em_forward(model, in);
  } else {
    em_tensor *prev[2 * 256]; /* model.layers <= 256 */
    for (int64_t l = 0; l < o->layers; l++) {
      prev[2 * l] = h[l];
      prev[2 * l + 1] = c[l];
    }
    logits = em_char_rnn_forward(model, in, h, c); /* h, c: replaced by scope-owned states */
    for (int64_t l = 0; l < o->layers; l++) {
      if (logits) {
        em_retain(h[l]);
        em_retain(c[l]);
        em_release(prev[2 * l]);
        em_release(prev[2 * l + 1]);
      } else {
        h[l] = prev[2 * l];
        c[l] = prev[2 * l + 1];
      }
    }
  }
  logits = em_to(logits, EM_DEVICE_CPU); /* read on the host below */
  if (logits) memcpy(out, em_data_f32(logits) + (n - first - 1) * o->vocab, (size_t)o->vocab * 4);
  em_scope_end(s);
  return logits ? EM_OK : em_last_status();
}

em_status train_sample(em_module *model, const train_opts *o, train_data *d, int64_t n, FILE *f) {
  dl_dataset *src = d->test_set ? d->test_set : d->train_set;
  int64_t np = o->seq_len + 1 < PROMPT_TOKENS ? o->seq_len + 1 : PROMPT_TOKENS;
  int64_t *ctx = malloc((size_t)(np + n) * sizeof *ctx),
          *window = malloc((size_t)(o->seq_len + 1) * sizeof *window);
  float *logits = malloc((size_t)o->vocab * sizeof *logits);
  double *p = malloc((size_t)o->vocab * sizeof *p);
  em_tensor **h = calloc((size_t)o->layers, sizeof *h), **c = calloc((size_t)o->layers, sizeof *c);
  em_status st = ctx && window && logits && p && h && c
                     ? dl_dataset_get(src, 0, (void *[]){window})
                     : em_set_error(EM_ERR_NOMEM, "sampling: out of memory");
  bool prev = em_no_grad_begin(), training = em_module_is_training(model);
  em_module_eval(model);
  em_rng g = em_rng_new((uint64_t)o->seed ^ 0x5A4D504C45ull);
  if (st == EM_OK) {
    memcpy(ctx, window, (size_t)np * sizeof *ctx);
    fprintf(f, "--- sample: %lld tokens at temperature %g after a prompt of %lld ---\n",
            (long long)n, o->temperature, (long long)np);
    for (int64_t i = 0; i < np; i++) put_token(f, o, ctx[i]);
    fputs("|>", f); /* where the model takes over */
  }
  for (int64_t i = 0; st == EM_OK && i < n; i++) {
    st = next_logits(model, o, ctx, np + i, h, c, logits);
    if (st == EM_OK) put_token(f, o, ctx[np + i] = draw(logits, o->vocab, o->temperature, &g, p));
  }
  if (st == EM_OK) fputs("\n--- end of sample ---\n", f);
  fflush(f);
  em_module_train(model, training);
  em_no_grad_end(prev);
  for (int64_t l = 0; h && c && l < o->layers; l++) {
    em_release(h[l]);
    em_release(c[l]);
  }
  free(h);
  free(c);
  free(p);
  free(logits);
  free(window);
  free(ctx);
  return st;
}
