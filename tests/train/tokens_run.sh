#!/usr/bin/env bash
# tokens_run.sh EMBER_TRAIN NP SOURCE_DIR [key=value ...]: the GPT of gpt_tiny.yaml, shrunk by the
# overrides, on llm.c token shards (data.dataset tokens). The shards are written here in llm.c's
# format (a 1024-byte header: magic 20240520, version 1, the count; then uint16 tokens) from the
# bytes of Debian's GPL-3: two training shards and one validation shard. Passes when the run
# exits 0 and its validation loss (nats per token) is below the training tokens' unigram entropy
# in nats, computed here from the same tokens (a model that learned nothing but the histogram
# cannot go below it).
set -euo pipefail
train=$1 np=$2 src=$3
shift 3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-train-tokens.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/common.sh"

unigram=$(/usr/bin/python3 - "$tmp" <<'PY'
import math, struct, sys
tmp = sys.argv[1]
data = open("/usr/share/common-licenses/GPL-3", "rb").read()
cut = len(data) * 9 // 10
parts = {"train_000.bin": data[:cut // 2], "train_001.bin": data[cut // 2:cut], "val_000.bin": data[cut:]}
for name, toks in parts.items():
    header = struct.pack("<256i", 20240520, 1, len(toks), *([0] * 253))
    with open(f"{tmp}/{name}", "wb") as f:
        f.write(header + struct.pack(f"<{len(toks)}H", *toks))
counts = {}
for b in data[:cut]:
    counts[b] = counts.get(b, 0) + 1
print(-sum(c / cut * math.log(c / cut) for c in counts.values()))
PY
)
echo "unigram entropy of the training tokens: $unigram nats"

run "$np" "$src/examples/configs/gpt_tiny.yaml" data.dataset=tokens data.path="$tmp/train_*.bin" \
  data.val_path="$tmp/val_*.bin" model.vocab=256 "$@" train.threads=1 train.metrics="$tmp/m" \
  checkpoint.dir= train.sample_len=20 >"$tmp/out" 2>&1 || fail "ember-train exited with status $?"
cat "$tmp/out"
result=$(grep '^RESULT ' "$tmp/out") || fail "no RESULT line"
grep -Eq "^RESULT val_loss=[0-9.]+ train_loss=[0-9.]+ tokens_per_s=[0-9.]+ time_s=[0-9.]+ ranks=$np\$" \
  <<<"$result" || fail "malformed RESULT line"
val=$(sed -nE 's/^RESULT val_loss=([0-9.]+) .*/\1/p' <<<"$result")
awk -v v="$val" -v u="$unigram" 'BEGIN { exit !(v > 0 && v < u) }' ||
  fail "the validation loss ($val nats) is not below the unigram entropy ($unigram nats)"
grep -q '^--- end of sample ---$' "$tmp/out" || fail "no sample"
echo "ok: gpt on token shards, $np rank(s): val_loss $val < unigram $unigram"
