/* options.c: ember-train's option table. Every key is declared here once, with its type, its
 * default (as YAML text), its range or choices and its doc line; train_opts_read reads the table
 * from the config, train_opts_print prints it back (--print-config), and docs/ember-train.md
 * documents the same keys (a test checks that every key printed is documented).
 *
 * Keys whose default is computed (data.dir, train.metrics) have def NULL; train_opts_read fills
 * them in after the table has been read. */
#include "options.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "dl.h"
#include "dl_idx.h"

typedef enum { T_INT, T_NUM, T_BOOL, T_STR, T_ENUM, T_LIST } opt_type;

typedef struct {
  const char *key;
  opt_type type;
  const char *def;            /* YAML text of the default; NULL: computed (see the doc) */
  double lo, hi;              /* T_INT, T_NUM, T_LIST items: inclusive range */
  const char *const *choices; /* T_ENUM: NULL-terminated */
  size_t off;                 /* the field in train_opts */
  const char *doc;
} opt_spec;

static const char *const models[] = {"mlp", "cnn", "resnet_cifar", "resnet18", "char_rnn",
                                     "gpt", NULL};
static const char *const datasets[] = {"fmnist", "tokens", "text", NULL};
static const char *const optims[] = {"sgd", "adam", "adamw", NULL};
static const char *const schedules[] = {"none", "step", "cosine", NULL};
static const char *const compressions[] = {"none", "bf16", "fp16", NULL};
static const char *const devices[] = {"auto", "cpu", "cuda", NULL}; /* train_device */
static const char *const resumes[] = {"auto", "never", NULL};

#define F(field) offsetof(train_opts, field)
#define BIG 1e15 /* "no upper bound" for counts (exact in a double) */

