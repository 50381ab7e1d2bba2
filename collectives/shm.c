/* shm.c: collectives between the ranks of one node through shared memory, by plain loads and
 * stores (no MPI call after set-up, so any thread may run them: the comm thread, or the caller of
 * a blocking operation).
 *
 * The segment comes from MPI itself (MPI_Win_allocate_shared over the node communicator): each
 * rank owns three flags on cache lines of their own (each with a count of the ranks sleeping on
 * it), and SHM_NBUF stage slots, each a header line (the operation's fingerprint) and chunk bytes.
 * An operation is cut into chunks; chunk number g (counted over the life of the communicator,
 * the same on every rank because every rank runs the same operations in the same order) uses
 * slot g % SHM_NBUF of every rank, and an all-reduce cuts each chunk into one part per rank:
 *
 *   rank r, chunk g                                   waits for
 *   1. copy my input chunk into my stage[g % NBUF]    all consumed >= g - NBUF (slot free)
 *      (first chunk: my fingerprint into its header)
 *      written = g
 *   2. (first chunk: every header equals mine)        all written >= g
 *      part r of every stage, summed in rank order
 *      0, 1, ..., W-1, into part r of my stage
 *      reduced = g
 *   3. part p of rank p's stage -> my output, all p   all reduced >= g
 *      consumed = g
 *
 * Chunks pipeline: a rank may be NBUF chunks ahead of the slowest, so the first chunk of a
 * bucket is being reduced while its last is still being copied in. The summation order is fixed,
 * so the result is bit-identical from run to run and on every rank. (Every rank summing a small
 * chunk whole, with one wait instead of two, was measured slower at 4-64 KiB: it was removed.) 16-bit floats
 * are summed in f32 and rounded once.
 *
 * Across nodes (coll__shm_allreduce_across, run by mpi.c's comm thread), step 2 is followed by
 * the caller's reduction of my part with the same part on every other node (MPI), and every
 * chunk takes the split path.
 *
 * Broadcast: the root writes, everyone else copies out of the root's stage. Reduce-scatter: each
 * rank stages a chunk of every block and reduces its own block from every rank's stage.
 * All-gather: each rank stages a chunk of its input and copies everyone's out. Barrier and the
 * fingerprint check of an operation run with MPI: one round of headers (written, then compared).
 *
 * The fingerprint check rides in the headers: a rank that finds another rank's header different
 * from its own fails the operation with every rank's fingerprint named, and since every rank
 * sees the same headers, every rank fails the same operation. Every wait spins briefly, then
 * yields, then sleeps, and gives up after the caller's limit, naming the rank it waited for. */
#include "coll_internal.h"
#include "em_half.h"

#include <linux/futex.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SHM_NBUF 4
#define SHM_LINE 64
#define SHM_BLOCK 2048  /* elements reduced per pass through the ranks' parts (in cache) */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define SHM_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SHM_SIMD_CLONES
#endif

enum { F_WRITTEN, F_REDUCED, F_CONSUMED, F_N };
static const char *flag_what[F_N] = {"arrive (write its input)", "reduce its part",
                                     "read the result"};

/* Memory every rank of the node maps (coll__shm_alloc): base[p] is node rank p's copy. */
typedef struct {
  MPI_Win win;
  char **base;
  size_t bytes;
} shm_region;

/* A stage slot's header: the fingerprint of the operation whose first chunk it holds, and where
 * that rank's data is (-1: staged; else region * 2^40 + byte offset in its shared region). */
typedef struct {
  coll_fingerprint fp;
  int64_t where;
} shm_header;

struct coll_shm {
  MPI_Comm node;
  MPI_Win win;
  int rank, size;
  const int *world; /* world rank of each node rank, for messages */
  int64_t chunk;    /* bytes of data per stage slot, a multiple of SHM_LINE */
  int64_t slot;     /* bytes per stage slot: a header line, then chunk */
  uint64_t **flags; /* [size]: F_N flags of each rank, SHM_LINE bytes apart */
  char **stage;     /* [size]: SHM_NBUF slots of each rank */
  uint64_t gen;     /* chunks this rank has begun */
  shm_region *regions; /* [nregions]; NULL base: a free entry */
  int nregions;
};

_Static_assert(sizeof(shm_header) <= SHM_LINE, "a header fits its line");

/* One operation in progress: what every wait needs to bound itself and to name what it waited
 * for. */
typedef struct {
  coll_shm *s;
  const coll_req *r;
  double limit; /* seconds a wait may take */
  char *msg;
  size_t n;
} op_ctx;

