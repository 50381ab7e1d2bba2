/* ddp/ddp.c: the data-parallel reducer behind ddp_wrap (see ddp.h for the model).
 *
 * Per synced backward pass:
 *   begin (engine observer)  check the wrap is intact; mark parameters this pass does not reach
 *                            as ready; start the all-reduce of the "used" flags
 *   grad ready (per param)   count down the bucket; launch every bucket, in order, whose count
 *                            reached zero (hook, compression or COLL_AVG); until the order is
 *                            settled, note the order gradients become ready in
 *   end (engine observer)    wait for every bucket (decompress), restore the gradients of
 *                            parameters no rank used, broadcast buffers, record statistics;
 *                            after the first synced pass, rebuild the buckets in rank 0's
 *                            grad-ready order (once; plan.c)
 *
 * On a GPU (every parameter on ddp_device() = cuda:N) the same pass runs on device memory: the
 * gradient buffer, the compression buffer and the saved gradients are on cuda:N, the buckets go
 * to the communicator's NCCL backend (coll.c routes device buffers there), the average is NCCL's
 * ncclAvg, and compression converts on the device (the kernel table's to_half/from_half, the
 * same slots the CPU uses). Ordering needs no synchronize: every kernel runs on the compute
 * stream em__cuda_stream, a blocking stream, so the event the NCCL backend records on the
 * legacy default stream when a bucket starts follows every kernel that produced its gradients;
 * the wait at the end of backward polls each bucket's completion event, and what runs after it
 * (decompression, the optimizer) is issued after the host saw it complete. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "core/hash.h"
#include "core/internal.h"
#include "core/kernels.h"
#include "ddp/internal.h"
#include "ddp_init.h"
#include "em_env.h"
#include "em_timeline.h"

#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ddp_model *wrapped[64]; /* models currently wrapped (to refuse wrapping twice) */

/* ---- small collectives on host data -----------------------------------------------------------
 */
em_status ddp__run_i64(coll_comm *c, int64_t *v, int n, coll_redop op) {
  coll_buf b = coll_host_buf(v, n, EM_I64);
  return coll_run_allreduce(c, b, b, n, op);
}

em_status ddp__copy_floats(const ddp_model *d, float *dst, const float *src, int64_t n) {
  if (n <= 0) return EM_OK;
  if (d->dev.kind == EM_CPU) {
    memcpy(dst, src, (size_t)n * sizeof(float));
    return EM_OK;
  }
  return em__kernels(d->dev)->copy(d->dev.index, dst, src, (size_t)n * sizeof(float));
}

void ddp__sync_single(ddp_model *d, bool on) {
  if (d) d->sync_single = on;
}

/* n elements of dt at p, in the model's device memory. */
static coll_buf dev_buf(const ddp_model *d, void *p, int64_t n, em_dtype dt) {
  coll_buf b = {p, n, dt, d->dev};
  return b;
}

/* Same value on every rank? (max == min) */
em_status ddp__agree(coll_comm *c, int64_t v, bool *same) {
  int64_t a[2] = {v, -v};
  em_status st = ddp__run_i64(c, a, 2, COLL_MAX);
  *same = st == EM_OK && a[0] == v && -a[1] == v;
  return st;
}

static void describe_param(const ddp_model *d, int i, char *buf, size_t n) {
  char sh[EM_SHAPE_STR_LEN];
  if (i < d->n_params)
    snprintf(buf, n, "'%s' %s %s", d->names[i], em_dtype_name(d->params[i]->dtype),
             em_shape_str(d->params[i], sh, sizeof sh));
  else
    snprintf(buf, n, "(no parameter %d)", i);
}

