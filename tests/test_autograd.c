/* test_autograd.c: the engine of em_autograd.h (runtime/core/autograd.c).
 *
 * Gradient values are compared with closed forms written here (x*x -> 2x, diamonds, seeds) and,
 * for a 5-step recurrent loop, with finite differences (tu_gradcheck). The hook tests check what
 * the data-parallel reducer relies on: a grad-ready hook fires exactly once per backward, only
 * after the leaf's last contribution (its .grad is already final inside the hook), hooks run in
 * registration order and can be removed, begin/end observers bracket the pass and
 * em_backward_reaches() tells which leaves the pass reaches, and a .grad that is a view into a
 * larger buffer is accumulated in place. Every test checks em_live_tensors at its end. */
#include "testutil.h"

#include <math.h>
#include <string.h>

static em_tensor *leaf(int ndim, const int64_t *shape, const float *v) {
  em_tensor *t = em_from_data(EM_F32, ndim, shape, v);
  cr_assert_not_null(t, "%s", em_last_error());
  cr_assert_eq(em_set_requires_grad(t, true), EM_OK);
  return t;
}

static em_tensor *sum_all(em_tensor *t) { return em_sum(t, 0, NULL, false); }

static void assert_grad(const em_tensor *t, const double *ref, int64_t n, const char *what) {
  cr_assert_not_null(t->grad, "%s: no gradient", what);
  tu_assert_close(t->grad, ref, n, 1e-6, 1e-6, what);
}

/* ---- accumulation ------------------------------------------------------------------------ */
Test(autograd, tensor_used_twice) {
  TU_BEGIN;
  const float v[4] = {1, -2, 3, 0.5f};
  em_tensor *x = leaf(EM_SHAPE(4), v);
  cr_assert_eq(em_backward(sum_all(em_mul(x, x))), EM_OK, "%s", em_last_error());
  double r1[4];
  for (int i = 0; i < 4; i++) r1[i] = 2.0 * v[i];
  assert_grad(x, r1, 4, "d sum(x*x)/dx = 2x");
  em_set_grad(x, NULL);
  cr_assert_eq(em_backward(sum_all(em_add(x, x))), EM_OK, "%s", em_last_error());
  const double r2[4] = {2, 2, 2, 2};
  assert_grad(x, r2, 4, "d sum(x+x)/dx = 2");
  TU_END;
}

/* y = x*w feeds two branches that meet again: z = y*y + 3y. */
Test(autograd, diamond) {
  TU_BEGIN;
  const float xv[3] = {0.5f, -1, 2}, wv[3] = {2, 3, -0.25f};
  em_tensor *x = leaf(EM_SHAPE(3), xv), *w = leaf(EM_SHAPE(3), wv);
  em_tensor *y = em_mul(x, w);
  em_tensor *z = em_add(em_mul(y, y), em_mul_scalar(y, 3.0f));
  cr_assert_eq(em_backward(sum_all(z)), EM_OK, "%s", em_last_error());
  double rx[3], rw[3];
  for (int i = 0; i < 3; i++) {
    double yy = (double)xv[i] * wv[i];
    rx[i] = (2 * yy + 3) * wv[i];
    rw[i] = (2 * yy + 3) * xv[i];
  }
  assert_grad(x, rx, 3, "diamond dx");
  assert_grad(w, rw, 3, "diamond dw");
  cr_assert_null(y->grad, "non-leaves keep no .grad");
  TU_END;
}

/* A deeper diamond: every level uses the previous one twice, so 2^8 paths reach x. */
Test(autograd, deep_diamond) {
  TU_BEGIN;
  em_tensor *x = leaf(EM_SHAPE(1), (const float[]){1.0f});
  em_tensor *h = x;
  for (int k = 0; k < 8; k++) h = em_mul_scalar(em_add(h, h), 0.5f); /* h = x at each level */
  cr_assert_eq(em_backward(sum_all(h)), EM_OK, "%s", em_last_error());
  assert_grad(x, (const double[]){1.0}, 1, "deep diamond");
  TU_END;
}

