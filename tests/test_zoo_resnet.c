/* test_zoo_resnet.c: the ResNets of the zoo (nn/resnet.c) against torchvision.
 *
 * tests/ref/resnet_ref.py (Debian's python3 with torch 1.13 and torchvision 0.14) gives:
 *   names  the parameter count and every parameter and buffer name, in order, of torchvision's
 *          resnet18/34/50 and of the CIFAR ResNet-20 peer (built from torchvision's BasicBlock);
 *   r18      torchvision resnet18(num_classes=10) in training mode on x (2, 3, 48, 48);
 *   r50      torchvision resnet50(num_classes=10) in eval mode on x (2, 3, 64, 64);
 *   c20      ResNet-20 (1 channel, 10 classes) on x (4, 1, 14, 14);
 *   c20_sgd  the same, 3 SGD-momentum steps.
 * The reference values are PyTorch's computed in float64 from the same float32 weights and
 * inputs, for cases the script has seen to be well conditioned (a ReLU input near zero behind a
 * small-batch batch norm can move a gradient by a percent under float32 rounding; 28 x 28 images
 * and 32 x 32 for ResNet-18 were such cases for every seed tried: see reference() there). With
 * PyTorch's weights loaded, Ember's logits, loss, every gradient, the running statistics after
 * the forward and the eval-mode logits agree within 1e-4 relative (||e - t|| / ||t||) (ResNet-50:
 * the eval-mode logits), and each training loss within 1e-4 relative. */
#include "torchref.h"

#include <math.h>
#include <stdio.h>

/* ---- names and parameter counts -------------------------------------------------------------- */
static int64_t param_count(em_module *m) {
  int64_t n = 0;
  for (int i = 0, np = em_module_num_params(m); i < np; i++)
    n += em_numel(em_module_tensor_at(m, i));
  return n;
}

/* m's parameter count is want and torchvision's, and its parameters and buffers are, in order,
 * the named_parameters() and named_buffers() of the peer dumped as tag. */
static void check_like_torch(tr_ref *r, em_module *m, const char *tag, int64_t want) {
  cr_assert_not_null(m, "%s: %s", tag, em_last_error());
  const float *hi_lo = tr_get(r, NULL, "%s.numel", tag);
  int64_t torch_count = ((int64_t)hi_lo[0] << 20) + (int64_t)hi_lo[1];
  cr_assert_eq(torch_count, want, "%s: torchvision has %lld parameters", tag,
               (long long)torch_count);
  cr_assert_eq(param_count(m), want, "%s: %lld parameters, want %lld", tag,
               (long long)param_count(m), (long long)want);
  int np = em_module_num_params(m), nb = em_module_num_buffers(m);
  cr_assert_eq(np, (int)tr_get(r, NULL, "%s.n_params", tag)[0], "%s: %d parameters", tag, np);
  cr_assert_eq(nb, (int)tr_get(r, NULL, "%s.n_buffers", tag)[0], "%s: %d buffers", tag, nb);
  for (int i = 0; i < np + nb; i++) {
    const char *name = em_module_tensor_name(m, i);
    bool param = i < np;
    int index = param ? i : i - np;
    /* [index in named_parameters() or named_buffers(), numel] */
    const float *v = tr_get(r, NULL, "%s.%s.%s", tag, param ? "p" : "b", name);
    cr_assert_eq((int)v[0], index, "%s: '%s' is %s %d in Ember, %d in PyTorch", tag, name,
                 param ? "parameter" : "buffer", index, (int)v[0]);
    cr_assert_eq((int64_t)v[1], em_numel(em_module_tensor_at(m, i)), "%s: '%s' size", tag, name);
  }
}

