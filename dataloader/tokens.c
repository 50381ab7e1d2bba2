/* tokens.c: token shards in llm.c's format, memory mapped, as a dataset of fixed windows (dl.h).
 *
 * Shard layout (all little-endian):
 *
 *   byte 0      int32 magic 20240520
 *   byte 4      int32 version 1
 *   byte 8      int32 n, the number of tokens
 *   byte 12     zeros up to byte 1024 (256 int32 in all)
 *   byte 1024   n uint16 tokens; the file ends exactly at byte 1024 + 2n
 *
 * Windows: shard s with n_s tokens holds w_s = (n_s - 1) / T windows of T+1 tokens (0 if
 * n_s < T+1); window k starts at token k*T, so consecutive windows overlap by one token (the
 * last target of one is the first input of the next) and none crosses a shard. Samples are the
 * windows of shard 0, then of shard 1, ...:
 *
 *   first[s] = w_0 + ... + w_{s-1}      (nshards + 1 entries; first[nshards] = len)
 *   sample i -> shard s with first[s] <= i < first[s+1] (binary search), window i - first[s]
 *
 * A shard truncated or replaced while it is mapped would fault on access: shards are meant to be
 * written once (dl_tokens_write renames a complete file into place) and then only read. */
#include "dl.h"
#include "dl_paths.h"
#include "em_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOK_MAGIC 20240520
#define TOK_VERSION 1
#define TOK_HEADER_BYTES 1024
/* Longest window accepted (T): one sample must stay a sane buffer. */
#define TOK_MAX_T ((int64_t)1 << 30)

typedef struct {
  const uint8_t *map; /* whole file, read-only; tokens at map + TOK_HEADER_BYTES */
  size_t size;        /* file bytes */
  int64_t ntok;
} shard;

typedef struct {
  shard *shards;  /* (nshards) */
  int64_t *first; /* (nshards + 1) prefix sums of windows per shard */
  int nshards;
  int64_t T;
} tok_ctx;

/* Little-endian loads and stores, byte by byte: independent of the host's byte order (compilers
 * turn them into single loads on little-endian hosts). */
static inline uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline void put_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static int64_t tok_len(void *ctx) {
  const tok_ctx *c = ctx;
  return c->first[c->nshards];
}

/* out[0]: (T+1) i64, tokens [k*T, k*T + T] of the shard holding window `index`. */
static em_status tok_get(void *ctx, int64_t index, void *const out[]) {
  const tok_ctx *c = ctx;
  int lo = 0, hi = c->nshards - 1; /* smallest s with first[s+1] > index (skips empty shards) */
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (c->first[mid + 1] > index)
      hi = mid;
    else
      lo = mid + 1;
  }
  const shard *s = &c->shards[lo];
  int64_t start = (index - c->first[lo]) * c->T;
  const uint8_t *p = s->map + TOK_HEADER_BYTES + 2 * (size_t)start;
  int64_t *restrict dst = out[0];
#pragma omp simd
  for (int64_t k = 0; k <= c->T; k++) dst[k] = le16(p + 2 * k);
  return EM_OK;
}

static void tok_close(void *ctx) {
  tok_ctx *c = ctx;
  if (!c) return;
  for (int s = 0; s < c->nshards; s++)
    if (c->shards[s].map) munmap((void *)c->shards[s].map, c->shards[s].size);
  free(c->shards);
  free(c->first);
  free(c);
}

/* Open, map and check one shard into *sh (left zeroed on error, with the message naming path
 * and the byte offset at fault). */
static em_status map_shard(const char *path, shard *sh) {
  em_status st = EM_OK;
  memset(sh, 0, sizeof *sh);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return em_set_error(EM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    st = em_set_error(EM_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    goto done;
  }
  if (!S_ISREG(sb.st_mode)) {
    st = em_set_error(EM_ERR_IO, "%s: not a regular file", path);
    goto done;
  }
  if (sb.st_size < TOK_HEADER_BYTES) {
    st = em_set_error(EM_ERR_FORMAT,
                      "%s: byte offset %lld: the token shard header needs %d bytes but the file "
                      "has %lld",
                      path, (long long)sb.st_size, TOK_HEADER_BYTES, (long long)sb.st_size);
    goto done;
  }
  void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) {
    st = em_set_error(EM_ERR_IO, "%s: cannot mmap %lld bytes: %s", path, (long long)sb.st_size,
                      strerror(errno));
    goto done;
  }
  sh->map = map;
  sh->size = (size_t)sb.st_size;
  uint32_t magic = le32(sh->map), version = le32(sh->map + 4);
  int32_t count = (int32_t)le32(sh->map + 8);
  int64_t want = TOK_HEADER_BYTES + 2 * (int64_t)count; /* bytes the header promises */
  if (magic != TOK_MAGIC) {
    st = em_set_error(EM_ERR_FORMAT,
                      "%s: byte offset 0: magic %u, expected %d (an llm.c token shard)", path,
                      magic, TOK_MAGIC);
  } else if (version != TOK_VERSION) {
    st = em_set_error(EM_ERR_FORMAT, "%s: byte offset 4: version %u, expected %d", path, version,
                      TOK_VERSION);
  } else if (count < 0) {
    st = em_set_error(EM_ERR_FORMAT, "%s: byte offset 8: token count %d, expected >= 0", path,
                      (int)count);
  } else if ((int64_t)sh->size < want) {
    st = em_set_error(EM_ERR_FORMAT,
                      "%s: byte offset %lld: data ends after %lld bytes of tokens, but the "
                      "header's count of %d tokens (byte offset 8) promises %lld bytes",
                      path, (long long)sh->size, (long long)sh->size - TOK_HEADER_BYTES, (int)count,
                      (long long)want - TOK_HEADER_BYTES);
  } else if ((int64_t)sh->size > want) {
    st = em_set_error(EM_ERR_FORMAT,
                      "%s: byte offset %lld: %lld trailing bytes after the %d tokens the header "
                      "promises (file has %lld bytes, expected %lld)",
                      path, (long long)want, (long long)sh->size - want, (int)count,
                      (long long)sh->size, (long long)want);
  }
  sh->ntok = count;
done:
  close(fd);
  if (st != EM_OK) {
    if (sh->map) munmap((void *)sh->map, sh->size);
    memset(sh, 0, sizeof *sh);
  }
  return st;
}

