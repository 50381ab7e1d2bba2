/* em_nn.h: modules (a tree of named parameters, buffers and children with a forward function),
 * the flat parameter arena, the standard layers and the model zoo.
 *
 * A module owns its parameters, buffers, children and ctx; em_module_free frees the whole tree.
 * Names are dotted paths from the module asked ("0.weight", "layers.3.running_mean"), the same
 * strings torch.nn.Module.named_parameters() / named_buffers() give for the equivalent model.
 *
 * Whole-tree order (deterministic): every parameter, depth first (a module's own parameters in
 * registration order, then each child's in registration order), then every buffer in the same
 * walk. A tensor registered twice (tied weights) is listed once, under its first name.
 *
 * The parameter arena. The first em_parameters() (or em_module_arena()) on a root module (one
 * that is no other module's child) moves all its parameters into one 64-byte aligned f32 storage:
 *
 *   arena: | 0.weight ........ |pad| 0.bias |pad| 2.weight ............ |pad| 2.bias |pad|
 *          ^ offset[0] = 0         ^ offset[1]   ^ offset[2]                ^ offset[3]
 *
 * Each parameter starts at a multiple of 16 floats (64 bytes); padding is zero. The em_tensor
 * pointers do not change (their storage and offset are rebound in place, values preserved), so a
 * data-parallel bucket or an optimizer shard is an (offset, length) slice of one buffer. Views of
 * a parameter taken before packing keep the old memory: pack before taking views. Adding a
 * parameter, buffer or child anywhere in the tree invalidates earlier em_params views and the
 * packing; the next em_parameters() on the root repacks (the tensor pointers still stay the same).
 *
 * Initialisation follows PyTorch's reset_parameters() with Ember's generator (so the bounds and
 * distributions match PyTorch, the drawn values do not): constructors draw from the default
 * generator, seeded by em_manual_seed (seed 0 at start-up). */
#ifndef EMBER_NN_H
#define EMBER_NN_H

#include "em_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the default generator ------------------------------------------------------------------- */
/* Reset the generator constructors draw from (as torch.manual_seed). Not thread-safe: build
 * models on one thread. */
void em_manual_seed(uint64_t seed);
/* The default generator itself (process-wide; borrowed). */
em_rng *em_default_rng(void);
/* Overwrite t (a contiguous f32 CPU tensor, e.g. a parameter) with draws from N(mean, std) from
 * the default generator, as torch.nn.init.normal_ (kaiming_normal_ is std = gain / sqrt(fan)).
 * EM_OK, or an error naming the tensor or the bad mean/std (t unchanged). */
em_status em_init_normal(em_tensor *t, float mean, float std);

/* ---- modules --------------------------------------------------------------------------------- */
typedef struct em_module em_module;
/* x -> y. Called by em_forward with x non-NULL; returns a scope-owned tensor, or NULL with the
 * error set. */
typedef em_tensor *(*em_forward_fn)(em_module *m, em_tensor *x);

/* A new empty module of the given type name ("Linear", copied). ctx is owned by the module and
 * freed with ctx_free (or not at all if ctx_free is NULL) when the module is freed, also when
 * this call fails. Module starts in training mode. NULL on error. */
em_module *em_module_new(const char *type, em_forward_fn forward, void *ctx,
                         void (*ctx_free)(void *));
/* Free m, its children, its ctx, and its references to its parameters and buffers. NULL ok.
 * A child belongs to its parent: freeing it directly is refused (error set, nothing freed). */
void em_module_free(em_module *m);

/* Register a parameter (an f32 leaf; it gets requires_grad) or a buffer (any dtype, no grad).
 * The module takes its own reference; the caller keeps its own. Names are non-empty, contain no
 * '.', and are unique among m's parameters, buffers and children. */
em_status em_module_add_param(em_module *m, const char *name, em_tensor *t);
em_status em_module_add_buffer(em_module *m, const char *name, em_tensor *t);
/* Make child a child of m. m takes ownership of child, also on failure (child is freed then),
 * except when child already has a parent or is m or one of m's ancestors (an error; nothing is
 * freed). A module has at most one parent. */
