/* cuda/device.c: device discovery and memory through the CUDA runtime. Without a driver,
 * cudaGetDeviceCount returns an error (cudaErrorInsufficientDriver) rather than zero: every error
 * means "no device", so the same binary runs on machines with and without GPUs. */
#include "cuda/cuda.h"

#include <cuda_runtime_api.h>

int em_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError(); /* clear the sticky error */
    return 0;
  }
  return n;
}

bool em_built_with_cuda(void) { return true; }

void *em__host_alloc_pinned(size_t nbytes) {
  if (em_cuda_device_count() == 0) return NULL;
  void *p = NULL;
  if (cudaHostAlloc(&p, nbytes, cudaHostAllocDefault) != cudaSuccess) {
    (void)cudaGetLastError();
    return NULL;
  }
  return p;
}

void em__host_free_pinned(void *p) {
  if (p) cudaFreeHost(p);
}

/* ---- memory kernels ------------------------------------------------------------------------- */
/* A CUDA error as an Ember status naming the call and CUDA's message. */
static em_status cuda_status(cudaError_t e, const char *what, int index) {
  if (e == cudaSuccess) return EM_OK;
  (void)cudaGetLastError();
  return em_set_error(EM_ERR_BACKEND, "%s on cuda:%d: %s", what, index, cudaGetErrorString(e));
}

void *em__cuda_alloc(int index, size_t nbytes) {
  void *p = NULL;
  if (cudaSetDevice(index) != cudaSuccess || cudaMalloc(&p, nbytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return NULL;
  }
  return p;
}

void em__cuda_free(int index, void *p, size_t nbytes) {
  if (p && cudaSetDevice(index) == cudaSuccess) cudaFree(p);
}

em_status em__cuda_zero(int index, void *dst, size_t nbytes) {
  cudaError_t e = cudaSetDevice(index);
  if (e == cudaSuccess) e = cudaMemset(dst, 0, nbytes);
  return cuda_status(e, "cudaMemset", index);
}

static em_status copy(int index, void *dst, const void *src, size_t nbytes, enum cudaMemcpyKind k) {
  cudaError_t e = cudaSetDevice(index);
  if (e == cudaSuccess) e = cudaMemcpy(dst, src, nbytes, k);
  return cuda_status(e, "cudaMemcpy", index);
}

em_status em__cuda_copy_from_host(int index, void *dst, const void *src, size_t nbytes) {
  return copy(index, dst, src, nbytes, cudaMemcpyHostToDevice);
}
em_status em__cuda_copy_to_host(int index, void *dst, const void *src, size_t nbytes) {
  return copy(index, dst, src, nbytes, cudaMemcpyDeviceToHost);
}
em_status em__cuda_copy(int index, void *dst, const void *src, size_t nbytes) {
  return copy(index, dst, src, nbytes, cudaMemcpyDeviceToDevice);
}
