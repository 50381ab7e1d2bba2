/* nn/gpt.c: em_gpt, a GPT-2-style decoder laid out as nanoGPT's model.py, so that its state_dict
 * keys, shapes and initialisation are the same and weights move between the two by name.
 *
 *   GPT
 *   +- transformer
 *   |  +- wte (V, C), wpe (block, C)    x = wte[tokens] + wpe[0..T)       (N, T, C)
 *   |  +- drop                          x = dropout(x)
 *   |  +- h.0 .. h.(L-1)  (Block)       x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
 *   |  +- ln_f                          x = ln_f(x)
 *   +- lm_head (weight = wte)           logits = x @ wte^T                (N, T, V)
 *
 * attn (CausalSelfAttention), with H heads of D = C / H:
 *   qkv = c_attn(x) (N, T, 3C); q, k, v = its three column blocks, each seen as (N, H, T, D)
 *   att = softmax(causal_mask(q @ k^T / sqrt(D), -inf)) (N, H, T, T), then attn_dropout
 *   y = att @ v (N, H, T, D) -> (N, T, H, D) -> (N, T, C) -> c_proj -> resid_dropout
 * q, k and v are views of qkv's storage (a column slice, its last dim split into (H, D), heads
 * moved forward) that the batched matmuls read where they lie: the only copy is y's transpose
 * back to (N, T, C), as in PyTorch.
 * mlp: c_fc (C -> 4C), GELU (exact erf form), c_proj (4C -> C), dropout.
 *
 * Each forward runs in a private scope (em__op_end), so intermediates the autograd graph does not
 * keep are freed at once, also when the caller has no scope open. */
#include "core/internal.h"
#include "em_nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- parameters and the small layers ------------------------------------------------------------
 * nanoGPT's _init_weights: linear and embedding weights N(0, 0.02) (c_proj: 0.02 / sqrt(2 L)),
 * biases 0, layer norms 1 and 0. Values come from the default generator in construction order. */

/* Register a new (ndim, shape) parameter of m filled with N(0, std) (std > 0) or with fill
 * (std == 0). Returns the tensor (borrowed from m) or NULL with the error set. */
static em_tensor *new_param(em_module *m, const char *name, int ndim, const int64_t *shape,
                            float std, float fill) {
  em_tensor *t = em__alloc_noscope(EM_F32, ndim, shape, false);
  if (!t) return NULL;
  em_status st = EM_OK;
  if (std > 0) {
    st = em_init_normal(t, 0, std);
  } else {
    float *p = em_data_f32(t);
    for (int64_t i = 0, n = em_numel(t); i < n; i++) p[i] = fill;
  }
  if (st == EM_OK) st = em_module_add_param(m, name, t);
  em_release(t);
  return st == EM_OK ? t : NULL;
}

/* A module whose ctx is a zeroed struct of ctx_size bytes (freed with the module). */
static em_module *module_with_ctx(const char *type, em_forward_fn fwd, size_t ctx_size) {
  void *ctx = calloc(1, ctx_size);
  if (!ctx) {
    em_set_error(EM_ERR_NOMEM, "gpt: out of memory creating a %s", type);
    return NULL;
  }
  return em_module_new(type, fwd, ctx, free);
}

/* Add child to m under name; false (error set) if child is NULL or the add fails. */
static bool add(em_module *m, const char *name, em_module *child) {
  if (!child) return false;
  return em_module_add_child(m, name, child) == EM_OK;
}

typedef struct {
  em_tensor *w, *b; /* b NULL without bias */
} weights;

static em_tensor *linear_forward(em_module *m, em_tensor *x) {
  weights *c = em_module_ctx(m);
  return em_linear(x, c->w, c->b);
}

/* nn.Linear(in, out, bias) with weight (out, in) ~ N(0, std), bias 0; or, when tied is given,
 * with tied as its weight (no bias): the output head. */
static em_module *linear(int in, int out, bool bias, float std, em_tensor *tied) {
  em_module *m = module_with_ctx("Linear", linear_forward, sizeof(weights));
  if (!m) return NULL;
  weights *c = em_module_ctx(m);
  if (tied) {
    c->w = em_module_add_param(m, "weight", tied) == EM_OK ? tied : NULL;
  } else {
    c->w = new_param(m, "weight", EM_SHAPE(out, in), std, 0);
    if (c->w && bias) c->b = new_param(m, "bias", EM_SHAPE(out), 0, 0);
  }
  if (!c->w || (bias && !tied && !c->b)) {
    em_module_free(m);
    return NULL;
  }
  return m;
}

