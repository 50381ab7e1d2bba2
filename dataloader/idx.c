/* idx.c: IDX reader (see dl_idx.h). Every size is checked against the header before it is
 * trusted: a truncated or corrupt file gives an error naming the file and byte offset. A header
 * may promise up to 64 GiB: a plain file's promise is checked against its size before anything is
 * allocated, and a gzip stream's data is read in pieces into a buffer that grows (doubling) as
 * the data arrives, so a lying header costs at most twice what the stream really holds. */
#include "dl_idx.h"
#include "em_env.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

void dl_idx_free(dl_idx_array *a) {
  if (!a) return;
  free(a->data);
  memset(a, 0, sizeof *a);
}

/* Read exactly n bytes at offset *pos; error names the offset and how many bytes were wanted. */
static em_status read_exact(gzFile f, const char *path, void *buf, size_t n, size_t *pos,
                            const char *what) {
  size_t got = 0;
  while (got < n) {
    unsigned chunk = n - got > (1u << 30) ? (1u << 30) : (unsigned)(n - got);
    int r = gzread(f, (char *)buf + got, chunk);
    if (r <= 0) {
      int zerr = 0;
      const char *zmsg = gzerror(f, &zerr);
      return em_set_error(EM_ERR_FORMAT,
                          "%s: byte offset %zu: expected %zu bytes of %s, file ends after %zu%s%s",
                          path, *pos, n, what, got, zerr ? ": " : "", zerr ? zmsg : "");
    }
    got += (size_t)r;
  }
  *pos += n;
  return EM_OK;
}

/* The n data bytes the header promises, from offset *pos, into out->data. A plain file (gzread
 * passes it through) must be exactly that long; a gzip stream's length is known only once read,
 * so the buffer grows with what it delivers: a header that claims 64 GiB over a short stream fails
 * at its end having allocated about twice what it holds (found by fuzzing: tests/fuzz/idx.c). */
static em_status read_data(gzFile f, const char *path, size_t n, size_t *pos, dl_idx_array *out) {
  struct stat sb;
  if (gzdirect(f) && stat(path, &sb) == 0 && S_ISREG(sb.st_mode) &&
      (uint64_t)sb.st_size != (uint64_t)(*pos + n))
    return em_set_error(EM_ERR_FORMAT,
                        "%s: byte offset %zu: the header promises %zu data bytes (a file of %zu "
                        "bytes), but the file has %lld bytes: truncated or corrupt",
                        path, *pos, n, *pos + n, (long long)sb.st_size);
  size_t cap = 0, got = 0; /* n >= 1: no dimension is 0 */
  while (got < n) {
    if (got == cap) {
      cap = cap == 0 ? (n < ((size_t)1 << 20) ? n : ((size_t)1 << 20)) : cap > n / 2 ? n : 2 * cap;
      unsigned char *p = realloc(out->data, cap);
      if (!p) return em_set_error(EM_ERR_NOMEM, "%s: out of memory for %zu bytes", path, cap);
      out->data = p;
    }
    size_t want = cap - got > (1u << 30) ? (1u << 30) : cap - got;
    int r = gzread(f, out->data + got, (unsigned)want);
    if (r <= 0) {
      int zerr = 0;
      const char *zmsg = gzerror(f, &zerr);
      return em_set_error(EM_ERR_FORMAT,
                          "%s: byte offset %zu: the header promises %zu bytes of element data, "
                          "the stream ends after %zu%s%s: truncated or corrupt",
                          path, *pos, n, got, zerr ? ": " : "", zerr ? zmsg : "");
    }
    got += (size_t)r;
  }
  *pos += n;
  return EM_OK;
}

