/* test_config.c: YAML configuration (runtime/config/): getters with defaults, ranges and wrong
 * types, overrides, unknown keys, duplicate keys, anchors, syntax errors, files and the hash.
 * Every error case checks that the message names the key and its line (or the override). */
#include "em_config.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Fails unless the last error contains each non-NULL needle. */
static void assert_msg(const char *a, const char *b, const char *c) {
  const char *m = em_last_error();
  const char *needles[] = {a, b, c};
  for (int i = 0; i < 3; i++)
    if (needles[i]) cr_assert(strstr(m, needles[i]), "message '%s' lacks '%s'", m, needles[i]);
}

static em_config *parse(const char *text) {
  em_config *c = em_config_parse(text, "job.yaml");
  cr_assert_not_null(c, "parse failed: %s", em_last_error());
  return c;
}

static const char *job = "# a job\n"              /* 1 */
                         "model:\n"               /* 2 */
                         "  name: mlp\n"          /* 3 */
                         "  hidden: [256, 128]\n" /* 4 */
                         "optim:\n"               /* 5 */
                         "  lr: 1e-3\n"           /* 6 */
                         "  momentum: 0.9\n"      /* 7 */
                         "  nesterov: yes\n"      /* 8 */
                         "train:\n"               /* 9 */
                         "  epochs: 12\n"         /* 10 */
                         "  metrics: runs/x\n"    /* 11 */
                         "  timeline:\n";         /* 12 */

Test(config, getters_values_and_defaults) {
  em_config *c = parse(job);
  cr_assert_str_eq(em_config_name(c), "job.yaml");
  int64_t i;
  double d;
  bool b;
  const char *s;
  int e;
  cr_assert_eq(em_config_int(c, "train.epochs", 5, 1, 100, &i), EM_OK, "%s", em_last_error());
  cr_assert_eq(i, 12);
  cr_assert_eq(em_config_int(c, "train.steps", -1, -1, 100, &i), EM_OK);
  cr_assert_eq(i, -1, "absent: the default");
  cr_assert_eq(em_config_int(c, "nosuch.section.key", 7, 0, 10, &i), EM_OK);
  cr_assert_eq(i, 7);
  cr_assert_eq(em_config_num(c, "optim.lr", 0.1, 0, 10, &d), EM_OK, "%s", em_last_error());
  cr_assert_eq(d, 1e-3);
  cr_assert_eq(em_config_num(c, "optim.momentum", 0, 0, 1, &d), EM_OK);
  cr_assert_eq(d, 0.9);
  cr_assert_eq(em_config_num(c, "optim.weight_decay", 0.25, 0, 1, &d), EM_OK);
  cr_assert_eq(d, 0.25);
  cr_assert_eq(em_config_bool(c, "optim.nesterov", false, &b), EM_OK);
  cr_assert(b);
  cr_assert_eq(em_config_bool(c, "optim.other", true, &b), EM_OK);
  cr_assert(b);
  cr_assert_eq(em_config_str(c, "train.metrics", "runs", &s), EM_OK);
  cr_assert_str_eq(s, "runs/x");
  cr_assert_eq(em_config_str(c, "train.timeline", "default", &s), EM_OK);
  cr_assert_str_eq(s, "", "an empty value is the empty string, not the default");
  cr_assert_eq(em_config_str(c, "train.absent", NULL, &s), EM_OK);
  cr_assert_null(s);
  static const char *const names[] = {"mlp", "cnn", NULL};
  cr_assert_eq(em_config_enum(c, "model.name", "cnn", names, &e), EM_OK);
  cr_assert_eq(e, 0);
  cr_assert_eq(em_config_enum(c, "model.kind", "cnn", names, &e), EM_OK);
  cr_assert_eq(e, 1);
  int64_t list[4], def[] = {1, 2, 3};
  int n;
  cr_assert_eq(em_config_int_list(c, "model.hidden", def, 3, 1, 4096, list, 4, &n), EM_OK);
  cr_assert_eq(n, 2);
  cr_assert_eq(list[0], 256);
  cr_assert_eq(list[1], 128);
  cr_assert_eq(em_config_int_list(c, "model.other", def, 3, 1, 4096, list, 4, &n), EM_OK);
  cr_assert_eq(n, 3);
  cr_assert_eq(list[2], 3);
  cr_assert(em_config_has(c, "optim.lr"));
  cr_assert(em_config_has(c, "optim"));
  cr_assert_not(em_config_has(c, "optim.beta"));
  cr_assert_not(em_config_has(c, "optim.lr.x"), "through a scalar: absent, no error");
  cr_assert_eq(em_config_check_unused(c, NULL), EM_OK, "%s", em_last_error());
  em_config_free(c);
  em_config_free(NULL);
}

