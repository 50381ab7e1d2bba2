/* ckpt.c: ember-train's checkpoints (ckpt.h) on top of em_checkpoint.h. */
#include "ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_checkpoint.h"

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
  if (st == EM_OK) st = em_ckpt_save_dir(c, dir, s->step, keep_last);
  em_ckpt_free(c);
  return st;
}

em_status train_ckpt_load(const char *dir, em_module *model, em_optim *opt, train_state *s,
                          char **path) {
  em_status st = EM_OK;
  *path = em_ckpt_latest(dir, &st);
  if (!*path) return st;
  em_ckpt *c = em_ckpt_read(*path);
  if (!c) return em_last_status();
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
    if (!strstr(msg, *path)) em_set_error(st, "%s: %s", *path, msg);
  } else {
    *s = t;
  }
  em_ckpt_free(c);
  return st;
}
