/* dl.h: the data loader. Each rank reads its own shard of a dataset; worker threads decode,
 * transform and batch samples ahead of the training step.
 *
 *   dataset      IDX files, token shards, in-memory arrays, or user callbacks:
 *      |         len() and get(i) -> one sample's fields ("x", "y", ...)
 *   sampler      epoch e's order: a permutation seeded by seed + e (or 0..N-1 without shuffle);
 *      |         rank r of W takes positions r, r+W, r+2W, ... of it, padded by wrap-around so
 *      |         that every rank yields the same number of batches (or drop_last, or exact)
 *   workers      pthreads fill batches j, j+1, ... up to `prefetch` ahead of the consumer:
 *      |         get -> per-sample transform (RNG seeded by seed, epoch, index) -> stack -> collate
 *   dl_next      batches in order, identical whatever the number of workers
 *
 * Padding (DistributedSampler semantics): with M samples left in the epoch and W ranks, each rank
 * gets ceil(M / W) samples; the positions past M wrap around to the start of the epoch's order.
 * drop_last instead gives floor(M / W) samples per rank and drops a last short batch. exact (for
 * evaluation) gives every sample to exactly one rank and no padding: ranks then differ by at most
 * one sample, and batch.real counts what each rank holds, so metrics sum exactly.
 *
 * Position and resume: "position" counts the samples of the epoch's order consumed by all ranks
 * together (batches are taken in lockstep, so every rank agrees on it). dl_state_save captures
 * (seed, epoch, position); dl_state_restore into a loader with the same or a different number of
 * ranks continues with the epoch's remaining samples, re-sharded over the new ranks: none lost,
 * none repeated (padding aside). The epoch advances by itself when it ends.
 *
 * Threads: a dataset's get() and the hooks run on worker threads, several at once. */
#ifndef EMBER_DL_H
#define EMBER_DL_H

#include <stdbool.h>
#include <stdint.h>

#include "em_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DL_MAX_FIELDS 4

/* ---- datasets ---------------------------------------------------------------------------- */

/* One field of a sample: its name, dtype and per-sample shape (ndim 0 for a scalar label). */
typedef struct {
  char name[16];
  em_dtype dtype;
  int ndim;
  int64_t shape[EM_MAX_DIMS - 1];
} dl_field;

/* Bytes of one sample of field f. */
size_t dl_field_bytes(const dl_field *f);

/* A dataset's callbacks. ctx is the dataset's own state. */
typedef struct {
  int64_t (*len)(void *ctx);
  /* Write sample `index` (0 <= index < len) into out[f], field f's per-sample buffer of
   * dl_field_bytes(&fields[f]) bytes. Runs on worker threads, several at once: must be
   * thread-safe. Returns EM_OK, or a status with em_set_error naming the sample and the cause. */
  em_status (*get)(void *ctx, int64_t index, void *const out[]);
  void (*close)(void *ctx); /* may be NULL */
} dl_dataset_fns;

typedef struct dl_dataset dl_dataset;

/* A dataset from callbacks (user datasets; the built-in ones are made the same way). Copies fields
 * and fns. Takes ownership of ctx: dl_dataset_close calls fns->close(ctx), and so does this
 * function when it fails (NULL with em_last_error). */
dl_dataset *dl_dataset_new(const dl_field *fields, int nfields, const dl_dataset_fns *fns,
                           void *ctx);
void dl_dataset_close(dl_dataset *d); /* NULL is fine */
int64_t dl_dataset_len(const dl_dataset *d);
int dl_dataset_nfields(const dl_dataset *d);
const dl_field *dl_dataset_field(const dl_dataset *d, int f); /* NULL if f is out of range */
/* Sample `index` into out[f] (as fns->get), with the index checked against the length. */
em_status dl_dataset_get(dl_dataset *d, int64_t index, void *const out[]);

/* IDX image/label files (MNIST, Fashion-MNIST), .gz or plain, read whole at open and checked
 * (magic, dims, sizes; errors name the file and byte offset). Fields: "x" the image, f32 scaled
 * to [0, 1] (or u8 0..255), flat (H*W) or (1, H, W); "y" the label, i64 scalar. labels may be
 * NULL: then only "x". */