Test(config, scalar_spellings) {
  em_config *c;
  const char *bools[] = {"TRUE", "False", "on", "OFF", "Yes", "no"};
  for (int k = 0; k < 6; k++) {
    char text[64];
    snprintf(text, sizeof text, "b: %s\n", bools[k]);
    c = parse(text);
    bool b = k % 2;
    cr_assert_eq(em_config_bool(c, "b", false, &b), EM_OK, "%s", em_last_error());
    cr_assert_eq(b, k % 2 == 0, "%s", bools[k]);
    em_config_free(c);
  }
  c = parse("i: -9223372036854775808\nj: '42'\nf: 1e-3\ng: 0x10\n");
  int64_t i;
  double d;
  cr_assert_eq(em_config_int(c, "i", 0, INT64_MIN, INT64_MAX, &i), EM_OK);
  cr_assert_eq(i, INT64_MIN);
  cr_assert_eq(em_config_int(c, "j", 0, 0, 100, &i), EM_OK, "quoted digits are an integer");
  cr_assert_eq(i, 42);
  cr_assert_eq(em_config_num(c, "f", 0, 0, 1, &d), EM_OK);
  cr_assert_eq(d, 1e-3);
  cr_assert_neq(em_config_int(c, "g", 0, 0, 100, &i), EM_OK, "integers are decimal");
  assert_msg("job.yaml:4: g: expected an integer", "'0x10'", NULL);
  em_config_free(c);
}

