/* test_dl_loader.c: the data loader (dl.h) against an independent sampler oracle (dl_oracle.h):
 * sharding, padding and epochs over simulated ranks, drop_last and exact, worker counts, bad
 * options, set_epoch, shutdown, and the real Fashion-MNIST. Hooks, errors and resume:
 * test_dl_hooks.c. */
#include "dl_oracle.h"

/* ---- 1. sharding, padding, epochs ----------------------------------------------------------- */

Test(dl_loader, sharded_epochs_match_oracle, .timeout = 60) {
  TU_BEGIN;
  const uint64_t seed = 1234;
  const int worlds[] = {1, 2, 3, 4, 7};
  dl_dataset *d = toy_new(NS, -1, 0);
  static rec got[MAXREC];
  int64_t seen[3][NS]; /* W = 1's epoch orders */
  for (size_t wi = 0; wi < sizeof worlds / sizeof *worlds; wi++) {
    int w = worlds[wi];
    dl_loader *ls[MAXW];
    for (int r = 0; r < w; r++) {
      dl_options o = opts(true, seed, r, w, r % 3 == 1 ? 2 : 0);
      ls[r] = loader(d, &o);
    }
    for (int64_t e = 0; e < 3; e++) {
      int count[NS] = {0}, real_count[NS] = {0};
      int64_t sum_real = 0;
      for (int r = 0; r < w; r++) {
        char what[128];
        snprintf(what, sizeof what, "W=%d rank %d epoch %lld", w, r, (long long)e);
        plan pl = plan_rank(seed, e, true, 0, w, r, PAD);
        cr_assert_eq(pl.nb, (((NS + w - 1) / w) + BS - 1) / BS); /* the oracle's own sanity */
        cr_assert_eq(dl_epoch(ls[r]), e, "%s: dl_epoch %lld", what, (long long)dl_epoch(ls[r]));
        cr_assert_eq(dl_len(ls[r]), pl.nb, "%s: dl_len %lld, expected %lld", what,
                     (long long)dl_len(ls[r]), (long long)pl.nb);
        cr_assert_eq(dl_samples(ls[r]), pl.s, "%s: dl_samples", what);
        cr_assert_eq(dl_real_samples(ls[r]), pl.real, "%s: dl_real_samples", what);
        sum_real += dl_real_samples(ls[r]);
        int n = drain(ls[r], got, MAXREC);
        expect_plan(got, n, &pl, e, true, what);
        cr_assert_eq(dl_epoch(ls[r]), e + 1, "%s: the epoch did not advance at its end", what);
        for (int j = 0; j < n; j++) {
          check_values(&got[j], false, seed, what);
          for (int64_t k = 0; k < got[j].size; k++) {
            count[got[j].idx[k]]++;
            if (k < got[j].real) real_count[got[j].idx[k]]++;
          }
          if (w == 1)
            for (int64_t k = 0; k < got[j].size; k++) seen[e][j * BS + k] = got[j].idx[k];
        }
      }
      int dups = 0;
      for (int i = 0; i < NS; i++) {
        cr_assert_geq(count[i], 1, "W=%d epoch %lld: index %d never loaded", w, (long long)e, i);
        cr_assert_eq(real_count[i], 1, "W=%d epoch %lld: index %d real %d times", w, (long long)e,
                     i, real_count[i]);
        dups += count[i] - 1;
      }
      cr_assert_eq(dups, (NS + w - 1) / w * w - NS, "W=%d: %d padding duplicates", w, dups);
      cr_assert_eq(sum_real, NS);
    }
    /* The next epoch starts by itself, batch.epoch and step included. */
    dl_batch b;
    cr_assert(dl_next(ls[0], &b), "%s", em_last_error());
    cr_assert_eq(b.epoch, 3);
    cr_assert_eq(b.step, 0);
    for (int r = 0; r < w; r++) dl_loader_free(ls[r]);
  }
  cr_assert(memcmp(seen[0], seen[1], sizeof seen[0]) != 0, "epochs 0 and 1 in the same order");
  cr_assert(memcmp(seen[1], seen[2], sizeof seen[0]) != 0, "epochs 1 and 2 in the same order");

  /* Same seed, same stream (loader against loader); another seed, another order. */
  static rec a[MAXREC], b2[MAXREC];
  dl_options o = opts(true, seed, 0, 1, 0);
  dl_loader *l1 = loader(d, &o), *l2 = loader(d, &o);
  o.seed = 99991;
  dl_loader *l3 = loader(d, &o);
  int na = drain(l1, a, MAXREC), nb = drain(l2, b2, MAXREC);
  cr_assert_eq(na, nb);
  for (int j = 0; j < na; j++) rec_eq(&a[j], &b2[j], true, "same seed", j);
  nb = drain(l3, b2, MAXREC);
  cr_assert_eq(na, nb);
  bool differ = false;
  for (int j = 0; j < na; j++) differ |= memcmp(a[j].idx, b2[j].idx, sizeof a[j].idx) != 0;
  cr_assert(differ, "seeds %llu and 99991 give the same order", (unsigned long long)seed);
  plan p3 = plan_rank(99991, 0, true, 0, 1, 0, PAD);
  expect_plan(b2, nb, &p3, 0, true, "seed 99991");
  dl_loader_free(l1);
  dl_loader_free(l2);
  dl_loader_free(l3);

  /* Without shuffle the order is 0..N-1 in every epoch. */
  for (int r = 0; r < 3; r++) {
    o = opts(false, seed, r, 3, 0);
    dl_loader *l = loader(d, &o);
    for (int64_t e = 0; e < 2; e++) {
      plan pl = plan_rank(seed, e, false, 0, 3, r, PAD);
      cr_assert_eq(pl.samples[0], r);
      int n = drain(l, got, MAXREC);
      expect_plan(got, n, &pl, e, true, "no shuffle");
    }
    dl_loader_free(l);
  }
  dl_dataset_close(d);
  TU_END;
}

