/* core/internal.h: private to runtime/. Node layout, op-recording helpers, allocation without
 * scope ownership and shape helpers.
 *
 * How an op front end is written (runtime/ops/; ops/binary.c is a short full example):
 *
 *   em_tensor *em_foo(em_tensor *a) {
 *     EM_CHECK_INPUT(a, "foo");                       // NULL in -> NULL out, keep first error
 *     const em_kernels *k = EM_KERNELS(a, foo, "foo"); // a's device table (core/kernels.h)
 *     em_tensor *out = k ? em__empty_on(a->device, ...) : NULL;
 *     if (!out || k->foo(a, out) != EM_OK) return NULL;          // the device computes
 *     em_node *n = em__record(out, "foo", foo_backward, 1, &a);   // NULL if no grad needed
 *     if (n) em__save(n, a);                          // saved tensors are detached aliases
 *     return out;
 *   }
 *   static em_status foo_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
 *     if (n->inputs[0]->requires_grad) gin[0] = ...;  // same shape as inputs[0]
 *     return EM_OK;
 *   }
 *
 * An op that makes temporaries (em__contig copies, calls to other ops) must not leak them when
 * it is called outside any scope: it opens its own scope and hands the result out with
 * em__op_end, on every return path:
 *
 *   em_scope s = em_scope_begin();
 *   ... temporaries ...
 *   return em__op_end(s, out);          // out survives (adopted by the caller's scope, if any)
 *
 * Backward functions run in no-grad mode inside a scope the engine opens: tensors they create
 * are scope-owned; the engine retains the gin[] results itself. gout is contiguous. */
#ifndef EMBER_INTERNAL_H
#define EMBER_INTERNAL_H

#include "em_autograd.h"
#include "em_core.h"
#include "em_ops.h"

