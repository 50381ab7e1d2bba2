/* checkpoint/write.c: the checkpoint object and writing safetensors files atomically (see
 * em_checkpoint.h; checkpoint directories are in checkpoint/dir.c, reading and loading into live
 * objects in checkpoint/read.c, both through the public API).
 *
 * A checkpoint is two growable arrays: named tensors (each holding one reference) and string
 * metadata. Writing lays the tensor data out back to back with no gaps, as the safetensors rule
 * requires (its reference reader rejects holes), grouped by element size, largest first, so every
 * tensor starts at a multiple of its element size:
 *
 *   | 8: N (LE u64) | N: JSON header, space-padded to 8 | I64 tensors | F32, I32 | BF16, F16 | U8 |
 *                                                       ^ offset 0 of data_offsets
 *
 * The metadata carries a CRC-32 of each tensor's bytes and of the header (crc.h); a directory save
 * reads the new file back before latest names it or anything older is pruned, and
 * em_ckpt_read_latest falls back past damaged files. The JSON keys stay in the order the tensors
 * were added. The file is written through an atomic file (em_file.h: a temporary "<path>.tmp.<pid>.<n>",
 * fsynced, renamed over <path>, the directory fsynced), so <path> is either the old file or the
 * new one. docs/checkpoints.md walks through why a kill at any moment leaves a whole checkpoint. */
#include "checkpoint/crc.h"
#include "core/internal.h"
#include "em_checkpoint.h"
#include "em_file.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "checkpoint.c writes tensor data as it is in memory: a little-endian host only");

typedef struct {
  char *name;
  em_tensor *t; /* one reference, owned */
} ck_tensor;

typedef struct {
  char *key, *value;
} ck_meta;

struct em_ckpt {
  ck_tensor *t;
  int n, cap;
  ck_meta *m;
  int n_meta, cap_meta;
};

/* safetensors dtype strings, indexed by em_dtype (as in read.c). */
static const char *const st_dtype[EM_DTYPE_COUNT] = {
    [EM_F32] = "F32", [EM_I64] = "I64",   [EM_I32] = "I32",
    [EM_U8] = "U8",   [EM_BF16] = "BF16", [EM_F16] = "F16",
};

/* ---- small helpers ----------------------------------------------------------------------- */
static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}


static int find_tensor(const em_ckpt *c, const char *name) {
  for (int i = 0; i < c->n; i++)
    if (!strcmp(c->t[i].name, name)) return i;
  return -1;
}

static int find_meta(const em_ckpt *c, const char *key) {
  for (int i = 0; i < c->n_meta; i++)
    if (!strcmp(c->m[i].key, key)) return i;
  return -1;
}

/* Append (name copied, t's reference taken over). */
static em_status push_tensor(em_ckpt *c, const char *name, em_tensor *t) {
  if (c->n == c->cap) {
    int cap = c->cap ? c->cap * 2 : 16;
    ck_tensor *nt = realloc(c->t, (size_t)cap * sizeof *nt);
    if (!nt) return em_set_error(EM_ERR_NOMEM, "checkpoint: out of memory adding '%s'", name);
    c->t = nt;
    c->cap = cap;
  }
  char *nm = dup_str(name);
  if (!nm) return em_set_error(EM_ERR_NOMEM, "checkpoint: out of memory adding '%s'", name);
  c->t[c->n].name = nm;
  c->t[c->n].t = t;
  c->n++;
  return EM_OK;
}

/* Drop the entries added after the first n (undoing a partly failed add). */
static void truncate_tensors(em_ckpt *c, int n) {
  while (c->n > n) {
    c->n--;
    free(c->t[c->n].name);
    em_release(c->t[c->n].t);
  }
}

/* ---- building -------------------------------------------------------------------------- */
em_ckpt *em_ckpt_new(void) {
  em_ckpt *c = calloc(1, sizeof *c);
  if (!c) em_set_error(EM_ERR_NOMEM, "ckpt_new: out of memory");
  return c;
}

