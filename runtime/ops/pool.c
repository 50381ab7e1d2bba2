/* ops/pool.c: 2-D max and average pooling, and adaptive average pooling (the front ends: checks,
 * geometry, output, autograd; the kernels are the device table's pool2d, pool2d_backward,
 * adaptive_avg_pool2d and adaptive_avg_pool2d_backward).
 *
 *   x (N, C, H, W) -> (N, C, OH, OW),  OH = (H + 2 ph - kh) / sh + 1  (floor, as PyTorch)
 *
 * Average pooling divides by the whole window (count_include_pad) or by the part inside the input.
 * Max pooling in training may need a workspace from the forward kernel (on the CPU, oneDNN's
 * record of where each maximum came from): the node saves it for the backward kernel.
 *
 * Adaptive average pooling uses PyTorch's windows: output row i averages input rows
 * floor(i H / OH) .. ceil((i + 1) H / OH) - 1. When OH divides H (and OW divides W) that is a plain
 * average pool with kernel = stride = H / OH; otherwise the adaptive kernels do it. */
#include "core/kernels.h"

#include <string.h>

enum { POOL_GEOM_INTS = 13 };

static void pool_pack(const em_pool2d_geom *g, int64_t *v) {
  int64_t t[POOL_GEOM_INTS] = {
      g->N,         g->C,         g->H,         g->W,          g->OH,         g->OW,  g->kernel[0],
      g->kernel[1], g->stride[0], g->stride[1], g->padding[0], g->padding[1], g->kind};
  memcpy(v, t, sizeof t);
}

static em_pool2d_geom pool_unpack(const int64_t *v) {
  return (em_pool2d_geom){.N = v[0],
                          .C = v[1],
                          .H = v[2],
                          .W = v[3],
                          .OH = v[4],
                          .OW = v[5],
                          .kernel = {v[6], v[7]},
                          .stride = {v[8], v[9]},
                          .padding = {v[10], v[11]},
                          .kind = (em_pool_kind)v[12]};
}

/* Fill g; false with an error naming x's shape and the options if they do not fit. */
static bool pool_setup(const char *op, const em_tensor *x, const em_pool2d_opts *o,
                       em_pool_kind kind, em_pool2d_geom *g) {
  char sx[EM_SHAPE_STR_LEN];
  em_shape_str(x, sx, sizeof sx);
  if (!o) {
    em_set_error(EM_ERR_INVALID, "%s: x %s: options (kernel size) are required", op, sx);
    return false;
  }
  if (x->ndim != 4) {
    em_set_error(EM_ERR_INVALID, "%s: x %s must be (N, C, H, W)", op, sx);
    return false;
  }
  *g = (em_pool2d_geom){
      .kind = kind, .N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3]};
  for (int d = 0; d < 2; d++) {
    g->kernel[d] = o->kernel[d];
    g->stride[d] = o->stride[d] ? o->stride[d] : o->kernel[d];
    g->padding[d] = o->padding[d];
    int64_t in = x->shape[2 + d];
    if (g->kernel[d] < 1 || g->stride[d] < 1 || g->padding[d] < 0 ||
        2 * g->padding[d] > g->kernel[d]) {
      em_set_error(EM_ERR_INVALID,
                   "%s: x %s: kernel %lldx%lld, stride %lldx%lld, padding %lldx%lld: need kernel "
                   "and stride >= 1 and 0 <= padding <= kernel / 2",
                   op, sx, (long long)o->kernel[0], (long long)o->kernel[1],
                   (long long)o->stride[0], (long long)o->stride[1], (long long)o->padding[0],
                   (long long)o->padding[1]);
      return false;
    }
    if (in + 2 * g->padding[d] < g->kernel[d]) {
      em_set_error(EM_ERR_INVALID, "%s: kernel %lldx%lld does not fit in x %s padded by %lldx%lld",
                   op, (long long)o->kernel[0], (long long)o->kernel[1], sx,
                   (long long)o->padding[0], (long long)o->padding[1]);
      return false;
    }
  }
  g->OH = (g->H + 2 * g->padding[0] - g->kernel[0]) / g->stride[0] + 1;
  g->OW = (g->W + 2 * g->padding[1] - g->kernel[1]) / g->stride[1] + 1;
  return true;
}

