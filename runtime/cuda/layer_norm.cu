/* cuda/layer_norm.cu: the CUDA table's layer normalisation (core/kernels.h: layer_norm,
 * layer_norm_backward; the CPU's is in cpu/norm.c). x (..., D) is seen as (R, D).
 *
 * Forward and dx give each row to one block (block sums for the mean, the variance, and the two
 * sums of the backward). dw and db are sums over the rows, a column reduction in two passes:
 *
 *   pass 1: block (column tile c, row chunk k), 32 x 8 threads   part_w[k, c..c+32) = sum over
 *           the chunk's rows of dy * xh; part_b likewise of dy   (one chunk: straight into dw, db)
 *   pass 2: one thread per column: dw[c] = part_w[0, c] + part_w[1, c] + ...
 *
 * Float sums throughout, as on the CPU; the GPU's order of additions (a tree within a block, row
 * chunks) is not the CPU's, so results agree to rounding, not bit for bit. */
#include "cuda/nn.cuh"

/* ---- forward --------------------------------------------------------------------------------- */
__global__ void ln_forward_kernel(const float *x, const float *w, const float *b, int64_t R,
                                  int64_t D, float eps, float *y, float *mean, float *rstd) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float *p = x + r * D;
    float *q = y + r * D;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) s += p[j];
    float m = em_nn_block_sum<float>(s) / (float)D;
    float v = 0.0f;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      float d = p[j] - m;
      v += d * d;
    }
    float inv = 1.0f / sqrtf(em_nn_block_sum<float>(v) / (float)D + eps);
    if (mean && threadIdx.x == 0) {
      mean[r] = m;
      rstd[r] = inv;
    }
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) q[j] = (p[j] - m) * inv * w[j] + b[j];
  }
}

extern "C" em_status em__cuda_layer_norm(const em_tensor *x, const em_tensor *weight,
                                         const em_tensor *bias, float eps, em_tensor *y,
                                         em_tensor *mean, em_tensor *rstd) {
  static const char *op = "layer_norm";
  int index = x->device.index;
  int64_t D = em_numel(weight), R = D ? em_numel(x) / D : 0;
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  if (D == 0) { /* empty rows: no statistics, zeros (the contract) */
    size_t nbytes = mean ? (size_t)em_numel(mean) * sizeof(float) : 0;
    em_status st = EM_OK;
    if (nbytes) st = em__cuda_status(cudaMemsetAsync(em_data(mean), 0, nbytes, s), op, index);
    if (nbytes && st == EM_OK)
      st = em__cuda_status(cudaMemsetAsync(em_data(rstd), 0, nbytes, s), op, index);
    return st;
  }
  if (R == 0) return EM_OK;
  ln_forward_kernel<<<em_nn_row_blocks(R), EM_CUDA_THREADS, 0, s>>>(
      (const float *)em_data(x), (const float *)em_data(weight), (const float *)em_data(bias), R, D,
      eps, (float *)em_data(y), mean ? (float *)em_data(mean) : NULL,
      rstd ? (float *)em_data(rstd) : NULL);
  return EM_CUDA_LAUNCHED(op, index);
}

/* ---- backward: dx, one block per row ------------------------------------------------------- */
/* With xh = (x - mean) rstd and g = dy w:  dx = rstd (g - mean(g) - xh mean(g xh)). */
__global__ void ln_dx_kernel(const float *x, const float *dy, const float *mean, const float *rstd,
                             const float *w, int64_t R, int64_t D, float *dx) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float *p = x + r * D, *g = dy + r * D;
    float m = mean[r], inv = rstd[r], sg = 0.0f, sgx = 0.0f;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      float gw = g[j] * w[j];
      sg += gw;
      sgx += gw * ((p[j] - m) * inv);
    }
    float mg = em_nn_block_sum<float>(sg) / (float)D;
    float mgx = em_nn_block_sum<float>(sgx) / (float)D;
    float *q = dx + r * D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
      q[j] = inv * (g[j] * w[j] - mg - (p[j] - m) * inv * mgx);
  }
}

/* ---- backward: dw, db as a column reduction -------------------------------------------------- */
#define LN_TILE 32 /* columns per block (threadIdx.x) */
#define LN_ROWS 8  /* row lanes per block (threadIdx.y) */
/* Pass 2 adds up to this many chunk partials per column. */
#define LN_MAX_CHUNKS 256

/* Pass 1: block (blockIdx.x, blockIdx.y) sums rows [k0, k1) of chunk blockIdx.y over its tile of
 * columns into part_w/part_b row blockIdx.y (D floats each). Threads whose column is past D still
 * take part in the __syncthreads. */
