/* test_cuda_alloc.c: the CUDA caching allocator (runtime/cuda/alloc.c) through the public
 * statistics (em_cuda_memory_stats, em_cuda_empty_cache) and em_empty on cuda:0, and the pinned
 * upload path of em_to. The first cases run everywhere (no device: the error and zeros); the rest
 * skip without a CUDA device. */
#include "cudautil.h"

#include "core/internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Without cuda:index the statistics are zeros with EM_ERR_UNSUPPORTED naming the device. */
static void assert_no_device(int index) {
  em_cuda_memstats st;
  memset(&st, 0x5a, sizeof st);
  cr_assert_eq(em_cuda_memory_stats(index, &st), EM_ERR_UNSUPPORTED);
  char want[32];
  snprintf(want, sizeof want, "cuda:%d", index);
  cr_assert(strstr(em_last_error(), want), "message: %s", em_last_error());
  cr_assert(strstr(em_last_error(), "cuda_memory_stats"), "message: %s", em_last_error());
  em_cuda_memstats zero = {0};
  cr_assert_eq(memcmp(&st, &zero, sizeof st), 0, "statistics not zeroed");
  cr_assert_eq(em_cuda_empty_cache(index), EM_ERR_UNSUPPORTED);
  cr_assert(strstr(em_last_error(), want), "message: %s", em_last_error());
}

Test(cuda_alloc, stats_of_a_missing_device_are_an_error_and_zeros) {
  /* an index past the devices present: true on every machine */
  assert_no_device(em_cuda_device_count());
  assert_no_device(-1);
  if (em_cuda_device_count() == 0) assert_no_device(0);
  cr_assert_eq(em_cuda_memory_stats(0, NULL), EM_ERR_INVALID);
}

static em_cuda_memstats stats0(void) {
  em_cuda_memstats st;
  cr_assert_eq(em_cuda_memory_stats(0, &st), EM_OK, "%s", em_last_error());
  return st;
}

Test(cuda_alloc, a_freed_block_comes_back_for_the_same_size_class) {
  TU_NEED_CUDA();
  em_tensor *a = em__alloc_on(EM_DEVICE_CUDA(0), EM_F32, EM_SHAPE(1000), false);
  cr_assert_not_null(a, "%s", em_last_error());
  void *p = a->storage->data;
  em_cuda_memstats s1 = stats0();
  cr_assert_eq(s1.in_use % 512, 0);
  cr_assert_geq(s1.in_use, 4096, "4000 bytes are one 4096-byte block");
  em_release(a);
  em_cuda_memstats s2 = stats0();
  cr_assert_eq(s2.in_use, s1.in_use - 4096);
  cr_assert_eq(s2.cached, s1.cached + 4096);
  cr_assert_eq(s2.allocated, s1.allocated, "the block stays with the process");
  /* 3900 bytes round to the same 4096-byte class: the same block, no cudaMalloc */
  em_tensor *b = em__alloc_on(EM_DEVICE_CUDA(0), EM_F32, EM_SHAPE(975), false);
  cr_assert_not_null(b, "%s", em_last_error());
  cr_assert_eq(b->storage->data, p, "the cached block was not reused");
  em_cuda_memstats s3 = stats0();
  cr_assert_eq(s3.hits, s2.hits + 1);
  cr_assert_eq(s3.mallocs, s2.mallocs);
  cr_assert_eq(s3.allocs, s2.allocs + 1);
  cr_assert_eq(s3.in_use, s1.in_use);
  /* a reused block is poisoned like a new one: NaN everywhere */
  em_tensor *h = em_to(b, EM_DEVICE_CPU);
  cr_assert_not_null(h, "%s", em_last_error());
  for (int64_t i = 0; i < 975; i++) cr_assert(isnan(em_get(h, i)), "element %lld", (long long)i);
  em_release(h);
  em_release(b);
}

Test(cuda_alloc, large_blocks_count_in_2_mib_steps_and_empty_cache_returns_them) {
  TU_NEED_CUDA();
  em_cuda_memstats s0 = stats0();
  em_tensor *a = em__alloc_on(EM_DEVICE_CUDA(0), EM_U8, EM_SHAPE((3 << 20) + 1), false);
  cr_assert_not_null(a, "%s", em_last_error());
  em_cuda_memstats s1 = stats0();
  cr_assert_eq(s1.in_use - s0.in_use, 4 << 20, "3 MiB + 1 byte is a 4 MiB block");
  cr_assert_eq(s1.mallocs, s0.mallocs + 1);
  cr_assert_geq(s1.peak_in_use, s1.in_use);
  cr_assert_geq(s1.peak_allocated, s1.allocated);
  em_release(a);
  em_cuda_memstats s2 = stats0();
  cr_assert_eq(s2.cached - s0.cached, 4 << 20);
  cr_assert_eq(em_cuda_empty_cache(0), EM_OK, "%s", em_last_error());
  em_cuda_memstats s3 = stats0();
  cr_assert_eq(s3.cached, 0);
  cr_assert_eq(s3.allocated, s3.in_use);
  cr_assert_geq(s3.frees, s2.frees + 1);
  cr_assert_eq(s3.peak_in_use, s2.peak_in_use, "peaks stay");
}

