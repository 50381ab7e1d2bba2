/* core/tensor.c: storage, tensor construction, views, reference counting, scopes, element access.
 *
 * Ownership: a storage is shared by every view of it and freed with the last one. A tensor holds
 * one storage reference, its grad, its grad_fn node and its hooks. Scopes keep a per-thread stack
 * of tensor references; em_scope_end releases everything pushed since em_scope_begin. */
#include "em_half.h"
#include "core/internal.h"
#include "core/kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t live_tensors; /* process-wide, atomic */

/* ---- dtypes ---------------------------------------------------------------------------- */
size_t em_dtype_size(em_dtype dt) {
  static const size_t sz[EM_DTYPE_COUNT] = {4, 8, 4, 1, 2, 2};
  return (unsigned)dt < EM_DTYPE_COUNT ? sz[dt] : 0;
}

const char *em_dtype_name(em_dtype dt) {
  static const char *nm[EM_DTYPE_COUNT] = {"f32", "i64", "i32", "u8", "bf16", "f16"};
  return (unsigned)dt < EM_DTYPE_COUNT ? nm[dt] : "?";
}

/* ---- scopes ---------------------------------------------------------------------------- */
static _Thread_local em_tensor **scope_stack;
static _Thread_local size_t scope_len, scope_cap;
static _Thread_local int scope_depth;

em_scope em_scope_begin(void) { return (em_scope){scope_len, ++scope_depth}; }

void em_scope_end(em_scope s) {
  if (s.depth != scope_depth) {
    fprintf(stderr, "ember: em_scope_end: scopes closed out of order (depth %d, expected %d)\n",
            s.depth, scope_depth);
  }
  while (scope_len > s.mark) em_release(scope_stack[--scope_len]);
  scope_depth = s.depth - 1;
  if (scope_depth == 0) {
    free(scope_stack);
    scope_stack = NULL;
    scope_cap = 0;
  }
}

em_tensor *em__scope_adopt(em_tensor *t) {
  if (!t || scope_depth == 0) return t;
  if (scope_len == scope_cap) {
    size_t cap = scope_cap ? scope_cap * 2 : 256;
    em_tensor **p = realloc(scope_stack, cap * sizeof *p);
    if (!p) {
      /* Cannot track it: hand ownership to nobody rather than crash; report the leak. */
      em_set_error(EM_ERR_NOMEM, "scope: out of memory tracking %zu tensors", scope_len);
      return t;
    }
    scope_stack = p;
    scope_cap = cap;
  }
  scope_stack[scope_len++] = t;
  return t;
}

em_scope_saved em_scope_suspend(void) {
  em_scope_saved s = {scope_stack, scope_len, scope_cap, scope_depth};
  scope_stack = NULL;
  scope_len = scope_cap = 0;
  scope_depth = 0;
  return s;
}

void em_scope_resume(em_scope_saved s) {
  free(scope_stack); /* anything a hidden scope left (only if it was not closed) */
  scope_stack = s.stack;
  scope_len = s.len;
  scope_cap = s.cap;
  scope_depth = s.depth;
}

em_tensor *em__op_end(em_scope s, em_tensor *out) {
  em_retain(out);
  em_scope_end(s);
  return em__scope_adopt(out);
}

int64_t em_live_tensors(void) { return __atomic_load_n(&live_tensors, __ATOMIC_RELAXED); }

/* ---- storage and tensors --------------------------------------------------------------- */

/* A storage of nbytes on dev, from dev's kernel table (zeroed if asked). NULL with the error set
 * when the device cannot allocate. */
