/* cuda/pool.cu: the CUDA table's pooling kernels (core/kernels.h: pool2d, pool2d_backward,
 * adaptive_avg_pool2d and its backward), written as plain CUDA kernels rather than on cuDNN:
 *
 * - one thread per output element walks its window (max: the first maximum in row-major window
 *   order, as the CPU's oneDNN keeps it; padding never takes part; a NaN wins and stays);
 * - max pooling in training keeps, as its workspace, the index (h * W + w, i64) of each maximum
 *   in its plane: smaller than the copies of x and y that cuDNN's backward would read, and it
 *   names the very element the forward chose;
 * - the backward passes gather rather than scatter: one thread per input element adds the
 *   gradients of the windows that cover it, in window order, so no atomics are needed and the
 *   result does not depend on scheduling. Adaptive pooling's backward adds them in the same order
 *   as the CPU's loop, from zero, so its result is the CPU's bit for bit.
 *
 * Planes are (N * C) of (H, W) in, (OH, OW) out; every tensor is contiguous. Products are
 * written __fmul_rn so that nvcc does not fuse them into the following add (the CPU rounds
 * both). */
#include "cuda/common.cuh"

#include <math.h>

/* The pooling geometry a kernel needs (kernel arguments: by value). */
typedef struct {
  int64_t H, W, OH, OW, KH, KW, SH, SW, PH, PW;
} pool_dims;

static pool_dims pool_dims_of(const em_pool2d_geom *g) {
  return pool_dims{g->H,         g->W,         g->OH,        g->OW,         g->kernel[0],
                   g->kernel[1], g->stride[0], g->stride[1], g->padding[0], g->padding[1]};
}

/* The part of output (i, j)'s window inside x: rows [*h0, *h1), columns [*w0, *w1). */
__device__ __forceinline__ void pool_window(const pool_dims &d, int64_t i, int64_t j, int64_t *h0,
                                            int64_t *h1, int64_t *w0, int64_t *w1) {
  int64_t hs = i * d.SH - d.PH, ws = j * d.SW - d.PW;
  *h0 = hs > 0 ? hs : 0;
  *h1 = hs + d.KH < d.H ? hs + d.KH : d.H;
  *w0 = ws > 0 ? ws : 0;
  *w1 = ws + d.KW < d.W ? ws + d.KW : d.W;
}

/* y (planes, OH, OW) = the first maximum of each window; idx (or NULL) = where it lies. */
static __global__ void max_pool_kernel(const float *x, float *y, int64_t *idx, pool_dims d,
                                       int64_t n) {
  EM_CUDA_FOR(o, n) {
    int64_t j = o % d.OW, i = o / d.OW % d.OH, plane = o / (d.OW * d.OH);
    const float *xp = x + plane * d.H * d.W;
    int64_t h0, h1, w0, w1, arg = -1;
    pool_window(d, i, j, &h0, &h1, &w0, &w1);
    float best = -INFINITY;
    for (int64_t h = h0; h < h1; h++)
      for (int64_t w = w0; w < w1; w++) {
        float v = xp[h * d.W + w];
        if (arg < 0 || v > best || (isnan(v) && !isnan(best))) {
          best = v;
          arg = h * d.W + w;
        }
      }
    y[o] = best; /* a window always holds an element of x (padding <= kernel / 2) */
    if (idx) idx[o] = arg;
  }
}

/* y = the mean of each window: over the whole window (padding counts as zeros) or over its part
 * inside x. */
static __global__ void avg_pool_kernel(const float *x, float *y, pool_dims d, bool include_pad,
                                       int64_t n) {
  EM_CUDA_FOR(o, n) {
    int64_t j = o % d.OW, i = o / d.OW % d.OH, plane = o / (d.OW * d.OH);
    const float *xp = x + plane * d.H * d.W;
    int64_t h0, h1, w0, w1;
    pool_window(d, i, j, &h0, &h1, &w0, &w1);
    float acc = 0.0f;
    for (int64_t h = h0; h < h1; h++)
      for (int64_t w = w0; w < w1; w++) acc += xp[h * d.W + w];
    int64_t count = include_pad ? d.KH * d.KW : (h1 - h0) * (w1 - w0);
    y[o] = acc / (float)count;
  }
}

