#!/usr/bin/env bash
# oversubscribed.sh DDPRUN EMBER_TRAIN SOURCE_DIR: 4 ranks on this machine's 2 cores (twice as
# many ranks as cores, at least 4) train the full Fashion-MNIST MLP for 3 epochs with the default
# collective timeout, on one node and on nodes of 2 ranks: exit 0, a RESULT line from rank 0, and
# no timeout or stall report.
set -euo pipefail
ddprun=$1 train=$2 src=$3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-fault-over.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/common.sh"
command -v mpirun >/dev/null || { echo "SKIP: no mpirun"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cores=$(nproc)
n=$((2 * cores < 4 ? 4 : 2 * cores))
# Once on one node (shared memory), once cut into nodes of 2 (hierarchical, MPI between them).
for node_ranks in 0 2; do
  status=0
  EMBER_COLL_NODE_RANKS=$node_ranks timeout -k 5 600 "$ddprun" -n "$n" "$train" "$cfg" \
    train.threads=1 train.epochs=3 train.log_every=100 >"$tmp/out" 2>&1 || status=$?
  expect_status 0 "$n ranks on $cores cores (EMBER_COLL_NODE_RANKS=$node_ranks)"
  expect_out "^\[rank 0\] RESULT test_acc=0\.[0-9]+ .* ranks=$n" "the RESULT line"
  grep -Eq "timeout after|stalled|aborting" "$tmp/out" && fail "a timeout or stall report"
  echo "PASS: $n ranks on $cores cores, EMBER_COLL_NODE_RANKS=$node_ranks: $(grep -m1 RESULT "$tmp/out")"
done
