/* cuda/conv.cu: the CUDA table's 2-D convolution (core/kernels.h: conv2d, conv2d_backward) on
 * cuDNN, built only with cuDNN (EMBER_HAVE_CUDNN; without it the slots stay NULL).
 *
 *   forward:   y = conv(x, w)              cudnnConvolutionForward,        then y += b (ours)
 *   backward:  gx = conv^T(gy, w)          cudnnConvolutionBackwardData
 *              gw = corr(x, gy)            cudnnConvolutionBackwardFilter, gb = sum gy (ours)
 *
 * Tensors stay in their plain NCHW / OIHW layouts (cuDNN reads them as they are), so the
 * forward hands no xs/ws of its own to the front end. Groups, stride, padding and dilation are
 * the convolution descriptor's; cuDNN counts dilation as PyTorch does (1 = none).
 *
 * Each geometry (with the device and the TF32 setting) gets one cache entry, made on first use:
 * the descriptors and, for each of the three passes, an algorithm from cuDNN's heuristics
 * (cudnnGet*Algorithm_v7: no trial runs, no memory of cuDNN's own), the first that is
 * deterministic and keeps f32 arithmetic (FMA math; TF32 tensor ops only with
 * EMBER_CUDA_TF32=1; never a conversion to f16), and its workspace size. The workspace is a
 * device tensor allocated through Ember's allocator for the call. The bias and its gradient are
 * small kernels of ours (the bias gradient sums in float64 per channel), so that the empty cases
 * that cuDNN's descriptors cannot describe (C == 0, N == 0, an empty x) share them. */
#ifdef EMBER_HAVE_CUDNN
#include "cuda/blockreduce.cuh"
#include "cuda/dnn.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- bias kernels ------------------------------------------------------------------------ */
/* y (N, O, HW) = (add ? y : 0) + (b ? b[o] : 0). */
static __global__ void conv_bias_kernel(float *y, const float *b, bool add, int64_t O, int64_t HW,
                                        int64_t n) {
  EM_CUDA_FOR(i, n) y[i] = (add ? y[i] : 0.0f) + (b ? b[i / HW % O] : 0.0f);
}

/* The block's sum of v (every thread calls it; sh: 32 doubles of shared memory). */
static __device__ __forceinline__ double conv_block_sum(double v, double *sh) {
  return em_block_reduce(v, em_sum_op<double>(), 0.0, sh);
}

/* Block o: gb[o] = the sum of gy (N, O, HW) over N and HW, in float64. */
static __global__ void conv_bias_grad_kernel(const float *gy, float *gb, int64_t N, int64_t O,
                                             int64_t HW) {
  __shared__ double sh[32];
  int64_t o = blockIdx.x, M = N * HW;
  double acc = 0;
  for (int64_t k = threadIdx.x; k < M; k += blockDim.x) acc += gy[(k / HW * O + o) * HW + k % HW];
  double total = conv_block_sum(acc, sh);
  if (threadIdx.x == 0) gb[o] = (float)total;
}

/* ---- the per-geometry cache ---------------------------------------------------------------- */
enum { PASS_FWD, PASS_DATA, PASS_FILTER, N_PASSES };
#define KEY_LEN 18

typedef struct conv_entry {
  int64_t key[KEY_LEN]; /* the geometry, the device index, TF32 */
  cudnnTensorDescriptor_t x, y;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t conv[N_PASSES]; /* each with its algorithm's math type */
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t data;
  cudnnConvolutionBwdFilterAlgo_t filter;
  size_t ws[N_PASSES]; /* workspace bytes */
  struct conv_entry *next;
} conv_entry;

#define N_BUCKETS 256
static conv_entry *buckets[N_BUCKETS];
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static void key_of(const em_conv2d_geom *g, int index, bool tf32, int64_t *k) {
  int64_t v[KEY_LEN] = {g->N,         g->C,          g->H,          g->W,           g->O,
                        g->KH,        g->KW,         g->OH,         g->OW,          g->stride[0],
                        g->stride[1], g->padding[0], g->padding[1], g->dilation[0], g->dilation[1],
                        g->groups,    index,         tf32};
  memcpy(k, v, sizeof v);
}

