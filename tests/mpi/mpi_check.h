/* mpi_check.h: checks for the multi-rank test programs (tests/mpi/test_coll_*.c).
 *
 * The programs are plain C run on real ranks by mpirun.sh (Criterion forks, and MPI and fork do
 * not mix). A failed check prints "[rank r] file:line: `expr`: message" to stderr and the program
 * goes on, so every rank keeps issuing the same collectives and reports all of its failures;
 * chk_finish() then prints one summary line (rank 0; every failing rank adds its own), finalizes,
 * and returns the exit status: non-zero if a check failed on this rank.
 *
 *   int main(int argc, char **argv) {
 *     CHECK_OK(ddp_init(&argc, &argv));
 *     CHECK(ddp_world_size() >= 2, "world %d", ddp_world_size());
 *     return chk_finish("test_coll_x");
 *   }
 *
 * Quiet on success: one line per program. Verbose on failure: every failed check, capped at
 * CHK_MAX_REPORTS lines per rank (the rest are counted). */
#ifndef EMBER_TESTS_MPI_CHECK_H
#define EMBER_TESTS_MPI_CHECK_H

#include <ember.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHK_MAX_REPORTS 40

static long chk_count;  /* checks run on this rank */
static long chk_failed; /* of which failed */

/* This process's rank: the communicator's once initialised, else the launcher's. */
static inline int chk_rank(void) {
  if (ddp_initialized()) return ddp_rank();
  const char *r = getenv("OMPI_COMM_WORLD_RANK");
  return r ? atoi(r) : 0;
}

