/* profile.c: ember-ddp-bench --profile (profile.h). */
#define _GNU_SOURCE /* qsort_r */
#include "profile.h"

#include "em_file.h"
#include "em_timeline.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  bench_profile *p;
  int i; /* parameter index */
} slot;

struct bench_profile {
  em_params params;
  em_module *model;
  int *hook_ids;
  slot *slots;
  double *ready_sum; /* per parameter: seconds from backward start to grad-ready, summed */
  int *ready_n;      /* timed steps in which the hook fired */
  double t_begin;
  bool timed;
  int steps;
  double forward_s, backward_s, optimizer_s; /* summed over timed steps */
};

static void on_ready(em_tensor *leaf, void *ctx) {
  (void)leaf;
  slot *s = ctx;
  bench_profile *p = s->p;
  if (!p->timed) return;
  p->ready_sum[s->i] += em_timeline_now() - p->t_begin;
  p->ready_n[s->i]++;
}

bench_profile *profile_attach(em_module *model) {
  bench_profile *p = calloc(1, sizeof *p);
  if (!p) {
    em_set_error(EM_ERR_NOMEM, "profile: out of memory");
    return NULL;
  }
  p->model = model;
  p->params = em_parameters(model);
  int n = p->params.n;
  p->hook_ids = calloc((size_t)n + 1, sizeof *p->hook_ids);
  p->slots = calloc((size_t)n + 1, sizeof *p->slots);
  p->ready_sum = calloc((size_t)n + 1, sizeof *p->ready_sum);
  p->ready_n = calloc((size_t)n + 1, sizeof *p->ready_n);
  if (!p->hook_ids || !p->slots || !p->ready_sum || !p->ready_n) {
    profile_free(p);
    em_set_error(EM_ERR_NOMEM, "profile: out of memory");
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    p->slots[i] = (slot){p, i};
    if (!(p->hook_ids[i] = em_tensor_on_grad_ready(p->params.t[i], on_ready, &p->slots[i]))) {
      profile_free(p);
      return NULL;
    }
  }
  return p;
}

void profile_backward_begins(bench_profile *p, bool timed) {
  p->timed = timed;
  p->t_begin = em_timeline_now();
}

void profile_step(bench_profile *p, double forward_s, double backward_s, double optimizer_s) {
  p->steps++;
  p->forward_s += forward_s;
  p->backward_s += backward_s;
  p->optimizer_s += optimizer_s;
}

/* Parameters in the order their gradients became ready (mean time), for qsort_r. */
static int by_ready(const void *a, const void *b, void *ctx) {
  const double *t = ctx;
  double x = t[*(const int *)a], y = t[*(const int *)b];
  return x < y ? -1 : x > y;
}

/* The profile as a cJSON tree (NULL when out of memory). */
static cJSON *profile_json(const bench_profile *p, const char *model, int batch, int threads) {
  int n = p->params.n, steps = p->steps > 0 ? p->steps : 1;
  double *mean = calloc((size_t)n + 1, sizeof *mean);
  int *order = calloc((size_t)n + 1, sizeof *order);
  cJSON *root = cJSON_CreateObject(), *layers = cJSON_CreateArray();
  bool ok = mean && order && root && layers;
  for (int i = 0; ok && i < n; i++) {
    mean[i] = p->ready_n[i] ? p->ready_sum[i] / p->ready_n[i] : 0;
    order[i] = i;
  }
  if (ok) qsort_r(order, (size_t)n, sizeof *order, by_ready, mean);
  ok = ok && cJSON_AddStringToObject(root, "format", "ember-scale-profile") &&
       cJSON_AddNumberToObject(root, "version", 1) &&
       cJSON_AddStringToObject(root, "name", model) &&
       cJSON_AddStringToObject(root, "order", "backward") &&
       cJSON_AddNumberToObject(root, "batch", batch) &&
       cJSON_AddNumberToObject(root, "threads", threads) &&
       cJSON_AddNumberToObject(root, "steps", p->steps) &&
       cJSON_AddNumberToObject(root, "forward_s", p->forward_s / steps) &&
       cJSON_AddNumberToObject(root, "backward_s", p->backward_s / steps) &&
       cJSON_AddNumberToObject(root, "optimizer_s", p->optimizer_s / steps);
  double prev = 0;
  for (int k = 0; ok && k < n; k++) { /* ready order: the layer's own compute since the last */
    int i = order[k];
    cJSON *l = cJSON_CreateObject(), *numel = cJSON_CreateArray();
    if (numel) cJSON_AddItemToArray(numel, cJSON_CreateNumber((double)em_numel(p->params.t[i])));
    ok = l && numel && cJSON_GetArraySize(numel) == 1 &&
         cJSON_AddStringToObject(l, "name", p->params.names ? p->params.names[i] : "") &&
         cJSON_AddItemToObject(l, "params", numel) && (numel = NULL, true) &&
         cJSON_AddNumberToObject(l, "ready_s", mean[i]) &&
         cJSON_AddNumberToObject(l, "backward_s", mean[i] - prev);
    cJSON_Delete(numel);
    if (l && !ok) cJSON_Delete(l);
    if (ok) cJSON_AddItemToArray(layers, l);
    prev = mean[i];
  }
  if (ok) cJSON_AddItemToObject(root, "layers", layers), layers = NULL;
  cJSON_Delete(layers);
  free(mean);
  free(order);
  if (!ok) cJSON_Delete(root);
  return ok ? root : NULL;
}

bool profile_write(const bench_profile *p, const char *path, const char *model, int batch,
                   int threads) {
  cJSON *root = profile_json(p, model, batch, threads);
  char *text = root ? cJSON_Print(root) : NULL;
  cJSON_Delete(root);
  if (!text) {
    em_set_error(EM_ERR_NOMEM, "profile: out of memory");
    return false;
  }
  size_t len = strlen(text);
  text[len] = '\n'; /* cJSON's terminator becomes the last line's end */
  em_atomic_file *f = em_atomic_file_open(path);
  bool ok = f && em_atomic_file_write(f, text, len + 1) == EM_OK;
  if (f && !ok) em_atomic_file_abort(f);
  ok = ok && em_atomic_file_commit(f) == EM_OK;
  free(text);
  return ok;
}

void profile_free(bench_profile *p) {
  if (!p) return;
  for (int i = 0; p->hook_ids && i < p->params.n; i++)
    if (p->hook_ids[i]) em_tensor_remove_hook(p->params.t[i], p->hook_ids[i]);
  free(p->hook_ids);
  free(p->slots);
  free(p->ready_sum);
  free(p->ready_n);
  free(p);
}