em_storage *em__storage_new(em_device dev, size_t nbytes, bool zero) {
  const em_kernels *k = EM_DEVICE_KERNELS(dev, alloc, "empty");
  if (!k) return NULL;
  em_storage *s = calloc(1, sizeof *s);
  size_t padded = em__padded_size(nbytes);
  uint64_t errors = em__error_count();
  if (s) s->data = k->alloc(dev.index, padded);
  if (!s || !s->data) {
    free(s);
    /* The CUDA allocator says what it holds; a table that said nothing gets the generic line. */
    if (!s || em__error_count() == errors)
      em_set_error(EM_ERR_NOMEM, "out of memory allocating %zu bytes on %s:%d", nbytes, k->name,
                   dev.index);
    return NULL;
  }
  if (zero && k->zero(dev.index, s->data, padded) != EM_OK) {
    k->free(dev.index, s->data, padded);
    free(s);
    return NULL;
  }
  s->nbytes = nbytes;
  s->device = dev;
  s->refcount = 1;
  s->owns = true;
  return s;
}

void em__storage_release(em_storage *s) {
  if (!s || __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
  if (s->pinned)
    em__host_free_pinned(s->data, s->nbytes ? s->nbytes : 1, s->upload_done);
  else if (s->owns)
    em__kernels(s->device)->free(s->device.index, s->data, em__padded_size(s->nbytes));
  if (s->release) s->release(s->release_ctx);
  free(s);
}

void em__contig_strides(int ndim, const int64_t *shape, int64_t *strides) {
  int64_t st = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    strides[d] = st;
    st *= shape[d];
  }
}

int em__reduce_groups(int ndim, const int64_t *shape, uint32_t mask, int64_t *gsize, bool *gred) {
  int ng = 0;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] == 1) continue;
    bool r = (mask >> d) & 1u;
    if (ng > 0 && gred[ng - 1] == r) {
      gsize[ng - 1] *= shape[d];
    } else {
      gsize[ng] = shape[d];
      gred[ng] = r;
      ng++;
    }
  }
  return ng;
}

int64_t em__shape_numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  return n;
}

static bool check_shape(const char *op, em_dtype dt, int ndim, const int64_t *shape) {
  if ((unsigned)dt >= EM_DTYPE_COUNT) {
    em_set_error(EM_ERR_INVALID, "%s: unknown dtype %d", op, (int)dt);
    return false;
  }
  if (ndim < 0 || ndim > EM_MAX_DIMS) {
    em_set_error(EM_ERR_INVALID, "%s: %d dimensions (at most %d)", op, ndim, EM_MAX_DIMS);
    return false;
  }
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0) {
      em_set_error(EM_ERR_INVALID, "%s: negative size %lld in dimension %d", op,
                   (long long)shape[d], d);
      return false;
    }
    if (shape[d] > 0 && n > (INT64_MAX / 16) / shape[d]) {
      em_set_error(EM_ERR_INVALID, "%s: shape too large", op);
      return false;
    }
    n *= shape[d];
  }
  return true;
}

static em_tensor *tensor_shell(em_dtype dt, int ndim, const int64_t *shape) {
  em_tensor *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->dtype = dt;
  t->ndim = ndim;
  if (ndim) memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
  em__contig_strides(ndim, shape, t->strides);
  t->device = EM_DEVICE_CPU;
  t->refcount = 1;
  __atomic_add_fetch(&live_tensors, 1, __ATOMIC_RELAXED);
  return t;
}

em_tensor *em__alloc_on(em_device dev, em_dtype dt, int ndim, const int64_t *shape, bool zero) {
  if (!check_shape("empty", dt, ndim, shape)) return NULL;
  em_tensor *t = tensor_shell(dt, ndim, shape);
  if (!t) {
    em_set_error(EM_ERR_NOMEM, "out of memory allocating a %s tensor of %lld elements",
                 em_dtype_name(dt), (long long)em__shape_numel(ndim, shape));
    return NULL;
  }
  t->device = dev;
  t->storage = em__storage_new(dev, (size_t)em__shape_numel(ndim, shape) * em_dtype_size(dt), zero);
  if (!t->storage) {
    em_release(t);
    return NULL;
  }
  return t;
}

