#!/usr/bin/env bash
# disk_full.sh EMBER_TRAIN SOURCE_DIR: a checkpoint save that fills the disk.
#
# checkpoint.dir is a small tmpfs (root: mount; exit 77, skipped, where mounting fails). A run
# saves step 10; the tmpfs is then shrunk so that one checkpoint fits but not two, and a resumed
# run's save of step 20 must fail: exit 1 with an error naming the full disk, the checkpoint of
# step 10 byte-identical and still loading, latest unchanged, no temporary file left.
set -euo pipefail
train=$1 src=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-fault-disk.XXXXXX")
mnt=$tmp/mnt
mkdir "$mnt"
trap 'umount "$mnt" 2>/dev/null || true; rm -rf "$tmp"' EXIT
. "$(dirname "$0")/common.sh"

if ! mount -t tmpfs -o size=4m tmpfs "$mnt" 2>/dev/null; then
  echo "SKIP: cannot mount a tmpfs (needs root and mount rights)"
  exit 77
fi
ck=$mnt/ck
run=("${small[@]}" checkpoint.every=10 checkpoint.keep_last=1 checkpoint.dir="$ck")
train_run "${run[@]}" train.steps=10
expect_status 0 "the first run"
c10=$ck/ckpt-00000010.safetensors
cp "$c10" "$tmp/c10.copy"
size=$(stat -c %s "$c10")
# room for the checkpoint, the latest pointer and half another checkpoint, in 4 KiB pages
kib=$(((size * 3 / 2 + 8192) / 1024 / 4 * 4 + 4))
mount -o remount,size=${kib}k "$mnt" || fail "cannot shrink the tmpfs to ${kib} KiB"
echo "checkpoint of $size bytes on a tmpfs of $kib KiB"

train_run "${run[@]}" train.steps=20
expect_status 1 "the run whose save fills the disk"
expect_out "ember-train: checkpoint: .*ckpt-00000020\.safetensors.*(No space left on device|ENOSPC)" \
  "the error"
error=$(grep 'ember-train: checkpoint' "$tmp/out")
cmp -s "$c10" "$tmp/c10.copy" || fail "the previous checkpoint changed"
[ "$(cat "$ck/latest")" = ckpt-00000010.safetensors ] || fail "latest moved"
left=$(cd "$ck" && ls -A | grep -v -x -e latest -e ckpt-00000010.safetensors || true)
[ -z "$left" ] || fail "left behind: $left"
checkpoints_ok "$c10"
# and the job resumes from it once there is room
mount -o remount,size=4m "$mnt"
train_run "${run[@]}" train.steps=20
expect_status 0 "the run after the disk was freed"
expect_out "resumed from $c10 at step 10" "the resume"
echo "PASS: $error"