dl_dataset *dl_tokens_open(const char *pattern, int64_t T) {
  static const dl_dataset_fns fns = {tok_len, tok_get, tok_close};
  tok_ctx *c = NULL;
  char **paths = NULL;
  size_t npaths = 0;
  if (!pattern) {
    em_set_error(EM_ERR_INVALID, "dl_tokens_open: pattern is NULL");
    goto fail;
  }
  if (T < 1 || T > TOK_MAX_T) {
    em_set_error(EM_ERR_INVALID, "dl_tokens_open(%s): T = %lld, expected 1..%lld", pattern,
                 (long long)T, (long long)TOK_MAX_T);
    goto fail;
  }
  if (dl_paths_glob("dl_tokens_open", pattern, &paths, &npaths) != EM_OK) goto fail;

  c = calloc(1, sizeof *c);
  if (c) c->shards = calloc(npaths, sizeof *c->shards);
  if (c) c->first = calloc(npaths + 1, sizeof *c->first);
  if (!c || !c->shards || !c->first) {
    em_set_error(EM_ERR_NOMEM, "dl_tokens_open(%s): out of memory for %zu shards", pattern,
                 (size_t)npaths);
    goto fail;
  }
  c->T = T;
  for (size_t s = 0; s < npaths; s++) {
    if (map_shard(paths[s], &c->shards[s]) != EM_OK) goto fail;
    c->nshards = (int)s + 1; /* so that tok_close unmaps exactly what was mapped */
    int64_t n = c->shards[s].ntok;
    c->first[s + 1] = c->first[s] + (n >= T + 1 ? (n - 1) / T : 0);
  }
  if (c->first[c->nshards] == 0) {
    em_set_error(EM_ERR_INVALID,
                 "dl_tokens_open: '%s' (%d shard%s) holds no window of T+1 = %lld tokens "
                 "(T = %lld): every shard has fewer than %lld tokens",
                 pattern, c->nshards, c->nshards == 1 ? "" : "s", (long long)T + 1, (long long)T,
                 (long long)T + 1);
    goto fail;
  }
  dl_paths_free(paths, npaths);

  const dl_field f = {.name = "tokens", .dtype = EM_I64, .ndim = 1, .shape = {T + 1}};
  return dl_dataset_new(&f, 1, &fns, c); /* closes c on failure */
fail:
  dl_paths_free(paths, npaths);
  tok_close(c);
  return NULL;
}

em_status dl_tokens_write(const char *path, const uint16_t *tokens, int64_t n) {
  if (!path || n < 0 || n > INT32_MAX || (n > 0 && !tokens))
    return em_set_error(
        EM_ERR_INVALID, "dl_tokens_write(%s): %lld tokens%s, expected 0..%d from a non-NULL array",
        path ? path : "NULL path", (long long)n, tokens ? "" : " (tokens NULL)", INT32_MAX);
  em_atomic_file *f = em_atomic_file_open(path);
  if (!f) return em_last_status();
  uint8_t hdr[TOK_HEADER_BYTES];
  memset(hdr, 0, sizeof hdr);
  put_le32(hdr, TOK_MAGIC);
  put_le32(hdr + 4, TOK_VERSION);
  put_le32(hdr + 8, (uint32_t)n);
  em_status st = em_atomic_file_write(f, hdr, sizeof hdr);
  uint8_t buf[8192]; /* tokens as little-endian bytes, a chunk at a time */
  for (int64_t i = 0; i < n && st == EM_OK;) {
    size_t m = 0;
    for (; m < sizeof buf / 2 && i < n; m++, i++) {
      buf[2 * m] = (uint8_t)tokens[i];
      buf[2 * m + 1] = (uint8_t)(tokens[i] >> 8);
    }
    st = em_atomic_file_write(f, buf, 2 * m);
  }
  if (st != EM_OK) {
    em_atomic_file_abort(f);
    return st;
  }
  return em_atomic_file_commit(f); /* fsync, rename into place, fsync the directory */
}
