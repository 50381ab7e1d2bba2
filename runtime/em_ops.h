/* em_ops.h: tensor operations. Every op:
 *   - returns a new tensor owned by the current scope (or by the caller outside scopes);
 *   - returns NULL when an input is NULL, keeping the first error message, so a whole forward
 *     pass can be checked once at its end;
 *   - on bad shapes/dtypes returns NULL with a message naming the op and every shape involved;
 *   - records an autograd node when grad mode is on and an input requires grad.
 * Shapes in comments: (N, C, H, W) etc. Binary elementwise ops broadcast as NumPy does. */
#ifndef EMBER_OPS_H
#define EMBER_OPS_H

#include "em_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- linear algebra (oneDNN matmul) ------------------------------------------------------ */
/* a (M, K) @ b (K, N) -> (M, N); also batched: a (B, M, K) @ b (B, K, N) -> (B, M, N), and
 * b 2-D against a batched a. trans_a/trans_b use the transposed operand without a copy. */
em_tensor *em_matmul(em_tensor *a, em_tensor *b);
em_tensor *em_matmul_t(em_tensor *a, em_tensor *b, bool trans_a, bool trans_b);
/* x (..., in), w (out, in), bias (out) or NULL -> (..., out) = x @ w^T + bias. */
em_tensor *em_linear(em_tensor *x, em_tensor *w, em_tensor *bias);

/* ---- elementwise ------------------------------------------------------------------------- */
em_tensor *em_add(em_tensor *a, em_tensor *b);
em_tensor *em_sub(em_tensor *a, em_tensor *b);
em_tensor *em_mul(em_tensor *a, em_tensor *b);
em_tensor *em_div(em_tensor *a, em_tensor *b);
em_tensor *em_add_scalar(em_tensor *a, float s);
em_tensor *em_mul_scalar(em_tensor *a, float s);
em_tensor *em_neg(em_tensor *a);
em_tensor *em_exp(em_tensor *a);
em_tensor *em_log(em_tensor *a);
em_tensor *em_sqrt(em_tensor *a);
em_tensor *em_pow(em_tensor *a, float exponent);
em_tensor *em_relu(em_tensor *a);
em_tensor *em_gelu(em_tensor *a); /* exact (erf) form, as torch.nn.functional.gelu */
em_tensor *em_tanh(em_tensor *a);
em_tensor *em_sigmoid(em_tensor *a);
em_tensor *em_clamp(em_tensor *a, float lo, float hi);
/* cond (u8, or any dtype: nonzero = true) selects a where true else b; all three broadcast. */
em_tensor *em_where(em_tensor *cond, em_tensor *a, em_tensor *b);

/* ---- reductions -------------------------------------------------------------------------- */
/* Over the n dims listed (negative dims count from the end); n == 0 reduces over all dims. */
em_tensor *em_sum(em_tensor *a, int n, const int *dims, bool keepdim);
em_tensor *em_mean(em_tensor *a, int n, const int *dims, bool keepdim);
/* Maximum over one dim; the gradient goes to the first maximal element. */
em_tensor *em_max(em_tensor *a, int dim, bool keepdim);
/* Index (i64) of the first maximum over dim; no gradient. */
em_tensor *em_argmax(em_tensor *a, int dim, bool keepdim);
em_tensor *em_softmax(em_tensor *a, int dim);
em_tensor *em_log_softmax(em_tensor *a, int dim);
/* The causal mask of self-attention: a (..., T, S) with every element of row i past column
 * i + (S - T) replaced by value (-INFINITY before a softmax: query i sees keys 0..i when T == S);
 * as torch's a.masked_fill(ones(T, S).triu(S - T + 1).bool(), value). The gradient passes where
 * a was kept and is 0 where value was written. */
em_tensor *em_causal_mask(em_tensor *a, float value);

/* ---- losses ------------------------------------------------------------------------------ */
typedef enum { EM_REDUCE_MEAN = 0, EM_REDUCE_SUM = 1, EM_REDUCE_NONE = 2 } em_reduction;
#define EM_IGNORE_INDEX_DEFAULT (-100)
/* logits (N, C), labels (N) i64 or i32 in [0, C) -> scalar mean. Fused log_softmax + nll. */
em_tensor *em_cross_entropy(em_tensor *logits, em_tensor *labels);
/* With reduction and ignore_index (labels equal to it contribute nothing; the mean divides by
 * the number of labels not ignored). EM_REDUCE_NONE returns (N). */
