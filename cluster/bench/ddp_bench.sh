#!/usr/bin/env bash
# Data-parallel training benchmark: Ember (ddp_bench.c, under mpirun) against PyTorch DDP over gloo
# (ddp_peer.py, Debian's python3-torch), MLP 784-1024-1024-10 on Fashion-MNIST, batch 64 per rank,
# one compute thread per rank, at 1 and 2 ranks, and Ember at 2 ranks with --overlap on and off (what
# overlap gains). The five cases alternate, ROUNDS times, so that machine noise hits all of them; the summary gives medians, Ember 2-rank / PyTorch 2-rank, and
# each one's scaling (2-rank over 1-rank global samples/s). Then, at 2 ranks, a bucket-size sweep
# and bf16/fp16 gradient compression for Ember (medians over the same number of rounds).
# Then the CNN (em_small_cnn(1, 28, 28, 10), --model cnn): Ember and PyTorch at 1 and 2 ranks,
# alternating, ROUNDS times, and its own summary (medians, scaling against the 1.8x target of
# issue 12, Ember / PyTorch, and Ember's per-step time and all-reduce).
#   usage: cluster/bench/ddp_bench.sh [BUILD_DIR]
#   env:   MODELS (which parts run: "mlp cnn" (default), "mlp" or "cnn"),
#          ROUNDS (default 3), STEPS (timed steps per run, default 200), WARMUP (default 10),
#          CNN_STEPS (timed steps of a CNN run, default STEPS: a CNN step is ~10x an MLP step),
#          SWEEP_MB (default "0.25 1 4 16 64"), BIND (mpirun --bind-to: core or none, default core:
#          measured 17756 against 17000 samples/s, and far steadier when the machine is busy),
#          TIMELINE (a path with %r: Chrome traces of the default 2-rank Ember runs)
# mpirun gets what tests/mpi/mpirun.sh gives: --allow-run-as-root only when root and no
# single-copy (CMA) in the shared-memory transport (not allowed in containers).
set -euo pipefail
build=${1:-build}
rounds=${ROUNDS:-3}
steps=${STEPS:-200}
warmup=${WARMUP:-10}
cnn_steps=${CNN_STEPS:-$steps}
models=${MODELS:-mlp cnn}
for m in $models; do
  case $m in
  mlp | cnn) ;;
  *) echo "ddp_bench: MODELS: unknown model '$m' (mlp, cnn)" >&2 && exit 1 ;;
  esac
done
has() { [[ " $models " == *" $1 "* ]]; } # has MODEL: is MODEL in MODELS
sweep=${SWEEP_MB:-0.25 1 4 16 64}
bind=${BIND:-core}
here=$(cd "$(dirname "$0")" && pwd)
bin="$build/cluster/bench/ember-ddp-bench"
[ -x "$bin" ] || { echo "ddp_bench: $bin not built (run make build; needs MPI)" >&2; exit 1; }
export OPENBLAS_CORETYPE=SkylakeX OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mpi=(--mca btl_vader_single_copy_mechanism none --bind-to "$bind")
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
out=$(mktemp)
trap 'rm -f "$out"' EXIT

ember() { # ember RANKS [ddp_bench options...] (the options may override --steps)
  local np=$1
  shift
  timeout --signal=TERM --kill-after=10 600 mpirun -np "$np" "${mpi[@]}" "$bin" \
    --steps "$steps" --warmup "$warmup" --threads 1 "$@" | tee -a "$out"
}
pytorch() { # pytorch RANKS [ddp_peer options...]
  local np=$1
  shift
  timeout --signal=TERM --kill-after=10 600 /usr/bin/python3 "$here/ddp_peer.py" --nproc "$np" \
    --steps "$steps" --warmup "$warmup" --threads 1 "$@" | tee -a "$out"
}
# median of samples_per_s over BENCH lines of model $bcase (mlp, or cnn for the CNN's summary)
# matching a pattern (extended regex)
bcase=mlp
med() {
  grep -E "^BENCH suite=train case=$bcase $1" "$out" | sed 's/.*samples_per_s=\([0-9.]*\).*/\1/' |
    sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "nan")}'
}
medf() { # median of field $2 over lines matching $1
  grep -E "^BENCH suite=train case=$bcase $1" "$out" | sed "s/.* $2=\([0-9.]*\).*/\1/" |
    sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "nan")}'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

