/* test_ddp_misc.c: determinism, the timeline file, statistics and bucket layout of ddp_wrap.
 *
 *   mpirun.sh NP LIMIT test_ddp_misc TIMELINE_PATTERN      (e.g. /tmp/x/ddp_tl_%r.json)
 *
 *   determinism  the same run twice in one program (re-seed, rebuild, rewrap after ddp_free):
 *                bit-identical parameters, on every rank
 *   timeline     ddp_options.timeline with "%r": after 3 steps the file is valid JSON once "]"
 *                is appended, and after ddp_free as it is (python3's json module); it holds
 *                "backward", "all-reduce bucket 0" and "optimizer step" events
 *   stats        after a step: steps, n_buckets (= what ddp_bucket_numel reports), comm_s > 0,
 *                backward_s > 0; the buckets cover every parameter once, bucket 0 holds the last
 *                registered one, and every .grad is a view into one shared buffer, which is
 *                node-shared memory unless EMBER_COLL_SHM=0 (buckets_shared)
 *   comm hook    a user hook (all-reduce SUM instead of the default average) is called once per
 *                bucket in bucket order, and its result is the gradient: W times the default's
 *   overlap off  every bucket reduced after backward: the same gradients bit for bit, and no
 *                communication overlapped with backward (ddp_get_stats)
 *   overlap auto on when this rank may count on more CPUs than em_num_threads (the rule in
 *                ddp.h, from sched_getaffinity and the node's ranks here), checked with 1
 *                thread and with as many threads as CPUs (then off); EMBER_DDP_OVERLAP=on/off overrides auto, a bad
 *                value fails ddp_wrap on every rank naming the variable */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "ddp_util.h"

#include <sched.h>
#include <unistd.h>

enum { STEPS = 3 };

