#!/usr/bin/env bash
# docs_keys.sh EMBER_TRAIN SOURCE_DIR: every key that `ember-train --print-config` prints is
# documented in docs/ember-train.md (as `key`), and the printed configuration reads back as the
# same configuration.
set -euo pipefail
train=$1 src=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-train-docs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$train" --print-config >"$tmp/defaults.yaml"
# dotted keys from the indentation: "optim:" then "  lr: ..." -> optim.lr
awk '/^ *#/ || /^$/ { next }
     { match($0, /^ */); d = RLENGTH / 2; k = $1; sub(/:$/, "", k); path[d] = k
       if ($0 ~ /: *$/) next
       key = path[0]; for (i = 1; i <= d; i++) key = key "." path[i]; print key }' \
  "$tmp/defaults.yaml" >"$tmp/keys"
n=$(wc -l <"$tmp/keys")
[ "$n" -ge 30 ] || { echo "FAIL: only $n keys parsed from --print-config"; exit 1; }
missing=0
while read -r key; do
  grep -qF "\`$key\`" "$src/docs/ember-train.md" || { echo "undocumented: $key"; missing=1; }
done <"$tmp/keys"
[ "$missing" -eq 0 ] || { echo "FAIL: keys missing from docs/ember-train.md"; exit 1; }
# round trip: the printed file, read back, prints the same
"$train" --print-config "$tmp/defaults.yaml" >"$tmp/again.yaml"
diff "$tmp/defaults.yaml" "$tmp/again.yaml" ||
  { echo "FAIL: --print-config does not round-trip"; exit 1; }
# and each shipped config is valid
for c in "$src"/examples/configs/*.yaml; do
  "$train" --print-config "$c" >/dev/null || { echo "FAIL: $c"; exit 1; }
done
echo "ok: $n keys documented; --print-config round-trips; shipped configs are valid"
