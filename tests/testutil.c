/* testutil.c: see testutil.h. */
#define _GNU_SOURCE /* nftw */
#include "testutil.h"

#include <errno.h>
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

em_tensor *tu_rand(em_rng *r, int ndim, const int64_t *shape, float lo, float hi, bool grad) {
  em_tensor *t = em_rand_uniform(ndim, shape, lo, hi, r);
  cr_assert_not_null(t, "tu_rand: %s", em_last_error());
  if (grad) em_set_requires_grad(t, true);
  return t;
}

void tu_assert_close(const em_tensor *got, const double *ref, int64_t n, double rtol, double atol,
                     const char *what) {
  cr_assert_not_null(got, "%s: result is NULL: %s", what, em_last_error());
  cr_assert_eq(em_numel(got), n, "%s: %lld elements, expected %lld", what, (long long)em_numel(got),
               (long long)n);
  for (int64_t i = 0; i < n; i++) {
    double g = em_get(got, i);
    cr_assert(fabs(g - ref[i]) <= atol + rtol * fabs(ref[i]) || (isnan(g) && isnan(ref[i])),
              "%s: element %lld is %.9g, reference %.9g", what, (long long)i, g, ref[i]);
  }
}

double tu_rel_err(const float *a, const float *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* sum(f(inputs) * w) in float64, with no graph. */
static double weighted_sum(tu_fn f, em_tensor **inputs, void *ctx, const em_tensor *w) {
  em_scope s = em_scope_begin();
  bool prev = em_no_grad_begin();
  em_tensor *y = f(inputs, ctx);
  em_no_grad_end(prev);
  cr_assert_not_null(y, "gradcheck: forward failed: %s", em_last_error());
  double acc = 0;
  for (int64_t i = 0, n = em_numel(y); i < n; i++) acc += em_get(y, i) * em_get(w, i);
  em_scope_end(s);
  return acc;
}

void tu_gradcheck(tu_fn f, int n_inputs, em_tensor **inputs, void *ctx, double eps, double tol,
                  const char *what) {
  em_scope s = em_scope_begin();
  for (int k = 0; k < n_inputs; k++)
    if (inputs[k]->requires_grad) em_set_grad(inputs[k], NULL);
  em_tensor *y = f(inputs, ctx);
  cr_assert_not_null(y, "%s: forward failed: %s", what, em_last_error());
  em_rng r = em_rng_new(1234);
  em_tensor *w = em_rand_uniform(y->ndim, y->shape, -1.0f, 1.0f, &r);
  em_tensor *loss = em_sum(em_mul(y, w), 0, NULL, false);
  cr_assert_not_null(loss, "%s: loss failed: %s", what, em_last_error());
  cr_assert_eq(em_backward(loss), EM_OK, "%s: backward failed: %s", what, em_last_error());
  for (int k = 0; k < n_inputs; k++) {
    em_tensor *x = inputs[k];
    if (!x->requires_grad) continue;
    cr_assert_not_null(x->grad, "%s: input %d got no gradient", what, k);
    for (int64_t i = 0, n = em_numel(x); i < n; i++) {
      double orig = em_get(x, i);
      em_set(x, i, orig + eps);
      double fp = weighted_sum(f, inputs, ctx, w);
      em_set(x, i, orig - eps);
      double fm = weighted_sum(f, inputs, ctx, w);
      em_set(x, i, orig);
      double num = (fp - fm) / (2 * eps), ana = em_get(x->grad, i);
      cr_assert(fabs(ana - num) <= tol * fmax(1.0, fabs(num)),
                "%s: d/d input%d[%lld]: analytic %.7g, finite difference %.7g", what, k,
                (long long)i, ana, num);
    }
  }
  em_scope_end(s);
}

void tu_assert_error(const em_tensor *t, const char *needle1, const char *needle2) {
  cr_assert_null(t, "expected an error containing '%s'", needle1);
  const char *msg = em_last_error();
  cr_assert(needle1 == NULL || strstr(msg, needle1), "error '%s' lacks '%s'", msg, needle1);
  cr_assert(needle2 == NULL || strstr(msg, needle2), "error '%s' lacks '%s'", msg, needle2);
  em_clear_error();
}

em_tensor *tu_ramp(int ndim, const int64_t *shape, double scale, double shift) {
  em_tensor *t = em_empty(EM_F32, ndim, shape);
  cr_assert_not_null(t, "%s", em_last_error());
  for (int64_t k = 0; k < em_numel(t); k++) em_set(t, k, scale * sin(0.37 * k + shift));
  return t;
}

void tu_assert_names(em_module *m, int n_params, const char *const *names, int n) {
  cr_assert_eq(em_module_num_params(m), n_params);
  cr_assert_eq(em_module_num_tensors(m), n);
  cr_assert_eq(em_module_num_buffers(m), n - n_params);
  for (int i = 0; i < n; i++)
    cr_assert_str_eq(em_module_tensor_name(m, i), names[i], "tensor %d", i);
}

char *tu_tmpdir(const char *tag) {
  const char *base = getenv("TMPDIR");
  char tmpl[TU_PATH_LEN];
  int n = snprintf(tmpl, sizeof tmpl, "%s/ember_%s_XXXXXX", base && base[0] ? base : "/tmp", tag);
  cr_assert(n > 0 && n < (int)sizeof tmpl, "tu_tmpdir: TMPDIR too long");
  cr_assert_not_null(mkdtemp(tmpl), "mkdtemp %s: %s", tmpl, strerror(errno));
  char *dir = realpath(tmpl, NULL); /* absolute, should the test change directory */
  cr_assert_not_null(dir, "realpath %s: %s", tmpl, strerror(errno));
  return dir;
}

char *tu_enter_tmpdir(const char *tag) {
  char *dir = tu_tmpdir(tag);
  cr_assert_eq(chdir(dir), 0, "chdir %s: %s", dir, strerror(errno));
  return dir;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *f) {
  chmod(p, 0755); /* a directory a test made read-only */
  return remove(p);
}

void tu_rm_rf(char *dir) {
  if (!dir) return;
  chmod(dir, 0755);
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(dir);
}

const char *tu_path(char *buf, const char *dir, const char *name) {
  int n = snprintf(buf, TU_PATH_LEN, "%s/%s", dir, name);
  cr_assert(n > 0 && n < TU_PATH_LEN, "path too long: %s/%s", dir, name);
  return buf;
}

/* The sorted names in dir (without . and ..), joined by spaces. */
void tu_list_dir(const char *dir, char *out, size_t cap) {
  struct dirent **ents;
  int n = scandir(dir, &ents, NULL, alphasort);
  cr_assert_geq(n, 0, "scandir %s: %s", dir, strerror(errno));
  out[0] = '\0';
  for (int i = 0; i < n; i++) {
    if (strcmp(ents[i]->d_name, ".") && strcmp(ents[i]->d_name, "..")) {
      if (out[0]) strncat(out, " ", cap - strlen(out) - 1);
      strncat(out, ents[i]->d_name, cap - strlen(out) - 1);
    }
    free(ents[i]);
  }
  free(ents);
}
