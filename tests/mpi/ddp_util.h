/* ddp_util.h: helpers shared by the multi-rank tests of ddp_wrap (tests/mpi/test_ddp_*.c).
 *
 * Data. Every rank generates the whole global batch of a step from (seed, step), so that the
 * single-process reference can be computed on every rank and each rank trains on its own slice:
 *
 *   global batch (n samples): | rank 0: du_share(0) | rank 1: du_share(1) | ... |
 *
 * du_share splits n as evenly as possible, the first n % W ranks taking one more (64 on 3 ranks:
 * 22/21/21). Parameters are compared through snapshots of the whole parameter arena (a root
 * module's parameters in one buffer, see em_nn.h), so two copies of one architecture compare
 * element by element. Checks report through mpi_check.h. */
#ifndef EMBER_TESTS_DDP_UTIL_H
#define EMBER_TESTS_DDP_UTIL_H

#include "mpi_check.h"

#include <math.h>

#define DU_GLOBAL_BATCH 64
#define DU_CLASSES 10

/* Rank r's slice of n samples among w ranks: first sample *off, *len samples. */
static inline void du_share(int n, int w, int r, int *off, int *len) {
  int base = n / w, extra = n % w;
  *len = base + (r < extra ? 1 : 0);
  *off = r * base + (r < extra ? r : extra);
}

/* Inputs of step `step`: uniform [-1, 1) with the given shape (dim 0 = samples), scope-owned. */
static inline em_tensor *du_inputs(uint64_t seed, int step, int ndim, const int64_t *shape) {
  em_rng g = em_rng_new(seed * 1000003u + (uint64_t)step);
  return em_rand_uniform(ndim, shape, -1.0f, 1.0f, &g);
}

/* Labels of step `step` in [0, classes): i64 (n), scope-owned. */
static inline em_tensor *du_labels(uint64_t seed, int step, int64_t n, int classes) {
  em_rng g = em_rng_new(seed * 7919u + 17u * (uint64_t)step + 1u);
  int64_t *y = malloc((size_t)n * sizeof *y);
  if (!y) return NULL;
  for (int64_t i = 0; i < n; i++) y[i] = (int64_t)(em_rng_next_u64(&g) % (uint64_t)classes);
  em_tensor *t = em_from_data(EM_I64, 1, (int64_t[]){n}, y);
  free(y);
  return t;
}

/* A copy of m's parameter arena (malloc'd, caller frees) and its length. */
static inline float *du_snapshot(em_module *m, int64_t *numel) {
  em_params p = em_parameters(m);
  *numel = p.arena_numel;
  float *s = p.arena ? malloc((size_t)p.arena_numel * sizeof *s) : NULL;
  if (s) memcpy(s, p.arena, (size_t)p.arena_numel * sizeof *s);
  return s;
}

