/* cuda/elementwise.cu: the CUDA table's elementwise kernels (core/kernels.h: binary, affine,
 * unary, unary_backward, nonzero_mask, where), one thread per output element in grid-stride
 * loops.
 *
 * Broadcasting: each input reaches its kernel as a geometry over the output's shape whose strides
 * are 0 on the dims where the input broadcasts (missing, or of size 1), so one flat output index
 * gives every operand's element. Operands that are contiguous and of the output's shape take a
 * plain-index path.
 *
 * The unary formulas are those of the CPU table's oneDNN eltwise algorithms (see
 * cpu/elementwise.c), in float with CUDA's libm (expf, erff, tanhf, powf: within 2 ulp; oneDNN's
 * own approximations are of the same order; nvcc may fuse a multiply-add), so both devices agree
 * to about 1e-6 relative:
 *
 *   op       forward y                          backward gx (reads)
 *   exp      exp(x)                             gy * y                            (y)
 *   log      log(x)                             gy / x                            (x)
 *   sqrt     sqrt(x)                            gy / (2 y)                        (y)
 *   pow      a * x^b                            b == 0 ? 0 : gy * (a b) x^(b - 1) (x)
 *   relu     x > 0 ? x : a x                    gy * (y > 0 ? 1 : a)              (y)
 *   gelu     0.5 x (1 + erf(v)), v = x / sqrt2  gy 0.5 (1 + erf(v) + v 2/sqrt(pi) exp(-v^2)) (x)
 *   tanh     tanh(x)                            gy (1 - y)(1 + y)                 (y)
 *   sigmoid  1 / (1 + exp(-x))                  gy y (1 - y)                      (y)
 *   clamp    min(max(x, a), b)                  gy * (a < x <= b)                 (x) */
#include "cuda/common.cuh"

/* ---- broadcasting geometry ------------------------------------------------------------------ */
/* t seen in out's shape (ndim n >= t->ndim): strides 0 where t broadcasts. */
static em_cuda_geom broadcast_geom(const em_tensor *t, const em_tensor *out) {
  em_cuda_geom g;
  int n = out->ndim;
  g.ndim = n;
  for (int d = 0; d < n; d++) {
    int dt = d - (n - t->ndim);
    g.shape[d] = out->shape[d];
    g.strides[d] = (dt < 0 || t->shape[dt] == 1) ? 0 : t->strides[dt];
  }
  return g;
}

/* t is laid out exactly as the contiguous out (same shape, contiguous). */
static bool plain(const em_tensor *t, const em_tensor *out) {
  return em__same_shape(t, out) && em_is_contiguous(t);
}

/* ---- binary --------------------------------------------------------------------------------- */
template <em_binop OP> __device__ __forceinline__ float apply_binary(float x, float y) {
  switch (OP) {
  case EM_BINARY_ADD: return x + y;
  case EM_BINARY_SUB: return x - y;
  case EM_BINARY_MUL: return x * y;
  default: return x / y;
  }
}

template <em_binop OP>
__global__ void binary_plain_kernel(const float *a, const float *b, float *out, int64_t n) {
  EM_CUDA_FOR(i, n) out[i] = apply_binary<OP>(a[i], b[i]);
}

template <em_binop OP>
__global__ void binary_strided_kernel(const float *a, em_cuda_geom ga, const float *b,
                                      em_cuda_geom gb, float *out, int64_t n) {
  EM_CUDA_FOR(i, n) out[i] = apply_binary<OP>(a[em_cuda_offset(ga, i)], b[em_cuda_offset(gb, i)]);
}

template <em_binop OP>
static void launch_binary(const em_tensor *a, const em_tensor *b, em_tensor *out, int64_t n,
                          cudaStream_t s) {
  const float *pa = em_data_f32(a), *pb = em_data_f32(b);
  float *po = em_data_f32(out);
  if (plain(a, out) && plain(b, out))
    binary_plain_kernel<OP><<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(pa, pb, po, n);
  else
    binary_strided_kernel<OP><<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
        pa, broadcast_geom(a, out), pb, broadcast_geom(b, out), po, n);
}

