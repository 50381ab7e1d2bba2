/* optim/optim.c: SGD, Adam and AdamW, with torch.optim's exact update order (see em_optim.h).
 *
 * The optimizer keeps references to its parameters and a state arena laid out like the parameter
 * arena (slot k of parameter i at k * slot_numel + offset[i]). Each update is one kernel call per
 * parameter over flat float arrays, from the table of the parameter's device (sgd_update,
 * adam_update); options are resolved once at construction, so the kernels only see floats.
 * Gradients are checked for every parameter before any parameter changes, so a failed em_step
 * leaves the model untouched. */
#include "core/kernels.h"
#include "em_optim.h"
#include "em_timeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { OPT_SGD, OPT_ADAM, OPT_ADAMW } opt_kind;
static const char *kind_name[] = {"SGD", "Adam", "AdamW"};
static const char *op_name[] = {"sgd", "adam", "adamw"};

struct em_optim {
  opt_kind kind;
  double lr, momentum, dampening, weight_decay, beta1, beta2, eps;
  bool nesterov;
  int64_t steps; /* em_step calls */
  int n;
  em_tensor **p;   /* n retained parameters */
  char **names;    /* n copies */
  int64_t *offset; /* n offsets into each slot */
  int64_t slot_numel;
  em_device device;  /* the parameters' device at construction, where the state lives */
  int n_slots;       /* 0 (plain SGD), 1 (SGD momentum), 2 (Adam m, v) */
  em_tensor *arena;  /* f32 (n_slots * slot_numel); NULL without slots */
  em_tensor *psteps; /* i64 (n): per-parameter step counts */
  int n_state;
  em_tensor **state; /* n * n_slots views (parameter-major), then psteps; retained */
  char **state_names;
};

/* ---- options --------------------------------------------------------------------------------- */
/* A zero field means def; EM_OPT_ZERO (negative zero) means an explicit 0. */
static double or_default(double v, double def) {
  if (v == 0) return signbit(v) ? 0.0 : def;
  return v;
}

static em_status bad_opt(opt_kind k, const char *field, double v, const char *rule) {
  return em_set_error(EM_ERR_INVALID, "%s: invalid %s %g (%s)", op_name[k], field, v, rule);
}

/* ---- construction ---------------------------------------------------------------------------- */
void em_optim_free(em_optim *o) {
  if (!o) return;
  for (int i = 0; i < o->n; i++) {
    em_release(o->p ? o->p[i] : NULL);
    free(o->names ? o->names[i] : NULL);
  }
  for (int i = 0; i < o->n_state; i++) {
    em_release(o->state[i]);
    free(o->state_names[i]);
  }
  free(o->p);
  free(o->names);
  free(o->offset);
  free(o->state);
  free(o->state_names);
  em_release(o->arena);
  em_release(o->psteps);
  free(o);
}

static char *join(const char *a, const char *b) {
  size_t len = strlen(a) + strlen(b) + 2;
  char *s = malloc(len);
  if (s) snprintf(s, len, "%s%s%s", a, *b ? "." : "", b);
  return s;
}

