/* checkpoint/dir.c: checkpoint directories (em_checkpoint.h): em_ckpt_save_dir,
 * em_ckpt_check_dir, em_ckpt_latest, em_ckpt_read_latest. Files are written and read through the
 * public API (checkpoint/write.c, checkpoint/read.c).
 *
 *   DIR/ckpt-00000020.safetensors   one file per saved step (8 digits or more)
 *   DIR/latest                      "ckpt-00000020.safetensors\n": the newest verified save
 *
 * A save writes the file, reads it back (em_ckpt_verify), then points latest at it (an atomic
 * file, em_file.h) and only then prunes older steps beyond keep_last; temporaries left by a
 * killed save are removed by the next one. Reading falls back from latest to older files,
 * newest first, past damaged ones. docs/checkpoints.md walks through why a kill at any moment
 * leaves a whole checkpoint. */
#define _GNU_SOURCE /* strdup */
#include "core/internal.h"
#include "em_checkpoint.h"
#include "em_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* em_ckpt_check_dir's test file (its temporary, rather: it is never renamed). */
#define PROBE_NAME ".ember-write-test"

/* dir + "/" + name (no doubled slash), malloc'd. */
static char *path_join(const char *dir, const char *name) {
  size_t nd = strlen(dir);
  bool slash = nd > 0 && dir[nd - 1] == '/';
  char *s = malloc(nd + strlen(name) + 2);
  if (!s) return NULL;
  sprintf(s, "%s%s%s", dir, slash ? "" : "/", name);
  return s;
}

/* latest's one line, written atomically: on any failure it is left as it was. */
static em_status write_latest(const char *path, const char *line) {
  em_atomic_file *f = em_atomic_file_open(path);
  if (!f) return em_last_status();
  em_status st = em_atomic_file_write(f, line, strlen(line));
  if (st != EM_OK) {
    em_atomic_file_abort(f);
    return st;
  }
  return em_atomic_file_commit(f);
}

/* mkdir -p: create dir and its missing parents (fsyncing the parent of each one made). */
static em_status make_dirs(const char *dir) {
  em_status st = EM_OK;
  char *p = strdup(dir);
  if (!p) return em_set_error(EM_ERR_NOMEM, "%s: out of memory", dir);
  size_t n = strlen(p);
  for (size_t i = 1; i <= n; i++) {
    if (p[i] != '/' && p[i] != '\0') continue;
    if (p[i - 1] == '/') continue; /* "a//b" */
    char saved = p[i];
    p[i] = '\0';
    if (mkdir(p, 0755) == 0) {
      em__fsync_parent_dir(p); /* best effort: the checkpoint's own fsyncs follow */
    } else if (errno != EEXIST) {
      st = em_set_error(EM_ERR_IO, "%s: cannot create directory %s: %s", dir, p, strerror(errno));
      goto cleanup;
    }
    p[i] = saved;
  }
  struct stat sb;
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    st = em_set_error(EM_ERR_IO, "%s: exists and is not a directory", dir);
    goto cleanup;
  }
cleanup:
  free(p);
  return st;
}

/* Writes dir's checkpoint file name for step into buf (64 bytes). */
static void ckpt_file_name(char *buf, int64_t step) {
  snprintf(buf, 64, "ckpt-%08lld.safetensors", (long long)step);
}

/* The step of a file named exactly as ckpt_file_name makes it, or -1 for any other name
 * (temporaries, other spellings of the number). */
static int64_t ckpt_file_step(const char *name) {
  if (strncmp(name, "ckpt-", 5) || name[5] < '0' || name[5] > '9') return -1;
  char *end, canon[64];
  errno = 0;
  long long step = strtoll(name + 5, &end, 10);
  if (errno || strcmp(end, ".safetensors")) return -1;
  ckpt_file_name(canon, step);
  return strcmp(canon, name) ? -1 : step;
}

static int step_desc(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x < y) - (x > y);
}

/* A save killed before its rename leaves its temporary "<name>.tmp.<pid>.<n>" behind (possibly
 * hundreds of MB; em_file.h). Removes such a file in dir, or one named "<name>.tmp.<pid>" as
 * earlier versions made them, when process pid no longer exists on this host: best effort. The
 * names are a checkpoint's, latest's and em_ckpt_check_dir's probe's (a job killed while it
 * wrote the pointer or checked the directory). */
static void remove_stale_temporary(const char *dir, const char *name) {
  const char *t = strstr(name, ".tmp.");
  if (!t) return;
  size_t base = (size_t)(t - name);
  bool ours = !strncmp(name, "ckpt-", 5) ||
              (base == strlen("latest") && !strncmp(name, "latest", base)) ||
              (base == strlen(PROBE_NAME) && !strncmp(name, PROBE_NAME, base));
  if (!ours) return;
  char *end;
  errno = 0;
  long pid = strtol(t + 5, &end, 10);
  if (*end == '.') { /* ".<n>" */
    size_t digits = strspn(end + 1, "0123456789");
    if (digits > 0 && end[1 + digits] == '\0') end += 1 + digits;
  }
  if (errno || *end || pid <= 0 || pid == (long)getpid()) return;
  if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) return; /* alive, or not ours to judge */
  char *path = path_join(dir, name);
  if (path) unlink(path);
  free(path);
}

