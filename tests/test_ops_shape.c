/* test_ops_shape.c: reshape, flatten, transpose, permute, slice, narrow, contiguous, clone,
 * concat, stack, index_select.
 *
 * Values are checked element by element against index arithmetic written here (inputs hold
 * 0, 1, 2, ... so each value names where it came from); views are checked to share storage (and
 * writes through a view to reach the base); every op's gradient goes through tu_gradcheck; bad
 * arguments must give NULL with an error naming the shapes involved. Every test checks that
 * em_live_tensors is back to its starting value once its scope has ended. */
#include "testutil.h"

#include <math.h>
#include <string.h>

/* f32 tensor holding 0, 1, 2, ... in row-major order. */
static em_tensor *arange(int ndim, const int64_t *shape) {
  em_tensor *t = em_empty(EM_F32, ndim, shape);
  cr_assert_not_null(t, "%s", em_last_error());
  for (int64_t i = 0, n = em_numel(t); i < n; i++) em_set(t, i, (double)i);
  return t;
}

static void assert_shape(const em_tensor *t, int ndim, const int64_t *shape, const char *what) {
  cr_assert_not_null(t, "%s: NULL: %s", what, em_last_error());
  char b[EM_SHAPE_STR_LEN];
  cr_assert_eq(t->ndim, ndim, "%s: got shape %s", what, em_shape_str(t, b, sizeof b));
  for (int d = 0; d < ndim; d++)
    cr_assert_eq(t->shape[d], shape[d], "%s: got shape %s", what, em_shape_str(t, b, sizeof b));
}

/* ---- reshape and flatten ----------------------------------------------------------------- */
Test(shape, reshape_view_and_infer) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(2, 3, 4));
  em_tensor *r = em_reshape(a, EM_SHAPE(4, -1));
  assert_shape(r, EM_SHAPE(4, 6), "reshape (4, -1)");
  cr_assert(em_shares_storage(a, r), "reshape of a contiguous tensor must be a view");
  cr_assert(em_is_contiguous(r));
  for (int64_t i = 0; i < 24; i++) cr_assert_eq(em_get(r, i), (double)i);
  em_set(r, 5, -7.0); /* write through the view */
  cr_assert_eq(em_get(a, 5), -7.0);
  em_tensor *s = em_reshape(a, EM_SHAPE(-1));
  assert_shape(s, EM_SHAPE(24), "reshape (-1)");
  em_tensor *one = em_full(EM_F32, EM_SHAPE(1, 1), 3.0);
  em_tensor *sc = em_reshape(one, 0, NULL);
  cr_assert_not_null(sc, "%s", em_last_error());
  cr_assert_eq(sc->ndim, 0);
  cr_assert_eq(em_get(sc, 0), 3.0);
  em_tensor *empty = em_zeros(EM_F32, EM_SHAPE(0, 3));
  assert_shape(em_reshape(empty, EM_SHAPE(3, 0)), EM_SHAPE(3, 0), "empty reshape");
  TU_END;
}

Test(shape, reshape_of_view_copies) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(3, 4));
  em_tensor *t = em_transpose(a, 0, 1); /* (4, 3), t[i][j] = a[j][i] = 4j + i */
  em_tensor *r = em_reshape(t, EM_SHAPE(12));
  assert_shape(r, EM_SHAPE(12), "reshape of transpose");
  cr_assert(!em_shares_storage(a, r), "a non-contiguous input must be copied");
  for (int64_t k = 0; k < 12; k++) cr_assert_eq(em_get(r, k), (double)(4 * (k % 3) + k / 3));
  /* A sliced view that is still contiguous (rows 1..2) reshapes as a view at its offset. */
  em_tensor *rows = em_narrow(a, 0, 1, 2);
  em_tensor *rv = em_reshape(rows, EM_SHAPE(8));
  cr_assert(em_shares_storage(a, rv));
  for (int64_t k = 0; k < 8; k++) cr_assert_eq(em_get(rv, k), (double)(4 + k));
  TU_END;
}

/* A strided view reshapes as a view when each run of its dims that lie evenly apart maps onto a
 * run of the new dims (torch's view rule); otherwise it is copied. */
