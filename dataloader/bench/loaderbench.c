/* loaderbench.c: ember-loaderbench, the data loader's throughput on Fashion-MNIST, with
 * dataloader/bench/loader_peer.py (PyTorch's DataLoader) as the peer; dataloader/bench/run.sh
 * runs both, interleaved, and prints the comparison.
 *
 *   ember-loaderbench [--workers 0,1,2] [--rounds 5] [--epochs 1] [--batch 64] [--prefetch 0]
 *                     [--train-rate SAMPLES_PER_S]
 *
 * The training set (60000 images, "x" f32 (784) scaled to [0, 1], "y" i64) is opened once, outside
 * any timing. Every batch is touched minimally (its first label is added to a checksum) and the
 * sample count is checked against the dataset's length. For each workers value and round r:
 *
 *   fmnist             t0; dl_loader_new(shuffle, seed r); --epochs epochs of dl_next;
 *                      dl_loader_free; t1     (what a loader made per epoch costs, start-up and
 *                                              joining the workers included, as PyTorch's
 *                                              DataLoader with persistent_workers=False)
 *   fmnist_persistent  dl_loader_new; one untimed epoch; t0; --epochs epochs; t1; dl_loader_free
 *                                             (a loader kept across epochs, as PyTorch's
 *                                              persistent_workers=True)
 *
 * samples/s = samples handed out / (t1 - t0); the BENCH lines give the median over the rounds.
 * With --train-rate X (samples/s of the MLP training step, cluster/bench/train_bench.c) one more
 * line gives the loader's fmnist rate over it: how far ahead of training the loader runs.
 *
 * Output ends with one BENCH line per measurement (DESIGN.md, "Performance rules"). */
#include "dl.h"
#include "ember.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_WORKERS_VALUES 16
#define MAX_ROUNDS 1000

typedef struct {
  int workers[MAX_WORKERS_VALUES];
  int nworkers;
  int rounds, epochs, prefetch;
  int64_t batch;
  double train_rate; /* 0: no ratio line */
} bench_args;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median of v[0, n) (sorts v). */
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static const char usage_line[] =
    "usage: ember-loaderbench [--workers 0,1,2] [--rounds 5] [--epochs 1] [--batch 64] "
    "[--prefetch 0] [--train-rate SAMPLES_PER_S]\n";

/* msg (NULL: getopt_long has said what is wrong) and the usage line; returns exit status 2. */
static int usage(const char *msg) {
  if (msg) fprintf(stderr, "ember-loaderbench: %s\n", msg);
  fputs(usage_line, stderr);
  return 2;
}

/* optarg as an integer in [lo, hi] for option name; false (message set) if it is not one. */
static bool int_opt(const char *name, int64_t lo, int64_t hi, int *out) {
  int64_t v;
  if (em_arg_int(name, optarg, lo, hi, &v) != EM_OK) return false;
  *out = (int)v;
  return true;
}

/* "0,1,2" -> a->workers. Returns false on a malformed list. */
static bool parse_workers(const char *s, bench_args *a) {
  a->nworkers = 0;
  while (*s) {
    char *end;
    long w = strtol(s, &end, 10);
    if (end == s || w < 0 || w > 256 || a->nworkers == MAX_WORKERS_VALUES) return false;
    a->workers[a->nworkers++] = (int)w;
    if (*end == ',')
      end++;
    else if (*end)
      return false;
    s = end;
  }
  return a->nworkers > 0;
}

/* Runs `epochs` epochs of dl_next on l: adds the samples handed out to *samples and the batches'
 * first labels to *checksum. Returns false (em_last_error set) if the loader failed. */
static bool run_epochs(dl_loader *l, int epochs, int64_t *samples, int64_t *checksum) {
  for (int e = 0; e < epochs; e++) {
    for (dl_batch b; dl_next(l, &b);) {
      *samples += b.size;
      *checksum += ((const int64_t *)em_data(b.y))[0];
    }
    if (dl_status(l) != EM_OK) return false;
  }
  return true;
}

