#!/usr/bin/env bash
# netns-cluster.sh: a cluster of N "nodes" on this machine, made of Linux network namespaces, for
# running Ember jobs across nodes with MPI over real TCP links (docs/multinode.md).
#
#   netns-cluster.sh up N [--rate R] [--cpus split|all]   make nodes node1..nodeN
#   netns-cluster.sh rate R|none                           change every link's rate limit
#   netns-cluster.sh status                                what exists, addresses, rates, processes
#   netns-cluster.sh exec NODE CMD...                      run CMD inside node NODE (node2 or 2)
#   netns-cluster.sh run CMD...                            CMD in node1, Open MPI set up for a job
#   netns-cluster.sh down                                  remove everything `up` made
#
# The layout (N = 2; every name and address is made here, none is routed anywhere else):
#
#   ns ember-n1 (node1)                ns ember-nsw (switch)               ns ember-n2 (node2)
#   eth0 10.213.0.1/24 --veth-- sw1 --[ bridge br0 ]-- sw2 --veth-- eth0 10.213.0.2/24
#   lo 127.0.0.1                       (no address)                        lo 127.0.0.1
#
# Rate limits (--rate 1gbit) are tbf qdiscs with a shallow queue on both ends of each link (node
# eth0 egress, switch port egress): measured here, a deep tbf queue (400 ms) halved what MPI got.
# There are no default routes, no NAT and nothing in the root namespace: a packet can only go
# to loopback or to another node. Each namespace also gets /etc/netns/NS/hosts (node names ->
# addresses) and an empty resolv.conf, which `ip netns exec` binds over /etc, so that no name
# lookup leaves the cluster.
#
# Commands run in a node get their own hostname (unshare -u: Open MPI keys its session
# directories and shared-memory files by host name; two "nodes" with one name crashed its
# shared-memory transport) and the node's share of the machine's CPUs (taskset; --cpus split,
# the default: the CPUs this script may use, divided among the nodes in order, wrapping when there
# are more nodes than CPUs; --cpus all: every node gets all of them). ddprun sees that restricted
# CPU set and lets ranks inherit it instead of binding them to cores counted from 0
# (docs/launcher.md).
#
# Everything made is recorded in the state directory ($EMBER_NETNS_STATE, default
# /run/ember-netns) as it is made, so `down` removes it even after a failed or killed `up`; it
# also removes namespaces named ember-n<digits> or ember-nsw left without a state directory, and
# first kills the processes still inside them. Needs root and iproute2.
set -euo pipefail

PREFIX=ember-n
SWITCH_NS=${PREFIX}sw
SUBNET_BASE=10.213.0 # node k is $SUBNET_BASE.k/24
SUBNET=$SUBNET_BASE.0/24
MAX_NODES=64
STATE=${EMBER_NETNS_STATE:-/run/ember-netns}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() {
  echo "netns-cluster: $*" >&2
  exit 1
}
usage() {
  echo "usage:" >&2
  sed -n 's/^#   netns-cluster.sh/  netns-cluster.sh/p' "${BASH_SOURCE[0]}" >&2
  exit 2
}
need_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, veth links, tc)"
  command -v ip > /dev/null || die "'ip' not found (apt-get install iproute2)"
}

# ---- the state directory ----------------------------------------------------------------------
nodes_up() { cat "$STATE/nodes" 2> /dev/null || echo 0; }
node_cpus() { cat "$STATE/cpus.$1"; }
record() { echo "$*" >> "$STATE/made"; } # one object per line, in the order made

# "node2", "2" or "10.213.0.2" -> 2; dies on anything else or on a node that does not exist.
node_index() {
  local n=$1 k
  [ "$(nodes_up)" -gt 0 ] || die "no cluster is up (netns-cluster.sh up N first)"
  case $n in
    node[0-9]*) k=${n#node} ;;
    "$SUBNET_BASE".[0-9]*) k=${n##*.} ;;
    [0-9]*) k=$n ;;
    *) die "'$n' is not a node (node1..node$(nodes_up), or its number or address)" ;;
  esac
  [[ $k =~ ^[0-9]+$ ]] && [ "$k" -ge 1 ] && [ "$k" -le "$(nodes_up)" ] ||
    die "'$n' is not a node of this cluster (it has $(nodes_up): node1..node$(nodes_up))"
  echo "$((10#$k))"
}