em_status dl_idx_read(const char *path, dl_idx_array *out) {
  memset(out, 0, sizeof *out);
  errno = 0;
  gzFile f = gzopen(path, "rb");
  if (!f) /* errno is open()'s; 0 when zlib itself failed (out of memory) */
    return em_set_error(EM_ERR_IO, "%s: cannot open: %s", path,
                        errno ? strerror(errno) : "out of memory");
  em_status st;
  size_t pos = 0;
  unsigned char hdr[4], dimb[4];
  if ((st = read_exact(f, path, hdr, 4, &pos, "the IDX magic number")) != EM_OK) goto fail;
  if (hdr[0] != 0 || hdr[1] != 0 || hdr[2] != 0x08 || hdr[3] < 1 || hdr[3] > 4) {
    st = em_set_error(EM_ERR_FORMAT,
                      "%s: byte offset 0: bad IDX magic %02x %02x %02x %02x (expected 00 00 08 "
                      "followed by 1-4 dims: an unsigned-byte IDX file)",
                      path, hdr[0], hdr[1], hdr[2], hdr[3]);
    goto fail;
  }
  out->ndim = hdr[3];
  size_t n = 1;
  for (int d = 0; d < out->ndim; d++) {
    if ((st = read_exact(f, path, dimb, 4, &pos, "a dimension size")) != EM_OK) goto fail;
    uint32_t v =
        (uint32_t)dimb[0] << 24 | (uint32_t)dimb[1] << 16 | (uint32_t)dimb[2] << 8 | dimb[3];
    if (v == 0 || n > ((size_t)1 << 36) / v) {
      st = em_set_error(EM_ERR_FORMAT, "%s: byte offset %zu: implausible dimension %d size %u",
                        path, pos - 4, d, v);
      goto fail;
    }
    out->dims[d] = v;
    n *= v;
  }
  out->size = n;
  if ((st = read_data(f, path, n, &pos, out)) != EM_OK) goto fail;
  unsigned char extra;
  if (gzread(f, &extra, 1) > 0) {
    st = em_set_error(EM_ERR_FORMAT, "%s: byte offset %zu: trailing data after %zu elements", path,
                      pos, n);
    goto fail;
  }
  gzclose(f);
  return EM_OK;
fail:
  gzclose(f);
  dl_idx_free(out);
  return st;
}

em_status dl_idx_check_labels(const dl_idx_array *a, const char *path, int classes) {
  size_t header = 4 + 4 * (size_t)a->ndim; /* magic, then one u32 per dim */
  for (size_t i = 0; i < a->size; i++)
    if (a->data[i] >= classes)
      return em_set_error(EM_ERR_FORMAT,
                          "%s: byte offset %zu: label %u of item %zu is out of range for %d "
                          "classes (expected 0..%d)",
                          path, header + i, (unsigned)a->data[i], i, classes, classes - 1);
  return EM_OK;
}

const char *dl_fmnist_dir(void) {
  const char *dir;
  em_env_str("EMBER_FMNIST_DIR", &dir); /* any text: cannot fail */
  return dir;
}

em_status dl_fmnist_load(const char *dir, const char *prefix, em_tensor **images,
                         em_tensor **labels) {
  char pi[4096], pl[4096];
  snprintf(pi, sizeof pi, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
  snprintf(pl, sizeof pl, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
  *images = *labels = NULL;
  dl_idx_array im, lb;
  em_status st = dl_idx_read(pi, &im);
  if (st != EM_OK) return st;
  if ((st = dl_idx_read(pl, &lb)) != EM_OK) {
    dl_idx_free(&im);
    return st;
  }
  if (im.ndim != 3 || lb.ndim != 1 || im.dims[0] != lb.dims[0]) {
    st = em_set_error(EM_ERR_FORMAT,
                      "%s and %s disagree: %d-dim images with %lld items, %d-dim labels with %lld",
                      pi, pl, im.ndim, (long long)im.dims[0], lb.ndim, (long long)lb.dims[0]);
    goto done;
  }
  if (im.dims[1] != DL_FMNIST_SIDE || im.dims[2] != DL_FMNIST_SIDE) {
    st = em_set_error(EM_ERR_FORMAT, "%s: byte offset 8: images of %lldx%lld, expected %dx%d", pi,
                      (long long)im.dims[1], (long long)im.dims[2], DL_FMNIST_SIDE, DL_FMNIST_SIDE);
    goto done;
  }
  if ((st = dl_idx_check_labels(&lb, pl, DL_FMNIST_CLASSES)) != EM_OK) goto done;
  int64_t n = im.dims[0], px = im.dims[1] * im.dims[2];
  em_scope s = em_scope_begin();
  em_tensor *x = em_empty(EM_F32, EM_SHAPE(n, px));
  em_tensor *y = em_empty(EM_I64, EM_SHAPE(n));
  if (x && y) {
    float *xp = em_data_f32(x);
    int64_t *yp = em_data(y);
    for (int64_t i = 0; i < n * px; i++) xp[i] = im.data[i] * (1.0f / 255.0f);
    for (int64_t i = 0; i < n; i++) yp[i] = lb.data[i];
    *images = em_retain(x);
    *labels = em_retain(y);
  } else {
    st = em_last_status();
  }
  em_scope_end(s);
done:
  dl_idx_free(&im);
  dl_idx_free(&lb);
  return st;
}
