/* checkpoint/read.c: reading safetensors checkpoints and loading them into modules and
 * optimizers (see em_checkpoint.h). Uses only the public em_ckpt API (checkpoint.c).
 *
 * Reading checks every size before trusting it: the header length against the file size, the
 * JSON, each entry's dtype, shape and data_offsets against the data section, and overlaps. Only
 * then does it allocate the tensors and read, with pread, straight into them. Holes between
 * tensors and bytes after the last one are accepted (other writers may pad; Ember's do not).
 * When the file has checksums (crc.h), the header's is checked before anything is allocated and
 * each tensor's once its bytes are read; em_ckpt_verify does the same in 1 MiB pieces.
 *
 * Loading compares the checkpoint's prefix+ tensors with the live object's, collects every
 * difference into one message, and copies nothing unless all of them match. */
#include "checkpoint/crc.h"
#include "core/internal.h"
#include "core/kernels.h"
#include "em_checkpoint.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The header may not be larger than this (a corrupt length must not make us allocate
 * gigabytes); the safetensors library allows 100 MB. */
#define MAX_HEADER_BYTES ((uint64_t)256 << 20)
/* The largest integer a JSON number (a double in cJSON) holds exactly. */
#define MAX_JSON_INT 9007199254740992.0
/* Room for the list of differences in a load error (em_set_error keeps 1024 bytes). */
#define DIFF_MSG_LEN 760

/* safetensors dtype strings, indexed by em_dtype (as in checkpoint.c). */
static const char *const st_dtype[EM_DTYPE_COUNT] = {
    [EM_F32] = "F32", [EM_I64] = "I64",   [EM_I32] = "I32",
    [EM_U8] = "U8",   [EM_BF16] = "BF16", [EM_F16] = "F16",
};
/* Valid safetensors dtypes that Ember does not hold (an "unsupported", not a "malformed"). */
static const char *const st_other_dtypes[] = {
    "F64",     "I16",     "I8",      "U16",     "U32", "U64", "BOOL",       "F8_E4M3",
    "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",  "C64", "F8_E4M3FNUZ"};

/* "(256, 784)"; "()" for a scalar. */
static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t len = (size_t)snprintf(buf, n, "(");
  for (int d = 0; d < ndim && len < n; d++)
    len += (size_t)snprintf(buf + len, n - len, "%s%lld", d ? ", " : "", (long long)shape[d]);
  if (len < n) snprintf(buf + len, n - len, ")");
  return buf;
}

/* The index of tensor name in c, or -1. */
static int index_of(const em_ckpt *c, const char *name) {
  for (int i = 0, n = em_ckpt_count(c); i < n; i++)
    if (!strcmp(em_ckpt_name_at(c, i), name)) return i;
  return -1;
}

/* The value of metadata key, or NULL with an error naming it. */
static const char *meta_checked(const em_ckpt *c, const char *key, const char *what) {
  const char *v = em_ckpt_meta(c, key);
  if (!v) em_set_error(EM_ERR_INVALID, "checkpoint: no metadata key '%s' (expected %s)", key, what);
  return v;
}

/* ---- reading --------------------------------------------------------------------------- */
/* One tensor entry of a header being read. */
typedef struct {
  const char *name; /* borrowed from the cJSON tree */
  em_dtype dtype;
  int ndim;
  int64_t shape[EM_MAX_DIMS];
  int64_t begin, end; /* data_offsets */
  uint32_t crc;       /* its checksum, when the file has checksums */
} span;