# ---- rates ------------------------------------------------------------------------------------
# "1gbit", "500mbit", "2.5gbit" -> bits per second; dies on anything else.
rate_bps() {
  local r=$1 num unit
  [[ $r =~ ^([0-9]+(\.[0-9]+)?)(kbit|mbit|gbit)$ ]] ||
    die "rate '$r': expected a number and kbit, mbit or gbit (e.g. 1gbit, 500mbit)"
  num=${BASH_REMATCH[1]} unit=${BASH_REMATCH[3]}
  case $unit in kbit) unit=1000 ;; mbit) unit=1000000 ;; gbit) unit=1000000000 ;; esac
  awk -v n="$num" -v u="$unit" 'BEGIN { printf "%.0f\n", n * u }'
}

# Puts (or removes, rate "none") the tbf qdisc on one device in one namespace. The queue is
# shallow: burst = 1 ms at the rate, at least 125 KB (1 Mbit: two 64 KB GSO packets), and at most
# 1 ms of queueing.
shape_dev() {
  local ns=$1 dev=$2 rate=$3 burst
  if [ "$rate" = none ]; then
    ip -n "$ns" link show "$dev" > /dev/null 2>&1 || return 0
    tc -n "$ns" qdisc del dev "$dev" root 2> /dev/null || true
    return 0
  fi
  burst=$(($(rate_bps "$rate") / 8000))
  [ "$burst" -ge 125000 ] || burst=125000
  tc -n "$ns" qdisc replace dev "$dev" root tbf rate "$rate" burst "$burst" latency 1ms
}

set_rate() {
  local rate=$1 n k
  [ "$rate" = none ] || rate_bps "$rate" > /dev/null
  n=$(nodes_up)
  [ "$n" -gt 0 ] || die "no cluster is up (netns-cluster.sh up N first)"
  for k in $(seq 1 "$n"); do
    shape_dev "$PREFIX$k" eth0 "$rate"
    shape_dev "$SWITCH_NS" "sw$k" "$rate"
  done
  echo "$rate" > "$STATE/rate"
}

# ---- CPUs -------------------------------------------------------------------------------------
# The CPUs this process may run on, one per line.
my_cpus() {
  local list part a b
  list=$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status)
  for part in ${list//,/ }; do
    a=${part%-*} b=${part#*-}
    seq "$a" "$b"
  done
}

# Node k's CPU list (comma-separated) for N nodes under mode split|all.
cpus_for() {
  local k=$1 n=$2 mode=$3 cpus per i out=()
  mapfile -t cpus < <(my_cpus)
  if [ "$mode" = all ]; then
    local IFS=,
    echo "${cpus[*]}"
    return
  fi
  per=$((${#cpus[@]} / n))
  [ "$per" -ge 1 ] || per=1
  for i in $(seq 0 $((per - 1))); do
    out+=("${cpus[$((((k - 1) * per + i) % ${#cpus[@]}))]}")
  done
  local IFS=,
  echo "${out[*]}"
}

# ---- up / down --------------------------------------------------------------------------------
add_netns() {
  ip netns add "$1"
  record "netns $1"
  ip -n "$1" link set lo up
}

up() {
  local n=${1:-} rate=none mode=split k
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le $MAX_NODES ] ||
    die "up: N must be a number of nodes from 1 to $MAX_NODES (got '${n}')"
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      --rate) rate=${2:?--rate needs a value, e.g. 1gbit}; shift 2 ;;
      --rate=*) rate=${1#--rate=}; shift ;;
      --cpus) mode=${2:?--cpus needs split or all}; shift 2 ;;
      --cpus=*) mode=${1#--cpus=}; shift ;;
      *) die "up: unknown option '$1' (--rate R, --cpus split|all)" ;;
    esac
  done
  [ "$rate" = none ] || rate_bps "$rate" > /dev/null
  [ "$mode" = split ] || [ "$mode" = all ] || die "up: --cpus '$mode': expected split or all"
  if [ -e "$STATE/made" ] || ip netns list | grep -Eq "^$PREFIX([0-9]+|sw)( |$)"; then
    die "a cluster is already up (netns-cluster.sh status; netns-cluster.sh down first)"
  fi
  mkdir -p "$STATE"
  : > "$STATE/made"
  trap 'echo "netns-cluster: up failed; removing what was made" >&2; down; exit 1' ERR
  add_netns "$SWITCH_NS"
  ip -n "$SWITCH_NS" link add br0 type bridge
  ip -n "$SWITCH_NS" link set br0 up
  echo "$n" > "$STATE/nodes"
  for k in $(seq 1 "$n"); do
    add_netns "$PREFIX$k"
    # Both ends are created in their namespaces directly: no link ever exists in the root one.
    ip link add eth0 netns "$PREFIX$k" type veth peer name "sw$k" netns "$SWITCH_NS"
    ip -n "$SWITCH_NS" link set "sw$k" master br0 up
    ip -n "$PREFIX$k" addr add "$SUBNET_BASE.$k/24" dev eth0
    ip -n "$PREFIX$k" link set eth0 up
    cpus_for "$k" "$n" "$mode" > "$STATE/cpus.$k"
    mkdir -p "/etc/netns/$PREFIX$k"
    record "etc /etc/netns/$PREFIX$k"
    {
      echo "127.0.0.1 localhost"
      for j in $(seq 1 "$n"); do echo "$SUBNET_BASE.$j node$j"; done
    } > "/etc/netns/$PREFIX$k/hosts"
    echo "# ember netns cluster: no name servers" > "/etc/netns/$PREFIX$k/resolv.conf"
  done
  echo "$mode" > "$STATE/cpumode"
  set_rate "$rate"
  trap - ERR
  wait_links "$n"
  status
}

