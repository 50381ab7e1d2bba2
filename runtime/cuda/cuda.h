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

#define EM_CUDA_MAX_DEVICES 64

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

/* Memory on device index, from the caching allocator (alloc.c): blocks serving the compute
 * stream; NULL with the error set (out of memory names the request and what is held). Every block
 * handed out, a reused one too, is filled with 0xff bytes (NaN in every float type) under
 * EMBER_CUDA_POISON=1, so a kernel that leaves an output element unwritten fails its test. A block
 * may be freed while kernels queued on the compute stream still use it (reuse is stream-ordered).
 * alloc_on: a block serving stream s instead (the host-to-device stream's uploads). */
void *em__cuda_alloc(int index, size_t nbytes);
void *em__cuda_alloc_on(int index, size_t nbytes, cudaStream_t s);
void em__cuda_free(int index, void *p, size_t nbytes);
/* The upload slot (core/kernels.h): pinned host memory to a new block, on the host-to-device
 * stream, with the compute stream waiting on *done. */
void *em__cuda_upload(int index, const void *src, size_t nbytes, void **done);
em_status em__cuda_zero(int index, void *dst, size_t nbytes);
em_status em__cuda_copy_from_host(int index, void *dst, const void *src, size_t nbytes);
em_status em__cuda_copy_to_host(int index, void *dst, const void *src, size_t nbytes);
em_status em__cuda_copy(int index, void *dst, const void *src, size_t nbytes);

/* ---- memory.cu: fills and strided copies (any dtype) ----------------------------------------- */
em_status em__cuda_fill(em_tensor *t, double value);
em_status em__cuda_copy_view(em_tensor *dst, const em_tensor *src);

#ifdef __cplusplus
}
#endif
#endif
