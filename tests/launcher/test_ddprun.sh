#!/usr/bin/env bash
# test_ddprun.sh: the launcher's tests, one case per ctest test.
#   usage: test_ddprun.sh CASE DDPRUN PROBE
# CASE: dryrun | bad_input | config | run_ok | run_fail | run_kill | run_fallback | run_restart |
#       run_sigterm. DDPRUN is the ddprun executable, PROBE tests/launcher/ddprun_probe.
# Each case checks what ddprun printed, its exit status, the rank logs and, for failures, that
# no process of the job is left. On a failure: "FAIL: what", the captured output, exit 1.
set -uo pipefail
case_name=$1 DDPRUN=$2 PROBE=$3
T=$(mktemp -d "${TMPDIR:-/tmp}/ddprun-test.XXXXXX")
trap 'rm -rf "$T"' EXIT
# Outside influences on the command line: a Slurm allocation, EMBER_* variables, GPUs, the
# machine's size and who we are (DDPRUN_FAKE_* are ddprun's documented test overrides).
for v in $(env | grep -oE '^(SLURM_[A-Z_]*|EMBER_[A-Z_]*)'); do unset "$v"; done
export CUDA_VISIBLE_DEVICES=
unset DDPRUN_FAKE_CORES DDPRUN_FAKE_EUID DDPRUN_FAKE_SRUN_MPI DDPRUN_FAKE_RESTRICTED

