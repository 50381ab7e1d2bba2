/* options.h: ember-train's configuration, read from the job's YAML file (plus key.sub=value
 * overrides) through one table of options (options.c): each key declared once with its type,
 * default, range and doc line. The same table reads the file, prints the effective configuration
 * (--print-config) and is what docs/ember-train.md documents. */
#ifndef EMBER_TRAIN_OPTIONS_H
#define EMBER_TRAIN_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "em_config.h"

#define TRAIN_MAX_HIDDEN 8

typedef enum { MODEL_MLP = 0, MODEL_CNN = 1 } train_model;
typedef enum { OPTIM_SGD = 0, OPTIM_ADAM = 1, OPTIM_ADAMW = 2 } train_optim;
typedef enum { SCHED_NONE = 0, SCHED_STEP = 1, SCHED_COSINE = 2 } train_schedule;
typedef enum { RESUME_AUTO = 0, RESUME_NEVER = 1 } train_resume;

typedef struct {
  int64_t v[TRAIN_MAX_HIDDEN];
  int n;
} train_list;

/* The job's settings. Strings are owned by the em_config they were read from (or static). */
typedef struct {
  /* model */
  int model; /* train_model */
  train_list hidden;
  double dropout;
  /* data */
  int dataset;          /* 0: fmnist */
  const char *data_dir; /* resolved: dl_fmnist_dir() when absent */
  int64_t batch, eval_batch, workers;
  bool flip;
  int64_t crop_pad;
  /* optim */
  int optim; /* train_optim */
  double lr; /* resolved: 0.01 (sgd) / 0.001 (adam, adamw) when 0 */
  double momentum, weight_decay, beta1, beta2, eps;
  bool nesterov;
  int schedule; /* train_schedule */
  int64_t warmup_steps, step_size;
  double gamma, min_lr;
  /* train */
  int64_t epochs, steps, seed, eval_every, log_every, threads;
  const char *metrics; /* resolved: "runs/<config file stem>" when absent; "" = none */
  /* ddp */
  double bucket_cap_mb;
  int compression; /* ddp_compression */
  double timeout;
  const char *timeline;
  /* checkpoint */
  const char *ckpt_dir; /* "" = no checkpoints */
  int64_t ckpt_every, keep_last;
  int resume; /* train_resume */
  /* private: the resolved metrics directory */
  char metrics_buf[1024];
} train_opts;

/* Reads every option from c (defaults for absent keys), resolves the computed defaults and checks
 * combinations of keys. EM_OK, or EM_ERR_FORMAT with a message naming the key and its line. */
em_status train_opts_read(em_config *c, train_opts *o);
/* Prints o as a YAML file with a comment per key (doc, range, default). */
void train_opts_print(const train_opts *o, FILE *f);
/* The name of enum option key's value (e.g. "optim.name" -> "sgd"). */
const char *train_opts_choice(const char *key, int value);

#endif
