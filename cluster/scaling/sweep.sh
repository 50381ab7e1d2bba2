#!/usr/bin/env bash
# sweep.sh: the scaling sweep in one command: Ember's data-parallel training throughput on one node
# (1, 2 and 4 ranks, overlap on and off, bucket sizes, gradient compression) and across network-
# namespace "nodes" (cluster/netns/) at several link rates, written as one CSV, then summarised
# into tables and PNG plots by summarize.py (docs/scaling.md).
#
#   cluster/scaling/sweep.sh [--build DIR] [--out DIR] [--rounds N] [--parts "..."]
#                            [--models "mlp cnn"] [--layouts "2x1 4x1 2x2"]
#                            [--rates "none 10gbit 5gbit 1gbit"] [--strong GLOBAL_BATCH] [--quick]
#
#   --parts    which parts run (default all): local (1, 2, 4 ranks, overlap on/off), bucket
#              (2 ranks, buckets of 1, 4 and 16 MB), compress (2 ranks: none, bf16, fp16), netns
#              (layouts x rates x overlap on/off; needs root and iproute2)
#   --layouts  netns layouts, NODESxRANKS_PER_NODE
#   --rates    netns link rates (tc tbf on every link; "none": unshaped veth)
#   --strong   strong scaling: the global batch stays GLOBAL_BATCH (per rank GLOBAL_BATCH/world);
#              default weak scaling, 64 per rank
#   --quick    a smoke run: 1 round, few steps, MLP, 2x1 at none and 1gbit (the ctest uses it)
#   --rounds   each configuration runs this many times, the configurations alternating so that
#              machine noise hits all of them (default 3); summarize.py takes medians
#
# Environment: STEPS, WARMUP (MLP; default 100 and 10), CNN_STEPS (default 40).
# Output (default runs/scaling-DATE in the current directory, as the Slurm sweep's):
#   rows.csv            every run: cluster/scaling/bench-row.sh's columns, then round,
#                       global_batch and scaling (weak|strong)
#   summary.csv, tables.md, *.png, measured_MODEL.csv   summarize.py's (medians, plots)
#   profile_MODEL.json  with the netns part: the model's 1-rank backward profile
#   model_MODEL.csv     the scale-out model's prediction against each netns configuration
# The machine (CPU model, cores) is in every row: never mix figures from different machines.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$src/build out= rounds=3 parts="local bucket compress netns" models="mlp cnn"
layouts="2x1 4x1 2x2" rates="none 10gbit 5gbit 1gbit" strong=0
steps=${STEPS:-100} warmup=${WARMUP:-10} cnn_steps=${CNN_STEPS:-40}
usage() { sed -n '6,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
  --build | --out | --rounds | --parts | --models | --layouts | --rates | --strong)
    [ $# -ge 2 ] || usage
    v=$2
    case $1 in
    --build) build=$v ;; --out) out=$v ;; --rounds) rounds=$v ;; --parts) parts=$v ;;
    --models) models=$v ;; --layouts) layouts=$v ;; --rates) rates=$v ;; --strong) strong=$v ;;
    esac
    shift 2 ;;
  --quick)
    rounds=1 models=mlp layouts=2x1 rates="none 1gbit" steps=20 warmup=3 cnn_steps=5
    shift ;;
  -h | --help) usage ;;
  *) echo "sweep: unknown option '$1'" >&2; usage ;;
  esac
