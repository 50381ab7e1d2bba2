/* test_dl_dataset.c: the data loader's datasets (dl.h, first half): IDX files on the real
 * Fashion-MNIST and on corrupt inputs, llm.c token shards, in-memory arrays and user callbacks.
 *
 * Oracles: dl_idx_read of the raw files (pixels / 255 in float64), Fashion-MNIST's documented
 * first labels, token windows recomputed from the generating formula by a sequential walk over
 * the shards (no binary search), and the shard bytes read back with fread. Tests that write files
 * work in a scratch directory (tu_enter_tmpdir) and name them with a "dlds_" prefix. */
#include "dl.h"
#include "dl_idx.h"
#include "testutil.h"

#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* Write bytes to path, gzip-compressed if gz. */
static void write_file(const char *path, const unsigned char *b, size_t n, bool gz) {
  if (gz) {
    gzFile f = gzopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(gzwrite(f, b, (unsigned)n), (int)n);
    cr_assert_eq(gzclose(f), Z_OK);
  } else {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
  }
}

/* Overwrite 4 bytes at offset with v, little-endian. */
static void patch_le32(const char *path, long offset, uint32_t v) {
  unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                        (unsigned char)(v >> 24)};
  FILE *f = fopen(path, "r+b");
  cr_assert_not_null(f, "cannot open %s", path);
  cr_assert_eq(fseek(f, offset, SEEK_SET), 0);
  cr_assert_eq(fwrite(b, 1, 4, f), 4);
  cr_assert_eq(fclose(f), 0);
}

/* The call returned NULL and the last error contains every non-NULL needle. */
static void expect_fail(const void *got, const char *what, const char *n1, const char *n2,
                        const char *n3) {
  const char *m = em_last_error();
  cr_assert_null(got, "%s: succeeded, expected an error", what);
  const char *needles[] = {n1, n2, n3};
  for (int i = 0; i < 3; i++)
    if (needles[i])
      cr_assert(strstr(m, needles[i]), "%s: message '%s' lacks '%s'", what, m, needles[i]);
  em_clear_error();
}

/* ---- IDX: the real Fashion-MNIST ------------------------------------------------------- */

static void check_field(const dl_field *f, const char *name, em_dtype dt, int ndim,
                        const int64_t *shape) {
  cr_assert_not_null(f);
  cr_assert_str_eq(f->name, name);
  cr_assert_eq(f->dtype, dt, "field %s: dtype %d, expected %d", name, f->dtype, dt);
  cr_assert_eq(f->ndim, ndim, "field %s: ndim %d, expected %d", name, f->ndim, ndim);
  for (int d = 0; d < ndim; d++)
    cr_assert_eq(f->shape[d], shape[d], "field %s: shape[%d] = %lld, expected %lld", name, d,
                 (long long)f->shape[d], (long long)shape[d]);
}

