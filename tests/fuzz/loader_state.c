/* fuzz_loader_state: the loader's resume state. ember-train stores a dl_state as checkpoint
 * metadata (loader.seed, .epoch, .position, .dataset_len, .shuffle: examples/train/ckpt.c) and a
 * resumed run hands whatever the file held to dl_state_restore, on a loader whose size, batch and
 * world may differ from the saving run's. The input is those values, raw: a loader (dataset
 * length 1..200, batch 1..16, world 1..4, rank, shuffle, drop_last) and the state. A restore that
 * succeeds must then yield batches of valid indices of the epoch it named (or the next one, for
 * a state saved at the end of an epoch). */
#include <stdlib.h>
#include <string.h>

#include "dl.h"
#include "loader_state.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_loader_input in;
  if (size < sizeof in) return 0;
  memcpy(&in, data, sizeof in);
  int64_t n = 1 + in.len % 200;
  em_tensor *x = em_empty(EM_I64, EM_SHAPE(n));
  for (int64_t i = 0; i < n; i++) ((int64_t *)em_data(x))[i] = i;
  dl_dataset *d = dl_memory_new(&x, NULL, 1);
  em_release(x);
  if (!d) abort();
  int world = 1 + in.world % 4;
  dl_options opt = {.batch = 1 + in.batch % 16,
                    .shuffle = in.flags & 1,
                    .drop_last = in.flags & 2,
                    .seed = in.seed ^ 0x5eed,
                    .rank = in.rank % world,
                    .world = world,
                    .timeout_s = 5};
  dl_loader *l = dl_loader_new(d, &opt);
  if (!l) abort();
  dl_state s = {.seed = in.seed,
                .epoch = in.epoch,
                .position = in.position,
                .dataset_len = in.dataset_len,
                .shuffle = in.state_shuffle & 1};
  if (dl_state_restore(l, &s) == EM_OK) {
    dl_batch b;
    for (int k = 0; k < 3 && dl_next(l, &b); k++) {
      if ((b.epoch != s.epoch && b.epoch - 1 != s.epoch) || b.size < 1 || b.size > opt.batch) abort();
      for (int64_t i = 0; i < b.size; i++)
        if (b.indices[i] < 0 || b.indices[i] >= n) abort();
    }
    if (dl_status(l) != EM_OK) abort(); /* an in-memory dataset cannot fail */
    (void)dl_state_save(l);
  }
  dl_loader_free(l);
  dl_dataset_close(d);
  return 0;
}
