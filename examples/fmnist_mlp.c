/* fmnist_mlp.c: train an MLP (784-256-128-10) on Fashion-MNIST, data-parallel over however many
 * ranks it was started with (one without a launcher), and report test accuracy after every epoch.
 * `make run` runs it on 2 ranks under mpirun (ddprun and the YAML-driven ember-train come later).
 *
 * Every rank shuffles the training set with the same seed and takes every W-th batch of 64
 * (batch per rank); ddp_wrap averages the gradients. The learning rate defaults to 0.01 per rank
 * (linear scaling with the global batch).
 *
 * usage: [mpirun -np W] fmnist_mlp [--epochs N] [--batch N] [--lr X] [--threads N] [--data DIR] */
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

static int fail(const char *what) {
  ddp_eprint("fmnist_mlp: %s: %s\n", what, em_last_error());
  return 1;
}

/* Fraction of test samples whose argmax logit equals the label. */
static double accuracy(em_module *model, em_tensor *x, em_tensor *y) {
  bool prev = em_no_grad_begin();
  em_module_eval(model);
  int64_t n = x->shape[0], correct = 0;
  for (int64_t b = 0; b < n; b += 1000) {
    em_scope s = em_scope_begin();
    int64_t len = n - b < 1000 ? n - b : 1000;
    em_tensor *pred = em_argmax(em_forward(model, em_narrow(x, 0, b, len)), 1, false);
    em_tensor *lab = em_narrow(y, 0, b, len);
    for (int64_t i = 0; pred && i < len; i++) correct += em_get(pred, i) == em_get(lab, i);
    em_scope_end(s);
  }
  em_module_train(model, true);
  em_no_grad_end(prev);
  return (double)correct / (double)n;
}

int main(int argc, char **argv) {
  int epochs = 10, batch = 64, threads = 1;
  double lr = 0;
  const char *dir = dl_fmnist_dir();
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(argv[i], "--epochs") && v)
      epochs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--batch") && v)
      batch = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--lr") && v)
      lr = atof(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && v)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--data") && v)
      dir = argv[++i];
    else {
      fprintf(stderr, "usage: fmnist_mlp [--epochs N] [--batch N] [--lr X] [--threads N] "
                      "[--data DIR]\n");
      return 2;
    }
  }
  if (epochs < 1 || batch < 1 || threads < 1 || lr < 0) {
    fprintf(stderr, "fmnist_mlp: --epochs, --batch, --threads and --lr must be positive\n");
    return 2;
  }
  if (ddp_init(&argc, &argv) != EM_OK) return fail("ddp_init");
  int W = ddp_world_size(), rank = ddp_rank();
  if (lr == 0) lr = 0.01 * W;
  em_set_num_threads(threads);
  em_tensor *xtr, *ytr, *xte, *yte;
  if (dl_fmnist_load(dir, "train", &xtr, &ytr) != EM_OK) return fail("training set");
  if (dl_fmnist_load(dir, "t10k", &xte, &yte) != EM_OK) return fail("test set");
  ddp_print0("Fashion-MNIST: %lld training, %lld test images from %s; %d rank%s, batch %d per "
             "rank, lr %g\n",
             (long long)xtr->shape[0], (long long)xte->shape[0], dir, W, W > 1 ? "s" : "", batch,
             lr);

  em_manual_seed(0);
  em_module *model = em_mlp(784, (int[]){256, 128}, 2, 10);
  ddp_model *ddp = model ? ddp_wrap(model, NULL) : NULL; /* the one line for data parallelism */
  em_optim *opt = ddp ? em_sgd(em_parameters(model), .lr = lr, .momentum = 0.9) : NULL;
  if (!opt) return fail("model");

  int64_t n = xtr->shape[0], steps = n / ((int64_t)batch * W); /* steps per rank per epoch */
  int64_t *perm = malloc((size_t)n * sizeof *perm);
  em_rng rng = em_rng_new(42);
  double t_start = now_s(), loss_sum = 0, acc = 0;
  for (int ep = 0; ep < epochs; ep++) {
    em_rng_permutation(&rng, perm, n);
    double t0 = now_s();
    loss_sum = 0;
    for (int64_t s = 0; s < steps; s++) {
      em_scope sc = em_scope_begin();
      em_tensor *idx = em_from_data(EM_I64, EM_SHAPE(batch), perm + (s * W + rank) * batch);
      em_tensor *loss = em_cross_entropy(em_forward(model, em_index_select(xtr, 0, idx)),
                                         em_index_select(ytr, 0, idx));
      if (!loss || em_zero_grad(opt) != EM_OK || em_backward(loss) != EM_OK ||
          em_step(opt) != EM_OK)
        return fail("training step");
      loss_sum += em_get(loss, 0);
      em_scope_end(sc);
    }
    acc = accuracy(model, xte, yte);
    double dt = now_s() - t0;
    ddp_print0("epoch %d/%d  train_loss %.4f (rank 0)  test_acc %.4f  %.0f samples/s  %.1f s\n",
               ep + 1, epochs, loss_sum / (double)steps, acc, (double)(steps * batch * W) / dt, dt);
  }
  double total = now_s() - t_start;
  ddp_print0("RESULT test_acc=%.4f train_loss=%.4f samples_per_s=%.1f time_s=%.1f ranks=%d\n", acc,
             loss_sum / (double)steps, (double)(epochs * steps * batch * W) / total, total, W);
  free(perm);
  em_optim_free(opt);
  ddp_free(ddp);
  em_module_free(model);
  em_release(xtr);
  em_release(ytr);
  em_release(xte);
  em_release(yte);
  ddp_finalize();
  return 0;
}
