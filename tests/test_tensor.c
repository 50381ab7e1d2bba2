/* test_tensor.c: the core of em_core.h: creation, element access for every dtype, strides and
 * contiguity, 64-byte alignment, reference counting, views keeping storage alive, scopes, error
 * messages, requires_grad/set_grad checks, names, shape strings and the random generator.
 *
 * Every test checks that em_live_tensors is back to its starting value at the end. */
#include "testutil.h"

#include <math.h>
#include <string.h>

static bool aligned64(const void *p) { return ((uintptr_t)p & 63u) == 0; }

/* ---- creation ---------------------------------------------------------------------------- */
Test(tensor, dtypes) {
  cr_assert_eq(em_dtype_size(EM_F32), 4);
  cr_assert_eq(em_dtype_size(EM_I64), 8);
  cr_assert_eq(em_dtype_size(EM_I32), 4);
  cr_assert_eq(em_dtype_size(EM_U8), 1);
  cr_assert_eq(em_dtype_size(EM_BF16), 2);
  cr_assert_eq(em_dtype_size(EM_F16), 2);
  cr_assert_eq(em_dtype_size((em_dtype)99), 0);
  cr_assert_str_eq(em_dtype_name(EM_F32), "f32");
  cr_assert_str_eq(em_dtype_name(EM_I64), "i64");
  cr_assert_str_eq(em_dtype_name(EM_U8), "u8");
  cr_assert_str_eq(em_dtype_name(EM_BF16), "bf16");
  cr_assert_str_eq(em_dtype_name((em_dtype)-1), "?");
}

Test(tensor, creation_shapes_and_values) {
  TU_BEGIN;
  em_tensor *e = em_empty(EM_F32, EM_SHAPE(2, 3, 4));
  cr_assert_not_null(e, "%s", em_last_error());
  cr_assert_eq(e->ndim, 3);
  cr_assert(e->shape[0] == 2 && e->shape[1] == 3 && e->shape[2] == 4);
  cr_assert(e->strides[0] == 12 && e->strides[1] == 4 && e->strides[2] == 1);
  cr_assert_eq(e->offset, 0);
  cr_assert_eq(em_numel(e), 24);
  cr_assert(!e->requires_grad && !e->grad && !e->grad_fn);
  cr_assert_eq(e->device.kind, EM_CPU);
  em_tensor *z = em_zeros(EM_I64, EM_SHAPE(5, 7));
  for (int64_t i = 0; i < 35; i++) cr_assert_eq(em_get(z, i), 0.0);
  const em_dtype dts[] = {EM_F32, EM_I64, EM_I32, EM_U8};
  for (int k = 0; k < 4; k++) {
    em_tensor *f = em_full(dts[k], EM_SHAPE(3, 3), 7.0);
    cr_assert_eq(f->dtype, dts[k]);
    for (int64_t i = 0; i < 9; i++) cr_assert_eq(em_get(f, i), 7.0, "%s", em_dtype_name(dts[k]));
  }
  const int32_t v[6] = {1, -2, 3, -4, 5, -6};
  em_tensor *d = em_from_data(EM_I32, EM_SHAPE(3, 2), v);
  for (int64_t i = 0; i < 6; i++) cr_assert_eq(em_get(d, i), (double)v[i]);
  cr_assert(memcmp(em_data(d), v, sizeof v) == 0);
  em_tensor *s = em_scalar(2.5f);
  cr_assert(s->ndim == 0 && em_numel(s) == 1 && em_get(s, 0) == 2.5);
  cr_assert(em_is_contiguous(s));
  em_tensor *zero = em_zeros(EM_F32, EM_SHAPE(3, 0, 2));
  cr_assert_not_null(zero, "%s", em_last_error());
  cr_assert_eq(em_numel(zero), 0);
  cr_assert_not_null(em_from_data(EM_F32, EM_SHAPE(0), NULL), "no data needed for no elements");
  cr_assert_eq(em_numel(NULL), 0);
  TU_END;
}

