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

typedef enum {
  MODEL_MLP = 0,
  MODEL_CNN = 1,
  MODEL_RESNET_CIFAR = 2,
  MODEL_RESNET18 = 3,
  MODEL_CHAR_RNN = 4,
  MODEL_GPT = 5
} train_model;
typedef enum { DATA_FMNIST = 0, DATA_TOKENS = 1, DATA_TEXT = 2 } train_dataset;
typedef enum { OPTIM_SGD = 0, OPTIM_ADAM = 1, OPTIM_ADAMW = 2 } train_optim;
typedef enum { SCHED_NONE = 0, SCHED_STEP = 1, SCHED_COSINE = 2 } train_schedule;
typedef enum { RESUME_AUTO = 0, RESUME_NEVER = 1 } train_resume;
typedef enum { DEVICE_AUTO = 0, DEVICE_CPU = 1, DEVICE_CUDA = 2 } train_device;

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
  int64_t depth;         /* resnet_cifar */
  int64_t width, layers; /* char_rnn, gpt */
  int64_t heads;         /* gpt */
  int64_t vocab;         /* char_rnn, gpt; resolved: 256 (text) or 50257 (tokens) when 0 */
  /* data */
  int dataset;                      /* train_dataset */
  const char *data_dir;             /* resolved: dl_fmnist_dir() when absent */
  const char *data_path, *val_path; /* text, tokens */
  double val_fraction;              /* text */
  int64_t seq_len;                  /* text, tokens */
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
  int device;   /* train_device */
  em_device on; /* train.device resolved by ember-train's setup (not a key): the model's device */
  int64_t sample_len; /* char_rnn, gpt: tokens sampled at the end (rank 0) */
  double temperature;
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
/* Whether o's model is a language model (char_rnn, gpt: token windows, a validation loss) rather
 * than an image classifier (test accuracy). */
static inline bool train_is_lm(const train_opts *o) {
  return o->model == MODEL_CHAR_RNN || o->model == MODEL_GPT;
}

#endif
