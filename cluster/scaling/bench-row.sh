#!/usr/bin/env bash
# bench-row.sh: runs one ember-ddp-bench configuration and prints its result as one CSV row, so
# that every sweep (local mpirun, Slurm job arrays, network-namespace "nodes") writes the same
# columns and the plots read them all.
#
#   bench-row.sh --header
#   bench-row.sh [--nodes N] [--launcher NAME] [--setting NAME] [--link RATE] [--machines M]
#                -- COMMAND...
#
# COMMAND starts ember-ddp-bench on every rank, e.g.
#   bench-row.sh --setting overlap-on -- ddprun -n 2 build/cluster/bench/ember-ddp-bench \
#     --steps 100 --overlap on
# Its output goes to stderr; stdout gets exactly one line: the row (no header). The row is taken
# from the last BENCH line that rank 0 printed (and the steps from the "ember MODEL: W ranks, S
# steps" line). Exit status: COMMAND's when it fails, 1 when it printed no BENCH line, 2 for bad
# usage. The options only label the row: they change nothing in how COMMAND runs.
#
# Columns (docs/slurm.md, "The CSV row"):
#   time_utc         when the row was written (ISO 8601, UTC)
#   cpu_model        /proc/cpuinfo's model name (commas removed); rows of different machines
#   cores            nproc --all                                 must never be mixed
#   launcher         --launcher (default: local), e.g. slurm, netns, local
#   setting          --setting (default: the BENCH tag), a free label for the plot's series
#   nodes            --nodes (default 1): nodes the ranks were spread over
#   world            ranks in all
#   ranks_per_node   world / nodes
#   oversubscribed   1 when world x threads > cores x --machines (default 1: all the "nodes" run
#                    on this machine, as with the local Slurm and network namespaces), else 0
#   link             --link (default: none), the emulated link rate between nodes, e.g. 1gbit
#   model, batch, threads, bucket_mb, compress, overlap (yes/no: whether buckets were reduced
#                    during backward), buckets                    as the BENCH line says
#   steps            timed steps
#   samples_per_s    global training samples per second
#   step_ms          wall time of one step
#   comm_ms          all-reduce time per step (rank 0), exposed and hidden together
#   comm_exposed_ms  the part of it that the step waited for
#   overlap_frac     the part of it hidden behind backward (comm_ms - comm_exposed_ms) / comm_ms
set -euo pipefail

HEADER="time_utc,cpu_model,cores,launcher,setting,nodes,world,ranks_per_node,oversubscribed,link"
HEADER+=",model,batch,threads,bucket_mb,compress,overlap,buckets,steps,samples_per_s,step_ms"
HEADER+=",comm_ms,comm_exposed_ms,overlap_frac"

usage() {
  echo "usage: bench-row.sh --header | bench-row.sh [--nodes N] [--launcher NAME]" \
    "[--setting NAME] [--link RATE] [--machines M] -- COMMAND..." >&2
  exit 2
}
nodes=1 launcher=local setting='' link=none machines=1
[ $# -gt 0 ] || usage
if [ "$1" = --header ]; then echo "$HEADER"; exit 0; fi
while [ $# -gt 0 ]; do
  case $1 in
  --nodes | --launcher | --setting | --link | --machines)
    [ $# -ge 2 ] || usage
    declare "${1#--}=$2"
    shift 2 ;;
  --) shift; break ;;
  *) echo "bench-row: unknown option '$1'" >&2; usage ;;
  esac
done
[ $# -gt 0 ] || { echo "bench-row: no command after --" >&2; usage; }
[[ $nodes =~ ^[1-9][0-9]*$ ]] || { echo "bench-row: --nodes '$nodes': an integer >= 1" >&2; exit 2; }
[[ $machines =~ ^[1-9][0-9]*$ ]] ||
  { echo "bench-row: --machines '$machines': an integer >= 1" >&2; exit 2; }
for v in "$launcher" "$setting" "$link"; do
  [[ $v != *[,\"]* ]] || { echo "bench-row: labels may not hold commas or quotes: '$v'" >&2; exit 2; }
done

out=$(mktemp "${TMPDIR:-/tmp}/bench-row.XXXXXX")
trap 'rm -f "$out"' EXIT
rc=0
"$@" 2>&1 | tee "$out" >&2 || rc=$?
[ $rc -eq 0 ] || { echo "bench-row: the command failed (status $rc): $*" >&2; exit $rc; }
# Lines may carry ddprun's "[rank 0] " tag.
bench=$(sed -n 's/^\(\[rank [0-9]*\] \)*\(BENCH suite=train .*\)$/\2/p' "$out" | tail -n 1)
[ -n "$bench" ] || { echo "bench-row: no BENCH line in the command's output" >&2; exit 1; }
steps=$(sed -n 's/.*ember [a-z0-9]*: [0-9]* ranks, \([0-9]*\) steps of batch.*/\1/p' "$out" |
  tail -n 1)

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | tr -d ',"' | xargs || true)
cores=$(nproc --all)
awk -v bench="$bench" -v t="$(date -u +%FT%TZ)" -v cpu="${cpu:-unknown}" -v cores="$cores" \
  -v launcher="$launcher" -v setting="$setting" -v nodes="$nodes" -v link="$link" \
  -v machines="$machines" -v steps="${steps:-}" 'BEGIN {
  n = split(bench, kv, " ")
  for (i = 2; i <= n; i++) { eq = index(kv[i], "="); f[substr(kv[i], 1, eq - 1)] = substr(kv[i], eq + 1) }
  need = "case ranks threads batch bucket_mb compress overlap buckets samples_per_s step_ms comm_ms comm_exposed_ms overlap_frac"
  m = split(need, keys, " ")
  for (i = 1; i <= m; i++)
    if (!(keys[i] in f)) { print "bench-row: the BENCH line has no " keys[i] "=" > "/dev/stderr"; exit 1 }
  w = f["ranks"]
  if (setting == "") setting = f["tag"]
  over = (w * f["threads"] > cores * machines) ? 1 : 0
  printf "%s,%s,%d,%s,%s,%d,%d,%g,%d,%s,%s,%d,%d,%g,%s,%s,%d,%s,%s,%s,%s,%s,%s\n", t, cpu, cores,
    launcher, setting, nodes, w, w / nodes, over, link, f["case"], f["batch"], f["threads"],
    f["bucket_mb"], f["compress"], f["overlap"], f["buckets"], steps, f["samples_per_s"],
    f["step_ms"], f["comm_ms"], f["comm_exposed_ms"], f["overlap_frac"]
}'
