/* nn/resnet.c: the ResNets of the zoo: em_resnet18/34/50 (torchvision.models.resnet, v1.5: the
 * stride of a bottleneck sits on its 3x3 convolution) and the small-image ResNet of He et al.
 * (2016, section 4.2) with 1x1 convolution shortcuts (em_resnet_cifar). Contracts in em_nn.h.
 *
 * The module tree, whose names are torchvision's state_dict keys:
 *
 *   ResNet      conv1, bn1, layer1 .. layerK (Sequential of blocks "0", "1", ...), fc
 *   BasicBlock  conv1 (3x3, stride s), bn1, conv2 (3x3), bn2 [, downsample]
 *   Bottleneck  conv1 (1x1), bn1, conv2 (3x3, stride s), bn2, conv3 (1x1, 4 x planes), bn3
 *               [, downsample]
 *   downsample  Sequential(0: conv 1x1 stride s, 1: BatchNorm2d), where a block changes the
 *               shape (s != 1 or in != out channels); else the shortcut is x itself
 *
 * Blocks and the root have their own forward (the residual add; the stem's ReLU and max-pool, the
 * global average pool) calling the ops directly: ReLU and pooling hold no state, and torchvision's
 * relu/maxpool/avgpool modules have no state_dict entries either. */
#include "em_nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- building blocks ------------------------------------------------------------------------- */
/* Make child a child of parent under name; the child (borrowed now), or NULL with the error set
 * (a NULL child is a constructor that failed: its message is kept). */
static em_module *add(em_module *parent, const char *name, em_module *child) {
  if (!child) return NULL;
  return em_module_add_child(parent, name, child) == EM_OK ? child : NULL;
}

/* A k x k convolution without bias, padding k / 2, initialised as torchvision's ResNet does:
 * kaiming_normal_(mode="fan_out", nonlinearity="relu"), std = sqrt(2 / (out * k * k)). Like
 * torchvision, the layer's own uniform initialisation is drawn first, then overwritten. */
static em_module *conv(int in, int out, int k, int stride) {
  const em_conv2d_opts o = {.stride = {stride, stride}, .padding = {k / 2, k / 2}};
  em_module *m = em_conv2d_new(in, out, k, &o, false);
  if (!m) return NULL;
  float std = (float)sqrt(2.0 / ((double)out * k * k));
  if (em_init_normal(em_module_get(m, "weight"), 0, std) != EM_OK) {
    em_module_free(m);
    return NULL;
  }
  return m;
}

/* Sequential(conv 1x1 stride s, BatchNorm2d(out)): the shortcut where a block changes shape. */
static em_module *downsample_new(int in, int out, int stride) {
  em_module *seq = em_sequential_new(0, NULL);
  if (!seq) return NULL;
  if (em_sequential_append(seq, conv(in, out, 1, stride)) != EM_OK ||
      em_sequential_append(seq, em_batchnorm2d_new(out)) != EM_OK) {
    em_module_free(seq);
    return NULL;
  }
  return seq;
}

/* ---- residual blocks ------------------------------------------------------------------------- */
typedef struct {
  int n;                      /* convolutions: 2 (basic) or 3 (bottleneck) */
  em_module *conv[3], *bn[3]; /* borrowed children */
  em_module *downsample;      /* borrowed child, or NULL: the shortcut is x */
} block_ctx;

/* relu(bn_n(conv_n(... relu(bn_1(conv_1(x))) ...)) + shortcut(x)) */
static em_tensor *block_forward(em_module *m, em_tensor *x) {
  block_ctx *c = em_module_ctx(m);
  em_tensor *y = x;
  for (int i = 0; i < c->n; i++) {
    y = em_forward(c->bn[i], em_forward(c->conv[i], y));
    if (i < c->n - 1) y = em_relu(y);
  }
  em_tensor *shortcut = c->downsample ? em_forward(c->downsample, x) : x;
  return em_relu(em_add(y, shortcut));
}

/* A block taking in channels to planes (basic) or 4 * planes (bottleneck); *out gets that. */
static em_module *block_new(int in, int planes, int stride, bool bottleneck, int *out) {
  block_ctx *c = calloc(1, sizeof *c);
  if (!c) {
    em_set_error(EM_ERR_NOMEM, "resnet: out of memory");
    return NULL;
  }
  em_module *m = em_module_new(bottleneck ? "Bottleneck" : "BasicBlock", block_forward, c, free);
  if (!m) return NULL;
  /* (in, out, kernel, stride) of each convolution, in torchvision's order */
  int width = bottleneck ? 4 * planes : planes;
  const int basic[2][4] = {{in, planes, 3, stride}, {planes, planes, 3, 1}};
  const int bneck[3][4] = {{in, planes, 1, 1}, {planes, planes, 3, stride}, {planes, width, 1, 1}};
  const int(*spec)[4] = bottleneck ? bneck : basic;
  c->n = bottleneck ? 3 : 2;
  for (int i = 0; i < c->n; i++) {
    char conv_name[16], bn_name[16];
    snprintf(conv_name, sizeof conv_name, "conv%d", i + 1);
    snprintf(bn_name, sizeof bn_name, "bn%d", i + 1);
    /* separate statements: the initial weights are drawn in this order */
    c->conv[i] = add(m, conv_name, conv(spec[i][0], spec[i][1], spec[i][2], spec[i][3]));
    if (!c->conv[i] || !(c->bn[i] = add(m, bn_name, em_batchnorm2d_new(spec[i][1])))) goto fail;
  }
  if ((stride != 1 || in != width) &&
      !(c->downsample = add(m, "downsample", downsample_new(in, width, stride))))
    goto fail;
  *out = width;
  return m;
fail:
  em_module_free(m);
  return NULL;
}

