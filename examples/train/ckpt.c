/* ckpt.c: ember-train's checkpoints (ckpt.h) on top of em_checkpoint.h. */
#include "ckpt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_checkpoint.h"

/* The first tensor of c holding a NaN or an infinity, or NULL. F32, F16 and BF16 are checked
 * (the only floating dtypes a checkpoint holds); *at = the flat index of the first such value. */
static const char *first_non_finite(const em_ckpt *c, int64_t *at) {
  for (int i = 0, n = em_ckpt_count(c); i < n; i++) {
    const char *name = em_ckpt_name_at(c, i);
    const em_tensor *t = em_ckpt_get(c, name);
    int64_t numel = em_numel(t);
    for (int64_t k = 0; k < numel; k++) {
      bool bad = false;
      if (t->dtype == EM_F32)
        bad = !isfinite(((const float *)em_data(t))[k]);
      else if (t->dtype == EM_F16)
        bad = (((const uint16_t *)em_data(t))[k] & 0x7c00) == 0x7c00; /* exponent all ones */
      else if (t->dtype == EM_BF16)
        bad = (((const uint16_t *)em_data(t))[k] & 0x7f80) == 0x7f80;
      else
        break;
      if (bad) {
        *at = k;
        return name;
      }
    }
  }
  return NULL;
}

/* A model and optimizer on a GPU (train.device) need nothing special: em_ckpt copies device
 * tensors to the host when they are added, and back to the device when they are loaded. */
em_status train_ckpt_save(const char *dir, int keep_last, em_module *model, em_optim *opt,
                          const train_state *s) {
  em_ckpt *c = em_ckpt_new();
  if (!c) return em_last_status();
  em_status st = em_ckpt_add_module(c, "model.", model);
  if (st == EM_OK) st = em_ckpt_add_optim(c, "optim.", opt);
  struct {
    const char *key;
    int64_t v;
  } meta[] = {
      {"step", s->step},
      {"epoch", s->epoch},
      {"loader.epoch", s->loader.epoch},
      {"loader.position", s->loader.position},
      {"loader.dataset_len", s->loader.dataset_len},
      {"loader.shuffle", s->loader.shuffle},
      {"world_size", s->world_size},
  };
  for (size_t i = 0; st == EM_OK && i < sizeof meta / sizeof meta[0]; i++)
    st = em_ckpt_set_meta_i64(c, meta[i].key, meta[i].v);
  if (st == EM_OK) st = em_ckpt_set_meta_u64(c, "loader.seed", s->loader.seed);
  if (st == EM_OK) st = em_ckpt_set_meta_u64(c, "rng.seed", s->rng.seed);
  if (st == EM_OK) st = em_ckpt_set_meta_u64(c, "rng.counter", s->rng.counter);
  if (st == EM_OK) st = em_ckpt_set_meta_u64(c, "config_hash", s->config_hash);
  if (st == EM_OK) st = em_ckpt_set_meta(c, "writer", "ember-train");
  if (st == EM_OK) st = em_ckpt_set_meta_i64(c, "loss.epoch", s->loss_epoch);
  if (st == EM_OK) st = em_ckpt_set_meta_i64(c, "loss.n", s->loss_n);
  char sum[64];
  snprintf(sum, sizeof sum, "%a", s->loss_sum); /* hex: the double round-trips exactly */
  if (st == EM_OK) st = em_ckpt_set_meta(c, "loss.sum", sum);
  /* A diverged model is never saved: it would become latest and push good ones out. */
  int64_t at = 0;
  const char *bad = st == EM_OK ? first_non_finite(c, &at) : NULL;
  if (bad)
    st = em_set_error(EM_ERR_INVALID,
                      "%s: not saving step %lld: tensor '%s' holds a non-finite value (element "
                      "%lld); the existing checkpoints are left as they are",
                      dir, (long long)s->step, bad, (long long)at);
  if (st == EM_OK) st = em_ckpt_save_dir(c, dir, s->step, keep_last);
  em_ckpt_free(c);
  return st;
}

