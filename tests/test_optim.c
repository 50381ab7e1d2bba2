/* test_optim.c: SGD (momentum, dampening, nesterov, weight decay), Adam and AdamW over 5 steps
 * against float64 loops of torch.optim's formulas; option defaults and EM_OPT_ZERO; skipped
 * parameters; in-place zero_grad; the state arena layout and names; checkpoint-style state
 * restore; learning-rate schedules against hand-computed values; error cases. */
#include "testutil.h"

#include "core/internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define NP 3
static const int64_t shapes[NP][2] = {{3, 5}, {7, 1}, {2, 2}};

typedef struct {
  em_tensor *p[NP];
} fixture;

/* The hand-built parameter list of f (no names: they default to "0", "1", ...). */
static em_params P(fixture *f) { return (em_params){.n = NP, .t = f->p}; }

/* Three parameters (15, 7 and 4 elements: none a multiple of 16) outside any scope, with .grad
 * tensors for the first two; the third never gets a gradient. */
static fixture make_params(uint64_t seed) {
  fixture f = {0};
  em_rng r = em_rng_new(seed);
  for (int i = 0; i < NP; i++) {
    f.p[i] = em_retain(em_rand_uniform(2, shapes[i], -1, 1, &r)); /* ours and the scope's */
    cr_assert_not_null(f.p[i]);
    em_set_requires_grad(f.p[i], true);
    if (i < 2) {
      em_set_grad(f.p[i], em_zeros(EM_F32, 2, shapes[i]));
    }
  }
  return f;
}

static void free_params(fixture *f) {
  for (int i = 0; i < NP; i++) em_release(f->p[i]);
}

/* The gradient for step s of parameter i, element k (deterministic, sign-varying). */
static double grad_at(int s, int i, int64_t k) { return sin(1.3 * k + 0.7 * i + 2.1 * s) + 0.1; }

static void fill_grads(fixture *f, int s) {
  for (int i = 0; i < 2; i++)
    for (int64_t k = 0; k < em_numel(f->p[i]); k++) em_set(f->p[i]->grad, k, grad_at(s, i, k));
}

/* float64 torch.optim formulas for one parameter over `steps` steps. */
typedef struct {
  int kind; /* 0 SGD, 1 Adam, 2 AdamW */
  double lr, mom, damp, wd, b1, b2, eps;
  bool nesterov;
} ref_opts;

static void reference(const ref_opts *o, double *p, int64_t n, int i, int steps, double *buf,
                      double *v) {
  for (int64_t k = 0; k < n; k++) buf[k] = v[k] = 0;
  for (int s = 0; s < steps; s++) {
    int t = s + 1;
    for (int64_t k = 0; k < n; k++) {
      double g = (double)(float)grad_at(s, i, k);
      if (o->kind == 0) {
        double d = g + o->wd * p[k];
        if (o->mom != 0) {
          buf[k] = s == 0 ? d : o->mom * buf[k] + (1 - o->damp) * d;
          d = o->nesterov ? d + o->mom * buf[k] : buf[k];
        }
        p[k] -= o->lr * d;
      } else {
        if (o->kind == 2)
          p[k] *= 1 - o->lr * o->wd;
        else
          g += o->wd * p[k];
        buf[k] = o->b1 * buf[k] + (1 - o->b1) * g;
        v[k] = o->b2 * v[k] + (1 - o->b2) * g * g;
        double bc1 = 1 - pow(o->b1, t), bc2 = 1 - pow(o->b2, t);
        p[k] -= o->lr / bc1 * buf[k] / (sqrt(v[k]) / sqrt(bc2) + o->eps);
      }
    }
  }
}

/* Runs opt for 5 steps on f and compares every parameter (and the first slot of state) with the
 * float64 reference. */
