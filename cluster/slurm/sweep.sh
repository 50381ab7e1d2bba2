#!/usr/bin/env bash
# sweep.sh: the scaling sweep as a Slurm job array, in one command (docs/slurm.md):
#
#   cluster/slurm/sweep.sh [--out DIR] [--wait SECONDS]
#
# submits sweep-element.sbatch as an array, one element per line of the plan (nodes, world size,
# overlap), run one at a time (%1: elements share the machine, and concurrent ones would measure
# each other), each writing one CSV row (cluster/scaling/bench-row.sh) into DIR/rows/; then
# sweep-gather.sbatch, held until every element succeeded (--dependency=afterok), which merges
# the rows into DIR/sweep.csv (cluster/scaling/merge-rows.sh). Prints the two job ids. With
# --wait, waits up to SECONDS for the gather job and prints the CSV (exit 1 if it did not appear).
#
# Environment:
#   EMBER_SRC    the source tree (default: this script's)
#   EMBER_BUILD  the build tree with launcher/ddprun and cluster/bench/ember-ddp-bench
#                (default: $EMBER_SRC/build)
#   SWEEP_PLAN   the elements, "nodes:world:overlap" separated by blanks, overlap on|off
#                (default: 1:1:off 1:2:on 1:2:off 1:4:on 1:4:off 2:2:on 2:2:off 2:4:on 2:4:off;
#                world 4 on this 2-core machine is oversubscribed, and the CSV says so)
#   SWEEP_NODES  nodes each element allocates (default: the most any element uses)
#   STEPS, WARMUP  timed and untimed steps of each ember-ddp-bench run (default 200 and 10)
#   BENCH_ARGS   more ember-ddp-bench options for every element ("--model cnn --bucket-mb 1")
# SLURM_CONF says which cluster (local-cluster.sh up prints it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=${EMBER_SRC:-$(cd "$here/../.." && pwd)}
build=${EMBER_BUILD:-$src/build}
out='' wait_s=''
while [ $# -gt 0 ]; do
  case $1 in
  --out) out=${2:?--out DIR}; shift 2 ;;
  --wait) wait_s=${2:?--wait SECONDS}; shift 2 ;;
  *) echo "usage: sweep.sh [--out DIR] [--wait SECONDS]" >&2; exit 2 ;;
  esac
done
[ -z "$wait_s" ] || [[ $wait_s =~ ^[1-9][0-9]*$ ]] || { echo "sweep: --wait '$wait_s': seconds" >&2; exit 2; }
[ -x "$build/cluster/bench/ember-ddp-bench" ] ||
  { echo "sweep: $build/cluster/bench/ember-ddp-bench is not built (EMBER_BUILD?)" >&2; exit 1; }
out=${out:-$PWD/runs/sweep-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out/rows" "$out/logs"
out=$(cd "$out" && pwd)

plan=${SWEEP_PLAN:-1:1:off 1:2:on 1:2:off 1:4:on 1:4:off 2:2:on 2:2:off 2:4:on 2:4:off}
: >"$out/plan.txt"
most=1 per_node_max=1
for e in $plan; do
  IFS=: read -r n w o <<<"$e"
  [[ $n =~ ^[1-9][0-9]*$ && $w =~ ^[1-9][0-9]*$ && $o =~ ^(on|off)$ ]] && [ $((w % n)) -eq 0 ] ||
    { echo "sweep: SWEEP_PLAN element '$e': nodes:world:overlap, world a multiple of nodes, on|off" >&2; exit 2; }
  echo "$n $w $o" >>"$out/plan.txt"
  [ "$n" -le "$most" ] || most=$n
  [ $((w / n)) -le "$per_node_max" ] || per_node_max=$((w / n))
done
count=$(wc -l <"$out/plan.txt")
[ "$count" -gt 0 ] || { echo "sweep: SWEEP_PLAN is empty" >&2; exit 2; }
nodes=${SWEEP_NODES:-$most}

common=(--export="ALL,EMBER_SRC=$src,EMBER_BUILD=$build,SWEEP_DIR=$out,STEPS=${STEPS:-200},WARMUP=${WARMUP:-10},BENCH_ARGS=${BENCH_ARGS:-}")
# Every element gets the largest shape in the plan; each runs its own on part of it.
array=$(sbatch --parsable "${common[@]}" --array="0-$((count - 1))%1" --nodes="$nodes" \
  --ntasks-per-node="$per_node_max" --exclusive --output="$out/logs/element-%a.out" \
  "$here/sweep-element.sbatch")
gather=$(sbatch --parsable "${common[@]}" --dependency="afterok:$array" --kill-on-invalid-dep=yes \
  --nodes=1 --ntasks=1 --output="$out/logs/gather.out" "$here/sweep-gather.sbatch")
echo "sweep: $count elements in array job $array (one at a time), gathered by job $gather into" \
  "$out/sweep.csv"
[ -n "$wait_s" ] || exit 0
end=$((SECONDS + wait_s)) ended=0
while [ $SECONDS -lt $end ]; do
  [ -n "$(squeue -h -j "$array,$gather" -o %i 2>/dev/null)" ] || { ended=1; break; }
  sleep 1
done
if [ ! -s "$out/sweep.csv" ]; then
  if [ $ended -eq 1 ]; then
    echo "sweep: the jobs ended without writing $out/sweep.csv" >&2
  else
    echo "sweep: no $out/sweep.csv after ${wait_s} s; jobs still queued:" >&2
  fi
  squeue -j "$array,$gather" >&2 || true
  for f in "$out"/logs/*.out; do [ -f "$f" ] && { echo "--- $f:" >&2; tail -n 5 "$f" >&2; }; done
  exit 1
fi
cat "$out/sweep.csv"
