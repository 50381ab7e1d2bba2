/* cpu/memory.c: the CPU table's memory kernels: a caching allocator of 64-byte aligned blocks,
 * zeroing, copies (memcpy on the host), fills, and the 16-bit conversions of gradient
 * compression. */
#include "cpu/cpu.h"
#include "em_env.h"
#include "em_half.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- storage cache ----------------------------------------------------------------------
 * A training step allocates the same buffer sizes every iteration. Large blocks from malloc come
 * from mmap and go back to the kernel on free, so every step would page-fault its activations in
 * again (measured: 240 us instead of 52 us for a relu forward+backward on (64, 1024)). Freed
 * blocks of at least CACHE_MIN bytes are kept by exact size, up to EMBER_CPU_CACHE_MB (default
 * 256) in all, and handed out again. A free block holds its own list link. Sanitizer builds skip
 * the cache so that AddressSanitizer sees every use after free.
 *
 * The limit is read at the first free of a large block, which has no error path: a bad
 * EMBER_CPU_CACHE_MB is reported once on stderr and the default kept (the thread's last error is
 * left as it was). */
#if defined(__SANITIZE_ADDRESS__)
#define CACHE_ENABLED 0
#else
#define CACHE_ENABLED 1
#endif
#define CACHE_MIN 16384
#define CACHE_BUCKETS 256

typedef struct free_block {
  struct free_block *next;
  size_t size;
} free_block;

static free_block *cache[CACHE_BUCKETS];
static size_t cache_bytes, cache_limit = (size_t)-1;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t cache_bucket(size_t size) { return (size / 64) % CACHE_BUCKETS; }

/* The cache's limit in bytes (reads EMBER_CPU_CACHE_MB the first time). Under cache_lock. */
static size_t limit_bytes(void) {
  if (cache_limit != (size_t)-1) return cache_limit;
  em_status prev = em_last_status();
  char prev_msg[1024];
  snprintf(prev_msg, sizeof prev_msg, "%s", em_last_error());
  int64_t mb;
  if (em_env_int("EMBER_CPU_CACHE_MB", &mb) != EM_OK) {
    const char *def = em_env_find("EMBER_CPU_CACHE_MB")->def;
    fprintf(stderr, "ember: %s; the CPU block cache keeps its default, %s MB\n", em_last_error(),
            def);
    em_parse_int(def, &mb);
    if (prev == EM_OK)
      em_clear_error();
    else
      em_set_error(prev, "%s", prev_msg);
  }
  cache_limit = (size_t)mb << 20;
  return cache_limit;
}

static void *block_alloc(size_t padded) {
  if (CACHE_ENABLED && padded >= CACHE_MIN) {
    pthread_mutex_lock(&cache_lock);
    for (free_block **p = &cache[cache_bucket(padded)]; *p; p = &(*p)->next) {
      if ((*p)->size == padded) {
        free_block *b = *p;
        *p = b->next;
        cache_bytes -= padded;
        pthread_mutex_unlock(&cache_lock);
        return b;
      }
    }
    pthread_mutex_unlock(&cache_lock);
  }
  return aligned_alloc(64, padded);
}

static void block_free(void *data, size_t padded) {
  if (CACHE_ENABLED && padded >= CACHE_MIN) {
    pthread_mutex_lock(&cache_lock);
    if (cache_bytes + padded <= limit_bytes()) {
      free_block *b = data;
      b->size = padded;
      b->next = cache[cache_bucket(padded)];
      cache[cache_bucket(padded)] = b;
      cache_bytes += padded;
      pthread_mutex_unlock(&cache_lock);
      return;
    }
    pthread_mutex_unlock(&cache_lock);
  }
  free(data);
}

__attribute__((destructor)) static void cache_free_all(void) {
  pthread_mutex_lock(&cache_lock);
  for (int k = 0; k < CACHE_BUCKETS; k++) {
    while (cache[k]) {
      free_block *b = cache[k];
      cache[k] = b->next;
      free(b);
    }
  }
  cache_bytes = 0;
  pthread_mutex_unlock(&cache_lock);
}

void *em__cpu_alloc(int index, size_t nbytes) { return block_alloc(nbytes); }
void em__cpu_free(int index, void *p, size_t nbytes) { block_free(p, nbytes); }

em_status em__cpu_zero(int index, void *dst, size_t nbytes) {
  memset(dst, 0, nbytes);
  return EM_OK;
}

em_status em__cpu_copy(int index, void *dst, const void *src, size_t nbytes) {
  if (nbytes) memcpy(dst, src, nbytes);
  return EM_OK;
}

em_status em__cpu_fill(em_tensor *t, double value) {
  int64_t n = em_numel(t);
  if (t->dtype == EM_F32) {
    float *p = em_data_f32(t), v = (float)value;
    for (int64_t i = 0; i < n; i++) p[i] = v;
  } else {
    for (int64_t i = 0; i < n; i++) em_set(t, i, value);
  }
  return EM_OK;
}

em_status em__cpu_to_half(int index, em_dtype half, uint16_t *dst, const float *src, int64_t n,
                          float scale) {
  if (half == EM_BF16)
    em_f32_to_bf16_n(dst, src, n, scale);
  else if (half == EM_F16)
    em_f32_to_f16_n(dst, src, n, scale);
  else
    return em_set_error(EM_ERR_INVALID, "to_half: %s is not a 16-bit float", em_dtype_name(half));
  return EM_OK;
}

em_status em__cpu_from_half(int index, em_dtype half, float *dst, const uint16_t *src, int64_t n) {
  if (half == EM_BF16)
    em_bf16_to_f32_n(dst, src, n);
  else if (half == EM_F16)
    em_f16_to_f32_n(dst, src, n);
  else
    return em_set_error(EM_ERR_INVALID, "from_half: %s is not a 16-bit float",
                        em_dtype_name(half));
  return EM_OK;
}