/* ||a - b|| / ||b|| over n floats, in double. */
static inline double du_rel(const float *a, const float *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)b[i];
    num += d * d;
    den += (double)b[i] * (double)b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Checks that got matches want (both laid out as p's arena) within tol overall and ptol for
 * every parameter; the failure names the worst parameter. Returns the overall relative
 * difference. */
static inline double du_check_bufs_(const char *file, int line, const float *got, const float *want,
                                    em_params p, double tol, double ptol, const char *what) {
  if (!chk_report(got && want && p.offset, file, line, "buffers", "%s: no data: %s", what,
                  em_last_error()))
    return INFINITY;
  double all = du_rel(got, want, p.arena_numel), worst = 0;
  int wi = 0;
  for (int i = 0; i < p.n; i++) {
    double r = du_rel(got + p.offset[i], want + p.offset[i], p.numel[i]);
    if (r > worst || i == 0) worst = r, wi = i;
  }
  chk_report(all <= tol && worst <= ptol, file, line, "relative difference <= tol",
             "%s: ||a-b||/||b|| = %.3g overall (tolerance %.1g), %.3g at '%s' (tolerance %.1g)",
             what, all, tol, worst, p.n ? p.names[wi] : "?", ptol);
  return all;
}
/* The parameters of m against want (an arena snapshot of the same architecture). */
#define DU_CHECK_CLOSE(m, want, tol, ptol, what)                                                   \
  du_check_bufs_(__FILE__, __LINE__, em_parameters(m).arena, want, em_parameters(m), tol, ptol,    \
                 what)
/* Gradients (du_grads) against want, tol overall and per parameter. */
#define DU_CHECK_CLOSE_G(got, want, p, tol, what)                                                  \
  du_check_bufs_(__FILE__, __LINE__, got, want, p, tol, tol, what)

/* Same bits on every rank? (an i64 hash of the floats, max == min over the world) */
static inline bool du_same_on_all_ranks(const float *v, int64_t n) {
  uint64_t h = 1469598103934665603ull;
  const unsigned char *b = (const unsigned char *)v;
  for (size_t i = 0; i < (size_t)n * sizeof *v; i++) h = (h ^ b[i]) * 1099511628211ull;
  int64_t a[2] = {(int64_t)(h >> 1), -(int64_t)(h >> 1)};
  coll_buf cb = coll_host_buf(a, 2, EM_I64);
  if (coll_run(coll_allreduce(ddp_comm(), cb, cb, 2, COLL_MAX)) != EM_OK) return false;
  return a[0] == (int64_t)(h >> 1) && -a[1] == (int64_t)(h >> 1);
}

/* Logical AND of ok over all ranks. */
static inline bool du_all(bool ok) {
  int64_t v = ok ? 1 : 0;
  coll_buf cb = coll_host_buf(&v, 1, EM_I64);
  if (coll_run(coll_allreduce(ddp_comm(), cb, cb, 1, COLL_MIN)) != EM_OK) return false;
  return v == 1;
}

/* The test programs run several ranks per core: one compute thread each keeps them fair. */
static inline em_status du_init(int *argc, char ***argv) {
  em_status s = ddp_init(argc, argv);
  em_set_num_threads(1);
  return s;
}

/* ---- a model with two heads ---------------------------------------------------------------------
 * x (N, 20) -> h = relu(trunk(x)) (N, 16) -> logits (N, 10) from head "a", head "b" or both
 * (a(h) + b(h)), chosen per forward by the mode in the module's ctx. Registration order trunk,
 * a, b: the reducer's bucket 0 starts with b.bias. */
typedef enum { DU_HEAD_A = 0, DU_HEAD_B = 1, DU_HEAD_BOTH = 2 } du_heads;
typedef struct {
  du_heads mode;
} du_two_head_ctx;

static inline em_tensor *du_two_head_forward(em_module *m, em_tensor *x) {
  du_two_head_ctx *c = (du_two_head_ctx *)em_module_ctx(m);
  em_tensor *h = em_relu(em_forward(em_module_child_at(m, 0), x));
  if (c->mode == DU_HEAD_A) return em_forward(em_module_child_at(m, 1), h);
  if (c->mode == DU_HEAD_B) return em_forward(em_module_child_at(m, 2), h);
  return em_add(em_forward(em_module_child_at(m, 1), h), em_forward(em_module_child_at(m, 2), h));
}

/* A new two-head model, initialised from em_manual_seed(seed). NULL with the error set. */
static inline em_module *du_two_head(uint64_t seed) {
  du_two_head_ctx *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  em_module *m = em_module_new("TwoHead", du_two_head_forward, c, free);
  if (!m) return NULL;
  em_manual_seed(seed);
  em_module *t = em_linear_new(20, 16, true);
  em_module *a = em_linear_new(16, DU_CLASSES, true);
  em_module *b = em_linear_new(16, DU_CLASSES, true);
  if (em_module_add_child(m, "trunk", t) != EM_OK || em_module_add_child(m, "a", a) != EM_OK ||
      em_module_add_child(m, "b", b) != EM_OK) {
    em_module_free(m);
    return NULL;
  }
  return m;
}

static inline void du_set_heads(em_module *m, du_heads mode) {
  ((du_two_head_ctx *)em_module_ctx(m))->mode = mode;
}

/* A copy of every parameter's .grad, laid out as the arena (zeros where there is none); malloc'd,
 * caller frees. */
static inline float *du_grads(em_module *m) {
  em_params p = em_parameters(m);
  float *g = p.arena ? calloc((size_t)p.arena_numel, sizeof *g) : NULL;
  for (int i = 0; g && i < p.n; i++) {
    em_tensor *gr = p.t[i]->grad;
    if (gr) memcpy(g + p.offset[i], em_data(gr), (size_t)p.numel[i] * sizeof *g);
  }
  return g;
}

/* The parameter called name's arena range. */
static inline void du_param_range(em_module *m, const char *name, int64_t *off, int64_t *n) {
  em_params p = em_parameters(m);
  *off = 0, *n = 0;
  for (int i = 0; i < p.n; i++)
    if (!strcmp(p.names[i], name)) *off = p.offset[i], *n = p.numel[i];
}

#endif
