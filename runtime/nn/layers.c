/* nn/layers.c: the standard layers as modules (Linear, Conv2d, BatchNorm2d, LayerNorm, Embedding,
 * Dropout, the activations, Flatten, MaxPool2d, Sequential), the default generator their
 * constructors draw initial weights from, and em_init_normal for models that redraw them.
 *
 * Each layer keeps direct pointers to its own parameters in its ctx (borrowed: the module owns the
 * tensors), so a forward pass does no name lookups. Initialisation follows PyTorch's
 * reset_parameters(); see em_nn.h for the distribution of each. */
#include "core/internal.h"
#include "em_nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the default generator ------------------------------------------------------------------- */
static em_rng default_rng; /* seed 0, counter 0 at start-up */

void em_manual_seed(uint64_t seed) { default_rng = em_rng_new(seed); }
em_rng *em_default_rng(void) { return &default_rng; }

/* A parameter tensor owned by nobody yet (the caller registers it, then releases its reference). */
static em_tensor *new_uniform(int ndim, const int64_t *shape, double bound) {
  em_tensor *t = em__alloc_noscope(EM_F32, ndim, shape, false);
  if (!t) return NULL;
  float *p = em_data_f32(t), lo = (float)-bound, w = (float)(2 * bound);
  for (int64_t i = 0, n = em_numel(t); i < n; i++) p[i] = lo + w * em_rng_uniform(&default_rng);
  return t;
}

em_status em_init_normal(em_tensor *t, float mean, float std) {
  if (!t) return em_set_error(EM_ERR_INVALID, "init_normal: tensor is NULL");
  if (t->dtype != EM_F32 || t->device.kind != EM_CPU || !em_is_contiguous(t))
    return em_set_error(
        EM_ERR_INVALID, "init_normal: %s must be a contiguous f32 CPU tensor (got %s on %s%s)",
        t->name ? t->name : "tensor", em_dtype_name(t->dtype),
        t->device.kind == EM_CPU ? "cpu" : "cuda", em_is_contiguous(t) ? "" : ", not contiguous");
  if (!(std >= 0) || !isfinite(mean) || !isfinite(std))
    return em_set_error(EM_ERR_INVALID, "init_normal: need a finite mean and std >= 0, got %g, %g",
                        mean, std);
  float *p = em_data_f32(t);
  for (int64_t i = 0, n = em_numel(t); i < n; i++) p[i] = mean + std * em_rng_normal(&default_rng);
  return EM_OK;
}

static em_tensor *new_full(em_dtype dt, int ndim, const int64_t *shape, double v) {
  em_tensor *t = em__alloc_noscope(dt, ndim, shape, true);
  if (t && v != 0)
    for (int64_t i = 0, n = em_numel(t); i < n; i++) em_set(t, i, v);
  return t;
}

/* Register t (may be NULL after a failed allocation) under name, dropping the caller's reference.
 * Returns the tensor (now borrowed from m) or NULL with the error set. */
static em_tensor *own(em_module *m, const char *name, em_tensor *t, bool param) {
  if (!t) return NULL;
  em_status st = param ? em_module_add_param(m, name, t) : em_module_add_buffer(m, name, t);
  em_release(t);
  return st == EM_OK ? t : NULL;
}

/* A module whose ctx is a zeroed struct of ctx_size bytes. */
static em_module *module_with_ctx(const char *type, em_forward_fn fwd, size_t ctx_size) {
  void *ctx = calloc(1, ctx_size);
  if (!ctx) {
    em_set_error(EM_ERR_NOMEM, "%s: out of memory", type);
    return NULL;
  }
  return em_module_new(type, fwd, ctx, free);
}

static bool positive(const char *layer, const char *what, int64_t v) {
  if (v > 0) return true;
  em_set_error(EM_ERR_INVALID, "%s: %s must be > 0, got %lld", layer, what, (long long)v);
  return false;
}

/* ---- Linear ---------------------------------------------------------------------------------- */
typedef struct {
  em_tensor *w, *b;
} affine_ctx;

static em_tensor *linear_forward(em_module *m, em_tensor *x) {
  affine_ctx *c = em_module_ctx(m);
  return em_linear(x, c->w, c->b);
}

