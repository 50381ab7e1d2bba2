/* test_ddp_order.c: buckets rebuilt in the order gradients become ready (ddp.h, "Bucket order").
 *
 *   mpirun.sh NP LIMIT test_ddp_order
 *
 * The model registers its layers in another order than it applies them:
 *
 *   registered   a = Linear(16, 10), b = Linear(16, 16), c = Linear(20, 16), d = Linear(16, 10)
 *   parameters   0 a.weight  1 a.bias  2 b.weight  3 b.bias  4 c.weight  5 c.bias  6 d.weight
 *                7 d.bias
 *   chain        y = a(relu(b(h))),  h = relu(c(x))           (d unused)
 *   both         y = a(relu(b(h))) + d(h)
 *
 * The oracle, by hand. Gradient sizes padded to 16 floats: a.weight 160, b.weight 256, c.weight
 * 320, d.weight 160, every bias 16. The cap is 0.0012 MB = 314 floats: a bucket takes parameters
 * until the next would pass the cap.
 *   at wrap, reverse registration order 7 6 5 4 3 2 1 0:   {7 6 5} {4} {3 2 1} {0}
 *   after the first synced pass, rank 0 running chain: backward reaches the layers in the reverse
 *   of the order they were applied, a, b, c, and a linear layer's weight is ready before its bias;
 *   d did not become ready on rank 0, so it goes last, in reverse registration order:
 *   order 0 1 2 3 4 5 7 6:                                 {0 1} {2 3} {4} {5 7 6}
 * In that pass the other ranks run both (their own order would begin 6 7 0 1): every rank must
 * show rank 0's plan. Later steps run both on every rank, another order: the plan must stay.
 *
 * A step is 4 micro-batches of the rank's share, each loss scaled by 1/4, with no zeroing in
 * between: k = 0 and 2 under ddp_no_sync, k = 1 and 3 synced. The rebuild (end of step 0, k = 1)
 * so falls between accumulations: a gradient averaged before it must be carried into the new
 * buffer, and k = 2, 3 must accumulate on top of it. The reference is one unwrapped process that
 * runs every rank's micro-batches with the rank's mode, each loss scaled by 1/(4 W).
 *
 * Checks, for the default (rebuilt) run:
 *   plan      the oracle's plan at wrap, after step 0's k = 0 (no_sync does not rebuild), after
 *             k = 1, and after the last step, on every rank; each bucket's size is the sum of
 *             its parameters' padded sizes; in the gradient buffer each parameter's .grad starts
 *             where the one before it in the plan ends (the memory was re-laid out, not only the
 *             query)
 *   values    gradients after step 0's k = 1 (right after the rebuild) and k = 3 equal the
 *             reference's (1e-6 relative), parameters after 5 steps too (1e-5), equal on all ranks
 *   repeat    a second run gives bit-identical parameters
 * and with static_bucket_order: the plan at wrap stays after every step, the parameters match the
 * reference, and on 2 ranks they equal the rebuilt run's bit for bit (each element's average is
 * (a + b) / 2 whatever the bucket layout). */
#include "ddp_util.h"

enum { STEPS = 5, MICRO = 4, IN = 20 };

#define CAP_MB 0.0012
#define PLAN_AT_WRAP "7 6 5 | 4 | 3 2 1 | 0"
#define PLAN_OBSERVED "0 1 | 2 3 | 4 | 5 7 6"

typedef enum { CHAIN, BOTH } mode;
typedef struct {
  mode m;
} rev_ctx;

static em_tensor *rev_forward(em_module *m, em_tensor *x) {
  rev_ctx *c = em_module_ctx(m);
  em_module *a = em_module_child_at(m, 0), *b = em_module_child_at(m, 1);
  em_module *cc = em_module_child_at(m, 2), *d = em_module_child_at(m, 3);
  em_tensor *h = em_relu(em_forward(cc, x));
  em_tensor *y = em_forward(a, em_relu(em_forward(b, h)));
  return c->m == CHAIN ? y : em_add(y, em_forward(d, h));
}

static em_module *build(void) {
  rev_ctx *c = calloc(1, sizeof *c);
  em_module *m = c ? em_module_new("Reversed", rev_forward, c, free) : NULL;
  if (!m) return NULL;
  em_manual_seed(17);
  const char *names[4] = {"a", "b", "c", "d"};
  int in[4] = {16, 16, IN, 16}, out[4] = {DU_CLASSES, 16, 16, DU_CLASSES};
  for (int i = 0; i < 4; i++)
    if (em_module_add_child(m, names[i], em_linear_new(in[i], out[i], true)) != EM_OK) {
      em_module_free(m);
      return NULL;
    }
  return m;
}