/* Every rank has the same parameters? The error names the first difference and the ranks. */
static em_status check_models(ddp_model *d) {
  coll_comm *c = d->comm;
  int W = coll_size(c), me = coll_rank(c);
  int64_t n = d->n_params;
  int64_t *all_n = calloc((size_t)W, sizeof *all_n);
  uint64_t *mine = calloc((size_t)(n ? n : 1), sizeof *mine);
  int64_t *hashes = NULL, *padded = NULL, *desc = NULL;
  em_status st = EM_ERR_NOMEM;
  if (!all_n || !mine) goto done;
  st = coll_run_allgather(c, coll_host_buf(&n, 1, EM_I64), coll_host_buf(all_n, W, EM_I64), 1);
  if (st != EM_OK) goto done;
  int64_t maxn = 0;
  for (int r = 0; r < W; r++) maxn = all_n[r] > maxn ? all_n[r] : maxn;
  for (int i = 0; i < n; i++) {
    char b[256];
    describe_param(d, i, b, sizeof b);
    mine[i] = em__fnv1a(EM__FNV_OFFSET, b, strlen(b));
  }
  /* First index where ranks differ: gather every rank's hashes up to the longest list. */
  hashes = calloc((size_t)W * (size_t)(maxn ? maxn : 1), sizeof *hashes);
  padded = calloc((size_t)(maxn ? maxn : 1), sizeof *padded);
  if (!hashes || !padded) {
    st = EM_ERR_NOMEM;
    goto done;
  }
  for (int i = 0; i < n; i++) padded[i] = (int64_t)mine[i];
  st = coll_run_allgather(c, coll_host_buf(padded, maxn, EM_I64),
                          coll_host_buf(hashes, W * maxn, EM_I64), maxn);
  int first = -1, other = -1;
  for (int i = 0; st == EM_OK && i < maxn && first < 0; i++)
    for (int r = 1; r < W; r++)
      if (hashes[r * maxn + i] != hashes[i] || (i >= all_n[r]) != (i >= all_n[0])) {
        first = i;
        other = r;
        break;
      }
  if (st != EM_OK || first < 0) goto done;
  /* Gather the description of parameter `first` from every rank to name both sides. */
  enum { DL = 192 };
  char mine_d[DL] = {0};
  desc = calloc((size_t)W, DL);
  if (!desc) {
    st = EM_ERR_NOMEM;
    goto done;
  }
  describe_param(d, first, mine_d, DL);
  st = coll_run_allgather(c, coll_host_buf(mine_d, DL, EM_U8),
                          coll_host_buf(desc, (int64_t)W * DL, EM_U8), DL);
  if (st == EM_OK) {
    const char *d0 = (const char *)desc, *dr = (const char *)desc + other * DL;
    st = em_set_error(EM_ERR_INVALID,
                      "ddp_wrap: the model differs across ranks at parameter %d: rank 0 has %.*s, "
                      "rank %d has %.*s (%lld vs %lld parameters); this is rank %d",
                      first, DL, d0, other, DL, dr, (long long)all_n[0], (long long)all_n[other],
                      me);
  }
done:
  if (st == EM_ERR_NOMEM && em_last_status() == EM_OK) em_set_error(st, "ddp_wrap: out of memory");
  free(all_n);
  free(mine);
  free(hashes);
  free(padded);
  free(desc);
  return st;
}

/* ddp_options.overlap, else EMBER_DDP_OVERLAP, resolved (ddp.h). Ranks may resolve it
 * differently, which changes when buckets start, never what they compute. */
static em_status resolve_overlap(ddp_model *d) {
  ddp_overlap o = d->opts.overlap;
  if ((unsigned)o > DDP_OVERLAP_OFF)
    return em_set_error(EM_ERR_INVALID, "ddp_wrap: overlap %d is not auto, on or off", (int)o);
  if (o == DDP_OVERLAP_AUTO) {
    const char *v = "auto";
    if (em_env_str("EMBER_DDP_OVERLAP", &v) != EM_OK) return em_last_status();
    o = !strcmp(v, "on") ? DDP_OVERLAP_ON : !strcmp(v, "off") ? DDP_OVERLAP_OFF : DDP_OVERLAP_AUTO;
  }
  /* On a GPU the all-reduces are NCCL kernels on their own stream: no CPU core is taken from
   * backward, so overlapping them costs nothing. */
  if (o == DDP_OVERLAP_AUTO && d->dev.kind != EM_CPU) o = DDP_OVERLAP_ON;
  if (o == DDP_OVERLAP_AUTO) { /* the CPUs this rank may count on, against its compute threads */
    cpu_set_t set;
    double cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    if (cpus >= (double)sysconf(_SC_NPROCESSORS_ONLN)) /* unbound: the node's ranks share them */
      cpus /= ddp_local_world_size();
    o = cpus > em_num_threads() ? DDP_OVERLAP_ON : DDP_OVERLAP_OFF;
  }
  d->stats.overlap = o == DDP_OVERLAP_ON;
  return EM_OK;
}

