/* ddprun.c: Ember's launcher: options, the --config job file's launch: section, and the defaults
 * that turn them into a dr_plan; then --dry-run prints the command, or supervise.c runs it.
 *
 *   ddprun [options] [--] program [args...]
 *   ddprun --agent ATTEMPT LOGDIR tag|quiet -- program [args...]   (per rank; see agent.c)
 *
 * Precedence: command line, then the job file's launch: section, then the defaults below (each
 * decided from this machine, or from the Slurm allocation under srun). Every mistake in the input
 * is one line naming the option (or file:line) and exit status 2. docs/launcher.md is the manual.
 */
#define _GNU_SOURCE
#include "ddprun.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "em_config.h"
#include "em_core.h"

static const char *const HELP =
    "usage: ddprun [options] [--] program [args...]\n"
    "\n"
    "Starts one process (rank) per GPU or CPU slot with mpirun, or with srun inside a Slurm\n"
    "allocation. Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,\n"
    "EMBER_RESTART_COUNT, OMP_NUM_THREADS / EMBER_THREADS and, with\n"
    "--timeout, EMBER_COLL_TIMEOUT. When a rank fails, every rank is stopped and ddprun says\n"
    "which rank failed first, how, and the end of its log.\n"
    "\n"
    "options (command line beats --config, which beats the defaults):\n"
    "  -n, --nproc-per-node N|auto  ranks per node (default: auto = visible GPUs, else one per\n"
    "                               CPU core up to 8; with --hosts h:N, N on that host)\n"
    "  -H, --hosts h1:4,h2:4        hosts and their ranks (default: this machine)\n"
    "  -f, --hostfile FILE          hosts from FILE: 'host slots=N' lines, # comments\n"
    "  -t, --threads-per-proc N     CPU threads per rank (default: cores / ranks, at least 1)\n"
    "  -b, --bind none|core|numa    pin ranks (default: core if ranks x threads <= cores)\n"
    "  -r, --max-restarts K         relaunch a failed job up to K times (default 0)\n"
    "  -l, --log-dir DIR            DIR/rank-R.attempt-A.log per rank and attempt; output goes\n"
    "                               only there (default: a temporary directory, removed at the\n"
    "                               end unless a rank failed, and output on the terminal)\n"
    "  -e, --tee                    with --log-dir, also show output on the terminal\n"
    "  -T, --timeout S              collective timeout in seconds (EMBER_COLL_TIMEOUT)\n"
    "  -c, --config job.yaml        read the job file's launch: section; with no program (or\n"
    "                               only key=value overrides), run launch.program, else\n"
    "                               ember-train, with job.yaml [and the overrides]\n"
    "  -d, --dry-run                print the command that would run (one line) and exit\n"
    "  -m, --mpi-args \"...\"         words added to mpirun's (or srun's) options\n"
    "  -L, --launcher auto|mpirun|srun  (default auto: inside a Slurm allocation srun\n"
    "                               --mpi=pmix, or mpirun if srun has no pmix; else mpirun)\n"
    "  -h, --help                   this text\n"
    "\n"
    "Terminal output is tagged \"[rank R] \". Exit status: 0 if the last attempt succeeded,\n"
    "else the first failing rank's exit code (128+signal if killed), 2 for a usage error.\n"
    "\n"
    "examples:\n"
    "  ddprun -n 2 ./build/examples/fmnist_mlp --epochs 1\n"
    "  ddprun -n auto --log-dir logs --tee ./train\n"
    "  ddprun --hosts node1:4,node2:4 --bind numa --timeout 60 ./train\n"
    "  ddprun --hostfile hosts.txt --max-restarts 3 --log-dir /shared/logs ./train --resume\n"
    "  ddprun --config job.yaml                # runs ember-train job.yaml\n"
    "  ddprun -c job.yaml train.epochs=1       # runs ember-train job.yaml train.epochs=1\n"
    "  ddprun --dry-run -n 4 -t 2 ./train      # show the mpirun command\n";

