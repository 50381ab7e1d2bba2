/* cuda/reduce.cu: the CUDA table's reductions (core/kernels.h: sum, sum_backward, max,
 * max_backward, and the autograd engine's sum_to and accumulate).
 *
 * Sums. The contiguous x is split, as on the CPU (cpu/reduce.c), into groups of neighbouring dims
 * that are all reduced or all kept (size-1 dims dropped). The kept groups index the outputs and
 * the reduced groups the terms of each output, both as geometries over x, so one kernel handles
 * any set of dims in one pass:
 *
 *   y[o] = scale * sum_r x[kept(o) + red(r)]     float64 accumulator, rounded to float once
 *
 * with a block per output (reduced innermost: contiguous terms; or few outputs) or a thread per
 * output (kept innermost and many outputs: neighbouring threads read neighbouring floats); see
 * cuda/blockreduce.cuh. sum_to is the same sum over the dims where y broadcasts: the CPU adds
 * those terms in float in x's order, this kernel in float64, so the GPU's result is the more
 * exact one and the two differ by the CPU's float rounding (about R * 2^-24 * sum |x| at most).
 *
 * Max. x (O, R, K) -> the first maximum over R and its index, NaN the largest: a thread per
 * (o, k) walking r in order (the CPU's loop), or a block per (o, k) whose threads each keep the
 * best (value, index) of their r and combine them preferring the lower index on ties. */
#include "cuda/blockreduce.cuh"

/* ---- sums ----------------------------------------------------------------------------------- */
/* x (contiguous, ndim dims of shape) split by mask (bit d: dim d is reduced) into the geometry of
 * the kept dims (over the outputs) and of the reduced dims (over each output's terms), merging
 * neighbouring dims of the same kind and dropping size-1 dims. *inner_reduced: the innermost
 * group is a reduced one (or there is none). */
static void split_geoms(int ndim, const int64_t *shape, uint32_t mask, em_cuda_geom *kept,
                        em_cuda_geom *red, bool *inner_reduced) {
  int64_t gsize[EM_MAX_DIMS], gstride[EM_MAX_DIMS];
  bool gred[EM_MAX_DIMS];
  int ng = em__reduce_groups(ndim, shape, mask, gsize, gred);
  int64_t st = 1;
  for (int g = ng - 1; g >= 0; g--) {
    gstride[g] = st;
    st *= gsize[g];
  }
  kept->ndim = 0;
  red->ndim = 0;
  for (int g = 0; g < ng; g++) {
    em_cuda_geom *t = gred[g] ? red : kept;
    t->shape[t->ndim] = gsize[g];
    t->strides[t->ndim] = gstride[g];
    t->ndim++;
  }
  *inner_reduced = ng == 0 || gred[ng - 1];
}

static int64_t geom_numel(const em_cuda_geom &g) {
  int64_t n = 1;
  for (int d = 0; d < g.ndim; d++) n *= g.shape[d];
  return n;
}

__global__ void sum_block_kernel(const float *x, em_cuda_geom kept, int64_t nout, em_cuda_geom red,
                                 int64_t nred, double scale, float *y) {
  __shared__ double scratch[32];
  for (int64_t o = blockIdx.x; o < nout; o += gridDim.x) { /* uniform across the block */
    const float *xo = x + em_cuda_offset(kept, o);
    double acc = 0;
    for (int64_t r = threadIdx.x; r < nred; r += blockDim.x) acc += xo[em_cuda_offset(red, r)];
    acc = em_block_reduce(acc, em_sum_op<double>(), 0.0, scratch);
    if (threadIdx.x == 0) y[o] = (float)(acc * scale);
  }
}

__global__ void sum_thread_kernel(const float *x, em_cuda_geom kept, int64_t nout, em_cuda_geom red,
                                  int64_t nred, double scale, float *y) {
  EM_CUDA_FOR(o, nout) {
    const float *xo = x + em_cuda_offset(kept, o);
    double acc = 0;
    for (int64_t r = 0; r < nred; r++) acc += xo[em_cuda_offset(red, r)];
    y[o] = (float)(acc * scale);
  }
}

