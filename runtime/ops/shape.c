/* ops/shape.c: shape and indexing ops: reshape, flatten, transpose, permute, slice, narrow,
 * contiguous, clone, concat, stack, index_select (front ends; the copies are the device table's
 * copy_view, check_index and index_select kernels).
 *
 * Views (transpose, permute, slice, narrow, and reshape where the strides allow) share the input's
 * storage: only shape, strides and offset change. Their backward is one generic function: it
 * scatters the output gradient into a zero tensor of the input's shape, through the same view
 * geometry computed against a contiguous layout of the input:
 *
 *   forward   out = view(a.storage, shape, strides(a), offset(a))
 *   backward  gin = zeros(a.shape);  view(gin, shape, strides(contig a), offset 0) <- gout
 *
 * Copying ops (concat, stack, index_select, clone, contiguous) work on every dtype (byte copies);
 * gradients exist for f32 only, as everywhere. Backward functions always return fresh tensors,
 * never views of gout: the engine accumulates into a node's pending gradient in place. */
#include "core/kernels.h"

#include <stdio.h>
#include <string.h>

/* "[2, -1, 3]" for a shape that is not (yet) a tensor's. */
static const char *dims_str(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int d = 0; d < ndim && k < n; d++)
    k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

/* A dim normalised into [0, ndim), or -1 with an error naming the op, the dim and a's shape. */
static int dim_of(const char *op, int dim, int ndim, const em_tensor *a) {
  int d = dim < 0 ? dim + ndim : dim;
  if (d >= 0 && d < (ndim ? ndim : 1)) return d;
  char x[EM_SHAPE_STR_LEN];
  em_set_error(EM_ERR_INVALID, "%s: dim %d out of range for input %s (%d dims)", op, dim,
               em_shape_str(a, x, sizeof x), ndim);
  return -1;
}

/* A new contiguous copy of t on its device (scope-owned), never t itself. */
static em_tensor *fresh_copy(const char *op, const em_tensor *t) {
  const em_kernels *k = EM_KERNELS(t, copy_view, op);
  em_tensor *c = k ? em__empty_on(t->device, t->dtype, t->ndim, t->shape) : NULL;
  return c && k->copy_view(c, t) == EM_OK ? c : NULL;
}

/* Zeros of the given shape on dev (scope-owned). */
static em_tensor *zeros_on(em_device dev, int ndim, const int64_t *shape) {
  return em__scope_adopt(em__alloc_on(dev, EM_F32, ndim, shape, true));
}

/* End an op's private scope, handing out to the enclosing scope (or to the caller). */
static em_tensor *scope_return(em_scope s, em_tensor *out) {
  em_retain(out);
  em_scope_end(s);
  return em__scope_adopt(out);
}

/* ---- views ------------------------------------------------------------------------------- */
/* A view maps output dim d to input dim src[d], stepping mul[d] input elements per output
 * element, starting at start[j] in every input dim j. Transpose, permute, slice and narrow are
 * all of this form. */
typedef struct {
  int ndim;
  int64_t shape[EM_MAX_DIMS];
  int src[EM_MAX_DIMS];
  int64_t mul[EM_MAX_DIMS];
  int64_t start[EM_MAX_DIMS]; /* indexed by input dim */
} vmap;

static vmap vmap_identity(const em_tensor *a) {
  vmap m = {.ndim = a->ndim};
  for (int d = 0; d < a->ndim; d++) {
    m.shape[d] = a->shape[d];
    m.src[d] = d;
    m.mul[d] = 1;
  }
  return m;
}

/* Geometry of the view over an input laid out with the given strides and offset. */
static void vmap_apply(const vmap *m, int in_ndim, const int64_t *in_strides, int64_t in_off,
                       int64_t *strides, int64_t *off) {
  for (int d = 0; d < m->ndim; d++) strides[d] = in_strides[m->src[d]] * m->mul[d];
  *off = in_off;
  for (int j = 0; j < in_ndim; j++) *off += m->start[j] * in_strides[j];
}

