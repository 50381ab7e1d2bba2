/* optim/lr_schedule.c: learning-rate schedules (constant, step decay, cosine), each with an optional
 * linear warmup, as a pure function of the step (formulas in em_optim.h). */
#include "em_optim.h"

#include <math.h>

em_status em_lr_schedule_check(const em_lr_schedule *s) {
  if (!s) return em_set_error(EM_ERR_INVALID, "lr_schedule: schedule is NULL");
  if (s->warmup_steps < 0)
    return em_set_error(EM_ERR_INVALID, "lr_schedule: warmup_steps %lld < 0",
                        (long long)s->warmup_steps);
  switch (s->kind) {
  case EM_LR_CONSTANT: return EM_OK;
  case EM_LR_STEP:
    if (s->step_size <= 0)
      return em_set_error(EM_ERR_INVALID, "lr_schedule: step: step_size must be > 0, got %lld",
                          (long long)s->step_size);
    if (!(s->gamma >= 0 && isfinite(s->gamma)))
      return em_set_error(EM_ERR_INVALID, "lr_schedule: step: gamma must be >= 0, got %g",
                          s->gamma);
    return EM_OK;
  case EM_LR_COSINE:
    if (s->total_steps <= s->warmup_steps)
      return em_set_error(EM_ERR_INVALID,
                          "lr_schedule: cosine: total_steps (%lld) must exceed warmup_steps (%lld)",
                          (long long)s->total_steps, (long long)s->warmup_steps);
    if (!(s->min_lr >= 0 && isfinite(s->min_lr)))
      return em_set_error(EM_ERR_INVALID, "lr_schedule: cosine: min_lr must be >= 0, got %g",
                          s->min_lr);
    return EM_OK;
  }
  return em_set_error(EM_ERR_INVALID, "lr_schedule: unknown kind %d", (int)s->kind);
}

double em_lr_at(const em_lr_schedule *s, double base_lr, int64_t step) {
  if (em_lr_schedule_check(s) != EM_OK) return NAN;
  if (step < 0) {
    em_set_error(EM_ERR_INVALID, "lr_schedule: step %lld < 0", (long long)step);
    return NAN;
  }
  if (step < s->warmup_steps) return base_lr * (double)(step + 1) / (double)s->warmup_steps;
  int64_t t = step - s->warmup_steps;
  switch (s->kind) {
  case EM_LR_STEP: {
    double gamma = s->gamma == 0 ? (signbit(s->gamma) ? 0.0 : 0.1) : s->gamma;
    return base_lr * pow(gamma, (double)(t / s->step_size));
  }
  case EM_LR_COSINE: {
    int64_t d = s->total_steps - s->warmup_steps;
    if (t >= d) return s->min_lr;
    return s->min_lr + (base_lr - s->min_lr) * 0.5 * (1 + cos(M_PI * (double)t / (double)d));
  }
  default: return base_lr;
  }
}

em_status em_optim_schedule(em_optim *o, const em_lr_schedule *s, double base_lr) {
  if (!o) return em_set_error(EM_ERR_INVALID, "optim_schedule: optimizer is NULL");
  double lr = em_lr_at(s, base_lr, em_optim_step_count(o));
  if (isnan(lr)) return em_last_status();
  return em_optim_set_lr(o, lr);
}
