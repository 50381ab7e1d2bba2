#!/usr/bin/env bash
# Runs ember-collbench (collbench.c): Ember's allreduce, broadcast, reduce_scatter and allgather
# against raw MPI on the same buffers, 4 KiB to 256 MiB, then the fingerprint-check cost and the
# chunk-size sweep; the output ends with BENCH lines. `make bench` calls it.
#   usage: collectives/bench/run.sh [BUILD_DIR] [collbench options...]
#   env:   NP (ranks, default 2), MPIRUN_ARGS (extra mpirun arguments)
# mpirun gets what tests/mpi/mpirun.sh gives the multi-rank tests: --allow-run-as-root only when
# root, --oversubscribe only past the core count, no single-copy (CMA) in the shared-memory
# transport (not allowed in containers; without it raw MPI's small messages are also faster, so
# the peer runs at its best), and no binding (each rank has two threads: compute and comm).
set -euo pipefail
build=${1:-build}
[ $# -gt 0 ] && shift
np=${NP:-2}
bin="$build/collectives/bench/ember-collbench"
[ -x "$bin" ] || { echo "collbench: $bin not built (run make build; needs MPI)" >&2; exit 1; }
args=(-np "$np" --mca btl_vader_single_copy_mechanism none --bind-to none)
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
[ "$np" -gt "$(nproc --all)" ] && args+=(--oversubscribe)
# shellcheck disable=SC2206 # MPIRUN_ARGS is split on purpose
[ -n "${MPIRUN_ARGS:-}" ] && args+=(${MPIRUN_ARGS})
exec timeout --signal=TERM --kill-after=10 1800 mpirun "${args[@]}" "$bin" "$@"
