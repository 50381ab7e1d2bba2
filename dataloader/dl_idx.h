/* dl_idx.h: reading IDX files (MNIST, Fashion-MNIST), gzip-compressed or plain.
 *
 * IDX layout: bytes 0-1 zero, byte 2 the element type (0x08 = u8), byte 3 the number of dims,
 * then one big-endian u32 per dim, then the elements in row-major order. */
#ifndef EMBER_DL_IDX_H
#define EMBER_DL_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "em_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int ndim;
  int64_t dims[4];
  uint8_t *data; /* owned; dims[0] * ... * dims[ndim-1] bytes */
  size_t size;
} dl_idx_array;

/* Reads a whole u8 IDX file (.gz through zlib, or plain). On error returns a status and the
 * message names the file, the byte offset and what was expected; *out is left empty. */
em_status dl_idx_read(const char *path, dl_idx_array *out);
void dl_idx_free(dl_idx_array *a);
/* Labels are class indices: every element of a (label file path, for the message) must be below
 * classes. The error names the file, the first bad item, its byte offset and value; a label out
 * of range would otherwise surface steps later as a loss error that names no file, or, in a test
 * set, silently count as a wrong answer. */
em_status dl_idx_check_labels(const dl_idx_array *a, const char *path, int classes);

/* (Fashion-)MNIST: 28 x 28 images, labels 0..9. */
#define DL_FMNIST_SIDE 28
#define DL_FMNIST_CLASSES 10

/* Fashion-MNIST in memory: images (N, 784) f32 scaled to [0, 1], labels (N) i64.
 * Reads DIR/{prefix}-images-idx3-ubyte.gz and DIR/{prefix}-labels-idx1-ubyte.gz (prefix "train" or
 * "t10k") and checks they agree, that the images are 28 x 28 and that every label is below 10.
 * Tensors are owned by the caller (created outside any scope). */
em_status dl_fmnist_load(const char *dir, const char *prefix, em_tensor **images,
                         em_tensor **labels);

/* Debian's dataset-fashion-mnist location, or $EMBER_FMNIST_DIR when set. */
const char *dl_fmnist_dir(void);

#ifdef __cplusplus
}
#endif
#endif
