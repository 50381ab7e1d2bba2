/* ops/conv.c: 2-D convolution with stride, padding, dilation, groups and an optional bias (the
 * front end: checks, geometry, output, autograd; the kernels are the device table's conv2d and
 * conv2d_backward).
 *
 *   x (N, C, H, W), w (O, C/g, KH, KW), bias (O) -> y (N, O, OH, OW)
 *   OH = (H + 2 ph - (dh (KH - 1) + 1)) / sh + 1   (floor, as PyTorch), OW likewise
 *
 * The node keeps the geometry and the x and w that the forward kernel handed back (on the CPU,
 * copies in oneDNN's blocked layouts), so that the backward kernel need not convert them again. */
#include "core/kernels.h"

#include <string.h>

/* Fill c from the shapes and options; false with an error naming every shape if they do not fit. */
static bool conv_setup(const em_tensor *x, const em_tensor *w, const em_tensor *bias,
                       const em_conv2d_opts *o, em_conv2d_geom *c) {
  char sx[EM_SHAPE_STR_LEN], sw[EM_SHAPE_STR_LEN], sb[EM_SHAPE_STR_LEN];
  em_shape_str(x, sx, sizeof sx);
  em_shape_str(w, sw, sizeof sw);
  if (x->ndim != 4 || w->ndim != 4) {
    em_set_error(EM_ERR_INVALID,
                 "conv2d: x %s and weight %s must be (N, C, H, W) and "
                 "(O, C/groups, KH, KW)",
                 sx, sw);
    return false;
  }
  em_conv2d_opts def = {0};
  if (!o) o = &def;
  *c = (em_conv2d_geom){.N = x->shape[0],
                        .C = x->shape[1],
                        .H = x->shape[2],
                        .W = x->shape[3],
                        .O = w->shape[0],
                        .KH = w->shape[2],
                        .KW = w->shape[3],
                        .groups = o->groups ? o->groups : 1,
                        .bias = bias != NULL};
  for (int k = 0; k < 2; k++) {
    c->stride[k] = o->stride[k] ? o->stride[k] : 1;
    c->dilation[k] = o->dilation[k] ? o->dilation[k] : 1;
    c->padding[k] = o->padding[k];
    if (c->stride[k] < 1 || c->dilation[k] < 1 || c->padding[k] < 0) {
      em_set_error(EM_ERR_INVALID,
                   "conv2d: x %s, weight %s: stride %lld, dilation %lld must be >= 1 and "
                   "padding %lld >= 0",
                   sx, sw, (long long)c->stride[k], (long long)c->dilation[k],
                   (long long)c->padding[k]);
      return false;
    }
  }
  if (c->groups < 1 || c->C % c->groups || c->O % c->groups || w->shape[1] * c->groups != c->C) {
    em_set_error(EM_ERR_INVALID,
                 "conv2d: x %s and weight %s do not fit with groups %lld: need C divisible by "
                 "groups, O divisible by groups and weight (O, C/groups, KH, KW)",
                 sx, sw, (long long)c->groups);
    return false;
  }
  if (bias && (bias->ndim != 1 || bias->shape[0] != c->O)) {
    em_set_error(EM_ERR_INVALID, "conv2d: bias %s does not match weight %s (need [%lld])",
                 em_shape_str(bias, sb, sizeof sb), sw, (long long)c->O);
    return false;
  }
  int64_t ekh = c->dilation[0] * (c->KH - 1) + 1, ekw = c->dilation[1] * (c->KW - 1) + 1;
  if (c->KH < 1 || c->KW < 1 || ekh > c->H + 2 * c->padding[0] || ekw > c->W + 2 * c->padding[1]) {
    em_set_error(EM_ERR_INVALID,
                 "conv2d: kernel of weight %s (dilated %lldx%lld) does not fit in x %s padded by "
                 "%lldx%lld",
                 sw, (long long)ekh, (long long)ekw, sx, (long long)c->padding[0],
                 (long long)c->padding[1]);
    return false;
  }
  c->OH = (c->H + 2 * c->padding[0] - ekh) / c->stride[0] + 1;
  c->OW = (c->W + 2 * c->padding[1] - ekw) / c->stride[1] + 1;
  return true;
}

