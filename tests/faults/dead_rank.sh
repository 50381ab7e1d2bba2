#!/usr/bin/env bash
# dead_rank.sh EMBER_TRAIN DDPRUN SOURCE_DIR CASE: a rank of a 2-rank ember-train job under
# ddprun dies by SIGKILL, and the job restarts from its last complete checkpoint.
#
# CASE (the victim and the moment):
#   allreduce  rank 1, 0-0.4 s after the first checkpoint: it is stopped (SIGSTOP),
#              so that rank 0 goes on into the next all-reduce and waits there for it, then
#              killed 0.3 s later: rank 0 is inside an all-reduce that rank 1 will never join
#   ckpt_save  rank 0 (the rank that saves), inside a checkpoint save: the script watches
#              checkpoint.dir for the save's temporary file, stops rank 0 as soon as it appears,
#              checks that the temporary is still there (else rank 0 was already past the rename:
#              it is resumed and the next save is awaited), then kills it
#
# Three jobs of the same 8,000 steps (the fault tests' small model, a checkpoint every 250; every
# 50 for ckpt_save):
#   ref  uninterrupted: its final checkpoint is the oracle
#   kill --max-restarts 0 and the fault: every rank gone within 30 s of the kill, ddprun's
#        summary names the victim and SIGKILL as the first failure, exit status 137, nothing of
#        the job left running, the logs kept and named; the checkpoint latest named before the
#        kill is still latest and byte-identical, and every checkpoint loads (checksums, finite)
#   restart  --max-restarts 1 and the fault: ddprun restarts once, rank 0 resumes from the
#        checkpoint latest named at the kill, the job ends with exit 0, no temporary file is left
#        in checkpoint.dir, and the final parameters and optimizer state are byte-identical to
#        ref's (no step lost, none applied twice)
set -euo pipefail
train=$1 ddprun=$2 src=$3 case=$4
if ! command -v mpirun >/dev/null; then
  echo "SKIP: mpirun is not installed (Debian package openmpi-bin)"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-fault-dead.XXXXXX")
case $case in
  allreduce) victim=1 every=250 ;;
  ckpt_save) victim=0 every=50 ;; # 160 saves: many chances to catch one
  *) echo "unknown case $case" >&2; exit 2 ;;
esac
steps=8000 # about 4 s here: room for the fault however late the script gets to it
. "$(dirname "$0")/common.sh"
. "$(dirname "$0")/ranks.sh"
trap 'kill_ours; rm -rf "$tmp"' EXIT

# Injects the fault into the running job NAME; sets prev (the checkpoint file latest names at the
# kill), killed_at (milliseconds since 1970) and what (a description).
inject() {
  local name=$1 ck=$tmp/$1.ck pid tries=0 temp
  pid=$(rank_pid "$victim")
  [ -n "$pid" ] || fail "$name: rank $victim did not start"
  wait_for 60 test -f "$ck/latest" || fail "$name: no first checkpoint within 60 s"
  case $case in
    allreduce)
      sleep "0.$((RANDOM % 5))" # somewhere in the next few hundred steps
      kill -STOP "$pid" 2>/dev/null || fail "$name: rank $victim ended before the fault"
      sleep 0.3 # rank 0 reaches the step's all-reduce and waits for rank 1 there
      what="rank 1 stopped and killed while rank 0 waits in an all-reduce" ;;
    ckpt_save)
      shopt -s nullglob
      while :; do
        # a tight loop of builtins: a save's temporary lives for milliseconds
        until temp=$(compgen -G "$ck/ckpt-*.tmp.*"); do
          kill -0 "$pid" 2>/dev/null || fail "$name: rank 0 ended before a save was caught"
        done
        kill -STOP "$pid"
        tries=$((tries + 1))
        [ -e "${temp%%$'\n'*}" ] && [ -f "$ck/latest" ] && break
        kill -CONT "$pid" # it renamed the file first: wait for the next save
        [ "$tries" -lt 200 ] || fail "$name: no save caught in 200 tries"
      done
      temp=${temp%%$'\n'*}
      what="rank 0 stopped inside the save of $(basename "$temp") (try $tries, $(stat -c %s \
"$temp") bytes written) and killed" ;;
  esac
  prev=$ck/$(cat "$ck/latest")
  prev_sum=$(sha256sum <"$prev")
  kill -KILL "$pid"
  killed_at=$(date +%s%3N)
  echo "$name: $what; latest: $(basename "$prev")"
}

