/* main.c: ember-train, the YAML-driven training job.
 *
 *   usage: [mpirun -np W] ember-train CONFIG.yaml [key.sub=value ...]
 *          ddprun --config CONFIG.yaml [key.sub=value ...]     (ranks from its launch: section)
 *          ember-train --print-config [CONFIG.yaml] [key.sub=value ...]
 *
 * Reads the job (options.c: every key, its default and range; docs/ember-train.md), trains the
 * model data-parallel over however many ranks it was started with, evaluates test accuracy,
 * writes metrics (metrics.c), checkpoints and resumes (ckpt.c). Exit status: 0 done, 2 a config
 * error (the message names the key and its line), 1 a runtime error.
 *
 * The step loop, per rank:
 *
 *   dl_next -> lr = schedule(step) -> forward, loss -> zero_grad, backward (ddp all-reduces the
 *   gradient buckets) -> em_step -> step++ -> [flush: average the pending losses over the ranks,
 *   rank 0 writes their rows] -> [end of epoch: evaluate] -> [checkpoint] -> [fault injection]
 *
 * Losses are averaged over the ranks in windows (every FLUSH_STEPS steps, and at log points,
 * evaluations, checkpoints and the end), one small all-reduce per window instead of per step;
 * every decision about when to flush depends only on the step, so all ranks agree.
 *
 * Testing knob: EMBER_FAULT_KILL="rank=R,step=S" makes rank R kill itself (SIGKILL) right after
 * step S (its checkpoint, if one is due, included), unless EMBER_RESTART_COUNT is set and not 0
 * (a restarted job runs on). Both are declared with Ember's other variables (em_env.h). */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ckpt.h"
#include "em_config.h"
#include "ember.h"
#include "metrics.h"
#include "model.h"
#include "options.h"

