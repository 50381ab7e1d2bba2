/* ddprun.h: the launcher's private interface, shared by its files (never installed, never
 * included by libember or by user programs).
 *
 *   ddprun.c     main: command-line options, --config's launch: section, defaults -> dr_plan
 *   plan.c       hosts and hostfiles, the mpirun / srun command line, shell quoting
 *   supervise.c  runs the command once per attempt, watches the ranks' status files, stops the
 *                job on the first failure or on a signal, prints the root-cause summary
 *   agent.c      the hidden per-rank mode (ddprun --agent ...): rank variables, the program's
 *                output into its log (and tagged onto stdout), its status file
 *   stall.c      which rank stopped making progress: the agents' progress pages and files,
 *                ddprun's "stalled:" lines
 *   util.c       argument vectors, errors, clocks, signal names, small file helpers
 *
 * The flow: options (as given) -> dr_plan (every default resolved) -> argv for one attempt ->
 * run, watch, summarise, maybe run again. Everything here runs in the launcher process, which may
 * exit(): a bad option prints one line naming it and exits 2. */
#ifndef EMBER_DDPRUN_H
#define EMBER_DDPRUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "coll_progress.h"

/* Exit status for usage errors: unknown option, missing or bad value, no program. */
#define DR_EXIT_USAGE 2
/* Seconds a rank gets between SIGTERM and SIGKILL (agent -> program, ddprun -> mpirun). */
#define DR_AGENT_GRACE_S 5.0
#define DR_LAUNCHER_GRACE_S 10.0
/* How often ddprun looks for status files while the job runs. */
#define DR_POLL_MS 200
/* -n auto on a machine without GPUs: one rank per core, at most this many. */
#define DR_AUTO_MAX_CPU_PROCS 8

/* ---- argument vectors (NULL-terminated, each string owned by the vector) --------------------- */
typedef struct {
  char **v;
  int n, cap;
} dr_strv;

