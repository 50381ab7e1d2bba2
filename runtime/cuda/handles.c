/* cuda/handles.c: the cuBLAS and cuDNN handles of each device, and the translation of their
 * statuses into em_status with the library's own message.
 *
 * A handle is created on first use (under a lock: the compute thread and a DDP helper thread may
 * both ask) and lives for the process. It is bound to the device's compute stream
 * (em__cuda_stream), so every GEMM and convolution is ordered with the table's own kernels.
 * cuBLAS's math mode is chosen here once: plain FP32 (IEEE FMA, the CPU's results within rounding)
 * unless EMBER_CUDA_TF32=1 allows TF32 tensor cores. cuDNN's is chosen per convolution
 * (cuda/conv.cu), from em__cuda_tf32. */
#include "cuda/cuda.h"

#include <pthread.h>

#include "em_env.h"

#ifdef EMBER_HAVE_CUDNN
#include "cuda/dnn.h"
#endif

#define MAX_DEVICES 64
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;

em_status em__cuda_tf32(bool *on) {
  int64_t v = 0;
  em_status st = em_env_int("EMBER_CUDA_TF32", &v); /* a bad value is an error naming it */
  *on = v != 0;
  return st;
}

/* ---- cuBLAS ------------------------------------------------------------------------------- */
em_status em__cublas_status(cublasStatus_t s, const char *call, const char *op, int index) {
  if (s == CUBLAS_STATUS_SUCCESS) return EM_OK;
  return em_set_error(s == CUBLAS_STATUS_ALLOC_FAILED ? EM_ERR_NOMEM : EM_ERR_BACKEND,
                      "%s on cuda:%d: %s failed: %s (%s)", op, index, call,
                      cublasGetStatusString(s), cublasGetStatusName(s));
}

static cublasHandle_t cublas_handles[MAX_DEVICES];

cublasHandle_t em__cublas(int index, const char *op) {
  cudaStream_t stream = em__cuda_stream(index); /* checks index; makes the device current */
  if (!stream) return NULL;
  cublasHandle_t h = __atomic_load_n(&cublas_handles[index], __ATOMIC_ACQUIRE);
  if (h) return h;
  em_status st = EM_OK;
  pthread_mutex_lock(&handles_lock);
  bool tf32 = false;
  if (!(h = cublas_handles[index]) && (st = em__cuda_tf32(&tf32)) == EM_OK) {
    /* CUBLAS_DEFAULT_MATH keeps FP32 GEMMs in FP32 (TF32 only when asked for) */
    cublasMath_t math = tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH;
    st = em__cublas_status(cublasCreate(&h), "cublasCreate", op, index);
    if (st == EM_OK)
      st = em__cublas_status(cublasSetStream(h, stream), "cublasSetStream", op, index);
    if (st == EM_OK)
      st = em__cublas_status(cublasSetMathMode(h, math), "cublasSetMathMode", op, index);
    if (st == EM_OK)
      __atomic_store_n(&cublas_handles[index], h, __ATOMIC_RELEASE);
    else if (h) {
      cublasDestroy(h);
      h = NULL;
    }
  }
  pthread_mutex_unlock(&handles_lock);
  return h;
}

/* ---- cuDNN -------------------------------------------------------------------------------- */
#ifdef EMBER_HAVE_CUDNN
em_status em__cudnn_status(cudnnStatus_t s, const char *call, const char *op, int index) {
  if (s == CUDNN_STATUS_SUCCESS) return EM_OK;
  char detail[256] = "";
  cudnnGetLastErrorString(detail, sizeof detail);
  return em_set_error(s == CUDNN_STATUS_ALLOC_FAILED ? EM_ERR_NOMEM : EM_ERR_BACKEND,
                      "%s on cuda:%d: %s failed: %s%s%s", op, index, call, cudnnGetErrorString(s),
                      detail[0] ? ": " : "", detail);
}

static cudnnHandle_t cudnn_handles[MAX_DEVICES];

cudnnHandle_t em__cudnn(int index, const char *op) {
  cudaStream_t stream = em__cuda_stream(index);
  if (!stream) return NULL;
  cudnnHandle_t h = __atomic_load_n(&cudnn_handles[index], __ATOMIC_ACQUIRE);
  if (h) return h;
  em_status st = EM_OK;
  pthread_mutex_lock(&handles_lock);
  if (!(h = cudnn_handles[index])) {
    st = em__cudnn_status(cudnnCreate(&h), "cudnnCreate", op, index);
    if (st == EM_OK) st = em__cudnn_status(cudnnSetStream(h, stream), "cudnnSetStream", op, index);
    if (st == EM_OK)
      __atomic_store_n(&cudnn_handles[index], h, __ATOMIC_RELEASE);
    else if (h) {
      cudnnDestroy(h);
      h = NULL;
    }
  }
  pthread_mutex_unlock(&handles_lock);
  return h;
}
#endif