/* Backward of every view: n->i[0..7] = strides, n->i[8] = offset of the view over a contiguous
 * tensor of the input's shape. */
static em_status view_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *in = n->inputs[0];
  const em_kernels *k = EM_KERNELS(in, copy_view, n->op);
  em_tensor *g = k ? zeros_on(in->device, in->ndim, in->shape) : NULL;
  em_tensor *v = g ? em__view(g, n->out_ndim, n->out_shape, n->i, n->i[8]) : NULL;
  if (!v) return em_last_status();
  em_status st = k->copy_view(v, gout);
  if (st == EM_OK) gin[0] = g;
  return st;
}

static void record_view(const char *op, em_tensor *out, em_tensor *a, const int64_t *bstrides,
                        int64_t boff) {
  em_node *n = em__record(out, op, view_backward, 1, &a);
  if (!n) return;
  memcpy(n->i, bstrides, (size_t)out->ndim * sizeof *bstrides);
  n->i[8] = boff;
}

static em_tensor *view_op(const char *op, em_tensor *a, const vmap *m) {
  int64_t st[EM_MAX_DIMS], off, cst[EM_MAX_DIMS], bst[EM_MAX_DIMS], boff;
  vmap_apply(m, a->ndim, a->strides, a->offset, st, &off);
  em__contig_strides(a->ndim, a->shape, cst);
  vmap_apply(m, a->ndim, cst, 0, bst, &boff);
  em_tensor *out = em__view(a, m->ndim, m->shape, st, off);
  if (out) record_view(op, out, a, bst, boff);
  return out;
}

/* Strides that show a (not empty, ndim >= 1) as shape s without moving data, as torch's view:
 * each run of dims of a that lie evenly apart (a "chunk") must be covered by a run of dims of s
 * with the same element count; s's strides within the run follow from the chunk's innermost
 * stride. False when some dims of s would straddle two chunks (a copy is needed then). Splitting
 * the last dim of a column slice (N, T, 3C)[..., C:2C] into (N, T, H, D) is a view this way. */
static bool view_strides(const em_tensor *a, int ndim, const int64_t *s, int64_t *st) {
  int vd = ndim - 1;
  int64_t base = a->strides[a->ndim - 1], chunk = 1, covered = 1;
  for (int d = a->ndim - 1; d >= 0; d--) {
    chunk *= a->shape[d];
    bool chunk_ends = d == 0 || (a->shape[d - 1] != 1 && a->strides[d - 1] != chunk * base);
    if (!chunk_ends) continue;
    while (vd >= 0 && (covered < chunk || s[vd] == 1)) {
      st[vd] = covered * base;
      covered *= s[vd];
      vd--;
    }
    if (covered != chunk) return false;
    if (d > 0) {
      base = a->strides[d - 1];
      chunk = covered = 1;
    }
  }
  return vd == -1;
}

