/* core/kernels.h: private to runtime/. The per-device kernel table: the contract between the op
 * front ends (runtime/ops/, which check inputs, allocate outputs and record autograd nodes) and
 * the devices that compute (runtime/cpu/ with oneDNN and plain loops, runtime/cuda/).
 *
 *   em_relu(x) -- ops/unary.c -------> checks, y = em_empty(..), record node
 *                     |
 *                     +-> em__kernels(x->device)->unary(EM_UNARY_RELU, .., x, y)
 *                             |                    |
 *                        cpu/table.c          cuda/table.c (a later issue fills it)
 *
 * Rules for a kernel:
 * - Its inputs were checked by the front end: dtypes, shapes, every tensor on the table's device.
 *   Outputs are allocated by the front end (on the same device) and fully written by the kernel.
 * - Unless a slot says otherwise, tensors are contiguous.
 * - It returns EM_OK, or an error status with em_set_error naming the op (a backend failure).
 * - A NULL slot means "not supported on this device": front ends fetch the table with
 *   EM_KERNELS, which turns a NULL slot into "<op>: not supported on <device>".
 * Adding a device adds a table (a file set), not #ifdefs across the front ends. */
#ifndef EMBER_CORE_KERNELS_H
#define EMBER_CORE_KERNELS_H

#include "core/internal.h"

