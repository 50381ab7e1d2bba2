/* test_coll_shared.c: node-shared memory (coll_alloc_shared) and the all-reduce that reduces in
 * it without staging, on real ranks.
 *
 *   mpirun.sh NP LIMIT test_coll_shared [--mismatch]
 *
 * 1. Allocation: with the shared-memory path (one node, EMBER_COLL_SHM not 0) every rank gets
 *    zeroed memory; with EMBER_COLL_SHM=0 NULL and no error. coll_free_shared(NULL) is a no-op.
 * 2. In-place allreduces of ranges of it (every op, f32/bf16/i32/i64, offsets and counts from 1
 *    element past several chunks with a ragged last one; run with EMBER_COLL_CHUNK_BYTES=4096 too)
 *    give the reference result bit for bit (inputs are small integers: every sum is exact), and
 *    the elements around the range are untouched. Each rank writes its range just before, so a
 *    rank that read a peer's copy too early or too late would see the wrong values.
 * 3. Two allocations live at once; both freed. Ordinary out-of-place and in-place allreduces
 *    still work between them.
 * --mismatch: rank 0 passes a range of its shared memory, the others ordinary memory: every rank
 *    fails that operation with a message saying the ranks passed different kinds of buffer (and
 *    the program exits non-zero, as the communicator has failed: run through expect_fail.sh). */
#include "mpi_check.h"

static coll_comm *comm;
static int rank, world;

static int64_t v_in(int r, int64_t i) { return (int64_t)(r + 1) * ((i * 7 + 3) % 13); }
static int64_t v_ord(int r, int64_t i) { return (i * 7 + 3 + 5 * r) % 13 - 6; }

/* The value of rank r's element i for op, and the reference over ranks. */
static int64_t input(coll_redop op, int r, int64_t i) {
  return op == COLL_SUM || op == COLL_AVG ? v_in(r, i) : v_ord(r, i);
}
static double want(coll_redop op, int64_t i) {
  int64_t acc = input(op, 0, i);
  for (int r = 1; r < world; r++) {
    int64_t v = input(op, r, i);
    acc = op == COLL_MAX ? (v > acc ? v : acc) : op == COLL_MIN ? (v < acc ? v : acc) : acc + v;
  }
  return op == COLL_AVG ? (double)acc / world : (double)acc;
}

/* bf16 by truncating f32 bits: exact for the small integers and halves used here. */
static void put(void *p, int64_t i, em_dtype dt, double v) {
  float f = (float)v;
  uint32_t bits;
  memcpy(&bits, &f, 4);
  switch (dt) {
  case EM_F32: ((float *)p)[i] = f; break;
  case EM_BF16: ((uint16_t *)p)[i] = (uint16_t)(bits >> 16); break;
  case EM_I32: ((int32_t *)p)[i] = (int32_t)v; break;
  default: ((int64_t *)p)[i] = (int64_t)v; break;
  }
}
static double get(const void *p, int64_t i, em_dtype dt) {
  float f;
  uint32_t bits;
  switch (dt) {
  case EM_F32: return ((const float *)p)[i];
  case EM_BF16:
    bits = (uint32_t)((const uint16_t *)p)[i] << 16;
    memcpy(&f, &bits, 4);
    return f;
  case EM_I32: return ((const int32_t *)p)[i];
  default: return (double)((const int64_t *)p)[i];
  }
}

/* Allreduce region[at, at + n) in place; the 8 elements on each side hold a marker. */
static void run_range(char *region, int64_t cap, em_dtype dt, coll_redop op, int64_t at,
                      int64_t n) {
  size_t es = em_dtype_size(dt);
  if (at < 8 || (at + n + 8) * (int64_t)es > cap) return;
  char what[160];
  snprintf(what, sizeof what, "%s x %lld at %lld, %s", em_dtype_name(dt), (long long)n,
           (long long)at, coll_redop_name(op));
  char *base = region + at * (int64_t)es;
  for (int64_t i = -8; i < n + 8; i++) put(base, i, dt, i < 0 || i >= n ? 99 : input(op, rank, i));
  em_status s = coll_run_allreduce(comm, coll_host_buf(base, n, dt), coll_host_buf(base, n, dt), n,
                                   op);
  if (!CHECK(s == EM_OK, "%s: %s: %s", what, em_status_str(s), em_last_error())) return;
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; i++)
    if (get(base, i, dt) != (dt == EM_I32 || dt == EM_I64 ? (double)(int64_t)want(op, i)
                                                          : (double)(float)want(op, i)) &&
        bad++ == 0)
      first = i;
  CHECK(bad == 0, "%s: %lld elements wrong, first [%lld] = %g, want %g", what, (long long)bad,
        (long long)first, bad ? get(base, first, dt) : 0.0, bad ? want(op, first) : 0.0);
  for (int i = 1; i <= 8; i++)
    CHECK(get(base, -i, dt) == 99 && get(base, n + i - 1, dt) == 99, "%s: element %d outside",
          what, i);
}

