/* test_nn.c: the module tree (names, order, lookup, tied tensors, train/eval), the parameter
 * arena (offsets, alignment, values and gradients after packing, repacking), initialisation
 * bounds and seeding, em_module_set_param and the module errors. The layers' forwards, the zoo
 * and the DESIGN.md training loop are in test_nn_layers.c. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Net { a; enc: Enc { w, rm (buffer), b }; dec: Dec { 0: Leaf { w, count (i64 buffer) } } } */
typedef struct {
  em_module *root, *enc, *dec, *leaf;
  em_tensor *a, *w, *b, *rm, *lw, *count;
} tree;

static tree make_tree(void) {
  tree t;
  t.root = em_module_new("Net", NULL, NULL, NULL);
  t.enc = em_module_new("Enc", NULL, NULL, NULL);
  t.dec = em_module_new("Dec", NULL, NULL, NULL);
  t.leaf = em_module_new("Leaf", NULL, NULL, NULL);
  t.a = tu_ramp(EM_SHAPE(2), 1, 0);
  t.w = tu_ramp(EM_SHAPE(3, 4), 1, 1);
  t.b = tu_ramp(EM_SHAPE(4), 1, 2);
  t.rm = tu_ramp(EM_SHAPE(4), 1, 3);
  t.lw = tu_ramp(EM_SHAPE(5), 1, 4);
  t.count = em_zeros(EM_I64, 0, NULL);
  cr_assert_eq(em_module_add_param(t.root, "a", t.a), EM_OK);
  cr_assert_eq(em_module_add_param(t.enc, "w", t.w), EM_OK);
  cr_assert_eq(em_module_add_buffer(t.enc, "rm", t.rm), EM_OK);
  cr_assert_eq(em_module_add_param(t.enc, "b", t.b), EM_OK);
  cr_assert_eq(em_module_add_param(t.leaf, "w", t.lw), EM_OK);
  cr_assert_eq(em_module_add_buffer(t.leaf, "count", t.count), EM_OK);
  cr_assert_eq(em_module_add_child(t.root, "enc", t.enc), EM_OK);
  cr_assert_eq(em_module_add_child(t.dec, "0", t.leaf), EM_OK);
  cr_assert_eq(em_module_add_child(t.root, "dec", t.dec), EM_OK);
  return t;
}

/* ---- the module tree ------------------------------------------------------------------------- */
Test(module, names_order_and_lookup) {
  em_scope s = em_scope_begin();
  tree t = make_tree();
  const char *names[] = {"a", "enc.w", "enc.b", "dec.0.w", "enc.rm", "dec.0.count"};
  tu_assert_names(t.root, 4, names, 6);
  em_tensor *want[] = {t.a, t.w, t.b, t.lw, t.rm, t.count};
  for (int i = 0; i < 6; i++) {
    cr_assert_eq(em_module_tensor_at(t.root, i), want[i]);
    cr_assert_eq(em_module_get(t.root, names[i]), want[i], "%s", names[i]);
  }
  cr_assert(t.w->requires_grad && !t.rm->requires_grad);
  cr_assert_str_eq(em_tensor_name(t.lw), "dec.0.w", "a root names its parameters");
  /* Names relative to a subtree, as torch's named_parameters() on a submodule. */
  tu_assert_names(t.dec, 1, (const char *[]){"0.w", "0.count"}, 2);
  cr_assert_eq(em_module_find(t.root, "dec.0"), t.leaf);
  cr_assert_eq(em_module_find(t.root, "enc"), t.enc);
  cr_assert_str_eq(em_module_type(em_module_find(t.root, "dec.0")), "Leaf");
  cr_assert_eq(em_module_num_children(t.root), 2);
  cr_assert_str_eq(em_module_child_name(t.root, 1), "dec");
  tu_assert_error((void *)em_module_find(t.root, "dec.1"), "no submodule 'dec.1'", "Net");
  tu_assert_error((void *)em_module_find(t.root, "dec."), "no submodule", NULL);
  tu_assert_error(em_module_get(t.root, "enc.wieght"), "no parameter or buffer 'enc.wieght'",
                  "enc.w, enc.b");
  tu_assert_error(em_module_get(t.root, "nope.w"), "'nope.w'", NULL);
  tu_assert_error(em_module_tensor_at(t.root, 6), "out of range", NULL);
  /* A tensor registered twice (tied weights) is listed once, under its first name. */
  cr_assert_eq(em_module_add_param(t.leaf, "tied", t.w), EM_OK);
  tu_assert_names(t.root, 4, names, 6);
  cr_assert_eq(em_module_get(t.root, "dec.0.tied"), t.w);
  em_module_free(t.root);
  em_scope_end(s);
}

