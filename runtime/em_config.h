/* em_config.h: YAML configuration files (libyaml) as a tree of values that remember their line.
 *
 * Programs read every key they know through the typed getters, each with its default and range;
 * then em_config_check_unused reports the first key nobody read (a typo, an unknown option).
 * Every error names the key's dotted path and where it came from ("job.yaml:12"), or the
 * command-line override ("override 'optim.lr=abc'"):
 *
 *   em_config *c = em_config_load("job.yaml");           // NULL: em_last_error() says why
 *   em_config_override(c, "optim.lr=0.05");              // key.sub=value from the command line
 *   double lr;  int64_t epochs;
 *   em_config_num(c, "optim.lr", 0.01, 0, 10, &lr);      // default 0.01, range [0, 10]
 *   em_config_int(c, "train.epochs", 10, 1, 100000, &epochs);
 *   em_config_check_unused(c, NULL);                     // "job.yaml:7: unknown key 'optim.lrr'"
 *   em_config_free(c);
 *
 * Paths are dotted mapping keys ("optim.schedule.warmup"). A missing key gives the default; a
 * present key of the wrong type (a mapping where a number belongs, "abc" for an int) or out of
 * range is an error, never silently the default. */
#ifndef EMBER_EM_CONFIG_H
#define EMBER_EM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "em_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct em_config em_config;

/* Parses a YAML file (the top level must be a mapping; anchors/aliases are refused; a file with
 * no keys at all, empty or only comments, is an error: '{}' asks for every default). NULL on
 * error with "path:line:column: what" (libyaml's parse errors included). Caller frees. */
em_config *em_config_load(const char *path);
/* The same from text, except that empty text is an empty mapping; name stands for the file in
 * messages. */
em_config *em_config_parse(const char *text, const char *name);
void em_config_free(em_config *c); /* NULL is fine */

/* Applies "dotted.key=value": value is parsed as a YAML scalar or flow value ("[256, 128]");
 * intermediate mappings are created as needed; a key that would go through a non-mapping is an
 * error. Later getters see the new value; messages name the override instead of a line. */
em_status em_config_override(em_config *c, const char *assignment);

/* Typed getters: *out = the value at path, or def when the path is absent. Marks it read.
 * Errors (EM_ERR_FORMAT) name the path, the location, the value and what was expected. */
em_status em_config_int(em_config *c, const char *path, int64_t def, int64_t lo, int64_t hi,
                        int64_t *out);
em_status em_config_num(em_config *c, const char *path, double def, double lo, double hi,
                        double *out);
em_status em_config_bool(em_config *c, const char *path, bool def, bool *out);
/* String value (owned by c, valid until em_config_free); def may be NULL. */
em_status em_config_str(em_config *c, const char *path, const char *def, const char **out);
/* One of choices (NULL-terminated); *out = its index. def must be one of them. */
em_status em_config_enum(em_config *c, const char *path, const char *def,
                         const char *const *choices, int *out);
/* A sequence of integers in [lo, hi]: *n of them into out[max]. Absent: def[0, ndef). */
em_status em_config_int_list(em_config *c, const char *path, const int64_t *def, int ndef,
                             int64_t lo, int64_t hi, int64_t *out, int max, int *n);

bool em_config_has(const em_config *c, const char *path);
/* Marks path and everything under it as read (a section another program reads). */
void em_config_ignore(em_config *c, const char *path);
/* EM_OK if every key under prefix (NULL: the whole file) was read; else an error naming the
 * first unread key (in file order) and its line: "job.yaml:7: unknown key 'optim.lrr'". */
em_status em_config_check_unused(const em_config *c, const char *prefix);
/* A hash of the effective tree (keys and values after overrides, file order ignored for
 * mappings), to tell whether a checkpoint came from the same configuration. */
uint64_t em_config_hash(const em_config *c);
/* Where path's value came from, for errors about a combination of keys that each getter accepted
 * ("job.yaml:7: model.dropout: ..."): "job.yaml:7", "override 'optim.lr=0.5'", or just "job.yaml"
 * when path is absent. Written into buf (cap bytes, truncated); returns buf. */
const char *em_config_where(const em_config *c, const char *path, char *buf, size_t cap);
/* The source name given at load ("job.yaml"). */
const char *em_config_name(const em_config *c);

#ifdef __cplusplus
}
#endif
#endif