/* ---- launching
 * ----------------------------------------------------------------------------------- */

/* The 16-bit dtype of compression. */
static em_dtype half_dtype(const ddp_model *d) {
  return d->opts.compression == DDP_COMPRESS_BF16 ? EM_BF16 : EM_F16;
}

/* Bucket k from the 16-bit buffer back into the gradients (compression), on the model's device. */
static em_status decompress(ddp_model *d, const bucket *b) {
  float *data = em_data_f32(d->lay.grads) + b->off;
  return em__kernels(d->dev)->from_half(d->dev.index, half_dtype(d), data, b->half, b->len);
}

/* Start bucket k's all-reduce. here: run it on this thread now, through the blocking form (with
 * nothing queued ahead, no hand-off to the comm thread and back), for when backward is over and
 * the wait would be this thread's anyway; not with a hook (it returns a request). */
static void launch(ddp_model *d, int k, bool here) {
  bucket *b = &d->lay.buckets[k];
  float *data = em_data_f32(d->lay.grads) + b->off;
  b->t_launch = em_timeline_now();
  b->t_done = 0;
  em_status st = EM_OK;
  coll_label("DDP gradient bucket %d of %d", k + 1, d->lay.n_buckets);
  if (d->opts.hook) {
    ddp_bucket_view v = {k, data, b->len, d->comm, d->dev};
    b->req = d->opts.hook(&v, d->opts.hook_ctx);
  } else if (d->opts.compression != DDP_COMPRESS_NONE) {
    float inv = 1.0f / (float)coll_size(d->comm); /* pre-divide: the sum then stays in range */
    coll_buf hb = dev_buf(d, b->half, b->len, half_dtype(d));
    st = em__kernels(d->dev)->to_half(d->dev.index, half_dtype(d), b->half, data, b->len, inv);
    if (st == EM_OK && here) {
      if ((st = coll_run_allreduce(d->comm, hb, hb, b->len, COLL_SUM)) == EM_OK)
        st = decompress(d, b);
    } else if (st == EM_OK) {
      b->req = coll_allreduce(d->comm, hb, hb, b->len, COLL_SUM);
    }
    if (st != EM_OK) here = true; /* report st below, whatever the form */
  } else {
    coll_buf gb = dev_buf(d, data, b->len, EM_F32);
    if (here)
      st = coll_run_allreduce(d->comm, gb, gb, b->len, COLL_AVG);
    else
      b->req = coll_allreduce(d->comm, gb, gb, b->len, COLL_AVG);
  }
  if (here) b->t_done = em_timeline_now();
  if ((here ? st != EM_OK : !b->req) && d->launch_error == EM_OK) {
    d->launch_error = em_last_status() != EM_OK ? em_last_status() : EM_ERR_COMM;
    snprintf(d->launch_msg, sizeof d->launch_msg, "ddp: bucket %d: %s", k, em_last_error());
  }
}

static void launch_ready(ddp_model *d) {
  if (!d->stats.overlap) return; /* on_end launches every bucket */
  while (d->next_launch < d->lay.n_buckets && d->lay.buckets[d->next_launch].pending == 0)
    launch(d, d->next_launch++, false);
}

static void grad_ready(em_tensor *p, void *ctx) {
  param_slot *s = ctx;
  ddp_model *d = s->d;
  if (d->tl) em_timeline_instant(d->tl, em_tensor_name(p), "grad ready", 0, em_timeline_now());
  d->used[s->index] = 1;
  if (!d->in_sync_pass) return;
  if (!d->order_settled && d->n_seen < d->n_params) d->seen[d->n_seen++] = s->index;
  d->lay.buckets[s->bucket].pending--;
  launch_ready(d);
}

/* ---- the pass
 * -------------------------------------------------------------------------------------- */
static em_status start_pass(ddp_model *d);

