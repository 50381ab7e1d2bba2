/* test_cuda_elementwise.c: the CUDA table's elementwise kernels (binary with broadcasting, affine,
 * every unary op and its backward, where) against the CPU table, through the op front ends, and
 * autograd expressions whose backward runs the engine's sum_to and accumulate on the GPU. Every
 * case skips without a CUDA device.
 *
 * Bounds: add, sub, mul, div, affine, relu, clamp and where are single float roundings on both
 * devices: 1e-6 relative (nvcc may fuse a multiply-add where the CPU does not). The transcendental
 * ops run CUDA's libm on the GPU and oneDNN's own polynomial approximations on the CPU, each
 * within a few ulp; gelu's 1 + erf(x / sqrt 2) cancels for negative x, which turns those ulp into
 * an absolute error: 1e-5 relative and 1e-6 absolute there. oneDNN's log is the exception: it is
 * accurate to only ~4e-6 absolute (test_ops_unary.c measured it; near x = 1, where log x is small,
 * that is far above 1e-5 relative), so log gets 1e-5 absolute. */
#include "cudacmp.h"

#include <math.h>
#include <string.h>

/* The absolute bound for gradients that sum_to reduces over broadcast dims: the CPU adds the
 * terms in float in order, the GPU in float64, so they differ by the CPU's rounding, up to about
 * 2^-24 per term times the partial sums (terms of magnitude ~1 here): 1e-6 per term summed. */
static double sum_to_atol(int n, em_tensor *const *in) {
  int nd = 0;
  for (int i = 0; i < n; i++) nd = in[i]->ndim > nd ? in[i]->ndim : nd;
  double out = 1; /* the broadcast output's numel */
  for (int d = 0; d < nd; d++) {
    int64_t size = 1;
    for (int i = 0; i < n; i++) {
      int di = d - (nd - in[i]->ndim);
      if (di >= 0 && in[i]->shape[di] != 1) size = in[i]->shape[di];
    }
    out *= (double)size;
  }
  double terms = 1;
  for (int i = 0; i < n; i++)
    if (em_numel(in[i]) > 0 && out / (double)em_numel(in[i]) > terms)
      terms = out / (double)em_numel(in[i]);
  return 1e-6 * terms;
}

/* ---- binary ------------------------------------------------------------------------------- */
enum { ADD, SUB, MUL, DIV };

typedef struct {
  int op;
  bool transpose_a; /* a non-contiguous operand: a's transpose */
} bin_case;

static em_tensor *bin_fn(em_tensor **in, void *ctx) {
  const bin_case *c = ctx;
  em_tensor *a = c->transpose_a ? em_transpose(in[0], 0, 1) : in[0];
  switch (c->op) {
  case ADD: return em_add(a, in[1]);
  case SUB: return em_sub(a, in[1]);
  case MUL: return em_mul(a, in[1]);
  default: return em_div(a, in[1]);
  }
}

Test(cuda_elementwise, binary_ops_broadcast_like_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  struct {
    int na, nb;
    int64_t a[4], b[4];
    bool transpose_a;
  } shapes[] = {
      {2, 2, {3, 5}, {3, 5}, false},    /* same shape, contiguous */
      {3, 2, {4, 1, 6}, {5, 1}, false}, /* both broadcast */
      {0, 1, {0}, {7}, false},          /* 0-d with a vector */
      {2, 1, {33, 17}, {17}, false},    /* odd sizes, a row vector */
      {2, 2, {0, 3}, {1, 3}, false},    /* empty */
      {2, 2, {6, 9}, {9, 6}, true},     /* a's transpose: strided */
      {4, 4, {2, 3, 1, 5}, {1, 3, 4, 1}, false},
      {1, 1, {1000}, {1}, false},
  };
  static const char *names[] = {"add", "sub", "mul", "div"};
  em_rng r = em_rng_new(1);
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int op = 0; op < 4; op++) {
      em_tensor *in[2] = {
          tu_rand(&r, shapes[s].na, shapes[s].a, -2, 2, true),
          /* divisors away from 0, with both signs: [-2, -0.5) or [0.5, 2) */
          op == DIV ? em_mul_scalar(tu_rand(&r, shapes[s].nb, shapes[s].b, 0.5f, 2, false),
                                    (s & 1) ? -1.0f : 1.0f)
                    : tu_rand(&r, shapes[s].nb, shapes[s].b, -2, 2, false),
      };
      cr_assert_eq(em_set_requires_grad(in[1], true), EM_OK);
      bin_case c = {op, shapes[s].transpose_a};
      char what[64];
      snprintf(what, sizeof what, "%s, shape case %zu", names[op], s);
      tu_cuda_check(bin_fn, 2, in, &c, 1e-6, 1e-7, 1e-6, sum_to_atol(2, in), what);
    }
  TU_END;
}

/* ---- affine --------------------------------------------------------------------------------- */
static em_tensor *affine_fn(em_tensor **in, void *ctx) {
  (void)ctx;
  em_tensor *t = em_transpose(in[0], 0, 2); /* strided: the front end copies it */
  return em_neg(em_add_scalar(em_mul_scalar(t, -1.75f), 0.3f));
}