static em_tensor *embedding_forward(em_module *m, em_tensor *x) {
  weights *c = em_module_ctx(m);
  return em_embedding(c->w, x);
}

/* nn.Embedding(num, dim) with weight ~ N(0, 0.02). */
static em_module *embedding(int num, int dim) {
  em_module *m = module_with_ctx("Embedding", embedding_forward, sizeof(weights));
  if (!m) return NULL;
  weights *c = em_module_ctx(m);
  if (!(c->w = new_param(m, "weight", EM_SHAPE(num, dim), 0.02f, 0))) {
    em_module_free(m);
    return NULL;
  }
  return m;
}

static em_tensor *layernorm_forward(em_module *m, em_tensor *x) {
  weights *c = em_module_ctx(m);
  return em_layer_norm(x, 1, c->w, c->b, 1e-5f);
}

/* nanoGPT's LayerNorm(dim, bias): F.layer_norm with eps 1e-5, weight 1, bias 0 or none. */
static em_module *layernorm(int dim, bool bias) {
  em_module *m = module_with_ctx("LayerNorm", layernorm_forward, sizeof(weights));
  if (!m) return NULL;
  weights *c = em_module_ctx(m);
  c->w = new_param(m, "weight", EM_SHAPE(dim), 0, 1);
  if (c->w && bias) c->b = new_param(m, "bias", EM_SHAPE(dim), 0, 0);
  if (!c->w || (bias && !c->b)) {
    em_module_free(m);
    return NULL;
  }
  return m;
}

/* ---- CausalSelfAttention --------------------------------------------------------------------- */
typedef struct {
  em_module *c_attn, *c_proj, *attn_dropout, *resid_dropout; /* children (borrowed) */
  int n_head, n_embd;
} attn_ctx;

/* Column block `which` (0 = q, 1 = k, 2 = v) of qkv (N, T, 3C) as (N, H, T, D): all views. */
static em_tensor *heads(em_tensor *qkv, int which, int64_t H, int64_t D) {
  if (!qkv) return NULL;
  int64_t N = qkv->shape[0], T = qkv->shape[1];
  em_tensor *block = em_narrow(qkv, 2, which * H * D, H * D);         /* (N, T, C) */
  return em_transpose(em_reshape(block, EM_SHAPE(N, T, H, D)), 1, 2); /* (N, H, T, D) */
}

static em_tensor *attn_forward(em_module *m, em_tensor *x) {
  attn_ctx *c = em_module_ctx(m);
  if (x->ndim != 3 || x->shape[2] != c->n_embd) {
    char s[EM_SHAPE_STR_LEN];
    em_set_error(EM_ERR_INVALID, "CausalSelfAttention: expected x (N, T, %d), got %s", c->n_embd,
                 em_shape_str(x, s, sizeof s));
    return NULL;
  }
  int64_t N = x->shape[0], T = x->shape[1], C = c->n_embd, H = c->n_head, D = C / H;
  em_scope s = em_scope_begin();
  em_tensor *qkv = em_forward(c->c_attn, x); /* (N, T, 3C) */
  em_tensor *q = heads(qkv, 0, H, D), *k = heads(qkv, 1, H, D), *v = heads(qkv, 2, H, D);
  em_tensor *att = em_mul_scalar(em_matmul_t(q, k, false, true), (float)(1.0 / sqrt((double)D)));
  att = em_softmax(em_causal_mask(att, -INFINITY), -1); /* (N, H, T, T) */
  att = em_forward(c->attn_dropout, att);
  em_tensor *y = em_transpose(em_matmul(att, v), 1, 2); /* (N, T, H, D) */
  y = em_reshape(y, EM_SHAPE(N, T, C));                 /* the one copy */
  y = em_forward(c->resid_dropout, em_forward(c->c_proj, y));
  return em__op_end(s, y);
}