/* Each bad value: the getter fails with EM_ERR_FORMAT and the message names key, line, value. */
Test(config, wrong_types_and_ranges_name_key_and_line) {
  em_config *c = parse("train:\n"                      /* 1 */
                       "  epochs: abc\n"               /* 2 */
                       "  steps: 12.5\n"               /* 3 */
                       "  big: 99999999999999999999\n" /* 4 */
                       "  neg: -3\n"                   /* 5 */
                       "  sect: {a: 1}\n"              /* 6 */
                       "  lst: [1, 2]\n"               /* 7 */
                       "  empty:\n"                    /* 8 */
                       "optim:\n"                      /* 9 */
                       "  lr: abc\n"                   /* 10 */
                       "  inf: inf\n"                  /* 11 */
                       "  nan: nan\n"                  /* 12 */
                       "  big: 20\n"                   /* 13 */
                       "  flag: maybe\n"               /* 14 */
                       "  name: sgdd\n"                /* 15 */
                       "  hidden: [256, x]\n"          /* 16 */
                       "  hidden2: 256\n"              /* 17 */
                       "  hidden3: [1, 2, 3]\n"        /* 18 */
                       "  hidden4: [1, -2]\n"          /* 19 */
                       "  hidden5: [[1]]\n"            /* 20 */
                       "  lr2: 1e-3x\n");              /* 21 */
  int64_t i, list[2];
  double d;
  bool b;
  int e, n;
  const char *s;
  cr_assert_eq(em_config_int(c, "train.epochs", 1, 1, 10, &i), EM_ERR_FORMAT);
  assert_msg("job.yaml:2: ", "train.epochs", "'abc'");
  cr_assert_eq(em_config_int(c, "train.steps", 1, 1, 100, &i), EM_ERR_FORMAT);
  assert_msg("job.yaml:3: ", "train.steps", "expected an integer");
  cr_assert_eq(em_config_int(c, "train.big", 1, 1, INT64_MAX, &i), EM_ERR_FORMAT, "overflow");
  assert_msg("job.yaml:4: ", "train.big", "99999999999999999999");
  cr_assert_eq(em_config_int(c, "train.neg", 1, 0, 10, &i), EM_ERR_FORMAT);
  assert_msg("job.yaml:5: ", "train.neg", "-3 is out of range [0, 10]");
  cr_assert_eq(em_config_int(c, "train.sect", 1, 0, 10, &i), EM_ERR_FORMAT);
  assert_msg("job.yaml:6: ", "train.sect", "got a mapping");
  cr_assert_eq(em_config_num(c, "train.lst", 1, 0, 10, &d), EM_ERR_FORMAT);
  assert_msg("job.yaml:7: ", "train.lst", "got a list");
  cr_assert_eq(em_config_int(c, "train.empty", 1, 0, 10, &i), EM_ERR_FORMAT);
  assert_msg("job.yaml:8: ", "train.empty", "empty value");
  cr_assert_eq(em_config_int(c, "train.epochs.x", 1, 0, 10, &i), EM_ERR_FORMAT, "through scalar");
  assert_msg("job.yaml:2: ", "train.epochs", "expected a mapping");
  cr_assert_eq(em_config_num(c, "optim.lr", 1, 0, 10, &d), EM_ERR_FORMAT);
  assert_msg("job.yaml:10: ", "optim.lr", "'abc'");
  cr_assert_eq(em_config_num(c, "optim.inf", 1, -INFINITY, INFINITY, &d), EM_ERR_FORMAT);
  assert_msg("job.yaml:11: ", "optim.inf", "'inf'");
  cr_assert_eq(em_config_num(c, "optim.nan", 1, -INFINITY, INFINITY, &d), EM_ERR_FORMAT);
  assert_msg("job.yaml:12: ", "optim.nan", "'nan'");
  cr_assert_eq(em_config_num(c, "optim.big", 1, 0, 10, &d), EM_ERR_FORMAT);
  assert_msg("job.yaml:13: ", "optim.big", "20 is out of range [0, 10]");
  cr_assert_eq(em_config_num(c, "optim.lr2", 1, 0, 10, &d), EM_ERR_FORMAT, "trailing junk");
  assert_msg("job.yaml:21: ", "optim.lr2", "'1e-3x'");
  cr_assert_eq(em_config_bool(c, "optim.flag", false, &b), EM_ERR_FORMAT);
  assert_msg("job.yaml:14: ", "optim.flag", "'maybe'");
  static const char *const names[] = {"sgd", "adam", "adamw", NULL};
  cr_assert_eq(em_config_enum(c, "optim.name", "sgd", names, &e), EM_ERR_FORMAT);
  assert_msg("job.yaml:15: ", "optim.name", "'sgdd' is not one of sgd, adam, adamw");
  cr_assert_eq(em_config_enum(c, "optim.absent", "bogus", names, &e), EM_ERR_INVALID,
               "a default outside the choices is the program's mistake");
  cr_assert_eq(em_config_str(c, "optim", "x", &s), EM_ERR_FORMAT);
  assert_msg("job.yaml:9: ", "optim", "expected a string, got a mapping");
  cr_assert_eq(em_config_int_list(c, "optim.hidden", NULL, 0, 1, 10000, list, 2, &n),
               EM_ERR_FORMAT);
  assert_msg("job.yaml:16: ", "optim.hidden[1]", "'x'");
  cr_assert_eq(em_config_int_list(c, "optim.hidden2", NULL, 0, 1, 10000, list, 2, &n),
               EM_ERR_FORMAT);
  assert_msg("job.yaml:17: ", "optim.hidden2", "expected a list of integers");
  cr_assert_eq(em_config_int_list(c, "optim.hidden3", NULL, 0, 1, 10000, list, 2, &n),
               EM_ERR_FORMAT);
  assert_msg("job.yaml:18: ", "optim.hidden3", "3 items, at most 2");
  cr_assert_eq(em_config_int_list(c, "optim.hidden4", NULL, 0, 1, 10000, list, 2, &n),
               EM_ERR_FORMAT);
  assert_msg("job.yaml:19: ", "optim.hidden4[1]", "-2 is out of range");
  cr_assert_eq(em_config_int_list(c, "optim.hidden5", NULL, 0, 1, 10000, list, 2, &n),
               EM_ERR_FORMAT);
  assert_msg("job.yaml:20: ", "optim.hidden5[0]", "got a list");
  cr_assert_eq(em_config_int(c, "bad..path", 1, 0, 10, &i), EM_ERR_INVALID);
  em_config_free(c);
}

