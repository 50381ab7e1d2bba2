/* profile.h: ember-ddp-bench --profile: where backward time goes, per parameter, for the scale-out
 * model (cluster/model/, docs/scaling.md).
 *
 * For every parameter the recorder notes when its gradient became final (a grad-ready hook, the
 * same event the reducer launches buckets on), relative to the start of em_backward, and averages
 * it over the timed steps. Sorted by that time, the differences between neighbours are the backward
 * compute that each parameter's layer costs. Measured at 1 rank, nothing else runs in the pass.
 * The JSON is the scale-out model's profile format ("ember-scale-profile" version 1, one entry per
 * parameter, in backward order: cluster/model/profiles.py reads it as it is). */
#ifndef EMBER_BENCH_PROFILE_H
#define EMBER_BENCH_PROFILE_H

#include "ember.h"

typedef struct bench_profile bench_profile;

/* Hooks every parameter of model; NULL (error set) on failure. */
bench_profile *profile_attach(em_module *model);
/* The step's backward starts now; timed: whether this step counts. */
void profile_backward_begins(bench_profile *p, bool timed);
/* The step's phases in seconds (forward, backward, optimizer), for the timed steps. */
void profile_step(bench_profile *p, double forward_s, double backward_s, double optimizer_s);
/* Writes the averaged profile as JSON (docs/scaling.md gives the format); false (error set) on
 * failure. Atomic: the file is complete or absent. */
bool profile_write(const bench_profile *p, const char *path, const char *model, int batch,
                   int threads);
void profile_free(bench_profile *p);

#endif
