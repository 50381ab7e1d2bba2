/* core/env.c: the table of Ember's environment variables (em_env.h) and their one parser.
 *
 * A row per variable; README.md's "Environment" table is this table by hand, and
 * tests/test_env.c checks that the two agree. Adding a variable: add a row here and one there,
 * then read it with em_env_int / em_env_num / em_env_str where it is used. */
#include "em_env.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const em_env_var table[] = {
    /* CPU device (runtime/cpu/) */
    {"EMBER_THREADS", EM_ENV_INT, "1", 1, 4096, NULL,
     "CPU kernel threads (oneDNN, OpenMP) per process; ddprun sets it to cores / ranks"},
    {"EMBER_CPU_CACHE_MB", EM_ENV_INT, "256", 0, 1048576, NULL,
     "MB of freed CPU blocks kept for reuse (0: none; sanitizer builds keep none)"},
    /* CUDA device (runtime/cuda/) */
    {"EMBER_CUDA_POISON", EM_ENV_INT, "0", 0, 1, NULL,
     "1: new CUDA memory is filled with 0xff (NaN) so that unwritten outputs show (tests)"},
    {"EMBER_CUDA_TF32", EM_ENV_INT, "0", 0, 1, NULL,
     "1: f32 matmuls (cuBLAS) and convolutions (cuDNN) may use TF32 tensor cores (about 1e-3 "
     "relative error); 0: full f32, the CPU's results within rounding"},
    {"EMBER_CUDA_CACHE_MB", EM_ENV_INT, "-1", -1, 1073741824, NULL,
     "MB of freed CUDA blocks kept for reuse per device (-1: no cap, 0: none)"},
    /* bootstrap and communicator (collectives/) */
    {"EMBER_DEVICE", EM_ENV_STR, "auto", 0, 0, "cpu, cuda, auto",
     "ddp_init's device: auto is cuda:(local rank % GPUs) if a GPU is visible, else the CPU"},
    {"EMBER_COLL_TIMEOUT", EM_ENV_NUM, "300", 0.001, 1e7, NULL,
     "seconds a collective may wait before the job is aborted with a report"},
    {"EMBER_COLL_CHUNK_BYTES", EM_ENV_INT, "1048576", 64, 1073741824, NULL,
     "pipelining chunk of allreduce and broadcast"},
    {"EMBER_COLL_SHM", EM_ENV_INT, "1", 0, 1, NULL,
     "1: ranks of one node run collectives through shared memory; 0: through MPI"},
    {"EMBER_COLL_NODE_RANKS", EM_ENV_INT, "0", 0, 2147483647, NULL,
     "testing: cut each node into nodes of this many ranks (must divide its size; 0: as is)"},
    {"EMBER_COLL_WAIT", EM_ENV_STR, "auto", 0, 0, "auto, spin, sleep",
     "how the comm thread waits for an MPI all-reduce: spin inside MPI, or test and sleep (auto: "
     "sleep where ranks outnumber their machine's CPUs)"},
    {"EMBER_COLL_CHECK_EVERY", EM_ENV_INT, "1", -1, 2147483647, NULL,
     "fingerprint-check period in operations; -1 off (0 is an error)"},
    /* data-parallel reducer (runtime/ddp/) */
    {"EMBER_DDP_BUCKET_MB", EM_ENV_NUM, "4", 0.001, 1024, NULL,
     "gradient bucket size in MB when ddp_options.bucket_cap_mb is 0"},
    {"EMBER_DDP_OVERLAP", EM_ENV_STR, "auto", 0, 0, "auto, on, off",
     "bucket all-reduces during backward when ddp_options.overlap is 0 (auto: when the comm "
     "thread has a core of its own)"},
    {"EMBER_TIMELINE", EM_ENV_STR, "", 0, 0, NULL,
     "Chrome trace file per rank (%r: the rank) when ddp_options.timeline is NULL"},
    /* data loader (dataloader/) */
    {"EMBER_DL_TIMEOUT", EM_ENV_NUM, "600", 0.001, 1e7, NULL,
     "seconds dl_next waits for a batch when dl_options.timeout_s is 0"},
    {"EMBER_FMNIST_DIR", EM_ENV_STR, "/usr/share/datasets/fashion-mnist", 0, 0, NULL,
     "the Fashion-MNIST directory (dl_fmnist_dir)"},
    /* set by ddprun, read by ember-train (examples/train/) */
    {"EMBER_RESTART_COUNT", EM_ENV_INT, "0", 0, 1000, NULL,
     "set by ddprun: the attempt number, 0 first"},
    /* set by ddprun's agent, read by the communicator (collectives/progress.c) */
    {"EMBER_PROGRESS_FD", EM_ENV_INT, "-1", -1, 1048576, NULL,
     "set by ddprun's agent: the descriptor of the rank's progress page, where its collectives "
     "say how far they got, for ddprun's stall report (-1: none)"},
    {"EMBER_FAULT_KILL", EM_ENV_STR, "", 0, 0, NULL,
     "testing knob of ember-train: rank=R,step=S makes rank R SIGKILL itself after step S "
     "on attempt 0"},
};
enum { N_VARS = sizeof table / sizeof table[0] };

