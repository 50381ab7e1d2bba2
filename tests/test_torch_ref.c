/* test_torch_ref.c: whole models against PyTorch (the third oracle of STYLE.md).
 *
 * tests/ref/torch_ref.py (run here with Debian's python3 + torch 1.13) builds the MLP and the small
 * CNN of the zoo, dumps their initial weights, 20 input batches, the logits, loss and every
 * parameter gradient of batch 0, and the per-step losses and final weights of 20 SGD-momentum and
 * 20 AdamW steps. This test loads the same weights into Ember's models and checks:
 *   logits, loss, each gradient:   ||ember - torch|| / ||torch|| <= 1e-5
 *   each training loss:            |ember - torch| / |torch| <= 1e-4
 *   final weights after training:  relative norm <= 1e-4 */
#include "torchref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tr_ref *R;

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
  char prefix[64];
  snprintf(prefix, sizeof prefix, "%s.param.", c->tag);
  tr_load_module(R, m, prefix);
}

static void batch(const model_case *c, int step, em_tensor **x, em_tensor **y) {
  char key[64];
  snprintf(key, sizeof key, "%s.x.%d", c->tag, step);
  *x = tr_tensor(R, EM_F32, c->xdims, c->xshape, key);
  snprintf(key, sizeof key, "%s.y.%d", c->tag, step);
  *y = tr_tensor(R, EM_I64, EM_SHAPE(c->xshape[0]), key);
}

static void forward_backward(const model_case *c) {
  R = tr_run("torch_ref.py", NULL);
  em_scope s = em_scope_begin();
  em_module *m = c->make();
  cr_assert_not_null(m, "%s", em_last_error());
  load_init(m, c);
  em_tensor *x, *y;
  batch(c, 0, &x, &y);
  em_tensor *logits = em_forward(m, x);
  em_tensor *loss = em_cross_entropy(logits, y);
  cr_assert_not_null(loss, "%s", em_last_error());
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  char key[64];
  snprintf(key, sizeof key, "%s.logits", c->tag);
  tr_check(R, logits, 1e-5, key);
  snprintf(key, sizeof key, "%s.loss", c->tag);
  tr_check(R, loss, 1e-5, key);
  snprintf(key, sizeof key, "%s.grad.", c->tag);
  tr_check_grads(R, m, 1e-5, key);
  em_module_free(m);
  em_scope_end(s);
  tr_free(R);
}

static void train(const model_case *c, const char *opt_name) {
  R = tr_run("torch_ref.py", NULL);
  em_module *m = c->make();
  cr_assert_not_null(m, "%s", em_last_error());
  load_init(m, c);
  em_params p = em_parameters(m);
  em_optim *opt = strcmp(opt_name, "sgd") == 0 ? em_sgd(p, .lr = 0.05, .momentum = 0.9)
                                               : em_adamw(p, .lr = 1e-3, .weight_decay = 0.01);
  cr_assert_not_null(opt, "%s", em_last_error());
  char key[160];
  snprintf(key, sizeof key, "%s.%s.losses", c->tag, opt_name);
  const float *want = tr_get(R, NULL, "%s", key);
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
    tr_check(R, p.t[i], 1e-4, key);
  }
  em_optim_free(opt);
  em_module_free(m);
  tr_free(R);
}

Test(torch_ref, mlp_forward_backward) { forward_backward(&MLP); }
Test(torch_ref, cnn_forward_backward) { forward_backward(&CNN); }
Test(torch_ref, mlp_sgd_momentum_20_steps) { train(&MLP, "sgd"); }
Test(torch_ref, mlp_adamw_20_steps) { train(&MLP, "adamw"); }
Test(torch_ref, cnn_sgd_momentum_20_steps) { train(&CNN, "sgd"); }
Test(torch_ref, cnn_adamw_20_steps) { train(&CNN, "adamw"); }