Test(tensor, creation_errors) {
  TU_BEGIN;
  tu_assert_error(em_empty(EM_F32, EM_SHAPE(2, -3)), "negative size -3", "dimension 1");
  int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  tu_assert_error(em_zeros(EM_F32, 9, nine), "9 dimensions", "at most 8");
  tu_assert_error(em_empty((em_dtype)42, EM_SHAPE(2)), "unknown dtype 42", NULL);
  tu_assert_error(em_empty(EM_F32, EM_SHAPE(1LL << 40, 1LL << 40)), "too large", NULL);
  tu_assert_error(em_from_data(EM_F32, EM_SHAPE(2), NULL), "from_data", "NULL");
  TU_END;
}

/* ---- element access ---------------------------------------------------------------------- */
Test(tensor, get_set_every_dtype) {
  TU_BEGIN;
  em_tensor *f = em_zeros(EM_F32, EM_SHAPE(2, 2));
  em_set(f, 3, 1.5);
  em_set(f, 1, 0.1); /* stored as float, read back as that float */
  cr_assert_eq(em_get(f, 3), 1.5);
  cr_assert_eq(em_get(f, 1), (double)0.1f);
  cr_assert_eq(em_data_f32(f)[3], 1.5f);
  em_tensor *l = em_zeros(EM_I64, EM_SHAPE(3));
  em_set(l, 0, 1099511627777.0); /* 2^40 + 1: needs 64 bits */
  em_set(l, 2, -5.0);
  cr_assert_eq(((int64_t *)em_data(l))[0], 1099511627777LL);
  cr_assert_eq(em_get(l, 0), 1099511627777.0);
  cr_assert_eq(em_get(l, 2), -5.0);
  em_set(l, 1, 3.9); /* truncates toward zero as a C cast */
  cr_assert_eq(em_get(l, 1), 3.0);
  em_tensor *i = em_zeros(EM_I32, EM_SHAPE(2));
  em_set(i, 1, -2147483648.0);
  cr_assert_eq(((int32_t *)em_data(i))[1], INT32_MIN);
  cr_assert_eq(em_get(i, 1), -2147483648.0);
  em_tensor *u = em_zeros(EM_U8, EM_SHAPE(4));
  em_set(u, 2, 255.0);
  cr_assert_eq(((uint8_t *)em_data(u))[2], 255);
  cr_assert_eq(em_get(u, 2), 255.0);
  cr_assert_eq(em_get(u, 1), 0.0);
  /* Storage-only dtypes (no op kernels yet) convert on element access. bf16 is the high half of
   * an f32, rounded to nearest even: 1 + 2^-8 is exactly halfway and rounds to 1; 1 + 3 * 2^-8
   * rounds up to 1 + 2^-6. f16 keeps 11 significant bits. */
  em_tensor *h = em_zeros(EM_BF16, EM_SHAPE(3));
  cr_assert_not_null(h, "%s", em_last_error());
  cr_assert(aligned64(em_data(h)));
  cr_assert_eq(em_get(h, 0), 0.0);
  em_set(h, 0, -2.5);
  em_set(h, 1, 1.0 + 1.0 / 256);
  em_set(h, 2, 1.0 + 3.0 / 256);
  cr_assert_eq(((uint16_t *)em_data(h))[0], 0xC020, "bf16 bits of -2.5");
  cr_assert_eq(em_get(h, 0), -2.5);
  cr_assert_eq(em_get(h, 1), 1.0);
  cr_assert_eq(em_get(h, 2), 1.0 + 1.0 / 64);
  em_tensor *f16 = em_zeros(EM_F16, EM_SHAPE(2));
  em_set(f16, 0, 0.1);
  em_set(f16, 1, 65504.0);
  cr_assert_eq(((uint16_t *)em_data(f16))[1], 0x7BFF, "f16 bits of its largest finite value");
  cr_assert_float_eq(em_get(f16, 0), 0.0999755859375, 1e-12);
  TU_END;
}