/* ---- 2. drop_last and exact ----------------------------------------------------------------- */

Test(dl_loader, drop_last_gives_whole_batches_without_duplicates, .timeout = 60) {
  TU_BEGIN;
  const uint64_t seed = 7;
  dl_dataset *d = toy_new(NS, -1, 0);
  static rec got[MAXREC];
  const int worlds[] = {1, 3, 4, 7}; /* floor(103 / W) = 103, 34, 25, 14: whole for W = 4 only */
  for (size_t wi = 0; wi < sizeof worlds / sizeof *worlds; wi++) {
    int w = worlds[wi];
    for (int64_t e = 0; e < 2; e++) {
      int count[NS] = {0};
      int64_t nb0 = -1;
      for (int r = 0; r < w; r++) {
        char what[128];
        snprintf(what, sizeof what, "drop_last W=%d rank %d epoch %lld", w, r, (long long)e);
        dl_options o = opts(true, seed, r, w, r % 2 ? 3 : 0);
        o.drop_last = true;
        dl_loader *l = loader(d, &o);
        if (e) cr_assert_eq(dl_set_epoch(l, e), EM_OK, "%s", em_last_error());
        plan pl = plan_rank(seed, e, true, 0, w, r, DROP);
        int64_t per_rank = NS / w; /* floor(N / W) before the short batch is dropped */
        cr_assert_eq(dl_len(l), pl.nb, "%s: dl_len %lld", what, (long long)dl_len(l));
        /* dl.h: "gives floor(M / W) samples per rank and drops a last short batch": when
         * floor(N/W) is whole batches both readings agree; otherwise accept either. */
        if (per_rank % BS == 0)
          cr_assert_eq(dl_samples(l), per_rank, "%s: dl_samples", what);
        else
          cr_assert(dl_samples(l) == per_rank || dl_samples(l) == pl.s, "%s: dl_samples %lld", what,
                    (long long)dl_samples(l));
        cr_assert_eq(dl_real_samples(l), dl_samples(l), "%s: padding with drop_last", what);
        int n = drain(l, got, MAXREC);
        expect_plan(got, n, &pl, e, true, what);
        if (nb0 < 0) nb0 = n;
        cr_assert_eq(n, nb0, "%s: ranks yield different numbers of batches", what);
        for (int j = 0; j < n; j++) {
          cr_assert_eq(got[j].size, BS, "%s: short batch %d", what, j);
          cr_assert_eq(got[j].real, BS);
          check_values(&got[j], false, seed, what);
          for (int k = 0; k < BS; k++) count[got[j].idx[k]]++;
        }
        dl_loader_free(l);
      }
      int total = 0;
      for (int i = 0; i < NS; i++) {
        cr_assert_leq(count[i], 1, "drop_last W=%d: index %d loaded %d times", w, i, count[i]);
        total += count[i];
      }
      cr_assert_eq(total, (NS / w) / BS * BS * w);
    }
  }
  dl_dataset_close(d);
  TU_END;
}