em_status em_module_add_child(em_module *m, const char *name, em_module *child);

/* y = m(x): scope-owned result. NULL if m or x is NULL (keeping the first error) or on error. */
em_tensor *em_forward(em_module *m, em_tensor *x);

/* Training mode (dropout active, batch-norm batch statistics) or eval mode, for m and all its
 * descendants. New modules are in training mode. */
void em_module_train(em_module *m, bool on);
static inline void em_module_eval(em_module *m) { em_module_train(m, false); }
bool em_module_is_training(const em_module *m);

/* Accessors (borrowed pointers, valid while m lives). */
const char *em_module_type(const em_module *m);
void *em_module_ctx(const em_module *m);
int em_module_num_children(const em_module *m);
em_module *em_module_child_at(const em_module *m, int i);
const char *em_module_child_name(const em_module *m, int i);
/* Descendant by dotted path ("features.0"); NULL with an error naming the path if absent. */
em_module *em_module_find(em_module *m, const char *path);

/* Whole-tree queries, in the order given at the top of this file: indices [0, num_params) are
 * the parameters, [num_params, num_tensors) the buffers. Names are dotted paths from m. Borrowed
 * (valid until m is freed or its tree changes). -1 / NULL with the error set on a bad index. */
int em_module_num_params(em_module *m);
int em_module_num_buffers(em_module *m);
int em_module_num_tensors(em_module *m);
em_tensor *em_module_tensor_at(em_module *m, int i);
const char *em_module_tensor_name(em_module *m, int i);
/* Move m's parameters, buffers and gradients to dev, in place: the em_tensor pointers stay the
 * same (optimizers and ddp_wrap keep working), their storage moves. All or nothing; an error names
 * the device when it is not present. Today only the CPU has kernels. */
em_status em_module_to(em_module *m, em_device dev);
/* Parameter or buffer by dotted name; NULL with an error naming the module and the name. */
em_tensor *em_module_get(em_module *m, const char *name);
/* Copy n floats (row-major) into the parameter or buffer called name (converted for non-f32
 * buffers). Fails, naming the tensor and both sizes, unless n equals its element count. */
em_status em_module_set_param(em_module *m, const char *name, const float *data, int64_t n);

/* ---- parameter lists and the arena ----------------------------------------------------------- */
/* A borrowed view of a module's parameters (valid until the module is freed or its tree changes).
 * The optimizers copy what they keep, so a hand-built list (t and n only) works as well. */
typedef struct {
  int n;                 /* number of parameters */
  em_tensor **t;         /* n parameter tensors */
  const char **names;    /* n dotted names (may be NULL in a hand-built list) */
  const int64_t *numel;  /* n element counts (may be NULL in a hand-built list) */
  const int64_t *offset; /* n arena offsets in floats; NULL unless m is a packed root */
  float *arena;          /* the arena's first float; NULL unless m is a packed root */
  int64_t arena_numel;   /* floats in the arena, padding included (a multiple of 16) */
} em_params;
/* The parameters of m in whole-tree order. On a root module this packs the arena first (see the
 * top of this file). On failure (NULL m, out of memory) returns a view with n == 0 and t == NULL,
 * with the error set. (Any whole-tree query on a root also sets each parameter's tensor name to
 * its dotted name, em_tensor_set_name, so that errors can name it.) */
em_params em_parameters(em_module *m);
/* The root's arena (packing it if needed) and its length in floats; NULL with the error set if m
 * is not a root. Owned by the module. */
float *em_module_arena(em_module *m, int64_t *numel);
/* The arena offset rule, shared with the optimizers' state arenas: parameters are laid out in
 * order, each starting at the next multiple of EM_ARENA_ALIGN floats. */