Test(autograd, grads_accumulate_across_backwards) {
  TU_BEGIN;
  const float v[3] = {1, 2, 3};
  em_tensor *x = leaf(EM_SHAPE(3), v);
  for (int pass = 1; pass <= 3; pass++) {
    cr_assert_eq(em_backward(sum_all(em_mul(x, x))), EM_OK, "%s", em_last_error());
    double r[3];
    for (int i = 0; i < 3; i++) r[i] = 2.0 * v[i] * pass;
    assert_grad(x, r, 3, "accumulated over passes");
  }
  TU_END;
}

/* ---- grad-ready hooks -------------------------------------------------------------------- */
typedef struct {
  int calls;
  const double *expect; /* full gradient the leaf must hold when its hook fires */
  int64_t n;
  int order[8];
  int *log;
  int *log_len;
  int tag;
} hook_ctx;

static void check_final_hook(em_tensor *t, void *p) {
  hook_ctx *c = p;
  c->calls++;
  cr_assert(em_backward_running());
  cr_assert_not_null(t->grad, "hook fired before any gradient");
  for (int64_t i = 0; i < c->n; i++)
    cr_assert(fabs(em_get(t->grad, i) - c->expect[i]) < 1e-5,
              "hook fired early: grad[%lld] is %g, final value %g", (long long)i,
              em_get(t->grad, i), c->expect[i]);
}

Test(autograd, hook_fires_once_after_final_contribution) {
  TU_BEGIN;
  const float xv[3] = {1, -1, 2}, wv[3] = {3, 0.5f, -2};
  em_tensor *x = leaf(EM_SHAPE(3), xv), *w = leaf(EM_SHAPE(3), wv);
  /* x contributes at four depths: loss = sum(w x^2 + x) + sum(x*x). */
  double ex[3], ew[3];
  for (int i = 0; i < 3; i++) {
    ex[i] = 2.0 * wv[i] * xv[i] + 1 + 2.0 * xv[i];
    ew[i] = (double)xv[i] * xv[i];
  }
  hook_ctx hx = {.expect = ex, .n = 3}, hw = {.expect = ew, .n = 3};
  cr_assert(em_tensor_on_grad_ready(x, check_final_hook, &hx) > 0);
  cr_assert(em_tensor_on_grad_ready(w, check_final_hook, &hw) > 0);
  em_tensor *c = em_add(em_mul(em_mul(x, w), x), x);
  em_tensor *loss = em_add(sum_all(c), sum_all(em_mul(x, x)));
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  cr_assert_eq(hx.calls, 1, "x's hook fired %d times", hx.calls);
  cr_assert_eq(hw.calls, 1);
  /* A second pass fires once more; the hook then sees the accumulated (doubled) value. */
  double ex2[3], ew2[3];
  for (int i = 0; i < 3; i++) {
    ex2[i] = 2 * ex[i];
    ew2[i] = 2 * ew[i];
  }
  hx.expect = ex2;
  hw.expect = ew2;
  c = em_add(em_mul(em_mul(x, w), x), x);
  cr_assert_eq(em_backward(em_add(sum_all(c), sum_all(em_mul(x, x)))), EM_OK);
  cr_assert_eq(hx.calls, 2);
  cr_assert_eq(hw.calls, 2);
  TU_END;
}

static void logging_hook(em_tensor *t, void *p) {
  hook_ctx *c = p;
  c->calls++;
  c->log[(*c->log_len)++] = c->tag;
}

