# shellcheck shell=bash
# slurm_lib.sh: shared by the Slurm test scripts (sourced). Expects $src (the source tree).
#   slurm_env             skip (77) when local-cluster.sh cannot work here; else find the cluster
#                         that the slurm_up fixture made (EMBER_SLURM_STATE names its pointer
#                         file) and export SLURM_CONF
#   fail MSG              "FAIL: MSG", exit 1
#   wait_job ID SECONDS LOG   waits until job ID has ended; fails naming its state and the end
#                         of LOG when it ran out of time (the job is cancelled) or did not complete
# Slurm variables of an allocation the tests might run in would steer sbatch and ddprun.
for v in $(env | grep -oE '^SLURM_[A-Z_]*' | grep -v '^SLURM_CONF$'); do unset "$v"; done
unset SLURM_CONF DDPRUN_FAKE_SRUN_MPI EMBER_SLURM_DIR

fail() { echo "FAIL: $*" >&2; exit 1; }

slurm_env() {
  "$src/cluster/slurm/local-cluster.sh" check || exit $?
  : "${EMBER_SLURM_STATE:?the tests set EMBER_SLURM_STATE (tests/cluster/slurm.cmake)}"
  [ -s "$EMBER_SLURM_STATE" ] ||
    fail "no local cluster recorded in $EMBER_SLURM_STATE: did the slurm_up fixture fail?"
  slurm_dir=$(cat "$EMBER_SLURM_STATE")
  export SLURM_CONF=$slurm_dir/slurm.conf
  [ -f "$SLURM_CONF" ] || fail "$SLURM_CONF does not exist"
}

job_field() { # job_field ID FIELD: JobState, ExitCode, ... from scontrol (empty if unknown)
  scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"
}

wait_job() {
  local id=$1 secs=$2 log=$3 state=
  local end=$((SECONDS + secs))
  while [ $SECONDS -lt $end ]; do
    state=$(job_field "$id" JobState)
    case $state in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) break ;;
    esac
    sleep 0.5
  done
  if [ "$state" != COMPLETED ]; then
    local why
    why=$(job_field "$id" Reason)
    if [ $SECONDS -ge $end ]; then
      scancel "$id" 2>/dev/null || true
      why="still $state after ${secs} s (cancelled); reason ${why:-none}"
    else
      why="state $state, exit code $(job_field "$id" ExitCode), reason ${why:-none}"
    fi
    echo "--- last lines of $log:" >&2
    tail -n 25 "$log" >&2 2>/dev/null || echo "(no log)" >&2
    fail "job $id: $why"
  fi
}