void em_ckpt_free(em_ckpt *c) {
  if (!c) return;
  truncate_tensors(c, 0);
  for (int i = 0; i < c->n_meta; i++) {
    free(c->m[i].key);
    free(c->m[i].value);
  }
  free(c->t);
  free(c->m);
  free(c);
}

em_status em_ckpt_add(em_ckpt *c, const char *name, em_tensor *t) {
  if (!c || !name)
    return em_set_error(EM_ERR_INVALID, "ckpt_add: %s is NULL", c ? "the name" : "checkpoint");
  if (!t) return em_set_error(EM_ERR_INVALID, "ckpt_add: tensor '%s' is NULL", name);
  if (!name[0] || !strcmp(name, "__metadata__"))
    return em_set_error(EM_ERR_INVALID, "ckpt_add: invalid tensor name '%s'", name);
  if (find_tensor(c, name) >= 0)
    return em_set_error(EM_ERR_INVALID, "ckpt_add: the checkpoint already holds a tensor '%s'",
                        name);
  /* A tensor on a device, or a strided one, is copied now into a contiguous host tensor (owned by
   * the checkpoint, outside the caller's scopes): the file is written from host memory. */
  bool copy = t->device.kind != EM_CPU || !em_is_contiguous(t);
  if (copy) {
    em_scope_saved saved = em_scope_suspend();
    em_scope sc = em_scope_begin();
    em_tensor *h = em_contiguous(em_to(t, EM_DEVICE_CPU));
    em_retain(h);
    em_scope_end(sc);
    em_scope_resume(saved);
    if (!h) return em_last_status();
    t = h; /* our reference */
  }
  em_status st = push_tensor(c, name, t);
  if (st == EM_OK && !copy) em_retain(t);
  if (st != EM_OK && copy) em_release(t);
  return st;
}

em_status em_ckpt_add_module(em_ckpt *c, const char *prefix, em_module *m) {
  if (!c || !m)
    return em_set_error(EM_ERR_INVALID, "ckpt_add_module: %s is NULL",
                        c ? "the module" : "checkpoint");
  if (!prefix) prefix = "";
  int n = em_module_num_tensors(m), n0 = c->n;
  if (n < 0) return em_last_status();
  em_status st = EM_OK;
  for (int i = 0; i < n && st == EM_OK; i++) {
    char *full = em__concat(prefix, em_module_tensor_name(m, i));
    st = full ? em_ckpt_add(c, full, em_module_tensor_at(m, i))
              : em_set_error(EM_ERR_NOMEM, "ckpt_add_module: out of memory");
    free(full);
  }
  if (st != EM_OK) truncate_tensors(c, n0);
  return st;
}

/* c[prefix + suffix] = value. */
static em_status set_meta_prefixed(em_ckpt *c, const char *prefix, const char *suffix,
                                   const char *value) {
  char *key = em__concat(prefix, suffix);
  em_status st = key ? em_ckpt_set_meta(c, key, value)
                     : em_set_error(EM_ERR_NOMEM, "checkpoint: out of memory");
  free(key);
  return st;
}

em_status em_ckpt_add_optim(em_ckpt *c, const char *prefix, em_optim *o) {
  if (!c || !o)
    return em_set_error(EM_ERR_INVALID, "ckpt_add_optim: %s is NULL",
                        c ? "the optimizer" : "checkpoint");
  if (!prefix) prefix = "";
  int n = em_optim_num_state(o), n0 = c->n;
  em_status st = EM_OK;
  for (int i = 0; i < n && st == EM_OK; i++) {
    const char *name = NULL;
    em_tensor *t = em_optim_state_at(o, i, &name);
    if (!t) {
      st = em_last_status();
      break;
    }
    char *full = em__concat(prefix, name);
    st = full ? em_ckpt_add(c, full, t)
              : em_set_error(EM_ERR_NOMEM, "ckpt_add_optim: out of memory");
    free(full);
  }
  char step[32], lr[40];
  snprintf(step, sizeof step, "%lld", (long long)em_optim_step_count(o));
  snprintf(lr, sizeof lr, "%.17g", em_optim_lr(o)); /* round-trips exactly through strtod */
  if (st == EM_OK) st = set_meta_prefixed(c, prefix, "name", em_optim_name(o));
  if (st == EM_OK) st = set_meta_prefixed(c, prefix, "step", step);
  if (st == EM_OK) st = set_meta_prefixed(c, prefix, "lr", lr);
  if (st != EM_OK) truncate_tensors(c, n0);
  return st;
}