Test(resnet, parameter_counts_and_names_equal_torchvision) {
  tr_ref *r = tr_run("resnet_ref.py", "names");
  struct {
    const char *tag;
    em_module *(*make)(int classes, int in_channels);
    int64_t count;
  } nets[] = {{"resnet18", em_resnet18, 11689512},
              {"resnet34", em_resnet34, 21797672},
              {"resnet50", em_resnet50, 25557032}};
  for (int i = 0; i < 3; i++) {
    em_module *m = nets[i].make(1000, 3);
    check_like_torch(r, m, nets[i].tag, nets[i].count);
    em_module_free(m);
  }
  em_module *c20 = em_resnet_cifar(20, 3, 10), *c20_1 = em_resnet_cifar(20, 1, 10);
  check_like_torch(r, c20, "c20", 272474);
  check_like_torch(r, c20_1, "c20_1ch", 272186);
  cr_assert_str_eq(em_module_type(em_module_find(c20, "layer2.0")), "BasicBlock");
  em_module_free(c20);
  em_module_free(c20_1);
  tr_free(r);
}

/* ---- initialisation -------------------------------------------------------------------------- */
/* The sample mean and standard deviation of t's values. */
static void moments(em_tensor *t, double *mean, double *std) {
  const float *p = em_data_f32(t);
  int64_t n = em_numel(t);
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < n; i++) s += p[i], s2 += (double)p[i] * p[i];
  *mean = s / n;
  *std = sqrt(s2 / n - *mean * *mean);
}

/* Convolutions ~ N(0, 2 / fan_out) (kaiming_normal_, fan_out = out * k * k): the sample std is
 * within rel of that, the mean within 4 standard errors of 0. */
static void check_kaiming(em_module *m, const char *name, int64_t fan_out, double rel) {
  em_tensor *w = em_module_get(m, name);
  cr_assert_not_null(w, "%s", em_last_error());
  double mean, std, want = sqrt(2.0 / fan_out);
  moments(w, &mean, &std);
  cr_assert(fabs(std / want - 1) <= rel, "%s: std %.5f, kaiming fan_out %.5f", name, std, want);
  cr_assert(fabs(mean) <= 4 * want / sqrt((double)em_numel(w)), "%s: mean %.5f", name, mean);
}

Test(resnet, initialised_as_torchvision) {
  em_manual_seed(3);
  em_module *m = em_resnet18(10, 3);
  cr_assert_not_null(m, "%s", em_last_error());
  check_kaiming(m, "layer4.0.conv2.weight", 512 * 9, 0.01);    /* 2.4M values */
  check_kaiming(m, "conv1.weight", 64 * 49, 0.05);             /* 7x7 stem, 9408 values */
  check_kaiming(m, "layer2.0.downsample.0.weight", 128, 0.05); /* 1x1, 8192 values */
  /* batch norm: weight 1, bias 0, running statistics 0 and 1 (the residual BN too: torchvision
   * zero-initialises it only when asked) */
  const char *ones[] = {"bn1.weight", "layer1.1.bn2.weight", "layer3.0.downsample.1.running_var"};
  const char *zeros[] = {"bn1.bias", "layer4.1.bn2.bias", "layer2.0.bn1.running_mean",
                         "layer4.1.bn2.num_batches_tracked"};
  for (int i = 0; i < 3; i++)
    for (int64_t k = 0; k < em_numel(em_module_get(m, ones[i])); k++)
      cr_assert_eq(em_get(em_module_get(m, ones[i]), k), 1.0, "%s[%lld]", ones[i], (long long)k);
  for (int i = 0; i < 4; i++)
    for (int64_t k = 0; k < em_numel(em_module_get(m, zeros[i])); k++)
      cr_assert_eq(em_get(em_module_get(m, zeros[i]), k), 0.0, "%s[%lld]", zeros[i], (long long)k);
  /* fc as nn.Linear: U(-1/sqrt(512), 1/sqrt(512)), filling the range */
  em_tensor *fc = em_module_get(m, "fc.weight");
  double bound = 1 / sqrt(512.0), top = 0;
  for (int64_t k = 0; k < em_numel(fc); k++) {
    double v = fabs(em_get(fc, k));
    cr_assert(v <= bound, "fc.weight[%lld] = %g outside +-%g", (long long)k, v, bound);
    top = fmax(top, v);
  }
  cr_assert_gt(top, 0.95 * bound);
  em_module_free(m);
}

