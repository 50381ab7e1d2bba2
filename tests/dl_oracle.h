/* dl_oracle.h: shared by the data-loader suites (test_dl_loader.c, test_dl_hooks.c): a toy
 * dataset, an independent re-implementation of the sampler from dl.h's contract, and recorded
 * batches.
 *
 * The oracle is rebuilt here from dl.h's contract, not from loader.c: epoch e's order is
 * em_rng_permutation(em_rng_new(seed + e)) (or 0..N-1); from position P with M = N - P samples
 * left, rank r of W takes positions q = r, r+W, ... of the rest, sample order[(P + q) mod N]
 * (q >= M is padding that wraps to the start of the order), ceil(M/W) of them (floor and whole
 * batches with drop_last; only q < M in exact mode). A toy dataset's sample i is x = {i, i+0.5, -i}
 * (f32) and y = i (i64), so every batch can be checked value by value against its indices.
 * Several loaders over one dataset simulate the ranks of a world in one process. */
#ifndef EMBER_TESTS_DL_ORACLE_H
#define EMBER_TESTS_DL_ORACLE_H

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

static inline int64_t toy_len(void *ctx) { return ((toy_ctx *)ctx)->n; }

static inline em_status toy_get(void *ctx, int64_t i, void *const out[]) {
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

static inline void toy_close(void *ctx) { free(ctx); }

static inline dl_dataset *toy_new(int64_t n, int64_t fail_index, long sleep_us) {
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

static inline dl_options opts(bool shuffle, uint64_t seed, int rank, int world, int workers) {
  return (dl_options){.batch = BS,
                      .shuffle = shuffle,
                      .seed = seed,
                      .rank = rank,
                      .world = world,
                      .workers = workers,
                      .timeout_s = 30};
}

static inline dl_loader *loader(dl_dataset *d, const dl_options *o) {
  dl_loader *l = dl_loader_new(d, o);
  cr_assert_not_null(l, "dl_loader_new(rank %d of %d, workers %d): %s", o->rank, o->world,
                     o->workers, em_last_error());
  cr_assert_eq(dl_status(l), EM_OK);
  return l;
}

static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- the sampler oracle --------------------------------------------------------------------- */

typedef enum { PAD, DROP, EXACT } mode;

static inline void epoch_order(uint64_t seed, int64_t epoch, bool shuffle, int64_t n, int64_t *order) {
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

static inline plan plan_rank(uint64_t seed, int64_t epoch, bool shuffle, int64_t p, int w, int r, mode m) {
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
static inline void take(const dl_batch *b, rec *r) {
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
static inline int drain(dl_loader *l, rec *out, int max) {
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
static inline void collect(dl_loader *l, rec *out, int want) {
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
static inline void expect_plan(const rec *got, int ngot, const plan *pl, int64_t epoch, bool step,
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
static inline void expected_x(int64_t i, bool noise, uint64_t seed, int64_t epoch, float x[3]) {
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
static inline void check_values(const rec *g, bool noise, uint64_t seed, const char *what) {
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

static inline void rec_eq(const rec *a, const rec *b, bool step, const char *what, int i) {
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

/* Two epochs of rank `rank` of 3 (which has padding when rank > 0), from a dataset whose get()
 * takes longer for some indices, so that workers finish out of order. */
static inline int two_epochs(dl_dataset *d, const dl_options *o, rec *out) {
  dl_loader *l = loader(d, o);
  int n = drain(l, out, MAXREC);
  n += drain(l, out + n, MAXREC - n);
  dl_loader_free(l);
  return n;
}

#endif
