/* test_dl_hooks.c: the data loader's hooks (transform, collate), error paths and timeouts, and
 * state save/restore at the same and at another world size, against the oracle in dl_oracle.h. */
#include "dl_oracle.h"

/* ---- 4. hooks and errors --------------------------------------------------------------------- */

typedef struct {
  int64_t fail_index; /* the hook fails on this index (-1: never) */
  atomic_long calls;
} hook_ctx;

/* x[0] += uniform from the sample's rng, x[2] *= 2. Checks what it is handed (a failed check is
 * an error the loader must report: asserting here would be on a worker thread). */
static em_status noise_transform(void *ctx, void *const fields[], const dl_field *spec, int nfields,
                                 em_rng *rng, int64_t index) {
  hook_ctx *c = ctx;
  atomic_fetch_add(&c->calls, 1);
  if (index == c->fail_index)
    return em_set_error(EM_ERR_INVALID, "transform refuses sample %lld", (long long)index);
  if (nfields != 2 || strcmp(spec[0].name, "x") != 0 || spec[0].dtype != EM_F32 ||
      spec[1].dtype != EM_I64)
    return em_set_error(EM_ERR_INVALID, "transform: unexpected field spec");
  float *x = fields[0];
  if (x[1] != (float)index + 0.5f || *(int64_t *)fields[1] != index)
    return em_set_error(EM_ERR_INVALID, "transform: sample %lld not what get wrote",
                        (long long)index);
  x[0] += em_rng_uniform(rng);
  x[2] *= 2;
  return EM_OK;
}

/* Adds fields[2] = 2 * y (i64). */
static em_status double_y_collate(void *ctx, dl_batch *b) {
  hook_ctx *c = ctx;
  atomic_fetch_add(&c->calls, 1);
  if (b->nfields != 2 || !b->fields[1] || b->fields[1]->shape[0] != b->size || !b->indices)
    return em_set_error(EM_ERR_INVALID, "collate: unexpected batch");
  for (int64_t k = 0; k < b->size; k++)
    if (b->indices[k] == c->fail_index)
      return em_set_error(EM_ERR_FORMAT, "collate refuses a batch with sample %lld",
                          (long long)c->fail_index);
  em_tensor *t = em_empty(EM_I64, 1, (int64_t[]){b->size});
  if (!t) return em_last_status();
  for (int64_t k = 0; k < b->size; k++) em_set(t, k, 2 * em_get(b->fields[1], k));
  b->fields[2] = t;
  b->nfields = 3;
  return EM_OK;
}

Test(dl_loader, transform_is_seeded_per_sample_whatever_the_workers, .timeout = 60) {
  TU_BEGIN;
  const uint64_t seed = 31337;
  dl_dataset *d = toy_new(NS, -1, 20);
  static rec ref[MAXREC], got[MAXREC];
  const int workers[] = {0, 1, 4};
  for (int wi = 0; wi < 3; wi++) {
    hook_ctx hc = {.fail_index = -1};
    dl_options o = opts(true, seed, 1, 2, workers[wi]); /* rank 1 of 2 gets a padding sample */
    o.transform = noise_transform;
    o.transform_ctx = &hc;
    int n = two_epochs(d, &o, wi ? got : ref);
    char what[128];
    snprintf(what, sizeof what, "transform, workers %d", workers[wi]);
    plan p0 = plan_rank(seed, 0, true, 0, 2, 1, PAD), p1 = plan_rank(seed, 1, true, 0, 2, 1, PAD);
    cr_assert_eq(n, p0.nb + p1.nb, "%s", what);
    rec *g = wi ? got : ref;
    expect_plan(g, (int)p0.nb, &p0, 0, true, what);
    expect_plan(g + p0.nb, (int)p1.nb, &p1, 1, true, what);
    for (int j = 0; j < n; j++) check_values(&g[j], true, seed, what);
    cr_assert_geq(atomic_load(&hc.calls), p0.s + p1.s, "%s: %ld transform calls", what,
                  (long)atomic_load(&hc.calls));
    if (wi)
      for (int j = 0; j < n; j++) rec_eq(&got[j], &ref[j], true, what, j);
  }
  /* The same index gets a different draw in another epoch (the rng depends on the epoch). */
  cr_assert_neq(dl_sample_seed(seed, 0, 5), dl_sample_seed(seed, 1, 5));
  cr_assert_neq(dl_sample_seed(seed, 0, 5), dl_sample_seed(seed, 0, 6));
  dl_dataset_close(d);
  TU_END;
}

