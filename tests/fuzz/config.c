/* fuzz_config: a YAML job file through ember-train's validation. The input is the file's bytes
 * (binary included: em_config_load reads them all, as it would a user's file); a file that parses
 * is read through every option of ember-train's table (types, ranges, enums, combinations), then
 * checked for unknown keys, hashed and printed back, as ember-train does with --print-config. */
#include <stdio.h>
#include <stdlib.h>

#include "em_config.h"
#include "fuzzutil.h"
#include "options.h"

static FILE *devnull;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!devnull && !(devnull = fopen("/dev/null", "w"))) abort();
  em_config *c = em_config_load(fz_write(0, "job.yaml", data, size));
  if (!c) return 0;
  em_config_ignore(c, "launch"); /* ddprun's section */
  train_opts o;
  if (train_opts_read(c, &o) == EM_OK && em_config_check_unused(c, NULL) == EM_OK) {
    (void)em_config_hash(c);
    train_opts_print(&o, devnull);
  }
  /* a few lookups of keys a file may or may not hold, typed as ddprun reads launch.* */
  const char *s;
  int64_t n;
  double x;
  char where[256];
  (void)em_config_str(c, "launch.hosts", NULL, &s);
  (void)em_config_int(c, "launch.nproc_per_node", 0, 1, 4096, &n);
  (void)em_config_num(c, "launch.timeout", 0, 1e-3, 1e7, &x);
  (void)em_config_where(c, "model.hidden", where, sizeof where);
  em_config_free(c);
  return 0;
}
