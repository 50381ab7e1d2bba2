/* config/config.c: YAML configuration files (em_config.h). libyaml's event stream is built into a tree
 * of mappings, sequences and scalars, each remembering where it came from; the typed getters walk
 * dotted paths through it, mark what they read, and check types and ranges; overrides replace
 * subtrees; em_config_check_unused reports the first key nobody read.
 *
 *   root (mapping)
 *     "optim" -> mapping            line 3, used (a getter walked through it)
 *                  "lr"  -> scalar  line 4  "0.05"  used
 *                  "lrr" -> scalar  line 5  "1"     never read: "job.yaml:5: unknown key ..."
 *     "model" -> mapping            origin "model.hidden=[64]" (an override made it)
 *
 * A mapping's value carries its key's line (messages about "optim.lr" point at the key); sequence
 * items carry their own. Anchors and aliases are refused: a config is a plain tree, so that every
 * value has one place, one line, one "used" flag. Nesting is limited to MAX_DEPTH levels so that
 * no input can exhaust the stack. The unused-key check and the hash: config/check.c. */
#include "config/internal.h"
#include "em_env.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* ---- nodes ----------------------------------------------------------------------------------- */

static void node_free(node *n) {
  if (!n) return;
  for (int i = 0; i < n->n; i++) {
    if (n->keys) free(n->keys[i]);
    node_free(n->kids[i]);
  }
  free(n->keys);
  free(n->kids);
  free(n->text);
  free(n);
}

static node *node_new(node_kind kind, int line, const char *origin) {
  node *n = calloc(1, sizeof *n);
  if (!n) {
    em_set_error(EM_ERR_NOMEM, "config: out of memory");
    return NULL;
  }
  n->kind = kind;
  n->line = line;
  n->origin = origin;
  return n;
}

/* Appends kid (and key, copied, for a mapping). On failure kid is freed. */
static em_status node_append(node *n, const char *key, node *kid) {
  if (n->n == n->cap) {
    int cap = n->cap ? 2 * n->cap : 4;
    node **kids = realloc(n->kids, (size_t)cap * sizeof *kids);
    if (kids) n->kids = kids;
    char **keys = NULL;
    if (kids && n->kind == NODE_MAP) {
      keys = realloc(n->keys, (size_t)cap * sizeof *keys);
      if (keys) n->keys = keys;
    }
    if (!kids || (n->kind == NODE_MAP && !keys)) {
      node_free(kid);
      return em_set_error(EM_ERR_NOMEM, "config: out of memory");
    }
    n->cap = cap;
  }
  if (n->kind == NODE_MAP) {
    char *k = strdup(key);
    if (!k) {
      node_free(kid);
      return em_set_error(EM_ERR_NOMEM, "config: out of memory");
    }
    n->keys[n->n] = k;
  }
  n->kids[n->n++] = kid;
  return EM_OK;
}

static int map_find(const node *m, const char *key, size_t len) {
  for (int i = 0; i < m->n; i++)
    if (strlen(m->keys[i]) == len && !strncmp(m->keys[i], key, len)) return i;
  return -1;
}

static void mark_used(node *n) {
  n->used = true;
  for (int i = 0; i < n->n; i++) mark_used(n->kids[i]);
}

static void set_origin(node *n, const char *origin) {
  n->origin = origin;
  for (int i = 0; i < n->n; i++) set_origin(n->kids[i], origin);
}

static const char *kind_name(const node *n) {
  if (n->kind == NODE_MAP) return "a mapping";
  if (n->kind == NODE_SEQ) return "a list";
  return n->null ? "an empty value" : "a scalar";
}

/* "job.yaml:7" or "override 'optim.lr=abc'". */
const char *em__config_where(const em_config *c, const node *n, char *buf, size_t cap) {
  if (n->origin)
    snprintf(buf, cap, "override '%s'", n->origin);
  else
    snprintf(buf, cap, "%s:%d", c->name, n->line);
  return buf;
}

/* ---- parsing (libyaml events -> tree) ------------------------------------------------------ */

typedef struct {
  yaml_parser_t p;
  const char *name;   /* file name for messages */
  const char *origin; /* override string, or NULL when reading a file */
  const char *text;   /* what is parsed, [0, len): reader errors give an offset into it */
  size_t len;
} reader;

