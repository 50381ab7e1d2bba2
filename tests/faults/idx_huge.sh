#!/usr/bin/env bash
# idx_huge.sh EMBER_TRAIN SOURCE_DIR: IDX headers that promise 64 GiB (4096 x 4096 x 4096 images)
# over a few bytes of data, gzipped and plain, fail fast with an error naming the file, what the
# header promises and what the file holds, under a 2 GiB address-space limit (ulimit -v): no
# allocation of the promised size. Skipped in a sanitizer build.
set -euo pipefail
train=$1 src=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-fault-idx.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/common.sh"

fm=${EMBER_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
[ -f "$fm/train-labels-idx1-ubyte.gz" ] || { echo "SKIP: no Fashion-MNIST in $fm"; exit 77; }
mkdir "$tmp/gz" "$tmp/plain"
header() { printf '\x00\x00\x08\x03\x00\x00\x10\x00\x00\x00\x10\x00\x00\x00\x10\x00'; }
{ header; head -c 1000 /dev/zero; } | gzip >"$tmp/gz/train-images-idx3-ubyte.gz"
{ header; head -c 1000 /dev/zero; } >"$tmp/plain/train-images-idx3-ubyte.gz"
for d in gz plain; do
  cp "$fm"/t10k-* "$fm/train-labels-idx1-ubyte.gz" "$tmp/$d/"
done
# The cap: ulimit -v, except for a sanitizer build, whose shadow memory needs a huge address space:
# there ASan itself refuses any one allocation over 2 GiB (it returns NULL: "out of memory").
# A sanitizer build cannot run under ulimit -v (its shadow memory needs the address space), and
# ASan's own allocation cap proved flaky in the full parallel suite: the check is the Release
# build's (and test_idx's, under ASan too).
if ldd "$train" 2>/dev/null | grep -q libasan; then
  echo "SKIP: a sanitizer build cannot run under ulimit -v"
  exit 77
fi
limit=(ulimit -v 2097152)
for d in gz plain; do
  status=0
  ("${limit[@]}"; timeout -k 5 60 "$train" "$cfg" "${small[@]}" data.dir="$tmp/$d") \
    >"$tmp/out" 2>&1 || status=$?
  expect_status 1 "$d: the huge header"
  f=$tmp/$d/train-images-idx3-ubyte.gz
  if [ $d = gz ]; then
    expect_out "$f: byte offset 16: the header promises 68719476736 bytes of element data, the stream ends after 1000" "gz"
  else
    expect_out "$f: byte offset 16: the header promises 68719476736 data bytes .*but the file has 1016 bytes" "plain"
  fi
  grep -q "out of memory" "$tmp/out" && fail "$d: an allocation was tried"
  echo "$d: $(grep -o 'the header promises.*' "$tmp/out" | head -1)"
done
echo PASS