/* ---- command line ---------------------------------------------------------------------------- */
enum {
  O_NPROC,
  O_HOSTS,
  O_HOSTFILE,
  O_THREADS,
  O_BIND,
  O_RESTARTS,
  O_LOGDIR,
  O_TEE,
  O_TIMEOUT,
  O_CONFIG,
  O_DRYRUN,
  O_MPIARGS,
  O_LAUNCHER,
  O_HELP
};
static const struct {
  const char *name;
  char letter;
  const char *value; /* NULL: a flag */
} OPTS[] = {
    [O_NPROC] = {"nproc-per-node", 'n', "N|auto"},
    [O_HOSTS] = {"hosts", 'H', "h1:N,h2:N"},
    [O_HOSTFILE] = {"hostfile", 'f', "FILE"},
    [O_THREADS] = {"threads-per-proc", 't', "N"},
    [O_BIND] = {"bind", 'b', "none|core|numa"},
    [O_RESTARTS] = {"max-restarts", 'r', "K"},
    [O_LOGDIR] = {"log-dir", 'l', "DIR"},
    [O_TEE] = {"tee", 'e', NULL},
    [O_TIMEOUT] = {"timeout", 'T', "SECONDS"},
    [O_CONFIG] = {"config", 'c', "FILE"},
    [O_DRYRUN] = {"dry-run", 'd', NULL},
    [O_MPIARGS] = {"mpi-args", 'm', "\"ARGS\""},
    [O_LAUNCHER] = {"launcher", 'L', "auto|mpirun|srun"},
    [O_HELP] = {"help", 'h', NULL},
};
enum { NOPTS = sizeof OPTS / sizeof OPTS[0] };

static int parse_count(const char *opt, const char *v, long lo, long hi) {
  long n;
  if (dr_parse_int(v, LONG_MIN, LONG_MAX, &n) && n < lo)
    dr_usage_error("%s %s: must be >= %ld", opt, v, lo);
  if (!dr_parse_int(v, lo, hi, &n))
    dr_usage_error("%s '%s': expected an integer in [%ld, %ld]", opt, v, lo, hi);
  return (int)n;
}

static int parse_choice(const char *opt, const char *v, const char *const *choices) {
  for (int i = 0; choices[i]; i++)
    if (!strcmp(v, choices[i])) return i;
  char list[128] = "";
  for (int i = 0; choices[i]; i++) strcat(strcat(list, i ? ", " : ""), choices[i]);
  dr_usage_error("%s '%s': expected one of %s", opt, v, list);
}

static const char *const BIND_NAMES[] = {"none", "core", "numa", NULL};
static const char *const LAUNCHER_NAMES[] = {"auto", "mpirun", "srun", NULL};

/* getopt_long over OPTS: a long option's val is LONG_VAL + its index, a short one's its letter. */
enum { LONG_VAL = 0x100 };

static int option_id(int c) {
  if (c >= LONG_VAL) return c - LONG_VAL;
  for (int k = 0; k < NOPTS; k++)
    if (OPTS[k].letter == c) return k;
  return -1;
}

/* Option id's name as the user gave it: "--nproc-per-node" or "-n". */
static void option_name(int id, bool typed_long, char *buf, size_t n) {
  if (typed_long)
    snprintf(buf, n, "--%s", OPTS[id].name);
  else
    snprintf(buf, n, "-%c", OPTS[id].letter);
}

/* getopt_long's complaint (':' a missing value, '?' anything else) as ddprun's message. The word
 * at fault is argv[optind - 1]: getopt_long has stepped past it. */
static void option_error(int c, char **argv) {
  const char *word = argv[optind - 1];
  bool typed_long = !strncmp(word, "--", 2);
  int id = option_id(optopt); /* -1: an unknown option */
  char name[80];
  if (id >= 0) option_name(id, typed_long, name, sizeof name);
  if (c == ':') dr_usage_error("option %s needs a value (%s %s)", name, name, OPTS[id].value);
  if (id >= 0) dr_usage_error("option %s takes no value (got '%s')", name, word);
  if (optopt) dr_usage_error("unknown option '-%c'", optopt);
  dr_usage_error("unknown option '%s'", word);
}

