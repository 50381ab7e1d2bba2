/* dl_paths.h (private to dataloader/): the files a dataset's glob pattern names. */
#ifndef EMBER_DL_PATHS_H
#define EMBER_DL_PATHS_H

#include <stddef.h>

#include "em_core.h"

/* The files matching pattern, sorted bytewise (glob sorts by the locale's collation, and the
 * order of samples must not depend on the locale), at most 2^24 of them. *paths gets a malloc'd
 * array of *n malloc'd strings (free with dl_paths_free). Errors name `who` and the pattern: no
 * match, a read error, too many files, out of memory. */
em_status dl_paths_glob(const char *who, const char *pattern, char ***paths, size_t *n);
void dl_paths_free(char **paths, size_t n);

#endif
