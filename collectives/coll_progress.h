/* coll_progress.h: the progress page, a rank's collective progress as its launcher sees it.
 *
 * A timed-out rank can name a peer that is behind only where it can read the peer's progress:
 * on its own node (mpi.c's node-shared slots). Across nodes nobody could tell the rank that
 * stopped making progress from the ranks waiting on it. So ddprun's agent, which runs next to its
 * rank on every node, hands the rank one page of shared memory (a memfd whose descriptor is in
 * EMBER_PROGRESS_FD); the communicator writes into it what it has started and completed, and
 * the agent copies the page into its rank's files when the job ends or the rank is stopped.
 * ddprun then compares every rank's page (docs/reliability.md, "Stalled ranks").
 *
 *   rank (collectives)                          agent (launcher/agent.c)
 *   coll__progress_open(): map EMBER_PROGRESS_FD   memfd, magic, fd into the program's env
 *   each operation: started, then done            reads a snapshot: coll_progress_read()
 *
 * Written by whichever thread runs or completes an operation, read by another process: a
 * sequence counter (odd while a write is in progress) lets the reader retry a torn snapshot. */
#ifndef EMBER_COLL_PROGRESS_H
#define EMBER_COLL_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#define COLL_PROGRESS_MAGIC 0x31676f7270626d65ull /* "embprog1", little-endian */
#define COLL_PROGRESS_WHAT 192

typedef struct {
  uint64_t magic;      /* COLL_PROGRESS_MAGIC, written by the agent */
  uint64_t gen;        /* odd while the rank writes */
  int64_t pid;         /* the process that mapped it (the rank, even behind a wrapper script) */
  int64_t started;     /* sequence number of the last operation started (0: none yet) */
  int64_t done;        /* ... and of the last one completed */
  int64_t changed_ns;  /* CLOCK_REALTIME of the last change */
  char what[COLL_PROGRESS_WHAT]; /* the last started operation: "allreduce #5 (f32 x 10, avg)
                                     [DDP bucket 1 of 2]" */
} coll_progress_page;

/* Rank side (coll.c, mpi.c, nccl.c). coll__progress_open maps the page named by
 * EMBER_PROGRESS_FD, once per process (nothing when the variable is unset; a warning, and no
 * page, when it names no progress page). The others do nothing without a page. */
void coll__progress_open(int rank);
void coll__progress_started(int64_t seq, const char *what);
void coll__progress_done(int64_t seq);

/* Reader side: a consistent copy of *page into *out; false if the magic is wrong or no
 * consistent copy could be had (a writer kept changing it). */
static inline bool coll_progress_read(const coll_progress_page *page, coll_progress_page *out) {
  for (int tries = 0; tries < 100; tries++) {
    uint64_t g0 = __atomic_load_n(&page->gen, __ATOMIC_ACQUIRE);
    if (g0 & 1) continue;
    __builtin_memcpy(out, (const void *)page, sizeof *out);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&page->gen, __ATOMIC_RELAXED) == g0) {
      out->what[COLL_PROGRESS_WHAT - 1] = 0;
      return out->magic == COLL_PROGRESS_MAGIC;
    }
  }
  return false;
}

#endif