static void parse_args(int argc, char **argv, dr_options *o) {
  *o = (dr_options){.bind = DR_BIND_UNSET, .max_restarts = -1};
  /* "+": options end at the program (its own options are its own); ":": report a missing value
   * as ':' rather than '?'. */
  char shorts[2 + 2 * NOPTS + 1] = "+:";
  struct option longs[NOPTS + 1] = {{0}};
  for (int k = 0, n = 2; k < NOPTS; k++) {
    longs[k] = (struct option){OPTS[k].name, OPTS[k].value ? required_argument : no_argument, NULL,
                               LONG_VAL + k};
    shorts[n++] = OPTS[k].letter;
    if (OPTS[k].value) shorts[n++] = ':';
  }
  opterr = 0; /* the messages are ddprun's */
  for (;;) {
    int longindex = -1, c = getopt_long(argc, argv, shorts, longs, &longindex);
    if (c == -1) break;
    if (c == ':' || c == '?') option_error(c, argv);
    int id = option_id(c);
    const char *val = optarg;
    char name[80];
    option_name(id, longindex >= 0, name, sizeof name);
    switch (id) {
    case O_NPROC:
      o->nproc = !strcmp(val, "auto") ? DR_NPROC_AUTO : parse_count(name, val, 1, 4096);
      break;
    case O_HOSTS: o->hosts = val; break;
    case O_HOSTFILE: o->hostfile = val; break;
    case O_THREADS: o->threads = parse_count(name, val, 1, 4096); break;
    case O_BIND: o->bind = (dr_bind)parse_choice(name, val, BIND_NAMES); break;
    case O_RESTARTS: o->max_restarts = parse_count(name, val, 0, 1000); break;
    case O_LOGDIR:
      if (!*val) dr_usage_error("%s: empty directory name", name);
      o->log_dir = val;
      break;
    case O_TEE: o->tee = true; break;
    case O_TIMEOUT: {
      char *end;
      double t = strtod(val, &end);
      if (end == val || *end || !isfinite(t) || t <= 0 || t > 1e7)
        dr_usage_error("%s '%s': expected a number of seconds > 0", name, val);
      o->timeout_s = t;
      break;
    }
    case O_CONFIG: o->config = val; break;
    case O_DRYRUN: o->dry_run = true; break;
    case O_MPIARGS: o->mpi_args = val; break;
    case O_LAUNCHER: o->launcher = (dr_launcher)parse_choice(name, val, LAUNCHER_NAMES); break;
    case O_HELP: fputs(HELP, stdout); exit(0);
    }
  }
  for (int i = optind; i < argc; i++) dr_strv_push(&o->prog, argv[i]);
  if (o->hosts && o->hostfile) dr_usage_error("--hosts and --hostfile: give one of them");
}

/* ---- --config: the launch: section ----------------------------------------------------------- */
static void config_error(void) { dr_usage_error("--config: %s", em_last_error()); }

/* True if every word is a "dotted.key=value" override (no program among them). */
static bool all_overrides(const dr_strv *words) {
  for (int i = 0; i < words->n; i++) {
    const char *w = words->v[i];
    size_t key = strspn(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.");
    if (!key || w[key] != '=' || w[0] == '.') return false;
  }
  return true;
}

/* ember-train, for a job file without launch.program: the first executable one of these, relative
 * to ddprun's own directory: next to it (an installed prefix's bin/), then the build tree's
 * layout (<build>/launcher/ddprun, <build>/examples/ember-train). Returns its absolute path
 * (malloc'd), or NULL with `tried` naming both places for the error message. */
static char *find_ember_train(char *tried, size_t n) {
  static const char *const rel[] = {"ember-train", "../examples/ember-train"};
  char *self = dr_self_path(), *dir = dirname(self), *train = NULL;
  for (size_t i = 0; i < sizeof rel / sizeof rel[0] && !train; i++) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, rel[i]);
    train = realpath(path, NULL);
    if (train && access(train, X_OK) != 0) {
      free(train);
      train = NULL;
    }
  }
  snprintf(tried, n, "%s/%s nor %s/%s", dir, rel[0], dir, rel[1]);
  free(self);
  return train;
}

