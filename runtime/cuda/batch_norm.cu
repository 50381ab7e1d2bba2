/* cuda/batch_norm.cu: the CUDA table's batch normalisation (core/kernels.h: batch_norm,
 * batch_norm_backward, batch_norm_update_stats) as plain CUDA kernels.
 *
 *   x (N, C, S) contiguous; a channel's M = N * S values lie in N runs of S:
 *       x[(n C + c) S + s]
 *   one block per channel: the block sums its channel in float64 (each thread its share, then a
 *   warp-shuffle and shared-memory reduction), then writes its channel of y or dx.
 *
 * Not cuDNN: its training forward returns the saved mean and the inverse standard deviation,
 * while the contract wants the biased batch variance itself (recovering it from 1 / sqrt(var +
 * eps) loses digits when var is small next to eps), and (N, C) inputs would need its
 * per-activation mode, which normalises per (c) over N too but with its own epsilon rules. The
 * arithmetic here is the CPU's (cpu/norm.c): two passes (the mean, then squared deviations from
 * the float mean), float64 sums, and the same float expressions for the scale, shift and
 * gradient, with products written __fmul_rn so that nvcc does not fuse them into FMAs. Only the
 * order of the float64 sums differs, so results agree with the CPU to a few float ulps. */
#include "cuda/blockreduce.cuh"

#define BN_THREADS 256 /* a multiple of 32, at most 1024: block_sum's shared array */

/* The block's sum of v (every thread calls it; sh: 32 doubles of shared memory). */
static __device__ __forceinline__ double block_sum(double v, double *sh) {
  return em_block_reduce(v, em_sum_op<double>(), 0.0, sh);
}

/* Element k (0 <= k < M = N S) of channel c. */
__device__ __forceinline__ int64_t bn_at(int64_t k, int64_t c, int64_t C, int64_t S) {
  return (k / S * C + c) * S + k % S;
}

/* Block c: in training, mean[c] and var[c] (biased) of channel c; then y of the channel with
 * mean and var (the batch's, or the given ones in eval). w, b may be NULL (1, 0). */
static __global__ void bn_forward_kernel(const float *x, float *y, float *mean, float *var,
                                         const float *w, const float *b, int64_t N, int64_t C,
                                         int64_t S, float eps, bool training) {
  __shared__ double sh[32];
  int64_t c = blockIdx.x, M = N * S;
  if (training) {
    double acc = 0;
    for (int64_t k = threadIdx.x; k < M; k += blockDim.x) acc += x[bn_at(k, c, C, S)];
    float m = (float)(block_sum(acc, sh) / (double)M);
    double acc2 = 0;
    for (int64_t k = threadIdx.x; k < M; k += blockDim.x) {
      float d = x[bn_at(k, c, C, S)] - m;
      acc2 += __fmul_rn(d, d);
    }
    float v = (float)(block_sum(acc2, sh) / (double)M);
    if (threadIdx.x == 0) {
      mean[c] = m;
      var[c] = v;
    }
    /* every thread has m and v; eval reads them from memory below */
    float a = (w ? w[c] : 1.0f) / sqrtf(v + eps), shift = (b ? b[c] : 0.0f) - __fmul_rn(m, a);
    for (int64_t k = threadIdx.x; k < M; k += blockDim.x) {
      int64_t at = bn_at(k, c, C, S);
      y[at] = __fmul_rn(x[at], a) + shift;
    }
    return;
  }
  float a = (w ? w[c] : 1.0f) / sqrtf(var[c] + eps),
        shift = (b ? b[c] : 0.0f) - __fmul_rn(mean[c], a);
  for (int64_t k = threadIdx.x; k < M; k += blockDim.x) {
    int64_t at = bn_at(k, c, C, S);
    y[at] = __fmul_rn(x[at], a) + shift;
  }
}

/* Block c, with xh = (x - mean) inv, inv = 1 / sqrt(var + eps), M = N S:
 *   db = sum dy, dw = sum dy xh = inv sum dy (x - mean),
 *   training: dx = w inv (dy - db / M - (x - mean) inv^2 sum dy (x - mean) / M); eval: w inv dy.
 * dx, dw, db may each be NULL. */
static __global__ void bn_backward_kernel(const float *x, const float *dy, float *dx,
                                          const float *mean, const float *var, const float *w,
                                          float *dw, float *db, int64_t N, int64_t C, int64_t S,
                                          float eps, bool training) {
  __shared__ double sh[32];
  int64_t c = blockIdx.x, M = N * S;
  float m = mean[c], inv = 1.0f / sqrtf(var[c] + eps);
  double sg = 0, sgx = 0;
  if (db || dw || training) { /* eval's dx needs no sums */
    double a = 0, bsum = 0;
    for (int64_t k = threadIdx.x; k < M; k += blockDim.x) {
      int64_t at = bn_at(k, c, C, S);
      float g = dy[at];
      a += g;
      bsum += __fmul_rn(g, x[at] - m);
    }
    sg = block_sum(a, sh);
    sgx = block_sum(bsum, sh);
  }
  if (threadIdx.x == 0) {
    if (db) db[c] = (float)sg;
    if (dw) dw[c] = (float)(sgx * inv);
  }
  if (!dx) return;
  float k = __fmul_rn(w ? w[c] : 1.0f, inv), Mf = (float)M;
  float mg = training ? (float)sg / Mf : 0.0f;
  float mgx = training ? __fmul_rn(__fmul_rn((float)sgx, inv), inv) / Mf : 0.0f;
  for (int64_t e = threadIdx.x; e < M; e += blockDim.x) {
    int64_t at = bn_at(e, c, C, S);
    dx[at] = __fmul_rn(k, dy[at] - mg - __fmul_rn(x[at] - m, mgx));
  }
}

