/* test_checkpoint_crc.c: payload checksums (crc32.<name>, crc32.__header__ in the metadata) and
 * the fallback of em_ckpt_read_latest: a flipped byte anywhere that matters is an error naming the
 * file, the tensor and both CRCs (the expected one recomputed here with zlib, independently of
 * the writer); files without checksums still read; a truncated or corrupt newest checkpoint is
 * passed over for the newest intact one, and nothing is removed. */
#include "ckpt_test.h"

#include <zlib.h>

static em_ckpt *two_tensors(int64_t step) {
  em_ckpt *c = em_ckpt_new();
  em_tensor *b = em_empty(EM_I64, EM_SHAPE(3));
  int64_t v[3] = {-7, (1LL << 40) + step, 5};
  memcpy(em_data(b), v, sizeof v);
  cr_assert_eq(em_ckpt_add(c, "a", tu_ramp(EM_SHAPE(4, 4), 1, (double)step)), EM_OK);
  cr_assert_eq(em_ckpt_add(c, "b", b), EM_OK);
  cr_assert_eq(em_ckpt_set_meta_i64(c, "step", step), EM_OK);
  return c;
}

/* The offset of needle in the n bytes at p (it must be there). */
static size_t find(const char *p, size_t n, const char *needle) {
  size_t k = strlen(needle);
  for (size_t i = 0; i + k <= n; i++)
    if (!memcmp(p + i, needle, k)) return i;
  cr_assert_fail("'%s' not in the file", needle);
  return 0;
}

/* A copy of file src as dst with byte at changed by xor. */
static void flip(const char *src, const char *dst, size_t at, unsigned char xor) {
  size_t n;
  char *b = read_raw(src, &n);
  cr_assert_lt(at, n);
  b[at] = (char)(b[at] ^ xor);
  write_raw(dst, b, n);
  free(b);
}