Test(tensor, get_set_follow_strides) {
  TU_BEGIN;
  em_tensor *a = em_zeros(EM_F32, EM_SHAPE(3, 4));
  for (int64_t k = 0; k < 12; k++) em_set(a, k, (double)k);
  em_tensor *t = em_transpose(a, 0, 1); /* (4, 3), strides (1, 4) */
  cr_assert(t->strides[0] == 1 && t->strides[1] == 4);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++) cr_assert_eq(em_get(t, i * 3 + j), (double)(j * 4 + i));
  em_set(t, 1, -1.0); /* t[0][1] = a[1][0] */
  cr_assert_eq(em_get(a, 4), -1.0);
  em_tensor *n = em_narrow(a, 1, 2, 2); /* offset 2 */
  cr_assert_eq(n->offset, 2);
  cr_assert_eq(em_data_f32(n), em_data_f32(a) + 2);
  cr_assert_eq(em_get(n, 3), 7.0);
  TU_END;
}

/* ---- strides, contiguity, alignment ------------------------------------------------------ */
Test(tensor, contiguity) {
  TU_BEGIN;
  em_tensor *a = em_zeros(EM_F32, EM_SHAPE(2, 3, 4));
  cr_assert(em_is_contiguous(a));
  cr_assert(!em_is_contiguous(em_transpose(a, 1, 2)));
  cr_assert(!em_is_contiguous(em_narrow(a, 2, 0, 2)), "a column range is strided");
  cr_assert(em_is_contiguous(em_narrow(a, 0, 1, 1)), "a leading range is contiguous");
  cr_assert(!em_is_contiguous(em_slice(em_zeros(EM_F32, EM_SHAPE(4, 3)), 0, 0, 4, 2)),
            "every other row is strided");
  /* Size-1 dims may have any stride: moving one keeps the layout contiguous. */
  em_tensor *b = em_transpose(em_zeros(EM_F32, EM_SHAPE(3, 1, 4)), 1, 2); /* (3, 4, 1) */
  cr_assert(b->strides[2] == 4 && em_is_contiguous(b));
  cr_assert(em_is_contiguous(em_slice(a, 0, 0, 2, 2)), "(1, 3, 4) with stride 24 on dim 0");
  cr_assert(em_is_contiguous(em_transpose(em_zeros(EM_F32, EM_SHAPE(1, 5)), 0, 1)),
            "(1, 5) transposed to (5, 1) is still contiguous");
  em_tensor *e = em_zeros(EM_F32, EM_SHAPE(0, 3));
  cr_assert(em_is_contiguous(e));
  TU_END;
}

Test(tensor, alignment_64_bytes) {
  TU_BEGIN;
  const em_dtype dts[] = {EM_F32, EM_I64, EM_I32, EM_U8, EM_BF16, EM_F16};
  const int64_t sizes[] = {0, 1, 3, 17, 64, 1000, 4097};
  for (int k = 0; k < 6; k++)
    for (int s = 0; s < 7; s++) {
      em_tensor *t = em_empty(dts[k], 1, &sizes[s]);
      cr_assert_not_null(t, "%s", em_last_error());
      cr_assert(aligned64(em_data(t)), "%s (%lld) at %p", em_dtype_name(dts[k]),
                (long long)sizes[s], em_data(t));
      em_tensor *z = em_zeros(dts[k], 1, &sizes[s]);
      cr_assert(aligned64(em_data(z)));
    }
  cr_assert(aligned64(em_data(em_scalar(1))));
  cr_assert(aligned64(em_data(em_from_data(EM_U8, EM_SHAPE(3), (const uint8_t[]){1, 2, 3}))));
  TU_END;
}

/* ---- reference counting and views -------------------------------------------------------- */
Test(tensor, refcount_outside_scopes) {
  int64_t live0 = em_live_tensors();
  em_tensor *a = em_zeros(EM_F32, EM_SHAPE(4));
  cr_assert_eq(em_live_tensors(), live0 + 1);
  cr_assert_eq(em_retain(a), a);
  em_release(a);
  cr_assert_eq(em_live_tensors(), live0 + 1, "one reference left");
  em_set(a, 0, 5.0);
  cr_assert_eq(em_get(a, 0), 5.0);
  em_release(a);
  cr_assert_eq(em_live_tensors(), live0);
  cr_assert_null(em_retain(NULL));
  em_release(NULL);
}

