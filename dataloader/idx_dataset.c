/* idx_dataset.c: IDX image/label files (MNIST, Fashion-MNIST) as a dataset (see dl.h).
 *
 * Both files are read whole at open by dl_idx_read (which checks magic, dims and sizes and names
 * the file and byte offset on error), then checked against each other (and, when given, the
 * images' size and the labels against the number of classes):
 *
 *   images  (N, H, W) u8      -> "x": (H*W) or (1, H, W), f32 = u8 * (1/255) or raw u8
 *   labels  (N) u8            -> "y": i64 scalar
 *
 * get() is on the loader's hot path: one row conversion, a loop the compiler vectorizes. */
#include "dl.h"
#include "dl_idx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  dl_idx_array im; /* (N, H, W) */
  dl_idx_array lb; /* (N), or empty when there are no labels */
  bool has_labels;
  bool u8;
  int64_t n; /* N */
  size_t px; /* H * W */
} idx_ctx;

static int64_t idx_len(void *ctx) { return ((idx_ctx *)ctx)->n; }

/* u8 (px) -> f32 (px) scaled to [0, 1]. The build's -O2 vectorizes only loops that need no
 * epilogue: omp simd asks for it here (-fopenmp is on for the library). */
static void u8_to_f32(float *restrict dst, const uint8_t *restrict src, size_t px) {
#pragma omp simd
  for (size_t i = 0; i < px; i++) dst[i] = (float)src[i] * (1.0f / 255.0f);
}

static em_status idx_get(void *ctx, int64_t index, void *const out[]) {
  const idx_ctx *c = ctx;
  const uint8_t *src = c->im.data + (size_t)index * c->px;
  if (c->u8)
    memcpy(out[0], src, c->px);
  else
    u8_to_f32(out[0], src, c->px);
  if (c->has_labels) {
    int64_t y = c->lb.data[index];
    memcpy(out[1], &y, sizeof y);
  }
  return EM_OK;
}

static void idx_close(void *ctx) {
  idx_ctx *c = ctx;
  if (!c) return;
  dl_idx_free(&c->im);
  dl_idx_free(&c->lb);
  free(c);
}

dl_dataset *dl_idx_open_ex(const char *images, const char *labels, const dl_idx_options *opt) {
  static const dl_dataset_fns fns = {idx_len, idx_get, idx_close};
  dl_idx_options o = opt ? *opt : (dl_idx_options){0};
  if (!images) {
    em_set_error(EM_ERR_INVALID, "dl_idx_open: images path is NULL");
    return NULL;
  }
  idx_ctx *c = calloc(1, sizeof *c);
  if (!c) {
    em_set_error(EM_ERR_NOMEM, "dl_idx_open: out of memory");
    return NULL;
  }
  if (dl_idx_read(images, &c->im) != EM_OK) goto fail;
  if (c->im.ndim != 3) {
    em_set_error(EM_ERR_FORMAT,
                 "%s: byte offset 3: %d dims, expected 3 (N, H, W) for an IDX image file", images,
                 c->im.ndim);
    goto fail;
  }
  if (o.height > 0 && o.width > 0 && (c->im.dims[1] != o.height || c->im.dims[2] != o.width)) {
    em_set_error(EM_ERR_FORMAT, "%s: byte offset 8: images of %lldx%lld, expected %dx%d", images,
                 (long long)c->im.dims[1], (long long)c->im.dims[2], o.height, o.width);
    goto fail;
  }
  c->n = c->im.dims[0];
  c->px = (size_t)(c->im.dims[1] * c->im.dims[2]);
  c->u8 = o.u8;
  if (labels) {
    if (dl_idx_read(labels, &c->lb) != EM_OK) goto fail;
    if (c->lb.ndim != 1) {
      em_set_error(EM_ERR_FORMAT,
                   "%s: byte offset 3: %d dims, expected 1 (N) for an IDX label file", labels,
                   c->lb.ndim);
      goto fail;
    }
    if (c->lb.dims[0] != c->n) {
      em_set_error(EM_ERR_FORMAT, "%s and %s disagree: %lld images of %lldx%lld but %lld labels",
                   images, labels, (long long)c->n, (long long)c->im.dims[1],
                   (long long)c->im.dims[2], (long long)c->lb.dims[0]);
      goto fail;
    }
    if (o.classes > 0 && dl_idx_check_labels(&c->lb, labels, o.classes) != EM_OK) goto fail;
    c->has_labels = true;
  }

  dl_field fields[2];
  memset(fields, 0, sizeof fields);
  strcpy(fields[0].name, "x");
  fields[0].dtype = o.u8 ? EM_U8 : EM_F32;
  if (o.keep_dims) {
    fields[0].ndim = 3;
    fields[0].shape[0] = 1;
    fields[0].shape[1] = c->im.dims[1];
    fields[0].shape[2] = c->im.dims[2];
  } else {
    fields[0].ndim = 1;
    fields[0].shape[0] = (int64_t)c->px;
  }
  strcpy(fields[1].name, "y");
  fields[1].dtype = EM_I64;
  fields[1].ndim = 0;
  return dl_dataset_new(fields, c->has_labels ? 2 : 1, &fns, c); /* closes c on failure */
fail:
  idx_close(c);
  return NULL;
}

dl_dataset *dl_idx_open(const char *images, const char *labels) {
  return dl_idx_open_ex(images, labels, NULL);
}

dl_dataset *dl_fmnist_open(const char *dir, const char *split, const dl_idx_options *opt) {
  if (!dir) dir = dl_fmnist_dir();
  if (!split || !*split) {
    em_set_error(EM_ERR_INVALID, "dl_fmnist_open: split is %s, expected \"train\" or \"t10k\"",
                 split ? "empty" : "NULL");
    return NULL;
  }
  char pi[4096], pl[4096];
  int ni = snprintf(pi, sizeof pi, "%s/%s-images-idx3-ubyte.gz", dir, split);
  int nl = snprintf(pl, sizeof pl, "%s/%s-labels-idx1-ubyte.gz", dir, split);
  if (ni < 0 || nl < 0 || (size_t)ni >= sizeof pi || (size_t)nl >= sizeof pl) {
    em_set_error(EM_ERR_INVALID, "dl_fmnist_open: path under '%.64s...' longer than %zu bytes", dir,
                 sizeof pi - 1);
    return NULL;
  }
  dl_idx_options o = opt ? *opt : (dl_idx_options){0};
  if (o.classes == 0) o.classes = DL_FMNIST_CLASSES;
  if (o.height == 0 && o.width == 0) o.height = o.width = DL_FMNIST_SIDE;
  return dl_idx_open_ex(pi, pl, &o);
}