static uint64_t key_hash(const int64_t *k) { /* FNV-1a over the key's bytes */
  const unsigned char *b = (const unsigned char *)k;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < KEY_LEN * sizeof(int64_t); i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

static void entry_free(conv_entry *e) {
  if (!e) return;
  if (e->x) cudnnDestroyTensorDescriptor(e->x);
  if (e->y) cudnnDestroyTensorDescriptor(e->y);
  if (e->w) cudnnDestroyFilterDescriptor(e->w);
  for (int p = 0; p < N_PASSES; p++)
    if (e->conv[p]) cudnnDestroyConvolutionDescriptor(e->conv[p]);
  free(e);
}

/* Free the cache at exit so LeakSanitizer sees a clean process. */
__attribute__((destructor)) static void conv_cache_free(void) {
  for (int b = 0; b < N_BUCKETS; b++) {
    for (conv_entry *e = buckets[b], *nx; e; e = nx) {
      nx = e->next;
      entry_free(e);
    }
    buckets[b] = NULL;
  }
}

/* The first usable algorithm of cuDNN's ranked list: succeeded, keeps f32 arithmetic (TF32 only
 * when allowed; never f16 conversion), deterministic if any is. -1 when none. */
template <typename Perf> static int pick_algo(const Perf *p, int n, bool tf32) {
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < n; i++) {
      bool math_ok = p[i].mathType == CUDNN_FMA_MATH || p[i].mathType == CUDNN_DEFAULT_MATH ||
                     (tf32 && p[i].mathType == CUDNN_TENSOR_OP_MATH);
      if (p[i].status == CUDNN_STATUS_SUCCESS && math_ok &&
          (pass == 1 || p[i].determinism == CUDNN_DETERMINISTIC))
        return i;
    }
  return -1;
}

/* Without TF32 every pass runs with FMA math, whatever the heuristics ranked it under (for f32
 * data, the default math type would let cuDNN use TF32 tensor cores on Ampere and later). */
template <typename Perf>
static em_status set_math(const Perf &p, bool tf32, cudnnConvolutionDescriptor_t d, const char *op,
                          int index) {
  em_status st = EM_OK;
  EM_CUDNN_CHECK(cudnnSetConvolutionMathType(d, tf32 ? p.mathType : CUDNN_FMA_MATH));
cleanup:
  return st;
}

static em_status choose_algos(cudnnHandle_t h, conv_entry *e, bool tf32, const char *op,
                              int index) {
  em_status st = EM_OK;
  int n = 0, k;
  {
    cudnnConvolutionFwdAlgoPerf_t p[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    EM_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, e->x, e->w, e->conv[PASS_FWD], e->y,
                                                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, p));
    if ((k = pick_algo(p, n, tf32)) < 0) goto none;
    e->fwd = p[k].algo;
    if ((st = set_math(p[k], tf32, e->conv[PASS_FWD], op, index)) != EM_OK) goto cleanup;
    EM_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, e->x, e->w, e->conv[PASS_FWD], e->y,
                                                           e->fwd, &e->ws[PASS_FWD]));
  }
  {
    cudnnConvolutionBwdDataAlgoPerf_t p[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    EM_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        h, e->w, e->y, e->conv[PASS_DATA], e->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, p));
    if ((k = pick_algo(p, n, tf32)) < 0) goto none;
    e->data = p[k].algo;
    if ((st = set_math(p[k], tf32, e->conv[PASS_DATA], op, index)) != EM_OK) goto cleanup;
    EM_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, e->w, e->y, e->conv[PASS_DATA],
                                                                e->x, e->data, &e->ws[PASS_DATA]));
  }
  {
    cudnnConvolutionBwdFilterAlgoPerf_t p[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    EM_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        h, e->x, e->y, e->conv[PASS_FILTER], e->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, p));
    if ((k = pick_algo(p, n, tf32)) < 0) goto none;
    e->filter = p[k].algo;
    if ((st = set_math(p[k], tf32, e->conv[PASS_FILTER], op, index)) != EM_OK) goto cleanup;
    EM_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
        h, e->x, e->y, e->conv[PASS_FILTER], e->w, e->filter, &e->ws[PASS_FILTER]));
  }
  return EM_OK;
none:
  st = em_set_error(EM_ERR_UNSUPPORTED,
                    "%s on cuda:%d: cuDNN offers no f32 algorithm for this "
                    "geometry",
                    op, index);
cleanup:
  return st;
}

/* cuDNN takes int dims: a dim past INT_MAX is refused rather than truncated. */
static bool fits_int(const em_conv2d_geom *g) {
  int64_t v[] = {g->N, g->C, g->H, g->W, g->O, g->KH, g->KW, g->OH, g->OW};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    if (v[i] > 2147483647) return false;
  return true;
}

