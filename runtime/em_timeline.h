/* em_timeline.h: a Chrome trace (Trace Event Format, JSON array) per process, for
 * chrome://tracing or Perfetto. Events are appended one per line and flushed at em_timeline_flush
 * (the reducer flushes once per step); the array's closing bracket is optional in that format, so
 * the file stays loadable when the process dies mid-run. */
#ifndef EMBER_TIMELINE_H
#define EMBER_TIMELINE_H

#include "em_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct em_timeline em_timeline;

/* Open path for writing ("%r" in it is replaced by rank); pid = rank. NULL with the error set. */
em_timeline *em_timeline_open(const char *path, int rank);
/* A span [t0, t1] (seconds on coll_now()'s monotonic clock) on a row (tid) of the trace. */
void em_timeline_span(em_timeline *tl, const char *name, const char *cat, int tid, double t0,
                      double t1);
/* A moment. */
void em_timeline_instant(em_timeline *tl, const char *name, const char *cat, int tid, double t);
void em_timeline_flush(em_timeline *tl);
void em_timeline_close(em_timeline *tl); /* NULL ok */

/* The timeline of this process's reducer, if any (the optimizer records its steps there). */
em_timeline *em_timeline_current(void);
void em_timeline_set_current(em_timeline *tl);
double em_timeline_now(void); /* monotonic seconds */

#ifdef __cplusplus
}
#endif
#endif