Test(autograd, hook_order_and_removal) {
  TU_BEGIN;
  em_tensor *x = leaf(EM_SHAPE(2), (const float[]){1, 2});
  int log[16], len = 0;
  hook_ctx h1 = {.log = log, .log_len = &len, .tag = 1};
  hook_ctx h2 = {.log = log, .log_len = &len, .tag = 2};
  hook_ctx h3 = {.log = log, .log_len = &len, .tag = 3};
  int id1 = em_tensor_on_grad_ready(x, logging_hook, &h1);
  int id2 = em_tensor_on_grad_ready(x, logging_hook, &h2);
  int id3 = em_tensor_on_grad_ready(x, logging_hook, &h3);
  cr_assert(id1 > 0 && id2 > 0 && id3 > 0 && id1 != id2 && id2 != id3);
  cr_assert_eq(em_backward(sum_all(em_mul(x, x))), EM_OK);
  cr_assert_eq(len, 3);
  cr_assert(log[0] == 1 && log[1] == 2 && log[2] == 3, "registration order");
  em_tensor_remove_hook(x, id2);
  em_tensor_remove_hook(x, 999999); /* unknown id: ignored */
  em_tensor_remove_hook(NULL, id1);
  len = 0;
  cr_assert_eq(em_backward(sum_all(em_mul(x, x))), EM_OK);
  cr_assert(len == 2 && log[0] == 1 && log[1] == 3);
  em_tensor_remove_hook(x, id1);
  em_tensor_remove_hook(x, id3);
  len = 0;
  cr_assert_eq(em_backward(sum_all(em_mul(x, x))), EM_OK);
  cr_assert_eq(len, 0);
  /* Only leaves take hooks. */
  em_tensor *y = em_mul(x, x);
  cr_assert_eq(em_tensor_on_grad_ready(y, logging_hook, &h1), 0);
  cr_assert(strstr(em_last_error(), "not a leaf"), "%s", em_last_error());
  cr_assert_eq(em_tensor_on_grad_ready(x, NULL, NULL), 0);
  cr_assert_eq(em_tensor_on_grad_ready(NULL, logging_hook, &h1), 0);
  TU_END;
}

/* Backward on a leaf itself: its gradient is the seed, its hook fires once. */
Test(autograd, backward_on_leaf) {
  TU_BEGIN;
  em_tensor *x = leaf(EM_SHAPE(2), (const float[]){1, 2});
  int log[4], len = 0;
  hook_ctx h = {.log = log, .log_len = &len};
  em_tensor_on_grad_ready(x, logging_hook, &h);
  em_tensor *seed = em_from_data(EM_F32, EM_SHAPE(2), (const float[]){5, -6});
  cr_assert_eq(em_backward_ex(x, seed, NULL), EM_OK, "%s", em_last_error());
  assert_grad(x, (const double[]){5, -6}, 2, "leaf seed");
  cr_assert_eq(h.calls, 1);
  TU_END;
}

/* ---- begin/end observers and em_backward_reaches ----------------------------------------- */
typedef struct {
  int begins, ends;
  em_status last_status;
  em_tensor *used, *unused, *mid, *frozen;
  bool used_reached, unused_reached, mid_reached, frozen_reached, grads_empty;
} obs_ctx;

static em_status on_begin(void *p) {
  obs_ctx *o = p;
  o->begins++;
  cr_assert(em_backward_running());
  o->used_reached = em_backward_reaches(o->used);
  o->unused_reached = em_backward_reaches(o->unused);
  o->mid_reached = o->mid && em_backward_reaches(o->mid);
  o->frozen_reached = em_backward_reaches(o->frozen);
  o->grads_empty = o->used->grad == NULL; /* no gradient has been computed yet */
  return EM_OK;
}

static em_status on_end(em_status st, void *p) {
  obs_ctx *o = p;
  o->ends++;
  o->last_status = st;
  return EM_OK;
}

