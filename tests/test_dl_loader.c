/* test_dl_loader.c: the data loader (dl.h) against an independent sampler oracle.
 *
 * The oracle is rebuilt here from dl.h's contract, not from loader.c: epoch e's order is
 * em_rng_permutation(em_rng_new(seed + e)) (or 0..N-1); from position P with M = N - P samples
 * left, rank r of W takes positions q = r, r+W, ... of the rest, sample order[(P + q) mod N]
 * (q >= M is padding that wraps to the start of the order), ceil(M/W) of them (floor and whole
 * batches with drop_last; only q < M in exact mode). A toy dataset's sample i is x = {i, i+0.5, -i}
 * (f32) and y = i (i64), so every batch can be checked value by value against its indices.
 * Several loaders over one dataset simulate the ranks of a world in one process. */
#include "dl.h"
#include "dl_idx.h"
#include "testutil.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS 103    /* toy dataset length: divisible by none of the world sizes tried */
#define BS 5      /* batch */
#define MAXB 16   /* largest toy batch a record holds */
#define MAXREC 64 /* batches a stream holds */
#define MAXW 8

/* ---- the toy dataset ------------------------------------------------------------------------ */

typedef struct {
  int64_t n;
  int64_t fail_index; /* get fails for this index (-1: never) */
  long sleep_us;      /* get sleeps (index % 5) * sleep_us: workers finish out of order */
} toy_ctx;

static int64_t toy_len(void *ctx) { return ((toy_ctx *)ctx)->n; }

static em_status toy_get(void *ctx, int64_t i, void *const out[]) {
  toy_ctx *c = ctx;
  if (i == c->fail_index)
    return em_set_error(EM_ERR_IO, "toy sample %lld: disk on fire", (long long)i);
  if (c->sleep_us) {
    long ns = (i % 5) * c->sleep_us * 1000L;
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    nanosleep(&ts, NULL);
  }
  float *x = out[0];
  x[0] = (float)i;
  x[1] = (float)i + 0.5f;
  x[2] = -(float)i;
  *(int64_t *)out[1] = i;
  return EM_OK;
}

static void toy_close(void *ctx) { free(ctx); }

static dl_dataset *toy_new(int64_t n, int64_t fail_index, long sleep_us) {
  dl_field f[2] = {{.name = "x", .dtype = EM_F32, .ndim = 1, .shape = {3}},
                   {.name = "y", .dtype = EM_I64, .ndim = 0}};
  dl_dataset_fns fns = {.len = toy_len, .get = toy_get, .close = toy_close};
  toy_ctx *c = malloc(sizeof *c);
  cr_assert_not_null(c);
  *c = (toy_ctx){.n = n, .fail_index = fail_index, .sleep_us = sleep_us};
  dl_dataset *d = dl_dataset_new(f, 2, &fns, c);
  cr_assert_not_null(d, "dl_dataset_new: %s", em_last_error());
  cr_assert_eq(dl_dataset_len(d), n);
  return d;
}

static dl_options opts(bool shuffle, uint64_t seed, int rank, int world, int workers) {
  return (dl_options){.batch = BS,
                      .shuffle = shuffle,
                      .seed = seed,
                      .rank = rank,
                      .world = world,
                      .workers = workers,
                      .timeout_s = 30};
}

