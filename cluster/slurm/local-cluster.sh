#!/usr/bin/env bash
# local-cluster.sh: a real Slurm cluster on this machine, from Debian's packages (slurmctld, slurmd,
# munge), for running Ember's batch jobs and sweeps and for the tests (docs/slurm.md).
#
#   cluster/slurm/local-cluster.sh up [--nodes 1|2] [--cpus N] [--dir DIR]
#   cluster/slurm/local-cluster.sh status [--dir DIR]
#   cluster/slurm/local-cluster.sh down [--dir DIR]
#   cluster/slurm/local-cluster.sh check        (exit 0 if `up` can work here, else 77 and why)
#
# What `up` makes, all of it recorded in DIR/state so that `down` undoes exactly that:
#
#   host network namespace                 network namespace emslurmI-n1   emslurmI-n2
#   munged  (DIR/munge/socket, own key)
#   slurmctld  10.214.0.(16I+1):PORT  --- bridge emslurmI-br ---- veth ---- 10.214.0.(16I+2)
#              (own UTS: hostname emctlI)              `------------ veth ---- 10.214.0.(16I+3)
#                                                      slurmd -N n1 / slurmd -N n2, each in
#                                                      its own UTS (hostname n1, n2) and mount
#                                                      namespace (its own TmpFS: PMIx's dirs)
#
# I is the first free instance number 0..7 (two clusters can be up at once, e.g. two build trees'
# tests), PORT the first free TCP port from 16817 + 10I. Every path (slurm.conf, munge key and
# socket, state, spool, logs) is under DIR; nothing in /etc/slurm or /etc/munge is read or written,
# no system daemon is touched. Addresses are only ever on the links made here. Nodes declare
# --cpus CPUs each (default: the machine's cores, at least 4) with SlurmdParameters=config_overrides:
# more ranks than cores run oversubscribed, on purpose (4-rank jobs on a 2-core machine).
# proctrack/linuxproc and task/none: no cgroups. Needs root, slurm-wlm, munge, iproute2.
#
# DIR: --dir, else $EMBER_SLURM_DIR, else a new mktemp -d. `up` writes DIR's path into the pointer
# file $EMBER_SLURM_STATE (default ${TMPDIR:-/tmp}/emslurm.current), where `status` and `down`
# find it when neither --dir nor EMBER_SLURM_DIR is given.
# Exit status: 0 done; 1 failed (`up` cleans up what it made before exiting); 2 bad usage;
# 77 missing packages or not root (the message says how to install them).
set -euo pipefail

usage() {
  echo "usage: local-cluster.sh up [--nodes 1|2] [--cpus N] [--dir DIR] | status [--dir DIR] |" \
    "down [--dir DIR] | check" >&2
  exit 2
}
die() { echo "local-cluster: error: $*" >&2; exit 1; }
note() { echo "local-cluster: $*" >&2; }

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
nodes=2 cpus='' dir=${EMBER_SLURM_DIR:-}
while [ $# -gt 0 ]; do
  case $1 in
  --nodes) nodes=${2:-}; shift 2 || usage ;;
  --nodes=*) nodes=${1#*=}; shift ;;
  --cpus) cpus=${2:-}; shift 2 || usage ;;
  --cpus=*) cpus=${1#*=}; shift ;;
  --dir) dir=${2:-}; shift 2 || usage ;;
  --dir=*) dir=${1#*=}; shift ;;
  *) echo "local-cluster: unknown argument '$1'" >&2; usage ;;
  esac
done
[[ $nodes =~ ^[12]$ ]] || { echo "local-cluster: --nodes '$nodes': 1 or 2" >&2; usage; }
[ -z "$cpus" ] || [[ $cpus =~ ^[1-9][0-9]{0,2}$ ]] ||
  { echo "local-cluster: --cpus '$cpus': an integer >= 1" >&2; usage; }
pointer=${EMBER_SLURM_STATE:-${TMPDIR:-/tmp}/emslurm.current}

# ---- prerequisites ---------------------------------------------------------------------------
check_prereqs() { # exit 77 with what to install when a tool is missing or we are not root
  local missing=()
  for t in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge mungekey:munge \
    ip:iproute2 nsenter:util-linux unshare:util-linux flock:util-linux ss:iproute2; do
    command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "local-cluster: skipped: missing $(printf '%s\n' "${missing[@]}" | sort -u | xargs):" \
      "install with scripts/install-deps.sh (or apt-get install slurm-wlm munge iproute2)" >&2
    exit 77
  fi
  [ "$(id -u)" -eq 0 ] ||
    { echo "local-cluster: skipped: needs root (network namespaces, slurmd as root)" >&2; exit 77; }
  [ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/proctrack_linuxproc.so ] ||
    [ -n "$(find /usr/lib -name proctrack_linuxproc.so -print -quit 2>/dev/null)" ] ||
    { echo "local-cluster: skipped: Slurm's proctrack/linuxproc plugin is missing" \
      "(apt-get install slurm-wlm-basic-plugins)" >&2; exit 77; }
}