static em_status on_begin(void *ctx) {
  ddp_model *d = ctx;
  d->t_begin = em_timeline_now();
  /* The wrap must be intact: same parameter tensors, .grad still the bucket views. */
  if (em_module_num_params(d->model) != d->n_params)
    return em_set_error(EM_ERR_STATE,
                        "ddp: the model has %d parameters, it had %d when wrapped: parameters "
                        "were added after ddp_wrap",
                        em_module_num_params(d->model), d->n_params);
  for (int i = 0; i < d->n_params; i++) {
    if (em_module_tensor_at(d->model, i) != d->params[i])
      return em_set_error(EM_ERR_STATE, "ddp: parameter '%s' was replaced after ddp_wrap",
                          d->names[i]);
    if (d->params[i]->grad != d->lay.views[i])
      return em_set_error(EM_ERR_STATE,
                          "ddp: the .grad of parameter '%s' was replaced after ddp_wrap (its "
                          "gradient must stay in the bucket buffer; zero it with em_zero_grad)",
                          d->names[i]);
  }
  /* A backward that reaches none of this model's parameters belongs to another model: not ours
   * to reduce (every rank must run a backward that reaches the model, as with PyTorch). */
  bool reached = false;
  for (int i = 0; i < d->n_params && !reached; i++) reached = em_backward_reaches(d->params[i]);
  if (!reached) {
    d->in_sync_pass = false;
    return EM_OK;
  }
  return start_pass(d);
}

/* The pass is ours: unless it is not synced, count the buckets down by the parameters it does
 * not reach (ready now) and start the used-flags all-reduce. */
static em_status start_pass(ddp_model *d) {
  /* A world of one has nothing to reduce: its gradients are the average already. */
  d->in_sync_pass = !d->no_sync && (coll_size(d->comm) > 1 || d->sync_single);
  if (!d->in_sync_pass) {
    for (int i = 0; i < d->n_params; i++)
      if (em_backward_reaches(d->params[i])) d->used[i] = 1; /* hooks may not fire for all */
    return EM_OK;
  }
  d->launch_error = EM_OK;
  d->next_launch = 0;
  d->n_seen = 0;
  for (int k = 0; k < d->lay.n_buckets; k++) d->lay.buckets[k].pending = d->lay.buckets[k].n;
  for (int i = 0; i < d->n_params; i++) {
    if (em_backward_reaches(d->params[i])) {
      d->used[i] = 1;
      continue;
    }
    /* Not reached by this pass: its gradient is final already, so it is ready now. If no
     * backward used it since the last sync, keep its value aside (restored if no rank used it). */
    em_status st = EM_OK;
    if (!d->used[i])
      st = ddp__copy_floats(d, d->saved + d->lay.goff[i], em_data_f32(d->lay.views[i]),
                            em_numel(d->params[i]));
    if (st != EM_OK) return st;
    d->lay.buckets[d->slots[i].bucket].pending--;
  }
  /* Which parameters did any rank use? (A small request, queued before every bucket.) */
  memcpy(d->used_all, d->used, (size_t)d->n_params);
  coll_buf ub = coll_host_buf(d->used_all, d->n_params, EM_U8);
  coll_label("DDP flags of the parameters used by backward");
  d->used_req = coll_allreduce(d->comm, ub, ub, d->n_params, COLL_MAX);
  if (!d->used_req) return em_last_status();
  launch_ready(d);
  return EM_OK;
}