em_tensor *em__tensor_lent(void *data, size_t nbytes, em_device dev, em_dtype dt, int ndim,
                           const int64_t *shape, const int64_t *strides, void (*release)(void *),
                           void *ctx) {
  if (!check_shape("tensor_lent", dt, ndim, shape)) return NULL;
  em_tensor *t = tensor_shell(dt, ndim, shape);
  em_storage *s = t ? calloc(1, sizeof *s) : NULL;
  if (!s) {
    em_release(t);
    em_set_error(EM_ERR_NOMEM, "out of memory wrapping memory in a tensor");
    return NULL;
  }
  *s = (em_storage){.data = data, .nbytes = nbytes, .device = dev, .refcount = 1, .owns = false,
                    .release = release, .release_ctx = ctx};
  if (strides && ndim) memcpy(t->strides, strides, (size_t)ndim * sizeof *strides);
  t->device = dev;
  t->storage = s;
  return t;
}

em_tensor *em__tensor_over(void *data, em_dtype dt, int ndim, const int64_t *shape) {
  if (!check_shape("tensor_over", dt, ndim, shape)) return NULL;
  size_t nbytes = (size_t)em__shape_numel(ndim, shape) * em_dtype_size(dt);
  return em__tensor_lent(data, nbytes, EM_DEVICE_CPU, dt, ndim, shape, NULL, NULL, NULL);
}

em_status em__storage_privatize(em_storage *s) {
  if (!s || s->owns) return EM_OK;
  em_storage *mine = em__storage_new(s->device, s->nbytes, false);
  if (!mine) return em_last_status();
  memcpy(mine->data, s->data, s->nbytes);
  s->data = mine->data; /* the new block is ours now; its shell goes */
  s->owns = true;
  free(mine);
  if (s->release) s->release(s->release_ctx); /* the lender gets its memory back */
  s->release = NULL;
  return EM_OK;
}

em_tensor *em__alloc_noscope(em_dtype dt, int ndim, const int64_t *shape, bool zero) {
  return em__alloc_on(EM_DEVICE_CPU, dt, ndim, shape, zero);
}

em_tensor *em__empty_on(em_device dev, em_dtype dt, int ndim, const int64_t *shape) {
  return em__scope_adopt(em__alloc_on(dev, dt, ndim, shape, false));
}

em_tensor *em_empty(em_dtype dt, int ndim, const int64_t *shape) {
  return em__scope_adopt(em__alloc_noscope(dt, ndim, shape, false));
}

em_tensor *em_empty_pinned(em_dtype dt, int ndim, const int64_t *shape) {
  if (!check_shape("empty_pinned", dt, ndim, shape)) return NULL;
  size_t nbytes = (size_t)em__shape_numel(ndim, shape) * em_dtype_size(dt);
  void *p = em__host_alloc_pinned(nbytes ? nbytes : 1);
  if (!p) return em_empty(dt, ndim, shape);
  em_tensor *t = tensor_shell(dt, ndim, shape);
  em_storage *s = t ? calloc(1, sizeof *s) : NULL;
  if (!s) {
    em__host_free_pinned(p, nbytes ? nbytes : 1, NULL);
    em_release(t);
    em_set_error(EM_ERR_NOMEM, "out of memory allocating a pinned tensor");
    return NULL;
  }
  *s = (em_storage){.data = p, .nbytes = nbytes, .device = EM_DEVICE_CPU, .refcount = 1,
                    .owns = true, .pinned = true};
  t->storage = s;
  return em__scope_adopt(t);
}

bool em_is_pinned(const em_tensor *t) { return t && t->storage && t->storage->pinned; }

em_tensor *em_zeros(em_dtype dt, int ndim, const int64_t *shape) {
  return em__scope_adopt(em__alloc_noscope(dt, ndim, shape, true));
}

em_tensor *em_full(em_dtype dt, int ndim, const int64_t *shape, double value) {
  em_tensor *t = em_empty(dt, ndim, shape);
  return t && em__kernels(t->device)->fill(t, value) == EM_OK ? t : NULL;
}

