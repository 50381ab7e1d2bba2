#!/usr/bin/env bash
# test_netns.sh: jobs across the network-namespace cluster (cluster/netns/), one case per ctest test.
#   usage: test_netns.sh CASE DDPRUN TEST_DDP_EQUIV NETNS_TRAIN
# CASE: equiv_2x1 | equiv_2x2 | stop | linkdown (see netns.cmake). Each case removes a cluster
# left by an earlier run, brings up 2 nodes, runs its job through `netns-cluster.sh run ddprun`,
# checks the output, the ranks' status files and that no process is left in the nodes, and tears
# the cluster down on every exit. Every wait is bounded. Exit 77 (skipped) without root,
# iproute2, network namespaces or mpirun; on a failure "FAIL [netns_CASE]: what", the output, 1.
set -uo pipefail
case_name=$1 DDPRUN=$2 EQUIV=$3 TRAIN=$4
HERE=$(cd "$(dirname "$0")" && pwd)
C=$HERE/../../cluster/netns/netns-cluster.sh

skip() {
  echo "SKIP [netns_$case_name]: $*"
  exit 77
}
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, veth links); run the tests as root"
command -v ip > /dev/null || skip "'ip' not found: apt-get install iproute2 (scripts/install-deps.sh)"
command -v tc > /dev/null || skip "'tc' not found: apt-get install iproute2 (scripts/install-deps.sh)"
ip netns list > /dev/null 2>&1 || skip "'ip netns' does not work here"
unshare --net true 2> /dev/null || skip "cannot create network namespaces here (unshare --net)"
command -v mpirun > /dev/null || skip "mpirun not found (scripts/install-deps.sh)"

T=$(mktemp -d "${TMPDIR:-/tmp}/netns-test.XXXXXX")
out=$T/out
cleanup() {
  "$C" down > /dev/null 2>&1
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "FAIL [netns_$case_name]: $*"
  echo "---- output:"
  cat "$out" 2> /dev/null
  exit 1
}
has() { grep -qE -- "$1" "$out" || fail "no line matching '$1' in the output"; }
hasnt() { ! grep -qE -- "$1" "$out" || fail "unexpected '$1' in the output"; }

# Sanitizer builds (as tests/mpi/mpirun.sh): Open MPI's plug-ins stay loaded and its allocations
# are suppressed. The environment reaches node2's ranks too: its daemon is started from mpirun's.
export OMPI_MCA_mca_base_component_disable_dlclose=1
export LSAN_OPTIONS="suppressions=$HERE/../lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export ASAN_OPTIONS="fast_unwind_on_malloc=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export EMBER_DEVICE=cpu

"$C" down > "$out" 2>&1 || fail "removing a cluster left by an earlier run"
"$C" up 2 > "$out" 2>&1 || fail "netns-cluster.sh up 2"

# No process may be left in the nodes once the job is over; `run` waits 5 s for them, says what it
# had to stop ("processes were still running"), and stops it.
nodes_empty() {
  local k
  for k in 1 2; do
    [ -z "$(ip netns pids "ember-n$k")" ] || fail "processes left in node$k: $(ip netns pids "ember-n$k" |
      xargs -r ps -o pid=,args= -p)"
  done
}

# Process $1 is gone, or a zombie about to be reaped (waits at most 5 s).
gone() {
  local i
  for ((i = 0; i < 50; i++)); do
    case $(ps -o stat= -p "$1" 2> /dev/null) in '' | Z*) return 0 ;; esac
    sleep 0.1
  done
  return 1
}