Test(shape, reshape_of_strided_view_as_view_when_strides_allow) {
  TU_BEGIN;
  /* attention's split: the middle column block of (N, T, 3C), its last dim split into (H, D) */
  em_tensor *a = arange(EM_SHAPE(2, 3, 12)); /* a[n][t][c] = 36n + 12t + c */
  em_tensor *block = em_narrow(a, 2, 4, 4);
  em_tensor *r = em_reshape(block, EM_SHAPE(2, 3, 2, 2));
  assert_shape(r, EM_SHAPE(2, 3, 2, 2), "split of a column block");
  cr_assert(em_shares_storage(a, r), "a column block splits without a copy");
  cr_assert(!em_is_contiguous(r));
  for (int64_t k = 0; k < 24; k++) {
    int64_t n = k / 12, t = k / 4 % 3, h = k / 2 % 2, d = k % 2;
    cr_assert_eq(em_get(r, k), (double)(36 * n + 12 * t + 4 + 2 * h + d), "element %lld",
                 (long long)k);
  }
  em_set(r, 23, -1.0); /* n 1, t 2, h 1, d 1: a[1][2][7] */
  cr_assert_eq(em_get(a, 36 + 24 + 7), -1.0);
  /* merging the two leading dims of the block (their strides are 36 and 12: evenly apart) */
  em_tensor *m = em_reshape(block, EM_SHAPE(6, 4));
  cr_assert(em_shares_storage(a, m));
  for (int64_t k = 0; k < 24; k++)
    if (k != 23) cr_assert_eq(em_get(m, k), (double)(12 * (k / 4) + 4 + k % 4));
  /* a transposed tensor: split dims and size-1 dims are views, merging across the transpose is
   * a copy */
  em_tensor *b = arange(EM_SHAPE(3, 4, 5));
  em_tensor *bt = em_transpose(b, 0, 1); /* (4, 3, 5), bt[i][j][k] = 20j + 5i + k */
  em_tensor *split = em_reshape(bt, EM_SHAPE(2, 2, 1, 3, 5, 1));
  cr_assert(em_shares_storage(b, split));
  em_tensor *merged = em_reshape(bt, EM_SHAPE(4, 15));
  cr_assert(!em_shares_storage(b, merged));
  for (int64_t k = 0; k < 60; k++) {
    double want = 20 * (k / 5 % 3) + 5 * (k / 15) + k % 5;
    cr_assert_eq(em_get(split, k), want, "split element %lld", (long long)k);
    cr_assert_eq(em_get(merged, k), want, "merged element %lld", (long long)k);
  }
  TU_END;
}

Test(shape, reshape_errors) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(2, 3));
  tu_assert_error(em_reshape(a, EM_SHAPE(4, 2)), "[2, 3]", "[4, 2]");
  tu_assert_error(em_reshape(a, EM_SHAPE(-1, -1)), "reshape", "only one dimension may be -1");
  tu_assert_error(em_reshape(a, EM_SHAPE(4, -1)), "[2, 3]", "[4, -1]");
  tu_assert_error(em_reshape(a, EM_SHAPE(-2, 3)), "[-2, 3]", "negative");
  em_tensor *empty = em_zeros(EM_F32, EM_SHAPE(0, 3));
  tu_assert_error(em_reshape(empty, EM_SHAPE(0, -1)), "[0, 3]", "[0, -1]");
  /* NULL input propagates and keeps the first error. */
  em_set_error(EM_ERR_INVALID, "first failure");
  cr_assert_null(em_reshape(NULL, EM_SHAPE(2)));
  cr_assert_str_eq(em_last_error(), "first failure");
  em_clear_error();
  tu_assert_error(em_flatten(NULL, 0, -1), "flatten", "NULL");
  TU_END;
}

Test(shape, flatten) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(2, 3, 4, 5));
  assert_shape(em_flatten(a, 1, 2), EM_SHAPE(2, 12, 5), "flatten 1..2");
  assert_shape(em_flatten(a, 0, -1), EM_SHAPE(120), "flatten all");
  assert_shape(em_flatten(a, -2, -1), EM_SHAPE(2, 3, 20), "flatten -2..-1");
  assert_shape(em_flatten(a, 2, 2), EM_SHAPE(2, 3, 4, 5), "flatten one dim");
  em_tensor *f = em_flatten(a, 1, -1);
  cr_assert(em_shares_storage(a, f));
  for (int64_t i = 0; i < 120; i++) cr_assert_eq(em_get(f, i), (double)i);
  assert_shape(em_flatten(em_scalar(2.0f), 0, -1), EM_SHAPE(1), "flatten 0-d");
  tu_assert_error(em_flatten(a, 2, 1), "flatten", "[2, 3, 4, 5]");
  tu_assert_error(em_flatten(a, 0, 4), "flatten: dim 4", "[2, 3, 4, 5]");
  TU_END;
}

