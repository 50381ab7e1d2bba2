/* test_env.c: the environment table (em_env.h): README.md's table lists exactly the declared
 * variables with the same type, default and range; every default is valid; bad values are
 * errors naming the variable, from the getters and from the library calls that read them; the
 * option parser's messages. (Each Criterion test runs in its own process, so a variable set in
 * one test is read fresh there: the CPU device reads EMBER_THREADS and EMBER_CPU_CACHE_MB once.) */
#include "testutil.h"

#include <criterion/redirect.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *type_name(em_env_type t) {
  return t == EM_ENV_INT ? "integer" : t == EM_ENV_NUM ? "number" : "text";
}

/* The README's range column for v: "[lo, hi]", the choices, or "any". */
static void range_text(const em_env_var *v, char *buf, size_t n) {
  if (v->type != EM_ENV_STR)
    snprintf(buf, n, "[%.15g, %.15g]", v->lo, v->hi);
  else
    snprintf(buf, n, "%s", v->choices ? v->choices : "any");
}

/* s without surrounding blanks and backquotes, in place. */
static char *strip(char *s) {
  while (*s == ' ' || *s == '`') s++;
  char *e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '`')) *--e = '\0';
  return s;
}

Test(env, readme_table_matches_the_declarations) {
  FILE *f = fopen(EMBER_SOURCE_DIR "/README.md", "r");
  cr_assert(f, "cannot open README.md");
  int n = em_env_count(), rows = 0;
  bool seen[64] = {false};
  cr_assert(n > 0 && n <= 64);
  char line[2048];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "| `EMBER_", 9) != 0) continue;
    line[strcspn(line, "\n")] = '\0';
    char *col[6] = {NULL}, *p = line + 1;
    int nc = 0;
    for (char *bar; nc < 6 && (bar = strchr(p, '|')); p = bar + 1) {
      *bar = '\0';
      col[nc++] = strip(p);
    }
    cr_assert_eq(nc, 5, "README row '%s': %d columns, expected 5", line, nc);
    const em_env_var *v = em_env_find(col[0]);
    cr_assert(v, "README lists %s, which runtime/core/env.c does not declare", col[0]);
    int i = (int)(v - em_env_at(0));
    cr_assert(!seen[i], "README lists %s twice", col[0]);
    seen[i] = true;
    rows++;
    char range[256];
    range_text(v, range, sizeof range);
    const char *def = *v->def ? v->def : "(none)";
    cr_assert_str_eq(col[1], type_name(v->type), "%s: README type '%s', declared %s", v->name,
                     col[1], type_name(v->type));
    cr_assert_str_eq(col[2], def, "%s: README default '%s', declared '%s'", v->name, col[2], def);
    cr_assert_str_eq(col[3], range, "%s: README range '%s', declared '%s'", v->name, col[3],
                     range);
    cr_assert(*col[4], "%s: no meaning in the README", v->name);
  }
  fclose(f);
  for (int i = 0; i < n; i++)
    cr_assert(seen[i], "%s is declared but not in README.md's table", em_env_at(i)->name);
  cr_assert_eq(rows, n);
}

Test(env, table_is_well_formed_and_defaults_are_valid) {
  for (int i = 0; i < em_env_count(); i++) {
    const em_env_var *v = em_env_at(i);
    cr_assert(!strncmp(v->name, "EMBER_", 6) && v->doc && *v->doc, "row %d", i);
    cr_assert_eq(em_env_find(v->name), v, "%s declared twice", v->name);
    unsetenv(v->name);
    if (v->type == EM_ENV_INT) {
      int64_t x = -12345, want;
      cr_assert(em_parse_int(v->def, &want), "%s: default '%s'", v->name, v->def);
      cr_assert_eq(em_env_int(v->name, &x), EM_OK, "%s: %s", v->name, em_last_error());
      cr_assert(x == want && x >= v->lo && x <= v->hi, "%s: %lld", v->name, (long long)x);
    } else if (v->type == EM_ENV_NUM) {
      double x = -12345, want;
      cr_assert(em_parse_num(v->def, &want), "%s: default '%s'", v->name, v->def);
      cr_assert_eq(em_env_num(v->name, &x), EM_OK, "%s: %s", v->name, em_last_error());
      cr_assert(x == want && x >= v->lo && x <= v->hi, "%s: %g", v->name, x);
      cr_assert(v->lo < v->hi);
    } else {
      const char *x = NULL;
      cr_assert_eq(em_env_str(v->name, &x), EM_OK, "%s: %s", v->name, em_last_error());
      cr_assert_str_eq(x, v->def, "%s", v->name);
    }
  }
  cr_assert_null(em_env_find("EMBER_NO_SUCH_THING"));
  cr_assert_null(em_env_at(em_env_count()));
}

