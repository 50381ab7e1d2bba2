/* cpu/table.c: the CPU kernel table (oneDNN primitives and plain loops). */
#include "cpu/cpu.h"

const em_kernels em__cpu_kernels = {
    .name = "cpu",
    /* memory.c */
    .alloc = em__cpu_alloc,
    .free = em__cpu_free,
    .zero = em__cpu_zero,
    .copy_from_host = em__cpu_copy,
    .copy_to_host = em__cpu_copy,
    .copy = em__cpu_copy,
    .fill = em__cpu_fill,
    /* elementwise.c */
    .binary = em__cpu_binary,
    .affine = em__cpu_affine,
    .unary = em__cpu_unary,
    .unary_backward = em__cpu_unary_backward,
    .nonzero_mask = em__cpu_nonzero_mask,
    .where = em__cpu_where,
    /* matmul.c */
    /* softmax.c */
    /* norm.c */
    /* conv.c */
    .conv2d = em__cpu_conv2d,
    .conv2d_backward = em__cpu_conv2d_backward,
    /* pool.c */
    .pool2d = em__cpu_pool2d,
    .pool2d_backward = em__cpu_pool2d_backward,
    .adaptive_avg_pool2d = em__cpu_adaptive_avg_pool2d,
    .adaptive_avg_pool2d_backward = em__cpu_adaptive_avg_pool2d_backward,
    /* reduce.c */
    .sum = em__cpu_sum,
    .sum_backward = em__cpu_sum_backward,
    .max = em__cpu_max,
    .max_backward = em__cpu_max_backward,
    .sum_to = em__cpu_sum_to,
    .accumulate = em__cpu_accumulate,
    /* loss.c */
    .cross_entropy = em__cpu_cross_entropy,
    .cross_entropy_backward = em__cpu_cross_entropy_backward,
    .nll = em__cpu_nll,
    .nll_backward = em__cpu_nll_backward,
    .mse = em__cpu_mse,
    .mse_backward = em__cpu_mse_backward,
    /* embed.c */
    .embedding = em__cpu_embedding,
    .embedding_backward = em__cpu_embedding_backward,
    .dropout = em__cpu_dropout,
    /* shape.c */
    .copy_view = em__cpu_copy_view,
    .check_index = em__cpu_check_index,
    .index_select = em__cpu_index_select,
    .index_select_backward = em__cpu_index_select_backward,
    /* optim.c */
    .sgd_update = em__cpu_sgd_update,
    .adam_update = em__cpu_adam_update,
};
