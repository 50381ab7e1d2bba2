/* loader.c: the distributed sampler, the worker pool and dl_next (see dl.h for the semantics).
 *
 * A "plan" is this rank's share of one epoch segment: the epoch's order (a permutation of 0..N-1),
 * the position `start` the segment begins at (0, or where a restored state left off), and this
 * rank's sample list my[k] = order[(start + rank + k*W) mod N]. Batch j is my[j*B, j*B + B).
 *
 * Workers claim batch numbers in order and fill ring slots; batch j lives in slot j % P (P =
 * prefetch) and may be claimed only once batch j - P has been handed out, so at most P batches
 * are in flight and dl_next takes them in order, whatever the number of workers:
 *
 *   claimed:   ... [j-P handed out] [j-P+1 ... j-1 filling/ready] [j claimable] ...
 *   slots:     s[0] s[1] ... s[P-1]            batch j -> s[j % P]
 *
 * A plan change (end of epoch, dl_set_epoch, dl_state_restore) bumps `gen` and waits for fills in
 * progress, so no worker ever touches a freed plan. */
#include "dl.h"
#include "ddp_init.h"
#include "em_env.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum { SLOT_EMPTY, SLOT_FILLING, SLOT_READY, SLOT_FAILED } slot_state;

typedef struct {
  slot_state state;
  int64_t j; /* batch number held or being filled */
  dl_batch b;
  int64_t *indices; /* (B) */
  em_status st;     /* SLOT_FAILED: the error */
  char msg[1024];
} slot;

struct dl_loader {
  dl_dataset *ds;
  dl_options opt;
  int rank, world, prefetch;
  int64_t n; /* dataset length */
  bool pinned;
  /* plan (changed only with no fill in progress) */
  int64_t epoch, start;
  int64_t *order;   /* (n) the epoch's order */
  int64_t *my;      /* (cap n / W + 1) this rank's samples */
  int64_t count;    /* samples in my */
  int64_t real;     /* of which real (the first `real`: padding comes last) */
  int64_t nbatches; /* batches in the plan */
  int64_t next;     /* next batch dl_next hands out */
  /* workers */
  pthread_mutex_t mu;
  pthread_cond_t work_cv, ready_cv;
  pthread_t *threads;
  int nthreads;
  slot *slots;
  int64_t claim;  /* next batch a worker may claim */
  int filling;    /* fills in progress */
  uint64_t gen;   /* plan generation */
  bool stop;
  /* consumer */
  dl_batch held;         /* handed to the user, released at the next call */
  int64_t *held_indices; /* (B) held.indices: the slot's buffer is refilled while the user reads */
  em_status status;
  char msg[1024];
};

/* ---- small helpers ----------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x) { /* splitmix64's finalizer */
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t dl_sample_seed(uint64_t seed, int64_t epoch, int64_t index) {
  return mix64(mix64(mix64(seed) ^ (uint64_t)epoch) ^ (uint64_t)index);
}

static void batch_release(dl_batch *b) {
  for (int f = 0; f < DL_MAX_FIELDS; f++) em_release(b->fields[f]);
  int64_t *keep = (int64_t *)b->indices;
  memset(b, 0, sizeof *b);
  b->indices = keep; /* the slot's index buffer stays with the slot */
}

static void deadline_after(struct timespec *ts, double s) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  double whole = (double)(time_t)s;
  ts->tv_sec += (time_t)s;
  ts->tv_nsec += (long)((s - whole) * 1e9);
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

/* ---- the plan ------------------------------------------------------------------------------ */

/* Builds the plan for `epoch` from position `start` (0 <= start <= n). Caller holds no fills. */
static void plan_build(dl_loader *l, int64_t epoch, int64_t start) {
  const dl_options *o = &l->opt;
  l->epoch = epoch;
  l->start = start;
  if (o->shuffle) {
    em_rng r = em_rng_new(o->seed + (uint64_t)epoch);
    em_rng_permutation(&r, l->order, l->n);
  } else {
    for (int64_t i = 0; i < l->n; i++) l->order[i] = i;
  }
  int64_t m = l->n - start, w = l->world, r = l->rank;
  int64_t per; /* samples this rank takes */
  if (o->exact)
    per = r < m ? (m - r + w - 1) / w : 0;
  else if (o->drop_last)
    per = m / w / o->batch * o->batch; /* the short last batch is dropped too */
  else
    per = (m + w - 1) / w;
  l->count = per;
  l->real = 0;
  for (int64_t k = 0; k < per; k++) {
    int64_t p = r + k * w; /* position in the segment */
    l->my[k] = l->order[(start + p) % l->n];
    l->real += p < m;
  }
  int64_t b = o->batch;
  l->nbatches = (per + b - 1) / b;
  l->next = 0;
  l->claim = 0;
}