/* One round of case `persistent` (false: fmnist) with `workers`: *rate = samples/s. */
static bool one_round(dl_dataset *ds, const bench_args *a, int workers, bool persistent, int round,
                      double *rate, int64_t *checksum) {
  dl_options o = {.batch = a->batch,
                  .shuffle = true,
                  .drop_last = false,
                  .workers = workers,
                  .prefetch = a->prefetch,
                  .seed = (uint64_t)round};
  int64_t samples = 0, warm = 0, expect = a->epochs * dl_dataset_len(ds);
  double t0 = 0, t1 = 0;
  dl_loader *l = NULL;
  bool ok = false;
  if (!persistent) t0 = now_s();
  l = dl_loader_new(ds, &o);
  if (!l) goto done;
  if (persistent) {
    if (!run_epochs(l, 1, &warm, checksum)) goto done;
    t0 = now_s();
  }
  if (!run_epochs(l, a->epochs, &samples, checksum)) goto done;
  if (persistent) t1 = now_s();
  dl_loader_free(l);
  l = NULL;
  if (!persistent) t1 = now_s();
  if (samples != expect) {
    em_set_error(EM_ERR_STATE, "workers %d round %d: %lld samples handed out, expected %lld",
                 workers, round, (long long)samples, (long long)expect);
    goto done;
  }
  *rate = (double)samples / (t1 - t0);
  ok = true;
done:
  dl_loader_free(l);
  return ok;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"workers", required_argument, NULL, 'w'},  {"rounds", required_argument, NULL, 'r'},
      {"epochs", required_argument, NULL, 'e'},   {"batch", required_argument, NULL, 'b'},
      {"prefetch", required_argument, NULL, 'p'}, {"train-rate", required_argument, NULL, 't'},
      {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
  bench_args a = {.workers = {0, 1, 2}, .nworkers = 3, .rounds = 5, .epochs = 1, .batch = 64};
  for (int c; (c = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
    bool ok = true;
    switch (c) {
    case 'w':
      if (!parse_workers(optarg, &a)) return usage("--workers takes a list such as 0,1,2 (0..256)");
      break;
    case 'r': ok = int_opt("--rounds", 1, MAX_ROUNDS, &a.rounds); break;
    case 'e': ok = int_opt("--epochs", 1, 100000, &a.epochs); break;
    case 'b': ok = em_arg_int("--batch", optarg, 1, 1000000, &a.batch) == EM_OK; break;
    case 'p': ok = int_opt("--prefetch", 0, 1024, &a.prefetch); break; /* 0: the loader's */
    case 't': ok = em_arg_num("--train-rate", optarg, 1e-3, 1e12, &a.train_rate) == EM_OK; break;
    case 'h': fputs(usage_line, stdout); return 0;
    default: return usage(NULL);
    }
    if (!ok) return usage(em_last_error());
  }
  if (optind < argc) return usage("unexpected arguments after the options");

  dl_dataset *ds = dl_fmnist_open(NULL, "train", NULL);
  if (!ds) {
    fprintf(stderr, "ember-loaderbench: %s\n", em_last_error());
    return 1;
  }
  printf("ember loader: Fashion-MNIST train, %lld samples, batch %lld, shuffle, %d epoch(s) per "
         "round, %d rounds\n",
         (long long)dl_dataset_len(ds), (long long)a.batch, a.epochs, a.rounds);

  static const char *const cases[2] = {"fmnist", "fmnist_persistent"};
  double med[2][MAX_WORKERS_VALUES];
  static double rates[MAX_ROUNDS];
  int64_t checksum = 0;
  for (int w = 0; w < a.nworkers; w++) {
    for (int c = 0; c < 2; c++) {
      printf("%-18s workers=%d samples/s:", cases[c], a.workers[w]);
      for (int r = 0; r < a.rounds; r++) {
        if (!one_round(ds, &a, a.workers[w], c == 1, r, &rates[r], &checksum)) {
          printf("\n");
          fprintf(stderr, "ember-loaderbench: %s\n", em_last_error());
          dl_dataset_close(ds);
          return 1;
        }
        printf(" %.0f", rates[r]);
      }
      med[c][w] = median(rates, a.rounds);
      printf("  median %.0f\n", med[c][w]);
    }
  }
  printf("checksum %lld\n", (long long)checksum);
  dl_dataset_close(ds);

  for (int w = 0; w < a.nworkers; w++)
    for (int c = 0; c < 2; c++)
      printf("BENCH suite=loader case=%s impl=ember ranks=1 workers=%d samples_per_s=%.1f "
             "batch=%lld rounds=%d\n",
             cases[c], a.workers[w], med[c][w], (long long)a.batch, a.rounds);
  if (a.train_rate > 0)
    for (int w = 0; w < a.nworkers; w++)
      printf("BENCH suite=loader case=fmnist_vs_train impl=ember workers=%d ratio=%.2f\n",
             a.workers[w], med[0][w] / a.train_rate);
  return 0;
}