Test(config, overrides) {
  em_config *c = parse(job);
  int64_t i, list[4];
  int n;
  double d;
  const char *s;
  /* replace a value, keep its place in file order */
  cr_assert_eq(em_config_override(c, "train.epochs=3"), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_config_int(c, "train.epochs", 5, 1, 100, &i), EM_OK);
  cr_assert_eq(i, 3);
  /* a new key in a new section */
  cr_assert_eq(em_config_override(c, "data.augment.crop_pad=4"), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_config_int(c, "data.augment.crop_pad", 0, 0, 8, &i), EM_OK);
  cr_assert_eq(i, 4);
  /* a flow list */
  cr_assert_eq(em_config_override(c, "model.hidden=[64,32, 16]"), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_config_int_list(c, "model.hidden", NULL, 0, 1, 4096, list, 4, &n), EM_OK);
  cr_assert_eq(n, 3);
  cr_assert_eq(list[0], 64);
  cr_assert_eq(list[2], 16);
  /* a later override wins; an empty value is the empty string */
  cr_assert_eq(em_config_override(c, "optim.lr=0.5"), EM_OK);
  cr_assert_eq(em_config_override(c, "optim.lr=0.25"), EM_OK);
  cr_assert_eq(em_config_num(c, "optim.lr", 0, 0, 1, &d), EM_OK);
  cr_assert_eq(d, 0.25);
  cr_assert_eq(em_config_override(c, "train.metrics="), EM_OK);
  cr_assert_eq(em_config_str(c, "train.metrics", "x", &s), EM_OK);
  cr_assert_str_eq(s, "");
  /* errors from an override's value name the override, not a line */
  cr_assert_eq(em_config_override(c, "optim.momentum=abc"), EM_OK);
  cr_assert_eq(em_config_num(c, "optim.momentum", 0, 0, 1, &d), EM_ERR_FORMAT);
  assert_msg("override 'optim.momentum=abc'", "optim.momentum", "'abc'");
  /* an unknown key added by an override is reported as such */
  cr_assert_eq(em_config_override(c, "optim.lrr=1"), EM_OK);
  em_config_ignore(c, "model");
  em_config_ignore(c, "optim.nesterov");
  em_config_ignore(c, "train.timeline");
  cr_assert_eq(em_config_check_unused(c, NULL), EM_ERR_FORMAT);
  assert_msg("override 'optim.lrr=1': unknown key 'optim.lrr'", "did you mean 'optim.lr'", NULL);
  em_config_free(c);
}