/* Check the parameter list and take references; lay out and allocate the state. */
static em_status setup(em_optim *o, em_params p, int n_slots) {
  const char *op = op_name[o->kind];
  static const char *slot_names[2][2] = {{"momentum_buffer", NULL}, {"exp_avg", "exp_avg_sq"}};
  if (!p.t) {
    if (em_last_status() != EM_OK) return em_last_status(); /* em_parameters failed */
    return em_set_error(EM_ERR_INVALID, "%s: parameter list is NULL", op);
  }
  if (p.n <= 0) return em_set_error(EM_ERR_INVALID, "%s: empty parameter list", op);
  o->p = calloc((size_t)p.n, sizeof *o->p);
  o->names = calloc((size_t)p.n, sizeof *o->names);
  o->offset = calloc((size_t)p.n, sizeof *o->offset);
  if (!o->p || !o->names || !o->offset) goto nomem;
  o->n = p.n;
  int64_t off = 0;
  for (int i = 0; i < p.n; i++) {
    em_tensor *t = p.t[i];
    char num[24];
    snprintf(num, sizeof num, "%d", i);
    const char *nm = p.names && p.names[i] ? p.names[i] : t && t->name ? t->name : num;
    if (!t || t->grad_fn || t->dtype != EM_F32 || !em_is_contiguous(t))
      return em_set_error(EM_ERR_INVALID,
                          "%s: parameter %d ('%s') must be a contiguous f32 leaf tensor%s", op, i,
                          nm,
                          !t           ? " (it is NULL)"
                          : t->grad_fn ? " (it was computed by an op)"
                                       : "");
    /* One device for all: the state arena lives there, next to the parameters. */
    em_device d0 = p.t[0] ? p.t[0]->device : t->device;
    if (t->device.kind != d0.kind || t->device.index != d0.index)
      return em_set_error(
          EM_ERR_INVALID, "%s: parameter %d ('%s') is on %s:%d, parameter 0 on %s:%d", op, i, nm,
          em__kernels(t->device)->name, t->device.index, em__kernels(d0)->name, d0.index);
    for (int j = 0; j < i; j++)
      if (o->p[j] == t)
        return em_set_error(EM_ERR_INVALID, "%s: parameter '%s' appears twice (%d and %d)", op, nm,
                            j, i);
    o->p[i] = em_retain(t);
    if (!(o->names[i] = strdup(nm))) goto nomem;
    o->offset[i] = off;
    off = em_arena_align(off + em_numel(t));
  }
  o->slot_numel = off;
  o->device = o->p[0]->device;
  o->n_slots = n_slots;
  o->psteps = em__alloc_noscope(EM_I64, 1, (int64_t[]){p.n}, true);
  if (!o->psteps) return em_last_status();
  if (n_slots) {
    o->arena =
        em__alloc_on(o->p[0]->device, EM_F32, 1, (int64_t[]){n_slots * (off ? off : 1)}, true);
    if (!o->arena) return em_last_status();
  }
  o->state = calloc((size_t)(p.n * n_slots + 1), sizeof *o->state);
  o->state_names = calloc((size_t)(p.n * n_slots + 1), sizeof *o->state_names);
  if (!o->state || !o->state_names) goto nomem;
  em_scope s = em_scope_begin(); /* em__view registers with the scope; keep our own reference */
  for (int i = 0; i < p.n; i++) {
    em_tensor *t = o->p[i];
    for (int k = 0; k < n_slots; k++) {
      em_tensor *v = em__view(o->arena, t->ndim, t->shape, t->strides,
                              o->arena->offset + k * o->slot_numel + o->offset[i]);
      char *name = join(o->names[i], slot_names[o->kind == OPT_SGD ? 0 : 1][k]);
      o->state[o->n_state] = em_retain(v);
      o->state_names[o->n_state++] = name;
      if (!v || !name) {
        em_scope_end(s);
        goto nomem;
      }
    }
  }
  em_scope_end(s);
  o->state[o->n_state] = em_retain(o->psteps);
  if (!(o->state_names[o->n_state++] = strdup("param_steps"))) goto nomem;
  return EM_OK;
nomem:
  return em_set_error(EM_ERR_NOMEM, "%s: out of memory allocating optimizer state", op);
}

