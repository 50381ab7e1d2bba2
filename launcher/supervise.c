/* supervise.c: runs the job, once per attempt, and explains how it ended.
 *
 *   attempt a:  fork -> setpgid -> exec mpirun/srun (stdin /dev/null)
 *               every DR_POLL_MS: reap it? new DIR/rank-R.attempt-a.status files? a signal?
 *                 first failing status  -> mpirun normally aborts the job by itself (about 1 s
 *                                          here); if it still runs DR_FAIL_TERM_S later: SIGTERM
 *                 SIGINT/SIGTERM/SIGHUP -> the same signal to mpirun (it stops every rank);
 *                                          a second one -> SIGKILL at once
 *                 SIGTERM sent, still running DR_LAUNCHER_GRACE_S later -> SIGKILL to its group
 *               mpirun gone -> read every status file -> success, or the root-cause summary
 *   failure and attempts left (no user interrupt) -> attempt a+1 (EMBER_RESTART_COUNT=a+1)
 *
 * The root cause is the failing status (non-zero exit or signal, not one the agent was asked to
 * stop) with the earliest CLOCK_REALTIME timestamp: ranks stopped because of it end later. */
#define _GNU_SOURCE
#include "ddprun.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* mpirun aborts a job with a failed rank itself; ddprun steps in only if it has not by then. */
#define DR_FAIL_TERM_S 2.0
/* Lines of the failing rank's log in the summary. */
#define DR_TAIL_LINES 10

static volatile sig_atomic_t user_signal, user_signals;
static const char *launcher_name = "mpirun"; /* or "srun", for messages */

static void on_user_signal(int sig) {
  user_signal = sig;
  user_signals++;
}

/* One rank's status file. */
typedef struct {
  bool present;
  int rank, local_rank, exit_code, signal, pid;
  bool stopped;
  long long time_ns;
  char host[256];
} rank_status;

static bool failed(const rank_status *s) { return s->present && (s->signal || s->exit_code); }

/* Reads DIR/rank-R.attempt-A.status; false if it is not there (yet). */
static bool read_status(const char *dir, int rank, int attempt, rank_status *st) {
  char *path = dr_rank_file(dir, rank, attempt, "status");
  FILE *f = fopen(path, "r");
  free(path);
  if (!f) return false;
  *st = (rank_status){.present = true, .rank = rank, .host = "?"};
  char line[512];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    char *eq = strchr(line, '=');
    if (!eq) continue;
    *eq = 0;
    const char *k = line, *v = eq + 1;
    if (!strcmp(k, "exit"))
      st->exit_code = atoi(v);
    else if (!strcmp(k, "signal"))
      st->signal = atoi(v);
    else if (!strcmp(k, "stopped"))
      st->stopped = atoi(v) != 0;
    else if (!strcmp(k, "time_ns"))
      st->time_ns = atoll(v);
    else if (!strcmp(k, "local_rank"))
      st->local_rank = atoi(v);
    else if (!strcmp(k, "pid"))
      st->pid = atoi(v);
    else if (!strcmp(k, "host"))
      snprintf(st->host, sizeof st->host, "%s", v);
  }
  fclose(f);
  return true;
}

/* "exited with code 3" / "was killed by SIGKILL (Killed)". */
static void describe_end(const rank_status *s, char *buf, size_t n) {
  if (s->signal)
    snprintf(buf, n, "was killed by %s (%s)", dr_signame(s->signal), strsignal(s->signal));
  else
    snprintf(buf, n, "exited with code %d", s->exit_code);
}

static void describe_other(const rank_status *s, const rank_status *root, char *buf, size_t n) {
  char end[128];
  if (!s->present) {
    snprintf(buf, n, "no status file (not started, or killed with its agent by %s's SIGKILL)",
             launcher_name);
    return;
  }
  describe_end(s, end, sizeof end);
  double later = root ? 1e-9 * (double)(s->time_ns - root->time_ns) : 0;
  if (s->stopped && s->signal)
    snprintf(buf, n, "stopped by %s (%s)", dr_signame(s->signal), strsignal(s->signal));
  else if (s->stopped)
    snprintf(buf, n, "stopped: %s", end);
  else if (!failed(s))
    snprintf(buf, n, "had finished: %s", end);
  else
    snprintf(buf, n, "failed too, %.1f s later: %s", later, end);
}

