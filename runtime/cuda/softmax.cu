/* cuda/softmax.cu: the CUDA table's softmax and log_softmax with their backward, and the causal
 * mask (core/kernels.h: softmax, softmax_backward, causal_mask).
 *
 * The contiguous x is seen as (O, R, K) around dim, as on the CPU (cpu/softmax.c), and each of
 * its O * K rows (R elements K apart) is one softmax, computed in float as oneDNN's
 * softmax_accurate and softmax_log do:
 *
 *   m = max_r x_r,  s = sum_r exp(x_r - m),  y_r = exp(x_r - m) / s   or   x_r - m - log(s)
 *
 * and backward from the saved y:  dx = y (dy - sum(dy y))  or  dx = dy - exp(y) sum(dy).
 * A row is handled by a block (threads stride over r, then block reductions) or, when K > 1 and
 * there are many rows, by one thread walking r (cuda/blockreduce.cuh). The sums' order differs
 * from oneDNN's, by a few float roundings. */
#include "cuda/blockreduce.cuh"

/* ---- forward -------------------------------------------------------------------------------- */
__device__ __forceinline__ float softmax_out(bool log, float x, float m, float s, float log_s) {
  return log ? x - m - log_s : expf(x - m) / s;
}

__global__ void softmax_block_kernel(bool log, const float *x, int64_t O, int64_t R, int64_t K,
                                     float *y) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < O * K; row += gridDim.x) { /* uniform across the block */
    int64_t base = (row / K) * R * K + row % K;
    const float *xr = x + base;
    float m = -INFINITY;
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) m = fmaxf(m, xr[r * K]);
    m = em_block_reduce(m, em_max_op<float>(), -INFINITY, scratch);
    float s = 0;
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) s += expf(xr[r * K] - m);
    s = em_block_reduce(s, em_sum_op<float>(), 0.f, scratch);
    float log_s = logf(s);
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x)
      y[base + r * K] = softmax_out(log, xr[r * K], m, s, log_s);
  }
}

__global__ void softmax_thread_kernel(bool log, const float *x, int64_t O, int64_t R, int64_t K,
                                      float *y) {
  EM_CUDA_FOR(row, O * K) {
    int64_t base = (row / K) * R * K + row % K;
    const float *xr = x + base;
    float m = -INFINITY, s = 0;
    for (int64_t r = 0; r < R; r++) m = fmaxf(m, xr[r * K]);
    for (int64_t r = 0; r < R; r++) s += expf(xr[r * K] - m);
    float log_s = logf(s);
    for (int64_t r = 0; r < R; r++) y[base + r * K] = softmax_out(log, xr[r * K], m, s, log_s);
  }
}

/* t seen as (O, R, K) around dim d. */
static void ork(const em_tensor *t, int d, int64_t *O, int64_t *R, int64_t *K) {
  *O = 1;
  *R = 1;
  *K = 1;
  for (int k = 0; k < t->ndim; k++) {
    if (k < d)
      *O *= t->shape[k];
    else if (k == d)
      *R = t->shape[k];
    else
      *K *= t->shape[k];
  }
}

static const char *sm_name(bool log) { return log ? "log_softmax" : "softmax"; }

extern "C" em_status em__cuda_softmax(bool log, const em_tensor *x, int dim, em_tensor *y) {
  if (em_numel(y) == 0) return EM_OK;
  int index = y->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  int64_t O, R, K;
  ork(x, dim, &O, &R, &K);
  if (em_cuda_one_thread_per_row(O, K))
    softmax_thread_kernel<<<em_cuda_blocks(O * K), EM_CUDA_THREADS, 0, s>>>(log, em_data_f32(x), O,
                                                                            R, K, em_data_f32(y));
  else
    softmax_block_kernel<<<em_cuda_row_blocks(O * K), EM_CUDA_THREADS, 0, s>>>(
        log, em_data_f32(x), O, R, K, em_data_f32(y));
  return EM_CUDA_LAUNCHED(sm_name(log), index);
}

/* ---- backward ------------------------------------------------------------------------------- */
/* The row's reduced term: dy * y for softmax, dy for log_softmax. */
__device__ __forceinline__ float bwd_term(bool log, float y, float dy) { return log ? dy : dy * y; }

__device__ __forceinline__ float bwd_out(bool log, float y, float dy, float sum) {
  return log ? dy - expf(y) * sum : y * (dy - sum);
}

__global__ void softmax_backward_block_kernel(bool log, const float *y, const float *dy, int64_t O,
                                              int64_t R, int64_t K, float *dx) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < O * K; row += gridDim.x) { /* uniform across the block */
    int64_t base = (row / K) * R * K + row % K;
    float sum = 0;
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x)
      sum += bwd_term(log, y[base + r * K], dy[base + r * K]);
    sum = em_block_reduce(sum, em_sum_op<float>(), 0.f, scratch);
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {
      int64_t i = base + r * K;
      dx[i] = bwd_out(log, y[i], dy[i], sum);
    }
  }
}

__global__ void softmax_backward_thread_kernel(bool log, const float *y, const float *dy, int64_t O,
                                               int64_t R, int64_t K, float *dx) {
  EM_CUDA_FOR(row, O * K) {
    int64_t base = (row / K) * R * K + row % K;
    float sum = 0;
    for (int64_t r = 0; r < R; r++) sum += bwd_term(log, y[base + r * K], dy[base + r * K]);
    for (int64_t r = 0; r < R; r++) {
      int64_t i = base + r * K;
      dx[i] = bwd_out(log, y[i], dy[i], sum);
    }
  }
}

extern "C" em_status em__cuda_softmax_backward(bool log, const em_tensor *y, const em_tensor *dy,
                                               int dim, em_tensor *dx) {
  if (em_numel(dx) == 0) return EM_OK;
  int index = dx->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  int64_t O, R, K;
  ork(dx, dim, &O, &R, &K);
  if (em_cuda_one_thread_per_row(O, K))
    softmax_backward_thread_kernel<<<em_cuda_blocks(O * K), EM_CUDA_THREADS, 0, s>>>(
        log, em_data_f32(y), em_data_f32(dy), O, R, K, em_data_f32(dx));
  else
    softmax_backward_block_kernel<<<em_cuda_row_blocks(O * K), EM_CUDA_THREADS, 0, s>>>(
        log, em_data_f32(y), em_data_f32(dy), O, R, K, em_data_f32(dx));
  return EM_CUDA_LAUNCHED(log ? "log_softmax backward" : "softmax backward", index);
}

/* ---- causal mask ---------------------------------------------------------------------------- */
/* x (B, T, S) flat: element (b, i, j) is masked when j > i + S - T. y may be x: each thread reads
 * the one element it writes. */
__global__ void causal_mask_kernel(const float *x, int64_t T, int64_t S, float value, float *y,
                                   int64_t n) {
  EM_CUDA_FOR(e, n) {
    int64_t j = e % S, i = (e / S) % T;
    y[e] = j > i + S - T ? value : x[e];
  }
}

extern "C" em_status em__cuda_causal_mask(const em_tensor *x, float value, em_tensor *y) {
  int64_t n = em_numel(x);
  if (n == 0) return EM_OK;
  int index = y->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  int nd = x->ndim;
  causal_mask_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      em_data_f32(x), x->shape[nd - 2], x->shape[nd - 1], value, em_data_f32(y), n);
  return EM_CUDA_LAUNCHED("causal_mask", index);
}