static em_status on_end(em_status pass, void *ctx) {
  ddp_model *d = ctx;
  if (!d->in_sync_pass) return EM_OK;
  d->in_sync_pass = false;
  /* Launch what is left (a failed pass may stop early; no overlap: every bucket): every rank must
   * issue every bucket. What runs from here on is exposed, launches included. */
  double t_wait = em_timeline_now(), comm = 0, comm_end = 0;
  /* Without overlap the buckets run here, one after the other, once the used flags are in (so
   * that nothing is queued ahead of them). */
  bool here = !d->stats.overlap && !d->opts.hook;
  em_status st = here ? coll_run(d->used_req) : EM_OK;
  for (int k = d->next_launch; k < d->lay.n_buckets; k++) launch(d, k, here);
  d->next_launch = d->lay.n_buckets;
  if (!here) st = coll_run(d->used_req);
  d->used_req = NULL;
  char msg[768] = "";
  if (st != EM_OK) snprintf(msg, sizeof msg, "ddp: used-parameter flags: %s", em_last_error());
  for (int k = 0; k < d->lay.n_buckets; k++) {
    bucket *b = &d->lay.buckets[k];
    if (b->req) {
      em_status e = coll_wait_ex(b->req, COLL_TIMEOUT_DEFAULT, &b->t_done);
      b->req = NULL;
      if (e != EM_OK && st == EM_OK) {
        st = e;
        snprintf(msg, sizeof msg, "ddp: bucket %d: %s", k, em_last_error());
      }
      if (e == EM_OK && !d->opts.hook && d->opts.compression != DDP_COMPRESS_NONE &&
          (e = decompress(d, b)) != EM_OK && st == EM_OK) {
        st = e;
        snprintf(msg, sizeof msg, "ddp: bucket %d: %s", k, em_last_error());
      }
    }
    if (!(b->t_done > 0)) continue; /* not run (a launch failed) */
    /* Buckets queue behind each other on the comm thread: count the union of their spans. */
    double from = b->t_launch > comm_end ? b->t_launch : comm_end;
    if (b->t_done > from) comm += b->t_done - from;
    if (b->t_done > comm_end) comm_end = b->t_done;
    if (d->tl) {
      char name[64];
      snprintf(name, sizeof name, "all-reduce bucket %d", k);
      em_timeline_span(d->tl, name, "comm", 1, b->t_launch, b->t_done);
    }
  }
  /* Parameters no rank used keep their gradient untouched. */
  for (int i = 0; st == EM_OK && i < d->n_params; i++)
    if (!d->used_all[i] &&
        (st = ddp__copy_floats(d, em_data_f32(d->lay.views[i]), d->saved + d->lay.goff[i],
                               em_numel(d->params[i]))) != EM_OK)
      snprintf(msg, sizeof msg, "ddp: restoring unused '%s': %s", d->names[i], em_last_error());
  memset(d->used, 0, (size_t)d->n_params);
  /* Buffers from rank 0. */
  int nt = em_module_num_tensors(d->model);
  for (int i = d->n_params; st == EM_OK && !d->opts.no_broadcast_buffers && i < nt; i++) {
    em_tensor *t = em_module_tensor_at(d->model, i);
    if (t->dtype == EM_F32 || t->dtype == EM_I64) {
      coll_buf bb = coll_buf_of(t);
      coll_label("DDP buffer %d from rank 0", i - d->n_params);
      st = coll_run_broadcast(d->comm, bb, bb.numel, 0);
      if (st != EM_OK)
        snprintf(msg, sizeof msg, "ddp: broadcasting buffer '%s': %s",
                 em_module_tensor_name(d->model, i), em_last_error());
    }
  }
  double t_end = em_timeline_now();
  ddp_stats *s = &d->stats;
  s->steps++;
  s->forward_s = d->t_last_end > 0 ? d->t_begin - d->t_last_end : 0;
  s->backward_s = t_end - d->t_begin;
  s->comm_s = comm;
  double last_done = t_wait;
  for (int k = 0; k < d->lay.n_buckets; k++)
    if (d->lay.buckets[k].t_done > last_done) last_done = d->lay.buckets[k].t_done;
  s->comm_exposed_s = last_done - t_wait;
  s->comm_overlapped_s = comm > s->comm_exposed_s ? comm - s->comm_exposed_s : 0;
  if (d->tl) {
    if (d->t_last_end > 0)
      em_timeline_span(d->tl, "forward", "compute", 0, d->t_last_end, d->t_begin);
    em_timeline_span(d->tl, "backward", "compute", 0, d->t_begin, t_wait);
    em_timeline_span(d->tl, "wait for all-reduce", "comm", 0, t_wait, t_end);
    em_timeline_flush(d->tl);
  }
  /* Buckets in gradient-ready order, once (after the statistics: they read this pass's
   * buckets). Every rank, at the same point of the same pass. */
  if (!d->order_settled) {
    em_status rs = ddp__rebuild_order(d, pass == EM_OK && d->launch_error == EM_OK && st == EM_OK);
    if (rs != EM_OK && st == EM_OK) {
      st = rs;
      snprintf(msg, sizeof msg, "%s", em_last_error());
    }
  }
  d->t_last_end = t_end;
  if (pass != EM_OK) return pass;
  if (d->launch_error != EM_OK) return em_set_error(d->launch_error, "%s", d->launch_msg);
  if (st != EM_OK) return em_set_error(st, "%s", msg);
  return EM_OK;
}

em_status ddp__reduce_now(ddp_model *d) {
  if (!d) return em_set_error(EM_ERR_INVALID, "ddp__reduce_now: model is NULL");
  if (em_backward_running())
    return em_set_error(EM_ERR_STATE, "ddp__reduce_now: a backward pass is running");
  for (int i = 0; i < d->n_params; i++) d->used[i] = 1;
  d->t_begin = em_timeline_now();
  em_status st = start_pass(d); /* no backward runs: every parameter is ready at once */
  return on_end(st, d);
}