#define EXIT_CONFIG 2
#define EXIT_RUNTIME 1
#define FLUSH_STEPS 50     /* steps between loss all-reduces when stdout is not a terminal */
#define FLUSH_STEPS_TTY 10 /* ... and when it is (the live bar's refresh) */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Before ddp_init: this process's rank from the launcher's environment (to print once). */
static int env_rank(void) {
  const char *names[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
  for (int i = 0; i < 4; i++) {
    const char *v = getenv(names[i]);
    if (v && *v) return atoi(v);
  }
  return 0;
}

static void usage(FILE *f) {
  fprintf(f, "usage: ember-train CONFIG.yaml [key.sub=value ...]\n"
             "       ember-train --print-config [CONFIG.yaml] [key.sub=value ...]\n"
             "Trains the model CONFIG.yaml describes on every rank it was started with (mpirun, "
             "ddprun).\nKeys, defaults and ranges: --print-config, docs/ember-train.md.\n");
}

/* A configuration error: the message once (rank 0), exit 2 everywhere. */
static int config_error(const char *msg) {
  if ((ddp_initialized() ? ddp_rank() : env_rank()) == 0) fprintf(stderr, "ember-train: %s\n", msg);
  if (ddp_initialized()) ddp_finalize();
  return EXIT_CONFIG;
}

/* A runtime error inside the step loop, where the other ranks may be waiting in a collective:
 * one rank alone aborts the job; a world of one exits. */
static void fatal(const char *what) {
  char msg[1200];
  snprintf(msg, sizeof msg, "ember-train: %s: %s", what, em_last_error());
  if (ddp_world_size() > 1) coll_abort(ddp_comm(), msg);
  fprintf(stderr, "%s\n", msg);
  ddp_finalize();
  exit(EXIT_RUNTIME);
}

/* All ranks agree whether each of them is fine (a MIN over the ranks); collective. */
static bool all_ok(bool ok) {
  if (ddp_world_size() == 1) return ok;
  int32_t v = ok;
  coll_buf b = coll_host_buf(&v, 1, EM_I32);
  coll_label("ember-train: every rank ok?");
  if (coll_wait(coll_allreduce(ddp_comm(), b, b, 1, COLL_MIN), 0) != EM_OK) return false;
  return v != 0;
}

/* Whether stdout reaches a terminal. Open MPI gives local ranks a pseudo-terminal for stdout
 * whatever mpirun's own stdout is, so under a launcher the question goes to the parent (mpirun,
 * which starts the local ranks itself): its stdout, seen through /proc. */
static bool stdout_is_terminal(void) {
  if (!isatty(STDOUT_FILENO)) return false;
  if (!getenv("OMPI_COMM_WORLD_SIZE")) return true;
  char link[64], target[256];
  snprintf(link, sizeof link, "/proc/%d/fd/1", (int)getppid());
  ssize_t n = readlink(link, target, sizeof target - 1);
  if (n <= 0) return false;
  target[n] = '\0';
  return !strncmp(target, "/dev/pts/", 9) || !strncmp(target, "/dev/tty", 8);
}

/* The default generator's seed on rank r once the model is built: dropout masks then differ
 * from rank to rank, as they would between the samples of one big batch. Every rank draws as
 * many numbers per step (equal batch sizes), so one counter, checkpointed by rank 0, restores
 * every rank's generator. */
static uint64_t rank_seed(uint64_t seed, int rank) {
  uint64_t z = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(rank + 1));
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* ---- fault injection ------------------------------------------------------------------------ */

typedef struct {
  bool armed;
  int rank;
  int64_t step;
} fault_plan;

static em_status fault_parse(fault_plan *f) {
  memset(f, 0, sizeof *f);
  const char *v;
  int64_t attempt;
  em_status st = em_env_str("EMBER_FAULT_KILL", &v);
  if (st != EM_OK || !*v) return st;
  int r, n = 0;
  long long s;
  if (sscanf(v, "rank=%d,step=%lld%n", &r, &s, &n) != 2 || v[n] || r < 0 || s < 0)
    return em_set_error(EM_ERR_FORMAT, "EMBER_FAULT_KILL='%s': expected rank=R,step=S", v);
  if ((st = em_env_int("EMBER_RESTART_COUNT", &attempt)) != EM_OK) return st;
  f->armed = attempt == 0;
  f->rank = r;
  f->step = s;
  return EM_OK;
}

/* ---- progress -------------------------------------------------------------------------------- */

typedef struct {
  bool tty;
  bool bar_open; /* a live bar is on the last line (a newline ends it) */
  int64_t total, epochs, steps_per_epoch;
  double t0;
} progress;

/* Ends the live bar's line, if one is open, before other output. */
static void progress_newline(progress *p) {
  if (p->bar_open) printf("\n");
  p->bar_open = false;
}

static void fmt_eta(double s, char *buf, size_t cap) {
  if (!(s >= 0) || s > 1e7) s = 0;
  long t = lround(s);
  if (t >= 3600)
    snprintf(buf, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else
    snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
}

/* Rank 0: the live bar (terminal) or a plain line (log point). */
static void progress_show(progress *p, int64_t step, int64_t epoch, double loss, double lr,
                          double sps, double eta_s, bool line) {
  char eta[32];
  fmt_eta(eta_s, eta, sizeof eta);
  if (p->tty) {
    int64_t in_epoch = step - (epoch - 1) * p->steps_per_epoch;
    int fill = p->steps_per_epoch > 0 ? (int)(20 * in_epoch / p->steps_per_epoch) : 0;
    fill = fill < 0 ? 0 : fill > 20 ? 20 : fill;
    printf("\repoch %lld/%lld [%.*s%.*s] step %lld/%lld loss %.4f %.0f samples/s ETA %s\033[K",
           (long long)epoch, (long long)p->epochs, fill, "####################", 20 - fill,
           "....................", (long long)step, (long long)p->total, loss, sps, eta);
    fflush(stdout);
    p->bar_open = true;
  } else if (line) {
    printf("epoch %lld/%lld step %lld/%lld loss %.4f lr %.4g %.0f samples/s ETA %s\n",
           (long long)epoch, (long long)p->epochs, (long long)step, (long long)p->total, loss, lr,
           sps, eta);
    fflush(stdout);
  }
}

/* ---- the job --------------------------------------------------------------------------------- */

/* A step whose loss is not yet averaged over the ranks. */
typedef struct {
  int64_t step, epoch;
  float loss; /* this rank's; the average after the flush */
  double lr;
} pending_row;

typedef struct {
  train_opts o;
  em_config *cfg;
  int rank, world;
  train_data data;
  em_module *model;
  em_device device; /* train.device, resolved: where the model and batches live */
  em_optim *opt;
  ddp_model *ddp;
  em_lr_schedule sched;
  train_metrics *metrics; /* rank 0, when train.metrics is set */
  progress prog;
  fault_plan fault;
  /* state */
  int64_t step, epoch, total, last_ckpt_step; /* epoch: of the last step, from 1 */
  pending_row pend[FLUSH_STEPS > FLUSH_STEPS_TTY ? FLUSH_STEPS : FLUSH_STEPS_TTY];
  int npend, flush_every;
  double window_time;         /* seconds of training steps since the last flush */
  int64_t window_samples;     /* global samples since the last flush */
  double train_time;          /* seconds of training steps in this run */
  int64_t samples;            /* global samples in this run */
  int64_t run_steps;          /* steps in this run */
  int64_t loss_epoch, loss_n; /* mean global loss of the latest epoch (for RESULT) */
  double loss_sum;
  double acc; /* the latest evaluation: test accuracy, or a language model's validation loss */
  int64_t acc_step;
} job;

/* A non-finite global loss at step: every rank sees the same averaged value (flush), so all of
 * them stop here together, with no collective, before the checkpoint that step may be due: a
 * diverged model never becomes latest nor pushes good checkpoints out. The metrics rows before
 * step are kept. */
static void diverged(job *j, int64_t step, float loss) {
  if (j->metrics) train_metrics_flush(j->metrics); /* best effort: we are stopping anyway */
  if (j->rank == 0) {
    progress_newline(&j->prog);
    fprintf(stderr,
            "ember-train: step %lld: the loss is %g (averaged over %d rank%s): training "
            "diverged; stopping before any further checkpoint",
            (long long)step, (double)loss, j->world, j->world == 1 ? "" : "s");
    if (*j->o.ckpt_dir && j->last_ckpt_step > 0)
      fprintf(stderr, " (the last one, step %lld, is kept)", (long long)j->last_ckpt_step);
    fprintf(stderr, "\n");
  }
  train_metrics_close(j->metrics);
  j->metrics = NULL;
  fflush(NULL);
  ddp_finalize();
  exit(EXIT_RUNTIME);
}

/* Averages the pending losses over the ranks, writes their rows (rank 0) and shows progress.
 * test_acc (>= 0) goes on the last row. Collective. */
static void flush(job *j, double test_acc, bool line) {
  if (j->npend == 0) return;
  float loss[FLUSH_STEPS > FLUSH_STEPS_TTY ? FLUSH_STEPS : FLUSH_STEPS_TTY];
  for (int i = 0; i < j->npend; i++) loss[i] = j->pend[i].loss;
  if (j->world > 1) {
    coll_buf b = coll_host_buf(loss, j->npend, EM_F32);
    coll_label("ember-train: the last %d steps' loss", j->npend);
    if (coll_wait(coll_allreduce(ddp_comm(), b, b, j->npend, COLL_AVG), 0) != EM_OK)
      fatal("averaging the loss");
  }
  double sps = j->window_time > 0 ? (double)j->window_samples / j->window_time : 0;
  double window_loss = 0;
  for (int i = 0; i < j->npend; i++) {
    const pending_row *r = &j->pend[i];
    if (!isfinite(loss[i])) diverged(j, r->step, loss[i]);
    if (r->epoch != j->loss_epoch) {
      j->loss_epoch = r->epoch;
      j->loss_sum = 0;
      j->loss_n = 0;
    }
    j->loss_sum += loss[i];
    j->loss_n++;
    window_loss += loss[i];
    if (j->metrics && train_metrics_row(j->metrics, r->step, r->epoch, loss[i], r->lr, sps,
                                        i == j->npend - 1 ? test_acc : -1) != EM_OK)
      fatal("metrics");
  }
  if (j->metrics && train_metrics_flush(j->metrics) != EM_OK) fatal("metrics");
  const pending_row *last = &j->pend[j->npend - 1];
  if (j->rank == 0) {
    double per_step = j->run_steps ? j->train_time / (double)j->run_steps : 0;
    progress_show(&j->prog, last->step, last->epoch, window_loss / j->npend, last->lr, sps,
                  per_step * (double)(j->total - last->step), line);
  }
  j->npend = 0;
  j->window_time = 0;
  j->window_samples = 0;
}

static void save_checkpoint(job *j) {
  em_status st = EM_OK;
  if (j->rank == 0) {
    train_state s = {.step = j->step,
                     .epoch = j->epoch,
                     .loader = dl_state_save(j->data.train),
                     .rng = *em_default_rng(),
                     .config_hash = em_config_hash(j->cfg),
                     .world_size = j->world,
                     .loss_epoch = j->loss_epoch,
                     .loss_n = j->loss_n,
                     .loss_sum = j->loss_sum};
    st = train_ckpt_save(j->o.ckpt_dir, (int)j->o.keep_last, j->model, j->opt, &s);
    if (st != EM_OK) fprintf(stderr, "ember-train: checkpoint: %s\n", em_last_error());
  }
  /* rank 0's outcome, to every rank: all stop together after a checkpoint that failed */
  if (!all_ok(st == EM_OK)) {
    ddp_finalize();
    exit(EXIT_RUNTIME);
  }
  j->last_ckpt_step = j->step;
}

static void evaluate(job *j) {
  j->acc = train_is_lm(&j->o) ? train_val_loss(j->model, &j->o, &j->data)
                              : train_accuracy(j->model, &j->data);
  if (j->acc < 0) fatal("evaluation");
  j->acc_step = j->step;
}

/* The evaluation as printed: " test_acc A", or " val_loss L (B bits per byte|token)". */
static void print_eval(const job *j) {
  if (!train_is_lm(&j->o))
    printf(" test_acc %.4f", j->acc);
  else if (!isnan(j->acc))
    printf(" val_loss %.4f (%.3f bits per %s)", j->acc, j->acc / log(2.0),
           j->o.dataset == DATA_TEXT ? "byte" : "token");
}

static void train_loop(job *j) {
  const train_opts *o = &j->o;
  while (j->step < j->total) {
    double t0 = now_s();
    dl_batch b;
    if (!dl_next(j->data.train, &b)) {
      if (dl_status(j->data.train) != EM_OK) fatal("training data");
      continue; /* the end of an epoch: handled at its last step */
    }
    int64_t epoch = j->epoch = b.epoch + 1;
    if (em_optim_schedule(j->opt, &j->sched, o->lr) != EM_OK) fatal("lr schedule");
    double lr = em_optim_lr(j->opt);
    em_scope sc = em_scope_begin();
    em_tensor *loss = train_loss(j->model, o, &b);
    if (!loss || em_zero_grad(j->opt) != EM_OK || em_backward(loss) != EM_OK ||
        em_step(j->opt) != EM_OK)
      fatal("training step");
    float l = (float)em_get(loss, 0);
    em_scope_end(sc);
    j->step++;
    j->run_steps++;
    double dt = now_s() - t0;
    j->train_time += dt;
    j->window_time += dt;
    j->samples += b.size * j->world;
    j->window_samples += b.size * j->world;
    j->pend[j->npend++] = (pending_row){j->step, epoch, l, lr};

    bool epoch_end = b.step + 1 == dl_len(j->data.train);
    bool last = j->step == j->total;
    bool eval = last || (epoch_end && o->eval_every > 0 && epoch % o->eval_every == 0);
    bool ckpt = *o->ckpt_dir && (last || (o->ckpt_every > 0 && j->step % o->ckpt_every == 0));
    bool line = j->step % o->log_every == 0 || epoch_end || last;
    if (eval) evaluate(j);
    if (eval || ckpt || line || j->npend == j->flush_every)
      flush(j, eval && !isnan(j->acc) ? j->acc : -1, line);
    if (epoch_end && j->rank == 0) {
      progress_newline(&j->prog);
      printf("epoch %lld/%lld done: train_loss %.4f", (long long)epoch, (long long)j->prog.epochs,
             j->loss_n ? j->loss_sum / (double)j->loss_n : 0.0);
      if (eval) print_eval(j);
      printf(" (elapsed %.1f s)\n", now_s() - j->prog.t0);
      fflush(stdout);
    }
    if (ckpt) save_checkpoint(j);
    if (j->fault.armed && j->fault.rank == j->rank && j->fault.step == j->step) {
      fprintf(stderr, "ember-train: EMBER_FAULT_KILL: rank %d kills itself after step %lld\n",
              j->rank, (long long)j->step);
      fflush(NULL);
      raise(SIGKILL);
    }
  }
  if (j->rank == 0) progress_newline(&j->prog);
  if (j->run_steps == 0 && j->rank == 0)
    printf("note: the checkpoint's step %lld is not below the run's %lld steps: nothing to train\n",
           (long long)j->step, (long long)j->total);
  /* a run resumed at (or past) its end: evaluate and checkpoint what it has */
  if (j->acc_step != j->step) evaluate(j);
  if (*o->ckpt_dir && j->last_ckpt_step != j->step) save_checkpoint(j);
}

/* Reads the config and the command line; returns -1 to go on, else the exit status. */
static int read_config(int argc, char **argv, job *j) {
  bool print = false;
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--print-config")) {
      print = true;
    } else if (argv[i][0] == '-' && argv[i][1] == '-') {
      char msg[300];
      snprintf(msg, sizeof msg, "unknown option '%.200s' (see --help)", argv[i]);
      return config_error(msg);
    } else if (!path && !strchr(argv[i], '=')) {
      path = argv[i]; /* the first argument that is no option and no key=value */
    }
  }
  if (!path && !print) {
    usage(stderr);
    return EXIT_CONFIG;
  }
  j->cfg = path ? em_config_load(path) : em_config_parse("", "defaults");
  if (!j->cfg) return config_error(em_last_error());
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--print-config") || argv[i] == path) continue;
    if (em_config_override(j->cfg, argv[i]) != EM_OK) return config_error(em_last_error());
  }
  em_config_ignore(j->cfg, "launch"); /* ddprun's section */
  if (train_opts_read(j->cfg, &j->o) != EM_OK || em_config_check_unused(j->cfg, NULL) != EM_OK ||
      fault_parse(&j->fault) != EM_OK)
    return config_error(em_last_error());
  if (print) {
    train_opts_print(&j->o, stdout);
    return 0;
  }
  return -1;
}

