/* dataset.c: the dataset handle shared by every kind of dataset (see dl.h), and the in-memory
 * dataset (dl_memory_new).
 *
 * A dl_dataset is a validated copy of the field specs and callbacks plus the dataset's own ctx:
 *
 *   dl_dataset { fields[nfields], fns, ctx, len }      len = fns.len(ctx), read once at creation
 *
 * Sample index checks live here (dl_dataset_get), so a dataset's get() may assume
 * 0 <= index < len. Nothing here locks: get() runs on several worker threads at once and the
 * handle itself is read-only after creation. */
#include "dl.h"

#include <stdlib.h>
#include <string.h>

struct dl_dataset {
  dl_field fields[DL_MAX_FIELDS];
  int nfields;
  dl_dataset_fns fns;
  void *ctx;   /* owned: fns.close(ctx) at dl_dataset_close */
  int64_t len; /* fns.len(ctx), cached at creation */
};

/* Largest size of one sample of one field: far beyond any real sample, small enough that sums
 * and products of a few of them cannot overflow. */
#define DL_MAX_FIELD_BYTES ((int64_t)1 << 40)

size_t dl_field_bytes(const dl_field *f) {
  if (!f || (unsigned)f->dtype >= EM_DTYPE_COUNT || f->ndim < 0 || f->ndim >= EM_MAX_DIMS) return 0;
  size_t n = em_dtype_size(f->dtype);
  for (int d = 0; d < f->ndim; d++) n *= (size_t)(f->shape[d] > 0 ? f->shape[d] : 0);
  return n;
}

/* Field f's spec is usable: returns EM_OK or EM_ERR_INVALID naming field f and what is wrong.
 * Checks the name (non-empty, NUL within name[16], unlike fields[0..f)), dtype, ndim and shape,
 * and that one sample stays under DL_MAX_FIELD_BYTES. */
static em_status check_field(const dl_field *fields, int f) {
  const dl_field *fl = &fields[f];
  if (!memchr(fl->name, '\0', sizeof fl->name))
    return em_set_error(EM_ERR_INVALID,
                        "dl_dataset_new: field %d: name '%.*s...' does not fit in %zu bytes "
                        "(at most %zu characters)",
                        f, (int)sizeof fl->name, fl->name, sizeof fl->name, sizeof fl->name - 1);
  if (!fl->name[0]) return em_set_error(EM_ERR_INVALID, "dl_dataset_new: field %d: empty name", f);
  for (int g = 0; g < f; g++)
    if (strcmp(fields[g].name, fl->name) == 0)
      return em_set_error(EM_ERR_INVALID,
                          "dl_dataset_new: fields %d and %d are both named '%s' (names must be "
                          "unique)",
                          g, f, fl->name);
  if ((unsigned)fl->dtype >= EM_DTYPE_COUNT)
    return em_set_error(EM_ERR_INVALID, "dl_dataset_new: field %d ('%s'): invalid dtype %d", f,
                        fl->name, (int)fl->dtype);
  if (fl->ndim < 0 || fl->ndim > EM_MAX_DIMS - 1)
    return em_set_error(EM_ERR_INVALID,
                        "dl_dataset_new: field %d ('%s'): ndim %d, expected 0..%d (a batch adds "
                        "one dim)",
                        f, fl->name, fl->ndim, EM_MAX_DIMS - 1);
  int64_t bytes = (int64_t)em_dtype_size(fl->dtype);
  for (int d = 0; d < fl->ndim; d++) {
    if (fl->shape[d] < 0)
      return em_set_error(EM_ERR_INVALID, "dl_dataset_new: field %d ('%s'): shape[%d] = %lld < 0",
                          f, fl->name, d, (long long)fl->shape[d]);
    if (fl->shape[d] > 0 && bytes > DL_MAX_FIELD_BYTES / fl->shape[d])
      return em_set_error(EM_ERR_INVALID,
                          "dl_dataset_new: field %d ('%s'): one sample exceeds %lld bytes", f,
                          fl->name, (long long)DL_MAX_FIELD_BYTES);
    bytes *= fl->shape[d];
  }
  return EM_OK;
}

dl_dataset *dl_dataset_new(const dl_field *fields, int nfields, const dl_dataset_fns *fns,
                           void *ctx) {
  dl_dataset *d = NULL;
  if (!fns || !fns->len || !fns->get) {
    em_set_error(EM_ERR_INVALID, "dl_dataset_new: %s is NULL (len and get are required)",
                 !fns        ? "fns"
                 : !fns->len ? "fns->len"
                             : "fns->get");
    goto fail;
  }
  if (nfields < 1 || nfields > DL_MAX_FIELDS || !fields) {
    em_set_error(EM_ERR_INVALID, "dl_dataset_new: %d fields%s, expected 1..%d", nfields,
                 fields ? "" : " (fields is NULL)", DL_MAX_FIELDS);
    goto fail;
  }
  for (int f = 0; f < nfields; f++)
    if (check_field(fields, f) != EM_OK) goto fail;
  int64_t len = fns->len(ctx);
  if (len < 0) {
    em_set_error(EM_ERR_INVALID, "dl_dataset_new: len() returned %lld, expected >= 0",
                 (long long)len);
    goto fail;
  }
  d = calloc(1, sizeof *d);
  if (!d) {
    em_set_error(EM_ERR_NOMEM, "dl_dataset_new: out of memory");
    goto fail;
  }
  memcpy(d->fields, fields, (size_t)nfields * sizeof *fields);
  d->nfields = nfields;
  d->fns = *fns;
  d->ctx = ctx;
  d->len = len;
  return d;
fail:
  /* Ownership of ctx was handed over: release it even though no dataset came of it. */
  if (fns && fns->close) fns->close(ctx);
  return NULL;
}

