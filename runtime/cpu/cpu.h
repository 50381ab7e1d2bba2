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
em_status em__cpu_matmul(const char *op, const em_matrix *a, const em_matrix *b,
                         const em_tensor *bias, em_tensor *c, bool accumulate);
em_status em__cpu_linear_bias_grad(const em_tensor *dy, em_tensor *db, bool accumulate);

/* ---- softmax.c --------------------------------------------------------------------------- */
em_status em__cpu_softmax(bool log, const em_tensor *x, int dim, em_tensor *y);
em_status em__cpu_softmax_backward(bool log, const em_tensor *y, const em_tensor *dy, int dim,
                                   em_tensor *dx);

/* ---- norm.c ------------------------------------------------------------------------------ */
em_status em__cpu_batch_norm(const em_tensor *x, const em_tensor *weight, const em_tensor *bias,
                             bool training, float eps, em_tensor *y, em_tensor *mean,
                             em_tensor *var);
em_status em__cpu_batch_norm_backward(const em_tensor *x, const em_tensor *dy,
                                      const em_tensor *mean, const em_tensor *var,
                                      const em_tensor *weight, const em_tensor *bias, bool training,
                                      float eps, em_tensor *dx, em_tensor *dw, em_tensor *db);
em_status em__cpu_batch_norm_update_stats(em_tensor *running_mean, em_tensor *running_var,
                                          const em_tensor *mean, const em_tensor *var,
                                          float momentum, int64_t M);
em_status em__cpu_layer_norm(const em_tensor *x, const em_tensor *weight, const em_tensor *bias,
                             float eps, em_tensor *y, em_tensor *mean, em_tensor *rstd);
em_status em__cpu_layer_norm_backward(const em_tensor *x, const em_tensor *dy,
                                      const em_tensor *mean, const em_tensor *rstd,
                                      const em_tensor *weight, em_tensor *dx, em_tensor *dw,
                                      em_tensor *db);

/* ---- conv.c ------------------------------------------------------------------------------ */

/* ---- pool.c ------------------------------------------------------------------------------ */

/* ---- reduce.c ---------------------------------------------------------------------------- */

/* ---- loss.c ------------------------------------------------------------------------------ */

/* ---- embed.c ----------------------------------------------------------------------------- */

/* ---- shape.c ----------------------------------------------------------------------------- */

/* ---- optim.c ----------------------------------------------------------------------------- */

#endif