/* checkpoint.dir must take a checkpoint before any training is spent (rank 0, which saves, creates
 * it and writes a test file there): false after a config-style error naming the key. */
static bool check_ckpt_dir(const job *j) {
  if (j->rank != 0 || !*j->o.ckpt_dir || em_ckpt_check_dir(j->o.ckpt_dir) == EM_OK) return true;
  char at[512];
  fprintf(stderr, "ember-train: %s: checkpoint.dir: cannot write checkpoints there: %s\n",
          em_config_where(j->cfg, "checkpoint.dir", at, sizeof at), em_last_error());
  return false;
}

/* train.device: auto follows ddp_init (cuda:(local rank % GPUs) when one is visible, unless
 * EMBER_DEVICE=cpu); cuda asks for a GPU even then, and is a config error without one. */
static int choose_device(job *j) {
  const train_opts *o = &j->o;
  int n = em_cuda_device_count();
  if (o->device == DEVICE_CUDA && n == 0) {
    char at[512], msg[800];
    snprintf(msg, sizeof msg, "%s: train.device: cuda, but no CUDA device is visible%s",
             em_config_where(j->cfg, "train.device", at, sizeof at),
             em_built_with_cuda() ? "" : " (this build has no CUDA)");
    return config_error(msg);
  }
  j->device = o->device == DEVICE_CPU    ? EM_DEVICE_CPU
              : o->device == DEVICE_CUDA ? (em_device){EM_CUDA, ddp_local_rank() % n}
                                         : ddp_device();
  j->o.on = j->device;
  return -1;
}

