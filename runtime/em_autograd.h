/* em_autograd.h: the define-by-run autograd engine's public face.
 *
 * Every op whose inputs require gradients records a node (backward function + saved tensors) as
 * it runs. em_backward(loss) walks the recorded graph in reverse topological order, counting
 * dependencies, and accumulates gradients into leaves' .grad.
 *
 * For the data-parallel reducer the engine offers two kinds of hook:
 *
 *   em_tensor_on_grad_ready(leaf, fn, ctx)   fires once per backward, the moment that leaf's
 *                                            gradient is final (all contributions accumulated)
 *   em_autograd_on_backward(begin, end, ctx) begin() runs after the engine has found which leaves
 *                                            the pass reaches and before any gradient is computed;
 *                                            inside it em_backward_reaches(t) says whether t will
 *                                            get a gradient in this pass. end() runs when the pass
 *                                            is over (also after a failed pass, with its status).
 */
#ifndef EMBER_AUTOGRAD_H
#define EMBER_AUTOGRAD_H

#include "em_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  bool retain_graph; /* keep saved tensors so the graph can be walked again */
} em_backward_opts;

/* Backward from a scalar (numel 1) tensor, with seed gradient 1. */
em_status em_backward(em_tensor *loss);
/* Backward with an explicit seed gradient (same shape as root) and options; seed may be NULL for
 * a scalar root. */
em_status em_backward_ex(em_tensor *root, em_tensor *seed, const em_backward_opts *opts);

/* Grad-ready hook. Returns a hook id > 0, or 0 on error. The hook is called on the compute thread
 * with the leaf whose .grad just became final. */
typedef void (*em_grad_hook_fn)(em_tensor *leaf, void *ctx);
int em_tensor_on_grad_ready(em_tensor *leaf, em_grad_hook_fn fn, void *ctx);
void em_tensor_remove_hook(em_tensor *leaf, int hook_id);

/* Observer of whole backward passes (see the top of this file). Returns an id > 0. */
/* begin may refuse the pass (a data-parallel reducer that finds its state wrong): it returns an
 * error status with the message set, no gradient is computed, and em_backward returns it. */
typedef em_status (*em_backward_begin_fn)(void *ctx);
/* end gets the pass's status and returns its own: an error there (with the message set) becomes
 * em_backward's result when the pass itself succeeded. */
typedef em_status (*em_backward_end_fn)(em_status status, void *ctx);
int em_autograd_on_backward(em_backward_begin_fn begin, em_backward_end_fn end, void *ctx);
void em_autograd_remove_observer(int id);
/* Inside a backward pass (begin hooks, grad hooks): will t get a gradient in this pass? */
bool em_backward_reaches(const em_tensor *t);
/* Is a backward pass running on this thread? */
bool em_backward_running(void);

/* Gradient mode. em_no_grad_begin returns the previous mode; pass it to em_no_grad_end. */
bool em_no_grad_begin(void);
void em_no_grad_end(bool previous);
bool em_grad_enabled(void);

/* A new leaf sharing t's storage, with no history (requires_grad false). Scope-owned. */
em_tensor *em_detach(em_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
