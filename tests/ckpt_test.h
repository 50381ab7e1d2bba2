/* ckpt_test.h: shared by the checkpoint suites (test_checkpoint.c, test_checkpoint_dir.c): file
 * helpers (each test works in its own tu_tmpdir directory) and a small MLP + AdamW training run. */
#ifndef EMBER_TESTS_CKPT_TEST_H
#define EMBER_TESTS_CKPT_TEST_H

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- file helpers ---------------------------------------------------------------------------- */
static inline void write_raw(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "%s: %s", path, strerror(errno));
  cr_assert_eq(fwrite(p, 1, n, f), n);
  cr_assert_eq(fclose(f), 0);
}

static inline char *read_raw(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "%s: %s", path, strerror(errno));
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = malloc(*n + 1);
  cr_assert_eq(fread(p, 1, *n, f), *n);
  fclose(f);
  return p;
}

/* A safetensors file from a header text and a data section (header length = strlen(json)). */
static inline void write_st(const char *path, const char *json, const void *data, size_t n) {
  size_t nj = strlen(json);
  char *buf = malloc(8 + nj + n + 1);
  for (int b = 0; b < 8; b++) buf[b] = (char)(((uint64_t)nj >> (8 * b)) & 0xff);
  memcpy(buf + 8, json, nj);
  if (n) memcpy(buf + 8 + nj, data, n);
  write_raw(path, buf, 8 + nj + n);
  free(buf);
}

/* em_ckpt_read(path) fails and the message names the path and contains needle (and needle2). */
static inline void assert_read_fails(const char *path, const char *needle, const char *needle2) {
  em_clear_error();
  em_ckpt *c = em_ckpt_read(path);
  cr_assert_null(c, "%s: read succeeded, expected an error with '%s'", path, needle);
  const char *m = em_last_error();
  cr_assert(strstr(m, path), "message does not name the path %s: %s", path, m);
  cr_assert(strstr(m, needle), "message lacks '%s': %s", needle, m);
  if (needle2) cr_assert(strstr(m, needle2), "message lacks '%s': %s", needle2, m);
}

static inline bool same_bits(const em_tensor *a, const em_tensor *b) {
  return a->dtype == b->dtype && a->ndim == b->ndim &&
         !memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) &&
         !memcmp(em_data(a), em_data(b), (size_t)em_numel(a) * em_dtype_size(a->dtype));
}

/* ---- a small training run -------------------------------------------------------------------- */
static inline em_module *make_mlp(uint64_t seed, int hidden) {
  em_manual_seed(seed);
  em_module *m = em_mlp(8, (const int[]){hidden, 12}, 2, 4);
  cr_assert_not_null(m, "%s", em_last_error());
  return m;
}

static inline em_optim *make_adamw(em_module *m) {
  em_optim *o = em_adamw(em_parameters(m), .lr = 0.01, .weight_decay = 0.05);
  cr_assert_not_null(o, "%s", em_last_error());
  return o;
}

/* One AdamW step on batch s (6 random samples); returns the loss. */
static inline float train_step(em_module *m, em_optim *o, int s) {
  em_scope sc = em_scope_begin();
  em_rng r = em_rng_new(1000 + (uint64_t)s);
  em_tensor *x = em_rand_normal(EM_SHAPE(6, 8), 0, 1, &r);
  int64_t lab[6];
  for (int i = 0; i < 6; i++) lab[i] = (int64_t)(em_rng_next_u64(&r) % 4);
  em_tensor *loss = em_cross_entropy(em_forward(m, x), em_from_data(EM_I64, EM_SHAPE(6), lab));
  cr_assert_not_null(loss, "%s", em_last_error());
  float l = em_data_f32(loss)[0];
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_step(o), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_zero_grad(o), EM_OK);
  em_scope_end(sc);
  return l;
}

static inline void assert_params_equal(em_module *a, em_module *b, const char *what) {
  int n = em_module_num_tensors(a);
  cr_assert_eq(n, em_module_num_tensors(b));
  for (int i = 0; i < n; i++)
    cr_assert(same_bits(em_module_tensor_at(a, i), em_module_tensor_at(b, i)), "%s: %s differs",
              what, em_module_tensor_name(a, i));
}


#endif
