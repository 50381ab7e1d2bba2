/* plan.c: from a resolved dr_plan to the command line that starts one attempt, the parsers of
 * the host lists it needs (--hosts h1:4,h2:4 and Open MPI-style hostfiles), and the checks made
 * before a launch (hosts resolve, the program exists).
 *
 * mpirun (this machine, or the hosts given):
 *
 *   mpirun -np WORLD [-H h1:N,h2:N] [--oversubscribe] [--allow-run-as-root]
 *          --bind-to core|numa|none [--map-by slot:PE=T] --mca btl_vader_single_copy_mechanism none
 *          -x EMBER_RESTART_COUNT=A -x OMP_NUM_THREADS=T -x EMBER_THREADS=T
 *          [-x EMBER_COLL_TIMEOUT=S] [-x EMBER_*...] [--mpi-args words]
 *          /abs/ddprun --agent A LOGDIR tag|quiet -- program args
 *
 * mpirun inside a Slurm allocation of N > 1 nodes (srun without pmix) adds
 *          --map-by ppr:P:node[:PE=T] (the nodes come from the allocation, not from -H)
 *
 * srun (inside a Slurm allocation, when srun offers pmix):
 *
 *   srun --mpi=pmix --nodes=N --ntasks-per-node=P --ntasks=WORLD [--nodelist=h1,h2]
 *        --cpus-per-task=T --cpu-bind=cores|ldoms|none --kill-on-bad-exit=1
 *        --export=ALL,EMBER_RESTART_COUNT=A,OMP_NUM_THREADS=T,... [--mpi-args words]
 *        /abs/ddprun --agent A LOGDIR tag|quiet -- program args */
#define _GNU_SOURCE
#include "ddprun.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

/* ---- host lists ------------------------------------------------------------------------------ */
static bool valid_host(const char *h, size_t len) {
  if (!len || len > 255) return false;
  for (size_t i = 0; i < len; i++)
    if (!isalnum((unsigned char)h[i]) && !strchr("._-", h[i])) return false;
  return true;
}

/* Appends host (name[0, len), slots) to *hosts; false if that name is already there. */
static bool add_host(dr_host **hosts, int *n, const char *name, size_t len, int slots) {
  for (int i = 0; i < *n; i++)
    if (strlen((*hosts)[i].name) == len && !strncmp((*hosts)[i].name, name, len)) return false;
  dr_host *h = realloc(*hosts, (size_t)(*n + 1) * sizeof *h);
  if (!h) dr_fatal("out of memory (host list)");
  *hosts = h;
  char *copy = dr_xmalloc(len + 1);
  memcpy(copy, name, len);
  copy[len] = 0;
  h[*n] = (dr_host){.name = copy, .slots = slots};
  (*n)++;
  return true;
}

dr_host *dr_parse_hosts(const char *spec, const char *origin, int *nhosts) {
  dr_host *hosts = NULL;
  int n = 0;
  const char *s = spec;
  if (!*s) dr_usage_error("%s: empty host list (expected host[:slots],host[:slots],...)", origin);
  for (int item = 1;; item++) {
    size_t len = strcspn(s, ",");
    size_t name_len = strcspn(s, ",:");
    long slots = 0;
    if (!valid_host(s, name_len))
      dr_usage_error("%s '%s': entry %d '%.*s' is not host[:slots] (host names use letters, "
                     "digits, '.', '_', '-')",
                     origin, spec, item, (int)len, s);
    if (name_len < len) {
      char num[32] = "";
      size_t nlen = len - name_len - 1;
      if (nlen < sizeof num) memcpy(num, s + name_len + 1, nlen), num[nlen] = 0;
      if (nlen >= sizeof num || !dr_parse_int(num, 1, 1 << 16, &slots))
        dr_usage_error("%s '%s': entry %d '%.*s': slots must be an integer >= 1", origin, spec,
                       item, (int)len, s);
    }
    if (!add_host(&hosts, &n, s, name_len, (int)slots))
      dr_usage_error("%s '%s': host '%.*s' is listed twice", origin, spec, (int)name_len, s);
    if (!s[len]) break;
    s += len + 1;
  }
  *nhosts = n;
  return hosts;
}

