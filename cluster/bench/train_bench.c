/* train_bench.c: single-process training throughput on Fashion-MNIST, one thread.
 *
 * The same loop as cluster/bench/train_peer.py (PyTorch): a random permutation of the training
 * set, batches gathered with index_select, forward, cross-entropy, backward, SGD momentum. Runs
 * --warmup untimed steps, then --steps timed ones, and prints one BENCH line.
 *
 * usage: ember-train-bench --model mlp|cnn [--steps N] [--warmup N] [--batch N] [--threads N] */
#include "dl_idx.h"
#include "ember.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int usage(const char *msg) {
  fprintf(stderr,
          "ember-train-bench: %s\nusage: ember-train-bench --model mlp|cnn [--steps N] "
          "[--warmup N] [--batch N] [--threads N]\n",
          msg);
  return 2;
}

int main(int argc, char **argv) {
  const char *model_name = NULL;
  int steps = 200, warmup = 10, batch = 64, threads = 1;
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(argv[i], "--model") && v)
      model_name = argv[++i];
    else if (!strcmp(argv[i], "--steps") && v)
      steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--warmup") && v)
      warmup = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--batch") && v)
      batch = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && v)
      threads = atoi(argv[++i]);
    else
      return usage("unknown or incomplete option");
  }
  if (!model_name || (strcmp(model_name, "mlp") && strcmp(model_name, "cnn")))
    return usage("--model must be mlp or cnn");
  if (steps < 1 || warmup < 0 || batch < 1 || threads < 1)
    return usage("--steps, --batch and --threads must be positive");
  em_set_num_threads(threads);

  em_tensor *images, *labels;
  if (dl_fmnist_load(dl_fmnist_dir(), "train", &images, &labels) != EM_OK) {
    fprintf(stderr, "ember-train-bench: %s\n", em_last_error());
    return 1;
  }
  bool cnn = !strcmp(model_name, "cnn");
  em_manual_seed(0);
  em_module *model = cnn ? em_small_cnn(1, 28, 28, 10) : em_mlp(784, (int[]){1024, 1024}, 2, 10);
  em_optim *opt = model ? em_sgd(em_parameters(model), .lr = 0.01, .momentum = 0.9) : NULL;
  if (!opt) {
    fprintf(stderr, "ember-train-bench: %s\n", em_last_error());
    return 1;
  }
  int64_t n = images->shape[0], n_batches = n / batch;
  int64_t *perm = malloc((size_t)n * sizeof *perm);
  em_rng rng = em_rng_new(0);
  em_rng_permutation(&rng, perm, n);
  double t0 = 0, last_loss = 0;
  for (int s = 0; s < warmup + steps; s++) {
    if (s == warmup) t0 = now_s();
    em_scope sc = em_scope_begin();
    int64_t b = s % n_batches;
    em_tensor *idx = em_from_data(EM_I64, EM_SHAPE(batch), perm + b * batch);
    em_tensor *x = em_index_select(images, 0, idx), *y = em_index_select(labels, 0, idx);
    if (cnn) x = em_reshape(x, EM_SHAPE(batch, 1, 28, 28));
    em_zero_grad(opt);
    em_tensor *loss = em_cross_entropy(em_forward(model, x), y);
    if (!loss || em_backward(loss) != EM_OK || em_step(opt) != EM_OK) {
      fprintf(stderr, "ember-train-bench: step %d: %s\n", s, em_last_error());
      return 1;
    }
    last_loss = em_get(loss, 0);
    em_scope_end(sc);
  }
  double dt = now_s() - t0;
  printf("ember %s: %d steps of batch %d in %.3f s, final loss %.4f\n", model_name, steps, batch,
         dt, last_loss);
  printf("BENCH suite=train case=%s impl=ember ranks=1 threads=%d batch=%d samples_per_s=%.1f "
         "step_ms=%.3f\n",
         model_name, threads, batch, steps * (double)batch / dt, 1000 * dt / steps);
  free(perm);
  em_optim_free(opt);
  em_module_free(model);
  em_release(images);
  em_release(labels);
  return 0;
}