/* Prints "ranks 0, 2-5: <what>" for each distinct description. */
static void print_others(const rank_status *st, int world, const rank_status *root) {
  bool *done = calloc((size_t)world, 1);
  if (!done) return;
  for (int r = 0; r < world; r++) {
    if (done[r] || (root && r == root->rank)) continue;
    char what[256], other[256], list[256] = "";
    describe_other(&st[r], root, what, sizeof what);
    int count = 0;
    size_t len = 0;
    for (int q = r; q < world; q++) {
      if (done[q] || (root && q == root->rank)) continue;
      describe_other(&st[q], root, other, sizeof other);
      if (strcmp(what, other)) continue;
      done[q] = true;
      if (count++ < 16 && len < sizeof list - 16)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%d", count > 1 ? ", " : "", q);
    }
    if (count > 16) snprintf(list + len, sizeof list - len, ", ... (%d ranks)", count);
    fprintf(stderr, "ddprun:   rank%s %s: %s\n", count > 1 ? "s" : "", list, what);
  }
  free(done);
}

/* Prints the last lines of rank's log; false if there was nothing to show. */
static bool print_tail(const char *dir, int rank, int attempt) {
  char *log = dr_rank_file(dir, rank, attempt, "log");
  char *tail = dr_tail_file(log, DR_TAIL_LINES);
  bool shown = tail && *tail;
  if (!tail)
    fprintf(stderr, "ddprun: (no log at %s)\n", log);
  else if (!*tail)
    fprintf(stderr, "ddprun: (its log %s is empty)\n", log);
  else {
    fprintf(stderr, "ddprun: last lines of %s:\n", log);
    for (char *line = tail, *next; line; line = next) {
      next = strchr(line, '\n');
      if (next) *next++ = 0;
      fprintf(stderr, "    | %s\n", line);
    }
  }
  free(tail);
  free(log);
  return shown;
}

/* A rank whose log is not empty, among those that failed (not stopped) within a second of root:
 * when every rank fails at once (a configuration error that only rank 0 reports, say), the
 * explanation may be in another rank's log. NULL if none. */
static const rank_status *explaining_rank(const dr_plan *p, int attempt, const rank_status *st,
                                          const rank_status *root) {
  for (int r = 0; r < p->world; r++) {
    if (r == root->rank || !failed(&st[r]) || st[r].stopped) continue;
    if (st[r].time_ns - root->time_ns > 1000000000LL) continue;
    char *log = dr_rank_file(p->log_dir, r, attempt, "log");
    char *tail = dr_tail_file(log, 1);
    bool text = tail && *tail;
    free(tail);
    free(log);
    if (text) return &st[r];
  }
  return NULL;
}

typedef enum { OUT_OK, OUT_FAILED, OUT_INTERRUPTED } outcome;

/* The root-cause summary of a failed attempt; returns the exit status it stands for. */
static int summarise(const dr_plan *p, int attempt, const rank_status *st, int launcher_rc,
                     int interrupt) {
  const rank_status *root = NULL;
  for (int r = 0; r < p->world; r++)
    if (failed(&st[r]) && !st[r].stopped && (!root || st[r].time_ns < root->time_ns)) root = &st[r];
  fprintf(stderr, "ddprun: ==== attempt %d %s (EMBER_RESTART_COUNT=%d, --max-restarts %d) ====\n",
          attempt, root || !interrupt ? "failed" : "interrupted", attempt, p->max_restarts);
  int rc = launcher_rc ? launcher_rc : 1;
  dr_stall_report(p->log_dir, attempt, p->world, root ? root->rank : -1, root ? root->time_ns : 0);
  if (root) {
    char end[128], when[64];
    describe_end(root, end, sizeof end);
    time_t secs = (time_t)(root->time_ns / 1000000000);
    struct tm tm;
    localtime_r(&secs, &tm);
    strftime(when, sizeof when, "%H:%M:%S", &tm);
    fprintf(stderr,
            "ddprun: first failure: rank %d (host %s, local rank %d, pid %d) %s at %s.%03d\n",
            root->rank, root->host, root->local_rank, root->pid, end, when,
            (int)(root->time_ns / 1000000 % 1000));
    const rank_status *other;
    if (!print_tail(p->log_dir, root->rank, attempt) &&
        (other = explaining_rank(p, attempt, st, root))) {
      fprintf(stderr, "ddprun: rank %d failed %.1f s later and says why:\n", other->rank,
              1e-9 * (double)(other->time_ns - root->time_ns));
      print_tail(p->log_dir, other->rank, attempt);
    }
    rc = root->signal ? 128 + root->signal : root->exit_code;
  } else if (interrupt) {
    fprintf(stderr, "ddprun: interrupted by %s: every rank was told to stop\n",
            dr_signame(interrupt));
  } else {
    fprintf(stderr,
            "ddprun: %s exited with status %d before any rank reported a failure "
            "(see its messages above)\n",
            launcher_name, launcher_rc);
  }
  if (interrupt) rc = 128 + interrupt;
  if (p->world > (root ? 1 : 0)) {
    fprintf(stderr, "ddprun: %s:\n", root ? "other ranks" : "ranks");
    print_others(st, p->world, root);
  }
  return rc;
}

