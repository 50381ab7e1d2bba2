/* cuda/nn.cuh: private to the CUDA kernels of the loss, embedding, layer norm and optimizer
 * families (loss.cu, embed.cu, layer_norm.cu, optim.cu). Block-wide reductions for the kernels
 * that give a row of a matrix to one block, the loss labels, and temporaries for two-pass
 * reductions.
 *
 * A block reduction is called by every thread of the block (blockDim.x a multiple of 32, at most
 * 1024), never from a branch that some threads skip; each thread gets the block's total. */
#ifndef EMBER_CUDA_NN_CUH
#define EMBER_CUDA_NN_CUH

#include "cuda/common.cuh"

#define EM_NN_FULL_MASK 0xffffffffu

template <typename T> struct em_nn_add {
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
/* fmaxf: a NaN operand is passed over; the row kernels that use the maximum get NaN back from
 * their sums instead (exp(NaN - m) is NaN), as the CPU does. */
struct em_nn_max {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

/* The block's reduction of v by op (identity: op's neutral value, for the lanes of warps that do
 * not exist). The first __syncthreads keeps a previous call's readers of `part` ahead of this
 * call's writers, so calls may follow each other. */
template <typename T, typename Op>
__device__ __forceinline__ T em_nn_block_reduce(T v, Op op, T identity) {
  __shared__ T part[32];
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(EM_NN_FULL_MASK, v, o));
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = lane < (int)(blockDim.x >> 5) ? part[lane] : identity;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(EM_NN_FULL_MASK, v, o));
  return v;
}

template <typename T> __device__ __forceinline__ T em_nn_block_sum(T v) {
  return em_nn_block_reduce<T>(v, em_nn_add<T>(), T(0));
}

__device__ __forceinline__ float em_nn_block_max(float v) {
  return em_nn_block_reduce<float>(v, em_nn_max(), -INFINITY);
}

/* Label i of a contiguous i64 (wide) or i32 label tensor. */
__device__ __forceinline__ int64_t em_nn_label(const void *labels, bool wide, int64_t i) {
  return wide ? ((const int64_t *)labels)[i] : (int64_t)((const int32_t *)labels)[i];
}

/* Blocks for a kernel that gives each of n rows to one block (the blocks stride over the rows
 * beyond the cap). n > 0. */
static inline unsigned em_nn_row_blocks(int64_t n) { return (unsigned)(n < 65535 ? n : 65535); }

static inline em_device em_nn_device(int index) {
  em_device d;
  d.kind = EM_CUDA;
  d.index = index;
  return d;
}

/* A temporary of n float64 values on device index, owned by the caller, who em_releases it right
 * after queueing the kernels that use it: cudaFree waits for the device's queued work, and a
 * caching allocator must likewise reuse a block only after the compute stream's work queued
 * before its release. The library has no float64 dtype: the storage is an i64 tensor of the same
 * size. NULL with the error set when out of memory. */
static inline em_tensor *em_nn_temp_f64(int index, int64_t n, const char *op) {
  int64_t len = n > 0 ? n : 1;
  em_tensor *t = em__alloc_on(em_nn_device(index), EM_I64, 1, &len, false);
  if (!t)
    em_set_error(EM_ERR_NOMEM, "%s: out of memory on cuda:%d for %lld float64 partial sums", op,
                 index, (long long)len);
  return t;
}

/* The same for n floats. */
static inline em_tensor *em_nn_temp_f32(int index, int64_t n, const char *op) {
  int64_t len = n > 0 ? n : 1;
  em_tensor *t = em__alloc_on(em_nn_device(index), EM_F32, 1, &len, false);
  if (!t)
    em_set_error(EM_ERR_NOMEM, "%s: out of memory on cuda:%d for %lld partial sums", op, index,
                 (long long)len);
  return t;
}

#endif