done
die() { echo "sweep: $*" >&2; exit 2; }
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds '$rounds': an integer >= 1"
[[ $strong =~ ^[0-9]+$ ]] || die "--strong '$strong': a global batch (integer)"
for p in $parts; do [[ $p =~ ^(local|bucket|compress|netns)$ ]] || die "--parts: unknown part '$p'"; done
for m in $models; do [[ $m =~ ^(mlp|cnn)$ ]] || die "--models: unknown model '$m' (mlp, cnn)"; done
for l in $layouts; do [[ $l =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || die "--layouts: '$l' is not NODESxRANKS"; done
for r in $rates; do [[ $r =~ ^(none|[0-9]+(k|m|g)bit)$ ]] || die "--rates: '$r' is not none or e.g. 5gbit"; done
bench=$build/cluster/bench/ember-ddp-bench ddprun=$build/launcher/ddprun
[ -x "$bench" ] && [ -x "$ddprun" ] || die "$bench or $ddprun is not built (--build DIR; make build)"
has() { [[ " $parts " == *" $1 "* ]]; }
if has netns; then
  [ "$(id -u)" -eq 0 ] || die "the netns part needs root (or leave it out: --parts \"local bucket compress\")"
  command -v ip >/dev/null || die "the netns part needs iproute2 (apt-get install iproute2)"
fi
out=${out:-$PWD/runs/scaling-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rows=$out/rows.csv
mode=weak
[ "$strong" -eq 0 ] || mode=strong
echo "$("$here/bench-row.sh" --header),round,global_batch,scaling" >"$rows"
netns=$src/cluster/netns/netns-cluster.sh
cluster_up=0
cleanup() { [ $cluster_up -eq 0 ] || "$netns" down >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# row ROUND WORLD LABEL-OPTIONS... -- LAUNCH... : one run, one row (bench-args come from $cfg)
batch_for() { [ "$strong" -gt 0 ] && echo $((strong / $1)) || echo 64; }
row() {
  local round=$1 world=$2
  shift 2
  local labels=() model=$cfg_model
  while [ "$1" != -- ]; do labels+=("$1"); shift; done
  shift
  local s=$steps
  [ "$model" = cnn ] && s=$cnn_steps
  local b
  b=$(batch_for "$world")
  [ "$b" -ge 1 ] || die "--strong $strong is smaller than the world size $world"
  local line
  if ! line=$(timeout -k 10 900 "$here/bench-row.sh" "${labels[@]}" -- "$@" "$bench" --model "$model" \
    --steps "$s" --warmup "$warmup" --threads 1 --batch "$b" "${cfg_args[@]}" 2>>"$out/runs.log"); then
    echo "sweep: a run failed (see $out/runs.log): $*" >&2
    return 1
  fi
  echo "$line,$round,$((b * world)),$mode" >>"$rows"
  echo "  $(echo "$line" | cut -d, -f5-11,19,20)" >&2
}
local_run() { # local_run ROUND WORLD SETTING [bench options...]
  local round=$1 world=$2 setting=$3
  shift 3
  cfg_args=("$@")
  row "$round" "$world" --launcher local --setting "$setting" -- \
    "$ddprun" -n "$world" --timeout 300
}

echo "sweep: writing $out (rounds $rounds, parts: $parts)" >&2
for round in $(seq 1 "$rounds"); do
  echo "sweep: round $round of $rounds" >&2
  for cfg_model in $models; do
    if has local; then
      local_run "$round" 1 ranks
      for w in 2 4; do
        for o in off on; do local_run "$round" "$w" "overlap-$o" --overlap "$o"; done
      done
    fi
    [ "$cfg_model" = mlp ] || continue # the sweeps of one setting use the MLP
    if has bucket; then
      for mb in 1 4 16; do local_run "$round" 2 "bucket" --bucket-mb "$mb"; done
    fi
    if has compress; then
      for c in none bf16 fp16; do local_run "$round" 2 "compress" --compress "$c"; done
    fi
  done
done

if has netns; then
  for layout in $layouts; do
    n=${layout%x*} per=${layout#*x}
    hosts=$(seq -s, -f "node%g:$per" 1 "$n")
    "$netns" down >/dev/null 2>&1 || true
    "$netns" up "$n" >>"$out/runs.log" 2>&1 || die "netns-cluster.sh up $n failed (see $out/runs.log)"
    cluster_up=1
    for round in $(seq 1 "$rounds"); do
      for rate in $rates; do
        "$netns" rate "$rate" >>"$out/runs.log" 2>&1 || die "netns-cluster.sh rate $rate failed"
        echo "sweep: netns $layout, link $rate, round $round" >&2
        for cfg_model in $models; do
          for o in off on; do
            cfg_args=(--overlap "$o")
            row "$round" $((n * per)) --launcher netns --nodes "$n" --link "$rate" \
              --setting "overlap-$o" -- "$netns" run "$ddprun" --hosts "$hosts" --timeout 300
          done
        done
      done
    done
    "$netns" down >>"$out/runs.log" 2>&1
    cluster_up=0
  done
fi

/usr/bin/python3 "$here/summarize.py" "$out"

# The scale-out model against these runs: each model's backward profile, measured at 1 rank
# (ember-ddp-bench --profile), then predicted against measured netns step times.
if has netns; then
  for m in $models; do
    [ -f "$out/measured_$m.csv" ] || continue
    s=$steps
    [ "$m" = cnn ] && s=$cnn_steps
    timeout -k 10 600 "$ddprun" -n 1 "$bench" --model "$m" --steps "$s" --warmup "$warmup" \
      --threads 1 --batch "$(batch_for 1)" --profile "$out/profile_$m.json" >>"$out/runs.log" 2>&1 ||
      die "the $m profile run failed (see $out/runs.log)"
    echo "sweep: the scale-out model against the $m runs (model_$m.csv):" >&2
    /usr/bin/python3 "$src/cluster/model/scalemodel.py" validate-measured "$out/measured_$m.csv" \
      --profile "$out/profile_$m.json" --format csv >"$out/model_$m.csv"
    cat "$out/model_$m.csv"
  done
fi
echo "sweep: done: $out" >&2
