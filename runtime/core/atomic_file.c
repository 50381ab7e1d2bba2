/* core/atomic_file.c: files replaced atomically (em_file.h), and the directory fsync that makes a
 * rename durable (core/internal.h).
 *
 * The sequence, and what a crash at each point leaves at path:
 *
 *   open the temporary -> write ... -> fsync, close -> rename over path -> fsync the directory
 *   |<------------ the old file (and a stray temporary) ------------->|<------ the new file
 *
 * The fsync before the rename keeps a crash from exposing a renamed but empty file; the one of the
 * directory makes the rename itself durable. */
#include "core/internal.h"
#include "em_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct em_atomic_file {
  char *path, *tmp;
  int fd;
  int64_t off; /* bytes written so far, for messages */
};

int em__fsync_parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir = slash == path ? strdup("/")
              : slash       ? strndup(path, (size_t)(slash - path))
                            : strdup(".");
  if (!dir) return ENOMEM;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;
  if (fd < 0 || fsync(fd) != 0) err = errno;
  if (fd >= 0) close(fd);
  free(dir);
  return err;
}

/* Frees f and its names (the file is closed and the temporary dealt with by the caller). */
static void free_handle(em_atomic_file *f) {
  free(f->path);
  free(f->tmp);
  free(f);
}

em_atomic_file *em_atomic_file_open(const char *path) {
  static unsigned counter; /* process-wide, atomic: temporaries of concurrent writers differ */
  if (!path || !path[0]) {
    em_set_error(EM_ERR_INVALID, "atomic_file_open: %s", path ? "empty path" : "path is NULL");
    return NULL;
  }
  em_atomic_file *f = calloc(1, sizeof *f);
  size_t cap = strlen(path) + 48;
  if (f) f->path = strdup(path);
  if (f) f->tmp = malloc(cap);
  if (!f || !f->path || !f->tmp) {
    if (f) free_handle(f);
    em_set_error(EM_ERR_NOMEM, "%s: out of memory", path);
    return NULL;
  }
  /* O_EXCL: never write into a file someone else may be writing. A name can only exist already
   * when left by a dead process that had our pid; the next number is then free. */
  do {
    unsigned n = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
    snprintf(f->tmp, cap, "%s.tmp.%ld.%u", path, (long)getpid(), n);
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  } while (f->fd < 0 && errno == EEXIST);
  if (f->fd < 0) {
    em_set_error(EM_ERR_IO, "%s: cannot create the temporary file %s: %s", path, f->tmp,
                 strerror(errno));
    free_handle(f);
    return NULL;
  }
  return f;
}

em_status em_atomic_file_write(em_atomic_file *f, const void *p, size_t n) {
  if (!f || (n > 0 && !p))
    return em_set_error(EM_ERR_INVALID, "atomic_file_write: %s is NULL", f ? "the data" : "file");
  const char *s = p;
  while (n > 0) {
    ssize_t w = write(f->fd, s, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = w == 0 ? EIO : errno; /* write() returning 0 for n > 0: no progress possible */
      return em_set_error(EM_ERR_IO,
                          "%s: writing the temporary file %s failed at byte offset %lld: %s (%s "
                          "is unchanged)",
                          f->path, f->tmp, (long long)f->off, strerror(err), f->path);
    }
    s += w;
    n -= (size_t)w;
    f->off += w;
  }
  return EM_OK;
}

em_status em_atomic_file_commit(em_atomic_file *f) {
  if (!f) return em_set_error(EM_ERR_INVALID, "atomic_file_commit: file is NULL");
  em_status st = EM_OK;
  bool tmp_exists = true;
  if (fsync(f->fd) != 0) {
    st = em_set_error(EM_ERR_IO, "%s: fsync of the temporary file %s failed: %s", f->path, f->tmp,
                      strerror(errno));
    goto cleanup;
  }
  int rc = close(f->fd);
  f->fd = -1;
  if (rc != 0) {
    st = em_set_error(EM_ERR_IO, "%s: closing the temporary file %s failed: %s", f->path, f->tmp,
                      strerror(errno));
    goto cleanup;
  }
  if (rename(f->tmp, f->path) != 0) {
    st = em_set_error(EM_ERR_IO, "%s: renaming %s over it failed: %s", f->path, f->tmp,
                      strerror(errno));
    goto cleanup;
  }
  tmp_exists = false;
  int err = em__fsync_parent_dir(f->path);
  if (err)
    st = em_set_error(EM_ERR_IO, "%s: written and renamed, but fsync of its directory failed: %s",
                      f->path, strerror(err));
cleanup:
  if (f->fd >= 0) close(f->fd);
  if (tmp_exists) unlink(f->tmp);
  free_handle(f);
  return st;
}

void em_atomic_file_abort(em_atomic_file *f) {
  if (!f) return;
  close(f->fd);
  unlink(f->tmp);
  free_handle(f);
}
