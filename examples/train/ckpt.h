/* ckpt.h: ember-train's checkpoints: the model, the optimizer (state, step count, lr) and the
 * job's own state, in one safetensors file per save (runtime/em_checkpoint.h) under
 * checkpoint.dir, so that a killed job resumes exactly where the checkpoint left it.
 *
 *   tensors   model.<name> (every parameter and buffer), optim.<state name>
 *   metadata  optim.step, optim.lr, optim.name (em_ckpt_add_optim), step, epoch,
 *             loader.{seed,epoch,position,dataset_len,shuffle} (dl_state),
 *             rng.{seed,counter} (rank 0's default generator: dropout masks; every rank draws
 *             the same count, see main.c), config_hash, world_size, and the running mean of
 *             the epoch's loss (loss.epoch, loss.n, loss.sum as a hex float: exact), so that a
 *             run resumed mid-epoch, or at its end, reports the same train_loss */
#ifndef EMBER_TRAIN_CKPT_H
#define EMBER_TRAIN_CKPT_H

#include <stdio.h>

#include "ember.h"

typedef struct {
  int64_t step;  /* optimizer steps completed */
  int64_t epoch; /* epoch of the last step (from 1) */
  dl_state loader;
  em_rng rng;
  uint64_t config_hash;
  int64_t world_size;
  int64_t loss_epoch, loss_n; /* the epoch-loss accumulator (absent in a checkpoint: zeros) */
  double loss_sum;
} train_state;

/* Writes dir/ckpt-<step>.safetensors (atomically, then dir/latest; keeps keep_last). Refuses
 * (EM_ERR_INVALID, nothing written) when a model or optimizer tensor holds a NaN or infinity. */
em_status train_ckpt_save(const char *dir, int keep_last, em_module *model, em_optim *opt,
                          const train_state *s);
/* Loads dir's newest intact checkpoint into model, opt and *s: the one latest names or, when it is
 * missing, truncated or corrupt (em_ckpt_read_latest), the newest older one that reads; each file
 * passed over, and the fallback, is reported on log (NULL: silent). *path = its path (malloc'd)
 * or NULL when there is none (EM_OK then, nothing changed). Errors name the file and what
 * differs (a checkpoint of another model is an error, not a reason to fall back). */
em_status train_ckpt_load(const char *dir, em_module *model, em_optim *opt, train_state *s,
                          char **path, FILE *log);

#endif
