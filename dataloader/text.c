/* text.c: text files as byte-level tokens (dl.h, dl_text_open).
 *
 *   files matching the pattern, sorted, each once    the split [from, to) of their concatenation
 *   | a.txt ........ | b.txt .......... | c.txt .. |  ->  | split ................. |
 *                                                          window k: bytes [kT, kT + T] (T + 1)
 *
 * The windows are laid out as dl_tokens_open's (consecutive windows share one byte: the last
 * target of one is the first input of the next), so a language model trains on either the same
 * way. The split is read into memory at open (texts are small next to a model's activations). */
#include "dl.h"
#include "dl_paths.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The whole concatenation read must fit this (a guard against a pattern that names a disk). */
#define TEXT_MAX_BYTES ((int64_t)1 << 32)

typedef struct {
  uint8_t *bytes; /* the split */
  int64_t n;
  int64_t T;
} text_ctx;

static int64_t text_len(void *ctx) {
  const text_ctx *c = ctx;
  return (c->n - 1) / c->T;
}

static em_status text_get(void *ctx, int64_t index, void *const out[]) {
  const text_ctx *c = ctx;
  int64_t *dst = out[0];
  const uint8_t *src = c->bytes + index * c->T;
  for (int64_t i = 0; i <= c->T; i++) dst[i] = src[i];
  return EM_OK;
}

static void text_close(void *ctx) {
  text_ctx *c = ctx;
  if (!c) return;
  free(c->bytes);
  free(c);
}

/* Appends path's bytes to *buf (capacity *cap, length *len). */
static em_status append_file(const char *path, uint8_t **buf, int64_t *cap, int64_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return em_set_error(EM_ERR_IO, "dl_text_open: %s: cannot open (%s)", path, strerror(errno));
  em_status st = EM_OK;
  for (;;) {
    if (*len == *cap) {
      int64_t ncap = *cap ? 2 * *cap : (int64_t)1 << 16;
      uint8_t *nb = ncap <= TEXT_MAX_BYTES ? realloc(*buf, (size_t)ncap) : NULL;
      if (!nb) {
        st = em_set_error(ncap > TEXT_MAX_BYTES ? EM_ERR_INVALID : EM_ERR_NOMEM,
                          "dl_text_open: %s: the texts exceed %lld bytes", path,
                          (long long)(ncap > TEXT_MAX_BYTES ? TEXT_MAX_BYTES : ncap));
        break;
      }
      *buf = nb;
      *cap = ncap;
    }
    size_t got = fread(*buf + *len, 1, (size_t)(*cap - *len), f);
    *len += (int64_t)got;
    if (got == 0) {
      if (ferror(f))
        st = em_set_error(EM_ERR_IO, "dl_text_open: %s: read error at byte %lld", path,
                          (long long)*len);
      break;
    }
  }
  fclose(f);
  return st;
}

/* Whether paths[i] names the same file as an earlier path (a link to it, as GPL -> GPL-3). */
static bool seen_before(const struct stat *st, int64_t i) {
  for (int64_t k = 0; k < i; k++)
    if (st[k].st_dev == st[i].st_dev && st[k].st_ino == st[i].st_ino) return true;
  return false;
}

dl_dataset *dl_text_open(const char *pattern, int64_t T, double from, double to,
                         double *unigram_bits) {
  static const dl_dataset_fns fns = {text_len, text_get, text_close};
  char **paths = NULL;
  size_t npaths = 0;
  struct stat *st = NULL;
  uint8_t *all = NULL;
  int64_t cap = 0, len = 0;
  text_ctx *c = NULL;
  if (T < 1 || T > ((int64_t)1 << 24) || !(from >= 0 && from < to && to <= 1)) {
    em_set_error(EM_ERR_INVALID,
                 "dl_text_open(%s): T = %lld (expected 1..2^24), split [%g, %g) (expected "
                 "0 <= from < to <= 1)",
                 pattern ? pattern : "NULL", (long long)T, from, to);
    goto fail;
  }
  if (dl_paths_glob("dl_text_open", pattern, &paths, &npaths) != EM_OK) goto fail;
  st = calloc(npaths, sizeof *st);
  if (!st) {
    em_set_error(EM_ERR_NOMEM, "dl_text_open(%s): out of memory", pattern);
    goto fail;
  }
  for (size_t i = 0; i < npaths; i++) {
    if (stat(paths[i], &st[i]) != 0) {
      em_set_error(EM_ERR_IO, "dl_text_open: %s: cannot stat (%s)", paths[i], strerror(errno));
      goto fail;
    }
    if (!S_ISREG(st[i].st_mode) || seen_before(st, (int64_t)i)) continue;
    if (append_file(paths[i], &all, &cap, &len) != EM_OK) goto fail;
  }
  int64_t lo = (int64_t)floor(from * (double)len), hi = (int64_t)floor(to * (double)len);
  if (hi - lo < T + 1) {
    em_set_error(EM_ERR_INVALID,
                 "dl_text_open: '%s' has %lld bytes; its split [%g, %g) holds %lld, fewer than "
                 "one window of T+1 = %lld",
                 pattern, (long long)len, from, to, (long long)(hi - lo), (long long)T + 1);
    goto fail;
  }
  c = calloc(1, sizeof *c);
  if (c) c->bytes = malloc((size_t)(hi - lo));
  if (!c || !c->bytes) {
    em_set_error(EM_ERR_NOMEM, "dl_text_open(%s): out of memory for %lld bytes", pattern,
                 (long long)(hi - lo));
    goto fail;
  }
  memcpy(c->bytes, all + lo, (size_t)(hi - lo));
  c->n = hi - lo;
  c->T = T;
  if (unigram_bits) {
    int64_t count[256] = {0};
    for (int64_t i = 0; i < c->n; i++) count[c->bytes[i]]++;
    double h = 0;
    for (int b = 0; b < 256; b++)
      if (count[b]) {
        double p = (double)count[b] / (double)c->n;
        h -= p * log2(p);
      }
    *unigram_bits = h;
  }
  free(all);
  free(st);
  dl_paths_free(paths, npaths);
  const dl_field f = {.name = "tokens", .dtype = EM_I64, .ndim = 1, .shape = {T + 1}};
  return dl_dataset_new(&f, 1, &fns, c); /* closes c on failure */
fail:
  free(all);
  free(st);
  dl_paths_free(paths, npaths);
  text_close(c);
  return NULL;
}