/* Read exactly n bytes at file offset off; an error names path, offset and what. */
static em_status pread_all(int fd, const char *path, void *buf, size_t n, int64_t off,
                           const char *what) {
  char *p = buf;
  size_t got = 0;
  while (got < n) {
    size_t want = n - got > ((size_t)1 << 30) ? ((size_t)1 << 30) : n - got;
    ssize_t r = pread(fd, p + got, want, (off_t)(off + (int64_t)got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0)
      return em_set_error(EM_ERR_IO, "%s: byte offset %lld: reading %s failed: %s", path,
                          (long long)(off + (int64_t)got), what, strerror(errno));
    if (r == 0)
      return em_set_error(EM_ERR_FORMAT,
                          "%s: byte offset %lld: file ends while reading %s (%zu of %zu bytes)",
                          path, (long long)(off + (int64_t)got), what, got, n);
    got += (size_t)r;
  }
  return EM_OK;
}

/* A JSON number that is an integer in [0, 2^53]. */
static bool json_index(const cJSON *v, int64_t *out) {
  if (!cJSON_IsNumber(v)) return false;
  double d = v->valuedouble;
  if (!(d >= 0 && d <= MAX_JSON_INT) || d != floor(d)) return false;
  *out = (int64_t)d;
  return true;
}

/* Parse and check one tensor entry against a data section of data_bytes. */
static em_status parse_entry(const char *path, const cJSON *e, int64_t data_bytes, span *s) {
  const char *name = e->string;
  s->name = name;
  if (!name[0]) return em_set_error(EM_ERR_FORMAT, "%s: a tensor has an empty name", path);
  if (!cJSON_IsObject(e))
    return em_set_error(EM_ERR_FORMAT,
                        "%s: tensor '%s': expected an object with dtype, shape "
                        "and data_offsets",
                        path, name);
  const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
  const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
  const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
  if (!cJSON_IsString(dt))
    return em_set_error(EM_ERR_FORMAT, "%s: tensor '%s': dtype missing or not a string", path,
                        name);
  int d = 0;
  while (d < EM_DTYPE_COUNT && strcmp(st_dtype[d], dt->valuestring)) d++;
  if (d == EM_DTYPE_COUNT) {
    for (size_t i = 0; i < sizeof st_other_dtypes / sizeof *st_other_dtypes; i++)
      if (!strcmp(st_other_dtypes[i], dt->valuestring))
        return em_set_error(EM_ERR_UNSUPPORTED,
                            "%s: tensor '%s': dtype %s is not supported (Ember holds F32, I64, "
                            "I32, U8, BF16, F16)",
                            path, name, dt->valuestring);
    return em_set_error(EM_ERR_FORMAT,
                        "%s: tensor '%s': unknown dtype '%.40s' (expected F32, I64, I32, U8, "
                        "BF16 or F16)",
                        path, name, dt->valuestring);
  }
  s->dtype = (em_dtype)d;
  int nd = cJSON_IsArray(sh) ? cJSON_GetArraySize(sh) : -1;
  if (nd < 0 || nd > EM_MAX_DIMS)
    return em_set_error(EM_ERR_FORMAT,
                        "%s: tensor '%s': shape must be an array of at most %d "
                        "sizes",
                        path, name, EM_MAX_DIMS);
  s->ndim = nd;
  int64_t numel = 1;
  const cJSON *x;
  int i = 0;
  cJSON_ArrayForEach(x, sh) {
    if (!json_index(x, &s->shape[i]))
      return em_set_error(EM_ERR_FORMAT,
                          "%s: tensor '%s': shape entry %d is not a non-negative integer", path,
                          name, i);
    if (s->shape[i] > 0 && numel > (INT64_MAX / 16) / s->shape[i])
      return em_set_error(EM_ERR_FORMAT, "%s: tensor '%s': shape too large", path, name);
    numel *= s->shape[i++];
  }
  if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 ||
      !json_index(cJSON_GetArrayItem(of, 0), &s->begin) ||
      !json_index(cJSON_GetArrayItem(of, 1), &s->end) || s->end < s->begin)
    return em_set_error(EM_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets must be [begin, end] with 0 <= begin <= "
                        "end",
                        path, name);
  char sbuf[EM_SHAPE_STR_LEN];
  int64_t want = numel * (int64_t)em_dtype_size(s->dtype);
  if (s->end - s->begin != want)
    return em_set_error(EM_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%lld, %lld] span %lld bytes, but shape "
                        "%s of %s needs %lld",
                        path, name, (long long)s->begin, (long long)s->end,
                        (long long)(s->end - s->begin), shape_str(nd, s->shape, sbuf, sizeof sbuf),
                        st_dtype[d], (long long)want);
  if (s->end > data_bytes)
    return em_set_error(EM_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%lld, %lld] end past the data section "
                        "(%lld bytes): the file is truncated or corrupt",
                        path, name, (long long)s->begin, (long long)s->end, (long long)data_bytes);
  return EM_OK;
}