Test(autograd, observers_and_reaches) {
  TU_BEGIN;
  em_tensor *used = leaf(EM_SHAPE(2), (const float[]){1, 2});
  em_tensor *unused = leaf(EM_SHAPE(2), (const float[]){3, 4}); /* a parameter not used now */
  em_tensor *frozen = em_from_data(EM_F32, EM_SHAPE(2), (const float[]){5, 6}); /* no grad */
  obs_ctx o = {.used = used, .unused = unused, .frozen = frozen};
  int id = em_autograd_on_backward(on_begin, on_end, &o);
  cr_assert(id > 0);
  cr_assert(!em_backward_running());
  cr_assert(!em_backward_reaches(used), "outside a pass nothing is reached");
  em_tensor *mid = em_mul(used, frozen);
  o.mid = mid;
  em_tensor *loss = sum_all(em_mul(mid, used));
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  cr_assert(o.begins == 1 && o.ends == 1);
  cr_assert_eq(o.last_status, EM_OK);
  cr_assert(o.used_reached, "the used parameter is reached");
  cr_assert(!o.unused_reached, "a parameter not used in this forward is not reached");
  cr_assert(o.mid_reached, "an intermediate on the path is reached");
  cr_assert(!o.frozen_reached, "a tensor without requires_grad is not reached");
  cr_assert(o.grads_empty, "begin runs before any gradient is computed");
  cr_assert_null(unused->grad);
  /* Now use the other one only. */
  o.mid = NULL;
  cr_assert_eq(em_backward(sum_all(em_mul(unused, unused))), EM_OK);
  cr_assert(o.begins == 2 && !o.used_reached && o.unused_reached);
  cr_assert(!em_backward_reaches(unused), "outside a pass nothing is reached");
  /* A pass refused before it begins (freed graph) calls neither begin nor end: they pair up. */
  em_tensor *l2 = sum_all(em_mul(used, used));
  cr_assert_eq(em_backward(l2), EM_OK);
  cr_assert_eq(o.begins, 3);
  cr_assert_eq(em_backward(l2), EM_ERR_STATE);
  cr_assert(o.begins == 3 && o.ends == 3, "begin/end pair up: %d/%d", o.begins, o.ends);
  cr_assert_eq(o.last_status, EM_OK);
  int ends = o.ends;
  em_autograd_remove_observer(id);
  cr_assert_eq(em_backward(sum_all(em_mul(used, used))), EM_OK);
  cr_assert_eq(o.ends, ends, "a removed observer is not called");
  em_autograd_remove_observer(id); /* twice: ignored */
  TU_END;
}

/* Inside a grad hook, reaches() answers for every leaf of the pass, finished or not. Disabled
 * until em_backward_reaches stops requiring bw_pending > 0 for leaves (see the report): today a
 * leaf whose gradient is final, including the hook's own leaf, reads as not reached. */
typedef struct {
  em_tensor *a, *b, *c;
  int calls;
  bool all_ok;
} reach_ctx;

static void reach_hook(em_tensor *t, void *p) {
  reach_ctx *r = p;
  r->calls++;
  r->all_ok = r->all_ok && em_backward_reaches(r->a) && em_backward_reaches(r->b) &&
              !em_backward_reaches(r->c);
}

Test(autograd, reaches_inside_grad_hooks) {
  TU_BEGIN;
  em_tensor *a = leaf(EM_SHAPE(2), (const float[]){1, 2});
  em_tensor *b = leaf(EM_SHAPE(2), (const float[]){3, 4});
  em_tensor *c = leaf(EM_SHAPE(2), (const float[]){5, 6});
  reach_ctx r = {a, b, c, 0, true};
  em_tensor_on_grad_ready(a, reach_hook, &r);
  em_tensor_on_grad_ready(b, reach_hook, &r);
  cr_assert_eq(em_backward(sum_all(em_mul(em_mul(a, b), a))), EM_OK, "%s", em_last_error());
  cr_assert_eq(r.calls, 2);
  cr_assert(r.all_ok, "a leaf whose gradient is already final must still read as reached");
  TU_END;
}

static em_status nested_status;
static void backward_in_hook(em_tensor *t, void *p) { nested_status = em_backward(p); }

Test(autograd, backward_inside_backward_is_an_error) {
  TU_BEGIN;
  em_tensor *x = leaf(EM_SHAPE(2), (const float[]){1, 2});
  em_tensor *other = sum_all(em_mul(x, x));
  em_tensor_on_grad_ready(x, backward_in_hook, other);
  cr_assert_eq(em_backward(sum_all(em_add(x, x))), EM_OK);
  cr_assert_eq(nested_status, EM_ERR_STATE);
  cr_assert(strstr(em_last_error(), "inside a backward"), "%s", em_last_error());
  TU_END;
}