static dl_loader *loader(dl_dataset *d, const dl_options *o) {
  dl_loader *l = dl_loader_new(d, o);
  cr_assert_not_null(l, "dl_loader_new(rank %d of %d, workers %d): %s", o->rank, o->world,
                     o->workers, em_last_error());
  cr_assert_eq(dl_status(l), EM_OK);
  return l;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- the sampler oracle --------------------------------------------------------------------- */

typedef enum { PAD, DROP, EXACT } mode;

static void epoch_order(uint64_t seed, int64_t epoch, bool shuffle, int64_t n, int64_t *order) {
  if (shuffle) {
    em_rng r = em_rng_new(seed + (uint64_t)epoch);
    em_rng_permutation(&r, order, n);
  } else {
    for (int64_t i = 0; i < n; i++) order[i] = i;
  }
}

/* What rank r of w yields in the rest of an epoch from position p, in order. */
typedef struct {
  int64_t samples[NS + MAXW];
  int64_t s;    /* samples yielded */
  int64_t real; /* of which real (they come first) */
  int64_t nb;   /* batches */
} plan;

static plan plan_rank(uint64_t seed, int64_t epoch, bool shuffle, int64_t p, int w, int r, mode m) {
  int64_t order[NS];
  epoch_order(seed, epoch, shuffle, NS, order);
  plan pl = {0};
  int64_t left = NS - p;
  if (m == EXACT)
    pl.s = r < left ? (left - r + w - 1) / w : 0;
  else if (m == DROP)
    pl.s = left / w / BS * BS;
  else
    pl.s = (left + w - 1) / w;
  for (int64_t k = 0; k < pl.s; k++) {
    int64_t q = r + k * w;
    pl.samples[k] = order[(p + q) % NS];
    if (q < left) pl.real++;
  }
  pl.nb = (pl.s + BS - 1) / BS;
  return pl;
}

/* ---- recorded batches ----------------------------------------------------------------------- */

typedef struct {
  int64_t epoch, step, size, real;
  int nfields;
  int64_t idx[MAXB];
  float x[MAXB * 3];
  int64_t y[MAXB];
  int64_t extra[MAXB]; /* fields[2] (the collate hook's), if any */
} rec;

/* Copies batch b into r, checking the shapes and dtypes dl.h promises. */
static void take(const dl_batch *b, rec *r) {
  memset(r, 0, sizeof *r);
  cr_assert(b->size >= 1 && b->size <= MAXB, "batch size %lld", (long long)b->size);
  cr_assert(b->real >= 0 && b->real <= b->size, "real %lld of %lld", (long long)b->real,
            (long long)b->size);
  cr_assert(b->nfields >= 2 && b->nfields <= DL_MAX_FIELDS, "nfields %d", b->nfields);
  cr_assert_not_null(b->indices);
  cr_assert(b->x == b->fields[0] && b->y == b->fields[1], "x, y are not fields[0], fields[1]");
  const em_tensor *x = b->x, *y = b->y;
  cr_assert_not_null(x);
  cr_assert_not_null(y);
  cr_assert(x->dtype == EM_F32 && x->ndim == 2 && x->shape[0] == b->size && x->shape[1] == 3,
            "x is %s with %d dims", em_dtype_name(x->dtype), x->ndim);
  cr_assert(y->dtype == EM_I64 && y->ndim == 1 && y->shape[0] == b->size, "y is %s with %d dims",
            em_dtype_name(y->dtype), y->ndim);
  *r = (rec){
      .epoch = b->epoch, .step = b->step, .size = b->size, .real = b->real, .nfields = b->nfields};
  for (int64_t k = 0; k < b->size; k++) {
    r->idx[k] = b->indices[k];
    for (int c = 0; c < 3; c++) r->x[3 * k + c] = (float)em_get(x, 3 * k + c);
    r->y[k] = (int64_t)em_get(y, k);
  }
  if (b->nfields > 2) {
    const em_tensor *e = b->fields[2];
    cr_assert(e && e->dtype == EM_I64 && e->ndim == 1 && e->shape[0] == b->size,
              "fields[2] is not (size) i64");
    for (int64_t k = 0; k < b->size; k++) r->extra[k] = (int64_t)em_get(e, k);
  }
}

/* Batches until dl_next returns false (the end of the epoch), which must not be an error. */
static int drain(dl_loader *l, rec *out, int max) {
  dl_batch b;
  int n = 0;
  while (dl_next(l, &b)) {
    cr_assert_lt(n, max, "more than %d batches in an epoch", max);
    take(&b, &out[n++]);
  }
  cr_assert_eq(dl_status(l), EM_OK, "epoch ended on an error: %s", em_last_error());
  return n;
}

/* The next `want` batches, going on through epoch ends. */
static void collect(dl_loader *l, rec *out, int want) {
  dl_batch b;
  int n = 0;
  for (int calls = 0; n < want; calls++) {
    cr_assert_lt(calls, 4 * want + 8, "only %d of %d batches", n, want);
    if (dl_next(l, &b))
      take(&b, &out[n++]);
    else
      cr_assert_eq(dl_status(l), EM_OK, "dl_next failed: %s", em_last_error());
  }
}

/* got[0..ngot) are the batches plan pl gives for epoch `epoch` (steps checked if step). */
static void expect_plan(const rec *got, int ngot, const plan *pl, int64_t epoch, bool step,
                        const char *what) {
  cr_assert_eq(ngot, pl->nb, "%s: %d batches, expected %lld", what, ngot, (long long)pl->nb);
  for (int j = 0; j < ngot; j++) {
    const rec *g = &got[j];
    int64_t size = pl->s - j * BS < BS ? pl->s - j * BS : BS;
    int64_t real = pl->real - j * BS;
    real = real < 0 ? 0 : real > size ? size : real;
    cr_assert_eq(g->epoch, epoch, "%s batch %d: epoch %lld", what, j, (long long)g->epoch);
    if (step) cr_assert_eq(g->step, j, "%s batch %d: step %lld", what, j, (long long)g->step);
    cr_assert_eq(g->size, size, "%s batch %d: size %lld, expected %lld", what, j,
                 (long long)g->size, (long long)size);
    cr_assert_eq(g->real, real, "%s batch %d: real %lld, expected %lld", what, j,
                 (long long)g->real, (long long)real);
    for (int64_t k = 0; k < size; k++)
      cr_assert_eq(g->idx[k], pl->samples[j * BS + k],
                   "%s batch %d sample %lld: index %lld, "
                   "expected %lld",
                   what, j, (long long)k, (long long)g->idx[k], (long long)pl->samples[j * BS + k]);
  }
}

/* Sample i's x as the toy dataset writes it, then as the noise transform leaves it. */
static void expected_x(int64_t i, bool noise, uint64_t seed, int64_t epoch, float x[3]) {
  x[0] = (float)i;
  x[1] = (float)i + 0.5f;
  x[2] = -(float)i;
  if (noise) {
    em_rng r = em_rng_new(dl_sample_seed(seed, epoch, i));
    x[0] += em_rng_uniform(&r);
    x[2] *= 2;
  }
}

/* Every sample of g holds its index's values, bit for bit. */
static void check_values(const rec *g, bool noise, uint64_t seed, const char *what) {
  for (int64_t k = 0; k < g->size; k++) {
    float x[3];
    expected_x(g->idx[k], noise, seed, g->epoch, x);
    cr_assert(memcmp(x, &g->x[3 * k], sizeof x) == 0,
              "%s: sample %lld x = (%g %g %g), "
              "expected (%g %g %g)",
              what, (long long)g->idx[k], g->x[3 * k], g->x[3 * k + 1], g->x[3 * k + 2], x[0], x[1],
              x[2]);
    cr_assert_eq(g->y[k], g->idx[k], "%s: y %lld for index %lld", what, (long long)g->y[k],
                 (long long)g->idx[k]);
  }
}

static void rec_eq(const rec *a, const rec *b, bool step, const char *what, int i) {
  cr_assert(a->epoch == b->epoch && a->size == b->size && a->real == b->real &&
                a->nfields == b->nfields && (!step || a->step == b->step),
            "%s batch %d: (epoch %lld step %lld size %lld real %lld) vs (%lld %lld %lld %lld)",
            what, i, (long long)a->epoch, (long long)a->step, (long long)a->size,
            (long long)a->real, (long long)b->epoch, (long long)b->step, (long long)b->size,
            (long long)b->real);
  size_t n = (size_t)a->size;
  cr_assert(memcmp(a->idx, b->idx, n * sizeof(int64_t)) == 0, "%s batch %d: indices", what, i);
  cr_assert(memcmp(a->x, b->x, 3 * n * sizeof(float)) == 0, "%s batch %d: x bytes", what, i);
  cr_assert(memcmp(a->y, b->y, n * sizeof(int64_t)) == 0, "%s batch %d: y", what, i);
  cr_assert(memcmp(a->extra, b->extra, n * sizeof(int64_t)) == 0, "%s batch %d: field 2", what, i);
}

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

/* Two epochs of rank `rank` of 3 (which has padding when rank > 0), from a dataset whose get()
 * takes longer for some indices, so that workers finish out of order. */
static int two_epochs(dl_dataset *d, const dl_options *o, rec *out) {
  dl_loader *l = loader(d, o);
  int n = drain(l, out, MAXREC);
  n += drain(l, out + n, MAXREC - n);
  dl_loader_free(l);
  return n;
}

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