Test(dl_loader, exact_gives_every_sample_to_one_rank, .timeout = 60) {
  TU_BEGIN;
  const uint64_t seed = 2024;
  dl_dataset *d = toy_new(NS, -1, 0);
  static rec got[MAXREC];
  const int worlds[] = {1, 2, 3, 4, 7};
  for (size_t wi = 0; wi < sizeof worlds / sizeof *worlds; wi++) {
    int w = worlds[wi];
    dl_loader *ls[MAXW];
    for (int r = 0; r < w; r++) {
      dl_options o = opts(true, seed, r, w, r % 2 ? 2 : 0);
      o.exact = true;
      ls[r] = loader(d, &o);
    }
    for (int64_t e = 0; e < 2; e++) {
      int count[NS] = {0};
      int64_t sum_real = 0, smin = NS, smax = 0;
      for (int r = 0; r < w; r++) {
        char what[128];
        snprintf(what, sizeof what, "exact W=%d rank %d epoch %lld", w, r, (long long)e);
        plan pl = plan_rank(seed, e, true, 0, w, r, EXACT);
        cr_assert_eq(pl.real, pl.s);
        cr_assert_eq(dl_len(ls[r]), pl.nb, "%s: dl_len %lld", what, (long long)dl_len(ls[r]));
        cr_assert_eq(dl_samples(ls[r]), pl.s, "%s: dl_samples %lld, expected %lld", what,
                     (long long)dl_samples(ls[r]), (long long)pl.s);
        cr_assert_eq(dl_real_samples(ls[r]), pl.s, "%s: dl_real_samples", what);
        sum_real += dl_real_samples(ls[r]);
        smin = pl.s < smin ? pl.s : smin;
        smax = pl.s > smax ? pl.s : smax;
        int n = drain(ls[r], got, MAXREC);
        expect_plan(got, n, &pl, e, true, what);
        for (int j = 0; j < n; j++) {
          cr_assert_eq(got[j].real, got[j].size, "%s: padding in exact mode", what);
          check_values(&got[j], false, seed, what);
          for (int64_t k = 0; k < got[j].size; k++) count[got[j].idx[k]]++;
        }
      }
      for (int i = 0; i < NS; i++)
        cr_assert_eq(count[i], 1, "exact W=%d: index %d loaded %d times", w, i, count[i]);
      cr_assert_eq(sum_real, NS, "exact W=%d: real samples sum to %lld", w, (long long)sum_real);
      cr_assert_leq(smax - smin, 1);
    }
    for (int r = 0; r < w; r++) dl_loader_free(ls[r]);
  }
  dl_dataset_close(d);
  TU_END;
}

/* ---- 3. workers do not change the batches ---------------------------------------------------- */


Test(dl_loader, workers_and_prefetch_give_identical_batches, .timeout = 60) {
  TU_BEGIN;
  dl_dataset *d = toy_new(NS, -1, 40);
  static rec ref[MAXREC], got[MAXREC];
  const int cfg[][2] = {{1, 0}, {1, 1}, {2, 3}, {4, 0}, {4, 1}, {4, 8}};
  for (int rank = 0; rank < 3; rank += 2) {
    dl_options o = opts(true, 55, rank, 3, 0);
    int n = two_epochs(d, &o, ref);
    plan p0 = plan_rank(55, 0, true, 0, 3, rank, PAD), p1 = plan_rank(55, 1, true, 0, 3, rank, PAD);
    cr_assert_eq(n, p0.nb + p1.nb);
    expect_plan(ref, (int)p0.nb, &p0, 0, true, "workers 0 epoch 0");
    expect_plan(ref + p0.nb, (int)p1.nb, &p1, 1, true, "workers 0 epoch 1");
    for (int j = 0; j < n; j++) check_values(&ref[j], false, 55, "workers 0");
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
      o.workers = cfg[c][0];
      o.prefetch = cfg[c][1];
      char what[128];
      snprintf(what, sizeof what, "rank %d workers %d prefetch %d", rank, o.workers, o.prefetch);
      cr_assert_eq(two_epochs(d, &o, got), n, "%s: batch count", what);
      for (int j = 0; j < n; j++) rec_eq(&got[j], &ref[j], true, what, j);
    }
  }
  dl_dataset_close(d);
  TU_END;
}