/* y = scale * x (contiguous) summed over the dims in mask; y holds the kept dims in order. */
static em_status sum_dims(const char *op, const em_tensor *x, uint32_t mask, double scale,
                          em_tensor *y) {
  int64_t nout = em_numel(y);
  if (nout == 0) return EM_OK;
  int index = y->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  em_cuda_geom kept, red;
  bool inner_reduced;
  split_geoms(x->ndim, x->shape, mask, &kept, &red, &inner_reduced);
  int64_t nred = geom_numel(red); /* 0 when a reduced dim is empty: y = 0 * scale */
  if (inner_reduced || nout < EM_CUDA_COLUMN_ROWS)
    sum_block_kernel<<<em_cuda_row_blocks(nout), EM_CUDA_THREADS, 0, s>>>(
        em_data_f32(x), kept, nout, red, nred, scale, em_data_f32(y));
  else
    sum_thread_kernel<<<em_cuda_blocks(nout), EM_CUDA_THREADS, 0, s>>>(
        em_data_f32(x), kept, nout, red, nred, scale, em_data_f32(y));
  return EM_CUDA_LAUNCHED(op, index);
}

extern "C" em_status em__cuda_sum(const em_tensor *x, uint32_t mask, double scale, em_tensor *y) {
  return sum_dims("sum", x, mask, scale, y);
}

__global__ void sum_backward_kernel(const float *gy, em_cuda_geom g, float s, float *gx,
                                    int64_t n) {
  EM_CUDA_FOR(i, n) gx[i] = gy[em_cuda_offset(g, i)] * s;
}

extern "C" em_status em__cuda_sum_backward(const em_tensor *gy, uint32_t mask, double scale,
                                           em_tensor *gx) {
  int64_t n = em_numel(gx);
  if (n == 0) return EM_OK;
  int index = gx->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  /* gy laid out as gx with the reduced dims of size 1: read with stride 0 along them. */
  em_cuda_geom g;
  g.ndim = gx->ndim;
  int64_t st = 1;
  for (int d = gx->ndim - 1; d >= 0; d--) {
    g.shape[d] = gx->shape[d];
    bool r = (mask >> d) & 1u;
    g.strides[d] = r ? 0 : st;
    if (!r) st *= gx->shape[d];
  }
  sum_backward_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      em_data_f32(gy), g, (float)scale, em_data_f32(gx), n);
  return EM_CUDA_LAUNCHED("sum backward", index);
}

/* ---- autograd: sum_to and accumulate -------------------------------------------------------- */
extern "C" em_status em__cuda_sum_to(const em_tensor *x, em_tensor *y) {
  /* Reduce x's dims that y lacks (leading) or has as size 1; y aligns on the right. */
  int lead = x->ndim - y->ndim;
  uint32_t mask = 0;
  for (int d = 0; d < x->ndim; d++)
    if (d < lead || y->shape[d - lead] == 1) mask |= 1u << d;
  return sum_dims("backward (sum_to)", x, mask, 1.0, y);
}

__global__ void accumulate_plain_kernel(float *y, const float *x, int64_t n) {
  EM_CUDA_FOR(i, n) y[i] += x[i];
}

__global__ void accumulate_strided_kernel(float *y, const float *x, em_cuda_geom gx, int64_t n) {
  EM_CUDA_FOR(i, n) y[i] += x[em_cuda_offset(gx, i)];
}

extern "C" em_status em__cuda_accumulate(em_tensor *y, const em_tensor *x) {
  int64_t n = em_numel(y);
  if (n == 0) return EM_OK;
  int index = y->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  if (em_is_contiguous(x))
    accumulate_plain_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(em_data_f32(y),
                                                                          em_data_f32(x), n);
  else
    accumulate_strided_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
        em_data_f32(y), em_data_f32(x), em_cuda_geom_of(x), n);
  return EM_CUDA_LAUNCHED("backward (accumulate)", index);
}

