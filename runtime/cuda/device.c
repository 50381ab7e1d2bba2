/* cuda/device.c: device discovery and memory through the CUDA runtime. Without a driver,
 * cudaGetDeviceCount returns an error (cudaErrorInsufficientDriver) rather than zero: every error
 * means "no device", so the same binary runs on machines with and without GPUs. */
#include "cuda/cuda.h"

#include <cuda_runtime_api.h>
#include <pthread.h>

#include "em_env.h"

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

/* ---- errors and streams ------------------------------------------------------------------- */
em_status em__cuda_status(cudaError_t e, const char *op, int index) {
  if (e == cudaSuccess) return EM_OK;
  (void)cudaGetLastError(); /* clear a non-sticky error so later calls are not poisoned */
  return em_set_error(e == cudaErrorMemoryAllocation ? EM_ERR_NOMEM : EM_ERR_BACKEND,
                      "%s on cuda:%d: %s", op, index, cudaGetErrorString(e));
}

em_status em__cuda_launched(const char *op, int index) {
  return em__cuda_status(cudaGetLastError(), op, index);
}

#define MAX_DEVICES 64
static cudaStream_t streams[MAX_DEVICES];
static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;

cudaStream_t em__cuda_stream(int index) {
  if (index < 0 || index >= MAX_DEVICES) {
    em_set_error(EM_ERR_INVALID, "cuda:%d: device index out of range", index);
    return NULL;
  }
  cudaError_t e = cudaSetDevice(index);
  if (e != cudaSuccess) {
    em__cuda_status(e, "cudaSetDevice", index);
    return NULL;
  }
  cudaStream_t s = __atomic_load_n(&streams[index], __ATOMIC_ACQUIRE);
  if (s) return s;
  pthread_mutex_lock(&streams_lock);
  if (!streams[index]) {
    /* Blocking (not cudaStreamNonBlocking): ordered with the legacy default stream both ways. */
    e = cudaStreamCreate(&s);
    if (e == cudaSuccess) __atomic_store_n(&streams[index], s, __ATOMIC_RELEASE);
  }
  s = streams[index];
  pthread_mutex_unlock(&streams_lock);
  if (!s) em__cuda_status(e, "cudaStreamCreate", index);
  return s;
}

/* ---- memory kernels ------------------------------------------------------------------------- */
#define cuda_status em__cuda_status

void *em__cuda_alloc(int index, size_t nbytes) {
  void *p = NULL;
  if (cudaSetDevice(index) != cudaSuccess || cudaMalloc(&p, nbytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return NULL;
  }
  int64_t poison = 0;
  if (em_env_int("EMBER_CUDA_POISON", &poison) == EM_OK && poison &&
      cudaMemset(p, 0xff, nbytes) != cudaSuccess) {
    (void)cudaGetLastError();
    cudaFree(p);
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