extern "C" em_status em__cuda_binary(em_binop op, const em_tensor *a, const em_tensor *b,
                                     em_tensor *out) {
  int64_t n = em_numel(out);
  if (n == 0) return EM_OK;
  int index = out->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  switch (op) {
  case EM_BINARY_ADD: launch_binary<EM_BINARY_ADD>(a, b, out, n, s); break;
  case EM_BINARY_SUB: launch_binary<EM_BINARY_SUB>(a, b, out, n, s); break;
  case EM_BINARY_MUL: launch_binary<EM_BINARY_MUL>(a, b, out, n, s); break;
  case EM_BINARY_DIV: launch_binary<EM_BINARY_DIV>(a, b, out, n, s); break;
  }
  return EM_CUDA_LAUNCHED("binary", index);
}

/* ---- affine --------------------------------------------------------------------------------- */
/* Two roundings, as the CPU's baseline build: __fmul_rn keeps nvcc from fusing a multiply-add,
 * whose single rounding differs most where x * mul nearly cancels add. */
__global__ void affine_kernel(const float *x, float mul, float add, float *y, int64_t n) {
  EM_CUDA_FOR(i, n) y[i] = __fmul_rn(x[i], mul) + add;
}

extern "C" em_status em__cuda_affine(const em_tensor *x, float mul, float add, em_tensor *y) {
  int64_t n = em_numel(y);
  if (n == 0) return EM_OK;
  int index = y->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  affine_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(em_data_f32(x), mul, add,
                                                              em_data_f32(y), n);
  return EM_CUDA_LAUNCHED("affine", index);
}

/* ---- unary ops ------------------------------------------------------------------------------ */
/* oneDNN's constants for gelu_erf (float): sqrt(2) / 2 and 2 / sqrt(pi). */
#define EM_SQRT1_2F 0.707106769084930419921875f
#define EM_2_SQRTPIF 1.12837922573089599609375f

__device__ __forceinline__ float unary_fwd(em_unop op, float a, float b, float x) {
  switch (op) {
  case EM_UNARY_EXP: return expf(x);
  case EM_UNARY_LOG: return logf(x);
  case EM_UNARY_SQRT: return sqrtf(x);
  case EM_UNARY_POW: return a * powf(x, b);
  case EM_UNARY_RELU: return x > 0 ? x : x * a;
  case EM_UNARY_GELU: return 0.5f * x * (1.f + erff(x * EM_SQRT1_2F));
  case EM_UNARY_TANH: return tanhf(x);
  case EM_UNARY_SIGMOID: return 1.f / (1.f + expf(-x));
  case EM_UNARY_CLAMP: {
    float v = x > a ? x : a;
    return v > b ? b : v;
  }
  default: return 0.f;
  }
}

/* s: the saved tensor's element, x or y as em__unary_uses_output says. */
__device__ __forceinline__ float unary_bwd(em_unop op, float a, float b, float s, float gy) {
  switch (op) {
  case EM_UNARY_EXP: return gy * s;
  case EM_UNARY_LOG: return gy / s;
  case EM_UNARY_SQRT: return gy / (2.f * s);
  case EM_UNARY_POW: return b == 0.f ? 0.f : gy * (a * b * powf(s, b - 1.f));
  case EM_UNARY_RELU: return gy * (s > 0 ? 1.f : a);
  case EM_UNARY_GELU: {
    float v = s * EM_SQRT1_2F;
    return gy * 0.5f * (1.f + erff(v) + v * EM_2_SQRTPIF * expf(-v * v));
  }
  case EM_UNARY_TANH: return gy * (1.f - s) * (1.f + s);
  case EM_UNARY_SIGMOID: return gy * s * (1.f - s);
  case EM_UNARY_CLAMP: return gy * (a < s && s <= b ? 1.f : 0.f);
  default: return 0.f;
  }
}

__global__ void unary_kernel(em_unop op, float a, float b, const float *x, float *y, int64_t n) {
  EM_CUDA_FOR(i, n) y[i] = unary_fwd(op, a, b, x[i]);
}

__global__ void unary_backward_kernel(em_unop op, float a, float b, const float *saved,
                                      const float *gy, float *gx, int64_t n) {
  EM_CUDA_FOR(i, n) gx[i] = unary_bwd(op, a, b, saved[i], gy[i]);
}

