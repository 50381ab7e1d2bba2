/* nn/module.c: the module tree (named parameters, buffers, children), whole-tree queries, lookup by
 * dotted name, train/eval, and the flat parameter arena (see em_nn.h for the contracts).
 *
 * Each module caches a flattened view of its subtree (names, tensors, arena offsets), built on
 * first use and dropped whenever the module or any descendant changes (changes walk up the parent
 * links). The arena belongs to a root module: packing rebinds each parameter tensor's storage and
 * offset into one em_tensor-owned storage, so the em_tensor pointers never change. */
#include "core/internal.h"
#include "core/kernels.h"
#include "em_nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char *name;
  em_tensor *t; /* module's reference */
} entry;

typedef struct {
  char *name;
  em_module *m; /* owned */
} child;

typedef struct {
  int n_params, n_tensors;
  em_tensor **t;      /* n_tensors: parameters, then buffers (borrowed from the tree) */
  const char **names; /* n_tensors, owned strings */
  int64_t *numel;     /* n_params */
  int64_t *offset;    /* n_params: arena offsets (computed even when not packed) */
  int64_t arena_numel;
} flat_view;

struct em_module {
  char *type;
  em_forward_fn forward;
  void *ctx;
  void (*ctx_free)(void *);
  bool training;
  entry *params, *buffers;
  int n_params, n_buffers, cap_params, cap_buffers;
  child *children;
  int n_children, cap_children;
  em_module *parent;
  flat_view *flat;  /* cache; NULL when stale */
  em_tensor *arena; /* root only: 1-D f32 tensor owning the packed storage; NULL if not packed */
};

/* ---- construction and destruction ------------------------------------------------------------ */
em_module *em_module_new(const char *type, em_forward_fn forward, void *ctx,
                         void (*ctx_free)(void *)) {
  em_module *m = calloc(1, sizeof *m);
  char *ty = strdup(type ? type : "Module");
  if (!m || !ty) {
    free(m);
    free(ty);
    if (ctx && ctx_free) ctx_free(ctx);
    em_set_error(EM_ERR_NOMEM, "module_new: out of memory creating a %s", type ? type : "Module");
    return NULL;
  }
  m->type = ty;
  m->forward = forward;
  m->ctx = ctx;
  m->ctx_free = ctx_free;
  m->training = true;
  return m;
}

static void flat_free(flat_view *f) {
  if (!f) return;
  for (int i = 0; i < f->n_tensors; i++) free((char *)f->names[i]);
  free(f->t);
  free(f->names);
  free(f->numel);
  free(f->offset);
  free(f);
}

/* Drop the cached view of m and every ancestor (their subtrees contain m's). */
static void invalidate(em_module *m) {
  for (; m; m = m->parent) {
    flat_free(m->flat);
    m->flat = NULL;
  }
}

void em_module_free(em_module *m) {
  if (!m) return;
  if (m->parent) { /* owned by its parent: freeing it here would leave the parent dangling */
    em_set_error(EM_ERR_STATE, "module_free: %s is a child of %s; free the root instead", m->type,
                 m->parent->type);
    return;
  }
  for (int i = 0; i < m->n_params; i++) {
    free(m->params[i].name);
    em_release(m->params[i].t);
  }
  for (int i = 0; i < m->n_buffers; i++) {
    free(m->buffers[i].name);
    em_release(m->buffers[i].t);
  }
  for (int i = 0; i < m->n_children; i++) {
    free(m->children[i].name);
    m->children[i].m->parent = NULL;
    em_module_free(m->children[i].m);
  }
  if (m->ctx && m->ctx_free) m->ctx_free(m->ctx);
  flat_free(m->flat);
  em_release(m->arena);
  free(m->params);
  free(m->buffers);
  free(m->children);
  free(m->type);
  free(m);
}

