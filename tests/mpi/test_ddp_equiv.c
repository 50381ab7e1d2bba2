/* test_ddp_equiv.c: ddp_wrap on W ranks trains to the same parameters as one process.
 *
 *   mpirun.sh NP LIMIT test_ddp_equiv --model mlp|cnn [--compress none|bf16|fp16] [--tol X]
 *                                     [--steps N] [--bucket-mb X] [--hierarchical yes|no]
 *
 * Every rank first trains the single-process reference itself: an unwrapped copy of the model
 * (same seed) on the whole global batch of 64 samples per step, SGD lr 0.05, momentum 0.9. Only
 * then does it build the model again (same seed), wrap it, and train it on its own slice of the
 * same batches (du_share: 32/32 on 2 ranks, 22/21/21 on 3). The reference is trained before
 * ddp_wrap because the reducer observes every backward pass of the process.
 *
 * The loss the reference minimises. DDP averages the ranks' gradients of their per-rank mean
 * losses, so it minimises (1/W) sum_r (1/B_r) sum_{i in r} CE_i: sample i of rank r weighs
 * 1/(W * B_r). With an even split that is the plain mean over the 64 samples; with 22/21/21 it
 * is not, and the reference uses those weights (cross-entropy without reduction, times the
 * weights, summed).
 *
 * Tolerances (||a-b||/||b||, over the whole model and per parameter): f32 all-reduce (sum then
 * divide, in another order than the reference's single matmul) 1e-5 after 20 steps, where ~2e-8
 * is measured; bf16 compression (8-bit mantissa: 2^-9 relative per element and step) 1e-2,
 * fp16 (11 bits) 2e-3, and 5x that for a single parameter (a small bias gets no averaging over
 * many elements: 1.6e-2 measured on the CNN's 3.bias with bf16, 1.4e-3 overall). The seed
 * matters for the CNN: with seed 1234 on 3 ranks a max-pool/ReLU decision flips between steps 16
 * and 18 (a tie broken differently by 1e-8 rounding), and the difference jumps from 2e-8 to
 * 1e-5; that is chaos in the model, not the reducer, so seed 1 (no flip in 20 steps) is used.
 * Also checked: the parameters moved (the test is not vacuous), they are bit-identical on all
 * ranks, and the statistics count the steps. --hierarchical yes|no also checks that the
 * communicator did (coll_stats.hierarchical > 0) or did not all-reduce hierarchically: the
 * multi-node runs (tests/cluster/netns.cmake) use it to see the path they claim to test. */
#include "ddp_util.h"

static em_module *build(const char *model) {
  if (!strcmp(model, "cnn")) return em_small_cnn(1, 12, 12, DU_CLASSES);
  return em_mlp(20, (int[]){64, 32}, 2, DU_CLASSES);
}

/* The global batch of a step: x (64, 20) or (64, 1, 12, 12), y (64). */
static em_tensor *batch_x(const char *model, int step) {
  if (!strcmp(model, "cnn")) return du_inputs(7, step, 4, (int64_t[]){DU_GLOBAL_BATCH, 1, 12, 12});
  return du_inputs(7, step, 2, (int64_t[]){DU_GLOBAL_BATCH, 20});
}