/* ---- grad mode, retain_graph, seeds ------------------------------------------------------ */
Test(autograd, no_grad) {
  TU_BEGIN;
  em_tensor *x = leaf(EM_SHAPE(2), (const float[]){1, 2});
  cr_assert(em_grad_enabled());
  bool prev = em_no_grad_begin();
  cr_assert(prev && !em_grad_enabled());
  em_tensor *y = em_mul(x, x);
  cr_assert(!y->requires_grad && !y->grad_fn, "no graph is recorded under no_grad");
  cr_assert_eq(em_get(y, 1), 4.0);
  bool prev2 = em_no_grad_begin(); /* nested */
  cr_assert(!prev2);
  em_no_grad_end(prev2);
  cr_assert(!em_grad_enabled(), "the inner end restores the outer no-grad mode");
  em_no_grad_end(prev);
  cr_assert(em_grad_enabled());
  cr_assert_eq(em_backward(sum_all(y)), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "does not require grad"), "%s", em_last_error());
  em_tensor *z = em_mul(x, x);
  cr_assert(z->requires_grad && z->grad_fn);
  /* detach: shares storage, no history; gradients stop there. */
  em_tensor *d = em_detach(z);
  cr_assert(!d->requires_grad && !d->grad_fn && em_shares_storage(d, z));
  cr_assert_eq(em_backward(sum_all(em_mul(d, x))), EM_OK);
  assert_grad(x, (const double[]){1, 4}, 2, "d sum(detach(x*x) * x)/dx = x*x");
  TU_END;
}

Test(autograd, retain_graph) {
  TU_BEGIN;
  const float v[2] = {1.5f, -2};
  em_tensor *x = leaf(EM_SHAPE(2), v);
  em_tensor *loss = sum_all(em_mul(em_mul(x, x), x)); /* d/dx = 3x^2 */
  em_backward_opts keep = {.retain_graph = true};
  cr_assert_eq(em_backward_ex(loss, NULL, &keep), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_backward_ex(loss, NULL, &keep), EM_OK, "%s", em_last_error());
  double r[2];
  for (int i = 0; i < 2; i++) r[i] = 2 * 3.0 * v[i] * v[i];
  assert_grad(x, r, 2, "two retained backwards double the gradient");
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error()); /* the last use frees it */
  for (int i = 0; i < 2; i++) r[i] = 3 * 3.0 * v[i] * v[i];
  assert_grad(x, r, 2, "three backwards");
  cr_assert_eq(em_backward(loss), EM_ERR_STATE);
  cr_assert(strstr(em_last_error(), "second time") && strstr(em_last_error(), "retain_graph"), "%s",
            em_last_error());
  assert_grad(x, r, 2, "a failed backward leaves .grad alone");
  TU_END;
}

Test(autograd, seeds) {
  TU_BEGIN;
  const float v[3] = {1, 2, 3};
  em_tensor *x = leaf(EM_SHAPE(3), v);
  em_tensor *y = em_mul(x, x);
  cr_assert_eq(em_backward(y), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "one element") && strstr(em_last_error(), "[3]"), "%s",
            em_last_error());
  cr_assert_eq(em_backward_ex(y, em_zeros(EM_F32, EM_SHAPE(2)), NULL), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "[2]") && strstr(em_last_error(), "[3]"), "%s",
            em_last_error());
  cr_assert_eq(em_backward_ex(y, em_zeros(EM_I64, EM_SHAPE(3)), NULL), EM_ERR_INVALID);
  /* A non-contiguous seed is fine: every other element of (6). */
  em_tensor *big = em_from_data(EM_F32, EM_SHAPE(6), (const float[]){1, 9, -1, 9, 0.5f, 9});
  em_tensor *seed = em_slice(big, 0, 0, 6, 2);
  cr_assert_eq(em_backward_ex(y, seed, NULL), EM_OK, "%s", em_last_error());
  assert_grad(x, (const double[]){2, -4, 3}, 3, "seed * 2x");
  /* A (1, 1) root needs no seed. */
  em_set_grad(x, NULL);
  em_tensor *r = em_reshape(sum_all(y), EM_SHAPE(1, 1));
  cr_assert_eq(em_backward(r), EM_ERR_STATE, "y's graph was freed by the seeded backward");
  em_clear_error();
  cr_assert_eq(em_backward(em_reshape(sum_all(em_mul(x, x)), EM_SHAPE(1, 1))), EM_OK, "%s",
               em_last_error());
  assert_grad(x, (const double[]){2, 4, 6}, 3, "(1, 1) root");
  em_set_error(EM_ERR_INVALID, "earlier failure");
  cr_assert_eq(em_backward(NULL), EM_ERR_INVALID);
  cr_assert_str_eq(em_last_error(), "earlier failure", "a NULL root keeps the first error");
  em_clear_error();
  TU_END;
}