Test(dl_loader, collate_adds_a_field_once_per_batch, .timeout = 60) {
  TU_BEGIN;
  dl_dataset *d = toy_new(NS, -1, 0);
  static rec ref[MAXREC], got[MAXREC];
  const int workers[] = {0, 4};
  for (int wi = 0; wi < 2; wi++) {
    hook_ctx hc = {.fail_index = -1};
    dl_options o = opts(true, 5, 2, 3, workers[wi]);
    o.prefetch = 4;
    o.collate = double_y_collate;
    o.collate_ctx = &hc;
    dl_loader *l = loader(d, &o);
    int n = drain(l, wi ? got : ref, MAXREC);
    n += drain(l, (wi ? got : ref) + n, MAXREC - n);
    long calls = (long)atomic_load(&hc.calls);
    dl_loader_free(l);
    rec *g = wi ? got : ref;
    plan p0 = plan_rank(5, 0, true, 0, 3, 2, PAD), p1 = plan_rank(5, 1, true, 0, 3, 2, PAD);
    cr_assert_eq(n, p0.nb + p1.nb);
    expect_plan(g, (int)p0.nb, &p0, 0, true, "collate");
    expect_plan(g + p0.nb, (int)p1.nb, &p1, 1, true, "collate");
    for (int j = 0; j < n; j++) {
      cr_assert_eq(g[j].nfields, 3, "batch %d: %d fields after collate", j, g[j].nfields);
      check_values(&g[j], false, 5, "collate");
      for (int64_t k = 0; k < g[j].size; k++)
        cr_assert_eq(g[j].extra[k], 2 * g[j].idx[k], "batch %d: field 2 = %lld for index %lld", j,
                     (long long)g[j].extra[k], (long long)g[j].idx[k]);
    }
    /* Workers may have collated batches of the next epoch ahead: a prefetch window at most. */
    if (workers[wi] == 0)
      cr_assert_eq(calls, n, "collate called %ld times for %d batches", calls, n);
    else
      cr_assert(calls >= n && calls <= n + o.prefetch + o.workers,
                "collate called %ld times for %d batches", calls, n);
    if (wi)
      for (int j = 0; j < n; j++) rec_eq(&got[j], &ref[j], true, "collate workers 4", j);
  }
  dl_dataset_close(d);
  TU_END;
}

/* Batches made inside a caller's scope (workers 0: on the caller's thread, collate included)
 * belong to the loader, not to that scope; a retained tensor keeps its values. */
Test(dl_loader, batches_belong_to_the_loader, .timeout = 60) {
  TU_BEGIN;
  dl_dataset *d = toy_new(NS, -1, 0);
  for (int workers = 0; workers <= 4; workers += 4) {
    hook_ctx hc = {.fail_index = -1};
    dl_options o = opts(false, 0, 0, 1, workers);
    o.collate = double_y_collate;
    o.collate_ctx = &hc;
    dl_loader *l = loader(d, &o);
    em_tensor *kept = NULL;
    dl_batch b;
    for (int step = 0; step < 6; step++) {
      em_scope s = em_scope_begin(); /* a training step's scope */
      cr_assert(dl_next(l, &b), "%s", em_last_error());
      em_tensor *sum = em_sum(b.x, 0, NULL, false); /* x sums to sum(i) + 0.5 per sample */
      cr_assert_not_null(sum, "%s", em_last_error());
      cr_assert_float_eq(em_get(sum, 0), (double)(BS * BS * step + BS * (BS - 1) / 2) + 0.5 * BS,
                         1e-4);
      if (step == 1) kept = em_retain(b.x);
      em_scope_end(s);
      rec r;
      take(&b, &r); /* still valid after the scope closed */
      cr_assert_eq(r.idx[0], step * BS);
      check_values(&r, false, 0, "after the step's scope");
      cr_assert_eq(r.extra[BS - 1], 2 * (step * BS + BS - 1));
    }
    dl_loader_free(l);
    for (int64_t k = 0; k < BS; k++)
      cr_assert_eq(em_get(kept, 3 * k + 1), (float)(BS + k) + 0.5f, "retained batch changed");
    em_release(kept);
  }
  dl_dataset_close(d);
  TU_END;
}

