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

/* ---- loss.cu, embed.cu, norm.cu, optim.cu: losses, embedding, dropout, layer norm, optimizer
 * updates, linear's bias gradient (the contracts are the slots' in core/kernels.h) ------------- */
em_status em__cuda_cross_entropy(const em_tensor *x, const em_tensor *labels, int64_t ignore,
                                 em_reduction red, int64_t count, em_tensor *lse, em_tensor *loss);
em_status em__cuda_cross_entropy_backward(const em_tensor *x, const em_tensor *labels,
                                          const em_tensor *lse, int64_t ignore, const em_tensor *gy,
                                          em_reduction red, double scale, em_tensor *gx);
em_status em__cuda_nll(const em_tensor *logp, const em_tensor *labels, int64_t ignore,
                       em_reduction red, int64_t count, em_tensor *loss);
em_status em__cuda_nll_backward(const em_tensor *labels, int64_t ignore, const em_tensor *gy,
                                em_reduction red, double scale, em_tensor *gx);
em_status em__cuda_mse(const em_tensor *a, const em_tensor *b, em_reduction red, em_tensor *loss);
em_status em__cuda_mse_backward(const em_tensor *a, const em_tensor *b, const em_tensor *gy,
                                em_reduction red, double scale, em_tensor *ga);
em_status em__cuda_linear_bias_grad(const em_tensor *dy, em_tensor *db, bool accumulate);
em_status em__cuda_embedding(const em_tensor *weight, const em_tensor *ix, em_tensor *out);
em_status em__cuda_embedding_backward(const em_tensor *ix, const em_tensor *gy, em_tensor *gw);
em_status em__cuda_dropout(const em_tensor *x, float p, em_rng *rng, em_tensor *mask,
                           em_tensor *y);
em_status em__cuda_layer_norm(const em_tensor *x, const em_tensor *weight, const em_tensor *bias,
                              float eps, em_tensor *y, em_tensor *mean, em_tensor *rstd);
em_status em__cuda_layer_norm_backward(const em_tensor *x, const em_tensor *dy,
                                       const em_tensor *mean, const em_tensor *rstd,
                                       const em_tensor *weight, em_tensor *dx, em_tensor *dw,
                                       em_tensor *db);
em_status em__cuda_sgd_update(int64_t n, float *p, const float *g, float *buf, float lr, float wd,
                              float mom, float damp, bool first, bool nesterov);
em_status em__cuda_adam_update(int64_t n, float *p, const float *g, float *m, float *v, float b1,
                               float b2, float l2, float decay, float neg_step_size,
                               float bc2_sqrt, float eps);

#ifdef __cplusplus
}
#endif
#endif
