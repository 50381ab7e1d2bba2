/* core/autograd.c: graph recording and the backward engine.
 *
 * Graph ownership:   out --grad_fn--> node --inputs--> in0, in1 ...  (all counted references)
 * A node never references its own output, so there are no cycles: releasing the loss (or ending
 * the scope that owns it) frees the whole graph.
 *
 * em_backward_ex(root):
 *   1. discover: depth-first from root->grad_fn, count for every node how many consumers will send
 *      it a gradient (bw_deps) and for every leaf how many contributions it gets (bw_pending);
 *   2. call the begin observers (em_backward_reaches() answers from step 1);
 *   3. execute: a node runs when all its consumers have sent their gradient; a leaf's grad-ready
 *      hooks fire when its last contribution has been accumulated;
 *   4. release saved tensors and inputs of each node after it ran, unless retain_graph;
 *   5. call the end observers. */
#include "core/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local bool grad_disabled;
static _Thread_local bool bw_running;
static _Thread_local uint32_t bw_epoch; /* id of the current (or last) pass on this thread */
static uint32_t epoch_counter;          /* process-wide, so epochs never repeat across threads */
static int hook_counter;

bool em_no_grad_begin(void) {
  bool prev = !grad_disabled;
  grad_disabled = true;
  return prev;
}
void em_no_grad_end(bool previous) { grad_disabled = !previous; }
bool em_grad_enabled(void) { return !grad_disabled; }
bool em_backward_running(void) { return bw_running; }

/* ---- nodes ----------------------------------------------------------------------------- */
static void node_free_graph(em_node *n) {
  for (int k = 0; k < n->n_saved; k++) {
    em_release(n->saved[k]);
    n->saved[k] = NULL;
  }
  n->n_saved = 0;
  if (n->inputs) {
    for (int k = 0; k < n->n_in; k++) em_release(n->inputs[k]);
    free(n->inputs);
    n->inputs = NULL;
  }
  if (n->ctx) {
    if (n->ctx_free)
      n->ctx_free(n->ctx);
    else
      free(n->ctx);
    n->ctx = NULL;
  }
}

