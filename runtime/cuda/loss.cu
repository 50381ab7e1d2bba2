/* cuda/loss.cu: the CUDA table's loss kernels (core/kernels.h: cross_entropy, nll, mse and their
 * backwards) and linear's bias gradient (linear_bias_grad), the CPU's cpu/loss.c and
 * cpu/matmul.c on the GPU.
 *
 * cross_entropy gives each row of x (N, C) to one block:
 *
 *   m_i   = max_j x_ij                          block max
 *   lse_i = m_i + log(sum_j exp(x_ij - m_i))    block sum in float64, as the CPU
 *   l_i   = lse_i - x_i,y_i                     (0 and lse 0 where y_i == ignore)
 *
 * A reduced loss (SUM, MEAN) is a second pass: one block adds the N per-row losses (or, for mse,
 * one float64 partial sum per block of the first pass) in float64. The order of those additions
 * differs from the CPU's row order; in float64 that changes the rounded float result by an ulp at
 * most. The backwards are elementwise.
 *
 * linear_bias_grad keeps the contract's order exactly: one thread per column adds the rows one
 * after another, as the CPU does, so the result is bit for bit the CPU's. */
#include "cuda/nn.cuh"

#include <math.h>

/* dL/dl_i for row i: gy[i] (no reduction), or gy[0] * scale, in float64 then rounded (the CPU's
 * row_grad). */
__device__ __forceinline__ float row_grad(const float *gy, em_reduction red, double scale,
                                          int64_t i) {
  return red == EM_REDUCE_NONE ? gy[i] : (float)((double)gy[0] * scale);
}

/* ---- the second pass of a reduced loss ------------------------------------------------------- */
/* One block: out[0] = (float)(sum of part[0..n) in float64), divided by count for the mean
 * (0 / 0 = NaN for a mean over no rows, as on the CPU). */
template <typename T>
__global__ void finish_sum_kernel(const T *part, int64_t n, bool mean, int64_t count, float *out) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += (double)part[i];
  s = em_nn_block_sum<double>(s);
  if (threadIdx.x == 0) out[0] = (float)(mean ? s / (double)count : s);
}

template <typename T>
static em_status finish_sum(const char *op, int index, cudaStream_t s, const T *part, int64_t n,
                            em_reduction red, int64_t count, em_tensor *loss) {
  finish_sum_kernel<T>
      <<<1, EM_CUDA_THREADS, 0, s>>>(part, n, red == EM_REDUCE_MEAN, count, (float *)em_data(loss));
  return EM_CUDA_LAUNCHED(op, index);
}

/* ---- cross entropy -----------------------------------------------------------------------------
 */
/* One block per row: lse (N) and the per-row losses l (N). */
__global__ void ce_forward_kernel(const float *x, const void *labels, bool wide, int64_t N,
                                  int64_t C, int64_t ignore, float *lse, float *l) {
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    int64_t y = em_nn_label(labels, wide, i);
    if (y == ignore) { /* the whole block takes this branch: the label is the row's */
      if (threadIdx.x == 0) lse[i] = l[i] = 0.0f;
      continue;
    }
    const float *xi = x + i * C;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) m = fmaxf(m, xi[j]);
    m = em_nn_block_max(m);
    double total = 0;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) total += (double)expf(xi[j] - m);
    total = em_nn_block_sum<double>(total);
    if (threadIdx.x == 0) {
      float s = (float)((double)m + log(total));
      lse[i] = s;
      l[i] = s - xi[y];
    }
  }
}

extern "C" em_status em__cuda_cross_entropy(const em_tensor *x, const em_tensor *labels,
                                            int64_t ignore, em_reduction red, int64_t count,
                                            em_tensor *lse, em_tensor *loss) {
  static const char *op = "cross_entropy";
  int index = x->device.index;
  int64_t N = x->shape[0], C = x->shape[1];
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  bool reduced = red != EM_REDUCE_NONE;
  if (!reduced && N == 0) return EM_OK;
  /* Reduced: the per-row losses go to a temporary, then one block adds them. */
  em_tensor *rows = reduced ? em_nn_temp_f32(index, N, op) : loss;
  if (!rows) return em_last_status();
  em_status st = EM_OK;
  if (N > 0) {
    ce_forward_kernel<<<em_nn_row_blocks(N), EM_CUDA_THREADS, 0, s>>>(
        (const float *)em_data(x), em_data(labels), labels->dtype == EM_I64, N, C, ignore,
        (float *)em_data(lse), (float *)em_data(rows));
    st = EM_CUDA_LAUNCHED(op, index);
  }
  if (st == EM_OK && reduced)
    st = finish_sum<float>(op, index, s, (const float *)em_data(rows), N, red, count, loss);
  if (reduced) em_release(rows);
  return st;
}

