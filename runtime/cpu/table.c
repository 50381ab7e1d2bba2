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
    .copy_strided = em__cpu_copy_strided,
    .fill = em__cpu_fill,
    /* elementwise.c */
    .binary = em__cpu_binary,
    .affine = em__cpu_affine,
    .unary = em__cpu_unary,
    .unary_backward = em__cpu_unary_backward,
    .nonzero_mask = em__cpu_nonzero_mask,
    .where = em__cpu_where,
    /* matmul.c */
    .matmul = em__cpu_matmul,
    .linear_bias_grad = em__cpu_linear_bias_grad,
    /* softmax.c */
    .softmax = em__cpu_softmax,
    .softmax_backward = em__cpu_softmax_backward,
    /* norm.c */
    .batch_norm = em__cpu_batch_norm,
    .batch_norm_backward = em__cpu_batch_norm_backward,
    .batch_norm_update_stats = em__cpu_batch_norm_update_stats,
    .layer_norm = em__cpu_layer_norm,
    .layer_norm_backward = em__cpu_layer_norm_backward,
    /* conv.c */
    /* pool.c */
    /* reduce.c */
    /* loss.c */
    /* embed.c */
    /* shape.c */
    /* optim.c */
};