echo "ddp_bench: $(date -u +%FT%TZ), $(nproc --all) cores, $(uptime | sed 's/.*load/load/')"
tl=()
[ -n "${TIMELINE:-}" ] && tl=(--timeline "$TIMELINE")
if has mlp; then
  for r in $(seq "$rounds"); do
    ember 1
    ember 2 "${tl[@]}"
    ember 2 --overlap on --tag overlap
    ember 2 --overlap off --tag nooverlap
    pytorch 1
    pytorch 2
  done
  for r in $(seq "$rounds"); do
    for mb in $sweep; do ember 2 --bucket-mb "$mb" --tag sweep; done
    for c in bf16 fp16; do ember 2 --compress "$c" --tag compress; done
  done
fi
if has cnn; then
  for r in $(seq "$rounds"); do
    ember 1 --model cnn --steps "$cnn_steps"
    ember 2 --model cnn --steps "$cnn_steps"
    pytorch 1 --model cnn --steps "$cnn_steps"
    pytorch 2 --model cnn --steps "$cnn_steps"
  done
fi
echo "ddp_bench: done, $(uptime | sed 's/.*load/load/')"
machine="$(nproc --all) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# The medians e1, e2 (Ember 1 and 2 ranks) and p1, p2 (PyTorch) as a table with the scaling.
scaling_table() {
  printf '%-8s %10s %10s %8s\n' "" "1 rank" "2 ranks" "scaling"
  printf '%-8s %10s %10s %7sx\n' ember "$e1" "$e2" "$(div "$e2" "$e1")"
  printf '%-8s %10s %10s %7sx\n' pytorch "$p1" "$p2" "$(div "$p2" "$p1")"
}

if has mlp; then
  e1=$(med 'impl=ember ranks=1 .*tag=main') e2=$(med 'impl=ember ranks=2 .*tag=main')
  p1=$(med 'impl=pytorch ranks=1 ') p2=$(med 'impl=pytorch ranks=2 ')
  ov=$(medf 'impl=ember ranks=2 .*tag=main' overlap_frac)
  eno=$(med 'impl=ember ranks=2 .*tag=nooverlap') eov=$(med 'impl=ember ranks=2 .*tag=overlap')
  ovo=$(medf 'impl=ember ranks=2 .*tag=overlap' overlap_frac)
  echo
  echo "median global samples/s over $rounds rounds, $steps steps (machine: $machine," \
    "mpirun --bind-to $bind)"
  scaling_table
  printf 'ember / pytorch: 1 rank %sx, 2 ranks %sx (target >= 3x); ember scaling %sx (target >= 1.6x)\n' \
    "$(div "$e1" "$p1")" "$(div "$e2" "$p2")" "$(div "$e2" "$e1")"
  echo "ember 2 ranks, default (--overlap auto, here $(grep -E "^BENCH .*impl=ember ranks=2 .*tag=main" "$out" | grep -q "overlap=yes" && echo on || echo off)): median fraction of all-reduce time overlapped with backward: $ov"
  echo "ember 2 ranks --overlap on: $eov samples/s (overlapped fraction $ovo); --overlap off (every bucket" \
    "after backward): $eno samples/s; overlap gains $(div "$eov" "$eno")x"
  echo "bucket sweep (ember, 2 ranks):"
  for mb in $sweep; do
    printf '  %6s MB  %10s samples/s  overlap %s  comm %s ms/step  exposed %s ms/step\n' "$mb" \
      "$(med "impl=ember ranks=2 .*bucket_mb=$mb compress=none .*tag=sweep")" \
      "$(medf "impl=ember ranks=2 .*bucket_mb=$mb compress=none .*tag=sweep" overlap_frac)" \
      "$(medf "impl=ember ranks=2 .*bucket_mb=$mb compress=none .*tag=sweep" comm_ms)" \
      "$(medf "impl=ember ranks=2 .*bucket_mb=$mb compress=none .*tag=sweep" comm_exposed_ms)"
  done
  echo "compression (ember, 2 ranks, default buckets):"
  for c in bf16 fp16; do
    printf '  %6s     %10s samples/s  comm %s ms/step  exposed %s ms/step\n' "$c" \
      "$(med "impl=ember ranks=2 .*compress=$c .*tag=compress")" \
      "$(medf "impl=ember ranks=2 .*compress=$c .*tag=compress" comm_ms)" \
      "$(medf "impl=ember ranks=2 .*compress=$c .*tag=compress" comm_exposed_ms)"
  done
  echo "BENCH suite=train case=mlp impl=ember ranks=1 threads=1 batch=64 samples_per_s=$e1 stat=median rounds=$rounds"
  echo "BENCH suite=train case=mlp impl=ember ranks=2 threads=1 batch=64 samples_per_s=$e2 overlap_frac=$ov stat=median rounds=$rounds"
  echo "BENCH suite=train case=mlp impl=ember ranks=2 threads=1 batch=64 overlap=no samples_per_s=$eno stat=median rounds=$rounds"
  echo "BENCH suite=train case=mlp impl=pytorch ranks=1 threads=1 batch=64 samples_per_s=$p1 stat=median rounds=$rounds"
  echo "BENCH suite=train case=mlp impl=pytorch ranks=2 threads=1 batch=64 samples_per_s=$p2 stat=median rounds=$rounds"
  echo "BENCH suite=train case=mlp impl=ratio ranks=2 ember_over_pytorch=$(div "$e2" "$p2") ember_scaling=$(div "$e2" "$e1") pytorch_scaling=$(div "$p2" "$p1")"