em_tensor *em_cross_entropy_ex(em_tensor *logits, em_tensor *labels, em_reduction red,
                               int64_t ignore_index);
/* logp (N, C) log-probabilities, labels (N). */
em_tensor *em_nll_loss(em_tensor *logp, em_tensor *labels, em_reduction red, int64_t ignore_index);
/* Mean (or sum, or none) of (a - b)^2; shapes must match. */
em_tensor *em_mse_loss(em_tensor *a, em_tensor *b, em_reduction red);

/* ---- convolution, pooling, normalisation (oneDNN) ------------------------------------------ */
typedef struct {
  int stride[2];   /* 0 means 1 */
  int padding[2];  /* symmetric, rows then columns */
  int dilation[2]; /* 0 means 1 */
  int groups;      /* 0 means 1 */
} em_conv2d_opts;
/* x (N, C, H, W), w (O, C/groups, KH, KW), bias (O) or NULL, opts NULL = defaults. */
em_tensor *em_conv2d(em_tensor *x, em_tensor *w, em_tensor *bias, const em_conv2d_opts *opts);

typedef struct {
  int kernel[2];
  int stride[2]; /* 0 means = kernel, as PyTorch */
  int padding[2];
  bool count_include_pad; /* avg pool only; PyTorch's default is true */
} em_pool2d_opts;
em_tensor *em_max_pool2d(em_tensor *x, const em_pool2d_opts *opts);
em_tensor *em_avg_pool2d(em_tensor *x, const em_pool2d_opts *opts);
/* x (N, C, H, W) -> (N, C, oh, ow) with PyTorch's start/end index rule. */
em_tensor *em_adaptive_avg_pool2d(em_tensor *x, int oh, int ow);

/* x (N, C, ...) normalised per channel. weight/bias (C) or NULL. Training: batch statistics, and
 * running_mean/var (C, may be NULL) are updated in place with momentum (unbiased variance, as
 * PyTorch). Eval: uses running_mean/var (required). */
em_tensor *em_batch_norm(em_tensor *x, em_tensor *weight, em_tensor *bias, em_tensor *running_mean,
                         em_tensor *running_var, bool training, float momentum, float eps);
/* Normalises over the last n_dims dims; weight/bias have those dims' shape, or NULL. */
em_tensor *em_layer_norm(em_tensor *x, int n_dims, em_tensor *weight, em_tensor *bias, float eps);

/* ---- random ------------------------------------------------------------------------------ */
/* Zeroes each element with probability p and scales the rest by 1/(1-p); identity when
 * !training or p == 0. The mask comes from rng (advanced), so a seed reproduces it. */
em_tensor *em_dropout(em_tensor *x, float p, bool training, em_rng *rng);

/* ---- indexing and shape ------------------------------------------------------------------ */
/* weight (V, D), idx (any shape) i64 or i32 in [0, V) -> (idx..., D). */
em_tensor *em_embedding(em_tensor *weight, em_tensor *idx);
/* One dim may be -1. A view when a's strides allow it (always when a is contiguous; as torch's
 * view: e.g. splitting the last dim of a column slice), else a contiguous copy. */
em_tensor *em_reshape(em_tensor *a, int ndim, const int64_t *shape);
/* Merge dims start..end (inclusive, negative allowed) into one. */
em_tensor *em_flatten(em_tensor *a, int start_dim, int end_dim);
em_tensor *em_transpose(em_tensor *a, int d0, int d1); /* view */
em_tensor *em_permute(em_tensor *a, const int *perm);  /* view; perm has a->ndim entries */
/* Elements start, start+step, ... < end along dim (negative start/end count from the end; end is
 * clamped to the size). A view. */
em_tensor *em_slice(em_tensor *a, int dim, int64_t start, int64_t end, int64_t step);
em_tensor *em_narrow(em_tensor *a, int dim, int64_t start, int64_t length); /* view */
em_tensor *em_contiguous(em_tensor *a); /* a itself (new reference in scope) or a copy */
em_tensor *em_clone(em_tensor *a);      /* always a copy, with history */
em_tensor *em_concat(int n, em_tensor *const *ts, int dim);
em_tensor *em_stack(int n, em_tensor *const *ts, int dim);
/* idx 1-D i64/i32 -> a with dim replaced by len(idx). */
em_tensor *em_index_select(em_tensor *a, int dim, em_tensor *idx);

#ifdef __cplusplus
}
#endif
#endif
