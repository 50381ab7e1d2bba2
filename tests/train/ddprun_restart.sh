#!/usr/bin/env bash
# ddprun_restart.sh EMBER_TRAIN DDPRUN SOURCE_DIR: ember-train under ddprun on 2 ranks, with a
# rank killed by SIGKILL after step 30 (EMBER_FAULT_KILL; checkpoints every 20 steps).
#
#   A  60 steps under ddprun, nothing killed                 (the uninterrupted run)
#   K  the kill, --max-restarts 0: ddprun exits non-zero within 30 s, and its summary names
#      rank 1 and SIGKILL
#   R  the kill, --max-restarts 1: the job completes (exit 0) after one restart that resumes
#      from step 20, and its metrics rows 1..60 (step, epoch, loss, lr) equal A's bit for bit
set -euo pipefail
train=$1 ddprun=$2 src=$3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-ddprun-restart.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/common.sh"

common=(data.batch=32 checkpoint.every=20 train.steps=60 train.log_every=10 train.seed=3
        train.threads=1 optim.warmup_steps=10)
job() { # job NAME MAX_RESTARTS [VAR=value...]: metrics into $tmp/NAME, checkpoints NAME.ckpt
  local name=$1 restarts=$2
  shift 2
  (
    [ $# -eq 0 ] || export "$@"
    exec "$ddprun" -n 2 --max-restarts "$restarts" --timeout 60 --tee \
      --log-dir "$tmp/$name.logs" \
      -- "$train" "$src/examples/configs/fmnist_mlp.yaml" "${common[@]}" \
      train.metrics="$tmp/$name" checkpoint.dir="$tmp/$name.ckpt" >"$tmp/out" 2>&1
  )
}

job a 0 || fail "run A exited with status $?"
grep -q 'RESULT test_acc=' "$tmp/out" || fail "A printed no RESULT line"

start=$(date +%s)
if job k 0 EMBER_FAULT_KILL="rank=1,step=30"; then fail "run K succeeded although rank 1 was killed"; fi
took=$(($(date +%s) - start))
[ "$took" -le 30 ] || fail "run K took ${took} s to stop after the kill (limit 30 s)"
grep -q "^ddprun: first failure: rank 1 .*SIGKILL" "$tmp/out" ||
  fail "the summary does not name rank 1 and SIGKILL as the first failure"
echo "K: ddprun stopped the job in ${took} s: $(grep '^ddprun: first failure' "$tmp/out")"

job r 1 EMBER_FAULT_KILL="rank=1,step=30" || fail "run R exited with status $? after a restart"
grep -q "resumed from .*ckpt-00000020.safetensors at step 20" "$tmp/out" ||
  fail "R did not resume from the step-20 checkpoint"
[ "$(csv_rows "$tmp/r/metrics.csv" | wc -l)" -eq 60 ] || fail "R: expected 60 metrics rows"
if ! diff <(csv_rows "$tmp/a/metrics.csv" | cut -d, -f1-4) \
          <(csv_rows "$tmp/r/metrics.csv" | cut -d, -f1-4) >"$tmp/diff"; then
  cat "$tmp/diff"
  fail "R: losses differ from the uninterrupted run"
fi
echo "ok: killed rank reported in ${took} s; the restarted job's 60 losses equal the uninterrupted run's"