Test(tensor, view_keeps_storage_alive) {
  int64_t live0 = em_live_tensors();
  em_tensor *a = em_full(EM_F32, EM_SHAPE(1000), 3.0);
  em_tensor *v = em_narrow(a, 0, 990, 10);
  em_tensor *d = em_detach(a);
  cr_assert(em_shares_storage(a, v) && em_shares_storage(a, d) && em_shares_storage(v, d));
  cr_assert(!em_shares_storage(a, NULL));
  em_release(a); /* the views still hold the storage: reading it must be valid (ASan) */
  cr_assert_eq(em_get(v, 9), 3.0);
  em_set(d, 995, 4.0);
  cr_assert_eq(em_get(v, 5), 4.0);
  em_release(d);
  cr_assert_eq(em_get(v, 5), 4.0);
  em_release(v);
  cr_assert_eq(em_live_tensors(), live0);
}

/* ---- scopes ------------------------------------------------------------------------------ */
Test(tensor, nested_scopes) {
  int64_t live0 = em_live_tensors();
  em_scope outer = em_scope_begin();
  em_tensor *a = em_zeros(EM_F32, EM_SHAPE(2));
  em_scope inner = em_scope_begin();
  em_tensor *b = em_zeros(EM_F32, EM_SHAPE(2));
  em_tensor *c = em_zeros(EM_F32, EM_SHAPE(2));
  (void)b;
  cr_assert_eq(em_live_tensors(), live0 + 3);
  em_retain(c); /* c survives the inner scope */
  em_scope_end(inner);
  cr_assert_eq(em_live_tensors(), live0 + 2, "b freed, a and c alive");
  em_set(a, 1, 1.0);
  em_set(c, 1, 2.0);
  cr_assert_eq(em_get(c, 1), 2.0);
  em_scope inner2 = em_scope_begin();
  em_tensor *d = em_zeros(EM_F32, EM_SHAPE(2));
  em_scope inner3 = em_scope_begin();
  (void)em_zeros(EM_F32, EM_SHAPE(2));
  em_scope_end(inner3);
  cr_assert_eq(em_live_tensors(), live0 + 3);
  em_set(d, 0, 1.0);
  em_scope_end(inner2);
  cr_assert_eq(em_live_tensors(), live0 + 2);
  em_scope_end(outer);
  cr_assert_eq(em_live_tensors(), live0 + 1, "c is ours now");
  cr_assert_eq(em_get(c, 1), 2.0);
  em_release(c);
  cr_assert_eq(em_live_tensors(), live0);
}

Test(tensor, scope_owns_many_tensors) {
  int64_t live0 = em_live_tensors();
  em_scope s = em_scope_begin();
  for (int i = 0; i < 5000; i++) cr_assert_not_null(em_scalar((float)i));
  cr_assert_eq(em_live_tensors(), live0 + 5000);
  em_scope_end(s);
  cr_assert_eq(em_live_tensors(), live0);
  /* Scopes can be reopened after the stack was freed. */
  for (int k = 0; k < 3; k++) {
    em_scope t = em_scope_begin();
    em_zeros(EM_F32, EM_SHAPE(8));
    em_scope_end(t);
  }
  cr_assert_eq(em_live_tensors(), live0);
}

/* Suspended scopes: tensors made in between are the caller's and outlive the hidden scopes; a
 * scope opened while suspended works on its own; the hidden scopes resume as they were. */
Test(tensor, suspended_scopes_leave_tensors_to_the_caller) {
  int64_t live0 = em_live_tensors();
  em_scope outer = em_scope_begin();
  (void)em_full(EM_F32, EM_SHAPE(3), 1.0);
  em_scope_saved saved = em_scope_suspend();
  em_tensor *mine = em_full(EM_F32, EM_SHAPE(3), 7.0);
  em_scope inside = em_scope_begin();
  (void)em_zeros(EM_F32, EM_SHAPE(5));
  cr_assert_eq(em_live_tensors(), live0 + 3);
  em_scope_end(inside);
  cr_assert_eq(em_live_tensors(), live0 + 2, "the scope opened while suspended freed its own");
  em_scope_resume(saved);
  (void)em_zeros(EM_F32, EM_SHAPE(2)); /* the outer scope's again */
  cr_assert_eq(em_live_tensors(), live0 + 3);
  em_scope_end(outer);
  cr_assert_eq(em_live_tensors(), live0 + 1, "the outer scope's two freed, mine kept");
  for (int64_t i = 0; i < 3; i++) cr_assert_eq(em_get(mine, i), 7.0);
  em_release(mine);
  cr_assert_eq(em_live_tensors(), live0);
}