static void check_five_steps(fixture *f, em_optim *opt, const ref_opts *ro, const char *what) {
  cr_assert_not_null(opt, "%s: %s", what, em_last_error());
  double init[NP][16];
  for (int i = 0; i < NP; i++)
    for (int64_t k = 0; k < em_numel(f->p[i]); k++) init[i][k] = em_get(f->p[i], k);
  for (int s = 0; s < 5; s++) {
    fill_grads(f, s);
    cr_assert_eq(em_step(opt), EM_OK, "%s: %s", what, em_last_error());
    cr_assert_eq(em_zero_grad(opt), EM_OK);
  }
  cr_assert_eq(em_optim_step_count(opt), 5);
  for (int i = 0; i < NP; i++) {
    int64_t n = em_numel(f->p[i]);
    double buf[16], v[16];
    if (i < 2) reference(ro, init[i], n, i, 5, buf, v);
    tu_assert_close(f->p[i], init[i], n, 2e-5, 2e-6, what);
    if (i == 2) continue; /* skipped: unchanged above */
    const char *name;
    em_tensor *st =
        em_optim_num_state(opt) > 1 ? em_optim_state_at(opt, i * (ro->kind ? 2 : 1), &name) : NULL;
    if (st) tu_assert_close(st, buf, n, 2e-5, 2e-6, name);
    if (st && ro->kind)
      tu_assert_close(em_optim_state_at(opt, i * 2 + 1, NULL), v, n, 2e-5, 1e-9, "exp_avg_sq");
  }
  em_tensor *steps = em_optim_state(opt, "param_steps");
  cr_assert_not_null(steps);
  tu_assert_close(steps, (double[]){5, 5, 0}, 3, 0, 0, "param_steps");
}

