#!/usr/bin/env bash
# resume_agree.sh EMBER_TRAIN DDPRUN SOURCE_DIR: the ranks of a resumed 2-rank job see different
# checkpoints, and must agree on one step or stop with a clear error.
#
# Each rank is given its own checkpoint.dir (a shell in front of ember-train appends
# checkpoint.dir=.../rank$RANK, RANK being set by ddprun's agent), as when checkpoint.dir is a
# local directory on each host, or one host's view of a shared one is stale. The checkpoints come
# from one job of 4,000 steps stopped after step 1000 (EMBER_FAULT_KILL; saves every 250, the
# newest 3 kept: steps 500, 750, 1000).
#
#   newer  rank 0 sees steps 500-1000, rank 1 only 750: both resume from 750 (rank 0 says the
#          ranks' newest differ and which step they use), the job ends with exit 0 and its final
#          parameters are byte-identical to an uninterrupted run's
#   none   rank 1 sees no checkpoint: exit 1, naming both ranks and the directory; rank 0's
#          checkpoints unchanged
#   gone   rank 0 sees only step 1000, rank 1 only 750: exit 1, rank 0 cannot read step 750
set -euo pipefail
train=$1 ddprun=$2 src=$3
if ! command -v mpirun >/dev/null; then
  echo "SKIP: mpirun is not installed (Debian package openmpi-bin)"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-fault-agree.XXXXXX")
. "$(dirname "$0")/common.sh"
. "$(dirname "$0")/ranks.sh"
trap 'kill_ours; rm -rf "$tmp"' EXIT

# split NAME [VAR=value...]: the job with a checkpoint.dir per rank, $tmp/NAME/rank<R>
split() {
  local name=$1
  shift
  (
    [ $# -eq 0 ] || export "$@"
    exec timeout -k 5 "$job_limit" "$ddprun" -n 2 --timeout 60 --tee --log-dir "$tmp/$name.logs" \
      -- /bin/sh -c 'exec "$0" "$@" checkpoint.dir='"$tmp/$name"'/rank$RANK' \
      "$train" "$cfg" "${job_args[@]}" >"$tmp/out" 2>&1
  )
}
ck_name() { printf 'ckpt-%08d.safetensors' "$1"; }
# keep DIR STEP...: DIR holds only the checkpoints of these steps (from base), latest the last
keep() {
  local dir=$1 s
  shift
  mkdir -p "$dir"
  for s in "$@"; do cp "$tmp/base/rank0/$(ck_name "$s")" "$dir/"; done
  [ $# -eq 0 ] || echo "$(ck_name "${!#}")" >"$dir/latest"
}

job_run ref 0
expect_status 0 "the uninterrupted run"
final=$(ck_name "$steps")

status=0
split base EMBER_FAULT_KILL=rank=0,step=1000 || status=$?
[ "$status" -ne 0 ] || fail "the base job was not stopped at step 1000"
[ "$(cat "$tmp/base/rank0/latest")" = "$(ck_name 1000)" ] || fail "base: latest is not step 1000"
no_orphans "after the base job"

# newer: the ranks agree on rank 1's step 750
keep "$tmp/newer/rank0" 500 750 1000
keep "$tmp/newer/rank1" 750
status=0
split newer || status=$?
expect_status 0 "newer: the resumed job"
expect_out "warning: the ranks' newest checkpoints differ \(rank 0: step 1000, rank 1: step 750\): every rank resumes from step 750, rank 1's newest" \
  "newer: the report"
expect_out "resumed from $tmp/newer/rank0/$(ck_name 750) at step 750 " "newer: the resume"
no_orphans "after the newer job"
same=$(same_params "$tmp/ref.ck/$final" "$tmp/newer/rank0/$final")
said=$(grep -m1 -o "the ranks' newest.*" "$tmp/out")

# none: rank 1 sees no checkpoint
keep "$tmp/none/rank0" 500 750 1000
mkdir -p "$tmp/none/rank1"
before=$(cd "$tmp/none/rank0" && sha256sum ./* | sort)
status=0
split none || status=$?
expect_status 1 "none: the job where rank 1 sees no checkpoint"
expect_out "checkpoint.dir $tmp/none/rank0: rank 1 finds no checkpoint there, rank 0 resumes from step 1000: every rank must see the same directory" \
  "none: the error"
[ "$(cd "$tmp/none/rank0" && sha256sum ./* | sort)" = "$before" ] || fail "none: rank 0's changed"
no_orphans "after the none job"
said_none=$(grep -m1 -o "rank 1 finds.*" "$tmp/out" | cut -c1-90)

# gone: rank 0 no longer has the step rank 1 has
keep "$tmp/gone/rank0" 1000
keep "$tmp/gone/rank1" 750
status=0
split gone || status=$?
expect_status 1 "gone: the job where rank 0 lacks step 750"
expect_out "\[rank 0\] ember-train: cannot resume from step 750, where every rank resumes \(the oldest of the ranks' newest checkpoints\): .*$tmp/gone/rank0/$(ck_name 750)" \
  "gone: the error"
no_orphans "after the gone job"
echo "PASS: newer: $said; final $same"
echo "PASS: none: $said_none..."
echo "PASS: gone: $(grep -m1 -o 'cannot resume from step.*' "$tmp/out" | cut -c1-160)"
