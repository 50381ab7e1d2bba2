/* test_dlpack.c: em_to_dlpack / em_from_dlpack (em_dlpack.h).
 *
 * The producer side of imports is a DLManagedTensor built here over a C array, with a deleter
 * that counts its calls: the checks are that Ember reads the producer's memory through the given
 * shape, strides and byte offset (compared with the array read by hand), writes land in it, and
 * the deleter runs exactly once, only after the last Ember view is gone, and never when the import
 * is refused. Exports are checked field by field, and by importing them back (same address). */
#include "testutil.h"

#include <dlpack/dlpack.h>
#include <string.h>

/* ---- a producer ------------------------------------------------------------------------ */
typedef struct {
  DLManagedTensor m;
  int64_t shape[9], strides[9];
  int deleted; /* calls of the deleter */
} producer;

static void producer_deleter(DLManagedTensor *m) { ((producer *)m->manager_ctx)->deleted++; }

static void producer_init(producer *p, void *data, DLDataType dt, int ndim, const int64_t *shape,
                          const int64_t *strides, uint64_t byte_offset) {
  memset(p, 0, sizeof *p);
  if (ndim) memcpy(p->shape, shape, (size_t)ndim * sizeof *shape);
  if (strides) memcpy(p->strides, strides, (size_t)ndim * sizeof *strides);
  p->m.dl_tensor = (DLTensor){.data = data,
                              .device = {kDLCPU, 0},
                              .ndim = ndim,
                              .dtype = dt,
                              .shape = p->shape,
                              .strides = strides ? p->strides : NULL,
                              .byte_offset = byte_offset};
  p->m.manager_ctx = p;
  p->m.deleter = producer_deleter;
}

static const DLDataType F32 = {kDLFloat, 32, 1};

/* ---- import ---------------------------------------------------------------------------- */
Test(dlpack, import_contiguous_shares_memory_and_deletes_once) {
  TU_BEGIN;
  float data[6] = {0, 1, 2, 3, 4, 5};
  producer p;
  producer_init(&p, data, F32, 2, (int64_t[]){2, 3}, NULL, 0);
  em_scope s = em_scope_begin();
  em_tensor *t = em_from_dlpack(&p.m);
  cr_assert_not_null(t, "%s", em_last_error());
  cr_assert_eq(t->dtype, EM_F32);
  cr_assert(t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
  cr_assert(t->strides[0] == 3 && t->strides[1] == 1);
  cr_assert_eq(em_data(t), (void *)data, "same address");
  cr_assert(!t->requires_grad && !t->grad_fn);
  cr_assert_eq(em_get(t, 4), 4.0);
  em_set(t, 5, -7.5); /* Ember writes, the producer reads */
  cr_assert_eq(data[5], -7.5f);
  data[0] = 42; /* and the reverse */
  cr_assert_eq(em_get(t, 0), 42.0);
  /* A view and a detached alias keep the memory: the deleter waits for the last one. */
  em_tensor *row = em_retain(em_narrow(t, 0, 1, 1));
  em_tensor *alias = em_retain(em_detach(t));
  em_scope_end(s);
  cr_assert_eq(p.deleted, 0);
  cr_assert_eq(em_get(row, 2), -7.5);
  em_release(row);
  cr_assert_eq(p.deleted, 0);
  em_release(alias);
  cr_assert_eq(p.deleted, 1);
  TU_END;
}

Test(dlpack, import_strided_with_byte_offset) {
  TU_BEGIN;
  /* A 3x4 row-major array; the producer shares its transpose's column 1..2 block:
   * element (i, j) of the 4x2 tensor below is base[(j + 1) * 4 + i], with base at data[0]. */
  float data[12];
  for (int i = 0; i < 12; i++) data[i] = (float)(10 * i);
  producer p;
  producer_init(&p, data, F32, 2, (int64_t[]){4, 2}, (int64_t[]){1, 4}, 4 * sizeof(float));
  em_tensor *t = em_from_dlpack(&p.m);
  cr_assert_not_null(t, "%s", em_last_error());
  cr_assert(!em_is_contiguous(t));
  cr_assert_eq(em_data(t), (void *)(data + 4));
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 2; j++)
      cr_assert_eq(em_get(t, i * 2 + j), data[(j + 1) * 4 + i], "(%d, %d)", i, j);
  /* An op reads the strided view correctly: a contiguous copy. */
  em_tensor *c = em_contiguous(t);
  cr_assert_not_null(c, "%s", em_last_error());
  cr_assert_eq(em_data_f32(c)[1], data[8]);
  em_set(t, 7, 1.5); /* (3, 1) -> data[11] */
  cr_assert_eq(data[11], 1.5f);
  TU_END;
  cr_assert_eq(p.deleted, 1);
}