/* A failure in get, the transform or the collate at sample `bad` (shuffle off, world 1, so it
 * sits in batch bad / BS): the batches before it arrive, then dl_next is false for good with the
 * status and message of the failure; freeing is quick. */
static void expect_failure(int which, int workers, int64_t bad, em_status want,
                           const char *needle) {
  dl_dataset *d = toy_new(NS, which == 0 ? bad : -1, 0);
  hook_ctx hc = {.fail_index = bad};
  dl_options o = opts(false, 3, 0, 1, workers);
  o.prefetch = workers ? 8 : 0;
  o.transform = which == 1 ? noise_transform : NULL;
  o.transform_ctx = &hc;
  o.collate = which == 2 ? double_y_collate : NULL;
  o.collate_ctx = &hc;
  dl_loader *l = loader(d, &o);
  dl_batch b;
  int n = 0;
  while (dl_next(l, &b)) {
    rec r;
    take(&b, &r);
    cr_assert_eq(r.idx[0], n * BS, "batch %d", n);
    n++;
    cr_assert_leq(n, NS / BS + 1);
  }
  cr_assert_eq(n, bad / BS, "hook %d workers %d: %d good batches before the failure, expected %lld",
               which, workers, n, (long long)(bad / BS));
  cr_assert_eq(dl_status(l), want, "hook %d workers %d: status %s", which, workers,
               em_status_str(dl_status(l)));
  cr_assert(strstr(em_last_error(), needle), "hook %d workers %d: message '%s' lacks '%s'", which,
            workers, em_last_error(), needle);
  cr_assert_not(dl_next(l, &b), "dl_next went on after an error");
  cr_assert_not(dl_next(l, &b), "dl_next went on after an error");
  cr_assert_eq(dl_status(l), want);
  double t0 = now_s();
  dl_loader_free(l);
  cr_assert_lt(now_s() - t0, 2.0, "dl_loader_free took %.2f s after an error", now_s() - t0);
  dl_dataset_close(d);
}

Test(dl_loader, dataset_error_stops_the_loader_with_its_message, .timeout = 60) {
  TU_BEGIN;
  for (int workers = 0; workers <= 4; workers += 4) {
    expect_failure(0, workers, 37, EM_ERR_IO, "toy sample 37: disk on fire");
    expect_failure(0, workers, 0, EM_ERR_IO, "toy sample 0: disk on fire");
  }
  TU_END;
}

Test(dl_loader, transform_error_stops_the_loader_with_its_message, .timeout = 60) {
  TU_BEGIN;
  for (int workers = 0; workers <= 4; workers += 4)
    expect_failure(1, workers, 42, EM_ERR_INVALID, "transform refuses sample 42");
  TU_END;
}

Test(dl_loader, collate_error_stops_the_loader_with_its_message, .timeout = 60) {
  TU_BEGIN;
  for (int workers = 0; workers <= 4; workers += 4)
    expect_failure(2, workers, 60, EM_ERR_FORMAT, "collate refuses a batch with sample 60");
  TU_END;
}

/* A get that does not return within timeout_s: dl_next gives up with EM_ERR_TIMEOUT instead of
 * hanging (workers only: without them the get runs on the caller's thread). */
Test(dl_loader, stuck_get_times_out, .timeout = 60) {
  TU_BEGIN;
  dl_dataset *d = toy_new(NS, -1, 300000); /* index i sleeps (i % 5) * 0.3 s */
  dl_options o = opts(false, 0, 0, 1, 2);
  o.timeout_s = 0.25;
  dl_loader *l = loader(d, &o);
  dl_batch b;
  double t0 = now_s();
  cr_assert_not(dl_next(l, &b), "batch 0 (3 s of gets) arrived within 0.25 s");
  double dt = now_s() - t0;
  cr_assert_eq(dl_status(l), EM_ERR_TIMEOUT, "status %s", em_status_str(dl_status(l)));
  cr_assert_neq(em_last_error()[0], '\0', "no message");
  cr_assert(dt >= 0.2 && dt < 1.5, "gave up after %.2f s with timeout_s 0.25", dt);
  cr_assert_not(dl_next(l, &b));
  dl_loader_free(l); /* waits for the gets in progress (at most 1.2 s each) */
  dl_dataset_close(d);
  TU_END;
}