/* Rank p's header and data for chunk g. */
static shm_header *header(const coll_shm *s, int p, uint64_t g) {
  return (shm_header *)(s->stage[p] + (size_t)(g % SHM_NBUF) * (size_t)s->slot);
}
static char *data(const coll_shm *s, int p, uint64_t g) {
  return s->stage[p] + (size_t)(g % SHM_NBUF) * (size_t)s->slot + SHM_LINE;
}

static uint64_t *flag(const coll_shm *s, int p, int f) {
  return (uint64_t *)((char *)s->flags[p] + f * SHM_LINE);
}

static void cpu_relax(void) {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#endif
}

/* Sleep until rank p's flag f may have reached g (or 1 ms passed): a futex on the flag's low 32
 * bits, shared between processes. The sleeper count beside the flag tells the rank that stores it
 * to wake us; both sides use sequentially consistent order, so a store between our check and
 * our sleep makes FUTEX_WAIT return at once (the word no longer holds what we saw). */
static void sleep_on(coll_shm *s, int p, int f, uint64_t g) {
  uint64_t *x = flag(s, p, f), *sleepers = x + 1;
  __atomic_add_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
  uint64_t seen = __atomic_load_n(x, __ATOMIC_SEQ_CST);
  if (seen < g) {
    struct timespec ts = {0, 1000000};
    syscall(SYS_futex, (uint32_t *)x, FUTEX_WAIT, (uint32_t)seen, &ts, NULL, 0);
  }
  __atomic_sub_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
}

