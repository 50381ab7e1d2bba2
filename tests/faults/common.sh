# common.sh: shared by the fault-injection scripts (sourced). Expects train (the ember-train
# binary), src (the source tree) and tmp (a scratch directory the caller's trap removes).
#   train_run ARGS...      ember-train on one rank, at most 120 s, output in $tmp/out; returns
#                          its exit status
#   fail MSG               print MSG and the last output, exit 1
#   expect_status N WHAT   the last train_run's status was N (a crash, > 128, never passes)
#   expect_out REGEX WHAT  $tmp/out matches the extended REGEX
#   checkpoints_ok FILE... each loads with ember.load_checkpoint (checksums verified) and holds
#                          only finite values
#   small                  the model and run of every fault test: the Fashion-MNIST MLP, one
#                          hidden layer of 16, one thread, no warmup
cfg=$src/examples/configs/fmnist_mlp.yaml
small=(model.hidden=[16] train.threads=1 optim.warmup_steps=0 train.log_every=10)

train_run() {
  status=0
  timeout -k 5 120 "$train" "$cfg" "$@" >"$tmp/out" 2>&1 || status=$?
  return 0
}

fail() {
  echo "FAIL: $*" >&2
  [ -f "$tmp/out" ] && { echo "--- last output:" >&2; tail -n 30 "$tmp/out" >&2; }
  exit 1
}

expect_status() {
  [ "$status" -eq "$1" ] || fail "$2: exit status $status, expected $1"
}

expect_out() {
  grep -Eq -- "$1" "$tmp/out" || fail "$2: the output lacks /$1/"
}

checkpoints_ok() {
  local py=${EMBER_PYTHON3:-python3} mod=$src/examples/python/ember/checkpoint.py
  timeout 60 "$py" - "$mod" "$@" <<'PY' || fail "a checkpoint does not load"
import importlib.util, sys
import numpy as np
# checkpoint.py alone (stdlib and NumPy): the package would load libember.so
spec = importlib.util.spec_from_file_location("ember_checkpoint", sys.argv.pop(1))
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
load_checkpoint = mod.load_checkpoint
for path in sys.argv[1:]:
    ck = load_checkpoint(path)  # verify=True: every checksum
    for name, a in ck.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            sys.exit("%s: %s holds a non-finite value" % (path, name))
    print("ok", path, "step", ck.metadata["step"])
PY
}
