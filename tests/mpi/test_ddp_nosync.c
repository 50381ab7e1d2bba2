/* test_ddp_nosync.c: gradient accumulation with ddp_no_sync equals the full-batch step.
 *
 *   mpirun.sh NP LIMIT test_ddp_nosync [--branches]
 *
 * Each rank splits its share of the 64-sample global batch into 4 micro-batches; the first 3
 * backward passes run under ddp_no_sync(d, true), the 4th synced; each micro-batch's loss is
 * scaled by 1/4. The gradient is then avg_r sum_k (1/4) mean_k = the global mean, so after 5 SGD
 * steps (momentum 0.9) the parameters must match (1e-5 relative) one process trained on:
 *   default     the MLP, one backward over the full 64-sample batch per step;
 *   --branches  the two-head model, micro-batch k using head a (k even) or b (k odd), so the set
 *               of used parameters differs between micro-batches and the synced pass does not
 *               reach head a at all; the reference accumulates the same 4 x W micro-batch
 *               losses (each scaled by 1/(4 W)) in one process.
 * Also: no communication during no_sync passes (the gradients still differ across ranks after
 * the 3rd, they are equal after the 4th; stats.steps counts synced passes only), and
 * ddp_no_sync refuses to change during a backward pass (EM_ERR_STATE, from a grad-ready hook). */
#include "ddp_util.h"

enum { STEPS = 5, MICRO = 4 };

static bool branches;

static em_module *build(void) {
  if (branches) return du_two_head(3);
  em_manual_seed(3);
  return em_mlp(20, (int[]){32, 32}, 2, DU_CLASSES);
}

/* Micro-batch k of the samples [off, off + len): its first sample and size. */
static void micro(int off, int len, int k, int *mo, int *ml) {
  *mo = off + k * len / MICRO;
  *ml = off + (k + 1) * len / MICRO - *mo;
}

static em_status micro_backward(em_module *m, em_tensor *x, em_tensor *y, int o, int l, int k,
                                float scale) {
  if (branches) du_set_heads(m, k % 2 ? DU_HEAD_B : DU_HEAD_A);
  em_tensor *loss = em_cross_entropy(em_forward(m, em_narrow(x, 0, o, l)), em_narrow(y, 0, o, l));
  return em_backward(em_mul_scalar(loss, scale));
}

typedef struct {
  ddp_model *d;
  em_status got;
  int calls;
} hook_probe;

static void try_no_sync(em_tensor *leaf, void *ctx) {
  (void)leaf;
  hook_probe *h = ctx;
  h->calls++;
  h->got = ddp_no_sync(h->d, true);
}

int main(int argc, char **argv) {
  branches = argc > 1 && !strcmp(argv[1], "--branches");
  CHECK_OK(du_init(&argc, &argv));
  int W = ddp_world_size(), rank = ddp_rank();
  const int64_t xshape[2] = {DU_GLOBAL_BATCH, 20};

  /* Reference, before any wrap. */
  em_module *ref = build();
  int64_t n0 = 0, n1 = 0;
  em_optim *ropt = em_sgd(em_parameters(ref), .lr = 0.05, .momentum = 0.9);
  CHECK(ref && ropt, "reference: %s", em_last_error());
  for (int s = 0; s < STEPS && ropt; s++) {
    em_scope sc = em_scope_begin();
    em_tensor *x = du_inputs(11, s, 2, xshape), *y = du_labels(11, s, DU_GLOBAL_BATCH, 10);
    if (!branches) {
      CHECK_OK(em_backward(em_cross_entropy(em_forward(ref, x), y)));
    } else {
      for (int r = 0; r < W; r++) {
        int off, len, mo, ml;
        du_share(DU_GLOBAL_BATCH, W, r, &off, &len);
        for (int k = 0; k < MICRO; k++) {
          micro(off, len, k, &mo, &ml);
          CHECK_OK(micro_backward(ref, x, y, mo, ml, k, 1.0f / (float)(MICRO * W)));
        }
      }
    }
    CHECK_OK(em_step(ropt));
    CHECK_OK(em_zero_grad(ropt));
    em_scope_end(sc);
  }
  float *want = du_snapshot(ref, &n0);
  em_optim_free(ropt);
  em_module_free(ref);

  em_module *m = build();
  ddp_model *d = ddp_wrap(m, &(ddp_options){.bucket_cap_mb = 0.002});
  CHECK(d != NULL, "ddp_wrap: %s", em_last_error());
  em_optim *opt = em_sgd(em_parameters(m), .lr = 0.05, .momentum = 0.9);
  int off, len;
  du_share(DU_GLOBAL_BATCH, W, rank, &off, &len);
  for (int s = 0; s < STEPS && d && opt; s++) {
    em_scope sc = em_scope_begin();
    em_tensor *x = du_inputs(11, s, 2, xshape), *y = du_labels(11, s, DU_GLOBAL_BATCH, 10);
    for (int k = 0; k < MICRO; k++) {
      int mo, ml;
      micro(off, len, k, &mo, &ml);
      CHECK_OK(ddp_no_sync(d, k < MICRO - 1));
      CHECK_OK(micro_backward(m, x, y, mo, ml, k, 1.0f / MICRO));
      if (s == 0 && k >= MICRO - 2) {
        float *g = du_grads(m);
        bool same = g && du_same_on_all_ranks(g, em_parameters(m).arena_numel);
        CHECK(same == (k == MICRO - 1), "micro-batch %d: gradients %s across ranks", k,
              same ? "equal (communicated under no_sync?)" : "differ after the synced pass");
        free(g);
      }
    }
    CHECK(ddp_get_stats(d).steps == s + 1, "stats.steps %lld after step %d",
          (long long)ddp_get_stats(d).steps, s);
    CHECK_OK(em_step(opt));
    CHECK_OK(em_zero_grad(opt));
    em_scope_end(sc);
  }
  float *got = du_snapshot(m, &n1);
  CHECK(got && want && n0 == n1, "snapshots %lld %lld", (long long)n0, (long long)n1);
  if (got && want && n0 == n1) {
    DU_CHECK_CLOSE(m, want, 1e-5, 1e-5,
                   branches ? "no_sync, two heads by micro-batch" : "no_sync, MLP vs full batch");
    CHECK(du_same_on_all_ranks(got, n1), "parameters differ across ranks");
  }

  /* ddp_no_sync during a backward pass is refused (and changes nothing). */
  if (d) {
    hook_probe h = {d, EM_OK, 0};
    em_tensor *p0 = em_parameters(m).t[0];
    int id = em_tensor_on_grad_ready(p0, try_no_sync, &h);
    em_scope sc = em_scope_begin();
    em_tensor *x = du_inputs(11, 99, 2, xshape), *y = du_labels(11, 99, DU_GLOBAL_BATCH, 10);
    if (branches) du_set_heads(m, DU_HEAD_BOTH);
    int64_t before = ddp_get_stats(d).steps;
    CHECK_OK(em_backward(
        em_cross_entropy(em_forward(m, em_narrow(x, 0, off, len)), em_narrow(y, 0, off, len))));
    em_scope_end(sc);
    em_tensor_remove_hook(p0, id);
    CHECK(h.calls == 1 && h.got == EM_ERR_STATE, "ddp_no_sync in a grad hook: %d calls, %s",
          h.calls, em_status_str(h.got));
    CHECK(ddp_get_stats(d).steps == before + 1, "the pass was not synced");
  }
  free(want);
  free(got);
  em_optim_free(opt);
  ddp_free(d);
  em_module_free(m);
  return chk_finish(branches ? "test_ddp_nosync --branches" : "test_ddp_nosync");
}
