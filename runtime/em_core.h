/* em_core.h: statuses and errors, dtypes and devices, tensors, storage and scopes.
 *
 * A tensor is a strided view (shape, strides, offset, all in elements) of a reference-counted,
 * 64-byte aligned storage. Views share storage. Tensors themselves are reference-counted:
 *
 *   - A tensor created while a scope is open (em_scope_begin) is owned by that scope and released
 *     at em_scope_end, unless the caller took its own reference with em_retain().
 *   - A tensor created outside any scope is owned by the caller, who releases it with em_release().
 *
 * Errors: a function that can fail returns an em_status or NULL and records a message for
 * em_last_error() (per thread). Ops given a NULL input return NULL and keep the first message. */
#ifndef EMBER_CORE_H
#define EMBER_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- statuses (append-only) ------------------------------------------------------------ */
typedef enum {
  EM_OK = 0,
  EM_ERR_INVALID = -1,     /* bad argument: shapes, dtypes, ranges */
  EM_ERR_NOMEM = -2,       /* allocation failed */
  EM_ERR_IO = -3,          /* file system or stream error */
  EM_ERR_FORMAT = -4,      /* malformed file or config */
  EM_ERR_UNSUPPORTED = -5, /* no kernel for this dtype/device, feature not built */
  EM_ERR_STATE = -6,       /* call made in the wrong state (e.g. backward through a freed graph) */
  EM_ERR_BACKEND = -7,     /* a foreign library (oneDNN, CUDA, MPI, NCCL) failed */
  EM_ERR_TIMEOUT = -8,     /* a wait expired */
  EM_ERR_COMM = -9,        /* a collective failed or ranks disagree */
} em_status;

/* Static string naming a status ("EM_ERR_INVALID"). */
const char *em_status_str(em_status s);
/* The last error message recorded on this thread ("" if none). Valid until the next error. */
const char *em_last_error(void);
/* The status that went with the last error (EM_OK if none). */
em_status em_last_status(void);
/* Forget the last error on this thread. */
void em_clear_error(void);
/* Record an error for this thread (printf format) and return s. Overwrites the previous one. */
em_status em_set_error(em_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- dtypes and devices ---------------------------------------------------------------- */
typedef enum {
  EM_F32 = 0,
  EM_I64 = 1,
  EM_I32 = 2,
  EM_U8 = 3,
  EM_BF16 = 4, /* no op kernels yet: storage, and em_get/em_set convert */
  EM_F16 = 5,  /* no op kernels yet: storage, and em_get/em_set convert */
  EM_DTYPE_COUNT
} em_dtype;

size_t em_dtype_size(em_dtype dt);
const char *em_dtype_name(em_dtype dt); /* "f32", "i64", ... */

typedef enum { EM_CPU = 0, EM_CUDA = 1 } em_device_kind;
typedef struct {
  em_device_kind kind;
  int index; /* CUDA ordinal; 0 for the CPU */
} em_device;
#define EM_DEVICE_CPU ((em_device){EM_CPU, 0})

/* Number of usable CUDA devices: 0 in a build without CUDA, and 0 when the driver or the device
 * is missing (any CUDA error counts as "no device"). */
int em_cuda_device_count(void);
/* True if this build has the CUDA device compiled in (EMBER_CUDA). */
bool em_built_with_cuda(void);

/* The caching allocator of device cuda:index (docs/gpu.md). Bytes count whole blocks (requests
 * rounded up to their size class: 512 B multiples up to 1 MiB, then 2 MiB multiples). */
typedef struct {
  int64_t allocated;      /* held from CUDA: in_use + cached */
  int64_t in_use;         /* in blocks handed out (tensors' storage) */
  int64_t cached;         /* in freed blocks kept for reuse */
  int64_t peak_allocated; /* highest allocated so far */
  int64_t peak_in_use;    /* highest in_use so far */
  int64_t allocs;         /* blocks handed out */
  int64_t hits;           /* of which reused from the cache */
  int64_t mallocs;        /* cudaMalloc calls that succeeded */
  int64_t frees;          /* blocks given back with cudaFree */
  int64_t oom_retries;    /* times a failed cudaMalloc emptied the cache and tried again */
} em_cuda_memstats;
/* *out = the statistics of cuda:index (zeros on error). EM_ERR_UNSUPPORTED without that device
 * (and always in a build without CUDA); EM_ERR_INVALID when out is NULL. */
em_status em_cuda_memory_stats(int index, em_cuda_memstats *out);
/* Gives every cached block of cuda:index back to CUDA (waits for the device: cudaFree does).
 * Blocks in use stay. EM_ERR_UNSUPPORTED without that device. */
em_status em_cuda_empty_cache(int index);

/* Threads used by CPU kernels (oneDNN/OpenMP) in this process. Default 1, or EMBER_THREADS. */
void em_set_num_threads(int n);
int em_num_threads(void);

/* ---- tensors --------------------------------------------------------------------------- */
#define EM_MAX_DIMS 8

typedef struct em_tensor em_tensor;
typedef struct em_storage em_storage;
typedef struct em_node em_node;

/* Public read-only fields; use the functions to change anything. */
struct em_tensor {
  em_dtype dtype;
  int ndim;
  int64_t shape[EM_MAX_DIMS];
  int64_t strides[EM_MAX_DIMS]; /* in elements */
  int64_t offset;               /* in elements, into storage */
  em_device device;
  bool requires_grad;
  em_tensor *grad;  /* owned by the tensor; NULL until a backward reaches it (leaves only) */
  em_node *grad_fn; /* NULL for leaves; owned reference */
  /* private */
  em_storage *storage;
  int refcount;
  struct em_hook *hooks; /* grad-ready hooks (leaves) */
  uint32_t bw_epoch;     /* backward pass that last reached this leaf */
  int bw_pending;        /* contributions still to come in that pass */
  char *name;            /* optional, for messages */
};

/* Creation (result owned by the current scope, or by the caller outside scopes). */
em_tensor *em_empty(em_dtype dt, int ndim, const int64_t *shape);
em_tensor *em_zeros(em_dtype dt, int ndim, const int64_t *shape);
em_tensor *em_full(em_dtype dt, int ndim, const int64_t *shape, double value);
/* em_empty in page-locked host memory when a CUDA device is present (fast, asynchronous copies
 * to the device), else ordinary memory; em_is_pinned says which it got. */
em_tensor *em_empty_pinned(em_dtype dt, int ndim, const int64_t *shape);
bool em_is_pinned(const em_tensor *t);
/* t on dev: t itself when it is there already, else a contiguous copy on dev (owned by the current
 * scope) that records autograd (the gradient goes back to t's device). NULL with an error naming
 * the device when it is not present, or when this build has no kernels for it. */
em_tensor *em_to(em_tensor *t, em_device dev);
#define EM_DEVICE_CUDA(i) ((em_device){EM_CUDA, (i)})

/* Copies n = numel elements from data (host memory, of dtype dt). */
em_tensor *em_from_data(em_dtype dt, int ndim, const int64_t *shape, const void *data);
/* Scalar f32 tensor of shape () (ndim 0). */
em_tensor *em_scalar(float v);
/* Uniform [lo, hi) and normal(mean, std) f32, from the counter-based generator em_rng. */
typedef struct {
  uint64_t seed, counter;
} em_rng;
em_rng em_rng_new(uint64_t seed);
uint64_t em_rng_next_u64(em_rng *r);
float em_rng_uniform(em_rng *r); /* [0, 1) */
float em_rng_normal(em_rng *r);  /* N(0, 1) */
/* perm[0, n) = a uniformly random permutation of 0..n-1 (Fisher-Yates), advancing r. */
void em_rng_permutation(em_rng *r, int64_t *perm, int64_t n);
em_tensor *em_rand_uniform(int ndim, const int64_t *shape, float lo, float hi, em_rng *r);
em_tensor *em_rand_normal(int ndim, const int64_t *shape, float mean, float std, em_rng *r);

/* Convenience shape literal: EM_SHAPE(2, 3) -> 2, (int64_t[]){2, 3}. */
#define EM_SHAPE(...)                                                                              \
  (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]) { __VA_ARGS__ }

