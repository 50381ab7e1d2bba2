/* em_checkpoint.h: checkpoints as safetensors files, written atomically.
 *
 * File layout (https://huggingface.co/docs/safetensors; readable by other tools):
 *
 *   [8 bytes: N, little-endian u64] [N bytes: JSON header] [raw little-endian tensor data]
 *   header: {"__metadata__": {"key": "string value", ...},
 *            "model.0.weight": {"dtype": "F32", "shape": [256, 784], "data_offsets": [b, e]}, ...}
 *
 * offsets are relative to the end of the header. The data has no gaps (safetensors requires it:
 * its reference reader rejects holes), so instead of padding, tensors are grouped by element size,
 * largest first, in the order added within a group: each starts at a multiple of its element size
 * (the JSON header is padded with spaces to a multiple of 8). The header lists the tensors in the
 * order added. dtypes: F32, I64, I32, U8, BF16, F16. The JSON is built and parsed with cJSON.
 *
 * A checkpoint object is a set of named tensors plus string metadata. Helpers add a module's
 * parameters and buffers by dotted name (its state_dict keys) and an optimizer's state; loading
 * checks names, shapes and dtypes against the live objects and says exactly what differs.
 *
 * Writing is crash-safe (em_file.h): the file goes to a temporary "<path>.tmp.<pid>.<n>", is
 * fsynced, renamed over <path>, and the directory is fsynced. em_ckpt_save_dir also updates a
 * "latest" pointer file the same way, so a crash at any moment leaves the previous checkpoint
 * whole and "latest" pointing at a complete file. */
#ifndef EMBER_EM_CHECKPOINT_H
#define EMBER_EM_CHECKPOINT_H

#include <stdint.h>

#include "em_core.h"
#include "em_nn.h"
#include "em_optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct em_ckpt em_ckpt;

em_ckpt *em_ckpt_new(void);
void em_ckpt_free(em_ckpt *c); /* NULL is fine */

/* Adds tensor t under name. A contiguous CPU tensor is retained until em_ckpt_free and its data
 * copied at em_ckpt_write time; any other (on a GPU, or strided) is copied now into a contiguous
 * host tensor that the checkpoint owns. Duplicate names are an error. */
em_status em_ckpt_add(em_ckpt *c, const char *name, em_tensor *t);
/* Every parameter and buffer of m as prefix + its dotted name ("model." + "0.weight"). */
em_status em_ckpt_add_module(em_ckpt *c, const char *prefix, em_module *m);
/* The optimizer's state tensors (prefix + state name) and its step count and lr as metadata
 * (prefix + "step", prefix + "lr", prefix + "name"). */
em_status em_ckpt_add_optim(em_ckpt *c, const char *prefix, em_optim *o);
/* String metadata (copied); setting a key again replaces it. */
em_status em_ckpt_set_meta(em_ckpt *c, const char *key, const char *value);
em_status em_ckpt_set_meta_i64(em_ckpt *c, const char *key, int64_t value);
em_status em_ckpt_set_meta_u64(em_ckpt *c, const char *key, uint64_t value);

/* Writes c to path atomically (see the top). Errors name the path and the failed step. */
em_status em_ckpt_write(const em_ckpt *c, const char *path);
/* Writing stores a CRC-32 of each tensor's bytes and of the header's tensor table and metadata
 * in the metadata ("crc32.<name>", "crc32.__header__": see checkpoint/crc.h and
 * docs/checkpoints.md); those keys are reserved (em_ckpt_set_meta refuses them) and a read
 * checkpoint's metadata does not list them.
 *
 * Reads and validates a file: header length against the file size, JSON, every entry's dtype,
 * shape and offsets (in bounds, size = numel * dtype size, no overlap) and, when the file has
 * checksums, the header's and every tensor's (an error names the tensor, the expected and the
 * found CRC). NULL on error naming the path, the byte offset or tensor, and what was expected.
 * Caller frees. */
em_ckpt *em_ckpt_read(const char *path);
/* Checks path as em_ckpt_read does (the header, and every tensor's bytes against its checksum when
 * the file has checksums) without keeping the tensors: reads in 1 MiB pieces. EM_OK, or the
 * error em_ckpt_read would give. *has_checksums (may be NULL): whether the file has them (files
 * written before checksums existed, or by other tools, have none: only their header is checked).
 */
em_status em_ckpt_verify(const char *path, bool *has_checksums);

/* Lookups on a read (or built) checkpoint: borrowed, valid until em_ckpt_free; NULL if absent
 * (no error set: use em_ckpt_get_checked for an error naming the missing key). */
em_tensor *em_ckpt_get(const em_ckpt *c, const char *name);
const char *em_ckpt_meta(const em_ckpt *c, const char *key);
/* Metadata parsed as a number: EM_OK, or an error naming the key (missing or not a number). */
em_status em_ckpt_meta_i64(const em_ckpt *c, const char *key, int64_t *out);
em_status em_ckpt_meta_u64(const em_ckpt *c, const char *key, uint64_t *out);
int em_ckpt_count(const em_ckpt *c);
const char *em_ckpt_name_at(const em_ckpt *c, int i);

/* Copies prefix+name tensors into m's parameters and buffers, on whatever device they live. Every tensor of m must be present
 * with the same shape and dtype, and the checkpoint must hold no other prefix+ tensors; the error
 * lists what differs (missing, unexpected, shape (a) vs (b), dtype), nothing is changed then. */
em_status em_ckpt_load_module(const em_ckpt *c, const char *prefix, em_module *m);
/* Restores the optimizer's state tensors, step count and lr (checked as for modules; the
 * optimizer kind must match). */
em_status em_ckpt_load_optim(const em_ckpt *c, const char *prefix, em_optim *o);

/* Checkpoint directories: dir/ckpt-<step 8 digits>.safetensors written atomically and read back
 * (em_ckpt_verify: a file that does not verify is removed and is an error), then the pointer file
 * dir/latest (its content: that file name and a newline) replaced atomically, then older
 * checkpoints beyond the newest keep_last (>= 1) removed. Creates dir if needed. */
em_status em_ckpt_save_dir(const em_ckpt *c, const char *dir, int64_t step, int keep_last);
/* Creates dir (mkdir -p) and writes and removes a small temporary file in it: a directory that
 * cannot take a checkpoint is an error (naming it and why) before any training, not at the first
 * save. */
em_status em_ckpt_check_dir(const char *dir);
/* The path of dir's latest checkpoint (malloc'd, caller frees), or NULL: with EM_OK status in
 * *st when there is none (no dir, no latest), or an error when latest is unreadable or names a
 * missing file. */
char *em_ckpt_latest(const char *dir, em_status *st);
/* Told of each checkpoint em_ckpt_read_latest passes over: its path (or dir/latest) and why. */
typedef void (*em_ckpt_skip_fn)(const char *path, const char *why, void *arg);
/* Reads dir's newest intact checkpoint: the file latest names; when that one does not read
 * (truncated, corrupt, a checksum mismatch, missing) or latest itself is unusable or missing, the
 * newest ckpt-<step>.safetensors that reads, among those older than the one latest names (all of
 * them when latest names none). on_skip (may be NULL) hears of each file passed over, with arg.
 * *path = the file read (malloc'd, caller frees). NULL with EM_OK in *st when dir holds no
 * checkpoint (no dir, no latest, no file); NULL with an error naming dir, the count tried and the
 * newest failure when none reads. Nothing is removed or changed. */
em_ckpt *em_ckpt_read_latest(const char *dir, char **path, em_status *st, em_ckpt_skip_fn on_skip,
                             void *arg);

#ifdef __cplusplus
}
#endif
#endif
