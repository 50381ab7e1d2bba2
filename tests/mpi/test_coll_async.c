/* test_coll_async.c: asynchronous requests on real ranks.
 *
 *   mpirun.sh NP LIMIT test_coll_async
 *
 * 1. 64 requests of every kind and of sizes from 1 to 300001 elements (the last past a 1 MiB
 *    chunk), issued back to back, waited in reverse order: all complete with the right data.
 * 2. The same waited by polling coll_test: requests complete in issue order (when #k is done,
 *    every earlier one is), coll_test does not consume, coll_wait then returns at once.
 * 3. Issue order is execution order: two in-place allreduces of one buffer give the sum of the
 *    sum; a broadcast followed by an allreduce of the same buffer sums the root's data.
 * 4. A detached request completes on its own (a later request's completion implies it).
 * 5. Timeouts: rank 1 joins an allreduce 2 s late; rank 0 waits 0.2 s, gets EM_ERR_TIMEOUT and a
 *    message naming the operation and rank 1 as behind; the request stays valid, and a second
 *    wait without limit succeeds with the right sum. The same for a barrier queued behind that
 *    allreduce: the report names the barrier and rank 1, and no rank that is not behind.
 * Inputs are small integers, so every result is exact and compared bit for bit.
 *
 *   mpirun.sh NP LIMIT test_coll_async --storm     (see storm() below; for the ASan build) */
#include "mpi_check.h"

#include <unistd.h>

#define NREQ 64

static coll_comm *comm;
static int rank, world;

static float v_in(int r, int64_t i) { return (float)((r + 1) * ((i * 7 + 3) % 13)); }
static float v_pat(int r, int64_t i) { return (float)((r + 1) * 16 + (i * 7 + 3) % 13); }
static float tri(void) { return (float)(world * (world + 1) / 2); } /* sum of r + 1 */

typedef struct {
  coll_kind kind;
  coll_redop op;
  int64_t n;
  int root;
  float *send, *recv; /* send == recv in place */
  coll_req *req;
} job;

static float *falloc(int64_t n) {
  float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  if (!p) {
    fprintf(stderr, "[rank %d] out of memory\n", rank);
    exit(2);
  }
  return p;
}

/* Job k: its kind, size and buffers; issued at once. */
static void job_issue(job *j, int k) {
  static const coll_kind kinds[] = {COLL_ALLREDUCE,      COLL_BROADCAST, COLL_ALLGATHER,
                                    COLL_REDUCE_SCATTER, COLL_ALLREDUCE, COLL_BARRIER};
  memset(j, 0, sizeof *j);
  j->kind = kinds[k % 6];
  j->op = k % 6 == 4 ? COLL_AVG : k % 3 == 0 ? COLL_SUM : COLL_MAX;
  j->n = k % 16 == 7 ? 300001 : 1 + ((int64_t)k * 104729) % 20000;
  j->root = k % world;
  int64_t n = j->n, W = world;
  switch (j->kind) {
  case COLL_ALLREDUCE:
    j->send = falloc(n);
    j->recv = j->op == COLL_AVG ? j->send : falloc(n);
    for (int64_t i = 0; i < n; i++) j->send[i] = v_in(rank, i);
    if (j->recv != j->send) memset(j->recv, 0xA5, (size_t)n * 4);
    j->req = coll_allreduce(comm, coll_host_buf(j->send, n, EM_F32),
                            coll_host_buf(j->recv, n, EM_F32), n, j->op);
    break;
  case COLL_BROADCAST:
    j->send = j->recv = falloc(n);
    for (int64_t i = 0; i < n; i++) j->recv[i] = rank == j->root ? v_pat(rank, i) : -1.0f;
    j->req = coll_broadcast(comm, coll_host_buf(j->recv, n, EM_F32), n, j->root);
    break;
  case COLL_ALLGATHER:
    j->send = falloc(n);
    j->recv = falloc(W * n);
    for (int64_t i = 0; i < n; i++) j->send[i] = v_pat(rank, i);
    memset(j->recv, 0xA5, (size_t)(W * n) * 4);
    j->req = coll_allgather(comm, coll_host_buf(j->send, n, EM_F32),
                            coll_host_buf(j->recv, W * n, EM_F32), n);
    break;
  case COLL_REDUCE_SCATTER:
    j->send = falloc(W * n);
    j->recv = falloc(n);
    for (int64_t i = 0; i < W * n; i++) j->send[i] = v_in(rank, i);
    memset(j->recv, 0xA5, (size_t)n * 4);
    j->req = coll_reduce_scatter(comm, coll_host_buf(j->send, W * n, EM_F32),
                                 coll_host_buf(j->recv, n, EM_F32), n, j->op);
    break;
  default: j->req = coll_barrier(comm); break;
  }
  CHECK(j->req != NULL, "job %d (%s x %" PRId64 "): not issued: %s", k, coll_kind_name(j->kind),
        j->n, em_last_error());
}

