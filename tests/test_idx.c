/* test_idx.c: the IDX reader on the real Fashion-MNIST files and on corrupt ones (written in a
 * scratch directory, tu_enter_tmpdir). */
#include "dl_idx.h"
#include "testutil.h"

#include <stdio.h>
#include <string.h>
#include <zlib.h>

/* Write bytes to path, gzip-compressed if gz. */
static void write_file(const char *path, const unsigned char *b, size_t n, bool gz) {
  if (gz) {
    gzFile f = gzopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(gzwrite(f, b, (unsigned)n), (int)n);
    gzclose(f);
  } else {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
  }
}

Test(idx, real_fashion_mnist) {
  em_scope s = em_scope_begin();
  em_tensor *x, *y;
  cr_assert_eq(dl_fmnist_load(dl_fmnist_dir(), "train", &x, &y), EM_OK, "%s", em_last_error());
  cr_assert_eq(x->shape[0], 60000);
  cr_assert_eq(x->shape[1], 784);
  cr_assert_eq(y->shape[0], 60000);
  /* Fashion-MNIST's documented first training labels: ankle boot, t-shirt, t-shirt, dress. */
  int64_t first[] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
  for (int i = 0; i < 10; i++) cr_assert_eq(em_get(y, i), first[i], "label %d", i);
  double mx = 0;
  for (int64_t i = 0; i < 784 * 10; i++) mx = em_get(x, i) > mx ? em_get(x, i) : mx;
  cr_assert_float_eq(mx, 1.0, 1e-6, "pixels scale to [0, 1]");
  em_release(x);
  em_release(y);
  cr_assert_eq(dl_fmnist_load(dl_fmnist_dir(), "t10k", &x, &y), EM_OK, "%s", em_last_error());
  cr_assert_eq(x->shape[0], 10000);
  cr_assert_eq(em_get(y, 0), 9);
  cr_assert_eq(em_get(y, 1), 2);
  em_release(x);
  em_release(y);
  em_scope_end(s);
}

static const unsigned char good[] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6};

Test(idx, plain_and_gz_read_the_same) {
  char *dir = tu_enter_tmpdir("idx");
  dl_idx_array a;
  write_file("idx_plain.idx", good, sizeof good, false);
  cr_assert_eq(dl_idx_read("idx_plain.idx", &a), EM_OK, "%s", em_last_error());
  cr_assert_eq(a.ndim, 2);
  cr_assert_eq(a.dims[0], 2);
  cr_assert_eq(a.dims[1], 3);
  cr_assert_eq(a.data[5], 6);
  dl_idx_free(&a);
  write_file("idx_gz.idx.gz", good, sizeof good, true);
  cr_assert_eq(dl_idx_read("idx_gz.idx.gz", &a), EM_OK, "%s", em_last_error());
  cr_assert_eq(memcmp(a.data, good + 12, 6), 0);
  dl_idx_free(&a);
  tu_rm_rf(dir);
}

static void expect_error(const char *path, const char *needle1, const char *needle2) {
  dl_idx_array a;
  cr_assert_neq(dl_idx_read(path, &a), EM_OK, "%s read without error", path);
  cr_assert_null(a.data);
  const char *m = em_last_error();
  cr_assert(strstr(m, path), "message '%s' does not name the file", m);
  cr_assert(strstr(m, needle1), "message '%s' lacks '%s'", m, needle1);
  if (needle2) cr_assert(strstr(m, needle2), "message '%s' lacks '%s'", m, needle2);
}

Test(idx, corrupt_inputs_are_named_errors) {
  char *dir = tu_enter_tmpdir("idx");
  unsigned char bad_magic[sizeof good];
  memcpy(bad_magic, good, sizeof good);
  bad_magic[2] = 0x0d; /* float data: not what we read */
  write_file("idx_magic.gz", bad_magic, sizeof good, true);
  expect_error("idx_magic.gz", "byte offset 0", "magic");

  /* Header promises 2x3 = 6 elements; only 4 follow. */
  write_file("idx_short.gz", good, sizeof good - 2, true);
  expect_error("idx_short.gz", "byte offset 12", "promises 6 bytes of element data");
  expect_error("idx_short.gz", "ends after 4", NULL);

  /* Header count larger than the file. */
  unsigned char big[sizeof good];
  memcpy(big, good, sizeof good);
  big[7] = 200;
  write_file("idx_big.idx", big, sizeof good, false);
  expect_error("idx_big.idx", "promises 600 data bytes", "the file has 18 bytes");

  /* A gzip stream whose header promises 64 GiB (4096 x 4096 x 4096) and holds 6 bytes: an error
   * once the stream ends, after a 1 MiB buffer, not a 64 GiB allocation up front. */
  unsigned char huge[] = {0, 0, 8, 3,    0, 0, 0x10, 0, 0, 0, 0x10,
                          0, 0, 0, 0x10, 0, 1, 2,    3, 4, 5, 6};
  write_file("idx_huge.gz", huge, sizeof huge, true);
  expect_error("idx_huge.gz", "promises 68719476736 bytes", "ends after 6");

  /* A truncated gzip stream (cut in the middle of the compressed bytes). */
  write_file("idx_full.gz", good, sizeof good, true);
  FILE *f = fopen("idx_full.gz", "rb");
  unsigned char buf[256];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  write_file("idx_trunc.gz", buf, n / 2, false);
  expect_error("idx_trunc.gz", "byte offset", NULL);

  expect_error("no/such/file.gz", "cannot open", NULL);
  em_clear_error();
  tu_rm_rf(dir);
}

/* Found by fuzzing (tests/fuzz/idx.c): a header that promises up to 64 GiB over a few bytes used to
 * be allocated in full before any data was read (out of memory, or a 64 GiB reservation). The data
 * is now read into a buffer that grows as it arrives (and a plain file's size is checked first):
 * a format error naming the promise and where the file (plain or gzip) ends. tests/fuzz/regress/ replays the fuzzer's input in ctest. */
Test(idx, huge_header_over_short_file_is_a_format_error) {
  char *dir = tu_enter_tmpdir("idx_huge");
  /* 4096 x 4096 x 4095 = 68702699520 elements (under the 2^36 plausibility cap), then 4 bytes */
  static const unsigned char huge[] = {0, 0, 8, 3, 0, 0, 0x10, 0, 0, 0, 0x10, 0,
                                       0, 0, 0x0f, 0xff, 1, 2, 3, 4};
  for (int gz = 0; gz < 2; gz++) {
    const char *path = gz ? "idx_huge.gz" : "idx_huge.idx";
    write_file(path, huge, sizeof huge, gz);
    dl_idx_array a;
    cr_assert_eq(dl_idx_read(path, &a), EM_ERR_FORMAT, "%s: %s", path, em_last_error());
    /* a plain file is checked against its size first; a gzip stream as it is read */
    if (gz)
      expect_error(path, "the header promises 68702699520 bytes", "the stream ends after 4");
    else
      expect_error(path, "the header promises 68702699520 data bytes", "the file has 20 bytes");
  }
  em_clear_error();
  tu_rm_rf(dir);
}