Test(cuda_elementwise, affine_matches_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(2);
  em_tensor *x = tu_rand(&r, EM_SHAPE(3, 7, 11), -3, 3, true);
  tu_cuda_check(affine_fn, 1, &x, NULL, 1e-6, 1e-7, 1e-6, 1e-7, "affine");
  em_tensor *e = tu_rand(&r, EM_SHAPE(2, 0, 5), -3, 3, true);
  tu_cuda_check(affine_fn, 1, &e, NULL, 0, 0, 0, 0, "affine of an empty tensor");
  TU_END;
}

/* ---- unary ---------------------------------------------------------------------------------- */
typedef struct {
  const char *name;
  float lo, hi; /* input range */
  float p, q;   /* pow's exponent; clamp's bounds */
  bool exact;   /* a single rounding (tight bound) */
} un_case;

static em_tensor *un_apply(const un_case *c, em_tensor *x) {
  const char *n = c->name;
  if (!strcmp(n, "exp")) return em_exp(x);
  if (!strcmp(n, "log")) return em_log(x);
  if (!strcmp(n, "sqrt")) return em_sqrt(x);
  if (!strcmp(n, "pow")) return em_pow(x, c->p);
  if (!strcmp(n, "relu")) return em_relu(x);
  if (!strcmp(n, "gelu")) return em_gelu(x);
  if (!strcmp(n, "tanh")) return em_tanh(x);
  if (!strcmp(n, "sigmoid")) return em_sigmoid(x);
  return em_clamp(x, c->p, c->q);
}

static em_tensor *un_fn(em_tensor **in, void *ctx) { return un_apply(ctx, in[0]); }

/* The same op on a strided view (a transpose), so the front end's contiguous copy is on the path.
 */
static em_tensor *un_fn_strided(em_tensor **in, void *ctx) {
  return un_apply(ctx, em_transpose(in[0], 0, 1));
}

Test(cuda_elementwise, every_unary_op_and_its_gradient) {
  TU_NEED_CUDA();
  TU_BEGIN;
  static const un_case cases[] = {
      {"exp", -4, 4, 0, 0, false},       {"log", 0.05f, 5, 0, 0, false},
      {"sqrt", 0.05f, 9, 0, 0, false},   {"pow", 0.1f, 3, 2.5f, 0, false},
      {"pow", 0.1f, 3, -1.5f, 0, false}, {"pow", 0.1f, 3, 0, 0, false},
      {"pow", -2, 2, 3, 0, false},       {"relu", -3, 3, 0, 0, true},
      {"gelu", -5, 5, 0, 0, false},      {"tanh", -4, 4, 0, 0, false},
      {"sigmoid", -8, 8, 0, 0, false},   {"clamp", -2, 2, -0.5f, 0.7f, true},
  };
  static const int64_t shapes[][2] = {{1000, 1}, {257, 3}, {0, 4}, {5, 7}};
  em_rng r = em_rng_new(3);
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
      const un_case *c = &cases[k];
      em_tensor *x = tu_rand(&r, 2, shapes[s], c->lo, c->hi, true);
      double rtol = c->exact ? 1e-6 : 1e-5, atol = c->exact ? 0 : 1e-6;
      if (!strcmp(c->name, "log")) atol = 1e-5; /* the CPU's (oneDNN's) own error */
      char what[64];
      snprintf(what, sizeof what, "%s (p %g, q %g), shape %zu", c->name, c->p, c->q, s);
      tu_cuda_check(s == 3 ? un_fn_strided : un_fn, 1, &x, (void *)c, rtol, atol, rtol, atol, what);
    }
  TU_END;
}

/* Relu at exactly 0 and clamp at its bounds: the gradient rules at the kinks (y > 0 passes;
 * lo < x <= hi passes) are the CPU's. */
Test(cuda_elementwise, unary_gradients_at_the_kinks) {
  TU_NEED_CUDA();
  TU_BEGIN;
  float v[] = {-1, -0.5f, 0, 0.25f, 0.7f, 1, 0, -0.5f};
  em_tensor *x = em_from_data(EM_F32, EM_SHAPE(8), v);
  cr_assert_eq(em_set_requires_grad(x, true), EM_OK);
  un_case relu = {"relu", 0, 0, 0, 0, true}, clamp = {"clamp", 0, 0, -0.5f, 0.7f, true};
  tu_cuda_check(un_fn, 1, &x, &relu, 0, 0, 0, 0, "relu at 0");
  em_tensor *x2 = em_from_data(EM_F32, EM_SHAPE(8), v);
  cr_assert_eq(em_set_requires_grad(x2, true), EM_OK);
  tu_cuda_check(un_fn, 1, &x2, &clamp, 0, 0, 0, 0, "clamp at its bounds");
  TU_END;
}

/* ---- where ---------------------------------------------------------------------------------- */
static em_tensor *where_fn(em_tensor **in, void *ctx) {
  (void)ctx;
  return em_where(in[0], in[1], in[2]);
}