void em_node_release(em_node *n) {
  if (!n || __atomic_sub_fetch(&n->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
  node_free_graph(n);
  em_release(n->bw_grad);
  free(n);
}

em_node *em__record(em_tensor *out, const char *op, em_backward_fn bw, int n_in,
                    em_tensor *const *inputs) {
  if (!out || grad_disabled) return NULL;
  bool need = false;
  for (int k = 0; k < n_in; k++)
    if (inputs[k] && inputs[k]->requires_grad) need = true;
  if (!need) return NULL;
  em_node *n = calloc(1, sizeof *n);
  em_tensor **ins = calloc((size_t)n_in, sizeof *ins);
  if (!n || !ins) {
    free(n);
    free(ins);
    em_set_error(EM_ERR_NOMEM, "%s: out of memory recording the autograd node", op);
    return NULL;
  }
  n->op = op;
  n->refcount = 1;
  n->backward = bw;
  n->n_in = n_in;
  n->inputs = ins;
  for (int k = 0; k < n_in; k++) ins[k] = em_retain(inputs[k]);
  n->out_ndim = out->ndim;
  memcpy(n->out_shape, out->shape, sizeof out->shape);
  n->out_dtype = out->dtype;
  out->grad_fn = n;
  out->requires_grad = true;
  return n;
}

void em__save(em_node *n, em_tensor *t) {
  if (!n || !t) return;
  if (n->n_saved >= EM_NODE_MAX_SAVED) {
    fprintf(stderr, "ember: internal error: %s saves more than %d tensors\n", n->op,
            EM_NODE_MAX_SAVED);
    abort();
  }
  /* A detached alias: shares storage, holds no history (so no cycles through outputs). */
  em_scope s = em_scope_begin();
  em_tensor *v = em__view(t, t->ndim, t->shape, t->strides, t->offset);
  if (v) n->saved[n->n_saved++] = em_retain(v);
  em_scope_end(s);
}

em_tensor *em_detach(em_tensor *t) {
  EM_CHECK_INPUT(t, "detach");
  return em__view(t, t->ndim, t->shape, t->strides, t->offset);
}

/* ---- hooks and observers --------------------------------------------------------------- */
int em_tensor_on_grad_ready(em_tensor *leaf, em_grad_hook_fn fn, void *ctx) {
  if (!leaf || !fn) {
    em_set_error(EM_ERR_INVALID, "on_grad_ready: tensor or function is NULL");
    return 0;
  }
  if (leaf->grad_fn) {
    em_set_error(EM_ERR_INVALID, "on_grad_ready: '%s' is not a leaf (computed by %s)",
                 em_tensor_name(leaf), leaf->grad_fn->op);
    return 0;
  }
  struct em_hook *h = calloc(1, sizeof *h);
  if (!h) {
    em_set_error(EM_ERR_NOMEM, "on_grad_ready: out of memory");
    return 0;
  }
  h->id = __atomic_add_fetch(&hook_counter, 1, __ATOMIC_RELAXED);
  h->fn = fn;
  h->ctx = ctx;
  struct em_hook **tail = &leaf->hooks; /* keep registration order */
  while (*tail) tail = &(*tail)->next;
  *tail = h;
  return h->id;
}

void em_tensor_remove_hook(em_tensor *leaf, int hook_id) {
  if (!leaf) return;
  for (struct em_hook **p = &leaf->hooks; *p; p = &(*p)->next) {
    if ((*p)->id == hook_id) {
      struct em_hook *h = *p;
      *p = h->next;
      free(h);
      return;
    }
  }
}

typedef struct {
  int id;
  em_backward_begin_fn begin;
  em_backward_end_fn end;
  void *ctx;
} observer;
static observer observers[64];
static int n_observers;

int em_autograd_on_backward(em_backward_begin_fn begin, em_backward_end_fn end, void *ctx) {
  if (n_observers == (int)(sizeof observers / sizeof *observers)) {
    em_set_error(EM_ERR_INVALID, "autograd_on_backward: too many observers (%d)", n_observers);
    return 0;
  }
  int id = __atomic_add_fetch(&hook_counter, 1, __ATOMIC_RELAXED);
  observers[n_observers++] = (observer){id, begin, end, ctx};
  return id;
}

void em_autograd_remove_observer(int id) {
  for (int k = 0; k < n_observers; k++) {
    if (observers[k].id == id) {
      memmove(&observers[k], &observers[k + 1], (size_t)(n_observers - k - 1) * sizeof *observers);
      n_observers--;
      return;
    }
  }
}

bool em_backward_reaches(const em_tensor *t) {
  if (!t || !bw_running) return false;
  if (t->grad_fn) return t->grad_fn->bw_epoch == bw_epoch;
  return t->bw_epoch == bw_epoch; /* stamped by discover (or the leaf root) in this pass */
}

em_tensor *em__grad_sink(em_node *n, int k) {
  em_tensor *in = n->inputs[k];
  if (!in->requires_grad || in->grad_fn || !in->grad || in->grad->dtype != EM_F32 ||
      !em_is_contiguous(in->grad))
    return NULL;
  for (int j = 0; j < n->n_in; j++) /* the same leaf twice: let the engine add both */
    if (j != k && n->inputs[j] == in) return NULL;
  return in->grad;
}

/* ---- gradient helpers (the compute is the device table's accumulate and sum_to) -------------- */
em_status em__accumulate(em_tensor *out, const em_tensor *g) {
  const em_kernels *k = EM_KERNELS(out, accumulate, "backward");
  return k ? k->accumulate(out, g) : em_last_status();
}

em_tensor *em__sum_to(em_tensor *g, int ndim, const int64_t *shape) {
  if (g->ndim == ndim && memcmp(g->shape, shape, (size_t)ndim * sizeof *shape) == 0) return g;
  const em_kernels *k = EM_KERNELS(g, sum_to, "backward");
  em_tensor *c = k ? em__contig(g) : NULL;
  em_tensor *out = c ? em__empty_on(g->device, EM_F32, ndim, shape) : NULL;
  return out && k->sum_to(c, out) == EM_OK ? out : NULL;
}

/* ---- the engine ------------------------------------------------------------------------ */
typedef struct {
  em_node **v;
  size_t n, cap;
} node_vec;

static bool vec_push(node_vec *s, em_node *n) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    em_node **p = realloc(s->v, cap * sizeof *p);
    if (!p) return false;
    s->v = p;
    s->cap = cap;
  }
  s->v[s->n++] = n;
  return true;
}