/* Reads launch.* (every key, so that check_unused only reports unknown ones) and fills what the
 * command line left unset. Returns the config (owns the strings now in o) for main to free. */
static em_config *apply_config(dr_options *o) {
  em_config *c = em_config_load(o->config);
  if (!c) config_error();
  const char *nproc, *hosts, *hostfile, *log_dir, *program;
  int64_t threads, restarts;
  double timeout;
  int bind = -1;
  if (em_config_str(c, "launch.nproc_per_node", NULL, &nproc) != EM_OK) config_error();
  int64_t n = 0;
  if (nproc && strcmp(nproc, "auto") &&
      em_config_int(c, "launch.nproc_per_node", 0, 1, 4096, &n) != EM_OK)
    dr_usage_error("--config: %s (or auto)", em_last_error());
  if (em_config_str(c, "launch.hosts", NULL, &hosts) != EM_OK ||
      em_config_str(c, "launch.hostfile", NULL, &hostfile) != EM_OK ||
      em_config_int(c, "launch.threads_per_proc", 0, 1, 4096, &threads) != EM_OK ||
      (em_config_has(c, "launch.bind") &&
       em_config_enum(c, "launch.bind", "none", BIND_NAMES, &bind) != EM_OK) ||
      em_config_int(c, "launch.max_restarts", -1, 0, 1000, &restarts) != EM_OK ||
      em_config_str(c, "launch.log_dir", NULL, &log_dir) != EM_OK ||
      em_config_num(c, "launch.timeout", 0, 1e-3, 1e7, &timeout) != EM_OK ||
      em_config_str(c, "launch.program", NULL, &program) != EM_OK ||
      em_config_check_unused(c, "launch") != EM_OK)
    config_error();
  if (!o->nproc && nproc) o->nproc = n ? (int)n : DR_NPROC_AUTO;
  if (!o->hosts && !o->hostfile) {
    if (hosts && hostfile)
      dr_usage_error("--config %s: launch.hosts and launch.hostfile: give "
                     "one of them",
                     o->config);
    o->hosts = hosts;
    o->hostfile = hostfile;
  }
  if (!o->threads) o->threads = (int)threads;
  if (o->bind == DR_BIND_UNSET && bind >= 0) o->bind = (dr_bind)bind;
  if (o->max_restarts < 0) o->max_restarts = (int)restarts;
  if (!o->log_dir && log_dir && *log_dir) o->log_dir = log_dir;
  if (!o->timeout_s) o->timeout_s = timeout;
  /* "ddprun -c job.yaml train.epochs=1": overrides for the job file's program. */
  dr_strv overrides = {0};
  if (o->prog.n && all_overrides(&o->prog)) {
    overrides = o->prog;
    o->prog = (dr_strv){0};
  }
  if (!o->prog.n) {
    char *abs = realpath(o->config, NULL);
    if (!abs) dr_usage_error("--config %s: %s", o->config, strerror(errno));
    if (program && *program) {
      dr_strv_split(&o->prog, program);
    } else {
      char tried[2 * PATH_MAX + 64];
      char *train = find_ember_train(tried, sizeof tried);
      if (!train)
        dr_usage_error("no program: none on the command line, no launch.program in %s, and "
                       "no ember-train at %s (build the ember-train target)",
                       o->config, tried);
      dr_strv_push(&o->prog, train);
      free(train);
    }
    dr_strv_push(&o->prog, abs);
    for (int i = 0; i < overrides.n; i++) dr_strv_push(&o->prog, overrides.v[i]);
    dr_strv_free(&overrides);
    free(abs);
  }
  return c;
}

