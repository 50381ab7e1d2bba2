#!/usr/bin/env bash
# bad_options.sh NAME=PATH...: the example and benchmark programs parse their options with
# getopt_long; a bad number (or an unknown option) is one message naming the option and exit
# status 2, before any work. Programs not given (no MPI: no ember-ddp-bench, ember-collbench) are
# skipped.
set -uo pipefail
declare -A bin
for a in "$@"; do bin[${a%%=*}]=${a#*=}; done
failed=0
# check PROGRAM EXPECTED ARGS...: PROGRAM ARGS exits 2 and its output contains EXPECTED.
check() {
  local prog=$1 want=$2 out rc
  shift 2
  [ -n "${bin[$prog]:-}" ] || return 0
  out=$("${bin[$prog]}" "$@" 2>&1)
  rc=$?
  if [ "$rc" -ne 2 ] || ! grep -qF -- "$want" <<<"$out"; then
    printf 'FAIL: %s %s: exit status %d (expected 2), expected "%s" in:\n%s\n' "$prog" "$*" \
      "$rc" "$want" "$out"
    failed=1
  fi
}
check fmnist_mlp "--epochs 'abc': expected an integer in [1, 100000]" --epochs abc
check fmnist_mlp "--lr '-1': expected a number in [0, 10]" --lr -1
check fmnist_mlp "--workers '1.5': expected an integer in [0, 256]" --workers 1.5
check fmnist_mlp "unrecognized option '--epoch-count'" --epoch-count 3
check fmnist_mlp "unexpected arguments" --epochs 1 extra
check char_rnn "--steps '0': expected an integer in [1, 10000000]" --steps 0
check char_rnn "--hidden 'big': expected an integer in [1, 4096]" --hidden big
check char_rnn "--layers '9': expected an integer in [1, 8]" --layers 9
check char_rnn "--seq '-5': expected an integer in [1, 1024]" --seq -5
check char_rnn "--temp '0': expected a number in [0.01, 10]" --temp 0
check char_rnn "--lr 'nan': expected a number in [1e-09, 1]" --lr nan
check char_rnn "unexpected arguments" --steps 1 extra
check ember-train-bench "--steps '1x': expected an integer in [1, 100000000]" --model mlp \
  --steps 1x
check ember-train-bench "--batch '0': expected an integer in [1, 60000]" --model mlp --batch 0
check ember-train-bench "--model must be mlp, cnn or resnet" --model rnn
check ember-loaderbench "--rounds '2000': expected an integer in [1, 1000]" --rounds 2000
check ember-loaderbench "--train-rate 'fast': expected a number" --train-rate fast
check ember-loaderbench "--workers takes a list" --workers 1,x
check ember-ddp-bench "--bucket-mb '-1': expected a number in [0, 1024]" --bucket-mb -1
check ember-ddp-bench "--threads '': expected an integer in [1, 4096]" --threads ""
check ember-collbench "--iters 'many': expected an integer in [1, 1000000]" --iters many
check ember-collbench "--min-bytes '4X': expected a size" -b 4X
check ember-collbench "--check-every 0: expected -1 (off) or 1 or more" --check-every 0
[ "$failed" -eq 0 ] || exit 1
echo "ok: bad options are one message naming the option, and exit status 2"
