#!/usr/bin/env bash
# nan_stops.sh EMBER_TRAIN SOURCE_DIR: a diverging run stops before it saves.
#
# 20 steps with the default learning rate save checkpoints 5..20; the run is resumed with a
# learning rate of 10 and momentum 0.999 on three layers of 512, which overflows within a few
# steps. The run must stop with exit 1 and "step N: the loss is nan|inf", checkpoints 5..20 must
# be byte-identical, none saved at or after step N, and every checkpoint left must load (checksums
# verified) with finite values only.
set -euo pipefail
train=$1 src=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-fault-nan.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/common.sh"

ck=$tmp/ck
run=("${small[@]}" model.hidden=[512,512,512] checkpoint.keep_last=100 checkpoint.dir="$ck")
train_run "${run[@]}" train.steps=20 checkpoint.every=5
expect_status 0 "the first run"
before=$(cd "$ck" && sha256sum ckpt-* | sort)
train_run "${run[@]}" train.steps=200 checkpoint.every=2 optim.lr=10 optim.momentum=0.999 \
  optim.schedule=none train.log_every=1
expect_status 1 "the diverging run"
expect_out "resumed from .*ckpt-00000020.safetensors" "the resume"
expect_out "ember-train: step [0-9]+: the loss is -?(nan|inf) \(averaged over 1 rank\): training diverged" \
  "the error"
step=$(sed -nE 's/.*ember-train: step ([0-9]+): the loss is.*/\1/p' "$tmp/out")
[ "$step" -gt 20 ] && [ "$step" -lt 200 ] || fail "diverged at step $step"
grep -q '^RESULT' "$tmp/out" && fail "a RESULT line after the divergence"
for f in "$ck"/ckpt-*.safetensors; do
  s=$(basename "$f" .safetensors)
  s=$((10#${s#ckpt-}))
  [ "$s" -lt "$step" ] || fail "$f saved at or after the non-finite loss (step $step)"
done
[ "$(cd "$ck" && sha256sum ckpt-0000000[5-9]* ckpt-0000001* ckpt-00000020* | sort)" = "$before" ] ||
  fail "the checkpoints before the resume changed"
checkpoints_ok "$ck"/ckpt-*.safetensors >/dev/null
echo "PASS: $(grep 'diverged' "$tmp/out"); $(ls "$ck" | wc -l) files kept"