/* Trains the MLP for STEPS steps on this rank's share; returns its arena snapshot. */
static float *run(const char *timeline, bool check_stats, int64_t *n) {
  em_manual_seed(21);
  em_module *m = em_mlp(20, (int[]){64, 64}, 2, DU_CLASSES);
  ddp_model *d = ddp_wrap(m, &(ddp_options){.bucket_cap_mb = 0.01, .timeline = timeline});
  CHECK(d != NULL, "ddp_wrap: %s", em_last_error());
  em_optim *opt = em_sgd(em_parameters(m), .lr = 0.1, .momentum = 0.9);
  int off, len;
  du_share(DU_GLOBAL_BATCH, ddp_world_size(), ddp_rank(), &off, &len);
  for (int s = 0; s < STEPS && d && opt; s++) {
    em_scope sc = em_scope_begin();
    em_tensor *x = du_inputs(2, s, 2, (int64_t[]){DU_GLOBAL_BATCH, 20});
    em_tensor *y = du_labels(2, s, DU_GLOBAL_BATCH, DU_CLASSES);
    CHECK_OK(em_backward(
        em_cross_entropy(em_forward(m, em_narrow(x, 0, off, len)), em_narrow(y, 0, off, len))));
    CHECK_OK(em_step(opt));
    CHECK_OK(em_zero_grad(opt));
    em_scope_end(sc);
  }
  if (check_stats && d) {
    ddp_stats st = ddp_get_stats(d);
    CHECK(st.steps == STEPS, "stats.steps %lld, want %d", (long long)st.steps, STEPS);
    CHECK(st.comm_s > 0 && st.backward_s > 0, "comm_s %g, backward_s %g", st.comm_s, st.backward_s);
    CHECK(st.comm_exposed_s >= 0 && st.comm_overlapped_s >= 0, "exposed %g, overlapped %g",
          st.comm_exposed_s, st.comm_overlapped_s);
    em_params p = em_parameters(m);
    int nb = 0, np = 0, k;
    int64_t total = 0;
    for (k = 0; ddp_bucket_numel(d, k, &np) >= 0; k++)
      total += ddp_bucket_numel(d, k, NULL), nb += np;
    CHECK(k == st.n_buckets && k > 1, "%d buckets listed, stats say %d", k, st.n_buckets);
    /* One node, shared memory on (the default), plain buckets: gradients in node-shared memory. */
    const char *shm_env = getenv("EMBER_COLL_SHM");
    bool want_shared = !(shm_env && !strcmp(shm_env, "0"));
    CHECK(st.buckets_shared == want_shared, "buckets_shared %d with EMBER_COLL_SHM=%s",
          st.buckets_shared, shm_env ? shm_env : "(unset)");
    CHECK(nb == p.n && total == p.arena_numel, "buckets hold %d params, %lld floats; want %d, %lld",
          nb, (long long)total, p.n, (long long)p.arena_numel);
    int first = 0;
    ddp_bucket_numel(d, 0, &first);
    CHECK(first >= 1 && ddp_bucket_numel(d, 0, NULL) >= em_arena_align(p.numel[p.n - 1]),
          "bucket 0 must start with the last parameter");
    for (int i = 1; i < p.n; i++)
      CHECK(p.t[i]->grad && em_shares_storage(p.t[0]->grad, p.t[i]->grad),
            "'%s'.grad is not in the bucket buffer", p.names[i]);
  }
  float *snap = du_snapshot(m, n);
  if (timeline && d) { /* before ddp_free: valid once "]" is appended */
    char path[4096], cmd[8400];
    snprintf(path, sizeof path, "%s", timeline);
    char *r = strstr(path, "%r");
    if (r) {
      char rest[4096];
      snprintf(rest, sizeof rest, "%s", r + 2);
      snprintf(r, sizeof path - (size_t)(r - path), "%d%s", ddp_rank(), rest);
    }
    const char *py = "import json,sys; ev=json.loads(open(sys.argv[1]).read()+sys.argv[2]); "
                     "names={e.get('name') for e in ev}; "
                     "need={'backward','all-reduce bucket 0','optimizer step'}; "
                     "sys.exit(0 if need <= names else 3)";
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c \"%s\" '%s' ']'", py, path);
    int rc = system(cmd);
    CHECK(rc == 0, "timeline %s before ddp_free + ']': python3 says %d", path, rc);
    ddp_free(d);
    d = NULL;
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c \"%s\" '%s' ''", py, path);
    rc = system(cmd);
    CHECK(rc == 0, "timeline %s after ddp_free: python3 says %d", path, rc);
  }
  em_optim_free(opt);
  ddp_free(d);
  em_module_free(m);
  return snap;
}

typedef struct {
  int calls, last_index;
  bool in_order;
} hook_log;

static coll_req *sum_hook(const ddp_bucket_view *b, void *ctx) {
  hook_log *h = ctx;
  h->in_order = h->in_order && b->index == h->last_index + 1;
  h->last_index = b->index;
  h->calls++;
  coll_buf buf = coll_host_buf(b->data, b->count, EM_F32);
  return coll_allreduce(b->comm, buf, buf, b->count, COLL_SUM);
}

/* One backward of the MLP on this rank's data, wrapped with opts; returns the gradients. */
static float *grads_with(const ddp_options *opts, int64_t *n) {
  em_manual_seed(11);
  em_module *m = em_mlp(20, (int[]){32, 16}, 2, 5);
  ddp_model *d = ddp_wrap(m, opts);
  CHECK(d != NULL, "ddp_wrap: %s", em_last_error());
  float *g = NULL;
  if (d) {
    em_scope s = em_scope_begin();
    int r = ddp_rank();
    em_tensor *x = du_inputs(100 + (uint64_t)r, 0, 2, (int64_t[]){8, 20});
    em_tensor *y = du_labels(200 + (uint64_t)r, 0, 8, 5);
    CHECK_OK(em_backward(em_cross_entropy(em_forward(m, x), y)));
    em_scope_end(s);
    g = du_grads(m);
    em_params p = em_parameters(m);
    *n = p.arena_numel;
  }
  ddp_free(d);
  em_module_free(m);
  return g;
}

