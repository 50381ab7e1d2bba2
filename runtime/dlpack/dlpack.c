/* dlpack/dlpack.c: Ember tensors to and from DLPack's DLManagedTensor (em_dlpack.h).
 *
 * Export: one allocation holds the DLManagedTensor, the shape and strides it points to, and a
 * detached alias of the tensor, whose reference keeps the storage alive until the consumer calls
 * the deleter. Import: the storage is lent (core/internal.h, em__tensor_lent); its release hook
 * calls the producer's deleter when the last Ember tensor viewing it goes. */
#include "em_dlpack.h"

#include <dlpack/dlpack.h>
#include <stdlib.h>

#include "core/internal.h"

/* ---- dtypes and devices ---------------------------------------------------------------- */

static const struct {
  em_dtype em;
  uint8_t code, bits;
} dtype_map[] = {
    {EM_F32, kDLFloat, 32}, {EM_F16, kDLFloat, 16}, {EM_BF16, kDLBfloat, 16},
    {EM_I64, kDLInt, 64},   {EM_I32, kDLInt, 32},   {EM_U8, kDLUInt, 8},
};
#define N_DTYPES (sizeof dtype_map / sizeof dtype_map[0])

static const char *code_name(uint8_t code) {
  switch (code) {
  case kDLInt: return "int";
  case kDLUInt: return "uint";
  case kDLFloat: return "float";
  case kDLOpaqueHandle: return "opaque handle";
  case kDLBfloat: return "bfloat";
  case kDLComplex: return "complex";
  default: return "unknown type code";
  }
}

static const char *device_name(DLDeviceType t) {
  switch (t) {
  case kDLCPU: return "cpu";
  case kDLCUDA: return "cuda";
  case kDLCUDAHost: return "cuda_host";
  case kDLOpenCL: return "opencl";
  case kDLVulkan: return "vulkan";
  case kDLMetal: return "metal";
  case kDLVPI: return "vpi";
  case kDLROCM: return "rocm";
  case kDLROCMHost: return "rocm_host";
  case kDLExtDev: return "ext_dev";
  case kDLCUDAManaged: return "cuda_managed";
  default: return "unknown device type";
  }
}

/* ---- export ---------------------------------------------------------------------------- */

typedef struct {
  DLManagedTensor m; /* first: the DLManagedTensor pointer is the export's pointer */
  em_tensor *alias;  /* detached, caller-owned: its storage reference keeps the memory alive */
  int64_t shape[EM_MAX_DIMS], strides[EM_MAX_DIMS];
} export;

static void export_deleter(DLManagedTensor *m) {
  export *e = m->manager_ctx;
  em_release(e->alias);
  free(e);
}

DLManagedTensor *em_to_dlpack_ex(em_tensor *t, unsigned flags) {
  if (!t) {
    if (em_last_status() == EM_OK) em_set_error(EM_ERR_INVALID, "to_dlpack: tensor is NULL");
    return NULL;
  }
  size_t k = 0;
  while (k < N_DTYPES && dtype_map[k].em != t->dtype) k++;
  if (k == N_DTYPES) {
    em_set_error(EM_ERR_UNSUPPORTED, "to_dlpack: dtype %s has no DLPack code",
                 em_dtype_name(t->dtype));
    return NULL;
  }
  export *e = calloc(1, sizeof *e);
  if (!e) {
    em_set_error(EM_ERR_NOMEM, "to_dlpack: out of memory");
    return NULL;
  }
  /* Outside the caller's scopes: the alias lives as long as the export, not the scope. */
  em_scope_saved saved = em_scope_suspend();
  e->alias = em_detach(t);
  em_scope_resume(saved);
  if (!e->alias) {
    free(e);
    return NULL;
  }
  for (int d = 0; d < t->ndim; d++) {
    e->shape[d] = t->shape[d];
    e->strides[d] = t->strides[d];
  }
  DLDataType dt = {dtype_map[k].code, dtype_map[k].bits, 1};
  if (t->dtype == EM_BF16 && (flags & EM_DLPACK_BF16_AS_U16)) dt.code = kDLUInt;
  DLDevice dev = {t->device.kind == EM_CUDA ? kDLCUDA : kDLCPU, t->device.index};
  e->m = (DLManagedTensor){
      .dl_tensor = {.data = em_data(t),
                    .device = dev,
                    .ndim = t->ndim,
                    .dtype = dt,
                    .shape = e->shape,
                    .strides = e->strides,
                    .byte_offset = 0},
      .manager_ctx = e,
      .deleter = export_deleter,
  };
  return &e->m;
}

DLManagedTensor *em_to_dlpack(em_tensor *t) { return em_to_dlpack_ex(t, 0); }

/* ---- import ---------------------------------------------------------------------------- */

static void import_release(void *ctx) {
  DLManagedTensor *m = ctx;
  if (m->deleter) m->deleter(m);
}