em_tensor *em_from_data(em_dtype dt, int ndim, const int64_t *shape, const void *data) {
  em_tensor *t = em_empty(dt, ndim, shape);
  if (!t) return NULL;
  if (!data && em_numel(t) > 0) {
    em_set_error(EM_ERR_INVALID, "from_data: data is NULL");
    return NULL;
  }
  if (em_numel(t) > 0) memcpy(em_data(t), data, (size_t)em_numel(t) * em_dtype_size(dt));
  return t;
}

em_tensor *em_scalar(float v) { return em_full(EM_F32, 0, NULL, v); }

em_tensor *em__view(em_tensor *t, int ndim, const int64_t *shape, const int64_t *strides,
                    int64_t offset) {
  em_tensor *v = tensor_shell(t->dtype, ndim, shape);
  if (!v) {
    em_set_error(EM_ERR_NOMEM, "view: out of memory");
    return NULL;
  }
  if (ndim) memcpy(v->strides, strides, (size_t)ndim * sizeof *strides);
  v->offset = offset;
  v->device = t->device;
  v->storage = t->storage;
  __atomic_add_fetch(&t->storage->refcount, 1, __ATOMIC_RELAXED);
  return em__scope_adopt(v);
}

void em__rebind_storage(em_tensor *t, const em_tensor *src, int64_t offset) {
  __atomic_add_fetch(&src->storage->refcount, 1, __ATOMIC_RELAXED);
  em__storage_release(t->storage);
  t->storage = src->storage;
  t->offset = offset;
  em__contig_strides(t->ndim, t->shape, t->strides);
}

em_tensor *em_retain(em_tensor *t) {
  if (t) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
  return t;
}

void em_release(em_tensor *t) {
  if (!t || __atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
  em__storage_release(t->storage);
  em_release(t->grad);
  em_node_release(t->grad_fn);
  for (struct em_hook *h = t->hooks, *nx; h; h = nx) {
    nx = h->next;
    free(h);
  }
  free(t->name);
  __atomic_sub_fetch(&live_tensors, 1, __ATOMIC_RELAXED);
  free(t);
}

int64_t em_numel(const em_tensor *t) { return t ? em__shape_numel(t->ndim, t->shape) : 0; }

bool em_is_contiguous(const em_tensor *t) {
  int64_t st = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->shape[d] != 1 && t->strides[d] != st) return false;
    st *= t->shape[d];
  }
  return true;
}

void *em_data(const em_tensor *t) {
  /* A pinned batch being uploaded: the caller may write it, so the copy must be done. */
  if (t->storage->upload_done) em__host_pinned_wait(t->storage->upload_done);
  return (char *)t->storage->data + (size_t)t->offset * em_dtype_size(t->dtype);
}

bool em_shares_storage(const em_tensor *a, const em_tensor *b) {
  return a && b && a->storage == b->storage;
}

static int64_t flat_to_offset(const em_tensor *t, int64_t flat) {
  int64_t off = 0;
  for (int d = t->ndim - 1; d >= 0; d--) {
    int64_t i = flat % t->shape[d];
    flat /= t->shape[d];
    off += i * t->strides[d];
  }
  return off;
}

double em_get(const em_tensor *t, int64_t flat_index) {
  int64_t o = flat_to_offset(t, flat_index);
  const char *base = em_data(t);
  uint64_t cell = 0; /* an element of a GPU tensor, copied to the host */
  if (t->device.kind != EM_CPU) {
    size_t es = em_dtype_size(t->dtype);
    if (em__kernels(t->device)->copy_to_host(t->device.index, &cell, base + o * (int64_t)es, es))
      return NAN;
    base = (const char *)&cell;
    o = 0;
  }
  switch (t->dtype) {
  case EM_F32: return ((const float *)base)[o];
  case EM_I64: return (double)((const int64_t *)base)[o];
  case EM_I32: return ((const int32_t *)base)[o];
  case EM_U8: return ((const uint8_t *)base)[o];
  case EM_BF16: return em_bf16_to_f32(((const uint16_t *)base)[o]);
  case EM_F16: return em_f16_to_f32(((const uint16_t *)base)[o]);
  default: return 0;
  }
}