em_module *em_linear_new(int in, int out, bool bias) {
  if (!positive("linear_new", "in", in) || !positive("linear_new", "out", out)) return NULL;
  em_module *m = module_with_ctx("Linear", linear_forward, sizeof(affine_ctx));
  if (!m) return NULL;
  affine_ctx *c = em_module_ctx(m);
  double bound = 1.0 / sqrt((double)in);
  c->w = own(m, "weight", new_uniform(2, (int64_t[]){out, in}, bound), true);
  if (!c->w) goto fail;
  if (bias && !(c->b = own(m, "bias", new_uniform(1, (int64_t[]){out}, bound), true))) goto fail;
  return m;
fail:
  em_module_free(m);
  return NULL;
}

/* ---- Conv2d ---------------------------------------------------------------------------------- */
typedef struct {
  em_tensor *w, *b;
  em_conv2d_opts opts;
} conv_ctx;

static em_tensor *conv_forward(em_module *m, em_tensor *x) {
  conv_ctx *c = em_module_ctx(m);
  return em_conv2d(x, c->w, c->b, &c->opts);
}

em_module *em_conv2d_new(int in, int out, int kernel, const em_conv2d_opts *opts, bool bias) {
  const char *op = "conv2d_new";
  if (!positive(op, "in", in) || !positive(op, "out", out) || !positive(op, "kernel", kernel))
    return NULL;
  em_conv2d_opts o = opts ? *opts : (em_conv2d_opts){0};
  int groups = o.groups ? o.groups : 1;
  if (groups < 0 || in % groups || out % groups) {
    em_set_error(EM_ERR_INVALID, "%s: groups %d must divide in (%d) and out (%d)", op, groups, in,
                 out);
    return NULL;
  }
  em_module *m = module_with_ctx("Conv2d", conv_forward, sizeof(conv_ctx));
  if (!m) return NULL;
  conv_ctx *c = em_module_ctx(m);
  c->opts = o;
  int64_t fan_in = (int64_t)(in / groups) * kernel * kernel;
  double bound = 1.0 / sqrt((double)fan_in);
  c->w =
      own(m, "weight", new_uniform(4, (int64_t[]){out, in / groups, kernel, kernel}, bound), true);
  if (!c->w) goto fail;
  if (bias && !(c->b = own(m, "bias", new_uniform(1, (int64_t[]){out}, bound), true))) goto fail;
  return m;
fail:
  em_module_free(m);
  return NULL;
}

/* ---- BatchNorm2d ----------------------------------------------------------------------------- */
typedef struct {
  em_tensor *w, *b, *mean, *var, *count;
  float momentum, eps;
} bn_ctx;

static em_tensor *bn_forward(em_module *m, em_tensor *x) {
  bn_ctx *c = em_module_ctx(m);
  bool train = em_module_is_training(m);
  if (x->ndim != 4) {
    char b[EM_SHAPE_STR_LEN];
    em_set_error(EM_ERR_INVALID, "BatchNorm2d: expected input (N, C, H, W), got %s",
                 em_shape_str(x, b, sizeof b));
    return NULL;
  }
  em_tensor *y = em_batch_norm(x, c->w, c->b, c->mean, c->var, train, c->momentum, c->eps);
  if (y && train) ((int64_t *)em_data(c->count))[0] += 1;
  return y;
}

em_module *em_batchnorm2d_new(int ch) {
  if (!positive("batchnorm2d_new", "channels", ch)) return NULL;
  em_module *m = module_with_ctx("BatchNorm2d", bn_forward, sizeof(bn_ctx));
  if (!m) return NULL;
  bn_ctx *c = em_module_ctx(m);
  c->momentum = 0.1f;
  c->eps = 1e-5f;
  const int64_t shape[1] = {ch};
  if (!(c->w = own(m, "weight", new_full(EM_F32, 1, shape, 1), true)) ||
      !(c->b = own(m, "bias", new_full(EM_F32, 1, shape, 0), true)) ||
      !(c->mean = own(m, "running_mean", new_full(EM_F32, 1, shape, 0), false)) ||
      !(c->var = own(m, "running_var", new_full(EM_F32, 1, shape, 1), false)) ||
      !(c->count = own(m, "num_batches_tracked", new_full(EM_I64, 0, NULL, 0), false))) {
    em_module_free(m);
    return NULL;
  }
  return m;
}