/* ---- defaults -------------------------------------------------------------------------------- */
/* GPUs through nvidia-smi, for a build of Ember without CUDA on a GPU machine. */
static int nvidia_smi_gpus(void) {
  const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
  if (cvd) { /* the ranks will see exactly these */
    int n = 0;
    for (const char *s = cvd; *s;) {
      size_t len = strcspn(s, ",");
      if (len && strncmp(s, "-1", 2) && strncmp(s, "NoDevFiles", 10))
        n++;
      else if (len)
        return n;
      s += len + (s[len] == ',');
    }
    return n;
  }
  FILE *f = popen("timeout 10 nvidia-smi -L 2>/dev/null", "r");
  if (!f) return 0;
  int n = 0;
  char line[512];
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "GPU ", 4)) n++;
  return pclose(f) == 0 ? n : 0;
}

static int auto_nproc(int cores) {
  int gpus = em_cuda_device_count();
  const char *how = "CUDA devices";
  if (gpus <= 0 && !em_built_with_cuda()) {
    gpus = nvidia_smi_gpus();
    how = "GPUs (nvidia-smi / CUDA_VISIBLE_DEVICES; this Ember build has no CUDA)";
  }
  if (gpus > 0) {
    dr_warn("-n auto: %d rank%s per node (%d %s)", gpus, gpus > 1 ? "s" : "", gpus, how);
    return gpus;
  }
  int n = cores < DR_AUTO_MAX_CPU_PROCS ? cores : DR_AUTO_MAX_CPU_PROCS;
  dr_warn("-n auto: %d rank%s per node (no GPU visible; one per CPU core, %d cores, at most %d)", n,
          n > 1 ? "s" : "", cores, DR_AUTO_MAX_CPU_PROCS);
  return n;
}

/* The leading integer of a Slurm count ("4" or "4(x2)"), or -1. */
static int slurm_int(const char *name) {
  const char *v = getenv(name);
  if (!v) return -1;
  char *end;
  long n = strtol(v, &end, 10);
  return end != v && n > 0 && n < (1 << 20) ? (int)n : -1;
}

/* Does srun offer the pmix MPI plugin? Asks `srun --mpi=list` (DDPRUN_FAKE_SRUN_MPI, the list
 * as words, stands in for its answer in the tests). *why says what was seen, for the log. */
static bool srun_has_pmix(char *why, size_t n) {
  const char *fake = getenv("DDPRUN_FAKE_SRUN_MPI");
  char list[1024] = "";
  size_t len = 0;
  if (fake)
    snprintf(list, sizeof list, "%s", fake);
  else {
    FILE *f = popen("timeout 10 srun --mpi=list 2>&1", "r");
    if (f) {
      len = fread(list, 1, sizeof list - 1, f);
      list[len] = 0;
      int st = pclose(f);
      if (st != 0) {
        snprintf(why, n, "`srun --mpi=list` failed (status %d)", st);
        return false;
      }
    }
  }
  /* The answer is "MPI plugin types are...", then one name per line ("\tpmix"). */
  for (char *save, *w = strtok_r(list, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save))
    if (!strcmp(w, "pmix")) {
      snprintf(why, n, "`srun --mpi=list` offers pmix");
      return true;
    }
  snprintf(why, n, "`srun --mpi=list` offers no pmix");
  return false;
}

/* The launcher: as asked; else, inside a Slurm allocation (SLURM_JOB_ID), `srun --mpi=pmix` when
 * srun has pmix and Open MPI's mpirun inside the allocation when not (mpirun reads the
 * allocation's nodes itself). PMI-2 is not tried: Debian's Open MPI 4.1 has no Slurm PMI-2 client
 * and its ranks fail under `srun --mpi=pmi2` (measured; docs/slurm.md). Outside: mpirun. */
