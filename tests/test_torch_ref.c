/* test_torch_ref.c: whole models against PyTorch (the third oracle of STYLE.md).
 *
 * tests/ref/torch_ref.py (run here with Debian's python3 + torch 1.13) builds the MLP and the small
 * CNN of the zoo, dumps their initial weights, 20 input batches, the logits, loss and every
 * parameter gradient of batch 0, and the per-step losses and final weights of 20 SGD-momentum and
 * 20 AdamW steps. This test loads the same weights into Ember's models and checks:
 *   logits, loss, each gradient:   ||ember - torch|| / ||torch|| <= 1e-5
 *   each training loss:            |ember - torch| / |torch| <= 1e-4
 *   final weights after training:  relative norm <= 1e-4 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char name[128];
  int64_t n, off;
} ref_entry;

static ref_entry *entries;
static int n_entries;
static float *ref_data;

/* Runs the reference script into a scratch directory and loads its output (index and values). */
static void load_ref(void) {
  if (ref_data) return;
  char *dir = tu_tmpdir("torch_ref"), prefix[TU_PATH_LEN], txt[TU_PATH_LEN], bin[TU_PATH_LEN];
  tu_path(prefix, dir, "torch_ref_out");
  tu_path(txt, dir, "torch_ref_out.txt");
  tu_path(bin, dir, "torch_ref_out.bin");
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s %s/tests/ref/torch_ref.py %s", EMBER_PYTHON3, EMBER_SOURCE_DIR,
           prefix);
  cr_assert_eq(system(cmd), 0, "reference script failed: %s", cmd);
  FILE *ft = fopen(txt, "r");
  cr_assert_not_null(ft, "no %s", txt);
  int cap = 256;
  entries = malloc((size_t)cap * sizeof *entries);
  long long n, off;
  char name[128];
  while (fscanf(ft, "%127s %lld %lld", name, &n, &off) == 3) {
    if (n_entries == cap) entries = realloc(entries, (size_t)(cap *= 2) * sizeof *entries);
    snprintf(entries[n_entries].name, sizeof entries[n_entries].name, "%s", name);
    entries[n_entries].n = n;
    entries[n_entries].off = off;
    n_entries++;
  }
  fclose(ft);
  FILE *fb = fopen(bin, "rb");
  cr_assert_not_null(fb, "no %s", bin);
  int64_t total = entries[n_entries - 1].off + entries[n_entries - 1].n;
  ref_data = malloc((size_t)total * sizeof *ref_data);
  cr_assert_eq(fread(ref_data, sizeof *ref_data, (size_t)total, fb), (size_t)total);
  fclose(fb);
  tu_rm_rf(dir);
}

static void free_ref(void) {
  free(entries);
  free(ref_data);
  entries = NULL;
  ref_data = NULL;
  n_entries = 0;
}

static const float *ref(const char *fmt, const char *a, int64_t *n) {
  char key[160];
  snprintf(key, sizeof key, fmt, a);
  for (int i = 0; i < n_entries; i++) {
    if (strcmp(entries[i].name, key) == 0) {
      if (n) *n = entries[i].n;
      return ref_data + entries[i].off;
    }
  }
  cr_assert_fail("reference '%s' missing", key);
  return NULL;
}

typedef struct {
  const char *tag;
  em_module *(*make)(void);
  int xdims;
  int64_t xshape[4];
} model_case;

static em_module *make_mlp(void) { return em_mlp(32, (int[]){64, 32}, 2, 10); }
static em_module *make_cnn(void) { return em_small_cnn(1, 12, 12, 10); }

static const model_case MLP = {"mlp", make_mlp, 2, {16, 32}};
static const model_case CNN = {"cnn", make_cnn, 4, {4, 1, 12, 12}};

static void load_init(em_module *m, const model_case *c) {
  for (int i = 0, n = em_module_num_params(m); i < n; i++) {
    const char *name = em_module_tensor_name(m, i);
    char key[160];
    snprintf(key, sizeof key, "%s.param.%s", c->tag, name);
    int64_t cnt;
    const float *v = ref("%s", key, &cnt);
    cr_assert_eq(em_module_set_param(m, name, v, cnt), EM_OK, "%s", em_last_error());
  }
}

