#!/usr/bin/env bash
# stalled_rank.sh DDPRUN EMBER_TRAIN HANG_PROG SOURCE_DIR CASE: a rank that stops making progress
# is named, the job ends within the collective timeout plus a few seconds, and nothing is left.
#
#   sigstop        2 ranks of ember-train on one node; rank 1 gets SIGSTOP mid-training. Rank 0's
#                  report must name the labelled operation it waited in and rank 1 as stopped;
#                  ddprun's summary must say "stalled: rank 1 ... was stopped".
#   sigstop_nodes  the same with EMBER_COLL_NODE_RANKS=1 (every rank its own node, as across
#                  machines): rank 0 cannot see rank 1's progress, so ddprun's agents must name it.
#   hang_nodes     test_coll_hang: rank 1 sleeps (running, not stopped) instead of joining the
#                  first all-reduce, one rank per node: ddprun names it from its progress page.
# In every case: exit status non-zero, and no process of the job survives (each carries
# EMBER_FAULT_TAG in its environment, which the checks and the cleanup look for).
set -euo pipefail
ddprun=$1 train=$2 hang=$3 src=$4 case=$5
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-fault-stall.XXXXXX")
export EMBER_FAULT_TAG=$tmp
. "$(dirname "$0")/common.sh"
command -v mpirun >/dev/null || { echo "SKIP: no mpirun"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# The pids of the job's processes (launchers, agents, ranks): those with our tag in their
# environment (this script's own shells and tools have it too, and are left out by name).
tagged() { # (grep reads all its input: with pipefail, a SIGPIPE to tr would lose a match)
  local p
  for p in /proc/[0-9]*; do
    case $(basename "$(readlink "$p/exe" 2>/dev/null)") in
    ddprun | mpirun | orterun | orted | "$(basename "$train")" | "$(basename "$hang")") ;;
    *) continue ;;
    esac
    { tr "\0" "\n" <"$p/environ"; } 2>/dev/null | grep -x "EMBER_FAULT_TAG=$tmp" >/dev/null && echo "${p#/proc/}"
  done
  return 0
}
cleanup() {
  local pids
  pids=$(tagged)
  [ -n "$pids" ] && kill -CONT $pids 2>/dev/null && kill -KILL $pids 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

# The pid of rank R's program (not its agent): the tagged process running PROG with RANK=R.
rank_pid() {
  local p
  for p in $(tagged); do
    [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$(readlink -f "$2")" ] || continue
    { tr "\0" "\n" <"/proc/$p/environ"; } 2>/dev/null | grep -x "RANK=$1" >/dev/null && { echo "$p"; return 0; }
  done
  return 0
}

timeout_s=6
env_extra=()
case $case in
sigstop) ;;
sigstop_nodes) env_extra=(EMBER_COLL_NODE_RANKS=1) ;;
hang_nodes) env_extra=(EMBER_COLL_NODE_RANKS=1) timeout_s=3 ;;
*) echo "unknown case $case" >&2; exit 2 ;;
esac

logs=$tmp/logs
start=$(date +%s%N)
if [ "$case" = hang_nodes ]; then
  prog=$hang
  env "${env_extra[@]}" timeout -k 5 60 "$ddprun" -n 2 --timeout "$timeout_s" --log-dir "$logs" \
    "$hang" >"$tmp/out" 2>&1 &
else
  prog=$train
  env "${env_extra[@]}" timeout -k 5 120 "$ddprun" -n 2 --timeout "$timeout_s" --log-dir "$logs" \
    "$train" "$cfg" "${small[@]}" train.epochs=1000 train.log_every=50 >"$tmp/out" 2>&1 &
fi
job=$!

if [ "$case" != hang_nodes ]; then
  # Training has started once rank 0 logged a step; then stop rank 1.
  for _ in $(seq 300); do
    grep -q "step [0-9]*/" "$logs/rank-0.attempt-0.log" 2>/dev/null && break
    sleep 0.1
  done
  victim=$(rank_pid 1 "$train")
  [ -n "$victim" ] || fail "rank 1's process not found"
  kill -STOP "$victim"
  start=$(date +%s%N)
fi
status=0
wait "$job" || status=$?
took_ms=$((($(date +%s%N) - start) / 1000000))
took=$((took_ms / 1000)).$((took_ms % 1000 / 100))
cat "$logs"/rank-0.attempt-0.log >>"$tmp/out" 2>/dev/null || true
for f in "$logs"/rank-1.attempt-0.{status,progress}; do # for a failure's diagnosis
  [ -f "$f" ] && { echo "--- $f"; cat "$f"; } >>"$tmp/out"
done

[ "$status" -ne 0 ] || fail "ddprun exited 0"
[ "$status" -ne 124 ] && [ "$status" -ne 137 ] || fail "ddprun did not end (killed by timeout)"
[ "$took_ms" -lt $(((timeout_s + 10) * 1000)) ] || fail "the job took $took s after the fault"
sleep 1
left=$(tagged)
[ -z "$left" ] || fail "processes left: $(ps -o pid,stat,args -p "$(echo $left | tr ' ' ,)")"

case $case in
sigstop)
  expect_out "timeout after [0-9.]+ s waiting for [a-z_]+ #[0-9]+ \(.*\) \[.+\]" \
    "rank 0's report of the labelled operation"
  expect_out "rank 1 .*stopped: rank 1's process \(pid $victim on .*\) is in state T" \
    "rank 0's report of the stopped rank"
  expect_out "ddprun: stalled: rank 1 \(host .*, pid $victim\) stopped making progress: its process was stopped" \
    "ddprun's stall line"
  ;;
sigstop_nodes)
  expect_out "1 rank on other nodes, progress unknown" "rank 0's report (rank 1 out of sight)"
  expect_out "ddprun: stalled: rank 1 \(host .*, pid $victim\) stopped making progress: its process was stopped" \
    "ddprun's stall line"
  ;;
hang_nodes)
  expect_out "ddprun: stalled: rank 1 \(host .*\) stopped making progress before its first collective operation.*rank 0 had started allreduce #1" \
    "ddprun's stall line"
  ;;
esac
grep -q "ddprun: stalled: rank 0" "$tmp/out" && fail "the healthy rank 0 named as stalled"
echo "PASS ($case, ended $took s after the fault): $(grep -m1 'ddprun: stalled' "$tmp/out")"