Test(dl_dataset, fmnist_train_and_t10k) {
  TU_BEGIN;
  char pi[4096], pl[4096];
  snprintf(pi, sizeof pi, "%s/train-images-idx3-ubyte.gz", dl_fmnist_dir());
  snprintf(pl, sizeof pl, "%s/train-labels-idx1-ubyte.gz", dl_fmnist_dir());
  dl_idx_array raw_x, raw_y; /* the oracle: the files as bytes */
  cr_assert_eq(dl_idx_read(pi, &raw_x), EM_OK, "%s", em_last_error());
  cr_assert_eq(dl_idx_read(pl, &raw_y), EM_OK, "%s", em_last_error());

  dl_dataset *d = dl_fmnist_open(NULL, "train", NULL);
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_eq(dl_dataset_len(d), 60000);
  cr_assert_eq(dl_dataset_nfields(d), 2);
  check_field(dl_dataset_field(d, 0), "x", EM_F32, 1, (int64_t[]){784});
  check_field(dl_dataset_field(d, 1), "y", EM_I64, 0, NULL);
  cr_assert_null(dl_dataset_field(d, 2));
  cr_assert_null(dl_dataset_field(d, -1));
  cr_assert_eq(dl_field_bytes(dl_dataset_field(d, 0)), 784 * 4);
  cr_assert_eq(dl_field_bytes(dl_dataset_field(d, 1)), 8);

  float x[784];
  int64_t y = -1;
  /* Fashion-MNIST's documented first training labels: ankle boot, t-shirt, t-shirt, dress, ... */
  const int64_t first[] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
  for (int i = 0; i < 10; i++) {
    cr_assert_eq(dl_dataset_get(d, i, (void *[]){x, &y}), EM_OK, "%s", em_last_error());
    cr_assert_eq(y, first[i], "label %d is %lld, expected %lld", i, (long long)y,
                 (long long)first[i]);
  }
  const int64_t probe[] = {0, 123, 30000, 59999};
  for (int k = 0; k < 4; k++) {
    int64_t i = probe[k];
    cr_assert_eq(dl_dataset_get(d, i, (void *[]){x, &y}), EM_OK, "%s", em_last_error());
    cr_assert_eq(y, raw_y.data[i], "sample %lld label", (long long)i);
    int nonzero = 0;
    for (int p = 0; p < 784; p++) {
      double want = raw_x.data[i * 784 + p] / 255.0;
      cr_assert(fabs(x[p] - want) <= 1e-7, "sample %lld pixel %d: %.9g, expected %.9g",
                (long long)i, p, x[p], want);
      nonzero += raw_x.data[i * 784 + p] != 0;
    }
    cr_assert_gt(nonzero, 50, "sample %lld is nearly blank: wrong offset?", (long long)i);
  }
  dl_dataset_close(d);

  /* keep_dims: (1, 28, 28), same values. */
  d = dl_fmnist_open(NULL, "train", &(dl_idx_options){.keep_dims = true});
  cr_assert_not_null(d, "%s", em_last_error());
  check_field(dl_dataset_field(d, 0), "x", EM_F32, 3, (int64_t[]){1, 28, 28});
  cr_assert_eq(dl_dataset_get(d, 123, (void *[]){x, &y}), EM_OK, "%s", em_last_error());
  for (int p = 0; p < 784; p++)
    cr_assert(fabs(x[p] - raw_x.data[123 * 784 + p] / 255.0) <= 1e-7, "keep_dims pixel %d", p);
  dl_dataset_close(d);

  /* u8: the raw bytes. */
  d = dl_fmnist_open(NULL, "train", &(dl_idx_options){.u8 = true});
  cr_assert_not_null(d, "%s", em_last_error());
  check_field(dl_dataset_field(d, 0), "x", EM_U8, 1, (int64_t[]){784});
  cr_assert_eq(dl_field_bytes(dl_dataset_field(d, 0)), 784);
  uint8_t xb[784];
  cr_assert_eq(dl_dataset_get(d, 123, (void *[]){xb, &y}), EM_OK, "%s", em_last_error());
  cr_assert_eq(memcmp(xb, raw_x.data + 123 * 784, 784), 0, "u8 sample 123 differs from the file");
  cr_assert_eq(y, raw_y.data[123]);
  dl_dataset_close(d);

  /* Images only: one field. */
  d = dl_idx_open(pi, NULL);
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_eq(dl_dataset_nfields(d), 1);
  cr_assert_eq(dl_dataset_len(d), 60000);
  dl_dataset_close(d);

  d = dl_fmnist_open(NULL, "t10k", NULL);
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_eq(dl_dataset_len(d), 10000);
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(dl_dataset_get(d, i, (void *[]){x, &y}), EM_OK, "%s", em_last_error());
    cr_assert_eq(y, i == 0 ? 9 : 2, "t10k label %d is %lld", i, (long long)y);
  }
  dl_dataset_close(d);

  expect_fail(dl_fmnist_open(NULL, "nosuchsplit", NULL), "missing split",
              "nosuchsplit-images-idx3-ubyte.gz", "cannot open", NULL);
  dl_idx_free(&raw_x);
  dl_idx_free(&raw_y);
  TU_END;
}

/* ---- IDX: small synthetic and corrupt files ------------------------------------------- */

/* 2 images of 2x3, pixels 0, 51, 102, ..., 255 and 10, 20, ...; 2 labels 7, 3. */
static const unsigned char img_good[] = {0, 0, 8, 3,  0,   0,   0,   2,   0,  0,  0,  2,  0,  0,
                                         0, 3, 0, 51, 102, 153, 204, 255, 10, 20, 30, 40, 50, 60};
static const unsigned char lbl_good[] = {0, 0, 8, 1, 0, 0, 0, 2, 7, 3};