static void batch(const model_case *c, int step, em_tensor **x, em_tensor **y) {
  char key[64];
  int64_t n;
  snprintf(key, sizeof key, "%s.x.%d", c->tag, step);
  *x = em_from_data(EM_F32, c->xdims, c->xshape, ref("%s", key, &n));
  cr_assert_eq(n, em_numel(*x));
  snprintf(key, sizeof key, "%s.y.%d", c->tag, step);
  const float *yf = ref("%s", key, &n);
  *y = em_empty(EM_I64, EM_SHAPE(c->xshape[0]));
  for (int64_t i = 0; i < n; i++) ((int64_t *)em_data(*y))[i] = (int64_t)yf[i];
}

static void check_rel(const float *got, const float *want, int64_t n, double tol,
                      const char *what) {
  double e = tu_rel_err(got, want, n);
  cr_assert(e <= tol, "%s: relative error %.3g > %.1g", what, e, tol);
}

static void forward_backward(const model_case *c) {
  load_ref();
  em_scope s = em_scope_begin();
  em_module *m = c->make();
  cr_assert_not_null(m, "%s", em_last_error());
  load_init(m, c);
  em_params p = em_parameters(m);
  em_tensor *x, *y;
  batch(c, 0, &x, &y);
  em_tensor *logits = em_forward(m, x);
  em_tensor *loss = em_cross_entropy(logits, y);
  cr_assert_not_null(loss, "%s", em_last_error());
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  int64_t n;
  const float *want = ref("%s.logits", c->tag, &n);
  cr_assert_eq(n, em_numel(logits));
  check_rel(em_data_f32(logits), want, n, 1e-5, "logits");
  check_rel(em_data_f32(loss), ref("%s.loss", c->tag, NULL), 1, 1e-5, "loss");
  for (int i = 0; i < p.n; i++) {
    char key[160];
    snprintf(key, sizeof key, "%s.grad.%s", c->tag, p.names[i]);
    want = ref("%s", key, &n);
    cr_assert_not_null(p.t[i]->grad, "%s has no gradient", p.names[i]);
    cr_assert_eq(n, em_numel(p.t[i]->grad));
    check_rel(em_data_f32(p.t[i]->grad), want, n, 1e-5, key);
  }
  em_module_free(m);
  em_scope_end(s);
  free_ref();
}

static void train(const model_case *c, const char *opt_name) {
  load_ref();
  em_module *m = c->make();
  cr_assert_not_null(m, "%s", em_last_error());
  load_init(m, c);
  em_params p = em_parameters(m);
  em_optim *opt = strcmp(opt_name, "sgd") == 0 ? em_sgd(p, .lr = 0.05, .momentum = 0.9)
                                               : em_adamw(p, .lr = 1e-3, .weight_decay = 0.01);
  cr_assert_not_null(opt, "%s", em_last_error());
  char key[160];
  snprintf(key, sizeof key, "%s.%s.losses", c->tag, opt_name);
  const float *want = ref("%s", key, NULL);
  for (int step = 0; step < 20; step++) {
    em_scope s = em_scope_begin();
    em_tensor *x, *y;
    batch(c, step, &x, &y);
    em_zero_grad(opt);
    em_tensor *loss = em_cross_entropy(em_forward(m, x), y);
    cr_assert_not_null(loss, "%s", em_last_error());
    cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
    cr_assert_eq(em_step(opt), EM_OK, "%s", em_last_error());
    double got = em_get(loss, 0);
    cr_assert(fabs(got - want[step]) <= 1e-4 * fabs(want[step]),
              "%s %s step %d: loss %.8f, PyTorch %.8f", c->tag, opt_name, step, got, want[step]);
    em_scope_end(s);
  }
  for (int i = 0; i < p.n; i++) {
    snprintf(key, sizeof key, "%s.%s.final.%s", c->tag, opt_name, p.names[i]);
    int64_t n;
    const float *w = ref("%s", key, &n);
    check_rel(em_data_f32(p.t[i]), w, n, 1e-4, key);
  }
  em_optim_free(opt);
  em_module_free(m);
  free_ref();
}

Test(torch_ref, mlp_forward_backward) { forward_backward(&MLP); }
Test(torch_ref, cnn_forward_backward) { forward_backward(&CNN); }
Test(torch_ref, mlp_sgd_momentum_20_steps) { train(&MLP, "sgd"); }
Test(torch_ref, mlp_adamw_20_steps) { train(&MLP, "adamw"); }
Test(torch_ref, cnn_sgd_momentum_20_steps) { train(&CNN, "sgd"); }
Test(torch_ref, cnn_adamw_20_steps) { train(&CNN, "adamw"); }