dr_host *dr_parse_hostfile(const char *path, int *nhosts) {
  FILE *f = fopen(path, "r");
  if (!f) dr_usage_error("--hostfile %s: cannot open: %s", path, strerror(errno));
  dr_host *hosts = NULL;
  int n = 0;
  char line[4096];
  for (int lineno = 1; fgets(line, sizeof line, f); lineno++) {
    size_t ll = strlen(line);
    if (ll == sizeof line - 1 && line[ll - 1] != '\n')
      dr_usage_error("%s:%d: line longer than %zu characters", path, lineno, sizeof line - 2);
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *save = NULL, *host = strtok_r(line, " \t\r\n", &save);
    if (!host) continue;
    size_t hlen = strcspn(host, ":");
    long slots = 0;
    if (!valid_host(host, hlen))
      dr_usage_error("%s:%d: '%s' is not a host name (letters, digits, '.', '_', '-')", path,
                     lineno, host);
    if (host[hlen] && !dr_parse_int(host + hlen + 1, 1, 1 << 16, &slots))
      dr_usage_error("%s:%d: '%s': slots must be an integer >= 1", path, lineno, host);
    for (char *tok; (tok = strtok_r(NULL, " \t\r\n", &save));) {
      long v;
      char *eq = strchr(tok, '=');
      bool is_slots = eq && (size_t)(eq - tok) == 5 && !strncmp(tok, "slots", 5);
      bool is_max = eq && (!strncmp(tok, "max_slots=", 10) || !strncmp(tok, "max-slots=", 10));
      if ((!is_slots && !is_max) || !dr_parse_int(eq + 1, 1, 1 << 16, &v))
        dr_usage_error("%s:%d: '%s': expected slots=N (N >= 1) or max_slots=N", path, lineno, tok);
      if (is_slots) slots = v;
    }
    host[hlen] = 0;
    if (!add_host(&hosts, &n, host, hlen, (int)slots))
      dr_usage_error("%s:%d: host '%s' is listed twice", path, lineno, host);
  }
  bool err = ferror(f);
  fclose(f);
  if (err) dr_usage_error("--hostfile %s: read error", path);
  if (!n) dr_usage_error("--hostfile %s: no hosts in the file", path);
  *nhosts = n;
  return hosts;
}

/* ---- before the launch ----------------------------------------------------------------------- */
/* Whether name is this machine, which mpirun does not reach over the network (its name need not
 * resolve). */
static bool is_this_host(const char *name) {
  char self[256];
  if (!strcmp(name, "localhost")) return true;
  if (gethostname(self, sizeof self) != 0) return false;
  self[sizeof self - 1] = 0;
  size_t short_len = strcspn(self, ".");
  return !strcmp(name, self) || (strlen(name) == short_len && !strncmp(name, self, short_len));
}

/* Why file cannot be executed, or NULL if it can (as execve would see it). */
static const char *exec_problem(const char *file) {
  struct stat sb;
  if (stat(file, &sb) != 0) return strerror(errno);
  if (S_ISDIR(sb.st_mode)) return "is a directory";
  if (!S_ISREG(sb.st_mode)) return "not a regular file";
  if (access(file, X_OK) != 0) return "not executable";
  return NULL;
}

/* Why execvp could not run prog, or NULL if it could: a name with a '/' as is, else the first
 * executable regular file of that name in PATH's directories (an empty entry: the current one). */
static const char *program_problem(const char *prog) {
  if (!*prog) return "empty program name";
  if (strchr(prog, '/')) return exec_problem(prog);
  const char *path = getenv("PATH");
  if (!path) path = "/bin:/usr/bin"; /* execvp's default */
  for (const char *d = path;;) {
    size_t len = strcspn(d, ":");
    char file[4096];
    int n = snprintf(file, sizeof file, "%.*s%s%s", (int)len, d, len ? "/" : "", prog);
    if (n > 0 && (size_t)n < sizeof file && !exec_problem(file)) return NULL;
    if (!d[len]) break;
    d += len + 1;
  }
  return "not found in PATH";
}