em_status em_ckpt_set_meta(em_ckpt *c, const char *key, const char *value) {
  if (!c || !key || !value)
    return em_set_error(EM_ERR_INVALID, "ckpt_set_meta: %s is NULL",
                        !c     ? "checkpoint"
                        : !key ? "the key"
                               : "the value");
  if (!strncmp(key, EM_CKPT_CRC_PREFIX, strlen(EM_CKPT_CRC_PREFIX)))
    return em_set_error(EM_ERR_INVALID,
                        "ckpt_set_meta: key '%s': keys starting with '" EM_CKPT_CRC_PREFIX
                        "' are reserved for the checksums the writer adds",
                        key);
  char *v = dup_str(value);
  if (!v) return em_set_error(EM_ERR_NOMEM, "ckpt_set_meta: out of memory for '%s'", key);
  int i = find_meta(c, key);
  if (i >= 0) {
    free(c->m[i].value);
    c->m[i].value = v;
    return EM_OK;
  }
  if (c->n_meta == c->cap_meta) {
    int cap = c->cap_meta ? c->cap_meta * 2 : 8;
    ck_meta *nm = realloc(c->m, (size_t)cap * sizeof *nm);
    if (!nm) goto nomem;
    c->m = nm;
    c->cap_meta = cap;
  }
  char *k = dup_str(key);
  if (!k) goto nomem;
  c->m[c->n_meta].key = k;
  c->m[c->n_meta].value = v;
  c->n_meta++;
  return EM_OK;
nomem:
  free(v);
  return em_set_error(EM_ERR_NOMEM, "ckpt_set_meta: out of memory for '%s'", key);
}

em_status em_ckpt_set_meta_i64(em_ckpt *c, const char *key, int64_t value) {
  char buf[32];
  snprintf(buf, sizeof buf, "%lld", (long long)value);
  return em_ckpt_set_meta(c, key, buf);
}

em_status em_ckpt_set_meta_u64(em_ckpt *c, const char *key, uint64_t value) {
  char buf[32];
  snprintf(buf, sizeof buf, "%llu", (unsigned long long)value);
  return em_ckpt_set_meta(c, key, buf);
}

/* ---- lookups --------------------------------------------------------------------------- */
em_tensor *em_ckpt_get(const em_ckpt *c, const char *name) {
  int i = c && name ? find_tensor(c, name) : -1;
  return i >= 0 ? c->t[i].t : NULL;
}

const char *em_ckpt_meta(const em_ckpt *c, const char *key) {
  int i = c && key ? find_meta(c, key) : -1;
  return i >= 0 ? c->m[i].value : NULL;
}

/* The value of key, or NULL with an error naming it. */
static const char *meta_checked(const em_ckpt *c, const char *key, const char *what) {
  const char *v = em_ckpt_meta(c, key);
  if (!v)
    em_set_error(EM_ERR_INVALID, "checkpoint: no metadata key '%s' (expected %s)",
                 key ? key : "(null)", what);
  return v;
}

em_status em_ckpt_meta_i64(const em_ckpt *c, const char *key, int64_t *out) {
  const char *v = meta_checked(c, key, "an i64");
  if (!v) return em_last_status();
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (!(v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) || *end || errno)
    return em_set_error(EM_ERR_FORMAT, "checkpoint: metadata '%s' = '%s' is not an i64", key, v);
  *out = x;
  return EM_OK;
}