/* "job.yaml:3:7" or "override 'a=b'" for an event's start. */
static const char *mark_str(const reader *r, yaml_mark_t m, char *buf, size_t cap) {
  if (r->origin)
    snprintf(buf, cap, "override '%s'", r->origin);
  else
    snprintf(buf, cap, "%s:%d:%d", r->name, (int)m.line + 1, (int)m.column + 1);
  return buf;
}

/* libyaml's reader errors (a control character, bad UTF-8: found while decoding ahead of the
 * parser, so its mark is still at the start) come with a byte offset instead: the mark from the
 * text itself. */
static yaml_mark_t offset_mark(const reader *r, size_t offset) {
  yaml_mark_t m = {0};
  for (size_t i = 0; i < offset && i < r->len; i++) {
    m.column = r->text[i] == '\n' ? 0 : m.column + 1;
    m.line += r->text[i] == '\n';
  }
  return m;
}

static em_status next_event(reader *r, yaml_event_t *ev) {
  if (yaml_parser_parse(&r->p, ev)) return EM_OK;
  char at[600];
  const char *problem = r->p.problem ? r->p.problem : "malformed YAML";
  if (r->p.error == YAML_READER_ERROR) {
    char byte[32] = "";
    if (r->p.problem_value >= 0) snprintf(byte, sizeof byte, " (byte 0x%02x)", r->p.problem_value);
    return em_set_error(EM_ERR_FORMAT, "%s: %s%s",
                        mark_str(r, offset_mark(r, r->p.problem_offset), at, sizeof at), problem,
                        byte);
  }
  if (r->p.context)
    return em_set_error(EM_ERR_FORMAT, "%s: %s (%s at line %d)",
                        mark_str(r, r->p.problem_mark, at, sizeof at), problem, r->p.context,
                        (int)r->p.context_mark.line + 1);
  return em_set_error(EM_ERR_FORMAT, "%s: %s", mark_str(r, r->p.problem_mark, at, sizeof at),
                      problem);
}

/* Appends ".key" (or "key" at the top) to path for messages; returns the old length. */
static em_status build(reader *r, yaml_event_t *ev, int depth, char *path, node **out);

/* Builds a mapping's entries up to its end event. */
static em_status build_map(reader *r, node *m, int depth, char *path) {
  char at[600];
  for (;;) {
    yaml_event_t kev;
    em_status st = next_event(r, &kev);
    if (st != EM_OK) return st;
    if (kev.type == YAML_MAPPING_END_EVENT) {
      yaml_event_delete(&kev);
      return EM_OK;
    }
    if (kev.type != YAML_SCALAR_EVENT || kev.data.scalar.anchor) {
      mark_str(r, kev.start_mark, at, sizeof at);
      yaml_event_delete(&kev);
      return em_set_error(EM_ERR_FORMAT, "%s: %s%skeys must be plain names", at, path,
                          *path ? ": " : "");
    }
    const char *key = (const char *)kev.data.scalar.value;
    int line = (int)kev.start_mark.line + 1;
    st = EM_OK;
    if (!*key || strchr(key, '.') || strlen(key) >= MAX_PATH / 2)
      st = em_set_error(EM_ERR_FORMAT, "%s: key '%s'%s%s must be non-empty, short, without '.'",
                        mark_str(r, kev.start_mark, at, sizeof at), key, *path ? " under " : "",
                        path);
    int dup = st == EM_OK ? map_find(m, key, strlen(key)) : -1;
    size_t old = path_push(path, key);
    if (dup >= 0)
      st = em_set_error(EM_ERR_FORMAT, "%s: duplicate key '%s' (first at line %d)",
                        mark_str(r, kev.start_mark, at, sizeof at), path, m->kids[dup]->line);
    char *k = st == EM_OK ? strdup(key) : NULL;
    if (st == EM_OK && !k) st = em_set_error(EM_ERR_NOMEM, "config: out of memory");
    yaml_event_delete(&kev);
    node *v = NULL;
    yaml_event_t vev;
    if (st == EM_OK && (st = next_event(r, &vev)) == EM_OK)
      st = build(r, &vev, depth + 1, path, &v);
    path[old] = '\0';
    if (st == EM_OK) {
      v->line = line;
      st = node_append(m, k, v);
    }
    free(k);
    if (st != EM_OK) return st;
  }
}