static bool import_device(const DLDevice *d, em_device *out) {
  switch (d->device_type) {
  case kDLCPU:
  case kDLCUDAHost: *out = EM_DEVICE_CPU; return true;
  case kDLCUDA:
    if (d->device_id < 0 || d->device_id >= em_cuda_device_count()) {
      em_set_error(EM_ERR_UNSUPPORTED,
                   "from_dlpack: tensor on cuda:%d, but this process has %d CUDA device(s)%s",
                   d->device_id, em_cuda_device_count(),
                   em_built_with_cuda() ? "" : " (Ember was built without CUDA)");
      return false;
    }
    *out = EM_DEVICE_CUDA(d->device_id);
    return true;
  default:
    em_set_error(EM_ERR_UNSUPPORTED,
                 "from_dlpack: device %s (type %d) is not supported (cpu, cuda_host, cuda)",
                 device_name(d->device_type), (int)d->device_type);
    return false;
  }
}

static bool import_dtype(DLDataType t, em_dtype *out) {
  if (t.lanes != 1) {
    em_set_error(EM_ERR_UNSUPPORTED, "from_dlpack: %u-lane vector dtypes are not supported",
                 (unsigned)t.lanes);
    return false;
  }
  for (size_t k = 0; k < N_DTYPES; k++)
    if (dtype_map[k].code == t.code && dtype_map[k].bits == t.bits) {
      *out = dtype_map[k].em;
      return true;
    }
  em_set_error(EM_ERR_UNSUPPORTED,
               "from_dlpack: dtype %s%u (code %u) is not supported by Ember "
               "(float32, float16, bfloat16, int64, int32, uint8)",
               code_name(t.code), (unsigned)t.bits, (unsigned)t.code);
  return false;
}

/* Bytes from the first element to one past the last one reachable through shape and strides
 * (0 for an empty tensor); false with an error on a negative stride or an overflow. */
static bool import_span(const DLTensor *d, const int64_t *strides, size_t esize, size_t *out) {
  int64_t last = 0; /* element index of the last reachable element */
  for (int i = 0; i < d->ndim; i++) {
    if (d->shape[i] < 0) {
      em_set_error(EM_ERR_INVALID, "from_dlpack: negative size %lld in dimension %d",
                   (long long)d->shape[i], i);
      return false;
    }
    if (d->shape[i] == 0) {
      *out = 0;
      return true;
    }
    if (strides[i] < 0) {
      em_set_error(EM_ERR_UNSUPPORTED,
                   "from_dlpack: negative stride %lld in dimension %d (Ember views need strides "
                   ">= 0: make the array contiguous first)",
                   (long long)strides[i], i);
      return false;
    }
    int64_t reach;
    if (__builtin_mul_overflow(d->shape[i] - 1, strides[i], &reach) ||
        __builtin_add_overflow(last, reach, &last)) {
      em_set_error(EM_ERR_INVALID, "from_dlpack: shape and strides overflow in dimension %d", i);
      return false;
    }
  }
  if (__builtin_mul_overflow((size_t)last + 1, esize, out)) {
    em_set_error(EM_ERR_INVALID, "from_dlpack: tensor too large");
    return false;
  }
  return true;
}

em_tensor *em_from_dlpack(DLManagedTensor *m) {
  if (!m) {
    em_set_error(EM_ERR_INVALID, "from_dlpack: DLManagedTensor is NULL");
    return NULL;
  }
  const DLTensor *d = &m->dl_tensor;
  em_device dev;
  em_dtype dt;
  if (!import_device(&d->device, &dev) || !import_dtype(d->dtype, &dt)) return NULL;
  if (d->ndim < 0 || d->ndim > EM_MAX_DIMS) {
    em_set_error(EM_ERR_UNSUPPORTED, "from_dlpack: %d dimensions (Ember has at most %d)", d->ndim,
                 EM_MAX_DIMS);
    return NULL;
  }
  if (d->ndim > 0 && !d->shape) {
    em_set_error(EM_ERR_INVALID, "from_dlpack: %d dimensions but no shape", d->ndim);
    return NULL;
  }
  int64_t strides[EM_MAX_DIMS];
  if (d->strides)
    for (int i = 0; i < d->ndim; i++) strides[i] = d->strides[i];
  else
    em__contig_strides(d->ndim, d->shape, strides);
  size_t nbytes;
  if (!import_span(d, strides, em_dtype_size(dt), &nbytes)) return NULL;
  if (nbytes && !d->data) {
    em_set_error(EM_ERR_INVALID, "from_dlpack: data is NULL for a non-empty tensor");
    return NULL;
  }
  char *data = (char *)d->data + d->byte_offset;
  em_tensor *t =
      em__tensor_lent(data, nbytes, dev, dt, d->ndim, d->shape, strides, import_release, m);
  return t ? em__scope_adopt(t) : NULL;
}
