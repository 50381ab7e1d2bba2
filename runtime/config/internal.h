/* config/internal.h: the tree behind em_config (config.c builds and reads it, check.c
 * checks and hashes it). Private to those two files. */
#ifndef EMBER_CONFIG_INTERNAL_H
#define EMBER_CONFIG_INTERNAL_H

#include "em_config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 64
#define MAX_PATH 512

typedef enum { NODE_MAP, NODE_SEQ, NODE_SCALAR } node_kind;

typedef struct node node;
struct node {
  node_kind kind;
  int line;           /* 1-based; for a mapping's value, its key's line */
  const char *origin; /* the override that made it (owned by the config); NULL: the file */
  bool used;
  char *text; /* scalar: the value as written */
  bool null;  /* scalar: plain and empty, "~" or "null" */
  int n, cap;
  char **keys; /* mapping: n keys, in file order */
  node **kids; /* mapping: the n values; sequence: the n items */
};

struct em_config {
  char *name;
  node *root;
  char **overrides; /* every assignment given to em_config_override (node origins point here) */
  int n_over;
  char **asked; /* every path a getter or em_config_ignore asked for (for "did you mean") */
  int n_asked, cap_asked;
};

/* Appends ".key" (or "key" at the top) to the dotted path in path[MAX_PATH]; returns its old
 * length, to cut it back with path[old] = '\0'. */
static inline size_t path_push(char *path, const char *key) {
  size_t len = strlen(path);
  snprintf(path + len, MAX_PATH - len, "%s%s", len ? "." : "", key);
  return len;
}

/* "job.yaml:7" or "override 'optim.lr=abc'" for node n, into buf. */
const char *em__config_where(const em_config *c, const node *n, char *buf, size_t cap);
/* The node at dotted path (NULL if absent); mark: flag it and the mappings on the way as read.
 * Errors for a malformed path or one that goes through a non-mapping. */
em_status em__config_lookup(const em_config *c, const char *path, bool mark, node **out);

#endif