int main(int argc, char **argv) {
  const char *model = "mlp", *compress = "none", *hier = NULL;
  double tol = -1, bucket_mb = 0;
  int steps = 20, seed = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--model"))
      model = argv[i + 1];
    else if (!strcmp(argv[i], "--compress"))
      compress = argv[i + 1];
    else if (!strcmp(argv[i], "--tol"))
      tol = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--steps"))
      steps = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--bucket-mb"))
      bucket_mb = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--seed"))
      seed = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--hierarchical") &&
             (!strcmp(argv[i + 1], "yes") || !strcmp(argv[i + 1], "no")))
      hier = argv[i + 1];
    else {
      fprintf(stderr, "test_ddp_equiv: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  ddp_compression comp = !strcmp(compress, "bf16")   ? DDP_COMPRESS_BF16
                         : !strcmp(compress, "fp16") ? DDP_COMPRESS_FP16
                                                     : DDP_COMPRESS_NONE;
  if (tol < 0) tol = comp == DDP_COMPRESS_BF16 ? 1e-2 : comp == DDP_COMPRESS_FP16 ? 2e-3 : 1e-5;
  CHECK_OK(du_init(&argc, &argv));
  int W = ddp_world_size(), rank = ddp_rank(), off, len;
  du_share(DU_GLOBAL_BATCH, W, rank, &off, &len);

  /* Per-sample weights of the reference loss: 1 / (W * B_r) for the samples of rank r. */
  float wts[DU_GLOBAL_BATCH];
  for (int r = 0; r < W; r++) {
    int o, l;
    du_share(DU_GLOBAL_BATCH, W, r, &o, &l);
    for (int i = o; i < o + l; i++) wts[i] = 1.0f / (float)(W * l);
  }

  /* The single-process reference. */
  em_manual_seed((uint64_t)seed);
  em_module *ref = build(model);
  int64_t n0 = 0, n1 = 0, n2 = 0;
  float *init = du_snapshot(ref, &n0);
  em_optim *ropt = em_sgd(em_parameters(ref), .lr = 0.05, .momentum = 0.9);
  CHECK(ref && init && ropt, "reference: %s", em_last_error());
  for (int s = 0; s < steps && ropt; s++) {
    em_scope sc = em_scope_begin();
    em_tensor *x = batch_x(model, s), *y = du_labels(7, s, DU_GLOBAL_BATCH, DU_CLASSES);
    em_tensor *w = em_from_data(EM_F32, 1, (int64_t[]){DU_GLOBAL_BATCH}, wts);
    em_tensor *per =
        em_cross_entropy_ex(em_forward(ref, x), y, EM_REDUCE_NONE, EM_IGNORE_INDEX_DEFAULT);
    em_tensor *loss = em_sum(em_mul(per, w), 0, NULL, false);
    CHECK(loss != NULL, "reference step %d: %s", s, em_last_error());
    if (loss) CHECK_OK(em_backward(loss));
    CHECK_OK(em_step(ropt));
    CHECK_OK(em_zero_grad(ropt));
    em_scope_end(sc);
  }
  float *want = du_snapshot(ref, &n1);
  em_optim_free(ropt);
  em_module_free(ref);

  /* The same training, data-parallel. */
  em_manual_seed((uint64_t)seed);
  em_module *m = build(model);
  ddp_options o = {.bucket_cap_mb = bucket_mb, .compression = comp};
  ddp_model *d = ddp_wrap(m, &o);
  CHECK(d != NULL, "ddp_wrap: %s", em_last_error());
  em_optim *opt = em_sgd(em_parameters(m), .lr = 0.05, .momentum = 0.9);
  double t0 = chk_now();
  for (int s = 0; s < steps && d && opt; s++) {
    em_scope sc = em_scope_begin();
    em_tensor *x = batch_x(model, s), *y = du_labels(7, s, DU_GLOBAL_BATCH, DU_CLASSES);
    em_tensor *xr = em_narrow(x, 0, off, len), *yr = em_narrow(y, 0, off, len);
    em_tensor *loss = em_cross_entropy(em_forward(m, xr), yr);
    CHECK(loss != NULL, "ddp step %d: %s", s, em_last_error());
    if (loss) CHECK_OK(em_backward(loss));
    CHECK_OK(em_step(opt));
    CHECK_OK(em_zero_grad(opt));
    em_scope_end(sc);
  }
  double took = chk_now() - t0;
  float *got = du_snapshot(m, &n2);
  CHECK(n0 == n1 && n1 == n2 && got && want, "arena sizes %lld %lld %lld", (long long)n0,
        (long long)n1, (long long)n2);
  if (got && want && init && n0 == n2) {
    char what[128];
    snprintf(what, sizeof what, "%s, %d ranks (this one %d samples), compression %s, %d steps",
             model, W, len, compress, steps);
    /* Compressed: a small tensor (a bias) has no averaging over many elements: 5x. */
    double ptol = comp == DDP_COMPRESS_NONE ? tol : 5 * tol;
    double rel = DU_CHECK_CLOSE(m, want, tol, ptol, what);
    double moved = du_rel(want, init, n0);
    CHECK(moved > 1e-3, "%s: training moved the parameters by only %.3g", what, moved);
    CHECK(du_same_on_all_ranks(got, n2), "%s: parameters differ across ranks", what);
    ddp_stats st = ddp_get_stats(d);
    CHECK(st.steps == steps, "stats.steps %lld, want %d", (long long)st.steps, steps);
    if (hier) {
      coll_stats cs = coll_get_stats(ddp_comm());
      CHECK(!strcmp(hier, "yes") ? cs.hierarchical > 0 : cs.hierarchical == 0,
            "coll_stats.hierarchical %lld: want %s", (long long)cs.hierarchical,
            !strcmp(hier, "yes") ? "> 0" : "0");
      if (rank == 0)
        printf("test_ddp_equiv: %lld hierarchical all-reduces (shared memory + MPI)\n",
               (long long)cs.hierarchical);
    }
    if (rank == 0)
      printf("test_ddp_equiv: %s: rel diff %.3g (tol %.1g), moved %.3g, %d buckets, %.0f ms\n",
             what, rel, tol, moved, st.n_buckets, took * 1e3);
  }
  free(init);
  free(want);
  free(got);
  em_optim_free(opt);
  ddp_free(d);
  em_module_free(m);
  return chk_finish("test_ddp_equiv");
}