typedef struct {
  bool u8;           /* images as raw u8 instead of f32 / 255 */
  bool keep_dims;    /* images (1, H, W) for convolutions instead of flat (H*W) */
  int classes;       /* > 0: every label must be below it, checked at open (the error names the
                        file, item and byte offset); 0: unchecked (dl_fmnist_open: 10) */
  int height, width; /* both > 0: every image must be height x width; 0: any size
                        (dl_fmnist_open: 28 x 28) */
} dl_idx_options;
dl_dataset *dl_idx_open(const char *images, const char *labels);
dl_dataset *dl_idx_open_ex(const char *images, const char *labels, const dl_idx_options *opt);
/* DIR/{split}-images-idx3-ubyte.gz and DIR/{split}-labels-idx1-ubyte.gz, split "train" or
 * "t10k" (dir NULL: dl_fmnist_dir()). opt may be NULL; its classes, height and width, when 0,
 * are Fashion-MNIST's here: 10 classes of 28 x 28 images. */
dl_dataset *dl_fmnist_open(const char *dir, const char *split, const dl_idx_options *opt);

/* Token shards in llm.c's format: a 1024-byte header of 256 little-endian int32 ([0] magic
 * 20240520, [1] version 1, [2] number of tokens), then that many little-endian uint16 tokens.
 * pattern is a glob (files taken in sorted order), memory mapped. Sample i is a window of T+1
 * tokens starting at token i*T of its shard (windows do not cross shards): one field "tokens",
 * (T+1) i64; a model's inputs are [0, T) and its targets [1, T+1). */
dl_dataset *dl_tokens_open(const char *pattern, int64_t T);
/* Writes a shard in that format, atomically (em_file.h: a temporary, fsync, rename, directory
 * fsync); errors name the path. */
em_status dl_tokens_write(const char *path, const uint16_t *tokens, int64_t n);

/* Byte-level text: the files pattern names (a glob, sorted bytewise; a file reached twice, as
 * through a link, counts once; only regular files) concatenated, each byte a token 0..255. The
 * split [from, to) (fractions of the concatenation: 0, 0.9 for training and 0.9, 1 for
 * validation, say) is read into memory; sample i is its window of T+1 bytes starting at byte
 * i*T, as dl_tokens_open's: one field "tokens", (T+1) i64. unigram_bits (may be NULL) receives
 * the split's unigram entropy in bits per byte, -sum p(b) log2 p(b) over its byte frequencies:
 * the loss of the best model that ignores context. Errors name the file or the split. */
dl_dataset *dl_text_open(const char *pattern, int64_t T, double from, double to,
                         double *unigram_bits);

/* In-memory arrays: field f's sample i is arrays[f][i] (dim 0 counts samples and must agree).
 * names may be NULL ("x", "y", "f2", "f3"). The tensors are retained (released at close); they
 * must be contiguous CPU tensors and must not be changed while a loader reads them. */
dl_dataset *dl_memory_new(em_tensor *const *arrays, const char *const *names, int n);

/* ---- loader -------------------------------------------------------------------------------- */

typedef struct dl_loader dl_loader;

/* A batch from dl_next. The tensors and indices belong to the loader and stay valid until the
 * next dl_next, dl_set_epoch, dl_state_restore or dl_loader_free; em_retain a tensor to keep it. */
typedef struct {
  em_tensor *x, *y;                 /* fields[0], fields[1] (NULL if absent) */
  em_tensor *fields[DL_MAX_FIELDS]; /* (size, per-sample shape...) each, unless collate changed it */
  int nfields;
  int64_t size;           /* samples in the batch (the last one may be short unless drop_last) */
  int64_t real;           /* of which real, not padding duplicates (padding comes last) */
  int64_t step;           /* batch number within the epoch on this rank, from 0 */
  int64_t epoch;          /* epoch the batch belongs to */
  const int64_t *indices; /* (size) dataset indices of the samples */
} dl_batch;

