/* cpu/embed.c: the CPU's embedding lookup (row copies) and its backward (row sums), and dropout
 * (mask drawn from the caller's em_rng, then one multiply per element). */
#include "cpu/cpu.h"

#include <string.h>

/* ---- embedding ------------------------------------------------------------------------------ */
em_status em__cpu_embedding(const em_tensor *weight, const em_tensor *ix, em_tensor *out) {
  int64_t dim = weight->shape[1];
  const int64_t *pi = (const int64_t *)em_data(ix);
  const float *pw = em_data_f32(weight);
  float *po = em_data_f32(out);
  for (int64_t p = 0, n_idx = em_numel(ix); p < n_idx; p++)
    memcpy(po + p * dim, pw + pi[p] * dim, (size_t)dim * sizeof *po);
  return EM_OK;
}

em_status em__cpu_embedding_backward(const em_tensor *ix, const em_tensor *gy, em_tensor *gw) {
  int64_t dim = gw->shape[1];
  const int64_t *pi = (const int64_t *)em_data(ix);
  const float *go = em_data_f32(gy);
  float *pg = em_data_f32(gw);
  memset(pg, 0, (size_t)em_numel(gw) * sizeof *pg);
  for (int64_t p = 0, n_idx = em_numel(ix); p < n_idx; p++) {
    float *dst = pg + pi[p] * dim;
    const float *src = go + p * dim;
    for (int64_t j = 0; j < dim; j++) dst[j] += src[j];
  }
  return EM_OK;
}

/* ---- dropout -------------------------------------------------------------------------------- */
em_status em__cpu_dropout(const em_tensor *x, float p, em_rng *rng, em_tensor *mask, em_tensor *y) {
  int64_t n = em_numel(x);
  float *pm = em_data_f32(mask), *po = em_data_f32(y);
  const float *px = em_data_f32(x);
  if (p == 1.0f) { /* everything dropped: no draws needed, the rng is left as it is */
    memset(pm, 0, (size_t)n * sizeof *pm);
  } else {
    float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++) pm[i] = em_rng_uniform(rng) >= p ? scale : 0.0f;
  }
  for (int64_t i = 0; i < n; i++) po[i] = pm[i] != 0.0f ? px[i] * pm[i] : 0.0f;
  return EM_OK;
}
