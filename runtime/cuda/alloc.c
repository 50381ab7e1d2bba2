/* cuda/alloc.c: the caching device allocator behind the CUDA table's alloc and free slots.
 *
 * cudaMalloc and cudaFree are slow (cudaFree also synchronizes the device), and a training step
 * frees and allocates the same sizes every time. So a freed block goes to a free list of its
 * device and is handed out again for a request of the same size class:
 *
 *   request (bytes, a multiple of 64)   size class
 *   <= 1 MiB                            next multiple of 512 B
 *   >  1 MiB                            next multiple of 2 MiB
 *
 *   pools[index]: mutex | free lists, bucketed by size | live blocks, hashed by pointer | stats
 *
 * Streams. Every block records the stream it serves, and a free block is reused only for that
 * stream. The table's blocks serve the compute stream, which runs every kernel in issue order: a
 * block freed while a kernel still reads it is safe to hand out again at once, because whatever
 * the next owner does with it is queued on the same stream, behind that kernel. Blocks for the
 * host-to-device stream (em__cuda_upload's destinations) are read by compute kernels too, and
 * freed when the compute stream is done with them only in issue order: so their free records an
 * event on the compute stream, and before such a block is reused the host-to-device stream waits
 * on that event.
 *
 * Limits. EMBER_CUDA_CACHE_MB caps the cached (free) bytes per device (-1: no cap, 0: no
 * caching; read at the first allocation); a free block past the cap goes back to CUDA. When
 * cudaMalloc fails, every cached block of the device goes back and the call is tried once more;
 * then the error names the request and what this process holds there. */
#include "cuda/cuda.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_env.h"

#define SMALL_MAX ((size_t)1 << 20)
#define SMALL_ROUND ((size_t)512)
#define LARGE_ROUND ((size_t)2 << 20)
#define FREE_BUCKETS 256
#define LIVE_BUCKETS 4096

typedef struct block {
  void *ptr;
  size_t size;          /* the size class: what cudaMalloc gave */
  cudaStream_t stream;  /* the stream it serves; reused only there */
  cudaEvent_t freed;    /* side-stream blocks: recorded on the compute stream at free */
  bool wait;            /* freed is recorded and the next owner's stream must wait on it */
  struct block *next;
} block;

typedef struct {
  pthread_mutex_t mu;
  block *free_list[FREE_BUCKETS]; /* by size class */
  block *live[LIVE_BUCKETS];      /* handed out, by pointer */
  em_cuda_memstats st;
} pool;

static pool pools[EM_CUDA_MAX_DEVICES];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int64_t cache_cap = -1; /* bytes; -1: none */
static bool poison;
static em_status env_status = EM_OK; /* a malformed variable: every allocation fails with it */
static char env_msg[512];

static void init_once(void) {
  for (int i = 0; i < EM_CUDA_MAX_DEVICES; i++) pthread_mutex_init(&pools[i].mu, NULL);
  int64_t mb = -1, p = 0;
  env_status = em_env_int("EMBER_CUDA_CACHE_MB", &mb);
  if (env_status == EM_OK) env_status = em_env_int("EMBER_CUDA_POISON", &p);
  if (env_status != EM_OK) snprintf(env_msg, sizeof env_msg, "%s", em_last_error());
  if (mb >= 0) cache_cap = mb << 20;
  poison = p != 0;
}

static size_t size_class(size_t nbytes) {
  if (nbytes <= SMALL_MAX) return (nbytes + SMALL_ROUND - 1) / SMALL_ROUND * SMALL_ROUND;
  return (nbytes + LARGE_ROUND - 1) / LARGE_ROUND * LARGE_ROUND;
}

static size_t free_bucket(size_t size) { return (size / SMALL_ROUND) % FREE_BUCKETS; }
static size_t live_bucket(const void *p) { return ((uintptr_t)p >> 9) % LIVE_BUCKETS; }

static void peaks(em_cuda_memstats *st) {
  if (st->in_use > st->peak_in_use) st->peak_in_use = st->in_use;
  if (st->allocated > st->peak_allocated) st->peak_allocated = st->allocated;
}