/* Per-sample transform, in place on the sample's field buffers (as dl_dataset_fns.get writes
 * them). rng is seeded from (loader seed, epoch, dataset index), so the result does not depend on
 * the number of workers. Runs on worker threads. */
typedef em_status (*dl_transform_fn)(void *ctx, void *const fields[], const dl_field *spec,
                                     int nfields, em_rng *rng, int64_t index);
/* Collate: called on a worker thread with the stacked batch (b->fields, b->size, b->indices set);
 * may replace, release or add tensors in b->fields (up to DL_MAX_FIELDS, setting b->nfields).
 * Tensors it creates must not be in a scope (it runs outside any). */
typedef em_status (*dl_collate_fn)(void *ctx, dl_batch *b);

typedef struct {
  int64_t batch;  /* samples per batch on each rank (required, >= 1) */
  bool shuffle;   /* a new permutation every epoch, seeded by seed + epoch */
  bool drop_last; /* floor instead of ceil per rank, and no short last batch */
  bool exact;     /* evaluation: each sample on exactly one rank, no padding (not with drop_last;
                   * ranks may end at different batches, so save state from training loaders) */
  int workers;    /* worker threads; 0 loads on the caller's thread inside dl_next */
  int prefetch;   /* batches in flight ahead of the consumer; 0: 2 per worker, at least 8 */
  uint64_t seed;
  bool pin_memory;    /* page-locked host batches when a CUDA device is present */
  em_device device;   /* where batches go; only the CPU until CUDA tensors exist */
  int rank, world;    /* world 0 (default): ddp_rank() and ddp_world_size() */
  double timeout_s;   /* longest wait for a batch; 0: $EMBER_DL_TIMEOUT or 600 s */
  dl_transform_fn transform;
  void *transform_ctx;
  dl_collate_fn collate;
  void *collate_ctx;
} dl_options;

/* A loader over d (borrowed: d must outlive the loader). Starts at epoch 0, position 0. Returns
 * NULL with em_last_error on bad options. */
dl_loader *dl_loader_new(dl_dataset *d, const dl_options *opt);
/* Stops and joins the workers at any point; NULL is fine. */
void dl_loader_free(dl_loader *l);

/* The next batch of the current epoch: true and *b filled, or false at the end of the epoch (the
 * next call starts the next epoch) or on an error. After an error every call returns false and
 * dl_status says what went wrong: check it after the loop. */
bool dl_next(dl_loader *l, dl_batch *b);
em_status dl_status(const dl_loader *l);

/* The epoch that dl_next reads from (advanced when an epoch ends). */
int64_t dl_epoch(const dl_loader *l);
/* Start epoch `epoch` from its beginning (drops batches in flight). */
em_status dl_set_epoch(dl_loader *l, int64_t epoch);
/* Batches and samples this rank yields in the current epoch (from the current start position;
 * with drop_last, what the kept batches hold), and real (non-padding) samples among them. */
int64_t dl_len(const dl_loader *l);
int64_t dl_samples(const dl_loader *l);
int64_t dl_real_samples(const dl_loader *l);

/* Where the loader stands: what dl_state_restore needs to continue on exactly the next sample. */
typedef struct {
  uint64_t seed;
  int64_t epoch;
  int64_t position;    /* samples of the epoch's order consumed by all ranks together */
  int64_t dataset_len; /* checked on restore */
  bool shuffle;        /* checked on restore */
} dl_state;

dl_state dl_state_save(const dl_loader *l);
/* Continue from s (possibly saved with another world size): the rest of epoch s->epoch from
 * s->position, re-sharded over this loader's ranks. Errors if the dataset length or shuffle
 * differ. */
em_status dl_state_restore(dl_loader *l, const dl_state *s);

/* The per-sample RNG seed behind the transform hook's rng (exposed for tests). */
uint64_t dl_sample_seed(uint64_t seed, int64_t epoch, int64_t index);

#ifdef __cplusplus
}
#endif
#endif