#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus /* CUDA sources (runtime/cuda/, .cu files) are C++ */
extern "C" {
#endif

#define EM_NODE_MAX_SAVED 6

typedef em_status (*em_backward_fn)(em_node *n, em_tensor *gout, em_tensor **gin);

struct em_node {
  const char *op; /* static name, for messages */
  int refcount;
  int n_in;
  em_tensor **inputs; /* retained references; NULL after the graph is released */
  em_tensor *saved[EM_NODE_MAX_SAVED];
  int n_saved;
  em_backward_fn backward;
  /* op parameters */
  double f[8];
  int64_t i[16];
  void *ctx; /* op-specific, freed with ctx_free (or free() if ctx_free NULL) */
  void (*ctx_free)(void *);
  int out_ndim;
  int64_t out_shape[EM_MAX_DIMS];
  em_dtype out_dtype;
  bool released; /* saved tensors freed by a backward without retain_graph */
  /* engine bookkeeping */
  uint32_t bw_epoch;
  int bw_deps;
  em_tensor *bw_grad;
};

struct em_storage {
  void *data;
  size_t nbytes;
  em_device device;
  int refcount;
  bool owns;   /* free data when the last reference goes */
  bool pinned; /* data is page-locked host memory from em__host_alloc_pinned */
  /* Pinned storages: the event of the last upload from it (em_to to a GPU, kernels' upload
   * slot), or NULL. em_data waits on it, since the host must not write memory a copy still
   * reads; freeing the storage hands it over with the buffer (em__host_free_pinned). */
  void *upload_done;
  /* Memory lent by someone else (a DLPack producer): release(release_ctx) runs once, when the
   * last reference goes or when em__storage_privatize stops viewing it. NULL otherwise. */
  void (*release)(void *ctx);
  void *release_ctx;
};

/* Storages are allocated by their device's kernel table in blocks of em__padded_size(nbytes).
 * em__storage_new: refcount 1, zeroed if asked; NULL with the error set. em__storage_release drops
 * a reference and frees the storage with the last one. */
static inline size_t em__padded_size(size_t nbytes) {
  return nbytes ? (nbytes + 63) / 64 * 64 : 64;
}
em_storage *em__storage_new(em_device dev, size_t nbytes, bool zero);
void em__storage_release(em_storage *s);
/* A contiguous CPU tensor over memory the caller owns (not freed with the tensor), such as
 * node-shared memory from coll_alloc_shared; NULL with the error set. em__storage_privatize
 * moves a storage's contents into memory of its own (every tensor viewing it follows, keeping
 * its values), so that the caller may give the memory back while tensors still view it. */
em_tensor *em__tensor_over(void *data, em_dtype dt, int ndim, const int64_t *shape);
em_status em__storage_privatize(em_storage *s);
/* A tensor (caller-owned, no scope) viewing nbytes of lent memory at data on dev, with the given
 * shape and strides (elements, >= 0; NULL: contiguous) and offset 0. release(ctx), if not NULL,
 * runs when the memory is no longer viewed. On failure (NULL, error set) release is not called:
 * the lender keeps its memory. */
em_tensor *em__tensor_lent(void *data, size_t nbytes, em_device dev, em_dtype dt, int ndim,
                           const int64_t *shape, const int64_t *strides, void (*release)(void *),
                           void *ctx);

/* Move the storage of every tensor in ts to dev (em_module_to): each distinct storage is copied
 * once and every tensor viewing it follows, keeping its pointer, offset and strides. All or
 * nothing: on an error every tensor stays where it was. */
em_status em__move_tensors(em_tensor *const *ts, int n, em_device dev);

/* Page-locked host memory (cudaHostAlloc, recycled) when a CUDA device is present; NULL otherwise,
 * or when the allocation fails (callers fall back to ordinary memory). free: nbytes as allocated,
 * and the storage's upload_done event (owned by the pinned cache from then on), so that the buffer
 * is written again only after that upload. pinned_wait: waits for an upload_done event. */
void *em__host_alloc_pinned(size_t nbytes);
void em__host_free_pinned(void *p, size_t nbytes, void *upload_done);
void em__host_pinned_wait(void *upload_done);

/* How many errors this thread has set so far: a caller that sees NULL from a kernel slot which
 * may set its own message (alloc) keeps that message when the count moved. */
uint64_t em__error_count(void);

/* a + b, malloc'd (NULL when out of memory): dotted names such as "model." + "0.weight". */
static inline char *em__concat(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  char *s = (char *)malloc(na + nb + 1); /* the cast: CUDA sources (C++) include this header */
  if (!s) return NULL;
  memcpy(s, a, na);
  memcpy(s + na, b, nb + 1);
  return s;
}

/* fsync the directory that holds path, so that a rename into it (or a new entry) is durable.
 * Returns 0 or an errno value. (core/atomic_file.c) */
int em__fsync_parent_dir(const char *path);

struct em_hook {
  int id;
  em_grad_hook_fn fn;
  void *ctx;
  struct em_hook *next;
};

/* Drop a reference to a node; the last one releases its inputs, saved tensors and context.
 * NULL is a no-op. (core/autograd.c; em_release calls it for a tensor's grad_fn) */
void em_node_release(em_node *n);

/* Record a node for out if grad mode is on and any input requires grad; sets out->requires_grad
 * and out->grad_fn. Returns the node (owned by out) or NULL when nothing was recorded (or on
 * allocation failure, with the error set and out->grad_fn left NULL: callers check em__failed). */
em_node *em__record(em_tensor *out, const char *op, em_backward_fn bw, int n_in,
                    em_tensor *const *inputs);
/* Inside a backward function: the .grad tensor of input k when the backward may accumulate input
 * k's gradient straight into it (input k is a leaf with a contiguous f32 .grad, used once by this
 * node); NULL otherwise. A backward that adds its gradient into it leaves gin[k] NULL: the engine
 * then only does the bookkeeping (pending count, grad-ready hooks). */
em_tensor *em__grad_sink(em_node *n, int k);
/* Save a detached alias of t (shares storage, no history) in n->saved[n->n_saved++]. */
void em__save(em_node *n, em_tensor *t);

/* Tensor constructors that do not register with the current scope (caller owns the reference):
 * on the CPU, and on any device (through its kernel table). */
em_tensor *em__alloc_noscope(em_dtype dt, int ndim, const int64_t *shape, bool zero);
em_tensor *em__alloc_on(em_device dev, em_dtype dt, int ndim, const int64_t *shape, bool zero);
/* em_empty on dev: how op front ends allocate outputs on their inputs' device. */
em_tensor *em__empty_on(em_device dev, em_dtype dt, int ndim, const int64_t *shape);
/* Reductions on every device: merge neighbouring dims of x's shape that are all reduced (bit d of
 * mask) or all kept, dropping size-1 dims, into gsize[g] / gred[g]; returns the group count
 * (0 .. ndim). (core/tensor.c) */
int em__reduce_groups(int ndim, const int64_t *shape, uint32_t mask, int64_t *gsize, bool *gred);
/* A view of t's storage with the given geometry, registered with the scope like any new tensor. */
em_tensor *em__view(em_tensor *t, int ndim, const int64_t *shape, const int64_t *strides,
                    int64_t offset);
/* Make t a contiguous view of src's storage starting at element offset, dropping t's own storage
 * reference (freeing it if t was its last user). The em_tensor pointer stays the same: this is
 * how the parameter arena adopts existing parameters. The caller copies the values first. */
void em__rebind_storage(em_tensor *t, const em_tensor *src, int64_t offset);
/* Register an owned tensor with the current scope (no-op outside scopes). Returns t. */
em_tensor *em__scope_adopt(em_tensor *t);
/* Close an op's private scope s, keeping out (which may be NULL): see the top of this file. */
em_tensor *em__op_end(em_scope s, em_tensor *out);
/* Contiguous version of t: t itself (scope gets no extra ref) if contiguous, else a copy. */
em_tensor *em__contig(em_tensor *t);
/* Fill contiguous strides for shape. */
void em__contig_strides(int ndim, const int64_t *shape, int64_t *strides);
int64_t em__shape_numel(int ndim, const int64_t *shape);
bool em__same_shape(const em_tensor *a, const em_tensor *b);
/* Sum g (contiguous) over broadcast dimensions so that it has shape (ndim, shape). */
em_tensor *em__sum_to(em_tensor *g, int ndim, const int64_t *shape);
/* out[i] += g[i] in place (both f32, same shape; out contiguous), by out's device table. */
em_status em__accumulate(em_tensor *out, const em_tensor *g);
/* Normalise a possibly negative dim into [0, ndim). Returns -1 and sets an error if out of range.
 */
int em__dim(const char *op, int dim, int ndim);

/* Input checks: NULL propagation and dtype/device checks with a message naming the op. */
#define EM_CHECK_INPUT(t, opname)                                                                  \
  do {                                                                                             \
    if (!(t)) {                                                                                    \
      if (em_last_status() == EM_OK) em_set_error(EM_ERR_INVALID, "%s: input is NULL", opname);    \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)
bool em__check_f32(const char *op, const em_tensor *t, const char *what);
/* True when b is on a's device; otherwise false with "<op>: <what> is on cuda:0 but the input is
 * on cpu" set. */
bool em__check_device(const char *op, const em_tensor *a, const em_tensor *b, const char *what);
/* x, weight w and the optional bias (NULL) of a layer op: all f32 and on x's device. */
bool em__check_layer_inputs(const char *op, const em_tensor *x, const em_tensor *w,
                            const em_tensor *bias);
/* "cpu", "cuda:1": the device's name, written into buf (at least EM_DEVICE_STR_LEN bytes). */
#define EM_DEVICE_STR_LEN 24
const char *em__device_str(em_device d, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