/* Step 1. Every reachable node gets bw_epoch = epoch and bw_deps = number of consumers. */
static em_status discover(em_node *root, uint32_t epoch) {
  node_vec stack = {0};
  em_status st = EM_OK;
  root->bw_epoch = epoch;
  root->bw_deps = 0;
  em_release(root->bw_grad); /* left over by a failed pass */
  root->bw_grad = NULL;
  if (!vec_push(&stack, root)) goto nomem;
  while (stack.n) {
    em_node *n = stack.v[--stack.n];
    if (n->released) {
      st = em_set_error(EM_ERR_STATE,
                        "backward: trying to backward through the graph a second time (node '%s' "
                        "was freed by an earlier backward); pass retain_graph to keep it",
                        n->op);
      break;
    }
    for (int k = 0; k < n->n_in; k++) {
      em_tensor *in = n->inputs[k];
      if (!in || !in->requires_grad) continue;
      if (in->grad_fn) {
        em_node *m = in->grad_fn;
        if (m->bw_epoch != epoch) {
          m->bw_epoch = epoch;
          m->bw_deps = 0;
          em_release(m->bw_grad); /* left over by a failed pass */
          m->bw_grad = NULL;
          if (!vec_push(&stack, m)) goto nomem;
        }
        m->bw_deps++;
      } else {
        if (in->bw_epoch != epoch) {
          in->bw_epoch = epoch;
          in->bw_pending = 0;
        }
        in->bw_pending++;
      }
    }
  }
  free(stack.v);
  return st;
nomem:
  free(stack.v);
  return em_set_error(EM_ERR_NOMEM, "backward: out of memory walking the graph");
}

static void fire_hooks(em_tensor *leaf) {
  for (struct em_hook *h = leaf->hooks; h; h = h->next) h->fn(leaf, h->ctx);
}

/* Add g (may be NULL = zero) into a leaf's .grad, creating it if needed. */
static em_status leaf_accumulate(em_tensor *leaf, em_tensor *g) {
  if (g) {
    if (!em__same_shape(leaf, g)) {
      char a[EM_SHAPE_STR_LEN], b[EM_SHAPE_STR_LEN];
      return em_set_error(EM_ERR_STATE, "backward: gradient %s does not match leaf '%s' %s",
                          em_shape_str(g, a, sizeof a), em_tensor_name(leaf),
                          em_shape_str(leaf, b, sizeof b));
    }
    if (!leaf->grad) {
      em_tensor *c = em__alloc_on(leaf->device, EM_F32, leaf->ndim, leaf->shape, true);
      if (!c) return em_last_status();
      leaf->grad = c;
    }
    em_status st = em__accumulate(leaf->grad, g);
    if (st != EM_OK) return st;
  }
  if (--leaf->bw_pending == 0) fire_hooks(leaf);
  return EM_OK;
}