void dr_strv_push(dr_strv *a, const char *s);
void dr_strv_pushf(dr_strv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Splits s on blanks (no quoting) and pushes the words. */
void dr_strv_split(dr_strv *a, const char *s);
void dr_strv_free(dr_strv *a);
/* The vector as one shell-quoted line (caller frees). */
char *dr_strv_quoted(const dr_strv *a);

/* ---- small helpers (util.c) ------------------------------------------------------------------ */
/* "ddprun: <message>\n" on stderr. */
void dr_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same, a hint to --help, and exit(DR_EXIT_USAGE). */
void dr_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* The same and exit(1): the launcher itself cannot go on (out of memory, no /proc/self/exe). */
void dr_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void *dr_xmalloc(size_t n);
char *dr_xstrdup(const char *s);
/* Parses a whole decimal integer in [lo, hi]; false if s is not one. */
bool dr_parse_int(const char *s, long lo, long hi, long *out);
int64_t dr_now_ns(void);         /* CLOCK_REALTIME, nanoseconds */
double dr_mono_s(void);          /* CLOCK_MONOTONIC, seconds */
const char *dr_signame(int sig); /* "SIGKILL" (or "SIG<n>") */
/* CPUs this process may run on (affinity mask; DDPRUN_FAKE_CORES overrides, for tests). */
int dr_cpu_count(void);
/* True if this process may use fewer CPUs than the machine has online (*online): a CPU set given
 * by taskset, a container or the netns cluster. DDPRUN_FAKE_RESTRICTED=0|1 overrides (tests);
 * with DDPRUN_FAKE_CORES alone it is false. */
bool dr_cpus_restricted(int *online);
/* Effective uid (DDPRUN_FAKE_EUID overrides, for tests). */
unsigned dr_euid(void);
/* Absolute path of the running ddprun executable (caller frees). */
char *dr_self_path(void);
/* Writes all of buf to fd, retrying on EINTR and short writes; false on error. */
bool dr_write_all(int fd, const char *buf, size_t n);
/* The last nlines lines of a file (at most 64 KiB read), or NULL. Caller frees. */
char *dr_tail_file(const char *path, int nlines);

/* ---- the launch, as given and as resolved ---------------------------------------------------- */
typedef enum { DR_BIND_UNSET = -1, DR_BIND_NONE = 0, DR_BIND_CORE, DR_BIND_NUMA } dr_bind;
typedef enum { DR_LAUNCH_AUTO = 0, DR_LAUNCH_MPIRUN, DR_LAUNCH_SRUN } dr_launcher;

#define DR_NPROC_AUTO (-2)

/* What the user asked for; 0 / NULL / UNSET mean "not given" (then the config, then defaults). */
typedef struct {
  int nproc;         /* per node; DR_NPROC_AUTO for "auto" */
  const char *hosts; /* "h1:4,h2:4" */
  const char *hostfile;
  int threads;
  dr_bind bind;
  int max_restarts; /* -1: not given */
  const char *log_dir;
  bool tee;
  double timeout_s;
  const char *config;
  bool dry_run;
  const char *mpi_args;
  dr_launcher launcher;
  dr_strv prog; /* program and its arguments */
} dr_options;

typedef struct {
  char *name;
  int slots; /* from "h:N" or "slots=N"; 0 when not given */
  int procs; /* ranks placed there */
} dr_host;

/* Every decision made, ready to become a command line. */
typedef struct {
  dr_launcher launcher; /* MPIRUN or SRUN */
  dr_host *hosts;       /* NULL: this machine only (mpirun), or the allocation (srun) */
  int nhosts;
  bool local;      /* every rank on this machine: no hosts given, no Slurm allocation */
  int nodes;       /* hosts, or the allocation's nodes (srun, or mpirun in it); 1 locally */
  int per_node;    /* ranks on each node */
  int world;       /* nodes * per_node */
  int alloc_nodes; /* mpirun inside a Slurm allocation of this many nodes (> 1), else 0 */
  int cores;       /* CPUs per node (this machine's, or SLURM_CPUS_ON_NODE) */
  int threads;     /* per rank */
  dr_bind bind;
  bool bind_overload; /* --bind core asked for more CPUs than there are */
  bool oversubscribe;
  bool root;
  int max_restarts;
  char *log_dir; /* absolute; NULL until supervise.c makes the temporary one */
  bool log_dir_is_temp;
  bool echo;        /* ranks' output tagged onto the terminal */
  double timeout_s; /* 0: not set */
  dr_strv extra;    /* --mpi-args words */
  dr_strv prog;
  char *self; /* this executable, for the agents */
} dr_plan;

/* plan.c */
/* Parses "h1:4,h2,h3:2" (origin names the option in messages); exits 2 on a syntax error. */
dr_host *dr_parse_hosts(const char *spec, const char *origin, int *nhosts);
/* Parses an Open MPI-style hostfile ("host [slots=N]" lines, # comments); exits 2 naming
 * file:line on an error. */
dr_host *dr_parse_hostfile(const char *path, int *nhosts);
/* Before anything starts (not for --dry-run, whose names may be placeholders): with mpirun, every
 * host must resolve here (srun reaches Slurm's node names itself) (origin, "--hosts 'spec'" or "--hostfile FILE", names them in the message), and on
 * a local run the program must be one execvp would find. Exits 2 naming the host or program:
 * mpirun would otherwise start, fail late and noisily, and, for a host, hand the name to ssh
 * (Open MPI cuts "nohost.invalid" to "nohost", which might exist). */
void dr_check_launch(const dr_plan *p, const char *origin);
/* The command that runs attempt `attempt` (an argv: mpirun or srun ... ddprun --agent ...). */
void dr_command(const dr_plan *p, int attempt, dr_strv *out);

/* supervise.c: runs every attempt; returns ddprun's exit status. */
int dr_supervise(dr_plan *p);

/* agent.c: ddprun --agent ATTEMPT LOGDIR MODE -- program args; returns the exit status. */
int dr_agent_main(int argc, char **argv);

/* stall.c, agent side. A zeroed progress page with its magic, in a memfd the program inherits
 * (*fd), or NULL (no page: reports lack this rank's progress). */
coll_progress_page *dr_progress_page_new(int *fd);
/* pid is stopped (state T or t: SIGSTOP, SIGTSTP, a debugger). */
bool dr_process_stopped(pid_t pid);
/* The page as key=value lines (for the status and progress files); program: its pid if the page
 * has none yet. paused_ns: when the process was seen stopped (0: it was not). */
int dr_progress_text(const coll_progress_page *page, pid_t program, int64_t paused_ns, char *buf,
                     size_t n);
/* DIR/rank-R.attempt-A.progress, whole or not at all. */
void dr_progress_write(const char *dir, int rank, int attempt, const coll_progress_page *page,
                       pid_t program, int64_t paused_ns);
/* stall.c, ddprun side: after a failed attempt, "ddprun: stalled: ..." for each rank that was
 * stopped, or else that never started the operation others were in (not root_rank, the first
 * failure, -1 if none; root_ns its time). Returns the ranks named. */
int dr_stall_report(const char *dir, int attempt, int world, int root_rank, long long root_ns);

/* The file names shared by the agents and ddprun. */
char *dr_rank_file(const char *dir, int rank, int attempt, const char *ext);

#endif