/* Is name a valid new member name of m? Sets the error if not. */
static bool check_name(em_module *m, const char *what, const char *name) {
  if (!name || !*name || strchr(name, '.')) {
    em_set_error(EM_ERR_INVALID, "%s: %s: invalid name '%s' (non-empty, no '.')", what, m->type,
                 name ? name : "(null)");
    return false;
  }
  bool dup = false;
  for (int i = 0; i < m->n_params; i++) dup |= !strcmp(m->params[i].name, name);
  for (int i = 0; i < m->n_buffers; i++) dup |= !strcmp(m->buffers[i].name, name);
  for (int i = 0; i < m->n_children; i++) dup |= !strcmp(m->children[i].name, name);
  if (dup)
    em_set_error(EM_ERR_INVALID, "%s: %s already has a member named '%s'", what, m->type, name);
  return !dup;
}

static em_status add_entry(em_module *m, const char *what, entry **v, int *n, int *cap,
                           const char *name, em_tensor *t) {
  if (*n == *cap) {
    int c = *cap ? *cap * 2 : 4;
    entry *p = realloc(*v, (size_t)c * sizeof *p);
    if (!p) return em_set_error(EM_ERR_NOMEM, "%s: out of memory", what);
    *v = p;
    *cap = c;
  }
  char *nm = strdup(name);
  if (!nm) return em_set_error(EM_ERR_NOMEM, "%s: out of memory", what);
  (*v)[(*n)++] = (entry){nm, em_retain(t)};
  invalidate(m);
  return EM_OK;
}

em_status em_module_add_param(em_module *m, const char *name, em_tensor *t) {
  if (!m || !t)
    return em_set_error(EM_ERR_INVALID, "module_add_param: %s is NULL ('%s')",
                        m ? "tensor" : "module", name ? name : "");
  if (!check_name(m, "module_add_param", name)) return em_last_status();
  if (t->grad_fn || t->dtype != EM_F32 || t->device.kind != EM_CPU)
    return em_set_error(
        EM_ERR_INVALID, "module_add_param: %s.%s must be an f32 CPU leaf tensor (got %s%s)",
        m->type, name, em_dtype_name(t->dtype), t->grad_fn ? ", computed by an op" : "");
  em_status st = em_set_requires_grad(t, true);
  if (st != EM_OK) return st;
  return add_entry(m, "module_add_param", &m->params, &m->n_params, &m->cap_params, name, t);
}

em_status em_module_add_buffer(em_module *m, const char *name, em_tensor *t) {
  if (!m || !t)
    return em_set_error(EM_ERR_INVALID, "module_add_buffer: %s is NULL ('%s')",
                        m ? "tensor" : "module", name ? name : "");
  if (!check_name(m, "module_add_buffer", name)) return em_last_status();
  return add_entry(m, "module_add_buffer", &m->buffers, &m->n_buffers, &m->cap_buffers, name, t);
}

em_status em_module_add_child(em_module *m, const char *name, em_module *c) {
  em_status st = EM_OK;
  if (!m || !c) {
    st = em_set_error(EM_ERR_INVALID, "module_add_child: %s is NULL ('%s')", m ? "child" : "module",
                      name ? name : "");
    goto fail;
  }
  for (em_module *a = m; a; a = a->parent) {
    if (a == c) {
      st = em_set_error(EM_ERR_INVALID, "module_add_child: adding %s '%s' would make a cycle",
                        c->type, name ? name : "");
      return st; /* c is m or an ancestor of m: not ours to free */
    }
  }
  if (c->parent) {
    st = em_set_error(EM_ERR_INVALID, "module_add_child: %s '%s' already has a parent", c->type,
                      name ? name : "");
    return st; /* owned by its parent: not ours to free */
  }
  if (!check_name(m, "module_add_child", name)) {
    st = em_last_status();
    goto fail;
  }
  if (m->n_children == m->cap_children) {
    int cap = m->cap_children ? m->cap_children * 2 : 4;
    child *p = realloc(m->children, (size_t)cap * sizeof *p);
    if (!p) goto nomem;
    m->children = p;
    m->cap_children = cap;
  }
  char *nm = strdup(name);
  if (!nm) goto nomem;
  m->children[m->n_children++] = (child){nm, c};
  c->parent = m;
  /* c is no longer a root: its own arena (if any) stays valid until m packs, which moves every
   * parameter out of it; drop c's handle now so the memory goes as soon as nothing uses it. */
  em_release(c->arena);
  c->arena = NULL;
  invalidate(m);
  return EM_OK;
nomem:
  st = em_set_error(EM_ERR_NOMEM, "module_add_child: out of memory");
fail:
  em_module_free(c);
  return st;
}

