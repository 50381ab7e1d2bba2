/* netns_train.c: a data-parallel training loop that keeps the ranks inside collectives, for the
 * fault tests of the netns cluster (tests/cluster/test_netns.sh): one rank is stopped, or a link
 * is taken down, while it runs.
 *
 *   netns_train [--seconds S] [--ready-after N]
 *
 * An MLP 20-64-32-10 under ddp_wrap, synthetic batches of 16 samples per rank, SGD; a step every
 * millisecond or so (each step sleeps 1 ms, so that 4 ranks on 2 cores leave the machine some
 * room). After N steps (default 20) rank 0 prints "netns_train: training, step N, W ranks" so
 * that the test knows the collectives are running. The loop ends after S seconds (default 60):
 * the bound for a run in which nothing goes wrong, which then exits 0 with "netns_train: done". */
#include <ember.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int fail(const char *what) {
  fprintf(stderr, "netns_train: %s: %s\n", what, em_last_error());
  if (ddp_initialized()) coll_abort(ddp_comm(), "netns_train failed");
  return 1;
}

int main(int argc, char **argv) {
  double seconds = 60;
  int ready_after = 20;
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 < argc && !strcmp(argv[i], "--seconds"))
      seconds = atof(argv[i + 1]);
    else if (i + 1 < argc && !strcmp(argv[i], "--ready-after"))
      ready_after = atoi(argv[i + 1]);
    else {
      fprintf(stderr, "usage: netns_train [--seconds S] [--ready-after N]\n");
      return 2;
    }
  }
  if (ddp_init(&argc, &argv) != EM_OK) return fail("ddp_init");
  em_set_num_threads(1);
  int rank = ddp_rank(), world = ddp_world_size();
  em_manual_seed(1);
  em_module *model = em_mlp(20, (int[]){64, 32}, 2, 10);
  ddp_model *ddp = model ? ddp_wrap(model, NULL) : NULL;
  if (!ddp) return fail("ddp_wrap");
  em_optim *opt = em_sgd(em_parameters(model), .lr = 0.01);
  if (!opt) return fail("em_sgd");
  em_rng g = em_rng_new(1000 + (uint64_t)rank);
  int64_t y[16];
  double t0 = now_s();
  long step = 0;
  for (; now_s() - t0 < seconds; step++) {
    em_scope sc = em_scope_begin();
    for (int i = 0; i < 16; i++) y[i] = (int64_t)(em_rng_next_u64(&g) % 10);
    em_tensor *x = em_rand_uniform(2, (int64_t[]){16, 20}, -1.0f, 1.0f, &g);
    em_tensor *loss = em_cross_entropy(em_forward(model, x), em_from_data(EM_I64, 1,
                                                                         (int64_t[]){16}, y));
    if (!loss || em_backward(loss) != EM_OK || em_step(opt) != EM_OK ||
        em_zero_grad(opt) != EM_OK)
      return fail("training step");
    em_scope_end(sc);
    if (rank == 0 && step + 1 == ready_after) {
      printf("netns_train: training, step %d, %d ranks\n", ready_after, world);
      fflush(stdout);
    }
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  if (rank == 0) printf("netns_train: done, %ld steps in %.0f s\n", step, seconds);
  em_optim_free(opt);
  ddp_free(ddp);
  em_module_free(model);
  return ddp_finalize() == EM_OK ? 0 : 1;
}
