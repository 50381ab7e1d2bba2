/* agent.c: ddprun's hidden per-rank mode. mpirun (or srun) starts one agent per rank:
 *
 *   ddprun --agent ATTEMPT LOGDIR tag|quiet -- program args...
 *
 * The agent learns its rank from the launcher's variables (OMPI_COMM_WORLD_* or SLURM_*), exports
 * RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE, and runs the program with stdout and stderr
 * into one pipe:
 *
 *   program --pipe--> agent --+--> LOGDIR/rank-R.attempt-A.log       (every byte, as it comes)
 *                             +--> stdout "[rank R] line"            (MODE tag: whole lines)
 *   program ends   --> LOGDIR/rank-R.attempt-A.status (tmp + rename) --> exit code or 128+signal
 *
 * The program also gets a progress page (EMBER_PROGRESS_FD, stall.c) where its collectives say how
 * far they got. Seen stopped (state T), or told to stop, the agent first writes the page to
 * LOGDIR/rank-R.attempt-A.progress, for ddprun's report of who stopped making progress.
 *
 * SIGTERM/SIGINT/SIGHUP to the agent go to the program's process group, and SIGKILL follows
 * DR_AGENT_GRACE_S later if it is still there; a stopped program, which could not act on them,
 * gets SIGKILL at once. The program is its own process group so that it
 * gets each signal once, from the agent. If the agent's parent (mpirun's daemon) dies, the agent
 * gets SIGTERM (PR_SET_PDEATHSIG) and stops the program the same way; if the agent itself is
 * SIGKILLed, the program gets SIGKILL. */
#define _GNU_SOURCE
#include "ddprun.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig) {
  int saved = errno;
  unsigned char b = (unsigned char)sig;
  if (write(sig_pipe[1], &b, 1) < 0) { /* full: a signal is already pending */
  }
  errno = saved;
}

typedef struct {
  int rank, local_rank, world, local_world;
  const char *source; /* which launcher's variables */
} rank_info;

static int env_int(const char *name, int def) {
  long v;
  return dr_parse_int(getenv(name), 0, 1 << 30, &v) ? (int)v : def;
}

/* Slurm's "2(x3),1" (tasks per node, node by node): the count for node `node`, or -1. */
static int slurm_tasks_on_node(const char *spec, int node) {
  if (!spec) return -1;
  for (const char *s = spec; *s;) {
    char *end;
    long count = strtol(s, &end, 10), reps = 1;
    if (end == s) return -1;
    if (!strncmp(end, "(x", 2)) {
      reps = strtol(end + 2, &end, 10);
      if (*end++ != ')') return -1;
    }
    if (node < reps) return (int)count;
    node -= (int)reps;
    if (*end != ',') return -1;
    s = end + 1;
  }
  return -1;
}

static rank_info find_rank(void) {
  rank_info r = {0, 0, 1, 1, "none (a world of 1)"};
  if (getenv("OMPI_COMM_WORLD_RANK")) {
    r = (rank_info){env_int("OMPI_COMM_WORLD_RANK", 0), env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0),
                    env_int("OMPI_COMM_WORLD_SIZE", 1), env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1),
                    "Open MPI"};
  } else if (getenv("SLURM_PROCID")) {
    int node = env_int("SLURM_NODEID", 0);
    int lw = slurm_tasks_on_node(getenv("SLURM_STEP_TASKS_PER_NODE"), node);
    if (lw < 0) lw = slurm_tasks_on_node(getenv("SLURM_TASKS_PER_NODE"), node);
    if (lw < 0) lw = env_int("SLURM_NTASKS_PER_NODE", 1);
    int world = env_int("SLURM_STEP_NUM_TASKS", env_int("SLURM_NTASKS", 1));
    r = (rank_info){env_int("SLURM_PROCID", 0), env_int("SLURM_LOCALID", 0), world, lw, "Slurm"};
  }
  return r;
}

static void setenv_int(const char *name, int v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%d", v);
  setenv(name, buf, 1);
}

/* mkdir -p (the temporary log directory exists only on ddprun's host). */
static bool make_dirs(const char *path) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return false;
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || !*p) {
      char c = *p;
      *p = 0;
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) return false;
      *p = c;
      if (!c) return true;
    }
  }
}

/* The child: the program, its own process group, output into the pipe. Never returns. */
static void run_program(char **prog, int out_fd, int page_fd, pid_t agent) {
  setpgid(0, 0);
  if (page_fd >= 0) {
    char fd[16];
    snprintf(fd, sizeof fd, "%d", page_fd);
    setenv("EMBER_PROGRESS_FD", fd, 1);
  }
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != agent) _exit(128 + SIGKILL); /* the agent is already gone */
  signal(SIGPIPE, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  dup2(out_fd, 1);
  dup2(out_fd, 2);
  execvp(prog[0], prog);
  dprintf(2, "ddprun: cannot run '%s': %s\n", prog[0], strerror(errno));
  _exit(127);
}