/* ---- forward and mode ------------------------------------------------------------------------ */
em_tensor *em_forward(em_module *m, em_tensor *x) {
  if (!m) {
    em_set_error(EM_ERR_INVALID, "forward: module is NULL");
    return NULL;
  }
  if (!x) {
    if (em_last_status() == EM_OK)
      em_set_error(EM_ERR_INVALID, "forward: %s: input is NULL", m->type);
    return NULL;
  }
  if (!m->forward) {
    em_set_error(EM_ERR_UNSUPPORTED, "forward: module %s has no forward function", m->type);
    return NULL;
  }
  return m->forward(m, x);
}

void em_module_train(em_module *m, bool on) {
  if (!m) return;
  m->training = on;
  for (int i = 0; i < m->n_children; i++) em_module_train(m->children[i].m, on);
}

bool em_module_is_training(const em_module *m) { return m && m->training; }
const char *em_module_type(const em_module *m) { return m ? m->type : ""; }
void *em_module_ctx(const em_module *m) { return m ? m->ctx : NULL; }
int em_module_num_children(const em_module *m) { return m ? m->n_children : 0; }

em_module *em_module_child_at(const em_module *m, int i) {
  if (!m || i < 0 || i >= m->n_children) {
    em_set_error(EM_ERR_INVALID, "module_child_at: index %d out of range (%d children)", i,
                 m ? m->n_children : 0);
    return NULL;
  }
  return m->children[i].m;
}

const char *em_module_child_name(const em_module *m, int i) {
  return em_module_child_at(m, i) ? m->children[i].name : NULL;
}

/* The direct child of m called name[0..len). */
static em_module *child_named(const em_module *m, const char *name, size_t len) {
  for (int i = 0; i < m->n_children; i++)
    if (strlen(m->children[i].name) == len && !memcmp(m->children[i].name, name, len))
      return m->children[i].m;
  return NULL;
}

em_module *em_module_find(em_module *m, const char *path) {
  if (!m || !path) {
    em_set_error(EM_ERR_INVALID, "module_find: module or path is NULL");
    return NULL;
  }
  em_module *cur = m;
  for (const char *p = path; cur && *p;) {
    const char *dot = strchr(p, '.');
    size_t len = dot ? (size_t)(dot - p) : strlen(p);
    cur = child_named(cur, p, len);
    p += len + (dot ? 1 : 0);
    if (dot && !*p) cur = NULL; /* trailing '.' */
  }
  if (!cur || !*path) {
    em_set_error(EM_ERR_INVALID, "module_find: %s has no submodule '%s'", m->type, path);
    return NULL;
  }
  return cur;
}

/* ---- the flattened view ---------------------------------------------------------------------- */
typedef struct {
  flat_view *f;
  int cap;
  bool params; /* collecting parameters (else buffers) */
  bool failed;
} walker;

static bool seen(const flat_view *f, int from, const em_tensor *t) {
  for (int i = from; i < f->n_tensors; i++)
    if (f->t[i] == t) return true;
  return false;
}

static void push(walker *w, const char *prefix, const char *name, em_tensor *t, int from) {
  flat_view *f = w->f;
  if (w->failed || seen(f, from, t)) return;
  if (f->n_tensors == w->cap) {
    int cap = w->cap ? w->cap * 2 : 16;
    em_tensor **tt = realloc(f->t, (size_t)cap * sizeof *tt);
    if (tt) f->t = tt;
    const char **nn = realloc(f->names, (size_t)cap * sizeof *nn);
    if (nn) f->names = nn;
    if (!tt || !nn) {
      w->failed = true;
      return;
    }
    w->cap = cap;
  }
  size_t len = strlen(prefix) + strlen(name) + 1;
  char *full = malloc(len);
  if (!full) {
    w->failed = true;
    return;
  }
  snprintf(full, len, "%s%s", prefix, name);
  f->t[f->n_tensors] = t;
  f->names[f->n_tensors++] = full;
}