/* The geometry fits the node's 16 integer slots exactly. */
static void conv_pack(const em_conv2d_geom *c, int64_t *v) {
  int64_t t[16] = {c->N,          c->C,           c->H,           c->W,
                   c->O,          c->KH,          c->KW,          c->OH,
                   c->OW,         c->stride[0],   c->stride[1],   c->padding[0],
                   c->padding[1], c->dilation[0], c->dilation[1], c->groups};
  memcpy(v, t, sizeof t);
}

static void conv_unpack(const int64_t *v, bool bias, em_conv2d_geom *c) {
  *c = (em_conv2d_geom){.N = v[0],
                        .C = v[1],
                        .H = v[2],
                        .W = v[3],
                        .O = v[4],
                        .KH = v[5],
                        .KW = v[6],
                        .OH = v[7],
                        .OW = v[8],
                        .stride = {v[9], v[10]},
                        .padding = {v[11], v[12]},
                        .dilation = {v[13], v[14]},
                        .groups = v[15],
                        .bias = bias};
}

static em_status conv_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_conv2d_geom c;
  conv_unpack(n->i, n->n_in == 3, &c);
  em_tensor *x = n->inputs[0], *w = n->inputs[1];
  bool need_x = x->requires_grad, need_w = w->requires_grad;
  bool need_b = c.bias && n->inputs[2]->requires_grad;
  const em_kernels *k = EM_KERNELS(x, conv2d_backward, n->op);
  if (!k) return em_last_status();
  em_tensor *dx = NULL, *dw = NULL, *db = NULL;
  if (need_x && !(dx = em__empty_on(x->device, EM_F32, 4, x->shape))) return em_last_status();
  /* the weights pass of a conv with bias always writes the bias gradient too */
  if ((need_w || need_b) && !(dw = em__empty_on(w->device, EM_F32, 4, w->shape)))
    return em_last_status();
  if (dw && c.bias && !(db = em__empty_on(x->device, EM_F32, EM_SHAPE(c.O))))
    return em_last_status();
  em_status st = k->conv2d_backward(&c, n->saved[0], n->saved[1], gout, dx, dw, db);
  if (st != EM_OK) return st;
  gin[0] = dx;
  gin[1] = need_w ? dw : NULL;
  if (c.bias) gin[2] = need_b ? db : NULL;
  return EM_OK;
}

static em_tensor *conv_impl(em_tensor *x, em_tensor *w, em_tensor *bias,
                            const em_conv2d_opts *opts) {
  static const char *op = "conv2d";
  EM_CHECK_INPUT(x, op);
  EM_CHECK_INPUT(w, op);
  if (!em__check_layer_inputs(op, x, w, bias)) return NULL;
  const em_kernels *k = EM_KERNELS(x, conv2d, op);
  em_conv2d_geom c;
  if (!k || !conv_setup(x, w, bias, opts, &c)) return NULL;
  em_tensor *cx = em__contig(x), *cw = em__contig(w), *cb = bias ? em__contig(bias) : NULL;
  if (!cx || !cw || (bias && !cb)) return NULL;
  em_tensor *out = em__empty_on(x->device, EM_F32, EM_SHAPE(c.N, c.O, c.OH, c.OW)), *xs, *ws;
  if (!out || k->conv2d(&c, cx, cw, cb, out, &xs, &ws) != EM_OK) return NULL;
  em_tensor *ins[3] = {x, w, bias};
  em_node *n = em__record(out, op, conv_backward, bias ? 3 : 2, ins);
  if (n) {
    em__save(n, xs ? xs : cx); /* x and w as the kernel keeps them for its backward */
    em__save(n, ws ? ws : cw);
    conv_pack(&c, n->i);
  }
  return out;
}

/* The public op runs in a private scope: contiguous copies and the kernel's buffers that are not
 * saved for backward end with the op. */
em_tensor *em_conv2d(em_tensor *x, em_tensor *w, em_tensor *bias, const em_conv2d_opts *opts) {
  em_scope s = em_scope_begin();
  return em__op_end(s, conv_impl(x, w, bias, opts));
}
