/* cuda/matmul.cu: the CUDA table's matmul (core/kernels.h) on cuBLAS, for the operand geometries
 * of em_matrix: row- or column-major matrices with any leading dimension, transposed views, and
 * batch dims that broadcast (stride 0).
 *
 * cuBLAS is column-major. A row-major C (M, N) is, in the same bytes, the column-major C^T
 * (N, M) with leading dimension N, and C^T = B^T A^T: so cuBLAS is asked for B^T A^T, with B as
 * its first operand. An operand read where it lies is, to cuBLAS, either its transpose (a
 * row-major matrix: op N) or itself (a column-major one: op T):
 *
 *   row-major X (r, c), strides (ld, 1)   = column-major X^T (c, r), ld   -> CUBLAS_OP_N
 *   col-major X (r, c), strides (1, ld)   = column-major X   (r, c), ld   -> CUBLAS_OP_T
 *
 * Batches: the broadcast batch dims are merged where all three operands step evenly through them
 * (a contiguous batch, or one broadcast whole), and the innermost merged run is one strided
 * batched GEMM (a stride of 0 repeats a broadcast operand); the outer runs, when the strides do
 * not merge, are a host loop of such calls. The bias is written into c first and the GEMM adds
 * onto it (beta = 1), as accumulate does. FP32 throughout unless EMBER_CUDA_TF32=1 (handles.c). */
#include "cuda/common.cuh"

/* c (R, N) = bias (N) broadcast over the rows. */
static __global__ void bias_rows_kernel(float *c, const float *bias, int64_t n, int64_t N) {
  EM_CUDA_FOR(i, n) c[i] = bias[i % N];
}

/* How cuBLAS reads one (r, c) matrix of an em_matrix (its last two dims). */
typedef struct {
  cublasOperation_t op;
  int64_t ld;
} mm_operand;

/* False when the geometry breaks the em_matrix contract (neither layout fits). A dim of size 1
 * leaves its stride unused; the leading dimension is then set to what cuBLAS checks it against. */
static bool mm_operand_of(const em_matrix *g, mm_operand *o) {
  int nd = g->ndim;
  int64_t r = g->dims[nd - 2], c = g->dims[nd - 1], sr = g->strides[nd - 2],
          sc = g->strides[nd - 1];
  if ((c == 1 || sc == 1) && (r == 1 || sr >= c)) { /* row-major, ld = sr */
    o->op = CUBLAS_OP_N;
    o->ld = r == 1 ? (c > 1 ? c : 1) : sr;
    return true;
  }
  if ((r == 1 || sr == 1) && (c == 1 || sc >= r)) { /* column-major, ld = sc */
    o->op = CUBLAS_OP_T;
    o->ld = c == 1 ? (r > 1 ? r : 1) : sc;
    return true;
  }
  return false;
}

/* The broadcast batch dims, merged: size[d] and each operand's element stride per step. */
typedef struct {
  int n;
  int64_t size[EM_MAX_DIMS], sa[EM_MAX_DIMS], sb[EM_MAX_DIMS], sc[EM_MAX_DIMS];
} mm_batch;

static mm_batch mm_batch_of(const em_matrix *a, const em_matrix *b, int64_t MN) {
  int nb = a->ndim - 2;
  mm_batch m = {0};
  /* c is contiguous: its batch strides, innermost first */
  int64_t csz[EM_MAX_DIMS], cst[EM_MAX_DIMS], step = MN;
  for (int d = nb - 1; d >= 0; d--) {
    csz[d] = a->dims[d] == 1 ? b->dims[d] : a->dims[d];
    cst[d] = step;
    step *= csz[d];
  }
  for (int d = 0; d < nb; d++) {
    if (csz[d] == 1) continue; /* no step at all */
    int64_t sa = a->dims[d] == 1 ? 0 : a->strides[d], sb = b->dims[d] == 1 ? 0 : b->strides[d];
    int k = m.n - 1;
    /* dim d continues the previous run when every operand steps through both evenly */
    if (k >= 0 && m.sa[k] == sa * csz[d] && m.sb[k] == sb * csz[d] && m.sc[k] == cst[d] * csz[d]) {
      m.size[k] *= csz[d];
      m.sa[k] = sa;
      m.sb[k] = sb;
      m.sc[k] = cst[d];
      continue;
    }
    m.size[m.n] = csz[d];
    m.sa[m.n] = sa;
    m.sb[m.n] = sb;
    m.sc[m.n] = cst[d];
    m.n++;
  }
  return m;
}