/* ---- wrap
 * ---------------------------------------------------------------------------------------- */
/* At ddp_finalize: every model still wrapped is freed, as torch's destroy_process_group lets a
 * program end without deleting its DDP module first. */
static void free_all_wrapped(void) {
  for (int k = 0; k < (int)(sizeof wrapped / sizeof *wrapped); k++) ddp_free(wrapped[k]);
}

void ddp_free(ddp_model *d) {
  if (!d) return;
  for (int k = 0; k < (int)(sizeof wrapped / sizeof *wrapped); k++)
    if (wrapped[k] == d) wrapped[k] = NULL;
  if (d->observer) em_autograd_remove_observer(d->observer);
  for (int i = 0; d->hook_ids && i < d->n_params; i++)
    if (d->hook_ids[i]) em_tensor_remove_hook(d->params[i], d->hook_ids[i]);
  ddp__layout_free(d, &d->lay, false);
  if (d->tl && em_timeline_current() == d->tl) em_timeline_set_current(NULL);
  em_timeline_close(d->tl);
  free(d->slots);
  free(d->hook_ids);
  free(d->seen);
  free(d->proposal);
  free(d->mark);
  free(d->used);
  free(d->used_all);
  if (d->saved_t)
    em_release(d->saved_t);
  else
    free(d->saved);
  free(d);
}

/* The arena's checksum (its bytes, on the host: a GPU arena is copied there first). */
static em_status arena_checksum(const ddp_model *d, const em_params *p, int64_t *h) {
  size_t bytes = (size_t)p->arena_numel * sizeof(float);
  const float *host = p->arena;
  float *copy = NULL;
  if (d->dev.kind != EM_CPU) {
    if (!(copy = malloc(bytes ? bytes : 1)))
      return em_set_error(EM_ERR_NOMEM, "ddp_wrap: out of memory for the parameter checksum");
    em_status st = em__kernels(d->dev)->copy_to_host(d->dev.index, copy, p->arena, bytes);
    if (st != EM_OK) {
      free(copy);
      return st;
    }
    host = copy;
  }
  *h = (int64_t)(em__fnv1a(EM__FNV_OFFSET, host, bytes) >> 1);
  free(copy);
  return EM_OK;
}

/* Rank 0's parameters (the whole arena in one broadcast, then checked) and buffers for everyone.
 * Collective. */
static em_status broadcast_state(ddp_model *d, const em_params *p) {
  em_status st;
  if (p->arena) {
    coll_buf ab = dev_buf(d, p->arena, p->arena_numel, EM_F32);
    coll_label("DDP parameters from rank 0");
    if ((st = coll_run_broadcast(d->comm, ab, p->arena_numel, 0)) != EM_OK) return st;
    bool same;
    int64_t h = -1;
    if ((st = arena_checksum(d, p, &h)) != EM_OK) h = -1; /* -1: no checksum's value (>> 1) */
    em_status ag = ddp__agree(d->comm, h, &same);
    if (st != EM_OK || (st = ag) != EM_OK) return st;
    if (!same)
      return em_set_error(EM_ERR_COMM, "ddp_wrap: parameters differ across ranks after the "
                                       "broadcast from rank 0 (checksum)");
  }
  for (int i = p->n, nt = em_module_num_tensors(d->model); i < nt; i++) {
    coll_buf bb = coll_buf_of(em_module_tensor_at(d->model, i));
    if (bb.dtype != EM_F32 && bb.dtype != EM_I64) continue;
    if ((st = coll_run_broadcast(d->comm, bb, bb.numel, 0)) != EM_OK) return st;
  }
  return EM_OK;
}

/* What follows the bucket plan: gradient views, pass state, hooks, the observer, the timeline.
 * Local to this rank (no collective); what it acquired, ddp_free releases. */
