/* test_coll_bootstrap.c: ddp_init / ddp_finalize, with and without a launcher.
 *
 *   test_coll_bootstrap --single                 run directly (no mpirun): a world of 1
 *   test_coll_bootstrap --init-error PATTERN     ddp_init must fail naming PATTERN (set
 *                                                EMBER_DEVICE=cuda or a bad value around it)
 *   mpirun.sh NP LIMIT test_coll_bootstrap       2-4 ranks, EMBER_DEVICE=cpu
 *
 * Single: before ddp_init the getters give rank 0 of 1 and no communicator; ddp_init_ex applies
 * options over the environment over the defaults; every operation is a copy (or nothing, in
 * place); a second ddp_init fails; after ddp_finalize the getters are back to their defaults.
 * Multi-rank: rank, world, local rank and local world agree with Open MPI's OMPI_COMM_WORLD_*
 * variables and across ranks; the device is the CPU; ddp_print0 prints on rank 0 only and
 * ddp_eprint prefixes the rank (both checked by capturing this process's stdout and stderr). */
#include "mpi_check.h"

#include <unistd.h>

/* Runs fn with file descriptor fd redirected to a temporary file; returns what was written
 * (malloc'd, NUL-terminated), and fn's result in *ret. */
static char *capture(int fd, int (*fn)(void), int *ret) {
  FILE *f = fd == 1 ? stdout : stderr;
  fflush(f);
  FILE *tmp = tmpfile();
  int saved = dup(fd);
  if (!tmp || saved < 0) return NULL;
  dup2(fileno(tmp), fd);
  *ret = fn();
  fflush(f);
  dup2(saved, fd);
  close(saved);
  long n = ftell(tmp) >= 0 ? (fseek(tmp, 0, SEEK_END), ftell(tmp)) : 0;
  char *s = calloc((size_t)n + 1, 1);
  rewind(tmp);
  if (s && n > 0 && fread(s, 1, (size_t)n, tmp) != (size_t)n) s[0] = '\0';
  fclose(tmp);
  return s;
}

static int say_print0(void) {
  return ddp_print0("ddp_print0 from rank %d of %d\n", ddp_rank(), ddp_world_size());
}
static int say_eprint(void) {
  ddp_eprint("eprint %d\n", 42);
  return 0;
}

static int env_int(const char *name) {
  const char *v = getenv(name);
  return v && *v ? atoi(v) : -1;
}

static void check_prints(int rank, int world) {
  int n = -1;
  char *out = capture(1, say_print0, &n);
  char want[128];
  snprintf(want, sizeof want, "ddp_print0 from rank 0 of %d\n", world);
  if (CHECK(out != NULL, "capturing stdout failed")) {
    if (rank == 0)
      CHECK(!strcmp(out, want) && n == (int)strlen(want), "rank 0 printed \"%s\" (returned %d)",
            out, n);
    else
      CHECK(out[0] == '\0' && n == 0, "rank %d printed \"%s\" (returned %d)", rank, out, n);
  }
  free(out);
  out = capture(2, say_eprint, &n);
  snprintf(want, sizeof want, "[rank %d] eprint 42\n", rank);
  if (CHECK(out != NULL, "capturing stderr failed"))
    CHECK(!strcmp(out, want), "ddp_eprint wrote \"%s\", want \"%s\"", out, want);
  free(out);
}