static em_status entry_make(cudnnHandle_t h, const em_conv2d_geom *g, bool tf32, const char *op,
                            int index, conv_entry *e) {
  em_status st = EM_OK;
  int n, c, oh, ow;
  if (!fits_int(g)) {
    st = em_set_error(EM_ERR_UNSUPPORTED, "%s on cuda:%d: a dimension exceeds cuDNN's int range",
                      op, index);
    goto cleanup;
  }
  EM_CUDNN_CHECK(cudnnCreateTensorDescriptor(&e->x));
  EM_CUDNN_CHECK(cudnnCreateTensorDescriptor(&e->y));
  EM_CUDNN_CHECK(cudnnCreateFilterDescriptor(&e->w));
  EM_CUDNN_CHECK(cudnnSetTensor4dDescriptor(e->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)g->N,
                                            (int)g->C, (int)g->H, (int)g->W));
  EM_CUDNN_CHECK(cudnnSetTensor4dDescriptor(e->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)g->N,
                                            (int)g->O, (int)g->OH, (int)g->OW));
  EM_CUDNN_CHECK(cudnnSetFilter4dDescriptor(e->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)g->O,
                                            (int)(g->C / g->groups), (int)g->KH, (int)g->KW));
  for (int p = 0; p < N_PASSES; p++) {
    EM_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&e->conv[p]));
    EM_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
        e->conv[p], (int)g->padding[0], (int)g->padding[1], (int)g->stride[0], (int)g->stride[1],
        (int)g->dilation[0], (int)g->dilation[1], CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    EM_CUDNN_CHECK(cudnnSetConvolutionGroupCount(e->conv[p], (int)g->groups));
    EM_CUDNN_CHECK(
        cudnnSetConvolutionMathType(e->conv[p], tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
  }
  /* cuDNN's output size must be the front end's */
  EM_CUDNN_CHECK(
      cudnnGetConvolution2dForwardOutputDim(e->conv[PASS_FWD], e->x, e->w, &n, &c, &oh, &ow));
  if (n != g->N || c != g->O || oh != g->OH || ow != g->OW) {
    st = em_set_error(EM_ERR_BACKEND,
                      "%s on cuda:%d: cuDNN's output %dx%dx%dx%d differs from "
                      "(%lld, %lld, %lld, %lld)",
                      op, index, n, c, oh, ow, (long long)g->N, (long long)g->O, (long long)g->OH,
                      (long long)g->OW);
    goto cleanup;
  }
  st = choose_algos(h, e, tf32, op, index);
cleanup:
  return st;
}

/* The cache entry of g on device index (made on first use); NULL with the error set. */
static const conv_entry *conv_entry_get(cudnnHandle_t h, const em_conv2d_geom *g, int index,
                                        const char *op) {
  bool tf32;
  if (em__cuda_tf32(&tf32) != EM_OK) return NULL;
  int64_t key[KEY_LEN];
  key_of(g, index, tf32, key);
  uint64_t hash = key_hash(key);
  pthread_mutex_lock(&cache_lock);
  conv_entry *e = buckets[hash % N_BUCKETS];
  while (e && memcmp(e->key, key, sizeof key) != 0) e = e->next;
  if (!e) {
    e = (conv_entry *)calloc(1, sizeof *e);
    if (!e)
      em_set_error(EM_ERR_NOMEM, "%s on cuda:%d: out of host memory", op, index);
    else if (entry_make(h, g, tf32, op, index, e) != EM_OK) {
      entry_free(e);
      e = NULL;
    } else {
      memcpy(e->key, key, sizeof key);
      e->next = buckets[hash % N_BUCKETS];
      buckets[hash % N_BUCKETS] = e;
    }
  }
  pthread_mutex_unlock(&cache_lock);
  return e;
}

/* ---- the kernels ------------------------------------------------------------------------- */
/* A workspace of bytes on the device for one call (NULL tensor when 0 bytes); *ok false with the
 * error set when it cannot be had. The caller releases it. */
static em_tensor *workspace(em_device dev, size_t bytes, bool *ok) {
  *ok = true;
  if (bytes == 0) return NULL;
  int64_t n = (int64_t)bytes;
  em_tensor *t = em__alloc_on(dev, EM_U8, 1, &n, false);
  *ok = t != NULL;
  return t;
}

