/* cuda/embed.cu: the CUDA table's embedding lookup and its backward, and dropout
 * (core/kernels.h: embedding, embedding_backward, dropout; the CPU's cpu/embed.c).
 *
 * embedding_backward adds the rows of gy into gw with atomicAdd: where an index repeats, the
 * order of its additions is the GPU's, not the CPU's index order, so those sums may differ from
 * the CPU's in the last bits (rows hit once are exact).
 *
 * dropout draws the same numbers as the CPU: em_rng is counter based (core/tensor.c:
 * em_rng_next_u64 is splitmix64 of seed + golden * ++counter), so element i of the mask, the CPU's
 * (i + 1)-th draw, is the hash of counter + 1 + i, computed by its own thread. The slot then
 * advances rng->counter by the n draws, as n calls of em_rng_uniform do; a seed gives the same
 * mask, bit for bit, on both devices. */
#include "cuda/nn.cuh"

/* ---- embedding ---------------------------------------------------------------------------------
 */
/* out (n, D) = rows ix of w (V, D). */
__global__ void embedding_kernel(const float *w, const int64_t *ix, int64_t n, int64_t D,
                                 float *out) {
  EM_CUDA_FOR(k, n * D) {
    int64_t p = k / D, j = k - p * D;
    out[k] = w[ix[p] * D + j];
  }
}

extern "C" em_status em__cuda_embedding(const em_tensor *weight, const em_tensor *ix,
                                        em_tensor *out) {
  int index = weight->device.index;
  int64_t n = em_numel(ix), D = weight->shape[1];
  if (n * D == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  embedding_kernel<<<em_cuda_blocks(n * D), EM_CUDA_THREADS, 0, s>>>(
      (const float *)em_data(weight), (const int64_t *)em_data(ix), n, D, (float *)em_data(out));
  return EM_CUDA_LAUNCHED("embedding", index);
}

/* gw[ix[p], :] += gy[p, :] for every p (gw zeroed before). */
__global__ void embedding_backward_kernel(const int64_t *ix, const float *gy, int64_t n, int64_t D,
                                          float *gw) {
  EM_CUDA_FOR(k, n * D) {
    int64_t p = k / D, j = k - p * D;
    atomicAdd(gw + ix[p] * D + j, gy[k]);
  }
}

extern "C" em_status em__cuda_embedding_backward(const em_tensor *ix, const em_tensor *gy,
                                                 em_tensor *gw) {
  static const char *op = "embedding backward";
  int index = gw->device.index;
  int64_t n = em_numel(ix), D = gw->shape[1];
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  size_t nbytes = (size_t)em_numel(gw) * sizeof(float);
  em_status st =
      nbytes ? em__cuda_status(cudaMemsetAsync(em_data(gw), 0, nbytes, s), op, index) : EM_OK;
  if (st != EM_OK || n * D == 0) return st;
  embedding_backward_kernel<<<em_cuda_blocks(n * D), EM_CUDA_THREADS, 0, s>>>(
      (const int64_t *)em_data(ix), (const float *)em_data(gy), n, D, (float *)em_data(gw));
  return EM_CUDA_LAUNCHED(op, index);
}

/* ---- dropout -----------------------------------------------------------------------------------
 */
/* em_rng_uniform's value for the draw at `counter` (the counter after its increment). */
__device__ __forceinline__ float rng_uniform_at(uint64_t seed, uint64_t counter) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * counter;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)(z >> 40) * (1.0f / 16777216.0f);
}

/* mask[i] = scale where draw i >= p, else 0; y = x * mask where mask != 0, else 0 (a NaN in x
 * stays out of dropped elements). p == 1: every element dropped, no draws (draw is false). */
__global__ void dropout_kernel(const float *x, int64_t n, float p, float scale, bool draw,
                               uint64_t seed, uint64_t counter0, float *mask, float *y) {
  EM_CUDA_FOR(i, n) {
    float m = draw && rng_uniform_at(seed, counter0 + 1 + (uint64_t)i) >= p ? scale : 0.0f;
    mask[i] = m;
    y[i] = m != 0.0f ? x[i] * m : 0.0f;
  }
}

extern "C" em_status em__cuda_dropout(const em_tensor *x, float p, em_rng *rng, em_tensor *mask,
                                      em_tensor *y) {
  int index = x->device.index;
  int64_t n = em_numel(x);
  if (n == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  bool draw = p != 1.0f; /* as the CPU: no draws when everything is dropped; rng may be NULL */
  float scale = draw ? 1.0f / (1.0f - p) : 0.0f;
  dropout_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      (const float *)em_data(x), n, p, scale, draw, draw ? rng->seed : 0, draw ? rng->counter : 0,
      (float *)em_data(mask), (float *)em_data(y));
  em_status st = EM_CUDA_LAUNCHED("dropout", index);
  if (st == EM_OK && draw) rng->counter += (uint64_t)n; /* the n draws the CPU makes */
  return st;
}