out=$T/out rc=0
fail() {
  echo "FAIL [$case_name]: $*"
  echo "---- output:"
  cat "$out" 2>/dev/null
  exit 1
}
# run ARGS...: runs ddprun, output (stdout+stderr) in $out, status in $rc, seconds in $secs.
run() {
  local t0
  t0=$(date +%s%N)
  "$DDPRUN" "$@" >"$out" 2>&1
  rc=$?
  secs=$((($(date +%s%N) - t0) / 1000000000))
}
has() { grep -qF -- "$1" "$out" || fail "no '$1' in the output"; }
hasnt() { ! grep -qF -- "$1" "$out" || fail "unexpected '$1' in the output"; }
file_has() { grep -qF -- "$2" "$1" 2>/dev/null || fail "no '$2' in $1"; }
want_rc() { [ "$rc" -eq "$1" ] || fail "exit status $rc, expected $1"; }
# The dry-run line, with ddprun's own path replaced by DDPRUN.
line() { head -n 1 "$out" | sed "s#$DDPRUN#DDPRUN#g"; }
same() { [ "$(line)" = "$1" ] || fail "command line differs:
  got:  $(line)
  want: $1"; }
# No live process (zombies aside) whose command line contains $1.
none_left() {
  local pids p
  for _ in $(seq 20); do
    pids=$(pgrep -f -- "$1" | while read -r p; do
      [ "$(ps -o stat= -p "$p" 2>/dev/null | cut -c1)" = Z ] || echo "$p"
    done)
    [ -z "$pids" ] && return 0
    sleep 0.25
  done
  ps -o pid,stat,args -p $pids
  fail "processes of the job are left: $pids"
}

TMPL="'\${TMPDIR:-/tmp}/ddprun.<pid>.XXXXXX'"
ENV1="-x EMBER_RESTART_COUNT=0 -x OMP_NUM_THREADS=1 -x EMBER_THREADS=1"
MCA="--mca btl_vader_single_copy_mechanism none"

case $case_name in
dryrun)
  export DDPRUN_FAKE_CORES=2 DDPRUN_FAKE_EUID=0
  run --dry-run -n 2 prog a
  want_rc 0
  AGENT="DDPRUN --agent 0 $TMPL tag --"
  same "mpirun -np 2 --allow-run-as-root --bind-to core $MCA $ENV1 $AGENT prog a"
  [ "$(wc -l <"$out")" -eq 1 ] || fail "more than one line"
  # Long, attached and short forms are the same option.
  for form in "--nproc-per-node 2" "--nproc-per-node=2" "-n2"; do
    run --dry-run $form prog a
    same "mpirun -np 2 --allow-run-as-root --bind-to core $MCA $ENV1 $AGENT prog a"
  done
  # More ranks than cores: oversubscribed, and not pinned.
  run -d -n 4 prog
  same "mpirun -np 4 --oversubscribe --allow-run-as-root --bind-to none $MCA $ENV1 $AGENT prog"
  # Not root: no --allow-run-as-root.
  DDPRUN_FAKE_EUID=1000 run -d -n 2 prog
  same "mpirun -np 2 --bind-to core $MCA $ENV1 $AGENT prog"
  # Hosts.
  run -d --hosts a:2,b:2 prog
  has "mpirun -np 4 -H a:2,b:2 --allow-run-as-root "
  hasnt "--oversubscribe"
  run -d -H a,b -n 3 prog
  has "mpirun -np 6 -H a:3,b:3 "
  run -d -H a:2,b:2 -n 3 prog
  has "mpirun -np 6 -H a:3,b:3 --oversubscribe "
  printf '# the cluster\n\nnodeA slots=2   # first\n  nodeB   slots=3\nnodeC:1\n' >"$T/hosts"
  run -d --hostfile "$T/hosts" prog
  has "mpirun -np 6 -H nodeA:2,nodeB:3,nodeC:1 "
  # Threads per rank, binding with several cores per rank.
  run -d -n 1 prog
  has " --bind-to core --map-by slot:PE=2 $MCA -x EMBER_RESTART_COUNT=0 -x OMP_NUM_THREADS=2 "
  has " -x EMBER_THREADS=2 $DDPRUN --agent 0 "
  run -d -n 2 --threads-per-proc 2 prog
  has "--bind-to none"
  has "-x OMP_NUM_THREADS=2 -x EMBER_THREADS=2"
  run -d -n 2 -t 2 --bind core prog
  has "--bind-to core:overload-allowed --map-by slot:PE=2"
  has "ranks will share cores"
  run -d -n 2 --bind numa prog
  has "--bind-to numa $MCA"
  run -d -n 2 -b none prog
  has "--bind-to none $MCA"
  # Inside a CPU set narrower than the machine (taskset, the netns cluster): ranks inherit it,
  # unless --bind core is asked for.
  DDPRUN_FAKE_RESTRICTED=1 run -d -n 1 prog
  has "--bind-to none $MCA"
  has "ranks inherit that CPU set"
  DDPRUN_FAKE_RESTRICTED=1 run -d -n 1 --bind core prog
  has "--bind-to core --map-by slot:PE=2 $MCA"
  hasnt "inherit"
  # Timeout, pass-through, log directory and tee.
  run -d -n 2 --timeout 30 prog
  has "-x EMBER_COLL_TIMEOUT=30 "
  run -d -n 2 --mpi-args "--mca btl self,vader  --report-bindings" prog
  has "-x EMBER_THREADS=1 --mca btl self,vader --report-bindings $DDPRUN --agent"
  (cd "$T" && "$DDPRUN" -d -n 2 --log-dir logs prog) >"$out" 2>&1
  has "--agent 0 $T/logs quiet -- prog"
  run -d -n 2 -l /x/logs --tee prog
  has "--agent 0 /x/logs tag -- prog"
  EMBER_DEVICE=cpu run -d -n 2 prog
  has "-x EMBER_THREADS=1 -x EMBER_DEVICE $DDPRUN"
  # Shell quoting: the line, given to sh, gives back every word.
  run -d -n 2 -- prog "it's here" 'a$b' ""
  eval "set -- $(head -n 1 "$out")"
  [ "${*: -4:1}" = prog ] && [ "${*: -3:1}" = "it's here" ] && [ "${*: -2:1}" = 'a$b' ] &&
    [ -z "${*: -1}" ] || fail "quoted words did not survive sh: $*"
  # Slurm allocation: srun, the allocation's nodes and ranks (srun --mpi=list offers pmix).
  export DDPRUN_FAKE_SRUN_MPI="none pmi2 pmix cray_shasta"
  SLURM_JOB_ID=42 SLURM_NNODES=2 SLURM_NTASKS_PER_NODE=2 SLURM_NTASKS=4 SLURM_CPUS_ON_NODE=4 \
    run -d prog
  want_rc 0
  SRUN="srun --mpi=pmix --nodes=2 --ntasks-per-node=2 --ntasks=4 --cpus-per-task=2"
  SRUN+=" --cpu-bind=cores --kill-on-bad-exit=1 --export=ALL,EMBER_RESTART_COUNT=0"
  SRUN+=",OMP_NUM_THREADS=2,EMBER_THREADS=2"
  same "$SRUN $AGENT prog"
  SLURM_JOB_ID=42 SLURM_JOB_NUM_NODES=3 SLURM_CPUS_ON_NODE=2 run -d -n 1 --timeout 9 prog
  has "srun --mpi=pmix --nodes=3 --ntasks-per-node=1 --ntasks=3 --cpus-per-task=2 "
  has ",EMBER_COLL_TIMEOUT=9 "
  SLURM_JOB_ID=42 SLURM_NNODES=2 run -d -n 2 -H n1,n2 prog
  has "--nodes=2 --ntasks-per-node=2 --ntasks=4 --nodelist=n1,n2 "
  SLURM_JOB_ID=42 run -d --launcher mpirun -n 2 prog
  has "mpirun -np 2 "
  # No pmix in srun: mpirun inside the allocation, P ranks on each of its nodes; said on stderr
  # in a real run.
  DDPRUN_FAKE_SRUN_MPI="none pmi2" SLURM_JOB_ID=42 SLURM_NNODES=2 SLURM_NTASKS_PER_NODE=2 \
    SLURM_CPUS_ON_NODE=2 DDPRUN_FAKE_EUID=1000 run -d prog
  same "mpirun -np 4 --map-by ppr:2:node --bind-to core $MCA $ENV1 $AGENT prog"
  DDPRUN_FAKE_SRUN_MPI="none" SLURM_JOB_ID=42 SLURM_NNODES=2 SLURM_NTASKS_PER_NODE=1 \
    SLURM_CPUS_ON_NODE=4 DDPRUN_FAKE_EUID=1000 run -d -n 2 -t 2 prog
  has "mpirun -np 4 --map-by ppr:2:node:PE=2 --oversubscribe --bind-to core "
  unset DDPRUN_FAKE_SRUN_MPI
  # -n auto without GPUs: one rank per core, said on stderr.
  DDPRUN_FAKE_CORES=3 run -d -n auto prog
  has "-n auto: 3 ranks per node (no GPU visible"
  has "mpirun -np 3 "
  DDPRUN_FAKE_CORES=64 run -d prog
  has "mpirun -np 8 "
  run --help
  want_rc 0
  has "--nproc-per-node N|auto"
  has "examples:"
  ;;

