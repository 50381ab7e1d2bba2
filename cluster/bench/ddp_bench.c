/* ddp_bench.c: data-parallel training throughput on Fashion-MNIST, one compute thread per rank.
 *
 * --model mlp (the default): em_mlp 784-1024-1024-10 on images (B, 784). --model cnn:
 * em_small_cnn(1, 28, 28, 10) (conv 5x5 32, pool, conv 5x5 64, pool, fc 1024, fc 10) on the same
 * images reshaped to (B, 1, 28, 28). The BENCH line's case= names the model.
 *
 * The loop of train_bench.c with ddp_init and ddp_wrap added; cluster/bench/ddp_peer.py is the
 * PyTorch DDP (gloo) peer. Every rank shuffles the training set with the same seed and takes its
 * own shard of the batches:
 *
 *   batches of the permutation:  b0 b1 b2 b3 b4 b5 ...
 *   rank 0 (W = 2):              b0    b2    b4    ...   step s: batch s * W + r
 *   rank 1:                         b1    b3    b5 ...
 *
 * --warmup untimed steps, a barrier, --steps timed steps, a barrier: global samples/s is
 * W * batch * steps over that time (rank 0 prints it). The reducer's statistics (ddp_get_stats,
 * last step only) are summed over the timed steps on rank 0 and reported as per-step averages.
 *
 * usage: ember-ddp-bench [--model mlp|cnn] [--steps N] [--warmup N] [--batch N] [--threads N]
 *                        [--bucket-mb X] [--compress none|bf16|fp16] [--timeline PATH]
 *                        [--tag NAME] [--overlap auto|on|off] [--static-order]
 *                        [--profile PATH]
 * --overlap: when buckets are all-reduced (ddp_options.overlap; default auto, see ddp.h): on,
 * during backward; off, after it; comparing the two measures what overlap gains. --static-order:
 * keep the buckets in reverse registration order (ddp_options.static_bucket_order), to measure what
 * the grad-ready order gains. --tag is copied into the BENCH line (ddp_bench.sh tells its main runs
 * from its sweeps). --profile: rank 0 writes where its backward time goes, per parameter, as JSON
 * (profile.h; run it at 1 rank), for the scale-out model of cluster/model/. */
#include "dl_idx.h"
#include "ember.h"
#include "em_timeline.h"
#include "profile.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* msg (NULL: getopt_long has said what is wrong) and the usage line; returns exit status 2. */
static int usage(const char *msg) {
  if (msg) ddp_eprint("ember-ddp-bench: %s\n", msg);
  ddp_eprint("usage: ember-ddp-bench [--model mlp|cnn] [--steps N] [--warmup N] [--batch N] "
             "[--threads N] [--bucket-mb X] [--compress none|bf16|fp16] [--timeline PATH] "
             "[--tag NAME] [--overlap auto|on|off] [--static-order] [--profile PATH]\n");
  ddp_finalize();
  return 2;
}

/* optarg as an integer in [lo, hi] for option name; false (message set) if it is not one. */
static bool int_opt(const char *name, int64_t lo, int64_t hi, int *out) {
  int64_t v;
  if (em_arg_int(name, optarg, lo, hi, &v) != EM_OK) return false;
  *out = (int)v;
  return true;
}

static int fail(const char *what) {
  ddp_eprint("ember-ddp-bench: %s: %s\n", what, em_last_error());
  coll_abort(ddp_comm(), "ember-ddp-bench failed");
  return 1;
}

