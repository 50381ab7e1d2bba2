#!/usr/bin/env bash
# netns-agent.sh: Open MPI's remote agent (plm_rsh_agent) for the netns cluster, in place of ssh.
# mpirun calls it as `netns-agent.sh [ssh options] HOST COMMAND...` to start its daemon (orted)
# on HOST; like ssh, it runs the words of COMMAND joined by blanks as one shell command, here
# inside node HOST's namespace with its hostname and CPUs (netns-cluster.sh exec).
set -euo pipefail
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done # ssh options (e.g. -x): none apply
[ $# -ge 2 ] || {
  echo "netns-agent: usage: netns-agent.sh HOST COMMAND..." >&2
  exit 2
}
host=$1
shift
exec "$(dirname "${BASH_SOURCE[0]}")/netns-cluster.sh" exec "$host" sh -c "$*"
