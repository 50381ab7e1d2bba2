/* test_cuda_ddp.c: ddp_wrap on a GPU (runtime/ddp/, collectives/nccl.c) in a world of one rank
 * under NCCL, and the same reducer on the CPU for comparison.
 *
 * A world of one normally reduces nothing; ddp__sync_single makes the reducer run its whole path
 * anyway (buckets, NCCL all-reduce, compression, the wait), which on one GPU is the only way to
 * run it (NCCL cannot put two ranks on one device). The average over one rank is the rank's own
 * gradient, so the oracles are exact:
 *   - by hand: every .grad (a view into the device's bucket buffer) is set to a known pattern, a
 *     synced pass reduces it (ddp__reduce_now: needs only the memory kernels and NCCL), and the
 *     result must be the pattern bit for bit, or with compression its 16-bit round trip as
 *     em_half.h's scalar conversions compute it (independent of the bulk kernels under test);
 *   - a real backward through the public API (the ops' CUDA kernels must exist): the gradients
 *     equal those of the same model on the CPU without ddp_wrap.
 * Errors: a parameter on the CPU next to GPU ones, a GPU model where ddp_device() is the CPU.
 *
 * The CPU cases run everywhere; the GPU cases skip without a CUDA device (and without NCCL). */
#include "cudautil.h"

#include "core/kernels.h"
#include "ddp/internal.h"
#include "ddp_init.h"
#include "em_half.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IN 9
#define HIDDEN 33
#define OUT 4
#define BATCH 6

static void need_gpu_world(void) {
  TU_NEED_CUDA();
#ifndef EMBER_HAVE_NCCL
  cr_skip_test("this build has no NCCL (EMBER_NCCL)");
#endif
}

/* ddp_init on device "cpu" or "cuda" (EMBER_DEVICE): a world of one. */
static void open_world(const char *device) {
  setenv("EMBER_DEVICE", device, 1);
  cr_assert_eq(ddp_init(NULL, NULL), EM_OK, "ddp_init: %s", em_last_error());
  if (!strcmp(device, "cuda")) {
    cr_assert_eq(ddp_device().kind, EM_CUDA);
    cr_assert_str_eq(coll_backend_name(ddp_comm(), EM_CUDA), "nccl");
  }
}

/* The MLP 9 -> 33 -> 4 with seed, on dev (parameters packed first, then moved: the arena moves
 * whole). Caller frees. */
static em_module *mlp_on(uint64_t seed, em_device dev) {
  em_manual_seed(seed);
  em_module *m = em_mlp(IN, (int[]){HIDDEN}, 1, OUT);
  cr_assert_not_null(m, "%s", em_last_error());
  cr_assert(em_parameters(m).n == 4, "%s", em_last_error());
  if (dev.kind != EM_CPU) cr_assert_eq(em_module_to(m, dev), EM_OK, "%s", em_last_error());
  return m;
}

/* Parameter p's gradient element i: values with bits below bf16's and f16's precision, of both
 * signs. */
static float pattern(int p, int64_t i) {
  return 0.1f * (float)(p + 1) + (float)((i * 37 + p * 11) % 101) / 303.0f - 0.17f;
}

static float round_trip(ddp_compression c, float v) {
  if (c == DDP_COMPRESS_BF16) return em_bf16_to_f32(em_f32_to_bf16(v));
  if (c == DDP_COMPRESS_FP16) return em_f16_to_f32(em_f32_to_f16(v));
  return v;
}

/* Every parameter's .grad = pattern, written from host memory by its device's copy. */
static void set_grads(em_params ps) {
  for (int p = 0; p < ps.n; p++) {
    em_tensor *g = ps.t[p]->grad;
    cr_assert(g && em_is_contiguous(g), "'%s' has no contiguous .grad", ps.names[p]);
    int64_t n = em_numel(g);
    float *h = malloc((size_t)n * sizeof *h);
    cr_assert(h);
    for (int64_t i = 0; i < n; i++) h[i] = pattern(p, i);
    em_status st = em__kernels(g->device)->copy_from_host(g->device.index, em_data(g), h,
                                                          (size_t)n * sizeof *h);
    free(h);
    cr_assert_eq(st, EM_OK, "%s", em_last_error());
  }
}