Test(checkpoint, checksums_name_the_tensor_and_both_crcs) {
  TU_BEGIN;
  char *dir = tu_tmpdir("ckpt"), path[512], bad[512], want[64];
  tu_path(path, dir, "c.safetensors");
  tu_path(bad, dir, "bad.safetensors");
  em_ckpt *c = two_tensors(40);
  cr_assert_eq(em_ckpt_write(c, path), EM_OK, "%s", em_last_error());
  size_t n;
  char *raw = read_raw(path, &n);
  uint64_t hl = 0;
  for (int b = 7; b >= 0; b--) hl = hl << 8 | (unsigned char)raw[b];
  size_t data = 8 + (size_t)hl; /* "b" (I64, 24 bytes) first, then "a" (F32, 64 bytes) */
  cr_assert_eq(n, data + 24 + 64);
  /* The stored checksums are zlib's CRC-32 of the bytes, as hex. */
  snprintf(want, sizeof want, "\"crc32.a\":\"%08lx\"",
           crc32(0, (const unsigned char *)em_data(em_ckpt_get(c, "a")), 64));
  find(raw, data, want);
  bool has = false;
  cr_assert_eq(em_ckpt_verify(path, &has), EM_OK, "%s", em_last_error());
  cr_assert(has);
  em_ckpt *r = em_ckpt_read(path);
  cr_assert_not_null(r, "%s", em_last_error());
  cr_assert(same_bits(em_ckpt_get(r, "a"), em_ckpt_get(c, "a")));
  for (int i = 0; i < 8; i++) /* the checksums are not metadata of the read checkpoint */
    cr_assert_null(em_ckpt_meta(r, i % 2 ? "crc32.a" : "crc32.__header__"));
  cr_assert_str_eq(em_ckpt_meta(r, "step"), "40");
  em_ckpt_free(r);

  /* One bit of "a"'s data: the error names the tensor, the stored CRC and the one found. */
  unsigned long good = crc32(0, (const unsigned char *)raw + data + 24, 64);
  flip(path, bad, data + 24 + 10, 0x01);
  size_t nb;
  char *braw = read_raw(bad, &nb);
  unsigned long found = crc32(0, (const unsigned char *)braw + data + 24, 64);
  free(braw);
  char e1[64], e2[64];
  snprintf(e1, sizeof e1, "expected crc32 %08lx", good);
  snprintf(e2, sizeof e2, "found %08lx", found);
  assert_read_fails(bad, "tensor 'a': checksum mismatch", e1);
  assert_read_fails(bad, e2, NULL);
  cr_assert_eq(em_ckpt_verify(bad, NULL), EM_ERR_FORMAT);
  cr_assert(strstr(em_last_error(), e1), "%s", em_last_error());
  /* The last byte of "b" (the I64 group comes first). */
  flip(path, bad, data + 23, 0x80);
  assert_read_fails(bad, "tensor 'b': checksum mismatch", NULL);
  /* A metadata value: "step" 40 -> 41, valid JSON, caught by the header's checksum. */
  flip(path, bad, find(raw, data, "\"step\":\"40\"") + 9, 0x01);
  assert_read_fails(bad, "header checksum mismatch", "crc32.__header__");
  /* A shape that still fits: a's (4, 4) -> (4, 4) is the only fit, so rename a tensor instead:
   * "a" -> "c" in its entry. The header's checksum (and the orphan crc32.a) catch it. */
  flip(path, bad, find(raw, data, "\"a\":{") + 1, 'a' ^ 'c');
  assert_read_fails(bad, "header checksum mismatch", NULL);
  /* The stored CRC itself: its first hex digit changed. */
  size_t at = find(raw, data, "\"crc32.b\":\"") + 11;
  flip(path, bad, at, raw[at] == '0' ? '0' ^ '1' : raw[at] ^ '0');
  assert_read_fails(bad, "tensor 'b': checksum mismatch", NULL);
  /* A file without checksums (older Ember, other writers) reads, unverified. */
  float x[2] = {1.5f, -2};
  write_st(bad, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", x, 8);
  cr_assert_eq(em_ckpt_verify(bad, &has), EM_OK, "%s", em_last_error());
  cr_assert(!has);
  r = em_ckpt_read(bad);
  cr_assert(r && em_get(em_ckpt_get(r, "x"), 1) == -2);
  em_ckpt_free(r);
  /* The keys are the writer's. */
  cr_assert_eq(em_ckpt_set_meta(c, "crc32.a", "00000000"), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "reserved"), "%s", em_last_error());
  free(raw);
  em_ckpt_free(c);
  tu_rm_rf(dir);
  TU_END;
}

typedef struct {
  int n;
  char path[8][512], why[8][512];
} skips;

static void on_skip(const char *path, const char *why, void *arg) {
  skips *s = arg;
  cr_assert_lt(s->n, 8);
  snprintf(s->path[s->n], sizeof s->path[0], "%s", path);
  snprintf(s->why[s->n++], sizeof s->why[0], "%s", why);
}

/* em_ckpt_read_latest(dir) reads the checkpoint of step want (-1: none, with status st). */
static skips read_latest(const char *dir, int64_t want, em_status want_st) {
  skips s = {0};
  char *path = NULL;
  em_status st = EM_ERR_STATE; /* overwritten */
  em_ckpt *c = em_ckpt_read_latest(dir, &path, &st, on_skip, &s);
  cr_assert_eq(st, want_st, "%s", em_last_error());
  if (want < 0) {
    cr_assert_null(c);
    cr_assert_null(path);
    return s;
  }
  int64_t step = -1;
  cr_assert(c && em_ckpt_meta_i64(c, "step", &step) == EM_OK);
  cr_assert_eq(step, want);
  char name[64];
  snprintf(name, sizeof name, "/ckpt-%08lld.safetensors", (long long)want);
  cr_assert(strstr(path, name), "%s", path);
  em_ckpt *w = two_tensors(want);
  cr_assert(same_bits(em_ckpt_get(c, "a"), em_ckpt_get(w, "a")));
  em_ckpt_free(w);
  em_ckpt_free(c);
  free(path);
  return s;
}