static int span_cmp(const void *a, const void *b) {
  const span *x = *(const span *const *)a, *y = *(const span *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return (x->end > y->end) - (x->end < y->end);
}

/* Metadata: an object of strings, stored into c, except the checksums (crc.h), which stay in
 * the JSON tree for check_sums. *has_crc: whether there is any. */
static em_status parse_meta(const char *path, const cJSON *m, em_ckpt *c, bool *has_crc) {
  if (!cJSON_IsObject(m))
    return em_set_error(EM_ERR_FORMAT, "%s: __metadata__ must be an object of strings", path);
  size_t np = strlen(EM_CKPT_CRC_PREFIX);
  const cJSON *x;
  cJSON_ArrayForEach(x, m) {
    if (!cJSON_IsString(x))
      return em_set_error(EM_ERR_FORMAT, "%s: __metadata__ value for '%s' is not a string", path,
                          x->string);
    bool crc = !strncmp(x->string, EM_CKPT_CRC_PREFIX, np);
    *has_crc = *has_crc || crc;
    for (const cJSON *y = m->child; crc && y != x; y = y->next)
      if (!strcmp(y->string, x->string))
        return em_set_error(EM_ERR_FORMAT, "%s: __metadata__ key '%s' appears twice", path,
                            x->string);
    if (crc) continue;
    if (em_ckpt_meta(c, x->string))
      return em_set_error(EM_ERR_FORMAT, "%s: __metadata__ key '%s' appears twice", path,
                          x->string);
    em_status st = em_ckpt_set_meta(c, x->string, x->valuestring);
    if (st != EM_OK) return st;
  }
  return EM_OK;
}

/* The checksum stored under key in m: 8 hex digits. */
static em_status stored_crc(const char *path, const cJSON *m, const char *key, uint32_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);
  if (!v)
    return em_set_error(EM_ERR_FORMAT,
                        "%s: the file has checksums, but none under '%s' (a corrupt header, or "
                        "a file edited by another tool)",
                        path, key);
  const char *s = v->valuestring;
  if (strlen(s) != 8 || strspn(s, "0123456789abcdef") != 8)
    return em_set_error(EM_ERR_FORMAT, "%s: __metadata__ '%s' = '%.40s' is not 8 hex digits", path,
                        key, s);
  *out = (uint32_t)strtoul(s, NULL, 16);
  return EM_OK;
}

/* Checks the header's checksum and finds each tensor's (sp[j].crc); every checksum key must name
 * a tensor. */