void em_set(em_tensor *t, int64_t flat_index, double v) {
  int64_t o = flat_to_offset(t, flat_index);
  char *base = em_data(t), *dst = NULL;
  uint64_t cell = 0; /* a GPU tensor's element: written here, then copied to the device */
  if (t->device.kind != EM_CPU) {
    dst = base + o * (int64_t)em_dtype_size(t->dtype);
    base = (char *)&cell;
    o = 0;
  }
  switch (t->dtype) {
  case EM_F32: ((float *)base)[o] = (float)v; break;
  case EM_I64: ((int64_t *)base)[o] = (int64_t)v; break;
  case EM_I32: ((int32_t *)base)[o] = (int32_t)v; break;
  case EM_U8: ((uint8_t *)base)[o] = (uint8_t)v; break;
  case EM_BF16: ((uint16_t *)base)[o] = em_f32_to_bf16((float)v); break;
  case EM_F16: ((uint16_t *)base)[o] = em_f32_to_f16((float)v); break;
  default: break;
  }
  if (dst) em__kernels(t->device)->copy_from_host(t->device.index, dst, &cell,
                                                  em_dtype_size(t->dtype));
}

em_tensor *em__contig(em_tensor *t) {
  if (!t) return NULL;
  if (em_is_contiguous(t)) return t;
  const em_kernels *k = EM_KERNELS(t, copy_view, "contiguous");
  em_tensor *c = k ? em__empty_on(t->device, t->dtype, t->ndim, t->shape) : NULL;
  return c && k->copy_view(c, t) == EM_OK ? c : NULL;
}

bool em__same_shape(const em_tensor *a, const em_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return false;
  return true;
}

const char *em_shape_str(const em_tensor *t, char *buf, size_t n) {
  if (!t) {
    snprintf(buf, n, "(null)");
    return buf;
  }
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int d = 0; d < t->ndim && k < n; d++)
    k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)t->shape[d]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

int em__dim(const char *op, int dim, int ndim) {
  int d = dim < 0 ? dim + ndim : dim;
  if (d < 0 || d >= (ndim ? ndim : 1)) {
    em_set_error(EM_ERR_INVALID, "%s: dim %d out of range for a tensor with %d dimensions", op, dim,
                 ndim);
    return -1;
  }
  return d;
}

bool em__check_f32(const char *op, const em_tensor *t, const char *what) {
  if (t->dtype == EM_F32) return true;
  char b[EM_SHAPE_STR_LEN];
  em_set_error(EM_ERR_UNSUPPORTED, "%s: %s must be f32, got %s %s", op, what,
               em_dtype_name(t->dtype), em_shape_str(t, b, sizeof b));
  return false;
}

bool em__check_layer_inputs(const char *op, const em_tensor *x, const em_tensor *w,
                            const em_tensor *bias) {
  if (!em__check_f32(op, x, "x") || !em__check_f32(op, w, "weight")) return false;
  if (!em__check_device(op, x, w, "weight")) return false;
  return !bias || (em__check_f32(op, bias, "bias") && em__check_device(op, x, bias, "bias"));
}

const char *em__device_str(em_device d, char *buf, size_t n) {
  if (d.kind == EM_CPU)
    snprintf(buf, n, "cpu");
  else
    snprintf(buf, n, "cuda:%d", d.index);
  return buf;
}

bool em__check_device(const char *op, const em_tensor *a, const em_tensor *b, const char *what) {
  if (a->device.kind == b->device.kind && a->device.index == b->device.index) return true;
  char x[EM_DEVICE_STR_LEN], y[EM_DEVICE_STR_LEN];
  em_set_error(EM_ERR_INVALID, "%s: %s is on %s but the input is on %s", op, what,
               em__device_str(b->device, y, sizeof y), em__device_str(a->device, x, sizeof x));
  return false;
}