/* ---- max / argmax over one dim -------------------------------------------------------------- */
/* (va, ia) comes before (vb, ib) as a maximum: NaN above everything, then the larger value, then
 * (equal values, or both NaN) the lower index. */
__device__ __forceinline__ bool max_before(float va, int64_t ia, float vb, int64_t ib) {
  if (va != va) return vb == vb || ia < ib;
  if (vb != vb) return false;
  return va > vb || (va == vb && ia < ib);
}

__global__ void max_thread_kernel(const float *x, int64_t O, int64_t R, int64_t K, float *vals,
                                  int64_t *idx) {
  EM_CUDA_FOR(row, O * K) {
    int64_t o = row / K, k = row % K;
    const float *xo = x + o * R * K + k;
    float best = xo[0];
    int64_t bi = 0;
    for (int64_t r = 1; r < R; r++) { /* in order: a later value must beat, not tie */
      float v = xo[r * K];
      if (v > best || (v != v && best == best)) {
        best = v;
        bi = r;
      }
    }
    vals[row] = best;
    idx[row] = bi;
  }
}

__global__ void max_block_kernel(const float *x, int64_t O, int64_t R, int64_t K, float *vals,
                                 int64_t *idx) {
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int64_t row = blockIdx.x; row < O * K; row += gridDim.x) { /* uniform across the block */
    int64_t o = row / K, k = row % K;
    const float *xo = x + o * R * K + k;
    float best = -INFINITY;
    int64_t bi = INT64_MAX; /* loses to any element, -inf included (lower index) */
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {
      float v = xo[r * K];
      if (max_before(v, r, best, bi)) {
        best = v;
        bi = r;
      }
    }
    for (int off = 16; off > 0; off >>= 1) {
      float v = __shfl_xor_sync(0xffffffffu, best, off);
      int64_t i = __shfl_xor_sync(0xffffffffu, bi, off);
      if (max_before(v, i, best, bi)) {
        best = v;
        bi = i;
      }
    }
    if (lane == 0) {
      sv[warp] = best;
      si[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < nwarps; w++)
        if (max_before(sv[w], si[w], best, bi)) {
          best = sv[w];
          bi = si[w];
        }
      vals[row] = best;
      idx[row] = bi;
    }
    __syncthreads(); /* sv, si are read before the next row overwrites them */
  }
}

extern "C" em_status em__cuda_max(const em_tensor *x, int64_t O, int64_t R, int64_t K,
                                  em_tensor *vals, em_tensor *idx) {
  if (O * K == 0) return EM_OK;
  int index = vals->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  const float *px = em_data_f32(x);
  float *pv = em_data_f32(vals);
  int64_t *pi = (int64_t *)em_data(idx);
  if (em_cuda_one_thread_per_row(O, K))
    max_thread_kernel<<<em_cuda_blocks(O * K), EM_CUDA_THREADS, 0, s>>>(px, O, R, K, pv, pi);
  else
    max_block_kernel<<<em_cuda_row_blocks(O * K), EM_CUDA_THREADS, 0, s>>>(px, O, R, K, pv, pi);
  return EM_CUDA_LAUNCHED("max", index);
}

__global__ void max_backward_kernel(const int64_t *idx, const float *gy, int64_t R, int64_t K,
                                    float *gx, int64_t n) {
  EM_CUDA_FOR(i, n) { /* i = (o R + r) K + k */
    int64_t k = i % K, r = (i / K) % R, o = i / (K * R);
    int64_t j = o * K + k;
    gx[i] = idx[j] == r ? gy[j] : 0.f;
  }
}

extern "C" em_status em__cuda_max_backward(const em_tensor *idx, const em_tensor *gy, int64_t O,
                                           int64_t R, int64_t K, em_tensor *gx) {
  int64_t n = O * R * K;
  if (n == 0) return EM_OK;
  int index = gx->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  max_backward_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      (const int64_t *)em_data(idx), em_data_f32(gy), R, K, em_data_f32(gx), n);
  return EM_CUDA_LAUNCHED("max backward", index);
}