em_optim *em_sgd_new(em_params p, const em_sgd_opts *opts) {
  em_sgd_opts d = opts ? *opts : (em_sgd_opts){0};
  em_optim *o = calloc(1, sizeof *o);
  if (!o) {
    em_set_error(EM_ERR_NOMEM, "sgd: out of memory");
    return NULL;
  }
  o->kind = OPT_SGD;
  o->lr = d.lr == 0 ? 0.0 : d.lr;
  o->momentum = or_default(d.momentum, 0);
  o->dampening = or_default(d.dampening, 0);
  o->weight_decay = or_default(d.weight_decay, 0);
  o->nesterov = d.nesterov;
  em_status st = EM_OK;
  if (d.lr == 0 && !signbit(d.lr))
    st = em_set_error(EM_ERR_INVALID, "sgd: lr is required (torch.optim.SGD has no default); "
                                      "write EM_OPT_ZERO for an explicit 0");
  else if (!(o->lr >= 0))
    st = bad_opt(OPT_SGD, "lr", o->lr, "must be >= 0");
  else if (!(o->momentum >= 0))
    st = bad_opt(OPT_SGD, "momentum", o->momentum, "must be >= 0");
  else if (!(o->dampening >= 0 && o->dampening <= 1))
    st = bad_opt(OPT_SGD, "dampening", o->dampening, "must be in [0, 1]");
  else if (!(o->weight_decay >= 0))
    st = bad_opt(OPT_SGD, "weight_decay", o->weight_decay, "must be >= 0");
  else if (o->nesterov && (o->momentum <= 0 || o->dampening != 0))
    st = em_set_error(EM_ERR_INVALID,
                      "sgd: nesterov momentum requires a momentum > 0 and zero "
                      "dampening (got momentum %g, dampening %g)",
                      o->momentum, o->dampening);
  if (st == EM_OK) st = setup(o, p, o->momentum != 0 ? 1 : 0);
  if (st != EM_OK) {
    em_optim_free(o);
    return NULL;
  }
  return o;
}

static em_optim *adam_new(opt_kind kind, em_params p, const em_adam_opts *opts) {
  em_adam_opts d = opts ? *opts : (em_adam_opts){0};
  em_optim *o = calloc(1, sizeof *o);
  if (!o) {
    em_set_error(EM_ERR_NOMEM, "%s: out of memory", op_name[kind]);
    return NULL;
  }
  o->kind = kind;
  o->lr = or_default(d.lr, 1e-3);
  o->beta1 = or_default(d.beta1, 0.9);
  o->beta2 = or_default(d.beta2, 0.999);
  o->eps = or_default(d.eps, 1e-8);
  o->weight_decay = or_default(d.weight_decay, kind == OPT_ADAMW ? 1e-2 : 0);
  em_status st = EM_OK;
  if (!(o->lr >= 0))
    st = bad_opt(kind, "lr", o->lr, "must be >= 0");
  else if (!(o->beta1 >= 0 && o->beta1 < 1))
    st = bad_opt(kind, "beta1", o->beta1, "[0, 1)");
  else if (!(o->beta2 >= 0 && o->beta2 < 1))
    st = bad_opt(kind, "beta2", o->beta2, "[0, 1)");
  else if (!(o->eps >= 0))
    st = bad_opt(kind, "eps", o->eps, "must be >= 0");
  else if (!(o->weight_decay >= 0))
    st = bad_opt(kind, "weight_decay", o->weight_decay, "must be >= 0");
  if (st == EM_OK) st = setup(o, p, 2);
  if (st != EM_OK) {
    em_optim_free(o);
    return NULL;
  }
  return o;
}

em_optim *em_adam_new(em_params p, const em_adam_opts *opts) { return adam_new(OPT_ADAM, p, opts); }
em_optim *em_adamw_new(em_params p, const em_adam_opts *opts) {
  return adam_new(OPT_ADAMW, p, opts);
}

/* ---- the step ------------------------------------------------------------------------------- */
/* The table with o's update kernel for t's device; NULL (error set) when that device has none. */
static const em_kernels *update_kernels(const em_optim *o, const em_tensor *t) {
  return o->kind == OPT_SGD ? EM_KERNELS(t, sgd_update, op_name[o->kind])
                            : EM_KERNELS(t, adam_update, op_name[o->kind]);
}

static bool same_device(em_device a, em_device b) { return a.kind == b.kind && a.index == b.index; }

/* Every parameter must still be on the optimizer's device and every gradient present on its
 * parameter's: the update kernels get raw pointers, and memory of another device (a model moved
 * after the optimizer was made leaves the state arena behind; a gradient set on another device)
 * would be dereferenced where it is not valid. Every gradient present must be a contiguous f32
 * tensor of its parameter's size, and the parameter's device must have the update kernel. */
