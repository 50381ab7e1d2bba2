#!/usr/bin/env bash
# config_errors.sh EMBER_TRAIN CASE: one configuration mistake given to ember-train; passes when
# it exits 2 and its message names the key and the line (or the override) at fault.
set -uo pipefail
train=$1 case=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-train-cfg.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" # messages then name the file as given: job.yaml
cfg=job.yaml
args=()
# a valid base the cases modify: every run would train, were it not for the mistake
base='model:
  name: mlp
optim:
  lr: 0.05
train:
  steps: 1
  metrics: ""
'
case $case in
unknown_key)   printf '%s  lrr: 0.1\n' "$base" > "$cfg"   # line 8, under train
               want="job.yaml:8: unknown key 'train.lrr'" ;;
typo_hint)     printf 'model:\n  name: mlp\noptim:\n  lrr: 0.05\n' > "$cfg"
               want="job.yaml:4: unknown key 'optim.lrr' (did you mean 'optim.lr'?)" ;;
bad_type)      printf 'train:\n  epochs: abc\n' > "$cfg"
               want="job.yaml:2: train.epochs: expected an integer, got 'abc'" ;;
bad_value)     printf 'data:\n  augment:\n    crop_pad: 12\n' > "$cfg"
               want="job.yaml:3: data.augment.crop_pad: 12 is out of range [0, 8]" ;;
bad_enum)      printf 'optim:\n  name: sgdd\n' > "$cfg"
               want="job.yaml:2: optim.name: 'sgdd' is not one of sgd, adam, adamw" ;;
bad_list)      printf 'model:\n  hidden: [256, x]\n' > "$cfg"
               want="job.yaml:2: model.hidden[1]: expected an integer, got 'x'" ;;
section_type)  printf 'optim: 0.1\n' > "$cfg"
               want="job.yaml:1: optim: expected a mapping holding 'optim.name', got a scalar" ;;
duplicate_key) printf 'optim:\n  lr: 0.1\n  lr: 0.2\n' > "$cfg"
               want="job.yaml:3:3: duplicate key 'optim.lr' (first at line 2)" ;;
syntax)        printf 'optim:\n  lr: [0.1\ntrain: 3\n' > "$cfg"
               want="job.yaml:3:" ;;
missing_file)  cfg=none.yaml
               want="ember-train: none.yaml: cannot open: No such file or directory" ;;
bad_override)  printf '%s' "$base" > "$cfg"; args=(optim.lr)
               want="override 'optim.lr': expected key.sub=value" ;;
override_value) printf '%s' "$base" > "$cfg"; args=(train.steps=10 optim.lr=abc)
               want="override 'optim.lr=abc': optim.lr: expected a (finite) number, got 'abc'" ;;
override_unknown) printf '%s' "$base" > "$cfg"; args=(optim.lrr=0.1)
               want="override 'optim.lrr=0.1': unknown key 'optim.lrr' (did you mean 'optim.lr'?)"
               ;;
override_through_scalar) printf '%s' "$base" > "$cfg"; args=(optim.lr.x=1)
               want="override 'optim.lr.x=1': 'optim.lr' is a scalar (job.yaml:4), not a mapping" ;;
combination)   printf 'model:\n  name: cnn\n  dropout: 0.5\n' > "$cfg"
               want="job.yaml:3: model.dropout: only model.name mlp and gpt have dropout" ;;
lm_on_images)  printf 'model:\n  name: gpt\n' > "$cfg"
               want="data.dataset: char_rnn and gpt read tokens or text" ;;
images_on_text) printf 'model:\n  name: resnet_cifar\ndata:\n  dataset: text\n  path: x\n' > "$cfg"
               want="job.yaml:4: data.dataset: image models (mlp, cnn, resnet_cifar, resnet18) read fmnist" ;;
text_no_path)  printf 'model:\n  name: char_rnn\ndata:\n  dataset: text\n' > "$cfg"
               want="data.path: text and tokens need the file(s) to read" ;;
bad_depth)     printf 'model:\n  name: resnet_cifar\n  depth: 21\n' > "$cfg"
               want="job.yaml:3: model.depth: resnet_cifar's depth is 6n+2 (20, 32, 44, 56, 110)" ;;
bad_heads)     printf 'model:\n  name: gpt\n  width: 100\n  heads: 3\ndata:\n  dataset: text\n  path: x\n' > "$cfg"
               want="job.yaml:4: model.heads: model.width must be a multiple of model.heads" ;;
bad_fault)     printf '%s' "$base" > "$cfg"; export EMBER_FAULT_KILL="rank=x"
               want="EMBER_FAULT_KILL='rank=x': expected rank=R,step=S" ;;
no_gpu)        # only where no GPU is visible (exit 77: ctest's skip)
               if nvidia-smi -L 2>/dev/null | grep -q GPU; then echo "skip: a GPU is visible"; exit 77; fi
               printf '%s  device: cuda\n' "$base" > "$cfg"   # line 8, under train
               want="job.yaml:8: train.device: cuda, but no CUDA device is visible" ;;
*) echo "config_errors.sh: unknown case $case" >&2; exit 1 ;;
esac

out=$("$train" "$cfg" "${args[@]}" 2>&1)
rc=$?
echo "$out"
if [ "$rc" -ne 2 ]; then echo "FAIL: exit status $rc, expected 2" >&2; exit 1; fi
if ! grep -qF -- "$want" <<<"$out"; then echo "FAIL: the message lacks: $want" >&2; exit 1; fi
if [ "$(grep -c . <<<"$out")" -ne 1 ]; then echo "FAIL: expected one line of output" >&2; exit 1; fi
echo "ok: $case"