static em_module *attention(const em_gpt_config *cfg) {
  int C = cfg->n_embd;
  float proj_std = 0.02f / sqrtf(2.0f * (float)cfg->n_layer);
  em_module *m = module_with_ctx("CausalSelfAttention", attn_forward, sizeof(attn_ctx));
  if (!m) return NULL;
  attn_ctx *c = em_module_ctx(m);
  c->n_head = cfg->n_head;
  c->n_embd = C;
  if (!add(m, "c_attn", c->c_attn = linear(C, 3 * C, cfg->bias, 0.02f, NULL)) ||
      !add(m, "c_proj", c->c_proj = linear(C, C, cfg->bias, proj_std, NULL)) ||
      !add(m, "attn_dropout", c->attn_dropout = em_dropout_new(cfg->dropout)) ||
      !add(m, "resid_dropout", c->resid_dropout = em_dropout_new(cfg->dropout))) {
    em_module_free(m);
    return NULL;
  }
  return m;
}

/* ---- MLP and Block --------------------------------------------------------------------------- */
typedef struct {
  em_module *c_fc, *gelu, *c_proj, *dropout;
} mlp_ctx;

static em_tensor *mlp_forward(em_module *m, em_tensor *x) {
  mlp_ctx *c = em_module_ctx(m);
  em_scope s = em_scope_begin();
  em_tensor *h = em_forward(c->gelu, em_forward(c->c_fc, x)); /* (N, T, 4C) */
  return em__op_end(s, em_forward(c->dropout, em_forward(c->c_proj, h)));
}

static em_module *mlp(const em_gpt_config *cfg) {
  int C = cfg->n_embd;
  float proj_std = 0.02f / sqrtf(2.0f * (float)cfg->n_layer);
  em_module *m = module_with_ctx("MLP", mlp_forward, sizeof(mlp_ctx));
  if (!m) return NULL;
  mlp_ctx *c = em_module_ctx(m);
  if (!add(m, "c_fc", c->c_fc = linear(C, 4 * C, cfg->bias, 0.02f, NULL)) ||
      !add(m, "gelu", c->gelu = em_gelu_new()) ||
      !add(m, "c_proj", c->c_proj = linear(4 * C, C, cfg->bias, proj_std, NULL)) ||
      !add(m, "dropout", c->dropout = em_dropout_new(cfg->dropout))) {
    em_module_free(m);
    return NULL;
  }
  return m;
}

typedef struct {
  em_module *ln_1, *attn, *ln_2, *mlp;
} block_ctx;

static em_tensor *block_forward(em_module *m, em_tensor *x) {
  block_ctx *c = em_module_ctx(m);
  em_scope s = em_scope_begin();
  x = em_add(x, em_forward(c->attn, em_forward(c->ln_1, x)));
  x = em_add(x, em_forward(c->mlp, em_forward(c->ln_2, x)));
  return em__op_end(s, x);
}

static em_module *block(const em_gpt_config *cfg) {
  em_module *m = module_with_ctx("Block", block_forward, sizeof(block_ctx));
  if (!m) return NULL;
  block_ctx *c = em_module_ctx(m);
  if (!add(m, "ln_1", c->ln_1 = layernorm(cfg->n_embd, cfg->bias)) ||
      !add(m, "attn", c->attn = attention(cfg)) ||
      !add(m, "ln_2", c->ln_2 = layernorm(cfg->n_embd, cfg->bias)) ||
      !add(m, "mlp", c->mlp = mlp(cfg))) {
    em_module_free(m);
    return NULL;
  }
  return m;
}

/* ---- the transformer and the model ----------------------------------------------------------- */
typedef struct {
  em_module *wte, *wpe, *drop, *h, *ln_f;
  int block_size;
} transformer_ctx;

/* tokens (N, T) -> the final hidden states (N, T, C). */
static em_tensor *transformer_forward(em_module *m, em_tensor *tokens) {
  transformer_ctx *c = em_module_ctx(m);
  char s[EM_SHAPE_STR_LEN];
  if (tokens->ndim != 2 || (tokens->dtype != EM_I64 && tokens->dtype != EM_I32) ||
      tokens->shape[1] < 1) {
    em_set_error(EM_ERR_INVALID, "gpt: tokens must be (N, T) i64 or i32 with T >= 1, got %s %s",
                 em_dtype_name(tokens->dtype), em_shape_str(tokens, s, sizeof s));
    return NULL;
  }
  int64_t T = tokens->shape[1];
  if (T > c->block_size) {
    em_set_error(EM_ERR_INVALID, "gpt: sequence length %lld (tokens %s) exceeds block_size %d",
                 (long long)T, em_shape_str(tokens, s, sizeof s), c->block_size);
    return NULL;
  }
  em_scope sc = em_scope_begin();
  em_tensor *tok = em_forward(c->wte, tokens); /* (N, T, C) */
  if (!tok) { /* a token outside the vocabulary: say so in the model's terms */
    char msg[768];
    snprintf(msg, sizeof msg, "%s", em_last_error());
    em_set_error(em_last_status(), "gpt: tokens: %s", msg);
    return em__op_end(sc, NULL);
  }
  em_tensor *pos = em_empty(EM_I64, 1, &T);
  if (pos)
    for (int64_t t = 0; t < T; t++) ((int64_t *)em_data(pos))[t] = t;
  em_tensor *x = em_add(tok, em_forward(c->wpe, pos)); /* + (T, C), broadcast over N */
  x = em_forward(c->h, em_forward(c->drop, x));
  return em__op_end(sc, em_forward(c->ln_f, x));
}