static em_status check_unop(em_unop op, const char *what) {
  if ((int)op < 0 || op >= EM_UNARY_COUNT)
    return em_set_error(EM_ERR_INVALID, "%s: unknown unary op %d on cuda", what, (int)op);
  return EM_OK;
}

extern "C" em_status em__cuda_unary(em_unop op, float alpha, float beta, const em_tensor *x,
                                    em_tensor *y) {
  int64_t n = em_numel(y);
  if (check_unop(op, "unary") != EM_OK) return em_last_status();
  if (n == 0) return EM_OK;
  int index = y->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  unary_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(op, alpha, beta, em_data_f32(x),
                                                             em_data_f32(y), n);
  return EM_CUDA_LAUNCHED("unary", index);
}

extern "C" em_status em__cuda_unary_backward(em_unop op, float alpha, float beta,
                                             const em_tensor *saved, const em_tensor *gy,
                                             em_tensor *gx) {
  int64_t n = em_numel(gx);
  if (check_unop(op, "unary backward") != EM_OK) return em_last_status();
  if (n == 0) return EM_OK;
  int index = gx->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  unary_backward_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      op, alpha, beta, em_data_f32(saved), em_data_f32(gy), em_data_f32(gx), n);
  return EM_CUDA_LAUNCHED("unary backward", index);
}

/* ---- where ---------------------------------------------------------------------------------- */
template <typename T> __global__ void nonzero_kernel(const T *c, uint8_t *m, int64_t n) {
  EM_CUDA_FOR(i, n) m[i] = c[i] != 0;
}

/* bf16 and f16 by their bits: nonzero unless +0 or -0 (NaN is nonzero, as in f32). */
__global__ void nonzero_half_kernel(const uint16_t *c, uint8_t *m, int64_t n) {
  EM_CUDA_FOR(i, n) m[i] = (c[i] & 0x7fff) != 0;
}

extern "C" em_status em__cuda_nonzero_mask(const em_tensor *cond, em_tensor *mask) {
  int64_t n = em_numel(mask);
  if (n == 0) return EM_OK;
  int index = mask->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  const void *p = em_data(cond);
  uint8_t *m = (uint8_t *)em_data(mask);
  unsigned blocks = em_cuda_blocks(n);
  switch (cond->dtype) {
  case EM_F32:
    nonzero_kernel<float><<<blocks, EM_CUDA_THREADS, 0, s>>>((const float *)p, m, n);
    break;
  case EM_I64:
    nonzero_kernel<int64_t><<<blocks, EM_CUDA_THREADS, 0, s>>>((const int64_t *)p, m, n);
    break;
  case EM_I32:
    nonzero_kernel<int32_t><<<blocks, EM_CUDA_THREADS, 0, s>>>((const int32_t *)p, m, n);
    break;
  case EM_U8:
    nonzero_kernel<uint8_t><<<blocks, EM_CUDA_THREADS, 0, s>>>((const uint8_t *)p, m, n);
    break;
  case EM_F16:
  case EM_BF16:
    nonzero_half_kernel<<<blocks, EM_CUDA_THREADS, 0, s>>>((const uint16_t *)p, m, n);
    break;
  default:
    return em_set_error(EM_ERR_UNSUPPORTED, "where: condition dtype %s on cuda",
                        em_dtype_name(cond->dtype));
  }
  return EM_CUDA_LAUNCHED("where (condition)", index);
}

__global__ void where_kernel(const uint8_t *m, em_cuda_geom gm, const float *a, em_cuda_geom ga,
                             const float *b, em_cuda_geom gb, float *out, int64_t n) {
  EM_CUDA_FOR(i, n) {
    out[i] = m[em_cuda_offset(gm, i)] ? a[em_cuda_offset(ga, i)] : b[em_cuda_offset(gb, i)];
  }
}

extern "C" em_status em__cuda_where(const em_tensor *mask, const em_tensor *a, const em_tensor *b,
                                    em_tensor *out) {
  int64_t n = em_numel(out);
  if (n == 0) return EM_OK;
  int index = out->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  where_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      (const uint8_t *)em_data(mask), broadcast_geom(mask, out), em_data_f32(a),
      broadcast_geom(a, out), em_data_f32(b), broadcast_geom(b, out), em_data_f32(out), n);
  return EM_CUDA_LAUNCHED("where", index);
}
