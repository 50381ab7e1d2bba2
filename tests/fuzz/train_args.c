/* fuzz_train_args: ember-train's command line (CONFIG.yaml, key.sub=value overrides,
 * --print-config, --help) through its own read_config: the file, the overrides, the option table's
 * validation and the check for unknown keys. The input is the words, one per line; a NUL byte ends
 * them, and what follows is the job file's content, which the word naming a file (the first that
 * is neither an option nor key=value) is pointed at, whatever path it gave. main.c is included so
 * that its static read_config is reachable; nothing past it (ddp_init, training) runs. */
#include <string.h>

#define main ember_train_main
#include "../../examples/train/main.c"
#undef main

#include "fuzzutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 16384) return 0;
  const uint8_t *nul = memchr(data, 0, size);
  size_t words = nul ? (size_t)(nul - data) : size;
  const char *file = fz_write(0, "job.yaml", nul ? nul + 1 : data, nul ? size - words - 1 : 0);
  char *text = fz_strndup(data, words);
  char *argv[65];
  int argc = fz_split_argv(text, "ember-train", argv, 65);
  for (int i = 1; i < argc; i++)
    if (argv[i][0] != '-' && !strchr(argv[i], '=')) {
      argv[i] = (char *)file; /* read_config takes the first such word as the file */
      break;
    }
  static job j;
  memset(&j, 0, sizeof j);
  int rc = read_config(argc, argv, &j);
  if (rc != -1 && rc != 0 && rc != EXIT_CONFIG) abort(); /* go on, help, or a config error */
  em_config_free(j.cfg);
  free(text);
  return 0;
}
