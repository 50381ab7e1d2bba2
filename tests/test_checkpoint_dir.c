/* test_checkpoint_dir.c: checkpoint directories (em_ckpt_save_dir, em_ckpt_latest): keep_last,
 * the latest pointer and its errors, temporaries of dead writers; unwritable destinations and a
 * full disk (RLIMIT_FSIZE): an error naming the path, the old file intact and no temporary left
 * behind. */
#include "ckpt_test.h"

/* ---- checkpoint directories ------------------------------------------------------------- */
static em_ckpt *small_ckpt(int64_t step) {
  em_ckpt *c = em_ckpt_new();
  cr_assert_eq(em_ckpt_add(c, "w", tu_ramp(EM_SHAPE(3, 2), 1, (double)step)), EM_OK);
  cr_assert_eq(em_ckpt_set_meta_i64(c, "step", step), EM_OK);
  return c;
}

static void save(const char *dir, int64_t step, int keep) {
  em_ckpt *c = small_ckpt(step);
  cr_assert_eq(em_ckpt_save_dir(c, dir, step, keep), EM_OK, "%s", em_last_error());
  em_ckpt_free(c);
}

Test(checkpoint, save_dir_keeps_the_last_n_and_points_latest_at_the_newest) {
  TU_BEGIN;
  char *dir = tu_tmpdir("ckpt"), sub[512], buf[512], listing[1024];
  tu_path(sub, dir, "run/a/b"); /* created, parents included */
  em_status st = EM_ERR_IO;
  cr_assert_null(em_ckpt_latest(sub, &st));
  cr_assert_eq(st, EM_OK, "no directory yet: no checkpoint, no error");
  for (int64_t s = 10; s <= 40; s += 10) save(sub, s, 2);
  tu_list_dir(sub, listing, sizeof listing);
  cr_assert_str_eq(listing, "ckpt-00000030.safetensors ckpt-00000040.safetensors latest");
  size_t n;
  char *text = read_raw(tu_path(buf, sub, "latest"), &n);
  cr_assert(n == 26 && !memcmp(text, "ckpt-00000040.safetensors\n", n));
  free(text);
  char *latest = em_ckpt_latest(sub, &st);
  cr_assert_str_eq(latest, tu_path(buf, sub, "ckpt-00000040.safetensors"));
  em_ckpt *r = em_ckpt_read(latest);
  int64_t step;
  cr_assert(r && em_ckpt_meta_i64(r, "step", &step) == EM_OK && step == 40);
  em_ckpt *w = small_ckpt(40);
  cr_assert(same_bits(em_ckpt_get(r, "w"), em_ckpt_get(w, "w")));
  em_ckpt_free(w);
  em_ckpt_free(r);
  free(latest);
  /* keep_last 1 leaves only the new one; a step below the others (a restart from an older
   * checkpoint) becomes latest and removes nothing newer. */
  save(sub, 50, 1);
  tu_list_dir(sub, listing, sizeof listing);
  cr_assert_str_eq(listing, "ckpt-00000050.safetensors latest");
  save(sub, 7, 1);
  tu_list_dir(sub, listing, sizeof listing);
  cr_assert_str_eq(listing, "ckpt-00000007.safetensors ckpt-00000050.safetensors latest");
  latest = em_ckpt_latest(sub, NULL);
  cr_assert_str_eq(latest, tu_path(buf, sub, "ckpt-00000007.safetensors"));
  free(latest);

  /* Bad pointers: an error, never a path. */
  write_raw(tu_path(buf, sub, "latest"), "ckpt-00000099.safetensors\n", 26);
  cr_assert_null(em_ckpt_latest(sub, &st));
  cr_assert_eq(st, EM_ERR_IO);
  cr_assert(strstr(em_last_error(), "latest names 'ckpt-00000099.safetensors'"), "%s",
            em_last_error());
  write_raw(tu_path(buf, sub, "latest"), "../../x\n", 8);
  cr_assert_null(em_ckpt_latest(sub, &st));
  cr_assert_eq(st, EM_ERR_FORMAT);
  cr_assert(strstr(em_last_error(), "expected a checkpoint file name"), "%s", em_last_error());
  write_raw(tu_path(buf, sub, "latest"), "", 0);
  cr_assert_null(em_ckpt_latest(sub, &st));
  cr_assert_eq(st, EM_ERR_FORMAT);
  /* Argument errors. */
  em_ckpt *c = small_ckpt(1);
  cr_assert_eq(em_ckpt_save_dir(c, sub, 1, 0), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "keep_last must be >= 1"), "%s", em_last_error());
  cr_assert_eq(em_ckpt_save_dir(c, sub, -1, 2), EM_ERR_INVALID);
  em_ckpt_free(c);
  tu_rm_rf(dir);
  TU_END;
}