int main(int argc, char **argv) {
  if (ddp_init(&argc, &argv) != EM_OK) {
    fprintf(stderr, "ember-ddp-bench: %s\n", em_last_error());
    return 1;
  }
  static const struct option opts[] = {
      {"model", required_argument, NULL, 'm'},    {"steps", required_argument, NULL, 's'},
      {"warmup", required_argument, NULL, 'w'},   {"batch", required_argument, NULL, 'b'},
      {"threads", required_argument, NULL, 't'},  {"bucket-mb", required_argument, NULL, 'k'},
      {"compress", required_argument, NULL, 'c'}, {"timeline", required_argument, NULL, 'l'},
      {"tag", required_argument, NULL, 'g'},      {"overlap", required_argument, NULL, 'o'},
      {"static-order", no_argument, NULL, 'a'},   {"profile", required_argument, NULL, 'p'},
      {NULL, 0, NULL, 0}};
  int steps = 200, warmup = 10, batch = 64, threads = 1;
  ddp_options dopts = {0};
  const char *compress = "none", *tag = "main", *model_name = "mlp", *profile_path = NULL;
  for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
    bool ok = true;
    switch (c) {
    case 'm': model_name = optarg; break;
    case 's': ok = int_opt("--steps", 1, 100000000, &steps); break;
    case 'w': ok = int_opt("--warmup", 0, 100000000, &warmup); break;
    case 'b': ok = int_opt("--batch", 1, 60000, &batch); break; /* the training set's size */
    case 't': ok = int_opt("--threads", 1, 4096, &threads); break;
    case 'k': /* 0: EMBER_DDP_BUCKET_MB or 4 */
      ok = em_arg_num("--bucket-mb", optarg, 0, 1024, &dopts.bucket_cap_mb) == EM_OK;
      break;
    case 'c': compress = optarg; break;
    case 'l': dopts.timeline = optarg; break;
    case 'g': tag = optarg; break;
    case 'o':
      ok = !strcmp(optarg, "auto") || !strcmp(optarg, "on") || !strcmp(optarg, "off");
      dopts.overlap = !strcmp(optarg, "on")    ? DDP_OVERLAP_ON
                      : !strcmp(optarg, "off") ? DDP_OVERLAP_OFF
                                               : DDP_OVERLAP_AUTO;
      if (!ok) return usage("--overlap must be auto, on or off");
      break;
    case 'a': dopts.static_bucket_order = true; break;
    case 'p': profile_path = optarg; break;
    default: return usage(NULL);
    }
    if (!ok) return usage(em_last_error());
  }
  if (optind < argc) return usage("unexpected arguments after the options");
  if (strcmp(model_name, "mlp") && strcmp(model_name, "cnn")) {
    ddp_eprint("ember-ddp-bench: --model must be mlp or cnn, got '%s'\n", model_name);
    return usage(NULL);
  }
  bool cnn = !strcmp(model_name, "cnn");
  if (!strcmp(compress, "bf16"))
    dopts.compression = DDP_COMPRESS_BF16;
  else if (!strcmp(compress, "fp16"))
    dopts.compression = DDP_COMPRESS_FP16;
  else if (strcmp(compress, "none"))
    return usage("--compress must be none, bf16 or fp16");
  em_set_num_threads(threads);
  int W = ddp_world_size(), r = ddp_rank();

  em_tensor *images, *labels;
  if (dl_fmnist_load(dl_fmnist_dir(), "train", &images, &labels) != EM_OK)
    return fail("loading Fashion-MNIST");
  em_manual_seed(0);
  em_module *model = cnn ? em_small_cnn(1, 28, 28, 10) : em_mlp(784, (int[]){1024, 1024}, 2, 10);
  if (!model) return fail("model");
  ddp_model *ddp = ddp_wrap(model, &dopts);
  if (!ddp) return fail("ddp_wrap");
  em_optim *opt = em_sgd(em_parameters(model), .lr = 0.01, .momentum = 0.9);
  if (!opt) return fail("optimizer");
  bench_profile *prof = NULL;
  if (profile_path && r == 0 && !(prof = profile_attach(model))) return fail("--profile");
  int64_t n = images->shape[0], n_batches = n / batch;
  int64_t *perm = malloc((size_t)n * sizeof *perm);
  if (!perm) return fail("out of memory");
  em_rng rng = em_rng_new(0); /* same permutation on every rank */
  em_rng_permutation(&rng, perm, n);
  /* Rank 0's loss averaged over the first and the last LOSS_SPAN steps (warm-up included): one
   * step's loss is noisy, and a falling mean shows that the model trains. */
  enum { LOSS_SPAN = 10 };
  int total = warmup + steps, span = total < LOSS_SPAN ? total : LOSS_SPAN;
  double head_loss = 0, tail_loss = 0;
  double t0 = 0, last_loss = 0, comm = 0, exposed = 0, overlapped = 0, fwd = 0, bwd = 0;
  for (int s = 0; s < total; s++) {
    if (s == warmup) {
      if (coll_run(coll_barrier(ddp_comm())) != EM_OK) return fail("barrier");
      t0 = coll_now();
    }
    em_scope sc = em_scope_begin();
    int64_t b = ((int64_t)s * W + r) % n_batches;
    em_tensor *idx = em_from_data(EM_I64, EM_SHAPE(batch), perm + b * batch);
    em_tensor *x = em_index_select(images, 0, idx), *y = em_index_select(labels, 0, idx);
    if (cnn) x = em_reshape(x, EM_SHAPE(batch, 1, 28, 28)); /* (B, 784) -> (B, 1, 28, 28) */
    em_zero_grad(opt);
    double tf = em_timeline_now();
    em_tensor *loss = em_cross_entropy(em_forward(model, x), y);
    double tb = em_timeline_now();
    if (prof) profile_backward_begins(prof, s >= warmup);
    em_status e = loss ? em_backward(loss) : EM_ERR_INVALID;
    double to = em_timeline_now();
    if (!loss || e != EM_OK || em_step(opt) != EM_OK) {
      ddp_eprint("ember-ddp-bench: step %d: %s\n", s, em_last_error());
      coll_abort(ddp_comm(), "ember-ddp-bench: training step failed");
      return 1;
    }
    if (prof && s >= warmup) profile_step(prof, tb - tf, to - tb, em_timeline_now() - to);
    last_loss = em_get(loss, 0);
    if (s < span) head_loss += last_loss / span;
    if (s >= total - span) tail_loss += last_loss / span;
    em_scope_end(sc);
    if (s >= warmup) {
      ddp_stats st = ddp_get_stats(ddp);
      comm += st.comm_s;
      exposed += st.comm_exposed_s;
      overlapped += st.comm_overlapped_s;
      fwd += st.forward_s;
      bwd += st.backward_s;
    }
  }
  if (coll_run(coll_barrier(ddp_comm())) != EM_OK) return fail("barrier");
  double dt = coll_now() - t0;
  ddp_stats st = ddp_get_stats(ddp);
  double sps = (double)steps * batch * W / dt, ms = 1000.0 / steps;
  ddp_print0("ember %s: %d ranks, %d steps of batch %d per rank in %.3f s, final loss %.4f "
             "(rank 0), %d buckets, compression %s\n",
             model_name, W, steps, batch, dt, last_loss, st.n_buckets, compress);
  ddp_print0("  loss (rank 0, mean of %d steps): first steps %.4f, last steps %.4f\n", span,
             head_loss, tail_loss);
  ddp_print0("  per step (rank 0): forward+step %.3f ms, backward %.3f ms, all-reduce %.3f ms "
             "(exposed %.3f, overlapped %.3f: %.1f%%)\n",
             fwd * ms, bwd * ms, comm * ms, exposed * ms, overlapped * ms,
             comm > 0 ? 100 * overlapped / comm : 0.0);
  double cap = dopts.bucket_cap_mb; /* as ddp.h resolves it: option, environment, default */
  if (cap <= 0 && em_env_num("EMBER_DDP_BUCKET_MB", &cap) != EM_OK) return fail("bucket size");
  ddp_print0(
      "BENCH suite=train case=%s impl=ember ranks=%d threads=%d batch=%d bucket_mb=%g "
      "compress=%s overlap=%s order=%s buckets=%d samples_per_s=%.1f step_ms=%.3f comm_ms=%.3f "
      "comm_exposed_ms=%.3f comm_overlapped_ms=%.3f overlap_frac=%.3f tag=%s\n",
      model_name, W, threads, batch, cap, compress, W > 1 && st.overlap ? "yes" : "no",
      dopts.static_bucket_order ? "static" : "observed", st.n_buckets, sps, 1000 * dt / steps,
      comm * ms, exposed * ms, overlapped * ms, comm > 0 ? overlapped / comm : 0.0, tag);
  if (prof && !profile_write(prof, profile_path, model_name, batch, threads))
    return fail("--profile");
  profile_free(prof);
  free(perm);
  em_optim_free(opt);
  ddp_free(ddp);
  em_module_free(model);
  em_release(images);
  em_release(labels);
  return ddp_finalize() == EM_OK ? 0 : 1;
}