em_tensor *em_reshape(em_tensor *a, int ndim, const int64_t *shape) {
  EM_CHECK_INPUT(a, "reshape");
  char x[EM_SHAPE_STR_LEN], y[EM_SHAPE_STR_LEN];
  if (ndim < 0 || ndim > EM_MAX_DIMS || (ndim > 0 && !shape)) {
    em_set_error(EM_ERR_INVALID, "reshape: %d dimensions requested for input %s (0 to %d)", ndim,
                 em_shape_str(a, x, sizeof x), EM_MAX_DIMS);
    return NULL;
  }
  int64_t s[EM_MAX_DIMS], known = 1;
  int infer = -1;
  for (int d = 0; d < ndim; d++) {
    s[d] = shape[d];
    if (shape[d] == -1 && infer < 0) {
      infer = d;
    } else if (shape[d] < 0) {
      em_set_error(EM_ERR_INVALID, "reshape: bad shape %s for input %s (%s)",
                   dims_str(ndim, shape, y, sizeof y), em_shape_str(a, x, sizeof x),
                   shape[d] == -1 ? "only one dimension may be -1" : "negative size");
      return NULL;
    } else {
      known *= shape[d];
    }
  }
  int64_t numel = em_numel(a);
  if (infer >= 0) {
    if (known == 0 || numel % known != 0) {
      em_set_error(EM_ERR_INVALID, "reshape: cannot reshape %s (%lld elements) into %s",
                   em_shape_str(a, x, sizeof x), (long long)numel,
                   dims_str(ndim, shape, y, sizeof y));
      return NULL;
    }
    s[infer] = numel / known;
    known = numel;
  }
  if (known != numel) {
    em_set_error(EM_ERR_INVALID,
                 "reshape: cannot reshape %s (%lld elements) into %s (%lld elements)",
                 em_shape_str(a, x, sizeof x), (long long)numel, dims_str(ndim, shape, y, sizeof y),
                 (long long)known);
    return NULL;
  }
  int64_t cst[EM_MAX_DIMS], vst[EM_MAX_DIMS];
  em__contig_strides(ndim, s, cst);
  if (!em_is_contiguous(a) && numel > 0 && view_strides(a, ndim, s, vst)) {
    em_tensor *out = em__view(a, ndim, s, vst, a->offset);
    if (out) record_view("reshape", out, a, cst, 0);
    return out;
  }
  em_scope sc = em_scope_begin();
  em_tensor *c = em__contig(a); /* a itself if contiguous, else a scope-owned copy */
  em_tensor *out = c ? em__view(c, ndim, s, cst, c->offset) : NULL;
  if (out) record_view("reshape", out, a, cst, 0);
  return scope_return(sc, out);
}

em_tensor *em_flatten(em_tensor *a, int start_dim, int end_dim) {
  EM_CHECK_INPUT(a, "flatten");
  if (a->ndim == 0) return em_reshape(a, 1, (const int64_t[]){1});
  int s = dim_of("flatten", start_dim, a->ndim, a);
  int e = s < 0 ? -1 : dim_of("flatten", end_dim, a->ndim, a);
  if (s < 0 || e < 0) return NULL;
  if (s > e) {
    char x[EM_SHAPE_STR_LEN];
    em_set_error(EM_ERR_INVALID, "flatten: start_dim %d comes after end_dim %d for input %s",
                 start_dim, end_dim, em_shape_str(a, x, sizeof x));
    return NULL;
  }
  int64_t shape[EM_MAX_DIMS];
  int nd = 0;
  for (int d = 0; d < s; d++) shape[nd++] = a->shape[d];
  shape[nd] = 1;
  for (int d = s; d <= e; d++) shape[nd] *= a->shape[d];
  nd++;
  for (int d = e + 1; d < a->ndim; d++) shape[nd++] = a->shape[d];
  return em_reshape(a, nd, shape);
}

em_tensor *em_transpose(em_tensor *a, int d0, int d1) {
  EM_CHECK_INPUT(a, "transpose");
  int x = dim_of("transpose", d0, a->ndim, a);
  int y = x < 0 ? -1 : dim_of("transpose", d1, a->ndim, a);
  if (x < 0 || y < 0) return NULL;
  vmap m = vmap_identity(a);
  if (a->ndim > 0) {
    m.shape[x] = a->shape[y];
    m.shape[y] = a->shape[x];
    m.src[x] = y;
    m.src[y] = x;
  }
  return view_op("transpose", a, &m);
}

em_tensor *em_permute(em_tensor *a, const int *perm) {
  EM_CHECK_INPUT(a, "permute");
  char x[EM_SHAPE_STR_LEN];
  if (a->ndim > 0 && !perm) {
    em_set_error(EM_ERR_INVALID, "permute: perm is NULL for input %s",
                 em_shape_str(a, x, sizeof x));
    return NULL;
  }
  vmap m = vmap_identity(a);
  bool seen[EM_MAX_DIMS] = {false};
  for (int d = 0; d < a->ndim; d++) {
    int j = perm[d] < 0 ? perm[d] + a->ndim : perm[d];
    if (j < 0 || j >= a->ndim || seen[j]) {
      em_set_error(EM_ERR_INVALID,
                   "permute: entry %d (%d) of perm is %s for input %s: perm must list each of "
                   "the %d dims once",
                   d, perm[d], (j < 0 || j >= a->ndim) ? "out of range" : "repeated",
                   em_shape_str(a, x, sizeof x), a->ndim);
      return NULL;
    }
    seen[j] = true;
    m.src[d] = j;
    m.shape[d] = a->shape[j];
  }
  return view_op("permute", a, &m);
}

