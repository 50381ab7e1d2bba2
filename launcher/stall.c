/* stall.c: which rank stopped making progress (docs/reliability.md, "Stalled ranks").
 *
 * When one rank stops (SIGSTOP, a debugger, a hang in its own code), the others wait in the next
 * collective until its timeout aborts the job: the first rank to fail is then a healthy one. Its
 * own report can name the culprit only on its own node. ddprun can do better, since an agent runs
 * next to every rank on every node:
 *
 *   agent: progress page (memfd, coll_progress.h) -> its rank's collectives write into it
 *          every DR_POLL_MS: is the rank's process stopped (state T)?  first seen: write
 *          DIR/rank-R.attempt-A.progress at once; told to stop the rank: write it again first
 *   ddprun, summing up a failed attempt: read every rank's progress file ->
 *          ranks that were stopped, else ranks that never started the operation others were in
 *
 * Every file is written whole (tmp + rename); DIR must be shared across nodes, as for the logs. */
#define _GNU_SOURCE
#include "ddprun.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ---- agent side ------------------------------------------------------------------------------ */
coll_progress_page *dr_progress_page_new(int *fd) {
  *fd = memfd_create("ember-progress", 0); /* no CLOEXEC: the rank inherits it */
  if (*fd < 0) return NULL;
  void *m = MAP_FAILED;
  if (ftruncate(*fd, sizeof(coll_progress_page)) == 0)
    m = mmap(NULL, sizeof(coll_progress_page), PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
  if (m == MAP_FAILED) {
    close(*fd);
    *fd = -1;
    return NULL;
  }
  coll_progress_page *page = m;
  memset(page, 0, sizeof *page);
  __atomic_store_n(&page->magic, COLL_PROGRESS_MAGIC, __ATOMIC_RELEASE);
  return page;
}

bool dr_process_stopped(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return false;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')'); /* after the command name, which may hold anything */
  char state = 0;
  return p && sscanf(p + 1, " %c", &state) == 1 && (state == 'T' || state == 't');
}

int dr_progress_text(const coll_progress_page *page, pid_t program, int64_t paused_ns, char *buf,
                     size_t n) {
  coll_progress_page snap = {0};
  bool have = page && coll_progress_read(page, &snap);
  return snprintf(buf, n,
                  "progress_pid=%lld\npaused_ns=%lld\ncoll_known=%d\ncoll_started=%lld\n"
                  "coll_done=%lld\ncoll_changed_ns=%lld\ncoll_what=%s\n",
                  have && snap.pid > 0 ? (long long)snap.pid : (long long)program,
                  (long long)paused_ns, (int)have, (long long)snap.started, (long long)snap.done,
                  (long long)snap.changed_ns, snap.what);
}

void dr_progress_write(const char *dir, int rank, int attempt, const coll_progress_page *page,
                       pid_t program, int64_t paused_ns) {
  char *path = dr_rank_file(dir, rank, attempt, "progress");
  char *tmp = dr_rank_file(dir, rank, attempt, "progress.tmp");
  char host[256] = "?", text[1024];
  gethostname(host, sizeof host - 1);
  int k = snprintf(text, sizeof text, "rank=%d\nhost=%s\ntime_ns=%lld\n", rank, host,
                   (long long)dr_now_ns());
  k += dr_progress_text(page, program, paused_ns, text + k, sizeof text - (size_t)k);
  /* No fsync: it is a diagnosis, and the agent may have only moments before SIGKILL. */
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  bool ok = fd >= 0 && dr_write_all(fd, text, (size_t)k);
  if (fd >= 0 && close(fd) != 0) ok = false;
  if (!ok || rename(tmp, path) != 0)
    fprintf(stderr, "ddprun agent (rank %d): cannot write %s: %s\n", rank, path, strerror(errno));
  free(path);
  free(tmp);
}

/* ---- ddprun side ----------------------------------------------------------------------------- */
typedef struct {
  bool present, known; /* a file; the rank's page was read */
  long long pid, paused_ns, started, done, changed_ns, time_ns;
  char host[256], what[COLL_PROGRESS_WHAT];
} progress;

/* The rank's progress from its status file (written last, when the program ended), else from
 * its progress file (the program did not end before its agent was killed). */