/* ---- against PyTorch: one training forward and backward, then eval --------------------------- */
/* m's buffers against "<tag>.after.<name>" (the num_batches_tracked counters are i64). */
static void check_buffers(tr_ref *r, em_module *m, const char *tag) {
  for (int i = em_module_num_params(m); i < em_module_num_tensors(m); i++) {
    em_tensor *t = em_module_tensor_at(m, i);
    char key[160];
    snprintf(key, sizeof key, "%s.after.%s", tag, em_module_tensor_name(m, i));
    if (t->dtype == EM_F32) {
      tr_check(r, t, 1e-4, key);
    } else {
      cr_assert_eq(em_get(t, 0), tr_get(r, NULL, "%s", key)[0], "%s: %g", key, em_get(t, 0));
    }
  }
}

/* Load the peer's weights into m, run x through it in training mode and back, and check logits,
 * loss, gradients, the updated running statistics, and then the eval-mode logits. */
static void forward_backward(tr_ref *r, em_module *m, const char *tag, int ndim,
                             const int64_t *xshape) {
  em_scope s = em_scope_begin();
  char key[160];
  snprintf(key, sizeof key, "%s.param.", tag);
  tr_load_module(r, m, key);
  snprintf(key, sizeof key, "%s.x.0", tag);
  em_tensor *x = tr_tensor(r, EM_F32, ndim, xshape, key);
  snprintf(key, sizeof key, "%s.y.0", tag);
  em_tensor *y = tr_tensor(r, EM_I64, EM_SHAPE(xshape[0]), key);
  em_tensor *logits = em_forward(m, x);
  em_tensor *loss = em_cross_entropy(logits, y);
  cr_assert_not_null(loss, "%s", em_last_error());
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  snprintf(key, sizeof key, "%s.logits", tag);
  tr_check(r, logits, 1e-4, key);
  snprintf(key, sizeof key, "%s.loss", tag);
  tr_check(r, loss, 1e-4, key);
  snprintf(key, sizeof key, "%s.grad.", tag);
  tr_check_grads(r, m, 1e-4, key);
  check_buffers(r, m, tag);
  em_module_eval(m);
  bool prev = em_no_grad_begin();
  em_tensor *eval_logits = em_forward(m, x);
  em_no_grad_end(prev);
  snprintf(key, sizeof key, "%s.eval_logits", tag);
  tr_check(r, eval_logits, 1e-4, key);
  em_scope_end(s);
}

Test(resnet, resnet18_matches_torchvision) {
  tr_ref *r = tr_run("resnet_ref.py", "r18");
  em_module *m = em_resnet18(10, 3);
  cr_assert_not_null(m, "%s", em_last_error());
  forward_backward(r, m, "r18", EM_SHAPE(2, 3, 48, 48));
  em_module_free(m);
  tr_free(r);
}

/* The bottleneck blocks in numbers: eval-mode logits from torchvision's initial state. */
Test(resnet, resnet50_eval_matches_torchvision) {
  tr_ref *r = tr_run("resnet_ref.py", "r50");
  em_scope s = em_scope_begin();
  em_module *m = em_resnet50(10, 3);
  cr_assert_not_null(m, "%s", em_last_error());
  tr_load_module(r, m, "r50.param.");
  em_module_eval(m);
  bool prev = em_no_grad_begin();
  em_tensor *logits = em_forward(m, tr_tensor(r, EM_F32, EM_SHAPE(2, 3, 64, 64), "r50.x.0"));
  em_no_grad_end(prev);
  tr_check(r, logits, 1e-4, "r50.eval_logits");
  em_module_free(m);
  em_scope_end(s);
  tr_free(r);
}