em_tensor *em_slice(em_tensor *a, int dim, int64_t start, int64_t end, int64_t step) {
  EM_CHECK_INPUT(a, "slice");
  char x[EM_SHAPE_STR_LEN];
  if (a->ndim == 0) {
    em_set_error(EM_ERR_INVALID, "slice: input %s has no dimension to slice",
                 em_shape_str(a, x, sizeof x));
    return NULL;
  }
  int d = dim_of("slice", dim, a->ndim, a);
  if (d < 0) return NULL;
  if (step <= 0) {
    em_set_error(EM_ERR_INVALID, "slice: step %lld must be positive (input %s, dim %d)",
                 (long long)step, em_shape_str(a, x, sizeof x), dim);
    return NULL;
  }
  int64_t size = a->shape[d];
  if (start < 0) start += size;
  if (end < 0) end += size;
  start = start < 0 ? 0 : start > size ? size : start;
  end = end < start ? start : end > size ? size : end;
  vmap m = vmap_identity(a);
  m.shape[d] = (end - start + step - 1) / step;
  m.mul[d] = step;
  m.start[d] = start;
  return view_op("slice", a, &m);
}

em_tensor *em_narrow(em_tensor *a, int dim, int64_t start, int64_t length) {
  EM_CHECK_INPUT(a, "narrow");
  char x[EM_SHAPE_STR_LEN];
  if (a->ndim == 0) {
    em_set_error(EM_ERR_INVALID, "narrow: input %s has no dimension to narrow",
                 em_shape_str(a, x, sizeof x));
    return NULL;
  }
  int d = dim_of("narrow", dim, a->ndim, a);
  if (d < 0) return NULL;
  int64_t size = a->shape[d], s = start < 0 ? start + size : start;
  if (s < 0 || length < 0 || s + length > size) {
    em_set_error(EM_ERR_INVALID,
                 "narrow: start %lld, length %lld out of range for dim %d of size %lld "
                 "(input %s)",
                 (long long)start, (long long)length, dim, (long long)size,
                 em_shape_str(a, x, sizeof x));
    return NULL;
  }
  vmap m = vmap_identity(a);
  m.shape[d] = length;
  m.start[d] = s;
  return view_op("narrow", a, &m);
}

/* ---- copies ------------------------------------------------------------------------------ */
static em_status identity_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  gin[0] = gout;
  return EM_OK;
}

em_tensor *em_contiguous(em_tensor *a) {
  EM_CHECK_INPUT(a, "contiguous");
  if (em_is_contiguous(a)) return em__scope_adopt(em_retain(a));
  em_tensor *out = fresh_copy("contiguous", a);
  if (out) em__record(out, "contiguous", identity_backward, 1, &a);
  return out;
}

em_tensor *em_clone(em_tensor *a) {
  EM_CHECK_INPUT(a, "clone");
  em_tensor *out = fresh_copy("clone", a);
  if (out) em__record(out, "clone", identity_backward, 1, &a);
  return out;
}

/* The part of t along dim that input k of a concat (len elements from start) or of a stack
 * (index start, the dim removed) occupies. A scope-owned view. */
static em_tensor *part_view(em_tensor *t, int dim, int64_t start, int64_t len, bool squeeze) {
  int64_t shape[EM_MAX_DIMS], strides[EM_MAX_DIMS];
  int nd = 0;
  for (int d = 0; d < t->ndim; d++) {
    if (d == dim && squeeze) continue;
    shape[nd] = d == dim ? len : t->shape[d];
    strides[nd++] = t->strides[d];
  }
  return em__view(t, nd, shape, strides, t->offset + start * t->strides[dim]);
}