/* Builds the node that starts with ev (deleted here) and everything under it. */
static em_status build(reader *r, yaml_event_t *ev, int depth, char *path, node **out) {
  char at[600];
  em_status st = EM_OK;
  *out = NULL;
  int line = (int)ev->start_mark.line + 1;
  const yaml_char_t *anchor = NULL;
  if (ev->type == YAML_SCALAR_EVENT) anchor = ev->data.scalar.anchor;
  if (ev->type == YAML_SEQUENCE_START_EVENT) anchor = ev->data.sequence_start.anchor;
  if (ev->type == YAML_MAPPING_START_EVENT) anchor = ev->data.mapping_start.anchor;
  if (ev->type == YAML_ALIAS_EVENT) {
    st = em_set_error(EM_ERR_FORMAT, "%s: %s%saliases (*%s) are not supported: write the value",
                      mark_str(r, ev->start_mark, at, sizeof at), path, *path ? ": " : "",
                      (const char *)ev->data.alias.anchor);
  } else if (anchor) {
    st = em_set_error(EM_ERR_FORMAT, "%s: %s%sanchors (&%s) are not supported",
                      mark_str(r, ev->start_mark, at, sizeof at), path, *path ? ": " : "",
                      (const char *)anchor);
  } else if (depth > MAX_DEPTH) {
    st = em_set_error(EM_ERR_FORMAT, "%s: %s: nested deeper than %d levels",
                      mark_str(r, ev->start_mark, at, sizeof at), path, MAX_DEPTH);
  } else if (ev->type == YAML_SCALAR_EVENT) {
    node *n = node_new(NODE_SCALAR, line, r->origin);
    const char *v = (const char *)ev->data.scalar.value;
    if (n && !(n->text = strdup(v))) {
      node_free(n);
      n = NULL;
      em_set_error(EM_ERR_NOMEM, "config: out of memory");
    }
    if (n)
      n->null = ev->data.scalar.plain_implicit && (!*v || !strcmp(v, "~") || !strcmp(v, "null") ||
                                                   !strcmp(v, "Null") || !strcmp(v, "NULL"));
    *out = n;
    st = n ? EM_OK : em_last_status();
  } else if (ev->type == YAML_SEQUENCE_START_EVENT || ev->type == YAML_MAPPING_START_EVENT) {
    bool map = ev->type == YAML_MAPPING_START_EVENT;
    node *n = node_new(map ? NODE_MAP : NODE_SEQ, line, r->origin);
    if (!n) st = em_last_status();
    if (n && map) st = build_map(r, n, depth, path);
    while (n && !map && st == EM_OK) {
      yaml_event_t iev;
      if ((st = next_event(r, &iev)) != EM_OK) break;
      if (iev.type == YAML_SEQUENCE_END_EVENT) {
        yaml_event_delete(&iev);
        break;
      }
      node *item = NULL;
      if ((st = build(r, &iev, depth + 1, path, &item)) == EM_OK) st = node_append(n, NULL, item);
    }
    if (st != EM_OK)
      node_free(n);
    else
      *out = n;
  } else {
    st = em_set_error(EM_ERR_FORMAT, "%s: unexpected YAML event %d",
                      mark_str(r, ev->start_mark, at, sizeof at), (int)ev->type);
  }
  yaml_event_delete(ev);
  return st;
}