static const opt_spec table[] = {
    {"model.name", T_ENUM, "mlp", 0, 0, models, F(model),
     "images: mlp (784-hidden-10, ReLU), cnn (em_small_cnn), resnet_cifar (em_resnet_cifar), "
     "resnet18 (em_resnet18); tokens: char_rnn (em_char_rnn, LSTM), gpt (em_gpt)"},
    {"model.hidden", T_LIST, "[256, 128]", 1, 65536, NULL, F(hidden),
     "mlp hidden layer widths (up to 8 layers; [] = a linear model)"},
    {"model.dropout", T_NUM, "0", 0, 0.95, NULL, F(dropout),
     "mlp: dropout after each hidden ReLU; gpt: in the embeddings, attention and residuals"},
    {"model.depth", T_INT, "20", 8, 1000, NULL, F(depth),
     "resnet_cifar: depth 6n+2 (20, 32, 44, 56, 110)"},
    {"model.width", T_INT, "128", 4, 16384, NULL, F(width),
     "char_rnn: LSTM hidden size; gpt: embedding width (n_embd)"},
    {"model.layers", T_INT, "2", 1, 256, NULL, F(layers),
     "char_rnn: stacked LSTM cells; gpt: transformer blocks (n_layer)"},
    {"model.heads", T_INT, "4", 1, 256, NULL, F(heads),
     "gpt: attention heads (model.width must be a multiple)"},
    {"model.vocab", T_INT, "0", 0, 65536, NULL, F(vocab),
     "char_rnn, gpt: vocabulary; 0 = 256 (text: bytes) or 50257 (tokens: GPT-2's)"},

    {"data.dataset", T_ENUM, "fmnist", 0, 0, datasets, F(dataset),
     "fmnist (images, labels); tokens (llm.c token shards); text (files as byte tokens)"},
    {"data.dir", T_STR, NULL, 0, 0, NULL, F(data_dir),
     "directory of the IDX .gz files (default: the Debian package's, dl_fmnist_dir())"},
    {"data.path", T_STR, "''", 0, 0, NULL, F(data_path),
     "text: the file, or a glob of files; tokens: the training shards' glob"},
    {"data.val_path", T_STR, "''", 0, 0, NULL, F(val_path),
     "tokens: the validation shards' glob ('' = no validation)"},
    {"data.val_fraction", T_NUM, "0.1", 0.01, 0.5, NULL, F(val_fraction),
     "text: the end of the text held out for validation"},
    {"data.seq_len", T_INT, "64", 1, 65536, NULL, F(seq_len),
     "text, tokens: tokens per sequence (gpt: also its context, block_size)"},
    {"data.batch", T_INT, "64", 1, 65536, NULL, F(batch),
     "training batch per rank (global batch = batch x ranks)"},
    {"data.eval_batch", T_INT, "1000", 1, 65536, NULL, F(eval_batch), "evaluation batch per rank"},
    {"data.workers", T_INT, "1", 0, 64, NULL, F(workers),
     "loader worker threads per rank (0: load on the training thread)"},
    {"data.augment.flip", T_BOOL, "false", 0, 0, NULL, F(flip),
     "random horizontal flip of training images (p = 0.5)"},
    {"data.augment.crop_pad", T_INT, "0", 0, 8, NULL, F(crop_pad),
     "random crop after zero padding by this many pixels (0 = off)"},

    {"optim.name", T_ENUM, "sgd", 0, 0, optims, F(optim), "optimizer (torch.optim semantics)"},
    {"optim.lr", T_NUM, "0", 0, 10, NULL, F(lr),
     "base learning rate; 0 = 0.01 for sgd, 0.001 for adam/adamw (not scaled by ranks)"},
    {"optim.momentum", T_NUM, "0", 0, 0.999, NULL, F(momentum), "sgd momentum"},
    {"optim.nesterov", T_BOOL, "false", 0, 0, NULL, F(nesterov),
     "sgd Nesterov momentum (needs momentum > 0)"},
    {"optim.weight_decay", T_NUM, "0", 0, 1, NULL, F(weight_decay),
     "L2 (sgd, adam) or decoupled (adamw) weight decay"},
    {"optim.beta1", T_NUM, "0.9", 0, 0.9999, NULL, F(beta1), "adam/adamw first-moment decay"},
    {"optim.beta2", T_NUM, "0.999", 0, 0.99999, NULL, F(beta2), "adam/adamw second-moment decay"},
    {"optim.eps", T_NUM, "1e-08", 1e-12, 1, NULL, F(eps), "adam/adamw denominator epsilon"},
    {"optim.schedule", T_ENUM, "none", 0, 0, schedules, F(schedule),
     "learning-rate schedule after warmup: constant, step decay, or cosine to min_lr"},
    {"optim.warmup_steps", T_INT, "0", 0, BIG, NULL, F(warmup_steps),
     "linear warmup over this many steps (0 = none)"},
    {"optim.step_size", T_INT, "1000", 1, BIG, NULL, F(step_size),
     "schedule step: multiply the lr by gamma every step_size steps"},
    {"optim.gamma", T_NUM, "0.1", 1e-6, 1, NULL, F(gamma), "schedule step: the decay factor"},
    {"optim.min_lr", T_NUM, "0", 0, 10, NULL, F(min_lr), "schedule cosine: the final lr"},

    {"train.epochs", T_INT, "10", 1, 1e6, NULL, F(epochs), "passes over the training set"},
    {"train.steps", T_INT, "0", 0, BIG, NULL, F(steps),
     "total optimizer steps; when > 0 it wins over epochs"},
    {"train.seed", T_INT, "0", 0, BIG, NULL, F(seed),
     "seed for the initial weights, the shuffle order, augmentation and dropout"},
    {"train.eval_every", T_INT, "1", 0, 1e6, NULL, F(eval_every),
     "test accuracy (language models: validation loss) every this many epochs, and at the end "
     "(0: only at the end)"},
    {"train.log_every", T_INT, "100", 1, BIG, NULL, F(log_every),
     "progress line every this many steps (when stdout is not a terminal)"},
    {"train.threads", T_INT, "0", 0, 256, NULL, F(threads),
     "compute threads per rank (0: EMBER_THREADS, which ddprun sets, or 1)"},
    {"train.device", T_ENUM, "auto", 0, 0, devices, F(device),
     "where the model, batches and loss live: auto (ddp_init's device), cpu, or cuda"},
    {"train.sample_len", T_INT, "0", 0, 1000000, NULL, F(sample_len),
     "char_rnn, gpt: tokens sampled by rank 0 after training (0 = none)"},
    {"train.temperature", T_NUM, "0.8", 0.01, 10, NULL, F(temperature),
     "sampling temperature (lower: more likely tokens)"},
    {"train.metrics", T_STR, NULL, 0, 0, NULL, F(metrics),
     "metrics directory (metrics.csv, metrics.jsonl, curves.png); default runs/<config "
     "file stem>; '' = none"},

    {"ddp.bucket_cap_mb", T_NUM, "0", 0, 1024, NULL, F(bucket_cap_mb),
     "gradient bucket size in MB (0: EMBER_DDP_BUCKET_MB or 4)"},
    {"ddp.compression", T_ENUM, "none", 0, 0, compressions, F(compression),
     "gradient all-reduce in f32, or compressed to bf16 / fp16"},
    {"ddp.timeout", T_NUM, "0", 0, 1e6, NULL, F(timeout),
     "collective timeout in seconds (0: EMBER_COLL_TIMEOUT or 300)"},
    {"ddp.timeline", T_STR, "''", 0, 0, NULL, F(timeline),
     "Chrome trace per rank ('%r' = rank); '' = EMBER_TIMELINE or none"},

    {"checkpoint.dir", T_STR, "''", 0, 0, NULL, F(ckpt_dir),
     "checkpoint directory ('' = no checkpoints)"},
    {"checkpoint.every", T_INT, "0", 0, BIG, NULL, F(ckpt_every),
     "checkpoint every this many steps, and always at the end (0: only at the end)"},
    {"checkpoint.keep_last", T_INT, "2", 1, 1e6, NULL, F(keep_last),
     "checkpoints kept in the directory (older ones are removed)"},
    {"checkpoint.resume", T_ENUM, "auto", 0, 0, resumes, F(resume),
     "auto: continue from the directory's latest checkpoint if any; never: start afresh"},
};
#define N_OPTS (int)(sizeof table / sizeof table[0])

