#!/usr/bin/env bash
# lm_run.sh EMBER_TRAIN NP SOURCE_DIR CONFIG [key=value ...]: a short run of a language-model
# config (char_rnn.yaml, gpt_tiny.yaml) on NP ranks, shrunk by the overrides given. Passes when
# the run exits 0, its RESULT line has a validation loss in bits per byte below the text's
# unigram entropy (printed next to it: the model has learned something a byte histogram cannot
# know), metrics.csv has one row per step with the header for language models, and the sample
# (prompt |> continuation) was printed between its markers.
set -euo pipefail
train=$1 np=$2 src=$3 cfg=$4
shift 4
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-train-lm.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/common.sh"

run "$np" "$src/examples/configs/$cfg" "$@" train.threads=1 train.metrics="$tmp/m" \
  checkpoint.dir= train.sample_len=80 >"$tmp/out" 2>&1 || fail "ember-train exited with status $?"
cat "$tmp/out"

result=$(grep '^RESULT ' "$tmp/out") || fail "no RESULT line"
grep -q "ranks=$np\$" <<<"$result" || fail "RESULT does not say ranks=$np"
val=$(sed -nE 's/.* val_bpb=([0-9.]+) .*/\1/p' <<<"$result")
uni=$(sed -nE 's/.* unigram_bpb=([0-9.]+) .*/\1/p' <<<"$result")
awk -v v="$val" -v u="$uni" 'BEGIN { print "val_bpb " v " unigram_bpb " u; exit !(v > 0 && u > 3 && v < u) }' ||
  fail "the validation loss ($val bits per byte) is not below the unigram entropy ($uni)"

csv=$tmp/m/metrics.csv
[ "$(head -n 1 "$csv")" = "step,epoch,loss,lr,samples_per_s,val_loss" ] || fail "csv header"
want=$(sed -nE 's/.* ([0-9]+) steps \(.*/\1/p' "$tmp/out" | head -n 1)
[ -n "$want" ] && [ "$(csv_rows "$csv" | wc -l)" -eq "$want" ] || fail "expected $want rows"
csv_rows "$csv" | tail -n 1 | awk -F, '$6 == "" { exit 1 }' || fail "no val_loss on the last row"

grep -q '^--- sample: 80 tokens at temperature ' "$tmp/out" || fail "no sample header"
grep -q '^--- end of sample ---$' "$tmp/out" || fail "no end of the sample"
grep -q '|>' "$tmp/out" || fail "no prompt marker in the sample"
echo "ok: $cfg on $np rank(s)"