int em_env_count(void) { return N_VARS; }

const em_env_var *em_env_at(int i) { return i >= 0 && i < N_VARS ? &table[i] : NULL; }

const em_env_var *em_env_find(const char *name) {
  for (int i = 0; name && i < N_VARS; i++)
    if (!strcmp(table[i].name, name)) return &table[i];
  return NULL;
}

/* ---- the parser ------------------------------------------------------------------------------ */
bool em_parse_int(const char *s, int64_t *out) {
  if (!s || !*s || isspace((unsigned char)*s)) return false;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno == ERANGE || *end || end == s) return false;
  *out = v;
  return true;
}

bool em_parse_num(const char *s, double *out) {
  if (!s || !*s || isspace((unsigned char)*s)) return false;
  char *end;
  double v = strtod(s, &end);
  if (*end || end == s || !isfinite(v)) return false;
  *out = v;
  return true;
}

static bool int_in(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  int64_t v;
  if (!em_parse_int(s, &v) || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static bool num_in(const char *s, double lo, double hi, double *out) {
  double v;
  if (!em_parse_num(s, &v) || !(v >= lo && v <= hi)) return false;
  *out = v;
  return true;
}

em_status em_arg_int(const char *what, const char *s, int64_t lo, int64_t hi, int64_t *out) {
  if (int_in(s, lo, hi, out)) return EM_OK;
  return em_set_error(EM_ERR_INVALID, "%s '%s': expected an integer in [%lld, %lld]", what,
                      s ? s : "", (long long)lo, (long long)hi);
}

em_status em_arg_num(const char *what, const char *s, double lo, double hi, double *out) {
  if (num_in(s, lo, hi, out)) return EM_OK;
  return em_set_error(EM_ERR_INVALID, "%s '%s': expected a number in [%.15g, %.15g]", what,
                      s ? s : "", lo, hi);
}

/* ---- the getters ----------------------------------------------------------------------------- */
/* The row of name, which must be declared with this type, and its text: the environment's value,
 * or the default when unset or empty. NULL (error set) for an undeclared name (release build). */
static const em_env_var *lookup(const char *name, em_env_type type, const char **text) {
  const em_env_var *v = em_env_find(name);
  assert(v && v->type == type && "an undeclared environment variable, or the wrong getter");
  if (!v || v->type != type) {
    em_set_error(EM_ERR_INVALID, "%s: not declared as this type in runtime/core/env.c",
                 name ? name : "(null)");
    return NULL;
  }
  const char *e = getenv(name);
  *text = e && *e ? e : v->def;
  return v;
}

em_status em_env_int(const char *name, int64_t *out) {
  const char *text;
  const em_env_var *v = lookup(name, EM_ENV_INT, &text);
  if (!v) return EM_ERR_INVALID;
  if (int_in(text, (int64_t)v->lo, (int64_t)v->hi, out)) return EM_OK;
  return em_set_error(EM_ERR_INVALID, "%s=%s: expected an integer in [%.15g, %.15g]", name, text,
                      v->lo, v->hi);
}

em_status em_env_num(const char *name, double *out) {
  const char *text;
  const em_env_var *v = lookup(name, EM_ENV_NUM, &text);
  if (!v) return EM_ERR_INVALID;
  if (num_in(text, v->lo, v->hi, out)) return EM_OK;
  return em_set_error(EM_ERR_INVALID, "%s=%s: expected a number in [%.15g, %.15g]", name, text,
                      v->lo, v->hi);
}

/* Whether text is one of choices ("cpu, cuda, auto"). */
static bool is_choice(const char *choices, const char *text) {
  size_t n = strlen(text);
  for (const char *c = choices;; c += 2) { /* past ", " */
    size_t len = strcspn(c, ",");
    if (len == n && !strncmp(c, text, n)) return true;
    c += len;
    if (!*c) return false;
  }
}

em_status em_env_str(const char *name, const char **out) {
  const char *text;
  const em_env_var *v = lookup(name, EM_ENV_STR, &text);
  if (!v) return EM_ERR_INVALID;
  if (v->choices && !is_choice(v->choices, text))
    return em_set_error(EM_ERR_INVALID, "%s=%s: expected one of %s", name, text, v->choices);
  *out = text;
  return EM_OK;
}