Test(dl_dataset, idx_small_and_corrupt) {
  TU_BEGIN;
  char *dir = tu_enter_tmpdir("dlds");
  write_file("dlds_img.gz", img_good, sizeof img_good, true);
  write_file("dlds_lbl.gz", lbl_good, sizeof lbl_good, true);
  dl_dataset *d = dl_idx_open("dlds_img.gz", "dlds_lbl.gz");
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_eq(dl_dataset_len(d), 2);
  check_field(dl_dataset_field(d, 0), "x", EM_F32, 1, (int64_t[]){6});
  float x[6];
  int64_t y;
  cr_assert_eq(dl_dataset_get(d, 1, (void *[]){x, &y}), EM_OK, "%s", em_last_error());
  for (int p = 0; p < 6; p++)
    cr_assert(fabs(x[p] - img_good[22 + p] / 255.0) <= 1e-7, "pixel %d: %g", p, x[p]);
  cr_assert_eq(y, 3);
  cr_assert_eq(dl_dataset_get(d, 0, (void *[]){x, &y}), EM_OK, "%s", em_last_error());
  cr_assert_eq(x[0], 0.0f);
  cr_assert_eq(x[5], 1.0f, "255 maps to exactly 1");
  cr_assert_eq(y, 7);
  dl_dataset_close(d);

  /* Truncated gzip stream: a valid compressed file cut in half. */
  FILE *f = fopen("dlds_img.gz", "rb");
  cr_assert_not_null(f);
  unsigned char buf[512];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  write_file("dlds_trunc.gz", buf, n / 2, false);
  expect_fail(dl_idx_open("dlds_trunc.gz", "dlds_lbl.gz"), "truncated gz", "dlds_trunc.gz",
              "byte offset", NULL);

  /* Wrong magic (type 0x0d = float). */
  unsigned char bad[sizeof img_good];
  memcpy(bad, img_good, sizeof bad);
  bad[2] = 0x0d;
  write_file("dlds_magic.gz", bad, sizeof bad, true);
  expect_fail(dl_idx_open("dlds_magic.gz", "dlds_lbl.gz"), "wrong magic", "dlds_magic.gz",
              "byte offset 0", "magic");

  /* Header count (200 images) larger than the data (2). */
  memcpy(bad, img_good, sizeof bad);
  bad[7] = 200;
  write_file("dlds_big.idx", bad, sizeof bad, false);
  expect_fail(dl_idx_open("dlds_big.idx", "dlds_lbl.gz"), "count too large", "dlds_big.idx",
              "byte offset 16", "promises 1200 data bytes");

  /* Images and labels disagree: 3 labels for 2 images. */
  const unsigned char lbl3[] = {0, 0, 8, 1, 0, 0, 0, 3, 7, 3, 1};
  write_file("dlds_lbl3.gz", lbl3, sizeof lbl3, true);
  expect_fail(dl_idx_open("dlds_img.gz", "dlds_lbl3.gz"), "count mismatch", "dlds_img.gz",
              "dlds_lbl3.gz", "2 images of 2x3 but 3 labels");

  /* Images that are not (N, H, W); labels that are not (N). */
  expect_fail(dl_idx_open("dlds_lbl.gz", NULL), "1-dim images", "dlds_lbl.gz", "byte offset 3",
              "expected 3");
  expect_fail(dl_idx_open("dlds_img.gz", "dlds_img.gz"), "3-dim labels", "dlds_img.gz",
              "byte offset 3", "expected 1");
  expect_fail(dl_idx_open("dlds_img.gz", "dlds_no_such_file.gz"), "missing labels",
              "dlds_no_such_file.gz", "cannot open", NULL);
  expect_fail(dl_idx_open(NULL, NULL), "NULL images", "NULL", NULL, NULL);

  /* Labels against the number of classes: 12 at item 1 (byte 9). Unchecked, it is read as is. */
  const unsigned char lbl12[] = {0, 0, 8, 1, 0, 0, 0, 2, 7, 12};
  write_file("dlds_lbl12.gz", lbl12, sizeof lbl12, true);
  d = dl_idx_open("dlds_img.gz", "dlds_lbl12.gz");
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_eq(dl_dataset_get(d, 1, (void *[]){x, &y}), EM_OK, "%s", em_last_error());
  cr_assert_eq(y, 12);
  dl_dataset_close(d);
  expect_fail(dl_idx_open_ex("dlds_img.gz", "dlds_lbl12.gz", &(dl_idx_options){.classes = 12}),
              "label 12, 12 classes",
              "dlds_lbl12.gz: byte offset 9:", "label 12 of item 1 is out of range for 12 classes",
              "(expected 0..11)");
  d = dl_idx_open_ex("dlds_img.gz", "dlds_lbl12.gz", &(dl_idx_options){.classes = 13});
  cr_assert_not_null(d, "%s", em_last_error());
  dl_dataset_close(d);
  /* Images of another size than asked. */
  d = dl_idx_open_ex("dlds_img.gz", "dlds_lbl.gz", &(dl_idx_options){.height = 2, .width = 3});
  cr_assert_not_null(d, "%s", em_last_error());
  dl_dataset_close(d);
  expect_fail(
      dl_idx_open_ex("dlds_img.gz", "dlds_lbl.gz", &(dl_idx_options){.height = 3, .width = 2}),
      "3x2 asked", "dlds_img.gz: byte offset 8: images of 2x3, expected 3x2", NULL, NULL);

  /* (Fashion-)MNIST's loaders: 28 x 28 images (these 2x3 are refused) with labels 0..9. */
  write_file("t10k-images-idx3-ubyte.gz", img_good, sizeof img_good, true);
  write_file("t10k-labels-idx1-ubyte.gz", lbl_good, sizeof lbl_good, true);
  expect_fail(dl_fmnist_open(".", "t10k", NULL), "fmnist 2x3",
              "./t10k-images-idx3-ubyte.gz: byte offset 8: images of 2x3, expected 28x28", NULL,
              NULL);
  em_tensor *xt = NULL, *yt = NULL;
  cr_assert_neq(dl_fmnist_load(".", "t10k", &xt, &yt), EM_OK);
  expect_fail(NULL, "fmnist_load 2x3", "./t10k-images-idx3-ubyte.gz: byte offset 8: images of 2x3",
              NULL, NULL);
  unsigned char img28[16 + 2 * 784] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28};
  write_file("t10k-images-idx3-ubyte.gz", img28, sizeof img28, true);
  const unsigned char lbl10[] = {0, 0, 8, 1, 0, 0, 0, 2, 10, 3};
  write_file("t10k-labels-idx1-ubyte.gz", lbl10, sizeof lbl10, true);
  expect_fail(dl_fmnist_open(".", "t10k", NULL), "fmnist label 10",
              "./t10k-labels-idx1-ubyte.gz: byte offset 8:",
              "label 10 of item 0 is out of range for 10 classes", NULL);
  cr_assert_neq(dl_fmnist_load(".", "t10k", &xt, &yt), EM_OK);
  cr_assert_null(xt);
  cr_assert_null(yt);
  expect_fail(NULL, "fmnist_load label 10",
              "./t10k-labels-idx1-ubyte.gz: byte offset 8:", "label 10 of item 0", NULL);
  write_file("t10k-labels-idx1-ubyte.gz", lbl_good, sizeof lbl_good, true);
  d = dl_fmnist_open(".", "t10k", NULL);
  cr_assert_not_null(d, "%s", em_last_error());
  dl_dataset_close(d);
  /* A missing file: the reason too. */
  expect_fail(dl_fmnist_open(".", "train", NULL), "missing train files",
              "./train-images-idx3-ubyte.gz: cannot open: No such file or directory", NULL, NULL);

  tu_rm_rf(dir);
  TU_END;
}

