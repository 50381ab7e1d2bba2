/* consumer: a program outside Ember's tree, built against an installed Ember by
 * tests/install/install_test.sh (pkg-config and find_package, shared and static). It uses the API
 * for real: ddp_init (a world of one), a matmul checked against a float64 loop, and a small MLP
 * wrapped by ddp_wrap and trained by SGD on a fixed batch. On success it prints one line:
 *
 *   consumer ok way=WAY world=1 matmul=58,64,139,154 loss0=L0 loss20=L20
 *
 * the loss before any step and after 20 (the test checks the matmul against the same hand
 * computation, that the loss went down, and that every way prints the same losses). */
#include <ember.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

static int fail(const char *what) {
  fprintf(stderr, "consumer: %s: %s\n", what, em_last_error());
  return 1;
}

/* A (2, 3) @ B (3, 2) through Ember, compared with a float64 loop; writes the four values. */
static int check_matmul(char *out, size_t n) {
  const float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {7, 8, 9, 10, 11, 12};
  em_scope sc = em_scope_begin();
  em_tensor *c = em_matmul(em_from_data(EM_F32, 2, (int64_t[]){2, 3}, a),
                           em_from_data(EM_F32, 2, (int64_t[]){3, 2}, b));
  int rc = 0;
  if (!c) rc = fail("matmul");
  out[0] = 0;
  for (int i = 0; !rc && i < 2; i++)
    for (int j = 0; j < 2; j++) {
      double want = 0;
      for (int k = 0; k < 3; k++) want += (double)a[i * 3 + k] * b[k * 2 + j];
      double got = em_get(c, i * 2 + j);
      if (fabs(got - want) > 1e-4) {
        fprintf(stderr, "consumer: matmul[%d][%d] = %g, expected %g\n", i, j, got, want);
        rc = 1;
      }
      size_t len = strlen(out);
      snprintf(out + len, n - len, "%s%g", len ? "," : "", got);
    }
  em_scope_end(sc);
  return rc;
}

/* MLP 4-8-3 (seed 0), cross-entropy on 6 fixed samples, 20 SGD steps: the loss before and after. */
static int train_mlp(double *loss0, double *loss20) {
  static const float x[6 * 4] = {0.5f,  -1.0f, 0.25f, 2.0f,  -0.5f, 1.5f,   -2.0f, 0.0f,
                                 1.0f,  1.0f,  -1.0f, -0.5f, 0.0f,  -0.75f, 1.25f, 0.5f,
                                 -1.5f, 0.25f, 0.5f,  -1.0f, 2.0f,  -0.25f, 0.0f,  1.0f};
  static const int64_t y[6] = {0, 1, 2, 1, 0, 2};
  em_manual_seed(0);
  em_module *model = em_mlp(4, (int[]){8}, 1, 3);
  em_tensor *xt = em_from_data(EM_F32, 2, (int64_t[]){6, 4}, x);
  em_tensor *yt = em_from_data(EM_I64, 1, (int64_t[]){6}, y);
  if (!model || !xt || !yt || !ddp_wrap(model, NULL)) return fail("model");
  em_optim *opt = em_sgd(em_parameters(model), .lr = 0.1);
  if (!opt) return fail("em_sgd");
  for (int step = 0; step <= 20; step++) {
    em_scope sc = em_scope_begin();
    em_tensor *loss = em_cross_entropy(em_forward(model, xt), yt);
    if (!loss) return fail("forward");
    if (step == 0) *loss0 = em_get(loss, 0);
    if (step == 20) *loss20 = em_get(loss, 0);
    if (step < 20 &&
        (em_zero_grad(opt) != EM_OK || em_backward(loss) != EM_OK || em_step(opt) != EM_OK))
      return fail("training step");
    em_scope_end(sc);
  }
  em_optim_free(opt);
  em_release(xt);
  em_release(yt);
  if (ddp_finalize() != EM_OK) return fail("ddp_finalize");
  em_module_free(model); /* after ddp_finalize, which frees its wrapper */
  return 0;
}

int main(int argc, char **argv) {
  const char *way = argc > 1 ? argv[1] : "?";
  if (ddp_init(&argc, &argv) != EM_OK) return fail("ddp_init");
  int world = ddp_world_size();
  char matmul[128];
  double loss0 = 0, loss20 = 0;
  if (check_matmul(matmul, sizeof matmul) || train_mlp(&loss0, &loss20)) return 1;
  printf("consumer ok way=%s world=%d matmul=%s loss0=%.6f loss20=%.6f\n", way, world, matmul,
         loss0, loss20);
  return 0;
}
