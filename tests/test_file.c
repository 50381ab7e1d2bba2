/* test_file.c: atomic files (em_file.h) on their own: commit, abort, two writers of one path at
 * once, and errors naming the path. Checkpoints and token shards, which write through them, test
 * a kill and a full disk in their own suites (test_checkpoint*.c, test_dl_dataset.c). */
#include "em_file.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The whole content of path as a string ("" when absent). */
static void read_text(const char *path, char *out, size_t cap) {
  out[0] = '\0';
  FILE *f = fopen(path, "rb");
  if (!f) return;
  size_t n = fread(out, 1, cap - 1, f);
  out[n] = '\0';
  fclose(f);
}

static void write_text(const char *path, const char *text) {
  em_atomic_file *f = em_atomic_file_open(path);
  cr_assert_not_null(f, "%s", em_last_error());
  cr_assert_eq(em_atomic_file_write(f, text, strlen(text)), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_atomic_file_commit(f), EM_OK, "%s", em_last_error());
}

Test(file, commit_replaces_and_abort_keeps) {
  char *dir = tu_tmpdir("file"), path[TU_PATH_LEN], got[64], listing[256];
  tu_path(path, dir, "a.txt");
  write_text(path, "first");
  read_text(path, got, sizeof got);
  cr_assert_str_eq(got, "first");

  /* Written in pieces; until the commit the old content stays and only a temporary is new. */
  em_atomic_file *f = em_atomic_file_open(path);
  cr_assert_not_null(f, "%s", em_last_error());
  cr_assert_eq(em_atomic_file_write(f, "sec", 3), EM_OK);
  cr_assert_eq(em_atomic_file_write(f, NULL, 0), EM_OK);
  cr_assert_eq(em_atomic_file_write(f, "ond", 3), EM_OK);
  read_text(path, got, sizeof got);
  cr_assert_str_eq(got, "first");
  tu_list_dir(dir, listing, sizeof listing);
  char want[128];
  snprintf(want, sizeof want, "a.txt a.txt.tmp.%ld.", (long)getpid());
  cr_assert(!strncmp(listing, want, strlen(want)), "temporary: %s", listing);
  cr_assert_eq(em_atomic_file_commit(f), EM_OK, "%s", em_last_error());
  read_text(path, got, sizeof got);
  cr_assert_str_eq(got, "second");

  f = em_atomic_file_open(path);
  cr_assert_not_null(f);
  cr_assert_eq(em_atomic_file_write(f, "third", 5), EM_OK);
  em_atomic_file_abort(f);
  em_atomic_file_abort(NULL);
  read_text(path, got, sizeof got);
  cr_assert_str_eq(got, "second");
  tu_list_dir(dir, listing, sizeof listing);
  cr_assert_str_eq(listing, "a.txt", "the aborted temporary was not removed");
  tu_rm_rf(dir);
}

/* Two writers of one path at once get temporaries of their own: the last commit wins whole. */
Test(file, concurrent_writers_of_one_path) {
  char *dir = tu_tmpdir("file"), path[TU_PATH_LEN], got[64], listing[256];
  tu_path(path, dir, "b.txt");
  em_atomic_file *f1 = em_atomic_file_open(path), *f2 = em_atomic_file_open(path);
  cr_assert(f1 && f2, "%s", em_last_error());
  cr_assert_eq(em_atomic_file_write(f1, "one-one", 7), EM_OK);
  cr_assert_eq(em_atomic_file_write(f2, "two", 3), EM_OK);
  cr_assert_eq(em_atomic_file_write(f1, "-one", 4), EM_OK);
  cr_assert_eq(em_atomic_file_commit(f2), EM_OK, "%s", em_last_error());
  read_text(path, got, sizeof got);
  cr_assert_str_eq(got, "two");
  cr_assert_eq(em_atomic_file_commit(f1), EM_OK, "%s", em_last_error());
  read_text(path, got, sizeof got);
  cr_assert_str_eq(got, "one-one-one");
  tu_list_dir(dir, listing, sizeof listing);
  cr_assert_str_eq(listing, "b.txt");
  tu_rm_rf(dir);
}

Test(file, errors_name_the_path) {
  char *dir = tu_tmpdir("file"), path[TU_PATH_LEN];
  tu_path(path, dir, "no_such_dir/c.txt");
  em_clear_error();
  cr_assert_null(em_atomic_file_open(path));
  cr_assert_eq(em_last_status(), EM_ERR_IO);
  tu_assert_error(NULL, path, "No such file or directory");
  cr_assert_null(em_atomic_file_open(NULL));
  cr_assert_eq(em_last_status(), EM_ERR_INVALID);
  cr_assert_eq(em_atomic_file_commit(NULL), EM_ERR_INVALID);

  /* A rename that fails (a directory in the way) leaves no temporary behind. */
  char sub[TU_PATH_LEN], listing[256];
  tu_path(sub, dir, "d");
  cr_assert_eq(mkdir(sub, 0755), 0);
  em_atomic_file *f = em_atomic_file_open(sub);
  cr_assert_not_null(f, "%s", em_last_error());
  cr_assert_eq(em_atomic_file_write(f, "x", 1), EM_OK);
  cr_assert_eq(em_atomic_file_commit(f), EM_ERR_IO);
  tu_assert_error(NULL, sub, "renaming");
  tu_list_dir(dir, listing, sizeof listing);
  cr_assert_str_eq(listing, "d");
  em_clear_error();
  tu_rm_rf(dir);
}