static em_status check_sums(const char *path, const cJSON *m, span *sp, int ns) {
  em_status st = EM_OK;
  int n_meta = cJSON_GetArraySize(m), k = 0, ok = 0;
  const char **keys = malloc(((size_t)n_meta + 1) * sizeof *keys);
  const char **vals = malloc(((size_t)n_meta + 1) * sizeof *vals);
  em__ckpt_entry *e = malloc(((size_t)ns + 1) * sizeof *e);
  char *key = NULL;
  if (!keys || !vals || !e) goto nomem;
  const cJSON *x;
  cJSON_ArrayForEach(x, m) {
    keys[k] = x->string;
    vals[k++] = x->valuestring;
  }
  for (int j = 0; j < ns; j++)
    e[j] = (em__ckpt_entry){sp[j].name,  st_dtype[sp[j].dtype], sp[j].ndim,
                            sp[j].shape, sp[j].begin,           sp[j].end};
  uint32_t want, got = em__ckpt_header_crc(k, keys, vals, ns, e, &ok);
  if (!ok) goto nomem;
  if ((st = stored_crc(path, m, EM_CKPT_CRC_HEADER, &want)) != EM_OK) goto cleanup;
  if (want != got) {
    st = em_set_error(EM_ERR_FORMAT,
                      "%s: header checksum mismatch: expected crc32 %08x (%s), found %08x: the "
                      "tensor table or metadata is corrupt",
                      path, (unsigned)want, EM_CKPT_CRC_HEADER, (unsigned)got);
    goto cleanup;
  }
  for (int j = 0; j < ns; j++) {
    free(key);
    if (!(key = em__concat(EM_CKPT_CRC_PREFIX, sp[j].name))) goto nomem;
    if ((st = stored_crc(path, m, key, &sp[j].crc)) != EM_OK) goto cleanup;
  }
  size_t np = strlen(EM_CKPT_CRC_PREFIX);
  for (int i = 0; i < k; i++) {
    if (strncmp(keys[i], EM_CKPT_CRC_PREFIX, np) || !strcmp(keys[i], EM_CKPT_CRC_HEADER)) continue;
    int j = 0;
    while (j < ns && strcmp(sp[j].name, keys[i] + np)) j++;
    if (j == ns) {
      st = em_set_error(EM_ERR_FORMAT, "%s: __metadata__ '%s' is the checksum of no tensor", path,
                        keys[i]);
      goto cleanup;
    }
  }
  goto cleanup;
nomem:
  st = em_set_error(EM_ERR_NOMEM, "%s: out of memory checking the header", path);
cleanup:
  free(key);
  free(e);
  free(vals);
  free(keys);
  return st;
}

/* A file whose header has been read and every entry checked. */
typedef struct {
  int fd;
  int64_t data_start;
  char *hdr;
  cJSON *root;
  em_ckpt *c; /* the metadata (without checksums); em_ckpt_read adds the tensors */
  span *sp;   /* ns entries in header order */
  span **by_off;
  int ns;
  bool has_crc;
} header;

static void header_close(header *h) {
  if (h->fd >= 0) close(h->fd);
  free(h->by_off);
  free(h->sp);
  cJSON_Delete(h->root);
  free(h->hdr);
  em_ckpt_free(h->c);
}

/* Opens path and checks its header: the length against the file size, the JSON, each entry, the
 * overlaps and, when the file has them, the checksums of the header. */
