/* em_optim.h: optimizers (SGD, Adam, AdamW with exactly torch.optim's updates) and learning-rate
 * schedules.
 *
 *   em_optim *opt = em_sgd(em_parameters(model), .lr = 0.05, .momentum = 0.9);
 *   ... em_backward(loss); em_step(opt); em_zero_grad(opt); ...
 *   em_optim_free(opt);
 *
 * Options are designated initialisers; a field left at zero means PyTorch's default for it
 * (listed per field). Where PyTorch's default is not zero (Adam's betas and eps, AdamW's
 * weight_decay, Adam's lr) a zero field therefore means that default, NOT zero: to ask for an
 * actual zero there, write EM_OPT_ZERO (a negative zero, which the constructors read as 0):
 *
 *   em_adamw(p, .lr = 3e-4, .weight_decay = EM_OPT_ZERO)   // AdamW without weight decay
 *
 * State. The optimizer keeps its own references to the parameters (it may outlive the module)
 * and copies their names. Its state (SGD momentum_buffer; Adam exp_avg, exp_avg_sq) lives in one
 * 64-byte aligned f32 arena per optimizer with the parameter arena's layout (em_arena_align):
 *
 *   state arena: | slot 0: param 0 |pad| param 1 |pad| ... | slot 1: param 0 |pad| ...  |
 *                  ^ 0               ^ offset[1]           ^ slot_numel
 *
 * so the state of a parameter slice (offset, length) of em_parameters(root) is the same slice of
 * each slot. The state tensors are named "<param>.momentum_buffer", "<param>.exp_avg" and
 * "<param>.exp_avg_sq" (torch's state keys), plus "param_steps": an i64 tensor (n_params) with
 * each parameter's own step count (steps in which it had a gradient; torch's state['step']). The
 * arena lives on the parameters' device; param_steps always in host memory.
 * Writing all of them (a checkpoint restore) restores the optimizer exactly; a momentum buffer
 * counts as present once its parameter's step count is > 0, as in torch. */
#ifndef EMBER_OPTIM_H
#define EMBER_OPTIM_H

#include "em_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An explicit zero for option fields whose zero means "PyTorch's default" (see above). */
#define EM_OPT_ZERO (-0.0)

typedef struct em_optim em_optim;

/* torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov). Per parameter p with
 * gradient g, in float32:
 *   d = g + weight_decay * p                              (if weight_decay != 0)
 *   buf = d on p's first step, else momentum * buf + (1 - dampening) * d   (if momentum != 0)
 *   d = nesterov ? d + momentum * buf : buf               (if momentum != 0)
 *   p = p - lr * d                                                                         */
typedef struct {
  double lr;           /* required (> 0), as torch.optim.SGD; EM_OPT_ZERO for an explicit 0 */
  double momentum;     /* default 0 */
  double dampening;    /* default 0 */
  double weight_decay; /* default 0 (L2 added to the gradient) */
  bool nesterov;       /* default false; needs momentum > 0 and dampening 0 */
} em_sgd_opts;

/* torch.optim.Adam (L2: weight_decay * p added to the gradient) and torch.optim.AdamW (decoupled:
 * p *= 1 - lr * weight_decay before the update). Per parameter, with t its step count:
 *   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g * g
 *   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)                    */
typedef struct {
  double lr;           /* 0 = 1e-3 */
  double beta1;        /* 0 = 0.9 (EM_OPT_ZERO for 0) */
  double beta2;        /* 0 = 0.999 */
  double eps;          /* 0 = 1e-8 */
  double weight_decay; /* 0 = 0 for Adam, 0.01 for AdamW (EM_OPT_ZERO for none) */
} em_adam_opts;

/* New optimizers over the n parameters of p (p is only read: see "State" above); opts NULL =
 * defaults. The caller owns the result (em_optim_free). NULL with the error set on an invalid
 * option (naming it), an empty or NULL-containing parameter list, a parameter that is not a
 * contiguous f32 leaf, or parameters on more than one device. The state is allocated on the
 * parameters' device: move the model (em_module_to) before creating its optimizer. If p.t is NULL
 * because em_parameters failed, returns NULL keeping that error. */