/* Output to the terminal: whole lines, "[rank R] " in front, one write each. */
typedef struct {
  char buf[16384];
  size_t len;
  int rank;
} line_buf;

static void emit(line_buf *lb, const char *s, size_t n) {
  char out[sizeof lb->buf + 32];
  int pre = snprintf(out, sizeof out, "[rank %d] ", lb->rank);
  if (n >= (size_t)pre && !memcmp(s, out, (size_t)pre)) pre = 0; /* the program tagged it already */
  memcpy(out + pre, s, n);
  out[pre + n] = '\n';
  (void)dr_write_all(1, out, (size_t)pre + n + 1); /* a closed stdout must not stop the rank */
}

static void tag_lines(line_buf *lb, const char *data, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (data[i] == '\n') {
      emit(lb, lb->buf, lb->len);
      lb->len = 0;
      continue;
    }
    if (lb->len == sizeof lb->buf) { /* a very long line: out in pieces */
      emit(lb, lb->buf, lb->len);
      lb->len = 0;
    }
    lb->buf[lb->len++] = data[i];
  }
}

/* The program (pid), or the rank behind it (a wrapper script's child: the page has its pid), is
 * stopped. */
static bool program_stopped(const coll_progress_page *page, pid_t pid) {
  pid_t rank_pid = page ? (pid_t)__atomic_load_n(&page->pid, __ATOMIC_RELAXED) : 0;
  return dr_process_stopped(pid) || (rank_pid > 0 && dr_process_stopped(rank_pid));
}

/* DIR/rank-R.attempt-A.status, written whole or not at all. */
static void write_status(const char *dir, const rank_info *ri, int attempt, pid_t pid, int wstatus,
                         bool stopped, const coll_progress_page *page, int64_t paused_ns) {
  char *path = dr_rank_file(dir, ri->rank, attempt, "status");
  char *tmp = dr_rank_file(dir, ri->rank, attempt, "status.tmp");
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  char text[2048];
  int n = snprintf(text, sizeof text,
                   "rank=%d\nlocal_rank=%d\nworld_size=%d\nattempt=%d\nhost=%s\npid=%d\n"
                   "%s=%d\nstopped=%d\ntime_ns=%lld\n",
                   ri->rank, ri->local_rank, ri->world, attempt, host, (int)pid,
                   WIFSIGNALED(wstatus) ? "signal" : "exit",
                   WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : WEXITSTATUS(wstatus), (int)stopped,
                   (long long)dr_now_ns());
  n += dr_progress_text(page, pid, paused_ns, text + n, sizeof text - (size_t)n);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  bool ok = fd >= 0 && dr_write_all(fd, text, (size_t)n) && fsync(fd) == 0;
  if (fd >= 0 && close(fd) != 0) ok = false;
  if (!ok || rename(tmp, path) != 0)
    fprintf(stderr, "ddprun agent (rank %d): cannot write %s: %s\n", ri->rank, path,
            strerror(errno));
  free(path);
  free(tmp);
}