static void walk(walker *w, const em_module *m, const char *prefix, int from) {
  int n = w->params ? m->n_params : m->n_buffers;
  const entry *e = w->params ? m->params : m->buffers;
  for (int i = 0; i < n; i++) push(w, prefix, e[i].name, e[i].t, from);
  for (int i = 0; i < m->n_children && !w->failed; i++) {
    size_t len = strlen(prefix) + strlen(m->children[i].name) + 2;
    char *pre = malloc(len);
    if (!pre) {
      w->failed = true;
      return;
    }
    snprintf(pre, len, "%s%s.", prefix, m->children[i].name);
    walk(w, m->children[i].m, pre, from);
    free(pre);
  }
}

/* m's flattened view, built if stale. NULL with the error set on allocation failure. */
static flat_view *get_flat(em_module *m) {
  if (m->flat) return m->flat;
  walker w = {calloc(1, sizeof(flat_view)), 0, true, false};
  if (!w.f) goto nomem;
  walk(&w, m, "", 0);
  w.f->n_params = w.f->n_tensors;
  w.params = false;
  walk(&w, m, "", w.f->n_params);
  if (!w.f->t) w.f->t = calloc(1, sizeof *w.f->t); /* non-NULL even when empty */
  if (!w.f->names) w.f->names = calloc(1, sizeof *w.f->names);
  if (w.failed || !w.f->t || !w.f->names) goto nomem;
  flat_view *f = w.f;
  int np = f->n_params;
  f->numel = calloc((size_t)np + 1, sizeof *f->numel);
  f->offset = calloc((size_t)np + 1, sizeof *f->offset);
  if (!f->numel || !f->offset) goto nomem;
  int64_t off = 0;
  for (int i = 0; i < np; i++) {
    f->numel[i] = em_numel(f->t[i]);
    f->offset[i] = off;
    off = em_arena_align(off + f->numel[i]);
  }
  f->arena_numel = off;
  if (!m->parent) /* a root names its parameters, so that errors can name them */
    for (int i = 0; i < np; i++) em_tensor_set_name(f->t[i], f->names[i]);
  m->flat = f;
  return f;
nomem:
  flat_free(w.f);
  em_set_error(EM_ERR_NOMEM, "module: out of memory listing the tensors of %s", m->type);
  return NULL;
}

int em_module_num_params(em_module *m) {
  flat_view *f = m ? get_flat(m) : NULL;
  return f ? f->n_params : (m ? -1 : 0);
}

int em_module_num_tensors(em_module *m) {
  flat_view *f = m ? get_flat(m) : NULL;
  return f ? f->n_tensors : (m ? -1 : 0);
}

int em_module_num_buffers(em_module *m) {
  flat_view *f = m ? get_flat(m) : NULL;
  return f ? f->n_tensors - f->n_params : (m ? -1 : 0);
}

static flat_view *flat_at(em_module *m, int i, const char *what) {
  flat_view *f = m ? get_flat(m) : NULL;
  if (!m) em_set_error(EM_ERR_INVALID, "%s: module is NULL", what);
  if (!f) return NULL;
  if (i < 0 || i >= f->n_tensors) {
    em_set_error(EM_ERR_INVALID, "%s: index %d out of range (%s has %d parameters and buffers)",
                 what, i, m->type, f->n_tensors);
    return NULL;
  }
  return f;
}

em_tensor *em_module_tensor_at(em_module *m, int i) {
  flat_view *f = flat_at(m, i, "module_tensor_at");
  return f ? f->t[i] : NULL;
}

const char *em_module_tensor_name(em_module *m, int i) {
  flat_view *f = flat_at(m, i, "module_tensor_name");
  return f ? f->names[i] : NULL;
}

