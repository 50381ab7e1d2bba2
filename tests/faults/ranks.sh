# ranks.sh: shared by the multi-rank fault scripts (sourced after common.sh). ember-train under
# ddprun on 2 ranks: start a job in the background, find one rank's process, check that nothing is
# left running, compare final checkpoints. Expects train, ddprun, src and tmp (a scratch
# directory named in every process the scripts start: the trap's cleanup finds them by it).
#
#   job_start NAME RESTARTS [key=value...]   ddprun -n 2 --max-restarts RESTARTS, at most
#                          $job_limit s (default 120), in the background: output $tmp/NAME.out,
#                          logs $tmp/NAME.logs, checkpoints $tmp/NAME.ck; sets job_pid
#   job_wait               waits for it (bounded by its own timeout); sets status
#   job_run NAME RESTARTS [key=value...]     both, in the foreground
#   proc_lines PID FILE    /proc/PID/FILE's strings (cmdline, environ), one a line
#   rank_pid R             the pid of rank R's ember-train (its environment's RANK; ddprun's agent
#                          sets it), waiting up to 20 s for it to start; empty if it never does
#   ours                   pids of the processes whose command line names $tmp and whose
#                          executable is ddprun (the launcher and the agents), mpirun or this
#                          build's ember-train
#   no_orphans WHAT        fails if any process of ours is left (after a grace of 5 s)
#   kill_ours              SIGKILL to each of ours, by pid (the traps)
#   wait_for SECONDS CMD...  runs CMD every 20 ms until it succeeds; false after SECONDS
#   same_params A B        the final checkpoints A and B hold byte-identical tensors (model and
#                          optimizer state) and the same step, loader position, generator and
#                          optimizer step count
#   ckpt_step FILE         the step of a ckpt-<step>.safetensors path
train_bin=$(readlink -f "$train")
job_limit=${job_limit:-120}
# every job of a script trains the same: the fault tests' small model for $steps steps
steps=${steps:-4000}
every=${every:-250}
job_args=("${small[@]}" train.steps="$steps" train.seed=5 train.log_every=500 train.metrics=
          checkpoint.every="$every" checkpoint.keep_last=3 checkpoint.resume=auto)

job_start() {
  local name=$1 restarts=$2
  shift 2
  rm -rf "$tmp/$name.ck" "$tmp/$name.logs"
  timeout -k 5 "$job_limit" "$ddprun" -n 2 --max-restarts "$restarts" --timeout 60 --tee \
    --log-dir "$tmp/$name.logs" -- "$train" "$cfg" "${job_args[@]}" \
    checkpoint.dir="$tmp/$name.ck" "$@" >"$tmp/$name.out" 2>&1 &
  job_pid=$!
  job_out=$tmp/$name.out
}

job_wait() {
  status=0
  wait "$job_pid" || status=$?
  cp "$job_out" "$tmp/out" # for fail's tail
}

job_run() {
  job_start "$@"
  job_wait
}

wait_for() {
  local limit=$1
  shift
  local until=$((SECONDS + limit))
  until "$@"; do
    [ "$SECONDS" -lt "$until" ] || return 1
    sleep 0.02
  done
}

# proc_lines PID cmdline|environ: the file's strings, one a line; nothing once PID has gone
proc_lines() { { tr '\0' '\n' <"/proc/$1/$2"; } 2>/dev/null || true; }

# rank R's ember-train among ours: RANK=R in /proc/PID/environ
find_rank() {
  local pid
  for pid in $(pgrep -f -- "$train"); do
    [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$train_bin" ] || continue
    proc_lines "$pid" cmdline | grep -qF -- "$tmp" || continue
    proc_lines "$pid" environ | grep -qx "RANK=$1" || continue
    echo "$pid"
    return 0
  done
  return 1
}

rank_pid() {
  local until=$((SECONDS + 20))
  until find_rank "$1"; do
    [ "$SECONDS" -lt "$until" ] || return 0
    sleep 0.02
  done
}

ours() {
  local pid
  for pid in $(pgrep -f -- "$tmp"); do
    [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ] && continue
    # not this script's own helpers (a pgrep of ours names $tmp too)
    case "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" in
      "$train_bin" | */ddprun | */mpirun | */orterun | */prterun) echo "$pid" ;;
    esac
  done
}

no_orphans() {
  local left
  wait_for 5 none_left && return 0
  left=$(ours | while read -r pid; do
    echo "$pid $(proc_lines "$pid" cmdline | tr '\n' ' ' | cut -c1-160)"
  done)
  [ -z "$left" ] || fail "$1: processes left running: $left"
}

none_left() { [ -z "$(ours)" ]; }

kill_ours() {
  local pid
  for pid in $(ours); do kill -KILL "$pid" 2>/dev/null || true; done
}

ckpt_step() {
  local base=${1##*/ckpt-}
  echo $((10#${base%.safetensors}))
}

same_params() {
  local py=${EMBER_PYTHON3:-python3} mod=$src/examples/python/ember/checkpoint.py
  timeout 60 "$py" - "$mod" "$1" "$2" <<'PY' || fail "the final parameters differ"
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("ember_checkpoint", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
a, b = (mod.load_checkpoint(p) for p in sys.argv[2:4])  # checksums verified
assert any(k.startswith("model.") for k in a) and any(k.startswith("optim.") for k in a), list(a)
if sorted(a) != sorted(b):
    sys.exit("tensor names differ: %s vs %s" % (sorted(a), sorted(b)))
bad = [k for k in a if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
       or a[k].tobytes() != b[k].tobytes()]
for k in bad:
    d = np.flatnonzero(a[k].ravel() != b[k].ravel())
    print("%s: %d of %d elements differ (first at %s: %r vs %r)" %
          (k, d.size, a[k].size, d[:1], a[k].ravel()[d[:1]], b[k].ravel()[d[:1]]))
keys = ("step", "epoch", "loader.epoch", "loader.position", "rng.counter", "optim.step")
meta = [k for k in keys if a.metadata.get(k) != b.metadata.get(k)]
for k in meta:
    print("metadata %s: %s vs %s" % (k, a.metadata.get(k), b.metadata.get(k)))
if bad or meta:
    sys.exit("%s and %s differ" % tuple(sys.argv[2:4]))
print("%d tensors byte-identical (%d bytes), step %s" %
      (len(a), sum(v.nbytes for v in a.values()), a.metadata["step"]))
PY
}