# A new link is usable once the bridge has put its port into forwarding (at once with STP off,
# as here; bounded anyway: 50 looks, 0.1 s apart).
wait_links() {
  local n=$1 k try
  for k in $(seq 1 "$n"); do
    for try in $(seq 1 50); do
      bridge -n "$SWITCH_NS" link show dev "sw$k" | grep -q 'state forwarding' && break
      [ "$try" -lt 50 ] || die "switch port sw$k (node$k) is not forwarding after 5 s"
      sleep 0.1
    done
  done
}

# Processes inside namespace $1, one pid per line.
ns_pids() { ip netns pids "$1" 2> /dev/null || true; }

# SIGTERM, then (after up to 3 s) SIGKILL, to every process inside namespace $1.
kill_ns() {
  local ns=$1 pids i
  pids=$(ns_pids "$ns")
  [ -n "$pids" ] || return 0
  echo "netns-cluster: stopping processes left in $ns: $(echo $pids)" >&2
  kill -TERM $pids 2> /dev/null || true
  for i in $(seq 1 30); do
    [ -n "$(ns_pids "$ns")" ] || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2046 # one pid per word
  kill -KILL $(ns_pids "$ns") 2> /dev/null || true
  sleep 0.2
}

down() {
  need_root
  local what name ns
  # Nodes first (their processes, then the namespaces: deleting a namespace deletes its veth end,
  # which deletes the pair), the switch last.
  {
    [ -e "$STATE/made" ] && tac "$STATE/made"
    ip netns list | awk -v re="^$PREFIX([0-9]+|sw)\$" '$1 ~ re { print "netns " $1 }'
  } | awk '!seen[$0]++' | while read -r what name; do
    case $what in
      netns)
        if ip netns list | awk '{ print $1 }' | grep -qx "$name"; then
          kill_ns "$name"
          ip netns del "$name"
        fi
        ;;
      etc) rm -rf -- "$name" ;;
    esac
  done
  for ns in "/etc/netns/${PREFIX}"[0-9]* "/etc/netns/$SWITCH_NS"; do
    [ -d "$ns" ] && rm -rf -- "$ns"
  done
  rmdir /etc/netns 2> /dev/null || true
  rm -rf -- "$STATE"
}

status() {
  local n k ns pids
  n=$(nodes_up)
  if [ "$n" -eq 0 ]; then
    echo "no cluster is up (state: $STATE)"
    ip netns list | grep -E "^$PREFIX([0-9]+|sw)( |$)" &&
      echo "(namespaces above were left without a state directory: netns-cluster.sh down)"
    return 0
  fi
  echo "$n nodes, subnet $SUBNET, rate $(cat "$STATE/rate"), cpus $(cat "$STATE/cpumode")" \
    "(state: $STATE)"
  for k in $(seq 1 "$n"); do
    ns=$PREFIX$k
    pids=$(ns_pids "$ns" | wc -l)
    printf 'node%-3s ns %-10s %-14s cpus %-8s processes %s qdisc %s\n' "$k" "$ns" \
      "$(ip -n "$ns" -4 -br addr show eth0 2> /dev/null | awk '{ print $3 }')" \
      "$(node_cpus "$k")" "$pids" \
      "$(tc -n "$ns" qdisc show dev eth0 2> /dev/null | head -1 | awk '$2 == "tbf" { print "tbf", $8; next } { print "none" }')"
  done
}

