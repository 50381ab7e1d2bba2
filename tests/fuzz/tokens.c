/* fuzz_tokens: a token shard (llm.c's format: 1024-byte header of int32 magic, version, count,
 * then uint16 tokens) opened by dl_tokens_open, memory mapped. The first input byte gives the
 * window T (1..64); the rest is the shard. An opened dataset must serve its first and last
 * windows from inside the mapping. */
#include <stdlib.h>

#include "dl.h"
#include "fuzzutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > (1u << 20)) return 0;
  int64_t T = 1 + data[0] % 64;
  const char *path = fz_write(0, "shard_000000.bin", data + 1, size - 1);
  dl_dataset *d = dl_tokens_open(path, T);
  if (!d) return 0;
  int64_t *win = malloc((size_t)(T + 1) * sizeof *win);
  if (!win) abort();
  int64_t n = dl_dataset_len(d);
  if (n < 1) abort(); /* dl_tokens_open refuses a shard without a window */
  if (dl_dataset_get(d, 0, (void *const[]){win}) != EM_OK ||
      dl_dataset_get(d, n - 1, (void *const[]){win}) != EM_OK)
    abort();
  for (int64_t i = 0; i <= T; i++)
    if (win[i] < 0 || win[i] > 65535) abort(); /* uint16 tokens */
  free(win);
  dl_dataset_close(d);
  return 0;
}
