/* checkpoint/crc.c: the checkpoint checksums (crc.h): the CRC-32 of tensor bytes and of the
 * header's canonical text, shared by the writer (write.c) and the reader (read.c). */
#include "checkpoint/crc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

uint32_t em__ckpt_crc(uint32_t crc, const void *p, size_t n) {
  const unsigned char *b = p;
  while (n > 0) {
    uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
    crc = (uint32_t)crc32(crc, b, k);
    b += k;
    n -= k;
  }
  return crc;
}

void em__ckpt_crc_str(uint32_t crc, char buf[9]) { snprintf(buf, 9, "%08" PRIx32, crc); }

/* A name with its index, sorted bytewise by name. */
typedef struct {
  const char *name;
  int i;
} named;

static int named_cmp(const void *a, const void *b) {
  return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

static uint32_t crc_str0(uint32_t crc, const char *s) {
  return em__ckpt_crc(crc, s, strlen(s) + 1);
}

uint32_t em__ckpt_header_crc(int n_meta, const char *const *keys, const char *const *vals, int n,
                             const em__ckpt_entry *e, int *ok) {
  size_t np = strlen(EM_CKPT_CRC_PREFIX);
  named *m = malloc(((size_t)n_meta + 1) * sizeof *m), *t = malloc(((size_t)n + 1) * sizeof *t);
  uint32_t crc = (uint32_t)crc32(0, Z_NULL, 0);
  *ok = m && t;
  if (!*ok) goto cleanup;
  int nm = 0;
  for (int i = 0; i < n_meta; i++)
    if (strncmp(keys[i], EM_CKPT_CRC_PREFIX, np)) m[nm++] = (named){keys[i], i};
  for (int i = 0; i < n; i++) t[i] = (named){e[i].name, i};
  qsort(m, (size_t)nm, sizeof *m, named_cmp);
  qsort(t, (size_t)n, sizeof *t, named_cmp);
  for (int i = 0; i < nm; i++) {
    crc = em__ckpt_crc(crc, "m", 1);
    crc = crc_str0(crc, keys[m[i].i]);
    crc = crc_str0(crc, vals[m[i].i]);
  }
  for (int i = 0; i < n; i++) {
    const em__ckpt_entry *x = &e[t[i].i];
    char num[48];
    crc = em__ckpt_crc(crc, "t", 1);
    crc = crc_str0(crc, x->name);
    crc = crc_str0(crc, x->dtype);
    for (int d = 0; d < x->ndim; d++) {
      snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", x->shape[d]);
      crc = em__ckpt_crc(crc, num, strlen(num));
    }
    crc = em__ckpt_crc(crc, "", 1);
    snprintf(num, sizeof num, "%" PRId64 ",%" PRId64, x->begin, x->end);
    crc = crc_str0(crc, num);
  }
cleanup:
  free(t);
  free(m);
  return crc;
}