/* Returns block b (free, off every list) to CUDA. Called with the pool's mutex held. */
static void release_block(pool *pl, block *b) {
  cudaFree(b->ptr); /* synchronizes the device: no kernel still reads the block */
  if (b->freed) cudaEventDestroy(b->freed);
  (void)cudaGetLastError();
  pl->st.allocated -= (int64_t)b->size;
  pl->st.cached -= (int64_t)b->size;
  pl->st.frees++;
  free(b);
}

/* Gives every cached block of the pool back to CUDA. Called with the mutex held. */
static void drain(pool *pl) {
  for (int k = 0; k < FREE_BUCKETS; k++) {
    while (pl->free_list[k]) {
      block *b = pl->free_list[k];
      pl->free_list[k] = b->next;
      release_block(pl, b);
    }
  }
}

/* A cached block of this size class serving stream s, taken off its free list; NULL if none. */
static block *take_cached(pool *pl, size_t size, cudaStream_t s) {
  for (block **pp = &pl->free_list[free_bucket(size)]; *pp; pp = &(*pp)->next) {
    block *b = *pp;
    if (b->size != size || b->stream != s) continue;
    *pp = b->next;
    pl->st.cached -= (int64_t)size;
    return b;
  }
  return NULL;
}

/* The out-of-memory error: what was asked and what this process holds on the device. */
static void oom_error(pool *pl, int index, size_t nbytes, size_t size, cudaError_t e) {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
  em_set_error(EM_ERR_NOMEM,
               "out of memory on cuda:%d: asked for %zu bytes (%.1f MiB as a %zu-byte block); "
               "this process holds %lld bytes in use and %lld cached there, the device has "
               "%zu of %zu bytes free (%s)",
               index, nbytes, (double)size / 1048576.0, size, (long long)pl->st.in_use,
               (long long)pl->st.cached, free_b, total_b, cudaGetErrorString(e));
}

/* A new block from cudaMalloc, emptying the cache and retrying once if the device is full. NULL
 * with the error set. Called with the mutex held, device index current. */
static block *new_block(pool *pl, int index, size_t nbytes, size_t size, cudaStream_t s) {
  block *b = calloc(1, sizeof *b);
  if (!b) {
    em_set_error(EM_ERR_NOMEM, "cuda:%d allocator: out of host memory", index);
    return NULL;
  }
  cudaError_t e = cudaMalloc(&b->ptr, size);
  if (e == cudaErrorMemoryAllocation && pl->st.cached > 0) {
    (void)cudaGetLastError();
    drain(pl);
    pl->st.oom_retries++;
    e = cudaMalloc(&b->ptr, size);
  }
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    oom_error(pl, index, nbytes, size, e);
    free(b);
    return NULL;
  }
  b->size = size;
  b->stream = s;
  pl->st.allocated += (int64_t)size;
  pl->st.mallocs++;
  return b;
}

void *em__cuda_alloc_on(int index, size_t nbytes, cudaStream_t s) {
  pthread_once(&once, init_once);
  if (env_status != EM_OK) {
    em_set_error(env_status, "cuda:%d allocator: %s", index, env_msg);
    return NULL;
  }
  if (em__cuda_use(index) != EM_OK) return NULL;
  pool *pl = &pools[index];
  size_t size = size_class(nbytes);
  pthread_mutex_lock(&pl->mu);
  block *b = take_cached(pl, size, s);
  if (b) pl->st.hits++;
  else b = new_block(pl, index, nbytes, size, s);
  if (b) {
    /* A side-stream block whose compute readers may still run: its stream waits for them. */
    /* Should the stream wait fail to queue, the host waits instead: never hand the block out
     * while a reader may still run (a failing event means a broken context, reported later). */
    if (b->wait && cudaStreamWaitEvent(s, b->freed, 0) != cudaSuccess) {
      (void)cudaGetLastError();
      if (cudaEventSynchronize(b->freed) != cudaSuccess) (void)cudaGetLastError();
    }
    b->wait = false;
    b->next = pl->live[live_bucket(b->ptr)];
    pl->live[live_bucket(b->ptr)] = b;
    pl->st.in_use += (int64_t)size;
    pl->st.allocs++;
    peaks(&pl->st);
  }
  pthread_mutex_unlock(&pl->mu);
  if (!b) return NULL;
  /* Poison every block handed out, reused ones too, on the stream that will use it. */
  if (poison && cudaMemsetAsync(b->ptr, 0xff, size, s) != cudaSuccess) {
    em__cuda_status(cudaGetLastError(), "cudaMemsetAsync (poison)", index);
    em__cuda_free(index, b->ptr, nbytes);
    return NULL;
  }
  return b->ptr;
}