/* ---- the reducer's flat gradient buffer -------------------------------------------------- */
typedef struct {
  em_tensor *buf;
  int64_t lo, n;
  const double *expect;
  int calls;
} flat_ctx;

static void flat_hook(em_tensor *t, void *p) {
  flat_ctx *f = p;
  f->calls++;
  for (int64_t i = 0; i < f->n; i++) /* the buffer itself already holds the final value */
    cr_assert(fabs(em_get(f->buf, f->lo + i) - f->expect[i]) < 1e-6, "buf[%lld] = %g, want %g",
              (long long)(f->lo + i), em_get(f->buf, f->lo + i), f->expect[i]);
}

Test(autograd, grad_view_into_flat_buffer) {
  TU_BEGIN;
  const float av[4] = {1, 2, 3, 4}, bv[6] = {-1, 0.5f, 2, 1, -3, 0.25f};
  em_tensor *a = leaf(EM_SHAPE(4), av), *b = leaf(EM_SHAPE(2, 3), bv);
  /* Layout: buf = [ a.grad (4) | b.grad (6) ], pre-filled with 1 to see accumulation. */
  em_tensor *buf = em_full(EM_F32, EM_SHAPE(10), 1.0);
  em_tensor *ga = em_narrow(buf, 0, 0, 4);
  em_tensor *gb = em_reshape(em_narrow(buf, 0, 4, 6), EM_SHAPE(2, 3));
  cr_assert_eq(em_set_grad(a, ga), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_set_grad(b, gb), EM_OK, "%s", em_last_error());
  /* loss = sum(a*a) + sum(b*b*b): grads 2a, 3b^2 */
  double ea[4], eb[6];
  for (int i = 0; i < 4; i++) ea[i] = 1 + 2.0 * av[i];
  for (int i = 0; i < 6; i++) eb[i] = 1 + 3.0 * bv[i] * bv[i];
  flat_ctx fa = {buf, 0, 4, ea, 0}, fb = {buf, 4, 6, eb, 0};
  em_tensor_on_grad_ready(a, flat_hook, &fa);
  em_tensor_on_grad_ready(b, flat_hook, &fb);
  em_tensor *loss = em_add(sum_all(em_mul(a, a)), sum_all(em_mul(em_mul(b, b), b)));
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  cr_assert(fa.calls == 1 && fb.calls == 1);
  cr_assert(a->grad == ga && b->grad == gb, ".grad is still the view");
  double all[10];
  memcpy(all, ea, sizeof ea);
  memcpy(all + 4, eb, sizeof eb);
  tu_assert_close(buf, all, 10, 1e-6, 1e-6, "flat buffer after backward");
  TU_END;
}

/* ---- a recurrent loop: h = tanh(x_t W + h U) over 5 steps -------------------------------- */
#define T_STEPS 5
static em_tensor *rnn(em_tensor **in, void *ctx) {
  em_tensor *x = in[0], *w = in[1], *u = in[2], *h = in[3]; /* x (T, B, I), h0 (B, H) */
  for (int t = 0; t < T_STEPS; t++) {
    em_tensor *xt = em_reshape(em_narrow(x, 0, t, 1), EM_SHAPE(x->shape[1], x->shape[2]));
    h = em_tanh(em_add(em_matmul(xt, w), em_matmul(h, u)));
  }
  return h;
}

Test(autograd, rnn_gradcheck) {
  TU_BEGIN;
  em_rng r = em_rng_new(5);
  em_tensor *in[4] = {tu_rand(&r, EM_SHAPE(T_STEPS, 2, 3), -1, 1, true),
                      tu_rand(&r, EM_SHAPE(3, 4), -0.8f, 0.8f, true),
                      tu_rand(&r, EM_SHAPE(4, 4), -0.8f, 0.8f, true),
                      tu_rand(&r, EM_SHAPE(2, 4), -0.5f, 0.5f, true)};
  tu_gradcheck(rnn, 4, in, NULL, 1e-2, 3e-3, "rnn 5 steps");
  /* The shared weights got one gradient summed over the 5 steps; the loop's graph is gone with
   * the scope (checked by END). */
  TU_END;
}

