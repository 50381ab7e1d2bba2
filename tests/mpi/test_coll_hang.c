/* test_coll_hang.c: a rank that never joins a collective ends the job instead of hanging it.
 *
 *   EMBER_COLL_TIMEOUT=2 mpirun.sh NP LIMIT test_coll_hang
 *
 * Rank 1 sleeps 60 s; every other rank issues an allreduce and waits with the communicator's
 * default timeout (2 s here). coll_wait must not return: the communicator prints a report naming
 * the timeout, the operation and rank 1 as behind, and aborts the job (MPI_Abort), which kills the
 * sleeping rank too. Registered through expect_fail.sh: a non-zero exit well before 60 s, the
 * report, and no "UNEXPECTED" line (printed if coll_wait returns).
 *
 *   EMBER_COLL_TIMEOUT=2 mpirun.sh NP LIMIT test_coll_hang --finalize
 *
 * The same through ddp_finalize: rank 0 leaves an allreduce that no other rank issues in the
 * queue (detached) and finalizes.
 *
 *   EMBER_COLL_TIMEOUT=2 mpirun.sh NP LIMIT test_coll_hang --blocking
 *
 * As the first, but rank 0 waits in coll_run_allreduce, which runs the operation on its own
 * thread in shared memory: the same report and abort must come from there.
 *
 *   EMBER_COLL_TIMEOUT=5 mpirun.sh NP LIMIT test_coll_hang --die
 *
 * Every rank starts a 64 MiB allreduce (rank 0 through the blocking form, the others issued);
 * rank 1 dies 3 ms into it (_exit, mid-operation, its shared memory half written). Rank 0 must
 * not hang: the job ends, by the launcher noticing the dead rank or by the timeout report. */
#include "mpi_check.h"

#include <unistd.h>

/* --finalize: rank 0 issues an allreduce and goes straight to ddp_finalize, which runs what is
 * queued; the other ranks never issue it. ddp_finalize is a blocking wait like any other: it must
 * time out and report (abort, or return an error naming the operation), not hang. */
static int finalize_with_a_pending_op(void) {
  float buf[1000] = {0};
  coll_buf b = coll_host_buf(buf, 1000, EM_F32);
  if (ddp_rank() == 0) {
    coll_req *r = coll_allreduce(ddp_comm(), b, b, 1000, COLL_SUM);
    if (!r) ddp_eprint("UNEXPECTED: allreduce not issued: %s\n", em_last_error());
    coll_req_detach(r);
  }
  double t0 = chk_now();
  em_status s = ddp_finalize();
  if (s != EM_OK) { /* an error naming what it waited for is a valid outcome */
    ddp_eprint("ddp_finalize: %s after %.1f s: %s\n", em_status_str(s), chk_now() - t0,
               em_last_error());
    return 1;
  }
  if (ddp_rank() == 0)
    ddp_eprint("UNEXPECTED: ddp_finalize returned EM_OK with an allreduce nobody else issued\n");
  return 0;
}

/* --die: see above. */
static int die_mid_operation(void) {
  const int64_t n = (int64_t)16 << 20;
  float *buf = calloc((size_t)n, sizeof *buf);
  if (!buf) return 2;
  coll_buf b = coll_host_buf(buf, n, EM_F32);
  if (ddp_rank() == 1) {
    coll_req_detach(coll_allreduce(ddp_comm(), b, b, n, COLL_SUM));
    usleep(3000);
    _exit(3); /* dies with the comm thread inside the operation */
  }
  double t0 = chk_now();
  em_status s = ddp_rank() == 0 ? coll_run_allreduce(ddp_comm(), b, b, n, COLL_SUM)
                                : coll_run(coll_allreduce(ddp_comm(), b, b, n, COLL_SUM));
  ddp_eprint("UNEXPECTED: the allreduce returned %s after %.1f s with rank 1 dead: %s\n",
             em_status_str(s), chk_now() - t0, em_last_error());
  return 0;
}

int main(int argc, char **argv) {
  bool finalize = argc == 2 && !strcmp(argv[1], "--finalize");
  bool blocking = argc == 2 && !strcmp(argv[1], "--blocking");
  bool die = argc == 2 && !strcmp(argv[1], "--die");
  em_status s = ddp_init(&argc, &argv);
  if (s != EM_OK) {
    fprintf(stderr, "[rank %d] ddp_init: %s: %s\n", chk_rank(), em_status_str(s), em_last_error());
    return 2;
  }
  if (finalize) return finalize_with_a_pending_op();
  if (die) return die_mid_operation();
  if (ddp_rank() == 1) {
    sleep(60); /* never joins; killed by the abort */
    ddp_eprint("UNEXPECTED: rank 1 woke up: the job was not aborted\n");
    ddp_finalize();
    return 0;
  }
  float buf[1000] = {0};
  coll_buf b = coll_host_buf(buf, 1000, EM_F32);
  if (blocking) {
    double t0 = chk_now();
    s = coll_run_allreduce(ddp_comm(), b, b, 1000, COLL_SUM);
    ddp_eprint("UNEXPECTED: coll_run_allreduce returned %s after %.1f s: %s\n", em_status_str(s),
               chk_now() - t0, em_last_error());
    return 0;
  }
  coll_req *r = coll_allreduce(ddp_comm(), b, b, 1000, COLL_SUM);
  if (!r) {
    ddp_eprint("UNEXPECTED: allreduce not issued: %s\n", em_last_error());
    return 0;
  }
  double t0 = chk_now();
  s = coll_wait(r, COLL_TIMEOUT_DEFAULT);
  ddp_eprint("UNEXPECTED: coll_wait returned %s after %.1f s: %s\n", em_status_str(s),
             chk_now() - t0, em_last_error());
  return 0; /* rank 1 still sleeps: the launcher's limit ends the job, and the test fails */
}