/* em_ckpt_read_latest's report of a checkpoint passed over (to the FILE given, if any). */
static void report_skip(const char *path, const char *why, void *arg) {
  if (!arg) return;
  if (strstr(why, path)) /* the message names it already */
    fprintf((FILE *)arg, "ember-train: warning: skipping checkpoint: %s\n", why);
  else
    fprintf((FILE *)arg, "ember-train: warning: skipping checkpoint %s: %s\n", path, why);
  fflush((FILE *)arg);
}

em_ckpt *train_ckpt_find(const char *dir, char **path, int64_t *step, em_status *st, FILE *log) {
  *step = -1;
  em_ckpt *c = em_ckpt_read_latest(dir, path, st, report_skip, log);
  if (!c) return NULL;
  char *named = em_ckpt_latest(dir, NULL); /* what latest names, if anything */
  bool fell_back = !named || strcmp(named, *path);
  free(named);
  if (fell_back && log) {
    fprintf(log, "ember-train: warning: falling back to %s, the newest intact checkpoint\n", *path);
    fflush(log);
  }
  if ((*st = em_ckpt_meta_i64(c, "step", step)) != EM_OK || *step < 0) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", em_last_error()); /* not in place: it is the same buffer */
    *st = em_set_error(EM_ERR_FORMAT, "%s: %s", *path,
                       *st != EM_OK ? msg : "metadata step is negative");
    em_ckpt_free(c);
    free(*path);
    *path = NULL;
    *step = -1;
    return NULL;
  }
  return c;
}

em_ckpt *train_ckpt_read_step(const char *dir, int64_t step, char **path) {
  size_t n = strlen(dir) + 64;
  *path = malloc(n);
  if (!*path) {
    em_set_error(EM_ERR_NOMEM, "%s: out of memory", dir);
    return NULL;
  }
  snprintf(*path, n, "%s/ckpt-%08lld.safetensors", dir, (long long)step); /* em_ckpt_save_dir's */
  return em_ckpt_read(*path);
}

em_status train_ckpt_apply(const em_ckpt *c, const char *path, em_module *model, em_optim *opt,
                           train_state *s) {
  em_status st = EM_OK;
  int64_t shuffle = 0;
  train_state t = {0};
  struct {
    const char *key;
    int64_t *v;
  } meta[] = {
      {"step", &t.step},
      {"epoch", &t.epoch},
      {"loader.epoch", &t.loader.epoch},
      {"loader.position", &t.loader.position},
      {"loader.dataset_len", &t.loader.dataset_len},
      {"loader.shuffle", &shuffle},
      {"world_size", &t.world_size},
  };
  for (size_t i = 0; st == EM_OK && i < sizeof meta / sizeof meta[0]; i++)
    st = em_ckpt_meta_i64(c, meta[i].key, meta[i].v);
  if (st == EM_OK) st = em_ckpt_meta_u64(c, "loader.seed", &t.loader.seed);
  if (st == EM_OK) st = em_ckpt_meta_u64(c, "rng.seed", &t.rng.seed);
  if (st == EM_OK) st = em_ckpt_meta_u64(c, "rng.counter", &t.rng.counter);
  if (st == EM_OK) st = em_ckpt_meta_u64(c, "config_hash", &t.config_hash);
  t.loader.shuffle = shuffle != 0;
  if (st == EM_OK && em_ckpt_meta(c, "loss.sum")) { /* optional: older checkpoints lack it */
    st = em_ckpt_meta_i64(c, "loss.epoch", &t.loss_epoch);
    if (st == EM_OK) st = em_ckpt_meta_i64(c, "loss.n", &t.loss_n);
    t.loss_sum = strtod(em_ckpt_meta(c, "loss.sum"), NULL);
  }
  /* model and optimizer last: each checks everything before it changes anything */
  if (st == EM_OK) st = em_ckpt_load_module(c, "model.", model);
  if (st == EM_OK) st = em_ckpt_load_optim(c, "optim.", opt);
  if (st != EM_OK) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", em_last_error()); /* not in place: it is the same buffer */
    if (!strstr(msg, path)) em_set_error(st, "%s: %s", path, msg);
  } else {
    *s = t;
  }
  return st;
}
