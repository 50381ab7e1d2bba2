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