/* Stops every fill of the current plan and empties the slots. Called with l->mu held. */
static em_status plan_quiesce(dl_loader *l) {
  l->gen++;
  struct timespec dl;
  deadline_after(&dl, l->opt.timeout_s);
  while (l->filling > 0) {
    if (pthread_cond_timedwait(&l->ready_cv, &l->mu, &dl) == ETIMEDOUT)
      return em_set_error(EM_ERR_TIMEOUT,
                          "data loader: %d worker(s) still filling a batch after %.0f s (a "
                          "dataset get or a hook does not return)",
                          l->filling, l->opt.timeout_s);
  }
  for (int s = 0; s < l->prefetch; s++) {
    batch_release(&l->slots[s].b);
    l->slots[s].state = SLOT_EMPTY;
  }
  return EM_OK;
}

/* Replaces the plan (end of epoch, set_epoch, restore) and wakes the workers. The seed changes
 * only here, with no fill in progress (fills read it for the transform's rng). */
static em_status plan_switch(dl_loader *l, uint64_t seed, int64_t epoch, int64_t start) {
  batch_release(&l->held);
  pthread_mutex_lock(&l->mu);
  em_status st = plan_quiesce(l);
  if (st == EM_OK) {
    l->opt.seed = seed;
    plan_build(l, epoch, start);
  }
  pthread_cond_broadcast(&l->work_cv);
  pthread_mutex_unlock(&l->mu);
  return st;
}

/* ---- filling a batch ---------------------------------------------------------------------- */

/* Fills s->b with batch j, whose sample indices are s->indices[0, size). Runs on a worker (or on
 * the caller's thread, with its scopes hidden). Returns a status; the message is the thread's. */
static em_status fill(dl_loader *l, slot *s, int64_t j, int64_t size, int64_t real, int64_t epoch) {
  dl_dataset *d = l->ds;
  int nf = dl_dataset_nfields(d);
  dl_batch *b = &s->b;
  b->nfields = nf;
  b->size = size;
  b->real = real;
  b->step = j;
  b->epoch = epoch;
  b->indices = s->indices;
  unsigned char *base[DL_MAX_FIELDS];
  size_t row[DL_MAX_FIELDS];
  for (int f = 0; f < nf; f++) {
    const dl_field *fd = dl_dataset_field(d, f);
    int64_t shape[EM_MAX_DIMS] = {size};
    memcpy(shape + 1, fd->shape, (size_t)fd->ndim * sizeof *shape);
    b->fields[f] = l->pinned ? em_empty_pinned(fd->dtype, fd->ndim + 1, shape)
                             : em_empty(fd->dtype, fd->ndim + 1, shape);
    if (!b->fields[f]) return em_last_status();
    base[f] = em_data(b->fields[f]);
    row[f] = dl_field_bytes(fd);
  }
  for (int64_t i = 0; i < size; i++) {
    void *out[DL_MAX_FIELDS];
    for (int f = 0; f < nf; f++) out[f] = base[f] + (size_t)i * row[f];
    em_status st = dl_dataset_get(d, s->indices[i], out);
    if (st != EM_OK) return st;
    if (l->opt.transform) {
      em_rng r = em_rng_new(dl_sample_seed(l->opt.seed, epoch, s->indices[i]));
      st = l->opt.transform(l->opt.transform_ctx, out, dl_dataset_field(d, 0), nf, &r,
                            s->indices[i]);
      if (st != EM_OK) {
        char why[900]; /* em_set_error writes the buffer em_last_error returns: copy first */
        snprintf(why, sizeof why, "%s", em_last_error());
        return em_set_error(st, "data loader: transform failed on sample %lld: %s",
                            (long long)s->indices[i], why);
      }
    }
  }
  if (l->opt.collate) {
    em_status st = l->opt.collate(l->opt.collate_ctx, b);
    if (st != EM_OK) {
      char why[900];
      snprintf(why, sizeof why, "%s", em_last_error());
      return em_set_error(st, "data loader: collate failed on batch %lld of epoch %lld: %s",
                          (long long)j, (long long)epoch, why);
    }
    if (b->nfields < 0 || b->nfields > DL_MAX_FIELDS)
      return em_set_error(EM_ERR_INVALID, "data loader: collate set nfields to %d (0..%d)",
                          b->nfields, DL_MAX_FIELDS);
  }
  b->x = b->fields[0];
  b->y = b->fields[1];
  return EM_OK;
}