/* Add g into node m's pending gradient (engine-owned reference). */
static em_status node_accumulate(em_node *m, em_tensor *g) {
  if (!g) return EM_OK;
  if (!m->bw_grad) {
    /* Take ownership of a contiguous copy only if g may be shared (views); g here is engine-owned
     * and retained by the caller, so keep it, but copy if not contiguous. */
    if (em_is_contiguous(g)) {
      m->bw_grad = em_retain(g);
    } else {
      em_scope s = em_scope_begin();
      m->bw_grad = em_retain(em__contig(g));
      em_scope_end(s);
      if (!m->bw_grad) return em_last_status();
    }
    return EM_OK;
  }
  /* Accumulate into a private buffer: never modify a tensor someone else may hold. */
  if (m->bw_grad->refcount > 1 || m->bw_grad->storage->refcount > 1) {
    em_tensor *c =
        em__alloc_on(m->bw_grad->device, EM_F32, m->bw_grad->ndim, m->bw_grad->shape, true);
    if (!c) return em_last_status();
    em_status st = em__accumulate(c, m->bw_grad);
    em_release(m->bw_grad);
    m->bw_grad = c;
    if (st != EM_OK) return st;
  }
  return em__accumulate(m->bw_grad, g);
}

/* The ready list holds a reference to each queued node: releasing a node's inputs after it ran
 * can drop the last reference to an intermediate tensor (when only the graph held it), and with
 * it the intermediate's grad_fn, which may be queued already. */
static void node_retain(em_node *n) { __atomic_add_fetch(&n->refcount, 1, __ATOMIC_RELAXED); }

static em_status execute(em_node *root, em_tensor *seed, bool retain) {
  node_vec ready = {0};
  em_status st = EM_OK;
  root->bw_grad = em_retain(seed);
  node_retain(root);
  if (!vec_push(&ready, root)) {
    em_node_release(root);
    return em_set_error(EM_ERR_NOMEM, "backward: out of memory");
  }
  em_tensor *gin_small[8];
  while (ready.n && st == EM_OK) {
    em_node *n = ready.v[--ready.n];
    em_tensor **gin = n->n_in <= 8 ? gin_small : calloc((size_t)n->n_in, sizeof *gin);
    if (!gin) {
      st = em_set_error(EM_ERR_NOMEM, "backward: out of memory");
      break;
    }
    memset(gin, 0, (size_t)n->n_in * sizeof *gin);
    if (n->bw_grad) {
      em_scope s = em_scope_begin();
      st = n->backward(n, n->bw_grad, gin);
      for (int k = 0; k < n->n_in; k++) em_retain(gin[k]);
      em_scope_end(s);
      if (st == EM_OK) {
        for (int k = 0; k < n->n_in; k++) {
          em_tensor *in = n->inputs[k];
          if (gin[k] && in->requires_grad && !em__same_shape(gin[k], in)) {
            char a[EM_SHAPE_STR_LEN], b[EM_SHAPE_STR_LEN];
            st = em_set_error(
                EM_ERR_STATE, "backward of %s: gradient %s for input %d of shape %s (internal)",
                n->op, em_shape_str(gin[k], a, sizeof a), k, em_shape_str(in, b, sizeof b));
          }
        }
      } else if (em_last_status() == EM_OK) {
        em_set_error(st, "backward of %s failed", n->op);
      }
    }
    em_release(n->bw_grad);
    n->bw_grad = NULL;
    for (int k = 0; k < n->n_in && st == EM_OK; k++) {
      em_tensor *in = n->inputs[k];
      if (!in || !in->requires_grad) continue;
      if (in->grad_fn) {
        em_node *m = in->grad_fn;
        st = node_accumulate(m, gin[k]);
        if (st == EM_OK && --m->bw_deps == 0) {
          node_retain(m);
          if (!vec_push(&ready, m)) {
            em_node_release(m);
            st = em_set_error(EM_ERR_NOMEM, "backward: out of memory");
          }
        }
      } else {
        /* gin[k] NULL: no contribution, or the backward added it into in->grad itself */
        st = leaf_accumulate(in, gin[k]);
      }
    }
    for (int k = 0; k < n->n_in; k++) em_release(gin[k]);
    if (gin != gin_small) free(gin);
    if (!retain) {
      node_free_graph(n);
      n->released = true;
    }
    em_node_release(n); /* the ready list's reference */
  }
  /* On failure, drop pending gradients of nodes that never ran. */
  while (ready.n) {
    em_node *n = ready.v[--ready.n];
    em_release(n->bw_grad);
    n->bw_grad = NULL;
    em_node_release(n);
  }
  free(ready.v);
  return st;
}