/* n->i[0] = dim in the output, n->i[1] = 1 for stack. */
static em_status join_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  int dim = (int)n->i[0];
  bool stack = n->i[1] != 0;
  int64_t start = 0;
  for (int k = 0; k < n->n_in; k++) {
    em_tensor *in = n->inputs[k];
    int64_t len = stack ? 1 : in->shape[dim];
    if (in->requires_grad) {
      em_tensor *v = part_view(gout, dim, start, len, stack);
      gin[k] = v ? fresh_copy(n->op, v) : NULL;
      if (!gin[k]) return em_last_status();
    }
    start += len;
  }
  return EM_OK;
}

static em_tensor *join(const char *op, int n, em_tensor *const *ts, int dim, bool stack) {
  if (n < 1 || !ts) {
    em_set_error(EM_ERR_INVALID, "%s: needs at least one tensor, got %d", op, n);
    return NULL;
  }
  for (int k = 0; k < n; k++) EM_CHECK_INPUT(ts[k], op);
  em_tensor *t0 = ts[0];
  char x[EM_SHAPE_STR_LEN], y[EM_SHAPE_STR_LEN];
  if (!stack && t0->ndim == 0) {
    em_set_error(EM_ERR_INVALID, "%s: tensor 0 has shape %s: 0-d tensors cannot be joined", op,
                 em_shape_str(t0, x, sizeof x));
    return NULL;
  }
  if (stack && t0->ndim == EM_MAX_DIMS) {
    em_set_error(EM_ERR_INVALID, "%s: tensors of shape %s already have %d dims", op,
                 em_shape_str(t0, x, sizeof x), EM_MAX_DIMS);
    return NULL;
  }
  int d = dim_of(op, dim, t0->ndim + (stack ? 1 : 0), t0);
  if (d < 0) return NULL;
  int64_t total = 0;
  for (int k = 0; k < n; k++) {
    em_tensor *t = ts[k];
    char what[24];
    snprintf(what, sizeof what, "tensor %d", k);
    if (!em__check_device(op, t0, t, what)) return NULL;
    bool ok = t->ndim == t0->ndim && t->dtype == t0->dtype;
    for (int j = 0; ok && j < t0->ndim; j++) ok = t->shape[j] == t0->shape[j] || (!stack && j == d);
    if (!ok) {
      em_set_error(EM_ERR_INVALID,
                   "%s: tensor %d (%s %s) does not match tensor 0 (%s %s) along dim %d", op, k,
                   em_dtype_name(t->dtype), em_shape_str(t, x, sizeof x), em_dtype_name(t0->dtype),
                   em_shape_str(t0, y, sizeof y), dim);
      return NULL;
    }
    total += stack ? 1 : t->shape[d];
  }
  int64_t shape[EM_MAX_DIMS];
  int nd = 0;
  for (int j = 0; j < t0->ndim + (stack ? 1 : 0); j++) {
    if (j == d)
      shape[nd++] = total;
    else
      shape[nd++] = t0->shape[j - (stack && j > d ? 1 : 0)];
  }
  const em_kernels *kt = EM_KERNELS(t0, copy_view, op);
  em_tensor *out = kt ? em__empty_on(t0->device, t0->dtype, nd, shape) : NULL;
  if (!out) return NULL;
  em_scope sc = em_scope_begin();
  int64_t start = 0;
  for (int k = 0; k < n; k++) {
    int64_t len = stack ? 1 : ts[k]->shape[d];
    em_tensor *v = part_view(out, d, start, len, stack);
    if (!v || kt->copy_view(v, ts[k]) != EM_OK) {
      em_scope_end(sc);
      return NULL;
    }
    start += len;
  }
  em_scope_end(sc);
  em_node *node = em__record(out, op, join_backward, n, ts);
  if (node) {
    node->i[0] = d;
    node->i[1] = stack;
  }
  return out;
}

em_tensor *em_concat(int n, em_tensor *const *ts, int dim) {
  return join("concat", n, ts, dim, false);
}
em_tensor *em_stack(int n, em_tensor *const *ts, int dim) {
  return join("stack", n, ts, dim, true);
}