bad_input)
  # bad ARGS... -- EXPECTED: exit 2, one message naming the option, the usage hint.
  bad() {
    local want=${*: -1}
    run "${@:1:$#-1}"
    [ "$rc" -eq 2 ] || fail "ddprun ${*:1:$#-1}: exit status $rc, expected 2"
    grep -qF -- "$want" "$out" || fail "ddprun ${*:1:$#-1}: no '$want' in the message"
    grep -qF -- "usage: ddprun" "$out" || fail "ddprun ${*:1:$#-1}: no usage hint"
  }
  bad --bogus prog "unknown option '--bogus'"
  bad -q prog "unknown option '-q'"
  bad -n "option -n needs a value"
  bad --hosts "option --hosts needs a value"
  bad -n 0 prog "-n 0: must be >= 1"
  bad -n -3 prog "-n -3: must be >= 1"
  bad --nproc-per-node abc prog "--nproc-per-node 'abc': expected an integer"
  bad --threads-per-proc 0 prog "--threads-per-proc 0: must be >= 1"
  bad -t 2x prog "-t '2x'"
  bad --max-restarts many prog "--max-restarts 'many'"
  bad --timeout 0 prog "--timeout '0': expected a number of seconds > 0"
  bad --timeout=abc prog "--timeout 'abc'"
  bad --bind socket prog "--bind 'socket': expected one of none, core, numa"
  bad --launcher pbs prog "--launcher 'pbs'"
  bad --tee=yes prog "option --tee takes no value"
  bad --hosts a:2,,b prog "--hosts 'a:2,,b': entry 2"
  bad --hosts a:x prog "--hosts 'a:x': entry 1 'a:x': slots must be an integer >= 1"
  bad --hosts 'a b' prog "--hosts 'a b'"
  bad --hosts a,a prog "host 'a' is listed twice"
  bad --hostfile "$T/nope" prog "--hostfile $T/nope: cannot open"
  printf 'good slots=2\n# fine\nbad slots=two\n' >"$T/hf"
  bad --hostfile "$T/hf" prog "$T/hf:3: 'slots=two'"
  printf 'good colour=blue\n' >"$T/hf2"
  bad -f "$T/hf2" prog "$T/hf2:1: 'colour=blue'"
  printf '# nobody\n' >"$T/hf3"
  bad -f "$T/hf3" prog "--hostfile $T/hf3: no hosts"
  bad -H a -f "$T/hf" prog "--hosts and --hostfile"
  bad -n 2 "no program given"
  bad -n 2 -- "no program given"
  bad -l '' prog "-l: empty directory name"
  ;;

