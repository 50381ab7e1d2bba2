/* fuzz_ckpt: a safetensors checkpoint file through em_ckpt_read (header length, JSON, dtypes,
 * shapes, offsets), then every tensor and the metadata ember-train reads back, as a resume does.
 * A tensor the reader accepts must have all its bytes inside the file: summing them lets ASan see
 * any that are not. */
#include <stdlib.h>

#include "em_checkpoint.h"
#include "em_core.h"
#include "fuzzutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  em_ckpt *c = em_ckpt_read(fz_write(0, "ckpt.safetensors", data, size));
  if (!c) return 0;
  volatile unsigned sum = 0;
  for (int i = 0; i < em_ckpt_count(c); i++) {
    const char *name = em_ckpt_name_at(c, i);
    em_tensor *t = em_ckpt_get(c, name);
    if (!t) abort(); /* a listed name must be there */
    const unsigned char *p = em_data(t);
    size_t bytes = (size_t)em_numel(t) * em_dtype_size(t->dtype);
    for (size_t k = 0; k < bytes; k++) sum += p[k];
  }
  static const char *const keys[] = {"step", "epoch", "loader.epoch", "loader.position",
                                     "loader.seed", "optim.step", "optim.lr", "loss.sum"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    int64_t v;
    uint64_t u;
    (void)em_ckpt_meta(c, keys[i]);
    (void)em_ckpt_meta_i64(c, keys[i], &v);
    (void)em_ckpt_meta_u64(c, keys[i], &u);
  }
  em_ckpt_free(c);
  return 0;
}