static em_status read_header(const char *path, header *h) {
  em_status st = EM_OK;
  unsigned char len8[8];
  *h = (header){.fd = open(path, O_RDONLY | O_CLOEXEC)};
  if (h->fd < 0) return em_set_error(EM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(h->fd, &sb) != 0 || !S_ISREG(sb.st_mode))
    return em_set_error(EM_ERR_IO, "%s: not a regular file", path);
  int64_t size = (int64_t)sb.st_size;
  if (size < 8)
    return em_set_error(EM_ERR_FORMAT,
                        "%s: byte offset 0: the file is %lld bytes, too short for "
                        "the 8-byte header length",
                        path, (long long)size);
  if ((st = pread_all(h->fd, path, len8, 8, 0, "the header length")) != EM_OK) return st;
  uint64_t n = 0;
  for (int b = 7; b >= 0; b--) n = n << 8 | len8[b];
  if (n > (uint64_t)(size - 8) || n > MAX_HEADER_BYTES || n < 2)
    return em_set_error(EM_ERR_FORMAT,
                        "%s: byte offset 0: header length %llu, but the file has %lld bytes "
                        "after byte offset 8 (file size %lld; at most %llu allowed): truncated "
                        "or not a safetensors file",
                        path, (unsigned long long)n, (long long)(size - 8), (long long)size,
                        (unsigned long long)MAX_HEADER_BYTES);
  int64_t data_start = h->data_start = 8 + (int64_t)n, data_bytes = size - data_start;
  if (!(h->hdr = malloc(n + 1))) goto nomem;
  if ((st = pread_all(h->fd, path, h->hdr, n, 8, "the JSON header")) != EM_OK) return st;
  h->hdr[n] = '\0';
  const char *end = NULL;
  h->root = cJSON_ParseWithLengthOpts(h->hdr, n, &end, 0);
  if (!h->root)
    return em_set_error(EM_ERR_FORMAT,
                        "%s: byte offset %lld: invalid JSON in the header (bytes 8 "
                        "to %lld)",
                        path, (long long)(8 + (end ? end - h->hdr : 0)), (long long)data_start);
  for (const char *p = end; p < h->hdr + n; p++)
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
      return em_set_error(EM_ERR_FORMAT,
                          "%s: byte offset %lld: unexpected data after the JSON "
                          "header",
                          path, (long long)(8 + (p - h->hdr)));
  if (!cJSON_IsObject(h->root))
    return em_set_error(EM_ERR_FORMAT, "%s: byte offset 8: the JSON header is not an object", path);
  int n_items = cJSON_GetArraySize(h->root);
  h->c = em_ckpt_new();
  h->sp = calloc((size_t)n_items + 1, sizeof *h->sp);
  h->by_off = calloc((size_t)n_items + 1, sizeof *h->by_off);
  if (!h->c || !h->sp || !h->by_off) goto nomem;
  const cJSON *e, *meta = NULL;
  cJSON_ArrayForEach(e, h->root) {
    if (!strcmp(e->string, "__metadata__")) {
      if (meta) return em_set_error(EM_ERR_FORMAT, "%s: __metadata__ appears twice", path);
      meta = e;
      if ((st = parse_meta(path, e, h->c, &h->has_crc)) != EM_OK) return st;
      continue;
    }
    span *s = &h->sp[h->ns];
    if ((st = parse_entry(path, e, data_bytes, s)) != EM_OK) return st;
    for (int j = 0; j < h->ns; j++)
      if (!strcmp(h->sp[j].name, s->name))
        return em_set_error(EM_ERR_FORMAT, "%s: tensor '%s' appears twice", path, s->name);
    h->by_off[h->ns] = s;
    h->ns++;
  }
  if (h->has_crc && (st = check_sums(path, meta, h->sp, h->ns)) != EM_OK) return st;
  if (h->ns > 1) qsort(h->by_off, (size_t)h->ns, sizeof *h->by_off, span_cmp);
  const span *prev = NULL; /* the non-empty span reaching furthest so far */
  for (int j = 0; j < h->ns; j++) {
    const span *s = h->by_off[j];
    if (s->end == s->begin) continue;
    if (prev && s->begin < prev->end)
      return em_set_error(EM_ERR_FORMAT,
                          "%s: tensors '%s' [%lld, %lld] and '%s' [%lld, %lld] overlap", path,
                          prev->name, (long long)prev->begin, (long long)prev->end, s->name,
                          (long long)s->begin, (long long)s->end);
    if (!prev || s->end > prev->end) prev = s;
  }
  return EM_OK;
nomem:
  return em_set_error(EM_ERR_NOMEM, "%s: out of memory reading the header", path);
}

/* The error for tensor s whose bytes have CRC got. */
static em_status crc_mismatch(const char *path, const span *s, uint32_t got) {
  return em_set_error(EM_ERR_FORMAT,
                      "%s: tensor '%s': checksum mismatch: expected crc32 %08x, found %08x (data "
                      "bytes %lld to %lld): the data is corrupt",
                      path, s->name, (unsigned)s->crc, (unsigned)got, (long long)s->begin,
                      (long long)s->end);
}