/* Builds the data, model, optimizer and schedule: every step local to this rank (resume, which
 * follows, is collective). Returns -1 to go on, else the exit status. */
static int setup(job *j) {
  const train_opts *o = &j->o;
  char at[512];
  int rc = choose_device(j);
  if (rc >= 0) return rc;
  if (o->threads > 0) em_set_num_threads((int)o->threads); /* else EMBER_THREADS or 1 */
  if (train_data_open(&j->data, o) != EM_OK) return EXIT_RUNTIME;
  int64_t spe = dl_len(j->data.train);
  j->total = o->steps > 0 ? o->steps : o->epochs * spe;
  j->prog.steps_per_epoch = spe;
  j->prog.epochs = (j->total + spe - 1) / spe;
  static const em_lr_kind kinds[] = {EM_LR_CONSTANT, EM_LR_STEP, EM_LR_COSINE};
  j->sched = (em_lr_schedule){.kind = kinds[o->schedule],
                              .warmup_steps = o->warmup_steps,
                              .step_size = o->step_size,
                              .gamma = o->gamma,
                              .total_steps = j->total,
                              .min_lr = o->min_lr};
  if (o->schedule == SCHED_COSINE && o->warmup_steps >= j->total) {
    char msg[700];
    snprintf(msg, sizeof msg,
             "%s: optim.warmup_steps: %lld is not below the %lld steps of the "
             "run (cosine schedule)",
             em_config_where(j->cfg, "optim.warmup_steps", at, sizeof at),
             (long long)o->warmup_steps, (long long)j->total);
    return config_error(msg);
  }
  if (em_lr_schedule_check(&j->sched) != EM_OK) {
    char msg[1200];
    snprintf(msg, sizeof msg, "%s: optim.schedule: %s",
             em_config_where(j->cfg, "optim.schedule", at, sizeof at), em_last_error());
    return config_error(msg);
  }
  em_manual_seed((uint64_t)o->seed);
  j->model = train_model_new(o);
  if (!j->model) return EXIT_RUNTIME;
  /* before the optimizer, whose state follows the parameters' device */
  if (j->device.kind != EM_CPU && em_module_to(j->model, j->device) != EM_OK) return EXIT_RUNTIME;
  em_manual_seed(rank_seed((uint64_t)o->seed, j->rank));
  em_params p = em_parameters(j->model);
  double wd = o->weight_decay > 0 ? o->weight_decay : EM_OPT_ZERO;
  if (o->optim == OPTIM_SGD)
    j->opt = em_sgd(p, .lr = o->lr, .momentum = o->momentum, .weight_decay = o->weight_decay,
                    .nesterov = o->nesterov);
  else {
    em_adam_opts ao = {.lr = o->lr,
                       .beta1 = o->beta1 > 0 ? o->beta1 : EM_OPT_ZERO,
                       .beta2 = o->beta2 > 0 ? o->beta2 : EM_OPT_ZERO,
                       .eps = o->eps,
                       .weight_decay = wd};
    j->opt = o->optim == OPTIM_ADAM ? em_adam_new(p, &ao) : em_adamw_new(p, &ao);
  }
  if (!j->opt) return EXIT_RUNTIME;
  return -1;
}