__global__ void ln_dwdb_partial_kernel(const float *x, const float *dy, const float *mean,
                                       const float *rstd, int64_t R, int64_t D,
                                       int64_t rows_per_chunk, float *part_w, float *part_b) {
  __shared__ float sw[LN_ROWS][LN_TILE + 1], sb[LN_ROWS][LN_TILE + 1];
  int64_t c = (int64_t)blockIdx.x * LN_TILE + threadIdx.x;
  int64_t k0 = (int64_t)blockIdx.y * rows_per_chunk;
  int64_t k1 = k0 + rows_per_chunk < R ? k0 + rows_per_chunk : R;
  float aw = 0.0f, ab = 0.0f;
  if (c < D)
    for (int64_t r = k0 + threadIdx.y; r < k1; r += LN_ROWS) {
      float g = dy[r * D + c];
      aw += g * ((x[r * D + c] - mean[r]) * rstd[r]);
      ab += g;
    }
  sw[threadIdx.y][threadIdx.x] = aw;
  sb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && c < D) {
    for (int k = 1; k < LN_ROWS; k++) {
      aw += sw[k][threadIdx.x];
      ab += sb[k][threadIdx.x];
    }
    part_w[(int64_t)blockIdx.y * D + c] = aw;
    part_b[(int64_t)blockIdx.y * D + c] = ab;
  }
}

/* Pass 2: dw[c], db[c] = the sums of the chunks' partials, in chunk order. */
__global__ void ln_dwdb_finish_kernel(const float *part_w, const float *part_b, int64_t chunks,
                                      int64_t D, float *dw, float *db) {
  EM_CUDA_FOR(c, D) {
    float aw = 0.0f, ab = 0.0f;
    for (int64_t k = 0; k < chunks; k++) {
      aw += part_w[k * D + c];
      ab += part_b[k * D + c];
    }
    dw[c] = aw;
    db[c] = ab;
  }
}

static em_status ln_dwdb(int index, cudaStream_t s, const float *x, const float *dy,
                         const float *mean, const float *rstd, int64_t R, int64_t D, float *dw,
                         float *db) {
  static const char *op = "layer_norm backward";
  /* Chunks of at least 32 rows, at most LN_MAX_CHUNKS of them. */
  int64_t rows_per_chunk = (R + LN_MAX_CHUNKS - 1) / LN_MAX_CHUNKS;
  if (rows_per_chunk < 32) rows_per_chunk = 32;
  int64_t chunks = (R + rows_per_chunk - 1) / rows_per_chunk;
  int64_t tiles = (D + LN_TILE - 1) / LN_TILE;
  if (tiles > 0x7fffffff)
    return em_set_error(EM_ERR_INVALID, "%s: D %lld too large", op, (long long)D);
  em_tensor *part = chunks > 1 ? em_nn_temp_f32(index, 2 * chunks * D, op) : NULL;
  if (chunks > 1 && !part) return em_last_status();
  float *pw = part ? (float *)em_data(part) : dw, *pb = part ? pw + chunks * D : db;
  dim3 grid((unsigned)tiles, (unsigned)chunks), block(LN_TILE, LN_ROWS);
  ln_dwdb_partial_kernel<<<grid, block, 0, s>>>(x, dy, mean, rstd, R, D, rows_per_chunk, pw, pb);
  em_status st = EM_CUDA_LAUNCHED(op, index);
  if (st == EM_OK && part) {
    ln_dwdb_finish_kernel<<<em_cuda_blocks(D), EM_CUDA_THREADS, 0, s>>>(pw, pb, chunks, D, dw, db);
    st = EM_CUDA_LAUNCHED(op, index);
  }
  em_release(part);
  return st;
}

extern "C" em_status em__cuda_layer_norm_backward(const em_tensor *x, const em_tensor *dy,
                                                  const em_tensor *mean, const em_tensor *rstd,
                                                  const em_tensor *weight, em_tensor *dx,
                                                  em_tensor *dw, em_tensor *db) {
  static const char *op = "layer_norm backward";
  int index = x->device.index;
  int64_t D = em_numel(weight), R = D ? em_numel(x) / D : 0;
  if (D == 0) return EM_OK; /* dx, dw and db are empty */
  cudaStream_t s = em__cuda_stream(index);
  if (!s) return em_last_status();
  if (R == 0) { /* no rows: zero sums */
    em_status st =
        em__cuda_status(cudaMemsetAsync(em_data(dw), 0, D * sizeof(float), s), op, index);
    if (st == EM_OK)
      st = em__cuda_status(cudaMemsetAsync(em_data(db), 0, D * sizeof(float), s), op, index);
    return st;
  }
  const float *px = (const float *)em_data(x), *pdy = (const float *)em_data(dy);
  const float *pm = (const float *)em_data(mean), *pr = (const float *)em_data(rstd);
  if (dx) {
    ln_dx_kernel<<<em_nn_row_blocks(R), EM_CUDA_THREADS, 0, s>>>(
        px, pdy, pm, pr, (const float *)em_data(weight), R, D, (float *)em_data(dx));
    em_status st = EM_CUDA_LAUNCHED(op, index);
    if (st != EM_OK) return st;
  }
  return ln_dwdb(index, s, px, pdy, pm, pr, R, D, (float *)em_data(dw), (float *)em_data(db));
}
