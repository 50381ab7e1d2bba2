/* test_cuda_index.c: the CUDA table's check_index, index_select and index_select_backward against
 * the CPU table: em_index_select forward and backward on every dim, index dtype and element
 * dtype, and the index check's count, first bad position and value (through the front end's
 * message and the table directly, with a skipped value). Every case skips without a CUDA device.
 *
 * Bounds: index_select copies (exact). Its backward adds repeated rows with atomicAdd on the GPU,
 * in a varying order, and in index order on the CPU: 1e-6 relative, 1e-6 absolute for the few
 * rows that repeat here (a float rounding per repeat). */
#include "cudacmp.h"

#include "core/kernels.h"

#include <string.h>

typedef struct {
  int dim;
} sel_case;

static em_tensor *sel_fn(em_tensor **in, void *ctx) {
  const sel_case *c = ctx;
  return em_index_select(in[0], c->dim, in[1]);
}

/* A 1-D index of dtype dt with n values in [0, size), repeats included. */
static em_tensor *make_index(em_rng *r, em_dtype dt, int64_t n, int64_t size) {
  em_tensor *t = em_empty(dt, 1, &n);
  for (int64_t i = 0; i < n; i++) em_set(t, i, (double)(em_rng_next_u64(r) % (uint64_t)size));
  return t;
}

Test(cuda_index, index_select_every_dim_and_dtype) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(21);
  int64_t shape[3] = {5, 6, 7};
  static const int64_t lens[] = {4, 13, 0, 1};
  for (int dim = 0; dim < 3; dim++)
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
      for (int wide = 0; wide < 2; wide++) {
        em_tensor *in[2] = {tu_rand(&r, 3, shape, -1, 1, true),
                            make_index(&r, wide ? EM_I64 : EM_I32, lens[l], shape[dim])};
        sel_case c = {dim};
        char what[64];
        snprintf(what, sizeof what, "index_select dim %d, %lld %s indices", dim, (long long)lens[l],
                 wide ? "i64" : "i32");
        tu_cuda_check(sel_fn, 2, in, &c, 0, 0, 1e-6, 1e-6, what);
      }
  /* Any element dtype moves bit for bit; a strided input is made contiguous first. */
  static const em_dtype dts[] = {EM_I64, EM_I32, EM_U8, EM_BF16};
  for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
    em_tensor *x = em_empty(dts[d], 3, shape);
    for (int64_t i = 0; i < em_numel(x); i++) em_set(x, i, (double)(i % 101));
    em_tensor *in[2] = {em_transpose(x, 0, 2), make_index(&r, EM_I64, 9, 7)};
    sel_case c = {0};
    tu_cuda_check(sel_fn, 2, in, &c, 0, 0, 0, 0, em_dtype_name(dts[d]));
  }
  TU_END;
}

/* A large index with several bad values: the first position is reported, as on the CPU, and the
 * front ends' messages agree. */
Test(cuda_index, first_bad_index_is_reported) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(22);
  for (int wide = 0; wide < 2; wide++) {
    em_tensor *idx = make_index(&r, wide ? EM_I64 : EM_I32, 200000, 50);
    em_set(idx, 190000, 50);
    em_set(idx, 70001, -3);
    em_set(idx, 70000, 77); /* the first */
    em_set(idx, 150000, 1000);
    em_tensor *x = tu_rand(&r, EM_SHAPE(50, 3), -1, 1, false);
    em_clear_error();
    cr_assert_null(em_index_select(x, 0, idx));
    char cpu_msg[512];
    snprintf(cpu_msg, sizeof cpu_msg, "%s", em_last_error());
    cr_assert(strstr(cpu_msg, "index 77 at position 70000"), "cpu: %s", cpu_msg);
    em_clear_error();
    cr_assert_null(em_index_select(tu_cuda(x), 0, tu_cuda(idx)));
    cr_assert_str_eq(em_last_error(), cpu_msg);
    em_clear_error();
  }
  TU_END;
}

/* The table's check_index directly: count, bad position and value, the skipped value (a loss's
 * ignore label) and the i64 copy, on both devices. */
Test(cuda_index, check_index_counts_and_skips_like_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(23);
  const em_kernels *kc = em__kernels(EM_DEVICE_CPU), *kg = em__kernels(EM_DEVICE_CUDA(0));
  for (int wide = 0; wide < 2; wide++)
    for (int variant = 0; variant < 4; variant++) {
      int64_t n = variant == 3 ? 0 : 5003;
      em_tensor *idx = make_index(&r, wide ? EM_I64 : EM_I32, n, 10);
      for (int64_t i = 7; i < n; i += 13) em_set(idx, i, -100); /* skipped values */
      if (variant == 1) em_set(idx, 4000, 10);                  /* out of range */
      if (variant == 2) em_set(idx, 2, -100 + 1);               /* bad, not skipped */
      int64_t skip = -100;
      const int64_t *sk = variant == 0 ? NULL : &skip; /* variant 0: -100 is bad */
      em_tensor *ixc = em_empty(EM_I64, 1, &n);
      em_tensor *ixg = em_to(ixc, EM_DEVICE_CUDA(0));
      em_tensor *idg = tu_cuda(idx);
      int64_t cc, bc, vc, cg, bg, vg;
      cr_assert_eq(kc->check_index(idx, 10, sk, ixc, &cc, &bc, &vc), EM_OK);
      cr_assert_eq(kg->check_index(idg, 10, sk, ixg, &cg, &bg, &vg), EM_OK, "%s", em_last_error());
      cr_assert_eq(cg, cc, "variant %d: count %lld, cpu %lld", variant, (long long)cg,
                   (long long)cc);
      cr_assert_eq(bg, bc, "variant %d: bad position %lld, cpu %lld", variant, (long long)bg,
                   (long long)bc);
      cr_assert_eq(vg, vc, "variant %d: bad value %lld, cpu %lld", variant, (long long)vg,
                   (long long)vc);
      if (bc < 0) tu_assert_same(ixc, ixg, 0, 0, "the i64 copy of the index");
    }
  TU_END;
}