/* Parses one document from text[0, len) into *out (NULL for an empty stream). */
static em_status parse_document(const char *text, size_t len, const char *name, const char *origin,
                                node **out) {
  reader r = {.name = name, .origin = origin, .text = text, .len = len};
  *out = NULL;
  if (!yaml_parser_initialize(&r.p)) return em_set_error(EM_ERR_NOMEM, "config: out of memory");
  yaml_parser_set_input_string(&r.p, (const unsigned char *)text, len);
  char path[MAX_PATH] = "", at[600];
  node *root = NULL;
  yaml_event_t ev;
  em_status st = next_event(&r, &ev); /* stream start */
  if (st == EM_OK) {
    yaml_event_delete(&ev);
    st = next_event(&r, &ev);
  }
  if (st == EM_OK && ev.type == YAML_DOCUMENT_START_EVENT) {
    yaml_event_delete(&ev);
    if ((st = next_event(&r, &ev)) == EM_OK) st = build(&r, &ev, 0, path, &root);
    if (st == EM_OK) st = next_event(&r, &ev); /* document end */
    if (st == EM_OK) {
      yaml_event_delete(&ev);
      st = next_event(&r, &ev);
    }
    if (st == EM_OK && ev.type != YAML_STREAM_END_EVENT) {
      st = em_set_error(EM_ERR_FORMAT, "%s: a second YAML document: one is allowed",
                        mark_str(&r, ev.start_mark, at, sizeof at));
    }
  }
  if (st == EM_OK) yaml_event_delete(&ev);
  yaml_parser_delete(&r.p);
  if (st != EM_OK) {
    node_free(root);
    return st;
  }
  *out = root;
  return EM_OK;
}

/* empty_ok: text with no YAML node at all (empty, blank or only comments) is an empty mapping;
 * otherwise an error. */
static em_config *parse_text(const char *text, size_t len, const char *name, bool empty_ok) {
  em_config *c = calloc(1, sizeof *c);
  if (!c || !(c->name = strdup(name ? name : "<config>"))) {
    free(c);
    em_set_error(EM_ERR_NOMEM, "config: out of memory");
    return NULL;
  }
  node *root = NULL;
  if (parse_document(text, len, c->name, NULL, &root) != EM_OK) {
    em_config_free(c);
    return NULL;
  }
  if (!root || (root->kind == NODE_SCALAR && root->null)) { /* nothing: all defaults, if allowed */
    if (!empty_ok) {
      em_set_error(EM_ERR_FORMAT,
                   "%s: the file holds no keys (empty, or only comments): expected a mapping "
                   "(key: value lines; '{}' for every default)",
                   c->name);
      node_free(root);
      em_config_free(c);
      return NULL;
    }
    node_free(root);
    root = node_new(NODE_MAP, 1, NULL);
    if (!root) {
      em_config_free(c);
      return NULL;
    }
  } else if (root->kind != NODE_MAP) {
    em_set_error(EM_ERR_FORMAT,
                 "%s:%d: the top level must be a mapping (key: value lines), "
                 "got %s",
                 c->name, root->line, kind_name(root));
    node_free(root);
    em_config_free(c);
    return NULL;
  }
  c->root = root;
  return c;
}

em_config *em_config_parse(const char *text, const char *name) {
  if (!text) {
    em_set_error(EM_ERR_INVALID, "em_config_parse: text is NULL");
    return NULL;
  }
  return parse_text(text, strlen(text), name, true);
}

