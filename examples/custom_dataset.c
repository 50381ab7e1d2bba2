/* custom_dataset.c: your own data through the loader's three hooks, trained data-parallel.
 *
 *   dataset (dl_dataset_new):  sample i of two interleaved spirals, computed on demand
 *   transform (per sample):    jitter the point with Gaussian noise (a fresh draw every epoch)
 *   collate (per batch):       add polar features, x (B, 2) -> (B, 5): x, y, r, sin a, cos a
 *
 * The hooks run on the loader's worker threads, ahead of the training step. An MLP learns to
 * tell the spirals apart; the test set is another 2000 points between the training ones.
 *
 *   custom_dataset [--epochs N] [--noise X]      (ddprun -n 2 custom_dataset ...: every rank
 *                                                  trains on its shard of each epoch) */
#include "ember.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define TURNS 2.0 /* how far the spirals wind: harder as it grows */

typedef struct {
  int64_t n;    /* points */
  double phase; /* 0 for training; 0.5 puts the test points between the training ones */
} spiral_ctx;

static int64_t spiral_len(void *ctx) { return ((spiral_ctx *)ctx)->n; }

/* Sample i: class i % 2; the point at angle t on that class's arm (arms half a turn apart). */
static em_status spiral_get(void *ctx, int64_t i, void *const out[]) {
  const spiral_ctx *c = ctx;
  int64_t cls = i % 2, k = i / 2, per_class = c->n / 2;
  double t = ((double)k + c->phase) / (double)per_class * TURNS * 2 * M_PI;
  double r = 0.1 + t / (TURNS * 2 * M_PI);
  float *x = out[0];
  x[0] = (float)(r * cos(t + (double)cls * M_PI));
  x[1] = (float)(r * sin(t + (double)cls * M_PI));
  *(int64_t *)out[1] = cls;
  return EM_OK;
}

/* Transform: Gaussian jitter of standard deviation *(float *)ctx, from the loader's per-sample
 * generator (seeded by seed, epoch and index: reproducible whatever the workers or ranks). */
static em_status jitter(void *ctx, void *const fields[], const dl_field *spec, int nfields,
                        em_rng *rng, int64_t index) {
  float sigma = *(const float *)ctx, *x = fields[0];
  x[0] += sigma * em_rng_normal(rng);
  x[1] += sigma * em_rng_normal(rng);
  return EM_OK;
}

/* Collate: replaces the stacked x (B, 2) by (B, 5) with the radius and the angle's sine and
 * cosine (tensors made here are not in a scope: the loader owns them). */
static em_status polar(void *ctx, dl_batch *b) {
  em_tensor *x = b->fields[0], *f = em_empty(EM_F32, EM_SHAPE(b->size, 5));
  if (!f) return em_last_status();
  const float *in = em_data_f32(x);
  float *o = em_data_f32(f);
  for (int64_t i = 0; i < b->size; i++) {
    float px = in[2 * i], py = in[2 * i + 1], r = sqrtf(px * px + py * py);
    float *row = o + 5 * i;
    row[0] = px;
    row[1] = py;
    row[2] = r;
    row[3] = r > 0 ? py / r : 0;
    row[4] = r > 0 ? px / r : 1;
  }
  em_release(x);
  b->fields[0] = f;
  return EM_OK;
}

static dl_dataset *spirals(int64_t n, double phase) {
  static const dl_dataset_fns fns = {spiral_len, spiral_get, free};
  const dl_field fields[2] = {{.name = "x", .dtype = EM_F32, .ndim = 1, .shape = {2}},
                              {.name = "y", .dtype = EM_I64, .ndim = 0}};
  spiral_ctx *c = malloc(sizeof *c);
  if (!c) {
    em_set_error(EM_ERR_NOMEM, "spirals: out of memory");
    return NULL;
  }
  *c = (spiral_ctx){n, phase};
  return dl_dataset_new(fields, 2, &fns, c); /* owns c from here, also on failure */
}