Test(checkpoint, save_dir_removes_temporaries_of_dead_processes) {
  TU_BEGIN;
  char *dir = tu_tmpdir("ckpt"), buf[512], name[128], listing[1024];
  pid_t dead = fork(); /* a pid that existed and is gone (reaped) */
  cr_assert_geq(dead, 0);
  if (dead == 0) _exit(0);
  cr_assert_eq(waitpid(dead, NULL, 0), dead);
  save(dir, 1, 5);
  snprintf(name, sizeof name, "ckpt-00000002.safetensors.tmp.%d", (int)dead); /* older name */
  write_raw(tu_path(buf, dir, name), "partial", 7);
  snprintf(name, sizeof name, "ckpt-00000002.safetensors.tmp.%d.3", (int)dead);
  write_raw(tu_path(buf, dir, name), "partial", 7);
  snprintf(name, sizeof name, "ckpt-00000002.safetensors.tmp.%d", (int)getppid());
  write_raw(tu_path(buf, dir, name), "alive", 5);      /* its writer may still be saving: kept */
  write_raw(tu_path(buf, dir, "notes.tmp.1"), "x", 1); /* not a checkpoint's: kept */
  char other[128];                                     /* latest's, the directory probe's */
  snprintf(other, sizeof other, "latest.tmp.%d.7", (int)dead);
  write_raw(tu_path(buf, dir, other), "ckpt-", 5);
  snprintf(other, sizeof other, ".ember-write-test.tmp.%d.0", (int)dead);
  write_raw(tu_path(buf, dir, other), "ember\n", 6);
  write_raw(tu_path(buf, dir, "latest.old.tmp.1"), "x", 1); /* another name: kept */
  save(dir, 3, 5);
  tu_list_dir(dir, listing, sizeof listing);
  char expect[1024];
  snprintf(expect, sizeof expect,
           "ckpt-00000001.safetensors %s ckpt-00000003.safetensors latest latest.old.tmp.1 "
           "notes.tmp.1",
           name);
  cr_assert_str_eq(listing, expect);
  tu_rm_rf(dir);
  TU_END;
}

/* ---- unwritable destinations and a full disk ------------------------------------------------ */
/* True if a file can be created in dir (root ignores permission bits). */
static bool can_create_in(const char *dir) {
  char p[512];
  snprintf(p, sizeof p, "%s/.probe.%ld", dir, (long)getpid());
  int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) return false;
  close(fd);
  unlink(p);
  return true;
}

