/* test_cuda_reduce.c: the CUDA table's reductions (sum, mean, max, argmax), softmax and
 * log_softmax, and the causal mask, against the CPU table through the op front ends, forward and
 * backward. The shapes reach both kernel forms (a block per output row, a thread per output; see
 * runtime/cuda/blockreduce.cuh). Every case skips without a CUDA device.
 *
 * Bounds: sums accumulate in float64 on both devices, but the CPU rounds to float between the
 * passes of a sum over non-neighbouring dims: 1e-6 relative, 1e-6 absolute (for sums that cancel
 * to near 0). max, argmax and their gradient select: exact. softmax sums its exponentials in float
 * in a different order, with different exp/log approximations (CUDA's libm, oneDNN's polynomials):
 * 1e-5 relative, 1e-7 absolute for the values (~1/R); 1e-6 absolute for the gradient, y (dy - sum)
 * with y near 1 and dy near the sum, where the two sums' orders differ by an ulp of the sum;
 * 1e-5 absolute for log_softmax, whose x - m - log(s) carries oneDNN's log error (~4e-6 absolute,
 * test_ops_unary.c: a row of one gives log(1) != 0 on the CPU, exactly 0 on the GPU). */
#include "cudacmp.h"

#include <math.h>

/* ---- sum, mean ------------------------------------------------------------------------------ */
typedef struct {
  int n;
  int dims[4];
  bool keepdim, mean, transpose; /* transpose: reduce a strided view (dims 0 and 1 swapped) */
} red_case;

static em_tensor *red_fn(em_tensor **in, void *ctx) {
  const red_case *c = ctx;
  em_tensor *x = c->transpose ? em_transpose(in[0], 0, 1) : in[0];
  return c->mean ? em_mean(x, c->n, c->dims, c->keepdim) : em_sum(x, c->n, c->dims, c->keepdim);
}

Test(cuda_reduce, sum_and_mean_over_any_dims) {
  TU_NEED_CUDA();
  TU_BEGIN;
  struct {
    int nd;
    int64_t shape[4];
    red_case c;
  } cases[] = {
      {4, {3, 4, 5, 6}, {0, {0}, false, false, false}},    /* all dims */
      {4, {3, 4, 5, 6}, {1, {0}, false, false, false}},    /* leading: kept inner, few outputs */
      {4, {3, 4, 5, 6}, {1, {3}, true, true, false}},      /* trailing, keepdim, mean */
      {4, {3, 4, 5, 6}, {2, {1, 2}, false, false, false}}, /* a middle group */
      {4, {3, 4, 5, 6}, {2, {0, 2}, true, true, false}},   /* two groups */
      {4, {3, 4, 5, 6}, {2, {-1, 0}, false, false, true}}, /* strided input */
      {3, {7, 33, 5}, {1, {1}, false, false, false}},      /* odd sizes */
      {3, {7, 1, 5}, {1, {1}, false, false, false}},       /* only a size-1 dim */
      {2, {1, 100003}, {1, {1}, false, true, false}},      /* one long row */
      {2, {64, 5001}, {1, {0}, false, false, false}},      /* many outputs, kept inner */
      {2, {3, 70001}, {1, {0}, true, false, false}},       /* many outputs, short columns */
      {3, {40, 3, 200}, {1, {1}, false, false, false}},    /* a thread per output, 2 kept groups */
      {2, {0, 3}, {1, {0}, false, false, false}},          /* empty: zeros */
      {2, {0, 3}, {1, {0}, false, true, false}},           /* empty mean: NaN (0/0) */
      {2, {3, 0}, {1, {0}, false, false, false}},          /* no outputs */
      {0, {0}, {0, {0}, false, true, false}},              /* a 0-d tensor */
  };
  em_rng r = em_rng_new(11);
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    em_tensor *x = tu_rand(&r, cases[k].nd, cases[k].shape, -1, 1, true);
    char what[64];
    snprintf(what, sizeof what, "%s case %zu", cases[k].c.mean ? "mean" : "sum", k);
    tu_cuda_check(red_fn, 1, &x, &cases[k].c, 1e-6, 1e-6, 1e-6, 1e-7, what);
  }
  TU_END;
}

/* ---- max, argmax ---------------------------------------------------------------------------- */
typedef struct {
  int dim;
  bool keepdim, arg;
} max_case;

static em_tensor *max_fn(em_tensor **in, void *ctx) {
  const max_case *c = ctx;
  return c->arg ? em_argmax(in[0], c->dim, c->keepdim) : em_max(in[0], c->dim, c->keepdim);
}

/* x with many ties (values in {0, 1, 2}), a NaN in some rows and -inf rows: the first maximum,
 * NaN the largest. */
static em_tensor *tricky(em_rng *r, int nd, const int64_t *shape) {
  em_tensor *x = tu_rand(r, nd, shape, 0, 3, true);
  float *p = em_data_f32(x);
  int64_t n = em_numel(x);
  for (int64_t i = 0; i < n; i++) p[i] = floorf(p[i]);
  for (int64_t i = 5; i < n; i += 97) p[i] = NAN;
  for (int64_t i = 11; i < n; i += 89) p[i] = -INFINITY;
  return x;
}

