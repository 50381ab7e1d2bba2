#!/usr/bin/env bash
# Runs Ember's libFuzzer harnesses (built in FUZZ_DIR by tests/fuzz/CMakeLists.txt).
#   run.sh --seeds-only FUZZ_DIR                write the seed corpora (FUZZ_DIR/corpus/<harness>)
#   run.sh --seconds N FUZZ_DIR [HARNESS...]    fuzz each harness (default: all) for N seconds,
#                                               from its seeds plus what earlier runs found
#                                               (FUZZ_DIR/work/<harness>)
#   run.sh --regressions FUZZ_DIR               replay tests/fuzz/regress/<harness>-* (inputs
#                                               that once failed) through their harness
# A failing input is saved as FUZZ_DIR/artifacts/<harness>-crash-... (or leak-, oom-, timeout-)
# and the script exits 1. Limits per input: 5 s, 2 GiB of memory (RSS and any one malloc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
all=(config ckpt idx tokens loader_state ddprun_args train_args)
limits=(-timeout=5 -rss_limit_mb=2048 -malloc_limit_mb=2048)
# Flags of one harness: ddprun's parser leaves its allocations to the process exit after a usage
# error (tests/fuzz/ddprun_args.c), so libFuzzer's own per-input leak check is off there too.
flags_of() { case $1 in ddprun_args) echo -detect_leaks=0 ;; esac; }
# FUZZ_SEED and FUZZ_RUNS (ctest sets both): a fixed seed and a fixed number of executions, so that
# a run in the suite repeats exactly; make fuzz leaves them unset (a new seed every run).
[ -n "${FUZZ_SEED:-}" ] && limits+=(-seed="$FUZZ_SEED")
[ -n "${FUZZ_RUNS:-}" ] && limits+=(-runs="$FUZZ_RUNS")

mode=${1:?usage: run.sh --seeds-only|--seconds N|--regressions FUZZ_DIR [HARNESS...]}
shift
seconds=0
if [ "$mode" = --seconds ]; then
  seconds=${1:?--seconds needs a number}
  shift
fi
dir=${1:?FUZZ_DIR missing}
shift

seeds() {
  rm -rf "$dir/corpus"
  "$dir/fuzz_seeds" "$dir/corpus" "$src"
}

case "$mode" in
--seeds-only)
  seeds
  echo "fuzz: seeds written to $dir/corpus"
  ;;
--seconds)
  [ -d "$dir/corpus" ] || seeds
  mkdir -p "$dir/artifacts"
  harnesses=("$@")
  [ ${#harnesses[@]} -gt 0 ] || harnesses=("${all[@]}")
  status=0
  for h in "${harnesses[@]}"; do
    mkdir -p "$dir/work/$h"
    log="$dir/work/$h.log"
    # -close_fd_mask=3: the parsers' error messages would drown libFuzzer's (its own output and a
    # crash report still come through)
    read -ra extra <<<"$(flags_of "$h")"
    t0=$SECONDS
    if "$dir/fuzz_$h" "${limits[@]}" "${extra[@]}" -max_total_time="$seconds" -close_fd_mask=3 \
      -print_final_stats=1 -artifact_prefix="$dir/artifacts/$h-" "$dir/work/$h" \
      "$dir/corpus/$h" >"$log" 2>&1; then
      runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
      rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
      echo "fuzz_$h: ok, $runs executions in $((SECONDS - t0)) s ($rate/s), corpus $(ls "$dir/work/$h" | wc -l) inputs"
    else
      status=1
      echo "fuzz_$h: FAILED (log $log):"
      grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$log" | head -20
    fi
  done
  exit $status
  ;;
--regressions)
  status=0
  n=0
  for f in "$here"/regress/*; do
    [ -f "$f" ] || continue
    h=$(basename "$f")
    h=${h%%-*}
    n=$((n + 1))
    read -ra extra <<<"$(flags_of "$h")"
    if "$dir/fuzz_$h" "${limits[@]}" "${extra[@]}" "$f" >"$dir/regress.log" 2>&1; then
      echo "fuzz_$h $(basename "$f"): ok"
    else
      status=1
      echo "fuzz_$h $(basename "$f"): FAILED"
      grep -E "ERROR|SUMMARY|runtime error" "$dir/regress.log" | head -20
    fi
  done
  echo "fuzz: $n regression inputs replayed"
  exit $status
  ;;
*)
  echo "run.sh: unknown mode $mode" >&2
  exit 2
  ;;
esac