Test(dlpack, import_every_dtype) {
  TU_BEGIN;
  static const struct {
    DLDataType dl;
    em_dtype em;
  } cases[] = {
      {{kDLFloat, 32, 1}, EM_F32}, {{kDLFloat, 16, 1}, EM_F16}, {{kDLBfloat, 16, 1}, EM_BF16},
      {{kDLInt, 64, 1}, EM_I64},   {{kDLInt, 32, 1}, EM_I32},   {{kDLUInt, 8, 1}, EM_U8},
  };
  uint64_t buf[4] = {0};
  /* One known value per dtype, written as raw bits: 3.0 in f32/f16/bf16, 3 in the integers. */
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    memset(buf, 0, sizeof buf);
    switch (cases[k].em) {
    case EM_F32: ((float *)buf)[1] = 3.0f; break;
    case EM_F16: ((uint16_t *)buf)[1] = 0x4200; break;
    case EM_BF16: ((uint16_t *)buf)[1] = 0x4040; break;
    case EM_I64: ((int64_t *)buf)[1] = 3; break;
    case EM_I32: ((int32_t *)buf)[1] = 3; break;
    case EM_U8: ((uint8_t *)buf)[1] = 3; break;
    default: break;
    }
    producer p;
    producer_init(&p, buf, cases[k].dl, 1, (int64_t[]){2}, NULL, 0);
    em_scope s = em_scope_begin();
    em_tensor *t = em_from_dlpack(&p.m);
    cr_assert_not_null(t, "case %zu: %s", k, em_last_error());
    cr_assert_eq(t->dtype, cases[k].em);
    cr_assert_eq(em_get(t, 0), 0.0);
    cr_assert_eq(em_get(t, 1), 3.0, "%s", em_dtype_name(t->dtype));
    em_scope_end(s);
    cr_assert_eq(p.deleted, 1);
  }
  TU_END;
}

Test(dlpack, import_refusals_name_the_cause_and_keep_ownership) {
  TU_BEGIN;
  float data[4] = {0};
  static const struct {
    DLDataType dt;
    DLDevice dev;
    int64_t stride;
    const char *needle;
  } cases[] = {
      {{kDLFloat, 64, 1}, {kDLCPU, 0}, 1, "dtype float64 (code 2) is not supported"},
      {{kDLComplex, 64, 1}, {kDLCPU, 0}, 1, "dtype complex64"},
      {{kDLFloat, 32, 4}, {kDLCPU, 0}, 1, "4-lane vector dtypes"},
      {{kDLFloat, 32, 1}, {kDLROCM, 0}, 1, "device rocm (type 10) is not supported"},
      {{kDLFloat, 32, 1}, {kDLCUDA, 3}, 1, "tensor on cuda:3, but this process has"},
      {{kDLFloat, 32, 1}, {kDLCPU, 0}, -1, "negative stride -1 in dimension 0"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    producer p;
    producer_init(&p, data + 3, cases[k].dt, 1, (int64_t[]){4}, (int64_t[]){cases[k].stride}, 0);
    p.m.dl_tensor.device = cases[k].dev;
    em_clear_error();
    cr_assert_null(em_from_dlpack(&p.m), "case %zu", k);
    cr_assert(strstr(em_last_error(), cases[k].needle), "case %zu: %s", k, em_last_error());
    cr_assert_eq(p.deleted, 0, "a refused import leaves the tensor to its producer");
  }
  cr_assert_null(em_from_dlpack(NULL));
  cr_assert(strstr(em_last_error(), "NULL"));
  producer p;
  producer_init(&p, data, F32, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, NULL, 0);
  cr_assert_null(em_from_dlpack(&p.m));
  cr_assert(strstr(em_last_error(), "9 dimensions (Ember has at most 8)"), "%s", em_last_error());
  TU_END;
}

Test(dlpack, import_empty_and_scalar) {
  TU_BEGIN;
  float one = 2.5f;
  producer p, q;
  producer_init(&p, &one, F32, 0, NULL, NULL, 0);
  em_tensor *t = em_from_dlpack(&p.m);
  cr_assert_not_null(t, "%s", em_last_error());
  cr_assert(t->ndim == 0 && em_numel(t) == 1 && em_get(t, 0) == 2.5);
  producer_init(&q, NULL, F32, 2, (int64_t[]){0, 5}, NULL, 0);
  em_tensor *e = em_from_dlpack(&q.m);
  cr_assert_not_null(e, "%s", em_last_error());
  cr_assert_eq(em_numel(e), 0);
  TU_END;
  cr_assert(p.deleted == 1 && q.deleted == 1);
}

/* ---- export ---------------------------------------------------------------------------- */
Test(dlpack, export_fields_and_lifetime) {
  TU_BEGIN;
  em_tensor *a = em_empty(EM_F32, EM_SHAPE(3, 4)); /* a[i][j] = 4i + j */
  for (int k = 0; k < 12; k++) em_set(a, k, k);
  em_tensor *tr = em_transpose(a, 0, 1);  /* 4x3 view, strides (1, 4) */
  em_tensor *sl = em_narrow(tr, 0, 1, 2); /* rows 1..2: offset 1 */
  DLManagedTensor *m = em_to_dlpack(sl);
  cr_assert_not_null(m, "%s", em_last_error());
  const DLTensor *d = &m->dl_tensor;
  cr_assert_eq(d->device.device_type, kDLCPU);
  cr_assert(d->dtype.code == kDLFloat && d->dtype.bits == 32 && d->dtype.lanes == 1);
  cr_assert(d->ndim == 2 && d->shape[0] == 2 && d->shape[1] == 3);
  cr_assert(d->strides[0] == 1 && d->strides[1] == 4);
  cr_assert_eq(d->byte_offset, 0);
  cr_assert_eq(d->data, em_data(sl), "data points at the first element");
  cr_assert_eq((float *)d->data - em_data_f32(a), 1);
  /* The export keeps the memory when every Ember tensor is gone. */
  em_scope_end(sc_);
  sc_ = em_scope_begin();
  cr_assert_eq(em_live_tensors(), live0_ + 1, "only the export's alias is left");
  const float *f = d->data;
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++) cr_assert_eq(f[i * 1 + j * 4], (float)(4 * j + i + 1));
  m->deleter(m);
  TU_END;
}