/* A view made in an inner scope of a base made in an outer one: storage lives with the view. */
Test(tensor, view_across_scopes) {
  int64_t live0 = em_live_tensors();
  em_tensor *kept;
  em_scope outer = em_scope_begin();
  em_tensor *base = em_full(EM_F32, EM_SHAPE(4, 4), 2.0);
  em_scope inner = em_scope_begin();
  kept = em_retain(em_transpose(base, 0, 1));
  em_scope_end(inner);
  em_scope_end(outer); /* base freed here */
  cr_assert_eq(em_live_tensors(), live0 + 1);
  for (int64_t i = 0; i < 16; i++) cr_assert_eq(em_get(kept, i), 2.0);
  em_release(kept);
  cr_assert_eq(em_live_tensors(), live0);
}

/* ---- errors ------------------------------------------------------------------------------ */
Test(tensor, error_messages) {
  em_clear_error();
  cr_assert_str_eq(em_last_error(), "");
  cr_assert_eq(em_last_status(), EM_OK);
  const struct {
    em_status s;
    const char *name;
  } all[] = {{EM_OK, "EM_OK"},
             {EM_ERR_INVALID, "EM_ERR_INVALID"},
             {EM_ERR_NOMEM, "EM_ERR_NOMEM"},
             {EM_ERR_IO, "EM_ERR_IO"},
             {EM_ERR_FORMAT, "EM_ERR_FORMAT"},
             {EM_ERR_UNSUPPORTED, "EM_ERR_UNSUPPORTED"},
             {EM_ERR_STATE, "EM_ERR_STATE"},
             {EM_ERR_BACKEND, "EM_ERR_BACKEND"},
             {EM_ERR_TIMEOUT, "EM_ERR_TIMEOUT"},
             {EM_ERR_COMM, "EM_ERR_COMM"}};
  for (size_t k = 0; k < sizeof all / sizeof *all; k++)
    cr_assert_str_eq(em_status_str(all[k].s), all[k].name);
  cr_assert_str_eq(em_status_str((em_status)-99), "EM_ERR_UNKNOWN");
  cr_assert_eq(em_set_error(EM_ERR_IO, "file %s at byte %d", "x.bin", 42), EM_ERR_IO);
  cr_assert_str_eq(em_last_error(), "file x.bin at byte 42");
  cr_assert_eq(em_last_status(), EM_ERR_IO);
  em_set_error(EM_ERR_FORMAT, "second");
  cr_assert_str_eq(em_last_error(), "second", "a new error overwrites the previous one");
  char big[2000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  em_set_error(EM_ERR_INVALID, "%s", big); /* truncated, not overflowing */
  cr_assert(strlen(em_last_error()) > 100 && strlen(em_last_error()) < sizeof big - 1);
  em_clear_error();
  cr_assert_str_eq(em_last_error(), "");
  cr_assert_eq(em_last_status(), EM_OK);
}

Test(tensor, shape_strings_and_names) {
  TU_BEGIN;
  char b[EM_SHAPE_STR_LEN];
  cr_assert_str_eq(em_shape_str(em_zeros(EM_F32, EM_SHAPE(2, 3)), b, sizeof b), "[2, 3]");
  cr_assert_str_eq(em_shape_str(em_scalar(1), b, sizeof b), "[]");
  cr_assert_str_eq(em_shape_str(NULL, b, sizeof b), "(null)");
  char small[6];
  em_shape_str(em_zeros(EM_F32, EM_SHAPE(1000, 1000, 7)), small, sizeof small);
  cr_assert_eq(strlen(small), 5, "truncated to the buffer");
  em_tensor *w = em_zeros(EM_F32, EM_SHAPE(2));
  cr_assert_str_eq(em_tensor_name(w), "");
  cr_assert_str_eq(em_tensor_name(NULL), "");
  char name[] = "fc1.weight";
  em_tensor_set_name(w, name);
  name[0] = 'X'; /* the name was copied */
  cr_assert_str_eq(em_tensor_name(w), "fc1.weight");
  em_tensor_set_name(w, "fc2.weight");
  cr_assert_str_eq(em_tensor_name(w), "fc2.weight");
  em_tensor_set_name(w, NULL);
  cr_assert_str_eq(em_tensor_name(w), "");
  TU_END;
}

/* ---- requires_grad and set_grad ---------------------------------------------------------- */
Test(tensor, requires_grad_checks) {
  TU_BEGIN;
  em_tensor *a = em_zeros(EM_F32, EM_SHAPE(2));
  cr_assert_eq(em_set_requires_grad(a, true), EM_OK);
  cr_assert(a->requires_grad);
  em_tensor *b = em_add(a, a);
  em_tensor_set_name(b, "sum2");
  cr_assert_eq(em_set_requires_grad(b, false), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "'sum2' is not a leaf") && strstr(em_last_error(), "add"), "%s",
            em_last_error());
  em_tensor *i = em_zeros(EM_I64, EM_SHAPE(2));
  cr_assert_eq(em_set_requires_grad(i, true), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "i64"), "%s", em_last_error());
  cr_assert_eq(em_set_requires_grad(i, false), EM_OK, "turning it off is always fine");
  cr_assert_eq(em_set_requires_grad(NULL, true), EM_ERR_INVALID);
  cr_assert_eq(em_set_requires_grad(a, false), EM_OK);
  cr_assert(!a->requires_grad);
  TU_END;
}