config)
  export DDPRUN_FAKE_CORES=2 DDPRUN_FAKE_EUID=0
  printf 'model:\n  hidden: [256]\nlaunch:\n  nproc_per_node: 2\n  timeout: 12\n' >"$T/job.yaml"
  printf '  max_restarts: 1\n  program: %s env\n' "$PROBE" >>"$T/job.yaml"
  run -d --config "$T/job.yaml"
  want_rc 0
  has "mpirun -np 2 "
  has "-x EMBER_COLL_TIMEOUT=12 "
  has "tag -- $PROBE env $T/job.yaml"
  # Only key=value words: overrides for the job file's program.
  run -d -c "$T/job.yaml" train.epochs=1 optim.lr=0.1
  has "tag -- $PROBE env $T/job.yaml train.epochs=1 optim.lr=0.1"
  # The command line wins over the file.
  run -d -n 1 --timeout 5 -c "$T/job.yaml" other
  has "mpirun -np 1 "
  has "-x EMBER_COLL_TIMEOUT=5 "
  has "tag -- other"
  hasnt "job.yaml"
  # A real run through the file: both ranks, their logs.
  printf 'launch:\n  nproc_per_node: 2\n  log_dir: %s\n  bind: none\n  program: %s env\n' \
    "$T/cl" "$PROBE" >"$T/run.yaml"
  run --config "$T/run.yaml"
  want_rc 0
  file_has "$T/cl/rank-1.attempt-0.log" "probe rank=1 local_rank=1 world=2"
  # Mistakes name the file and line.
  printf 'launch:\n  nproc_per_node: 2\n  nprocs: 3\n' >"$T/typo.yaml"
  run -d -c "$T/typo.yaml" prog
  want_rc 2
  has "typo.yaml:3"
  has "launch.nprocs"
  printf 'launch:\n  bind: socket\n' >"$T/bind.yaml"
  run -d -c "$T/bind.yaml" prog
  want_rc 2
  has "bind.yaml:2"
  has "socket"
  printf 'launch:\n  threads_per_proc: 0\n' >"$T/thr.yaml"
  run -d -c "$T/thr.yaml" prog
  want_rc 2
  has "launch.threads_per_proc"
  run -d -c "$T/missing.yaml" prog
  want_rc 2
  has "missing.yaml"
  # No program anywhere: ember-train next to ddprun, with the job file.
  printf 'train:\n  epochs: 1\nlaunch:\n  nproc_per_node: 2\n' >"$T/plain.yaml"
  run -d -c "$T/plain.yaml"
  train=$(dirname "$DDPRUN")/../examples/ember-train
  if [ -x "$train" ]; then
    want_rc 0
    has "examples/ember-train $T/plain.yaml"
  else
    want_rc 2
    has "no ember-train at $(dirname "$DDPRUN")/ember-train nor"
  fi
  ;;

run_ok)
  # 2 ranks, logs and terminal, every variable; the temporary directory is removed.
  mkdir "$T/tmp"
  TMPDIR=$T/tmp run -n 2 --log-dir "$T/logs" --tee --timeout 17 -t 1 "$PROBE" env
  want_rc 0
  for r in 0 1; do
    f=$T/logs/rank-$r.attempt-0.log
    file_has "$f" "probe rank=$r local_rank=$r world=2 local_world=2 restart=0 omp=1"
    file_has "$f" " omp=1 ember_threads=1 coll_timeout=17"
    file_has "$f" "probe rank=$r to stderr"
    file_has "$T/logs/rank-$r.attempt-0.status" "exit=0"
    file_has "$T/logs/rank-$r.attempt-0.status" "rank=$r"
    grep -qE '^time_ns=[0-9]{19}$' "$T/logs/rank-$r.attempt-0.status" || fail "no time_ns"
    has "[rank $r] probe rank=$r local_rank=$r world=2"
  done
  # Without --log-dir: tagged on the terminal, and nothing left in TMPDIR.
  TMPDIR=$T/tmp run -n 2 "$PROBE" env
  want_rc 0
  has "[rank 0] probe rank=0 "
  has "[rank 1] probe rank=1 to stderr"
  [ -z "$(ls -A "$T/tmp")" ] || fail "temporary log directory left: $(ls -A "$T/tmp")"
  # With --log-dir and no --tee: the logs only.
  run -n 2 --log-dir "$T/quiet" "$PROBE" env
  want_rc 0
  hasnt "[rank"
  file_has "$T/quiet/rank-1.attempt-0.log" "probe rank=1 "
  ;;

