/* loader_state.h: fuzz_loader_state's input layout, shared with the seed writer (seeds.c). */
#ifndef EMBER_FUZZ_LOADER_STATE_H
#define EMBER_FUZZ_LOADER_STATE_H

#include <stdint.h>

/* A loader (dataset length 1 + len % 200, batch 1 + batch % 16, world 1 + world % 4, rank %
 * world, flags bit 0 shuffle, bit 1 drop_last) and a dl_state's fields as a checkpoint holds
 * them. */
typedef struct {
  uint8_t len, batch, world, rank, flags;
  uint64_t seed;
  int64_t epoch, position, dataset_len;
  uint8_t state_shuffle;
} __attribute__((packed)) fz_loader_input;

#endif