/* ---- transpose and permute --------------------------------------------------------------- */
Test(shape, transpose_values) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(2, 3, 4));
  em_tensor *t = em_transpose(a, 0, -1); /* (4, 3, 2): t[i][j][k] = a[k][j][i] */
  assert_shape(t, EM_SHAPE(4, 3, 2), "transpose 0,-1");
  cr_assert(em_shares_storage(a, t));
  cr_assert(!em_is_contiguous(t));
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++)
      for (int k = 0; k < 2; k++)
        cr_assert_eq(em_get(t, (i * 3 + j) * 2 + k), (double)(k * 12 + j * 4 + i));
  em_tensor *back = em_transpose(t, 2, 0);
  cr_assert(em_is_contiguous(back), "transposing twice gives back the contiguous layout");
  em_tensor *same = em_transpose(a, 1, 1);
  assert_shape(same, EM_SHAPE(2, 3, 4), "transpose d, d");
  tu_assert_error(em_transpose(a, 0, 3), "transpose: dim 3", "[2, 3, 4]");
  TU_END;
}

Test(shape, permute_values) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(2, 3, 4));
  em_tensor *p = em_permute(a, (const int[]){1, 2, 0}); /* (3, 4, 2): p[i][j][k] = a[k][i][j] */
  assert_shape(p, EM_SHAPE(3, 4, 2), "permute 1,2,0");
  cr_assert(em_shares_storage(a, p));
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++)
      for (int k = 0; k < 2; k++)
        cr_assert_eq(em_get(p, (i * 4 + j) * 2 + k), (double)(k * 12 + i * 4 + j));
  em_tensor *q = em_permute(a, (const int[]){-1, 0, 1});
  assert_shape(q, EM_SHAPE(4, 2, 3), "permute -1,0,1");
  tu_assert_error(em_permute(a, (const int[]){0, 0, 1}), "repeated", "[2, 3, 4]");
  tu_assert_error(em_permute(a, (const int[]){0, 1, 3}), "out of range", "[2, 3, 4]");
  TU_END;
}

/* ---- slice and narrow -------------------------------------------------------------------- */
Test(shape, slice_values) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(4, 10));
  em_tensor *s = em_slice(a, 1, 1, 8, 3); /* columns 1, 4, 7 */
  assert_shape(s, EM_SHAPE(4, 3), "slice 1:8:3");
  cr_assert(em_shares_storage(a, s));
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++) cr_assert_eq(em_get(s, i * 3 + j), (double)(i * 10 + 1 + 3 * j));
  em_set(s, 4, 100.0); /* s[1][1] = a[1][4] */
  cr_assert_eq(em_get(a, 14), 100.0);
  /* Negative start/end count from the end; end is clamped. */
  em_tensor *t = em_slice(a, -1, -3, 1000, 1); /* columns 7, 8, 9 */
  assert_shape(t, EM_SHAPE(4, 3), "slice -3:1000");
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++) cr_assert_eq(em_get(t, i * 3 + j), (double)(i * 10 + 7 + j));
  em_tensor *u = em_slice(a, 0, 1, -1, 2); /* rows 1 (end -1 = 3, exclusive) */
  assert_shape(u, EM_SHAPE(1, 10), "slice 1:-1:2");
  cr_assert_eq(em_get(u, 0), 10.0);
  assert_shape(em_slice(a, 0, 3, 2, 1), EM_SHAPE(0, 10), "empty slice (end < start)");
  assert_shape(em_slice(a, 0, 50, 60, 1), EM_SHAPE(0, 10), "empty slice (start past end)");
  /* A slice of a transpose: views compose. */
  em_tensor *v = em_slice(em_transpose(a, 0, 1), 0, 2, 10, 4); /* (2, 4): rows 2, 6 of a^T */
  assert_shape(v, EM_SHAPE(2, 4), "slice of transpose");
  cr_assert(em_shares_storage(a, v));
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 4; j++) cr_assert_eq(em_get(v, i * 4 + j), em_get(a, j * 10 + 2 + 4 * i));
  tu_assert_error(em_slice(a, 1, 0, 5, 0), "step 0", "[4, 10]");
  tu_assert_error(em_slice(a, 2, 0, 5, 1), "slice: dim 2", "[4, 10]");
  tu_assert_error(em_slice(em_scalar(1), 0, 0, 1, 1), "slice", "[]");
  TU_END;
}

