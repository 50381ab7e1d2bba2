/* torchref.c: loading PyTorch reference dumps (torchref.h). */
#include "torchref.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char name[160];
  int64_t n, off;
} tr_entry;

struct tr_ref {
  tr_entry *e;
  int n;
  float *data;
};

tr_ref *tr_run(const char *script, const char *args) {
  char *dir = tu_tmpdir("torchref"), prefix[TU_PATH_LEN], txt[TU_PATH_LEN], bin[TU_PATH_LEN];
  tu_path(prefix, dir, "ref");
  tu_path(txt, dir, "ref.txt");
  tu_path(bin, dir, "ref.bin");
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "%s %s/tests/ref/%s %s %s", EMBER_PYTHON3, EMBER_SOURCE_DIR, script,
           prefix, args ? args : "");
  cr_assert_eq(system(cmd), 0, "reference script failed: %s", cmd);
  tr_ref *r = calloc(1, sizeof *r);
  FILE *ft = fopen(txt, "r");
  cr_assert_not_null(ft, "no %s", txt);
  int cap = 0;
  long long n, off;
  char name[160];
  while (fscanf(ft, "%159s %lld %lld", name, &n, &off) == 3) {
    if (r->n == cap) r->e = realloc(r->e, (size_t)(cap = cap ? 2 * cap : 256) * sizeof *r->e);
    snprintf(r->e[r->n].name, sizeof r->e[r->n].name, "%s", name);
    r->e[r->n].n = n;
    r->e[r->n].off = off;
    r->n++;
  }
  fclose(ft);
  cr_assert_gt(r->n, 0, "%s is empty", txt);
  FILE *fb = fopen(bin, "rb");
  cr_assert_not_null(fb, "no %s", bin);
  int64_t total = r->e[r->n - 1].off + r->e[r->n - 1].n;
  r->data = malloc((size_t)total * sizeof *r->data);
  cr_assert_eq(fread(r->data, sizeof *r->data, (size_t)total, fb), (size_t)total,
               "%s is shorter than its index", bin);
  fclose(fb);
  tu_rm_rf(dir);
  return r;
}

void tr_free(tr_ref *r) {
  if (!r) return;
  free(r->e);
  free(r->data);
  free(r);
}

static const float *lookup(tr_ref *r, const char *key, int64_t *n) {
  for (int i = 0; i < r->n; i++) {
    if (strcmp(r->e[i].name, key) == 0) {
      if (n) *n = r->e[i].n;
      return r->data + r->e[i].off;
    }
  }
  return NULL;
}

const float *tr_get(tr_ref *r, int64_t *n, const char *fmt, ...) {
  char key[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(key, sizeof key, fmt, ap);
  va_end(ap);
  const float *v = lookup(r, key, n);
  cr_assert_not_null(v, "reference '%s' missing", key);
  return v;
}

void tr_load_module(tr_ref *r, em_module *m, const char *prefix) {
  for (int i = 0, n = em_module_num_tensors(m); i < n; i++) {
    const char *name = em_module_tensor_name(m, i);
    char key[160];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    int64_t cnt;
    const float *v = lookup(r, key, &cnt);
    if (!v && i >= em_module_num_params(m)) continue; /* a buffer the peer does not have */
    cr_assert_not_null(v, "reference '%s' missing", key);
    cr_assert_eq(em_module_set_param(m, name, v, cnt), EM_OK, "%s", em_last_error());
  }
}

em_tensor *tr_tensor(tr_ref *r, em_dtype dtype, int ndim, const int64_t *shape, const char *name) {
  int64_t n;
  const float *v = tr_get(r, &n, "%s", name);
  em_tensor *t = em_empty(dtype, ndim, shape);
  cr_assert_not_null(t, "%s", em_last_error());
  cr_assert_eq(n, em_numel(t), "%s: %lld values, shape wants %lld", name, (long long)n,
               (long long)em_numel(t));
  for (int64_t i = 0; i < n; i++) {
    if (dtype == EM_I64)
      ((int64_t *)em_data(t))[i] = (int64_t)v[i];
    else
      em_data_f32(t)[i] = v[i];
  }
  return t;
}

void tr_check(tr_ref *r, const em_tensor *got, double tol, const char *name) {
  int64_t n;
  const float *want = tr_get(r, &n, "%s", name);
  cr_assert_not_null(got, "%s: no tensor (%s)", name, em_last_error());
  cr_assert_eq(n, em_numel(got), "%s: %lld values, reference has %lld", name,
               (long long)em_numel(got), (long long)n);
  double e = tu_rel_err(em_data_f32(got), want, n);
  cr_assert(e <= tol, "%s: relative error %.3g > %.1g", name, e, tol);
}

void tr_check_grads(tr_ref *r, em_module *m, double tol, const char *prefix) {
  em_params p = em_parameters(m);
  for (int i = 0; i < p.n; i++) {
    char key[160];
    snprintf(key, sizeof key, "%s%s", prefix, p.names[i]);
    cr_assert_not_null(p.t[i]->grad, "%s has no gradient", p.names[i]);
    tr_check(r, p.t[i]->grad, tol, key);
  }
}
