/* fmnist_mlp.c: train an MLP (784-256-128-10) on Fashion-MNIST, data-parallel over however many
 * ranks it was started with (one without a launcher), and report test accuracy after every epoch.
 * `make run` runs it on 2 ranks under mpirun (ddprun and the YAML-driven ember-train come later).
 *
 * The data loader gives each rank its shard of every epoch's shuffled order, batches of 64 per rank
 * built by a worker thread ahead of the step; ddp_wrap averages the gradients. The learning rate
 * defaults to 0.01 per rank (linear scaling with the global batch). Test accuracy comes from an
 * exact-evaluation loader (every test image on exactly one rank), summed over the ranks.
 *
 * usage: [mpirun -np W] fmnist_mlp [--epochs N] [--batch N] [--lr X] [--threads N] [--data DIR]
 *                                  [--workers N] */
#include "ember.h"

#include <getopt.h>
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

/* Fraction of test samples whose argmax logit equals the label: each rank counts its exact shard,
 * and the counts are summed over the ranks. Returns -1 on error. */
static double accuracy(em_module *model, dl_loader *test) {
  bool prev = em_no_grad_begin();
  em_module_eval(model);
  int64_t counts[2] = {0, 0}; /* correct, seen */
  for (dl_batch b; dl_next(test, &b);) {
    em_scope s = em_scope_begin();
    em_tensor *pred = em_argmax(em_forward(model, b.x), 1, false);
    for (int64_t i = 0; pred && i < b.real; i++) counts[0] += em_get(pred, i) == em_get(b.y, i);
    counts[1] += b.real;
    em_scope_end(s);
  }
  em_module_train(model, true);
  em_no_grad_end(prev);
  if (dl_status(test) != EM_OK) return -1;
  if (ddp_world_size() > 1) {
    coll_buf cb = coll_host_buf(counts, 2, EM_I64);
    if (coll_wait(coll_allreduce(ddp_comm(), cb, cb, 2, COLL_SUM), 0) != EM_OK) return -1;
  }
  return (double)counts[0] / (double)counts[1];
}

/* msg (NULL: getopt_long has said what is wrong) and the usage line; returns exit status 2. */
static int usage(const char *msg) {
  if (msg) fprintf(stderr, "fmnist_mlp: %s\n", msg);
  fprintf(stderr, "usage: fmnist_mlp [--epochs N] [--batch N] [--lr X] [--threads N] [--data DIR] "
                  "[--workers N]\n");
  return 2;
}

/* optarg as an integer in [lo, hi] for option name; false (message set) if it is not one. */
static bool int_opt(const char *name, int64_t lo, int64_t hi, int *out) {
  int64_t v;
  if (em_arg_int(name, optarg, lo, hi, &v) != EM_OK) return false;
  *out = (int)v;
  return true;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"epochs", required_argument, NULL, 'e'},
                                       {"batch", required_argument, NULL, 'b'},
                                       {"lr", required_argument, NULL, 'l'},
                                       {"threads", required_argument, NULL, 't'},
                                       {"data", required_argument, NULL, 'd'},
                                       {"workers", required_argument, NULL, 'w'},
                                       {NULL, 0, NULL, 0}};
  int epochs = 10, batch = 64, threads = 1, workers = 1;
  double lr = 0; /* 0: 0.01 per rank */
  const char *dir = dl_fmnist_dir();
  for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
    bool ok = true;
    switch (c) {
    case 'e': ok = int_opt("--epochs", 1, 100000, &epochs); break;
    case 'b': ok = int_opt("--batch", 1, 60000, &batch); break;
    case 'l': ok = em_arg_num("--lr", optarg, 0, 10, &lr) == EM_OK; break;
    case 't': ok = int_opt("--threads", 1, 4096, &threads); break;
    case 'd': dir = optarg; break;
    case 'w': ok = int_opt("--workers", 0, 256, &workers); break;
    default: return usage(NULL);
    }
    if (!ok) return usage(em_last_error());
  }
  if (optind < argc) return usage("unexpected arguments after the options");
  if (ddp_init(&argc, &argv) != EM_OK) return fail("ddp_init");
  int W = ddp_world_size();
  if (lr == 0) lr = 0.01 * W;
  em_set_num_threads(threads);
  dl_dataset *train = dl_fmnist_open(dir, "train", NULL);
  if (!train) return fail("training set");
  dl_dataset *test = dl_fmnist_open(dir, "t10k", NULL);
  if (!test) return fail("test set");
  dl_loader *loader = dl_loader_new(
      train, &(dl_options){.batch = batch, .shuffle = true, .workers = workers, .seed = 42});
  dl_loader *test_loader = dl_loader_new(
      test, &(dl_options){.batch = 1000, .exact = true, .workers = workers});
  if (!loader || !test_loader) return fail("data loader");
  ddp_print0("Fashion-MNIST: %lld training, %lld test images from %s; %d rank%s, batch %d per "
             "rank, lr %g, %d loader worker%s\n",
             (long long)dl_dataset_len(train), (long long)dl_dataset_len(test), dir, W,
             W > 1 ? "s" : "", batch, lr, workers, workers == 1 ? "" : "s");

  em_manual_seed(0);
  em_module *model = em_mlp(784, (int[]){256, 128}, 2, 10);
  ddp_model *ddp = model ? ddp_wrap(model, NULL) : NULL; /* the one line for data parallelism */
  em_optim *opt = ddp ? em_sgd(em_parameters(model), .lr = lr, .momentum = 0.9) : NULL;
  if (!opt) return fail("model");

  double t_start = now_s(), loss_sum = 0, acc = 0;
  int64_t steps = 0, samples = 0;
  for (int ep = 0; ep < epochs; ep++) {
    double t0 = now_s();
    loss_sum = 0;
    steps = 0;
    for (dl_batch b; dl_next(loader, &b);) { /* the loader moves to the next epoch by itself */
      em_scope sc = em_scope_begin();
      em_tensor *loss = em_cross_entropy(em_forward(model, b.x), b.y);
      if (!loss || em_zero_grad(opt) != EM_OK || em_backward(loss) != EM_OK ||
          em_step(opt) != EM_OK)
        return fail("training step");
      loss_sum += em_get(loss, 0);
      steps++;
      samples += b.size * W;
      em_scope_end(sc);
    }
    if (dl_status(loader) != EM_OK) return fail("training data");
    if ((acc = accuracy(model, test_loader)) < 0) return fail("evaluation");
    double dt = now_s() - t0;
    ddp_print0("epoch %d/%d  train_loss %.4f (rank 0)  test_acc %.4f  %.0f samples/s  %.1f s\n",
               ep + 1, epochs, loss_sum / (double)steps, acc, (double)(steps * batch * W) / dt, dt);
  }
  double total = now_s() - t_start;
  ddp_print0("RESULT test_acc=%.4f train_loss=%.4f samples_per_s=%.1f time_s=%.1f ranks=%d\n", acc,
             loss_sum / (double)steps, (double)samples / total, total, W);
  em_optim_free(opt);
  ddp_free(ddp);
  em_module_free(model);
  dl_loader_free(loader);
  dl_loader_free(test_loader);
  dl_dataset_close(train);
  dl_dataset_close(test);
  ddp_finalize();
  return 0;
}
