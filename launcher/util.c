/* util.c: the launcher's small helpers: argument vectors and their shell quoting, messages and
 * exits, number parsing, clocks, signal names, CPU count, and reading a file's last lines. */
#define _GNU_SOURCE
#include "ddprun.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- messages -------------------------------------------------------------------------------- */
static void vmessage(const char *fmt, va_list ap) {
  char buf[4096];
  vsnprintf(buf, sizeof buf, fmt, ap);
  fprintf(stderr, "ddprun: %s\n", buf);
  fflush(stderr);
}

void dr_warn(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vmessage(fmt, ap);
  va_end(ap);
}

void dr_usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vmessage(fmt, ap);
  va_end(ap);
  fprintf(stderr, "usage: ddprun [options] [--] program [args...]   (ddprun --help for more)\n");
  exit(DR_EXIT_USAGE);
}

void dr_fatal(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vmessage(fmt, ap);
  va_end(ap);
  exit(1);
}

void *dr_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) dr_fatal("out of memory (%zu bytes)", n);
  return p;
}

char *dr_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(dr_xmalloc(n), s, n);
}

/* ---- argument vectors ------------------------------------------------------------------------ */
void dr_strv_push(dr_strv *a, const char *s) {
  if (a->n + 2 > a->cap) {
    int cap = a->cap ? 2 * a->cap : 16;
    char **v = realloc(a->v, (size_t)cap * sizeof *v);
    if (!v) dr_fatal("out of memory (argument vector of %d)", cap);
    a->v = v;
    a->cap = cap;
  }
  a->v[a->n++] = dr_xstrdup(s);
  a->v[a->n] = NULL;
}

void dr_strv_pushf(dr_strv *a, const char *fmt, ...) {
  char buf[PATH_MAX + 256];
  va_list ap;
  va_start(ap, fmt);
  int len = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (len < 0 || (size_t)len >= sizeof buf) dr_fatal("argument too long: %.60s...", buf);
  dr_strv_push(a, buf);
}

void dr_strv_split(dr_strv *a, const char *s) {
  while (*s) {
    while (*s == ' ' || *s == '\t' || *s == '\n') s++;
    size_t len = strcspn(s, " \t\n");
    if (!len) break;
    char *w = dr_xmalloc(len + 1);
    memcpy(w, s, len);
    w[len] = 0;
    dr_strv_push(a, w);
    free(w);
    s += len;
  }
}

void dr_strv_free(dr_strv *a) {
  for (int i = 0; i < a->n; i++) free(a->v[i]);
  free(a->v);
  *a = (dr_strv){0};
}

/* Words made only of these need no quotes in sh. */
static bool shell_safe(const char *s) {
  if (!*s) return false;
  for (; *s; s++)
    if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:=,@%+-", *s))
      return false;
  return true;
}

char *dr_strv_quoted(const dr_strv *a) {
  size_t cap = 1;
  for (int i = 0; i < a->n; i++) cap += 4 * strlen(a->v[i]) + 3;
  char *out = dr_xmalloc(cap), *o = out;
  for (int i = 0; i < a->n; i++) {
    const char *s = a->v[i];
    if (i) *o++ = ' ';
    if (shell_safe(s)) {
      o = stpcpy(o, s);
      continue;
    }
    *o++ = '\'';
    for (; *s; s++) {
      if (*s == '\'')
        o = stpcpy(o, "'\\''");
      else
        *o++ = *s;
    }
    *o++ = '\'';
  }
  *o = 0;
  return out;
}

/* ---- numbers, clocks, signals ---------------------------------------------------------------- */
bool dr_parse_int(const char *s, long lo, long hi, long *out) {
  if (!s || !*s) return false;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || *s == ' ' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

int64_t dr_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double dr_mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *dr_signame(int sig) {
  static const struct {
    int sig;
    const char *name;
  } names[] = {{SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"},
               {SIGILL, "SIGILL"},   {SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"},
               {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},   {SIGKILL, "SIGKILL"},
               {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
               {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"},
               {SIGXCPU, "SIGXCPU"}, {SIGXFSZ, "SIGXFSZ"}, {SIGSYS, "SIGSYS"}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].sig == sig) return names[i].name;
  static __thread char buf[16];
  snprintf(buf, sizeof buf, "SIG%d", sig);
  return buf;
}

/* ---- the machine ----------------------------------------------------------------------------- */
int dr_cpu_count(void) {
  long fake;
  if (dr_parse_int(getenv("DDPRUN_FAKE_CORES"), 1, 1 << 20, &fake)) return (int)fake;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

bool dr_cpus_restricted(int *online) {
  long n = sysconf(_SC_NPROCESSORS_ONLN), fake;
  *online = n > 0 ? (int)n : 1;
  if (dr_parse_int(getenv("DDPRUN_FAKE_RESTRICTED"), 0, 1, &fake)) return fake == 1;
  if (getenv("DDPRUN_FAKE_CORES")) return false; /* the tests' fake machine is never restricted */
  return dr_cpu_count() < *online;
}

unsigned dr_euid(void) {
  long fake;
  if (dr_parse_int(getenv("DDPRUN_FAKE_EUID"), 0, UINT_MAX, &fake)) return (unsigned)fake;
  return (unsigned)geteuid();
}

char *dr_self_path(void) {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) dr_fatal("cannot read /proc/self/exe: %s", strerror(errno));
  buf[n] = 0;
  return dr_xstrdup(buf);
}

/* ---- files ----------------------------------------------------------------------------------- */
bool dr_write_all(int fd, const char *buf, size_t n) {
  while (n) {
    ssize_t w = write(fd, buf, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    buf += w;
    n -= (size_t)w;
  }
  return true;
}

char *dr_tail_file(const char *path, int nlines) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  enum { MAX_TAIL = 64 * 1024 };
  struct stat st;
  off_t start = 0;
  if (fstat(fd, &st) == 0 && st.st_size > MAX_TAIL) start = st.st_size - MAX_TAIL;
  char *buf = dr_xmalloc(MAX_TAIL + 2);
  size_t len = 0;
  ssize_t r;
  while (len < MAX_TAIL && (r = pread(fd, buf + len, MAX_TAIL - len, start + (off_t)len)) != 0) {
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    len += (size_t)r;
  }
  close(fd);
  while (len && buf[len - 1] == '\n') len--; /* the last line's newline, and empty last lines */
  buf[len] = 0;
  size_t from = 0;
  int seen = 0;
  for (size_t i = len; i-- > 0;)
    if (buf[i] == '\n' && ++seen == nlines) {
      from = i + 1;
      break;
    }
  memmove(buf, buf + from, len - from + 1);
  return buf;
}

char *dr_rank_file(const char *dir, int rank, int attempt, const char *ext) {
  size_t n = strlen(dir) + strlen(ext) + 64;
  char *s = dr_xmalloc(n);
  snprintf(s, n, "%s/rank-%d.attempt-%d.%s", dir, rank, attempt, ext);
  return s;
}
