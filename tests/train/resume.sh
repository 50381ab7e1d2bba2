#!/usr/bin/env bash
# resume.sh EMBER_TRAIN NP SOURCE_DIR: checkpoint resume is exact on NP ranks.
#
#   A   60 steps, a checkpoint every 20                        (the uninterrupted run)
#   B   40 steps, then started again with 60 steps, same dir   (resumes from step 40)
#   C   60 steps with EMBER_FAULT_KILL after step 30 (killed), then again with
#       EMBER_RESTART_COUNT=1                                  (resumes from step 20, and drops
#                                                               the metrics rows 21..30)
#
# Passes when B and C have the same (step, epoch, loss, lr) in every metrics row 1..60 as A, bit
# for bit, the same final test accuracy, and final checkpoints with identical model and
# optimizer tensors. Every source of state is exercised: dropout (the default generator),
# augmentation (flip and crop), the loader position mid-epoch, momentum/Adam state and a step
# schedule with warmup.
set -euo pipefail
train=$1 np=$2 src=$3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-train-resume.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/common.sh"

common=(model.dropout=0.2 data.augment.flip=true data.augment.crop_pad=2 data.batch=32
        optim.schedule=step optim.step_size=25 optim.gamma=0.5 optim.warmup_steps=10
        checkpoint.every=20 train.log_every=5 train.seed=7 train.threads=1)
if [ "$np" -eq 1 ]; then
  common+=(optim.name=adamw optim.lr=0.002 optim.momentum=0 optim.weight_decay=0.01)
else
  common+=(optim.nesterov=true)
fi
cfg=$src/examples/configs/fmnist_mlp.yaml

job() { # job NAME STEPS [VAR=value...]: metrics into $tmp/NAME, checkpoints into $tmp/NAME.ckpt
  local name=$1 steps=$2
  shift 2
  (
    [ $# -eq 0 ] || export "$@"
    run "$np" "$cfg" "${common[@]}" train.steps="$steps" train.metrics="$tmp/$name" \
      checkpoint.dir="$tmp/$name.ckpt" >"$tmp/out" 2>&1
  )
}

job a 60 || fail "run A exited with status $?"
result_a=$(grep '^RESULT' "$tmp/out")
job b 40 || fail "run B (first part) exited with status $?"
job b 60 || fail "run B (resumed) exited with status $?"
grep -q "resumed from $tmp/b.ckpt/ckpt-00000040.safetensors at step 40" "$tmp/out" ||
  fail "B did not resume from step 40"
result_b=$(grep '^RESULT' "$tmp/out")
victim=$((np - 1))
if job c 60 EMBER_FAULT_KILL="rank=$victim,step=30"; then fail "run C was not killed"; fi
grep -q "rank $victim kills itself after step 30" "$tmp/out" || fail "no fault injection message"
rows_at_kill=$(csv_rows "$tmp/c/metrics.csv" | wc -l)
[ "$rows_at_kill" -ge 30 ] || fail "C wrote $rows_at_kill rows before the kill, expected >= 30"
job c 60 EMBER_FAULT_KILL="rank=$victim,step=30" EMBER_RESTART_COUNT=1 ||
  fail "run C (restarted) exited with status $?"
grep -q "resumed from .*ckpt-00000020.safetensors at step 20" "$tmp/out" ||
  fail "C did not resume from step 20"
result_c=$(grep '^RESULT' "$tmp/out")

for r in b c; do
  [ "$(csv_rows "$tmp/$r/metrics.csv" | wc -l)" -eq 60 ] || fail "$r: expected 60 rows"
  [ "$(wc -l <"$tmp/$r/metrics.jsonl")" -eq 60 ] || fail "$r: expected 60 jsonl lines"
  if ! diff <(csv_rows "$tmp/a/metrics.csv" | cut -d, -f1-4) \
            <(csv_rows "$tmp/$r/metrics.csv" | cut -d, -f1-4) >"$tmp/diff"; then
    cat "$tmp/diff"
    fail "$r: metrics differ from the uninterrupted run"
  fi
done
acc() { sed 's/.*test_acc=\([0-9.]*\).*/\1/' <<<"$1"; }
[ "$(acc "$result_a")" = "$(acc "$result_b")" ] &&
  [ "$(acc "$result_a")" = "$(acc "$result_c")" ] ||
  fail "final test accuracy differs: $result_a / $result_b / $result_c"
echo "losses of steps 41..60 (A): $(csv_rows "$tmp/a/metrics.csv" | sed -n '41,60p' | cut -d, -f3 |
  tr '\n' ' ')"

# the final checkpoints: every model. and optim. tensor byte for byte
python3 - "$tmp/a.ckpt/ckpt-00000060.safetensors" "$tmp/b.ckpt/ckpt-00000060.safetensors" \
  "$tmp/c.ckpt/ckpt-00000060.safetensors" <<'PY' || fail "final checkpoints differ"
import json, struct, sys
def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    return meta, {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
                  for k, v in header.items()}
ma, a = tensors(sys.argv[1])
assert any(k.startswith("model.") for k in a) and any(k.startswith("optim.") for k in a), list(a)
assert ma["step"] == "60", ma
for other in sys.argv[2:]:
    mo, o = tensors(other)
    assert sorted(a) == sorted(o), (sorted(a), sorted(o))
    bad = [k for k in a if a[k] != o[k]]
    assert not bad, "%s: differs in %s" % (other, bad)
    for k in ("step", "loader.epoch", "loader.position", "rng.counter", "optim.step"):
        assert ma.get(k) == mo.get(k), (k, ma.get(k), mo.get(k))
print("final checkpoints: %d tensors identical, step %s, rng.counter %s" %
      (len(a), ma["step"], ma.get("rng.counter")))
PY
echo "ok: resume is exact on $np rank(s)"