# ---- running commands in a node ---------------------------------------------------------------
# Runs CMD in node k: its network namespace (and /etc/netns files), its own hostname nodeK, its
# CPUs. exec: the command replaces this script.
exec_node() {
  local k
  k=$(node_index "$1")
  shift
  [ $# -gt 0 ] || die "exec: no command given"
  exec ip netns exec "$PREFIX$k" unshare --uts -- \
    sh -c 'hostname "$1" && cpus=$2 && shift 2 && exec taskset -c "$cpus" "$@"' \
    netns-node "node$k" "$(node_cpus "$k")" "$@"
}

# Open MPI's settings for the cluster (environment, so that mpirun forwards them to every node):
# remote nodes are reached through netns-agent.sh (ip netns exec) instead of ssh, one daemon per
# node started directly by mpirun, TCP only on the cluster's subnet, shared memory inside a node
# (without the single-copy mechanism, which containers forbid).
mpi_env() {
  export OMPI_MCA_plm_rsh_agent="$HERE/netns-agent.sh"
  export OMPI_MCA_plm_rsh_no_tree_spawn=1
  export OMPI_MCA_btl=tcp,vader,self
  export OMPI_MCA_btl_tcp_if_include=$SUBNET
  export OMPI_MCA_oob_tcp_if_include=$SUBNET
  export OMPI_MCA_btl_vader_single_copy_mechanism=none
  # mpirun and its daemons notice a link that went silent by TCP keepalive: after 10 s of
  # silence and 3 unanswered probes 2 s apart (~16 s), not Open MPI's default of about 8 minutes
  # (300 s + 9 x 20 s). Measured with 2 s: a cut link ended the job through "ORTE has lost
  # communication with a remote daemon ... node2" within 4.5 s. Keepalive does not apply to a
  # connection with unacknowledged data (a daemon that tried to report an abort across the cut
  # link): such a daemon outlives the job, and run's epilogue below stops it.
  export OMPI_MCA_oob_tcp_keepalive_time=${OMPI_MCA_oob_tcp_keepalive_time:-10}
  export OMPI_MCA_oob_tcp_keepalive_intvl=${OMPI_MCA_oob_tcp_keepalive_intvl:-2}
  export OMPI_MCA_oob_tcp_keepalive_probes=${OMPI_MCA_oob_tcp_keepalive_probes:-3}
}

# `run CMD...`: CMD in node1 with mpi_env. A first word `ddprun` not on PATH is the build's
# ($EMBER_BUILD, default <repo>/build). After CMD ends, processes still inside the nodes are
# waited for (5 s), then reported and stopped, as a batch system's epilogue would: a job whose
# remote daemon lost its link leaves one behind. Exit status: CMD's.
run() {
  local rc=0 k left waited
  [ $# -gt 0 ] || die "run: no command given"
  [ "$(nodes_up)" -gt 0 ] || die "no cluster is up (netns-cluster.sh up N first)"
  if [ "$1" = ddprun ] && ! command -v ddprun > /dev/null; then
    local build=${EMBER_BUILD:-$HERE/../../build}
    [ -x "$build/launcher/ddprun" ] ||
      die "run: ddprun is not on PATH nor at $build/launcher/ddprun (set EMBER_BUILD)"
    shift
    set -- "$(cd "$build/launcher" && pwd)/ddprun" "$@"
  fi
  mpi_env
  "${BASH_SOURCE[0]}" exec node1 "$@" || rc=$?
  for waited in $(seq 0 50); do
    left=0
    for k in $(seq 1 "$(nodes_up)"); do
      [ -z "$(ns_pids "$PREFIX$k")" ] || left=1
    done
    [ "$left" -eq 1 ] || break
    [ "$waited" -lt 50 ] || {
      echo "netns-cluster: processes were still running in the nodes 5 s after the job ended:" >&2
      for k in $(seq 1 "$(nodes_up)"); do
        for p in $(ns_pids "$PREFIX$k"); do
          echo "netns-cluster:   node$k pid $p: $(tr '\0' ' ' < "/proc/$p/cmdline" 2> /dev/null |
            cut -c1-120)" >&2
        done
        kill_ns "$PREFIX$k"
      done
    }
    sleep 0.1
  done
  return "$rc"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  up) need_root; up "$@" ;;
  down) down ;;
  status) need_root; status ;;
  rate) need_root; [ $# -eq 1 ] || die "rate: expected one rate (e.g. 5gbit) or none"; set_rate "$1"; status ;;
  exec) need_root; [ $# -ge 1 ] || die "exec: expected NODE CMD..."; exec_node "$@" ;;
  run) need_root; run "$@" ;;
  -h | --help | help) usage ;;
  *) echo "netns-cluster: unknown command '${cmd}'" >&2; usage ;;
esac