Test(module, train_eval_propagates) {
  em_scope s = em_scope_begin();
  tree t = make_tree();
  cr_assert(em_module_is_training(t.root) && em_module_is_training(t.leaf));
  em_module_eval(t.root);
  cr_assert(!em_module_is_training(t.root) && !em_module_is_training(t.enc) &&
            !em_module_is_training(t.dec) && !em_module_is_training(t.leaf));
  em_module_train(t.dec, true);
  cr_assert(!em_module_is_training(t.root) && !em_module_is_training(t.enc));
  cr_assert(em_module_is_training(t.dec) && em_module_is_training(t.leaf));
  em_module_free(t.root);
  em_module_free(NULL);
  em_scope_end(s);
}

Test(module, registration_errors) {
  em_scope s = em_scope_begin();
  tree t = make_tree();
  em_tensor *x = tu_ramp(EM_SHAPE(3), 1, 0);
  cr_assert_eq(em_module_add_param(t.root, "a", x), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "already has a member named 'a'"), "%s", em_last_error());
  cr_assert_eq(em_module_add_buffer(t.root, "enc", x), EM_ERR_INVALID);
  cr_assert_eq(em_module_add_param(t.root, "x.y", x), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "invalid name 'x.y'"));
  cr_assert_eq(em_module_add_param(t.root, "", x), EM_ERR_INVALID);
  cr_assert_eq(em_module_add_param(t.root, "i", em_zeros(EM_I64, EM_SHAPE(2))), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "Net.i must be an f32"), "%s", em_last_error());
  cr_assert_eq(em_module_add_param(t.root, "y", em_mul(t.a, t.a)), EM_ERR_INVALID);
  cr_assert_eq(em_module_add_child(t.root, "again", t.leaf), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "already has a parent"));
  cr_assert_eq(em_module_add_child(t.leaf, "up", t.root), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "cycle"));
  /* A failed add_child frees the orphan it was given (no leak under ASan). */
  cr_assert_eq(em_module_add_child(t.root, "a", em_relu_new()), EM_ERR_INVALID);
  tu_assert_error(em_forward(t.root, x), "Net has no forward", NULL);
  tu_assert_error(em_forward(NULL, x), "module is NULL", NULL);
  em_module_free(t.leaf); /* refused: it belongs to dec */
  cr_assert(strstr(em_last_error(), "Leaf is a child of Dec"), "%s", em_last_error());
  cr_assert_eq(em_module_find(t.root, "dec.0"), t.leaf);
  em_clear_error();
  tu_assert_names(t.root, 4,
                  (const char *[]){"a", "enc.w", "enc.b", "dec.0.w", "enc.rm", "dec.0.count"}, 6);
  em_module_free(t.root);
  em_scope_end(s);
}

Test(module, set_param_copies_and_checks) {
  em_scope s = em_scope_begin();
  tree t = make_tree();
  float v[12];
  for (int i = 0; i < 12; i++) v[i] = (float)i - 5.5f;
  cr_assert_eq(em_module_set_param(t.root, "enc.w", v, 12), EM_OK);
  for (int i = 0; i < 12; i++) cr_assert_eq(em_get(t.w, i), v[i]);
  cr_assert_eq(em_module_set_param(t.root, "dec.0.count", (float[]){7}, 1), EM_OK);
  cr_assert_eq(em_get(t.count, 0), 7.0);
  cr_assert_eq(em_module_set_param(t.root, "enc.w", v, 10), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "'enc.w'") && strstr(em_last_error(), "12 elements [3, 4]") &&
                strstr(em_last_error(), "got 10"),
            "%s", em_last_error());
  cr_assert_eq(em_module_set_param(t.root, "enc.x", v, 12), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "'enc.x'"), "%s", em_last_error());
  em_clear_error();
  em_module_free(t.root);
  em_scope_end(s);
}