void dl_dataset_close(dl_dataset *d) {
  if (!d) return;
  if (d->fns.close) d->fns.close(d->ctx);
  free(d);
}

int64_t dl_dataset_len(const dl_dataset *d) { return d ? d->len : 0; }

int dl_dataset_nfields(const dl_dataset *d) { return d ? d->nfields : 0; }

const dl_field *dl_dataset_field(const dl_dataset *d, int f) {
  return d && f >= 0 && f < d->nfields ? &d->fields[f] : NULL;
}

em_status dl_dataset_get(dl_dataset *d, int64_t index, void *const out[]) {
  if (!d || !out)
    return em_set_error(EM_ERR_INVALID, "dl_dataset_get: %s is NULL", !d ? "dataset" : "out");
  if (index < 0 || index >= d->len)
    return em_set_error(EM_ERR_INVALID,
                        "dl_dataset_get: sample index %lld out of range for a dataset of length "
                        "%lld (expected 0 <= index < %lld)",
                        (long long)index, (long long)d->len, (long long)d->len);
  return d->fns.get(d->ctx, index, out);
}

/* ---- in-memory arrays ------------------------------------------------------------------- */

typedef struct {
  em_tensor *t[DL_MAX_FIELDS]; /* retained; (len, per-sample shape...) contiguous, CPU */
  size_t row[DL_MAX_FIELDS];   /* bytes of one sample of field f */
  int n;
  int64_t len;
} mem_ctx;

static int64_t mem_len(void *ctx) { return ((mem_ctx *)ctx)->len; }

static em_status mem_get(void *ctx, int64_t index, void *const out[]) {
  const mem_ctx *m = ctx;
  for (int f = 0; f < m->n; f++)
    memcpy(out[f], (const char *)em_data(m->t[f]) + (size_t)index * m->row[f], m->row[f]);
  return EM_OK;
}

static void mem_close(void *ctx) {
  mem_ctx *m = ctx;
  if (!m) return;
  for (int f = 0; f < m->n; f++) em_release(m->t[f]);
  free(m);
}

dl_dataset *dl_memory_new(em_tensor *const *arrays, const char *const *names, int n) {
  static const char *const default_names[DL_MAX_FIELDS] = {"x", "y", "f2", "f3"};
  dl_field fields[DL_MAX_FIELDS];
  memset(fields, 0, sizeof fields);
  if (!arrays || n < 1 || n > DL_MAX_FIELDS) {
    em_set_error(EM_ERR_INVALID, "dl_memory_new: %d arrays%s, expected 1..%d", n,
                 arrays ? "" : " (arrays is NULL)", DL_MAX_FIELDS);
    return NULL;
  }
  for (int f = 0; f < n; f++) {
    const em_tensor *t = arrays[f];
    const char *name = names && names[f] ? names[f] : default_names[f];
    char shape[EM_SHAPE_STR_LEN];
    if (!t) {
      em_set_error(EM_ERR_INVALID, "dl_memory_new: array %d ('%s') is NULL", f, name);
      return NULL;
    }
    if (t->device.kind != EM_CPU || !em_is_contiguous(t) || t->ndim < 1) {
      em_set_error(EM_ERR_INVALID,
                   "dl_memory_new: array %d ('%s') of shape %s: expected a contiguous CPU tensor "
                   "with at least 1 dim (dim 0 counts samples)",
                   f, name, em_shape_str(t, shape, sizeof shape));
      return NULL;
    }
    if (t->shape[0] != arrays[0]->shape[0]) {
      char shape0[EM_SHAPE_STR_LEN];
      em_set_error(EM_ERR_INVALID,
                   "dl_memory_new: array %d ('%s') has shape %s but array 0 has shape %s: dim 0 "
                   "(the number of samples) must agree (%lld vs %lld)",
                   f, name, em_shape_str(t, shape, sizeof shape),
                   em_shape_str(arrays[0], shape0, sizeof shape0), (long long)t->shape[0],
                   (long long)arrays[0]->shape[0]);
      return NULL;
    }
    if (strlen(name) >= sizeof fields[f].name) {
      em_set_error(EM_ERR_INVALID, "dl_memory_new: array %d: name '%s' longer than %zu characters",
                   f, name, sizeof fields[f].name - 1);
      return NULL;
    }
    strcpy(fields[f].name, name);
    fields[f].dtype = t->dtype;
    fields[f].ndim = t->ndim - 1;
    for (int d = 1; d < t->ndim; d++) fields[f].shape[d - 1] = t->shape[d];
  }
  mem_ctx *m = calloc(1, sizeof *m);
  if (!m) {
    em_set_error(EM_ERR_NOMEM, "dl_memory_new: out of memory");
    return NULL;
  }
  m->len = arrays[0]->shape[0];
  for (int f = 0; f < n; f++) {
    m->t[f] = em_retain(arrays[f]);
    m->row[f] = dl_field_bytes(&fields[f]);
    m->n = f + 1; /* so that mem_close releases exactly what was retained */
  }
  static const dl_dataset_fns fns = {mem_len, mem_get, mem_close};
  return dl_dataset_new(fields, n, &fns, m); /* closes m on failure */
}