/* The steps of the ranks' newest intact checkpoints (-1: none, -2: none reads): the step they all
 * resume from, or -2 after rank 0 has said why they cannot agree. They may differ when
 * checkpoint.dir is not one directory for all (a local directory on each host: only rank 0
 * saves) or a host's view of it is stale; a rank that trained on from another step than the
 * others would mix gradients of different steps until a collective mismatch stopped the job. */
static int64_t agreed_step(const job *j, const int64_t *steps) {
  int64_t lo = INT64_MAX, hi = -1;
  int at_lo = 0, at_hi = 0;
  for (int r = 0; r < j->world; r++) {
    if (steps[r] == -2) return -2; /* that rank has said why */
    if (steps[r] < lo) lo = steps[r], at_lo = r;
    if (steps[r] > hi) hi = steps[r], at_hi = r;
  }
  if (lo == hi) return lo;
  if (j->rank == 0) {
    if (lo == -1)
      fprintf(stderr,
              "ember-train: checkpoint.dir %s: rank %d finds no checkpoint there, rank %d "
              "resumes from step %lld: every rank must see the same directory (a file system "
              "shared by every host)\n",
              j->o.ckpt_dir, at_lo, at_hi, (long long)hi);
    else {
      fprintf(stderr, "ember-train: warning: the ranks' newest checkpoints differ (");
      for (int r = 0; r < j->world && r < 8; r++)
        fprintf(stderr, "%srank %d: step %lld", r ? ", " : "", r, (long long)steps[r]);
      fprintf(stderr, "%s): every rank resumes from step %lld, rank %d's newest\n",
              j->world > 8 ? ", ..." : "", (long long)lo, at_lo);
    }
    fflush(stderr);
  }
  return lo == -1 ? -2 : lo;
}