# ---- the state file: one line per thing made, undone in reverse order ------------------------
# pid NAME PID EXE     a daemon we started (EXE: its binary, checked before signalling)
# netns NAME           a network namespace     link NAME   a link in the host namespace
# var KEY VALUE        facts for status and the tests
record() { echo "$*" >>"$dir/state"; }
state_var() { awk -v k="$1" '$1 == "var" && $2 == k { print $3 }' "$dir/state"; }

find_dir() { # for status/down: --dir, EMBER_SLURM_DIR, else the pointer file
  if [ -z "$dir" ]; then
    [ -f "$pointer" ] || die "no cluster recorded in $pointer (give --dir DIR or EMBER_SLURM_DIR)"
    dir=$(cat "$pointer")
  fi
  [ -f "$dir/state" ] || die "$dir/state does not exist: no cluster made by this script there"
}

# alive PID EXE: the process PID exists and runs EXE (so a recycled PID is never signalled)
alive() { [ -d "/proc/$1" ] && [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$2" ]; }

gone_within() { # gone_within TENTHS PID:EXE...: true once none is alive, false after TENTHS/10 s
  local pe left i tenths=$1
  shift
  for i in $(seq "$tenths"); do
    left=0
    for pe in "$@"; do alive "${pe%%:*}" "${pe#*:}" && left=1; done
    [ $left -eq 0 ] && return 0
    sleep 0.1
  done
  return 1
}

stop_pids() { # stop_pids PID:EXE...: TERM, up to 10 s, then KILL, up to 5 s
  local pe
  for pe in "$@"; do alive "${pe%%:*}" "${pe#*:}" && kill -TERM "${pe%%:*}" 2>/dev/null || true; done
  gone_within 100 "$@" && return 0
  for pe in "$@"; do
    alive "${pe%%:*}" "${pe#*:}" && { note "pid ${pe%%:*} ignored SIGTERM: SIGKILL"; kill -KILL "${pe%%:*}" 2>/dev/null || true; }
  done
  gone_within 50 "$@"
}

netns_pids() { ip netns pids "$1" 2>/dev/null || true; }

teardown() { # undoes everything in $dir/state, in reverse; removes $dir
  local conf=$dir/slurm.conf ok=0 kind name pid exe pids=() ns=() links=()
  # Jobs first, while slurmctld still runs: their processes are children of our slurmd's stepds.
  if [ -f "$conf" ] && grep -q '^pid slurmctld ' "$dir/state"; then
    SLURM_CONF=$conf timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
    for i in $(seq 50); do
      [ -z "$(SLURM_CONF=$conf timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  while read -r kind name pid exe; do
    case $kind in
    pid) pids=("$pid:$exe" "${pids[@]}") ;;
    netns) ns=("$name" "${ns[@]}") ;;
    link) links=("$name" "${links[@]}") ;;
    esac
  done <"$dir/state"
  # Daemons: slurmds and slurmctld before munged (they talk to it while stopping).
  local first=() last=()
  for pe in "${pids[@]}"; do
    case $(basename "${pe#*:}") in munged) last+=("$pe") ;; *) first+=("$pe") ;; esac
  done
  [ ${#first[@]} -eq 0 ] || stop_pids "${first[@]}" || { note "a Slurm daemon would not stop"; ok=1; }
  # Anything still running inside our namespaces was started by our slurmd (job steps, stepds).
  for n in "${ns[@]}"; do
    local rest=()
    for p in $(netns_pids "$n"); do rest+=("$p:$(readlink "/proc/$p/exe" 2>/dev/null)"); done
    if [ ${#rest[@]} -gt 0 ]; then
      note "stopping ${#rest[@]} process(es) left in namespace $n"
      stop_pids "${rest[@]}" || { note "processes in $n would not stop"; ok=1; }
    fi
  done
  [ ${#last[@]} -eq 0 ] || stop_pids "${last[@]}" || { note "munged would not stop"; ok=1; }
  for l in "${links[@]}"; do
    ! ip link show "$l" >/dev/null 2>&1 || ip link del "$l" || ok=1
  done
  for n in "${ns[@]}"; do
    [ ! -e "/run/netns/$n" ] || ip netns del "$n" || ok=1
  done
  if [ $ok -eq 0 ]; then
    if [ -f "$pointer" ] && [ "$(cat "$pointer")" = "$dir" ]; then rm -f "$pointer"; fi
    rm -rf "$dir"
  else
    note "left $dir in place (see its state file): something could not be removed"
  fi
  return $ok
}

# ---- up ----------------------------------------------------------------------------------------
free_port() { # free_port FROM: the first TCP port >= FROM that nothing listens on
  local p=$1
  while ss -Htln "sport = :$p" | grep -q .; do p=$((p + 1)); done
  echo "$p"
}

wait_for() { # wait_for SECONDS WHAT CMD...: polls CMD every 0.2 s
  local secs=$1 what=$2 i
  shift 2
  for i in $(seq $((secs * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$what did not happen within ${secs} s"
}

write_conf() { # write_conf NODE_NAMES...
  local ctl_addr=$1
  shift
  cat >"$dir/slurm.conf" <<EOF
# Written by cluster/slurm/local-cluster.sh: a throw-away cluster, everything under $dir.
ClusterName=emslurm$inst
SlurmctldHost=emctl$inst($ctl_addr)
SlurmctldPort=$port
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/socket
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
PlugStackConfig=$dir/plugstack.conf
# Bind-mounted per node (each slurmd's own mount namespace): PMIx puts its per-step directories
# here, and two nodes sharing one would collide.
TmpFS=$dir/tmpfs
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
# Nodes declare more CPUs than the machine has: without this slurmd would mark them INVAL.
SlurmdParameters=config_overrides
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
MailProg=/bin/true
EOF
  local i=0 names=()
  for n in "$@"; do
    i=$((i + 1))
    echo "NodeName=$n NodeHostname=$n NodeAddr=$(node_addr $i) CPUs=$cpus State=UNKNOWN" >>"$dir/slurm.conf"
    names+=("$n")
  done
  echo "PartitionName=emslurm Nodes=$(IFS=,; echo "${names[*]}") Default=YES MaxTime=60 State=UP" >>"$dir/slurm.conf"
  : >"$dir/plugstack.conf"
  # slurmd and slurmstepd read cgroup.conf next to slurm.conf when they look at cgroups at all.
  echo "CgroupAutomount=no" >"$dir/cgroup.conf"
}

node_addr() { echo "10.214.0.$((16 * inst + 1 + $1))"; }

start_node() { # start_node INDEX NAME: a namespace, its veth on the bridge, slurmd inside
  local i=$1 name=$2 netns=emslurm$inst-$2 hv=emslurm$inst-h$1 nv=emslurm$inst-e$1
  ip netns add "$netns"
  record netns "$netns"
  ip link add "$hv" type veth peer name "$nv"
  record link "$hv"
  ip link set "$nv" netns "$netns"
  ip link set "$hv" master "emslurm$inst-br" up
  ip -n "$netns" link set lo up
  ip -n "$netns" addr add "$(node_addr "$i")/28" dev "$nv"
  ip -n "$netns" link set "$nv" up
  mkdir -p "$dir/spool/$name" "$dir/nodes/$name/tmpfs"
  # Not `ip netns exec` (it remounts /sys, and slurmd then fails on cgroups): nsenter for the
  # network, unshare for the hostname and for a mount namespace in which TmpFS is this node's own.
  setsid nsenter --net="/run/netns/$netns" unshare --mount --uts --propagation private \
    sh -c 'hostname "$1" && mount --bind "$2" "$3" && exec slurmd -D -N "$1" -f "$4"' \
    slurmd-wrap "$name" "$dir/nodes/$name/tmpfs" "$dir/tmpfs" "$dir/slurm.conf" \
    </dev/null >>"$dir/log/slurmd-$name.out" 2>&1 &
  local pid=$! exe
  exe=$(readlink -f "$(command -v slurmd)")
  record pid slurmd "$pid" "$exe"
  # The pid becomes slurmd's once the exec chain (nsenter, unshare, sh) has run.
  wait_for 10 "slurmd $name starting" alive "$pid" "$exe"
}

nodes_idle() { # all nodes idle (or mixed/allocated: up and usable)
  local states
  states=$(SLURM_CONF=$dir/slurm.conf sinfo -h -N -o '%t' 2>/dev/null) || return 1
  [ "$(grep -cE '^(idle|mix|alloc)$' <<<"$states")" -eq "$nodes" ]
}

up() {
  check_prereqs
  [ -n "$cpus" ] || { cpus=$(nproc --all); [ "$cpus" -ge 4 ] || cpus=4; }
  if [ -z "$dir" ]; then
    dir=$(mktemp -d "${TMPDIR:-/tmp}/emslurm.XXXXXX")
  else
    [ ! -e "$dir" ] || [ -z "$(ls -A "$dir")" ] || die "--dir $dir exists and is not empty"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
  fi
  # The munge socket path must fit a sockaddr_un (108 bytes).
  [ ${#dir} -le 80 ] || die "--dir $dir: the path is too long for munge's socket (80 characters at most)"
  : >"$dir/state"
  echo "$dir" >"$pointer" # from now on, `down` finds what this `up` made even if it is killed
  trap 'rc=$?; if [ $rc -ne 0 ]; then note "up failed: removing what it made"; show_logs; teardown || true; fi' EXIT
  # One instance number per cluster: taken under a lock so that two `up`s never pick the same.
  exec 9>"${TMPDIR:-/tmp}/emslurm.lock"
  flock -w 30 9 || die "could not lock ${TMPDIR:-/tmp}/emslurm.lock within 30 s"
  inst=
  for i in 0 1 2 3 4 5 6 7; do
    [ -e "/run/netns/emslurm$i-n1" ] || ip link show "emslurm$i-br" >/dev/null 2>&1 ||
      { inst=$i; break; }
  done
  [ -n "$inst" ] || die "8 local clusters are up already (emslurm0..7): take one down first"
  port=$(free_port $((16817 + 10 * inst)))
  record var instance "$inst"
  record var port "$port"
  record var dir "$dir"
  mkdir -p "$dir/munge" "$dir/ctld" "$dir/run" "$dir/log" "$dir/tmpfs" "$dir/spool"
  chmod 755 "$dir/munge" # the key inside is 0600
  local ctl_addr=10.214.0.$((16 * inst + 1))
  ip link add "emslurm$inst-br" type bridge
  record link "emslurm$inst-br"
  ip addr add "$ctl_addr/28" dev "emslurm$inst-br"
  ip link set "emslurm$inst-br" up
  flock -u 9

  # munge: its own key and socket; clients find it through AuthInfo=socket=...
  mungekey --create --keyfile="$dir/munge/key" >/dev/null
  setsid munged --foreground --force --socket="$dir/munge/socket" --key-file="$dir/munge/key" \
    --pid-file="$dir/munge/pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed" \
    </dev/null >>"$dir/log/munged.out" 2>&1 &
  record pid munged $! "$(readlink -f "$(command -v munged)")"
  wait_for 10 "munged's socket appearing" test -S "$dir/munge/socket"

  local names=(n1 n2)
  write_conf "$ctl_addr" "${names[@]:0:$nodes}"
  setsid unshare --uts sh -c 'hostname "$1" && exec slurmctld -D -c -f "$2"' slurmctld-wrap \
    "emctl$inst" "$dir/slurm.conf" </dev/null >>"$dir/log/slurmctld.out" 2>&1 &
  local ctld=$!
  record pid slurmctld "$ctld" "$(readlink -f "$(command -v slurmctld)")"
  wait_for 20 "slurmctld answering" env SLURM_CONF="$dir/slurm.conf" scontrol ping
  for i in $(seq "$nodes"); do start_node "$i" "${names[$((i - 1))]}"; done
  wait_for 60 "every node becoming idle (sinfo)" nodes_idle
  trap - EXIT
  SLURM_CONF=$dir/slurm.conf sinfo -N -o '%N %t %c %P'
  cat <<EOF

Local Slurm cluster emslurm$inst is up: $nodes node(s), $cpus CPUs each, everything in $dir.
Use it with:
  export SLURM_CONF=$dir/slurm.conf
  sbatch cluster/slurm/train-1node.sbatch
Take it down with: cluster/slurm/local-cluster.sh down --dir $dir
EOF
}

show_logs() { # the end of each daemon's log, to say why `up` failed
  for f in "$dir"/log/*; do
    [ -s "$f" ] || continue
    echo "--- last lines of $f:" >&2
    tail -n 8 "$f" >&2
  done
}

status() {
  find_dir
  local conf=$dir/slurm.conf
  echo "cluster: emslurm$(state_var instance), dir $dir, slurmctld port $(state_var port)"
  echo "export SLURM_CONF=$conf"
  awk '$1 == "pid" { print $2, $3, $4 }' "$dir/state" | while read -r name pid exe; do
    if alive "$pid" "$exe"; then echo "  $name: pid $pid running"; else echo "  $name: pid $pid NOT running"; fi
  done
  SLURM_CONF=$conf timeout 10 sinfo -N -o '%N %t %c %P' || echo "sinfo failed"
  SLURM_CONF=$conf timeout 10 squeue || echo "squeue failed"
}

case $cmd in
check) check_prereqs ;;
up) up ;;
status) status ;;
down)
  find_dir
  teardown && echo "local-cluster: down: everything in $dir stopped and removed" ;;
*) usage ;;
esac
