/* test_coll_mismatch.c: ranks that issue different collectives get an error, not a hang.
 *
 *   mpirun.sh NP LIMIT test_coll_mismatch --mode count|kind|op|dtype
 *
 * Rank 1 issues a different operation from the others: 999 elements instead of 1000 (count), a
 * broadcast instead of an allreduce (kind), max instead of sum (op), i32 instead of f32 (dtype:
 * the same 4000 bytes, which a transport that only compares sizes would sum as garbage). Every rank must get
 * EM_ERR_COMM from coll_wait, well within the communicator's timeout, with a message that names
 * both sides (both counts, both ranks); later operations fail at once, naming the first failure.
 * Like a user program, each rank then prints its message ("[rank r] ...") and exits non-zero:
 * the test is registered through expect_fail.sh, which requires the failure and greps the
 * messages of every rank. A self-check that fails prints "test_coll_mismatch.c:LINE:", which the
 * registration forbids, so a wrong status or message fails the test too. */
#include "mpi_check.h"

int main(int argc, char **argv) {
  const char *mode = argc == 3 && !strcmp(argv[1], "--mode") ? argv[2] : NULL;
  if (!mode || (strcmp(mode, "count") && strcmp(mode, "kind") && strcmp(mode, "op") &&
                strcmp(mode, "dtype"))) {
    fprintf(stderr, "usage: test_coll_mismatch --mode count|kind|op|dtype\n");
    return 2;
  }
  em_status s = ddp_init(&argc, &argv);
  if (s != EM_OK) {
    fprintf(stderr, "[rank %d] ddp_init: %s: %s\n", chk_rank(), em_status_str(s), em_last_error());
    return 2;
  }
  coll_comm *c = ddp_comm();
  int rank = ddp_rank();
  CHECK(ddp_world_size() >= 2, "needs 2 or more ranks");
  float buf[1000];
  for (int i = 0; i < 1000; i++) buf[i] = (float)(i % 13);
  coll_buf b = coll_host_buf(buf, 1000, EM_F32);
  bool odd = rank == 1;
  float before[1000];
  memcpy(before, buf, sizeof buf);
  double timeout = coll_get_options(c).timeout_s, t0 = chk_now();
  coll_req *r = NULL;
  if (!strcmp(mode, "count"))
    r = coll_allreduce(c, b, b, odd ? 999 : 1000, COLL_SUM);
  else if (!strcmp(mode, "kind") && odd)
    r = coll_broadcast(c, b, 1000, 0);
  else if (!strcmp(mode, "dtype") && odd)
    r = coll_allreduce(c, coll_host_buf(buf, 1000, EM_I32), coll_host_buf(buf, 1000, EM_I32), 1000,
                       COLL_SUM);
  else
    r = coll_allreduce(c, b, b, 1000, odd && !strcmp(mode, "op") ? COLL_MAX : COLL_SUM);
  CHECK(r != NULL, "not issued: %s", em_last_error());
  s = r ? coll_wait(r, COLL_TIMEOUT_DEFAULT) : EM_OK;
  double took = chk_now() - t0;
  char msg[2048];
  snprintf(msg, sizeof msg, "%s", em_last_error());
  CHECK(s == EM_ERR_COMM, "status %s, want EM_ERR_COMM (%s)", em_status_str(s), msg);
  CHECK(took < timeout / 4, "the mismatch took %.2f s to report (timeout %.0f s)", took, timeout);
  CHECK_STR(msg, "mismatch");
  CHECK_STR(msg, "rank 0");
  CHECK_STR(msg, "rank 1");
  if (!strcmp(mode, "count")) {
    CHECK_STR(msg, "1000");
    CHECK_STR(msg, "999");
  } else if (!strcmp(mode, "kind")) {
    CHECK_STR(msg, "allreduce");
    CHECK_STR(msg, "broadcast");
  } else if (!strcmp(mode, "dtype")) {
    CHECK_STR(msg, "f32 x 1000");
    CHECK_STR(msg, "i32 x 1000");
  } else {
    CHECK_STR(msg, "sum");
    CHECK_STR(msg, "max");
  }
  /* Never a wrong sum: the operation did not run, so the buffer is as it was. */
  CHECK(!memcmp(buf, before, sizeof buf), "the buffer changed although the operation failed");
  ddp_eprint("%s\n", msg); /* what a user program prints before it exits non-zero */

  /* The communicator has failed: the next operation fails at once, naming the first failure. */
  t0 = chk_now();
  r = coll_allreduce(c, b, b, 1000, COLL_SUM);
  s = r ? coll_wait(r, COLL_TIMEOUT_DEFAULT) : em_last_status();
  snprintf(msg, sizeof msg, "%s", em_last_error());
  CHECK(s == EM_ERR_COMM, "operation after the mismatch: %s (%s)", em_status_str(s), msg);
  CHECK_STR(msg, "mismatch");
  CHECK(chk_now() - t0 < 1.0, "operation after the mismatch took %.2f s", chk_now() - t0);
  fflush(stderr);
  s = ddp_finalize();
  CHECK(s == EM_OK, "ddp_finalize after the mismatch: %s: %s", em_status_str(s), em_last_error());
  return 3; /* the expected failure */
}
