/* em_file.h: files replaced atomically. Whatever happens during a write (an error, a full disk, a
 * kill, a crash), the destination holds either its old content or the whole new one, never a mix.
 * Checkpoints, their "latest" pointer and token shards are written this way.
 *
 *   em_atomic_file *f = em_atomic_file_open(path);  // a new temporary next to path
 *   em_atomic_file_write(f, p, n); ...              // appended to the temporary
 *   em_atomic_file_commit(f);                       // fsync, close, rename over path, fsync dir
 *   em_atomic_file_abort(f);                        // or: close and unlink the temporary
 *
 * The temporary is "<path>.tmp.<pid>.<n>" (n counts this process's temporaries), in the same
 * directory so that the rename stays in one file system. A process killed before its commit leaves
 * it behind; nothing reads such files, and em_ckpt_save_dir removes its own once their process is
 * gone. Errors name the path (and the temporary) with the system's message. */
#ifndef EMBER_EM_FILE_H
#define EMBER_EM_FILE_H

#include <stddef.h>

#include "em_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct em_atomic_file em_atomic_file;

/* Creates a fresh temporary for path (mode 0644 less the umask). NULL with the error set (naming
 * path, the temporary and the reason) when it cannot be created. The handle is the caller's until
 * em_atomic_file_commit or em_atomic_file_abort, one of which must follow. */
em_atomic_file *em_atomic_file_open(const char *path);
/* Appends all n bytes of p to the temporary, retrying short writes. On an error (a full disk
 * reports ENOSPC or EFBIG) the message gives the byte offset reached; path is unchanged and the
 * caller ends with em_atomic_file_abort. */
em_status em_atomic_file_write(em_atomic_file *f, const void *p, size_t n);
/* fsyncs and closes the temporary, renames it over path and fsyncs path's directory, so that both
 * the content and the rename survive a crash. Frees f whatever the outcome. An error before the
 * rename unlinks the temporary and leaves path as it was; only a failed directory fsync comes
 * after the rename (the new content is then in place but may not survive a crash). */
em_status em_atomic_file_commit(em_atomic_file *f);
/* Closes and unlinks the temporary and frees f; path is unchanged. NULL is a no-op. */
void em_atomic_file_abort(em_atomic_file *f);

#ifdef __cplusplus
}
#endif
#endif