Test(cuda_reduce, max_and_argmax_first_maximum_nan_largest) {
  TU_NEED_CUDA();
  TU_BEGIN;
  struct {
    int nd;
    int64_t shape[3];
  } shapes[] = {
      {3, {5, 7, 3}},     /* every dim in turn below: block per row, K 1 or strided */
      {2, {1, 50001}},    /* one long row */
      {3, {2, 10, 5000}}, /* dim 1: 10000 rows of 10, a thread each */
      {1, {1}},           {0, {0}},
  };
  em_rng r = em_rng_new(12);
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int dim = 0; dim < (shapes[s].nd ? shapes[s].nd : 1); dim++)
      for (int kind = 0; kind < 4; kind++) {
        bool nasty = kind >= 2;
        max_case c = {dim, s == 0 && dim == 1, kind & 1};
        em_tensor *x = nasty ? tricky(&r, shapes[s].nd, shapes[s].shape)
                             : tu_rand(&r, shapes[s].nd, shapes[s].shape, -1, 1, true);
        char what[80];
        snprintf(what, sizeof what, "%s over dim %d, shape case %zu%s", c.arg ? "argmax" : "max",
                 dim, s, nasty ? " (ties, NaN, -inf)" : "");
        tu_cuda_check(max_fn, 1, &x, &c, 0, 0, 0, 0, what);
      }
  /* -inf everywhere: index 0 */
  em_tensor *m = em_full(EM_F32, EM_SHAPE(3, 300), -INFINITY);
  max_case c = {1, false, true};
  tu_cuda_check(max_fn, 1, &m, &c, 0, 0, 0, 0, "argmax of -inf rows");
  TU_END;
}

/* ---- softmax, log_softmax ------------------------------------------------------------------- */
typedef struct {
  int dim;
  bool log;
} sm_case;

static em_tensor *sm_fn(em_tensor **in, void *ctx) {
  const sm_case *c = ctx;
  return c->log ? em_log_softmax(in[0], c->dim) : em_softmax(in[0], c->dim);
}

Test(cuda_reduce, softmax_and_log_softmax_along_any_dim) {
  TU_NEED_CUDA();
  TU_BEGIN;
  struct {
    int nd;
    int64_t shape[3];
    int dim;
  } cases[] = {
      {3, {4, 6, 5}, 0},     {3, {4, 6, 5}, 1},
      {3, {4, 6, 5}, 2},     {2, {3, 1000}, 1}, /* long rows: a block each */
      {3, {2, 3000, 3}, 1},                     /* long strided rows: a block each */
      {3, {50, 30, 100}, 1},                    /* 5000 short strided rows: a thread each */
      {2, {0, 5}, 1},                           /* empty */
      {2, {7, 1}, 1},                           /* rows of one: 1 and 0 */
  };
  em_rng r = em_rng_new(13);
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
    for (int log = 0; log < 2; log++) {
      em_tensor *x = tu_rand(&r, cases[k].nd, cases[k].shape, -6, 6, true);
      sm_case c = {cases[k].dim, log};
      char what[64];
      snprintf(what, sizeof what, "%s case %zu", log ? "log_softmax" : "softmax", k);
      double atol = log ? 1e-5 : 1e-7, gatol = log ? 1e-5 : 1e-6;
      tu_cuda_check(sm_fn, 1, &x, &c, 1e-5, atol, 1e-5, gatol, what);
    }
  TU_END;
}

/* ---- causal mask ---------------------------------------------------------------------------- */
typedef struct {
  float value;
  bool then_softmax;
} cm_case;

static em_tensor *cm_fn(em_tensor **in, void *ctx) {
  const cm_case *c = ctx;
  em_tensor *y = em_causal_mask(in[0], c->value);
  return y && c->then_softmax ? em_softmax(y, y->ndim - 1) : y;
}

Test(cuda_reduce, causal_mask_rows_see_their_past) {
  TU_NEED_CUDA();
  TU_BEGIN;
  struct {
    int nd;
    int64_t shape[4];
  } shapes[] = {
      {4, {2, 3, 5, 7}}, /* T < S: the last T rows of an S x S mask */
      {2, {6, 4}},       /* T > S: the first rows see nothing */
      {3, {2, 9, 9}},
      {3, {0, 4, 4}},
  };
  em_rng r = em_rng_new(14);
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    em_tensor *x = tu_rand(&r, shapes[s].nd, shapes[s].shape, -1, 1, true);
    cm_case c = {-1e30f, false};
    char what[64];
    snprintf(what, sizeof what, "causal_mask shape %zu", s);
    tu_cuda_check(cm_fn, 1, &x, &c, 0, 0, 0, 0, what);
  }
  /* the attention use: -inf above the diagonal, then softmax (no row is all masked: T <= S) */
  em_tensor *x = tu_rand(&r, EM_SHAPE(3, 8, 8), -2, 2, true);
  cm_case c = {-INFINITY, true};
  tu_cuda_check(cm_fn, 1, &x, &c, 1e-5, 1e-7, 1e-5, 1e-6, "causal_mask(-inf) then softmax");
  TU_END;
}