/* Every .grad is pattern's round trip through c, bit for bit. */
static void check_grads(em_params ps, ddp_compression c, const char *what) {
  for (int p = 0; p < ps.n; p++) {
    em_tensor *g = tu_host(ps.t[p]->grad);
    const float *v = em_data_f32(g);
    for (int64_t i = 0; i < em_numel(g); i++) {
      float want = round_trip(c, pattern(p, i));
      cr_assert(memcmp(&v[i], &want, sizeof want) == 0, "%s: '%s' element %lld is %.9g, want %.9g",
                what, ps.names[p], (long long)i, v[i], want);
    }
  }
}

/* ---- the reducer by hand: memory kernels, conversions and the communicator only ------------- */
static void reduce_by_hand(em_device dev) {
  static const ddp_compression comps[] = {DDP_COMPRESS_NONE, DDP_COMPRESS_BF16,
                                          DDP_COMPRESS_FP16};
  static const char *names[] = {"no compression", "bf16", "fp16"};
  TU_BEGIN;
  for (int c = 0; c < 3; c++) {
    em_module *m = mlp_on(5, dev);
    /* 0.0005 MB = 131 floats: about one bucket per parameter. */
    ddp_options o = {.compression = comps[c], .bucket_cap_mb = 0.0005, .static_bucket_order = true};
    ddp_model *d = ddp_wrap(m, &o);
    cr_assert_not_null(d, "ddp_wrap (%s): %s", names[c], em_last_error());
    em_params ps = em_parameters(m);
    for (int p = 0; p < ps.n; p++) {
      em_tensor *g = ps.t[p]->grad;
      cr_assert(g && g->device.kind == dev.kind && g->device.index == dev.index,
                "'%s': its .grad is not a bucket view on the model's device", ps.names[p]);
    }
    ddp_stats s = ddp_get_stats(d);
    cr_assert_geq(s.n_buckets, 3, "%d buckets", s.n_buckets);
    cr_assert(dev.kind == EM_CPU || s.overlap, "overlap auto is not on for a GPU model");
    int64_t total = 0;
    for (int k = 0; k < s.n_buckets; k++) total += ddp_bucket_numel(d, k, NULL);
    cr_assert_eq(total, 304 + 48 + 144 + 16, "bucket lengths (padded to 16 floats)");

    set_grads(ps);
    coll_stats c0 = coll_get_stats(ddp_comm());
    ddp__sync_single(d, true);
    cr_assert_eq(ddp__reduce_now(d), EM_OK, "%s: %s", names[c], em_last_error());
    coll_stats c1 = coll_get_stats(ddp_comm());
    /* every bucket (and the used-parameter flags) went through the communicator */
    cr_assert_geq(c1.ops - c0.ops, s.n_buckets + 1, "%s: %lld operations for %d buckets",
                  names[c], (long long)(c1.ops - c0.ops), s.n_buckets);
    cr_assert_eq(ddp_get_stats(d).steps, 1);
    check_grads(ps, comps[c], names[c]);
    ddp_free(d);
    em_module_free(m);
  }
  TU_END;
}

Test(cuda_ddp, cpu_reduce_by_hand) {
  open_world("cpu");
  reduce_by_hand(EM_DEVICE_CPU);
  ddp_finalize();
}

Test(cuda_ddp, cuda_reduce_by_hand) {
  need_gpu_world();
  open_world("cuda");
  reduce_by_hand(ddp_device());
  ddp_finalize();
}

/* ---- a real backward through the public API -------------------------------------------------- */
/* The gradients of the wrapped model on dev equal the same model's on the CPU without ddp_wrap:
 * bit for bit on the CPU (the same kernels; the average of one rank is exact), within rtol on a
 * GPU (cuBLAS and the CUDA reductions sum in another order than oneDNN: about 1e-6 relative for
 * these sizes, 1e-5 leaves room). */