run_fail)
  tag=fail-$$
  mkdir "$T/tmp"
  TMPDIR=$T/tmp run -n 2 "$PROBE" fail 1 3 "$tag"
  want_rc 3
  [ "$secs" -le 30 ] || fail "took $secs s"
  has "first failure: rank 1 "
  has "exited with code 3"
  has "    | rank 1 failing with code 3"
  has "    | rank 1: something went wrong"
  has "rank 0: stopped by SIGTERM"
  # The temporary logs are kept, and ddprun says where.
  logs=$(ls -d "$T"/tmp/ddprun.*)
  has "logs: $logs"
  file_has "$logs/rank-1.attempt-0.status" "exit=3"
  none_left "$tag"
  ;;

run_kill)
  tag=kill-$$
  run -n 2 --log-dir "$T/logs" "$PROBE" kill 1 "$tag"
  [ "$rc" -ne 0 ] || fail "exit status 0 after a rank was killed"
  want_rc 137
  [ "$secs" -le 30 ] || fail "took $secs s"
  has "first failure: rank 1 "
  has "was killed by SIGKILL (Killed)"
  has "    | rank 1 killing itself"
  has "rank 0: stopped"
  file_has "$T/logs/rank-1.attempt-0.status" "signal=9"
  none_left "$tag"
  ;;

run_fallback)
  # mpirun told not to abort on a failed rank: ddprun sees the status file and stops the job.
  tag=fallback-$$
  run -n 2 --log-dir "$T/logs" --mpi-args "--mca orte_abort_on_non_zero_status 0" \
    "$PROBE" fail 0 4 "$tag"
  want_rc 4
  [ "$secs" -le 30 ] || fail "took $secs s"
  has "still running 2 s after rank 0 failed: SIGTERM"
  has "first failure: rank 0 "
  has "rank 1: stopped"
  none_left "$tag"
  ;;

run_restart)
  tag=restart-$$
  run -n 2 --max-restarts 1 --log-dir "$T/logs" "$PROBE" restart "$tag"
  want_rc 0
  has "first failure: rank 1 "
  has "restart 1 of 1 (EMBER_RESTART_COUNT=1)"
  has "attempt 1 succeeded"
  file_has "$T/logs/rank-1.attempt-0.log" "rank 1 fails on attempt 0"
  file_has "$T/logs/rank-1.attempt-0.status" "exit=5"
  for r in 0 1; do
    file_has "$T/logs/rank-$r.attempt-0.log" "rank $r attempt 0"
    file_has "$T/logs/rank-$r.attempt-1.log" "rank $r resumed and finished"
    file_has "$T/logs/rank-$r.attempt-1.status" "exit=0"
  done
  # Out of restarts: the failure's exit status.
  run -n 2 --max-restarts 0 --log-dir "$T/logs0" "$PROBE" restart "$tag"
  want_rc 5
  [ ! -e "$T/logs0/rank-0.attempt-1.log" ] || fail "an attempt 1 without --max-restarts"
  none_left "$tag"
  ;;

run_sigterm)
  tag=sigterm-$$
  t0=$(date +%s%N)
  "$DDPRUN" -n 2 --max-restarts 3 --log-dir "$T/logs" "$PROBE" sleep "$tag" >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    [ "$(cat "$T"/logs/rank-*.attempt-0.log 2>/dev/null | grep -c sleeping)" -eq 2 ] && break
    sleep 0.1
  done
  [ "$(cat "$T"/logs/rank-*.attempt-0.log 2>/dev/null | grep -c sleeping)" -eq 2 ] ||
    fail "the ranks did not start"
  t1=$(date +%s%N)
  kill -TERM $pid
  wait $pid
  rc=$?
  ms=$((($(date +%s%N) - t1) / 1000000))
  [ "$rc" -ne 0 ] || fail "exit status 0 after SIGTERM"
  want_rc 143
  [ "$ms" -le 12000 ] || fail "stopping took $ms ms"
  has "SIGTERM: stopping every rank"
  has "interrupted by SIGTERM"
  hasnt "restart 1 of 3"
  [ ! -e "$T/logs/rank-0.attempt-1.log" ] || fail "restarted after an interrupt"
  none_left "$tag"
  echo "stopped in $ms ms"
  ;;

*)
  echo "test_ddprun.sh: unknown case '$case_name'" >&2
  exit 2
  ;;
esac
echo "ok: $case_name"