/* Compares job k's result with the host's; frees its buffers. */
static void job_verify(job *j, int k) {
  int64_t n = j->n, W = world;
  char what[128];
  snprintf(what, sizeof what, "job %d: %s x %" PRId64 " %s", k, coll_kind_name(j->kind), n,
           j->kind == COLL_ALLREDUCE || j->kind == COLL_REDUCE_SCATTER ? coll_redop_name(j->op)
                                                                       : "");
  float *want = NULL;
  switch (j->kind) {
  case COLL_ALLREDUCE:
  case COLL_REDUCE_SCATTER: {
    int64_t first = j->kind == COLL_REDUCE_SCATTER ? rank * n : 0;
    want = falloc(n);
    for (int64_t i = 0; i < n; i++) {
      float m = (float)(((first + i) * 7 + 3) % 13);
      want[i] = j->op == COLL_SUM ? tri() * m : j->op == COLL_MAX ? (float)W * m : tri() * m / W;
    }
    CHECK_SAME(j->recv, want, n, EM_F32, what);
    break;
  }
  case COLL_BROADCAST:
    want = falloc(n);
    for (int64_t i = 0; i < n; i++) want[i] = v_pat(j->root, i);
    CHECK_SAME(j->recv, want, n, EM_F32, what);
    break;
  case COLL_ALLGATHER:
    want = falloc(W * n);
    for (int r = 0; r < W; r++)
      for (int64_t i = 0; i < n; i++) want[r * n + i] = v_pat(r, i);
    CHECK_SAME(j->recv, want, W * n, EM_F32, what);
    break;
  default: break;
  }
  free(want);
  if (j->recv != j->send) free(j->recv);
  free(j->send);
  j->send = j->recv = NULL;
}

static bool wait_ok(coll_req *r, double timeout, const char *what) {
  if (!r) return false;
  em_status s = coll_wait(r, timeout);
  return CHECK(s == EM_OK, "%s: %s: %s", what, em_status_str(s), em_last_error());
}

/* 1: back to back, waited newest first. */
static void reverse_waits(void) {
  static job jobs[NREQ];
  for (int k = 0; k < NREQ; k++) job_issue(&jobs[k], k);
  for (int k = NREQ - 1; k >= 0; k--)
    if (wait_ok(jobs[k].req, COLL_TIMEOUT_DEFAULT, "reverse wait")) job_verify(&jobs[k], k);
}