static void check_comm_hook(void) {
  hook_log h = {0, -1, true};
  int64_t n1 = 0, n2 = 0;
  float *avg = grads_with(NULL, &n1);
  float *sum =
      grads_with(&(ddp_options){.hook = sum_hook, .hook_ctx = &h, .bucket_cap_mb = 0.001}, &n2);
  CHECK(h.calls > 1 && h.in_order, "hook: %d calls, in bucket order: %d", h.calls, h.in_order);
  if (avg && sum && n1 == n2) {
    float W = (float)ddp_world_size();
    double num = 0, den = 0;
    for (int64_t i = 0; i < n1; i++) {
      num += (sum[i] - W * avg[i]) * (double)(sum[i] - W * avg[i]);
      den += (double)sum[i] * sum[i];
    }
    CHECK(den > 0 && sqrt(num / den) < 1e-6, "hook SUM against W x AVG: relative %g",
          den > 0 ? sqrt(num / den) : -1.0);
  }
  free(avg);
  free(sum);
}

/* When each bucket starts, how many parameter gradients were final (a grad-ready hook per
 * parameter counts them; the reducer's own hook runs first, so a bucket launched by the last
 * gradient of backward sees n - 1). */
typedef struct {
  int ready, min_at_launch;
} launch_log;

static void count_ready(em_tensor *leaf, void *ctx) { ((launch_log *)ctx)->ready++; }

static coll_req *logging_hook(const ddp_bucket_view *b, void *ctx) {
  launch_log *l = ctx;
  if (l->ready < l->min_at_launch) l->min_at_launch = l->ready;
  coll_buf buf = coll_host_buf(b->data, b->count, EM_F32);
  return coll_allreduce(b->comm, buf, buf, b->count, COLL_AVG);
}

/* One backward with many small buckets, overlapped or not: its gradients and its launch log. */
static float *late_or_not(ddp_overlap overlap, launch_log *l, ddp_stats *st, int64_t *n) {
  em_manual_seed(11);
  em_module *m = em_mlp(20, (int[]){32, 16}, 2, 5);
  ddp_options o = {.bucket_cap_mb = 0.001, .hook = logging_hook, .hook_ctx = l,
                   .overlap = overlap};
  ddp_model *d = ddp_wrap(m, &o);
  CHECK(d != NULL, "ddp_wrap: %s", em_last_error());
  float *g = NULL;
  em_params p = em_parameters(m);
  *l = (launch_log){0, 1 << 30};
  for (int i = 0; d && i < p.n; i++) em_tensor_on_grad_ready(p.t[i], count_ready, l);
  if (d) {
    em_scope s = em_scope_begin();
    em_tensor *x = du_inputs(100 + (uint64_t)ddp_rank(), 0, 2, (int64_t[]){8, 20});
    CHECK_OK(em_backward(em_cross_entropy(em_forward(m, x), du_labels(7, 0, 8, 5))));
    em_scope_end(s);
    *st = ddp_get_stats(d);
    g = du_grads(m);
    *n = p.arena_numel;
  }
  ddp_free(d);
  em_module_free(m);
  return g;
}