/* ---- 6. options, set_epoch, free ------------------------------------------------------------- */

static void expect_bad(dl_dataset *d, const dl_options *o, const char *needle) {
  em_clear_error();
  dl_loader *l = dl_loader_new(d, o);
  cr_assert_null(l, "accepted bad option '%s'", needle);
  cr_assert(strstr(em_last_error(), needle), "message '%s' does not name '%s'", em_last_error(),
            needle);
  dl_loader_free(l);
}

Test(dl_loader, bad_options_are_named_errors) {
  TU_BEGIN;
  dl_dataset *d = toy_new(NS, -1, 0);
  dl_options o = opts(true, 1, 0, 2, 0);
  o.batch = 0;
  expect_bad(d, &o, "batch");
  o = opts(true, 1, 0, 2, 0);
  o.batch = -3;
  expect_bad(d, &o, "batch");
  o = opts(true, 1, 0, 2, -1);
  expect_bad(d, &o, "workers");
  o = opts(true, 1, 2, 2, 0);
  expect_bad(d, &o, "rank");
  o = opts(true, 1, -1, 2, 0);
  expect_bad(d, &o, "rank");
  o = opts(true, 1, 0, 2, 1);
  o.prefetch = -1;
  expect_bad(d, &o, "prefetch");
  o = opts(true, 1, 0, 2, 0);
  expect_bad(NULL, &o, "dataset");
  o = opts(true, 1, 1, 2, 0); /* and a good one still works */
  dl_loader *l = loader(d, &o);
  dl_loader_free(l);
  /* world 0: ddp's world, a world of 1 before ddp_init (rank ignored then). */
  o = opts(true, 1, 0, 0, 0);
  l = loader(d, &o);
  plan pl = plan_rank(1, 0, true, 0, 1, 0, PAD);
  cr_assert_eq(dl_len(l), pl.nb);
  cr_assert_eq(dl_samples(l), NS);
  static rec got[MAXREC];
  int n = drain(l, got, MAXREC);
  expect_plan(got, n, &pl, 0, true, "world 0");
  dl_loader_free(l);
  dl_dataset_close(d);
  TU_END;
}

Test(dl_loader, set_epoch_restarts_there, .timeout = 60) {
  TU_BEGIN;
  const uint64_t seed = 66;
  dl_dataset *d = toy_new(NS, -1, 10);
  static rec got[MAXREC];
  for (int workers = 0; workers <= 4; workers += 4) {
    dl_options o = opts(true, seed, 1, 2, workers);
    o.prefetch = 8;
    dl_loader *l = loader(d, &o);
    collect(l, got, 3);
    cr_assert_eq(dl_set_epoch(l, 5), EM_OK, "%s", em_last_error());
    cr_assert_eq(dl_epoch(l), 5);
    plan p5 = plan_rank(seed, 5, true, 0, 2, 1, PAD), p6 = plan_rank(seed, 6, true, 0, 2, 1, PAD);
    cr_assert_eq(dl_len(l), p5.nb);
    int n = drain(l, got, MAXREC);
    expect_plan(got, n, &p5, 5, true, "after dl_set_epoch(5)");
    for (int j = 0; j < n; j++) check_values(&got[j], false, seed, "epoch 5");
    cr_assert_eq(dl_epoch(l), 6);
    n = drain(l, got, MAXREC);
    expect_plan(got, n, &p6, 6, true, "the epoch after 5");
    /* Mid-epoch back to 0: epoch 0 from its start. */
    collect(l, got, 2);
    cr_assert_eq(dl_set_epoch(l, 0), EM_OK);
    plan p0 = plan_rank(seed, 0, true, 0, 2, 1, PAD);
    n = drain(l, got, MAXREC);
    expect_plan(got, n, &p0, 0, true, "after dl_set_epoch(0)");
    dl_loader_free(l);
  }
  dl_dataset_close(d);
  TU_END;
}