Test(optim, sgd_variants_match_torch_formulas) {
  em_scope sc = em_scope_begin();
  struct {
    em_sgd_opts o;
    const char *what;
  } cases[] = {
      {{.lr = 0.1}, "plain"},
      {{.lr = 0.05, .momentum = 0.9}, "momentum"},
      {{.lr = 0.05, .momentum = 0.8, .dampening = 0.3, .weight_decay = 0.01}, "damp+wd"},
      {{.lr = 0.02, .momentum = 0.9, .nesterov = true, .weight_decay = 0.1}, "nesterov+wd"},
      {{.lr = 0.1, .weight_decay = 0.5}, "wd only"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    fixture f = make_params(c + 1);
    em_optim *opt = em_sgd_new(P(&f), &cases[c].o);
    ref_opts ro = {0,
                   cases[c].o.lr,
                   cases[c].o.momentum,
                   cases[c].o.dampening,
                   cases[c].o.weight_decay,
                   0,
                   0,
                   0,
                   cases[c].o.nesterov};
    check_five_steps(&f, opt, &ro, cases[c].what);
    cr_assert_str_eq(em_optim_name(opt), "SGD");
    em_optim_free(opt);
    free_params(&f);
  }
  em_scope_end(sc);
}

Test(optim, adam_and_adamw_match_torch_formulas) {
  em_scope sc = em_scope_begin();
  struct {
    int kind;
    em_adam_opts o;
    ref_opts ro;
  } cases[] = {
      {1, {0}, {1, 1e-3, 0, 0, 0, 0.9, 0.999, 1e-8, false}},
      {1,
       {.lr = 0.01, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .weight_decay = 0.1},
       {1, 0.01, 0, 0, 0.1, 0.8, 0.99, 1e-6, false}},
      {2, {.lr = 0.01}, {2, 0.01, 0, 0, 0.01, 0.9, 0.999, 1e-8, false}},
      {2,
       {.lr = 0.05, .weight_decay = 0.3, .beta1 = EM_OPT_ZERO},
       {2, 0.05, 0, 0, 0.3, 0.0, 0.999, 1e-8, false}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    fixture f = make_params(c + 10);
    em_optim *opt =
        cases[c].kind == 1 ? em_adam_new(P(&f), &cases[c].o) : em_adamw_new(P(&f), &cases[c].o);
    check_five_steps(&f, opt, &cases[c].ro, cases[c].kind == 1 ? "adam" : "adamw");
    cr_assert_str_eq(em_optim_name(opt), cases[c].kind == 1 ? "Adam" : "AdamW");
    em_optim_free(opt);
    free_params(&f);
  }
  em_scope_end(sc);
}

/* Two optimizers over equal copies give bit-identical parameters after 3 steps. */
static void assert_same_run(em_optim *(*mk_a)(em_params), em_optim *(*mk_b)(em_params),
                            const char *what) {
  fixture fa = make_params(7), fb = make_params(7);
  em_optim *a = mk_a(P(&fa)), *b = mk_b(P(&fb));
  cr_assert(a && b, "%s: %s", what, em_last_error());
  for (int s = 0; s < 3; s++) {
    fill_grads(&fa, s);
    fill_grads(&fb, s);
    em_step(a);
    em_step(b);
  }
  for (int i = 0; i < NP; i++)
    cr_assert(!memcmp(em_data(fa.p[i]), em_data(fb.p[i]), (size_t)em_numel(fa.p[i]) * 4),
              "%s: parameter %d differs", what, i);
  em_optim_free(a);
  em_optim_free(b);
  free_params(&fa);
  free_params(&fb);
}

static em_optim *adam_default(em_params p) { return em_adam(p); }
static em_optim *adam_explicit(em_params p) {
  return em_adam(p, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0);
}
static em_optim *adamw_default(em_params p) { return em_adamw_new(p, NULL); }
static em_optim *adamw_explicit(em_params p) { return em_adamw(p, .weight_decay = 0.01); }
static em_optim *adamw_no_wd(em_params p) { return em_adamw(p, .weight_decay = EM_OPT_ZERO); }

Test(optim, defaults_and_explicit_zero) {
  em_scope sc = em_scope_begin();
  assert_same_run(adam_default, adam_explicit, "adam defaults");
  assert_same_run(adamw_default, adamw_explicit, "adamw default weight_decay 0.01");
  assert_same_run(adamw_no_wd, adam_default, "adamw with EM_OPT_ZERO weight decay = adam");
  fixture f = make_params(3);
  em_optim *o = em_sgd(P(&f), .lr = EM_OPT_ZERO, .momentum = 0.9);
  cr_assert_not_null(o, "%s", em_last_error());
  cr_assert_eq(em_optim_lr(o), 0.0);
  double before = em_get(f.p[0], 4);
  fill_grads(&f, 0);
  em_step(o);
  cr_assert_eq(em_get(f.p[0], 4), before, "lr 0 must not move the parameter");
  em_optim_free(o);
  free_params(&f);
  em_scope_end(sc);
}

Test(optim, zero_grad_in_place_and_lr_access) {
  em_scope sc = em_scope_begin();
  fixture f = make_params(4);
  em_optim *o = em_sgd(P(&f), .lr = 0.1);
  em_tensor *g0 = f.p[0]->grad;
  float *d0 = em_data_f32(g0);
  fill_grads(&f, 1);
  cr_assert_eq(em_zero_grad(o), EM_OK);
  cr_assert_eq(f.p[0]->grad, g0, "zero_grad replaced the tensor");
  cr_assert_eq(em_data_f32(f.p[0]->grad), d0, "zero_grad replaced the memory");
  for (int64_t k = 0; k < 15; k++) cr_assert_eq(d0[k], 0.0f);
  cr_assert_null(f.p[2]->grad, "zero_grad created a gradient");
  cr_assert_eq(em_optim_set_lr(o, 0.25), EM_OK);
  cr_assert_eq(em_optim_lr(o), 0.25);
  cr_assert_eq(em_optim_set_lr(o, -1), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "lr"));
  cr_assert_eq(em_optim_num_params(o), NP);
  cr_assert_eq(em_optim_param(o, 1), f.p[1]);
  cr_assert_eq(em_optim_num_state(o), 1, "plain SGD has only param_steps");
  cr_assert_null(em_optim_state_arena(o, NULL, NULL));
  em_optim_free(o);
  free_params(&f);
  em_scope_end(sc);
}

Test(optim, state_arena_layout_and_names) {
  em_scope sc = em_scope_begin();
  fixture f = make_params(5);
  em_params pn = P(&f);
  pn.names = (const char *[]){"a", "b", "c"};
  em_optim *o = em_adam(pn, .lr = 0.01);
  int slots;
  int64_t slot_numel;
  float *arena = em_optim_state_arena(o, &slots, &slot_numel);
  cr_assert_not_null(arena);
  cr_assert_eq(((uintptr_t)arena) % 64, 0, "state arena not 64-byte aligned");
  cr_assert_eq(slots, 2);
  cr_assert_eq(slot_numel, 16 + 16 + 16, "offsets 0, 16, 32 with 16-float alignment");
  const char *expect[] = {"a.exp_avg", "a.exp_avg_sq", "b.exp_avg",  "b.exp_avg_sq",
                          "c.exp_avg", "c.exp_avg_sq", "param_steps"};
  const int64_t off[] = {0, 16, 32};
  cr_assert_eq(em_optim_num_state(o), 7);
  for (int i = 0; i < 7; i++) {
    const char *name;
    em_tensor *t = em_optim_state_at(o, i, &name);
    cr_assert_str_eq(name, expect[i]);
    cr_assert_eq(em_optim_state(o, expect[i]), t);
    if (i == 6) {
      cr_assert_eq(t->dtype, EM_I64);
      continue;
    }
    int p = i / 2, slot = i % 2;
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->shape[0], shapes[p][0]);
    cr_assert_eq(t->shape[1], shapes[p][1]);
    cr_assert_eq(em_data_f32(t), arena + slot * slot_numel + off[p], "%s misplaced", name);
  }
  fill_grads(&f, 0);
  em_step(o);
  cr_assert_eq(arena[0], em_get(em_optim_state(o, "a.exp_avg"), 0));
  cr_assert_neq(arena[0], 0.0f);
  cr_assert_eq(arena[15], 0.0f, "padding must stay zero");
  tu_assert_error(em_optim_state(o, "a.momentum_buffer"), "a.momentum_buffer", "Adam");
  tu_assert_error(em_optim_state_at(o, 7, NULL), "out of range", NULL);
  em_optim_free(o);
  free_params(&f);
  em_scope_end(sc);
}