/* Step 0: rank 0 chain, the others both; later steps: both everywhere. */
static mode mode_of(int step, int rank) { return step == 0 && rank == 0 ? CHAIN : BOTH; }

/* Micro-batch k of the samples [off, off + len): its first sample and size. */
static void micro(int off, int len, int k, int *mo, int *ml) {
  *mo = off + k * len / MICRO;
  *ml = off + (k + 1) * len / MICRO - *mo;
}

/* Backward of micro-batch k of rank r's share at step s, loss scaled. */
static em_status micro_backward(em_module *m, int s, int r, int k, float scale) {
  int W = ddp_world_size(), off, len, mo, ml;
  du_share(DU_GLOBAL_BATCH, W, r, &off, &len);
  micro(off, len, k, &mo, &ml);
  ((rev_ctx *)em_module_ctx(m))->m = mode_of(s, r);
  em_tensor *x = du_inputs(13, s, 2, (int64_t[]){DU_GLOBAL_BATCH, IN});
  em_tensor *y = du_labels(13, s, DU_GLOBAL_BATCH, DU_CLASSES);
  em_tensor *loss =
      em_cross_entropy(em_forward(m, em_narrow(x, 0, mo, ml)), em_narrow(y, 0, mo, ml));
  return em_backward(em_mul_scalar(loss, scale));
}

typedef struct {
  float *g_rebuild; /* step 0's gradient after micro-batch 1 of every rank */
  float *g_step0;   /* step 0's whole gradient */
  float *params;    /* after STEPS */
  int64_t n;
} reference;

static reference reference_run(void) {
  reference ref = {0};
  em_module *m = build();
  em_optim *opt = m ? em_sgd(em_parameters(m), .lr = 0.05, .momentum = 0.9) : NULL;
  CHECK(m && opt, "reference: %s", em_last_error());
  float scale = 1.0f / (float)(MICRO * ddp_world_size());
  for (int s = 0; s < STEPS && opt; s++) {
    em_scope sc = em_scope_begin();
    for (int k = 0; k < MICRO; k++) {
      for (int r = 0; r < ddp_world_size(); r++) CHECK_OK(micro_backward(m, s, r, k, scale));
      if (s == 0 && k == 1) ref.g_rebuild = du_grads(m);
    }
    if (s == 0) ref.g_step0 = du_grads(m);
    CHECK_OK(em_step(opt));
    CHECK_OK(em_zero_grad(opt));
    em_scope_end(sc);
  }
  ref.params = m ? du_snapshot(m, &ref.n) : NULL;
  em_optim_free(opt);
  em_module_free(m);
  return ref;
}

/* d's plan as text: parameter indices, buckets separated by " | ". Also checks each bucket's size
 * against its parameters' padded sizes. */
static void plan_str(const ddp_model *d, em_module *m, char *buf, size_t n) {
  em_params p = em_parameters(m);
  size_t used = 0;
  buf[0] = 0;
  int idx[16];
  for (int k = 0; used < n; k++) {
    int c = ddp_bucket_params(d, k, idx, 16);
    if (c < 0) break;
    int64_t sum = 0;
    for (int j = 0; j < c && j < 16; j++) {
      sum += em_arena_align(p.numel[idx[j]]);
      used += (size_t)snprintf(buf + used, n - used, "%s%d", j ? " " : k ? " | " : "", idx[j]);
      if (used >= n) break;
    }
    CHECK(c <= 16 && ddp_bucket_numel(d, k, NULL) == sum,
          "bucket %d: %lld floats, its %d parameters take %lld", k,
          (long long)ddp_bucket_numel(d, k, NULL), c, (long long)sum);
  }
}

/* The plan is `want`, and the gradient memory is laid out by it. */
static void check_plan(const ddp_model *d, em_module *m, const char *want, const char *when) {
  char got[256];
  plan_str(d, m, got, sizeof got);
  CHECK(!strcmp(got, want), "%s: bucket plan %s, want %s", when, got, want);
  CHECK(du_all(!strcmp(got, want)), "%s: the plan differs on some rank", when);
  em_params p = em_parameters(m);
  int idx[16], prev = -1;
  for (int k = 0, c; (c = ddp_bucket_params(d, k, idx, 16)) >= 0; k++)
    for (int j = 0; j < c && j < 16; j++) {
      const em_tensor *g = p.t[idx[j]]->grad;
      if (prev >= 0) {
        const em_tensor *pg = p.t[prev]->grad;
        bool next = g && pg && em_shares_storage(g, pg) &&
                    em_data_f32(g) == em_data_f32(pg) + em_arena_align(p.numel[prev]);
        CHECK(next, "%s: '%s'.grad does not follow '%s'.grad in the gradient buffer", when,
              p.names[idx[j]], p.names[prev]);
      }
      prev = idx[j];
    }
}

