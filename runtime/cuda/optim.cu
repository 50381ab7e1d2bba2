/* cuda/optim.cu: the CUDA table's fused optimizer updates (core/kernels.h: sgd_update,
 * adam_update): one elementwise kernel per parameter, each element updated in torch.optim's order
 * of operations, the same expressions as the CPU's cpu/optim.c.
 *
 * The slots get raw device pointers, not tensors: the device is the one that holds p, found with
 * cudaPointerGetAttributes. Both devices may fuse a multiply and an add (the CPU in its AVX2 and
 * AVX-512 builds, nvcc by default), so results agree to about an ulp per step, not bit for bit. */
#include "cuda/nn.cuh"

/* The CUDA device index of the memory at p, in *index. */
static em_status device_of(const void *p, const char *op, int *index) {
  cudaPointerAttributes a;
  cudaError_t e = cudaPointerGetAttributes(&a, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return em_set_error(EM_ERR_BACKEND, "%s: cudaPointerGetAttributes: %s", op,
                        cudaGetErrorString(e));
  }
  if (a.type != cudaMemoryTypeDevice)
    return em_set_error(EM_ERR_INVALID, "%s: the parameter is not in CUDA device memory", op);
  *index = a.device;
  return EM_OK;
}

/* torch's _single_tensor_sgd: d = g + wd p; with momentum buf = d on the first step, else
 * buf mom + (1 - damp) d, and d = buf (or d + mom buf with nesterov); p -= lr d. */
__global__ void sgd_kernel(int64_t n, float *p, const float *g, float *buf, float nlr, float wd,
                           float mom, float keep, bool first, bool nesterov) {
  EM_CUDA_FOR(i, n) {
    float pi = p[i], gi = g[i];
    float d = wd != 0.0f ? gi + wd * pi : gi;
    if (buf) {
      float b = first ? d : buf[i] * mom + keep * d;
      buf[i] = b;
      d = nesterov ? d + mom * b : b;
    }
    p[i] = pi + nlr * d;
  }
}

extern "C" em_status em__cuda_sgd_update(int64_t n, float *p, const float *g, float *buf, float lr,
                                         float wd, float mom, float damp, bool first,
                                         bool nesterov) {
  static const char *op = "sgd";
  if (n == 0) return EM_OK;
  int index = 0;
  em_status st = device_of(p, op, &index);
  if (st != EM_OK) return st;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  sgd_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(n, p, g, buf, -lr, wd, mom, 1.0f - damp,
                                                           first, nesterov);
  return EM_CUDA_LAUNCHED(op, index);
}

/* torch's _single_tensor_adam / _single_tensor_adamw: p *= decay (AdamW), g += l2 p (Adam),
 * m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, p += neg_step_size m / (sqrt(v) / bc2_sqrt +
 * eps). */
__global__ void adam_kernel(int64_t n, float *p, const float *g, float *m, float *v, float b1,
                            float b2, float l2, float decay, float neg_step_size, float bc2_sqrt,
                            float eps) {
  const float c1 = 1.0f - b1, c2 = 1.0f - b2;
  EM_CUDA_FOR(i, n) {
    float pi = p[i] * decay, gi = g[i];
    if (l2 != 0.0f) gi = gi + l2 * pi;
    float mi = m[i] * b1 + c1 * gi;
    float vi = v[i] * b2 + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + neg_step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
  }
}

extern "C" em_status em__cuda_adam_update(int64_t n, float *p, const float *g, float *m, float *v,
                                          float b1, float b2, float l2, float decay,
                                          float neg_step_size, float bc2_sqrt, float eps) {
  static const char *op = "adam";
  if (n == 0) return EM_OK;
  int index = 0;
  em_status st = device_of(p, op, &index);
  if (st != EM_OK) return st;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  adam_kernel<<<em_cuda_blocks(n), EM_CUDA_THREADS, 0, s>>>(n, p, g, m, v, b1, b2, l2, decay,
                                                            neg_step_size, bc2_sqrt, eps);
  return EM_CUDA_LAUNCHED(op, index);
}