/* ---- token shards ------------------------------------------------------------------------- */

/* Token at position pos of shard s: covers high bytes and values above 32767 (sign errors). */
static uint16_t tok_value(int s, int64_t pos) {
  return (uint16_t)((s * 30011 + pos * 257) % 65536);
}

static void write_shard(const char *path, int s, int64_t n) {
  uint16_t *t = malloc((size_t)(n > 0 ? n : 1) * sizeof *t);
  cr_assert_not_null(t);
  for (int64_t i = 0; i < n; i++) t[i] = tok_value(s, i);
  cr_assert_eq(dl_tokens_write(path, t, n), EM_OK, "%s", em_last_error());
  free(t);
}

Test(dl_dataset, tokens_windows) {
  TU_BEGIN;
  char *dir = tu_enter_tmpdir("dlds");
  /* Shard 2 has 8 tokens: no window of 9 (it must be skipped); shard 1 has exactly one. */
  const int64_t ntok[] = {100, 9, 8, 50};
  const char *paths[] = {"dlds_tok_0.bin", "dlds_tok_1.bin", "dlds_tok_2.bin", "dlds_tok_3.bin"};
  for (int s = 3; s >= 0; s--) write_shard(paths[s], s, ntok[s]); /* order of creation is moot */

  /* The writer's bytes, read back: header of 256 LE int32, then LE uint16 tokens. */
  FILE *f = fopen(paths[0], "rb");
  cr_assert_not_null(f);
  unsigned char b[1024 + 200 + 1];
  cr_assert_eq(fread(b, 1, sizeof b, f), 1024 + 200, "shard 0 is not 1024 + 2*100 bytes");
  fclose(f);
  cr_assert_eq(b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24, 20240520);
  cr_assert_eq(b[4] | b[5] << 8 | b[6] << 16 | b[7] << 24, 1);
  cr_assert_eq(b[8] | b[9] << 8 | b[10] << 16 | b[11] << 24, 100);
  for (int i = 12; i < 1024; i++) cr_assert_eq(b[i], 0, "header byte %d", i);
  for (int i = 0; i < 100; i++)
    cr_assert_eq(b[1024 + 2 * i] | b[1025 + 2 * i] << 8, tok_value(0, i), "token %d", i);
  glob_t g;
  cr_assert_eq(glob("dlds_tok_*.tmp.*", 0, NULL, &g), GLOB_NOMATCH, "a temporary file was left");
  globfree(&g);

  const int64_t T = 8;
  dl_dataset *d = dl_tokens_open("dlds_tok_*.bin", T);
  cr_assert_not_null(d, "%s", em_last_error());
  int64_t want_len = 0;
  for (int s = 0; s < 4; s++) want_len += ntok[s] >= T + 1 ? (ntok[s] - 1) / T : 0;
  cr_assert_eq(want_len, 12 + 1 + 0 + 6);
  cr_assert_eq(dl_dataset_len(d), want_len);
  check_field(dl_dataset_field(d, 0), "tokens", EM_I64, 1, (int64_t[]){T + 1});
  cr_assert_eq(dl_dataset_nfields(d), 1);

  /* Every sample against a sequential walk: shard by shard, window by window. */
  int64_t got[9], i = 0;
  for (int s = 0; s < 4; s++) {
    for (int64_t w = 0; w < (ntok[s] >= T + 1 ? (ntok[s] - 1) / T : 0); w++, i++) {
      cr_assert_eq(dl_dataset_get(d, i, (void *[]){got}), EM_OK, "%s", em_last_error());
      for (int k = 0; k <= T; k++)
        cr_assert_eq(got[k], tok_value(s, w * T + k),
                     "sample %lld (shard %d window %lld) token %d: %lld, expected %d", (long long)i,
                     s, (long long)w, k, (long long)got[k], tok_value(s, w * T + k));
    }
  }
  cr_assert_eq(i, want_len);
  /* Spot checks: the last window of shard 0 ends at token 96 (windows overlap by one token);
   * sample 12 is shard 1's only window; sample 13, after the empty shard 2, is shard 3's first. */
  cr_assert_eq(dl_dataset_get(d, 11, (void *[]){got}), EM_OK);
  cr_assert_eq(got[0], tok_value(0, 88));
  cr_assert_eq(got[8], tok_value(0, 96));
  cr_assert_eq(dl_dataset_get(d, 12, (void *[]){got}), EM_OK);
  cr_assert_eq(got[0], tok_value(1, 0));
  cr_assert_eq(got[8], tok_value(1, 8));
  cr_assert_eq(dl_dataset_get(d, 13, (void *[]){got}), EM_OK);
  cr_assert_eq(got[0], tok_value(3, 0));
  cr_assert_eq(dl_dataset_get(d, 18, (void *[]){got}), EM_OK);
  cr_assert_eq(got[8], tok_value(3, 48));
  cr_assert_eq(dl_dataset_get(d, 19, (void *[]){got}), EM_ERR_INVALID);
  em_clear_error();
  dl_dataset_close(d);

  /* T = 1: every token but the last starts a window: 99 + 8 + 7 + 49. */
  d = dl_tokens_open("dlds_tok_*.bin", 1);
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_eq(dl_dataset_len(d), 99 + 8 + 7 + 49);
  cr_assert_eq(dl_dataset_get(d, 99, (void *[]){got}), EM_OK);
  cr_assert_eq(got[0], tok_value(1, 0));
  cr_assert_eq(got[1], tok_value(1, 1));
  dl_dataset_close(d);

  tu_rm_rf(dir);
  TU_END;
}