/* Each operation on one rank: a copy of send to recv, or nothing in place. */
static void check_world_of_one(coll_comm *c) {
  enum { N = 1000 };
  static float send[2 * N], recv[2 * N];
  for (int i = 0; i < N; i++) send[i] = (float)(i % 17) - 8.5f; /* not integers, avg = copy */
  for (int op = COLL_SUM; op <= COLL_MIN; op++) {
    memset(recv, 0xA5, sizeof recv);
    char what[64];
    snprintf(what, sizeof what, "world of 1: allreduce %s", coll_redop_name((coll_redop)op));
    em_status s = coll_run(coll_allreduce(c, coll_host_buf(send, N, EM_F32),
                                          coll_host_buf(recv, N, EM_F32), N, (coll_redop)op));
    CHECK(s == EM_OK, "%s: %s", what, em_last_error());
    CHECK_SAME(recv, send, N, EM_F32, what);
    CHECK_GUARD(recv + N, sizeof recv - N * sizeof(float), 0xA5, what);
  }
  memcpy(recv, send, N * sizeof(float));
  CHECK_OK(coll_run(coll_allreduce(c, coll_host_buf(recv, N, EM_F32),
                                   coll_host_buf(recv, N, EM_F32), N, COLL_AVG)));
  CHECK_SAME(recv, send, N, EM_F32, "world of 1: allreduce avg in place");
  CHECK_OK(coll_run(coll_broadcast(c, coll_host_buf(recv, N, EM_F32), N, 0)));
  CHECK_SAME(recv, send, N, EM_F32, "world of 1: broadcast");
  memset(recv, 0xA5, sizeof recv);
  CHECK_OK(coll_run(coll_reduce_scatter(c, coll_host_buf(send, N, EM_F32),
                                        coll_host_buf(recv, N, EM_F32), N, COLL_SUM)));
  CHECK_SAME(recv, send, N, EM_F32, "world of 1: reduce_scatter");
  memset(recv, 0xA5, sizeof recv);
  CHECK_OK(coll_run(
      coll_allgather(c, coll_host_buf(send, N, EM_F32), coll_host_buf(recv, N, EM_F32), N)));
  CHECK_SAME(recv, send, N, EM_F32, "world of 1: allgather");
  CHECK_GUARD(recv + N, sizeof recv - N * sizeof(float), 0xA5, "world of 1: allgather");
  int32_t is[5] = {-3, 7, 1 << 30, 0, 5}, ir[5] = {0};
  CHECK_OK(coll_run(
      coll_allreduce(c, coll_host_buf(is, 5, EM_I32), coll_host_buf(ir, 5, EM_I32), 5, COLL_MAX)));
  CHECK_SAME(ir, is, 5, EM_I32, "world of 1: allreduce i32 max");
  CHECK_OK(coll_run(coll_barrier(c)));
  CHECK(coll_broadcast(c, coll_host_buf(recv, N, EM_F32), N, 1) == NULL,
        "broadcast from root 1 in a world of 1 accepted");
}

static int run_single(void) {
  CHECK(!ddp_initialized() && ddp_rank() == 0 && ddp_world_size() == 1 && ddp_comm() == NULL,
        "before ddp_init: initialized %d rank %d world %d comm %p", ddp_initialized(), ddp_rank(),
        ddp_world_size(), (void *)ddp_comm());
  /* Options: the caller's (timeout), the environment's (chunk), the default (check_every). */
  setenv("EMBER_COLL_CHUNK_BYTES", "8192", 1);
  unsetenv("EMBER_COLL_CHECK_EVERY");
  unsetenv("EMBER_COLL_TIMEOUT");
  em_status s = ddp_init_ex(NULL, NULL, &(coll_options){.timeout_s = 7});
  if (!CHECK(s == EM_OK, "ddp_init_ex without a launcher: %s: %s", em_status_str(s),
             em_last_error()))
    return chk_finish("test_coll_bootstrap --single");
  coll_comm *c = ddp_comm();
  CHECK(ddp_initialized() && ddp_rank() == 0 && ddp_world_size() == 1 && ddp_local_rank() == 0 &&
            ddp_local_world_size() == 1,
        "world of 1: rank %d world %d local %d of %d", ddp_rank(), ddp_world_size(),
        ddp_local_rank(), ddp_local_world_size());
  CHECK(c && coll_rank(c) == 0 && coll_size(c) == 1, "communicator of a world of 1");
  if (em_cuda_device_count() == 0 ||
      (getenv("EMBER_DEVICE") && !strcmp(getenv("EMBER_DEVICE"), "cpu")))
    CHECK(ddp_device().kind == EM_CPU, "device kind %d, want the CPU", ddp_device().kind);
  coll_options o = coll_get_options(c);
  CHECK(o.timeout_s == 7 && o.chunk_bytes == 8192 && o.check_every == 1,
        "options timeout_s %g (want 7, given), chunk_bytes %" PRId64
        " (want 8192, environment), check_every %d (want 1, default)",
        o.timeout_s, o.chunk_bytes, o.check_every);
  const char *be = coll_backend_name(c, EM_CPU);
  CHECK(be && (!strcmp(be, "mpi") || !strcmp(be, "self")), "host backend %s", be ? be : "NULL");
  check_world_of_one(c);
  check_prints(0, 1);
  s = ddp_init(NULL, NULL);
  CHECK(s == EM_ERR_STATE, "second ddp_init: %s: %s", em_status_str(s), em_last_error());
  CHECK(ddp_initialized() && ddp_comm() == c, "a failed second ddp_init changed the state");
  int rc = chk_finish("test_coll_bootstrap --single"); /* ddp_finalize */
  CHECK(!ddp_initialized() && ddp_comm() == NULL, "after ddp_finalize: initialized %d comm %p",
        ddp_initialized(), (void *)ddp_comm());
  s = ddp_finalize();
  CHECK(s != EM_OK, "a second ddp_finalize returned EM_OK");
  if (chk_failed)
    fprintf(stderr, "[rank 0] test_coll_bootstrap --single: checks after finalize failed\n");
  return rc || chk_failed ? 1 : 0;
}