static em_status check_grads(const em_optim *o) {
  char a[EM_DEVICE_STR_LEN], b[EM_DEVICE_STR_LEN];
  for (int i = 0; i < o->n; i++) {
    const em_tensor *t = o->p[i], *g = t->grad;
    if (!em_is_contiguous(t))
      return em_set_error(EM_ERR_STATE, "%s: parameter '%s' is no longer contiguous",
                          op_name[o->kind], o->names[i]);
    if (!same_device(t->device, o->device))
      return em_set_error(EM_ERR_STATE,
                          "%s: parameter '%s' is on %s but the optimizer's state is on %s (move "
                          "the model before creating the optimizer)",
                          op_name[o->kind], o->names[i], em__device_str(t->device, a, sizeof a),
                          em__device_str(o->device, b, sizeof b));
    if (g && !same_device(g->device, t->device))
      return em_set_error(EM_ERR_STATE, "%s: gradient of '%s' is on %s, the parameter on %s",
                          op_name[o->kind], o->names[i], em__device_str(g->device, a, sizeof a),
                          em__device_str(t->device, b, sizeof b));
    if (g && (g->dtype != EM_F32 || em_numel(g) != em_numel(t) || !em_is_contiguous(g))) {
      char sa[EM_SHAPE_STR_LEN], sb[EM_SHAPE_STR_LEN];
      return em_set_error(EM_ERR_STATE, "%s: gradient of '%s' is %s %s%s, parameter is %s",
                          op_name[o->kind], o->names[i], em_dtype_name(g->dtype),
                          em_shape_str(g, sa, sizeof sa), em_is_contiguous(g) ? "" : " strided",
                          em_shape_str(t, sb, sizeof sb));
    }
    if (g && !update_kernels(o, t)) return em_last_status();
  }
  return EM_OK;
}

static em_status step_impl(em_optim *o);

/* The step, recorded on the reducer's timeline when there is one. */
em_status em_step(em_optim *o) {
  em_timeline *tl = em_timeline_current();
  double t0 = tl ? em_timeline_now() : 0;
  em_status st = step_impl(o);
  if (tl) em_timeline_span(tl, "optimizer step", "optim", 0, t0, em_timeline_now());
  return st;
}

static em_status step_impl(em_optim *o) {
  if (!o) return em_set_error(EM_ERR_INVALID, "step: optimizer is NULL");
  em_status st = check_grads(o);
  if (st != EM_OK) return st;
  int64_t *ps = em_data(o->psteps);
  float *arena = o->arena ? em_data_f32(o->arena) : NULL;
  for (int i = 0; i < o->n; i++) {
    em_tensor *t = o->p[i];
    if (!t->grad) continue;
    int64_t n = em_numel(t);
    float *p = em_data_f32(t), *s0 = arena ? arena + o->offset[i] : NULL;
    const float *g = em_data_f32(t->grad);
    bool first = ps[i] == 0;
    int64_t step = ++ps[i];
    const em_kernels *k = em__kernels(t->device); /* has the update: checked by check_grads */
    if (o->kind == OPT_SGD) {
      st = k->sgd_update(n, p, g, o->n_slots ? s0 : NULL, (float)o->lr, (float)o->weight_decay,
                         (float)o->momentum, (float)o->dampening, first, o->nesterov);
      if (st != EM_OK) return st;
      continue;
    }
    /* Python-float (double) scalars as torch computes them, rounded to float for the kernel. */
    double bc1 = 1 - pow(o->beta1, (double)step), bc2 = 1 - pow(o->beta2, (double)step);
    double step_size = o->lr / bc1;
    bool adamw = o->kind == OPT_ADAMW;
    st = k->adam_update(n, p, g, s0, s0 + o->slot_numel, (float)o->beta1, (float)o->beta2,
                        adamw ? 0.0f : (float)o->weight_decay,
                        adamw ? (float)(1 - o->lr * o->weight_decay) : 1.0f, (float)-step_size,
                        (float)sqrt(bc2), (float)o->eps);
    if (st != EM_OK) return st;
  }
  o->steps++;
  return EM_OK;
}