/* checkpoint.resume auto: every rank finds its newest intact checkpoint, the ranks agree on one
 * step (agreed_step), and each loads that step's checkpoint. Before ddp_wrap, which broadcasts
 * rank 0's weights; the optimizer state, loader position, generator and step are each rank's
 * own. Collective; false (every rank) when the job cannot resume, each error said once. */
static bool resume(job *j, bool *resumed) {
  const train_opts *o = &j->o;
  *resumed = false;
  if (!*o->ckpt_dir || o->resume != RESUME_AUTO) return true;
  char *path = NULL;
  int64_t mine = -1;
  em_status st;
  em_ckpt *c = train_ckpt_find(o->ckpt_dir, &path, &mine, &st, j->rank == 0 ? stderr : NULL);
  if (!c && st != EM_OK) {
    ddp_eprint("ember-train: %s\n", em_last_error());
    mine = -2;
  }
  int64_t *steps = calloc((size_t)j->world, sizeof *steps);
  if (!steps) fatal("resume");
  steps[j->rank] = mine;
  if (j->world > 1) {
    coll_buf b = coll_host_buf(steps, j->world, EM_I64);
    coll_buf part = coll_host_buf(steps + j->rank, 1, EM_I64);
    coll_label("ember-train: every rank's newest checkpoint step");
    if (coll_wait(coll_allgather(ddp_comm(), part, b, 1), 0) != EM_OK) fatal("resume");
  }
  int64_t step = agreed_step(j, steps);
  free(steps);
  if (step >= 0 && step != mine) { /* this rank saw a newer one: read the agreed step's */
    em_ckpt_free(c);
    free(path);
    if (!(c = train_ckpt_read_step(o->ckpt_dir, step, &path)))
      ddp_eprint("ember-train: cannot resume from step %lld, where every rank resumes (the "
                 "oldest of the ranks' newest checkpoints): %s\n",
                 (long long)step, em_last_error());
  }
  train_state s;
  bool ok = true;
  if (step >= 0) { /* no c: its error is said */
    ok = c && train_ckpt_apply(c, path, j->model, j->opt, &s) == EM_OK &&
         dl_state_restore(j->data.train, &s.loader) == EM_OK;
    if (ok && s.step != step) /* a file renamed by hand, say */
      ok = em_set_error(EM_ERR_FORMAT, "%s: holds step %lld, not %lld", path, (long long)s.step,
                        (long long)step) == EM_OK;
    if (!ok && c) ddp_eprint("ember-train: %s\n", em_last_error());
  }
  em_ckpt_free(c);
  ok = all_ok(ok) && step != -2;
  if (ok && step >= 0) {
    em_rng g = em_rng_new(rank_seed(s.loader.seed, j->rank)); /* the seed it was saved with */
    g.counter = s.rng.counter;
    *em_default_rng() = g;
    j->step = j->last_ckpt_step = s.step;
    j->epoch = s.epoch;
    j->loss_epoch = s.loss_epoch;
    j->loss_n = s.loss_n;
    j->loss_sum = s.loss_sum;
    *resumed = true;
    if (j->rank == 0) {
      printf("resumed from %s at step %lld (epoch %lld)\n", path, (long long)s.step,
             (long long)s.epoch);
      if (s.config_hash != em_config_hash(j->cfg))
        printf("warning: the configuration differs from the checkpoint's (hash %016llx, now "
               "%016llx): overrides such as train.steps change it\n",
               (unsigned long long)s.config_hash, (unsigned long long)em_config_hash(j->cfg));
      if (s.world_size != j->world)
        printf("note: the checkpoint was written by %lld ranks, this job has %d: the loader "
               "re-shards the rest of the epoch\n",
               (long long)s.world_size, j->world);
    }
  }
  free(path);
  return ok;
}