Test(checkpoint, read_latest_falls_back_to_the_newest_intact_one) {
  TU_BEGIN;
  char *dir = tu_tmpdir("ckpt"), sub[512], p10[512], p20[512], p30[512], lp[512], listing[1024],
       after[1024];
  tu_path(sub, dir, "run");
  read_latest(sub, -1, EM_OK); /* no directory: no checkpoint */
  for (int64_t s = 10; s <= 30; s += 10) {
    em_ckpt *c = two_tensors(s);
    cr_assert_eq(em_ckpt_save_dir(c, sub, s, 3), EM_OK, "%s", em_last_error());
    em_ckpt_free(c);
  }
  tu_path(p10, sub, "ckpt-00000010.safetensors");
  tu_path(p20, sub, "ckpt-00000020.safetensors");
  tu_path(p30, sub, "ckpt-00000030.safetensors");
  tu_path(lp, sub, "latest");
  skips s = read_latest(sub, 30, EM_OK);
  cr_assert_eq(s.n, 0);
  tu_list_dir(sub, listing, sizeof listing);
  /* The newest truncated: step 20, and the skip names the file and the fault. */
  size_t n, n20;
  char *raw = read_raw(p30, &n), *raw20 = read_raw(p20, &n20);
  write_raw(p30, raw, n - 5);
  s = read_latest(sub, 20, EM_OK);
  cr_assert_eq(s.n, 1);
  cr_assert_str_eq(s.path[0], p30);
  cr_assert(strstr(s.why[0], "truncated"), "%s", s.why[0]);
  /* And step 20 corrupt too (a flipped data byte): step 10. */
  flip(p20, p20, n20 - 1, 0x40);
  s = read_latest(sub, 10, EM_OK);
  cr_assert_eq(s.n, 2);
  cr_assert_str_eq(s.path[1], p20);
  cr_assert(strstr(s.why[1], "checksum mismatch"), "%s", s.why[1]);
  tu_list_dir(sub, after, sizeof after);
  cr_assert_str_eq(after, listing, "reading removed or added files");
  /* Everything bad: an error naming the directory and the newest failure. */
  write_raw(p10, "", 0);
  read_latest(sub, -1, EM_ERR_FORMAT);
  cr_assert(strstr(em_last_error(), "no intact checkpoint (3 tried"), "%s", em_last_error());
  cr_assert(strstr(em_last_error(), p30), "%s", em_last_error());
  /* latest missing, or naming a missing file: the newest file that reads, said so. */
  write_raw(p30, raw, n);
  write_raw(p20, raw20, n20);
  unlink(lp);
  s = read_latest(sub, 30, EM_OK);
  cr_assert(s.n == 1 && !strcmp(s.path[0], lp) && !strcmp(s.why[0], "missing"));
  write_raw(lp, "ckpt-00000040.safetensors\n", 26);
  s = read_latest(sub, 30, EM_OK);
  cr_assert_eq(s.n, 1);
  cr_assert(strstr(s.why[0], "ckpt-00000040.safetensors"), "%s", s.why[0]);
  /* latest names 20: 30 (a later file latest never named) is not taken. */
  write_raw(lp, "ckpt-00000020.safetensors\n", 26);
  s = read_latest(sub, 20, EM_OK);
  cr_assert_eq(s.n, 0);
  free(raw);
  free(raw20);
  tu_rm_rf(dir);
  TU_END;
}

Test(checkpoint, check_dir_creates_and_probes) {
  TU_BEGIN;
  char *dir = tu_tmpdir("ckpt"), sub[512], file[512], listing[256];
  tu_path(sub, dir, "x/y");
  cr_assert_eq(em_ckpt_check_dir(sub), EM_OK, "%s", em_last_error());
  tu_list_dir(sub, listing, sizeof listing);
  cr_assert_str_eq(listing, "", "the probe was left behind: %s", listing);
  write_raw(tu_path(file, dir, "plain"), "x", 1);
  tu_path(sub, dir, "plain/under");
  cr_assert_eq(em_ckpt_check_dir(sub), EM_ERR_IO);
  cr_assert(strstr(em_last_error(), sub), "%s", em_last_error());
  cr_assert_eq(em_ckpt_check_dir(""), EM_ERR_INVALID);
  tu_rm_rf(dir);
  TU_END;
}
