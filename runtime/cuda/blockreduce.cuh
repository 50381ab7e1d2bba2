/* cuda/blockreduce.cuh: private to runtime/cuda/ (.cu). Warp and block reductions for the row-wise
 * kernels (reduce.cu, softmax.cu), and the choice between the two shapes those kernels take for
 * a contiguous x seen as (O, R, K), reduced over R:
 *
 *   one block per row (o, k):   the block's threads stride over r, then reduce among themselves;
 *                               reads are coalesced when K == 1 (a row is contiguous)
 *   one thread per row (o, k):  each thread walks r alone; neighbouring threads read neighbouring
 *                               k, so reads are coalesced when K > 1
 *
 * Every thread of a block must call a block reduction (they contain __syncthreads), and the
 * block size is EM_CUDA_THREADS, a multiple of 32. */
#ifndef EMBER_CUDA_BLOCKREDUCE_CUH
#define EMBER_CUDA_BLOCKREDUCE_CUH

#include "cuda/common.cuh"

/* Rows of (O, R, K) walked by a thread each when there are at least this many rows and K > 1;
 * below it, a block per row keeps the GPU busy. */
#define EM_CUDA_COLUMN_ROWS 4096

static inline bool em_cuda_one_thread_per_row(int64_t O, int64_t K) {
  return K > 1 && O * K >= EM_CUDA_COLUMN_ROWS;
}

/* Blocks for rows handled one block each (the kernels loop when rows > the grid). */
static inline unsigned em_cuda_row_blocks(int64_t rows) {
  return (unsigned)(rows < 65535 ? (rows > 0 ? rows : 1) : 65535);
}

template <typename T> struct em_sum_op {
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
template <typename T> struct em_max_op {
  __device__ __forceinline__ T operator()(T a, T b) const { return a > b ? a : b; }
};

template <typename T, typename Op> __device__ __forceinline__ T em_warp_reduce(T v, Op op) {
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

/* The reduction of v over the block, returned to every thread. scratch: 32 T of shared memory,
 * free again when the call returns (a trailing __syncthreads), so calls may follow each other. */
template <typename T, typename Op>
__device__ __forceinline__ T em_block_reduce(T v, Op op, T identity, T *scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = em_warp_reduce(v, op);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : identity;
  v = em_warp_reduce(v, op);
  __syncthreads(); /* everyone has read scratch before the next call overwrites it */
  return v;
}

#endif