/* where with a strided a (a transpose): the kernel reads a where it lies, by its strides. */
static em_tensor *where_strided_fn(em_tensor **in, void *ctx) {
  (void)ctx;
  return em_where(in[0], em_transpose(in[1], 0, 1), in[2]);
}

/* A condition of dtype dt and the given shape: about a third of its elements 0. */
static em_tensor *make_cond(em_rng *r, em_dtype dt, int nd, const int64_t *shape) {
  em_tensor *f = tu_rand(r, nd, shape, -1, 2, false);
  float *p = em_data_f32(f);
  for (int64_t i = 0; i < em_numel(f); i++) p[i] = p[i] < 0 ? 0.0f : p[i] * 3;
  if (dt == EM_F32) return f;
  em_tensor *c = em_empty(dt, nd, shape);
  for (int64_t i = 0; i < em_numel(f); i++)
    em_set(c, i, dt == EM_U8 || dt == EM_I32 || dt == EM_I64 ? floor(p[i]) : p[i]);
  return c;
}

Test(cuda_elementwise, where_broadcasts_every_condition_dtype) {
  TU_NEED_CUDA();
  TU_BEGIN;
  static const em_dtype dts[] = {EM_F32, EM_I64, EM_I32, EM_U8, EM_BF16, EM_F16};
  struct {
    int nc, na, nb;
    int64_t c[3], a[3], b[3];
  } shapes[] = {
      {2, 2, 2, {4, 5}, {4, 5}, {4, 5}},
      {2, 2, 1, {4, 1}, {1, 5}, {5}},
      {3, 2, 0, {2, 3, 4}, {3, 4}, {0}},
      {1, 2, 2, {0}, {3, 0}, {1, 1}},
  };
  em_rng r = em_rng_new(4);
  for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++)
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
      em_tensor *in[3] = {make_cond(&r, dts[d], shapes[s].nc, shapes[s].c),
                          tu_rand(&r, shapes[s].na, shapes[s].a, -1, 1, true),
                          tu_rand(&r, shapes[s].nb, shapes[s].b, -1, 1, true)};
      char what[64];
      snprintf(what, sizeof what, "where, cond %s, shape case %zu", em_dtype_name(dts[d]), s);
      /* where selects; its gradients are selections summed over broadcast dims */
      tu_cuda_check(where_fn, 3, in, NULL, 0, 0, 1e-6, sum_to_atol(3, in), what);
    }
  em_tensor *in[3] = {make_cond(&r, EM_F32, 2, (int64_t[]){6, 4}),
                      tu_rand(&r, EM_SHAPE(4, 6), -1, 1, true),
                      tu_rand(&r, EM_SHAPE(6, 1), -1, 1, true)};
  tu_cuda_check(where_strided_fn, 3, in, NULL, 0, 0, 1e-6, 1e-6 * 4, "where, a strided");
  TU_END;
}

/* ---- autograd on the GPU: sum_to, accumulate, the implicit seed ------------------------------ */
/* loss = sum(tanh(a * b + c) * a) + sum(a + a^T): a (n, n) is used three times (its gradient is
 * accumulated, once from a transposed, strided view), b (n) and c (1, n) broadcast (their
 * gradients are sum_to's). */
static em_tensor *composite(em_tensor **in) {
  em_tensor *a = in[0], *b = in[1], *c = in[2];
  em_tensor *t = em_mul(em_tanh(em_add(em_mul(a, b), c)), a);
  return em_add(em_sum(t, 0, NULL, false),
                em_sum(em_add(a, em_transpose(a, 0, 1)), 0, NULL, false));
}

Test(cuda_elementwise, composite_expression_backward_matches_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(5);
  em_tensor *cpu[3] = {tu_rand(&r, EM_SHAPE(37, 37), -1, 1, true),
                       tu_rand(&r, EM_SHAPE(37), -1, 1, true),
                       tu_rand(&r, EM_SHAPE(1, 37), -1, 1, true)};
  em_tensor *gpu[3];
  for (int i = 0; i < 3; i++) gpu[i] = tu_cuda(cpu[i]);
  /* Twice: the second backward adds into the existing .grad (the accumulate kernel). */
  for (int pass = 0; pass < 2; pass++) {
    em_tensor *lc = composite(cpu), *lg = composite(gpu);
    tu_assert_same(lc, lg, 1e-5, 1e-5, "composite loss");
    /* the implicit seed: a ones tensor on the loss's device */
    cr_assert_eq(em_backward(lc), EM_OK, "cpu: %s", em_last_error());
    cr_assert_eq(em_backward(lg), EM_OK, "cuda: %s", em_last_error());
    static const char *names[] = {"grad a", "grad b (sum_to over rows)", "grad c (sum_to)"};
    /* b's and c's gradients sum 37 terms: the CPU in float, the GPU in float64 */
    for (int i = 0; i < 3; i++) tu_assert_same(cpu[i]->grad, gpu[i]->grad, 1e-5, 1e-5, names[i]);
  }
  TU_END;
}
