/* config/check.c: what a program asks of its configuration once it has read it (em_config.h):
 * em_config_check_unused finds the first key nobody read, with a "did you mean" from the paths
 * the program did ask for; em_config_hash fingerprints the effective tree (mappings in key order,
 * so reordering a file does not change it). The tree itself: config.c. */
#include "config/internal.h"
#include "core/hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the unused-key check -------------------------------------------------------------------- */

static int edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63) return 99;
  int prev[64], cur[64];
  for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    cur[0] = (int)i;
    for (size_t j = 1; j <= lb; j++) {
      int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
      int del = prev[j] + 1, ins = cur[j - 1] + 1;
      cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
    }
    memcpy(prev, cur, (lb + 1) * sizeof *prev);
  }
  return prev[lb];
}

/* Writes " (did you mean 'optim.lr'?)" into hint when a path the program asked for differs from
 * path only in its last component, by an edit distance of at most 2. */
static void did_you_mean(const em_config *c, const char *path, char *hint, size_t cap) {
  hint[0] = '\0';
  const char *last = strrchr(path, '.');
  size_t plen = last ? (size_t)(last - path) + 1 : 0; /* "optim." */
  last = last ? last + 1 : path;
  int best = 3;
  for (int i = 0; i < c->n_asked; i++) {
    const char *a = c->asked[i];
    if (strncmp(a, path, plen) || (plen && a[plen - 1] != '.')) continue;
    char comp[MAX_PATH];
    const char *end = strchr(a + plen, '.');
    size_t len = end ? (size_t)(end - a - plen) : strlen(a + plen);
    if (len >= sizeof comp) continue;
    memcpy(comp, a + plen, len);
    comp[len] = '\0';
    int d = edit_distance(comp, last);
    if (d > 0 && d < best) {
      best = d;
      snprintf(hint, cap, " (did you mean '%.*s%s'?)", (int)plen, path, comp);
    }
  }
}

/* The first unread key under m (file order), its path written into path. */
static const node *first_unused(const node *m, char *path) {
  for (int i = 0; i < m->n; i++) {
    const node *k = m->kids[i];
    size_t old = path_push(path, m->keys[i]);
    if (!k->used) return k; /* a mapping nobody walked into is reported whole */
    if (k->kind == NODE_MAP) {
      const node *u = first_unused(k, path);
      if (u) return u;
    }
    path[old] = '\0';
  }
  return NULL;
}

em_status em_config_check_unused(const em_config *c, const char *prefix) {
  if (!c) return em_set_error(EM_ERR_INVALID, "em_config_check_unused: NULL config");
  char path[MAX_PATH] = "";
  const node *top = c->root, *u = NULL;
  if (prefix && *prefix) {
    node *p;
    em_status st = em__config_lookup(c, prefix, false, &p);
    if (st != EM_OK) return st;
    if (!p) return EM_OK;
    snprintf(path, sizeof path, "%s", prefix);
    if (p->kind != NODE_MAP) u = p->used ? NULL : p;
    top = p->kind == NODE_MAP ? p : NULL;
  }
  if (top) u = first_unused(top, path);
  if (!u) return EM_OK;
  char at[600], hint[MAX_PATH + 40];
  did_you_mean(c, path, hint, sizeof hint);
  return em_set_error(EM_ERR_FORMAT, "%s: unknown key '%s'%s",
                      em__config_where(c, u, at, sizeof at), path, hint);
}

/* ---- hash ------------------------------------------------------------------------------------ */

static uint64_t fnv_str(uint64_t h, const char *s) {
  uint64_t len = strlen(s);
  h = em__fnv1a(h, &len, sizeof len);
  return em__fnv1a(h, s, len);
}

typedef struct {
  const char *key;
  const node *val;
} entry;

static int cmp_entries(const void *a, const void *b) {
  return strcmp(((const entry *)a)->key, ((const entry *)b)->key);
}

/* Canonical form: a kind tag, then a scalar's text (or null), a sequence's items in order, a
 * mapping's (key, value) pairs in key order. Lines, origins and "used" do not count. */
static uint64_t hash_node(uint64_t h, const node *n) {
  char tag = n->kind == NODE_MAP ? 'M' : n->kind == NODE_SEQ ? 'L' : n->null ? 'N' : 'S';
  h = em__fnv1a(h, &tag, 1);
  if (n->kind == NODE_SCALAR) return n->null ? h : fnv_str(h, n->text);
  uint64_t count = (uint64_t)n->n;
  h = em__fnv1a(h, &count, sizeof count);
  if (n->kind == NODE_SEQ) {
    for (int i = 0; i < n->n; i++) h = hash_node(h, n->kids[i]);
    return h;
  }
  entry stack_e[32], *e = n->n <= 32 ? stack_e : malloc((size_t)n->n * sizeof *e);
  if (!e) { /* out of memory: file order (still deterministic for one file) */
    for (int i = 0; i < n->n; i++) h = hash_node(fnv_str(h, n->keys[i]), n->kids[i]);
    return h;
  }
  for (int i = 0; i < n->n; i++) e[i] = (entry){n->keys[i], n->kids[i]};
  qsort(e, (size_t)n->n, sizeof *e, cmp_entries);
  for (int i = 0; i < n->n; i++) h = hash_node(fnv_str(h, e[i].key), e[i].val);
  if (e != stack_e) free(e);
  return h;
}

uint64_t em_config_hash(const em_config *c) { return c ? hash_node(EM__FNV_OFFSET, c->root) : 0; }