/* gx (N, C) = g_i * (exp(x_ij - lse_i) - [j == y_i]), 0 on ignored rows. __fmul_rn keeps the
 * product rounded before the subtraction (no fused multiply-add), as the CPU computes it. */
__global__ void ce_backward_kernel(const float *x, const void *labels, bool wide, const float *lse,
                                   int64_t N, int64_t C, int64_t ignore, const float *gy,
                                   em_reduction red, double scale, float *gx) {
  EM_CUDA_FOR(k, N * C) {
    int64_t i = k / C, j = k - i * C, y = em_nn_label(labels, wide, i);
    float g = 0.0f;
    if (y != ignore) {
      float s = row_grad(gy, red, scale, i);
      g = __fmul_rn(s, expf(x[k] - lse[i]));
      if (j == y) g -= s;
    }
    gx[k] = g;
  }
}

extern "C" em_status em__cuda_cross_entropy_backward(const em_tensor *x, const em_tensor *labels,
                                                     const em_tensor *lse, int64_t ignore,
                                                     const em_tensor *gy, em_reduction red,
                                                     double scale, em_tensor *gx) {
  int index = x->device.index;
  int64_t N = x->shape[0], C = x->shape[1];
  if (N * C == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  ce_backward_kernel<<<em_cuda_blocks(N * C), EM_CUDA_THREADS, 0, s>>>(
      (const float *)em_data(x), em_data(labels), labels->dtype == EM_I64,
      (const float *)em_data(lse), N, C, ignore, (const float *)em_data(gy), red, scale,
      (float *)em_data(gx));
  return EM_CUDA_LAUNCHED("cross_entropy backward", index);
}

/* ---- nll
 * ----------------------------------------------------------------------------------------- */
/* l_i = -logp[i, y_i] (0 if ignored), logp read with its strides s0, s1. */
__device__ __forceinline__ float nll_row(const float *logp, int64_t s0, int64_t s1,
                                         const void *labels, bool wide, int64_t ignore, int64_t i) {
  int64_t y = em_nn_label(labels, wide, i);
  return y == ignore ? 0.0f : -logp[i * s0 + y * s1];
}

__global__ void nll_rows_kernel(const float *logp, int64_t s0, int64_t s1, const void *labels,
                                bool wide, int64_t N, int64_t ignore, float *loss) {
  EM_CUDA_FOR(i, N) loss[i] = nll_row(logp, s0, s1, labels, wide, ignore, i);
}

/* One block: the float64 sum of the l_i, divided by count for the mean. */
__global__ void nll_sum_kernel(const float *logp, int64_t s0, int64_t s1, const void *labels,
                               bool wide, int64_t N, int64_t ignore, bool mean, int64_t count,
                               float *loss) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x)
    s += (double)nll_row(logp, s0, s1, labels, wide, ignore, i);
  s = em_nn_block_sum<double>(s);
  if (threadIdx.x == 0) loss[0] = (float)(mean ? s / (double)count : s);
}