static void backward_matches_local(em_device dev) {
  TU_BEGIN;
  em_module *ref = mlp_on(11, EM_DEVICE_CPU), *m = mlp_on(11, dev);
  ddp_model *d = ddp_wrap(m, &(ddp_options){.bucket_cap_mb = 0.0005});
  cr_assert_not_null(d, "%s", em_last_error());
  ddp__sync_single(d, true);
  em_rng r = em_rng_new(3);
  em_tensor *x = tu_rand(&r, EM_SHAPE(BATCH, IN), -1, 1, false);
  int64_t lab[BATCH];
  for (int i = 0; i < BATCH; i++) lab[i] = (i * 3) % OUT;
  em_tensor *y = em_from_data(EM_I64, EM_SHAPE(BATCH), lab);
  cr_assert_eq(em_backward(em_cross_entropy(em_forward(ref, x), y)), EM_OK, "%s",
               em_last_error());
  em_tensor *xd = em_to(x, dev), *yd = em_to(y, dev); /* x itself on the CPU */
  for (int step = 0; step < 2; step++) { /* the second pass runs on the rebuilt buckets */
    if (step) {
      em_params ps = em_parameters(m);
      for (int p = 0; p < ps.n; p++) {
        em_tensor *g = ps.t[p]->grad;
        cr_assert_eq(em__kernels(g->device)->zero(g->device.index, em_data(g),
                                                  (size_t)em_numel(g) * sizeof(float)),
                     EM_OK, "%s", em_last_error());
      }
    }
    cr_assert_eq(em_backward(em_cross_entropy(em_forward(m, xd), yd)), EM_OK, "step %d: %s", step,
                 em_last_error());
    cr_assert_eq(ddp_get_stats(d).steps, step + 1, "step %d was not reduced", step);
    em_params pr = em_parameters(ref), pm = em_parameters(m);
    for (int p = 0; p < pm.n; p++) {
      char what[96];
      snprintf(what, sizeof what, "step %d: gradient of '%s'", step, pm.names[p]);
      if (dev.kind == EM_CPU) {
        cr_assert(memcmp(em_data(pm.t[p]->grad), em_data(pr.t[p]->grad),
                         (size_t)em_numel(pm.t[p]) * sizeof(float)) == 0,
                  "%s: differs from the local gradient", what);
      } else {
        tu_assert_same(pr.t[p]->grad, pm.t[p]->grad, 1e-5, 1e-7, what);
      }
    }
  }
  ddp_free(d);
  em_module_free(ref);
  em_module_free(m);
  TU_END;
}

Test(cuda_ddp, cpu_backward_matches_local) {
  open_world("cpu");
  backward_matches_local(EM_DEVICE_CPU);
  ddp_finalize();
}

/* Needs the CUDA kernels of linear, relu and cross entropy (and their backward). */
Test(cuda_ddp, cuda_backward_matches_cpu) {
  need_gpu_world();
  open_world("cuda");
  backward_matches_local(ddp_device());
  ddp_finalize();
}

/* ---- errors ---------------------------------------------------------------------------------- */
static em_tensor *forward_pair(em_module *m, em_tensor *x) {
  (void)m;
  return x;
}

Test(cuda_ddp, cpu_parameter_next_to_gpu_ones_is_an_error) {
  need_gpu_world();
  open_world("cuda");
  TU_BEGIN;
  em_module *pair = em_module_new("Pair", forward_pair, NULL, NULL);
  em_module *a = em_linear_new(4, 3, true), *b = em_linear_new(3, 2, true);
  cr_assert(pair && a && b, "%s", em_last_error());
  cr_assert_eq(em_module_to(a, ddp_device()), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_module_add_child(pair, "a", a), EM_OK);
  cr_assert_eq(em_module_add_child(pair, "b", b), EM_OK);
  cr_assert_null(ddp_wrap(pair, NULL), "a model on two devices was wrapped");
  const char *e = em_last_error();
  cr_assert(strstr(e, "ddp_wrap") && strstr(e, "'b.weight'") && strstr(e, "cpu") &&
                strstr(e, "cuda:0"),
            "the error should name the CPU parameter and both devices: %s", e);
  em_module_free(pair);
  TU_END;
  ddp_finalize();
}

Test(cuda_ddp, gpu_model_where_the_rank_device_is_the_cpu_is_an_error) {
  TU_NEED_CUDA();
  open_world("cpu");
  TU_BEGIN;
  em_module *m = mlp_on(1, EM_DEVICE_CUDA(0));
  cr_assert_null(ddp_wrap(m, NULL), "a GPU model was wrapped on a CPU rank");
  const char *e = em_last_error();
  cr_assert(strstr(e, "'0.weight'") && strstr(e, "cuda:0") && strstr(e, "is cpu"),
            "the error should name the parameter and both devices: %s", e);
  em_module_free(m);
  TU_END;
  ddp_finalize();
}