/* The outputs whose windows cover input row h: [*lo, *hi] (empty when *lo > *hi). */
__device__ __forceinline__ void covering(int64_t h, int64_t K, int64_t S, int64_t P, int64_t O,
                                         int64_t *lo, int64_t *hi) {
  int64_t first = h + P - K + 1; /* i S - P + K - 1 >= h */
  *lo = first <= 0 ? 0 : (first + S - 1) / S;
  int64_t last = (h + P) / S; /* i S - P <= h */
  *hi = last < O - 1 ? last : O - 1;
}

/* gx (planes, H, W) = the sum of gy over the windows that cover each element: those whose
 * maximum it is (idx), or all of them divided by their counts (avg). */
static __global__ void pool_backward_kernel(const float *gy, const int64_t *idx, float *gx,
                                            pool_dims d, em_pool_kind kind, int64_t n) {
  EM_CUDA_FOR(e, n) {
    int64_t w = e % d.W, h = e / d.W % d.H, plane = e / (d.W * d.H);
    const float *gp = gy + plane * d.OH * d.OW;
    const int64_t *ip = idx ? idx + plane * d.OH * d.OW : NULL;
    int64_t ilo, ihi, jlo, jhi;
    covering(h, d.KH, d.SH, d.PH, d.OH, &ilo, &ihi);
    covering(w, d.KW, d.SW, d.PW, d.OW, &jlo, &jhi);
    float acc = 0.0f;
    for (int64_t i = ilo; i <= ihi; i++)
      for (int64_t j = jlo; j <= jhi; j++) {
        int64_t o = i * d.OW + j;
        if (kind == EM_POOL_MAX) {
          if (ip[o] == h * d.W + w) acc += gp[o];
        } else {
          int64_t h0, h1, w0, w1;
          pool_window(d, i, j, &h0, &h1, &w0, &w1);
          int64_t count = kind == EM_POOL_AVG_INCLUDE_PAD ? d.KH * d.KW : (h1 - h0) * (w1 - w0);
          acc += gp[o] / (float)count;
        }
      }
    gx[e] = acc;
  }
}

static const char *pool_name(em_pool_kind kind) {
  return kind == EM_POOL_MAX ? "max_pool2d" : "avg_pool2d";
}

extern "C" em_status em__cuda_pool2d(const em_pool2d_geom *g, const em_tensor *x, em_tensor *y,
                                     em_tensor **ws) {
  const char *op = pool_name(g->kind);
  int index = y->device.index;
  if (ws) *ws = NULL;
  int64_t n = em_numel(y);
  if (n == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  pool_dims d = pool_dims_of(g);
  if (g->kind != EM_POOL_MAX) {
    avg_pool_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
        em_data_f32(x), em_data_f32(y), d, g->kind == EM_POOL_AVG_INCLUDE_PAD, n);
    return EM_CUDA_LAUNCHED(op, index);
  }
  int64_t *idx = NULL;
  if (ws) { /* a backward follows: keep where each maximum lies */
    em_tensor *t = em__empty_on(y->device, EM_I64, 4, y->shape);
    if (!t) return em_last_status();
    *ws = t;
    idx = (int64_t *)em_data(t);
  }
  max_pool_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(em_data_f32(x), em_data_f32(y), idx,
                                                                d, n);
  return EM_CUDA_LAUNCHED(op, index);
}