Test(dl_loader, free_mid_epoch_is_quick_and_clean, .timeout = 60) {
  TU_BEGIN;
  dl_dataset *d = toy_new(NS, -1, 2000); /* up to 8 ms per sample: workers are busy */
  dl_options o = opts(true, 9, 0, 1, 4);
  o.prefetch = 8;
  for (int taken = 0; taken < 3; taken++) {
    dl_loader *l = loader(d, &o);
    dl_batch b;
    for (int j = 0; j < taken; j++) {
      cr_assert(dl_next(l, &b), "%s", em_last_error());
      rec r;
      take(&b, &r);
      check_values(&r, false, 9, "before free");
    }
    double t0 = now_s();
    dl_loader_free(l);
    double dt = now_s() - t0;
    cr_assert_lt(dt, 1.0, "dl_loader_free with workers busy took %.2f s", dt);
  }
  dl_loader_free(NULL);
  dl_dataset_close(d);
  TU_END; /* every batch tensor released */
}

/* ---- 7. real data ---------------------------------------------------------------------------- */

Test(dl_loader, fashion_mnist_train, .timeout = 120) {
  TU_BEGIN;
  dl_dataset *d = dl_fmnist_open(NULL, "train", NULL);
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_eq(dl_dataset_len(d), 60000);
  dl_options o = {.batch = 64, .workers = 2, .world = 1, .timeout_s = 60};
  dl_loader *l = loader(d, &o);
  cr_assert_eq(dl_len(l), (60000 + 63) / 64);
  dl_batch b;
  cr_assert(dl_next(l, &b), "%s", em_last_error());
  const int64_t first[] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
  cr_assert(b.x->dtype == EM_F32 && b.x->ndim == 2 && b.x->shape[0] == 64 && b.x->shape[1] == 784);
  for (int i = 0; i < 10; i++) {
    cr_assert_eq(b.indices[i], i);
    cr_assert_eq(em_get(b.y, i), first[i], "label %d", i);
  }
  int64_t batches = 1, samples = b.size, last = 0;
  while (dl_next(l, &b)) {
    batches++;
    samples += b.size;
    last = b.size;
  }
  cr_assert_eq(dl_status(l), EM_OK, "%s", em_last_error());
  cr_assert_eq(batches, 938);
  cr_assert_eq(samples, 60000);
  cr_assert_eq(last, 60000 - 937 * 64);
  dl_loader_free(l);

  /* Shuffled: the first batch is the oracle's first 64 indices, rows equal to the IDX reader's. */
  em_tensor *images, *labels;
  cr_assert_eq(dl_fmnist_load(dl_fmnist_dir(), "train", &images, &labels), EM_OK, "%s",
               em_last_error());
  o.shuffle = true;
  o.seed = 5;
  l = loader(d, &o);
  cr_assert(dl_next(l, &b), "%s", em_last_error());
  int64_t *perm = malloc(60000 * sizeof *perm);
  cr_assert_not_null(perm);
  em_rng r = em_rng_new(5);
  em_rng_permutation(&r, perm, 60000);
  for (int k = 0; k < 64; k++) {
    cr_assert_eq(b.indices[k], perm[k], "shuffled sample %d", k);
    cr_assert_eq(em_get(b.y, k), em_get(labels, perm[k]));
    for (int p = 0; p < 784; p += 7)
      cr_assert_eq(em_get(b.x, k * 784 + p), em_get(images, perm[k] * 784 + p), "sample %d px %d",
                   k, p);
  }
  free(perm);
  dl_loader_free(l);
  em_release(images);
  em_release(labels);
  dl_dataset_close(d);
  TU_END;
}