Test(checkpoint, unwritable_destinations_are_errors_and_change_nothing) {
  TU_BEGIN;
  char *dir = tu_tmpdir("ckpt"), buf[512], before[1024], after[1024];
  em_ckpt *c = small_ckpt(1);
  /* A directory that does not exist. */
  tu_list_dir(dir, before, sizeof before);
  const char *p = tu_path(buf, dir, "missing/x.safetensors");
  cr_assert_eq(em_ckpt_write(c, p), EM_ERR_IO);
  cr_assert(strstr(em_last_error(), p) && strstr(em_last_error(), "cannot create the temporary"),
            "%s", em_last_error());
  tu_list_dir(dir, after, sizeof after);
  cr_assert_str_eq(after, before);
  /* A path through a regular file, for a file and for a checkpoint directory. */
  write_raw(tu_path(buf, dir, "file"), "x", 1);
  tu_list_dir(dir, before, sizeof before);
  p = tu_path(buf, dir, "file/x.safetensors");
  cr_assert_eq(em_ckpt_write(c, p), EM_ERR_IO);
  cr_assert(strstr(em_last_error(), p), "%s", em_last_error());
  p = tu_path(buf, dir, "file/ckpts");
  cr_assert_eq(em_ckpt_save_dir(c, p, 1, 2), EM_ERR_IO);
  cr_assert(strstr(em_last_error(), p), "%s", em_last_error());
  tu_list_dir(dir, after, sizeof after);
  cr_assert_str_eq(after, before);
  /* A read-only directory holding an older checkpoint (or /sys when running as root). */
  char ro[512], old[512];
  tu_path(ro, dir, "ro");
  cr_assert_eq(mkdir(ro, 0755), 0);
  em_ckpt *c0 = small_ckpt(0);
  cr_assert_eq(em_ckpt_write(c0, tu_path(old, ro, "m.safetensors")), EM_OK, "%s", em_last_error());
  chmod(ro, 0555);
  const char *target = can_create_in(ro) ? (can_create_in("/sys") ? NULL : "/sys") : ro;
  if (target) {
    tu_list_dir(target, before, sizeof before);
    p = tu_path(buf, target, "m.safetensors");
    cr_assert_eq(em_ckpt_write(c, p), EM_ERR_IO);
    cr_assert(strstr(em_last_error(), p), "%s", em_last_error());
    tu_list_dir(target, after, sizeof after);
    cr_assert_str_eq(after, before);
  } else {
    cr_log_warn("no read-only directory to test with (root, and /sys is writable)");
  }
  em_ckpt *r = em_ckpt_read(old);
  cr_assert(r && same_bits(em_ckpt_get(r, "w"), em_ckpt_get(c0, "w")), "old file changed");
  em_ckpt_free(r);
  chmod(ro, 0755);
  em_ckpt_free(c0);
  em_ckpt_free(c);
  tu_rm_rf(dir);
  TU_END;
}

/* A full disk, simulated with RLIMIT_FSIZE in a child: the write fails part-way, the error
 * names the path and offset, the old file stays whole and the temporary is removed. */
Test(checkpoint, a_full_disk_keeps_the_old_file_whole) {
  TU_BEGIN;
  char *dir = tu_tmpdir("ckpt"), path[512], listing[1024], msg[1024] = "";
  tu_path(path, dir, "m.safetensors");
  em_ckpt *old = small_ckpt(0);
  cr_assert_eq(em_ckpt_write(old, path), EM_OK);
  em_ckpt *c = em_ckpt_new();
  cr_assert_eq(em_ckpt_add(c, "w", em_zeros(EM_F32, EM_SHAPE(1 << 20))), EM_OK); /* 4 MiB */
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    signal(SIGXFSZ, SIG_IGN); /* write() then fails with EFBIG instead of killing us */
    struct rlimit rl = {256 << 10, RLIM_INFINITY};
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0) rl.rlim_cur = 256 << 10;
    setrlimit(RLIMIT_FSIZE, &rl);
    em_status st = em_ckpt_write(c, path);
    const char *m = em_last_error();
    if (write(fds[1], m, strlen(m)) < 0) _exit(3);
    _exit(st == EM_ERR_IO ? 0 : 2);
  }
  close(fds[1]);
  ssize_t got = read(fds[0], msg, sizeof msg - 1);
  msg[got > 0 ? got : 0] = '\0';
  close(fds[0]);
  int ws;
  cr_assert_eq(waitpid(pid, &ws, 0), pid);
  cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "write did not fail as expected: %s", msg);
  cr_assert(strstr(msg, path) && strstr(msg, "failed at byte offset 262144"), "%s", msg);
  cr_assert(strstr(msg, "is unchanged"), "%s", msg);
  tu_list_dir(dir, listing, sizeof listing);
  cr_assert_str_eq(listing, "m.safetensors", "the temporary was not removed");
  em_ckpt *r = em_ckpt_read(path);
  cr_assert(r && same_bits(em_ckpt_get(r, "w"), em_ckpt_get(old, "w")), "old file changed");
  em_ckpt_free(r);
  em_ckpt_free(old);
  em_ckpt_free(c);
  tu_rm_rf(dir);
  TU_END;
}
