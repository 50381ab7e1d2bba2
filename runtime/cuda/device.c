/* cuda/device.c: device discovery and memory through the CUDA runtime. Without a driver,
 * cudaGetDeviceCount returns an error (cudaErrorInsufficientDriver) rather than zero: every error
 * means "no device", so the same binary runs on machines with and without GPUs. */
#include "cuda/cuda.h"

#include <cuda_runtime_api.h>
#include <pthread.h>

/* Asked once: the devices a process sees do not change while it runs (CUDA_VISIBLE_DEVICES is read
 * at the runtime's start), and every op's dispatch asks (core/device.c, em__kernels). */
int em_cuda_device_count(void) {
  static int count = -1;
  int n = __atomic_load_n(&count, __ATOMIC_ACQUIRE);
  if (n >= 0) return n;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError(); /* clear the sticky error */
    n = 0;
  }
  __atomic_store_n(&count, n, __ATOMIC_RELEASE);
  return n;
}

bool em_built_with_cuda(void) { return true; }

/* ---- pinned host memory ---------------------------------------------------------------------
 * The data loader takes a pinned buffer per batch field and gives it back one step later. Both
 * cudaHostAlloc and cudaFreeHost are slow, and cudaFreeHost waits for the whole device, which
 * would stall the compute stream once per step; so freed buffers wait here (up to PINNED_KEEP)
 * for a request of the same size. A buffer may come back while an upload from it is still in
 * flight: it keeps the upload's event, and is handed out again (to be written) only after the
 * event completes. */
#define PINNED_KEEP 64

typedef struct pinned_buf {
  void *p;
  size_t nbytes;
  cudaEvent_t done; /* the last upload from it, or NULL */
  struct pinned_buf *next;
} pinned_buf;

static pinned_buf *pinned_free;
static int pinned_count;
static pthread_mutex_t pinned_lock = PTHREAD_MUTEX_INITIALIZER;

static void pinned_settle(cudaEvent_t done) {
  if (!done) return;
  cudaEventSynchronize(done);
  cudaEventDestroy(done);
  (void)cudaGetLastError();
}

void *em__host_alloc_pinned(size_t nbytes) {
  pthread_mutex_lock(&pinned_lock);
  pinned_buf **pp = &pinned_free;
  while (*pp && (*pp)->nbytes != nbytes) pp = &(*pp)->next;
  pinned_buf *b = *pp;
  if (b) {
    *pp = b->next;
    pinned_count--;
  }
  pthread_mutex_unlock(&pinned_lock);
  if (b) {
    void *p = b->p;
    pinned_settle(b->done); /* no upload still reads it when the caller writes */
    free(b);
    return p;
  }
  if (em_cuda_device_count() == 0) return NULL;
  void *p = NULL;
  if (cudaHostAlloc(&p, nbytes, cudaHostAllocDefault) != cudaSuccess) {
    (void)cudaGetLastError();
    return NULL;
  }
  return p;
}

void em__host_free_pinned(void *p, size_t nbytes, void *done) {
  if (!p) return;
  pinned_buf *b = malloc(sizeof *b);
  pthread_mutex_lock(&pinned_lock);
  bool keep = b && pinned_count < PINNED_KEEP;
  if (keep) {
    *b = (pinned_buf){.p = p, .nbytes = nbytes, .done = (cudaEvent_t)done, .next = pinned_free};
    pinned_free = b;
    pinned_count++;
  }
  pthread_mutex_unlock(&pinned_lock);
  if (keep) return;
  free(b);
  pinned_settle((cudaEvent_t)done);
  cudaFreeHost(p);
}

void em__host_pinned_wait(void *done) {
  if (done && cudaEventSynchronize((cudaEvent_t)done) != cudaSuccess) (void)cudaGetLastError();
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

static cudaStream_t streams[EM_CUDA_MAX_DEVICES];
static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;

em_status em__cuda_use(int index) {
  if (index < 0 || index >= EM_CUDA_MAX_DEVICES)
    return em_set_error(EM_ERR_INVALID, "cuda:%d: device index out of range", index);
  return em__cuda_status(cudaSetDevice(index), "cudaSetDevice", index);
}

cudaStream_t em__cuda_stream(int index) {
  if (em__cuda_use(index) != EM_OK) return NULL;
  cudaError_t e = cudaSuccess;
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

/* The host-to-device stream of device index: non-blocking, so an upload runs beside the compute
 * stream's kernels (and the legacy stream's copies) instead of queuing behind them. */
static cudaStream_t h2d_streams[EM_CUDA_MAX_DEVICES];

static cudaStream_t h2d_stream(int index) {
  cudaStream_t s = __atomic_load_n(&h2d_streams[index], __ATOMIC_ACQUIRE);
  if (s) return s;
  cudaError_t e = cudaSuccess;
  pthread_mutex_lock(&streams_lock);
  if (!h2d_streams[index]) {
    e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (e == cudaSuccess) __atomic_store_n(&h2d_streams[index], s, __ATOMIC_RELEASE);
  }
  s = h2d_streams[index];
  pthread_mutex_unlock(&streams_lock);
  if (!s) em__cuda_status(e, "cudaStreamCreate (host to device)", index);
  return s;
}

/* An upload from pinned memory:
 *
 *   h2d stream:      [wait: block's last compute use] [memcpy src -> dst] [record *done]
 *   compute stream:  ... kernels of the current step ...  [wait *done] [next kernels]
 *
 * The copy overlaps whatever the compute stream has queued; the kernels issued after it (the
 * ones that read dst) wait for it. The host must not write src until *done completes: the
 * pinned storage keeps the event, em_data waits on it, and the buffer is reused only after it
 * (em__host_alloc_pinned). */
void *em__cuda_upload(int index, const void *src, size_t nbytes, void **done) {
  cudaStream_t compute = em__cuda_stream(index), h2d = compute ? h2d_stream(index) : NULL;
  if (!h2d) return NULL;
  void *dst = em__cuda_alloc_on(index, em__padded_size(nbytes), h2d);
  if (!dst) return NULL;
  cudaEvent_t ev = (cudaEvent_t)*done;
  cudaError_t e = ev ? cudaSuccess : cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
  if (e == cudaSuccess) {
    *done = ev;
    e = cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, h2d);
  }
  if (e == cudaSuccess) e = cudaEventRecord(ev, h2d);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(compute, ev, 0);
  if (e != cudaSuccess) {
    em__cuda_status(e, "upload (cudaMemcpyAsync)", index);
    em__cuda_free(index, dst, nbytes);
    return NULL;
  }
  return dst;
}

/* ---- memory kernels ------------------------------------------------------------------------- */
#define cuda_status em__cuda_status

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
