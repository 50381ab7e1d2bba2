/* cuda/table.c: the CUDA kernel table: every slot of core/kernels.h, from the files named in the
 * comments (cuBLAS, cuDNN and the project's own kernels). conv2d needs cuDNN: without it that slot
 * is NULL and em_conv2d on a CUDA tensor fails with "conv2d: not supported on cuda:N". */
#include "cuda/cuda.h"
#ifdef EMBER_HAVE_CUDNN
#include "cuda/dnn.h"
#endif

const em_kernels em__cuda_kernels = {
    .name = "cuda",
    .alloc = em__cuda_alloc,
    .free = em__cuda_free,
    .zero = em__cuda_zero,
    .copy_from_host = em__cuda_copy_from_host,
    .copy_to_host = em__cuda_copy_to_host,
    .copy = em__cuda_copy,
    .upload = em__cuda_upload,
    .copy_view = em__cuda_copy_view,
    .fill = em__cuda_fill,
    /* matmul.cu (cuBLAS) */
    .matmul = em__cuda_matmul,
    /* batch_norm.cu */
    .batch_norm = em__cuda_batch_norm,
    .batch_norm_backward = em__cuda_batch_norm_backward,
    .batch_norm_update_stats = em__cuda_batch_norm_update_stats,
    /* conv.cu (cuDNN; without it conv2d is "not supported on cuda:N") */
#ifdef EMBER_HAVE_CUDNN
    .conv2d = em__cuda_conv2d,
    .conv2d_backward = em__cuda_conv2d_backward,
#endif
    /* pool.cu */
    .pool2d = em__cuda_pool2d,
    .pool2d_backward = em__cuda_pool2d_backward,
    .adaptive_avg_pool2d = em__cuda_adaptive_avg_pool2d,
    .adaptive_avg_pool2d_backward = em__cuda_adaptive_avg_pool2d_backward,
    /* losses, embedding, dropout, layer norm, optimizer updates (loss.cu, embed.cu, layer_norm.cu,
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
    /* convert.cu */
    .to_half = em__cuda_to_half,
    .from_half = em__cuda_from_half,
    /* elementwise.cu, reduce.cu, softmax.cu, index.cu */
    .binary = em__cuda_binary,
    .affine = em__cuda_affine,
    .unary = em__cuda_unary,
    .unary_backward = em__cuda_unary_backward,
    .nonzero_mask = em__cuda_nonzero_mask,
    .where = em__cuda_where,
    .softmax = em__cuda_softmax,
    .softmax_backward = em__cuda_softmax_backward,
    .causal_mask = em__cuda_causal_mask,
    .sum = em__cuda_sum,
    .sum_backward = em__cuda_sum_backward,
    .max = em__cuda_max,
    .max_backward = em__cuda_max_backward,
    .sum_to = em__cuda_sum_to,
    .accumulate = em__cuda_accumulate,
    .check_index = em__cuda_check_index,
    .index_select = em__cuda_index_select,
    .index_select_backward = em__cuda_index_select_backward,
};