/* x holds no element, or y none, or the sums are empty: what cuDNN's descriptors cannot say. */
static bool conv_empty(const em_conv2d_geom *g) {
  return g->N * g->C * g->H * g->W == 0 || g->O * g->OH * g->OW == 0;
}

extern "C" em_status em__cuda_conv2d(const em_conv2d_geom *g, const em_tensor *x,
                                     const em_tensor *w, const em_tensor *b, em_tensor *y,
                                     em_tensor **xs, em_tensor **ws) {
  static const char *op = "conv2d";
  int index = y->device.index;
  *xs = *ws = NULL; /* cuDNN reads the plain layouts: nothing of ours to keep */
  int64_t n = em_numel(y);
  if (n == 0) return EM_OK;
  em_status st = EM_OK;
  em_tensor *work = NULL;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  if (!conv_empty(g)) {
    const float one = 1.0f, zero = 0.0f;
    cudnnHandle_t h = em__cudnn(index, op);
    const conv_entry *e = h ? conv_entry_get(h, g, index, op) : NULL;
    if (!e) return em_last_status();
    bool ok;
    work = workspace(y->device, e->ws[PASS_FWD], &ok);
    if (!ok) return em_last_status();
    EM_CUDNN_CHECK(cudnnConvolutionForward(h, &one, e->x, em_data(x), e->w, em_data(w),
                                           e->conv[PASS_FWD], e->fwd, work ? em_data(work) : NULL,
                                           e->ws[PASS_FWD], &zero, e->y, em_data(y)));
    if (!b) goto cleanup;
  }
  /* y += b, or y = b (or 0) where the sum is empty */
  conv_bias_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(
      em_data_f32(y), b ? em_data_f32(b) : NULL, !conv_empty(g), g->O, g->OH * g->OW, n);
  st = EM_CUDA_LAUNCHED(op, index);
cleanup:
  em_release(work);
  return st;
}

static em_status zero_out(em_tensor *t, cudaStream_t s, const char *op, int index) {
  size_t bytes = t ? (size_t)em_numel(t) * sizeof(float) : 0;
  return bytes ? em__cuda_status(cudaMemsetAsync(em_data(t), 0, bytes, s), op, index) : EM_OK;
}

extern "C" em_status em__cuda_conv2d_backward(const em_conv2d_geom *g, const em_tensor *xs,
                                              const em_tensor *ws, const em_tensor *gy,
                                              em_tensor *gx, em_tensor *gw, em_tensor *gb) {
  static const char *op = "conv2d backward";
  int index = gy->device.index;
  em_status st = EM_OK;
  em_tensor *work = NULL;
  const float one = 1.0f, zero = 0.0f;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  if (gb && g->O > 0) { /* the bias gradient: a sum of gy per channel (zeros when N OH OW == 0) */
    conv_bias_grad_kernel<<<(unsigned)g->O, 256, 0, s>>>(em_data_f32(gy), em_data_f32(gb), g->N,
                                                         g->O, g->OH * g->OW);
    if ((st = EM_CUDA_LAUNCHED(op, index)) != EM_OK) return st;
  }
  if (conv_empty(g)) { /* empty sums: zero gradients */
    if ((st = zero_out(gx, s, op, index)) != EM_OK) return st;
    return zero_out(gw, s, op, index);
  }
  cudnnHandle_t h = em__cudnn(index, op);
  const conv_entry *e = h ? conv_entry_get(h, g, index, op) : NULL;
  if (!e) return em_last_status();
  bool ok;
  size_t bytes = 0;
  if (gx && e->ws[PASS_DATA] > bytes) bytes = e->ws[PASS_DATA];
  if (gw && e->ws[PASS_FILTER] > bytes) bytes = e->ws[PASS_FILTER];
  work = workspace(gy->device, bytes, &ok); /* one for both passes: they run in order */
  if (!ok) return em_last_status();
  if (gx)
    EM_CUDNN_CHECK(cudnnConvolutionBackwardData(
        h, &one, e->w, em_data(ws), e->y, em_data(gy), e->conv[PASS_DATA], e->data,
        work ? em_data(work) : NULL, e->ws[PASS_DATA], &zero, e->x, em_data(gx)));
  if (gw)
    EM_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
        h, &one, e->x, em_data(xs), e->y, em_data(gy), e->conv[PASS_FILTER], e->filter,
        work ? em_data(work) : NULL, e->ws[PASS_FILTER], &zero, e->w, em_data(gw)));
cleanup:
  em_release(work);
  return st;
}
#endif /* EMBER_HAVE_CUDNN */