/* Trains the model data-parallel, checking the plan as it goes and the values against ref (NULL:
 * no value checks); returns its parameters (malloc'd). */
static float *ddp_run(const reference *ref, bool static_order, int64_t *n) {
  int W = ddp_world_size(), rank = ddp_rank();
  em_module *m = build();
  ddp_model *d =
      m ? ddp_wrap(m, &(ddp_options){.bucket_cap_mb = CAP_MB, .static_bucket_order = static_order})
        : NULL;
  CHECK(d != NULL, "ddp_wrap: %s", em_last_error());
  em_optim *opt = d ? em_sgd(em_parameters(m), .lr = 0.05, .momentum = 0.9) : NULL;
  em_params p = em_parameters(m);
  const char *later = static_order ? PLAN_AT_WRAP : PLAN_OBSERVED;
  if (d) check_plan(d, m, PLAN_AT_WRAP, "at wrap");
  for (int s = 0; s < STEPS && opt; s++) {
    em_scope sc = em_scope_begin();
    for (int k = 0; k < MICRO; k++) {
      CHECK_OK(ddp_no_sync(d, k % 2 == 0));
      CHECK_OK(micro_backward(m, s, rank, k, 1.0f / MICRO));
      if (s > 0) continue;
      if (k == 0) check_plan(d, m, PLAN_AT_WRAP, "after a no_sync pass");
      if (k == 1) check_plan(d, m, later, "after the first synced pass");
      if (k % 2 == 0 || !ref) continue;
      float *g = du_grads(m);
      const float *want = k == 1 ? ref->g_rebuild : ref->g_step0;
      char what[96];
      snprintf(what, sizeof what, "step 0, micro-batch %d: gradients (%s)", k,
               static_order ? "static order" : "rebuilt order");
      if (g && want) DU_CHECK_CLOSE_G(g, want, p, 1e-6, what);
      CHECK(g && du_same_on_all_ranks(g, p.arena_numel), "%s differ across ranks", what);
      free(g);
    }
    CHECK_OK(em_step(opt));
    CHECK_OK(em_zero_grad(opt));
    em_scope_end(sc);
  }
  if (d) check_plan(d, m, later, "after the last step");
  CHECK(d && ddp_get_stats(d).steps == 2 * STEPS && ddp_get_stats(d).n_buckets == 4,
        "stats: %lld synced passes, %d buckets", d ? (long long)ddp_get_stats(d).steps : -1LL,
        d ? ddp_get_stats(d).n_buckets : -1);
  CHECK(ddp_bucket_params(d, 4, NULL, 0) == -1 && ddp_bucket_params(d, -1, NULL, 0) == -1 &&
            ddp_bucket_params(d, 0, NULL, 0) == (static_order ? 3 : 2),
        "ddp_bucket_params: out of range, or the count without idx");
  float *snap = d ? du_snapshot(m, n) : NULL;
  if (snap && ref && ref->params && *n == ref->n) {
    char what[96];
    snprintf(what, sizeof what, "%d ranks, %d steps, %s order", W, STEPS,
             static_order ? "static" : "rebuilt");
    DU_CHECK_CLOSE(m, ref->params, 1e-5, 1e-5, what);
    CHECK(du_same_on_all_ranks(snap, *n), "%s: parameters differ across ranks", what);
  }
  em_optim_free(opt);
  ddp_free(d);
  em_module_free(m);
  return snap;
}

int main(int argc, char **argv) {
  CHECK_OK(du_init(&argc, &argv));
  CHECK(ddp_world_size() > 1, "needs 2 or more ranks, has %d", ddp_world_size());
  reference ref = reference_run(); /* before any wrap: the reducer sees every backward */
  int64_t n1 = 0, n2 = 0, n3 = 0;
  float *a = ddp_run(&ref, false, &n1);
  float *b = ddp_run(NULL, false, &n2);
  float *c = ddp_run(&ref, true, &n3);
  CHECK(a && b && c && n1 == n2 && n1 == n3, "snapshots");
  if (a && b && n1 == n2) CHECK_SAME(b, a, n1, EM_F32, "a second run against the first");
  if (a && c && n1 == n3 && ddp_world_size() == 2)
    CHECK_SAME(c, a, n1, EM_F32, "static order against the rebuilt order, 2 ranks");
  free(a);
  free(b);
  free(c);
  free(ref.g_rebuild);
  free(ref.g_step0);
  free(ref.params);
  return chk_finish("test_ddp_order");
}