/* Begin observers in registration order; the first failure stops the pass before any gradient
 * is computed (the end observers still run, with that status). */
static em_status run_begin_observers(void) {
  for (int k = 0; k < n_observers; k++) {
    if (!observers[k].begin) continue;
    em_status st = observers[k].begin(observers[k].ctx);
    if (st != EM_OK) {
      if (em_last_status() == EM_OK) em_set_error(st, "backward: a backward observer failed");
      return st;
    }
  }
  return EM_OK;
}

em_status em_backward_ex(em_tensor *root, em_tensor *seed, const em_backward_opts *opts) {
  if (!root) {
    if (em_last_status() == EM_OK) em_set_error(EM_ERR_INVALID, "backward: tensor is NULL");
    return em_last_status();
  }
  if (bw_running) return em_set_error(EM_ERR_STATE, "backward: called from inside a backward");
  if (!root->requires_grad)
    return em_set_error(EM_ERR_INVALID,
                        "backward: tensor '%s' does not require grad (no input of the "
                        "computation requires grad, or it ran under em_no_grad)",
                        em_tensor_name(root));
  char a[EM_SHAPE_STR_LEN], b[EM_SHAPE_STR_LEN];
  em_scope s = em_scope_begin();
  if (!seed) {
    if (em_numel(root) != 1) {
      em_scope_end(s);
      return em_set_error(EM_ERR_INVALID,
                          "backward: implicit gradient needs a tensor with one element, got %s",
                          em_shape_str(root, a, sizeof a));
    }
    seed = em_full(EM_F32, root->ndim, root->shape, 1.0);
    seed = em_to(seed, root->device); /* the root's gradient lives where the root does */
  } else if (!em__same_shape(seed, root) || seed->dtype != EM_F32) {
    em_scope_end(s);
    return em_set_error(EM_ERR_INVALID, "backward: seed gradient %s does not match output %s",
                        em_shape_str(seed, a, sizeof a), em_shape_str(root, b, sizeof b));
  }
  seed = em__contig(seed);
  if (!seed) {
    em_scope_end(s);
    return em_last_status();
  }
  bool retain = opts && opts->retain_graph;
  uint32_t epoch = __atomic_add_fetch(&epoch_counter, 1, __ATOMIC_RELAXED);
  bool prev_grad = em_no_grad_begin();
  em_status st;
  bool begun = false;
  if (!root->grad_fn) { /* backward on a leaf: its gradient is the seed */
    bw_epoch = epoch;
    root->bw_epoch = epoch;
    root->bw_pending = 1;
    bw_running = true;
    begun = true;
    st = run_begin_observers();
    if (st == EM_OK) st = leaf_accumulate(root, seed);
  } else {
    st = discover(root->grad_fn, epoch);
    bw_epoch = epoch;
    bw_running = true;
    if (st == EM_OK) {
      begun = true;
      st = run_begin_observers();
      if (st == EM_OK) st = execute(root->grad_fn, seed, retain);
    }
  }
  /* End observers run exactly when begin observers ran, so they always come in pairs. */
  for (int k = 0; begun && k < n_observers; k++)
    if (observers[k].end) {
      em_status se = observers[k].end(st, observers[k].ctx);
      if (st == EM_OK && se != EM_OK) st = se; /* e.g. the gradient all-reduce failed */
    }
  bw_running = false;
  em_no_grad_end(prev_grad);
  em_scope_end(s);
  return st;
}

em_status em_backward(em_tensor *loss) { return em_backward_ex(loss, NULL, NULL); }