extern "C" em_status em__cuda_nll(const em_tensor *logp, const em_tensor *labels, int64_t ignore,
                                  em_reduction red, int64_t count, em_tensor *loss) {
  int index = logp->device.index;
  int64_t N = logp->shape[0], s0 = logp->strides[0], s1 = logp->strides[1];
  if (red == EM_REDUCE_NONE && N == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  const float *px = (const float *)em_data(logp);
  bool wide = labels->dtype == EM_I64;
  if (red == EM_REDUCE_NONE)
    nll_rows_kernel<<<em_cuda_blocks(N), EM_CUDA_THREADS, 0, s>>>(
        px, s0, s1, em_data(labels), wide, N, ignore, (float *)em_data(loss));
  else
    nll_sum_kernel<<<1, EM_CUDA_THREADS, 0, s>>>(px, s0, s1, em_data(labels), wide, N, ignore,
                                                 red == EM_REDUCE_MEAN, count,
                                                 (float *)em_data(loss));
  return EM_CUDA_LAUNCHED("nll_loss", index);
}

/* gx (N, C) = -dL/dl_i at (i, y_i), 0 elsewhere (and on ignored rows). */
__global__ void nll_backward_kernel(const void *labels, bool wide, int64_t N, int64_t C,
                                    int64_t ignore, const float *gy, em_reduction red, double scale,
                                    float *gx) {
  EM_CUDA_FOR(k, N * C) {
    int64_t i = k / C, j = k - i * C, y = em_nn_label(labels, wide, i);
    gx[k] = y != ignore && j == y ? -row_grad(gy, red, scale, i) : 0.0f;
  }
}

extern "C" em_status em__cuda_nll_backward(const em_tensor *labels, int64_t ignore,
                                           const em_tensor *gy, em_reduction red, double scale,
                                           em_tensor *gx) {
  int index = gx->device.index;
  int64_t N = gx->shape[0], C = gx->shape[1];
  if (N * C == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  nll_backward_kernel<<<em_cuda_blocks(N * C), EM_CUDA_THREADS, 0, s>>>(
      em_data(labels), labels->dtype == EM_I64, N, C, ignore, (const float *)em_data(gy), red,
      scale, (float *)em_data(gx));
  return EM_CUDA_LAUNCHED("nll_loss backward", index);
}

/* ---- mse
 * ----------------------------------------------------------------------------------------- */
__global__ void mse_elems_kernel(const float *a, const float *b, int64_t n, float *loss) {
  EM_CUDA_FOR(i, n) {
    float d = a[i] - b[i];
    loss[i] = d * d;
  }
}

/* First pass of a reduced mse: part[block] = the block's float64 sum of (a - b)^2. */
__global__ void mse_partial_kernel(const float *a, const float *b, int64_t n, double *part) {
  double s = 0;
  EM_CUDA_FOR(i, n) {
    double d = (double)a[i] - (double)b[i];
    s += d * d;
  }
  s = em_nn_block_sum<double>(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

extern "C" em_status em__cuda_mse(const em_tensor *a, const em_tensor *b, em_reduction red,
                                  em_tensor *loss) {
  static const char *op = "mse_loss";
  int index = a->device.index;
  int64_t n = em_numel(a);
  if (red == EM_REDUCE_NONE && n == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  const float *pa = (const float *)em_data(a), *pb = (const float *)em_data(b);
  if (red == EM_REDUCE_NONE) {
    mse_elems_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(pa, pb, n,
                                                                   (float *)em_data(loss));
    return EM_CUDA_LAUNCHED(op, index);
  }
  /* At most 1024 partial sums: the second pass is one block. */
  unsigned blocks = em_cuda_blocks(n) < 1024 ? em_cuda_blocks(n) : 1024;
  em_tensor *part = em_nn_temp_f64(index, n > 0 ? blocks : 0, op);
  if (!part) return em_last_status();
  em_status st = EM_OK;
  if (n > 0) {
    mse_partial_kernel<<<blocks, EM_CUDA_THREADS, 0, s>>>(pa, pb, n, (double *)em_data(part));
    st = EM_CUDA_LAUNCHED(op, index);
  }
  if (st == EM_OK)
    st = finish_sum<double>(op, index, s, (const double *)em_data(part), n > 0 ? blocks : 0, red, n,
                            loss);
  em_release(part);
  return st;
}

/* ga = (2 scale g_i) (a - b), g_i = gy[i] (no reduction) or gy[0]; k2 = (float)(2 scale). */
__global__ void mse_backward_kernel(const float *a, const float *b, const float *gy, bool per_elem,
                                    float k2, int64_t n, float *ga) {
  EM_CUDA_FOR(i, n) ga[i] = k2 * gy[per_elem ? i : 0] * (a[i] - b[i]);
}

extern "C" em_status em__cuda_mse_backward(const em_tensor *a, const em_tensor *b,
                                           const em_tensor *gy, em_reduction red, double scale,
                                           em_tensor *ga) {
  int index = a->device.index;
  int64_t n = em_numel(a);
  if (n == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  mse_backward_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      (const float *)em_data(a), (const float *)em_data(b), (const float *)em_data(gy),
      red == EM_REDUCE_NONE, (float)(2.0 * scale), n, (float *)em_data(ga));
  return EM_CUDA_LAUNCHED("mse_loss backward", index);
}

/* ---- linear's bias gradient -------------------------------------------------------------------
 */
/* db[j] (+)= dy[0, j] + dy[1, j] + ... in row order, one thread per column: the CPU's order, so
 * the sums are bit for bit the CPU's. The loads of a warp are consecutive columns of one row. */
__global__ void bias_grad_kernel(const float *dy, int64_t R, int64_t N, bool accumulate,
                                 float *db) {
  EM_CUDA_FOR(j, N) {
    float acc = accumulate ? db[j] : 0.0f;
#pragma unroll 8
    for (int64_t r = 0; r < R; r++) acc += dy[r * N + j];
    db[j] = acc;
  }
}

extern "C" em_status em__cuda_linear_bias_grad(const em_tensor *dy, em_tensor *db,
                                               bool accumulate) {
  int index = db->device.index;
  int64_t N = em_numel(db), R = N ? em_numel(dy) / N : 0;
  if (N == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  bias_grad_kernel<<<em_cuda_blocks(N), EM_CUDA_THREADS, 0, s>>>((const float *)em_data(dy), R, N,
                                                                 accumulate, (float *)em_data(db));
  return EM_CUDA_LAUNCHED("linear backward (bias)", index);
}