Test(shape, narrow_values) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(3, 5));
  em_tensor *n = em_narrow(a, 1, 1, 3);
  assert_shape(n, EM_SHAPE(3, 3), "narrow");
  cr_assert(em_shares_storage(a, n));
  cr_assert_eq(n->offset, a->offset + 1);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) cr_assert_eq(em_get(n, i * 3 + j), (double)(i * 5 + 1 + j));
  em_tensor *m = em_narrow(a, 0, -1, 1); /* the last row */
  assert_shape(m, EM_SHAPE(1, 5), "narrow -1");
  cr_assert_eq(em_get(m, 0), 10.0);
  assert_shape(em_narrow(a, 1, 5, 0), EM_SHAPE(3, 0), "narrow to nothing");
  tu_assert_error(em_narrow(a, 1, 3, 3), "length 3", "[3, 5]");
  tu_assert_error(em_narrow(a, 0, -4, 1), "start -4", "[3, 5]");
  tu_assert_error(em_narrow(a, 0, 0, -1), "length -1", "[3, 5]");
  TU_END;
}

/* Storage outlives the base tensor as long as a view holds it. */
Test(shape, view_keeps_storage_alive) {
  int64_t live0 = em_live_tensors();
  em_tensor *a = arange(EM_SHAPE(4, 4)); /* outside scopes: owned by us */
  em_tensor *v = em_narrow(a, 0, 2, 2);
  em_release(a);
  cr_assert_eq(em_get(v, 0), 8.0);
  cr_assert_eq(em_get(v, 7), 15.0);
  em_release(v);
  cr_assert_eq(em_live_tensors(), live0);
}

/* ---- contiguous and clone ---------------------------------------------------------------- */
Test(shape, contiguous_and_clone) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(3, 4));
  em_tensor *c = em_contiguous(a);
  cr_assert_eq(c, a, "contiguous of a contiguous tensor is the tensor itself");
  em_tensor *t = em_transpose(a, 0, 1);
  em_tensor *tc = em_contiguous(t);
  cr_assert(tc != t && em_is_contiguous(tc) && !em_shares_storage(tc, a));
  for (int64_t k = 0; k < 12; k++) cr_assert_eq(em_get(tc, k), em_get(t, k));
  em_tensor *cl = em_clone(a);
  cr_assert(cl != a && !em_shares_storage(cl, a));
  for (int64_t k = 0; k < 12; k++) cr_assert_eq(em_get(cl, k), (double)k);
  em_set(cl, 0, 42.0);
  cr_assert_eq(em_get(a, 0), 0.0, "a clone does not alias its source");
  em_tensor *ci = em_clone(em_from_data(EM_I64, EM_SHAPE(3), (const int64_t[]){7, -8, 9}));
  cr_assert_eq(ci->dtype, EM_I64);
  cr_assert_eq(em_get(ci, 1), -8.0);
  TU_END;
}

/* Outside scopes em_contiguous hands out a new reference: releasing it keeps the input alive. */
Test(shape, contiguous_reference_outside_scope) {
  int64_t live0 = em_live_tensors();
  em_tensor *a = arange(EM_SHAPE(2, 2));
  em_tensor *c = em_contiguous(a);
  cr_assert_eq(c, a);
  em_release(c);
  cr_assert_eq(em_get(a, 3), 3.0);
  em_release(a);
  cr_assert_eq(em_live_tensors(), live0);
}

