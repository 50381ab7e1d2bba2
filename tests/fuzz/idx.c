/* fuzz_idx: IDX files (MNIST's format), plain and gzip. The first input byte chooses how the rest
 * is stored: even, as is (the fuzzer's bytes are the file, gzip headers included); odd, gzip-
 * compressed here first, so that the fuzzer mutates the decompressed IDX content and the reader
 * still goes through zlib's stream. The file is read by dl_idx_read and opened as a dataset
 * (images only: dl_idx_open checks the dims), whose first and last samples are read. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "dl.h"
#include "dl_idx.h"
#include "fuzzutil.h"

/* data as a gzip member (deflateInit2 with window bits 16 + 15). */
static uint8_t *gzip(const uint8_t *data, size_t n, size_t *out_n) {
  z_stream z = {0};
  if (deflateInit2(&z, 1, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
  size_t cap = deflateBound(&z, n) + 32;
  uint8_t *out = malloc(cap);
  if (!out) abort();
  z.next_in = (Bytef *)data;
  z.avail_in = (uInt)n;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) abort();
  *out_n = z.total_out;
  deflateEnd(&z);
  return out;
}

static void read_dataset(const char *path) {
  dl_dataset *d = dl_idx_open_ex(path, NULL, &(dl_idx_options){.u8 = true});
  if (!d) return;
  const dl_field *f = dl_dataset_field(d, 0);
  void *buf = malloc(dl_field_bytes(f) ? dl_field_bytes(f) : 1);
  if (!buf) abort();
  int64_t n = dl_dataset_len(d);
  if (n > 0 && (dl_dataset_get(d, 0, (void *const[]){buf}) != EM_OK ||
                dl_dataset_get(d, n - 1, (void *const[]){buf}) != EM_OK))
    abort(); /* an opened dataset serves every index */
  free(buf);
  dl_dataset_close(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > (1u << 20)) return 0;
  const char *path;
  if (data[0] & 1) {
    size_t n;
    uint8_t *z = gzip(data + 1, size - 1, &n);
    path = fz_write(0, "images-idx3-ubyte.gz", z, n);
    free(z);
  } else {
    path = fz_write(0, "images-idx3-ubyte", data + 1, size - 1);
  }
  dl_idx_array a;
  if (dl_idx_read(path, &a) == EM_OK) {
    size_t n = 1;
    for (int d = 0; d < a.ndim; d++) n *= a.dims[d];
    if (n != a.size) abort(); /* the size the header promises is what was read */
    dl_idx_free(&a);
  }
  read_dataset(path);
  return 0;
}
