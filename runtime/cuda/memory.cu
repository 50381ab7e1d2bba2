/* cuda/memory.cu: the CUDA table's fill and strided copy (core/kernels.h: fill, copy_view), for
 * every dtype. A strided copy moves elements as unsigned integers of the dtype's size, so it is a
 * bit-exact copy whatever the dtype. */
#include "cuda/common.cuh"

template <typename T> __global__ void fill_kernel(T *p, int64_t n, T v) {
  EM_CUDA_FOR(i, n) p[i] = v;
}

template <typename T> static em_status fill_as(em_tensor *t, T v) {
  int64_t n = em_numel(t);
  if (n == 0) return EM_OK;
  cudaStream_t s = em__cuda_stream(t->device.index);
  if (!s) return em_last_status();
  fill_kernel<T><<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>((T *)em_data(t), n, v);
  return EM_CUDA_LAUNCHED("fill", t->device.index);
}

extern "C" em_status em__cuda_fill(em_tensor *t, double value) {
  switch (t->dtype) {
  case EM_F32: return fill_as<float>(t, (float)value);
  case EM_F16: return fill_as<__half>(t, __float2half((float)value));
  case EM_BF16: return fill_as<__nv_bfloat16>(t, __float2bfloat16((float)value));
  case EM_I64: return fill_as<int64_t>(t, (int64_t)value);
  case EM_I32: return fill_as<int32_t>(t, (int32_t)value);
  case EM_U8: return fill_as<uint8_t>(t, (uint8_t)value);
  default:
    return em_set_error(EM_ERR_UNSUPPORTED, "fill: dtype %s on cuda", em_dtype_name(t->dtype));
  }
}

template <typename T>
__global__ void copy_view_kernel(T *dst, em_cuda_geom gd, const T *src, em_cuda_geom gs,
                                 int64_t n) {
  EM_CUDA_FOR(i, n) dst[em_cuda_offset(gd, i)] = src[em_cuda_offset(gs, i)];
}

template <typename T>
static void copy_view_as(em_tensor *dst, const em_tensor *src, int64_t n, cudaStream_t s) {
  copy_view_kernel<T><<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      (T *)em_data(dst), em_cuda_geom_of(dst), (const T *)em_data(src), em_cuda_geom_of(src), n);
}

extern "C" em_status em__cuda_copy_view(em_tensor *dst, const em_tensor *src) {
  int64_t n = em_numel(src);
  if (n == 0) return EM_OK;
  int index = dst->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  size_t es = em_dtype_size(src->dtype);
  if (em_is_contiguous(dst) && em_is_contiguous(src))
    return em__cuda_status(
        cudaMemcpyAsync(em_data(dst), em_data(src), (size_t)n * es, cudaMemcpyDeviceToDevice, s),
        "copy", index);
  switch (es) {
  case 1: copy_view_as<uint8_t>(dst, src, n, s); break;
  case 2: copy_view_as<uint16_t>(dst, src, n, s); break;
  case 4: copy_view_as<uint32_t>(dst, src, n, s); break;
  case 8: copy_view_as<uint64_t>(dst, src, n, s); break;
  default: return em_set_error(EM_ERR_UNSUPPORTED, "copy: element size %zu on cuda", es);
  }
  return EM_CUDA_LAUNCHED("copy", index);
}