/* The steps s < below of dir's ckpt-<s>.safetensors files, newest first, into *steps (malloc'd,
 * *n of them; a missing dir has none). tidy: also remove stale temporaries on the way. */
static em_status list_steps(const char *dir, int64_t below, bool tidy, int64_t **steps, int *n) {
  em_status st = EM_OK;
  int cap = 0;
  *steps = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d && !tidy && (errno == ENOENT || errno == ENOTDIR)) return EM_OK;
  if (!d) return em_set_error(EM_ERR_IO, "%s: cannot list the directory: %s", dir, strerror(errno));
  for (struct dirent *e; (e = readdir(d));) {
    if (tidy) remove_stale_temporary(dir, e->d_name);
    int64_t s = ckpt_file_step(e->d_name);
    if (s < 0 || s >= below) continue;
    if (*n == cap) {
      int64_t *ns = realloc(*steps, (size_t)(cap = cap ? cap * 2 : 16) * sizeof *ns);
      if (!ns) {
        st = em_set_error(EM_ERR_NOMEM, "%s: out of memory listing checkpoints", dir);
        break;
      }
      *steps = ns;
    }
    (*steps)[(*n)++] = s;
  }
  closedir(d);
  if (st != EM_OK) {
    free(*steps);
    *steps = NULL;
    *n = 0;
  } else if (*n > 1) {
    qsort(*steps, (size_t)*n, sizeof **steps, step_desc);
  }
  return st;
}

/* Remove ckpt-<s>.safetensors for steps s < step beyond the newest keep_last - 1 of them (the one
 * for step itself is the keep_last-th, written and verified before this runs). Files of later
 * steps are left alone. */
static em_status prune(const char *dir, int64_t step, int keep_last) {
  int64_t *steps;
  int n;
  em_status st = list_steps(dir, step, true, &steps, &n);
  for (int i = keep_last - 1; st == EM_OK && i < n; i++) {
    char name[64];
    ckpt_file_name(name, steps[i]);
    char *path = path_join(dir, name);
    if (path && unlink(path) != 0 && errno != ENOENT)
      st = em_set_error(EM_ERR_IO,
                        "%s: the checkpoint was saved, but removing the old %s "
                        "failed: %s",
                        dir, path, strerror(errno));
    free(path);
  }
  free(steps);
  return st;
}

em_status em_ckpt_check_dir(const char *dir) {
  if (!dir || !dir[0]) return em_set_error(EM_ERR_INVALID, "ckpt_check_dir: no directory given");
  em_status st = make_dirs(dir);
  char *probe = st == EM_OK ? path_join(dir, PROBE_NAME) : NULL;
  if (st == EM_OK && !probe) st = em_set_error(EM_ERR_NOMEM, "%s: out of memory", dir);
  em_atomic_file *f = probe ? em_atomic_file_open(probe) : NULL; /* its temporary, in dir */
  if (probe && !f) st = em_last_status();
  if (f) st = em_atomic_file_write(f, "ember\n", 6);
  em_atomic_file_abort(f); /* removes the temporary */
  free(probe);
  return st;
}

em_status em_ckpt_save_dir(const em_ckpt *c, const char *dir, int64_t step, int keep_last) {
  if (!c || !dir || !dir[0])
    return em_set_error(EM_ERR_INVALID, "ckpt_save_dir: %s",
                        !c ? "checkpoint is NULL" : "no directory given");
  if (step < 0 || keep_last < 1)
    return em_set_error(EM_ERR_INVALID, "ckpt_save_dir %s: %s (step %lld, keep_last %d)", dir,
                        step < 0 ? "step must be >= 0" : "keep_last must be >= 1", (long long)step,
                        keep_last);
  em_status st;
  char name[64], line[72];
  char *path = NULL, *latest = NULL;
  ckpt_file_name(name, step);
  snprintf(line, sizeof line, "%s\n", name);
  if ((st = make_dirs(dir)) != EM_OK) goto cleanup;
  path = path_join(dir, name);
  latest = path_join(dir, "latest");
  if (!path || !latest) {
    st = em_set_error(EM_ERR_NOMEM, "%s: out of memory", dir);
    goto cleanup;
  }
  if ((st = em_ckpt_write(c, path)) != EM_OK) goto cleanup;
  /* Read it back before latest names it and before any older one is removed: a file that does not
   * verify (a storage error the writes did not report) must cost nothing that was good. */
  if ((st = em_ckpt_verify(path, NULL)) != EM_OK) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", em_last_error()); /* not in place: the same buffer */
    unlink(path);
    st = em_set_error(st,
                      "%s: the checkpoint just written does not read back (removed; latest "
                      "and older checkpoints unchanged): %s",
                      dir, msg);
    goto cleanup;
  }
  if ((st = write_latest(latest, line)) != EM_OK) goto cleanup;
  st = prune(dir, step, keep_last);