/* Restoring every state tensor and the step count reproduces the run bit for bit. */
static void check_restore(bool adam) {
  fixture fa = make_params(8), fb = make_params(9);
  em_optim *a = adam ? em_adamw(P(&fa), .lr = 0.01)
                     : em_sgd(P(&fa), .lr = 0.1, .momentum = 0.9, .dampening = 0.5);
  for (int s = 0; s < 3; s++) {
    fill_grads(&fa, s);
    em_step(a);
  }
  em_optim *b = adam ? em_adamw(P(&fb), .lr = 0.01)
                     : em_sgd(P(&fb), .lr = 0.1, .momentum = 0.9, .dampening = 0.5);
  for (int i = 0; i < NP; i++) memcpy(em_data(fb.p[i]), em_data(fa.p[i]), em_numel(fa.p[i]) * 4);
  for (int i = 0; i < em_optim_num_state(a); i++) {
    const char *name;
    em_tensor *src = em_optim_state_at(a, i, &name), *dst = em_optim_state(b, name);
    cr_assert_not_null(dst, "%s", name);
    memcpy(em_data(dst), em_data(src), em_numel(src) * em_dtype_size(src->dtype));
  }
  em_optim_set_step_count(b, em_optim_step_count(a));
  for (int s = 3; s < 5; s++) {
    fill_grads(&fa, s);
    fill_grads(&fb, s);
    em_step(a);
    em_step(b);
  }
  cr_assert_eq(em_optim_step_count(b), 5);
  for (int i = 0; i < NP; i++)
    cr_assert(!memcmp(em_data(fa.p[i]), em_data(fb.p[i]), em_numel(fa.p[i]) * 4),
              "restored %s run differs on parameter %d", adam ? "AdamW" : "SGD", i);
  em_optim_free(a);
  em_optim_free(b);
  free_params(&fa);
  free_params(&fb);
}

Test(optim, state_restore_reproduces_the_run) {
  em_scope sc = em_scope_begin();
  check_restore(false);
  check_restore(true);
  em_scope_end(sc);
}

/* A module's parameters: the optimizer's state slots mirror the parameter arena's offsets. */
Test(optim, state_layout_mirrors_the_parameter_arena) {
  em_scope sc = em_scope_begin();
  em_module *m = em_module_new("Net", NULL, NULL, NULL);
  em_module *c = em_module_new("Sub", NULL, NULL, NULL);
  em_rng r = em_rng_new(1);
  em_module_add_param(m, "w", em_rand_uniform(EM_SHAPE(5, 7), -1, 1, &r));
  em_module_add_param(c, "x", em_rand_uniform(EM_SHAPE(33), -1, 1, &r));
  em_module_add_child(m, "sub", c);
  em_params p = em_parameters(m);
  cr_assert_eq(p.n, 2);
  em_optim *o = em_sgd(p, .lr = 0.1, .momentum = 0.5);
  int slots;
  int64_t slot_numel;
  float *st = em_optim_state_arena(o, &slots, &slot_numel);
  cr_assert_eq(slot_numel, p.arena_numel);
  for (int i = 0; i < p.n; i++) {
    char name[64];
    snprintf(name, sizeof name, "%s.momentum_buffer", p.names[i]);
    cr_assert_eq(em_data_f32(em_optim_state(o, name)) - st, p.offset[i], "%s", name);
    cr_assert_eq(em_data_f32(p.t[i]) - p.arena, p.offset[i]);
  }
  /* The optimizer holds its own references: it outlives the module. */
  em_module_free(m);
  em_tensor *w = em_optim_param(o, 0);
  em_tensor *g = em_full(EM_F32, EM_SHAPE(5, 7), 1.0);
  em_set_grad(w, g);
  double before = em_get(w, 0);
  cr_assert_eq(em_step(o), EM_OK);
  cr_assert_float_eq(em_get(w, 0), before - 0.1, 1e-6);
  em_optim_free(o);
  em_scope_end(sc);
}