static void check_no_overlap(void) {
  launch_log early, late;
  ddp_stats se, sl;
  int64_t n1 = 0, n2 = 0, np = 6; /* the MLP's parameters: 3 weights, 3 biases */
  float *a = late_or_not(DDP_OVERLAP_ON, &early, &se, &n1);
  float *b = late_or_not(DDP_OVERLAP_OFF, &late, &sl, &n2);
  CHECK(se.overlap && !sl.overlap, "stats.overlap: on %d, off %d", se.overlap, sl.overlap);
  CHECK(a && b && n1 == n2, "no_overlap: gradients");
  if (a && b && n1 == n2) CHECK_SAME(b, a, n1, EM_F32, "no_overlap against overlapped buckets");
  CHECK(se.n_buckets > 1 && early.min_at_launch < np - 1,
        "overlapped: the first of %d buckets started with %d of %lld gradients final",
        se.n_buckets, early.min_at_launch, (long long)np);
  CHECK(late.min_at_launch == np, "no_overlap: a bucket started with %d of %lld gradients final",
        late.min_at_launch, (long long)np);
  CHECK(sl.comm_s > 0 && sl.comm_overlapped_s == 0,
        "no_overlap: comm %g s, of which overlapped %g s (nothing may run during backward)",
        sl.comm_s, sl.comm_overlapped_s);
  free(a);
  free(b);
}

/* stats.overlap after wrapping a small model with overlap AUTO (or as the environment says). */
static bool auto_overlap(void) {
  em_module *m = em_mlp(4, (int[]){3}, 1, 2);
  ddp_model *d = ddp_wrap(m, &(ddp_options){0});
  CHECK(d != NULL, "ddp_wrap: %s", em_last_error());
  bool on = ddp_get_stats(d).overlap;
  ddp_free(d);
  em_module_free(m);
  return on;
}

static void check_overlap_policy(void) {
  cpu_set_t set;
  CHECK(sched_getaffinity(0, sizeof set, &set) == 0, "sched_getaffinity");
  int cpus = CPU_COUNT(&set), threads = em_num_threads();
  /* The CPUs this rank may count on: its mask, or its share when the mask is every CPU. */
  double share = cpus >= sysconf(_SC_NPROCESSORS_ONLN) ? (double)cpus / ddp_local_world_size()
                                                       : cpus;
  em_set_num_threads(1);
  CHECK(auto_overlap() == (share > 1), "auto with 1 thread, a share of %g of %d CPUs", share,
        cpus);
  em_set_num_threads(cpus);
  CHECK(!auto_overlap(), "auto with %d threads on %d CPUs: the comm thread has no core", cpus,
        cpus);
  em_set_num_threads(1);
  setenv("EMBER_DDP_OVERLAP", "off", 1);
  CHECK(!auto_overlap(), "EMBER_DDP_OVERLAP=off");
  em_set_num_threads(cpus);
  setenv("EMBER_DDP_OVERLAP", "on", 1);
  CHECK(auto_overlap(), "EMBER_DDP_OVERLAP=on");
  setenv("EMBER_DDP_OVERLAP", "sometimes", 1);
  em_module *m = em_mlp(4, (int[]){3}, 1, 2);
  CHECK(ddp_wrap(m, &(ddp_options){0}) == NULL, "EMBER_DDP_OVERLAP=sometimes accepted");
  CHECK_STR(em_last_error(), "EMBER_DDP_OVERLAP");
  em_module_free(m);
  unsetenv("EMBER_DDP_OVERLAP");
  em_set_num_threads(threads);
}

int main(int argc, char **argv) {
  CHECK_OK(du_init(&argc, &argv));
  const char *tl = argc > 1 ? argv[1] : NULL;
  CHECK(tl != NULL, "usage: test_ddp_misc TIMELINE_PATTERN");
  int64_t n1 = 0, n2 = 0;
  float *a = run(NULL, true, &n1);
  float *b = run(NULL, false, &n2);
  CHECK(a && b && n1 == n2, "snapshots");
  if (a && b && n1 == n2) {
    CHECK_SAME(b, a, n1, EM_F32, "determinism: second run against the first");
    CHECK(du_same_on_all_ranks(a, n1), "determinism: parameters differ across ranks");
  }
  free(a);
  free(b);
  if (tl) free(run(tl, false, &n1));
  check_comm_hook();
  check_no_overlap();
  check_overlap_policy();
  return chk_finish("test_ddp_misc");
}