Test(tensor, set_grad_checks) {
  TU_BEGIN;
  em_tensor *w = em_zeros(EM_F32, EM_SHAPE(2, 3));
  em_tensor_set_name(w, "w");
  em_set_requires_grad(w, true);
  cr_assert_eq(em_set_grad(w, em_zeros(EM_F32, EM_SHAPE(3, 2))), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "[3, 2]") && strstr(em_last_error(), "'w' f32 [2, 3]"), "%s",
            em_last_error());
  cr_assert_eq(em_set_grad(w, em_zeros(EM_I32, EM_SHAPE(2, 3))), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "i32 [2, 3]"), "%s", em_last_error());
  em_tensor *nc = em_transpose(em_zeros(EM_F32, EM_SHAPE(3, 2)), 0, 1);
  cr_assert_eq(em_set_grad(w, nc), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "not contiguous"), "%s", em_last_error());
  /* A gradient on another device (a host tensor labelled cuda:0 is enough: nothing reads it). */
  em_tensor *other = em_zeros(EM_F32, EM_SHAPE(2, 3));
  other->device = EM_DEVICE_CUDA(0);
  cr_assert_eq(em_set_grad(w, other), EM_ERR_INVALID);
  other->device = EM_DEVICE_CPU;
  cr_assert(strstr(em_last_error(), "gradient on cuda:0 for tensor 'w' on cpu"), "%s",
            em_last_error());
  cr_assert_null(w->grad, "failed calls leave .grad alone");
  cr_assert_eq(em_set_grad(NULL, NULL), EM_ERR_INVALID);
  /* Success: .grad holds its own reference; replacing or clearing releases it. */
  int64_t live = em_live_tensors();
  em_tensor *g = em_full(EM_F32, EM_SHAPE(2, 3), 1.0);
  cr_assert_eq(em_set_grad(w, g), EM_OK);
  cr_assert_eq(w->grad, g);
  cr_assert_eq(g->refcount, 2, "scope + .grad");
  em_tensor *g2 = em_full(EM_F32, EM_SHAPE(2, 3), 2.0);
  cr_assert_eq(em_set_grad(w, g2), EM_OK);
  cr_assert_eq(g->refcount, 1);
  cr_assert_eq(em_set_grad(w, NULL), EM_OK);
  cr_assert_null(w->grad);
  cr_assert_eq(g2->refcount, 1);
  cr_assert_eq(em_live_tensors(), live + 2);
  /* A contiguous view into a larger buffer is accepted. */
  em_tensor *buf = em_zeros(EM_F32, EM_SHAPE(10));
  em_tensor *part = em_reshape(em_narrow(buf, 0, 4, 6), EM_SHAPE(2, 3));
  cr_assert_eq(em_set_grad(w, part), EM_OK, "%s", em_last_error());
  cr_assert(em_shares_storage(w->grad, buf));
  TU_END;
}

