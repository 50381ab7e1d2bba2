/* cuda/common.cuh: private to the CUDA sources of runtime/cuda/ (.cu). Device-side helpers that
 * every kernel file uses: launch geometry, strided indexing, and the conversions of the storage
 * dtypes.
 *
 * A kernel over n elements is launched with em_cuda_blocks(n) blocks of EM_CUDA_THREADS threads
 * and walks the elements with a grid-stride loop (EM_CUDA_FOR), so any n fits any grid.
 * A tensor of any strides reaches its kernel as an em_cuda_geom (by value: kernel arguments live
 * in constant memory), and em_cuda_offset turns a logical (row-major) flat index into an element
 * offset. */
#ifndef EMBER_CUDA_COMMON_CUH
#define EMBER_CUDA_COMMON_CUH

#include "cuda/cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define EM_CUDA_THREADS 256

/* Blocks for n elements: enough to fill the GPU several times over, capped (the loops stride). */
static inline unsigned em_cuda_blocks(int64_t n) {
  int64_t b = (n + EM_CUDA_THREADS - 1) / EM_CUDA_THREADS;
  if (b < 1) b = 1;
  return (unsigned)(b < 65535 ? b : 65535);
}

#define EM_CUDA_FOR(i, n)                                                                          \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
       i += (int64_t)blockDim.x * gridDim.x)

/* Shape and element strides of a tensor (its own, or broadcast: stride 0). */
typedef struct {
  int ndim;
  int64_t shape[EM_MAX_DIMS];
  int64_t strides[EM_MAX_DIMS];
} em_cuda_geom;

static inline em_cuda_geom em_cuda_geom_of(const em_tensor *t) {
  em_cuda_geom g;
  g.ndim = t->ndim;
  for (int d = 0; d < t->ndim; d++) {
    g.shape[d] = t->shape[d];
    g.strides[d] = t->strides[d];
  }
  return g;
}

/* Element offset of logical flat index i (row-major over g.shape). */
__device__ __forceinline__ int64_t em_cuda_offset(const em_cuda_geom &g, int64_t i) {
  int64_t off = 0;
  for (int d = g.ndim - 1; d >= 0; d--) {
    int64_t n = g.shape[d];
    off += (i % n) * g.strides[d];
    i /= n;
  }
  return off;
}

/* Element i of data of dtype dt as float, and back (f32, f16, bf16, integers). */
__device__ __forceinline__ float em_cuda_load(const void *data, em_dtype dt, int64_t i) {
  switch (dt) {
  case EM_F32: return ((const float *)data)[i];
  case EM_F16: return __half2float(((const __half *)data)[i]);
  case EM_BF16: return __bfloat162float(((const __nv_bfloat16 *)data)[i]);
  case EM_I64: return (float)((const int64_t *)data)[i];
  case EM_I32: return (float)((const int32_t *)data)[i];
  case EM_U8: return (float)((const uint8_t *)data)[i];
  default: return 0.0f;
  }
}

/* The launch's error, named. Used right after each <<<...>>>. */
#define EM_CUDA_LAUNCHED(op, index) em__cuda_launched(op, index)

#endif