Test(optim, errors_name_the_option) {
  em_scope sc = em_scope_begin();
  fixture f = make_params(6);
  tu_assert_error((void *)em_sgd(P(&f), .momentum = 0.9), "lr is required", NULL);
  tu_assert_error((void *)em_sgd(P(&f), .lr = 0.1, .nesterov = true), "nesterov", NULL);
  tu_assert_error(
      (void *)em_sgd(P(&f), .lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true),
      "nesterov", "dampening");
  tu_assert_error((void *)em_sgd(P(&f), .lr = 0.1, .momentum = -1), "momentum", NULL);
  tu_assert_error((void *)em_sgd(P(&f), .lr = -0.1), "lr", NULL);
  tu_assert_error((void *)em_adam(P(&f), .beta1 = 1.0), "beta1", NULL);
  tu_assert_error((void *)em_adamw(P(&f), .beta2 = 1.5), "beta2", NULL);
  tu_assert_error((void *)em_adam(P(&f), .eps = -1), "eps", NULL);
  tu_assert_error((void *)em_adamw(P(&f), .weight_decay = -0.1), "weight_decay", NULL);
  tu_assert_error((void *)em_sgd_new((em_params){.n = 0, .t = f.p}, &(em_sgd_opts){.lr = 1}),
                  "empty", NULL);
  tu_assert_error(
      (void *)em_adam_new((em_params){.n = 2, .t = (em_tensor *[]){f.p[0], f.p[0]}}, NULL),
      "appears twice", NULL);
  em_tensor *y = em_mul(f.p[0], f.p[0]);
  tu_assert_error((void *)em_adam_new((em_params){.n = 1, .t = &y}, NULL), "computed by an op",
                  NULL);
  /* A failed em_parameters keeps its own message. */
  tu_assert_error((void *)em_sgd(em_parameters(NULL), .lr = 0.1), "module is NULL", NULL);
  /* A gradient of the wrong size: em_step fails before touching any parameter. */
  em_optim *o = em_sgd(P(&f), .lr = 0.1);
  double before = em_get(f.p[0], 0);
  fill_grads(&f, 0);
  em_tensor *bad = em_zeros(EM_F32, EM_SHAPE(3));
  em_release(f.p[1]->grad);
  f.p[1]->grad = em_retain(bad); /* bypasses em_set_grad's check on purpose */
  cr_assert_eq(em_step(o), EM_ERR_STATE);
  cr_assert(strstr(em_last_error(), "gradient of '1'"), "%s", em_last_error());
  cr_assert_eq(em_get(f.p[0], 0), before);
  em_clear_error();
  /* A gradient on another device than its parameter (host memory labelled cuda:0, never read):
   * em_step refuses before an update kernel gets a pointer it cannot dereference. */
  float other[15] = {0};
  em_tensor *elsewhere = em__tensor_lent(other, sizeof other, EM_DEVICE_CUDA(0), EM_F32, 2,
                                         shapes[0], NULL, NULL, NULL);
  cr_assert_not_null(elsewhere, "%s", em_last_error());
  em_release(f.p[0]->grad);
  f.p[0]->grad = elsewhere; /* bypasses em_set_grad, which refuses it, on purpose */
  cr_assert_eq(em_step(o), EM_ERR_STATE);
  cr_assert(strstr(em_last_error(), "gradient of '0' is on cuda:0, the parameter on cpu"), "%s",
            em_last_error());
  cr_assert_eq(em_get(f.p[0], 0), before);
  em_clear_error();
  em_optim_free(o);
  cr_assert_eq(em_step(NULL), EM_ERR_INVALID);
  em_optim_free(NULL);
  free_params(&f);
  em_scope_end(sc);
}