/* ---- the arena ------------------------------------------------------------------------------- */
Test(arena, packs_at_documented_offsets_preserving_values) {
  em_scope s = em_scope_begin();
  tree t = make_tree();
  em_tensor *ps[] = {t.a, t.w, t.b, t.lw};
  double before[4][12];
  for (int i = 0; i < 4; i++)
    for (int64_t k = 0; k < em_numel(ps[i]); k++) before[i][k] = em_get(ps[i], k);
  em_params p = em_parameters(t.root);
  cr_assert_eq(p.n, 4);
  const int64_t off[] = {0, 16, 32, 48}, len[] = {2, 12, 4, 5};
  cr_assert_not_null(p.arena);
  cr_assert_eq((uintptr_t)p.arena % 64, 0, "arena not 64-byte aligned");
  cr_assert_eq(p.arena_numel, 64);
  int64_t n_arena;
  cr_assert_eq(em_module_arena(t.root, &n_arena), p.arena);
  cr_assert_eq(n_arena, 64);
  const char *names[] = {"a", "enc.w", "enc.b", "dec.0.w"};
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(p.t[i], ps[i], "tensor pointers must not change");
    cr_assert_eq(p.offset[i], off[i]);
    cr_assert_eq(p.numel[i], len[i]);
    cr_assert_str_eq(p.names[i], names[i]);
    cr_assert_str_eq(em_tensor_name(ps[i]), names[i], "parameter name not set");
    cr_assert_eq(em_data_f32(ps[i]), p.arena + off[i]);
    cr_assert(em_is_contiguous(ps[i]));
    tu_assert_close(ps[i], before[i], len[i], 0, 0, names[i]);
  }
  for (int64_t k = 2; k < 16; k++) cr_assert_eq(p.arena[k], 0.0f, "padding %lld", (long long)k);
  for (int64_t k = 53; k < 64; k++) cr_assert_eq(p.arena[k], 0.0f, "padding %lld", (long long)k);
  /* Idempotent: a second call keeps the same arena. */
  cr_assert_eq(em_parameters(t.root).arena, p.arena);
  /* A child's view: no arena, names relative to it. */
  em_params pc = em_parameters(t.dec);
  cr_assert_eq(pc.n, 1);
  cr_assert_null(pc.arena);
  cr_assert_null(pc.offset);
  cr_assert_str_eq(pc.names[0], "0.w");
  cr_assert_str_eq(em_tensor_name(t.lw), "dec.0.w", "a child's view must not rename");
  tu_assert_error((void *)em_module_arena(t.dec, NULL), "child", NULL);
  em_module_free(t.root);
  em_scope_end(s);
}

Test(arena, gradients_flow_after_packing) {
  em_scope s = em_scope_begin();
  tree t = make_tree();
  em_parameters(t.root);
  em_tensor *x = tu_ramp(EM_SHAPE(3, 4), 2, 0.5);
  em_tensor *loss =
      em_add(em_sum(em_mul(t.w, x), 0, NULL, false), em_sum(em_mul(t.b, t.b), 0, NULL, false));
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  double gw[12], gb[4];
  for (int k = 0; k < 12; k++) gw[k] = em_get(x, k);
  for (int k = 0; k < 4; k++) gb[k] = 2 * em_get(t.b, k);
  tu_assert_close(t.w->grad, gw, 12, 1e-6, 1e-6, "d/dw");
  tu_assert_close(t.b->grad, gb, 4, 1e-6, 1e-6, "d/db");
  cr_assert_null(t.a->grad);
  em_module_free(t.root);
  em_scope_end(s);
}

Test(arena, repacks_after_the_tree_changes) {
  em_scope s = em_scope_begin();
  tree t = make_tree();
  em_params p = em_parameters(t.root);
  float *old_arena = p.arena;
  double w5 = em_get(t.w, 5);
  em_tensor *z = tu_ramp(EM_SHAPE(20), 1, 9);
  cr_assert_eq(em_module_add_param(t.enc, "z", z), EM_OK);
  p = em_parameters(t.root);
  cr_assert_eq(p.n, 5);
  cr_assert_str_eq(p.names[3], "enc.z");
  const int64_t off[] = {0, 16, 32, 48, 80};
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(p.offset[i], off[i], "%s", p.names[i]);
    cr_assert_eq(em_data_f32(p.t[i]), p.arena + off[i]);
  }
  cr_assert_eq(p.arena_numel, 96);
  cr_assert_eq(em_get(t.w, 5), w5);
  cr_assert_eq(em_get(z, 19), (float)sin(0.37 * 19 + 9));
  (void)old_arena;
  /* A packed root that becomes a child: the new root packs everything again. */
  em_module *top = em_module_new("Top", NULL, NULL, NULL);
  cr_assert_eq(em_module_add_child(top, "net", t.root), EM_OK);
  em_params q = em_parameters(top);
  cr_assert_eq(q.n, 5);
  cr_assert_str_eq(q.names[1], "net.enc.w");
  cr_assert_eq(em_data_f32(t.w), q.arena + 16);
  cr_assert_eq(em_get(t.w, 5), w5);
  em_module_free(top);
  em_scope_end(s);
}