static em_module *transformer(const em_gpt_config *cfg) {
  em_module *m = module_with_ctx("Transformer", transformer_forward, sizeof(transformer_ctx));
  if (!m) return NULL;
  transformer_ctx *c = em_module_ctx(m);
  c->block_size = cfg->block_size;
  if (!add(m, "wte", c->wte = embedding(cfg->vocab_size, cfg->n_embd)) ||
      !add(m, "wpe", c->wpe = embedding(cfg->block_size, cfg->n_embd)) ||
      !add(m, "drop", c->drop = em_dropout_new(cfg->dropout)) ||
      !add(m, "h", c->h = em_sequential_new(0, NULL)))
    goto fail;
  for (int l = 0; l < cfg->n_layer; l++)
    if (em_sequential_append(c->h, block(cfg)) != EM_OK) goto fail;
  if (!add(m, "ln_f", c->ln_f = layernorm(cfg->n_embd, cfg->bias))) goto fail;
  return m;
fail:
  em_module_free(m);
  return NULL;
}

typedef struct {
  em_module *transformer, *lm_head;
} gpt_ctx;

static em_tensor *gpt_forward(em_module *m, em_tensor *tokens) {
  gpt_ctx *c = em_module_ctx(m);
  em_scope s = em_scope_begin();
  return em__op_end(s, em_forward(c->lm_head, em_forward(c->transformer, tokens)));
}

static bool check_config(const em_gpt_config *cfg) {
  if (!cfg) {
    em_set_error(EM_ERR_INVALID, "gpt: config is NULL");
    return false;
  }
  if (cfg->vocab_size <= 0 || cfg->block_size <= 0 || cfg->n_layer <= 0 || cfg->n_head <= 0 ||
      cfg->n_embd <= 0) {
    em_set_error(EM_ERR_INVALID,
                 "gpt: vocab_size (%d), block_size (%d), n_layer (%d), n_head (%d) and n_embd "
                 "(%d) must all be > 0",
                 cfg->vocab_size, cfg->block_size, cfg->n_layer, cfg->n_head, cfg->n_embd);
    return false;
  }
  if (cfg->n_embd % cfg->n_head != 0) {
    em_set_error(EM_ERR_INVALID, "gpt: n_embd (%d) must be a multiple of n_head (%d)", cfg->n_embd,
                 cfg->n_head);
    return false;
  }
  if (cfg->n_embd > INT32_MAX / 4) { /* the MLP's 4 * n_embd, and c_attn's 3 * n_embd */
    em_set_error(EM_ERR_INVALID, "gpt: n_embd %d too large", cfg->n_embd);
    return false;
  }
  if (!(cfg->dropout >= 0 && cfg->dropout < 1)) {
    em_set_error(EM_ERR_INVALID, "gpt: dropout must be in [0, 1), got %g", cfg->dropout);
    return false;
  }
  return true;
}

em_module *em_gpt(const em_gpt_config *cfg) {
  if (!check_config(cfg)) return NULL;
  em_module *m = module_with_ctx("GPT", gpt_forward, sizeof(gpt_ctx));
  if (!m) return NULL;
  gpt_ctx *c = em_module_ctx(m);
  if (!add(m, "transformer", c->transformer = transformer(cfg))) goto fail;
  /* The head shares the token embedding (weight tying): registered twice, listed once. */
  transformer_ctx *t = em_module_ctx(c->transformer);
  em_tensor *wte = ((weights *)em_module_ctx(t->wte))->w;
  if (!add(m, "lm_head", c->lm_head = linear(cfg->n_embd, cfg->vocab_size, false, 0, wte)))
    goto fail;
  return m;
fail:
  em_module_free(m);
  return NULL;
}