Test(env, values_set_and_empty) {
  double t = 0;
  int64_t k = 0;
  const char *s = NULL;
  setenv("EMBER_DL_TIMEOUT", "2.5", 1);
  cr_assert_eq(em_env_num("EMBER_DL_TIMEOUT", &t), EM_OK);
  cr_assert_eq(t, 2.5);
  setenv("EMBER_COLL_CHECK_EVERY", "-1", 1);
  cr_assert_eq(em_env_int("EMBER_COLL_CHECK_EVERY", &k), EM_OK);
  cr_assert_eq(k, -1);
  setenv("EMBER_DEVICE", "cuda", 1);
  cr_assert_eq(em_env_str("EMBER_DEVICE", &s), EM_OK);
  cr_assert_str_eq(s, "cuda");
  setenv("EMBER_THREADS", "", 1); /* empty: the default */
  cr_assert_eq(em_env_int("EMBER_THREADS", &k), EM_OK);
  cr_assert_eq(k, 1);
  setenv("EMBER_TIMELINE", "/tmp/trace-%r.json", 1);
  cr_assert_eq(em_env_str("EMBER_TIMELINE", &s), EM_OK);
  cr_assert_str_eq(s, "/tmp/trace-%r.json");
}

Test(env, bad_values_name_the_variable) {
  static const struct {
    const char *name, *value, *expected;
  } bad[] = {
      {"EMBER_DL_TIMEOUT", "abc", "a number in [0.001, 10000000]"},
      {"EMBER_DL_TIMEOUT", "0", "a number in [0.001, 10000000]"},
      {"EMBER_THREADS", "-3", "an integer in [1, 4096]"},
      {"EMBER_THREADS", "4x", "an integer in [1, 4096]"},
      {"EMBER_THREADS", " 2", "an integer in [1, 4096]"},
      {"EMBER_DDP_BUCKET_MB", "1e999", "a number in [0.001, 1024]"},
      {"EMBER_DDP_BUCKET_MB", "nan", "a number in [0.001, 1024]"},
      {"EMBER_COLL_CHUNK_BYTES", "1e6", "an integer in [64, 1073741824]"},
      {"EMBER_COLL_CHUNK_BYTES", "99999999999999999999", "an integer in [64, 1073741824]"},
      {"EMBER_CPU_CACHE_MB", "-1", "an integer in [0, 1048576]"},
      {"EMBER_RESTART_COUNT", "one", "an integer in [0, 1000]"},
      {"EMBER_DEVICE", "tpu", "one of cpu, cuda, auto"},
      {"EMBER_DEVICE", "cpu,cuda", "one of cpu, cuda, auto"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    const em_env_var *v = em_env_find(bad[i].name);
    setenv(bad[i].name, bad[i].value, 1);
    em_status st;
    int64_t k = 7;
    double x = 7;
    const char *s = "unchanged";
    if (v->type == EM_ENV_INT)
      st = em_env_int(v->name, &k);
    else if (v->type == EM_ENV_NUM)
      st = em_env_num(v->name, &x);
    else
      st = em_env_str(v->name, &s);
    char want[256];
    snprintf(want, sizeof want, "%s=%s: expected %s", bad[i].name, bad[i].value, bad[i].expected);
    cr_assert_eq(st, EM_ERR_INVALID, "%s=%s accepted", bad[i].name, bad[i].value);
    cr_assert_str_eq(em_last_error(), want);
    cr_assert(k == 7 && x == 7 && !strcmp(s, "unchanged"), "%s: output changed", bad[i].name);
    unsetenv(bad[i].name);
  }
}

/* ---- through the calls that read them --------------------------------------------------------- */

Test(env, dl_loader_new_rejects_a_bad_dl_timeout) {
  TU_BEGIN;
  em_tensor *x = em_zeros(EM_F32, EM_SHAPE(8, 2));
  dl_dataset *d = dl_memory_new(&x, NULL, 1);
  cr_assert(d, "%s", em_last_error());
  dl_options o = {.batch = 4, .world = 1};
  setenv("EMBER_DL_TIMEOUT", "abc", 1);
  cr_assert_null(dl_loader_new(d, &o));
  cr_assert_eq(em_last_status(), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "EMBER_DL_TIMEOUT=abc"), "%s", em_last_error());
  o.timeout_s = 5; /* an explicit option does not read the variable */
  dl_loader *l = dl_loader_new(d, &o);
  cr_assert(l, "%s", em_last_error());
  dl_loader_free(l);
  dl_dataset_close(d);
  TU_END;
}

