/* em_env.h: Ember's environment variables, declared once, and the number parser they share with
 * the YAML reader and the programs' command-line options.
 *
 * Every EMBER_* variable that libember, ddprun or ember-train reads is a row of one table
 * (runtime/core/env.c): name, type, default, allowed range, one doc line. README.md lists the
 * same rows (tests/test_env.c checks that it does). Code reads a variable only through the typed
 * getters below:
 *
 *   int64_t threads;
 *   if (em_env_int("EMBER_THREADS", &threads) != EM_OK) return em_last_status();
 *
 * Unset or empty: the declared default. A value that does not parse, or lies outside the range,
 * is EM_ERR_INVALID with a message naming the variable, the value and what is allowed
 * ("EMBER_THREADS=-3: expected an integer in [1, 4096]"), never silently the default. Asking for
 * an undeclared name, or with the wrong type, is a programming error (assert). */
#ifndef EMBER_EM_ENV_H
#define EMBER_EM_ENV_H

#include "em_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { EM_ENV_INT, EM_ENV_NUM, EM_ENV_STR } em_env_type;

typedef struct {
  const char *name;    /* "EMBER_THREADS" */
  em_env_type type;    /* integer, (finite) number, or text */
  const char *def;     /* the default, as text; "" for none */
  double lo, hi;       /* EM_ENV_INT, EM_ENV_NUM: the allowed range, both ends included */
  const char *choices; /* EM_ENV_STR: the allowed values ("cpu, cuda, auto"); NULL: any text */
  const char *doc;     /* one line: what it sets and who reads it */
} em_env_var;

/* The table (static, read-only): em_env_at(0 .. em_env_count() - 1). em_env_at out of range and
 * em_env_find of an undeclared name give NULL. */
int em_env_count(void);
const em_env_var *em_env_at(int i);
const em_env_var *em_env_find(const char *name);

/* Typed getters: *out = the variable's value, or its default when unset or empty. On a bad
 * value: EM_ERR_INVALID naming the variable, *out unchanged. em_env_str's string belongs to the
 * environment or the table: valid until the variable is changed. */
em_status em_env_int(const char *name, int64_t *out);
em_status em_env_num(const char *name, double *out);
em_status em_env_str(const char *name, const char **out);

/* ---- numbers from text -------------------------------------------------------------------------
 * s, all of it, is one decimal integer (em_parse_int: strtoll's syntax, in int64_t's range) or
 * one finite number (em_parse_num: strtod's syntax), with no blanks before or after. Else false,
 * *out unchanged. */
bool em_parse_int(const char *s, int64_t *out);
bool em_parse_num(const char *s, double *out);

/* The same with a range, for a program's options: EM_OK, or EM_ERR_INVALID with the message
 * "<what> '<s>': expected an integer in [lo, hi]" ("a number" for em_arg_num), what being the
 * option ("--steps"). */
em_status em_arg_int(const char *what, const char *s, int64_t lo, int64_t hi, int64_t *out);
em_status em_arg_num(const char *what, const char *s, double lo, double hi, double *out);

#ifdef __cplusplus
}
#endif

#endif