static em_status pool_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_pool2d_geom g = pool_unpack(n->i);
  em_tensor *x = n->inputs[0];
  const em_kernels *k = EM_KERNELS(x, pool2d_backward, n->op);
  em_tensor *dx = k ? em__empty_on(x->device, EM_F32, 4, x->shape) : NULL;
  if (!dx) return em_last_status();
  em_status st = k->pool2d_backward(&g, n->n_saved ? n->saved[0] : NULL, gout, dx);
  if (st != EM_OK) return st;
  gin[0] = dx;
  return EM_OK;
}

static em_tensor *pool(const char *op, em_tensor *x, const em_pool2d_opts *o, em_pool_kind kind) {
  EM_CHECK_INPUT(x, op);
  const em_kernels *k = em__check_f32(op, x, "x") ? EM_KERNELS(x, pool2d, op) : NULL;
  em_pool2d_geom g;
  if (!k || !pool_setup(op, x, o, kind, &g)) return NULL;
  em_tensor *cx = em__contig(x);
  em_tensor *out = cx ? em__empty_on(x->device, EM_F32, EM_SHAPE(g.N, g.C, g.OH, g.OW)) : NULL;
  bool training = em_grad_enabled() && x->requires_grad; /* a node will be recorded */
  em_tensor *ws = NULL;
  if (!out || k->pool2d(&g, cx, out, training ? &ws : NULL) != EM_OK) return NULL;
  em_node *n = em__record(out, op, pool_backward, 1, &x);
  if (n) {
    pool_pack(&g, n->i);
    if (ws) em__save(n, ws);
  }
  return out;
}

/* The public ops run in a private scope: contiguous copies end with the op. */
em_tensor *em_max_pool2d(em_tensor *x, const em_pool2d_opts *opts) {
  em_scope s = em_scope_begin();
  return em__op_end(s, pool("max_pool2d", x, opts, EM_POOL_MAX));
}

em_tensor *em_avg_pool2d(em_tensor *x, const em_pool2d_opts *opts) {
  em_scope s = em_scope_begin();
  return em__op_end(
      s, pool("avg_pool2d", x, opts,
              opts && opts->count_include_pad ? EM_POOL_AVG_INCLUDE_PAD : EM_POOL_AVG_EXCLUDE_PAD));
}

/* ---- adaptive average pooling --------------------------------------------------------- */
static em_status adaptive_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *x = n->inputs[0];
  const em_kernels *k = EM_KERNELS(x, adaptive_avg_pool2d_backward, n->op);
  em_tensor *dx = k ? em__empty_on(x->device, EM_F32, 4, x->shape) : NULL;
  if (!dx) return em_last_status();
  em_status st = k->adaptive_avg_pool2d_backward(gout, dx);
  if (st != EM_OK) return st;
  gin[0] = dx;
  return EM_OK;
}

static em_tensor *adaptive_impl(em_tensor *x, int oh, int ow) {
  static const char *op = "adaptive_avg_pool2d";
  EM_CHECK_INPUT(x, op);
  if (!em__check_f32(op, x, "x")) return NULL;
  char sx[EM_SHAPE_STR_LEN];
  if (x->ndim != 4 || oh < 1 || ow < 1) {
    em_set_error(EM_ERR_INVALID, "%s: x %s must be (N, C, H, W) and the output size %dx%d >= 1x1",
                 op, em_shape_str(x, sx, sizeof sx), oh, ow);
    return NULL;
  }
  int64_t H = x->shape[2], W = x->shape[3];
  if (H > 0 && W > 0 && H % oh == 0 && W % ow == 0) {
    em_pool2d_opts o = {.kernel = {(int)(H / oh), (int)(W / ow)}};
    return pool(op, x, &o, EM_POOL_AVG_EXCLUDE_PAD);
  }
  if (H == 0 || W == 0) {
    em_set_error(EM_ERR_INVALID, "%s: x %s has an empty plane", op, em_shape_str(x, sx, sizeof sx));
    return NULL;
  }
  const em_kernels *k = EM_KERNELS(x, adaptive_avg_pool2d, op);
  em_tensor *cx = k ? em__contig(x) : NULL;
  em_tensor *out =
      cx ? em__empty_on(x->device, EM_F32, EM_SHAPE(x->shape[0], x->shape[1], oh, ow)) : NULL;
  if (!out || k->adaptive_avg_pool2d(cx, out) != EM_OK) return NULL;
  em__record(out, op, adaptive_backward, 1, &x);
  return out;
}

em_tensor *em_adaptive_avg_pool2d(em_tensor *x, int oh, int ow) {
  em_scope s = em_scope_begin();
  return em__op_end(s, adaptive_impl(x, oh, ow));
}
