/* progress.c: the rank's side of the progress page (coll_progress.h). */
#define _GNU_SOURCE
#include "coll_progress.h"
#include "em_env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static coll_progress_page *page; /* mapped for the process's life, or NULL */

static int64_t realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void coll__progress_open(int rank) {
  int64_t fd = -1;
  if (page) return;
  if (em_env_int("EMBER_PROGRESS_FD", &fd) != EM_OK) { /* the report loses, the job goes on */
    fprintf(stderr, "[rank %d] ember: %s; stall reports will lack this rank's progress\n", rank,
            em_last_error());
    em_clear_error();
    return;
  }
  if (fd < 0) return;
  struct stat st;
  const char *why = NULL;
  if (fstat((int)fd, &st) != 0 || st.st_size < (off_t)sizeof *page)
    why = "no open file of a page's size";
  void *m = why ? MAP_FAILED
                : mmap(NULL, sizeof *page, PROT_READ | PROT_WRITE, MAP_SHARED, (int)fd, 0);
  if (!why && m == MAP_FAILED) why = "cannot be mapped";
  if (!why && ((coll_progress_page *)m)->magic != COLL_PROGRESS_MAGIC) {
    munmap(m, sizeof *page);
    why = "not a progress page (wrong magic)";
  }
  if (why) { /* the report loses this rank's progress, the job goes on */
    fprintf(stderr, "[rank %d] ember: EMBER_PROGRESS_FD=%lld: %s; stall reports will lack this "
                    "rank's progress\n", rank, (long long)fd, why);
    return;
  }
  close((int)fd); /* the mapping stays; a child process must not inherit the page */
  unsetenv("EMBER_PROGRESS_FD");
  page = m;
  page->pid = getpid();
  page->changed_ns = realtime_ns();
}

/* One write, bracketed by the sequence counter (odd while it lasts). Writers are the comm thread,
 * a caller running an operation itself and NCCL's completers, one operation after another; a
 * rare overlap only costs the reader a retry. */
static void begin(void) { __atomic_fetch_add(&page->gen, 1, __ATOMIC_ACQ_REL); }
static void end(void) { __atomic_fetch_add(&page->gen, 1, __ATOMIC_RELEASE); }

void coll__progress_started(int64_t seq, const char *what) {
  if (!page) return;
  begin();
  page->started = seq;
  snprintf(page->what, sizeof page->what, "%s", what);
  page->changed_ns = realtime_ns();
  end();
}

void coll__progress_done(int64_t seq) {
  if (!page || seq <= __atomic_load_n(&page->done, __ATOMIC_RELAXED)) return;
  begin();
  page->done = seq;
  page->changed_ns = realtime_ns();
  end();
}
