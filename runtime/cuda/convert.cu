/* cuda/convert.cu: the 16-bit conversions of gradient compression (core/kernels.h: to_half,
 * from_half) on the compute stream. CUDA's __float2bfloat16 and __float2half round to nearest
 * even and keep infinities and NaN (as a canonical NaN), as em_half.h does on the CPU; the scale
 * is one f32 multiply before the rounding, as there. */
#include "cuda/common.cuh"

__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, int64_t n, float scale) {
  EM_CUDA_FOR(i, n) dst[i] = __float2bfloat16(src[i] * scale);
}
__global__ void to_f16_kernel(__half *dst, const float *src, int64_t n, float scale) {
  EM_CUDA_FOR(i, n) dst[i] = __float2half(src[i] * scale);
}
__global__ void from_bf16_kernel(float *dst, const __nv_bfloat16 *src, int64_t n) {
  EM_CUDA_FOR(i, n) dst[i] = __bfloat162float(src[i]);
}
__global__ void from_f16_kernel(float *dst, const __half *src, int64_t n) {
  EM_CUDA_FOR(i, n) dst[i] = __half2float(src[i]);
}

extern "C" em_status em__cuda_to_half(int index, em_dtype half, uint16_t *dst, const float *src,
                                      int64_t n, float scale) {
  if (half != EM_BF16 && half != EM_F16)
    return em_set_error(EM_ERR_INVALID, "to_half: %s is not a 16-bit float", em_dtype_name(half));
  if (n == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  if (half == EM_BF16)
    to_bf16_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>((__nv_bfloat16 *)dst, src, n,
                                                                 scale);
  else
    to_f16_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>((__half *)dst, src, n, scale);
  return EM_CUDA_LAUNCHED("to_half", index);
}

extern "C" em_status em__cuda_from_half(int index, em_dtype half, float *dst, const uint16_t *src,
                                        int64_t n) {
  if (half != EM_BF16 && half != EM_F16)
    return em_set_error(EM_ERR_INVALID, "from_half: %s is not a 16-bit float",
                        em_dtype_name(half));
  if (n == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  if (half == EM_BF16)
    from_bf16_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(dst,
                                                                   (const __nv_bfloat16 *)src, n);
  else
    from_f16_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(dst, (const __half *)src, n);
  return EM_CUDA_LAUNCHED("from_half", index);
}
