/* cpu/cpu.h: private to runtime/cpu/. The CPU kernels that cpu/table.c puts in the CPU table; each
 * follows the contract in ops/kernels.h. One section per source file. */
#ifndef EMBER_CPU_H
#define EMBER_CPU_H

#include "ops/kernels.h"

/* ---- memory.c ---------------------------------------------------------------------------- */
void *em__cpu_alloc(int index, size_t nbytes);
void em__cpu_free(int index, void *p, size_t nbytes);
em_status em__cpu_zero(int index, void *dst, size_t nbytes);
em_status em__cpu_copy(int index, void *dst, const void *src, size_t nbytes);
em_status em__cpu_copy_strided(em_tensor *dst, const em_tensor *src);
em_status em__cpu_fill(em_tensor *t, double value);

/* ---- elementwise.c ----------------------------------------------------------------------- */
em_status em__cpu_binary(em_binop op, const em_tensor *a, const em_tensor *b, em_tensor *out);
em_status em__cpu_affine(const em_tensor *x, float mul, float add, em_tensor *y);
em_status em__cpu_unary(em_unop op, float alpha, float beta, const em_tensor *x, em_tensor *y);
em_status em__cpu_unary_backward(em_unop op, float alpha, float beta, const em_tensor *saved,
                                 const em_tensor *gy, em_tensor *gx);
em_status em__cpu_nonzero_mask(const em_tensor *cond, em_tensor *mask);
em_status em__cpu_where(const em_tensor *mask, const em_tensor *a, const em_tensor *b,
                        em_tensor *out);

/* ---- matmul.c ---------------------------------------------------------------------------- */

/* ---- softmax.c --------------------------------------------------------------------------- */

/* ---- norm.c ------------------------------------------------------------------------------ */

/* ---- conv.c ------------------------------------------------------------------------------ */
em_status em__cpu_conv2d(const em_conv2d_geom *g, const em_tensor *x, const em_tensor *w,
                         const em_tensor *b, em_tensor *y, em_tensor **xs, em_tensor **ws);
em_status em__cpu_conv2d_backward(const em_conv2d_geom *g, const em_tensor *xs, const em_tensor *ws,
                                  const em_tensor *gy, em_tensor *gx, em_tensor *gw, em_tensor *gb);

/* ---- pool.c ------------------------------------------------------------------------------ */
em_status em__cpu_pool2d(const em_pool2d_geom *g, const em_tensor *x, em_tensor *y, em_tensor **ws);
em_status em__cpu_pool2d_backward(const em_pool2d_geom *g, const em_tensor *ws, const em_tensor *gy,
                                  em_tensor *gx);
em_status em__cpu_adaptive_avg_pool2d(const em_tensor *x, em_tensor *y);
em_status em__cpu_adaptive_avg_pool2d_backward(const em_tensor *gy, em_tensor *gx);

/* ---- reduce.c ---------------------------------------------------------------------------- */

/* ---- loss.c ------------------------------------------------------------------------------ */

/* ---- embed.c ----------------------------------------------------------------------------- */

/* ---- shape.c ----------------------------------------------------------------------------- */

/* ---- optim.c ----------------------------------------------------------------------------- */

#endif