static void describe(const job *j) {
  const train_opts *o = &j->o;
  char arch[256] = "";
  if (o->model == MODEL_MLP) {
    size_t n = (size_t)snprintf(arch, sizeof arch, "mlp 784");
    for (int i = 0; i < o->hidden.n; i++)
      n += (size_t)snprintf(arch + n, sizeof arch - n, "-%lld", (long long)o->hidden.v[i]);
    snprintf(arch + n, sizeof arch - n, "-10%s", o->dropout > 0 ? " (dropout)" : "");
  } else if (o->model == MODEL_CNN) {
    snprintf(arch, sizeof arch, "cnn (em_small_cnn)");
  } else if (o->model == MODEL_RESNET_CIFAR) {
    snprintf(arch, sizeof arch, "resnet_cifar (ResNet-%lld)", (long long)o->depth);
  } else if (o->model == MODEL_RESNET18) {
    snprintf(arch, sizeof arch, "resnet18");
  } else if (o->model == MODEL_CHAR_RNN) {
    snprintf(arch, sizeof arch, "char_rnn (%lld LSTM layers of %lld, vocab %lld, seq %lld)",
             (long long)o->layers, (long long)o->width, (long long)o->vocab, (long long)o->seq_len);
  } else {
    snprintf(arch, sizeof arch, "gpt (%lld layers, %lld heads, width %lld, vocab %lld, block %lld)",
             (long long)o->layers, (long long)o->heads, (long long)o->width, (long long)o->vocab,
             (long long)o->seq_len);
  }
  em_params p = em_parameters(j->model);
  int64_t nparams = 0;
  for (int i = 0; i < p.n; i++) nparams += em_numel(p.t[i]);
  printf("ember-train: %s: %s, %lld parameters; %s lr %g%s; batch %lld x %d rank%s; %lld steps "
         "(%lld per epoch); data %s\n",
         em_config_name(j->cfg), arch, (long long)nparams,
         train_opts_choice("optim.name", o->optim), o->lr, o->schedule ? " (scheduled)" : "",
         (long long)o->batch, j->world, j->world > 1 ? "s" : "", (long long)j->total,
         (long long)j->prog.steps_per_epoch,
         o->dataset == DATA_FMNIST ? o->data_dir : o->data_path);
  if (j->data.unigram_bits >= 0)
    printf("text: %lld training and %lld validation windows of %lld bytes; unigram entropy of the "
           "training text %.3f bits per byte\n",
           (long long)dl_dataset_len(j->data.train_set),
           (long long)dl_dataset_len(j->data.test_set), (long long)o->seq_len,
           j->data.unigram_bits);
  fflush(stdout);
}

