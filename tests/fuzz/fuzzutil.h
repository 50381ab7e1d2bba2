/* fuzzutil.h: what the harnesses share: a private temporary directory for inputs that Ember reads
 * from a path, and splitting an input into words (command lines). */
#ifndef EMBER_FUZZUTIL_H
#define EMBER_FUZZUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Writes data to <this process's temporary directory>/name (replacing it) and returns the path
 * (static storage, one per name slot 0..3). Aborts on an I/O error: that is the harness failing,
 * not the parser. */
const char *fz_write(int slot, const char *name, const uint8_t *data, size_t n);

/* A NUL-terminated copy of data[0, n) (caller frees). */
char *fz_strndup(const uint8_t *data, size_t n);

/* Splits text (modified in place) at '\n' into at most max - 1 words after argv0, NULL-terminated;
 * returns argc. */
int fz_split_argv(char *text, const char *argv0, char **argv, int max);

#endif
