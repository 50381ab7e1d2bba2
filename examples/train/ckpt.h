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
/* Reads dir's newest intact checkpoint without applying it: the one latest names or, when it is
 * missing, truncated or corrupt (em_ckpt_read_latest), the newest older one that reads; each file
 * passed over, and the fallback, is reported on log (NULL: silent). *path = its path (malloc'd),
 * *step = its step. NULL with EM_OK in *st when dir holds none (*path NULL, *step -1); NULL with
 * an error naming dir when none reads or the one read has no step. Caller frees. */
em_ckpt *train_ckpt_find(const char *dir, char **path, int64_t *step, em_status *st, FILE *log);
/* Reads dir/ckpt-<step>.safetensors (checksums verified): the checkpoint of one given step, for a
 * rank that must resume where the others do. *path = its path (malloc'd). NULL on an error naming
 * the file. Caller frees. */
em_ckpt *train_ckpt_read_step(const char *dir, int64_t step, char **path);
/* Loads c (read from path) into model, opt and *s. Errors name the file and what differs (a
 * checkpoint of another model is an error); nothing is changed then. */
em_status train_ckpt_apply(const em_ckpt *c, const char *path, em_module *model, em_optim *opt,
                           train_state *s);

#endif