static em_status wrap_local(ddp_model *d) {
  em_status st = ddp__bind_grads(d);
  if (st != EM_OK) return st;
  d->used = calloc((size_t)d->n_params + 1, 1);
  d->used_all = calloc((size_t)d->n_params + 1, 1);
  int64_t ng = em_numel(d->lay.grads);
  if (d->dev.kind == EM_CPU)
    d->saved = calloc((size_t)ng, sizeof *d->saved);
  else if ((d->saved_t = em__alloc_on(d->dev, EM_F32, 1, &ng, true)))
    d->saved = em_data_f32(d->saved_t);
  else
    return em_last_status();
  d->slots = calloc((size_t)d->n_params + 1, sizeof *d->slots);
  d->hook_ids = calloc((size_t)d->n_params + 1, sizeof *d->hook_ids);
  d->seen = calloc((size_t)d->n_params + 1, sizeof *d->seen);
  d->proposal = calloc((size_t)d->n_params + 1, sizeof *d->proposal);
  d->mark = calloc((size_t)d->n_params + 1, sizeof *d->mark);
  if (!d->used || !d->used_all || !d->saved || !d->slots || !d->hook_ids || !d->seen ||
      !d->proposal || !d->mark)
    return em_set_error(EM_ERR_NOMEM, "ddp_wrap: out of memory");
  ddp__point_slots(d);
  d->order_settled = d->opts.static_bucket_order;
  for (int i = 0; i < d->n_params; i++)
    if (!(d->hook_ids[i] = em_tensor_on_grad_ready(d->params[i], grad_ready, &d->slots[i])))
      return em_last_status();
  if (!(d->observer = em_autograd_on_backward(on_begin, on_end, d))) return em_last_status();
  const char *tl = d->opts.timeline;
  if (!tl && (st = em_env_str("EMBER_TIMELINE", &tl)) != EM_OK) return st;
  if (*tl) {
    if (!(d->tl = em_timeline_open(tl, coll_rank(d->comm)))) return em_last_status();
    em_timeline_set_current(d->tl);
  }
  d->stats.n_buckets = d->lay.n_buckets;
  d->stats.buckets_shared = d->lay.shared || d->lay.half_shared;
  return EM_OK;
}

/* st: how this rank's local steps went. The steps were local: make sure every rank got through
 * them, or all fail together (else the others' next backward would wait for this rank forever).
 * Collective. */
static em_status all_ranks_ok(coll_comm *c, em_status st) {
  int64_t ok[2] = {st == EM_OK ? 1 : 0, st == EM_OK ? -1 : -(int64_t)coll_rank(c) - 2};
  char why[600];
  snprintf(why, sizeof why, "%s", st == EM_OK ? "" : em_last_error());
  em_status cs = ddp__run_i64(c, ok, 2, COLL_MIN);
  if (cs != EM_OK) return cs;
  if (ok[0] == 0) {
    if (st == EM_OK)
      return em_set_error(EM_ERR_STATE, "ddp_wrap: failed on rank %lld (see its message)",
                          (long long)(-ok[1] - 2));
    em_set_error(st, "%s", why);
  }
  return st;
}

/* Every parameter f32, on one device: ddp_device() (cuda:N, or the CPU), or the CPU (a CPU model
 * reduces over the host backend also where the rank has a GPU). Sets d->dev. Local. */
static em_status check_devices(ddp_model *d, const em_params *p) {
  em_device want = ddp_device(), first = p->n ? p->t[0]->device : EM_DEVICE_CPU;
  char a[EM_DEVICE_STR_LEN], b[EM_DEVICE_STR_LEN], c[EM_DEVICE_STR_LEN];
  for (int i = 0; i < p->n; i++)
    if (p->t[i]->dtype != EM_F32)
      return em_set_error(EM_ERR_UNSUPPORTED, "ddp_wrap: parameter '%s' is %s, not f32",
                          p->names[i], em_dtype_name(p->t[i]->dtype));
  if (first.kind != EM_CPU && (first.kind != want.kind || first.index != want.index))
    return em_set_error(EM_ERR_INVALID,
                        "ddp_wrap: parameter '%s' is on %s but this rank's device (ddp_device) is "
                        "%s: move the model there with em_module_to(model, ddp_device())",
                        p->names[0], em__device_str(first, a, sizeof a),
                        em__device_str(want, b, sizeof b));
  for (int i = 1; i < p->n; i++) {
    em_device dv = p->t[i]->device;
    if (dv.kind != first.kind || dv.index != first.index)
      return em_set_error(EM_ERR_INVALID,
                          "ddp_wrap: parameter '%s' is on %s but '%s' is on %s: every parameter "
                          "must be on this rank's device %s",
                          p->names[i], em__device_str(dv, a, sizeof a), p->names[0],
                          em__device_str(first, b, sizeof b),
                          em__device_str(want, c, sizeof c));
  }
  d->dev = first;
  return EM_OK;
}