em_status em_set_requires_grad(em_tensor *t, bool on) {
  if (!t) return em_set_error(EM_ERR_INVALID, "set_requires_grad: tensor is NULL");
  if (t->grad_fn)
    return em_set_error(EM_ERR_INVALID,
                        "set_requires_grad: '%s' is not a leaf (it was computed by %s)",
                        em_tensor_name(t), t->grad_fn->op);
  if (on && t->dtype != EM_F32)
    return em_set_error(EM_ERR_INVALID,
                        "set_requires_grad: only f32 tensors can require "
                        "gradients, got %s",
                        em_dtype_name(t->dtype));
  t->requires_grad = on;
  return EM_OK;
}

void em_tensor_set_name(em_tensor *t, const char *name) {
  if (!t) return;
  free(t->name);
  t->name = name ? strdup(name) : NULL;
}

const char *em_tensor_name(const em_tensor *t) { return t && t->name ? t->name : ""; }

em_status em_set_grad(em_tensor *t, em_tensor *g) {
  if (!t) return em_set_error(EM_ERR_INVALID, "set_grad: tensor is NULL");
  if (g) {
    char a[EM_SHAPE_STR_LEN], b[EM_SHAPE_STR_LEN];
    if (!em__same_shape(t, g) || g->dtype != t->dtype || !em_is_contiguous(g))
      return em_set_error(EM_ERR_INVALID,
                          "set_grad: gradient %s %s%s does not fit tensor '%s' %s %s",
                          em_dtype_name(g->dtype), em_shape_str(g, a, sizeof a),
                          em_is_contiguous(g) ? "" : " (not contiguous)", em_tensor_name(t),
                          em_dtype_name(t->dtype), em_shape_str(t, b, sizeof b));
    if (g->device.kind != t->device.kind || g->device.index != t->device.index) {
      char dg[EM_DEVICE_STR_LEN], dt[EM_DEVICE_STR_LEN];
      em__device_str(g->device, dg, sizeof dg);
      em__device_str(t->device, dt, sizeof dt);
      return em_set_error(EM_ERR_INVALID, "set_grad: gradient on %s for tensor '%s' on %s", dg,
                          em_tensor_name(t), dt);
    }
  }
  em_retain(g);
  em_release(t->grad);
  t->grad = g;
  return EM_OK;
}

/* ---- random numbers: splitmix64 over a counter, so any element is reproducible ------------ */
em_rng em_rng_new(uint64_t seed) { return (em_rng){seed, 0}; }

uint64_t em_rng_next_u64(em_rng *r) {
  uint64_t z = r->seed + 0x9E3779B97F4A7C15ull * ++r->counter;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float em_rng_uniform(em_rng *r) { return (float)(em_rng_next_u64(r) >> 40) * (1.0f / 16777216.0f); }

float em_rng_normal(em_rng *r) {
  /* Box-Muller; u1 in (0, 1] so log is finite. */
  double u1 = ((double)(em_rng_next_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  double u2 = (double)(em_rng_next_u64(r) >> 11) * (1.0 / 9007199254740992.0);
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void em_rng_permutation(em_rng *r, int64_t *perm, int64_t n) {
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)(em_rng_next_u64(r) % (uint64_t)(i + 1)), t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

em_tensor *em_rand_uniform(int ndim, const int64_t *shape, float lo, float hi, em_rng *r) {
  em_tensor *t = em_empty(EM_F32, ndim, shape);
  if (!t) return NULL;
  float *p = em_data_f32(t);
  for (int64_t i = 0, n = em_numel(t); i < n; i++) p[i] = lo + (hi - lo) * em_rng_uniform(r);
  return t;
}

em_tensor *em_rand_normal(int ndim, const int64_t *shape, float mean, float std, em_rng *r) {
  em_tensor *t = em_empty(EM_F32, ndim, shape);
  if (!t) return NULL;
  float *p = em_data_f32(t);
  for (int64_t i = 0, n = em_numel(t); i < n; i++) p[i] = mean + std * em_rng_normal(r);
  return t;
}