/* torchvision's _make_layer: a Sequential of `blocks` blocks, the first with the stride.
 * *in is the stage's input channels, updated to its output channels. */
static em_module *stage_new(int *in, int planes, int blocks, int stride, bool bottleneck) {
  em_module *seq = em_sequential_new(0, NULL);
  if (!seq) return NULL;
  for (int b = 0; b < blocks; b++) {
    em_module *block = block_new(*in, planes, b ? 1 : stride, bottleneck, in);
    if (em_sequential_append(seq, block) != EM_OK) {
      em_module_free(seq);
      return NULL;
    }
  }
  return seq;
}

/* ---- the network ----------------------------------------------------------------------------- */
typedef struct {
  const char *name;   /* for messages: "resnet18", "resnet_cifar" */
  bool imagenet_stem; /* 7x7/2 conv + 3x3/2 max-pool; else a 3x3 conv and no pool */
  bool bottleneck;
  int n_stages;
  int width[4];  /* planes of each stage (the first stage's stride is 1, the others' 2) */
  int blocks[4]; /* blocks per stage */
} arch;

typedef struct {
  bool max_pool;
  int n_stages;
  em_module *conv1, *bn1, *stage[4], *fc; /* borrowed children */
} resnet_ctx;

/* x (N, C, H, W) -> logits (N, classes) */
static em_tensor *resnet_forward(em_module *m, em_tensor *x) {
  resnet_ctx *c = em_module_ctx(m);
  x = em_relu(em_forward(c->bn1, em_forward(c->conv1, x)));
  if (c->max_pool) x = em_max_pool2d(x, &(em_pool2d_opts){{3, 3}, {2, 2}, {1, 1}, false});
  for (int i = 0; i < c->n_stages; i++) x = em_forward(c->stage[i], x);
  x = em_flatten(em_adaptive_avg_pool2d(x, 1, 1), 1, -1);
  return em_forward(c->fc, x);
}

static em_module *resnet_new(const arch *a, int in_channels, int num_classes) {
  if (in_channels <= 0 || num_classes <= 0) {
    em_set_error(EM_ERR_INVALID, "%s: need in_channels > 0 and num_classes > 0 (got %d, %d)",
                 a->name, in_channels, num_classes);
    return NULL;
  }
  resnet_ctx *c = calloc(1, sizeof *c);
  if (!c) {
    em_set_error(EM_ERR_NOMEM, "%s: out of memory", a->name);
    return NULL;
  }
  em_module *m = em_module_new("ResNet", resnet_forward, c, free);
  if (!m) return NULL;
  c->max_pool = a->imagenet_stem;
  c->n_stages = a->n_stages;
  int ch = a->width[0];
  int k = a->imagenet_stem ? 7 : 3, stride = a->imagenet_stem ? 2 : 1;
  c->conv1 = add(m, "conv1", conv(in_channels, ch, k, stride));
  if (!c->conv1 || !(c->bn1 = add(m, "bn1", em_batchnorm2d_new(ch)))) goto fail;
  for (int i = 0; i < a->n_stages; i++) {
    char name[24];
    snprintf(name, sizeof name, "layer%d", i + 1);
    em_module *s = stage_new(&ch, a->width[i], a->blocks[i], i ? 2 : 1, a->bottleneck);
    if (!(c->stage[i] = add(m, name, s))) goto fail;
  }
  if (!(c->fc = add(m, "fc", em_linear_new(ch, num_classes, true)))) goto fail;
  return m;
fail:
  em_module_free(m);
  return NULL;
}

em_module *em_resnet18(int num_classes, int in_channels) {
  static const arch a = {"resnet18", true, false, 4, {64, 128, 256, 512}, {2, 2, 2, 2}};
  return resnet_new(&a, in_channels, num_classes);
}

em_module *em_resnet34(int num_classes, int in_channels) {
  static const arch a = {"resnet34", true, false, 4, {64, 128, 256, 512}, {3, 4, 6, 3}};
  return resnet_new(&a, in_channels, num_classes);
}

em_module *em_resnet50(int num_classes, int in_channels) {
  static const arch a = {"resnet50", true, true, 4, {64, 128, 256, 512}, {3, 4, 6, 3}};
  return resnet_new(&a, in_channels, num_classes);
}

/* The deepest network of the paper; a bound so that a mistyped depth cannot ask for millions of
 * blocks. */
#define CIFAR_MAX_DEPTH 1202

em_module *em_resnet_cifar(int depth, int in_channels, int num_classes) {
  if (depth < 8 || depth > CIFAR_MAX_DEPTH || (depth - 2) % 6) {
    em_set_error(EM_ERR_INVALID,
                 "resnet_cifar: depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, "
                 "... up to %d), got %d",
                 CIFAR_MAX_DEPTH, depth);
    return NULL;
  }
  int n = (depth - 2) / 6;
  const arch a = {"resnet_cifar", false, false, 3, {16, 32, 64}, {n, n, n}};
  return resnet_new(&a, in_channels, num_classes);
}
