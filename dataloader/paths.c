/* paths.c: the files a dataset's glob pattern names (dl_paths.h). */
#include "dl_paths.h"

#include <glob.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILES ((size_t)1 << 24)

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

em_status dl_paths_glob(const char *who, const char *pattern, char ***paths, size_t *n) {
  *paths = NULL;
  *n = 0;
  if (!pattern) return em_set_error(EM_ERR_INVALID, "%s: pattern is NULL", who);
  glob_t g;
  int gr = glob(pattern, 0, NULL, &g); /* initialises g even when it fails */
  em_status st = EM_OK;
  if (gr == GLOB_NOMATCH || (gr == 0 && g.gl_pathc == 0))
    st = em_set_error(EM_ERR_IO, "%s: no file matches '%s'", who, pattern);
  else if (gr != 0)
    st = em_set_error(EM_ERR_IO, "%s: glob('%s') failed (%s)", who, pattern,
                      gr == GLOB_NOSPACE ? "out of memory" : "read error");
  else if (g.gl_pathc > MAX_FILES)
    st = em_set_error(EM_ERR_INVALID, "%s: '%s' matches %zu files, too many", who, pattern,
                      (size_t)g.gl_pathc);
  char **out = st == EM_OK ? calloc(g.gl_pathc, sizeof *out) : NULL;
  if (st == EM_OK && !out)
    st = em_set_error(EM_ERR_NOMEM, "%s(%s): out of memory for %zu paths", who, pattern,
                      (size_t)g.gl_pathc);
  for (size_t i = 0; st == EM_OK && i < g.gl_pathc; i++) {
    out[i] = strdup(g.gl_pathv[i]);
    if (!out[i]) {
      dl_paths_free(out, i);
      out = NULL;
      st = em_set_error(EM_ERR_NOMEM, "%s(%s): out of memory", who, pattern);
    }
  }
  if (st == EM_OK) {
    qsort(out, g.gl_pathc, sizeof *out, cmp_str);
    *paths = out;
    *n = g.gl_pathc;
  }
  globfree(&g);
  return st;
}

void dl_paths_free(char **paths, size_t n) {
  if (!paths) return;
  for (size_t i = 0; i < n; i++) free(paths[i]);
  free(paths);
}
