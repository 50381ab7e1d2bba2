/* torchref.h: PyTorch reference dumps for the whole-model tests (the third oracle of STYLE.md).
 *
 * A script under tests/ref/ (Python, Debian's python3 with torch; tests/ref/refdump.py) builds
 * the PyTorch peer of an Ember model and writes every tensor it wants checked as raw
 * little-endian float32 into PREFIX.bin, with an index PREFIX.txt of lines
 * "name count offset_in_floats". tr_run runs such a script in a scratch directory and loads both
 * files; tr_get looks a tensor up by name (failing the test when it is missing). */
#ifndef EMBER_TORCHREF_H
#define EMBER_TORCHREF_H

#include "testutil.h"

typedef struct tr_ref tr_ref;

/* Runs EMBER_PYTHON3 tests/ref/<script> PREFIX [args] and loads what it wrote. Fails the test
 * when the script fails. args may be NULL. */
tr_ref *tr_run(const char *script, const char *args);
void tr_free(tr_ref *r);

/* The values called name (printf format), with their count in *n (n may be NULL). */
const float *tr_get(tr_ref *r, int64_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies "<prefix><name>" into each of m's parameters and buffers that the dump holds (all the
 * parameters must be there; buffers are optional), failing on a size mismatch. */
void tr_load_module(tr_ref *r, em_module *m, const char *prefix);

/* A new scope-owned tensor of the given shape and dtype (f32, or i64 holding the dumped floats
 * as integers) from the values called name; the count must equal the shape's. */
em_tensor *tr_tensor(tr_ref *r, em_dtype dtype, int ndim, const int64_t *shape, const char *name);

/* ||got - ref|| / ||ref|| <= tol for the values called name, which must have numel(got) values. */
void tr_check(tr_ref *r, const em_tensor *got, double tol, const char *name);

/* tr_check on the gradient of every parameter of m against "<prefix><name>". */
void tr_check_grads(tr_ref *r, em_module *m, double tol, const char *prefix);

#endif