/* 2: polled with coll_test; completion follows issue order. */
static void polled(void) {
  static job jobs[NREQ];
  bool done[NREQ] = {false};
  int ndone = 0, order_errors = 0;
  for (int k = 0; k < NREQ; k++) {
    job_issue(&jobs[k], NREQ + k);
    if (!jobs[k].req) done[k] = true, ndone++;
  }
  double t0 = chk_now();
  while (ndone < NREQ && chk_now() - t0 < 60) {
    for (int k = NREQ - 1; k >= 0; k--) {
      if (done[k] || !coll_test(jobs[k].req)) continue;
      done[k] = true;
      ndone++;
      for (int j = 0; j < k; j++)
        if (jobs[j].req && !coll_test(jobs[j].req) && order_errors++ < 3)
          CHECK(false, "request #%d is complete but the earlier #%d is not", k, j);
    }
    usleep(100);
  }
  CHECK(ndone == NREQ, "%d of %d requests complete after 60 s of polling", ndone, NREQ);
  int still = 0;
  for (int k = 0; k < NREQ; k++) still += jobs[k].req && coll_test(jobs[k].req);
  CHECK(still == ndone, "coll_test consumed requests: %d of %d still test complete", still, ndone);
  double tw = chk_now();
  for (int k = 0; k < NREQ; k++)
    if (done[k] && wait_ok(jobs[k].req, 1.0, "wait after coll_test")) job_verify(&jobs[k], k);
  CHECK(chk_now() - tw < 2.0, "waits on completed requests took %.3f s", chk_now() - tw);
}

/* 3: issue order is execution order, on one buffer. */
static void ordering(void) {
  const int64_t n = 100003;
  float *buf = falloc(n), *want = falloc(n);
  for (int64_t i = 0; i < n; i++) buf[i] = v_in(rank, i);
  coll_buf b = coll_host_buf(buf, n, EM_F32);
  coll_req *r1 = coll_allreduce(comm, b, b, n, COLL_SUM);
  coll_req *r2 = coll_allreduce(comm, b, b, n, COLL_SUM);
  CHECK(r1 && r2, "two allreduces: %s", em_last_error());
  bool ok = wait_ok(r2, COLL_TIMEOUT_DEFAULT, "second allreduce");
  ok &= wait_ok(r1, COLL_TIMEOUT_DEFAULT, "first allreduce");
  for (int64_t i = 0; i < n; i++) want[i] = (float)world * tri() * (float)((i * 7 + 3) % 13);
  if (ok) CHECK_SAME(buf, want, n, EM_F32, "allreduce twice in place (world * sum)");

  int root = world - 1;
  for (int64_t i = 0; i < n; i++) buf[i] = rank == root ? v_pat(root, i) : -7.0f;
  r1 = coll_broadcast(comm, b, n, root);
  r2 = coll_allreduce(comm, b, b, n, COLL_SUM);
  ok = wait_ok(r2, COLL_TIMEOUT_DEFAULT, "allreduce after broadcast");
  ok &= wait_ok(r1, COLL_TIMEOUT_DEFAULT, "broadcast");
  for (int64_t i = 0; i < n; i++) want[i] = (float)world * v_pat(root, i);
  if (ok) CHECK_SAME(buf, want, n, EM_F32, "broadcast then allreduce (world * root's data)");

  /* 4: a detached allreduce, then a barrier: once the barrier is done, so is the allreduce. */
  for (int64_t i = 0; i < n; i++) buf[i] = v_in(rank, i);
  coll_req *d = coll_allreduce(comm, b, b, n, COLL_MAX);
  CHECK(d != NULL, "detached allreduce: %s", em_last_error());
  coll_req_detach(d);
  if (wait_ok(coll_barrier(comm), COLL_TIMEOUT_DEFAULT, "barrier after a detached request")) {
    for (int64_t i = 0; i < n; i++) want[i] = (float)world * (float)((i * 7 + 3) % 13);
    CHECK_SAME(buf, want, n, EM_F32, "detached allreduce max");
  }
  /* An explicit limit that is long enough is no error. */
  wait_ok(coll_allreduce(comm, b, b, 1, COLL_MIN), 30.0, "allreduce with a 30 s limit");
  free(want);
  free(buf);
}

