/* cpu/dnnl.c: the oneDNN CPU engine and stream, the thread count, and a cache of primitives keyed by
 * a string that the op builds from its shapes and attributes ("matmul f32 64x784x1024 tb").
 * Creating a primitive descriptor costs tens of microseconds: each distinct shape is built once and
 * reused for the life of the process. */
#include "cpu/dnnl.h"
#include "core/hash.h"
#include "em_env.h"

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static em_status init_status = EM_OK; /* and its message: a bad EMBER_THREADS, or oneDNN failed */
static char init_msg[512];
static int num_threads = 1;

/* Once per process. A bad EMBER_THREADS leaves the CPU without an engine: every oneDNN kernel then
 * fails with the message naming the variable (em__dnnl_engine), rather than running silently on
 * another thread count. */
static void init_dnnl(void) {
  int64_t n;
  if ((init_status = em_env_int("EMBER_THREADS", &n)) != EM_OK) {
    snprintf(init_msg, sizeof init_msg, "%s", em_last_error());
    return;
  }
  num_threads = (int)n;
  omp_set_num_threads(num_threads);
  dnnl_status_t st = dnnl_engine_create(&engine, dnnl_cpu, 0);
  if (st == dnnl_success) st = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
  if (st != dnnl_success) {
    init_status = EM_ERR_BACKEND;
    snprintf(init_msg, sizeof init_msg, "oneDNN: creating the CPU engine failed (status %d)",
             (int)st);
  }
}

void em_set_num_threads(int n) {
  pthread_once(&init_once, init_dnnl);
  if (n < 1) n = 1;
  num_threads = n;
  omp_set_num_threads(n);
}

int em_num_threads(void) {
  pthread_once(&init_once, init_dnnl);
  return num_threads;
}

dnnl_engine_t em__dnnl_engine(void) {
  pthread_once(&init_once, init_dnnl);
  if (init_status != EM_OK) {
    em_set_error(init_status, "%s", init_msg);
    return NULL;
  }
  return engine;
}

dnnl_stream_t em__dnnl_stream(void) {
  pthread_once(&init_once, init_dnnl);
  /* Kernels run on the calling thread; OpenMP's thread count is per calling thread. */
  if (omp_get_max_threads() != num_threads) omp_set_num_threads(num_threads);
  return stream;
}

/* ---- primitive cache: open hashing on the key string ------------------------------------- */
typedef struct entry {
  char *key;
  uint64_t hash;
  em_dnnl_prim p;
  dnnl_primitive_desc_t pd;
  struct entry *next;
} entry;

#define NBUCKETS 1024
static entry *buckets[NBUCKETS];
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

const em_dnnl_prim *em__dnnl_get(const char *key, em_dnnl_build_fn build, void *ctx) {
  if (!em__dnnl_engine()) return NULL;
  uint64_t h = em__fnv1a(EM__FNV_OFFSET, key, strlen(key));
  pthread_mutex_lock(&cache_lock);
  entry *e = buckets[h % NBUCKETS];
  for (; e; e = e->next)
    if (e->hash == h && strcmp(e->key, key) == 0) break;
  if (!e) {
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_status_t st = build(ctx, &pd);
    if (st == dnnl_success) st = dnnl_primitive_create(&prim, pd);
    e = st == dnnl_success ? calloc(1, sizeof *e) : NULL;
    if (e) e->key = strdup(key);
    if (!e || !e->key) {
      if (prim) dnnl_primitive_destroy(prim);
      if (pd) dnnl_primitive_desc_destroy(pd);
      if (e) free(e);
      pthread_mutex_unlock(&cache_lock);
      em_set_error(st == dnnl_success ? EM_ERR_NOMEM : EM_ERR_BACKEND,
                   "oneDNN: cannot create primitive '%s' (status %d)", key, (int)st);
      return NULL;
    }
    e->hash = h;
    e->pd = pd;
    e->p.pd = pd;
    e->p.prim = prim;
    e->next = buckets[h % NBUCKETS];
    buckets[h % NBUCKETS] = e;
  }
  pthread_mutex_unlock(&cache_lock);
  return &e->p;
}

/* Free the cache at exit so LeakSanitizer sees a clean process. */
__attribute__((destructor)) static void dnnl_cache_free(void) {
  for (int b = 0; b < NBUCKETS; b++) {
    for (entry *e = buckets[b], *nx; e; e = nx) {
      nx = e->next;
      dnnl_primitive_destroy(e->p.prim);
      dnnl_primitive_desc_destroy(e->pd);
      free(e->key);
      free(e);
    }
    buckets[b] = NULL;
  }
  if (stream) dnnl_stream_destroy(stream);
  if (engine) dnnl_engine_destroy(engine);
  stream = NULL;
  engine = NULL;
}

em_status em__dnnl_exec(const char *op, const em_dnnl_prim *p, int nargs, const em_dnnl_arg *args) {
  dnnl_exec_arg_t ea[16];
  dnnl_memory_t mem[16];
  int n = 0;
  em_status st = EM_OK;
  if (nargs > 16) return em_set_error(EM_ERR_INVALID, "%s: too many oneDNN arguments", op);
  for (; n < nargs; n++) {
    if (dnnl_memory_create(&mem[n], args[n].md, engine, args[n].ptr) != dnnl_success) {
      st = em_set_error(EM_ERR_BACKEND, "%s: oneDNN memory_create failed", op);
      goto cleanup;
    }
    ea[n].arg = args[n].arg;
    ea[n].memory = mem[n];
  }
  dnnl_stream_t s = em__dnnl_stream();
  dnnl_status_t ds = dnnl_primitive_execute(p->prim, s, nargs, ea);
  if (ds == dnnl_success) ds = dnnl_stream_wait(s);
  if (ds != dnnl_success)
    st = em_set_error(EM_ERR_BACKEND, "%s: oneDNN execute failed (status %d)", op, (int)ds);
cleanup:
  for (int k = 0; k < n; k++) dnnl_memory_destroy(mem[k]);
  return st;
}

dnnl_memory_desc_t em__dnnl_md(int ndim, const int64_t *shape) {
  dnnl_memory_desc_t md;
  dnnl_dims_t dims, strides;
  int64_t st = 1;
  if (ndim == 0) { /* oneDNN has no 0-d memory: use [1] */
    dims[0] = 1;
    strides[0] = 1;
    ndim = 1;
  } else {
    for (int d = ndim - 1; d >= 0; d--) {
      dims[d] = shape[d];
      strides[d] = st;
      st *= shape[d];
    }
  }
  dnnl_memory_desc_init_by_strides(&md, ndim, dims, dnnl_f32, strides);
  return md;
}

const dnnl_memory_desc_t *em__dnnl_query_md(const em_dnnl_prim *p, dnnl_query_t what, int index) {
  return dnnl_primitive_desc_query_md(p->pd, what, index);
}