Test(config, bad_overrides) {
  em_config *c = parse(job);
  const char *bad[] = {"optim.lr", "=3", "optim..lr=3", ".lr=3", "optim.lr.=3", "op tim.lr=3"};
  for (int k = 0; k < 6; k++) {
    cr_assert_eq(em_config_override(c, bad[k]), EM_ERR_FORMAT, "%s accepted", bad[k]);
    assert_msg("override '", bad[k], "expected key.sub=value");
  }
  cr_assert_eq(em_config_override(c, "model.hidden=[1, 2"), EM_ERR_FORMAT);
  assert_msg("override 'model.hidden=[1, 2'", NULL, NULL);
  cr_assert_eq(em_config_override(c, "optim.lr.x=3"), EM_ERR_FORMAT, "through a scalar");
  assert_msg("override 'optim.lr.x=3'", "'optim.lr' is a scalar (job.yaml:6)", "not a mapping");
  cr_assert_eq(em_config_override(c, "model.hidden.x=3"), EM_ERR_FORMAT, "through a list");
  assert_msg("'model.hidden' is a list (job.yaml:4)", NULL, NULL);
  cr_assert_eq(em_config_override(c, "a=*x"), EM_ERR_FORMAT, "aliases");
  /* nothing was changed by the failures */
  double d;
  cr_assert_eq(em_config_num(c, "optim.lr", 0, 0, 1, &d), EM_OK);
  cr_assert_eq(d, 1e-3);
  em_config_free(c);
}

Test(config, unknown_keys_in_file_order) {
  em_config *c = parse("optim:\n"       /* 1 */
                       "  lr: 0.1\n"    /* 2 */
                       "  lrr: 0.2\n"   /* 3 */
                       "trian:\n"       /* 4 */
                       "  epochs: 3\n"  /* 5 */
                       "launch:\n"      /* 6 */
                       "  nproc: 2\n"); /* 7 */
  double d;
  int64_t i;
  cr_assert_eq(em_config_num(c, "optim.lr", 0, 0, 1, &d), EM_OK);
  cr_assert_eq(em_config_int(c, "train.epochs", 1, 1, 10, &i), EM_OK);
  em_config_ignore(c, "launch");
  cr_assert_eq(em_config_check_unused(c, NULL), EM_ERR_FORMAT);
  assert_msg("job.yaml:3: unknown key 'optim.lrr'", "(did you mean 'optim.lr'?)", NULL);
  cr_assert_eq(em_config_check_unused(c, "launch"), EM_OK);
  cr_assert_eq(em_config_check_unused(c, "nosuch"), EM_OK);
  double d2;
  cr_assert_eq(em_config_num(c, "optim.lrr", 0, 0, 1, &d2), EM_OK);
  cr_assert_eq(em_config_check_unused(c, NULL), EM_ERR_FORMAT);
  assert_msg("job.yaml:4: unknown key 'trian'", "did you mean 'train'", NULL);
  cr_assert_eq(em_config_check_unused(c, "optim"), EM_OK);
  cr_assert_eq(em_config_check_unused(c, "trian"), EM_ERR_FORMAT);
  em_config_free(c);
  /* no hint when nothing close was asked for */
  c = parse("zzz: 1\n");
  cr_assert_eq(em_config_check_unused(c, NULL), EM_ERR_FORMAT);
  assert_msg("job.yaml:1: unknown key 'zzz'", NULL, NULL);
  cr_assert_null(strstr(em_last_error(), "did you mean"));
  em_config_free(c);
}