Test(resnet, resnet20_matches_torch_peer) {
  tr_ref *r = tr_run("resnet_ref.py", "c20");
  em_module *m = em_resnet_cifar(20, 1, 10);
  cr_assert_not_null(m, "%s", em_last_error());
  forward_backward(r, m, "c20", EM_SHAPE(4, 1, 14, 14));
  em_module_free(m);
  tr_free(r);
}

Test(resnet, resnet20_sgd_momentum_3_steps_match_torch) {
  tr_ref *r = tr_run("resnet_ref.py", "c20_sgd");
  em_module *m = em_resnet_cifar(20, 1, 10);
  cr_assert_not_null(m, "%s", em_last_error());
  tr_load_module(r, m, "c20_sgd.param.");
  em_optim *opt = em_sgd(em_parameters(m), .lr = 0.01, .momentum = 0.9);
  cr_assert_not_null(opt, "%s", em_last_error());
  const float *want = tr_get(r, NULL, "c20_sgd.losses");
  for (int step = 0; step < 3; step++) {
    em_scope s = em_scope_begin();
    char key[64];
    snprintf(key, sizeof key, "c20_sgd.x.%d", step);
    em_tensor *x = tr_tensor(r, EM_F32, EM_SHAPE(4, 1, 14, 14), key);
    snprintf(key, sizeof key, "c20_sgd.y.%d", step);
    em_tensor *y = tr_tensor(r, EM_I64, EM_SHAPE(4), key);
    em_zero_grad(opt);
    em_tensor *loss = em_cross_entropy(em_forward(m, x), y);
    cr_assert_not_null(loss, "%s", em_last_error());
    cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
    cr_assert_eq(em_step(opt), EM_OK, "%s", em_last_error());
    double got = em_get(loss, 0);
    cr_assert(fabs(got - want[step]) <= 1e-4 * fabs(want[step]), "step %d: loss %.8f, PyTorch %.8f",
              step, got, want[step]);
    em_scope_end(s);
  }
  em_optim_free(opt);
  em_module_free(m);
  tr_free(r);
}

/* ---- bad arguments and inputs ---------------------------------------------------------------- */
Test(resnet, bad_arguments_are_clear_errors) {
  TU_BEGIN;
  tu_assert_error((void *)em_resnet_cifar(21, 3, 10), "depth must be 6n + 2", "got 21");
  tu_assert_error((void *)em_resnet_cifar(2, 3, 10), "depth must be 6n + 2", "got 2");
  tu_assert_error((void *)em_resnet_cifar(-4, 3, 10), "depth", "got -4");
  tu_assert_error((void *)em_resnet_cifar(1208, 3, 10), "up to 1202", "got 1208");
  tu_assert_error((void *)em_resnet_cifar(20, 3, 0), "resnet_cifar", "num_classes > 0");
  tu_assert_error((void *)em_resnet_cifar(20, 0, 10), "resnet_cifar", "in_channels > 0");
  tu_assert_error((void *)em_resnet18(0, 3), "resnet18", "num_classes > 0 (got 3, 0)");
  tu_assert_error((void *)em_resnet34(10, -1), "resnet34", "in_channels > 0");
  tu_assert_error((void *)em_resnet50(-5, 3), "resnet50", "num_classes > 0");
  /* Inputs the network cannot take: the error comes from the op that refused, naming shapes. */
  em_module *m = em_resnet_cifar(8, 3, 10);
  cr_assert_not_null(m, "%s", em_last_error());
  tu_assert_error(em_forward(m, em_zeros(EM_F32, EM_SHAPE(2, 1, 8, 8))), "conv2d", "[2, 1, 8, 8]");
  tu_assert_error(em_forward(m, em_zeros(EM_F32, EM_SHAPE(1, 3, 1, 1))), "more than 1 value", NULL);
  tu_assert_error(em_forward(m, NULL), NULL, NULL);
  em_module_free(m);
  TU_END;
}