/* ---- 5. save and resume ---------------------------------------------------------------------- */

/* Runs W loaders k batches each in lockstep (through epoch ends) into got[r], returns the state
 * they agree on and leaves them open in ls. */
static dl_state run_k(dl_dataset *d, uint64_t seed, int w, int k, dl_loader **ls,
                      rec got[][MAXREC]) {
  dl_state s = {0};
  for (int r = 0; r < w; r++) {
    dl_options o = opts(true, seed, r, w, 2);
    ls[r] = loader(d, &o);
    collect(ls[r], got[r], k);
    dl_state sr = dl_state_save(ls[r]);
    if (r == 0) s = sr;
    cr_assert(sr.seed == s.seed && sr.epoch == s.epoch && sr.position == s.position,
              "rank %d's state (%lld, %lld) differs from rank 0's (%lld, %lld)", r,
              (long long)sr.epoch, (long long)sr.position, (long long)s.epoch,
              (long long)s.position);
  }
  cr_assert_eq(s.seed, seed);
  cr_assert_eq(s.dataset_len, NS);
  cr_assert(s.shuffle);
  return s;
}

Test(dl_loader, resume_continues_the_same_stream, .timeout = 60) {
  TU_BEGIN;
  const uint64_t seed = 4242;
  const int w = 3;
  dl_dataset *d = toy_new(NS, -1, 0);
  static rec full[MAXW][MAXREC], part[MAXW][MAXREC], rest[MAXREC];
  dl_loader *ls[MAXW];
  int nb = (int)plan_rank(seed, 0, true, 0, w, 0, PAD).nb; /* 7 per epoch */
  run_k(d, seed, w, 2 * nb, ls, full);
  for (int r = 0; r < w; r++) {
    dl_batch b;
    cr_assert_not(dl_next(ls[r], &b), "rank %d: epoch 1 longer than %d batches", r, nb);
    dl_loader_free(ls[r]);
  }
  const int ks[] = {0, 3, nb, nb + 2};
  for (int ki = 0; ki < 4; ki++) {
    int k = ks[ki];
    dl_state s = run_k(d, seed, w, k, ls, part);
    if (k == 3)
      cr_assert(s.epoch == 0 && s.position == 3 * BS * w,
                "after 3 batches: (%lld, "
                "%lld)",
                (long long)s.epoch, (long long)s.position);
    if (k == nb + 2)
      cr_assert(s.epoch == 1 && s.position == 2 * BS * w,
                "after %d batches: "
                "(%lld, %lld)",
                k, (long long)s.epoch, (long long)s.position);
    for (int r = 0; r < w; r++) dl_loader_free(ls[r]);
    for (int r = 0; r < w; r++) {
      char what[128];
      snprintf(what, sizeof what, "resumed after %d batches, rank %d", k, r);
      for (int j = 0; j < k; j++) rec_eq(&part[r][j], &full[r][j], true, what, j);
      /* The new loader's own seed must not matter: the state carries it. */
      dl_options o = opts(true, r == 1 ? seed + 17 : seed, r, w, 2);
      dl_loader *l = loader(d, &o);
      cr_assert_eq(dl_state_restore(l, &s), EM_OK, "%s: %s", what, em_last_error());
      if (k == 3) {
        cr_assert_eq(dl_epoch(l), 0);
        cr_assert_eq(dl_len(l), nb - 3, "%s: dl_len %lld", what, (long long)dl_len(l));
      }
      collect(l, rest, 2 * nb - k);
      for (int j = 0; j < 2 * nb - k; j++) rec_eq(&rest[j], &full[r][k + j], false, what, k + j);
      dl_batch b;
      cr_assert_not(dl_next(l, &b), "%s: epoch 1 did not end where it did uninterrupted", what);
      cr_assert_eq(dl_status(l), EM_OK);
      dl_loader_free(l);
    }
  }

  /* A state from another dataset length or shuffle setting is refused. */
  dl_state s = run_k(d, seed, 1, 2, ls, part);
  dl_loader_free(ls[0]);
  dl_dataset *d2 = toy_new(NS + 1, -1, 0);
  dl_options o = opts(true, seed, 0, 1, 0);
  dl_loader *l = loader(d2, &o);
  em_clear_error();
  cr_assert_neq(dl_state_restore(l, &s), EM_OK, "restored a state for %d samples over %d", NS,
                NS + 1);
  cr_assert_neq(em_last_error()[0], '\0', "no message");
  dl_loader_free(l);
  o.shuffle = false;
  l = loader(d, &o);
  em_clear_error();
  cr_assert_neq(dl_state_restore(l, &s), EM_OK, "restored a shuffled state without shuffle");
  cr_assert_neq(em_last_error()[0], '\0', "no message");
  dl_loader_free(l);
  dl_dataset_close(d2);
  dl_dataset_close(d);
  TU_END;
}