Test(dl_dataset, tokens_errors) {
  TU_BEGIN;
  char *dir = tu_enter_tmpdir("dlds");
  expect_fail(dl_tokens_open("dlds_nomatch_*.bin", 8), "no match", "dlds_nomatch_*.bin",
              "no file matches", NULL);

  write_shard("dlds_bad_magic.bin", 0, 20);
  patch_le32("dlds_bad_magic.bin", 0, 12345);
  expect_fail(dl_tokens_open("dlds_bad_magic.bin", 8), "bad magic", "dlds_bad_magic.bin",
              "byte offset 0", "magic 12345, expected 20240520");

  write_shard("dlds_bad_version.bin", 0, 20);
  patch_le32("dlds_bad_version.bin", 4, 2);
  expect_fail(dl_tokens_open("dlds_bad_version.bin", 8), "bad version", "dlds_bad_version.bin",
              "byte offset 4", "version 2, expected 1");

  /* The header promises 20 tokens (40 bytes); only 10 (20 bytes) remain. */
  write_shard("dlds_short.bin", 0, 20);
  cr_assert_eq(truncate("dlds_short.bin", 1024 + 20), 0);
  expect_fail(dl_tokens_open("dlds_short.bin", 8), "truncated data", "dlds_short.bin",
              "byte offset 1044", "promises 40 bytes");

  /* 3 bytes past the 20 tokens. */
  write_shard("dlds_long.bin", 0, 20);
  FILE *f = fopen("dlds_long.bin", "ab");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite("abc", 1, 3, f), 3);
  fclose(f);
  expect_fail(dl_tokens_open("dlds_long.bin", 8), "trailing bytes", "dlds_long.bin",
              "byte offset 1064", "3 trailing bytes");

  /* Shorter than the header. */
  unsigned char small[100] = {0};
  write_file("dlds_tiny.bin", small, sizeof small, false);
  expect_fail(dl_tokens_open("dlds_tiny.bin", 8), "short header", "dlds_tiny.bin",
              "needs 1024 bytes", "has 100");

  /* A bad shard among good ones is still named. */
  write_shard("dlds_mix_0.bin", 0, 50);
  write_file("dlds_mix_1.bin", small, sizeof small, false);
  expect_fail(dl_tokens_open("dlds_mix_*.bin", 8), "bad second shard", "dlds_mix_1.bin", "has 100",
              NULL);

  /* Bad T; no window at all. */
  write_shard("dlds_few.bin", 0, 8);
  cr_assert_null(dl_tokens_open("dlds_few.bin", 0));
  cr_assert_eq(em_last_status(), EM_ERR_INVALID);
  expect_fail(NULL, "T = 0", "T = 0", NULL, NULL);
  expect_fail(dl_tokens_open("dlds_few.bin", -3), "T = -3", "T = -3", NULL, NULL);
  expect_fail(dl_tokens_open("dlds_few.bin", 8), "no window", "dlds_few.bin", "T = 8", "no window");
  dl_dataset *d = dl_tokens_open("dlds_few.bin", 7); /* exactly one window of 8 */
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_eq(dl_dataset_len(d), 1);
  dl_dataset_close(d);

  /* Writer errors name the path; a zero-token shard is valid and holds no window. */
  cr_assert_eq(dl_tokens_write("dlds_no_such_dir/x.bin", (uint16_t[]){1, 2}, 2), EM_ERR_IO);
  expect_fail(NULL, "write into a missing directory", "dlds_no_such_dir/x.bin",
              "No such file or directory", NULL);
  cr_assert_eq(dl_tokens_write("dlds_empty.bin", NULL, 0), EM_OK, "%s", em_last_error());
  expect_fail(dl_tokens_open("dlds_empty.bin", 1), "empty shard", "dlds_empty.bin", "T = 1", NULL);
  cr_assert_eq(dl_tokens_write("dlds_neg.bin", NULL, -1), EM_ERR_INVALID);
  cr_assert_eq(access("dlds_neg.bin", F_OK), -1);
  em_clear_error();

  tu_rm_rf(dir);
  TU_END;
}

