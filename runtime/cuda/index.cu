/* cuda/index.cu: the CUDA table's index kernels (core/kernels.h: check_index, index_select,
 * index_select_backward).
 *
 * check_index must report the FIRST bad position, as the CPU's loop does, whatever order the
 * threads run in. Two kernels on the compute stream and one small read back:
 *
 *   scan:   ix[i] = idx[i]; a bad value at i -> atomicMin(first, i)      (first starts at ~0)
 *   count:  the values not passed over at positions < first (all of them when none is bad)
 *   host:   read first and count; if a position is bad, read idx[first] itself
 *
 * so the position, its value and the count are those of the CPU, bit for bit.
 *
 * index_select_backward adds gy's rows into gx with atomicAdd: with a repeated index, the rows
 * meet in an order that varies from run to run, and the sums may differ from the CPU's (which
 * adds them in index order) by a float rounding per repeat. */
#include "cuda/blockreduce.cuh"

/* ---- check_index ---------------------------------------------------------------------------- */
/* state[0]: the first bad position (unsigned, ~0 when none); state[1]: the count. */
__global__ void check_init_kernel(unsigned long long *state) {
  state[0] = ~0ull;
  state[1] = 0;
}

__device__ __forceinline__ int64_t index_at(const void *p, bool wide, int64_t i) {
  return wide ? ((const int64_t *)p)[i] : ((const int32_t *)p)[i];
}

__global__ void check_scan_kernel(const void *p, bool wide, int64_t n, int64_t size, bool has_skip,
                                  int64_t skip, int64_t *ix, unsigned long long *state) {
  EM_CUDA_FOR(i, n) {
    int64_t v = index_at(p, wide, i);
    if (ix) ix[i] = v;
    if (has_skip && v == skip) continue;
    if (v < 0 || v >= size) atomicMin(&state[0], (unsigned long long)i);
  }
}

/* Runs after check_scan_kernel (same stream): state[0] is final. */
__global__ void check_count_kernel(const void *p, bool wide, int64_t n, bool has_skip, int64_t skip,
                                   unsigned long long *state) {
  __shared__ unsigned long long scratch[32];
  unsigned long long first = state[0];
  int64_t end = first < (unsigned long long)n ? (int64_t)first : n;
  unsigned long long c = 0;
  EM_CUDA_FOR(i, end) c += !(has_skip && index_at(p, wide, i) == skip);
  c = em_block_reduce(c, em_sum_op<unsigned long long>(), 0ull, scratch);
  if (threadIdx.x == 0 && c) atomicAdd(&state[1], c);
}

extern "C" em_status em__cuda_check_index(const em_tensor *idx, int64_t size, const int64_t *skip,
                                          em_tensor *ix, int64_t *count, int64_t *bad,
                                          int64_t *bad_value) {
  *count = 0;
  *bad = -1;
  *bad_value = 0;
  int64_t n = em_numel(idx);
  if (n == 0) return EM_OK;
  int index = idx->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  int64_t two = 2;
  em_tensor *st = em__alloc_on(idx->device, EM_I64, 1, &two, false); /* owned here */
  if (!st) return em_last_status();
  unsigned long long *state = (unsigned long long *)em_data(st);
  unsigned long long host[2];
  const void *p = em_data(idx);
  bool wide = idx->dtype == EM_I64;
  int64_t sk = skip ? *skip : 0;
  int64_t *pix = ix ? (int64_t *)em_data(ix) : NULL;
  em_status rc;
  check_init_kernel<<<1, 1, 0, s>>>(state);
  if ((rc = EM_CUDA_LAUNCHED("index check", index)) != EM_OK) goto done;
  check_scan_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(p, wide, n, size, skip != NULL,
                                                                  sk, pix, state);
  if ((rc = EM_CUDA_LAUNCHED("index check", index)) != EM_OK) goto done;
  check_count_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(p, wide, n, skip != NULL, sk,
                                                                   state);
  if ((rc = EM_CUDA_LAUNCHED("index check", index)) != EM_OK) goto done;
  /* A blocking read: it waits for the kernels on the compute stream. */
  if ((rc = em__cuda_copy_to_host(index, host, state, sizeof host)) != EM_OK) goto done;
  *count = (int64_t)host[1];
  if (host[0] < (unsigned long long)n) {
    size_t es = em_dtype_size(idx->dtype);
    int64_t v64 = 0;
    int32_t v32 = 0;
    rc = em__cuda_copy_to_host(index, wide ? (void *)&v64 : (void *)&v32,
                               (const char *)p + host[0] * es, es);
    if (rc != EM_OK) goto done;
    *bad = (int64_t)host[0];
    *bad_value = wide ? v64 : v32;
  }
done:
  em_release(st);
  return rc;
}

