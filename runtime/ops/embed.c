/* ops_embed.c: embedding lookup and dropout.
 *
 * embedding:  weight (V, D), idx (any shape, i64/i32, values in [0, V)) -> out (idx..., D)
 *             out[p, :] = weight[idx[p], :];  backward: dweight[idx[p], :] += dout[p, :]
 *             (repeated indices add up).
 * dropout:    out = x * m, m[i] = 0 with probability p, else 1/(1-p). The mask comes from the
 *             caller's em_rng, one em_rng_uniform draw per element in row-major order (kept when
 *             u >= p), so a seed reproduces it; backward = dout * m. */
#include "core/internal.h"

#include <string.h>

/* ---- embedding --------------------------------------------------------------------------- */
/* saved[0] = index as a contiguous i64 tensor. */
static em_status embedding_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *w = n->inputs[0], *ix = n->saved[0];
  em_tensor *g = em_zeros(EM_F32, 2, w->shape);
  if (!g) return em_last_status();
  int64_t dim = w->shape[1];
  const int64_t *pi = (const int64_t *)em_data(ix);
  const float *go = em_data_f32(gout);
  float *pg = em_data_f32(g);
  for (int64_t p = 0, n_idx = em_numel(ix); p < n_idx; p++) {
    float *dst = pg + pi[p] * dim;
    const float *src = go + p * dim;
    for (int64_t j = 0; j < dim; j++) dst[j] += src[j];
  }
  gin[0] = g;
  return EM_OK;
}

em_tensor *em_embedding(em_tensor *weight, em_tensor *idx) {
  EM_CHECK_INPUT(weight, "embedding");
  EM_CHECK_INPUT(idx, "embedding");
  char x[EM_SHAPE_STR_LEN], y[EM_SHAPE_STR_LEN];
  if (!em__check_f32("embedding", weight, "weight") || !em__check_cpu("embedding", weight) ||
      !em__check_cpu("embedding", idx))
    return NULL;
  if (weight->ndim != 2 || (idx->dtype != EM_I64 && idx->dtype != EM_I32) ||
      idx->ndim >= EM_MAX_DIMS) {
    em_set_error(EM_ERR_INVALID,
                 "embedding: needs weight (V, D) and an i64/i32 index of at most %d dims, got "
                 "weight %s, index %s %s",
                 EM_MAX_DIMS - 1, em_shape_str(weight, x, sizeof x), em_dtype_name(idx->dtype),
                 em_shape_str(idx, y, sizeof y));
    return NULL;
  }
  int64_t vocab = weight->shape[0], dim = weight->shape[1], n_idx = em_numel(idx);
  int64_t shape[EM_MAX_DIMS];
  memcpy(shape, idx->shape, (size_t)idx->ndim * sizeof *shape);
  shape[idx->ndim] = dim;
  em_scope sc = em_scope_begin();
  em_tensor *ix = em_empty(EM_I64, idx->ndim, idx->shape);
  if (!ix) goto fail;
  int64_t *pi = (int64_t *)em_data(ix);
  for (int64_t p = 0; p < n_idx; p++) {
    pi[p] = (int64_t)em_get(idx, p);
    if (pi[p] < 0 || pi[p] >= vocab) {
      em_set_error(EM_ERR_INVALID,
                   "embedding: index %lld at position %lld is out of range [0, %lld) (weight %s, "
                   "index %s)",
                   (long long)pi[p], (long long)p, (long long)vocab,
                   em_shape_str(weight, x, sizeof x), em_shape_str(idx, y, sizeof y));
      goto fail;
    }
  }
  em_tensor *w = em__contig(weight);
  em_tensor *out = w ? em_empty(EM_F32, idx->ndim + 1, shape) : NULL;
  if (!out) goto fail;
  const float *pw = em_data_f32(w);
  float *po = em_data_f32(out);
  for (int64_t p = 0; p < n_idx; p++)
    memcpy(po + p * dim, pw + pi[p] * dim, (size_t)dim * sizeof *po);
  em_node *n = em__record(out, "embedding", embedding_backward, 1, &weight);
  if (n) em__save(n, ix);
  em_retain(out);
  em_scope_end(sc);
  return em__scope_adopt(out);
fail:
  em_scope_end(sc);
  return NULL;
}

/* ---- dropout ----------------------------------------------------------------------------- */
/* saved[0] = the scaled mask m (0 or 1/(1-p)), same shape as x. */
static em_status dropout_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  gin[0] = em_mul(gout, n->saved[0]);
  return gin[0] ? EM_OK : em_last_status();
}

em_tensor *em_dropout(em_tensor *x, float p, bool training, em_rng *rng) {
  EM_CHECK_INPUT(x, "dropout");
  char b[EM_SHAPE_STR_LEN];
  if (!em__check_f32("dropout", x, "input") || !em__check_cpu("dropout", x)) return NULL;
  if (!(p >= 0.0f && p <= 1.0f)) { /* also catches NaN */
    em_set_error(EM_ERR_INVALID, "dropout: probability %g is outside [0, 1] (input %s)", p,
                 em_shape_str(x, b, sizeof b));
    return NULL;
  }
  if (!training || p == 0.0f) return em__scope_adopt(em_retain(x)); /* identity: x itself */
  if (!rng && p < 1.0f) {
    em_set_error(EM_ERR_INVALID, "dropout: rng is NULL (input %s, p %g, training)",
                 em_shape_str(x, b, sizeof b), p);
    return NULL;
  }
  em_scope sc = em_scope_begin();
  em_tensor *c = em__contig(x);
  em_tensor *mask = c ? em_empty(EM_F32, x->ndim, x->shape) : NULL;
  em_tensor *out = mask ? em_empty(EM_F32, x->ndim, x->shape) : NULL;
  if (!out) {
    em_scope_end(sc);
    return NULL;
  }
  int64_t n = em_numel(x);
  float *pm = em_data_f32(mask), *po = em_data_f32(out);
  const float *px = em_data_f32(c);
  if (p == 1.0f) { /* everything dropped: no draws needed, the rng is left as it is */
    memset(pm, 0, (size_t)n * sizeof *pm);
  } else {
    float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++) pm[i] = em_rng_uniform(rng) >= p ? scale : 0.0f;
  }
  for (int64_t i = 0; i < n; i++) po[i] = pm[i] != 0.0f ? px[i] * pm[i] : 0.0f;
  em_node *node = em__record(out, "dropout", dropout_backward, 1, &x);
  if (node) em__save(node, mask);
  em_retain(out);
  em_scope_end(sc);
  return em__scope_adopt(out);
}
