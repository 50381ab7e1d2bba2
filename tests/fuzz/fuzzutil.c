/* fuzzutil.c: see fuzzutil.h. */
#include "fuzzutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Removes the directory at exit: libFuzzer returns from main on a normal end (-runs,
 * -max_total_time); after a crash the directory stays, with the input that caused it. */
static char dir[64];
static char paths[4][128];

static void cleanup(void) {
  for (int i = 0; i < 4; i++)
    if (paths[i][0]) unlink(paths[i]);
  rmdir(dir);
}

const char *fz_write(int slot, const char *name, const uint8_t *data, size_t n) {
  if (!dir[0]) {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%.40s/emfuzz.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
      perror("fuzz: mkdtemp");
      abort();
    }
    atexit(cleanup);
  }
  snprintf(paths[slot], sizeof paths[slot], "%s/%s", dir, name);
  FILE *f = fopen(paths[slot], "wb");
  if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
    perror(paths[slot]);
    abort();
  }
  return paths[slot];
}

char *fz_strndup(const uint8_t *data, size_t n) {
  char *s = malloc(n + 1);
  if (!s) abort();
  memcpy(s, data, n);
  s[n] = 0;
  return s;
}

int fz_split_argv(char *text, const char *argv0, char **argv, int max) {
  int argc = 0;
  argv[argc++] = (char *)argv0;
  for (char *s = text; argc < max - 1;) {
    argv[argc++] = s;
    char *nl = strchr(s, '\n');
    if (!nl) break;
    *nl = 0;
    s = nl + 1;
  }
  argv[argc] = NULL;
  return argc;
}