Test(dlpack, export_import_round_trip_and_bf16_flag) {
  TU_BEGIN;
  em_tensor *a = em_full(EM_BF16, EM_SHAPE(2, 2), 1.5);
  DLManagedTensor *m = em_to_dlpack(a);
  cr_assert_eq(m->dl_tensor.dtype.code, kDLBfloat);
  em_tensor *b = em_from_dlpack(m); /* Ember owns m now */
  cr_assert_not_null(b, "%s", em_last_error());
  cr_assert(em_data(b) == em_data(a) && b->dtype == EM_BF16);
  em_set(b, 3, -2.0);
  cr_assert_eq(em_get(a, 3), -2.0);
  DLManagedTensor *u = em_to_dlpack_ex(a, EM_DLPACK_BF16_AS_U16);
  cr_assert(u->dl_tensor.dtype.code == kDLUInt && u->dl_tensor.dtype.bits == 16);
  cr_assert_eq(((uint16_t *)u->dl_tensor.data)[0], 0x3fc0, "the raw bits of 1.5 in bf16");
  u->deleter(u);
  em_tensor *f = em_full(EM_F32, EM_SHAPE(2), 1.0);
  DLManagedTensor *v = em_to_dlpack_ex(f, EM_DLPACK_BF16_AS_U16);
  cr_assert_eq(v->dl_tensor.dtype.code, kDLFloat, "the flag changes bf16 only");
  v->deleter(v);
  cr_assert_null(em_to_dlpack(NULL));
  TU_END;
}

/* ---- CUDA (skipped without a device) ---------------------------------------------------- */
Test(dlpack, cuda_export_and_import_keep_device_and_address) {
  if (em_cuda_device_count() == 0) cr_skip_test("no CUDA device on this machine");
  TU_BEGIN;
  em_tensor *h = em_empty(EM_F32, EM_SHAPE(3, 4));
  for (int k = 0; k < 12; k++) em_set(h, k, k);
  em_tensor *g = em_to(h, EM_DEVICE_CUDA(0));
  cr_assert_not_null(g, "%s", em_last_error());
  em_tensor *gt = em_transpose(g, 0, 1);
  DLManagedTensor *m = em_to_dlpack(gt);
  cr_assert_not_null(m, "%s", em_last_error());
  cr_assert(m->dl_tensor.device.device_type == kDLCUDA && m->dl_tensor.device.device_id == 0);
  cr_assert(m->dl_tensor.strides[0] == 1 && m->dl_tensor.strides[1] == 4);
  em_tensor *back = em_from_dlpack(m);
  cr_assert_not_null(back, "%s", em_last_error());
  cr_assert(back->device.kind == EM_CUDA && back->device.index == 0);
  cr_assert_eq(em_data(back), em_data(gt));
  em_tensor *host = em_to(back, EM_DEVICE_CPU); /* the strided device view, read back */
  cr_assert_not_null(host, "%s", em_last_error());
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++) cr_assert_eq(em_get(host, i * 3 + j), (double)(j * 4 + i));
  TU_END;
}