/* Parameter or buffer by dotted name, walking the tree (aliases of tied tensors resolve too). */
static em_tensor *lookup(em_module *m, const char *name) {
  const char *dot = strrchr(name, '.');
  em_module *owner = m;
  const char *leaf = name;
  if (dot) {
    owner = m;
    for (const char *p = name; owner && p < dot;) {
      const char *d = strchr(p, '.');
      owner = child_named(owner, p, (size_t)(d - p));
      p = d + 1;
    }
    leaf = dot + 1;
  }
  if (!owner) return NULL;
  for (int i = 0; i < owner->n_params; i++)
    if (!strcmp(owner->params[i].name, leaf)) return owner->params[i].t;
  for (int i = 0; i < owner->n_buffers; i++)
    if (!strcmp(owner->buffers[i].name, leaf)) return owner->buffers[i].t;
  return NULL;
}

/* Error naming m's type, the name, and up to a few of the names it does have. */
static void unknown_name(em_module *m, const char *what, const char *name) {
  char have[256] = "";
  flat_view *f = get_flat(m);
  size_t k = 0;
  for (int i = 0; f && i < f->n_tensors && k < sizeof have; i++) {
    if (i == 6) {
      snprintf(have + k, sizeof have - k, ", ... (%d in all)", f->n_tensors);
      break;
    }
    k += (size_t)snprintf(have + k, sizeof have - k, "%s%s", i ? ", " : "", f->names[i]);
  }
  em_set_error(EM_ERR_INVALID, "%s: %s has no parameter or buffer '%s' (it has: %s)", what, m->type,
               name, have[0] ? have : "none");
}

em_tensor *em_module_get(em_module *m, const char *name) {
  if (!m || !name) {
    em_set_error(EM_ERR_INVALID, "module_get: module or name is NULL");
    return NULL;
  }
  em_tensor *t = lookup(m, name);
  if (!t) unknown_name(m, "module_get", name);
  return t;
}

em_status em_module_set_param(em_module *m, const char *name, const float *data, int64_t n) {
  if (!m || !name || (!data && n > 0))
    return em_set_error(EM_ERR_INVALID, "module_set_param: module, name or data is NULL");
  em_tensor *t = lookup(m, name);
  if (!t) {
    unknown_name(m, "module_set_param", name);
    return EM_ERR_INVALID;
  }
  if (n != em_numel(t)) {
    char b[EM_SHAPE_STR_LEN];
    return em_set_error(
        EM_ERR_INVALID, "module_set_param: '%s' of %s has %lld elements %s, got %lld values", name,
        m->type, (long long)em_numel(t), em_shape_str(t, b, sizeof b), (long long)n);
  }
  if (t->dtype == EM_F32 && em_is_contiguous(t))
    memcpy(em_data_f32(t), data, (size_t)n * sizeof(float));
  else
    for (int64_t i = 0; i < n; i++) em_set(t, i, data[i]);
  return EM_OK;
}

/* ---- the arena ------------------------------------------------------------------------------- */
/* Move t into arena (on t's device) at off: copy its values, then make t a view of the arena
 * there. On a GPU the copy is the table's strided copy into a view of the arena. */
static em_status rebind(em_tensor *t, em_tensor *arena, int64_t off) {
  int64_t n = em_numel(t);
  if (arena->device.kind != EM_CPU) {
    int64_t st[EM_MAX_DIMS];
    em__contig_strides(t->ndim, t->shape, st);
    em_scope s = em_scope_begin();
    em_tensor *v = em__view(arena, t->ndim, t->shape, st, arena->offset + off);
    em_status e = v ? em__kernels(arena->device)->copy_view(v, t) : em_last_status();
    em_scope_end(s);
    if (e != EM_OK) return e;
  } else {
    float *dst = em_data_f32(arena) + off;
    if (em_is_contiguous(t))
      memcpy(dst, em_data_f32(t), (size_t)n * sizeof(float));
    else
      for (int64_t i = 0; i < n; i++) dst[i] = (float)em_get(t, i);
  }
  em__rebind_storage(t, arena, arena->offset + off);
  return EM_OK;
}

/* Drop the arena handles of m's descendants: after the root packs, nothing lives in them. */
static void drop_arenas(em_module *m) {
  for (int i = 0; i < m->n_children; i++) {
    em_module *c = m->children[i].m;
    em_release(c->arena);
    c->arena = NULL;
    drop_arenas(c);
  }
}

