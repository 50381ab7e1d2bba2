/* train_bench.c: single-process training throughput on Fashion-MNIST, one thread, on the CPU or
 * a GPU.
 *
 * The same loop as cluster/bench/train_peer.py (PyTorch): a random permutation of the training
 * set, batches gathered with index_select (on the CPU; with --device cuda the batch is then
 * copied to cuda:0), forward, cross-entropy, backward, SGD momentum. Runs --warmup untimed steps,
 * then --steps timed ones, and prints one BENCH line. On a GPU the clock is read after the loss
 * of the last warm-up step and of the last timed step came back to the host, so that the time
 * covers the GPU's work and not only its launches.
 *
 * usage: ember-train-bench --model mlp|cnn|resnet [--steps N] [--warmup N] [--batch N]
 *                          [--threads N] [--device cpu|cuda] */
#include "dl_idx.h"
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

/* msg (NULL: getopt_long has said what is wrong) and the usage line; returns exit status 2. */
static int usage(const char *msg) {
  if (msg) fprintf(stderr, "ember-train-bench: %s\n", msg);
  fprintf(stderr, "usage: ember-train-bench --model mlp|cnn|resnet [--steps N] [--warmup N] "
                  "[--batch N] [--threads N] [--device cpu|cuda]\n");
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
  static const struct option opts[] = {
      {"model", required_argument, NULL, 'm'},   {"steps", required_argument, NULL, 's'},
      {"warmup", required_argument, NULL, 'w'},  {"batch", required_argument, NULL, 'b'},
      {"threads", required_argument, NULL, 't'}, {"device", required_argument, NULL, 'd'},
      {NULL, 0, NULL, 0}};
  const char *model_name = NULL, *device = "cpu";
  int steps = 200, warmup = 10, batch = 64, threads = 1;
  for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
    bool ok = true;
    switch (c) {
    case 'm': model_name = optarg; break;
    case 's': ok = int_opt("--steps", 1, 100000000, &steps); break;
    case 'w': ok = int_opt("--warmup", 0, 100000000, &warmup); break;
    case 'b': ok = int_opt("--batch", 1, 60000, &batch); break; /* the training set's size */
    case 't': ok = int_opt("--threads", 1, 4096, &threads); break;
    case 'd': device = optarg; break;
    default: return usage(NULL);
    }
    if (!ok) return usage(em_last_error());
  }
  if (optind < argc) return usage("unexpected arguments after the options");
  if (!model_name ||
      (strcmp(model_name, "mlp") && strcmp(model_name, "cnn") && strcmp(model_name, "resnet")))
    return usage("--model must be mlp, cnn or resnet");
  if (strcmp(device, "cpu") && strcmp(device, "cuda"))
    return usage("--device must be cpu or cuda");
  em_device dev = strcmp(device, "cuda") ? EM_DEVICE_CPU : EM_DEVICE_CUDA(0);
  em_set_num_threads(threads);

  em_tensor *images, *labels;
  if (dl_fmnist_load(dl_fmnist_dir(), "train", &images, &labels) != EM_OK) {
    fprintf(stderr, "ember-train-bench: %s\n", em_last_error());
    return 1;
  }
  bool image = strcmp(model_name, "mlp") != 0; /* cnn and resnet take (N, 1, 28, 28) */
  em_manual_seed(0);
  em_module *model = !strcmp(model_name, "cnn")      ? em_small_cnn(1, 28, 28, 10)
                     : !strcmp(model_name, "resnet") ? em_resnet_cifar(20, 1, 10)
                                                     : em_mlp(784, (int[]){1024, 1024}, 2, 10);
  /* Packed on the CPU, then moved: the parameter arena moves whole. */
  if (model && em_parameters(model).n > 0 && dev.kind != EM_CPU &&
      em_module_to(model, dev) != EM_OK) {
    em_module_free(model);
    model = NULL;
  }
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
    if (image) x = em_reshape(x, EM_SHAPE(batch, 1, 28, 28));
    x = em_to(x, dev); /* the same tensors on the CPU */
    y = em_to(y, dev);
    em_zero_grad(opt);
    em_tensor *loss = em_cross_entropy(em_forward(model, x), y);
    if (!loss || em_backward(loss) != EM_OK || em_step(opt) != EM_OK) {
      fprintf(stderr, "ember-train-bench: step %d: %s\n", s, em_last_error());
      return 1;
    }
    /* A host read waits for the device: before the clock starts and at the end (only there, as
     * the peer's loss.item(), so that the GPU runs ahead of the host in between). */
    if (dev.kind == EM_CPU || s == warmup - 1 || s == warmup + steps - 1) {
      em_tensor *h = em_to(loss, EM_DEVICE_CPU);
      if (!h) {
        fprintf(stderr, "ember-train-bench: step %d: %s\n", s, em_last_error());
        return 1;
      }
      last_loss = em_get(h, 0);
    }
    em_scope_end(sc);
  }
  double dt = now_s() - t0;
  printf("ember %s: %d steps of batch %d in %.3f s, final loss %.4f\n", model_name, steps, batch,
         dt, last_loss);
  printf("BENCH suite=train case=%s impl=ember ranks=1 device=%s threads=%d batch=%d "
         "samples_per_s=%.1f step_ms=%.3f\n",
         model_name, device, threads, batch, steps * (double)batch / dt, 1000 * dt / steps);
  free(perm);
  em_optim_free(opt);
  em_module_free(model);
  em_release(images);
  em_release(labels);
  return 0;
}