/* ---- initialisation and seeding -------------------------------------------------------------- */
static void assert_uniform(em_tensor *t, double bound, const char *what) {
  double mx = 0;
  for (int64_t k = 0; k < em_numel(t); k++) {
    double v = em_get(t, k);
    cr_assert(v >= -bound && v <= bound, "%s[%lld] = %g outside +-%g", what, (long long)k, v,
              bound);
    mx = fmax(mx, fabs(v));
  }
  cr_assert(mx > 0.8 * bound, "%s: max |w| %g, bound %g", what, mx, bound);
}

Test(init, bounds_match_pytorch) {
  em_scope s = em_scope_begin();
  em_manual_seed(42);
  em_module *l = em_linear_new(20, 30, true);
  assert_uniform(em_module_get(l, "weight"), 1 / sqrt(20.0), "linear weight");
  assert_uniform(em_module_get(l, "bias"), 1 / sqrt(20.0), "linear bias");
  cr_assert_eq(em_module_get(l, "weight")->shape[0], 30);
  em_module *c = em_conv2d_new(6, 8, 5, &(em_conv2d_opts){.groups = 2}, true);
  em_tensor *cw = em_module_get(c, "weight");
  cr_assert(cw->shape[0] == 8 && cw->shape[1] == 3 && cw->shape[2] == 5 && cw->shape[3] == 5);
  assert_uniform(cw, 1 / sqrt(75.0), "conv weight");
  assert_uniform(em_module_get(c, "bias"), 1 / sqrt(75.0), "conv bias");
  em_module *nb = em_linear_new(4, 3, false);
  cr_assert_eq(em_module_num_params(nb), 1);
  em_module *e = em_embedding_new(100, 100);
  em_tensor *ew = em_module_get(e, "weight");
  double sum = 0, sq = 0;
  for (int64_t k = 0; k < 10000; k++) {
    sum += em_get(ew, k);
    sq += em_get(ew, k) * em_get(ew, k);
  }
  double mean = sum / 10000, sd = sqrt(sq / 10000 - mean * mean);
  cr_assert(fabs(mean) < 0.05 && fabs(sd - 1) < 0.05, "embedding N(0,1): mean %g, std %g", mean,
            sd);
  em_module *bn = em_batchnorm2d_new(3);
  em_module *ln = em_layernorm_new(EM_SHAPE(2, 3));
  tu_assert_close(em_module_get(bn, "weight"), (double[]){1, 1, 1}, 3, 0, 0, "bn weight");
  tu_assert_close(em_module_get(bn, "bias"), (double[]){0, 0, 0}, 3, 0, 0, "bn bias");
  tu_assert_close(em_module_get(bn, "running_mean"), (double[]){0, 0, 0}, 3, 0, 0, "bn mean");
  tu_assert_close(em_module_get(bn, "running_var"), (double[]){1, 1, 1}, 3, 0, 0, "bn var");
  em_tensor *nbt = em_module_get(bn, "num_batches_tracked");
  cr_assert(nbt->dtype == EM_I64 && nbt->ndim == 0 && em_get(nbt, 0) == 0);
  tu_assert_names(
      bn, 2,
      (const char *[]){"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}, 5);
  tu_assert_close(em_module_get(ln, "weight"), (double[]){1, 1, 1, 1, 1, 1}, 6, 0, 0, "ln w");
  tu_assert_close(em_module_get(ln, "bias"), (double[]){0, 0, 0, 0, 0, 0}, 6, 0, 0, "ln b");
  em_module *mods[] = {l, c, nb, e, bn, ln};
  for (int i = 0; i < 6; i++) em_module_free(mods[i]);
  em_scope_end(s);
}

static bool same_weights(em_module *a, em_module *b) {
  em_params pa = em_parameters(a), pb = em_parameters(b);
  if (pa.n != pb.n || pa.arena_numel != pb.arena_numel) return false;
  return !memcmp(pa.arena, pb.arena, (size_t)pa.arena_numel * sizeof(float));
}

Test(init, same_seed_same_weights) {
  em_scope s = em_scope_begin();
  em_manual_seed(7);
  em_module *a = em_mlp(10, (int[]){8, 6}, 2, 3), *a2 = em_mlp(10, (int[]){8, 6}, 2, 3);
  em_manual_seed(7);
  em_module *b = em_mlp(10, (int[]){8, 6}, 2, 3);
  em_manual_seed(8);
  em_module *c = em_mlp(10, (int[]){8, 6}, 2, 3);
  cr_assert(same_weights(a, b), "same seed gave different weights");
  cr_assert(!same_weights(a, c), "different seeds gave the same weights");
  cr_assert(!same_weights(a, a2), "the generator did not advance between models");
  cr_assert_eq(em_default_rng()->seed, 8u);
  em_module *m[] = {a, a2, b, c};
  for (int i = 0; i < 4; i++) em_module_free(m[i]);
  em_scope_end(s);
}
