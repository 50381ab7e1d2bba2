/* Fashion-MNIST with an MLP (784-256-128-10) and SGD with momentum: the same program twice.
 * fmnist_single.c trains in one process. fmnist_ddp.c adds three lines (ddp_init, ddp_wrap,
 * ddp_finalize) and trains data-parallel on every rank that ddprun or mpirun starts: the loader
 * then gives each rank its shard of every epoch, and ddp_wrap averages the gradients.
 *
 *   fmnist_single [EPOCHS]
 *   ddprun -n 2 fmnist_ddp [EPOCHS]        (README: "One line makes it distributed")
 *
 * Every process evaluates the whole test set, so both print the same kind of result. */
#include "ember.h"

#include <stdio.h>

static int fail(const char *what) {
  ddp_eprint("fmnist: %s: %s\n", what, em_last_error());
  return 1;
}

int main(int argc, char **argv) {
  int64_t epochs = 2;
  if (argc > 2 || (argc == 2 && em_arg_int("EPOCHS", argv[1], 1, 1000, &epochs) != EM_OK)) {
    fprintf(stderr, "%s\nusage: %s [EPOCHS]\n", argc > 2 ? "too many arguments" : em_last_error(),
            argv[0]);
    return 2;
  }
  dl_dataset *train = dl_fmnist_open(NULL, "train", NULL),
             *test = dl_fmnist_open(NULL, "t10k", NULL);
  if (!train || !test) return fail("data");
  dl_loader *loader =
      dl_loader_new(train, &(dl_options){.batch = 64, .shuffle = true, .workers = 1});
  dl_loader *test_loader =
      dl_loader_new(test, &(dl_options){.batch = 1000, .exact = true, .world = 1});
  em_manual_seed(0);
  em_module *model = em_mlp(784, (int[]){256, 128}, 2, 10);
  if (!loader || !test_loader || !model) return fail("setup");
  em_optim *opt = em_sgd(em_parameters(model), .lr = 0.02, .momentum = 0.9);
  double acc = 0;
  for (int64_t ep = 1; ep <= epochs; ep++) {
    for (dl_batch b; dl_next(loader, &b);) {
      em_scope sc = em_scope_begin();
      em_tensor *loss = em_cross_entropy(em_forward(model, b.x), b.y);
      if (!loss || em_zero_grad(opt) != EM_OK || em_backward(loss) != EM_OK ||
          em_step(opt) != EM_OK)
        return fail("training step");
      em_scope_end(sc);
    }
    int64_t correct = 0;
    em_module_eval(model);
    for (dl_batch b; dl_next(test_loader, &b);) {
      em_scope sc = em_scope_begin();
      em_tensor *pred = em_argmax(em_forward(model, b.x), 1, false);
      for (int64_t i = 0; pred && i < b.real; i++) correct += em_get(pred, i) == em_get(b.y, i);
      em_scope_end(sc);
    }
    em_module_train(model, true);
    acc = (double)correct / (double)dl_dataset_len(test);
    ddp_print0("epoch %lld: test_acc %.4f on %d rank(s)\n", (long long)ep, acc, ddp_world_size());
  }
  ddp_print0("RESULT test_acc=%.4f ranks=%d\n", acc, ddp_world_size());
  em_optim_free(opt);
  em_module_free(model);
  dl_loader_free(loader);
  dl_loader_free(test_loader);
  dl_dataset_close(train);
  dl_dataset_close(test);
  return 0;
}