/* Outside scopes, a tensor's .grad is released with the tensor. */
Test(tensor, grad_released_with_tensor) {
  int64_t live0 = em_live_tensors();
  em_tensor *w = em_zeros(EM_F32, EM_SHAPE(3));
  em_tensor *g = em_zeros(EM_F32, EM_SHAPE(3));
  em_set_grad(w, g);
  em_release(g);
  cr_assert_eq(em_live_tensors(), live0 + 2);
  em_release(w);
  cr_assert_eq(em_live_tensors(), live0);
}

/* ---- random numbers ---------------------------------------------------------------------- */
Test(tensor, rng) {
  TU_BEGIN;
  em_rng a = em_rng_new(42), b = em_rng_new(42), c = em_rng_new(43);
  bool differs = false;
  for (int i = 0; i < 100; i++) {
    uint64_t x = em_rng_next_u64(&a);
    cr_assert_eq(x, em_rng_next_u64(&b), "same seed, same stream");
    differs |= x != em_rng_next_u64(&c);
  }
  cr_assert(differs);
  cr_assert_eq(a.counter, 100);
  em_rng r = em_rng_new(1);
  double sum = 0, lo = 1, hi = 0;
  for (int i = 0; i < 100000; i++) {
    float u = em_rng_uniform(&r);
    cr_assert(u >= 0.0f && u < 1.0f);
    sum += u;
    lo = fmin(lo, u);
    hi = fmax(hi, u);
  }
  cr_assert(fabs(sum / 100000 - 0.5) < 0.005 && lo < 0.001 && hi > 0.999);
  em_rng q = em_rng_new(2);
  em_tensor *n = em_rand_normal(EM_SHAPE(200, 500), 3.0f, 2.0f, &q);
  double m = 0, v = 0;
  for (int64_t i = 0; i < 100000; i++) m += em_data_f32(n)[i];
  m /= 100000;
  for (int64_t i = 0; i < 100000; i++) v += pow(em_data_f32(n)[i] - m, 2);
  v /= 100000;
  cr_assert(fabs(m - 3.0) < 0.03 && fabs(sqrt(v) - 2.0) < 0.03, "mean %g std %g", m, sqrt(v));
  em_rng q1 = em_rng_new(3), q2 = em_rng_new(3);
  em_tensor *u1 = em_rand_uniform(EM_SHAPE(7, 9), -2.0f, 5.0f, &q1);
  em_tensor *u2 = em_rand_uniform(EM_SHAPE(7, 9), -2.0f, 5.0f, &q2);
  cr_assert(memcmp(em_data(u1), em_data(u2), 63 * sizeof(float)) == 0);
  for (int64_t i = 0; i < 63; i++) cr_assert(em_get(u1, i) >= -2.0 && em_get(u1, i) < 5.0);
  TU_END;
}

Test(tensor, devices_and_threads) {
  if (!em_built_with_cuda()) cr_assert_eq(em_cuda_device_count(), 0);
  cr_assert(em_cuda_device_count() >= 0);
  int prev = em_num_threads();
  cr_assert(prev >= 1);
  em_set_num_threads(2);
  cr_assert_eq(em_num_threads(), 2);
  em_set_num_threads(prev);
  cr_assert_eq(em_num_threads(), prev);
}

/* em_rng_permutation: every index exactly once, reproducible from the seed, and not the
 * identity (a shuffle that did nothing would pass the first check alone). */
Test(tensor, rng_permutation) {
  enum { N = 1000 };
  int64_t a[N], b[N];
  int seen[N] = {0};
  em_rng r1 = em_rng_new(9), r2 = em_rng_new(9);
  em_rng_permutation(&r1, a, N);
  em_rng_permutation(&r2, b, N);
  int fixed = 0;
  for (int i = 0; i < N; i++) {
    cr_assert(a[i] >= 0 && a[i] < N);
    seen[a[i]]++;
    cr_assert_eq(a[i], b[i], "same seed, same permutation");
    fixed += a[i] == i;
  }
  for (int i = 0; i < N; i++) cr_assert_eq(seen[i], 1, "index %d appears %d times", i, seen[i]);
  cr_assert_lt(fixed, 20, "%d fixed points: not shuffled", fixed);
}