# milliseconds from the kill to now
since_kill() { echo $(($(date +%s%3N) - killed_at)); }

# ---- ref: uninterrupted ----
job_run ref 0
expect_status 0 "the uninterrupted run"
final=ckpt-$(printf %08d "$steps").safetensors
[ -f "$tmp/ref.ck/$final" ] || fail "ref left no $final"

# ---- kill: no restart ----
job_start kill 0
inject kill
job_wait
took=$(since_kill)
echo "kill: ddprun exited with status $status $((took / 1000)).$((took % 1000 / 100)) s after the kill"
expect_status 137 "ddprun after rank $victim was killed"
[ "$took" -le 30000 ] || fail "ddprun took $took ms to end the job (limit 30 s)"
no_orphans "after the killed job"
for r in 0 1; do # each rank's end, from its agent's status file
  sf=$tmp/kill.logs/rank-$r.attempt-0.status
  [ -f "$sf" ] || continue # killed with its agent by mpirun: no_orphans checked it is gone
  end=$(sed -n 's/^time_ns=//p' "$sf")
  [ $((end / 1000000 - killed_at)) -le 30000 ] || fail "rank $r ended late: $sf"
done
expect_out "^ddprun: first failure: rank $victim \(host .*, pid [0-9]+\) was killed by SIGKILL" \
  "the summary"
expect_out "^ddprun: logs: $tmp/kill.logs$" "the log directory"
[ -s "$tmp/kill.logs/rank-0.attempt-0.log" ] || fail "rank 0's log is missing or empty"
[ -f "$tmp/kill.logs/rank-1.attempt-0.log" ] || fail "rank 1's log is missing" # rank 1 is quiet
[ "$tmp/kill.ck/$(cat "$tmp/kill.ck/latest")" = "$prev" ] || fail "latest moved"
[ "$(sha256sum <"$prev")" = "$prev_sum" ] || fail "the previous checkpoint $prev changed"
checkpoints_ok "$tmp"/kill.ck/ckpt-*.safetensors >/dev/null
left=$(cd "$tmp/kill.ck" && ls -A | grep -F .tmp. || true)
echo "kill: $(grep '^ddprun: first failure' "$tmp/out" | cut -c1-160); temporaries after the" \
  "kill: ${left:-none}"

# ---- restart: --max-restarts 1 ----
job_start restart 1
inject restart
job_wait
expect_status 0 "the restarted job"
no_orphans "after the restarted job"
expect_out "^ddprun: first failure: rank $victim .* was killed by SIGKILL" "attempt 0's summary"
expect_out "^ddprun: restart 1 of 1" "the restart"
expect_out "^ddprun: attempt 1 succeeded" "the second attempt"
log1=$tmp/restart.logs/rank-0.attempt-1.log
grep -q "^resumed from $prev at step $(ckpt_step "$prev") " "$log1" ||
  fail "attempt 1 did not resume from $prev: $(grep -m1 resumed "$log1" || echo 'no resume line')"
left=$(cd "$tmp/restart.ck" && ls -A | grep -F .tmp. || true)
[ -z "$left" ] || fail "temporary files left after the restart: $left"
checkpoints_ok "$tmp"/restart.ck/ckpt-*.safetensors >/dev/null
same=$(same_params "$tmp/ref.ck/$final" "$tmp/restart.ck/$final")
echo "PASS $case: resumed from $(basename "$prev") after the restart; final $same"