/* ---- in-memory arrays ---------------------------------------------------------------------- */

/* ---- byte-level text ---------------------------------------------------------------------- */

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "%s", path);
  cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
  fclose(f);
}

Test(dl_dataset, text_windows_split_and_entropy) {
  TU_BEGIN;
  char *dir = tu_enter_tmpdir("dlds");
  /* Two files and a link to the first (named so that it sorts between them): read once each. */
  write_text("dlds_txt_a", "abcdefghij");  /* 10 bytes */
  write_text("dlds_txt_c", "\xff\x80xyz"); /* 5 bytes, high bytes must not go negative */
  cr_assert_eq(symlink("dlds_txt_a", "dlds_txt_b"), 0);
  const char all[] = "abcdefghij\xff\x80xyz";
  const int64_t n = 15, T = 4;
  double h;
  dl_dataset *d = dl_text_open("dlds_txt_*", T, 0, 1, &h);
  cr_assert_not_null(d, "%s", em_last_error());
  check_field(dl_dataset_field(d, 0), "tokens", EM_I64, 1, (int64_t[]){T + 1});
  cr_assert_eq(dl_dataset_len(d), (n - 1) / T); /* 3 windows of 5, overlapping by one byte */
  int64_t got[5];
  for (int64_t w = 0; w < 3; w++) {
    cr_assert_eq(dl_dataset_get(d, w, (void *[]){got}), EM_OK, "%s", em_last_error());
    for (int64_t i = 0; i <= T; i++)
      cr_assert_eq(got[i], (uint8_t)all[w * T + i], "window %lld byte %lld", (long long)w,
                   (long long)i);
  }
  /* 15 distinct bytes, each once: log2(15) bits. */
  cr_assert_float_eq(h, log2(15.0), 1e-12);
  dl_dataset_close(d);

  /* The split [0.6, 1): bytes 9..14 ("j\xff\x80xyz"), one window of 5; its entropy: 6 distinct. */
  d = dl_text_open("dlds_txt_*", T, 0.6, 1, &h);
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_eq(dl_dataset_len(d), 1);
  cr_assert_eq(dl_dataset_get(d, 0, (void *[]){got}), EM_OK);
  cr_assert_eq(got[0], 'j');
  cr_assert_eq(got[1], 0xff);
  cr_assert_eq(got[4], 'y');
  cr_assert_float_eq(h, log2(6.0), 1e-12);
  dl_dataset_close(d);

  /* Repeated bytes: "aab" -> p = 2/3, 1/3. */
  write_text("dlds_rep", "aabaabaab");
  d = dl_text_open("dlds_rep", 2, 0, 1, &h);
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_float_eq(h, -(2.0 / 3) * log2(2.0 / 3) - (1.0 / 3) * log2(1.0 / 3), 1e-12);
  dl_dataset_close(d);

  expect_fail(dl_text_open("dlds_nomatch_*", 4, 0, 1, NULL), "no match", "dlds_nomatch_*",
              "no file matches", NULL);
  expect_fail(dl_text_open("dlds_rep", 0, 0, 1, NULL), "T = 0", "T = 0", NULL, NULL);
  expect_fail(dl_text_open("dlds_rep", 2, 0.5, 0.5, NULL), "empty split", "[0.5, 0.5)", NULL, NULL);
  expect_fail(dl_text_open("dlds_rep", 2, 0.9, 1, NULL), "split too short", "dlds_rep", "9 bytes",
              "fewer than one window of T+1 = 3");
  tu_rm_rf(dir);
  TU_END;
}