/* ---- concat and stack -------------------------------------------------------------------- */
Test(shape, concat_values) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(2, 3));
  em_tensor *b = em_full(EM_F32, EM_SHAPE(2, 2), -1.0);
  em_tensor *c = em_concat(2, (em_tensor *[]){a, b}, -1);
  assert_shape(c, EM_SHAPE(2, 5), "concat dim -1");
  double ref1[] = {0, 1, 2, -1, -1, 3, 4, 5, -1, -1};
  tu_assert_close(c, ref1, 10, 0, 0, "concat dim 1");
  em_tensor *d = em_concat(3, (em_tensor *[]){a, a, em_transpose(a, 0, 1)}, 0);
  cr_assert_null(d, "(2, 3) and (3, 2) do not concatenate along dim 0");
  tu_assert_error(d, "tensor 2", "[3, 2]");
  em_tensor *e = em_concat(2, (em_tensor *[]){a, em_slice(arange(EM_SHAPE(2, 3)), 0, 1, 2, 1)}, 0);
  assert_shape(e, EM_SHAPE(3, 3), "concat with a view");
  double ref2[] = {0, 1, 2, 3, 4, 5, 3, 4, 5};
  tu_assert_close(e, ref2, 9, 0, 0, "concat dim 0");
  cr_assert(!em_shares_storage(e, a));
  /* Integer dtypes are copied too. */
  em_tensor *i1 = em_from_data(EM_I64, EM_SHAPE(2), (const int64_t[]){1, 2});
  em_tensor *i2 = em_from_data(EM_I64, EM_SHAPE(1), (const int64_t[]){3});
  em_tensor *ic = em_concat(2, (em_tensor *[]){i1, i2}, 0);
  cr_assert_eq(ic->dtype, EM_I64);
  double ref3[] = {1, 2, 3};
  tu_assert_close(ic, ref3, 3, 0, 0, "concat i64");
  em_tensor *col = em_from_data(EM_I64, EM_SHAPE(2, 1), (const int64_t[]){1, 2});
  tu_assert_error(em_concat(2, (em_tensor *[]){a, col}, 1), "i64 [2, 1]", "f32 [2, 3]");
  tu_assert_error(em_concat(0, (em_tensor *[]){a}, 0), "concat", "at least one");
  tu_assert_error(em_concat(1, (em_tensor *[]){em_scalar(1)}, 0), "concat", "0-d");
  tu_assert_error(em_concat(2, (em_tensor *[]){a, NULL}, 0), "concat", "NULL");
  TU_END;
}

Test(shape, stack_values) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(2, 3));
  em_tensor *b = em_full(EM_F32, EM_SHAPE(2, 3), 9.0);
  em_tensor *s0 = em_stack(2, (em_tensor *[]){a, b}, 0);
  assert_shape(s0, EM_SHAPE(2, 2, 3), "stack dim 0");
  double ref0[] = {0, 1, 2, 3, 4, 5, 9, 9, 9, 9, 9, 9};
  tu_assert_close(s0, ref0, 12, 0, 0, "stack dim 0");
  em_tensor *s2 = em_stack(2, (em_tensor *[]){a, b}, -1);
  assert_shape(s2, EM_SHAPE(2, 3, 2), "stack dim -1");
  double ref2[] = {0, 9, 1, 9, 2, 9, 3, 9, 4, 9, 5, 9};
  tu_assert_close(s2, ref2, 12, 0, 0, "stack dim -1");
  em_tensor *s1 = em_stack(3, (em_tensor *[]){a, b, a}, 1);
  assert_shape(s1, EM_SHAPE(2, 3, 3), "stack dim 1");
  for (int i = 0; i < 2; i++)
    for (int k = 0; k < 3; k++)
      for (int j = 0; j < 3; j++)
        cr_assert_eq(em_get(s1, (i * 3 + k) * 3 + j), k == 1 ? 9.0 : (double)(i * 3 + j));
  em_tensor *sc = em_stack(2, (em_tensor *[]){em_scalar(1), em_scalar(2)}, 0);
  assert_shape(sc, EM_SHAPE(2), "stack of scalars");
  tu_assert_error(em_stack(2, (em_tensor *[]){a, em_zeros(EM_F32, EM_SHAPE(3, 2))}, 0), "[3, 2]",
                  "[2, 3]");
  tu_assert_error(em_stack(2, (em_tensor *[]){a, b}, 3), "stack: dim 3", "[2, 3]");
  TU_END;
}

