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

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EM_CUDA_MAX_DEVICES 64

/* ---- device.c: streams, errors, memory ------------------------------------------------------ */
/* Makes index (checked against EM_CUDA_MAX_DEVICES) the current device: EM_OK or the error. */
em_status em__cuda_use(int index);
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

/* ---- handles.c, matmul.cu, pool.cu, batch_norm.cu: cuBLAS and the DNN kernels ------------------
 * (the cuDNN ones, built only with cuDNN, are declared in cuda/dnn.h) */
/* *on = EMBER_CUDA_TF32 (TF32 tensor cores for f32 GEMMs and convolutions); an error naming the
 * variable when its value is bad. */
em_status em__cuda_tf32(bool *on);
/* Device index's cuBLAS handle, bound to its compute stream (created on first use; NULL with the
 * error set, naming op, if that fails). */
cublasHandle_t em__cublas(int index, const char *op);
/* EM_OK, or EM_ERR_BACKEND (EM_ERR_NOMEM) with "<op> on cuda:<index>: <call> failed: <cuBLAS's
 * message>". */
em_status em__cublas_status(cublasStatus_t s, const char *call, const char *op, int index);
/* The enclosing function has `em_status st`, `const char *op`, `int index` and `cleanup:`. */
#define EM_CUBLAS_CHECK(call)                                                                      \
  do {                                                                                             \
    if ((st = em__cublas_status((call), #call, op, index)) != EM_OK) goto cleanup;                 \
  } while (0)

em_status em__cuda_matmul(const char *op, const em_matrix *a, const em_matrix *b,
                          const em_tensor *bias, em_tensor *c, bool accumulate);
em_status em__cuda_pool2d(const em_pool2d_geom *g, const em_tensor *x, em_tensor *y,
                          em_tensor **ws);
em_status em__cuda_pool2d_backward(const em_pool2d_geom *g, const em_tensor *ws,
                                   const em_tensor *gy, em_tensor *gx);
em_status em__cuda_adaptive_avg_pool2d(const em_tensor *x, em_tensor *y);
em_status em__cuda_adaptive_avg_pool2d_backward(const em_tensor *gy, em_tensor *gx);
em_status em__cuda_batch_norm(const em_tensor *x, const em_tensor *weight, const em_tensor *bias,
                              bool training, float eps, em_tensor *y, em_tensor *mean,
                              em_tensor *var);
em_status em__cuda_batch_norm_backward(const em_tensor *x, const em_tensor *dy,
                                       const em_tensor *mean, const em_tensor *var,
                                       const em_tensor *weight, const em_tensor *bias,
                                       bool training, float eps, em_tensor *dx, em_tensor *dw,
                                       em_tensor *db);
em_status em__cuda_batch_norm_update_stats(em_tensor *running_mean, em_tensor *running_var,
                                           const em_tensor *mean, const em_tensor *var,
                                           float momentum, int64_t M);
/* ---- loss.cu, embed.cu, layer_norm.cu, optim.cu: losses, embedding, dropout, layer norm, optim.
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
/* ---- convert.cu: 16-bit gradient compression (core/kernels.h: to_half, from_half) ------------ */
em_status em__cuda_to_half(int index, em_dtype half, uint16_t *dst, const float *src, int64_t n,
                           float scale);
em_status em__cuda_from_half(int index, em_dtype half, float *dst, const uint16_t *src, int64_t n);
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
