#!/usr/bin/env bash
# Runs a test program on N real ranks under Open MPI's mpirun, bounded in time.
#   usage: mpirun.sh NP TIMEOUT_S program [args...]
# Adds --allow-run-as-root only when root and --oversubscribe only past the core count. The
# shared-memory transport's single-copy mechanism (CMA) is not allowed in containers: use none.
set -euo pipefail
np=$1 limit=$2
shift 2
args=(-np "$np" --mca btl_vader_single_copy_mechanism none --bind-to none)
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
[ "$np" -gt "$(nproc --all)" ] && args+=(--oversubscribe)
# Sanitizer builds: Open MPI keeps allocations until exit (tests/lsan.supp lists its libraries),
# and its plug-ins must stay loaded, and stacks be unwound without frame pointers, for the
# suppressions to match. Harmless in other builds.
here=$(cd "$(dirname "$0")" && pwd)
export OMPI_MCA_mca_base_component_disable_dlclose=1
export LSAN_OPTIONS="suppressions=$here/../lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export ASAN_OPTIONS="fast_unwind_on_malloc=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
exec timeout --signal=TERM --kill-after=10 "$limit" mpirun "${args[@]}" "$@"
