#!/usr/bin/env bash
# train-job.sh: the body of train-1node.sbatch and train-2nodes.sbatch (their headers list the
# environment it reads): ember-train under ddprun, with the ranks the allocation holds, its
# checkpoints, metrics and rank logs in EMBER_RUN_DIR. Run inside an allocation (sbatch, salloc).
set -euo pipefail
[ -n "${SLURM_JOB_ID:-}" ] || { echo "train-job.sh: not inside a Slurm allocation (sbatch it)" >&2; exit 2; }
src=${EMBER_SRC:-${SLURM_SUBMIT_DIR:-$PWD}}
build=${EMBER_BUILD:-$src/build}
config=${EMBER_CONFIG:-$src/examples/configs/fmnist_mlp.yaml}
run=${EMBER_RUN_DIR:-${SLURM_SUBMIT_DIR:-$PWD}/runs/slurm-${SLURM_JOB_ID:-local}}
mkdir -p "$run"
echo "ember-job: job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?}: ${SLURM_NNODES:-?} node(s)," \
  "${SLURM_NTASKS:-?} tasks, ${SLURM_CPUS_PER_TASK:-1} CPU(s) per task; run dir $run"
# shellcheck disable=SC2086 # the overrides and options are lists of words
"$build/launcher/ddprun" --timeout 120 --log-dir "$run/logs" --tee ${DDPRUN_ARGS:-} -- \
  "$build/examples/ember-train" "$config" checkpoint.dir="$run/ckpt" train.metrics="$run/metrics" \
  ${EMBER_OVERRIDES:-}
echo "ember-job: done; checkpoints in $run/ckpt: $(ls "$run/ckpt" 2>/dev/null | xargs)"
