/* model.c: ember-train's models, data loaders, augmentation and evaluation (model.h).
 *
 * Augmentation runs in the loader's worker threads as a per-sample transform, with the RNG the
 * loader seeds from (seed, epoch, sample index): the same image gets the same flip and crop
 * whatever the number of workers or ranks, and a resumed job sees exactly what an uninterrupted
 * one would. Crop with padding p: the image is shifted by (dy, dx), each uniform in [-p, p], and
 * the uncovered border is zero, which is torchvision's RandomCrop(28, padding=p) on a zero pad. */
#include "model.h"

#include <stdlib.h>
#include <string.h>

/* ---- dropout on the default generator ------------------------------------------------------ */

typedef struct {
  float p;
} dropout_ctx;

static em_tensor *dropout_forward(em_module *m, em_tensor *x) {
  const dropout_ctx *c = em_module_ctx(m);
  return em_dropout(x, c->p, em_module_is_training(m), em_default_rng());
}

/* torch.nn.Dropout(p), drawing from the default generator instead of a generator of its own (as
 * em_dropout_new does): the job checkpoints the default generator, so masks resume exactly. */
static em_module *dropout_new(float p) {
  dropout_ctx *c = malloc(sizeof *c);
  if (!c) {
    em_set_error(EM_ERR_NOMEM, "dropout: out of memory");
    return NULL;
  }
  c->p = p;
  return em_module_new("Dropout", dropout_forward, c, free);
}

em_module *train_model_new(const train_opts *o) {
  switch (o->model) {
  case MODEL_CNN: return em_small_cnn(1, 28, 28, 10);
  case MODEL_RESNET_CIFAR: return em_resnet_cifar((int)o->depth, 1, 10);
  case MODEL_RESNET18: return em_resnet18(10, 1);
  case MODEL_CHAR_RNN: return em_char_rnn((int)o->vocab, (int)o->width, (int)o->layers);
  case MODEL_GPT: {
    em_gpt_config g = {.vocab_size = (int)o->vocab,
                       .block_size = (int)o->seq_len,
                       .n_layer = (int)o->layers,
                       .n_head = (int)o->heads,
                       .n_embd = (int)o->width,
                       .dropout = (float)o->dropout,
                       .bias = true};
    return em_gpt(&g);
  }
  default: break;
  }
  int hidden[TRAIN_MAX_HIDDEN];
  for (int i = 0; i < o->hidden.n; i++) hidden[i] = (int)o->hidden.v[i];
  if (o->dropout == 0) return em_mlp(784, hidden, o->hidden.n, 10);
  /* em_mlp's layers, built one statement at a time (a fixed order of draws), with dropout */
  em_module *seq = em_sequential_new(0, NULL);
  int in = 784;
  for (int i = 0; seq && i <= o->hidden.n; i++) {
    int out = i < o->hidden.n ? hidden[i] : 10;
    em_status st = em_sequential_append(seq, em_linear_new(in, out, true));
    if (st == EM_OK && i < o->hidden.n) st = em_sequential_append(seq, em_relu_new());
    if (st == EM_OK && i < o->hidden.n)
      st = em_sequential_append(seq, dropout_new((float)o->dropout));
    if (st != EM_OK) {
      em_module_free(seq);
      return NULL;
    }
    in = out;
  }
  return seq;
}

/* ---- data ------------------------------------------------------------------------------------ */

/* Flip and crop one f32 image (H, W) in place. */
static em_status augment(void *ctx, void *const fields[], const dl_field *spec, int nfields,
                         em_rng *rng, int64_t index) {
  const train_data *d = ctx;
  const int64_t H = d->height, W = d->width, p = d->crop_pad;
  float *img = fields[0], tmp[64 * 64];
  (void)spec;
  (void)nfields;
  (void)index;
  if (d->flip && em_rng_uniform(rng) < 0.5f)
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W / 2; x++) {
        float t = img[y * W + x];
        img[y * W + x] = img[y * W + W - 1 - x];
        img[y * W + W - 1 - x] = t;
      }
  if (p > 0) {
    int64_t dy = (int64_t)(em_rng_next_u64(rng) % (uint64_t)(2 * p + 1)) - p;
    int64_t dx = (int64_t)(em_rng_next_u64(rng) % (uint64_t)(2 * p + 1)) - p;
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++) {
        int64_t sy = y + dy, sx = x + dx;
        tmp[y * W + x] = sy >= 0 && sy < H && sx >= 0 && sx < W ? img[sy * W + sx] : 0.0f;
      }
    memcpy(img, tmp, (size_t)(H * W) * sizeof *img);
  }
  return EM_OK;
}