em_status em_zero_grad(em_optim *o) {
  if (!o) return em_set_error(EM_ERR_INVALID, "zero_grad: optimizer is NULL");
  for (int i = 0; i < o->n; i++) {
    em_tensor *g = o->p[i]->grad;
    if (!g) continue;
    if (em_is_contiguous(g)) { /* zeroed on its device */
      const em_kernels *k = EM_KERNELS(g, zero, "zero_grad");
      em_status st =
          k ? k->zero(g->device.index, em_data(g), (size_t)em_numel(g) * em_dtype_size(g->dtype))
            : em_last_status();
      if (st != EM_OK) return st;
    } else {
      for (int64_t k = 0, n = em_numel(g); k < n; k++) em_set(g, k, 0);
    }
  }
  return EM_OK;
}

/* ---- accessors ------------------------------------------------------------------------------- */
const char *em_optim_name(const em_optim *o) { return o ? kind_name[o->kind] : ""; }
double em_optim_lr(const em_optim *o) { return o ? o->lr : 0; }
int64_t em_optim_step_count(const em_optim *o) { return o ? o->steps : 0; }
int em_optim_num_params(const em_optim *o) { return o ? o->n : 0; }
int em_optim_num_state(const em_optim *o) { return o ? o->n_state : 0; }

em_status em_optim_set_lr(em_optim *o, double lr) {
  if (!o) return em_set_error(EM_ERR_INVALID, "optim_set_lr: optimizer is NULL");
  if (!(lr >= 0 && isfinite(lr)))
    return em_set_error(EM_ERR_INVALID, "%s: invalid lr %g (must be finite and >= 0)",
                        op_name[o->kind], lr);
  o->lr = lr == 0 ? 0.0 : lr;
  return EM_OK;
}

em_status em_optim_set_step_count(em_optim *o, int64_t steps) {
  if (!o) return em_set_error(EM_ERR_INVALID, "optim_set_step_count: optimizer is NULL");
  if (steps < 0)
    return em_set_error(EM_ERR_INVALID, "%s: step count %lld < 0", op_name[o->kind],
                        (long long)steps);
  o->steps = steps;
  return EM_OK;
}

em_tensor *em_optim_param(const em_optim *o, int i) {
  if (!o || i < 0 || i >= o->n) {
    em_set_error(EM_ERR_INVALID, "optim_param: index %d out of range (%d parameters)", i,
                 o ? o->n : 0);
    return NULL;
  }
  return o->p[i];
}

em_tensor *em_optim_state_at(const em_optim *o, int i, const char **name) {
  if (name) *name = NULL;
  if (!o || i < 0 || i >= o->n_state) {
    em_set_error(EM_ERR_INVALID, "optim_state_at: index %d out of range (%d state tensors)", i,
                 o ? o->n_state : 0);
    return NULL;
  }
  if (name) *name = o->state_names[i];
  return o->state[i];
}

em_tensor *em_optim_state(const em_optim *o, const char *name) {
  if (!o || !name) {
    em_set_error(EM_ERR_INVALID, "optim_state: optimizer or name is NULL");
    return NULL;
  }
  for (int i = 0; i < o->n_state; i++)
    if (!strcmp(o->state_names[i], name)) return o->state[i];
  em_set_error(EM_ERR_INVALID,
               "optim_state: %s has no state tensor '%s' (%d state tensors, e.g. "
               "'%s')",
               kind_name[o->kind], name, o->n_state, o->state_names[0]);
  return NULL;
}

float *em_optim_state_arena(const em_optim *o, int *n_slots, int64_t *slot_numel) {
  if (n_slots) *n_slots = o ? o->n_slots : 0;
  if (slot_numel) *slot_numel = o ? o->slot_numel : 0;
  return o && o->arena ? em_data_f32(o->arena) : NULL;
}
