/* cpu/matmul.c: the CPU's matmul kernels. matmul runs oneDNN's matmul primitive on the operand
 * geometry the front end describes (em_matrix, core/kernels.h); the bias gradient of linear is a
 * plain loop.
 *
 * oneDNN describes every operand by dims and element strides, so an em_matrix is exactly one
 * memory descriptor: a transposed operand, a column-major one or a batch merged into one matrix is
 * read where it lies. Primitives are cached per geometry (dims, strides, bias, accumulate) in
 * dnnl.c's cache. */
#include "cpu/cpu.h"
#include "cpu/dnnl.h"

#include <stdio.h>

static dnnl_memory_desc_t geom_md(const em_matrix *g) {
  dnnl_memory_desc_t md;
  dnnl_dims_t d, s;
  for (int k = 0; k < g->ndim; k++) {
    d[k] = g->dims[k];
    s[k] = g->strides[k];
  }
  dnnl_memory_desc_init_by_strides(&md, g->ndim, d, dnnl_f32, s);
  return md;
}

typedef struct {
  dnnl_memory_desc_t a, b, c, bias;
  bool has_bias;
  bool accumulate; /* c += a @ b: a sum post-op */
} mm_build_ctx;

static dnnl_status_t mm_build(void *vctx, dnnl_primitive_desc_t *pd) {
  mm_build_ctx *x = vctx;
  dnnl_matmul_desc_t d;
  dnnl_status_t st = dnnl_matmul_desc_init(&d, &x->a, &x->b, x->has_bias ? &x->bias : NULL, &x->c);
  if (st != dnnl_success || !x->accumulate)
    return st != dnnl_success ? st
                              : dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), NULL);
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_attr_t attr = NULL;
  if ((st = dnnl_post_ops_create(&po)) == dnnl_success &&
      (st = dnnl_post_ops_append_sum(po, 1.0f)) == dnnl_success &&
      (st = dnnl_primitive_attr_create(&attr)) == dnnl_success &&
      (st = dnnl_primitive_attr_set_post_ops(attr, po)) == dnnl_success)
    st = dnnl_primitive_desc_create(pd, &d, attr, em__dnnl_engine(), NULL);
  if (attr) dnnl_primitive_attr_destroy(attr);
  if (po) dnnl_post_ops_destroy(po);
  return st;
}

static int geom_key(char *buf, size_t n, const char *name, const em_matrix *g) {
  int k = snprintf(buf, n, " %s", name);
  for (int d = 0; d < g->ndim && (size_t)k < n; d++)
    k += snprintf(buf + k, n - (size_t)k, "%c%lld", d ? 'x' : ':', (long long)g->dims[d]);
  for (int d = 0; d < g->ndim && (size_t)k < n; d++)
    k += snprintf(buf + k, n - (size_t)k, "%c%lld", d ? ',' : '/', (long long)g->strides[d]);
  return k;
}

em_status em__cpu_matmul(const char *op, const em_matrix *a, const em_matrix *b,
                         const em_tensor *bias, em_tensor *c, bool accumulate) {
  /* c's geometry: row-major (batch..., M, N) with the broadcast batch dims */
  int nd = a->ndim;
  em_matrix gc = {.t = c, .ndim = nd};
  for (int d = 0; d < nd - 2; d++) gc.dims[d] = a->dims[d] == 1 ? b->dims[d] : a->dims[d];
  gc.dims[nd - 2] = a->dims[nd - 2];
  gc.dims[nd - 1] = b->dims[nd - 1];
  em__contig_strides(nd, gc.dims, gc.strides);
  int64_t n_out = em__shape_numel(nd, gc.dims), K = a->dims[nd - 1], N = gc.dims[nd - 1];
  float *pc = em_data_f32(c);
  const float *pbias = bias ? em_data_f32(bias) : NULL;
  if (n_out == 0) return EM_OK;
  if (K == 0) { /* empty sum: zeros (+ bias) */
    for (int64_t i = 0; i < n_out && !accumulate; i++) pc[i] = pbias ? pbias[i % N] : 0.0f;
    return EM_OK;
  }
  char key[1280]; /* room for 3 x 8 dims and strides of 20 digits: never truncated */
  int k =
      snprintf(key, sizeof key, "matmul f32%s%s", bias ? " bias" : "", accumulate ? " acc" : "");
  k += geom_key(key + k, sizeof key - (size_t)k, "a", a);
  k += geom_key(key + k, sizeof key - (size_t)k, "b", b);
  geom_key(key + k, sizeof key - (size_t)k, "c", &gc);
  mm_build_ctx x = {.a = geom_md(a),
                    .b = geom_md(b),
                    .c = geom_md(&gc),
                    .has_bias = bias != NULL,
                    .accumulate = accumulate};
  if (bias) {
    int64_t bd[2] = {1, N};
    x.bias = em__dnnl_md(2, bd);
  }
  const em_dnnl_prim *p = em__dnnl_get(key, mm_build, &x);
  if (!p) return em_last_status();
  em_dnnl_arg args[4] = {{DNNL_ARG_SRC, &x.a, em_data(a->t)},
                         {DNNL_ARG_WEIGHTS, &x.b, em_data(b->t)},
                         {DNNL_ARG_DST, &x.c, pc},
                         {DNNL_ARG_BIAS, &x.bias, (void *)pbias}};
  return em__dnnl_exec(op, p, bias ? 4 : 3, args);
}

em_status em__cpu_linear_bias_grad(const em_tensor *dy, em_tensor *db, bool accumulate) {
  int64_t N = em_numel(db), R = N ? em_numel(dy) / N : 0;
  const float *pg = em_data_f32(dy);
  float *pb = em_data_f32(db);
  if (!accumulate)
    for (int64_t j = 0; j < N; j++) pb[j] = 0.0f;
  for (int64_t r = 0; r < R; r++) {
    const float *row = pg + r * N;
#pragma omp simd
    for (int64_t j = 0; j < N; j++) pb[j] += row[j];
  }
  return EM_OK;
}
