/* ops/kernels.h: private to runtime/. The per-device kernel table: the contract between the op
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
#ifndef EMBER_OPS_KERNELS_H
#define EMBER_OPS_KERNELS_H

#include "core/internal.h"

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
  /* dst (contiguous, same shape and dtype) = src (any strides and offset). */
  em_status (*copy_strided)(em_tensor *dst, const em_tensor *src);
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

  /* ---- pooling (ops/pool.c) ------------------------------------------------------------------ */

  /* ---- reductions: sum, mean, max, argmax (ops/reduce.c) ------------------------------------- */

  /* ---- losses: cross entropy, nll, mse (ops/loss.c) ------------------------------------------ */

  /* ---- embedding, dropout (ops/embed.c) ------------------------------------------------------ */

  /* ---- shape ops: concat/stack, index_select (ops/shape.c) ------------------------------------ */

  /* ---- optimizer updates (optim/optim.c) ----------------------------------------------------- */
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
#define EM_KERNELS(t, slot, opname)                                                                \
  (em__kernels((t)->device)->slot ? em__kernels((t)->device)                                       \
                                  : em__unsupported(opname, (t)->device))

#endif
