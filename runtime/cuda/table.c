/* cuda/table.c: the CUDA kernel table. Today it holds the memory kernels (cuda/device.c), so that
 * tensors and modules move to a GPU with em_to/em_module_to; the op kernels (cuBLAS, cuDNN, the
 * project's own) are NULL until the GPU issue fills them, and an op on a CUDA tensor fails with
 * "<op>: not supported on cuda:N". */
#include "cuda/cuda.h"

const em_kernels em__cuda_kernels = {
    .name = "cuda",
    .alloc = em__cuda_alloc,
    .free = em__cuda_free,
    .zero = em__cuda_zero,
    .copy_from_host = em__cuda_copy_from_host,
    .copy_to_host = em__cuda_copy_to_host,
    .copy = em__cuda_copy,
    .copy_view = em__cuda_copy_view,
    .fill = em__cuda_fill,
    /* losses, embedding, dropout, layer norm, optimizer updates (loss.cu, embed.cu, norm.cu,
     * optim.cu) */
    .linear_bias_grad = em__cuda_linear_bias_grad,
    .layer_norm = em__cuda_layer_norm,
    .layer_norm_backward = em__cuda_layer_norm_backward,
    .cross_entropy = em__cuda_cross_entropy,
    .cross_entropy_backward = em__cuda_cross_entropy_backward,
    .nll = em__cuda_nll,
    .nll_backward = em__cuda_nll_backward,
    .mse = em__cuda_mse,
    .mse_backward = em__cuda_mse_backward,
    .embedding = em__cuda_embedding,
    .embedding_backward = em__cuda_embedding_backward,
    .dropout = em__cuda_dropout,
    .sgd_update = em__cuda_sgd_update,
    .adam_update = em__cuda_adam_update,
};