em_ckpt *em_ckpt_read(const char *path) {
  if (!path) {
    em_set_error(EM_ERR_INVALID, "ckpt_read: path is NULL");
    return NULL;
  }
  header h;
  em_status st = read_header(path, &h);
  if (st != EM_OK) goto cleanup;
  /* Everything checked: allocate in header order, then read in file order. */
  for (int j = 0; j < h.ns; j++) {
    em_tensor *t = em__alloc_noscope(h.sp[j].dtype, h.sp[j].ndim, h.sp[j].shape, false);
    if (!t) {
      st = em_set_error(EM_ERR_NOMEM, "%s: tensor '%s': out of memory", path, h.sp[j].name);
      goto cleanup;
    }
    st = em_ckpt_add(h.c, h.sp[j].name, t); /* c takes its own reference */
    em_release(t);
    if (st != EM_OK) goto cleanup;
  }
  for (int j = 0; j < h.ns; j++) {
    const span *s = h.by_off[j];
    em_tensor *t = em_ckpt_get(h.c, s->name);
    char what[160];
    snprintf(what, sizeof what, "tensor '%.120s'", s->name);
    size_t nb = (size_t)(s->end - s->begin);
    if (nb && (st = pread_all(h.fd, path, em_data(t), nb, h.data_start + s->begin, what)) != EM_OK)
      goto cleanup;
    uint32_t got = em__ckpt_crc(0, em_data(t), nb);
    if (h.has_crc && got != s->crc) {
      st = crc_mismatch(path, s, got);
      goto cleanup;
    }
  }
cleanup:;
  em_ckpt *c = st == EM_OK ? h.c : NULL;
  if (st == EM_OK) h.c = NULL; /* the caller's */
  header_close(&h);
  return c;
}

em_status em_ckpt_verify(const char *path, bool *has_checksums) {
  if (!path) return em_set_error(EM_ERR_INVALID, "ckpt_verify: path is NULL");
  header h;
  enum { BUF = 1 << 20 };
  unsigned char *buf = NULL;
  em_status st = read_header(path, &h);
  if (st != EM_OK) goto cleanup;
  if (has_checksums) *has_checksums = h.has_crc;
  if (!h.has_crc) goto cleanup;
  if (!(buf = malloc(BUF))) {
    st = em_set_error(EM_ERR_NOMEM, "%s: out of memory verifying", path);
    goto cleanup;
  }
  for (int j = 0; j < h.ns; j++) {
    const span *s = h.by_off[j];
    char what[160];
    snprintf(what, sizeof what, "tensor '%.120s'", s->name);
    uint32_t got = em__ckpt_crc(0, NULL, 0);
    for (int64_t off = s->begin; off < s->end && st == EM_OK; off += BUF) {
      size_t nb = (size_t)(s->end - off < BUF ? s->end - off : BUF);
      st = pread_all(h.fd, path, buf, nb, h.data_start + off, what);
      got = em__ckpt_crc(got, buf, nb);
    }
    if (st != EM_OK) goto cleanup;
    if (got != s->crc) {
      st = crc_mismatch(path, s, got);
      goto cleanup;
    }
  }
cleanup:
  free(buf);
  header_close(&h);
  return st;
}

/* ---- loading into live objects ------------------------------------------------------------ */
/* The differences between a checkpoint and a live object, as one bounded message. */
typedef struct {
  char msg[DIFF_MSG_LEN];
  size_t len;
  int n, omitted;
} diffs;

