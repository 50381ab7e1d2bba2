/* testutil.h: shared helpers for the Criterion suites.
 *
 * Oracles (STYLE.md): tu_assert_close compares against a float64 reference computed by a plain loop
 * in the test; tu_gradcheck compares every analytic gradient with central finite differences. */
#ifndef EMBER_TESTUTIL_H
#define EMBER_TESTUTIL_H

#include <criterion/criterion.h>

#include "ember.h"

/* Random f32 tensor in [lo, hi), scope-owned, optionally a leaf requiring grad. */
em_tensor *tu_rand(em_rng *r, int ndim, const int64_t *shape, float lo, float hi, bool grad);

/* max_i |got_i - ref_i| <= atol + rtol * |ref_i|, failing with the first bad index. */
void tu_assert_close(const em_tensor *got, const double *ref, int64_t n, double rtol, double atol,
                     const char *what);

/* ||a - b|| / ||b|| over n values. */
double tu_rel_err(const float *a, const float *b, int64_t n);

/* f(inputs, ctx) builds an output from the inputs (any shape). For every input with
 * requires_grad, checks d sum(f * w)/d x (w fixed random weights) by backward against central
 * differences with step eps, to |analytic - numeric| <= tol * max(1, |numeric|). */
typedef em_tensor *(*tu_fn)(em_tensor **inputs, void *ctx);
void tu_gradcheck(tu_fn f, int n_inputs, em_tensor **inputs, void *ctx, double eps, double tol,
                  const char *what);

/* Fail the test unless t is NULL and the last error contains every one of the strings given. */
void tu_assert_error(const em_tensor *t, const char *needle1, const char *needle2);

/* Test body bracket: opens a scope and clears the error; TU_END closes the scope and fails if
 * any tensor made in between is still alive. */
#define TU_BEGIN                                                                                   \
  int64_t live0_ = em_live_tensors();                                                              \
  em_clear_error();                                                                                \
  em_scope sc_ = em_scope_begin()
#define TU_END                                                                                     \
  em_scope_end(sc_);                                                                               \
  cr_assert_eq(em_live_tensors(), live0_, "leaked %lld tensors",                                   \
               (long long)(em_live_tensors() - live0_))

/* The sorted names in dir (without . and ..), joined by spaces, into out (cap bytes). */
void tu_list_dir(const char *dir, char *out, size_t cap);

/* Deterministic f32 values scale * sin(0.37 k + shift), k the flat index (scope-owned). */
em_tensor *tu_ramp(int ndim, const int64_t *shape, double scale, double shift);

/* m's whole-tree tensor names are exactly names[0..n) and the first n_params are parameters. */
void tu_assert_names(em_module *m, int n_params, const char *const *names, int n);

/* Test files live in a fresh directory under $TMPDIR (else /tmp), never in the working directory:
 * tu_tmpdir makes "<TMPDIR>/ember_<tag>_XXXXXX" and returns its path (malloc'd); tu_rm_rf removes
 * it with everything in it (read-only entries too) and frees the path. */
char *tu_tmpdir(const char *tag);
void tu_rm_rf(char *dir);
/* tu_tmpdir, made the working directory of this test's process (Criterion runs each test in a
 * process of its own): the test then names its files relatively, and messages show them as given.
 * Returns the directory's absolute path, for tu_rm_rf. */
char *tu_enter_tmpdir(const char *tag);
/* "dir/name" in buf (TU_PATH_LEN bytes); returns buf. */
#define TU_PATH_LEN 512
const char *tu_path(char *buf, const char *dir, const char *name);

#endif