int main(int argc, char **argv) {
  static job j; /* zeroed */
  int rc = read_config(argc, argv, &j);
  if (rc >= 0) {
    em_config_free(j.cfg);
    return rc;
  }
  const train_opts *o = &j.o;
  if (ddp_init_ex(&argc, &argv, &(coll_options){.timeout_s = o->timeout}) != EM_OK) {
    fprintf(stderr, "ember-train: ddp_init: %s\n", em_last_error());
    return EXIT_RUNTIME;
  }
  j.rank = ddp_rank();
  j.world = ddp_world_size();
  if (!all_ok(check_ckpt_dir(&j))) {
    ddp_finalize();
    return EXIT_CONFIG;
  }
  rc = setup(&j);
  if (rc == EXIT_CONFIG) return rc; /* config_error has finalized */
  if (rc >= 0) ddp_eprint("ember-train: %s\n", em_last_error());
  bool resumed = false;
  bool ok = all_ok(rc < 0) && resume(&j, &resumed);
  if (ok) {
    ddp_options dopts = {.bucket_cap_mb = o->bucket_cap_mb,
                         .compression = (ddp_compression)o->compression,
                         .timeline = *o->timeline ? o->timeline : NULL};
    j.ddp = ddp_wrap(j.model, &dopts); /* after the checkpoint: broadcasts what was loaded */
    if (!j.ddp) fatal("ddp_wrap");
    /* rank 0: metrics files, and whether stdout is a terminal (everyone flushes alike) */
    int32_t flags[2] = {1, 0}; /* ok, tty */
    if (j.rank == 0) {
      flags[1] = stdout_is_terminal();
      if (*o->metrics &&
          !(j.metrics = train_metrics_open(o->metrics, resumed ? j.step : -1,
                                           train_is_lm(o) ? "val_loss" : "test_acc"))) {
        fprintf(stderr, "ember-train: metrics: %s\n", em_last_error());
        flags[0] = 0;
      }
    }
    if (j.world > 1) {
      coll_buf b = coll_host_buf(flags, 2, EM_I32);
      coll_label("ember-train: setup flags from rank 0");
      if (coll_wait(coll_broadcast(ddp_comm(), b, 2, 0), 0) != EM_OK) fatal("setup");
    }
    ok = flags[0] != 0;
    j.prog.tty = flags[1] != 0;
  }
  if (!ok) {
    train_data_close(&j.data);
    ddp_finalize();
    return EXIT_RUNTIME;
  }
  j.flush_every = j.prog.tty ? FLUSH_STEPS_TTY : FLUSH_STEPS;
  j.prog.total = j.total;
  j.acc = -1;
  j.acc_step = -1;
  if (j.rank == 0) describe(&j);

  double t_start = now_s();
  j.prog.t0 = t_start;
  train_loop(&j);
  double total_time = now_s() - t_start;

  if (j.metrics) train_metrics_plot(j.metrics, j.total);
  double mean_loss = j.loss_n ? j.loss_sum / (double)j.loss_n : NAN;
  double sps = j.train_time > 0 ? (double)j.samples / j.train_time : 0.0;
  if (!train_is_lm(o))
    ddp_print0("RESULT test_acc=%.4f train_loss=%.4f samples_per_s=%.1f time_s=%.1f ranks=%d\n",
               j.acc, mean_loss, sps, total_time, j.world);
  else if (o->dataset == DATA_TEXT) /* byte tokens: nats per token / ln 2 = bits per byte */
    ddp_print0("RESULT val_loss=%.4f val_bpb=%.4f unigram_bpb=%.4f train_loss=%.4f "
               "tokens_per_s=%.1f time_s=%.1f ranks=%d\n",
               j.acc, j.acc / log(2.0), j.data.unigram_bits, mean_loss, sps * (double)o->seq_len,
               total_time, j.world);
  else
    ddp_print0("RESULT val_loss=%.4f train_loss=%.4f tokens_per_s=%.1f time_s=%.1f ranks=%d\n",
               j.acc, mean_loss, sps * (double)o->seq_len, total_time, j.world);
  if (train_is_lm(o) && o->sample_len > 0 && j.rank == 0 &&
      train_sample(j.model, o, &j.data, o->sample_len, stdout) != EM_OK)
    fprintf(stderr, "ember-train: sampling: %s\n", em_last_error());
  train_metrics_close(j.metrics);
  ddp_free(j.ddp);
  em_optim_free(j.opt);
  em_module_free(j.model);
  train_data_close(&j.data);
  em_config_free(j.cfg);
  ddp_finalize();
  return 0;
}