/* Publish my flag f = g and wake the ranks sleeping on it. */
static void publish(coll_shm *s, int f, uint64_t g) {
  uint64_t *x = flag(s, s->rank, f);
  __atomic_store_n(x, g, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(x + 1, __ATOMIC_SEQ_CST))
    syscall(SYS_futex, (uint32_t *)x, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

/* Wait until the flag f of ranks [lo, hi) is at least g. On the timeout (ctx->limit): false, and
 * ctx->msg names the first rank that has not got there. Spins ~1 us, yields up to 20 us, then
 * sleeps on a futex until the flag moves, so that a rank waiting for a slower one leaves its core
 * to the compute thread. */
static bool wait_ranks(const op_ctx *ctx, int f, uint64_t g, int lo, int hi) {
  coll_shm *s = ctx->s;
  double t0 = 0;
  for (int p = lo; p < hi; p++) {
    const uint64_t *x = flag(s, p, f);
    for (long spins = 0; __atomic_load_n(x, __ATOMIC_ACQUIRE) < g; spins++) {
      if (spins < 256) {
        cpu_relax();
        continue;
      }
      double now = coll__now();
      if (t0 == 0) t0 = now;
      if (now - t0 > ctx->limit) {
        coll_fingerprint fp = coll__fingerprint(ctx->r);
        char d[160];
        snprintf(ctx->msg, ctx->n,
                 "%s: timeout after %.1f s in shared memory on rank %d: rank %d did not %s "
                 "(chunk %llu; it is at %llu)",
                 coll__describe(&fp, d, sizeof d), now - t0, ctx->r->comm->rank, s->world[p],
                 flag_what[f], (unsigned long long)g,
                 (unsigned long long)__atomic_load_n(x, __ATOMIC_ACQUIRE));
        return false;
      }
      if (now - t0 < 20e-6)
        sched_yield();
      else
        sleep_on(s, p, f, g);
    }
  }
  return true;
}

static bool wait_all(const op_ctx *ctx, int f, uint64_t g) {
  return wait_ranks(ctx, f, g, 0, ctx->s->size);
}

/* Begin chunk g: wait until every rank has finished with slot g % NBUF (its previous chunk). */
static bool begin_chunk(const op_ctx *ctx, uint64_t g) {
  return g <= SHM_NBUF || wait_all(ctx, F_CONSUMED, g - SHM_NBUF);
}

/* After every rank wrote chunk g: does every header say the same operation as mine (when
 * checking), with the data in the same kind of place? If not, ctx->msg names what differs (each
 * rank sees the same headers and fails alike). */
static bool same_everywhere(const op_ctx *ctx, uint64_t g, bool check) {
  coll_shm *s = ctx->s;
  const shm_header *mine = header(s, s->rank, g);
  bool same_fp = true, same_where = true;
  for (int p = 0; p < s->size; p++) {
    const shm_header *h = header(s, p, g);
    same_fp &= !check || !memcmp(&h->fp, &mine->fp, sizeof mine->fp);
    same_where &= h->where == mine->where;
  }
  if (!same_fp) {
    coll_fingerprint all[COLL_SHM_MAX_RANKS];
    for (int p = 0; p < s->size; p++) all[p] = header(s, p, g)->fp;
    coll__mismatch_message(all, s->world, s->size, ctx->msg, ctx->n);
    return false;
  }
  if (!same_where) {
    coll_fingerprint fp = coll__fingerprint(ctx->r);
    char d[160];
    int k = snprintf(ctx->msg, ctx->n,
                     "%s: ranks passed different kinds of buffer (in place in memory from "
                     "coll_alloc_shared at the same offset, or not):",
                     coll__describe(&fp, d, sizeof d));
    for (int p = 0; p < s->size && k >= 0 && (size_t)k < ctx->n; p++) {
      int64_t w = header(s, p, g)->where;
      if (w < 0)
        k += snprintf(ctx->msg + k, ctx->n - (size_t)k, " rank %d: ordinary memory;", s->world[p]);
      else
        k += snprintf(ctx->msg + k, ctx->n - (size_t)k,
                      " rank %d: shared allocation %lld, byte %lld;", s->world[p],
                      (long long)(w >> 40), (long long)(w & (((int64_t)1 << 40) - 1)));
    }
    return false;
  }
  return true;
}

/* First element of part p of a chunk of len elements: parts start on SHM_LINE / 4 elements. */
static int64_t part_lo(int64_t len, int p, int W) {
  return p == W ? len : (len * p / W) & ~(int64_t)15;
}

/* ---- reductions of W parts, in rank order, into dst (which may be one of the parts) ---------- */
#define REDUCE_FN(name, T, ACC, LOAD, STORE, COMBINE)                                              \
  SHM_SIMD_CLONES static void name(void *dst, char *const *src, int W, int64_t n) {                \
    ACC acc[SHM_BLOCK];                                                                            \
    for (int64_t b = 0; b < n; b += SHM_BLOCK) {                                                   \
      int64_t m = n - b < SHM_BLOCK ? n - b : SHM_BLOCK;                                           \
      const T *s0 = (const T *)src[0] + b;                                                         \
      for (int64_t i = 0; i < m; i++) acc[i] = LOAD(s0[i]);                                        \
      for (int p = 1; p < W; p++) {                                                                \
        const T *sp = (const T *)src[p] + b;                                                       \
        for (int64_t i = 0; i < m; i++) {                                                          \
          ACC x = acc[i], y = LOAD(sp[i]);                                                         \
          acc[i] = COMBINE;                                                                        \
        }                                                                                          \
      }                                                                                            \
      T *d = (T *)dst + b;                                                                         \
      for (int64_t i = 0; i < m; i++) d[i] = STORE(acc[i]);                                        \
    }                                                                                              \
  }
#define ID(v) (v)
#define DIV_W(v) ((v) / (float)W) /* avg: the sum divided by the ranks, as it is stored */
#define SUM (x + y)
#define MAX (x > y ? x : y)
#define MIN (x < y ? x : y)
REDUCE_FN(f32_sum, float, float, ID, ID, SUM)
REDUCE_FN(f32_max, float, float, ID, ID, MAX)
REDUCE_FN(f32_min, float, float, ID, ID, MIN)
REDUCE_FN(f32_avg, float, float, ID, DIV_W, SUM)
REDUCE_FN(i64_sum, int64_t, int64_t, ID, ID, SUM)
REDUCE_FN(i64_max, int64_t, int64_t, ID, ID, MAX)
REDUCE_FN(i64_min, int64_t, int64_t, ID, ID, MIN)
REDUCE_FN(i32_sum, int32_t, int32_t, ID, ID, SUM)
REDUCE_FN(i32_max, int32_t, int32_t, ID, ID, MAX)
REDUCE_FN(i32_min, int32_t, int32_t, ID, ID, MIN)
REDUCE_FN(u8_sum, uint8_t, uint8_t, ID, ID, (uint8_t)(x + y))
REDUCE_FN(u8_max, uint8_t, uint8_t, ID, ID, MAX)
REDUCE_FN(u8_min, uint8_t, uint8_t, ID, ID, MIN)

/* 16-bit floats: each block converted to f32 in bulk (F16C where the CPU has it), combined in
 * f32 in rank order (avg: then divided by the ranks), rounded once. */
#define HALF_REDUCE_FN(name, TO32, FROM32, COMBINE, AVG)                                           \
  static void name(void *dst, char *const *src, int W, int64_t n) {                                \
    float acc[SHM_BLOCK], y[SHM_BLOCK];                                                            \
    for (int64_t b = 0; b < n; b += SHM_BLOCK) {                                                   \
      int64_t m = n - b < SHM_BLOCK ? n - b : SHM_BLOCK;                                           \
      TO32(acc, (const uint16_t *)src[0] + b, m);                                                  \
      for (int p = 1; p < W; p++) {                                                                \
        TO32(y, (const uint16_t *)src[p] + b, m);                                                  \
        for (int64_t i = 0; i < m; i++) {                                                          \
          float x = acc[i], v = y[i];                                                              \
          acc[i] = COMBINE;                                                                        \
        }                                                                                          \
      }                                                                                            \
      if (AVG)                                                                                     \
        for (int64_t i = 0; i < m; i++) acc[i] /= (float)W;                                        \
      FROM32((uint16_t *)dst + b, acc, m, 1.0f);                                                   \
    }                                                                                              \
  }
#define HSUM (x + v)
#define HMAX (x > v ? x : v)
#define HMIN (x < v ? x : v)
HALF_REDUCE_FN(bf16_sum, em_bf16_to_f32_n, em_f32_to_bf16_n, HSUM, false)
HALF_REDUCE_FN(bf16_max, em_bf16_to_f32_n, em_f32_to_bf16_n, HMAX, false)
HALF_REDUCE_FN(bf16_min, em_bf16_to_f32_n, em_f32_to_bf16_n, HMIN, false)
HALF_REDUCE_FN(bf16_avg, em_bf16_to_f32_n, em_f32_to_bf16_n, HSUM, true)
HALF_REDUCE_FN(f16_sum, em_f16_to_f32_n, em_f32_to_f16_n, HSUM, false)
HALF_REDUCE_FN(f16_max, em_f16_to_f32_n, em_f32_to_f16_n, HMAX, false)
HALF_REDUCE_FN(f16_min, em_f16_to_f32_n, em_f32_to_f16_n, HMIN, false)
HALF_REDUCE_FN(f16_avg, em_f16_to_f32_n, em_f32_to_f16_n, HSUM, true)

typedef void (*reduce_fn)(void *dst, char *const *src, int W, int64_t n);

/* The reduction for a dtype and operation; avg (floating dtypes) divides by the ranks as it
 * stores, so no second pass over the data is needed. */
static reduce_fn reduction(em_dtype dt, coll_redop op) {
  static const reduce_fn fns[EM_DTYPE_COUNT][4] = {
      [EM_F32] = {f32_sum, f32_max, f32_min, f32_avg},
      [EM_I64] = {i64_sum, i64_max, i64_min, NULL},
      [EM_I32] = {i32_sum, i32_max, i32_min, NULL},
      [EM_U8] = {u8_sum, u8_max, u8_min, NULL},
      [EM_BF16] = {bf16_sum, bf16_max, bf16_min, bf16_avg},
      [EM_F16] = {f16_sum, f16_max, f16_min, f16_avg},
  };
  int k = op == COLL_MAX ? 1 : op == COLL_MIN ? 2 : op == COLL_AVG ? 3 : 0;
  return (unsigned)dt < EM_DTYPE_COUNT ? fns[dt][k] : NULL;
}

/* Announce chunk g written. On an operation's first chunk (first), my header goes with it: the
 * fingerprint (when checking) and where my data is. */
static void arrive(const op_ctx *ctx, uint64_t g, bool first, bool check, int64_t where) {
  if (first) {
    shm_header *h = header(ctx->s, ctx->s->rank, g);
    if (check) h->fp = coll__fingerprint(ctx->r);
    h->where = where;
  }
  publish(ctx->s, F_WRITTEN, g);
}

/* Wait for every rank's chunk g; on an operation's first chunk, compare the headers. */
static em_status all_arrived(const op_ctx *ctx, uint64_t g, bool first, bool check) {
  if (!wait_all(ctx, F_WRITTEN, g)) return EM_ERR_TIMEOUT;
  return !first || same_everywhere(ctx, g, check) ? EM_OK : EM_ERR_COMM;
}

/* The shared region holding [p, p + bytes) of this rank, or -1. */
static int region_of(const coll_shm *s, const void *p, size_t bytes) {
  for (int k = 0; k < s->nregions; k++) {
    const shm_region *g = &s->regions[k];
    if (g->base && (const char *)p >= g->base[s->rank] &&
        (const char *)p + bytes <= g->base[s->rank] + g->bytes)
      return k;
  }
  return -1;
}

/* In place in a shared region: no staging. Each rank reduces its part of the chunk straight from
 * every rank's copy into its own, then copies the others' reduced parts from theirs. Nobody may
 * write a rank's copy until every rank has read it, so the operation ends when all have read
 * (consumed) its last chunk. */
static em_status allreduce_in_region(const op_ctx *ctx, int k, bool check) {
  coll_shm *s = ctx->s;
  const coll_req *r = ctx->r;
  const shm_region *reg = &s->regions[k];
  size_t es = em_dtype_size(r->dtype);
  reduce_fn fn = reduction(r->dtype, r->op);
  int W = s->size, me = s->rank;
  int64_t per = s->chunk / (int64_t)es, at = (char *)r->recv - reg->base[me];
  char *parts[COLL_SHM_MAX_RANKS];
  uint64_t g = 0;
  for (int64_t off = 0; off == 0 || off < r->count; off += per) {
    int64_t len = r->count - off < per ? r->count - off : per;
    g = ++s->gen;
    if (!begin_chunk(ctx, g)) return EM_ERR_TIMEOUT;
    arrive(ctx, g, off == 0, check, ((int64_t)k << 40) + at);
    em_status st = all_arrived(ctx, g, off == 0, check);
    if (st != EM_OK) return st;
    int64_t lo = part_lo(len, me, W), hi = part_lo(len, me + 1, W);
    for (int p = 0; p < W; p++) parts[p] = reg->base[p] + at + (off + lo) * (int64_t)es;
    if (hi > lo) fn(parts[me], parts, W, hi - lo);
    publish(s, F_REDUCED, g);
    if (!wait_all(ctx, F_REDUCED, g)) return EM_ERR_TIMEOUT;
    for (int p = 0; p < W; p++) {
      int64_t a = part_lo(len, p, W), b = part_lo(len, p + 1, W);
      size_t from = (size_t)(at + (off + a) * (int64_t)es);
      if (p != me && b > a) memcpy(reg->base[me] + from, reg->base[p] + from, (size_t)(b - a) * es);
    }
    publish(s, F_CONSUMED, g);
  }
  return wait_all(ctx, F_CONSUMED, g) ? EM_OK : EM_ERR_TIMEOUT;
}

/* The staged all-reduce. across (hierarchical, NULL inside one node): called on my reduced part
 * of each chunk between phases 2 and 3, to reduce it with the same part on the other nodes. */
static em_status allreduce(const op_ctx *ctx, bool check, coll_shm_across across, void *arg) {
  coll_shm *s = ctx->s;
  const coll_req *r = ctx->r;
  size_t es = em_dtype_size(r->dtype);
  /* Across nodes avg is a sum here: the caller divides by the world once every node's is in. */
  reduce_fn fn = reduction(r->dtype, across && r->op == COLL_AVG ? COLL_SUM : r->op);
  int W = s->size, me = s->rank;
  int64_t per = s->chunk / (int64_t)es; /* elements per chunk */
  const char *send = r->send;
  char *recv = r->recv;
  char *parts[COLL_SHM_MAX_RANKS];
  int k = send == recv && !across ? region_of(s, recv, (size_t)r->count * es) : -1;
  if (k >= 0) return allreduce_in_region(ctx, k, check);
  /* At least one chunk, empty for count 0, so that the check runs. */
  for (int64_t off = 0; off == 0 || off < r->count; off += per) {
    int64_t len = r->count - off < per ? r->count - off : per;
    uint64_t g = ++s->gen;
    if (!begin_chunk(ctx, g)) return EM_ERR_TIMEOUT;
    /* 1. my input in */
    memcpy(data(s, me, g), send + off * (int64_t)es, (size_t)len * es);
    arrive(ctx, g, off == 0, check, -1);
    em_status st = all_arrived(ctx, g, off == 0, check);
    if (st != EM_OK) return st;
    /* 2. my part of everyone's input, reduced in rank order into my stage */
    int64_t lo = part_lo(len, me, W), hi = part_lo(len, me + 1, W);
    for (int p = 0; p < W; p++) parts[p] = data(s, p, g) + lo * (int64_t)es;
    if (hi > lo) fn(parts[me], parts, W, hi - lo);
    /* 2b. across nodes: my part with the same part of every other node (the same length there:
     * every node has W ranks and cuts the chunk alike, so an empty part is empty everywhere) */
    if (across && hi > lo) {
      st = across(arg, parts[me], hi - lo, ctx->msg, ctx->n);
      if (st != EM_OK) return st;
    }
    publish(s, F_REDUCED, g);
    /* 3. every rank's reduced part out */
    if (!wait_all(ctx, F_REDUCED, g)) return EM_ERR_TIMEOUT;
    for (int p = 0; p < W; p++) {
      int64_t a = part_lo(len, p, W), b = part_lo(len, p + 1, W);
      if (b > a)
        memcpy(recv + (off + a) * (int64_t)es, data(s, p, g) + a * (int64_t)es,
               (size_t)(b - a) * es);
    }
    publish(s, F_CONSUMED, g);
  }
  return EM_OK;
}

/* One staged round per chunk of n elements, per at a time: put my part of chunk [off, off + len)
 * into my stage, arrive (on the first chunk the headers are compared), take what I need from
 * every rank's stage, consumed. Broadcast, reduce-scatter and all-gather are this loop with their
 * own put and take. */
typedef void (*chunk_fn)(const op_ctx *ctx, uint64_t g, int64_t off, int64_t len);

static em_status staged_rounds(const op_ctx *ctx, bool check, int64_t n, int64_t per,
                               chunk_fn put, chunk_fn take) {
  coll_shm *s = ctx->s;
  for (int64_t off = 0; off == 0 || off < n; off += per) {
    int64_t len = n - off < per ? n - off : per;
    uint64_t g = ++s->gen;
    if (!begin_chunk(ctx, g)) return EM_ERR_TIMEOUT;
    put(ctx, g, off, len);
    arrive(ctx, g, off == 0, check, -1);
    em_status st = all_arrived(ctx, g, off == 0, check);
    if (st != EM_OK) return st;
    take(ctx, g, off, len);
    publish(s, F_CONSUMED, g);
  }
  return EM_OK;
}

static size_t elem(const op_ctx *ctx) { return em_dtype_size(ctx->r->dtype); }

/* Broadcast: the root stages each chunk; the others copy it out of the root's stage. */
static int root_of(const op_ctx *ctx) { /* the root's node rank (the node is the world here) */
  int p = 0;
  while (p < ctx->s->size - 1 && ctx->s->world[p] != ctx->r->root) p++;
  return p;
}
static void bcast_put(const op_ctx *ctx, uint64_t g, int64_t off, int64_t len) {
  size_t es = elem(ctx);
  if (root_of(ctx) == ctx->s->rank)
    memcpy(data(ctx->s, ctx->s->rank, g), (char *)ctx->r->recv + off * (int64_t)es,
           (size_t)len * es);
}
static void bcast_take(const op_ctx *ctx, uint64_t g, int64_t off, int64_t len) {
  size_t es = elem(ctx);
  int root = root_of(ctx);
  if (root != ctx->s->rank)
    memcpy((char *)ctx->r->recv + off * (int64_t)es, data(ctx->s, root, g), (size_t)len * es);
}

/* Reduce-scatter: chunk g holds elements [off, off + len) of each of my W send blocks, block p at
 * p * len in my stage; rank r reduces block r of every rank's stage, in rank order, into its
 * recv[off, off + len). In place (recv is send) is safe: a chunk's input is staged before any of
 * its output is written, and later chunks read only later elements. */
static void rs_put(const op_ctx *ctx, uint64_t g, int64_t off, int64_t len) {
  size_t es = elem(ctx);
  int64_t n = ctx->r->count;
  for (int p = 0; p < ctx->s->size; p++)
    memcpy(data(ctx->s, ctx->s->rank, g) + p * len * (int64_t)es,
           (const char *)ctx->r->send + (p * n + off) * (int64_t)es, (size_t)len * es);
}
static void rs_take(const op_ctx *ctx, uint64_t g, int64_t off, int64_t len) {
  size_t es = elem(ctx);
  char *parts[COLL_SHM_MAX_RANKS];
  for (int p = 0; p < ctx->s->size; p++)
    parts[p] = data(ctx->s, p, g) + ctx->s->rank * len * (int64_t)es;
  if (len)
    reduction(ctx->r->dtype, ctx->r->op)((char *)ctx->r->recv + off * (int64_t)es, parts,
                                         ctx->s->size, len);
}

/* All-gather: chunk g holds elements [off, off + len) of my send; every rank copies every rank's
 * into its recv block. */
static void ag_put(const op_ctx *ctx, uint64_t g, int64_t off, int64_t len) {
  size_t es = elem(ctx);
  memcpy(data(ctx->s, ctx->s->rank, g), (const char *)ctx->r->send + off * (int64_t)es,
         (size_t)len * es);
}
static void ag_take(const op_ctx *ctx, uint64_t g, int64_t off, int64_t len) {
  size_t es = elem(ctx);
  for (int p = 0; p < ctx->s->size; p++)
    memcpy((char *)ctx->r->recv + (p * ctx->r->count + off) * (int64_t)es, data(ctx->s, p, g),
           (size_t)len * es);
}

/* One round of headers: every rank arrives, then (checking) compares. A barrier, and the
 * fingerprint check of an operation that then runs with MPI. */
static em_status round_trip(const op_ctx *ctx, bool check) {
  uint64_t g = ++ctx->s->gen;
  if (!begin_chunk(ctx, g)) return EM_ERR_TIMEOUT;
  arrive(ctx, g, true, check, -1);
  em_status st = all_arrived(ctx, g, true, check);
  if (st == EM_OK) publish(ctx->s, F_CONSUMED, g);
  return st;
}

bool coll__shm_runs(const coll_shm *s, const coll_req *r) {
  if (!s) return false;
  switch (r->kind) {
  case COLL_ALLREDUCE: return reduction(r->dtype, r->op) && em_dtype_size(r->dtype) > 0;
  case COLL_BROADCAST:
  case COLL_ALLGATHER: return em_dtype_size(r->dtype) > 0;
  case COLL_REDUCE_SCATTER: /* a chunk holds at least one element of every block */
    return reduction(r->dtype, r->op) && em_dtype_size(r->dtype) > 0 &&
           s->chunk >= (int64_t)em_dtype_size(r->dtype) * s->size;
  case COLL_BARRIER: return true;
  default: return false;
  }
}

em_status coll__shm_run(coll_shm *s, const coll_req *r, bool check, double limit, char *msg,
                        size_t n) {
  op_ctx ctx = {s, r, limit, msg, n};
  int64_t per = s->chunk / (int64_t)(em_dtype_size(r->dtype) ? em_dtype_size(r->dtype) : 1);
  switch (r->kind) {
  case COLL_ALLREDUCE: return allreduce(&ctx, check, NULL, NULL);
  case COLL_BROADCAST: return staged_rounds(&ctx, check, r->count, per, bcast_put, bcast_take);
  case COLL_REDUCE_SCATTER: /* a chunk holds len elements of each of the W blocks */
    return staged_rounds(&ctx, check, r->count, per / s->size, rs_put, rs_take);
  case COLL_ALLGATHER: return staged_rounds(&ctx, check, r->count, per, ag_put, ag_take);
  case COLL_BARRIER: return round_trip(&ctx, check);
  default:
    snprintf(msg, n, "%s: not a shared-memory operation", coll_kind_name(r->kind));
    return EM_ERR_UNSUPPORTED;
  }
}

em_status coll__shm_allreduce_across(coll_shm *s, const coll_req *r, coll_shm_across across,
                                     void *arg, double limit, char *msg, size_t n) {
  op_ctx ctx = {s, r, limit, msg, n};
  return allreduce(&ctx, false, across, arg);
}

em_status coll__shm_check(coll_shm *s, const coll_req *r, double limit, char *msg, size_t n) {
  op_ctx ctx = {s, r, limit, msg, n};
  return round_trip(&ctx, true);
}

coll_shm *coll__shm_new(void *node_comm, int rank, int size, const int *world, int64_t chunk) {
  MPI_Comm node = *(MPI_Comm *)node_comm;
  if (size < 2 || size > COLL_SHM_MAX_RANKS) {
    em_set_error(EM_ERR_UNSUPPORTED, "shared-memory all-reduce: %d ranks on the node (2 to %d)",
                 size, COLL_SHM_MAX_RANKS);
    return NULL;
  }
  coll_shm *s = calloc(1, sizeof *s);
  if (s) {
    s->flags = calloc((size_t)size, sizeof *s->flags);
    s->stage = calloc((size_t)size, sizeof *s->stage);
  }
  if (!s || !s->flags || !s->stage) {
    if (s) free(s->flags), free(s->stage);
    free(s);
    em_set_error(EM_ERR_NOMEM, "shared-memory all-reduce: out of memory");
    return NULL;
  }
  s->node = node;
  s->rank = rank;
  s->size = size;
  s->world = world;
  s->chunk = (chunk + SHM_LINE - 1) / SHM_LINE * SHM_LINE;
  s->slot = SHM_LINE + s->chunk;
  /* Each rank's flags then its stage buffers; its own memory is placed near it (noncontig). MPI
   * may start a segment anywhere (Open MPI: 8 bytes past a line): each rank's part starts at
   * its first cache line, the same offset in every process since mappings are page-aligned. */
  MPI_Aint mine = (MPI_Aint)(F_N * SHM_LINE) + (MPI_Aint)SHM_NBUF * (MPI_Aint)s->slot;
  MPI_Info info;
  MPI_Info_create(&info);
  MPI_Info_set(info, "alloc_shared_noncontig", "true");
  char *base = NULL;
  int err = MPI_Win_allocate_shared(mine + SHM_LINE, 1, info, node, &base, &s->win);
  MPI_Info_free(&info);
  bool ok = err == MPI_SUCCESS;
  if (ok) /* stage slots need no zeroing: a header is read only after its rank wrote it */
    memset(base + (SHM_LINE - (uintptr_t)base % SHM_LINE) % SHM_LINE, 0, F_N * SHM_LINE);
  for (int p = 0; p < size && ok; p++) {
    MPI_Aint sz;
    int disp;
    char *q = NULL;
    ok = MPI_Win_shared_query(s->win, p, &sz, &disp, &q) == MPI_SUCCESS && q &&
         sz >= mine + SHM_LINE;
    if (ok) q += (SHM_LINE - (uintptr_t)q % SHM_LINE) % SHM_LINE;
    s->flags[p] = (uint64_t *)q;
    s->stage[p] = q + F_N * SHM_LINE;
  }
  /* Every rank must agree before anyone relies on the segment: one rank's failure is all's. */
  int all_ok = ok;
  MPI_Allreduce(MPI_IN_PLACE, &all_ok, 1, MPI_INT, MPI_LAND, node);
  if (!all_ok) {
    if (err == MPI_SUCCESS) MPI_Win_free(&s->win);
    free(s->flags);
    free(s->stage);
    free(s);
    em_set_error(EM_ERR_BACKEND, "shared-memory all-reduce: no node-shared segment of %lld bytes",
                 (long long)mine);
    return NULL;
  }
  return s;
}

em_status coll__shm_alloc(coll_shm *s, size_t bytes, void **out, char *msg, size_t n) {
  *out = NULL;
  int k = 0;
  while (k < s->nregions && s->regions[k].base) k++;
  if (k == s->nregions) { /* no free entry: one more */
    shm_region *more = realloc(s->regions, (size_t)(k + 1) * sizeof *more);
    if (more) {
      s->regions = more;
      s->regions[s->nregions++] = (shm_region){0};
    }
  }
  /* Every rank must agree before anyone relies on the region: one rank's failure is all's. */
  shm_region g = {.win = MPI_WIN_NULL, .bytes = bytes};
  char *mine = NULL;
  g.base = calloc((size_t)s->size, sizeof *g.base);
  MPI_Info info; /* each rank's part on pages of its own, placed near it */
  MPI_Info_create(&info);
  MPI_Info_set(info, "alloc_shared_noncontig", "true");
  int ok = k < s->nregions && g.base &&
           MPI_Win_allocate_shared((MPI_Aint)(bytes ? bytes : 1), 1, info, s->node, &mine,
                                   &g.win) == MPI_SUCCESS;
  MPI_Info_free(&info);
  for (int p = 0; p < s->size && ok; p++) {
    MPI_Aint sz;
    int disp;
    ok = MPI_Win_shared_query(g.win, p, &sz, &disp, &g.base[p]) == MPI_SUCCESS && g.base[p] &&
         (size_t)sz >= bytes;
  }
  if (ok) memset(mine, 0, bytes);
  int all_ok = ok;
  MPI_Allreduce(MPI_IN_PLACE, &all_ok, 1, MPI_INT, MPI_LAND, s->node);
  if (!all_ok) {
    if (g.win != MPI_WIN_NULL) MPI_Win_free(&g.win);
    free(g.base);
    snprintf(msg, n, "coll_alloc_shared: no node-shared segment of %zu bytes on some rank", bytes);
    return EM_ERR_BACKEND;
  }
  MPI_Barrier(s->node); /* zeroed everywhere before anyone uses it */
  s->regions[k] = g;
  *out = mine;
  return EM_OK;
}

em_status coll__shm_release(coll_shm *s, void *p, char *msg, size_t n) {
  for (int k = 0; k < s->nregions; k++) {
    shm_region *g = &s->regions[k];
    if (g->base && g->base[s->rank] == p) {
      MPI_Win_free(&g->win); /* collective: every rank frees its own at the same point */
      free(g->base);
      *g = (shm_region){0};
      return EM_OK;
    }
  }
  snprintf(msg, n, "coll_free_shared: %p is not memory from coll_alloc_shared", p);
  return EM_ERR_INVALID;
}

void coll__shm_free(coll_shm *s) {
  if (!s) return;
  for (int k = 0; k < s->nregions; k++)
    if (s->regions[k].base) {
      MPI_Win_free(&s->regions[k].win);
      free(s->regions[k].base);
    }
  free(s->regions);
  MPI_Win_free(&s->win);
  free(s->flags);
  free(s->stage);
  free(s);
}