Test(config, duplicate_keys_aliases_and_structure) {
  em_config *c = em_config_parse("a: 1\noptim:\n  lr: 1\n  m: 2\n  lr: 3\n", "dup.yaml");
  cr_assert_null(c);
  assert_msg("dup.yaml:5", "duplicate key 'optim.lr'", "first at line 3");
  c = em_config_parse("base: &b {lr: 1}\nother: *b\n", "alias.yaml");
  cr_assert_null(c);
  assert_msg("alias.yaml:1", "anchors (&b) are not supported", NULL);
  c = em_config_parse("other: *b\n", "alias.yaml");
  cr_assert_null(c, "an alias without an anchor");
  assert_msg("alias.yaml:1", NULL, NULL);
  c = em_config_parse("- 1\n- 2\n", "list.yaml");
  cr_assert_null(c);
  assert_msg("list.yaml:1", "top level must be a mapping", NULL);
  c = em_config_parse("just text\n", "s.yaml");
  cr_assert_null(c);
  assert_msg("s.yaml:1", "top level must be a mapping", NULL);
  c = em_config_parse("a: 1\n---\nb: 2\n", "two.yaml");
  cr_assert_null(c);
  assert_msg("two.yaml:2", "second YAML document", NULL);
  c = em_config_parse("a.b: 1\n", "dot.yaml");
  cr_assert_null(c);
  assert_msg("dot.yaml:1", "'a.b'", NULL);
  c = em_config_parse("[a, b]: 1\n", "key.yaml");
  cr_assert_null(c);
  assert_msg("key.yaml:1", "keys must be plain", NULL);
  /* deep nesting is refused, not a stack overflow */
  char deep[4096];
  memset(deep, '[', 2000);
  strcpy(deep + 2000, "\n");
  char text[4200];
  snprintf(text, sizeof text, "a: %s", deep);
  c = em_config_parse(text, "deep.yaml");
  cr_assert_null(c);
  assert_msg("deep.yaml:1", NULL, NULL);
  /* empty files and comment-only files are an empty mapping: all defaults */
  c = em_config_parse("# nothing\n", "empty.yaml");
  cr_assert_not_null(c, "%s", em_last_error());
  cr_assert_eq(em_config_check_unused(c, NULL), EM_OK);
  em_config_free(c);
  c = em_config_parse("", "empty.yaml");
  cr_assert_not_null(c, "%s", em_last_error());
  em_config_free(c);
}

Test(config, syntax_errors_name_line_and_column) {
  em_config *c = em_config_parse("a: 1\nb:\n  c: 2\n   d: 3\n", "bad.yaml");
  cr_assert_null(c);
  assert_msg("bad.yaml:4:", NULL, NULL);
  c = em_config_parse("a: [1, 2\nb: 3\n", "bad2.yaml");
  cr_assert_null(c);
  assert_msg("bad2.yaml:", "did not find expected", NULL);
  c = em_config_parse("a: 'unterminated\n", "bad3.yaml");
  cr_assert_null(c);
  assert_msg("bad3.yaml:", "quoted scalar", NULL);
  /* libyaml's reader finds these ahead of the parser, with a byte offset and no mark: the line
   * and column are the byte's own, not 1:1. */
  c = em_config_parse("a: 1\nb: x\001y\n", "ctl.yaml");
  cr_assert_null(c);
  assert_msg("ctl.yaml:2:5: control characters are not allowed (byte 0x01)", NULL, NULL);
  c = em_config_parse("a: 1\nb: \377\n", "utf8.yaml");
  cr_assert_null(c);
  assert_msg("utf8.yaml:2:4: invalid leading UTF-8 octet (byte 0xff)", NULL, NULL);
}