static const float *data_or_null(const em_tensor *t) { return t ? em_data_f32(t) : NULL; }

static void bn_dims(const em_tensor *x, int64_t *N, int64_t *C, int64_t *S) {
  *N = x->shape[0];
  *C = x->shape[1];
  *S = em__shape_numel(x->ndim - 2, x->shape + 2);
}

/* Grid of C blocks: C fits a grid's x dimension (2^31 - 1) for any tensor that fits memory. */
extern "C" em_status em__cuda_batch_norm(const em_tensor *x, const em_tensor *weight,
                                         const em_tensor *bias, bool training, float eps,
                                         em_tensor *y, em_tensor *mean, em_tensor *var) {
  int64_t N, C, S;
  bn_dims(x, &N, &C, &S);
  int index = y->device.index;
  if (N * C * S == 0) return EM_OK; /* training needs N S > 1 (the front end checks) */
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  bn_forward_kernel<<<(unsigned)C, BN_THREADS, 0, s>>>(
      em_data_f32(x), em_data_f32(y), em_data_f32(mean), em_data_f32(var), data_or_null(weight),
      data_or_null(bias), N, C, S, eps, training);
  return EM_CUDA_LAUNCHED("batch_norm", index);
}

extern "C" em_status em__cuda_batch_norm_backward(const em_tensor *x, const em_tensor *dy,
                                                  const em_tensor *mean, const em_tensor *var,
                                                  const em_tensor *weight, const em_tensor *bias,
                                                  bool training, float eps, em_tensor *dx,
                                                  em_tensor *dw, em_tensor *db) {
  static const char *op = "batch_norm backward";
  int64_t N, C, S;
  bn_dims(x, &N, &C, &S);
  int index = x->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  if (N * C * S == 0) { /* nothing to sum: zero gradients */
    em_tensor *outs[3] = {dx, dw, db};
    for (int k = 0; k < 3; k++) {
      size_t bytes = outs[k] ? (size_t)em_numel(outs[k]) * sizeof(float) : 0;
      em_status st =
          bytes ? em__cuda_status(cudaMemsetAsync(em_data(outs[k]), 0, bytes, s), op, index)
                : EM_OK;
      if (st != EM_OK) return st;
    }
    return EM_OK;
  }
  bn_backward_kernel<<<(unsigned)C, BN_THREADS, 0, s>>>(
      em_data_f32(x), em_data_f32(dy), dx ? em_data_f32(dx) : NULL, em_data_f32(mean),
      em_data_f32(var), data_or_null(weight), dw ? em_data_f32(dw) : NULL,
      db ? em_data_f32(db) : NULL, N, C, S, eps, training);
  return EM_CUDA_LAUNCHED(op, index);
}

/* running[c] = (1 - m) running[c] + m stat[c], in float64 (strides: the running tensors may be
 * views). NULL running tensors are skipped. */
static __global__ void bn_update_kernel(float *rm, int64_t rm_stride, float *rv, int64_t rv_stride,
                                        const float *mean, const float *var, double m,
                                        double unbias, int64_t C) {
  EM_CUDA_FOR(c, C) {
    if (rm) rm[c * rm_stride] = (float)((1 - m) * (double)rm[c * rm_stride] + m * mean[c]);
    if (rv) rv[c * rv_stride] = (float)((1 - m) * (double)rv[c * rv_stride] + m * var[c] * unbias);
  }
}

extern "C" em_status em__cuda_batch_norm_update_stats(em_tensor *running_mean,
                                                      em_tensor *running_var, const em_tensor *mean,
                                                      const em_tensor *var, float momentum,
                                                      int64_t M) {
  int64_t C = em_numel(mean);
  int index = mean->device.index;
  if (C == 0 || (!running_mean && !running_var)) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  double unbias = (double)M / (double)(M - 1);
  bn_update_kernel<<<em_cuda_blocks(C), EM_CUDA_THREADS, 0, s>>>(
      running_mean ? em_data_f32(running_mean) : NULL, running_mean ? running_mean->strides[0] : 0,
      running_var ? em_data_f32(running_var) : NULL, running_var ? running_var->strides[0] : 0,
      em_data_f32(mean), em_data_f32(var), (double)momentum, unbias, C);
  return EM_CUDA_LAUNCHED("batch_norm update_stats", index);
}
