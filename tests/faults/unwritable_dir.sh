#!/usr/bin/env bash
# unwritable_dir.sh EMBER_TRAIN SOURCE_DIR: a checkpoint.dir that cannot take a checkpoint fails
# at the start, as a configuration error (exit 2, the key and its line), before any step: a path
# under a regular file, and a read-only tmpfs (root ignores permission bits, not a read-only
# mount; that case is skipped where mounting fails). A writable one is created and left empty.
set -euo pipefail
train=$1 src=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-fault-dir.XXXXXX")
mnt=$tmp/ro
mkdir "$mnt"
trap 'umount "$mnt" 2>/dev/null || true; rm -rf "$tmp"' EXIT
. "$(dirname "$0")/common.sh"

echo x >"$tmp/file"
check_refused() { # DIR REASON
  train_run "${small[@]}" train.steps=50 checkpoint.dir="$1"
  expect_status 2 "checkpoint.dir=$1"
  expect_out "^ember-train: (override 'checkpoint.dir=.*'|.*): checkpoint.dir: cannot write checkpoints there: .*$2" \
    "the error for $1"
  grep -Eq '^epoch|step [0-9]+/' "$tmp/out" && fail "trained before the error"
  return 0
}
check_refused "$tmp/file/ck" "Not a directory"
ro=skipped
if mount -t tmpfs -o size=1m,ro tmpfs "$mnt" 2>/dev/null; then
  check_refused "$mnt/ck" "Read-only file system"
  ro=checked
fi
train_run "${small[@]}" train.steps=1 checkpoint.dir="$tmp/new/ck"
expect_status 0 "a writable checkpoint.dir"
[ "$(ls -A "$tmp/new/ck")" = "$(printf 'ckpt-00000001.safetensors\nlatest')" ] ||
  fail "unexpected files: $(ls -A "$tmp/new/ck")"
echo "PASS (read-only mount: $ro)"