void *em__cuda_alloc(int index, size_t nbytes) {
  cudaStream_t s = em__cuda_stream(index);
  return s ? em__cuda_alloc_on(index, nbytes, s) : NULL;
}

void em__cuda_free(int index, void *p, size_t nbytes) {
  (void)nbytes; /* the block knows its size class */
  if (!p || index < 0 || index >= EM_CUDA_MAX_DEVICES) return;
  pool *pl = &pools[index];
  cudaStream_t compute = em__cuda_stream(index); /* also makes index current */
  pthread_mutex_lock(&pl->mu);
  block **pp = &pl->live[live_bucket(p)];
  while (*pp && (*pp)->ptr != p) pp = &(*pp)->next;
  block *b = *pp;
  if (!b) { /* not ours: a bug in the caller; leak rather than corrupt the cache */
    pthread_mutex_unlock(&pl->mu);
    return;
  }
  *pp = b->next;
  pl->st.in_use -= (int64_t)b->size;
  pl->st.cached += (int64_t)b->size;
  if (b->stream != compute && compute) { /* see "Streams" above */
    if (!b->freed && cudaEventCreateWithFlags(&b->freed, cudaEventDisableTiming) != cudaSuccess)
      b->freed = NULL;
    b->wait = b->freed && cudaEventRecord(b->freed, compute) == cudaSuccess;
    if (!b->wait) { /* no event: give it back, cudaFree waits for the device */
      (void)cudaGetLastError();
      release_block(pl, b);
      pthread_mutex_unlock(&pl->mu);
      return;
    }
  }
  if (cache_cap >= 0 && pl->st.cached > cache_cap) {
    release_block(pl, b);
  } else {
    b->next = pl->free_list[free_bucket(b->size)];
    pl->free_list[free_bucket(b->size)] = b;
  }
  pthread_mutex_unlock(&pl->mu);
}

/* ---- public: statistics and emptying the cache ------------------------------------------- */
static bool device_present(const char *op, int index) {
  int n = em_cuda_device_count();
  if (index >= 0 && index < n && index < EM_CUDA_MAX_DEVICES) return true;
  em_set_error(EM_ERR_UNSUPPORTED, "%s: no device cuda:%d (%d CUDA devices present)", op, index,
               n);
  return false;
}

em_status em_cuda_memory_stats(int index, em_cuda_memstats *out) {
  if (!out) return em_set_error(EM_ERR_INVALID, "cuda_memory_stats: out is NULL");
  memset(out, 0, sizeof *out);
  if (!device_present("cuda_memory_stats", index)) return em_last_status();
  pthread_once(&once, init_once);
  pthread_mutex_lock(&pools[index].mu);
  *out = pools[index].st;
  pthread_mutex_unlock(&pools[index].mu);
  return EM_OK;
}

em_status em_cuda_empty_cache(int index) {
  if (!device_present("cuda_empty_cache", index)) return em_last_status();
  pthread_once(&once, init_once);
  cudaError_t e = cudaSetDevice(index);
  if (e != cudaSuccess) return em__cuda_status(e, "cudaSetDevice", index);
  pthread_mutex_lock(&pools[index].mu);
  drain(&pools[index]);
  pthread_mutex_unlock(&pools[index].mu);
  return EM_OK;
}