static void diff_add(diffs *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void diff_add(diffs *d, const char *fmt, ...) {
  char item[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(item, sizeof item, fmt, ap);
  va_end(ap);
  size_t need = strlen(item) + 2;
  d->n++;
  if (d->omitted || d->len + need >= sizeof d->msg - 40) { /* keep room for "; and N more" */
    d->omitted++;
    return;
  }
  d->len +=
      (size_t)snprintf(d->msg + d->len, sizeof d->msg - d->len, "%s%s", d->len ? "; " : "", item);
}

/* Check that c's prefix+ tensors are exactly names[0..n) with ts' shapes and dtypes, then copy
 * them into ts. Nothing is copied unless everything matches. what names the object. */
static em_status load_tensors(const em_ckpt *c, const char *prefix, em_tensor *const *ts,
                              const char *const *names, int n, const char *what) {
  em_status st = EM_OK;
  size_t np = strlen(prefix);
  int *idx = malloc(((size_t)n + 1) * sizeof *idx);
  int nc = em_ckpt_count(c);
  bool *used = calloc((size_t)nc + 1, sizeof *used);
  diffs *d = calloc(1, sizeof *d);
  char *full = NULL;
  if (!idx || !used || !d) {
    st = em_set_error(EM_ERR_NOMEM, "%s: out of memory", what);
    goto cleanup;
  }
  for (int i = 0; i < n; i++) {
    const em_tensor *t = ts[i];
    char a[EM_SHAPE_STR_LEN], b[EM_SHAPE_STR_LEN];
    free(full);
    if (!(full = em__concat(prefix, names[i]))) {
      st = em_set_error(EM_ERR_NOMEM, "%s: out of memory", what);
      goto cleanup;
    }
    idx[i] = index_of(c, full);
    if (!em_is_contiguous(t)) diff_add(d, "%s is not a contiguous tensor", full);
    if (idx[i] < 0) {
      diff_add(d, "missing %s %s %s", full, st_dtype[t->dtype],
               shape_str(t->ndim, t->shape, a, sizeof a));
      continue;
    }
    used[idx[i]] = true;
    const em_tensor *s = em_ckpt_get(c, full);
    if (s->dtype != t->dtype)
      diff_add(d, "%s dtype %s vs %s", full, st_dtype[s->dtype], st_dtype[t->dtype]);
    if (s->ndim != t->ndim || memcmp(s->shape, t->shape, (size_t)t->ndim * sizeof *t->shape))
      diff_add(d, "%s shape %s vs %s", full, shape_str(s->ndim, s->shape, a, sizeof a),
               shape_str(t->ndim, t->shape, b, sizeof b));
  }
  for (int j = 0; j < nc; j++) {
    char a[EM_SHAPE_STR_LEN];
    const char *name = em_ckpt_name_at(c, j);
    const em_tensor *s = em_ckpt_get(c, name);
    if (!used[j] && !strncmp(name, prefix, np))
      diff_add(d, "unexpected %s %s %s", name, st_dtype[s->dtype],
               shape_str(s->ndim, s->shape, a, sizeof a));
  }
  if (d->n) {
    char more[40] = "";
    if (d->omitted) snprintf(more, sizeof more, "; and %d more", d->omitted);
    st = em_set_error(EM_ERR_INVALID,
                      "%s: the checkpoint's '%s' tensors do not match (%d difference%s, "
                      "checkpoint vs live; nothing was loaded): %s%s",
                      what, prefix, d->n, d->n == 1 ? "" : "s", d->msg, more);
    goto cleanup;
  }
  /* Into each live tensor where it lives: host memory, or a device through its table. */
  for (int i = 0; i < n && st == EM_OK; i++) {
    const em_tensor *s = em_ckpt_get(c, em_ckpt_name_at(c, idx[i]));
    size_t nb = (size_t)em_numel(s) * em_dtype_size(s->dtype);
    if (ts[i]->device.kind == EM_CPU)
      memcpy(em_data(ts[i]), em_data(s), nb);
    else if (nb)
      st = em__kernels(ts[i]->device)
               ->copy_from_host(ts[i]->device.index, em_data(ts[i]), em_data(s), nb);
  }
cleanup:
  free(full);
  free(d);
  free(used);
  free(idx);
  return st;
}

em_status em_ckpt_load_module(const em_ckpt *c, const char *prefix, em_module *m) {
  if (!c || !m)
    return em_set_error(EM_ERR_INVALID, "ckpt_load_module: %s is NULL",
                        c ? "the module" : "checkpoint");
  if (!prefix) prefix = "";
  int n = em_module_num_tensors(m);
  if (n < 0) return em_last_status();
  em_status st = EM_OK;
  em_tensor **ts = malloc(((size_t)n + 1) * sizeof *ts);
  const char **names = malloc(((size_t)n + 1) * sizeof *names);
  if (!ts || !names) {
    st = em_set_error(EM_ERR_NOMEM, "ckpt_load_module: out of memory");
    goto cleanup;
  }
  for (int i = 0; i < n; i++) {
    ts[i] = em_module_tensor_at(m, i);
    names[i] = em_module_tensor_name(m, i);
  }
  char what[96];
  snprintf(what, sizeof what, "ckpt_load_module (%s)", em_module_type(m));
  st = load_tensors(c, prefix, ts, names, n, what);
cleanup:
  free(names);
  free(ts);
  return st;
}

em_status em_ckpt_load_optim(const em_ckpt *c, const char *prefix, em_optim *o) {
  if (!c || !o)
    return em_set_error(EM_ERR_INVALID, "ckpt_load_optim: %s is NULL",
                        c ? "the optimizer" : "checkpoint");
  if (!prefix) prefix = "";
  em_status st = EM_OK;
  int n = em_optim_num_state(o);
  em_tensor **ts = malloc(((size_t)n + 1) * sizeof *ts);
  const char **names = malloc(((size_t)n + 1) * sizeof *names);
  char *k_name = em__concat(prefix, "name"), *k_step = em__concat(prefix, "step");
  char *k_lr = em__concat(prefix, "lr");
  if (!ts || !names || !k_name || !k_step || !k_lr) {
    st = em_set_error(EM_ERR_NOMEM, "ckpt_load_optim: out of memory");
    goto cleanup;
  }
  const char *kind = meta_checked(c, k_name, "the optimizer's name");
  if (!kind) {
    st = em_last_status();
    goto cleanup;
  }
  if (strcmp(kind, em_optim_name(o))) {
    st = em_set_error(EM_ERR_INVALID,
                      "ckpt_load_optim: the checkpoint holds %s state ('%s'), "
                      "the optimizer is %s",
                      kind, k_name, em_optim_name(o));
    goto cleanup;
  }
  int64_t step;
  if ((st = em_ckpt_meta_i64(c, k_step, &step)) != EM_OK) goto cleanup;
  if (step < 0) {
    st = em_set_error(EM_ERR_FORMAT, "ckpt_load_optim: metadata '%s' = %lld is negative", k_step,
                      (long long)step);
    goto cleanup;
  }
  const char *lr_s = meta_checked(c, k_lr, "the learning rate");
  if (!lr_s) {
    st = em_last_status();
    goto cleanup;
  }
  char *end;
  double lr = strtod(lr_s, &end);
  if (end == lr_s || *end || !(lr >= 0 && isfinite(lr))) {
    st = em_set_error(EM_ERR_FORMAT,
                      "ckpt_load_optim: metadata '%s' = '%s' is not a finite "
                      "learning rate >= 0",
                      k_lr, lr_s);
    goto cleanup;
  }
  for (int i = 0; i < n; i++) {
    ts[i] = em_optim_state_at(o, i, &names[i]);
    if (!ts[i]) {
      st = em_last_status();
      goto cleanup;
    }
  }
  char what[64];
  snprintf(what, sizeof what, "ckpt_load_optim (%s)", em_optim_name(o));
  if ((st = load_tensors(c, prefix, ts, names, n, what)) != EM_OK) goto cleanup;
  if ((st = em_optim_set_step_count(o, step)) != EM_OK) goto cleanup;
  st = em_optim_set_lr(o, lr);
cleanup:
  free(k_lr);
  free(k_step);
  free(k_name);
  free(names);
  free(ts);
  return st;
}
