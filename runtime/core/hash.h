/* core/hash.h: private to libember. The one 64-bit FNV-1a, for hash tables (the oneDNN primitive
 * cache), fingerprints compared across ranks (ddp_wrap's model and bucket plan) and the config
 * hash stored in checkpoints: changing it would make every stored config hash mismatch.
 *
 *   uint64_t h = em__fnv1a(EM__FNV_OFFSET, &a, sizeof a);   // chain pieces: the hash of the
 *   h = em__fnv1a(h, s, strlen(s));                          // bytes of a, then those of s */
#ifndef EMBER_CORE_HASH_H
#define EMBER_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define EM__FNV_OFFSET 1469598103934665603ull

/* h folded with the n bytes at p, in order. */
static inline uint64_t em__fnv1a(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

#endif