static bool read_progress(const char *dir, int rank, int attempt, progress *p) {
  FILE *f = NULL;
  for (int i = 0; i < 2 && !f; i++) {
    char *path = dr_rank_file(dir, rank, attempt, i == 0 ? "status" : "progress");
    f = fopen(path, "r");
    free(path);
  }
  *p = (progress){.host = "?"};
  if (!f) return false;
  p->present = true;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    char *v = strchr(line, '=');
    if (!v) continue;
    *v++ = 0;
    long long x = atoll(v);
    if (!strcmp(line, "host")) snprintf(p->host, sizeof p->host, "%s", v);
    else if (!strcmp(line, "coll_what")) snprintf(p->what, sizeof p->what, "%s", v);
    else if (!strcmp(line, "progress_pid")) p->pid = x;
    else if (!strcmp(line, "paused_ns")) p->paused_ns = x;
    else if (!strcmp(line, "coll_known")) p->known = x != 0;
    else if (!strcmp(line, "coll_started")) p->started = x;
    else if (!strcmp(line, "coll_done")) p->done = x;
    else if (!strcmp(line, "coll_changed_ns")) p->changed_ns = x;
    else if (!strcmp(line, "time_ns")) p->time_ns = x;
  }
  fclose(f);
  return true;
}

/* "00:08:05.123" */
static void clock_text(long long ns, char *buf, size_t n) {
  time_t secs = (time_t)(ns / 1000000000);
  struct tm tm;
  localtime_r(&secs, &tm);
  size_t k = strftime(buf, n, "%H:%M:%S", &tm);
  snprintf(buf + k, n - k, ".%03d", (int)(ns / 1000000 % 1000));
}

/* Where the rank's collectives stood: "inside allreduce #7 (...)" or "after completing
 * allreduce #6 (...), before #7". */
static void where(const progress *p, char *buf, size_t n) {
  if (!p->known)
    snprintf(buf, n, "its collective progress is unknown (no progress page)");
  else if (p->started == 0)
    snprintf(buf, n, "before its first collective operation");
  else if (p->done < p->started)
    snprintf(buf, n, "inside %s", p->what);
  else
    snprintf(buf, n, "after completing %s, before #%lld", p->what, p->started + 1);
}

int dr_stall_report(const char *dir, int attempt, int world, int root_rank, long long root_ns) {
  progress *pr = calloc((size_t)world, sizeof *pr);
  if (!pr) return 0;
  long long front = 0; /* the furthest operation any rank started */
  int known = 0, named = 0;
  for (int r = 0; r < world; r++) {
    if (!read_progress(dir, r, attempt, &pr[r]) || !pr[r].known) continue;
    known++;
    if (pr[r].started > front) front = pr[r].started;
  }
  char at[32], pos[400];
  for (int r = 0; r < world; r++) { /* stopped processes: they cannot have been waiting */
    if (!pr[r].present || !pr[r].paused_ns) continue;
    clock_text(pr[r].paused_ns, at, sizeof at);
    where(&pr[r], pos, sizeof pos);
    fprintf(stderr,
            "ddprun: stalled: rank %d (host %s, pid %lld) stopped making progress: its process "
            "was stopped (SIGSTOP or a debugger) at %s, %s",
            r, pr[r].host, pr[r].pid, at, pos);
    if (root_ns && root_rank != r)
      fprintf(stderr, "; %.1f s later rank %d failed waiting", 1e-9 * (double)(root_ns - pr[r].paused_ns),
              root_rank);
    fprintf(stderr, "; ddprun killed it\n");
    named++;
  }
  /* No stopped process: ranks that never started the operation others were in. Only with the
   * progress of at least two ranks, and not the rank that failed first (its failure says it). */
  int stopped = named;
  for (int r = 0; r < world && !stopped && known >= 2; r++) {
    if (!pr[r].known || pr[r].started >= front || r == root_rank) continue;
    clock_text(pr[r].changed_ns, at, sizeof at);
    where(&pr[r], pos, sizeof pos);
    int ahead = -1;
    for (int q = 0; q < world && ahead < 0; q++)
      if (pr[q].known && pr[q].started == front) ahead = q;
    fprintf(stderr,
            "ddprun: stalled: rank %d (host %s, pid %lld) stopped making progress %s (its last "
            "change: %s",
            r, pr[r].host, pr[r].pid, pos, at);
    if (root_ns)
      fprintf(stderr, ", %.1f s before the first failure",
              1e-9 * (double)(root_ns - pr[r].changed_ns));
    fprintf(stderr, "); rank %d had started %s\n", ahead, pr[ahead].what);
    if (++named == 8) break;
  }
  free(pr);
  return named;
}