/* ---- LayerNorm ------------------------------------------------------------------------------- */
typedef struct {
  em_tensor *w, *b;
  int n_dims;
  float eps;
} ln_ctx;

static em_tensor *ln_forward(em_module *m, em_tensor *x) {
  ln_ctx *c = em_module_ctx(m);
  return em_layer_norm(x, c->n_dims, c->w, c->b, c->eps);
}

em_module *em_layernorm_new(int n_dims, const int64_t *shape) {
  if (n_dims < 1 || n_dims > EM_MAX_DIMS || !shape) {
    em_set_error(EM_ERR_INVALID, "layernorm_new: normalized shape needs 1 to %d dims, got %d",
                 EM_MAX_DIMS, n_dims);
    return NULL;
  }
  for (int d = 0; d < n_dims; d++)
    if (!positive("layernorm_new", "each normalized dim", shape[d])) return NULL;
  em_module *m = module_with_ctx("LayerNorm", ln_forward, sizeof(ln_ctx));
  if (!m) return NULL;
  ln_ctx *c = em_module_ctx(m);
  c->n_dims = n_dims;
  c->eps = 1e-5f;
  if (!(c->w = own(m, "weight", new_full(EM_F32, n_dims, shape, 1), true)) ||
      !(c->b = own(m, "bias", new_full(EM_F32, n_dims, shape, 0), true))) {
    em_module_free(m);
    return NULL;
  }
  return m;
}

/* ---- Embedding ------------------------------------------------------------------------------- */
static em_tensor *embedding_forward(em_module *m, em_tensor *x) {
  affine_ctx *c = em_module_ctx(m);
  return em_embedding(c->w, x);
}

em_module *em_embedding_new(int64_t num, int64_t dim) {
  if (!positive("embedding_new", "num", num) || !positive("embedding_new", "dim", dim)) return NULL;
  em_module *m = module_with_ctx("Embedding", embedding_forward, sizeof(affine_ctx));
  if (!m) return NULL;
  affine_ctx *c = em_module_ctx(m);
  em_tensor *w = em__alloc_noscope(EM_F32, 2, (int64_t[]){num, dim}, false);
  if (w) {
    float *p = em_data_f32(w);
    for (int64_t i = 0, n = num * dim; i < n; i++) p[i] = em_rng_normal(&default_rng);
  }
  if (!(c->w = own(m, "weight", w, true))) {
    em_module_free(m);
    return NULL;
  }
  return m;
}

/* ---- Dropout --------------------------------------------------------------------------------- */
typedef struct {
  float p;
  em_rng rng;
} dropout_ctx;

static em_tensor *dropout_forward(em_module *m, em_tensor *x) {
  dropout_ctx *c = em_module_ctx(m);
  return em_dropout(x, c->p, em_module_is_training(m), &c->rng);
}

em_module *em_dropout_new(float p) {
  if (!(p >= 0 && p <= 1)) {
    em_set_error(EM_ERR_INVALID, "dropout_new: p must be in [0, 1], got %g", p);
    return NULL;
  }
  em_module *m = module_with_ctx("Dropout", dropout_forward, sizeof(dropout_ctx));
  if (!m) return NULL;
  dropout_ctx *c = em_module_ctx(m);
  c->p = p;
  c->rng = em_rng_new(em_rng_next_u64(&default_rng));
  return m;
}

/* ---- parameter-free layers ------------------------------------------------------------------- */
static em_tensor *relu_forward(em_module *m, em_tensor *x) { return em_relu(x); }
static em_tensor *gelu_forward(em_module *m, em_tensor *x) { return em_gelu(x); }
static em_tensor *tanh_forward(em_module *m, em_tensor *x) { return em_tanh(x); }
em_module *em_relu_new(void) { return em_module_new("ReLU", relu_forward, NULL, NULL); }
em_module *em_gelu_new(void) { return em_module_new("GELU", gelu_forward, NULL, NULL); }
em_module *em_tanh_new(void) { return em_module_new("Tanh", tanh_forward, NULL, NULL); }