/* Starts the launcher as its own process group, stdin from /dev/null. */
static pid_t start(const dr_strv *cmd) {
  pid_t pid = fork();
  if (pid < 0) dr_fatal("fork: %s", strerror(errno));
  if (pid == 0) {
    setpgid(0, 0);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvp(cmd->v[0], cmd->v);
    fprintf(stderr, "ddprun: cannot run %s: %s\n", cmd->v[0], strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  return pid;
}

/* One attempt, from start to summary. *rc gets the attempt's exit status. */
static outcome run_attempt(const dr_plan *p, int attempt, int *rc) {
  dr_strv cmd = {0};
  dr_command(p, attempt, &cmd);
  rank_status *st = calloc((size_t)p->world, sizeof *st);
  if (!st) dr_fatal("out of memory (%d ranks)", p->world);
  int interrupt = user_signal ? user_signal : 0;
  pid_t pid = interrupt ? -1 : start(&cmd);
  int wstatus = 0, seen_signals = user_signals, reported = 0;
  double fail_at = 0, term_at = 0;
  bool running = pid > 0, killed = false;
  while (running) {
    struct timespec nap = {0, DR_POLL_MS * 1000000L};
    nanosleep(&nap, NULL);
    if (waitpid(pid, &wstatus, WNOHANG) == pid) break;
    double now = dr_mono_s();
    if (user_signals != seen_signals) {
      int n = user_signals - seen_signals;
      seen_signals = user_signals;
      interrupt = user_signal;
      if (!term_at) {
        dr_warn("%s: stopping every rank (again to kill at once)", dr_signame(interrupt));
        kill(pid, interrupt == SIGHUP ? SIGTERM : interrupt); /* mpirun: INT/TERM stop the job */
        term_at = now;
        n--;
      }
      if (n > 0) kill(-pid, SIGKILL), kill(pid, SIGKILL), killed = true;
    }
    for (int r = 0; r < p->world && !fail_at; r++) {
      if (st[r].present || !read_status(p->log_dir, r, attempt, &st[r])) continue;
      if (failed(&st[r]) && !st[r].stopped) {
        char end[128];
        describe_end(&st[r], end, sizeof end);
        dr_warn("rank %d %s: stopping the job", r, end);
        fail_at = now;
        reported = r;
      }
    }
    if (fail_at && !term_at && now - fail_at >= DR_FAIL_TERM_S) {
      dr_warn("%s still running %.0f s after rank %d failed: SIGTERM", cmd.v[0], DR_FAIL_TERM_S,
              reported);
      kill(pid, SIGTERM);
      term_at = now;
    }
    if (term_at && now - term_at >= DR_LAUNCHER_GRACE_S) {
      dr_warn("%s still running %.0f s after SIGTERM: SIGKILL to its process group", cmd.v[0],
              DR_LAUNCHER_GRACE_S);
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      killed = true;
      term_at = now + 1e9; /* once */
    }
  }
  int launcher_rc = !running               ? 1
                    : WIFSIGNALED(wstatus) ? 128 + WTERMSIG(wstatus)
                                           : WEXITSTATUS(wstatus);
  bool all_ok = running && launcher_rc == 0;
  /* After our SIGKILL to mpirun, its agents are still stopping their programs (their parent's
   * death is a SIGTERM to them): give their status files a moment. */
  for (double until = dr_mono_s() + 1.0; killed && dr_mono_s() < until;) {
    int missing = 0;
    for (int r = 0; r < p->world; r++)
      if (!st[r].present) missing += !read_status(p->log_dir, r, attempt, &st[r]);
    if (!missing) break;
    struct timespec nap = {0, 50 * 1000000L};
    nanosleep(&nap, NULL);
  }
  for (int r = 0; r < p->world; r++) {
    if (!st[r].present) read_status(p->log_dir, r, attempt, &st[r]);
    if (failed(&st[r])) all_ok = false;
  }
  outcome out = OUT_OK;
  *rc = 0;
  if (!all_ok || interrupt) {
    *rc = summarise(p, attempt, st, launcher_rc, interrupt);
    out = interrupt ? OUT_INTERRUPTED : OUT_FAILED;
  }
  free(st);
  dr_strv_free(&cmd);
  return out;
}

/* ---- the log directory ----------------------------------------------------------------------- */
static bool ours_file(const char *name) {
  int r, a, len = 0;
  return sscanf(name, "rank-%d.attempt-%d.%n", &r, &a, &len) == 2 && len > 0 &&
         (!strcmp(name + len, "log") || !strcmp(name + len, "status") ||
          !strcmp(name + len, "status.tmp") || !strcmp(name + len, "progress") ||
          !strcmp(name + len, "progress.tmp"));
}

/* Removes this launcher's files from dir: only status and progress files (stale ones would be
 * taken for this run's) unless all. */
static void clean_dir(const char *dir, bool all) {
  DIR *d = opendir(dir);
  if (!d) return;
  for (struct dirent *e; (e = readdir(d));) {
    if (!ours_file(e->d_name)) continue;
    if (!all && !strstr(e->d_name, ".status") && !strstr(e->d_name, ".progress")) continue;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
}

static void make_log_dir(dr_plan *p) {
  if (!p->log_dir) {
    const char *tmp = getenv("TMPDIR");
    char templ[PATH_MAX];
    snprintf(templ, sizeof templ, "%s/ddprun.%d.XXXXXX", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    if (!mkdtemp(templ))
      dr_fatal("cannot create a temporary log directory %s: %s", templ, strerror(errno));
    p->log_dir = dr_xstrdup(templ);
    p->log_dir_is_temp = true;
    return;
  }
  char buf[PATH_MAX];
  snprintf(buf, sizeof buf, "%s", p->log_dir);
  for (char *s = buf + 1;; s++) { /* mkdir -p */
    if (*s != '/' && *s) continue;
    char c = *s;
    *s = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
      dr_fatal("--log-dir %s: cannot create %s: %s", p->log_dir, buf, strerror(errno));
    *s = c;
    if (!c) break;
  }
  char *abs = realpath(p->log_dir, NULL);
  if (!abs) dr_fatal("--log-dir %s: %s", p->log_dir, strerror(errno));
  free(p->log_dir);
  p->log_dir = abs;
  clean_dir(abs, false);
}

/* True if prog would be found by execvp (a path, or a name on PATH). */
static bool findable(const char *prog) {
  if (strchr(prog, '/')) return access(prog, X_OK) == 0;
  const char *path = getenv("PATH");
  for (const char *s = path ? path : "/usr/bin:/bin"; *s;) {
    size_t len = strcspn(s, ":");
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%.*s/%s", (int)len, len ? s : ".", prog);
    if (access(buf, X_OK) == 0) return true;
    s += len + (s[len] == ':');
  }
  return false;
}

int dr_supervise(dr_plan *p) {
  launcher_name = p->launcher == DR_LAUNCH_SRUN ? "srun" : "mpirun";
  if (!findable(launcher_name))
    dr_fatal("%s is not on PATH (%s)", launcher_name,
             p->launcher == DR_LAUNCH_SRUN ? "inside a Slurm allocation: SLURM_JOB_ID is set; "
                                             "--launcher mpirun to use Open MPI"
                                           : "Debian package openmpi-bin");
  make_log_dir(p);
  struct sigaction sa = {.sa_handler = on_user_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  int rc = 1;
  bool any_failed = false;
  for (int attempt = 0; attempt <= p->max_restarts; attempt++) {
    outcome out = run_attempt(p, attempt, &rc);
    if (out == OUT_OK) {
      if (attempt > 0) dr_warn("attempt %d succeeded", attempt);
      break;
    }
    any_failed = true;
    if (out == OUT_INTERRUPTED) {
      if (attempt < p->max_restarts) dr_warn("interrupted: no more restarts");
      break;
    }
    if (attempt < p->max_restarts && user_signal) {
      dr_warn("interrupted by %s: no more restarts", dr_signame(user_signal));
      rc = 128 + user_signal;
      break;
    }
    if (attempt < p->max_restarts)
      dr_warn("restart %d of %d (EMBER_RESTART_COUNT=%d)", attempt + 1, p->max_restarts,
              attempt + 1);
  }
  if (p->log_dir_is_temp && !any_failed) {
    clean_dir(p->log_dir, true);
    if (rmdir(p->log_dir) != 0) dr_warn("could not remove %s: %s", p->log_dir, strerror(errno));
  } else if (any_failed) {
    dr_warn("logs: %s", p->log_dir);
  }
  return rc;
}