/* Reference counting. em_retain returns t (NULL-safe); em_release accepts NULL. */
em_tensor *em_retain(em_tensor *t);
void em_release(em_tensor *t);

int64_t em_numel(const em_tensor *t);
bool em_is_contiguous(const em_tensor *t);
/* Pointer to element [0,...,0]: host memory for a CPU tensor, device memory for a GPU one. A
 * pinned tensor that em_to is still copying to a GPU is waited for first (the caller may write). */
void *em_data(const em_tensor *t);
static inline float *em_data_f32(const em_tensor *t) { return (float *)em_data(t); }
/* Read/write one element by flat index in logical (row-major) order; converts to/from double.
 * On a GPU tensor each call is a synchronous one-element copy (get returns NaN if it fails):
 * fine for a loss, slow in a loop; move the tensor to the CPU (em_to) to read many. */
double em_get(const em_tensor *t, int64_t flat_index);
void em_set(em_tensor *t, int64_t flat_index, double v);
/* Same storage? */
bool em_shares_storage(const em_tensor *a, const em_tensor *b);

/* Mark a leaf as needing gradients. Fails on non-leaf tensors (they inherit it from their inputs).
 */
em_status em_set_requires_grad(em_tensor *t, bool on);
/* Name used in error messages (copied). */
void em_tensor_set_name(em_tensor *t, const char *name);
const char *em_tensor_name(const em_tensor *t); /* "" if unnamed */
/* Replace a leaf's .grad by g (g retained, previous released). g must match t's shape and dtype;
 * it may be a view into a larger buffer: backward accumulates into it in place. NULL clears it. */
em_status em_set_grad(em_tensor *t, em_tensor *g);

/* "[2, 3]" into buf; returns buf. */
const char *em_shape_str(const em_tensor *t, char *buf, size_t n);
#define EM_SHAPE_STR_LEN 96

/* ---- scopes ---------------------------------------------------------------------------- */
typedef struct {
  size_t mark;
  int depth;
} em_scope;
/* Open a scope on this thread: tensors created until the matching em_scope_end are released
 * there, unless retained. Scopes nest and must be closed in reverse order. */
em_scope em_scope_begin(void);
void em_scope_end(em_scope s);
/* Hide this thread's scopes until em_scope_resume: tensors created in between are owned by the
 * caller, as outside any scope, whatever scopes are open. For code that makes tensors on the
 * user's thread that must outlive the user's scopes (the data loader fills batches this way when
 * it has no worker threads); without it, the user's next em_scope_end would free them.
 *   - Each em_scope_suspend is paired with one em_scope_resume of the value it returned, on the
 *     same thread; pairs nest like scopes.
 *   - A scope opened in between must be closed before the em_scope_resume.
 * The fields are private. */
typedef struct {
  em_tensor **stack;
  size_t len, cap;
  int depth;
} em_scope_saved;
em_scope_saved em_scope_suspend(void);
void em_scope_resume(em_scope_saved s);
/* Number of live tensors on this thread and in the whole process (for leak tests). */
int64_t em_live_tensors(void);

#ifdef __cplusplus
}
#endif
#endif
