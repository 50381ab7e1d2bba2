/* em_dlpack.h: Ember tensors as DLPack tensors and back, without copying.
 *
 * DLPack (https://dmlc.github.io/dlpack) is the struct that NumPy, PyTorch, CuPy and JAX pass
 * between each other to share tensor memory. Ember speaks the DLManagedTensor form of DLPack 0.6
 * (Debian's libdlpack-dev; the form every consumer accepts). This header only declares the struct
 * by name: include <dlpack/dlpack.h> to read its fields.
 *
 *   export   em_to_dlpack(t)     -> a DLManagedTensor viewing t's memory (its shape, strides,
 *                                   dtype, device). It holds a reference to that memory: the
 *                                   consumer calls m->deleter(m) when done, and the memory lives
 *                                   until then even if every Ember tensor is gone.
 *   import   em_from_dlpack(m)   -> an Ember tensor viewing m's memory. Ember owns m from then on
 *                                   and calls m->deleter(m) once, when the last tensor viewing the
 *                                   memory is released (views and detached aliases included).
 *
 * Devices: the CPU (kDLCPU; pinned host memory kDLCUDAHost imports as the CPU) and CUDA
 * (kDLCUDA, device_id = the ordinal) in a build with CUDA and that device present. dtypes:
 * f32 (kDLFloat 32), f16 (kDLFloat 16), bf16 (kDLBfloat 16), i64, i32 (kDLInt), u8 (kDLUInt 8);
 * one lane. Anything else is refused with an error that names it. */
#ifndef EMBER_EM_DLPACK_H
#define EMBER_EM_DLPACK_H

#include "em_core.h"

#ifdef __cplusplus
extern "C" {
#endif

struct DLManagedTensor;

/* Flags for em_to_dlpack_ex. */
enum {
  /* Describe a bf16 tensor as kDLUInt 16 (its raw bits), for consumers without bfloat16 (NumPy). */
  EM_DLPACK_BF16_AS_U16 = 1u << 0,
};

/* t as a DLManagedTensor (caller owns it: call m->deleter(m) once when done). data points at t's
 * first element (byte_offset 0) and strides are always given (in elements). The tensor is
 * exported without autograd history: writes through it are invisible to autograd, as with
 * torch.Tensor.__dlpack__ on a tensor that does not require grad. NULL with an error set when t
 * is NULL or out of memory. */
struct DLManagedTensor *em_to_dlpack(em_tensor *t);
struct DLManagedTensor *em_to_dlpack_ex(em_tensor *t, unsigned flags);

/* A tensor viewing m's memory (owned by the current scope, or the caller outside scopes); it is a
 * leaf without gradient. On success Ember owns m (see the top). On failure NULL with an error
 * naming the unsupported dtype, device, lanes or negative stride, and m still belongs to the
 * caller (its deleter has not run). Strides NULL means compact row-major; byte_offset is honoured.
 */
em_tensor *em_from_dlpack(struct DLManagedTensor *m);

#ifdef __cplusplus
}
#endif
#endif