/* ---- index_select ------------------------------------------------------------------------ */
Test(shape, index_select_values) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(3, 4, 2));
  em_tensor *i64 = em_from_data(EM_I64, EM_SHAPE(5), (const int64_t[]){3, 0, 3, 1, 2});
  em_tensor *s = em_index_select(a, 1, i64);
  assert_shape(s, EM_SHAPE(3, 5, 2), "index_select dim 1");
  const int64_t ix[] = {3, 0, 3, 1, 2};
  for (int o = 0; o < 3; o++)
    for (int j = 0; j < 5; j++)
      for (int i = 0; i < 2; i++)
        cr_assert_eq(em_get(s, (o * 5 + j) * 2 + i), (double)((o * 4 + ix[j]) * 2 + i));
  em_tensor *i32 = em_from_data(EM_I32, EM_SHAPE(2), (const int32_t[]){2, 2});
  em_tensor *r = em_index_select(em_transpose(a, 0, 2), -1, i32); /* (2, 4, 3) -> (2, 4, 2) */
  assert_shape(r, EM_SHAPE(2, 4, 2), "index_select of a view, i32 index");
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 4; j++)
      for (int k = 0; k < 2; k++)
        cr_assert_eq(em_get(r, (i * 4 + j) * 2 + k), (double)((2 * 4 + j) * 2 + i));
  em_tensor *none = em_index_select(a, 0, em_zeros(EM_I64, EM_SHAPE(0)));
  assert_shape(none, EM_SHAPE(0, 4, 2), "empty index");
  em_tensor *ints = em_from_data(EM_I32, EM_SHAPE(3), (const int32_t[]){10, 20, 30});
  em_tensor *pick = em_from_data(EM_I64, EM_SHAPE(2), (const int64_t[]){2, 0});
  em_tensor *ri = em_index_select(ints, 0, pick);
  cr_assert_eq(ri->dtype, EM_I32);
  cr_assert(em_get(ri, 0) == 30 && em_get(ri, 1) == 10);
  TU_END;
}

Test(shape, index_select_errors) {
  TU_BEGIN;
  em_tensor *a = arange(EM_SHAPE(3, 4));
  em_tensor *bad = em_from_data(EM_I64, EM_SHAPE(3), (const int64_t[]){0, 4, 1});
  tu_assert_error(em_index_select(a, 1, bad), "index 4 at position 1", "[3, 4]");
  em_tensor *neg = em_from_data(EM_I32, EM_SHAPE(2), (const int32_t[]){0, -1});
  tu_assert_error(em_index_select(a, 0, neg), "index -1 at position 1", "[0, 3)");
  em_tensor *two_d = em_zeros(EM_I64, EM_SHAPE(1, 2));
  tu_assert_error(em_index_select(a, 0, two_d), "index [1, 2]", "input [3, 4]");
  tu_assert_error(em_index_select(a, 0, em_zeros(EM_F32, EM_SHAPE(2))), "i64 or i32", "f32");
  tu_assert_error(em_index_select(a, 2, em_zeros(EM_I64, EM_SHAPE(2))), "index_select: dim 2",
                  "[3, 4]");
  tu_assert_error(em_index_select(a, 0, NULL), "index_select", "NULL");
  TU_END;
}

/* ---- gradients --------------------------------------------------------------------------- */
typedef struct {
  int kind;
} gctx;

/* Each case applies a chain of views or copies and then a nonlinearity-free weighting (done by
 * tu_gradcheck); squaring the result makes the gradient depend on where each value went. */
static em_tensor *sq(em_tensor *t) { return em_mul(t, t); }

static em_tensor *f_views(em_tensor **in, void *ctx) {
  em_tensor *a = in[0]; /* (3, 4, 5) */
  switch (((gctx *)ctx)->kind) {
  case 0: return sq(em_reshape(a, EM_SHAPE(-1, 6)));
  case 1: return sq(em_reshape(em_transpose(a, 0, 2), EM_SHAPE(5, 12))); /* copy path */
  case 2: return sq(em_flatten(a, 0, 1));
  case 3: return sq(em_transpose(a, 1, 2));
  case 4: return sq(em_permute(a, (const int[]){2, 0, 1}));
  case 5: return sq(em_slice(a, 2, 1, 5, 2));
  case 6: return sq(em_slice(em_transpose(a, 0, 1), 1, -2, 100, 1));
  case 7: return sq(em_narrow(a, 1, 1, 2));
  case 8: return sq(em_contiguous(em_transpose(a, 0, 2)));
  case 9: return sq(em_clone(em_narrow(a, 2, 0, 3)));
  case 10: return sq(em_reshape(em_narrow(a, 2, 1, 4), EM_SHAPE(3, 4, 2, 2))); /* strided view */
  case 11: return sq(em_reshape(em_transpose(a, 0, 1), EM_SHAPE(2, 2, 3, 5)));
  /* A value used twice through two overlapping views: gradients add up. */
  default: return em_add(sq(em_narrow(a, 2, 0, 3)), em_narrow(a, 2, 2, 3));
  }
}