/* 5: rank 1 is 2 s late; rank 0 times out after 0.2 s, then waits again and succeeds. */
static void late_rank(void) {
  const int64_t n = 1000;
  float *buf = falloc(n);
  for (int64_t i = 0; i < n; i++) buf[i] = v_in(rank, i);
  coll_buf b = coll_host_buf(buf, n, EM_F32);
  wait_ok(coll_barrier(comm), COLL_TIMEOUT_DEFAULT, "barrier before the late rank");
  if (rank == 1) sleep(2);
  double t0 = chk_now();
  coll_req *r = coll_allreduce(comm, b, b, n, COLL_SUM);
  CHECK(r != NULL, "allreduce: %s", em_last_error());
  if (rank == 0 && r) {
    CHECK(!coll_test(r), "complete although rank 1 is sleeping");
    usleep(300000); /* ranks 2.. reach the allreduce, so the report can tell them from rank 1 */
    double tw = chk_now();
    em_status s = coll_wait(r, 0.2);
    double waited = chk_now() - tw;
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", em_last_error());
    CHECK(s == EM_ERR_TIMEOUT, "wait(0.2 s) while rank 1 sleeps: %s (%s)", em_status_str(s), msg);
    CHECK(waited >= 0.18 && waited < 1.2, "wait(0.2 s) returned after %.3f s", waited);
    if (s == EM_ERR_TIMEOUT) {
      CHECK_STR(msg, "allreduce");
      CHECK_STR(msg, "rank 1");
      CHECK_STR(msg, "behind");
      for (int k = 2; k < world; k++) {
        char not_behind[64];
        snprintf(not_behind, sizeof not_behind, "rank %d is behind", k);
        CHECK(!strstr(msg, not_behind), "rank %d is not behind, but: %s", k, msg);
      }
      CHECK(!coll_test(r), "complete 0.5 s into rank 1's 2 s sleep");
      s = coll_wait(r, COLL_TIMEOUT_DEFAULT);
      CHECK(s == EM_OK, "second wait: %s: %s", em_status_str(s), em_last_error());
      CHECK(chk_now() - t0 > 1.0, "the allreduce completed %.3f s after issue, before rank 1 woke",
            chk_now() - t0);
    }
  } else if (r) {
    wait_ok(r, COLL_TIMEOUT_DEFAULT, "allreduce with a late rank");
  }
  float *want = falloc(n);
  for (int64_t i = 0; i < n; i++) want[i] = tri() * (float)((i * 7 + 3) % 13);
  CHECK_SAME(buf, want, n, EM_F32, "allreduce with a late rank");
  free(want);
  free(buf);
}

/* 5b: the same when the request waited for is queued behind the stuck one: rank 0 waits 0.3 s
 * for a barrier issued after the allreduce that rank 1 has not joined yet. The report names the
 * barrier, and rank 1 as behind; ranks 2.. are in the same (stuck) allreduce as rank 0, so they
 * are not behind. */
static void late_rank_queued(void) {
  const int64_t n = 1000;
  float *buf = falloc(n);
  for (int64_t i = 0; i < n; i++) buf[i] = v_in(rank, i);
  coll_buf b = coll_host_buf(buf, n, EM_F32);
  wait_ok(coll_barrier(comm), COLL_TIMEOUT_DEFAULT, "barrier before the late rank");
  if (rank == 1) sleep(2);
  coll_req *r1 = coll_allreduce(comm, b, b, n, COLL_SUM);
  coll_req *r2 = coll_barrier(comm);
  CHECK(r1 && r2, "allreduce + barrier: %s", em_last_error());
  if (rank == 0 && r2) {
    usleep(500000); /* ranks 2.. reach the allreduce */
    em_status s = coll_wait(r2, 0.3);
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", em_last_error());
    CHECK(s == EM_ERR_TIMEOUT, "wait(0.3 s) for a queued barrier: %s (%s)", em_status_str(s), msg);
    if (s == EM_ERR_TIMEOUT) {
      CHECK_STR(msg, "barrier");
      CHECK_STR(msg, "rank 1");
      CHECK_STR(msg, "behind");
      for (int k = 2; k < world; k++) {
        char not_behind[64];
        snprintf(not_behind, sizeof not_behind, "rank %d is behind", k);
        CHECK(!strstr(msg, not_behind),
              "rank %d is in the same allreduce as rank 0, not behind: %s", k, msg);
      }
      wait_ok(r2, COLL_TIMEOUT_DEFAULT, "queued barrier, second wait");
    }
  } else if (r2) {
    wait_ok(r2, COLL_TIMEOUT_DEFAULT, "queued barrier");
  }
  if (wait_ok(r1, COLL_TIMEOUT_DEFAULT, "allreduce before the barrier")) {
    float *want = falloc(n);
    for (int64_t i = 0; i < n; i++) want[i] = tri() * (float)((i * 7 + 3) % 13);
    CHECK_SAME(buf, want, n, EM_F32, "allreduce with a late rank (queued barrier)");
    free(want);
  }
  free(buf);
}