static int fail(const char *what) {
  ddp_eprint("custom_dataset: %s: %s\n", what, em_last_error());
  return 1;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"epochs", required_argument, NULL, 'e'}, {"noise", required_argument, NULL, 'n'}, {0}};
  int64_t epochs = 30;
  double noise = 0.02;
  for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
    em_status st = EM_ERR_INVALID; /* an unknown option: getopt_long has said so */
    if (c == 'e') st = em_arg_int("--epochs", optarg, 1, 100000, &epochs);
    if (c == 'n') st = em_arg_num("--noise", optarg, 0, 1, &noise);
    if (st != EM_OK) {
      if (c == 'e' || c == 'n') fprintf(stderr, "custom_dataset: %s\n", em_last_error());
      fprintf(stderr, "usage: custom_dataset [--epochs N] [--noise X]\n");
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "custom_dataset: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (ddp_init(&argc, &argv) != EM_OK) return fail("ddp_init");
  float sigma = (float)noise;
  dl_dataset *train = spirals(4000, 0), *test = spirals(2000, 0.5);
  dl_loader *loader = train ? dl_loader_new(train, &(dl_options){.batch = 50,
                                                                 .shuffle = true,
                                                                 .workers = 1,
                                                                 .seed = 1,
                                                                 .transform = jitter,
                                                                 .transform_ctx = &sigma,
                                                                 .collate = polar})
                            : NULL;
  dl_loader *test_loader =
      test ? dl_loader_new(test, &(dl_options){.batch = 500, .exact = true, .collate = polar})
           : NULL;
  em_manual_seed(0);
  em_module *model = em_mlp(5, (int[]){64, 64}, 2, 2);
  ddp_model *ddp = model ? ddp_wrap(model, NULL) : NULL;
  em_optim *opt = ddp ? em_adam(em_parameters(model), .lr = 0.01) : NULL;
  if (!loader || !test_loader || !opt) return fail("setup");

  double acc = 0;
  for (int64_t ep = 1; ep <= epochs; ep++) {
    double loss_sum = 0;
    int64_t steps = 0;
    for (dl_batch b; dl_next(loader, &b); steps++) {
      em_scope sc = em_scope_begin();
      em_tensor *loss = em_cross_entropy(em_forward(model, b.x), b.y);
      if (!loss || em_zero_grad(opt) != EM_OK || em_backward(loss) != EM_OK ||
          em_step(opt) != EM_OK)
        return fail("training step");
      loss_sum += em_get(loss, 0);
      em_scope_end(sc);
    }
    if (dl_status(loader) != EM_OK) return fail("training data");
    /* test accuracy: each rank counts its exact shard, the counts are summed over the ranks */
    int64_t counts[2] = {0, 0};
    bool prev = em_no_grad_begin();
    for (dl_batch b; dl_next(test_loader, &b);) {
      em_scope sc = em_scope_begin();
      em_tensor *pred = em_argmax(em_forward(model, b.x), 1, false);
      for (int64_t i = 0; pred && i < b.real; i++) counts[0] += em_get(pred, i) == em_get(b.y, i);
      counts[1] += b.real;
      em_scope_end(sc);
    }
    em_no_grad_end(prev);
    coll_buf cb = coll_host_buf(counts, 2, EM_I64);
    if (dl_status(test_loader) != EM_OK ||
        coll_wait(coll_allreduce(ddp_comm(), cb, cb, 2, COLL_SUM), 0) != EM_OK)
      return fail("evaluation");
    acc = (double)counts[0] / (double)counts[1];
    if (ep % 5 == 0 || ep == epochs)
      ddp_print0("epoch %lld: train_loss %.4f (rank 0) test_acc %.4f\n", (long long)ep,
                 loss_sum / (double)steps, acc);
  }
  ddp_print0("RESULT test_acc=%.4f ranks=%d\n", acc, ddp_world_size());
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
