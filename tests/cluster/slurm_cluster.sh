#!/usr/bin/env bash
# slurm_cluster.sh up|down SOURCE_DIR: the fixture of the Slurm tests (tests/cluster/slurm.cmake).
#   up    local-cluster.sh up (two nodes), its directory recorded in $EMBER_SLURM_STATE; passes
#         when both nodes are idle
#   down  local-cluster.sh down, then checks that it left nothing: none of the daemons it
#         recorded alive, no process in its namespaces, the namespaces, links and the directory
#         gone
# Skipped (77) with what to install when Slurm, munge or iproute2 are missing, or not root.
set -euo pipefail
action=$1 src=$2
. "$(dirname "$0")/slurm_lib.sh"
"$src/cluster/slurm/local-cluster.sh" check || exit $?
: "${EMBER_SLURM_STATE:?}"
lc=$src/cluster/slurm/local-cluster.sh

case $action in
up)
  if [ -s "$EMBER_SLURM_STATE" ] && [ -d "$(cat "$EMBER_SLURM_STATE")" ]; then
    echo "a cluster from an earlier run is still recorded in $EMBER_SLURM_STATE: taking it down"
    "$lc" down || fail "could not take down the earlier cluster"
  fi
  "$lc" up --nodes 2 || fail "local-cluster.sh up failed (status $?)"
  slurm_env
  states=$(sinfo -h -N -o '%N %t' | sort | xargs)
  [ "$states" = "n1 idle n2 idle" ] || fail "nodes are '$states', expected 'n1 idle n2 idle'"
  echo "ok: local cluster up in $slurm_dir: $states"
  ;;
down)
  slurm_env
  state=$slurm_dir/state
  cp "$state" "${TMPDIR:-/tmp}/slurm-down-state.$$"
  saved=${TMPDIR:-/tmp}/slurm-down-state.$$
  trap 'rm -f "$saved"' EXIT
  "$lc" down || fail "local-cluster.sh down failed (status $?)"
  while read -r kind name pid exe; do
    case $kind in
    pid) if [ -d "/proc/$pid" ] && [ "$(readlink "/proc/$pid/exe")" = "$exe" ]; then
           fail "$name (pid $pid) is still running"
         fi ;;
    netns) [ ! -e "/run/netns/$name" ] || fail "network namespace $name is still there" ;;
    link) ! ip link show "$name" >/dev/null 2>&1 || fail "link $name is still there" ;;
    esac
  done <"$saved"
  [ ! -e "$slurm_dir" ] || fail "$slurm_dir is still there"
  [ ! -e "$EMBER_SLURM_STATE" ] || fail "$EMBER_SLURM_STATE is still there"
  left=$(pgrep -f -- "$slurm_dir" || true)
  [ -z "$left" ] || { ps -o pid,args -p $left; fail "processes naming $slurm_dir are left"; }
  echo "ok: down: $(grep -c '^pid ' "$saved") daemons stopped, namespaces, links and $slurm_dir removed"
  ;;
*) fail "unknown action '$action' (up or down)" ;;
esac