void dr_check_launch(const dr_plan *p, const char *origin) {
  /* srun knows the allocation's nodes by Slurm's names (NodeName, reached at NodeAddr), which
   * need not resolve here; only mpirun hands the names to ssh. */
  for (int i = 0; p->launcher == DR_LAUNCH_MPIRUN && i < p->nhosts; i++) {
    const char *h = p->hosts[i].name;
    if (is_this_host(h)) continue;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(h, NULL, &hints, &res);
    if (rc == 0) {
      freeaddrinfo(res);
      continue;
    }
    dr_usage_error("%s: host '%s' does not resolve: %s (nothing was started)", origin, h,
                   rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
  }
  /* Ranks elsewhere run the program there: the agent reports it if it is missing. */
  const char *why = p->local && p->prog.n ? program_problem(p->prog.v[0]) : NULL;
  if (why) dr_usage_error("program '%s': %s (nothing was started)", p->prog.v[0], why);
}

/* ---- the command ----------------------------------------------------------------------------- */
/* EMBER_* variables of our environment that ranks on other hosts would not otherwise see; the
 * ones ddprun sets itself are left out. */
static bool ours(const char *name, size_t len) {
  static const char *const set[] = {"EMBER_RESTART_COUNT", "EMBER_THREADS", "EMBER_COLL_TIMEOUT",
                                    NULL};
  for (int i = 0; set[i]; i++)
    if (strlen(set[i]) == len && !strncmp(set[i], name, len)) return true;
  return false;
}

/* The variables every rank gets, as NAME=value strings. */
static void rank_env(const dr_plan *p, int attempt, dr_strv *env) {
  dr_strv_pushf(env, "EMBER_RESTART_COUNT=%d", attempt);
  dr_strv_pushf(env, "OMP_NUM_THREADS=%d", p->threads);
  dr_strv_pushf(env, "EMBER_THREADS=%d", p->threads); /* what libember's cpu/dnnl.c reads */
  if (p->timeout_s > 0) dr_strv_pushf(env, "EMBER_COLL_TIMEOUT=%g", p->timeout_s);
}

static void agent_args(const dr_plan *p, int attempt, dr_strv *out) {
  dr_strv_push(out, p->self);
  dr_strv_push(out, "--agent");
  dr_strv_pushf(out, "%d", attempt);
  dr_strv_push(out, p->log_dir ? p->log_dir : "${TMPDIR:-/tmp}/ddprun.<pid>.XXXXXX");
  dr_strv_push(out, p->echo ? "tag" : "quiet");
  dr_strv_push(out, "--");
  for (int i = 0; i < p->prog.n; i++) dr_strv_push(out, p->prog.v[i]);
}

static void mpirun_command(const dr_plan *p, int attempt, dr_strv *out) {
  dr_strv_push(out, "mpirun");
  dr_strv_push(out, "-np");
  dr_strv_pushf(out, "%d", p->world);
  if (p->nhosts) {
    size_t cap = 1;
    for (int i = 0; i < p->nhosts; i++) cap += strlen(p->hosts[i].name) + 16;
    char *list = dr_xmalloc(cap), *o = list;
    for (int i = 0; i < p->nhosts; i++)
      o += sprintf(o, "%s%s:%d", i ? "," : "", p->hosts[i].name, p->hosts[i].procs);
    dr_strv_push(out, "-H");
    dr_strv_push(out, list);
    free(list);
  }
  if (p->alloc_nodes) { /* mpirun finds the allocation's nodes itself; P ranks on each */
    dr_strv_push(out, "--map-by");
    if (p->bind == DR_BIND_CORE && p->threads > 1)
      dr_strv_pushf(out, "ppr:%d:node:PE=%d", p->per_node, p->threads);
    else
      dr_strv_pushf(out, "ppr:%d:node", p->per_node);
  }
  if (p->oversubscribe) dr_strv_push(out, "--oversubscribe");
  if (p->root) dr_strv_push(out, "--allow-run-as-root");
  const char *overload = p->bind_overload ? ":overload-allowed" : "";
  switch (p->bind) {
  case DR_BIND_CORE:
    dr_strv_push(out, "--bind-to");
    dr_strv_pushf(out, "core%s", overload);
    if (p->threads > 1 && !p->alloc_nodes) {
      dr_strv_push(out, "--map-by");
      dr_strv_pushf(out, "slot:PE=%d", p->threads);
    }
    break;
  case DR_BIND_NUMA:
    dr_strv_push(out, "--bind-to");
    dr_strv_pushf(out, "numa%s", overload);
    break;
  default: dr_strv_push(out, "--bind-to"); dr_strv_push(out, "none");
  }
  /* Containers forbid the shared-memory transport's single-copy (CMA) mechanism. */
  dr_strv_push(out, "--mca");
  dr_strv_push(out, "btl_vader_single_copy_mechanism");
  dr_strv_push(out, "none");
  dr_strv env = {0};
  rank_env(p, attempt, &env);
  for (int i = 0; i < env.n; i++) {
    dr_strv_push(out, "-x");
    dr_strv_push(out, env.v[i]);
  }
  dr_strv_free(&env);
  for (char **e = environ; *e; e++) {
    size_t len = strcspn(*e, "=");
    if (!strncmp(*e, "EMBER_", 6) && !ours(*e, len)) {
      dr_strv_push(out, "-x");
      dr_strv_pushf(out, "%.*s", (int)len, *e);
    }
  }
  for (int i = 0; i < p->extra.n; i++) dr_strv_push(out, p->extra.v[i]);
  agent_args(p, attempt, out);
}

static void srun_command(const dr_plan *p, int attempt, dr_strv *out) {
  dr_strv_push(out, "srun");
  dr_strv_push(out, "--mpi=pmix");
  dr_strv_pushf(out, "--nodes=%d", p->nodes);
  dr_strv_pushf(out, "--ntasks-per-node=%d", p->per_node);
  dr_strv_pushf(out, "--ntasks=%d", p->world);
  if (p->nhosts) {
    size_t cap = 16;
    for (int i = 0; i < p->nhosts; i++) cap += strlen(p->hosts[i].name) + 1;
    char *list = dr_xmalloc(cap), *o = stpcpy(list, "--nodelist=");
    for (int i = 0; i < p->nhosts; i++) o += sprintf(o, "%s%s", i ? "," : "", p->hosts[i].name);
    dr_strv_push(out, list);
    free(list);
  }
  dr_strv_pushf(out, "--cpus-per-task=%d", p->threads);
  dr_strv_pushf(out, "--cpu-bind=%s",
                p->bind == DR_BIND_CORE   ? "cores"
                : p->bind == DR_BIND_NUMA ? "ldoms"
                                          : "none");
  if (p->oversubscribe) dr_strv_push(out, "--overcommit");
  dr_strv_push(out, "--kill-on-bad-exit=1");
  dr_strv env = {0};
  rank_env(p, attempt, &env);
  size_t cap = 16;
  for (int i = 0; i < env.n; i++) cap += strlen(env.v[i]) + 1;
  char *list = dr_xmalloc(cap), *o = stpcpy(list, "--export=ALL");
  for (int i = 0; i < env.n; i++) o += sprintf(o, ",%s", env.v[i]);
  dr_strv_push(out, list);
  free(list);
  dr_strv_free(&env);
  for (int i = 0; i < p->extra.n; i++) dr_strv_push(out, p->extra.v[i]);
  agent_args(p, attempt, out);
}

void dr_command(const dr_plan *p, int attempt, dr_strv *out) {
  if (p->launcher == DR_LAUNCH_SRUN)
    srun_command(p, attempt, out);
  else
    mpirun_command(p, attempt, out);
}