/* ddp_init must fail, with a message naming pattern, and leave nothing initialised. */
static int run_init_error(const char *pattern) {
  const char *dev = getenv("EMBER_DEVICE");
  if (dev && !strcmp(dev, "cuda") && em_cuda_device_count() > 0) {
    printf("test_coll_bootstrap --init-error: skipped (EMBER_DEVICE=cuda and a GPU is present)\n");
    return 0;
  }
  em_status s = ddp_init(NULL, NULL);
  CHECK(s != EM_OK, "ddp_init with EMBER_DEVICE=%s succeeded", dev ? dev : "(unset)");
  if (s != EM_OK) CHECK_STR(em_last_error(), pattern);
  CHECK(!ddp_initialized() && ddp_comm() == NULL, "a failed ddp_init left state behind");
  if (s == EM_OK) ddp_finalize();
  if (!chk_failed)
    printf("test_coll_bootstrap --init-error: ok (%s: %s)\n", em_status_str(s), em_last_error());
  return chk_failed ? 1 : 0;
}

static int run_multi(void) {
  em_status s = ddp_init(NULL, NULL);
  if (s != EM_OK) {
    fprintf(stderr, "[rank %d] ddp_init: %s: %s\n", chk_rank(), em_status_str(s), em_last_error());
    return 1;
  }
  int rank = ddp_rank(), world = ddp_world_size();
  int erank = env_int("OMPI_COMM_WORLD_RANK"), eworld = env_int("OMPI_COMM_WORLD_SIZE");
  int elocal = env_int("OMPI_COMM_WORLD_LOCAL_RANK"),
      elworld = env_int("OMPI_COMM_WORLD_LOCAL_SIZE");
  CHECK(erank >= 0 && eworld >= 2, "not under mpirun with 2+ ranks (OMPI_COMM_WORLD_SIZE %d)",
        eworld);
  CHECK(rank == erank && world == eworld, "rank %d of %d, Open MPI says %d of %d", rank, world,
        erank, eworld);
  CHECK(ddp_local_rank() == elocal && ddp_local_world_size() == elworld,
        "local rank %d of %d, Open MPI says %d of %d", ddp_local_rank(), ddp_local_world_size(),
        elocal, elworld);
  coll_comm *c = ddp_comm();
  CHECK(c && coll_rank(c) == rank && coll_size(c) == world, "communicator rank %d size %d",
        coll_rank(c), coll_size(c));
  CHECK(ddp_device().kind == EM_CPU, "EMBER_DEVICE=%s: device kind %d, want the CPU",
        getenv("EMBER_DEVICE") ? getenv("EMBER_DEVICE") : "(unset)", ddp_device().kind);
  const char *be = coll_backend_name(c, EM_CPU);
  CHECK(be && !strcmp(be, "mpi"), "host backend %s, want mpi", be ? be : "NULL");
  coll_options o = coll_get_options(c);
  if (!getenv("EMBER_COLL_TIMEOUT") && !getenv("EMBER_COLL_CHUNK_BYTES") &&
      !getenv("EMBER_COLL_CHECK_EVERY"))
    CHECK(o.timeout_s == 300 && o.chunk_bytes == 1 << 20 && o.check_every == 1,
          "default options: timeout_s %g chunk_bytes %" PRId64 " check_every %d", o.timeout_s,
          o.chunk_bytes, o.check_every);

  /* Every rank's view, gathered: ranks 0..W-1 once each, one world, local ranks distinct. */
  int32_t mine[4] = {rank, world, ddp_local_rank(), ddp_local_world_size()};
  int32_t *all = calloc((size_t)world * 4, sizeof *all);
  s = coll_run(coll_allgather(c, coll_host_buf(mine, 4, EM_I32),
                              coll_host_buf(all, (int64_t)world * 4, EM_I32), 4));
  if (CHECK(s == EM_OK, "allgather of the layout: %s", em_last_error())) {
    uint32_t local_seen = 0;
    for (int r = 0; r < world; r++) {
      CHECK(all[4 * r] == r && all[4 * r + 1] == world && all[4 * r + 3] == elworld,
            "rank %d reports rank %d of %d, local world %d", r, all[4 * r], all[4 * r + 1],
            all[4 * r + 3]);
      if (all[4 * r + 2] >= 0 && all[4 * r + 2] < 32) local_seen |= 1u << all[4 * r + 2];
    }
    CHECK(local_seen == (1u << elworld) - 1, "local ranks are not 0..%d once each", elworld - 1);
  }
  free(all);
  check_prints(rank, world);
  return chk_finish("test_coll_bootstrap");
}

int main(int argc, char **argv) {
  if (argc == 2 && !strcmp(argv[1], "--single")) return run_single();
  if (argc == 3 && !strcmp(argv[1], "--init-error")) return run_init_error(argv[2]);
  if (argc == 1) return run_multi();
  fprintf(stderr, "usage: test_coll_bootstrap [--single | --init-error PATTERN]\n");
  return 2;
}
