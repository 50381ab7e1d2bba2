/* cpu/shape.c: the CPU's copying shape kernels: copies between views with any strides (concat and
 * stack parts, the gradient of a view), index checks and index_select with its backward. Copies
 * move bytes, so they work on every dtype. */
#include "cpu/cpu.h"

#include <string.h>

em_status em__cpu_copy_view(em_tensor *dst, const em_tensor *src) {
  int64_t n = em_numel(src);
  if (n == 0) return EM_OK;
  size_t es = em_dtype_size(src->dtype);
  char *pd = em_data(dst);
  const char *ps = em_data(src);
  if (em_is_contiguous(dst) && em_is_contiguous(src)) {
    memcpy(pd, ps, (size_t)n * es);
    return EM_OK;
  }
  int nd = src->ndim;
  /* Innermost dim as a tight loop, the outer dims with an index counter. */
  int64_t inner = src->shape[nd - 1], sd = dst->strides[nd - 1], ss = src->strides[nd - 1];
  int64_t idx[EM_MAX_DIMS] = {0}, od = 0, os = 0;
  for (int64_t k = 0; k < n; k += inner) {
    if (es == 4) {
      uint32_t *d = (uint32_t *)pd + od;
      const uint32_t *s = (const uint32_t *)ps + os;
      for (int64_t i = 0; i < inner; i++) d[i * sd] = s[i * ss];
    } else {
      for (int64_t i = 0; i < inner; i++)
        memcpy(pd + (size_t)(od + i * sd) * es, ps + (size_t)(os + i * ss) * es, es);
    }
    for (int d = nd - 2; d >= 0; d--) {
      od += dst->strides[d];
      os += src->strides[d];
      if (++idx[d] < src->shape[d]) break;
      od -= dst->strides[d] * src->shape[d];
      os -= src->strides[d] * src->shape[d];
      idx[d] = 0;
    }
  }
  return EM_OK;
}

em_status em__cpu_check_index(const em_tensor *idx, int64_t size, const int64_t *skip,
                              em_tensor *ix, int64_t *count, int64_t *bad, int64_t *bad_value) {
  const void *p = em_data(idx);
  bool wide = idx->dtype == EM_I64;
  int64_t *out = ix ? (int64_t *)em_data(ix) : NULL, n = 0;
  *bad = -1;
  *bad_value = 0;
  for (int64_t i = 0, len = em_numel(idx); i < len; i++) {
    int64_t v = wide ? ((const int64_t *)p)[i] : ((const int32_t *)p)[i];
    if (out) out[i] = v;
    if (skip && v == *skip) continue;
    if (v < 0 || v >= size) {
      *bad = i;
      *bad_value = v;
      break;
    }
    n++;
  }
  *count = n;
  return EM_OK;
}

/* ---- index_select --------------------------------------------------------------------------- */
/* t viewed as (outer, size, inner) around dim. */
static void split_dims(const em_tensor *t, int d, int64_t *outer, int64_t *inner) {
  *outer = 1;
  *inner = 1;
  for (int j = 0; j < d; j++) *outer *= t->shape[j];
  for (int j = d + 1; j < t->ndim; j++) *inner *= t->shape[j];
}

em_status em__cpu_index_select(const em_tensor *x, int dim, const em_tensor *ix, em_tensor *out) {
  int64_t outer, inner, m = em_numel(ix), size = x->shape[dim];
  split_dims(x, dim, &outer, &inner);
  size_t row = (size_t)inner * em_dtype_size(x->dtype);
  const char *src = em_data(x);
  char *dst = em_data(out);
  const int64_t *pi = (const int64_t *)em_data(ix);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < m; j++)
      memcpy(dst + (size_t)(o * m + j) * row, src + (size_t)(o * size + pi[j]) * row, row);
  return EM_OK;
}

em_status em__cpu_index_select_backward(const em_tensor *ix, int dim, const em_tensor *gy,
                                        em_tensor *gx) {
  int64_t outer, inner, m = em_numel(ix), size = gx->shape[dim];
  split_dims(gx, dim, &outer, &inner);
  const int64_t *pi = (const int64_t *)em_data(ix);
  const float *go = em_data_f32(gy);
  float *pg = em_data_f32(gx);
  memset(pg, 0, (size_t)em_numel(gx) * sizeof *pg);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < m; j++) {
      float *dst = pg + (o * size + pi[j]) * inner;
      const float *src = go + (o * m + j) * inner;
      for (int64_t i = 0; i < inner; i++) dst[i] += src[i];
    }
  return EM_OK;
}