# Starts the job in the background (its output in $out), sets $job.
start() {
  timeout --kill-after=5 "$1" "$C" run "${@:2}" > "$out" 2>&1 &
  job=$!
}
# Waits for the job, at most $1 s; sets $rc and $secs (seconds since $2, a date +%s.%N).
finish() {
  local limit=$1 since=$2 i
  for ((i = 0; i < limit * 10; i++)); do
    kill -0 "$job" 2> /dev/null || break
    sleep 0.1
  done
  kill -0 "$job" 2> /dev/null && fail "the job did not end within $limit s"
  wait "$job"
  rc=$?
  secs=$(awk -v a="$since" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
}
# Waits (at most 60 s) until rank 0 says the ranks are inside their training loop.
wait_training() {
  local i
  for ((i = 0; i < 600; i++)); do
    grep -q "netns_train: training" "$out" && return 0
    kill -0 "$job" 2> /dev/null || fail "the job ended before training started"
    sleep 0.1
  done
  fail "no 'netns_train: training' within 60 s"
}
# The pid of rank $1's program inside node $2 (not its ddprun agent, which has the same rank
# variables). Looks for at most 5 s.
program_pid() {
  local p i
  for ((i = 0; i < 50; i++)); do
    for p in $(ip netns pids "ember-n$2"); do
      [ "$(cat "/proc/$p/comm" 2> /dev/null)" = netns_train ] &&
        tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" &&
        echo "$p" && return 0
    done
    sleep 0.1
  done
  echo "processes in node$2:" >> "$out"
  ip netns pids "ember-n$2" | xargs -r ps -o pid=,comm=,args= -p >> "$out"
  return 1
}

case $case_name in
equiv_2x1 | equiv_2x2)
  per=${case_name#equiv_2x}
  want_hier=$([ "$per" -ge 2 ] && echo yes || echo no)
  tx0=$(ip netns exec ember-n2 cat /sys/class/net/eth0/statistics/tx_bytes)
  t0=$(date +%s.%N)
  start 100 "$DDPRUN" --hosts "node1:$per,node2:$per" --timeout 30 --log-dir "$T/logs" --tee \
    "$EQUIV" --model mlp --bucket-mb 0.004 --hierarchical "$want_hier"
  finish 110 "$t0"
  tx1=$(ip netns exec ember-n2 cat /sys/class/net/eth0/statistics/tx_bytes)
  [ "$rc" -eq 0 ] || fail "the job failed (exit status $rc)"
  world=$((2 * per))
  has "test_ddp_equiv: mlp, $world ranks .* rel diff"
  has "test_ddp_equiv: ok \($world ranks"
  if [ "$per" -ge 2 ]; then
    has "^\[rank 0\] ember: 2 nodes x 2 ranks, all-reduce hierarchical \(shared memory \+ MPI\)"
    has "test_ddp_equiv: [1-9][0-9]* hierarchical all-reduces"
  else
    has "^\[rank 0\] ember: 2 nodes x 1 rank, all-reduce through MPI: one rank per node"
  fi
  # Each node's ranks ran there: the agents' status files carry the node's own host name.
  for ((r = 0; r < world; r++)); do
    want=node$((r / per + 1))
    grep -qx "host=$want" "$T/logs/rank-$r.attempt-0.status" ||
      fail "rank $r did not run on $want: $(cat "$T/logs/rank-$r.attempt-0.status" 2>&1)"
  done
  # And talked over the link: 20 steps of a 3,754-parameter model are 300 KB of gradients per
  # rank; node2 sent at least a third of that through its veth.
  sent=$((tx1 - tx0))
  [ "$sent" -gt 100000 ] || fail "node2 sent only $sent bytes over its link"
  hasnt "processes were still running"
  nodes_empty
  echo "netns_$case_name: ok ($world ranks on 2 nodes, ${secs} s, node2 sent $sent bytes)"
  ;;
stop)
  start 100 "$DDPRUN" --hosts node1:2,node2:2 --timeout 5 --log-dir "$T/logs" --tee \
    "$TRAIN" --seconds 60
  wait_training
  pid=$(program_pid 3 2) || fail "rank 3's program not found in node2"
  kill -STOP "$pid"
  t0=$(date +%s.%N)
  finish 60 "$t0"
  kill -CONT "$pid" 2> /dev/null # if it survived (it must not)
  [ "$rc" -ne 0 ] || fail "the job succeeded with rank 3 stopped"
  # The report of the rank on rank 3's node names it, its node and the operation, and ddprun's
  # summary shows it. Every rank ends: within the timeout (5 s), its 1 s grace for reports and
  # mpirun's kill sequence.
  line="rank 2 \(on node2\): timeout after 5\.0 s waiting for allreduce #[0-9]+ .*rank 3's process \(pid $pid on node2\) is in state T"
  has "^\[rank 2\] ember: aborting the job: $line"
  has "^ddprun: first failure: rank 2 \(host node2, local rank 0"
  # ddprun names the stopped rank from its agent's progress page, whatever the healthy ranks say.
  has "^ddprun: stalled: rank 3 \(host node2, pid $pid\) stopped making progress: its process was stopped \(SIGSTOP or a debugger\)"
  hasnt "^ddprun: stalled: rank [012] "
  has "^    \| \[rank 2\] ember: aborting the job: $line"
  awk -v s="$secs" 'BEGIN { exit !(s <= 20) }' || fail "the job took $secs s to end after SIGSTOP"
  gone "$pid" || fail "rank 3 (pid $pid) is still there: $(ps -o stat=,args= -p "$pid")"
  hasnt "processes were still running"
  nodes_empty
  echo "netns_stop: ok (the job ended $secs s after SIGSTOP to rank 3 on node2, timeout 5 s)"
  ;;