static em_status mm_gemms(const char *op, int index, cublasHandle_t h, const em_matrix *a,
                          const em_matrix *b, float *pc, int64_t M, int64_t N, int64_t K,
                          float beta) {
  em_status st = EM_OK;
  mm_operand oa, ob;
  if (!mm_operand_of(a, &oa) || !mm_operand_of(b, &ob))
    return em_set_error(EM_ERR_INVALID,
                        "%s on cuda:%d: an operand is neither row- nor "
                        "column-major (em_matrix contract)",
                        op, index);
  mm_batch bt = mm_batch_of(a, b, M * N);
  /* the innermost run is one strided batched call; the outer ones are looped over */
  int inner = bt.n - 1;
  int64_t count = inner >= 0 ? bt.size[inner] : 1, sa = inner >= 0 ? bt.sa[inner] : 0;
  int64_t sb = inner >= 0 ? bt.sb[inner] : 0, sc = inner >= 0 ? bt.sc[inner] : 0;
  int64_t outer = 1;
  for (int d = 0; d < inner; d++) outer *= bt.size[d];
  const float alpha = 1.0f;
  const float *pa = (const float *)em_data(a->t), *pb = (const float *)em_data(b->t);
  for (int64_t o = 0; o < outer; o++) {
    int64_t offa = 0, offb = 0, offc = 0, rest = o;
    for (int d = inner - 1; d >= 0; d--) {
      int64_t i = rest % bt.size[d];
      rest /= bt.size[d];
      offa += i * bt.sa[d];
      offb += i * bt.sb[d];
      offc += i * bt.sc[d];
    }
    /* C^T (N, M) = op(B) (N, K) op(A) (K, M), column-major */
    EM_CUBLAS_CHECK(cublasSgemmStridedBatched_64(h, ob.op, oa.op, N, M, K, &alpha, pb + offb, ob.ld,
                                                 sb, pa + offa, oa.ld, sa, &beta, pc + offc, N, sc,
                                                 count));
  }
cleanup:
  return st;
}

extern "C" em_status em__cuda_matmul(const char *op, const em_matrix *a, const em_matrix *b,
                                     const em_tensor *bias, em_tensor *c, bool accumulate) {
  int nd = a->ndim, index = c->device.index;
  int64_t M = a->dims[nd - 2], K = a->dims[nd - 1], N = b->dims[nd - 1];
  int64_t n_out = em_numel(c);
  if (n_out == 0 || (K == 0 && accumulate)) return EM_OK;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  float *pc = em_data_f32(c);
  if (bias) {
    bias_rows_kernel<<<em_cuda_blocks(n_out), EM_CUDA_THREADS, 0, s>>>(pc, em_data_f32(bias), n_out,
                                                                       N);
    em_status st = EM_CUDA_LAUNCHED(op, index);
    if (st != EM_OK || K == 0) return st;
  } else if (K == 0) { /* an empty sum: zeros */
    return em__cuda_status(cudaMemsetAsync(pc, 0, (size_t)n_out * sizeof(float), s), op, index);
  }
  cublasHandle_t h = em__cublas(index, op);
  if (!h) return em_last_status();
  return mm_gemms(op, index, h, a, b, pc, M, N, K, bias || accumulate ? 1.0f : 0.0f);
}
