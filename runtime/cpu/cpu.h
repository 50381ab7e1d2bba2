/* cpu/cpu.h: private to runtime/cpu/. The CPU kernels that cpu/table.c puts in the CPU table; each
 * follows the contract in core/kernels.h. One section per source file. */
#ifndef EMBER_CPU_H
#define EMBER_CPU_H

#include "core/kernels.h"

/* Hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time: the build
 * targets baseline x86-64, whose 4-wide SSE runs them 3-5x slower. Not under ThreadSanitizer: its
 * instrumented ifunc resolvers run before the TSan runtime is up and crash. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define EM_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EM_SIMD_CLONES
#endif

/* ---- memory.c ---------------------------------------------------------------------------- */
void *em__cpu_alloc(int index, size_t nbytes);
void em__cpu_free(int index, void *p, size_t nbytes);
em_status em__cpu_zero(int index, void *dst, size_t nbytes);
em_status em__cpu_copy(int index, void *dst, const void *src, size_t nbytes);
em_status em__cpu_fill(em_tensor *t, double value);
/* 16-bit gradient compression (core/kernels.h: to_half, from_half), by em_half.h's bulk
 * conversions. */
em_status em__cpu_to_half(int index, em_dtype half, uint16_t *dst, const float *src, int64_t n,
                          float scale);
em_status em__cpu_from_half(int index, em_dtype half, float *dst, const uint16_t *src, int64_t n);

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

/* ---- mask.c ------------------------------------------------------------------------------ */
em_status em__cpu_causal_mask(const em_tensor *x, float value, em_tensor *y);

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
em_status em__cpu_sum(const em_tensor *x, uint32_t mask, double scale, em_tensor *y);
em_status em__cpu_sum_backward(const em_tensor *gy, uint32_t mask, double scale, em_tensor *gx);
em_status em__cpu_max(const em_tensor *x, int64_t O, int64_t R, int64_t K, em_tensor *vals,
                      em_tensor *idx);
em_status em__cpu_max_backward(const em_tensor *idx, const em_tensor *gy, int64_t O, int64_t R,
                               int64_t K, em_tensor *gx);
em_status em__cpu_sum_to(const em_tensor *x, em_tensor *y);
em_status em__cpu_accumulate(em_tensor *y, const em_tensor *x);

/* ---- loss.c ------------------------------------------------------------------------------ */
em_status em__cpu_cross_entropy(const em_tensor *x, const em_tensor *labels, int64_t ignore,
                                em_reduction red, int64_t count, em_tensor *lse, em_tensor *loss);
em_status em__cpu_cross_entropy_backward(const em_tensor *x, const em_tensor *labels,
                                         const em_tensor *lse, int64_t ignore, const em_tensor *gy,
                                         em_reduction red, double scale, em_tensor *gx);
em_status em__cpu_nll(const em_tensor *logp, const em_tensor *labels, int64_t ignore,
                      em_reduction red, int64_t count, em_tensor *loss);
em_status em__cpu_nll_backward(const em_tensor *labels, int64_t ignore, const em_tensor *gy,
                               em_reduction red, double scale, em_tensor *gx);
em_status em__cpu_mse(const em_tensor *a, const em_tensor *b, em_reduction red, em_tensor *loss);
em_status em__cpu_mse_backward(const em_tensor *a, const em_tensor *b, const em_tensor *gy,
                               em_reduction red, double scale, em_tensor *ga);

/* ---- embed.c ----------------------------------------------------------------------------- */
em_status em__cpu_embedding(const em_tensor *weight, const em_tensor *ix, em_tensor *out);
em_status em__cpu_embedding_backward(const em_tensor *ix, const em_tensor *gy, em_tensor *gw);
em_status em__cpu_dropout(const em_tensor *x, float p, em_rng *rng, em_tensor *mask, em_tensor *y);

/* ---- shape.c ----------------------------------------------------------------------------- */
em_status em__cpu_copy_view(em_tensor *dst, const em_tensor *src);
em_status em__cpu_check_index(const em_tensor *idx, int64_t size, const int64_t *skip,
                              em_tensor *ix, int64_t *count, int64_t *bad, int64_t *bad_value);
em_status em__cpu_index_select(const em_tensor *x, int dim, const em_tensor *ix, em_tensor *out);
em_status em__cpu_index_select_backward(const em_tensor *ix, int dim, const em_tensor *gy,
                                        em_tensor *gx);

/* ---- optim.c ----------------------------------------------------------------------------- */
em_status em__cpu_sgd_update(int64_t n, float *p, const float *g, float *buf, float lr, float wd,
                             float mom, float damp, bool first, bool nesterov);
em_status em__cpu_adam_update(int64_t n, float *p, const float *g, float *m, float *v, float b1,
                              float b2, float l2, float decay, float neg_step_size, float bc2_sqrt,
                              float eps);

#endif