Test(dl_dataset, memory_arrays) {
  TU_BEGIN;
  float xv[15];
  int64_t yv[5];
  for (int i = 0; i < 5; i++) {
    for (int j = 0; j < 3; j++) xv[i * 3 + j] = (float)(i * 10 + j) + 0.25f;
    yv[i] = 100 + i;
  }
  dl_dataset *d;
  {
    /* The tensors die with this scope unless the dataset retained them. */
    em_scope inner = em_scope_begin();
    em_tensor *x = em_from_data(EM_F32, EM_SHAPE(5, 3), xv);
    em_tensor *y = em_from_data(EM_I64, EM_SHAPE(5), yv);
    cr_assert(x && y, "%s", em_last_error());
    d = dl_memory_new((em_tensor *[]){x, y}, NULL, 2);
    cr_assert_not_null(d, "%s", em_last_error());
    em_scope_end(inner);
  }
  cr_assert_eq(dl_dataset_len(d), 5);
  cr_assert_eq(dl_dataset_nfields(d), 2);
  check_field(dl_dataset_field(d, 0), "x", EM_F32, 1, (int64_t[]){3});
  check_field(dl_dataset_field(d, 1), "y", EM_I64, 0, NULL);
  float xs[3];
  int64_t ys;
  cr_assert_eq(dl_dataset_get(d, 2, (void *[]){xs, &ys}), EM_OK, "%s", em_last_error());
  for (int j = 0; j < 3; j++) cr_assert_eq(xs[j], 20 + j + 0.25f, "x[2][%d] = %g", j, xs[j]);
  cr_assert_eq(ys, 102);
  cr_assert_eq(dl_dataset_get(d, 4, (void *[]){xs, &ys}), EM_OK, "%s", em_last_error());
  cr_assert_eq(xs[2], 42.25f);
  cr_assert_eq(ys, 104);
  dl_dataset_close(d); /* releases the retained tensors: TU_END checks none leaked */

  /* Names, a 3-dim field and a view that is contiguous with an offset (rows 1..3). */
  em_tensor *img = em_from_data(EM_F32, EM_SHAPE(5, 1, 3), xv);
  em_tensor *rows = em_narrow(img, 0, 1, 3);
  cr_assert_not_null(rows, "%s", em_last_error());
  d = dl_memory_new((em_tensor *[]){rows}, (const char *const[]){"image"}, 1);
  cr_assert_not_null(d, "%s", em_last_error());
  check_field(dl_dataset_field(d, 0), "image", EM_F32, 2, (int64_t[]){1, 3});
  cr_assert_eq(dl_dataset_len(d), 3);
  cr_assert_eq(dl_dataset_get(d, 0, (void *[]){xs}), EM_OK);
  cr_assert_eq(xs[0], 10.25f, "view row 0 is the tensor's row 1");
  dl_dataset_close(d);

  /* Errors. */
  em_tensor *x5 = em_from_data(EM_F32, EM_SHAPE(5, 3), xv);
  em_tensor *y4 = em_from_data(EM_I64, EM_SHAPE(4), yv);
  expect_fail(dl_memory_new((em_tensor *[]){x5, y4}, NULL, 2), "dim 0 mismatch", "array 1 ('y')",
              "dim 0", "(4 vs 5)");
  em_tensor *xt = em_transpose(x5, 0, 1);
  expect_fail(dl_memory_new((em_tensor *[]){xt}, NULL, 1), "non-contiguous", "contiguous", "[3, 5]",
              NULL);
  expect_fail(dl_memory_new((em_tensor *[]){em_scalar(1.0f)}, NULL, 1), "0-dim", "at least 1 dim",
              NULL, NULL);
  expect_fail(dl_memory_new((em_tensor *[]){x5}, NULL, 0), "0 arrays", "0 arrays", NULL, NULL);
  expect_fail(dl_memory_new((em_tensor *[]){x5, x5, x5, x5, x5}, NULL, 5), "5 arrays", "5 arrays",
              NULL, NULL);
  expect_fail(dl_memory_new((em_tensor *[]){x5, NULL}, NULL, 2), "NULL array", "array 1", "NULL",
              NULL);
  expect_fail(dl_memory_new((em_tensor *[]){x5, x5}, (const char *const[]){"a", "a"}, 2),
              "duplicate names", "both named 'a'", NULL, NULL);
  expect_fail(dl_memory_new((em_tensor *[]){x5}, (const char *const[]){"a_very_long_name_x"}, 1),
              "long name", "a_very_long_name_x", "15 characters", NULL);
  TU_END;
}

/* ---- user callbacks ------------------------------------------------------------------------- */

typedef struct {
  int64_t n;
  int closes;
  int64_t len_override; /* returned by len() when nonzero */
} user_ctx;

static int64_t user_len(void *ctx) {
  user_ctx *u = ctx;
  return u->len_override ? u->len_override : u->n;
}

/* "a": (2) i32 {index, -index}; "b": f32 scalar index / 2. Sample 5 fails. */
static em_status user_get(void *ctx, int64_t index, void *const out[]) {
  if (index == 5) return em_set_error(EM_ERR_IO, "user dataset: sample 5 is unreadable");
  int32_t *a = out[0];
  a[0] = (int32_t)index;
  a[1] = (int32_t)-index;
  *(float *)out[1] = (float)index / 2;
  return EM_OK;
}

static void user_close(void *ctx) { ((user_ctx *)ctx)->closes++; }

static dl_field user_fields[2] = {{"a", EM_I32, 1, {2}}, {"b", EM_F32, 0, {0}}};

/* dl_dataset_new must fail with a message containing needle and close ctx exactly once. */
static void expect_new_fails(const dl_field *fields, int nfields, const dl_dataset_fns *fns,
                             const char *what, const char *needle) {
  user_ctx u = {.n = 7};
  dl_dataset *d = dl_dataset_new(fields, nfields, fns, &u);
  if (d) dl_dataset_close(d);
  cr_assert_null(d, "%s: accepted", what);
  cr_assert_eq(em_last_status(), EM_ERR_INVALID, "%s: status %s", what,
               em_status_str(em_last_status()));
  cr_assert(strstr(em_last_error(), needle), "%s: message '%s' lacks '%s'", what, em_last_error(),
            needle);
  cr_assert_eq(u.closes, fns && fns->close ? 1 : 0, "%s: close called %d times", what, u.closes);
  em_clear_error();
}

