/* cuda/cuda.h: private to runtime/cuda/. What the CUDA table's files share: the kernels that
 * cuda/table.c puts in the table (the contract is core/kernels.h), the compute stream, and the
 * error helpers. Included by C (device.c, table.c) and CUDA C++ (*.cu) sources alike; the device
 * side helpers for kernels are in cuda/common.cuh.
 *
 * Streams: every kernel and cuBLAS/cuDNN call of the table runs on the device's compute stream,
 * em__cuda_stream(index): a blocking stream, so the synchronous copies of the memory slots (on the
 * legacy default stream) are ordered with it both ways, and so is the NCCL backend, which records
 * its "gradients ready" event on the legacy stream (collectives/nccl.c). Kernels are asynchronous:
 * a host read (copy_to_host) waits for them. */
#ifndef EMBER_CUDA_H
#define EMBER_CUDA_H

#include "core/kernels.h"

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- device.c: streams, errors, memory ------------------------------------------------------ */
/* The compute stream of device index (created on first use; NULL with the error set if that
 * fails). Makes index the current device. */
cudaStream_t em__cuda_stream(int index);
/* EM_OK when e is cudaSuccess; else EM_ERR_BACKEND (EM_ERR_NOMEM for cudaErrorMemoryAllocation)
 * with "<op> on cuda:<index>: <CUDA's message>", and CUDA's last error cleared. */
em_status em__cuda_status(cudaError_t e, const char *op, int index);
/* After a kernel launch: the launch's error (bad configuration, no kernel image for this GPU), as
 * em__cuda_status. */
em_status em__cuda_launched(const char *op, int index);

/* Memory on device index. alloc: EMBER_CUDA_POISON=1 fills new blocks with 0xff bytes (NaN in
 * every float type), so a kernel that leaves an output element unwritten fails its test. */
void *em__cuda_alloc(int index, size_t nbytes);
void em__cuda_free(int index, void *p, size_t nbytes);
em_status em__cuda_zero(int index, void *dst, size_t nbytes);
em_status em__cuda_copy_from_host(int index, void *dst, const void *src, size_t nbytes);
em_status em__cuda_copy_to_host(int index, void *dst, const void *src, size_t nbytes);
em_status em__cuda_copy(int index, void *dst, const void *src, size_t nbytes);

/* ---- memory.cu: fills and strided copies (any dtype) ----------------------------------------- */
em_status em__cuda_fill(em_tensor *t, double value);
em_status em__cuda_copy_view(em_tensor *dst, const em_tensor *src);

/* ---- elementwise.cu, reduce.cu, softmax.cu, index.cu: elementwise ops, reductions, softmax and
 * the causal mask, index checks and index_select (contracts in core/kernels.h) ----------------- */
em_status em__cuda_binary(em_binop op, const em_tensor *a, const em_tensor *b, em_tensor *out);
em_status em__cuda_affine(const em_tensor *x, float mul, float add, em_tensor *y);
em_status em__cuda_unary(em_unop op, float alpha, float beta, const em_tensor *x, em_tensor *y);
em_status em__cuda_unary_backward(em_unop op, float alpha, float beta, const em_tensor *saved,
                                  const em_tensor *gy, em_tensor *gx);
em_status em__cuda_nonzero_mask(const em_tensor *cond, em_tensor *mask);
em_status em__cuda_where(const em_tensor *mask, const em_tensor *a, const em_tensor *b,
                         em_tensor *out);
em_status em__cuda_sum(const em_tensor *x, uint32_t mask, double scale, em_tensor *y);
em_status em__cuda_sum_backward(const em_tensor *gy, uint32_t mask, double scale, em_tensor *gx);
em_status em__cuda_max(const em_tensor *x, int64_t O, int64_t R, int64_t K, em_tensor *vals,
                       em_tensor *idx);
em_status em__cuda_max_backward(const em_tensor *idx, const em_tensor *gy, int64_t O, int64_t R,
                                int64_t K, em_tensor *gx);
em_status em__cuda_sum_to(const em_tensor *x, em_tensor *y);
em_status em__cuda_accumulate(em_tensor *y, const em_tensor *x);
em_status em__cuda_softmax(bool log, const em_tensor *x, int dim, em_tensor *y);
em_status em__cuda_softmax_backward(bool log, const em_tensor *y, const em_tensor *dy, int dim,
                                    em_tensor *dx);
em_status em__cuda_causal_mask(const em_tensor *x, float value, em_tensor *y);
em_status em__cuda_check_index(const em_tensor *idx, int64_t size, const int64_t *skip,
                               em_tensor *ix, int64_t *count, int64_t *bad, int64_t *bad_value);
em_status em__cuda_index_select(const em_tensor *x, int dim, const em_tensor *ix, em_tensor *out);
em_status em__cuda_index_select_backward(const em_tensor *ix, int dim, const em_tensor *gy,
                                         em_tensor *gx);

#ifdef __cplusplus
}
#endif
#endif