/* ---- index_select --------------------------------------------------------------------------- */
/* t seen as (outer, size, inner) around dim d. */
static void split_dims(const em_tensor *t, int d, int64_t *outer, int64_t *inner) {
  *outer = 1;
  *inner = 1;
  for (int j = 0; j < d; j++) *outer *= t->shape[j];
  for (int j = d + 1; j < t->ndim; j++) *inner *= t->shape[j];
}

/* out (O, m, I) element e = x (O, S, I) at (o, ix[j], i), moved as T (of the dtype's size). */
template <typename T>
__global__ void index_select_kernel(const T *x, const int64_t *ix, int64_t S, int64_t m, int64_t I,
                                    T *out, int64_t n) {
  EM_CUDA_FOR(e, n) {
    int64_t i = e % I, j = (e / I) % m, o = e / (I * m);
    out[e] = x[(o * S + ix[j]) * I + i];
  }
}

template <typename T>
static void launch_select(const em_tensor *x, const int64_t *ix, int64_t S, int64_t m, int64_t I,
                          em_tensor *out, int64_t n, cudaStream_t s) {
  index_select_kernel<T><<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>((const T *)em_data(x), ix, S,
                                                                       m, I, (T *)em_data(out), n);
}

extern "C" em_status em__cuda_index_select(const em_tensor *x, int dim, const em_tensor *ix,
                                           em_tensor *out) {
  int64_t n = em_numel(out);
  if (n == 0) return EM_OK;
  int index = out->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  int64_t O, I, m = em_numel(ix), S = x->shape[dim];
  split_dims(x, dim, &O, &I);
  const int64_t *pi = (const int64_t *)em_data(ix);
  size_t es = em_dtype_size(x->dtype);
  switch (es) {
  case 1: launch_select<uint8_t>(x, pi, S, m, I, out, n, s); break;
  case 2: launch_select<uint16_t>(x, pi, S, m, I, out, n, s); break;
  case 4: launch_select<uint32_t>(x, pi, S, m, I, out, n, s); break;
  case 8: launch_select<uint64_t>(x, pi, S, m, I, out, n, s); break;
  default: return em_set_error(EM_ERR_UNSUPPORTED, "index_select: element size %zu on cuda", es);
  }
  return EM_CUDA_LAUNCHED("index_select", index);
}

__global__ void index_add_kernel(const float *gy, const int64_t *ix, int64_t S, int64_t m,
                                 int64_t I, float *gx, int64_t n) {
  EM_CUDA_FOR(e, n) {
    int64_t i = e % I, j = (e / I) % m, o = e / (I * m);
    atomicAdd(&gx[(o * S + ix[j]) * I + i], gy[e]);
  }
}

extern "C" em_status em__cuda_index_select_backward(const em_tensor *ix, int dim,
                                                    const em_tensor *gy, em_tensor *gx) {
  int64_t ngx = em_numel(gx), n = em_numel(gy);
  if (ngx == 0) return EM_OK;
  int index = gx->device.index;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  em_status rc = em__cuda_status(cudaMemsetAsync(em_data(gx), 0, (size_t)ngx * sizeof(float), s),
                                 "index_select backward", index);
  if (rc != EM_OK || n == 0) return rc;
  int64_t O, I, m = em_numel(ix), S = gx->shape[dim];
  split_dims(gx, dim, &O, &I);
  index_add_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      em_data_f32(gy), (const int64_t *)em_data(ix), S, m, I, em_data_f32(gx), n);
  return EM_CUDA_LAUNCHED("index_select backward", index);
}