/* Every rank holds its model on the same kind of device (collective). */
static em_status same_device_kind(ddp_model *d) {
  bool same;
  em_status st = ddp__agree(d->comm, d->dev.kind, &same);
  if (st == EM_OK && !same)
    st = em_set_error(EM_ERR_INVALID,
                      "ddp_wrap: ranks hold the model on different kinds of device (this rank %d: "
                      "%s): wrap the model on the GPU everywhere or on the CPU everywhere",
                      coll_rank(d->comm), d->dev.kind == EM_CPU ? "cpu" : "cuda");
  return st;
}

ddp_model *ddp_wrap(em_module *model, const ddp_options *opts) {
  if (!model) {
    em_set_error(EM_ERR_INVALID, "ddp_wrap: model is NULL");
    return NULL;
  }
  if (!ddp_initialized()) {
    em_set_error(EM_ERR_STATE, "ddp_wrap: call ddp_init first");
    return NULL;
  }
  int slot = -1;
  for (int k = 0; k < (int)(sizeof wrapped / sizeof *wrapped); k++) {
    if (wrapped[k] && wrapped[k]->model == model) {
      em_set_error(EM_ERR_STATE, "ddp_wrap: this model is wrapped already (ddp_free the first "
                                 "wrapper before wrapping it again)");
      return NULL;
    }
    if (!wrapped[k] && slot < 0) slot = k;
  }
  if (slot < 0) {
    em_set_error(EM_ERR_STATE, "ddp_wrap: too many wrapped models");
    return NULL;
  }
  ddp_model *d = calloc(1, sizeof *d);
  if (!d) {
    em_set_error(EM_ERR_NOMEM, "ddp_wrap: out of memory");
    return NULL;
  }
  d->model = model;
  d->comm = ddp_comm();
  d->opts = opts ? *opts : (ddp_options){0};
  em_params p = em_parameters(model); /* packs the arena */
  if (!p.n && em_last_status() != EM_OK) { /* e.g. parameters on two devices: say who failed */
    char why[512];
    snprintf(why, sizeof why, "%s", em_last_error());
    em_set_error(em_last_status(), "ddp_wrap: %s", why);
    goto fail;
  }
  if (check_devices(d, &p) != EM_OK) goto fail;
  d->n_params = p.n;
  d->params = p.t;
  d->names = p.names;
  /* Collective steps, in the same order on every rank. The device kind first: the steps that
   * follow make different collectives for CPU and GPU memory. */
  if (same_device_kind(d) != EM_OK || all_ranks_ok(d->comm, resolve_overlap(d)) != EM_OK ||
      check_models(d) != EM_OK ||
      broadcast_state(d, &p) != EM_OK || ddp__plan_buckets(d) != EM_OK ||
      all_ranks_ok(d->comm, wrap_local(d)) != EM_OK)
    goto fail;
  wrapped[slot] = d;
  (void)ddp_at_finalize(free_all_wrapped); /* registered once; cannot fail then */
  return d;
fail:
  ddp_free(d);
  return NULL;
}

em_status ddp_no_sync(ddp_model *d, bool on) {
  if (!d) return em_set_error(EM_ERR_INVALID, "ddp_no_sync: model is NULL");
  if (em_backward_running())
    return em_set_error(EM_ERR_STATE, "ddp_no_sync: cannot change during a backward pass");
  d->no_sync = on;
  return EM_OK;
}

ddp_stats ddp_get_stats(const ddp_model *d) { return d ? d->stats : (ddp_stats){0}; }

int64_t ddp_bucket_numel(const ddp_model *d, int i, int *n_params) {
  if (!d || i < 0 || i >= d->lay.n_buckets) return -1;
  if (n_params) *n_params = d->lay.buckets[i].n;
  return d->lay.buckets[i].len;
}

int ddp_bucket_params(const ddp_model *d, int i, int *idx, int max) {
  if (!d || i < 0 || i >= d->lay.n_buckets) return -1;
  const bucket *b = &d->lay.buckets[i];
  for (int j = 0; idx && j < b->n && j < max; j++) idx[j] = d->lay.order[b->first + j];
  return b->n;
}