extern "C" em_status em__cuda_pool2d_backward(const em_pool2d_geom *g, const em_tensor *ws,
                                              const em_tensor *gy, em_tensor *gx) {
  const char *op = g->kind == EM_POOL_MAX ? "max_pool2d backward" : "avg_pool2d backward";
  int index = gx->device.index;
  int64_t n = em_numel(gx);
  if (n == 0) return EM_OK;
  if (g->kind == EM_POOL_MAX && !ws)
    return em_set_error(EM_ERR_STATE, "%s on cuda:%d: no workspace saved by the forward", op,
                        index);
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  const int64_t *idx = g->kind == EM_POOL_MAX ? (const int64_t *)em_data(ws) : NULL;
  pool_backward_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      em_data_f32(gy), idx, em_data_f32(gx), pool_dims_of(g), g->kind, n);
  return EM_CUDA_LAUNCHED(op, index);
}

/* ---- adaptive average pooling ------------------------------------------------------------ */
/* PyTorch's windows: rows floor(i H / OH) .. ceil((i + 1) H / OH) - 1 (columns likewise). */
__device__ __forceinline__ int64_t win_start(int64_t i, int64_t in, int64_t out) {
  return i * in / out;
}
__device__ __forceinline__ int64_t win_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

/* The CPU's arithmetic (cpu/pool.c): the window summed row by row, times 1 / area. */
static __global__ void adaptive_kernel(const float *x, float *y, int64_t H, int64_t W, int64_t OH,
                                       int64_t OW, int64_t n) {
  EM_CUDA_FOR(o, n) {
    int64_t j = o % OW, i = o / OW % OH, plane = o / (OW * OH);
    const float *xp = x + plane * H * W;
    int64_t h0 = win_start(i, H, OH), h1 = win_end(i, H, OH);
    int64_t w0 = win_start(j, W, OW), w1 = win_end(j, W, OW);
    float inv = 1.0f / (float)((h1 - h0) * (w1 - w0)), acc = 0.0f;
    for (int64_t h = h0; h < h1; h++)
      for (int64_t w = w0; w < w1; w++) acc += xp[h * W + w];
    y[o] = __fmul_rn(acc, inv);
  }
}

/* gx (planes, H, W): for each element, gy * (1 / area) of every window that holds it, added from
 * zero in window order (i, then j), as the CPU's scatter adds them. Window i holds row h exactly
 * when win_start(i) <= h < win_end(i); the first such i is floor(h OH / H), and both ends grow
 * with i. */
static __global__ void adaptive_backward_kernel(const float *gy, float *gx, int64_t H, int64_t W,
                                                int64_t OH, int64_t OW, int64_t n) {
  EM_CUDA_FOR(e, n) {
    int64_t w = e % W, h = e / W % H, plane = e / (W * H);
    const float *gp = gy + plane * OH * OW;
    float acc = 0.0f;
    for (int64_t i = h * OH / H; i < OH && win_start(i, H, OH) <= h; i++) {
      int64_t h0 = win_start(i, H, OH), h1 = win_end(i, H, OH);
      if (h1 <= h) continue;
      for (int64_t j = w * OW / W; j < OW && win_start(j, W, OW) <= w; j++) {
        int64_t w0 = win_start(j, W, OW), w1 = win_end(j, W, OW);
        if (w1 <= w) continue;
        float inv = 1.0f / (float)((h1 - h0) * (w1 - w0));
        acc += __fmul_rn(gp[i * OW + j], inv);
      }
    }
    gx[e] = acc;
  }
}

extern "C" em_status em__cuda_adaptive_avg_pool2d(const em_tensor *x, em_tensor *y) {
  int index = y->device.index;
  int64_t n = em_numel(y);
  if (n == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  adaptive_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      em_data_f32(x), em_data_f32(y), x->shape[2], x->shape[3], y->shape[2], y->shape[3], n);
  return EM_CUDA_LAUNCHED("adaptive_avg_pool2d", index);
}

extern "C" em_status em__cuda_adaptive_avg_pool2d_backward(const em_tensor *gy, em_tensor *gx) {
  int index = gx->device.index;
  int64_t n = em_numel(gx);
  if (n == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  adaptive_backward_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      em_data_f32(gy), em_data_f32(gx), gx->shape[2], gx->shape[3], gy->shape[2], gy->shape[3], n);
  return EM_CUDA_LAUNCHED("adaptive_avg_pool2d backward", index);
}