/* ---- schedules ------------------------------------------------------------------------------- */
static void assert_lr(const em_lr_schedule *s, double base, int64_t step, double want) {
  double got = em_lr_at(s, base, step);
  cr_assert(fabs(got - want) <= 1e-12 * fmax(1, fabs(want)), "step %lld: lr %.15g, want %.15g",
            (long long)step, got, want);
}

Test(schedule, constant_step_cosine_with_warmup) {
  em_lr_schedule c = {.kind = EM_LR_CONSTANT};
  assert_lr(&c, 0.1, 0, 0.1);
  assert_lr(&c, 0.1, 1000, 0.1);
  em_lr_schedule cw = {.kind = EM_LR_CONSTANT, .warmup_steps = 4};
  assert_lr(&cw, 0.1, 0, 0.025);
  assert_lr(&cw, 0.1, 1, 0.05);
  assert_lr(&cw, 0.1, 3, 0.1);
  assert_lr(&cw, 0.1, 4, 0.1);

  em_lr_schedule st = {.kind = EM_LR_STEP, .step_size = 3, .gamma = 0.5};
  double want_st[] = {1, 1, 1, 0.5, 0.5, 0.5, 0.25};
  for (int k = 0; k < 7; k++) assert_lr(&st, 1.0, k, want_st[k]);
  em_lr_schedule stw = {.kind = EM_LR_STEP, .step_size = 2, .warmup_steps = 2}; /* gamma 0.1 */
  double want_stw[] = {0.5, 1, 1, 1, 0.1, 0.1, 0.01};
  for (int k = 0; k < 7; k++) assert_lr(&stw, 1.0, k, want_stw[k]);

  /* Cosine from 1.0 to 0.1 over steps 2..6 (D = 4) after 2 warmup steps. */
  em_lr_schedule cs = {.kind = EM_LR_COSINE, .warmup_steps = 2, .total_steps = 6, .min_lr = 0.1};
  double h = 0.5 * (1 + cos(M_PI / 4)), q = 0.5 * (1 + cos(3 * M_PI / 4));
  double want_cs[] = {0.5, 1.0, 1.0, 0.1 + 0.9 * h, 0.55, 0.1 + 0.9 * q, 0.1, 0.1};
  for (int k = 0; k < 8; k++) assert_lr(&cs, 1.0, k, want_cs[k]);
  em_lr_schedule cs0 = {.kind = EM_LR_COSINE, .total_steps = 10};
  assert_lr(&cs0, 0.2, 0, 0.2);
  assert_lr(&cs0, 0.2, 5, 0.1);
  assert_lr(&cs0, 0.2, 10, 0.0);
}

Test(schedule, drives_the_optimizer_and_rejects_bad_fields) {
  em_scope sc = em_scope_begin();
  fixture f = make_params(2);
  em_optim *o = em_sgd(P(&f), .lr = 1);
  em_lr_schedule s = {.kind = EM_LR_STEP, .step_size = 2, .gamma = 0.5};
  double want[] = {0.4, 0.4, 0.2, 0.2, 0.1};
  for (int k = 0; k < 5; k++) {
    cr_assert_eq(em_optim_schedule(o, &s, 0.4), EM_OK);
    cr_assert_float_eq(em_optim_lr(o), want[k], 1e-15);
    fill_grads(&f, k);
    em_step(o);
  }
  em_optim_free(o);
  free_params(&f);

  struct {
    em_lr_schedule s;
    const char *needle;
  } bad[] = {
      {{.kind = EM_LR_STEP}, "step_size"},
      {{.kind = EM_LR_STEP, .step_size = 1, .gamma = -1}, "gamma"},
      {{.kind = EM_LR_COSINE, .total_steps = 5, .warmup_steps = 5}, "total_steps"},
      {{.kind = EM_LR_COSINE, .total_steps = 5, .min_lr = -1}, "min_lr"},
      {{.kind = EM_LR_CONSTANT, .warmup_steps = -1}, "warmup_steps"},
      {{.kind = (em_lr_kind)7}, "unknown kind"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    cr_assert_eq(em_lr_schedule_check(&bad[k].s), EM_ERR_INVALID);
    cr_assert(isnan(em_lr_at(&bad[k].s, 0.1, 0)));
    cr_assert(strstr(em_last_error(), bad[k].needle), "'%s' lacks '%s'", em_last_error(),
              bad[k].needle);
  }
  cr_assert(isnan(em_lr_at(&(em_lr_schedule){0}, 0.1, -1)));
  em_clear_error();
  em_scope_end(sc);
}