#define EM_ARENA_ALIGN 16
static inline int64_t em_arena_align(int64_t n) {
  return (n + EM_ARENA_ALIGN - 1) / EM_ARENA_ALIGN * EM_ARENA_ALIGN;
}

/* ---- layers ----------------------------------------------------------------------------------
 * Each returns a new module (caller owns it; em_module_free) or NULL with the error set. Shapes:
 * N batch, C channels. Weights are initialised as the PyTorch module named. */

/* torch.nn.Linear(in, out, bias). weight (out, in) and bias (out) ~ U(-1/sqrt(in), 1/sqrt(in))
 * (kaiming_uniform_ with a = sqrt(5)). x (..., in) -> (..., out). */
em_module *em_linear_new(int in, int out, bool bias);
/* torch.nn.Conv2d(in, out, kernel, stride, padding, dilation, groups, bias) with a square kernel;
 * opts NULL = defaults (em_conv2d_opts in em_ops.h). weight (out, in/groups, k, k), bias (out),
 * both ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in/groups * k * k. x (N, in, H, W). */
em_module *em_conv2d_new(int in, int out, int kernel, const em_conv2d_opts *opts, bool bias);
/* torch.nn.BatchNorm2d(c) (eps 1e-5, momentum 0.1, affine, track_running_stats). Parameters
 * weight = 1, bias = 0 (c); buffers running_mean = 0, running_var = 1 (c) and
 * num_batches_tracked (i64, shape (), counts training forwards). Training mode normalises with
 * batch statistics and updates the running ones; eval mode uses the running ones. */
em_module *em_batchnorm2d_new(int c);
/* torch.nn.LayerNorm(normalized_shape, eps=1e-5): normalises over the last n_dims dims, which
 * must equal shape; weight = 1, bias = 0 of that shape. em_layernorm_new(EM_SHAPE(512)). */
em_module *em_layernorm_new(int n_dims, const int64_t *shape);
/* torch.nn.Embedding(num, dim): weight (num, dim) ~ N(0, 1). x: indices (any shape, i64/i32). */
em_module *em_embedding_new(int64_t num, int64_t dim);
/* torch.nn.Dropout(p). Its own em_rng, seeded from the default generator at construction, so
 * the same seed gives the same masks. Identity in eval mode. */
em_module *em_dropout_new(float p);
/* torch.nn.ReLU(), GELU() (exact erf form), Tanh(). */
em_module *em_relu_new(void);
em_module *em_gelu_new(void);
em_module *em_tanh_new(void);
/* torch.nn.Flatten(start_dim, end_dim); PyTorch's defaults are (1, -1). */
em_module *em_flatten_new(int start_dim, int end_dim);
/* torch.nn.MaxPool2d(kernel, stride, padding); stride 0 means = kernel, as PyTorch. */
em_module *em_max_pool2d_new(int kernel, int stride, int padding);

/* torch.nn.Sequential(m0, m1, ...): children named "0", "1", ...; forward chains them (no
 * children: identity). Takes ownership of all n modules, also on failure; a NULL among them
 * (a constructor that failed) frees the rest and returns NULL, keeping the first error.
 * Note: C evaluates the elements of em_sequential(a(), b()) in no specified order, so the
 * constructors' draws from the default generator may come in any order; where the initial
 * weights must be reproducible across compilers, build the layers in separate statements (or
 * with em_sequential_append) as the zoo does. */
em_module *em_sequential_new(int n, em_module *const *mods);
#define em_sequential(...)                                                                         \
  em_sequential_new((int)(sizeof((em_module *[]){__VA_ARGS__}) / sizeof(em_module *)),             \
                    (em_module *[]){__VA_ARGS__})
/* Append m as the next numbered child ("3" after 0..2). Takes ownership of m, also on failure. */
em_status em_sequential_append(em_module *seq, em_module *m);

/* ---- model zoo -------------------------------------------------------------------------------
 * Both are em_sequential modules; the PyTorch peer builds the same model with the code given, and
 * its state_dict keys equal Ember's parameter names. */