typedef struct {
  int start, end;
} flatten_ctx;

static em_tensor *flatten_forward(em_module *m, em_tensor *x) {
  flatten_ctx *c = em_module_ctx(m);
  return em_flatten(x, c->start, c->end);
}

em_module *em_flatten_new(int start_dim, int end_dim) {
  em_module *m = module_with_ctx("Flatten", flatten_forward, sizeof(flatten_ctx));
  if (!m) return NULL;
  flatten_ctx *c = em_module_ctx(m);
  c->start = start_dim;
  c->end = end_dim;
  return m;
}

static em_tensor *maxpool_forward(em_module *m, em_tensor *x) {
  return em_max_pool2d(x, em_module_ctx(m));
}

em_module *em_max_pool2d_new(int kernel, int stride, int padding) {
  if (!positive("max_pool2d_new", "kernel", kernel)) return NULL;
  if (stride < 0 || padding < 0 || padding * 2 > kernel) {
    em_set_error(EM_ERR_INVALID,
                 "max_pool2d_new: stride (%d) must be >= 0 and padding (%d) in [0, kernel/2]",
                 stride, padding);
    return NULL;
  }
  em_module *m = module_with_ctx("MaxPool2d", maxpool_forward, sizeof(em_pool2d_opts));
  if (!m) return NULL;
  em_pool2d_opts *o = em_module_ctx(m);
  int s = stride ? stride : kernel;
  *o = (em_pool2d_opts){{kernel, kernel}, {s, s}, {padding, padding}, false};
  return m;
}

/* ---- Sequential ------------------------------------------------------------------------------ */
static em_tensor *sequential_forward(em_module *m, em_tensor *x) {
  int n = em_module_num_children(m);
  if (n == 0) return em__scope_adopt(em_retain(x)); /* identity: a new reference, like an op */
  for (int i = 0; i < n; i++) {
    em_module *c = em_module_child_at(m, i);
    em_tensor *y = em_forward(c, x);
    if (!y) { /* say which layer failed; the message is copied first: it is the format's arg */
      char msg[768];
      snprintf(msg, sizeof msg, "%s", em_last_error());
      em_set_error(em_last_status() != EM_OK ? em_last_status() : EM_ERR_INVALID,
                   "Sequential layer %d (%s): %s", i, em_module_type(c), msg);
      return NULL;
    }
    x = y;
  }
  return x;
}

em_status em_sequential_append(em_module *seq, em_module *m) {
  if (!m) { /* a constructor that failed: keep its message */
    if (em_last_status() == EM_OK)
      em_set_error(EM_ERR_INVALID, "sequential_append: module is NULL");
    return em_last_status();
  }
  if (!seq || strcmp(em_module_type(seq), "Sequential")) {
    em_status st = em_set_error(EM_ERR_INVALID, "sequential_append: %s",
                                seq ? "first argument is not a Sequential" : "sequential is NULL");
    em_module_free(m);
    return st;
  }
  char name[16];
  snprintf(name, sizeof name, "%d", em_module_num_children(seq));
  return em_module_add_child(seq, name, m);
}

em_module *em_sequential_new(int n, em_module *const *mods) {
  em_module *seq = NULL;
  int i = 0;
  if (n < 0 || (n > 0 && !mods)) {
    em_set_error(EM_ERR_INVALID, "sequential_new: %d modules%s", n, mods ? "" : " (array NULL)");
    return NULL;
  }
  for (int k = 0; k < n; k++) {
    if (!mods[k]) {
      if (em_last_status() == EM_OK)
        em_set_error(EM_ERR_INVALID, "sequential_new: module %d is NULL", k);
      goto fail;
    }
  }
  seq = em_module_new("Sequential", sequential_forward, NULL, NULL);
  if (!seq) goto fail;
  for (; i < n; i++)
    if (em_sequential_append(seq, mods[i]) != EM_OK) {
      i++; /* mods[i] was consumed */
      goto fail;
    }
  return seq;
fail:
  em_module_free(seq);
  for (; i < n; i++) em_module_free(mods[i]);
  return NULL;
}
