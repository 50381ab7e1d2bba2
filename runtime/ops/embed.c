/* ops/embed.c: embedding lookup and dropout (front ends: checks, outputs, autograd; the kernels
 * are the device table's check_index, embedding, embedding_backward and dropout).
 *
 * embedding:  weight (V, D), idx (any shape, i64/i32, values in [0, V)) -> out (idx..., D)
 *             out[p, :] = weight[idx[p], :];  backward: dweight[idx[p], :] += dout[p, :]
 *             (repeated indices add up).
 * dropout:    out = x * m, m[i] = 0 with probability p, else 1/(1-p). The mask comes from the
 *             caller's em_rng, one em_rng_uniform draw per element in row-major order (kept when
 *             u >= p), so a seed reproduces it; backward = dout * m. */
#include "core/kernels.h"

#include <string.h>

/* ---- embedding --------------------------------------------------------------------------- */
/* saved[0] = index as a contiguous i64 tensor. */
static em_status embedding_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *w = n->inputs[0];
  const em_kernels *k = EM_KERNELS(w, embedding_backward, n->op);
  em_tensor *g = k ? em__empty_on(w->device, EM_F32, 2, w->shape) : NULL;
  if (!g) return em_last_status();
  em_status st = k->embedding_backward(n->saved[0], gout, g);
  if (st == EM_OK) gin[0] = g;
  return st;
}

/* The index as a contiguous i64 tensor, checked against [0, vocab). */
static em_tensor *embedding_index(em_tensor *weight, em_tensor *idx) {
  const em_kernels *k = EM_KERNELS(idx, check_index, "embedding");
  em_tensor *c = k ? em__contig(idx) : NULL;
  em_tensor *ix = c ? em__empty_on(idx->device, EM_I64, idx->ndim, idx->shape) : NULL;
  int64_t vocab = weight->shape[0], count, bad, value;
  if (!ix || k->check_index(c, vocab, NULL, ix, &count, &bad, &value) != EM_OK) return NULL;
  if (bad >= 0) {
    char x[EM_SHAPE_STR_LEN], y[EM_SHAPE_STR_LEN];
    em_set_error(EM_ERR_INVALID,
                 "embedding: index %lld at position %lld is out of range [0, %lld) (weight %s, "
                 "index %s)",
                 (long long)value, (long long)bad, (long long)vocab,
                 em_shape_str(weight, x, sizeof x), em_shape_str(idx, y, sizeof y));
    return NULL;
  }
  return ix;
}

static em_tensor *embedding_impl(em_tensor *weight, em_tensor *idx) {
  EM_CHECK_INPUT(weight, "embedding");
  EM_CHECK_INPUT(idx, "embedding");
  char x[EM_SHAPE_STR_LEN], y[EM_SHAPE_STR_LEN];
  if (!em__check_f32("embedding", weight, "weight") ||
      !em__check_device("embedding", weight, idx, "index"))
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
  const em_kernels *k = EM_KERNELS(weight, embedding, "embedding");
  int64_t shape[EM_MAX_DIMS];
  memcpy(shape, idx->shape, (size_t)idx->ndim * sizeof *shape);
  shape[idx->ndim] = weight->shape[1];
  em_tensor *ix = k ? embedding_index(weight, idx) : NULL;
  em_tensor *w = ix ? em__contig(weight) : NULL;
  em_tensor *out = w ? em__empty_on(weight->device, EM_F32, idx->ndim + 1, shape) : NULL;
  if (!out || k->embedding(w, ix, out) != EM_OK) return NULL;
  em_node *n = em__record(out, "embedding", embedding_backward, 1, &weight);
  if (n) em__save(n, ix);
  return out;
}

/* A private scope: the index copy (unless saved) and a contiguous weight end with the op. */
em_tensor *em_embedding(em_tensor *weight, em_tensor *idx) {
  em_scope s = em_scope_begin();
  return em__op_end(s, embedding_impl(weight, idx));
}

/* ---- dropout ----------------------------------------------------------------------------- */
/* saved[0] = the scaled mask m (0 or 1/(1-p)), same shape as x. */
static em_status dropout_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  gin[0] = em_mul(gout, n->saved[0]);
  return gin[0] ? EM_OK : em_last_status();
}

static em_tensor *dropout_impl(em_tensor *x, float p, em_rng *rng) {
  const em_kernels *k = EM_KERNELS(x, dropout, "dropout");
  em_tensor *c = k ? em__contig(x) : NULL;
  em_tensor *mask = c ? em__empty_on(x->device, EM_F32, x->ndim, x->shape) : NULL;
  em_tensor *out = mask ? em__empty_on(x->device, EM_F32, x->ndim, x->shape) : NULL;
  if (!out || k->dropout(c, p, rng, mask, out) != EM_OK) return NULL;
  em_node *node = em__record(out, "dropout", dropout_backward, 1, &x);
  if (node) em__save(node, mask);
  return out;
}

em_tensor *em_dropout(em_tensor *x, float p, bool training, em_rng *rng) {
  EM_CHECK_INPUT(x, "dropout");
  char b[EM_SHAPE_STR_LEN];
  if (!em__check_f32("dropout", x, "input")) return NULL;
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
  em_scope s = em_scope_begin(); /* the contiguous copy of x ends with the op */
  return em__op_end(s, dropout_impl(x, p, rng));
}