/* ---- ownership ----------------------------------------------------------------------------- */
Test(autograd, graph_freed_with_loss_outside_scopes) {
  int64_t live0 = em_live_tensors();
  em_tensor *x = em_full(EM_F32, EM_SHAPE(3), 2.0);
  em_set_requires_grad(x, true);
  em_tensor *y = em_mul(x, x), *z = em_mul_scalar(y, 3.0f), *loss = em_sum(z, 0, NULL, false);
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_get(x->grad, 0), 12.0);
  em_release(z);
  em_release(y);
  em_release(loss);
  em_release(x); /* x and its .grad */
  cr_assert_eq(em_live_tensors(), live0);
  /* An unused graph is freed with its output too. */
  em_tensor *p = em_full(EM_F32, EM_SHAPE(2), 1.0);
  em_set_requires_grad(p, true);
  em_tensor *q = em_mul(p, p);
  int64_t with_graph = em_live_tensors(); /* p, q and the node's saved aliases */
  em_release(p);                          /* the graph holds p now */
  cr_assert_eq(em_live_tensors(), with_graph);
  em_release(q);
  cr_assert_eq(em_live_tensors(), live0);
}

/* Intermediates held only by the graph (their owner released them before backward): the engine
 * must keep each node alive while it is queued (the ready list holds a reference to each node):
 * without it this is a use after free. */
Test(autograd, intermediates_held_only_by_graph) {
  int64_t live0 = em_live_tensors();
  em_tensor *x = em_full(EM_F32, EM_SHAPE(3), 2.0);
  em_set_requires_grad(x, true);
  em_tensor *y = em_mul(x, x);
  em_tensor *z = em_mul_scalar(y, 3.0f);
  em_tensor *loss = em_sum(z, 0, NULL, false);
  em_release(y);
  em_release(z);
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_get(x->grad, 1), 12.0);
  em_release(loss);
  em_release(x);
  cr_assert_eq(em_live_tensors(), live0);
}

/* A begin observer that refuses the pass: no gradient is computed, the status and message come
 * back from em_backward, and the end observer still runs with that status. */
static em_status refuse_begin(void *p) {
  (void)p;
  return em_set_error(EM_ERR_STATE, "reducer: refused for the test");
}
static em_status refuse_end(em_status st, void *p) {
  *(em_status *)p = st;
  return EM_OK;
}

Test(autograd, begin_observer_can_refuse_the_pass) {
  TU_BEGIN;
  em_tensor *x = em_full(EM_F32, EM_SHAPE(3), 2.0);
  em_set_requires_grad(x, true);
  em_status seen = EM_OK;
  int id = em_autograd_on_backward(refuse_begin, refuse_end, &seen);
  cr_assert_eq(em_backward(em_sum(em_mul(x, x), 0, NULL, false)), EM_ERR_STATE);
  cr_assert(strstr(em_last_error(), "refused for the test"), "%s", em_last_error());
  cr_assert_null(x->grad, "no gradient computed");
  cr_assert_eq(seen, EM_ERR_STATE, "end observer gets the status");
  em_autograd_remove_observer(id);
  cr_assert_eq(em_backward(em_sum(em_mul(x, x), 0, NULL, false)), EM_OK);
  cr_assert_float_eq(em_get(x->grad, 0), 4.0, 1e-6);
  em_clear_error();
  TU_END;
}

/* An end observer's error (the reducer's all-reduce failed) becomes em_backward's result. */
static em_status failing_end(em_status st, void *p) {
  (void)st;
  (void)p;
  return em_set_error(EM_ERR_COMM, "reducer: all-reduce failed (test)");
}

Test(autograd, end_observer_error_fails_the_pass) {
  TU_BEGIN;
  em_tensor *x = em_full(EM_F32, EM_SHAPE(2), 1.0);
  em_set_requires_grad(x, true);
  int id = em_autograd_on_backward(NULL, failing_end, NULL);
  cr_assert_eq(em_backward(em_sum(x, 0, NULL, false)), EM_ERR_COMM);
  cr_assert(strstr(em_last_error(), "all-reduce failed"), "%s", em_last_error());
  em_autograd_remove_observer(id);
  em_clear_error();
  TU_END;
}
