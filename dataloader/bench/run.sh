#!/usr/bin/env bash
# Data-loader benchmark: Ember's loader (ember-loaderbench, loaderbench.c) against PyTorch's
# DataLoader (loader_peer.py, Debian's python3-torch) on the Fashion-MNIST training set, batch 64,
# shuffled, for 0, 1 and 2 workers, in two cases: a loader made per epoch (fmnist: worker start-up
# included) and a loader kept across epochs (fmnist_persistent: the second epoch). Processes
# alternate, ember then pytorch, ROUNDS times, each doing INNER rounds and printing its medians;
# the summary gives the median of those per-process medians, the Ember/PyTorch ratio, and the
# loader's rate over the MLP training step's (ember-train-bench, one thread, as train_bench.sh).
# `make bench` calls it. About 2 minutes on a 2-core machine.
#   usage: dataloader/bench/run.sh [BUILD_DIR]
#   env:   ROUNDS (default 5), INNER (default 3), WORKERS (default 0,1,2),
#          TRAIN_RATE (MLP training samples/s; unset: measured here, median of 3), EMBER_FMNIST_DIR
set -euo pipefail
build=${1:-build}
rounds=${ROUNDS:-5}
inner=${INNER:-3}
workers=${WORKERS:-0,1,2}
here=$(cd "$(dirname "$0")" && pwd)
bin="$build/dataloader/bench/ember-loaderbench"
[ -x "$bin" ] || { echo "loaderbench: $bin not built (run make build)" >&2; exit 1; }
export OPENBLAS_CORETYPE=SkylakeX OMP_NUM_THREADS=1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
run() { timeout --signal=TERM --kill-after=10 600 "$@" | tee -a "$out"; }

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc --all) cores)"
train_rate=${TRAIN_RATE:-}
train_bin="$build/cluster/bench/ember-train-bench"
if [ -z "$train_rate" ] && [ -x "$train_bin" ]; then # the median of 3 runs
  for _ in 1 2 3; do run "$train_bin" --model mlp --steps 100 --warmup 5 --threads 1; done
  train_rate=$(grep '^BENCH suite=train case=mlp impl=ember ' "$out" |
               sed 's/.*samples_per_s=\([0-9.]*\).*/\1/' | sort -g | sed -n 2p)
fi
[ -n "$train_rate" ] || echo "note: $train_bin not built and TRAIN_RATE unset: no training ratio"
train_args=()
[ -n "$train_rate" ] && train_args=(--train-rate "$train_rate")

for _ in $(seq "$rounds"); do
  run "$bin" --workers "$workers" --rounds "$inner" "${train_args[@]}"
  run /usr/bin/python3 "$here/loader_peer.py" --workers "$workers" --rounds "$inner"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# Median over the processes of their per-process medians.
med() { grep "^BENCH suite=loader case=$1 impl=$2 ranks=1 workers=$3 " "$out" |
        sed 's/.*samples_per_s=\([0-9.]*\).*/\1/' | sort -g |
        awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2];
                             else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
echo
echo "median samples/s, $rounds processes x $inner rounds each, batch 64 (machine: $(nproc --all)" \
     "cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
how="median of 3 runs"
[ -n "${TRAIN_RATE:-}" ] && how="TRAIN_RATE"
[ -n "$train_rate" ] &&
  echo "MLP training step (ember-train-bench, 1 thread, $how): $train_rate samples/s"
printf '%-18s %7s %14s %14s %14s %12s\n' case workers ember pytorch ember/pytorch ember/train
summary=()
for c in fmnist fmnist_persistent; do
  for w in ${workers//,/ }; do
    e=$(med $c ember "$w")
    p=$(med $c pytorch "$w")
    ratio=$(awk -v e="$e" -v p="$p" 'BEGIN {printf "%.1f", e / p}')
    tr=-
    [ -n "$train_rate" ] && tr=$(awk -v e="$e" -v t="$train_rate" 'BEGIN {printf "%.1f", e / t}')
    printf '%-18s %7s %14.0f %14.0f %13sx %11sx\n' $c "$w" "$e" "$p" "$ratio" "$tr"
    tail="batch=64 stat=median rounds=$rounds"
    summary+=("BENCH suite=loader case=$c impl=ember ranks=1 workers=$w samples_per_s=$e $tail")
    summary+=("BENCH suite=loader case=$c impl=pytorch ranks=1 workers=$w samples_per_s=$p $tail")
    summary+=("BENCH suite=loader case=$c impl=ratio ranks=1 workers=$w ember_over_pytorch=$ratio")
    [ "$c" = fmnist ] && [ -n "$train_rate" ] &&
      summary+=("BENCH suite=loader case=fmnist_vs_train impl=ember workers=$w ratio=$tr")
  done
done
printf '%s\n' "${summary[@]}"
