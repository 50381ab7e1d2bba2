#!/usr/bin/env bash
# Single-process training benchmark: Ember against PyTorch (Debian's python3-torch) on the same
# model, data, batch, optimizer and one thread, in the same run. Rounds alternate between the two
# so that machine noise hits both; the summary gives medians and the ratio.
#   usage: cluster/bench/train_bench.sh [BUILD_DIR] ; env ROUNDS (default 5), STEPS_MLP, STEPS_CNN
set -euo pipefail
build=${1:-build}
rounds=${ROUNDS:-5}
here=$(cd "$(dirname "$0")" && pwd)
bin="$build/cluster/bench/ember-train-bench"
[ -x "$bin" ] || { echo "train_bench: $bin not built (run make build)" >&2; exit 1; }
export OPENBLAS_CORETYPE=SkylakeX OMP_NUM_THREADS=1
declare -A steps=([mlp]=${STEPS_MLP:-100} [cnn]=${STEPS_CNN:-20})
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for model in mlp cnn; do
  for r in $(seq "$rounds"); do
    "$bin" --model $model --steps ${steps[$model]} --warmup 5 --threads 1 | tee -a "$out"
    /usr/bin/python3 "$here/train_peer.py" --model $model --steps ${steps[$model]} --warmup 5 \
      --threads 1 | tee -a "$out"
  done
done
echo
echo "median samples/s over $rounds rounds (machine: $(nproc --all) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
for model in mlp cnn; do
  med() { grep "^BENCH suite=train case=$model impl=$1 " "$out" |
          sed 's/.*samples_per_s=\([0-9.]*\).*/\1/' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  e=$(med ember); p=$(med pytorch)
  ratio=$(awk -v e="$e" -v p="$p" 'BEGIN {printf "%.2f", e / p}')
  printf '%-4s ember %10s  pytorch %10s  ratio %sx\n' "$model" "$e" "$p" "$ratio"
  echo "BENCH suite=train case=$model impl=ember ranks=1 threads=1 samples_per_s=$e stat=median rounds=$rounds"
  echo "BENCH suite=train case=$model impl=pytorch ranks=1 threads=1 samples_per_s=$p stat=median rounds=$rounds"
  echo "BENCH suite=train case=$model impl=ratio ranks=1 ember_over_pytorch=$ratio"
done