#ifdef __cplusplus /* CUDA sources (runtime/cuda/, .cu files) are C++ */
extern "C" {
#endif

/* ---- op codes shared by front ends and kernels ---------------------------------------------- */
typedef enum { EM_BINARY_ADD, EM_BINARY_SUB, EM_BINARY_MUL, EM_BINARY_DIV } em_binop;

typedef enum {
  EM_UNARY_EXP,
  EM_UNARY_LOG,
  EM_UNARY_SQRT,
  EM_UNARY_POW,  /* alpha * x^beta */
  EM_UNARY_RELU, /* alpha: negative slope */
  EM_UNARY_GELU, /* exact erf form */
  EM_UNARY_TANH,
  EM_UNARY_SIGMOID,
  EM_UNARY_CLAMP, /* [alpha, beta] */
  EM_UNARY_COUNT
} em_unop;

/* ---- a matmul operand (the matmul slot) ---------------------------------------------------
 * The matrices (batch..., rows, cols) that lie in t's data, from its offset, with these element
 * strides. The geometry is not t's own shape: a transposed operand has its last two dims and
 * strides swapped, and a batch whose rows lie evenly apart may be merged into one (batch * rows,
 * cols) matrix; no data is copied for either. Strides are positive; of the last two dims, one has
 * stride 1 (or size 1) and the other a stride at least the first's size: row- or column-major
 * matrices with any leading dimension. Batch strides are free. */
typedef struct {
  const em_tensor *t; /* f32: whose data (and device) */
  int ndim;           /* >= 2 */
  int64_t dims[EM_MAX_DIMS];
  int64_t strides[EM_MAX_DIMS];
} em_matrix;

/* ---- geometry of convolution and pooling (ops/conv.c, ops/pool.c) ---------------------------
 * As the front ends compute it from the shapes and options, and keep it in the autograd node:
 * the backward kernels get it again because the tensors saved for them may be in a kernel's own
 * layout, whose shape says nothing. Pairs are rows then columns. */
typedef struct {
  int64_t N, C, H, W;                         /* x (N, C, H, W) */
  int64_t O, KH, KW;                          /* w (O, C / groups, KH, KW), bias (O) */
  int64_t OH, OW;                             /* y (N, O, OH, OW) */
  int64_t stride[2], padding[2], dilation[2]; /* >= 1, >= 0 (zeros), >= 1 (PyTorch's: 1 = none) */
  int64_t groups;                             /* >= 1, divides C and O */
  bool bias;                                  /* the convolution has a bias */
} em_conv2d_geom;

typedef enum {
  EM_POOL_MAX,
  EM_POOL_AVG_INCLUDE_PAD, /* divide by the whole window (count_include_pad) */
  EM_POOL_AVG_EXCLUDE_PAD, /* divide by the part of the window inside x */
} em_pool_kind;

typedef struct {
  em_pool_kind kind;
  int64_t N, C, H, W;                       /* x (N, C, H, W) */
  int64_t OH, OW;                           /* y (N, C, OH, OW) */
  int64_t kernel[2], stride[2], padding[2]; /* >= 1, >= 1, 0 .. kernel / 2 */
} em_pool2d_geom;

typedef struct em_kernels {
  const char *name; /* "cpu", "cuda": for messages */

  /* ---- memory (core/tensor.c: storage, copies, fills) ----------------------------------------
   * alloc: nbytes (a multiple of 64, > 0) of device memory aligned to 64 bytes, or NULL when out
   * of memory (the caller reports it). free: memory from alloc, with the same nbytes. */
  void *(*alloc)(int index, size_t nbytes);
  void (*free)(int index, void *p, size_t nbytes);
  /* dst[0, nbytes) = 0 on the device. */
  em_status (*zero)(int index, void *dst, size_t nbytes);
  /* Copies of nbytes: host to device, device to host, within the device. */
  em_status (*copy_from_host)(int index, void *dst, const void *src, size_t nbytes);
  em_status (*copy_to_host)(int index, void *dst, const void *src, size_t nbytes);
  em_status (*copy)(int index, void *dst, const void *src, size_t nbytes);
  /* Optional (NULL: em_to uses alloc and copy_from_host). A new block (em__padded_size(nbytes),
   * freed with free) holding the nbytes at src, pinned host memory, copied asynchronously on a
   * host-to-device stream that the device's next kernels wait for. *done: the source storage's
   * upload_done event (NULL the first time: the slot creates it), recorded when the copy is done.
   * NULL with the error set. */
  void *(*upload)(int index, const void *src, size_t nbytes, void **done);
  /* dst = src, same shape and dtype (any), both with any strides: contiguous copies (em__contig),
   * clones, and copies into views (concat's parts, a view's gradient). */
  em_status (*copy_view)(em_tensor *dst, const em_tensor *src);
  /* Every element of t (contiguous) = value, converted to t's dtype. */
  em_status (*fill)(em_tensor *t, double value);

  /* ---- elementwise (ops/binary.c, ops/unary.c) -----------------------------------------------
   * binary: out = a op b with NumPy broadcasting; a and b may have any strides (0 on broadcast
   * dims); out is contiguous with the broadcast shape. */
  em_status (*binary)(em_binop op, const em_tensor *a, const em_tensor *b, em_tensor *out);
  /* y = x * mul + add. */
  em_status (*affine)(const em_tensor *x, float mul, float add, em_tensor *y);
  /* y = op(x; alpha, beta), and its backward gx = dop/dx * gy, where saved is x, or y for the
   * ops whose em__unary_uses_output is true. */
  em_status (*unary)(em_unop op, float alpha, float beta, const em_tensor *x, em_tensor *y);
  em_status (*unary_backward)(em_unop op, float alpha, float beta, const em_tensor *saved,
                              const em_tensor *gy, em_tensor *gx);
  /* mask (u8, contiguous) = cond != 0 for cond of any dtype (contiguous); a table with where
   * has nonzero_mask too. where: out = mask ? a : b, all three broadcast to out's shape (any
   * strides), a and b f32. */
  em_status (*nonzero_mask)(const em_tensor *cond, em_tensor *mask);
  em_status (*where)(const em_tensor *mask, const em_tensor *a, const em_tensor *b, em_tensor *out);

  /* ---- matmul, linear (ops/matmul.c) --------------------------------------------------------- */
  /* matmul: c (batch..., M, N) = a (batch..., M, K) @ b (batch..., K, N) + bias (N), or c += a @ b
   * with accumulate (then bias is NULL). a and b are em_matrix geometries (strided, transposed or
   * merged views, read where they lie) of the same ndim; their batch dims are equal or 1
   * (broadcast). bias (contiguous, or NULL) only when ndim == 2. c is contiguous and gets the
   * product row-major with the broadcast batch dims (its own shape may differ: (B, M, N) for a
   * merged (B*M, N) product). K == 0 gives bias or zeros (c unchanged with accumulate). op names
   * the caller in messages ("linear backward").
   * linear_bias_grad: the bias gradient of linear, db (N) = the sum of the rows of dy (contiguous,
   * seen as (R, N)), or db += it with accumulate; the rows are added into db one after another
   * (into zeros without accumulate). A table with matmul has linear_bias_grad too. */
  em_status (*matmul)(const char *op, const em_matrix *a, const em_matrix *b, const em_tensor *bias,
                      em_tensor *c, bool accumulate);
  em_status (*linear_bias_grad)(const em_tensor *dy, em_tensor *db, bool accumulate);

  /* ---- softmax, log_softmax (ops/softmax.c) -------------------------------------------------- */
  /* y = softmax(x) along dim (0 <= dim < max(ndim, 1)), or log_softmax with log; x and y have the
   * same shape. Backward from the saved output y and dy: dx (the same shape). */
  em_status (*softmax)(bool log, const em_tensor *x, int dim, em_tensor *y);
  em_status (*softmax_backward)(bool log, const em_tensor *y, const em_tensor *dy, int dim,
                                em_tensor *dx);

  /* ---- causal mask (ops/mask.c) -------------------------------------------------------------- */
  /* x (..., T, S) seen as (B, T, S): y = x, except y[b, i, j] = value where j > i + (S - T) (row
   * i of the last T rows sees the columns up to its own position). The backward is the same
   * kernel on dy with value 0. x and y have the same shape (ndim >= 2, any sizes); y may be x. */
  em_status (*causal_mask)(const em_tensor *x, float value, em_tensor *y);

  /* ---- batch norm, layer norm (ops/norm.c) --------------------------------------------------- */
  /* batch_norm: y = (x - mean) / sqrt(var + eps) * weight + bias per channel, x (N, C, ...) seen
   * as (N, C, S) and y of its shape; weight, bias (C) or NULL (1 and 0). training: mean, var (C)
   * are outputs, the batch statistics (var biased); eval: inputs, the statistics to use.
   * batch_norm_backward: dx (x's shape), dw, db (C) from x, dy, and mean, var, weight, bias as in
   * forward; each output NULL when not wanted. In training the gradient flows through the batch
   * statistics; in eval they are constants.
   * batch_norm_update_stats: running (C, any strides; running_mean or running_var may be NULL) =
   * (1 - momentum) running + momentum stat in double, stat = mean, or var * M / (M - 1) for
   * running_var (M values per channel: the unbiased variance).
   * A table with batch_norm has the other two. */
  em_status (*batch_norm)(const em_tensor *x, const em_tensor *weight, const em_tensor *bias,
                          bool training, float eps, em_tensor *y, em_tensor *mean, em_tensor *var);
  em_status (*batch_norm_backward)(const em_tensor *x, const em_tensor *dy, const em_tensor *mean,
                                   const em_tensor *var, const em_tensor *weight,
                                   const em_tensor *bias, bool training, float eps, em_tensor *dx,
                                   em_tensor *dw, em_tensor *db);
  em_status (*batch_norm_update_stats)(em_tensor *running_mean, em_tensor *running_var,
                                       const em_tensor *mean, const em_tensor *var, float momentum,
                                       int64_t M);
  /* layer_norm: each row of x (..., D) seen as (R, D), D = weight's numel, normalised with its
   * own mean and variance (biased): y = (x - mean) * rstd * weight + bias, rstd =
   * 1 / sqrt(var + eps); weight, bias (D) always given (ones and zeros for a layer without). mean
   * and rstd (R) are written when non-NULL (both or neither; zeros when D == 0).
   * layer_norm_backward: dx (x's shape, or NULL when not wanted), dw, db (D, always) from x, dy,
   * the saved mean and rstd, and weight. */
  em_status (*layer_norm)(const em_tensor *x, const em_tensor *weight, const em_tensor *bias,
                          float eps, em_tensor *y, em_tensor *mean, em_tensor *rstd);
  em_status (*layer_norm_backward)(const em_tensor *x, const em_tensor *dy, const em_tensor *mean,
                                   const em_tensor *rstd, const em_tensor *weight, em_tensor *dx,
                                   em_tensor *dw, em_tensor *db);

  /* ---- convolution (ops/conv.c) -------------------------------------------------------------- */
  /* conv2d: y (N, O, OH, OW) = cross-correlation of x (N, C, H, W), zero-padded, with
   * w (O, C / groups, KH, KW), plus b (O) when g->bias (else b is NULL). Any of N, C, O may be 0
   * (C == 0: y is the bias, or zeros). The kernel may keep x and w in a layout of its own for
   * the backward: it then sets *xs and *ws to new tensors holding them (owned by the current
   * scope), else to NULL. The front end saves xs (or x) and ws (or w) for conv2d_backward, their
   * only reader. */
  em_status (*conv2d)(const em_conv2d_geom *g, const em_tensor *x, const em_tensor *w,
                      const em_tensor *b, em_tensor *y, em_tensor **xs, em_tensor **ws);
  /* conv2d_backward: for gy (N, O, OH, OW), with xs and ws as saved by the front end, the
   * gradients gx (N, C, H, W) of x, gw (O, C / groups, KH, KW) of w and gb (O) of the bias (gy
   * summed over N, OH, OW). gx and gw are NULL when not wanted; gb is given exactly when g->bias
   * and gw is (one pass writes both). */
  em_status (*conv2d_backward)(const em_conv2d_geom *g, const em_tensor *xs, const em_tensor *ws,
                               const em_tensor *gy, em_tensor *gx, em_tensor *gw, em_tensor *gb);

  /* ---- pooling (ops/pool.c) ------------------------------------------------------------------ */
  /* pool2d: y (N, C, OH, OW) = the maximum or the mean (g->kind) of x (N, C, H, W) over each
   * window of g; padding never wins a maximum. ws NULL: no backward follows. Otherwise the kernel
   * sets *ws to a workspace that its backward needs (a new tensor owned by the current scope,
   * opaque to the front end, which saves it in the node), or to NULL when it needs none. */
  em_status (*pool2d)(const em_pool2d_geom *g, const em_tensor *x, em_tensor *y, em_tensor **ws);
  /* gx (N, C, H, W) = the gradient of x for gy (N, C, OH, OW); ws: what pool2d set *ws to. */
  em_status (*pool2d_backward)(const em_pool2d_geom *g, const em_tensor *ws, const em_tensor *gy,
                               em_tensor *gx);
  /* y (N, C, OH, OW) = the means of x (N, C, H, W) over PyTorch's adaptive windows: rows
   * floor(i H / OH) .. ceil((i + 1) H / OH) - 1, columns likewise; H, W >= 1. Its backward:
   * gx (N, C, H, W) from gy (N, C, OH, OW). */
  em_status (*adaptive_avg_pool2d)(const em_tensor *x, em_tensor *y);
  em_status (*adaptive_avg_pool2d_backward)(const em_tensor *gy, em_tensor *gx);

  /* ---- reductions: sum, mean, max, argmax (ops/reduce.c) ------------------------------------- */
  /* sum: y = scale * (sum of x over the dims in mask: bit d for dim d), summed in float64; y holds
   * x's kept dims in order (the reduced ones dropped or of size 1). sum_backward: gx (the input's
   * shape) = scale * gy broadcast back over the dims in mask (gy laid out as the input with the
   * reduced dims of size 1). */
  em_status (*sum)(const em_tensor *x, uint32_t mask, double scale, em_tensor *y);
  em_status (*sum_backward)(const em_tensor *gy, uint32_t mask, double scale, em_tensor *gx);
  /* x seen as (O, R, K), R >= 1: vals (O, K) f32 and idx (O, K) i64 = the first maximum over R
   * and its index (NaN counts as the largest). max_backward: gx (O, R, K) = gy (O, K) at idx
   * along R, 0 elsewhere. */
  em_status (*max)(const em_tensor *x, int64_t O, int64_t R, int64_t K, em_tensor *vals,
                   em_tensor *idx);
  em_status (*max_backward)(const em_tensor *idx, const em_tensor *gy, int64_t O, int64_t R,
                            int64_t K, em_tensor *gx);
  /* For the autograd engine (core/autograd.c). sum_to: y = x summed over the dims where y
   * broadcasts (y's shape aligned on the right with x's; its missing and size-1 dims), in float,
   * in x's element order. accumulate: y += x, same shape, x with any strides. */
  em_status (*sum_to)(const em_tensor *x, em_tensor *y);
  em_status (*accumulate)(em_tensor *y, const em_tensor *x);

  /* ---- losses: cross entropy, nll, mse (ops/loss.c) ------------------------------------------ */
  /* Per-row (or per-element) losses l_i, reduced by red: EM_REDUCE_NONE writes loss (N), SUM and
   * MEAN write a scalar loss (their sum in float64, divided by count for the mean). labels (N),
   * i64 or i32, were checked: each is in [0, C) or equals ignore (a row that gives 0 and no
   * gradient). Backward: dL/dl_i is gy[i] for NONE, else gy[0] * scale (1/count for the mean, 1
   * for the sum).
   * cross_entropy: x (N, C); lse (N) = log sum_j exp(x_ij) (0 on ignored rows), l_i = lse_i -
   * x_i,y_i. Backward from x and lse: gx (N, C) = dL/dl_i * (exp(x_ij - lse_i) - [j == y_i]). */
  em_status (*cross_entropy)(const em_tensor *x, const em_tensor *labels, int64_t ignore,
                             em_reduction red, int64_t count, em_tensor *lse, em_tensor *loss);
  em_status (*cross_entropy_backward)(const em_tensor *x, const em_tensor *labels,
                                      const em_tensor *lse, int64_t ignore, const em_tensor *gy,
                                      em_reduction red, double scale, em_tensor *gx);
  /* nll: logp (N, C) with any strides, l_i = -logp[i, y_i]. Backward: gx (N, C) = -dL/dl_i at
   * (i, y_i), 0 elsewhere. */
  em_status (*nll)(const em_tensor *logp, const em_tensor *labels, int64_t ignore, em_reduction red,
                   int64_t count, em_tensor *loss);
  em_status (*nll_backward)(const em_tensor *labels, int64_t ignore, const em_tensor *gy,
                            em_reduction red, double scale, em_tensor *gx);
  /* mse: l_i = (a_i - b_i)^2 over every element (count = numel). Backward: ga_i = 2 * scale *
   * g_i * (a_i - b_i), g_i = gy[i] for NONE, else gy[0] (scale 1/numel for the mean, else 1). */
  em_status (*mse)(const em_tensor *a, const em_tensor *b, em_reduction red, em_tensor *loss);
  em_status (*mse_backward)(const em_tensor *a, const em_tensor *b, const em_tensor *gy,
                            em_reduction red, double scale, em_tensor *ga);

  /* ---- embedding, dropout (ops/embed.c) ------------------------------------------------------ */
  /* embedding: out (n, D) = rows ix (n, i64, each in [0, V)) of weight (V, D). Backward: gw
   * (V, D) = 0, then gy's rows (n, D) added into rows ix, in order (repeated indices add up). */
  em_status (*embedding)(const em_tensor *weight, const em_tensor *ix, em_tensor *out);
  em_status (*embedding_backward)(const em_tensor *ix, const em_tensor *gy, em_tensor *gw);
  /* dropout, 0 < p <= 1: mask = 0 with probability p, else 1 / (1 - p), from one
   * em_rng_uniform(rng) draw per element in order (kept when u >= p; no draws when p == 1, rng
   * may then be NULL), so a seed reproduces it; y = x * mask where mask != 0, else 0. */
  em_status (*dropout)(const em_tensor *x, float p, em_rng *rng, em_tensor *mask, em_tensor *y);

  /* ---- shape ops: concat/stack, index_select (ops/shape.c) ---------------------------------- */
  /* Index tensors (loss labels, embedding and index_select indices) are checked where they live.
   * idx: contiguous, i64 or i32; values equal to *skip are passed over (skip may be NULL).
   * *count = the values not passed over; *bad = the position of the first of them outside
   * [0, size), with its value in *bad_value, or -1. ix (i64, idx's shape; may be NULL) = idx. */
  em_status (*check_index)(const em_tensor *idx, int64_t size, const int64_t *skip, em_tensor *ix,
                           int64_t *count, int64_t *bad, int64_t *bad_value);
  /* x (any dtype) seen as (O, S, I) around dim, ix (m) i64 in [0, S): out (O, m, I) =
   * x[:, ix[j], :]. Backward: gx (O, S, I) = 0, then gy[:, j, :] added into gx[:, ix[j], :]. */
  em_status (*index_select)(const em_tensor *x, int dim, const em_tensor *ix, em_tensor *out);
  em_status (*index_select_backward)(const em_tensor *ix, int dim, const em_tensor *gy,
                                     em_tensor *gx);

  /* ---- optimizer updates (optim/optim.c) ----------------------------------------------------- */
  /* One parameter's update in torch.optim's order, over n floats of device memory, p the
   * parameter, g its gradient, the rest its state (distinct arrays). sgd_update: buf NULL without
   * momentum; first: the parameter's first step (buf = d). adam_update (Adam and AdamW): l2 is
   * Adam's weight decay (added to the gradient), decay AdamW's factor 1 - lr * weight_decay (1
   * for Adam), neg_step_size -lr / (1 - beta1^t), bc2_sqrt sqrt(1 - beta2^t). */
  em_status (*sgd_update)(int64_t n, float *p, const float *g, float *buf, float lr, float wd,
                          float mom, float damp, bool first, bool nesterov);
  em_status (*adam_update)(int64_t n, float *p, const float *g, float *m, float *v, float b1,
                           float b2, float l2, float decay, float neg_step_size, float bc2_sqrt,
                           float eps);

  /* ---- 16-bit gradient compression (ddp/ddp.c) ----------------------------------------------
   * n elements of raw device memory (dst and src do not overlap), half EM_BF16 or EM_F16, rounded
   * to nearest even with NaN and infinity kept, as em_half.h (the CPU's em_f32_to_bf16_n and
   * friends: the same bits, except that a NaN may keep more or less of its payload).
   * to_half: dst[i] = half(scale * src[i]) (the product rounded to f32 first, then to 16 bits).
   * from_half: dst[i] = f32(src[i]) (exact). */
  em_status (*to_half)(int index, em_dtype half, uint16_t *dst, const float *src, int64_t n,
                       float scale);
  em_status (*from_half)(int index, em_dtype half, float *dst, const uint16_t *src, int64_t n);
} em_kernels;

/* Backward of op reads y (true) or x (false). The same for every device. */
bool em__unary_uses_output(em_unop op);

/* The table of a device: cpu/table.c for the CPU, cuda/ for CUDA (a table with no kernels in a
 * build without CUDA). Never NULL. */
const em_kernels *em__kernels(em_device dev);
/* The CPU table (cpu/table.c), and the CUDA one (cuda/table.c, or cuda/absent.c without CUDA). */
extern const em_kernels em__cpu_kernels;
extern const em_kernels em__cuda_kernels;
/* Sets "<op>: not supported on <device>" (EM_ERR_UNSUPPORTED) and returns NULL. */
const em_kernels *em__unsupported(const char *op, em_device dev);

/* The table of t's device when it has the kernel `slot`, else NULL with the error set:
 *   const em_kernels *k = EM_KERNELS(x, unary, "relu");
 *   if (!k) return NULL;
 *   k->unary(...) */
#define EM_KERNELS(t, slot, opname) EM_DEVICE_KERNELS((t)->device, slot, opname)
/* The same for a device (storage allocation, before any tensor exists). */
#define EM_DEVICE_KERNELS(dev, slot, opname)                                                       \
  (em__kernels(dev)->slot ? em__kernels(dev) : em__unsupported(opname, dev))

#ifdef __cplusplus
}
#endif
#endif
