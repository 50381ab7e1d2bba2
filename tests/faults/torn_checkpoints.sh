#!/usr/bin/env bash
# torn_checkpoints.sh EMBER_TRAIN SOURCE_DIR CASE: a resume from a damaged checkpoint directory.
#
# Three checkpoints (steps 10, 20, 30) are written; CASE damages the newest (or more), then the
# run is resumed to step 40. Cases:
#   trunc_len, trunc_header, trunc_data, trunc_half   ckpt 30 cut at byte 4, inside its JSON
#                                                     header, one byte short, and at half
#   flip_header    a metadata value changed ("step":"30" -> "31": still valid JSON)
#   flip_data      one bit of the last tensor byte
#   missing        ckpt 30 deleted (latest names a missing file)
#   no_latest      latest deleted
#   all_bad        every checkpoint truncated: no intact one, exit 1, nothing written
#   other_model    a checkpoint of another model (hidden 32): exit 1 naming the file and the
#                  shapes; no fallback (not a damaged file), nothing written
# The fallback cases must say which file was skipped and why and which one was used, resume at
# step 20, finish with exit 0, and leave every checkpoint in the directory loadable.
set -euo pipefail
train=$1 src=$2 case=$3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-fault-torn.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/common.sh"

ck=$tmp/ck
run=("${small[@]}" checkpoint.every=10 checkpoint.keep_last=5 checkpoint.dir="$ck")
hidden=16
[ "$case" = other_model ] && hidden=32
train_run "${run[@]}" model.hidden=[$hidden] train.steps=30
expect_status 0 "the first run"
c10=$ck/ckpt-00000010.safetensors c20=$ck/ckpt-00000020.safetensors
c30=$ck/ckpt-00000030.safetensors
size=$(stat -c %s "$c30")
hlen=$(od -An -tu8 -N8 "$c30" | tr -d ' ')

case $case in
  trunc_len) truncate -s 4 "$c30" ;;
  trunc_header) truncate -s $((8 + hlen / 2)) "$c30" ;;
  trunc_data) truncate -s $((size - 1)) "$c30" ;;
  trunc_half) truncate -s $((size / 2)) "$c30" ;;
  flip_header)
    off=$(grep -abo '"step":"30"' "$c30" | cut -d: -f1)
    [ -n "$off" ] || fail "no step in the header"
    printf '1' | dd of="$c30" bs=1 seek=$((off + 9)) conv=notrunc status=none ;;
  flip_data)
    last=$(od -An -tu1 -j $((size - 1)) -N1 "$c30" | tr -d ' ')
    printf "\\$(printf '%03o' $((last ^ 1)))" |
      dd of="$c30" bs=1 seek=$((size - 1)) conv=notrunc status=none ;;
  missing) rm "$c30" ;;
  no_latest) rm "$ck/latest" ;;
  all_bad) for f in "$c10" "$c20" "$c30"; do truncate -s 100 "$f"; done ;;
  other_model) ;;
  *) fail "unknown case $case" ;;
esac
before=$(cd "$ck" && sha256sum ./* | sort)

train_run "${run[@]}" train.steps=40
case $case in
  all_bad)
    expect_status 1 "resume with no intact checkpoint"
    expect_out "no intact checkpoint \(3 tried" "the error"
    expect_out "skipping checkpoint:? $c10" "the report of each file"
    [ "$(cd "$ck" && sha256sum ./* | sort)" = "$before" ] || fail "the directory changed" ;;
  other_model)
    expect_status 1 "resume from another model's checkpoint"
    expect_out "$c30: .*model.0.weight shape \(32, 784\) vs \(16, 784\)" "the error"
    grep -q "falling back" "$tmp/out" && fail "fell back from a checkpoint of another model"
    [ "$(cd "$ck" && sha256sum ./* | sort)" = "$before" ] || fail "the directory changed" ;;
  *)
    expect_status 0 "the resumed run"
    why=(trunc_len "too short" trunc_header "truncated" trunc_data "truncated or corrupt"
         trunc_half "truncated" flip_header "header checksum mismatch"
         flip_data "checksum mismatch: expected crc32 [0-9a-f]{8}, found [0-9a-f]{8}"
         missing "names 'ckpt-00000030.safetensors', but .* is not a readable file"
         no_latest "missing")
    for ((i = 0; i < ${#why[@]}; i += 2)); do
      [ "${why[i]}" = "$case" ] && reason=${why[i + 1]}
    done
    bad=$c30
    case $case in missing | no_latest) bad=$ck/latest ;; esac
    [ "$case" = no_latest ] && want=30 || want=20
    expect_out "warning: skipping checkpoint:? $bad.*$reason" "the skip report"
    expect_out "resumed from $ck/ckpt-000000$want.safetensors at step $want" "the resume"
    [ "$case" = no_latest ] ||
      expect_out "falling back to $ck/ckpt-00000020.safetensors, the newest intact" "the fallback"
    [ "$(cat "$ck/latest")" = ckpt-00000040.safetensors ] || fail "latest is not step 40"
    checkpoints_ok "$ck"/ckpt-*.safetensors >/dev/null ;;
esac
echo "PASS $case: $(grep -E 'skipping|falling|resumed|no intact|do not match' "$tmp/out" | head -3 |
  cut -c1-220)"