linkdown)
  start 100 "$DDPRUN" --hosts node1:2,node2:2 --timeout 5 --log-dir "$T/logs" --tee \
    "$TRAIN" --seconds 60
  wait_training
  ip -n ember-nsw link set sw2 down || fail "taking node2's switch port down"
  t0=$(date +%s.%N)
  finish 60 "$t0"
  [ "$rc" -ne 0 ] || fail "the job succeeded with node2 cut off"
  # Both sides time out in the same all-reduce and name the other node's ranks as unknown.
  # node2's output cannot cross the cut link to mpirun: its ranks' reports are in their logs.
  pre="ember: aborting the job: rank [0-3] \(on node[12]\): timeout after 5\.0 s waiting for allreduce #[0-9]+ "
  has "^\[rank [01]\] ember: aborting the job: rank [01] \(on node1\): timeout after 5\.0 s waiting for allreduce #[0-9]+ .*on other nodes, progress unknown: node2 \(ranks 2-3\)"
  has "^ddprun: first failure: rank [0-3] \(host node[12]"
  hasnt "^ddprun: stalled:" # every rank is in the same all-reduce: nobody stopped making progress
  has "^    \| \[rank [0-3]\] $pre"
  for r in 2 3; do
    grep -qE "^\[rank $r\] ember: aborting the job: rank $r \(on node2\): timeout after 5\.0 s waiting for allreduce #[0-9]+ .*progress unknown: node1 \(ranks 0-1\)" \
      "$T/logs/rank-$r.attempt-0.log" || fail "no timeout report in rank $r's log: $(cat "$T/logs/rank-$r.attempt-0.log")"
  done
  # Every rank's program ended by itself. node2's Open MPI daemon cannot learn that mpirun is
  # gone across the cut link; run's epilogue stops it, and only it, and then the nodes are empty.
  pgrep -x netns_train > /dev/null && fail "netns_train processes left: $(pgrep -x netns_train)"
  if grep -q "processes were still running" "$out"; then
    grep -E "^netns-cluster:   node[0-9]+ pid " "$out" | grep -vE "pid [0-9]+: orted " &&
      fail "the epilogue had to stop more than node2's Open MPI daemon"
  fi
  nodes_empty
  echo "netns_linkdown: ok (the job ended $secs s after node2's link went down, timeout 5 s)"
  ;;
*)
  echo "test_netns.sh: unknown case '$case_name'" >&2
  exit 2
  ;;
esac