em_config *em_config_load(const char *path) {
  if (!path) {
    em_set_error(EM_ERR_INVALID, "em_config_load: path is NULL");
    return NULL;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    em_set_error(EM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      size_t ncap = cap ? 2 * cap : 4096;
      char *nb = ncap > (64u << 20) ? NULL : realloc(buf, ncap);
      if (!nb) {
        free(buf);
        fclose(f);
        em_set_error(EM_ERR_FORMAT, "%s: larger than 64 MiB or out of memory", path);
        return NULL;
      }
      buf = nb;
      cap = ncap;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  bool bad = ferror(f);
  int err = errno;
  fclose(f);
  if (bad) {
    free(buf);
    em_set_error(EM_ERR_IO, "%s: read error: %s", path, strerror(err));
    return NULL;
  }
  /* A job file with nothing in it is a mistake (a wrong path, a truncated copy), never a request
   * for every default: that is '{}'. */
  em_config *c = parse_text(buf, len, path, false);
  free(buf);
  return c;
}

void em_config_free(em_config *c) {
  if (!c) return;
  node_free(c->root);
  for (int i = 0; i < c->n_over; i++) free(c->overrides[i]);
  free(c->overrides);
  for (int i = 0; i < c->n_asked; i++) free(c->asked[i]);
  free(c->asked);
  free(c->name);
  free(c);
}

/* ---- paths ----------------------------------------------------------------------------------- */

static bool path_ok(const char *path) {
  if (!path || !*path || strlen(path) >= MAX_PATH) return false;
  for (const char *s = path; *s; s++)
    if (*s == '.' && (s == path || s[1] == '.' || s[1] == '\0')) return false;
  return true;
}

/* Remembers path as asked for (hints for unknown keys); failure to remember is harmless. */
static void remember(em_config *c, const char *path) {
  for (int i = 0; i < c->n_asked; i++)
    if (!strcmp(c->asked[i], path)) return;
  if (c->n_asked == c->cap_asked) {
    int cap = c->cap_asked ? 2 * c->cap_asked : 32;
    char **a = realloc(c->asked, (size_t)cap * sizeof *a);
    if (!a) return;
    c->asked = a;
    c->cap_asked = cap;
  }
  if ((c->asked[c->n_asked] = strdup(path))) c->n_asked++;
}

/* *out = the node at path, or NULL when absent. A component that goes through a sequence or a
 * scalar is an error. mark: mark the mappings walked through as used. */
em_status em__config_lookup(const em_config *c, const char *path, bool mark, node **out) {
  *out = NULL;
  if (!c) return em_set_error(EM_ERR_INVALID, "config: NULL config");
  if (!path_ok(path)) return em_set_error(EM_ERR_INVALID, "config: bad key path '%s'", path);
  node *cur = c->root;
  const char *s = path;
  for (;;) {
    const char *dot = strchr(s, '.');
    size_t len = dot ? (size_t)(dot - s) : strlen(s);
    if (cur->kind != NODE_MAP) {
      char at[600];
      return em_set_error(EM_ERR_FORMAT, "%s: %.*s: expected a mapping holding '%s', got %s",
                          em__config_where(c, cur, at, sizeof at), (int)(s - 1 - path), path, path,
                          kind_name(cur));
    }
    if (mark) cur->used = true;
    int i = map_find(cur, s, len);
    if (i < 0) return EM_OK;
    cur = cur->kids[i];
    if (!dot) break;
    s = dot + 1;
  }
  *out = cur;
  return EM_OK;
}

/* The scalar at path for a getter: *n NULL when absent; an error when it is not a scalar. */
static em_status get_scalar(em_config *c, const char *path, const char *expected, node **n) {
  em_status st = em__config_lookup(c, path, true, n);
  if (st != EM_OK) return st;
  remember(c, path);
  if (!*n) return EM_OK;
  (*n)->used = true;
  if ((*n)->kind != NODE_SCALAR) {
    char at[600];
    return em_set_error(EM_ERR_FORMAT, "%s: %s: expected %s, got %s",
                        em__config_where(c, *n, at, sizeof at), path, expected, kind_name(*n));
  }
  return EM_OK;
}

bool em_config_has(const em_config *c, const char *path) {
  node *n = NULL;
  em_status st = em__config_lookup(c, path, false, &n);
  if (st != EM_OK) em_clear_error();
  return n != NULL;
}

void em_config_ignore(em_config *c, const char *path) {
  node *n = NULL;
  if (em__config_lookup(c, path, true, &n) != EM_OK) {
    em_clear_error();
    return;
  }
  remember(c, path);
  if (n) mark_used(n);
}

/* ---- scalars --------------------------------------------------------------------------------- */

static em_status int_value(em_config *c, const node *n, const char *path, int64_t lo, int64_t hi,
                           int64_t *out) {
  char at[600];
  int64_t v;
  if (n->null || !em_parse_int(n->text, &v))
    return em_set_error(EM_ERR_FORMAT, "%s: %s: expected an integer, got %s%s%s",
                        em__config_where(c, n, at, sizeof at), path,
                        n->null ? "an empty value" : "'", n->null ? "" : n->text,
                        n->null ? "" : "'");
  if (v < lo || v > hi)
    return em_set_error(EM_ERR_FORMAT, "%s: %s: %lld is out of range [%lld, %lld]",
                        em__config_where(c, n, at, sizeof at), path, (long long)v, (long long)lo,
                        (long long)hi);
  *out = v;
  return EM_OK;
}

em_status em_config_int(em_config *c, const char *path, int64_t def, int64_t lo, int64_t hi,
                        int64_t *out) {
  node *n;
  em_status st = get_scalar(c, path, "an integer", &n);
  if (st != EM_OK) return st;
  if (!n) {
    *out = def;
    return EM_OK;
  }
  return int_value(c, n, path, lo, hi, out);
}

em_status em_config_num(em_config *c, const char *path, double def, double lo, double hi,
                        double *out) {
  node *n;
  em_status st = get_scalar(c, path, "a number", &n);
  if (st != EM_OK) return st;
  if (!n) {
    *out = def;
    return EM_OK;
  }
  char at[600];
  double v;
  if (n->null || !em_parse_num(n->text, &v))
    return em_set_error(EM_ERR_FORMAT, "%s: %s: expected a (finite) number, got %s%s%s",
                        em__config_where(c, n, at, sizeof at), path,
                        n->null ? "an empty value" : "'", n->null ? "" : n->text,
                        n->null ? "" : "'");
  if (!(v >= lo && v <= hi))
    return em_set_error(EM_ERR_FORMAT, "%s: %s: %g is out of range [%g, %g]",
                        em__config_where(c, n, at, sizeof at), path, v, lo, hi);
  *out = v;
  return EM_OK;
}

em_status em_config_bool(em_config *c, const char *path, bool def, bool *out) {
  node *n;
  em_status st = get_scalar(c, path, "true or false", &n);
  if (st != EM_OK) return st;
  if (!n) {
    *out = def;
    return EM_OK;
  }
  static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
  for (int i = 0; i < 3; i++) {
    if (!strcasecmp(n->text, yes[i])) {
      *out = true;
      return EM_OK;
    }
    if (!strcasecmp(n->text, no[i])) {
      *out = false;
      return EM_OK;
    }
  }
  char at[600];
  return em_set_error(EM_ERR_FORMAT, "%s: %s: expected true/false (yes/no, on/off), got '%s'",
                      em__config_where(c, n, at, sizeof at), path, n->text);
}

em_status em_config_str(em_config *c, const char *path, const char *def, const char **out) {
  node *n;
  em_status st = get_scalar(c, path, "a string", &n);
  if (st != EM_OK) return st;
  *out = !n ? def : n->null ? "" : n->text;
  return EM_OK;
}

em_status em_config_enum(em_config *c, const char *path, const char *def,
                         const char *const *choices, int *out) {
  if (!choices) return em_set_error(EM_ERR_INVALID, "em_config_enum: %s: no choices", path);
  const char *v;
  em_status st = em_config_str(c, path, def, &v);
  if (st != EM_OK) return st;
  for (int i = 0; v && choices[i]; i++)
    if (!strcmp(v, choices[i])) {
      *out = i;
      return EM_OK;
    }
  char list[400] = "";
  for (int i = 0; choices[i]; i++) {
    size_t len = strlen(list);
    snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", choices[i]);
  }
  node *n = NULL;
  (void)em__config_lookup(c, path, false, &n);
  if (!n)
    return em_set_error(EM_ERR_INVALID, "em_config_enum: %s: default '%s' is not one of %s", path,
                        def ? def : "(null)", list);
  char at[600];
  return em_set_error(EM_ERR_FORMAT, "%s: %s: '%s' is not one of %s",
                      em__config_where(c, n, at, sizeof at), path, v, list);
}

em_status em_config_int_list(em_config *c, const char *path, const int64_t *def, int ndef,
                             int64_t lo, int64_t hi, int64_t *out, int max, int *n) {
  node *s = NULL;
  em_status st = em__config_lookup(c, path, true, &s);
  if (st != EM_OK) return st;
  remember(c, path);
  char at[600];
  if (!s) {
    if (ndef > max)
      return em_set_error(EM_ERR_INVALID, "em_config_int_list: %s: %d defaults, room for %d", path,
                          ndef, max);
    for (int i = 0; i < ndef; i++) out[i] = def[i];
    *n = ndef;
    return EM_OK;
  }
  mark_used(s);
  if (s->kind != NODE_SEQ)
    return em_set_error(EM_ERR_FORMAT,
                        "%s: %s: expected a list of integers ([a, b, ...]), got %s%s%s%s",
                        em__config_where(c, s, at, sizeof at), path, kind_name(s),
                        s->kind == NODE_SCALAR && !s->null ? " '" : "",
                        s->kind == NODE_SCALAR && !s->null ? s->text : "",
                        s->kind == NODE_SCALAR && !s->null ? "'" : "");
  if (s->n > max)
    return em_set_error(EM_ERR_FORMAT, "%s: %s: %d items, at most %d allowed",
                        em__config_where(c, s, at, sizeof at), path, s->n, max);
  for (int i = 0; i < s->n; i++) {
    node *it = s->kids[i];
    char item[MAX_PATH + 16];
    snprintf(item, sizeof item, "%s[%d]", path, i);
    if (it->kind != NODE_SCALAR)
      return em_set_error(EM_ERR_FORMAT, "%s: %s: expected an integer, got %s",
                          em__config_where(c, it, at, sizeof at), item, kind_name(it));
    if ((st = int_value(c, it, item, lo, hi, &out[i])) != EM_OK) return st;
  }
  *n = s->n;
  return EM_OK;
}

/* ---- overrides ------------------------------------------------------------------------------- */

em_status em_config_override(em_config *c, const char *assignment) {
  if (!c || !assignment) return em_set_error(EM_ERR_INVALID, "em_config_override: NULL argument");
  char **ov = realloc(c->overrides, (size_t)(c->n_over + 1) * sizeof *ov);
  if (!ov) return em_set_error(EM_ERR_NOMEM, "config: out of memory");
  c->overrides = ov;
  char *a = strdup(assignment);
  if (!a) return em_set_error(EM_ERR_NOMEM, "config: out of memory");
  c->overrides[c->n_over++] = a; /* node origins point at it: kept until em_config_free */
  const char *eq = strchr(a, '=');
  size_t klen = eq ? (size_t)(eq - a) : 0;
  char key[MAX_PATH];
  bool ok = eq && klen > 0 && klen < sizeof key;
  if (ok) {
    memcpy(key, a, klen);
    key[klen] = '\0';
    ok = path_ok(key);
    for (size_t i = 0; ok && i < klen; i++) ok = !isspace((unsigned char)key[i]);
  }
  if (!ok)
    return em_set_error(EM_ERR_FORMAT,
                        "override '%s': expected key.sub=value (a dotted key "
                        "without spaces, '=', then a YAML value)",
                        a);
  node *v = NULL;
  em_status st = parse_document(eq + 1, strlen(eq + 1), c->name, a, &v);
  if (st != EM_OK) return st;
  if (!v && !(v = node_new(NODE_SCALAR, 0, a))) return em_last_status();
  if (!v->text && v->kind == NODE_SCALAR && !(v->text = strdup(""))) {
    node_free(v);
    return em_set_error(EM_ERR_NOMEM, "config: out of memory");
  }
  if (v->kind == NODE_SCALAR && !*v->text) v->null = true;
  set_origin(v, a);
  node *cur = c->root;
  for (char *s = key;;) {
    char *dot = strchr(s, '.');
    if (dot) *dot = '\0';
    int i = map_find(cur, s, strlen(s));
    if (!dot) {
      v->line = 0;
      if (i >= 0) {
        node_free(cur->kids[i]);
        cur->kids[i] = v;
        return EM_OK;
      }
      return node_append(cur, s, v);
    }
    if (i < 0) {
      node *m = node_new(NODE_MAP, 0, a);
      if (!m || node_append(cur, s, m) != EM_OK) {
        node_free(v);
        return em_last_status();
      }
      i = cur->n - 1;
    }
    node *next = cur->kids[i];
    if (next->kind != NODE_MAP) {
      char at[600];
      em__config_where(c, next, at, sizeof at);
      node_free(v);
      return em_set_error(EM_ERR_FORMAT, "override '%s': '%s' is %s (%s), not a mapping", a, key,
                          kind_name(next), at);
    }
    cur = next;
    *dot = '.';
    s = dot + 1;
  }
}

const char *em_config_name(const em_config *c) { return c ? c->name : NULL; }

const char *em_config_where(const em_config *c, const char *path, char *buf, size_t cap) {
  node *n = NULL;
  if (c && em__config_lookup(c, path, false, &n) != EM_OK) em_clear_error();
  if (n)
    em__config_where(c, n, buf, cap);
  else
    snprintf(buf, cap, "%s", c ? c->name : "<config>");
  return buf;
}
