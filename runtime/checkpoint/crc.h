/* checkpoint/crc.h: the payload checksums of Ember's checkpoints (internal to checkpoint/).
 *
 * Writers store, in the safetensors "__metadata__" (string values, so any safetensors reader still
 * reads the file):
 *
 *   "crc32.<tensor name>"  CRC-32 (zlib's) of that tensor's data bytes, 8 lowercase hex digits
 *   "crc32.__header__"     CRC-32 of the header's canonical text (below), 8 hex digits
 *
 * The canonical text covers what a flipped byte in the JSON could change without breaking it: the
 * other metadata and every tensor's name, dtype, shape and offsets. It is independent of the JSON
 * key order and spacing (another tool may reorder the header): sorted by name (bytewise),
 *
 *   for each metadata key k not starting with "crc32.":  "m" k NUL v NUL
 *   for each tensor:  "t" name NUL dtype NUL d0 "," d1 "," ... NUL begin "," end NUL
 *
 * with numbers in decimal. examples/python/ember/checkpoint.py computes the same text. A file
 * without any "crc32." key (written before checksums existed, or by another tool) is read without
 * verification. */
#ifndef EMBER_CHECKPOINT_CRC_H
#define EMBER_CHECKPOINT_CRC_H

#include <stddef.h>
#include <stdint.h>

#define EM_CKPT_CRC_PREFIX "crc32."
#define EM_CKPT_CRC_HEADER "crc32.__header__"

/* One tensor's entry as the header lists it. */
typedef struct {
  const char *name, *dtype;
  int ndim;
  const int64_t *shape;
  int64_t begin, end;
} em__ckpt_entry;

/* crc updated with n bytes at p (zlib's crc32, in pieces that fit its length type). */
uint32_t em__ckpt_crc(uint32_t crc, const void *p, size_t n);
/* The CRC of the canonical header text of metadata keys[0..n_meta) = vals (keys starting with
 * "crc32." are skipped) and entries e[0..n). Returns 0 and sets *ok = false when out of memory. */
uint32_t em__ckpt_header_crc(int n_meta, const char *const *keys, const char *const *vals, int n,
                             const em__ckpt_entry *e, int *ok);
/* "%08x" of crc into buf (9 bytes). */
void em__ckpt_crc_str(uint32_t crc, char buf[9]);

#endif