/* --storm: timeout reports while detached requests complete. Rounds of 2000 small detached
 * allreduces, then a closing allreduce polled with a 0.1 us limit: every expired wait builds a
 * timeout report, which looks at the request the comm thread is inside while that thread
 * completes and frees detached requests. Meant for the ASan build (a report that reads a freed
 * request is a heap-use-after-free there); in any build the data and the counts are checked.
 *
 * The polling thread and the comm thread share a core, and under ASan on a loaded 2-core
 * machine a round has taken from 40 ms to over a second. So the storm is bounded in time as well
 * as in count: up to 300 rounds or STORM_S seconds, and at least MIN_ROUNDS. The closing
 * allreduce (MAX of "my time is up") carries the decision, so every rank stops after the same
 * round. */
static void storm(void) {
  enum { MAX_ROUNDS = 300, MIN_ROUNDS = 5, PER_ROUND = 2000, N = 16 };
  const double STORM_S = 15;
  float buf[N], want[N];
  for (int i = 0; i < N; i++) buf[i] = want[i] = (float)(i % 13);
  coll_buf b = coll_host_buf(buf, N, EM_F32);
  long timeouts = 0, errors = 0;
  int64_t ops0 = coll_get_stats(comm).ops;
  double t0 = chk_now();
  int rounds = 0;
  for (bool stop = false; !stop;) {
    for (int k = 0; k < PER_ROUND; k++)
      coll_req_detach(coll_allreduce(comm, b, b, 1 + k % N, COLL_MAX));
    rounds++;
    float up = rounds >= MAX_ROUNDS || (rounds >= MIN_ROUNDS && chk_now() - t0 > STORM_S);
    coll_req *last = coll_allreduce(comm, coll_host_buf(&up, 1, EM_F32),
                                    coll_host_buf(&up, 1, EM_F32), 1, COLL_MAX);
    em_status s;
    while ((s = coll_wait(last, 1e-7)) == EM_ERR_TIMEOUT) timeouts++;
    if (s != EM_OK && errors++ < 3)
      CHECK(false, "storm round %d: %s: %s", rounds, em_status_str(s), em_last_error());
    stop = s != EM_OK || up != 0;
  }
  CHECK(timeouts > 0, "no wait expired: the reports were not exercised");
  int64_t ops = coll_get_stats(comm).ops - ops0;
  CHECK(ops == (int64_t)rounds * (PER_ROUND + 1), "%" PRId64 " operations completed, want %d",
        ops, rounds * (PER_ROUND + 1));
  CHECK_SAME(buf, want, N, EM_F32, "storm: max of equal values");
  if (rank == 0)
    printf("storm: %d rounds in %.1f s, %ld expired waits\n", rounds, chk_now() - t0, timeouts);
}

int main(int argc, char **argv) {
  if (!chk_init(&argc, &argv)) return chk_finish("test_coll_async");
  comm = ddp_comm();
  rank = ddp_rank();
  world = ddp_world_size();
  if (argc == 2 && !strcmp(argv[1], "--storm")) {
    storm();
    return chk_finish("test_coll_async --storm");
  }
  reverse_waits();
  polled();
  ordering();
  late_rank();
  late_rank_queued();
  return chk_finish("test_coll_async");
}