Test(dl_dataset, user_callbacks) {
  TU_BEGIN;
  const dl_dataset_fns fns = {user_len, user_get, user_close};
  user_ctx u = {.n = 7};
  dl_dataset *d = dl_dataset_new(user_fields, 2, &fns, &u);
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_eq(dl_dataset_len(d), 7);
  cr_assert_eq(dl_field_bytes(dl_dataset_field(d, 0)), 8);
  cr_assert_eq(dl_field_bytes(dl_dataset_field(d, 1)), 4);
  int32_t a[2];
  float b;
  cr_assert_eq(dl_dataset_get(d, 3, (void *[]){a, &b}), EM_OK, "%s", em_last_error());
  cr_assert_eq(a[0], 3);
  cr_assert_eq(a[1], -3);
  cr_assert_eq(b, 1.5f);
  /* The dataset's own error comes through. */
  cr_assert_eq(dl_dataset_get(d, 5, (void *[]){a, &b}), EM_ERR_IO);
  cr_assert(strstr(em_last_error(), "sample 5"), "%s", em_last_error());
  /* Indices out of range: EM_ERR_INVALID naming the index and the length. */
  cr_assert_eq(dl_dataset_get(d, -1, (void *[]){a, &b}), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "index -1") && strstr(em_last_error(), "length 7"), "%s",
            em_last_error());
  cr_assert_eq(dl_dataset_get(d, 7, (void *[]){a, &b}), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "index 7") && strstr(em_last_error(), "length 7"), "%s",
            em_last_error());
  cr_assert_eq(u.closes, 0);
  dl_dataset_close(d);
  cr_assert_eq(u.closes, 1, "close called %d times", u.closes);
  dl_dataset_close(NULL);
  cr_assert_eq(dl_dataset_len(NULL), 0);
  cr_assert_null(dl_dataset_field(NULL, 0));

  /* A dataset without close is fine. */
  const dl_dataset_fns noclose = {user_len, user_get, NULL};
  d = dl_dataset_new(user_fields, 1, &noclose, &u);
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_eq(dl_dataset_nfields(d), 1);
  dl_dataset_close(d);
  cr_assert_eq(u.closes, 1);

  /* Validation failures: each closes ctx once. */
  dl_field f[DL_MAX_FIELDS + 1];
  for (int i = 0; i <= DL_MAX_FIELDS; i++) {
    memset(&f[i], 0, sizeof f[i]);
    snprintf(f[i].name, sizeof f[i].name, "f%d", i);
    f[i].dtype = EM_F32;
  }
  expect_new_fails(f, 0, &fns, "0 fields", "0 fields");
  expect_new_fails(f, DL_MAX_FIELDS + 1, &fns, "too many fields", "expected 1..4");
  expect_new_fails(NULL, 1, &fns, "NULL fields", "fields is NULL");
  expect_new_fails(f, 1, &(dl_dataset_fns){user_len, NULL, user_close}, "NULL get",
                   "fns->get is NULL");
  expect_new_fails(f, 1, &(dl_dataset_fns){NULL, user_get, user_close}, "NULL len",
                   "fns->len is NULL");
  expect_new_fails(f, 1, NULL, "NULL fns", "fns is NULL");
  dl_field g[2];
  memcpy(g, f, sizeof g);
  strcpy(g[1].name, "f0");
  expect_new_fails(g, 2, &fns, "duplicate names", "fields 0 and 1 are both named 'f0'");
  memcpy(g, f, sizeof g);
  g[1].name[0] = '\0';
  expect_new_fails(g, 2, &fns, "empty name", "field 1: empty name");
  memcpy(g, f, sizeof g);
  memset(g[0].name, 'n', sizeof g[0].name);
  expect_new_fails(g, 1, &fns, "unterminated name", "does not fit");
  memcpy(g, f, sizeof g);
  g[0].dtype = EM_DTYPE_COUNT;
  expect_new_fails(g, 1, &fns, "bad dtype", "invalid dtype");
  memcpy(g, f, sizeof g);
  g[0].ndim = EM_MAX_DIMS;
  expect_new_fails(g, 1, &fns, "ndim too large", "ndim 8");
  g[0].ndim = -1;
  expect_new_fails(g, 1, &fns, "negative ndim", "ndim -1");
  g[0].ndim = 2;
  g[0].shape[0] = 3;
  g[0].shape[1] = -2;
  expect_new_fails(g, 1, &fns, "negative shape", "shape[1] = -2");
  g[0].shape[1] = (int64_t)1 << 40;
  expect_new_fails(g, 1, &fns, "huge sample", "exceeds");
  user_ctx neg = {.n = 7, .len_override = -4};
  cr_assert_null(dl_dataset_new(f, 1, &fns, &neg));
  cr_assert(strstr(em_last_error(), "-4"), "%s", em_last_error());
  cr_assert_eq(neg.closes, 1);
  em_clear_error();

  /* An empty dataset is valid; every index is out of range. */
  user_ctx empty = {.n = 0};
  d = dl_dataset_new(f, 1, &fns, &empty);
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_eq(dl_dataset_len(d), 0);
  cr_assert_eq(dl_dataset_get(d, 0, (void *[]){&b}), EM_ERR_INVALID);
  dl_dataset_close(d);
  cr_assert_eq(empty.closes, 1);
  em_clear_error();
  TU_END;
}