cleanup:
  free(latest);
  free(path);
  return st;
}

char *em_ckpt_latest(const char *dir, em_status *st) {
  em_status dummy;
  if (!st) st = &dummy;
  *st = EM_OK;
  if (!dir) {
    *st = em_set_error(EM_ERR_INVALID, "ckpt_latest: directory is NULL");
    return NULL;
  }
  char buf[512], *lp = path_join(dir, "latest"), *full = NULL;
  int fd = -1;
  size_t len = 0;
  if (!lp) {
    *st = em_set_error(EM_ERR_NOMEM, "ckpt_latest %s: out of memory", dir);
    goto cleanup;
  }
  fd = open(lp, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT && errno != ENOTDIR)
      *st = em_set_error(EM_ERR_IO, "%s: cannot open: %s", lp, strerror(errno));
    goto cleanup; /* no directory or no pointer: no checkpoint yet */
  }
  while (len < sizeof buf) {
    ssize_t r = read(fd, buf + len, sizeof buf - len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      *st = em_set_error(EM_ERR_IO, "%s: read error: %s", lp, strerror(errno));
      goto cleanup;
    }
    if (r == 0) break;
    len += (size_t)r;
  }
  bool ok = len > 1 && len < sizeof buf && buf[len - 1] == '\n';
  if (ok) buf[--len] = '\0';
  for (size_t i = 0; ok && i < len; i++)
    if (buf[i] == '/' || (unsigned char)buf[i] < 0x20) ok = false;
  if (!ok || !strcmp(buf, ".") || !strcmp(buf, "..")) {
    *st = em_set_error(EM_ERR_FORMAT,
                       "%s: expected a checkpoint file name and a newline (%zu "
                       "bytes read)",
                       lp, len);
    goto cleanup;
  }
  full = path_join(dir, buf);
  struct stat sb;
  if (!full) {
    *st = em_set_error(EM_ERR_NOMEM, "ckpt_latest %s: out of memory", dir);
  } else if (stat(full, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    *st = em_set_error(EM_ERR_IO, "%s names '%s', but %s is not a readable file", lp, buf, full);
    free(full);
    full = NULL;
  }
cleanup:
  if (fd >= 0) close(fd);
  free(lp);
  return full;
}

/* Tells on_skip that path was passed over, and why (the last error). */
static void skipped(em_ckpt_skip_fn on_skip, void *arg, const char *path) {
  if (on_skip) on_skip(path, em_last_error(), arg);
}

em_ckpt *em_ckpt_read_latest(const char *dir, char **path, em_status *st, em_ckpt_skip_fn on_skip,
                             void *arg) {
  em_status dummy;
  if (!st) st = &dummy;
  *path = NULL;
  if (!dir) {
    *st = em_set_error(EM_ERR_INVALID, "ckpt_read_latest: directory is NULL");
    return NULL;
  }
  em_ckpt *c = NULL;
  int64_t *steps = NULL, below = INT64_MAX;
  int n = 0, tried = 0;
  char first[1024] = ""; /* the newest failure, for the error when nothing reads */
  char *p = em_ckpt_latest(dir, st);
  if (p) {
    tried++;
    if ((c = em_ckpt_read(p))) {
      *path = p;
      return c;
    }
    snprintf(first, sizeof first, "%s", em_last_error());
    skipped(on_skip, arg, p);
    const char *base = strrchr(p, '/');
    int64_t s = ckpt_file_step(base ? base + 1 : p);
    if (s >= 0) below = s; /* an older one: not a later run's file latest never named */
    free(p);
  } else if (*st != EM_OK) { /* latest unreadable, or names a missing file */
    tried++;
    snprintf(first, sizeof first, "%s", em_last_error());
    char *lp = path_join(dir, "latest");
    skipped(on_skip, arg, lp ? lp : dir);
    free(lp);
  }
  if ((*st = list_steps(dir, below, false, &steps, &n)) != EM_OK) goto cleanup;
  if (n > 0 && tried == 0 && on_skip) { /* files, but no latest naming any of them */
    char *lp = path_join(dir, "latest");
    on_skip(lp ? lp : dir, "missing", arg);
    free(lp);
  }
  for (int i = 0; i < n && !c; i++) {
    char name[64];
    ckpt_file_name(name, steps[i]);
    if (!(p = path_join(dir, name))) {
      *st = em_set_error(EM_ERR_NOMEM, "ckpt_read_latest %s: out of memory", dir);
      goto cleanup;
    }
    tried++;
    if ((c = em_ckpt_read(p))) {
      *path = p;
      break;
    }
    if (!first[0]) snprintf(first, sizeof first, "%s", em_last_error());
    skipped(on_skip, arg, p);
    free(p);
  }
  if (c)
    *st = EM_OK;
  else if (tried > 0)
    *st = em_set_error(EM_ERR_FORMAT, "%s: no intact checkpoint (%d tried; the newest: %.800s)",
                       dir, tried, first);
  else
    *st = EM_OK; /* no checkpoint yet */
cleanup:
  free(steps);
  return c;
}
