# common.sh: shared by the ember-train test scripts (sourced). Defines
#   run NP ARGS...   ember-train on NP ranks (1: directly, a singleton MPI world; more: mpirun.sh)
#   fail MSG         print MSG and the last output, exit 1
#   csv_rows FILE    the data rows of a metrics.csv
# Expects: train (the ember-train binary), src (the source tree), tmp (a scratch directory).
run() {
  local np=$1
  shift
  if [ "$np" -eq 1 ]; then
    "$train" "$@"
  else
    "$src/tests/mpi/mpirun.sh" "$np" 120 "$train" "$@"
  fi
}

fail() {
  echo "FAIL: $*" >&2
  [ -f "$tmp/out" ] && { echo "--- last output:" >&2; tail -n 30 "$tmp/out" >&2; }
  exit 1
}

csv_rows() { tail -n +2 "$1"; }