em_status em_ckpt_meta_u64(const em_ckpt *c, const char *key, uint64_t *out) {
  const char *v = meta_checked(c, key, "a u64");
  if (!v) return em_last_status();
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (!(v[0] >= '0' && v[0] <= '9') || *end || errno)
    return em_set_error(EM_ERR_FORMAT, "checkpoint: metadata '%s' = '%s' is not a u64", key, v);
  *out = x;
  return EM_OK;
}

int em_ckpt_count(const em_ckpt *c) { return c ? c->n : 0; }

const char *em_ckpt_name_at(const em_ckpt *c, int i) {
  if (!c || i < 0 || i >= c->n) {
    em_set_error(EM_ERR_INVALID, "ckpt_name_at: index %d out of range (%d tensors)", i,
                 c ? c->n : 0);
    return NULL;
  }
  return c->t[i].name;
}

/* ---- writing --------------------------------------------------------------------------- */
typedef struct {
  const void *p;
  size_t n;
} chunk;

/* Write the chunks to path atomically (em_file.h): on any failure path is left as it was. */
static em_status write_atomic(const char *path, const chunk *ch, int n_chunks) {
  em_atomic_file *f = em_atomic_file_open(path);
  if (!f) return em_last_status();
  for (int i = 0; i < n_chunks; i++) {
    em_status st = em_atomic_file_write(f, ch[i].p, ch[i].n);
    if (st != EM_OK) {
      em_atomic_file_abort(f);
      return st;
    }
  }
  return em_atomic_file_commit(f);
}

/* A JSON array of non-negative integers printed exactly (cJSON would print large doubles in
 * exponent form); NULL when out of memory. */
static cJSON *int_array(int n, const int64_t *v) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; a && i < n; i++) {
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", (long long)v[i]);
    cJSON *x = cJSON_CreateRaw(buf);
    if (!x || !cJSON_AddItemToArray(a, x)) {
      cJSON_Delete(x);
      cJSON_Delete(a);
      return NULL;
    }
  }
  return a;
}

/* Adds the checksums (crc.h) to meta: "crc32.<name>" = crc[i] for each tensor, and the header's
 * over c's metadata and the entries at offsets off. false when out of memory. */
static bool add_checksums(const em_ckpt *c, const int64_t *off, const uint32_t *crc, cJSON *meta) {
  const char **keys = malloc(((size_t)c->n_meta + 1) * sizeof *keys);
  const char **vals = malloc(((size_t)c->n_meta + 1) * sizeof *vals);
  em__ckpt_entry *e = malloc(((size_t)c->n + 1) * sizeof *e);
  int ok = keys && vals && e;
  for (int i = 0; ok && i < c->n_meta; i++) {
    keys[i] = c->m[i].key;
    vals[i] = c->m[i].value;
  }
  for (int i = 0; ok && i < c->n; i++) {
    const em_tensor *t = c->t[i].t;
    e[i] = (em__ckpt_entry){c->t[i].name, st_dtype[t->dtype],
                            t->ndim,      t->shape,
                            off[i],       off[i] + em_numel(t) * (int64_t)em_dtype_size(t->dtype)};
  }
  uint32_t hcrc = ok ? em__ckpt_header_crc(c->n_meta, keys, vals, c->n, e, &ok) : 0;
  char hex[9], *key = NULL;
  em__ckpt_crc_str(hcrc, hex);
  ok = ok && cJSON_AddStringToObject(meta, EM_CKPT_CRC_HEADER, hex);
  for (int i = 0; ok && i < c->n; i++) {
    key = em__concat(EM_CKPT_CRC_PREFIX, c->t[i].name);
    em__ckpt_crc_str(crc[i], hex);
    ok = key && cJSON_AddStringToObject(meta, key, hex);
    free(key);
  }
  free(e);
  free(vals);
  free(keys);
  return ok;
}

/* The header object for c with tensor i at data offsets [off[i], off[i] + bytes) and checksum
 * crc[i]. */