static dr_launcher choose_launcher(const dr_options *o) {
  if (o->launcher != DR_LAUNCH_AUTO) return o->launcher;
  const char *job = getenv("SLURM_JOB_ID");
  if (!job) return DR_LAUNCH_MPIRUN;
  char why[128];
  bool pmix = srun_has_pmix(why, sizeof why);
  if (!o->dry_run) /* the dry run's command line says it */
    dr_warn("inside Slurm job %s: %s: %s", job, why,
            pmix ? "ranks start with srun --mpi=pmix"
                 : "ranks start with mpirun inside the allocation");
  return pmix ? DR_LAUNCH_SRUN : DR_LAUNCH_MPIRUN;
}

static void resolve(const dr_options *o, dr_plan *p) {
  *p = (dr_plan){0};
  p->launcher = choose_launcher(o);
  bool srun = p->launcher == DR_LAUNCH_SRUN;
  /* Inside an allocation the plan comes from it, whichever program starts the ranks. */
  bool alloc = srun || getenv("SLURM_JOB_ID");
  p->cores = alloc && slurm_int("SLURM_CPUS_ON_NODE") > 0 ? slurm_int("SLURM_CPUS_ON_NODE")
                                                          : dr_cpu_count();
  if (o->hosts) p->hosts = dr_parse_hosts(o->hosts, "--hosts", &p->nhosts);
  if (o->hostfile) p->hosts = dr_parse_hostfile(o->hostfile, &p->nhosts);

  /* Ranks per node: -n, else the hosts' own counts, else Slurm's, else auto. */
  bool all_counted = p->nhosts > 0;
  for (int i = 0; i < p->nhosts; i++) all_counted &= p->hosts[i].slots > 0;
  int nodes = p->nhosts ? p->nhosts : 1;
  if (alloc && !p->nhosts) {
    nodes = slurm_int("SLURM_NNODES");
    if (nodes < 0) nodes = slurm_int("SLURM_JOB_NUM_NODES");
    if (nodes < 0) nodes = 1;
  }
  int per_node = o->nproc > 0 ? o->nproc : 0;
  if (!per_node && o->nproc != DR_NPROC_AUTO && alloc && !all_counted) {
    per_node = slurm_int("SLURM_NTASKS_PER_NODE");
    int ntasks = slurm_int("SLURM_NTASKS");
    if (per_node < 0 && ntasks > 0 && ntasks % nodes == 0) per_node = ntasks / nodes;
    if (per_node < 0) per_node = 0;
  }
  p->nodes = nodes;
  p->local = !p->nhosts && !alloc;
  p->world = 0;
  p->per_node = 0;
  for (int i = 0; i < p->nhosts; i++) {
    dr_host *h = &p->hosts[i];
    h->procs = per_node ? per_node : h->slots;
    if (!h->procs) {
      if (!per_node) per_node = auto_nproc(p->cores);
      h->procs = per_node;
    }
    if (h->slots && h->procs > h->slots) p->oversubscribe = true;
  }
  if (srun && all_counted && !per_node) { /* srun places the same count on every node */
    for (int i = 1; i < p->nhosts; i++)
      if (p->hosts[i].slots != p->hosts[0].slots)
        dr_usage_error("--hosts/--hostfile: under srun every node runs the same number of ranks "
                       "(%s:%d, %s:%d): give -n",
                       p->hosts[0].name, p->hosts[0].slots, p->hosts[i].name, p->hosts[i].slots);
  }
  if (p->nhosts) {
    for (int i = 0; i < p->nhosts; i++) {
      p->world += p->hosts[i].procs;
      if (p->hosts[i].procs > p->per_node) p->per_node = p->hosts[i].procs;
    }
    if (srun) p->world = p->nhosts * p->per_node;
  } else {
    p->per_node = per_node ? per_node : auto_nproc(p->cores);
    p->world = nodes * p->per_node;
    if (!srun && p->per_node > p->cores) p->oversubscribe = true;
    /* mpirun inside an allocation: the allocation's slots per node are its tasks per node. */
    int slots = slurm_int("SLURM_NTASKS_PER_NODE");
    if (!srun && alloc && slots > 0 && p->per_node > slots) p->oversubscribe = true;
    p->alloc_nodes = !srun && alloc && nodes > 1 ? nodes : 0;
  }

  p->threads = o->threads ? o->threads : (p->cores / p->per_node > 1 ? p->cores / p->per_node : 1);
  bool fits = (long)p->per_node * p->threads <= p->cores;
  p->bind = o->bind != DR_BIND_UNSET ? o->bind : fits ? DR_BIND_CORE : DR_BIND_NONE;
  /* mpirun binds each node's ranks to cores counted from 0, whatever CPU set it was started in
   * (measured: under taskset -c 1, --bind-to core put the rank on core 0). Several "nodes" that
   * share one machine's cores (the netns cluster) would all land on core 0: 4x slower. Inside a
   * CPU set, ranks inherit it instead; on a real node, which has all its CPUs, nothing changes. */
  int online;
  if (!srun && o->bind == DR_BIND_UNSET && p->bind == DR_BIND_CORE && dr_cpus_restricted(&online)) {
    p->bind = DR_BIND_NONE;
    dr_warn("--bind none: this process may use %d of the machine's %d CPUs; ranks inherit that "
            "CPU set (mpirun would bind them to cores counted from 0; --bind core to force it)",
            p->cores, online);
  }
  if (p->bind != DR_BIND_NONE && !fits) {
    p->bind_overload = true;
    dr_warn("--bind %s: %d ranks x %d threads per node > %d cores: ranks will share cores",
            BIND_NAMES[p->bind], p->per_node, p->threads, p->cores);
  }
  p->root = !srun && dr_euid() == 0;
  p->max_restarts = o->max_restarts > 0 ? o->max_restarts : 0;
  if (o->log_dir) {
    if (o->log_dir[0] == '/')
      p->log_dir = dr_xstrdup(o->log_dir);
    else {
      char cwd[PATH_MAX], path[2 * PATH_MAX];
      if (!getcwd(cwd, sizeof cwd)) dr_fatal("getcwd: %s", strerror(errno));
      snprintf(path, sizeof path, "%s/%s", cwd, o->log_dir);
      p->log_dir = dr_xstrdup(path);
    }
  }
  p->echo = !o->log_dir || o->tee;
  p->timeout_s = o->timeout_s;
  if (o->mpi_args) dr_strv_split(&p->extra, o->mpi_args);
  for (int i = 0; i < o->prog.n; i++) dr_strv_push(&p->prog, o->prog.v[i]);
  p->self = dr_self_path();
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--agent")) return dr_agent_main(argc, argv);
  dr_options o;
  parse_args(argc, argv, &o);
  em_config *c = o.config ? apply_config(&o) : NULL;
  if (!o.prog.n) dr_usage_error("no program given (ddprun [options] [--] program [args...])");
  dr_plan p;
  resolve(&o, &p);
  int rc = 0;
  if (o.dry_run) {
    dr_strv cmd = {0};
    dr_command(&p, 0, &cmd);
    char *line = dr_strv_quoted(&cmd);
    printf("%s\n", line);
    free(line);
    dr_strv_free(&cmd);
  } else {
    char origin[PATH_MAX + 64] = "";
    if (o.hosts) snprintf(origin, sizeof origin, "--hosts '%s'", o.hosts);
    if (o.hostfile) snprintf(origin, sizeof origin, "--hostfile %s", o.hostfile);
    dr_check_launch(&p, origin);
    fflush(stdout);
    rc = dr_supervise(&p);
  }
  em_config_free(c);
  dr_strv_free(&o.prog);
  dr_strv_free(&p.prog);
  dr_strv_free(&p.extra);
  for (int i = 0; i < p.nhosts; i++) free(p.hosts[i].name);
  free(p.hosts);
  free(p.log_dir);
  free(p.self);
  return rc;
}