static inline const char *chk_base(const char *path) {
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

/* Records one check; on failure prints it (printf-style message) and returns false. */
static inline bool chk_report(bool ok, const char *file, int line, const char *expr,
                              const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static inline bool chk_report(bool ok, const char *file, int line, const char *expr,
                              const char *fmt, ...) {
  chk_count++;
  if (ok) return true;
  if (++chk_failed > CHK_MAX_REPORTS) return false;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "[rank %d] %s:%d: `%s`: %s\n", chk_rank(), chk_base(file), line, expr, msg);
  fflush(stderr);
  return false;
}

/* CHECK(cond, fmt, ...): a check with a message saying what was expected and what came. */
#define CHECK(cond, ...) chk_report((cond) ? true : false, __FILE__, __LINE__, #cond, __VA_ARGS__)

/* CHECK_OK(status expression): EM_OK, else the status and em_last_error(). */
#define CHECK_OK(expr)                                                                             \
  do {                                                                                             \
    em_status chk_s_ = (expr);                                                                     \
    CHECK(chk_s_ == EM_OK, "%s: %s", em_status_str(chk_s_), em_last_error());                      \
  } while (0)

/* CHECK_STR(haystack, needle): the message names something. */
#define CHECK_STR(hay, needle)                                                                     \
  CHECK(strstr((hay), (needle)) != NULL, "\"%s\" not in message: %s", (needle), (hay))

/* ddp_init for a test program that needs 2 or more ranks: false (with the reason printed, or a
 * failed check) if it cannot run; the caller then returns chk_finish(name). */
static inline bool chk_init(int *argc, char ***argv) {
  em_status s = ddp_init(argc, argv);
  if (s != EM_OK) {
    fprintf(stderr, "[rank %d] ddp_init: %s: %s\n", chk_rank(), em_status_str(s), em_last_error());
    exit(1);
  }
  int world = ddp_world_size();
  return chk_report(ddp_comm() && world >= 2, __FILE__, __LINE__, "world >= 2",
                    "needs 2 or more ranks (world %d)", world);
}

static inline double chk_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One element as text, for mismatch reports (16-bit floats as their bits). */
static inline void chk_elem_str(const void *p, int64_t i, em_dtype dt, char *buf, size_t n) {
  switch (dt) {
  case EM_F32: {
    float v;
    memcpy(&v, (const char *)p + i * 4, 4);
    uint32_t u;
    memcpy(&u, &v, 4);
    snprintf(buf, n, "%.9g (0x%08" PRIx32 ")", (double)v, u);
    break;
  }
  case EM_I32: snprintf(buf, n, "%" PRId32, ((const int32_t *)p)[i]); break;
  case EM_I64: snprintf(buf, n, "%" PRId64, ((const int64_t *)p)[i]); break;
  case EM_U8: snprintf(buf, n, "%u", (unsigned)((const uint8_t *)p)[i]); break;
  case EM_BF16:
  case EM_F16: snprintf(buf, n, "0x%04x", (unsigned)((const uint16_t *)p)[i]); break;
  default: snprintf(buf, n, "?"); break;
  }
}

/* Bit-for-bit comparison of n elements; on a difference names the first index, both values and
 * how many elements differ. what says which case this was. */
static inline bool chk_same_(const char *file, int line, const void *got, const void *want,
                             int64_t n, em_dtype dt, const char *what) {
  size_t es = em_dtype_size(dt);
  if (n <= 0 || memcmp(got, want, (size_t)n * es) == 0)
    return chk_report(true, file, line, "bits equal", "%s", what);
  int64_t first = -1, bad = 0;
  for (int64_t i = 0; i < n; i++)
    if (memcmp((const char *)got + i * es, (const char *)want + i * es, es) != 0) {
      if (first < 0) first = i;
      bad++;
    }
  char g[64], w[64];
  chk_elem_str(got, first, dt, g, sizeof g);
  chk_elem_str(want, first, dt, w, sizeof w);
  return chk_report(false, file, line, "bits equal",
                    "%s: %" PRId64 " of %" PRId64 " %s elements differ; first at [%" PRId64
                    "]: got %s, want %s",
                    what, bad, n, em_dtype_name(dt), first, g, w);
}
#define CHECK_SAME(got, want, n, dt, what) chk_same_(__FILE__, __LINE__, got, want, n, dt, what)

/* n bytes all equal to b (guard regions a collective must not touch). */
static inline bool chk_bytes_(const char *file, int line, const void *p, size_t n, unsigned char b,
                              const char *what) {
  const unsigned char *q = (const unsigned char *)p;
  size_t i = 0;
  while (i < n && q[i] == b) i++;
  return chk_report(i == n, file, line, "guard intact", "%s: byte %zu of %zu is 0x%02x, not 0x%02x",
                    what, i, n, i < n ? q[i] : 0, b);
}
#define CHECK_GUARD(p, n, b, what) chk_bytes_(__FILE__, __LINE__, p, n, b, what)

/* The summary: the failure counts of all ranks are summed (an i64 allreduce with an explicit
 * 60 s limit) so that rank 0 can print one line that is true for the whole job. Then
 * ddp_finalize. Returns the exit status for main: 1 if a check failed on this rank. */
static inline int chk_finish(const char *prog) {
  int rank = chk_rank();
  int64_t all_failed = chk_failed;
  coll_comm *c = ddp_comm();
  if (c && coll_size(c) > 1) {
    coll_buf b = coll_host_buf(&all_failed, 1, EM_I64);
    coll_req *r = coll_allreduce(c, b, b, 1, COLL_SUM);
    em_status s = r ? coll_wait(r, 60.0) : em_last_status();
    CHECK(s == EM_OK, "summary allreduce: %s: %s", em_status_str(s), em_last_error());
    if (s != EM_OK) all_failed = -1; /* unknown: rank 0 says so */
  }
  if (chk_failed)
    fprintf(stderr, "[rank %d] %s: %ld of %ld checks failed\n", rank, prog, chk_failed, chk_count);
  if (rank == 0) {
    if (all_failed == 0)
      printf("%s: ok (%d ranks, %ld checks on rank 0)\n", prog, ddp_world_size(), chk_count);
    else if (all_failed > 0)
      printf("%s: FAILED (%" PRId64 " checks failed over %d ranks)\n", prog, all_failed,
             ddp_world_size());
    else
      printf("%s: FAILED (failure counts of other ranks unknown)\n", prog);
    fflush(stdout);
  }
  fflush(stderr);
  if (ddp_initialized()) {
    em_status s = ddp_finalize();
    if (s != EM_OK) {
      fprintf(stderr, "[rank %d] ddp_finalize: %s: %s\n", rank, em_status_str(s), em_last_error());
      return 1;
    }
  }
  return chk_failed ? 1 : 0;
}

#endif
