/* test_dl_ranks.c: the data loader on real ranks. Each rank's loader takes its rank and world
 * from ddp_init (no options), reads the real Fashion-MNIST test set, and the ranks gather what
 * they got: every epoch, the union of the real samples is every index exactly once, padding only
 * duplicates, all ranks have the same batch count, and epochs differ. An exact-evaluation loader
 * gives every sample to exactly one rank. Run at 2 and 3 ranks (10000 is not divisible by 3). */
#include "mpi_check.h"

#include <stdlib.h>

#define BATCH 64

/* Collects this rank's indices (and how many are real) over one epoch of l. */
static int64_t collect(dl_loader *l, int64_t *idx, int64_t *real, int64_t *batches) {
  int64_t n = 0;
  *real = *batches = 0;
  for (dl_batch b; dl_next(l, &b);) {
    for (int64_t i = 0; i < b.size; i++) {
      idx[n + i] = b.indices[i];
      CHECK(em_get(b.y, i) >= 0 && em_get(b.y, i) <= 9, "label %g", em_get(b.y, i));
    }
    /* padding comes last, so the real ones are the first `real` of the rank */
    *real += b.real;
    n += b.size;
    (*batches)++;
  }
  CHECK_OK(dl_status(l));
  return n;
}

/* Gathers every rank's (count, indices...) to all ranks; returns the concatenation's length. */
static int64_t gather(const int64_t *mine, int64_t n, int64_t cap, int64_t *all, int64_t *counts) {
  int W = ddp_world_size();
  int64_t *buf = calloc((size_t)(cap + 1), sizeof *buf), *got = calloc((size_t)(cap + 1) * W, 8);
  buf[0] = n;
  for (int64_t i = 0; i < n; i++) buf[1 + i] = mine[i];
  CHECK_OK(coll_wait(coll_allgather(ddp_comm(), coll_host_buf(buf, cap + 1, EM_I64),
                                    coll_host_buf(got, (cap + 1) * W, EM_I64), cap + 1),
                     0));
  int64_t total = 0;
  for (int r = 0; r < W; r++) {
    counts[r] = got[(size_t)r * (cap + 1)];
    for (int64_t i = 0; i < counts[r]; i++) all[total++] = got[(size_t)r * (cap + 1) + 1 + i];
  }
  free(buf);
  free(got);
  return total;
}

int main(int argc, char **argv) {
  CHECK_OK(ddp_init(&argc, &argv));
  int W = ddp_world_size();
  dl_dataset *d = dl_fmnist_open(NULL, "t10k", NULL);
  CHECK(d != NULL, "%s", em_last_error());
  if (!d) return chk_finish("test_dl_ranks");
  int64_t N = dl_dataset_len(d), cap = N / W + 1;
  int64_t *mine = malloc((size_t)cap * 8), *all = malloc((size_t)cap * W * 8);
  int64_t *counts = malloc((size_t)W * 8), *seen = calloc((size_t)N, 8);
  int64_t *first = malloc((size_t)cap * W * 8);

  dl_loader *l = dl_loader_new(d, &(dl_options){.batch = BATCH, .shuffle = true, .workers = 2,
                                                .seed = 7});
  CHECK(l != NULL, "%s", em_last_error());
  for (int64_t ep = 0; l && ep < 2; ep++) {
    CHECK(dl_epoch(l) == ep, "epoch %lld, expected %lld", (long long)dl_epoch(l), (long long)ep);
    int64_t real, batches, bmin = 0, bmax = 0;
    int64_t n = collect(l, mine, &real, &batches);
    CHECK(n == (N + W - 1) / W, "rank has %lld samples, expected ceil(%lld / %d)", (long long)n,
          (long long)N, W);
    int64_t total = gather(mine, n, cap, all, counts);
    /* equal batch counts: everyone's count gathered through the sample counts */
    for (int r = 0; r < W; r++) {
      int64_t br = (counts[r] + BATCH - 1) / BATCH;
      bmin = r == 0 || br < bmin ? br : bmin;
      bmax = r == 0 || br > bmax ? br : bmax;
    }
    CHECK(bmin == bmax && bmax == batches, "batch counts differ: %lld..%lld (mine %lld)",
          (long long)bmin, (long long)bmax, (long long)batches);
    for (int64_t i = 0; i < N; i++) seen[i] = 0;
    for (int64_t i = 0; i < total; i++) seen[all[i]]++;
    int64_t missing = 0, dups = 0;
    for (int64_t i = 0; i < N; i++) {
      missing += seen[i] == 0;
      dups += seen[i] > 1 ? seen[i] - 1 : 0;
    }
    CHECK(missing == 0, "epoch %lld: %lld samples on no rank", (long long)ep, (long long)missing);
    CHECK(dups == total - N, "epoch %lld: %lld duplicates, padding is %lld", (long long)ep,
          (long long)dups, (long long)(total - N));
    if (ep == 0) {
      for (int64_t i = 0; i < total; i++) first[i] = all[i];
    } else {
      int64_t same = 0;
      for (int64_t i = 0; i < total; i++) same += first[i] == all[i];
      CHECK(same < total / 10, "epoch 1 repeats epoch 0's order (%lld of %lld equal)",
            (long long)same, (long long)total);
    }
  }
  dl_loader_free(l);

  /* Exact evaluation: each sample on exactly one rank, real counts sum to N. */
  dl_loader *e = dl_loader_new(d, &(dl_options){.batch = 1000, .exact = true, .workers = 1});
  CHECK(e != NULL, "%s", em_last_error());
  if (e) {
    int64_t real, batches;
    int64_t n = collect(e, mine, &real, &batches);
    CHECK(real == n, "exact mode padded: %lld real of %lld", (long long)real, (long long)n);
    int64_t total = gather(mine, n, cap, all, counts);
    CHECK(total == N, "exact mode: %lld samples over the ranks, expected %lld", (long long)total,
          (long long)N);
    for (int64_t i = 0; i < N; i++) seen[i] = 0;
    for (int64_t i = 0; i < total; i++) seen[all[i]]++;
    int64_t wrong = 0;
    for (int64_t i = 0; i < N; i++) wrong += seen[i] != 1;
    CHECK(wrong == 0, "exact mode: %lld samples not seen exactly once", (long long)wrong);
    dl_loader_free(e);
  }
  dl_dataset_close(d);
  free(mine);
  free(all);
  free(counts);
  free(seen);
  free(first);
  return chk_finish("test_dl_ranks");
}