em_optim *em_sgd_new(em_params p, const em_sgd_opts *opts);
em_optim *em_adam_new(em_params p, const em_adam_opts *opts);
em_optim *em_adamw_new(em_params p, const em_adam_opts *opts);
#define em_sgd(p, ...) em_sgd_new((p), &(em_sgd_opts){__VA_ARGS__})
#define em_adam(p, ...) em_adam_new((p), &(em_adam_opts){__VA_ARGS__})
#define em_adamw(p, ...) em_adamw_new((p), &(em_adam_opts){__VA_ARGS__})
void em_optim_free(em_optim *o); /* NULL ok */

/* One update of every parameter that has a .grad (parameters whose .grad is NULL are skipped and
 * their step count is not advanced, as torch). Gradients must be contiguous f32 of the
 * parameter's shape, on its device; parameters must still be on the device they were on when the
 * optimizer was made (EM_ERR_STATE otherwise, and nothing changes). */
em_status em_step(em_optim *o);
/* Zero every parameter's .grad in place (never replaces or frees the tensor: a data-parallel
 * reducer may have pointed .grad into its bucket buffers). Parameters without .grad are left so. */
em_status em_zero_grad(em_optim *o);

/* "SGD", "Adam" or "AdamW". */
const char *em_optim_name(const em_optim *o);
double em_optim_lr(const em_optim *o);
em_status em_optim_set_lr(em_optim *o, double lr); /* lr >= 0 */
/* Number of em_step calls so far (the schedule step), and setting it (checkpoint restore). */
int64_t em_optim_step_count(const em_optim *o);
em_status em_optim_set_step_count(em_optim *o, int64_t steps);

/* Parameters, as the optimizer holds them (borrowed). */
int em_optim_num_params(const em_optim *o);
em_tensor *em_optim_param(const em_optim *o, int i);
/* State tensors (see "State" above): count, by index (with its name), by name. Borrowed: owned
 * by the optimizer, valid until em_optim_free; write into them to restore a checkpoint.
 * NULL with the error set for a bad index or an unknown name. */
int em_optim_num_state(const em_optim *o);
em_tensor *em_optim_state_at(const em_optim *o, int i, const char **name);
em_tensor *em_optim_state(const em_optim *o, const char *name);
/* The state arena (slots of slot_numel floats each, see above); NULL for plain SGD. Borrowed. It
 * lives on the parameters' device: for a GPU, device memory (not readable on the host). */
float *em_optim_state_arena(const em_optim *o, int *n_slots, int64_t *slot_numel);

/* ---- learning-rate schedules (lr_schedule.c) ----------------------------------------------
 * lr(step), step = 0, 1, ... the index of the update about to run (em_optim_step_count()):
 *   warmup (step < warmup_steps):  base_lr * (step + 1) / warmup_steps
 *   then, with t = step - warmup_steps:
 *     EM_LR_CONSTANT:  base_lr
 *     EM_LR_STEP:      base_lr * gamma ^ floor(t / step_size)
 *     EM_LR_COSINE:    min_lr + (base_lr - min_lr) * (1 + cos(pi * t / D)) / 2 for t < D,
 *                      min_lr from then on, where D = total_steps - warmup_steps
 * Example: (em_lr_schedule){.kind = EM_LR_COSINE, .total_steps = 1000, .warmup_steps = 100}. */
typedef enum { EM_LR_CONSTANT = 0, EM_LR_STEP = 1, EM_LR_COSINE = 2 } em_lr_kind;
typedef struct {
  em_lr_kind kind;
  int64_t warmup_steps; /* 0 = no warmup */
  int64_t step_size;    /* EM_LR_STEP: > 0 */
  double gamma;         /* EM_LR_STEP: multiplier per step_size steps (0 = 0.1, torch's StepLR) */
  int64_t total_steps;  /* EM_LR_COSINE: > warmup_steps */
  double min_lr;        /* EM_LR_COSINE: final lr (default 0) */
} em_lr_schedule;
/* Check a schedule's fields: EM_OK, or EM_ERR_INVALID naming the field. */
em_status em_lr_schedule_check(const em_lr_schedule *s);
/* The learning rate for step (a pure function). NAN with the error set if s is invalid or
 * step < 0. */
double em_lr_at(const em_lr_schedule *s, double base_lr, int64_t step);
/* em_optim_set_lr(o, em_lr_at(s, base_lr, em_optim_step_count(o))): call before em_step. */
em_status em_optim_schedule(em_optim *o, const em_lr_schedule *s, double base_lr);

#ifdef __cplusplus
}
#endif
#endif