const char *train_opts_choice(const char *key, int value) {
  for (int i = 0; i < N_OPTS; i++)
    if (!strcmp(table[i].key, key) && table[i].choices) return table[i].choices[value];
  return "?";
}

/* Parses the table's default text (program data: asserted by the tests through --print-config). */
static void parse_default_list(const char *s, train_list *l) {
  l->n = 0;
  for (s = strchr(s, '['); s && *s && *s != ']' && l->n < TRAIN_MAX_HIDDEN;) {
    char *end;
    long long v = strtoll(s + 1, &end, 10);
    if (end == s + 1) break;
    l->v[l->n++] = v;
    s = end;
  }
}

static em_status read_one(em_config *c, const opt_spec *s, train_opts *o) {
  char *p = (char *)o + s->off;
  switch (s->type) {
  case T_INT:
    return em_config_int(c, s->key, strtoll(s->def, NULL, 10), (int64_t)s->lo, (int64_t)s->hi,
                         (int64_t *)p);
  case T_NUM: return em_config_num(c, s->key, strtod(s->def, NULL), s->lo, s->hi, (double *)p);
  case T_BOOL: return em_config_bool(c, s->key, !strcmp(s->def, "true"), (bool *)p);
  case T_STR: {
    const char *def = s->def && !strcmp(s->def, "''") ? "" : s->def;
    return em_config_str(c, s->key, def, (const char **)p);
  }
  case T_ENUM: return em_config_enum(c, s->key, s->def, s->choices, (int *)p);
  case T_LIST: {
    train_list *l = (train_list *)p, d;
    parse_default_list(s->def, &d);
    return em_config_int_list(c, s->key, d.v, d.n, (int64_t)s->lo, (int64_t)s->hi, l->v,
                              TRAIN_MAX_HIDDEN, &l->n);
  }
  }
  return EM_ERR_INVALID;
}

/* An error about a combination of keys, located at key. */
static em_status conflict(em_config *c, const char *key, const char *why) {
  char at[512];
  return em_set_error(EM_ERR_FORMAT, "%s: %s: %s", em_config_where(c, key, at, sizeof at), key,
                      why);
}