/* Claims batch j of the plan into its slot: copies the indices. Called with l->mu held. */
static slot *claim(dl_loader *l, int64_t j, int64_t *size, int64_t *real) {
  slot *s = &l->slots[j % l->prefetch];
  int64_t b = l->opt.batch, lo = j * b;
  *size = l->count - lo < b ? l->count - lo : b;
  *real = l->real - lo < 0 ? 0 : l->real - lo < *size ? l->real - lo : *size;
  memcpy(s->indices, l->my + lo, (size_t)*size * sizeof *s->indices);
  s->j = j;
  s->state = SLOT_FILLING;
  return s;
}

static void *worker_main(void *arg) {
  dl_loader *l = arg;
  pthread_mutex_lock(&l->mu);
  while (!l->stop) {
    int64_t j = l->claim;
    if (j >= l->nbatches || j >= l->next + l->prefetch) {
      pthread_cond_wait(&l->work_cv, &l->mu); /* idle until a batch is handed out or stop */
      continue;
    }
    l->claim++;
    int64_t size, real, epoch = l->epoch;
    slot *s = claim(l, j, &size, &real);
    uint64_t gen = l->gen;
    l->filling++;
    pthread_mutex_unlock(&l->mu);

    em_status st = fill(l, s, j, size, real, epoch);

    pthread_mutex_lock(&l->mu);
    l->filling--;
    if (gen != l->gen) {
      batch_release(&s->b); /* the plan changed under us: nobody wants this batch */
    } else if (st == EM_OK) {
      s->state = SLOT_READY;
    } else {
      batch_release(&s->b);
      s->st = st;
      snprintf(s->msg, sizeof s->msg, "%s", em_last_error());
      s->state = SLOT_FAILED;
    }
    pthread_cond_broadcast(&l->ready_cv);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

/* ---- public API --------------------------------------------------------------------------- */

static em_status check_options(const dl_dataset *d, const dl_options *o, int rank, int world) {
  if (!d) return em_set_error(EM_ERR_INVALID, "dl_loader_new: dataset is NULL");
  if (!o) return em_set_error(EM_ERR_INVALID, "dl_loader_new: options are NULL (batch is needed)");
  if (o->batch < 1)
    return em_set_error(EM_ERR_INVALID, "dl_options.batch = %lld: must be >= 1",
                        (long long)o->batch);
  if (o->workers < 0 || o->workers > 256)
    return em_set_error(EM_ERR_INVALID, "dl_options.workers = %d: must be 0..256", o->workers);
  if (o->prefetch < 0 || o->prefetch > 1024)
    return em_set_error(EM_ERR_INVALID, "dl_options.prefetch = %d: must be 0..1024 (0: default)",
                        o->prefetch);
  if (world < 1 || rank < 0 || rank >= world)
    return em_set_error(EM_ERR_INVALID, "dl_options.rank = %d, world = %d: need 0 <= rank < world",
                        rank, world);
  if (o->timeout_s < 0)
    return em_set_error(EM_ERR_INVALID, "dl_options.timeout_s = %g: must be >= 0", o->timeout_s);
  if (o->drop_last && o->exact)
    return em_set_error(EM_ERR_INVALID,
                        "dl_options: drop_last and exact together (exact keeps every sample)");
  if (o->device.kind != EM_CPU)
    return em_set_error(EM_ERR_UNSUPPORTED,
                        "dl_options.device: batches can only go to the CPU (no CUDA tensors yet)");
  if (dl_dataset_len(d) < 1)
    return em_set_error(EM_ERR_INVALID, "dl_loader_new: the dataset is empty");
  return EM_OK;
}

dl_loader *dl_loader_new(dl_dataset *d, const dl_options *opt) {
  int world = opt && opt->world ? opt->world : ddp_world_size();
  int rank = opt && opt->world ? opt->rank : ddp_rank();
  if (check_options(d, opt, rank, world) != EM_OK) return NULL;
  double timeout_s = opt->timeout_s; /* 0: EMBER_DL_TIMEOUT or its default */
  if (timeout_s == 0 && em_env_num("EMBER_DL_TIMEOUT", &timeout_s) != EM_OK) return NULL;
  dl_loader *l = calloc(1, sizeof *l);
  if (!l) goto nomem;
  l->ds = d;
  l->opt = *opt;
  l->rank = rank;
  l->world = world;
  l->n = dl_dataset_len(d);
  l->opt.timeout_s = timeout_s;
  l->prefetch = opt->prefetch ? opt->prefetch : (opt->workers > 4 ? 2 * opt->workers : 8);
  l->pinned = opt->pin_memory && em_cuda_device_count() > 0;
  l->order = malloc((size_t)l->n * sizeof *l->order);
  l->my = malloc((size_t)(l->n / world + 1) * sizeof *l->my);
  l->slots = calloc((size_t)l->prefetch, sizeof *l->slots);
  l->held_indices = malloc((size_t)opt->batch * sizeof(int64_t));
  if (!l->order || !l->my || !l->slots || !l->held_indices) goto nomem;
  for (int s = 0; s < l->prefetch; s++) {
    l->slots[s].indices = malloc((size_t)opt->batch * sizeof(int64_t));
    if (!l->slots[s].indices) goto nomem;
    l->slots[s].b.indices = l->slots[s].indices;
  }
  pthread_mutex_init(&l->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&l->ready_cv, &ca);
  pthread_cond_init(&l->work_cv, NULL);
  pthread_condattr_destroy(&ca);
  plan_build(l, 0, 0);
  if (opt->workers > 0) {
    l->threads = calloc((size_t)opt->workers, sizeof *l->threads);
    if (!l->threads) goto nomem;
    for (int t = 0; t < opt->workers; t++) {
      int rc = pthread_create(&l->threads[t], NULL, worker_main, l);
      if (rc != 0) {
        em_set_error(EM_ERR_NOMEM, "dl_loader_new: cannot start worker %d: %s", t, strerror(rc));
        dl_loader_free(l);
        return NULL;
      }
      l->nthreads++;
    }
  }
  return l;
nomem:
  em_set_error(EM_ERR_NOMEM, "dl_loader_new: out of memory for %lld samples",
               (long long)(d ? dl_dataset_len(d) : 0));
  if (l && l->slots)
    for (int s = 0; s < l->prefetch; s++) free(l->slots[s].indices);
  if (l) {
    free(l->slots);
    free(l->order);
    free(l->my);
    free(l->threads);
    free(l->held_indices);
    if (l->slots) { /* the mutex was set up only past the slot allocations */
      pthread_mutex_destroy(&l->mu);
      pthread_cond_destroy(&l->ready_cv);
      pthread_cond_destroy(&l->work_cv);
    }
  }
  free(l);
  return NULL;
}

void dl_loader_free(dl_loader *l) {
  if (!l) return;
  pthread_mutex_lock(&l->mu);
  l->stop = true;
  l->gen++;
  pthread_cond_broadcast(&l->work_cv);
  pthread_mutex_unlock(&l->mu);
  for (int t = 0; t < l->nthreads; t++) pthread_join(l->threads[t], NULL);
  batch_release(&l->held);
  for (int s = 0; s < l->prefetch; s++) {
    batch_release(&l->slots[s].b);
    free(l->slots[s].indices);
  }
  pthread_mutex_destroy(&l->mu);
  pthread_cond_destroy(&l->ready_cv);
  pthread_cond_destroy(&l->work_cv);
  free(l->slots);
  free(l->threads);
  free(l->order);
  free(l->my);
  free(l->held_indices);
  free(l);
}

static bool fail_with(dl_loader *l, em_status st, const char *msg) {
  l->status = st;
  snprintf(l->msg, sizeof l->msg, "%s", msg);
  em_set_error(st, "%s", l->msg);
  return false;
}

/* Moves slot s's batch to l->held (with its own copy of the indices) and returns it. */
static dl_batch hand_out(dl_loader *l, slot *s) {
  l->held = s->b;
  memcpy(l->held_indices, s->indices, (size_t)s->b.size * sizeof *s->indices);
  l->held.indices = l->held_indices;
  memset(&s->b, 0, sizeof s->b);
  s->b.indices = s->indices;
  s->state = SLOT_EMPTY;
  l->next++;
  return l->held;
}

/* Without workers: fill the batch on this thread, its scopes hidden (the batch is the loader's). */
static bool next_inline(dl_loader *l, dl_batch *out) {
  int64_t size, real;
  slot *s = claim(l, l->next, &size, &real);
  em_scope_saved saved = em_scope_suspend();
  em_status st = fill(l, s, l->next, size, real, l->epoch);
  em_scope_resume(saved);
  if (st != EM_OK) {
    batch_release(&s->b);
    return fail_with(l, st, em_last_error());
  }
  *out = hand_out(l, s);
  return true;
}

bool dl_next(dl_loader *l, dl_batch *out) {
  memset(out, 0, sizeof *out);
  if (!l) {
    em_set_error(EM_ERR_INVALID, "dl_next: loader is NULL");
    return false;
  }
  if (l->status != EM_OK) {
    em_set_error(l->status, "%s", l->msg);
    return false;
  }
  batch_release(&l->held);
  if (l->next >= l->nbatches) { /* end of the epoch: the next call starts the next one */
    em_status st = plan_switch(l, l->opt.seed, l->epoch + 1, 0);
    if (st != EM_OK) fail_with(l, st, em_last_error());
    return false;
  }
  if (l->nthreads == 0) return next_inline(l, out);

  pthread_mutex_lock(&l->mu);
  slot *s = &l->slots[l->next % l->prefetch];
  struct timespec dl;
  deadline_after(&dl, l->opt.timeout_s);
  while (!(s->j == l->next && (s->state == SLOT_READY || s->state == SLOT_FAILED))) {
    if (pthread_cond_timedwait(&l->ready_cv, &l->mu, &dl) == ETIMEDOUT) {
      pthread_mutex_unlock(&l->mu);
      char m[256];
      snprintf(m, sizeof m,
               "dl_next: batch %lld of epoch %lld not ready after %.0f s (%d workers; a dataset "
               "get or hook is stuck)",
               (long long)l->next, (long long)l->epoch, l->opt.timeout_s, l->nthreads);
      return fail_with(l, EM_ERR_TIMEOUT, m);
    }
  }
  if (s->state == SLOT_FAILED) {
    s->state = SLOT_EMPTY;
    pthread_mutex_unlock(&l->mu);
    return fail_with(l, s->st, s->msg);
  }
  *out = hand_out(l, s);
  pthread_cond_broadcast(&l->work_cv);
  pthread_mutex_unlock(&l->mu);
  return true;
}

em_status dl_status(const dl_loader *l) { return l ? l->status : EM_ERR_INVALID; }
int64_t dl_epoch(const dl_loader *l) { return l ? l->epoch : -1; }
int64_t dl_len(const dl_loader *l) { return l ? l->nbatches : 0; }
int64_t dl_samples(const dl_loader *l) { return l ? l->count : 0; }
int64_t dl_real_samples(const dl_loader *l) { return l ? l->real : 0; }

em_status dl_set_epoch(dl_loader *l, int64_t epoch) {
  if (!l) return em_set_error(EM_ERR_INVALID, "dl_set_epoch: loader is NULL");
  if (epoch < 0 || epoch == INT64_MAX) /* the epoch's end takes epoch + 1 */
    return em_set_error(EM_ERR_INVALID, "dl_set_epoch: epoch %lld is %s", (long long)epoch,
                        epoch < 0 ? "negative" : "out of range");
  return plan_switch(l, l->opt.seed, epoch, 0);
}

dl_state dl_state_save(const dl_loader *l) {
  dl_state s = {.seed = l->opt.seed, .epoch = l->epoch, .dataset_len = l->n,
                .shuffle = l->opt.shuffle};
  int64_t pos = l->start + l->next * l->opt.batch * l->world;
  s.position = pos < l->n ? pos : l->n;
  if (l->next >= l->nbatches && l->next > 0) { /* all handed out: the epoch is done */
    s.epoch++;
    s.position = 0;
  }
  return s;
}

em_status dl_state_restore(dl_loader *l, const dl_state *s) {
  if (!l || !s) return em_set_error(EM_ERR_INVALID, "dl_state_restore: NULL argument");
  if (s->dataset_len != l->n)
    return em_set_error(EM_ERR_INVALID,
                        "dl_state_restore: the state is for a dataset of %lld samples, this "
                        "loader's has %lld",
                        (long long)s->dataset_len, (long long)l->n);
  if (s->shuffle != l->opt.shuffle)
    return em_set_error(EM_ERR_INVALID, "dl_state_restore: the state was saved with shuffle %s, "
                                        "this loader has shuffle %s",
                        s->shuffle ? "on" : "off", l->opt.shuffle ? "on" : "off");
  /* epoch + 1 is taken at the epoch's end: INT64_MAX has no next (found by fuzz_loader_state) */
  if (s->epoch < 0 || s->epoch == INT64_MAX || s->position < 0 || s->position > l->n)
    return em_set_error(EM_ERR_INVALID,
                        "dl_state_restore: epoch %lld position %lld out of range (0..%lld)",
                        (long long)s->epoch, (long long)s->position, (long long)l->n);
  if (s->position == l->n) return plan_switch(l, s->seed, s->epoch + 1, 0);
  return plan_switch(l, s->seed, s->epoch, s->position);
}