em_status train_data_open(train_data *d, const train_opts *o) {
  if (train_is_lm(o)) return train_lm_data_open(d, o);
  memset(d, 0, sizeof *d);
  d->unigram_bits = -1;
  dl_idx_options io = {.keep_dims = o->model != MODEL_MLP};
  d->train_set = dl_fmnist_open(o->data_dir, "train", &io);
  d->test_set = d->train_set ? dl_fmnist_open(o->data_dir, "t10k", &io) : NULL;
  if (!d->test_set) return em_last_status();
  const dl_field *x = dl_dataset_field(d->train_set, 0);
  d->height = x->ndim == 3 ? x->shape[1] : 28;
  d->width = x->ndim == 3 ? x->shape[2] : 28;
  if (x->dtype != EM_F32 || d->height * d->width != (int64_t)(dl_field_bytes(x) / sizeof(float)) ||
      d->height > 64 || d->width > 64)
    return em_set_error(EM_ERR_FORMAT, "%s: images are not 28x28 f32", o->data_dir);
  d->flip = o->flip;
  d->crop_pad = o->crop_pad;
  bool aug = o->flip || o->crop_pad > 0;
  d->train = dl_loader_new(d->train_set, &(dl_options){.batch = o->batch,
                                                       .shuffle = true,
                                                       .workers = (int)o->workers,
                                                       .seed = (uint64_t)o->seed,
                                                       .transform = aug ? augment : NULL,
                                                       .transform_ctx = d});
  d->test = d->train ? dl_loader_new(d->test_set, &(dl_options){.batch = o->eval_batch,
                                                                .exact = true,
                                                                .workers = (int)o->workers})
                     : NULL;
  return d->test ? EM_OK : em_last_status();
}

void train_data_close(train_data *d) {
  dl_loader_free(d->train);
  dl_loader_free(d->test);
  dl_dataset_close(d->train_set);
  dl_dataset_close(d->test_set);
  memset(d, 0, sizeof *d);
}

/* The device of the model's parameters: where its batches go (train.device). */
static em_device model_device(em_module *model) {
  em_params p = em_parameters(model);
  return p.n > 0 ? p.t[0]->device : EM_DEVICE_CPU;
}

em_tensor *train_loss(em_module *model, const train_opts *o, const dl_batch *b) {
  /* The loader's (pinned) CPU batch to the model's device: em_to uploads it on the
   * host-to-device stream; the batch stays valid until the next dl_next (dl.h). */
  em_tensor *x = em_to(b->x, o->on);
  if (!train_is_lm(o)) return em_cross_entropy(em_forward(model, x), em_to(b->y, o->on));
  /* x: (B, T+1) token windows */
  int64_t T = b->x->shape[1] - 1;
  em_tensor *in = em_narrow(x, 1, 0, T), *target = em_narrow(x, 1, 1, T);
  em_tensor *logits = em_forward(model, em_contiguous(in)); /* (B, T, V) */
  return em_cross_entropy(em_reshape(logits, EM_SHAPE(-1, o->vocab)),
                          em_reshape(target, EM_SHAPE(-1)));
}

em_status train_sum_over_ranks(void *v, int n, em_dtype dt) {
  if (ddp_world_size() == 1) return EM_OK;
  coll_buf cb = coll_host_buf(v, n, dt);
  coll_label("ember-train: evaluation sums");
  return coll_wait(coll_allreduce(ddp_comm(), cb, cb, n, COLL_SUM), 0);
}

double train_accuracy(em_module *model, train_data *d) {
  bool prev = em_no_grad_begin();
  bool training = em_module_is_training(model);
  em_module_eval(model);
  int64_t sums[3] = {0, 0, 0}; /* correct, seen, failed */
  em_device dev = model_device(model);
  for (dl_batch b; !sums[2] && dl_next(d->test, &b);) {
    em_scope s = em_scope_begin();
    /* predictions back on the CPU: read element by element below */
    em_tensor *x = em_to(b.x, dev);
    em_tensor *pred = em_to(em_argmax(em_forward(model, x), 1, false), EM_DEVICE_CPU);
    for (int64_t i = 0; pred && i < b.real; i++) sums[0] += em_get(pred, i) == em_get(b.y, i);
    sums[1] += b.real;
    em_scope_end(s);
    sums[2] = !pred;
  }
  em_module_train(model, training);
  em_no_grad_end(prev);
  bool failed = sums[2] || dl_status(d->test) != EM_OK;
  sums[2] = failed;
  /* every rank joins the sum, also after a local error, so that none waits for the others */
  if (train_sum_over_ranks(sums, 3, EM_I64) != EM_OK) return -1;
  if (sums[2]) {
    if (!failed) em_set_error(EM_ERR_COMM, "evaluation failed on another rank");
    return -1;
  }
  return sums[1] > 0 ? (double)sums[0] / (double)sums[1] : 0;
}