Test(env, cpu_kernels_refuse_a_bad_threads_value) {
  setenv("EMBER_THREADS", "-3", 1);
  TU_BEGIN;
  em_tensor *a = em_zeros(EM_F32, EM_SHAPE(2, 3)), *b = em_zeros(EM_F32, EM_SHAPE(3, 2));
  cr_assert_null(em_matmul(a, b));
  cr_assert_eq(em_last_status(), EM_ERR_INVALID);
  cr_assert_str_eq(em_last_error(), "EMBER_THREADS=-3: expected an integer in [1, 4096]");
  cr_assert_eq(em_num_threads(), 1);
  TU_END;
}

Test(env, threads_value_is_used) {
  setenv("EMBER_THREADS", "2", 1);
  cr_assert_eq(em_num_threads(), 2);
}

Test(env, bad_cpu_cache_size_is_reported_once_and_the_default_kept, .init = cr_redirect_stderr) {
#if defined(__SANITIZE_ADDRESS__)
  cr_skip_test("sanitizer builds have no CPU block cache, so never read EMBER_CPU_CACHE_MB");
#else
  setenv("EMBER_CPU_CACHE_MB", "lots", 1);
  em_set_error(EM_ERR_FORMAT, "an earlier error");
  for (int i = 0; i < 3; i++) { /* large blocks: the first free reads the limit */
    em_tensor *t = em_zeros(EM_F32, EM_SHAPE(64, 1024));
    cr_assert(t);
    em_release(t);
  }
  cr_assert_str_eq(em_last_error(), "an earlier error", "the report changed the thread's error");
  cr_assert_eq(em_last_status(), EM_ERR_FORMAT);
  fflush(stderr);
  FILE *f = cr_get_redirected_stderr();
  char out[1024] = "";
  size_t n = fread(out, 1, sizeof out - 1, f);
  out[n] = '\0';
  cr_assert_str_eq(out,
                   "ember: EMBER_CPU_CACHE_MB=lots: expected an integer in [0, 1048576]; the CPU "
                   "block cache keeps its default, 256 MB\n");
#endif
}

/* ---- the programs' option parser -------------------------------------------------------------- */

Test(env, option_values) {
  int64_t k = 0;
  double x = 0;
  cr_assert_eq(em_arg_int("--steps", "12", 1, 100, &k), EM_OK);
  cr_assert_eq(k, 12);
  cr_assert_eq(em_arg_num("--lr", "0.05", 0, 10, &x), EM_OK);
  cr_assert_eq(x, 0.05);
  cr_assert_eq(em_arg_int("--steps", "1x", 1, 100, &k), EM_ERR_INVALID);
  cr_assert_str_eq(em_last_error(), "--steps '1x': expected an integer in [1, 100]");
  cr_assert_eq(em_arg_int("--steps", "0", 1, 100, &k), EM_ERR_INVALID);
  cr_assert_eq(em_arg_num("--lr", "-1", 0, 10, &x), EM_ERR_INVALID);
  cr_assert_str_eq(em_last_error(), "--lr '-1': expected a number in [0, 10]");
  cr_assert_eq(em_arg_num("--lr", "", 0, 10, &x), EM_ERR_INVALID);
  cr_assert(k == 12 && x == 0.05, "a failed parse changed the output");
}