static cJSON *build_header(const em_ckpt *c, const int64_t *off, const uint32_t *crc) {
  cJSON *root = cJSON_CreateObject();
  if (!root) return NULL;
  cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
  if (!meta) goto fail;
  for (int i = 0; i < c->n_meta; i++)
    if (!cJSON_AddStringToObject(meta, c->m[i].key, c->m[i].value)) goto fail;
  if (!add_checksums(c, off, crc, meta)) goto fail;
  for (int i = 0; i < c->n; i++) {
    const em_tensor *t = c->t[i].t;
    int64_t range[2] = {off[i], off[i] + em_numel(t) * (int64_t)em_dtype_size(t->dtype)};
    cJSON *e = cJSON_CreateObject();
    if (!e || !cJSON_AddItemToObject(root, c->t[i].name, e)) {
      cJSON_Delete(e);
      goto fail;
    }
    cJSON *shape = int_array(t->ndim, t->shape), *offs = int_array(2, range);
    bool ok = shape && offs && cJSON_AddStringToObject(e, "dtype", st_dtype[t->dtype]) &&
              cJSON_AddItemToObject(e, "shape", shape);
    if (ok) shape = NULL; /* now owned by e */
    ok = ok && cJSON_AddItemToObject(e, "data_offsets", offs);
    if (ok) offs = NULL;
    cJSON_Delete(shape);
    cJSON_Delete(offs);
    if (!ok) goto fail;
  }
  return root;
fail:
  cJSON_Delete(root);
  return NULL;
}

em_status em_ckpt_write(const em_ckpt *c, const char *path) {
  if (!c || !path)
    return em_set_error(EM_ERR_INVALID, "ckpt_write: %s is NULL", c ? "the path" : "checkpoint");
  em_status st = EM_OK;
  int64_t *off = calloc((size_t)c->n + 1, sizeof *off);
  uint32_t *crc = calloc((size_t)c->n + 1, sizeof *crc);
  int *order = calloc((size_t)c->n + 1, sizeof *order);
  chunk *ch = calloc((size_t)c->n + 2, sizeof *ch);
  cJSON *root = NULL;
  char *json = NULL, *hdr = NULL;
  if (!off || !crc || !order || !ch) goto nomem;
  /* Data layout: by element size, largest first, in the order added within a size. */
  int64_t pos = 0;
  int k = 0;
  for (size_t sz = 8; sz >= 1; sz /= 2)
    for (int i = 0; i < c->n; i++) {
      const em_tensor *t = c->t[i].t;
      if (em_dtype_size(t->dtype) != sz) continue;
      off[i] = pos;
      pos += em_numel(t) * (int64_t)sz;
      order[k++] = i;
    }
  assert(k == c->n);
  for (int i = 0; i < c->n; i++) {
    const em_tensor *t = c->t[i].t;
    crc[i] = em__ckpt_crc(0, em_data(t), (size_t)em_numel(t) * em_dtype_size(t->dtype));
  }
  root = build_header(c, off, crc);
  json = root ? cJSON_PrintUnformatted(root) : NULL;
  if (!json) goto nomem;
  size_t len = strlen(json), padded = (len + 7) / 8 * 8;
  hdr = malloc(8 + padded);
  if (!hdr) goto nomem;
  for (int b = 0; b < 8; b++) hdr[b] = (char)(((uint64_t)padded >> (8 * b)) & 0xff);
  memcpy(hdr + 8, json, len);
  memset(hdr + 8 + len, ' ', padded - len);
  ch[0] = (chunk){hdr, 8 + padded};
  for (int j = 0; j < c->n; j++) {
    const em_tensor *t = c->t[order[j]].t;
    ch[j + 1] = (chunk){em_data(t), (size_t)em_numel(t) * em_dtype_size(t->dtype)};
  }
  st = write_atomic(path, ch, c->n + 1);
  goto cleanup;
nomem:
  st = em_set_error(EM_ERR_NOMEM, "%s: out of memory building the checkpoint header", path);
cleanup:
  free(hdr);
  cJSON_free(json);
  cJSON_Delete(root);
  free(ch);
  free(order);
  free(crc);
  free(off);
  return st;
}