int dr_agent_main(int argc, char **argv) {
  long attempt;
  if (argc < 7 || !dr_parse_int(argv[2], 0, 1 << 20, &attempt) || strcmp(argv[5], "--") ||
      (strcmp(argv[4], "tag") && strcmp(argv[4], "quiet"))) {
    fprintf(stderr, "ddprun --agent: expected ATTEMPT LOGDIR tag|quiet -- program [args] "
                    "(this mode is for ddprun's own use)\n");
    return DR_EXIT_USAGE;
  }
  const char *dir = argv[3];
  bool tag = !strcmp(argv[4], "tag");
  char **prog = argv + 6;
  pid_t self = getpid();
  /* mpirun's daemon gone: stop the program as if told to. */
  prctl(PR_SET_PDEATHSIG, SIGTERM);

  rank_info ri = find_rank();
  setenv_int("RANK", ri.rank);
  setenv_int("LOCAL_RANK", ri.local_rank);
  setenv_int("WORLD_SIZE", ri.world);
  setenv_int("LOCAL_WORLD_SIZE", ri.local_world);

  if (!make_dirs(dir)) {
    fprintf(stderr, "ddprun agent (rank %d): cannot create log directory %s: %s\n", ri.rank, dir,
            strerror(errno));
    return 1;
  }
  char *log_path = dr_rank_file(dir, ri.rank, (int)attempt, "log");
  int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    fprintf(stderr, "ddprun agent (rank %d): cannot open %s: %s\n", ri.rank, log_path,
            strerror(errno));
    return 1;
  }

  int out[2];
  if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0 || pipe2(out, O_CLOEXEC) != 0) {
    fprintf(stderr, "ddprun agent (rank %d): pipe: %s\n", ri.rank, strerror(errno));
    return 1;
  }
  struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
  sigemptyset(&sa.sa_mask);
  int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGCHLD};
  for (int i = 0; i < 4; i++) sigaction(forwarded[i], &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  int page_fd = -1;
  coll_progress_page *page = dr_progress_page_new(&page_fd);
  if (!page)
    fprintf(stderr, "ddprun agent (rank %d): no progress page (%s): a stall report will lack "
                    "this rank's progress\n", ri.rank, strerror(errno));
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "ddprun agent (rank %d): fork: %s\n", ri.rank, strerror(errno));
    return 1;
  }
  if (pid == 0) {
    int w = dup(out[1]); /* without O_CLOEXEC, to survive the exec */
    run_program(prog, w, page_fd, self);
  }
  setpgid(pid, pid); /* also in the child: whichever runs first */
  close(out[1]);
  if (page_fd >= 0) close(page_fd); /* the mapping stays */

  line_buf *lb = dr_xmalloc(sizeof *lb);
  lb->len = 0;
  lb->rank = ri.rank;
  char data[65536];
  bool exited = false, out_open = true, stopping = false, killed = false, log_failed = false;
  int wstatus = 0;
  double kill_at = 0, exited_at = 0;
  int64_t paused_ns = 0; /* when the program was first seen stopped (0: running) */
  double next_look = 0;   /* the next look at the program's state */
  while (out_open || !exited) {
    struct pollfd fds[2] = {{out_open ? out[0] : -1, POLLIN, 0}, {sig_pipe[0], POLLIN, 0}};
    int ready = poll(fds, 2, DR_POLL_MS);
    if (ready < 0) { /* EINTR (a signal: its byte is in the pipe), or nothing to go on with */
      ready = 0;
      fds[0].revents = fds[1].revents = 0;
    }
    if (fds[0].revents) {
      ssize_t r = read(out[0], data, sizeof data);
      if (r > 0) {
        if (!dr_write_all(log_fd, data, (size_t)r) && !log_failed) {
          fprintf(stderr, "ddprun agent (rank %d): writing %s failed: %s (going on without)\n",
                  ri.rank, log_path, strerror(errno));
          log_failed = true;
        }
        if (tag) tag_lines(lb, data, (size_t)r);
      } else if (r == 0 || errno != EINTR) {
        out_open = false;
      }
    }
    if (fds[1].revents) {
      unsigned char sigs[64];
      ssize_t r = read(sig_pipe[0], sigs, sizeof sigs);
      for (ssize_t i = 0; i < r; i++) {
        if (sigs[i] == SIGCHLD || exited) continue;
        if (!stopping && !paused_ns && program_stopped(page, pid)) paused_ns = dr_now_ns();
        if (!stopping) dr_progress_write(dir, ri.rank, (int)attempt, page, pid, paused_ns);
        kill(-pid, sigs[i]);
        if (!stopping) kill_at = dr_mono_s() + DR_AGENT_GRACE_S;
        if (paused_ns) kill_at = 0; /* stopped, it cannot act on the signal: SIGKILL below */
        stopping = true;
      }
    }
    /* Every DR_POLL_MS, not at every read; not once told to stop (a process being killed is
     * no longer stopped, and the report must still say that it was). */
    if (!exited && !stopping && dr_mono_s() >= next_look) {
      next_look = dr_mono_s() + DR_POLL_MS * 1e-3;
      bool now_stopped = program_stopped(page, pid);
      if (now_stopped != (paused_ns != 0)) { /* stopped, or continued again */
        paused_ns = now_stopped ? dr_now_ns() : 0;
        dr_progress_write(dir, ri.rank, (int)attempt, page, pid, paused_ns);
      }
    }
    if (!exited && waitpid(pid, &wstatus, WNOHANG) == pid) {
      exited = true;
      exited_at = dr_mono_s();
    }
    if (!exited && stopping && !killed && dr_mono_s() >= kill_at) {
      if (paused_ns)
        fprintf(stderr, "ddprun agent (rank %d): program stopped (state T): SIGKILL\n", ri.rank);
      else
        fprintf(stderr,
                "ddprun agent (rank %d): program still running %.0f s after the stop "
                "signal: SIGKILL\n",
                ri.rank, DR_AGENT_GRACE_S);
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      killed = true;
    }
    /* Something the program started may hold the pipe open: stop reading soon after it ends. */
    if (exited && out_open && (ready == 0 || dr_mono_s() - exited_at > 2.0)) out_open = false;
  }
  if (tag && lb->len) emit(lb, lb->buf, lb->len);
  close(log_fd);
  write_status(dir, &ri, (int)attempt, pid, wstatus, stopping, page, paused_ns);
  free(lb);
  free(log_path);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return WEXITSTATUS(wstatus);
}
