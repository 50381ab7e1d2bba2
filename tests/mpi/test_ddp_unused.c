/* test_ddp_unused.c: parameters that a backward pass does not reach, on some ranks or on all.
 *
 *   mpirun.sh NP LIMIT test_ddp_unused --case one|all
 *
 * The two-head model (ddp_util.h). Each rank trains on its share of the 64-sample batch.
 *   one  rank 0 uses both heads, the other ranks head a only. Head b's gradient must be the
 *        average with zeros from the ranks that skipped it ((1/W) g_0), and no step may stall;
 *        checked against the sum over ranks of the local gradients (each scaled by 1/W)
 *        computed in one process before wrapping, for the first step (1e-6 relative) and the
 *        parameters after 4 steps (1e-5).
 *   all  every rank uses head a only. Head b's gradient is set to 0.25 + rank before backward
 *        and must come back unchanged, bit for bit (as PyTorch leaves an unused .grad); the
 *        others must be averaged. Then a pass that uses both heads gives head b a gradient
 *        again (the used flags are per pass), equal on all ranks. */
#include "ddp_util.h"

enum { STEPS = 4 };

static du_heads heads_of(bool one, int r) { return one && r == 0 ? DU_HEAD_BOTH : DU_HEAD_A; }

static em_status local_backward(em_module *m, int s, int r, int W, float scale) {
  int off, len;
  du_share(DU_GLOBAL_BATCH, W, r, &off, &len);
  em_tensor *x = du_inputs(5, s, 2, (int64_t[]){DU_GLOBAL_BATCH, 20});
  em_tensor *y = du_labels(5, s, DU_GLOBAL_BATCH, DU_CLASSES);
  em_tensor *loss =
      em_cross_entropy(em_forward(m, em_narrow(x, 0, off, len)), em_narrow(y, 0, off, len));
  return em_backward(scale == 1.0f ? loss : em_mul_scalar(loss, scale));
}

int main(int argc, char **argv) {
  bool one = argc == 3 && !strcmp(argv[2], "one");
  CHECK_OK(du_init(&argc, &argv));
  int W = ddp_world_size(), rank = ddp_rank();
  int64_t n = 0, nb = 0, boff = 0;

  /* Reference before wrapping: gradient of step 0 and parameters after STEPS steps. */
  em_module *ref = du_two_head(8);
  em_optim *ropt = em_sgd(em_parameters(ref), .lr = 0.05, .momentum = 0.9);
  float *want_g = NULL;
  for (int s = 0; s < STEPS && ropt; s++) {
    em_scope sc = em_scope_begin();
    for (int r = 0; r < W; r++) {
      du_set_heads(ref, heads_of(one, r));
      CHECK_OK(local_backward(ref, s, r, W, 1.0f / (float)W));
    }
    if (s == 0) want_g = du_grads(ref);
    CHECK_OK(em_step(ropt));
    CHECK_OK(em_zero_grad(ropt));
    em_scope_end(sc);
  }
  float *want_p = du_snapshot(ref, &n);
  em_optim_free(ropt);
  em_module_free(ref);

  em_module *m = du_two_head(8);
  ddp_model *d = ddp_wrap(m, &(ddp_options){.bucket_cap_mb = 0.001});
  CHECK(d != NULL, "ddp_wrap: %s", em_last_error());
  em_optim *opt = em_sgd(em_parameters(m), .lr = 0.05, .momentum = 0.9);
  du_param_range(m, "b.weight", &boff, &nb);
  CHECK(nb == 16 * DU_CLASSES, "b.weight has %lld elements", (long long)nb);
  em_params p = em_parameters(m);
  for (int s = 0; s < STEPS && d && opt && want_g; s++) {
    em_scope sc = em_scope_begin();
    du_set_heads(m, heads_of(one, rank));
    float mark = 0.25f + (float)rank;
    if (!one) /* a known value in head b's gradient (a view into the bucket buffer) */
      for (int i = 0; i < p.n; i++)
        if (!strncmp(p.names[i], "b.", 2))
          for (int64_t j = 0; j < p.numel[i]; j++) em_data_f32(p.t[i]->grad)[j] = mark;
    double t0 = chk_now();
    CHECK_OK(local_backward(m, s, rank, W, 1.0f));
    CHECK(chk_now() - t0 < 10, "step %d: backward took %.1f s", s, chk_now() - t0);
    float *g = du_grads(m);
    if (g && s == 0 && one) {
      DU_CHECK_CLOSE_G(g, want_g, p, 1e-6, "case one: step 0 gradients");
    } else if (g && !one) {
      for (int i = 0; i < p.n; i++) {
        if (strncmp(p.names[i], "b.", 2)) continue;
        int64_t bad = 0;
        for (int64_t j = 0; j < p.numel[i]; j++) bad += g[p.offset[i] + j] != mark;
        CHECK(bad == 0,
              "case all, step %d: '%s': %lld of %lld gradient elements changed from "
              "%g (unused on every rank: must stay untouched)",
              s, p.names[i], (long long)bad, (long long)p.numel[i], (double)mark);
      }
      if (s == 0) {
        /* head a and the trunk: averaged (compare without head b) */
        for (int i = 0; i < p.n; i++)
          if (!strncmp(p.names[i], "b.", 2))
            memset(g + p.offset[i], 0, (size_t)p.numel[i] * sizeof *g);
        DU_CHECK_CLOSE_G(g, want_g, p, 1e-6, "case all: step 0 gradients of trunk and head a");
      }
      CHECK_OK(em_zero_grad(opt)); /* do not step with the marks (they differ across ranks) */
    }
    free(g);
    CHECK_OK(em_step(opt));
    CHECK_OK(em_zero_grad(opt));
    em_scope_end(sc);
  }
  float *got = du_snapshot(m, &n);
  if (one && got && want_p) DU_CHECK_CLOSE(m, want_p, 1e-5, 1e-5, "case one: after 4 steps");
  CHECK(got && du_same_on_all_ranks(got, n), "parameters differ across ranks");
  CHECK(ddp_get_stats(d).steps == STEPS, "stats.steps %lld", (long long)ddp_get_stats(d).steps);

  if (!one && d) { /* used again: head b gets an averaged gradient */
    em_scope sc = em_scope_begin();
    du_set_heads(m, DU_HEAD_BOTH);
    CHECK_OK(local_backward(m, 50, rank, W, 1.0f));
    float *g = du_grads(m);
    double norm = 0;
    for (int64_t j = 0; g && j < nb; j++) norm += fabs((double)g[boff + j]);
    CHECK(norm > 0, "head b used again: its gradient is zero");
    CHECK(g && du_same_on_all_ranks(g, em_parameters(m).arena_numel),
          "head b used again: gradients differ across ranks");
    free(g);
    em_scope_end(sc);
  }
  free(want_g);
  free(want_p);
  free(got);
  em_optim_free(opt);
  ddp_free(d);
  em_module_free(m);
  return chk_finish(one ? "test_ddp_unused --case one" : "test_ddp_unused --case all");
}