/* Multi-layer perceptron, x (N, in) -> logits (N, out). With h = hidden[0..n_hidden-1]:
 *   torch.nn.Sequential(nn.Linear(in, h[0]), nn.ReLU(), nn.Linear(h[0], h[1]), nn.ReLU(), ...,
 *                       nn.Linear(h[n_hidden-1], out))
 * Parameter names 0.weight, 0.bias, 2.weight, 2.bias, ..., (2*n_hidden).weight/bias.
 * n_hidden may be 0 (one Linear(in, out)); hidden may then be NULL. */
em_module *em_mlp(int in, const int *hidden, int n_hidden, int out);
/* The Fashion-MNIST benchmark's convnet, x (N, in_ch, h, w) -> logits (N, classes):
 *   torch.nn.Sequential(
 *     nn.Conv2d(in_ch, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),        # 0, 1, 2
 *     nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),           # 3, 4, 5
 *     nn.Flatten(),                                                          # 6
 *     nn.Linear(64 * (h // 4) * (w // 4), 1024), nn.ReLU(),                  # 7, 8
 *     nn.Linear(1024, classes))                                              # 9
 * Parameter names 0.weight, 0.bias, 3.weight, 3.bias, 7.weight, 7.bias, 9.weight, 9.bias.
 * Requires h, w >= 4. */
em_module *em_small_cnn(int in_ch, int h, int w, int classes);

/* ---- ResNets (nn/resnet.c) -------------------------------------------------------------------
 * torchvision.models.resnet18/34/50(num_classes=num_classes), with conv1 taking in_channels
 * instead of 3: stem conv 7x7/2 (64) + batch norm + ReLU + max-pool 3x3/2, four stages of basic
 * (18, 34) or bottleneck (50; stride on the 3x3 convolution, torchvision's "v1.5") blocks, global
 * average pool, fc. Parameter and buffer names equal torchvision's state_dict keys
 * (conv1.weight, bn1.running_mean, layer1.0.conv1.weight, layer2.0.downsample.0.weight,
 * layer2.0.downsample.1.weight, fc.weight, ...), in named_parameters() / named_buffers() order;
 * weights are initialised as torchvision does (kaiming_normal_ fan_out for convolutions, batch
 * norm 1 and 0 including each block's last, fc as nn.Linear). For 1000 classes and 3
 * channels the parameter counts are 11,689,512 (18), 21,797,672 (34) and 25,557,032 (50).
 * em_forward(m, x): x (N, in_channels, H, W) -> logits (N, classes), any H, W; the last stage
 * runs at about H/32 x W/32 (1x1 for 32x32 images), where training-mode batch norm needs N >= 2.
 * An error names the model and the bad argument (num_classes, in_channels <= 0). */
em_module *em_resnet18(int num_classes, int in_channels);
em_module *em_resnet34(int num_classes, int in_channels);
em_module *em_resnet50(int num_classes, int in_channels);
/* The small-image ResNet of He et al. (2016, section 4.2), for 28x28 and 32x32 inputs: depth =
 * 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ... up to 1202; else an error naming the
 * depth). Stem conv 3x3 (16) + batch norm + ReLU, no max-pool; three stages of n basic blocks
 * with 16, 32 and 64 channels (the first block of stages 2 and 3 has stride 2 and a 1x1
 * convolution + batch norm shortcut, the paper's option B); global average pool; fc. Names and
 * initialisation as the torchvision models (conv1, bn1, layer1.0.conv1, ...,
 * layer2.0.downsample.0, fc). ResNet-20 has 272,474 parameters for 3 channels and 10 classes,
 * 272,186 for 1 channel (measured; the paper's 0.27M is option A, without the two shortcut
 * convolutions and their batch norms: 2,752 fewer). */
em_module *em_resnet_cifar(int depth, int in_channels, int num_classes);