Test(dl_loader, resume_reshards_over_another_world_size, .timeout = 60) {
  TU_BEGIN;
  const uint64_t seed = 808;
  dl_dataset *d = toy_new(NS, -1, 0);
  static rec part[MAXW][MAXREC], got[MAXREC];
  dl_loader *ls[MAXW];
  const int ks[] = {4, 6}; /* P = 60 (M = 43) and P = 90 (M = 13, less than 2 per rank at W=7) */
  const int new_w[] = {2, 4, 7, 1};
  for (int ki = 0; ki < 2; ki++) {
    dl_state s = run_k(d, seed, 3, ks[ki], ls, part);
    int64_t p = (int64_t)ks[ki] * BS * 3;
    cr_assert(s.epoch == 0 && s.position == p, "saved (%lld, %lld), expected (0, %lld)",
              (long long)s.epoch, (long long)s.position, (long long)p);
    int before[NS] = {0};
    for (int r = 0; r < 3; r++) {
      for (int j = 0; j < ks[ki]; j++)
        for (int64_t k = 0; k < part[r][j].size; k++) before[part[r][j].idx[k]]++;
      dl_loader_free(ls[r]);
    }
    for (size_t wi = 0; wi < sizeof new_w / sizeof *new_w; wi++) {
      int w = new_w[wi];
      int count[NS], dups = 0;
      memcpy(count, before, sizeof count);
      for (int r = 0; r < w; r++) {
        char what[128];
        snprintf(what, sizeof what, "saved at W=3 position %lld, resumed at W=%d rank %d",
                 (long long)p, w, r);
        dl_options o = opts(true, seed, r, w, 2);
        dl_loader *l = loader(d, &o);
        cr_assert_eq(dl_state_restore(l, &s), EM_OK, "%s: %s", what, em_last_error());
        plan pl = plan_rank(seed, 0, true, p, w, r, PAD);
        cr_assert_eq(dl_epoch(l), 0, "%s", what);
        cr_assert_eq(dl_len(l), pl.nb, "%s: dl_len %lld, expected %lld", what, (long long)dl_len(l),
                     (long long)pl.nb);
        cr_assert_eq(dl_samples(l), pl.s, "%s: dl_samples", what);
        cr_assert_eq(dl_real_samples(l), pl.real, "%s: dl_real_samples", what);
        int n = drain(l, got, MAXREC);
        expect_plan(got, n, &pl, 0, false, what);
        for (int j = 0; j < n; j++) {
          check_values(&got[j], false, seed, what);
          for (int64_t k = 0; k < got[j].size; k++) {
            if (k < got[j].real)
              count[got[j].idx[k]]++;
            else
              dups++;
          }
        }
        /* Then the next epoch is a whole normal one for this world size. */
        plan full = plan_rank(seed, 1, true, 0, w, r, PAD);
        cr_assert_eq(dl_epoch(l), 1, "%s", what);
        cr_assert_eq(dl_len(l), full.nb, "%s: next epoch's dl_len %lld", what,
                     (long long)dl_len(l));
        n = drain(l, got, MAXREC);
        expect_plan(got, n, &full, 1, true, what);
        dl_loader_free(l);
      }
      int64_t left = NS - p;
      for (int i = 0; i < NS; i++)
        cr_assert_eq(count[i], 1, "resumed at W=%d after position %lld: index %d seen %d times", w,
                     (long long)p, i, count[i]);
      cr_assert_eq(dups, (left + w - 1) / w * w - left, "resumed at W=%d: %d padding samples", w,
                   dups);
    }
  }
  dl_dataset_close(d);
  TU_END;
}

