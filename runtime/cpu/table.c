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
    /* loss.c */
    /* embed.c */
    /* shape.c */
    /* optim.c */
};