fi

if has cnn; then
  bcase=cnn
  e1=$(med 'impl=ember ranks=1 ') e2=$(med 'impl=ember ranks=2 ')
  p1=$(med 'impl=pytorch ranks=1 ') p2=$(med 'impl=pytorch ranks=2 ')
  echo
  echo "CNN (em_small_cnn(1, 28, 28, 10)): median global samples/s over $rounds rounds," \
    "$cnn_steps steps (machine: $machine, mpirun --bind-to $bind)"
  scaling_table
  printf 'ember / pytorch: 1 rank %sx, 2 ranks %sx; ember scaling %sx (target >= 1.8x)\n' \
    "$(div "$e1" "$p1")" "$(div "$e2" "$p2")" "$(div "$e2" "$e1")"
  echo "ember per step (medians, ms): 1 rank $(medf 'impl=ember ranks=1 ' step_ms);" \
    "2 ranks $(medf 'impl=ember ranks=2 ' step_ms), of which all-reduce" \
    "$(medf 'impl=ember ranks=2 ' comm_ms), exposed $(medf 'impl=ember ranks=2 ' comm_exposed_ms)" \
    "(overlap $(grep -E '^BENCH suite=train case=cnn impl=ember ranks=2 ' "$out" |
      grep -q 'overlap=yes' && echo on || echo off))"
  echo "BENCH suite=train case=cnn impl=ember ranks=1 threads=1 batch=64 samples_per_s=$e1 stat=median rounds=$rounds"
  echo "BENCH suite=train case=cnn impl=ember ranks=2 threads=1 batch=64 samples_per_s=$e2 stat=median rounds=$rounds"
  echo "BENCH suite=train case=cnn impl=pytorch ranks=1 threads=1 batch=64 samples_per_s=$p1 stat=median rounds=$rounds"
  echo "BENCH suite=train case=cnn impl=pytorch ranks=2 threads=1 batch=64 samples_per_s=$p2 stat=median rounds=$rounds"
  echo "BENCH suite=train case=cnn impl=ratio ranks=2 ember_over_pytorch=$(div "$e2" "$p2") ember_scaling=$(div "$e2" "$e1") pytorch_scaling=$(div "$p2" "$p1")"
fi