/* ---- index_select ------------------------------------------------------------------------ */
/* idx (1-D, i64/i32) as a contiguous i64 tensor, checked against [0, size); the first bad value
 * gives an error naming its position and value. Scope-owned. */
static em_tensor *checked_index(const char *op, em_tensor *idx, int64_t size, const em_tensor *a) {
  char x[EM_SHAPE_STR_LEN], y[EM_SHAPE_STR_LEN];
  if (idx->dtype != EM_I64 && idx->dtype != EM_I32) {
    em_set_error(EM_ERR_INVALID, "%s: index must be i64 or i32, got %s %s (input %s)", op,
                 em_dtype_name(idx->dtype), em_shape_str(idx, x, sizeof x),
                 em_shape_str(a, y, sizeof y));
    return NULL;
  }
  const em_kernels *k = EM_KERNELS(idx, check_index, op);
  em_tensor *c = k ? em__contig(idx) : NULL;
  em_tensor *ix = c ? em__empty_on(idx->device, EM_I64, idx->ndim, idx->shape) : NULL;
  int64_t count, bad, value;
  if (!ix || k->check_index(c, size, NULL, ix, &count, &bad, &value) != EM_OK) return NULL;
  if (bad >= 0) {
    em_set_error(EM_ERR_INVALID,
                 "%s: index %lld at position %lld is out of range [0, %lld) (input %s, index "
                 "%s)",
                 op, (long long)value, (long long)bad, (long long)size,
                 em_shape_str(a, y, sizeof y), em_shape_str(idx, x, sizeof x));
    return NULL;
  }
  return ix;
}

/* n->i[0] = dim; saved[0] = i64 index. gin[o, idx[j], i] += gout[o, j, i]. */
static em_status index_select_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[0];
  const em_kernels *k = EM_KERNELS(a, index_select_backward, n->op);
  em_tensor *g = k ? em__empty_on(a->device, EM_F32, a->ndim, a->shape) : NULL;
  if (!g) return em_last_status();
  em_status st = k->index_select_backward(n->saved[0], (int)n->i[0], gout, g);
  if (st == EM_OK) gin[0] = g;
  return st;
}

static em_tensor *index_select_impl(em_tensor *a, int dim, em_tensor *idx) {
  EM_CHECK_INPUT(a, "index_select");
  EM_CHECK_INPUT(idx, "index_select");
  char x[EM_SHAPE_STR_LEN], y[EM_SHAPE_STR_LEN];
  if (!em__check_device("index_select", a, idx, "index")) return NULL;
  if (a->ndim == 0 || idx->ndim != 1) {
    em_set_error(EM_ERR_INVALID,
                 "index_select: needs an input with dims and a 1-D index, got input %s, index %s",
                 em_shape_str(a, x, sizeof x), em_shape_str(idx, y, sizeof y));
    return NULL;
  }
  const em_kernels *k = EM_KERNELS(a, index_select, "index_select");
  int d = k ? dim_of("index_select", dim, a->ndim, a) : -1;
  em_tensor *ix = d >= 0 ? checked_index("index_select", idx, a->shape[d], a) : NULL;
  if (!ix) return NULL;
  int64_t shape[EM_MAX_DIMS];
  memcpy(shape, a->shape, sizeof shape);
  shape[d] = idx->shape[0];
  em_tensor *c = em__contig(a);
  em_tensor *out = c ? em__empty_on(a->device, a->dtype, a->ndim, shape) : NULL;
  if (!out || k->index_select(c, d, ix, out) != EM_OK) return NULL;
  em_node *n = em__record(out, "index_select", index_select_backward, 1, &a);
  if (n) {
    n->i[0] = d;
    em__save(n, ix);
  }
  return out;
}

/* A private scope: the index copy (unless saved) and a contiguous input end with the op. */
em_tensor *em_index_select(em_tensor *a, int dim, em_tensor *idx) {
  em_scope s = em_scope_begin();
  return em__op_end(s, index_select_impl(a, dim, idx));
}
