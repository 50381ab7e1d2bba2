#!/usr/bin/env bash
# slurm_job.sh 1node|2nodes BUILD_DIR SOURCE_DIR: sbatch cluster/slurm/train-1node.sbatch (one
# node, 2 tasks) or train-2nodes.sbatch (two nodes x 2 tasks) on the local cluster, 30 steps of
# examples/configs/fmnist_mlp.yaml, and check what the job left:
#   - the job COMPLETED (waited for at most 180 s; else the state and the end of its log)
#   - ddprun chose srun --mpi=pmix (srun here has pmix) and the ranks ran on the expected nodes
#     (their status files name the hosts: n1, or n1 and n2)
#   - the RESULT line (ranks=2 or 4, a train loss below the first step's ~2.30), 30 metrics rows,
#     the step-30 checkpoint
# 2nodes also runs the same job with srun's pmix hidden from ddprun (DDPRUN_FAKE_SRUN_MPI=none):
# ddprun says it falls back to mpirun inside the allocation, and that job's 30 losses equal the
# srun job's bit for bit (the same ranks, data and seed).
set -euo pipefail
kind=$1 build=$2 src=$3
. "$(dirname "$0")/slurm_lib.sh"
slurm_env
tmp=$(mktemp -d "${TMPDIR:-/tmp}/slurm-job.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
case $kind in
1node) script=train-1node.sbatch nodes=1 ranks=2 hosts="n1" ;;
2nodes) script=train-2nodes.sbatch nodes=2 ranks=4 hosts="n1 n2" ;;
*) fail "unknown job kind '$kind' (1node, 2nodes)" ;;
esac

# submit NAME [VAR=value]: the job with its run directory $tmp/NAME; sets $jid
submit() {
  local name=$1 extra=${2:+,$2}
  local env="ALL,EMBER_SRC=$src,EMBER_BUILD=$build,EMBER_RUN_DIR=$tmp/$name"
  env+=",EMBER_OVERRIDES=train.steps=30 optim.warmup_steps=5 train.log_every=10 train.threads=1"
  jid=$(sbatch --parsable --output="$tmp/$name.out" --export="$env$extra" \
    "$src/cluster/slurm/$script") || fail "sbatch $script failed"
  echo "submitted $script as job $jid ($name)"
}

check_run() { # check_run NAME: the job's output, rank status files, metrics and checkpoint
  local name=$1 out=$tmp/$1.out run=$tmp/$1
  cat "$out"
  local result
  result=$(sed -n 's/^\[rank 0\] \(RESULT .*\)/\1/p' "$out")
  [ -n "$result" ] || fail "$name: no RESULT line from rank 0 in $out"
  grep -q " ranks=$ranks\$" <<<"$result" || fail "$name: RESULT does not say ranks=$ranks: $result"
  awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
       END { exit !(v["train_loss"] > 0 && v["train_loss"] < 2.3 && v["samples_per_s"] > 0) }' \
    <<<"$result" || fail "$name: RESULT's train_loss or samples_per_s is off: $result"
  # ember says how it reduces only when the ranks span nodes
  [ "$nodes" -eq 1 ] || grep -q "ember: $nodes nodes x $((ranks / nodes)) ranks, all-reduce hierarchical" \
    "$out" || fail "$name: ember did not see $nodes nodes and choose the hierarchical all-reduce"
  local seen
  seen=$(sed -n 's/^host=//p' "$run"/logs/rank-*.attempt-0.status | sort -u | xargs)
  [ "$seen" = "$hosts" ] || fail "$name: ranks ran on '$seen', expected '$hosts'"
  [ "$(ls "$run"/logs/rank-*.attempt-0.status | wc -l)" -eq "$ranks" ] ||
    fail "$name: expected $ranks rank status files"
  grep -L '^exit=0$' "$run"/logs/rank-*.attempt-0.status | grep -q . &&
    fail "$name: a rank did not exit 0"
  [ "$(tail -n +2 "$run/metrics/metrics.csv" | wc -l)" -eq 30 ] ||
    fail "$name: expected 30 rows in metrics.csv"
  [ -s "$run/ckpt/ckpt-00000030.safetensors" ] || fail "$name: no step-30 checkpoint in $run/ckpt"
  echo "ok: $name: $result; ranks on $seen; checkpoint $(stat -c %s "$run/ckpt/ckpt-00000030.safetensors") bytes"
}

t0=$SECONDS
submit srun
wait_job "$jid" 180 "$tmp/srun.out"
echo "job $jid took $((SECONDS - t0)) s from sbatch to COMPLETED"
check_run srun
grep -q "^ddprun: inside Slurm job $jid: \`srun --mpi=list\` offers pmix: ranks start with srun --mpi=pmix" \
  "$tmp/srun.out" || fail "srun: ddprun did not say it starts the ranks with srun --mpi=pmix"

if [ "$kind" = 2nodes ]; then
  t0=$SECONDS
  submit mpirun DDPRUN_FAKE_SRUN_MPI=none
  wait_job "$jid" 180 "$tmp/mpirun.out"
  echo "job $jid took $((SECONDS - t0)) s from sbatch to COMPLETED"
  check_run mpirun
  grep -q "offers no pmix: ranks start with mpirun inside the allocation" "$tmp/mpirun.out" ||
    fail "mpirun: ddprun did not say it falls back to mpirun"
  cmp <(cut -d, -f1-4 "$tmp/srun/metrics/metrics.csv") \
    <(cut -d, -f1-4 "$tmp/mpirun/metrics/metrics.csv") ||
    fail "the mpirun job's steps, losses and learning rates differ from the srun job's"
  echo "ok: mpirun inside the allocation: the same 30 losses as under srun --mpi=pmix"
fi