static void mismatch(void) {
  const int64_t n = 1000;
  float *shared = coll_alloc_shared(comm, n * sizeof(float));
  float *plain = malloc(n * sizeof(float));
  if (!CHECK(shared && plain, "no shared memory (%s)", em_last_error())) return;
  float *mine = rank == 0 ? shared : plain;
  for (int64_t i = 0; i < n; i++) mine[i] = 1;
  em_status s = coll_run_allreduce(comm, coll_host_buf(mine, n, EM_F32),
                                   coll_host_buf(mine, n, EM_F32), n, COLL_SUM);
  fprintf(stderr, "[rank %d] allreduce: %s\n", rank, em_last_error());
  CHECK(s == EM_ERR_COMM, "want EM_ERR_COMM, got %s", em_status_str(s));
  CHECK_STR(em_last_error(), "different kinds of buffer");
  CHECK_STR(em_last_error(), "rank 0: shared allocation");
  CHECK_STR(em_last_error(), "rank 1: ordinary memory");
  free(plain); /* the communicator has failed: the shared memory goes with it at finalize */
}

int main(int argc, char **argv) {
  if (!chk_init(&argc, &argv)) return chk_finish("test_coll_shared");
  comm = ddp_comm();
  rank = ddp_rank();
  world = ddp_world_size();
  if (argc == 2 && !strcmp(argv[1], "--mismatch")) {
    mismatch();
    return chk_finish("test_coll_shared --mismatch");
  }
  const char *shm_env = getenv("EMBER_COLL_SHM");
  bool shm = !(shm_env && !strcmp(shm_env, "0"));

  const int64_t cap = 4 << 20; /* bytes */
  char *a = coll_alloc_shared(comm, (size_t)cap);
  CHECK(em_last_status() == EM_OK, "coll_alloc_shared set an error: %s", em_last_error());
  CHECK(shm == (a != NULL), "shared memory %s with EMBER_COLL_SHM=%s", a ? "given" : "not given",
        shm_env ? shm_env : "(unset)");
  CHECK_OK(coll_free_shared(comm, NULL));
  if (!a) return chk_finish("test_coll_shared");
  int64_t nonzero = 0;
  for (int64_t i = 0; i < cap; i++) nonzero += a[i] != 0;
  CHECK(nonzero == 0, "%lld bytes of new shared memory not zero", (long long)nonzero);

  char *b = coll_alloc_shared(comm, 1 << 16);
  CHECK(b != NULL && b != a, "a second allocation: %p (first %p)", (void *)b, (void *)a);
  static const em_dtype dts[] = {EM_F32, EM_BF16, EM_I32, EM_I64};
  static const coll_redop ops[] = {COLL_SUM, COLL_AVG, COLL_MAX, COLL_MIN};
  static const int64_t counts[] = {1, 7, 1000, 1025, 70001, 262145, 300007};
  for (int d = 0; d < 4; d++)
    for (int o = 0; o < 4; o++) {
      if (ops[o] == COLL_AVG && (dts[d] == EM_I32 || dts[d] == EM_I64)) continue;
      for (int k = 0; k < 7; k++) {
        run_range(a, cap, dts[d], ops[o], 8 + 13 * k, counts[k]);
        if (b && counts[k] < 4000) run_range(b, 1 << 16, dts[d], ops[o], 64, counts[k]);
      }
    }
  /* Ordinary memory in between: staged as before. */
  float x[3] = {(float)rank, 1, 2}, y[3];
  CHECK_OK(coll_run_allreduce(comm, coll_host_buf(x, 3, EM_F32), coll_host_buf(y, 3, EM_F32), 3,
                              COLL_SUM));
  CHECK(y[0] == (float)(world * (world - 1) / 2) && y[1] == (float)world, "staged sum %g %g", y[0],
        y[1]);
  CHECK_OK(coll_free_shared(comm, b));
  CHECK_OK(coll_free_shared(comm, a));
  return chk_finish("test_coll_shared");
}