/* True if the root's arena holds every parameter at its offset (packing is still valid). */
static bool packed_ok(const em_module *m, const flat_view *f) {
  if (!m->arena || em_numel(m->arena) != (f->arena_numel ? f->arena_numel : EM_ARENA_ALIGN))
    return false;
  for (int i = 0; i < f->n_params; i++)
    if (f->t[i]->storage != m->arena->storage || f->t[i]->offset != f->offset[i] ||
        !em_is_contiguous(f->t[i]))
      return false;
  return true;
}

/* Pack a root module's parameters into its arena (no-op if already packed), on the device they
 * are on (all on one; a packed arena that em_module_to moved stays packed there). */
static em_status pack(em_module *m, flat_view *f) {
  em_device dev = f->n_params ? f->t[0]->device : EM_DEVICE_CPU;
  for (int i = 0; i < f->n_params; i++) {
    em_tensor *t = f->t[i];
    if (t->dtype != EM_F32)
      return em_set_error(EM_ERR_UNSUPPORTED, "parameters: '%s' is %s; the arena holds f32",
                          f->names[i], em_dtype_name(t->dtype));
    if (t->device.kind != dev.kind || t->device.index != dev.index) {
      char a[EM_DEVICE_STR_LEN], b[EM_DEVICE_STR_LEN];
      em__device_str(t->device, a, sizeof a);
      em__device_str(dev, b, sizeof b);
      return em_set_error(EM_ERR_UNSUPPORTED,
                          "parameters: '%s' is on %s but '%s' on %s; the arena holds the "
                          "parameters of one device",
                          f->names[i], a, f->names[0], b);
    }
  }
  if (packed_ok(m, f)) return EM_OK;
  int64_t len = f->arena_numel ? f->arena_numel : EM_ARENA_ALIGN;
  em_tensor *arena = em__alloc_on(dev, EM_F32, 1, (int64_t[]){len}, true);
  if (!arena) return em_last_status();
  for (int i = 0; i < f->n_params; i++) {
    em_status st = rebind(f->t[i], arena, f->offset[i]);
    if (st != EM_OK) { /* the parameters rebound so far keep the arena alive and their values */
      em_release(arena);
      return st;
    }
  }
  em_release(m->arena);
  m->arena = arena;
  drop_arenas(m);
  return EM_OK;
}

em_params em_parameters(em_module *m) {
  em_params p = {0};
  if (!m) {
    em_set_error(EM_ERR_INVALID, "parameters: module is NULL");
    return p;
  }
  flat_view *f = get_flat(m);
  if (!f) return p;
  if (!m->parent && pack(m, f) != EM_OK) return p;
  p.n = f->n_params;
  p.t = f->t;
  p.names = f->names;
  p.numel = f->numel;
  if (!m->parent) {
    p.offset = f->offset;
    p.arena = em_data_f32(m->arena);
    p.arena_numel = f->arena_numel;
  }
  return p;
}

float *em_module_arena(em_module *m, int64_t *numel) {
  if (numel) *numel = 0;
  if (m && m->parent) {
    em_set_error(EM_ERR_INVALID, "module_arena: this %s is a child; the arena belongs to the root",
                 m->type);
    return NULL;
  }
  em_params p = em_parameters(m);
  if (!p.t) return NULL;
  if (numel) *numel = p.arena_numel;
  return p.arena;
}

em_status em_module_to(em_module *m, em_device dev) {
  if (!m) return em_set_error(EM_ERR_INVALID, "module_to: module is NULL");
  flat_view *f = get_flat(m);
  if (!f) return em_last_status();
  /* Parameters, buffers, their gradients and the root's arena: the tensors keep their addresses
   * (optimizers and the reducer hold them), their storage moves. */
  int n_all = f->n_tensors, n = 0;
  em_tensor **ts = calloc((size_t)(2 * n_all + 1), sizeof *ts);
  if (!ts) return em_set_error(EM_ERR_NOMEM, "module_to: out of memory");
  for (int i = 0; i < n_all; i++) {
    ts[n++] = f->t[i];
    if (f->t[i]->grad) ts[n++] = f->t[i]->grad;
  }
  if (m->arena) ts[n++] = m->arena;
  em_status st = em__move_tensors(ts, n, dev);
  free(ts);
  return st;
}