/* ---- recurrent cells and the character RNN (nn/rnn.c) ----------------------------------------
 * torch.nn.LSTMCell(input_size, hidden_size) and GRUCell: parameters weight_ih (G*H, I),
 * weight_hh (G*H, H), bias_ih and bias_hh (G*H), with PyTorch's gate order (LSTM: i, f, g, o,
 * G = 4; GRU: r, z, n, G = 3) and initialisation U(-1/sqrt(H), 1/sqrt(H)). em_forward(cell, x)
 * runs one step from a zero state and returns h. */
em_module *em_lstm_cell(int input_size, int hidden_size);
em_module *em_gru_cell(int input_size, int hidden_size);
/* One LSTM step: x (N, I), h and c (N, H) or NULL (zeros) -> *h_out, *c_out (N, H), scope-owned.
 * EM_OK, or an error naming the shapes. */
em_status em_lstm_cell_step(em_module *cell, em_tensor *x, em_tensor *h, em_tensor *c,
                            em_tensor **h_out, em_tensor **c_out);
/* One GRU step: x (N, I), h (N, H) or NULL (zeros) -> h' (N, H), scope-owned; NULL on error. */
em_tensor *em_gru_cell_step(em_module *cell, em_tensor *x, em_tensor *h);
/* A character-level language model whose forward is a C for loop over time steps:
 *   embed = nn.Embedding(vocab, hidden); cells = nn.ModuleList(nn.LSTMCell(hidden, hidden) for
 *   each of layers); head = nn.Linear(hidden, vocab)
 * Names embed.weight, cells.0.weight_ih, ..., head.weight, head.bias. em_forward(m, tokens):
 * tokens (N, T) i64/i32 -> logits (N, T, vocab), from a zero state. */
em_module *em_char_rnn(int vocab, int hidden, int layers);
/* The same forward carrying the state: h and c are arrays of `layers` tensors (N, hidden), read
 * (NULL entries are zeros) and replaced by the state after the last step (scope-owned), so that
 * sampling can feed one token at a time. Either array may be NULL (zeros in, the state not
 * returned). On error returns NULL and leaves both arrays as they were. */
em_tensor *em_char_rnn_forward(em_module *m, em_tensor *tokens, em_tensor **h, em_tensor **c);

/* ---- GPT (nn/gpt.c) --------------------------------------------------------------------------
 * A GPT-2-style decoder, as nanoGPT's model.py: token and position embeddings, n_layer pre-norm
 * blocks (x + attn(ln_1(x)), x + mlp(ln_2(x))) with causal multi-head self-attention and a GELU
 * MLP (4 * n_embd), a final layer norm, and an output head tied to the token embedding. */
typedef struct {
  int vocab_size; /* e.g. 256 for bytes, 50257 for GPT-2's tokens */
  int block_size; /* the longest sequence (position embeddings) */
  int n_layer, n_head, n_embd; /* n_embd a multiple of n_head */
  float dropout;  /* after the embeddings, attention weights and each residual branch; 0 = none */
  bool bias;      /* biases in the linear layers and layer norms (GPT-2: true) */
} em_gpt_config;
/* Names as nanoGPT's state_dict: transformer.wte.weight (vocab, C), transformer.wpe.weight
 * (block, C), transformer.h.L.ln_1.weight/bias, .attn.c_attn.weight (3C, C)/bias,
 * .attn.c_proj.weight (C, C)/bias, .ln_2, .mlp.c_fc.weight (4C, C)/bias, .mlp.c_proj.weight
 * (C, 4C)/bias, transformer.ln_f.weight/bias; the head (lm_head.weight) is wte itself, listed
 * once. Initialised as nanoGPT: linear and embedding weights N(0, 0.02), c_proj weights
 * N(0, 0.02 / sqrt(2 * n_layer)), biases 0, layer norms 1 and 0. em_forward(m, tokens):
 * tokens (N, T) i64/i32 with T <= block_size -> logits (N, T, vocab). */
em_module *em_gpt(const em_gpt_config *cfg);

#ifdef __cplusplus
}
#endif
#endif