Test(config, files) {
  em_config *c = em_config_load("/nonexistent/job.yaml");
  cr_assert_null(c);
  cr_assert_eq(em_last_status(), EM_ERR_IO);
  assert_msg("/nonexistent/job.yaml", "cannot open", NULL);
  char *dir = tu_enter_tmpdir("config");
  const char *path = "test_config_job.yaml";
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs(job, f);
  fclose(f);
  c = em_config_load(path);
  cr_assert_not_null(c, "%s", em_last_error());
  cr_assert_str_eq(em_config_name(c), path);
  int64_t i;
  cr_assert_eq(em_config_int(c, "train.epochs", 1, 1, 10, &i), EM_ERR_FORMAT);
  assert_msg("test_config_job.yaml:10: ", "train.epochs", "12 is out of range [1, 10]");
  em_config_free(c);
  f = fopen(path, "w");
  fputs("a: 1\n  b: 2\n", f);
  fclose(f);
  cr_assert_null(em_config_load(path));
  assert_msg("test_config_job.yaml:2:", NULL, NULL);
  /* A file with no keys is refused (em_config_parse's empty text is every default); '{}' asks
   * for every default explicitly. */
  const char *const empties[] = {"", "\n  \n", "# only a comment\n", "~\n"};
  for (size_t i = 0; i < sizeof empties / sizeof empties[0]; i++) {
    f = fopen(path, "w");
    fputs(empties[i], f);
    fclose(f);
    cr_assert_null(em_config_load(path), "file %zu", i);
    cr_assert_eq(em_last_status(), EM_ERR_FORMAT);
    assert_msg("test_config_job.yaml: the file holds no keys", "'{}' for every default", NULL);
  }
  f = fopen(path, "w");
  fputs("{}\n", f);
  fclose(f);
  c = em_config_load(path);
  cr_assert_not_null(c, "%s", em_last_error());
  cr_assert_eq(em_config_check_unused(c, NULL), EM_OK);
  em_config_free(c);
  tu_rm_rf(dir);
}

Test(config, hash_ignores_mapping_order_and_sees_values) {
  em_config *a = parse("model: {name: mlp, hidden: [256, 128]}\noptim:\n  lr: 0.1\n  m: 0.9\n");
  em_config *b = parse("# comment\noptim:\n  m: 0.9\n  lr: 0.1\nmodel:\n  hidden:\n    - 256\n"
                       "    - 128\n  name: mlp\n");
  em_config *d = parse("model: {name: mlp, hidden: [256, 128]}\noptim:\n  lr: 0.2\n  m: 0.9\n");
  em_config *e = parse("model: {name: mlp, hidden: [128, 256]}\noptim:\n  lr: 0.1\n  m: 0.9\n");
  em_config *g = parse("x: {ab: c}\n"), *h = parse("x: {a: bc}\n");
  cr_assert_eq(em_config_hash(a), em_config_hash(b), "reordered mappings, same hash");
  cr_assert_neq(em_config_hash(a), em_config_hash(d), "a changed value");
  cr_assert_neq(em_config_hash(a), em_config_hash(e), "list order matters");
  cr_assert_neq(em_config_hash(g), em_config_hash(h), "key/value boundaries matter");
  /* an override that restores the value restores the hash; reading does not change it */
  uint64_t ha = em_config_hash(a);
  double lr;
  cr_assert_eq(em_config_num(a, "optim.lr", 0, 0, 1, &lr), EM_OK);
  cr_assert_eq(em_config_hash(a), ha);
  cr_assert_eq(em_config_override(d, "optim.lr=0.1"), EM_OK);
  cr_assert_eq(em_config_hash(a), em_config_hash(d));
  cr_assert_eq(em_config_override(d, "train.steps=5"), EM_OK);
  cr_assert_neq(em_config_hash(a), em_config_hash(d));
  em_config_free(a);
  em_config_free(b);
  em_config_free(d);
  em_config_free(e);
  em_config_free(g);
  em_config_free(h);
}

Test(config, where_names_the_source_of_a_value) {
  em_config *c = parse(job);
  char buf[128];
  cr_assert_str_eq(em_config_where(c, "optim.momentum", buf, sizeof buf), "job.yaml:7");
  cr_assert_str_eq(em_config_where(c, "optim.absent", buf, sizeof buf), "job.yaml");
  cr_assert_str_eq(em_config_where(c, "optim.lr.x", buf, sizeof buf), "job.yaml");
  cr_assert_eq(em_config_override(c, "optim.momentum=0.5"), EM_OK);
  cr_assert_str_eq(em_config_where(c, "optim.momentum", buf, sizeof buf),
                   "override 'optim.momentum=0.5'");
  cr_assert_str_eq(em_last_error(), "", "where sets no error");
  em_config_free(c);
}