Test(cuda_alloc, out_of_memory_names_the_request_and_what_is_held) {
  TU_NEED_CUDA();
  em_tensor *keep = em__alloc_on(EM_DEVICE_CUDA(0), EM_F32, EM_SHAPE(1024), false);
  cr_assert_not_null(keep, "%s", em_last_error());
  int64_t tib = (int64_t)1 << 40;
  em_tensor *t = em__alloc_on(EM_DEVICE_CUDA(0), EM_U8, EM_SHAPE(tib), false);
  cr_assert_null(t);
  cr_assert_eq(em_last_status(), EM_ERR_NOMEM);
  const char *m = em_last_error();
  cr_assert(strstr(m, "cuda:0"), "message: %s", m);
  cr_assert(strstr(m, "1099511627776 bytes"), "the request is named: %s", m);
  em_cuda_memstats st = stats0();
  char held[64];
  snprintf(held, sizeof held, "%lld bytes in use", (long long)st.in_use);
  cr_assert(strstr(m, held), "what is held is named (%s): %s", held, m);
  cr_assert(strstr(m, "cached"), "message: %s", m);
  em_release(keep);
}

Test(cuda_alloc, pinned_upload_matches_the_host_and_keeps_the_buffer_safe) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_tensor *p = em_empty_pinned(EM_F32, EM_SHAPE(513, 7));
  cr_assert(em_is_pinned(p));
  for (int64_t i = 0; i < 513 * 7; i++) em_set(p, i, (double)i * 0.5);
  em_tensor *d = em_to(p, EM_DEVICE_CUDA(0));
  cr_assert_not_null(d, "%s", em_last_error());
  cr_assert_not_null(p->storage->upload_done, "a pinned source goes through the upload slot");
  /* em_data waits for the copy, so this write cannot reach the device copy */
  em_data_f32(p)[0] = -1;
  em_tensor *h = em_to(d, EM_DEVICE_CPU);
  for (int64_t i = 0; i < 513 * 7; i++)
    cr_assert_eq(em_get(h, i), (double)i * 0.5, "element %lld", (long long)i);
  cr_assert_eq(em_get(d, 1), 0.5, "em_get reads a GPU element");
  em_set(d, 1, 3.0);
  cr_assert_eq(em_get(d, 1), 3.0, "em_set writes a GPU element");
  TU_END;
}

/* Uploads one after another from pinned buffers of one size, as a data loader makes them: the
 * pinned cache hands the same host buffer back (after the upload from it completed), and the
 * host-to-device stream reuses the freed device block (after the compute kernels that read it).
 * Each round's values must arrive intact through a kernel on the compute stream. */
Test(cuda_alloc, repeated_pinned_uploads_reuse_the_buffer_and_the_block) {
  TU_NEED_CUDA();
  TU_BEGIN;
  enum { N = 4099 };
  void *host0 = NULL, *dev0 = NULL;
  for (int round = 0; round < 4; round++) {
    em_scope s = em_scope_begin();
    em_tensor *p = em_empty_pinned(EM_F32, EM_SHAPE(N));
    cr_assert(em_is_pinned(p));
    float *h = em_data_f32(p);
    for (int64_t i = 0; i < N; i++) h[i] = (float)(round * 10000 + i);
    em_tensor *d = em_to(p, EM_DEVICE_CUDA(0));
    cr_assert_not_null(d, "round %d: %s", round, em_last_error());
    if (round == 0) {
      host0 = h;
      dev0 = d->storage->data;
    } else {
      cr_assert_eq(h, host0, "round %d: the pinned buffer was not reused", round);
      cr_assert_eq(d->storage->data, dev0, "round %d: the upload block was not reused", round);
    }
    em_tensor *twice = tu_host(em_add(d, d));
    for (int64_t i = 0; i < N; i++)
      cr_assert_eq(em_get(twice, i), 2.0 * (round * 10000 + i), "round %d: element %lld", round,
                   (long long)i);
    em_scope_end(s);
  }
  TU_END;
}
