/* test_ddp_baduse.c: mistakes with ddp_wrap give errors that name the fault, on every rank, with
 * no hang; the communicator stays usable afterwards.
 *
 *   mpirun.sh NP LIMIT test_ddp_baduse
 *
 * In order, in one program:
 *   init     ddp_wrap before ddp_init: NULL, EM_ERR_STATE, "ddp_init"
 *   models   rank 1 builds hidden size 48 instead of 64: NULL on every rank within seconds, the
 *            message names the parameter ('0.weight') and both shapes ([64, 20] and [48, 20])
 *   plan     EMBER_DDP_BUCKET_MB set (setenv) on rank 1 only: NULL on every rank, "bucket";
 *            then set to "abc" on rank 1: NULL on every rank, rank 1 names the variable
 *   twice    wrapping a wrapped model: NULL, "wrapped already"; after ddp_free it wraps again
 *   grad     em_set_grad(p, another tensor) after wrapping (on every rank): the next backward
 *            returns EM_ERR_STATE naming the parameter; putting the bucket view back heals it
 * After each failure a correct wrap + synced backward still works. */
#include "ddp_util.h"

static em_module *mlp(int hidden) {
  em_manual_seed(4);
  return em_mlp(20, (int[]){hidden}, 1, DU_CLASSES);
}

/* One synced backward on this rank's samples. */
static em_status one_pass(em_module *m) {
  em_scope sc = em_scope_begin();
  em_tensor *x = du_inputs(9, 0, 2, (int64_t[]){8, 20});
  em_tensor *y = du_labels(9, 0, 8, DU_CLASSES);
  em_status s = em_backward(em_cross_entropy(em_forward(m, x), y));
  em_scope_end(sc);
  return s;
}

/* A correct wrap and pass still work. */
static void still_works(const char *after) {
  em_module *m = mlp(64);
  ddp_model *d = ddp_wrap(m, NULL);
  CHECK(d != NULL, "after %s: ddp_wrap: %s", after, em_last_error());
  if (d) CHECK_OK(one_pass(m));
  ddp_free(d);
  em_module_free(m);
}

int main(int argc, char **argv) {
  /* init */
  em_module *m = mlp(64);
  ddp_model *d = ddp_wrap(m, NULL);
  em_status st = em_last_status();
  char msg[2048];
  snprintf(msg, sizeof msg, "%s", em_last_error());
  CHECK_OK(du_init(&argc, &argv));
  CHECK(d == NULL && st == EM_ERR_STATE, "wrap before ddp_init: %p, %s", (void *)d,
        em_status_str(st));
  CHECK_STR(msg, "ddp_init");
  em_module_free(m);
  int rank = ddp_rank();
  CHECK(ddp_world_size() >= 2, "needs 2 or more ranks");

  /* models */
  m = mlp(rank == 1 ? 48 : 64);
  double t0 = chk_now();
  d = ddp_wrap(m, NULL);
  snprintf(msg, sizeof msg, "%s", em_last_error());
  CHECK(d == NULL, "mismatched models: ddp_wrap succeeded");
  CHECK(chk_now() - t0 < 5, "mismatched models: took %.1f s", chk_now() - t0);
  CHECK_STR(msg, "0.weight");
  CHECK_STR(msg, "[64, 20]");
  CHECK_STR(msg, "[48, 20]");
  CHECK_STR(msg, "rank 1");
  ddp_free(d);
  em_module_free(m);
  still_works("mismatched models");

  /* plan */
  if (rank == 1)
    setenv("EMBER_DDP_BUCKET_MB", "0.001", 1);
  else
    unsetenv("EMBER_DDP_BUCKET_MB");
  m = mlp(64);
  d = ddp_wrap(m, NULL);
  snprintf(msg, sizeof msg, "%s", em_last_error());
  unsetenv("EMBER_DDP_BUCKET_MB");
  CHECK(d == NULL, "mismatched bucket plans: ddp_wrap succeeded");
  CHECK_STR(msg, "bucket");
  CHECK_STR(msg, "EMBER_DDP_BUCKET_MB");
  ddp_free(d);
  em_module_free(m);
  still_works("mismatched bucket plans");

  /* plan, a bad value */
  if (rank == 1) setenv("EMBER_DDP_BUCKET_MB", "abc", 1);
  m = mlp(64);
  t0 = chk_now();
  d = ddp_wrap(m, NULL);
  snprintf(msg, sizeof msg, "%s", em_last_error());
  unsetenv("EMBER_DDP_BUCKET_MB");
  CHECK(d == NULL, "a bad EMBER_DDP_BUCKET_MB on rank 1: ddp_wrap succeeded");
  CHECK(chk_now() - t0 < 5, "a bad EMBER_DDP_BUCKET_MB on rank 1: took %.1f s", chk_now() - t0);
  CHECK_STR(msg, rank == 1 ? "EMBER_DDP_BUCKET_MB=abc: expected a number in [0.001, 1024]"
                           : "bucket plans differ");
  ddp_free(d);
  em_module_free(m);
  still_works("a bad EMBER_DDP_BUCKET_MB");

  /* twice */
  m = mlp(64);
  d = ddp_wrap(m, NULL);
  CHECK(d != NULL, "first wrap: %s", em_last_error());
  ddp_model *d2 = ddp_wrap(m, NULL);
  snprintf(msg, sizeof msg, "%s", em_last_error());
  CHECK(d2 == NULL && em_last_status() == EM_ERR_STATE, "second wrap of one model: %p, %s",
        (void *)d2, em_status_str(em_last_status()));
  CHECK_STR(msg, "wrapped already");
  if (d) CHECK_OK(one_pass(m)); /* the first wrapper is intact */
  ddp_free(d);
  d = ddp_wrap(m, NULL);
  CHECK(d != NULL, "wrap after ddp_free: %s", em_last_error());

  /* grad */
  if (d) {
    em_params p = em_parameters(m);
    em_tensor *view = p.t[1]->grad; /* 0.bias; the reducer holds its own reference */
    em_tensor *other = em_zeros(EM_F32, 1, (int64_t[]){64}); /* outside scopes: ours */
    CHECK_OK(em_set_grad(p.t[1], other));
    st = one_pass(m);
    snprintf(msg, sizeof msg, "%s", em_last_error());
    CHECK(st == EM_ERR_STATE, "backward with a replaced .grad: %s", em_status_str(st));
    CHECK_STR(msg, "0.bias");
    CHECK_OK(em_set_grad(p.t[1], view));
    CHECK_OK(one_pass(m));
    em_release(other);
  }
  ddp_free(d);
  em_module_free(m);
  return chk_finish("test_ddp_baduse");
}
