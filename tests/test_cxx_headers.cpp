/* test_cxx_headers.cpp: the public headers compiled as C++ (CUDA sources include them too).
 * Linking against the C library fails for any header whose declarations lack extern "C" (C++
 * would look for mangled names), so this calls something from each one and checks its result. */
#include "em_config.h"
#include "em_half.h"
#include "em_timeline.h"
#include "ember.h"

#include <cstdio>
#include <cstring>

static int failures;

#define EXPECT(cond)                                                                               \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "%s:%d: expected %s (%s)\n", __FILE__, __LINE__, #cond,                 \
                   em_last_error());                                                               \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

int main() {
  int64_t live0 = em_live_tensors();
  /* em_core.h, em_ops.h, em_autograd.h */
  em_scope s = em_scope_begin();
  const int64_t shape[] = {2, 3};
  em_tensor *a = em_full(EM_F32, 2, shape, 1.5);
  em_tensor *b = em_full(EM_F32, 2, shape, 2.0);
  EXPECT(em_set_requires_grad(a, true) == EM_OK);
  em_tensor *loss = em_sum(em_mul(a, b), 0, nullptr, false);
  EXPECT(loss && em_get(loss, 0) == 18.0);
  EXPECT(em_backward(loss) == EM_OK);
  EXPECT(a->grad && em_get(a->grad, 5) == 2.0);
  em_scope_end(s);
  EXPECT(em_live_tensors() == live0);

  /* em_half.h, em_config.h, em_checkpoint.h, em_file.h, em_timeline.h */
  EXPECT(em_bf16_to_f32(em_f32_to_bf16(0.5f)) == 0.5f);
  em_config *c = em_config_parse("train:\n  epochs: 3\n", "cxx.yaml");
  int64_t epochs = 0;
  EXPECT(c && em_config_int(c, "train.epochs", 1, 1, 10, &epochs) == EM_OK && epochs == 3);
  em_config_free(c);
  em_ckpt *ck = em_ckpt_new();
  EXPECT(ck && em_ckpt_count(ck) == 0);
  em_ckpt_free(ck);
  EXPECT(em_atomic_file_open("") == nullptr && em_last_status() == EM_ERR_INVALID);
  EXPECT(em_timeline_now() > 0);
  EXPECT(em_env_find("EMBER_THREADS") && em_env_count() > 0);
  /* coll.h, ddp_init.h, ddp.h, dl.h, dl_idx.h */
  EXPECT(std::strcmp(coll_kind_name(COLL_BARRIER), "barrier") == 0);
  EXPECT(ddp_rank() == 0 && ddp_world_size() == 1);
  ddp_free(nullptr);
  EXPECT(dl_sample_seed(1, 0, 0) != dl_sample_seed(1, 1, 0));
  dl_idx_array arr;
  EXPECT(dl_idx_read("no/such/file.gz", &arr) == EM_ERR_IO);
  em_clear_error();

  if (failures) std::fprintf(stderr, "%d failures\n", failures);
  return failures ? 1 : 0;
}