Test(shape, gradcheck_views_and_copies) {
  TU_BEGIN;
  em_rng r = em_rng_new(11);
  em_tensor *a = tu_rand(&r, EM_SHAPE(3, 4, 5), -1, 1, true);
  static const char *names[] = {"reshape",    "reshape (copy)", "flatten",         "transpose",
                                "permute",    "slice step 2",   "slice neg",       "narrow",
                                "contiguous", "clone",          "reshape strided", "reshape split",
                                "overlapping"};
  for (int k = 0; k <= 12; k++) {
    gctx c = {k};
    tu_gradcheck(f_views, 1, &a, &c, 1e-2, 2e-3, names[k]);
  }
  TU_END;
}

static em_tensor *f_join(em_tensor **in, void *ctx) {
  switch (((gctx *)ctx)->kind) {
  case 0: return sq(em_concat(3, (em_tensor *[]){in[0], in[1], in[2]}, 1));
  case 1: return sq(em_concat(3, (em_tensor *[]){in[0], in[2], in[0]}, 0)); /* in[0] twice */
  case 2: return sq(em_stack(2, (em_tensor *[]){in[0], in[2]}, 1));
  default: return sq(em_stack(3, (em_tensor *[]){in[2], in[0], in[2]}, 2));
  }
}

Test(shape, gradcheck_concat_stack) {
  TU_BEGIN;
  em_rng r = em_rng_new(12);
  em_tensor *in[3] = {tu_rand(&r, EM_SHAPE(2, 3), -1, 1, true),
                      tu_rand(&r, EM_SHAPE(2, 1), -1, 1, false), /* no gradient wanted */
                      tu_rand(&r, EM_SHAPE(2, 3), -1, 1, true)};
  static const char *names[] = {"concat dim 1", "concat same tensor", "stack dim 1", "stack dim 2"};
  for (int k = 0; k < 4; k++) {
    gctx c = {k};
    tu_gradcheck(f_join, 3, in, &c, 1e-2, 2e-3, names[k]);
  }
  cr_assert_null(in[1]->grad, "an input without requires_grad gets no gradient");
  TU_END;
}

static em_tensor *f_index(em_tensor **in, void *ctx) {
  em_tensor *idx = ctx;
  return sq(em_index_select(in[0], 1, idx));
}

Test(shape, gradcheck_index_select) {
  TU_BEGIN;
  em_rng r = em_rng_new(13);
  em_tensor *a = tu_rand(&r, EM_SHAPE(2, 4, 3), -1, 1, true);
  em_tensor *idx = em_from_data(EM_I32, EM_SHAPE(5), (const int32_t[]){1, 3, 1, 1, 0});
  tu_gradcheck(f_index, 1, &a, idx, 1e-2, 2e-3, "index_select repeated");
  /* Exact scatter-add: d sum(index_select(a)) / da counts how often each row was picked. */
  em_set_grad(a, NULL);
  em_tensor *loss = em_sum(em_index_select(a, 1, idx), 0, NULL, false);
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  const double count[4] = {1, 3, 0, 1};
  for (int o = 0; o < 2; o++)
    for (int j = 0; j < 4; j++)
      for (int i = 0; i < 3; i++) cr_assert_eq(em_get(a->grad, (o * 4 + j) * 3 + i), count[j]);
  TU_END;
}

/* The gradient of a view is exactly the output gradient put back in place, zeros elsewhere. */
Test(shape, view_gradient_exact) {
  TU_BEGIN;
  em_tensor *a = em_zeros(EM_F32, EM_SHAPE(3, 6));
  em_set_requires_grad(a, true);
  em_tensor *v = em_slice(em_transpose(a, 0, 1), 0, 1, 6, 2); /* a^T rows 1, 3, 5: (3, 3) */
  em_tensor *w = arange(EM_SHAPE(3, 3));
  em_tensor *loss = em_sum(em_mul(v, w), 0, NULL, false);
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 6; j++) {
      /* a[i][j] = v[(j - 1) / 2][i] when j is odd. */
      double ref = j % 2 ? (double)((j - 1) / 2 * 3 + i) : 0.0;
      cr_assert_eq(em_get(a->grad, i * 6 + j), ref, "grad[%d][%d]", i, j);
    }
  TU_END;
}