em_status train_opts_read(em_config *c, train_opts *o) {
  memset(o, 0, sizeof *o);
  for (int i = 0; i < N_OPTS; i++) {
    em_status st = read_one(c, &table[i], o);
    if (st != EM_OK) return st;
  }
  /* computed defaults */
  if (!o->data_dir || !*o->data_dir) o->data_dir = dl_fmnist_dir();
  if (!o->metrics) {
    const char *name = em_config_name(c), *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    const char *dot = strrchr(base, '.');
    int len = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    snprintf(o->metrics_buf, sizeof o->metrics_buf, "runs/%.*s", len, base);
    o->metrics = o->metrics_buf;
  }
  if (o->lr == 0) o->lr = o->optim == OPTIM_SGD ? 0.01 : 0.001;
  /* combinations */
  if (o->dropout > 0 && o->model != MODEL_MLP && o->model != MODEL_GPT)
    return conflict(c, "model.dropout", "only model.name mlp and gpt have dropout");
  if (train_is_lm(o) != (o->dataset != DATA_FMNIST))
    return conflict(c, "data.dataset",
                    train_is_lm(o) ? "char_rnn and gpt read tokens or text"
                                   : "image models (mlp, cnn, resnet_cifar, resnet18) read fmnist");
  if (o->dataset != DATA_FMNIST && !*o->data_path)
    return conflict(c, "data.path", "text and tokens need the file(s) to read");
  if (o->model == MODEL_RESNET_CIFAR && (o->depth - 2) % 6 != 0)
    return conflict(c, "model.depth", "resnet_cifar's depth is 6n+2 (20, 32, 44, 56, 110)");
  if (o->model == MODEL_GPT && o->width % o->heads != 0)
    return conflict(c, "model.heads", "model.width must be a multiple of model.heads");
  if (o->vocab == 0) o->vocab = o->dataset == DATA_TOKENS ? 50257 : 256;
  if (o->dataset == DATA_TEXT && o->vocab < 256)
    return conflict(c, "model.vocab", "text is byte tokens: at least 256");
  if (o->nesterov && (o->optim != OPTIM_SGD || o->momentum == 0))
    return conflict(c, "optim.nesterov", "needs optim.name sgd and optim.momentum > 0");
  if (o->momentum > 0 && o->optim != OPTIM_SGD)
    return conflict(c, "optim.momentum", "is for optim.name sgd (adam has beta1)");
  return EM_OK;
}

/* Prints a number so that it reads back as the same double. */
static void print_num(FILE *f, double v) {
  char buf[64];
  for (int prec = 6; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) break;
  }
  fputs(buf, f);
}

static void print_str(FILE *f, const char *s) {
  fputc('\'', f);
  for (; *s; s++) {
    if (*s == '\'') fputc('\'', f);
    fputc(*s, f);
  }
  fputc('\'', f);
}

void train_opts_print(const train_opts *o, FILE *f) {
  char section[64] = "";
  fprintf(f, "# ember-train: the effective configuration (defaults, file, overrides).\n");
  for (int i = 0; i < N_OPTS; i++) {
    const opt_spec *s = &table[i];
    const char *p = (const char *)o + s->off;
    const char *dot = strchr(s->key, '.'), *leaf = strrchr(s->key, '.') + 1;
    int slen = (int)(dot - s->key);
    if (strncmp(section, s->key, (size_t)slen) || section[slen]) {
      snprintf(section, sizeof section, "%.*s", slen, s->key);
      fprintf(f, "%s:\n", section);
    }
    int depth = 0;
    for (const char *k = s->key; *k; k++) depth += *k == '.';
    if (depth == 2) { /* data.augment.flip: the sub-mapping's line before its first key */
      const char *mid = dot + 1;
      if (i == 0 || strncmp(table[i - 1].key, s->key, (size_t)(leaf - s->key)))
        fprintf(f, "  %.*s:\n", (int)(leaf - 1 - mid), mid);
    }
    fprintf(f, "%*s# %s", 2 * depth, "", s->doc);
    if (s->type == T_ENUM) {
      fputs(" [", f);
      for (int k = 0; s->choices[k]; k++) fprintf(f, "%s%s", k ? "|" : "", s->choices[k]);
      fputc(']', f);
    } else if ((s->type == T_INT || s->type == T_LIST) && s->hi >= BIG) {
      fprintf(f, " [>= %lld]", (long long)s->lo);
    } else if (s->type == T_INT || s->type == T_LIST) {
      fprintf(f, " [%lld, %lld]", (long long)s->lo, (long long)s->hi);
    } else if (s->type == T_NUM) {
      fputs(" [", f);
      print_num(f, s->lo);
      fputs(", ", f);
      print_num(f, s->hi);
      fputc(']', f);
    }
    if (s->def) fprintf(f, ", default %s", s->def);
    fprintf(f, "\n%*s%s: ", 2 * depth, "", leaf);
    switch (s->type) {
    case T_INT: fprintf(f, "%lld", (long long)*(const int64_t *)p); break;
    case T_NUM: print_num(f, *(const double *)p); break;
    case T_BOOL: fputs(*(const bool *)p ? "true" : "false", f); break;
    case T_STR: print_str(f, *(const char *const *)p ? *(const char *const *)p : ""); break;
    case T_ENUM: fputs(s->choices[*(const int *)p], f); break;
    case T_LIST: {
      const train_list *l = (const train_list *)p;
      fputc('[', f);
      for (int k = 0; k < l->n; k++) fprintf(f, "%s%lld", k ? ", " : "", (long long)l->v[k]);
      fputc(']', f);
      break;
    }
    }
    fputc('\n', f);
  }
}
