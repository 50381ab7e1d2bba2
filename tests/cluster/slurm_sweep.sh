#!/usr/bin/env bash
# slurm_sweep.sh BUILD_DIR SOURCE_DIR: cluster/slurm/sweep.sh on the local cluster, short (20
# timed steps, four elements: 1 rank; 2 ranks on one node, overlap on; 2 nodes x 1 rank, overlap
# off; 2 nodes x 2 ranks, overlap on), waited for at most 240 s. Checks the gathered CSV:
# bench-row.sh's header plus efficiency, one row per element in plan order with its nodes, world
# and ranks per node, overlap=yes only where asked (and world > 1), oversubscribed exactly where
# world > this machine's cores, every time and throughput positive, all-reduce time positive
# when world > 1 and 0 on one rank, efficiency 1 on the 1-rank row and positive on the others.
set -euo pipefail
build=$1 src=$2
. "$(dirname "$0")/slurm_lib.sh"
slurm_env
tmp=$(mktemp -d "${TMPDIR:-/tmp}/slurm-sweep.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

plan="1:1:off 1:2:on 2:2:off 2:4:on"
t0=$SECONDS
SWEEP_PLAN=$plan STEPS=20 WARMUP=3 EMBER_BUILD=$build EMBER_SRC=$src \
  "$src/cluster/slurm/sweep.sh" --out "$tmp/sweep" --wait 240 >"$tmp/out" 2>&1 || {
  cat "$tmp/out"
  fail "sweep.sh failed (status $?)"
}
cat "$tmp/out"
echo "sweep: $((SECONDS - t0)) s from submission to the gathered CSV"
csv=$tmp/sweep/sweep.csv
[ "$(head -n 1 "$csv")" = "$("$src/cluster/scaling/bench-row.sh" --header),efficiency" ] ||
  fail "the CSV's header is not bench-row.sh's plus efficiency: $(head -n 1 "$csv")"
[ "$(tail -n +2 "$csv" | wc -l)" -eq 4 ] || fail "expected 4 rows in $csv"
tail -n +2 "$csv" | awk -F, -v plan="$plan" -v cores="$(nproc --all)" '
  BEGIN { split(plan, p, " ") }
  function bad(m) { print "row " NR ": " m; err = 1 }
  NF != 24 { bad(NF " columns, expected 24"); next }
  { split(p[NR], e, ":")  # nodes world overlap
    if ($4 != "slurm") bad("launcher " $4)
    if ($6 != e[1] || $7 != e[2] || $8 != e[2] / e[1]) bad("nodes/world/per node " $6 "/" $7 "/" $8 ", plan " p[NR])
    want = (e[3] == "on" && e[2] > 1) ? "yes" : "no"
    if ($16 != want) bad("overlap " $16 ", expected " want)
    if ($9 != ($7 * $13 > cores ? 1 : 0)) bad("oversubscribed " $9 " with world " $7 " on " cores " cores")
    if (!($3 == cores && $18 == 20)) bad("cores " $3 " or steps " $18)
    if (!($19 > 0 && $20 > 0)) bad("samples_per_s " $19 " or step_ms " $20 " not positive")
    if ($7 > 1 && !($21 > 0)) bad("comm_ms " $21 " on " $7 " ranks")
    if ($7 == 1 && $21 != 0) bad("comm_ms " $21 " on one rank")
    if (!($23 >= 0 && $23 <= 1)) bad("overlap_frac " $23)
    if ($7 == 1 && $24 != "1.000") bad("efficiency " $24 " on one rank")
    if ($7 > 1 && !($24 > 0)) bad("efficiency " $24)
  }
  END { exit err }' || fail "rows of $csv (above)"
# the gathering job's summary (cluster/scaling/summarize.py): one line per element, the 1 rank's
# efficiency 1, and the plot of throughput against ranks
sum=$tmp/sweep/summary.csv
[ -f "$sum" ] || fail "no $sum (the gathering job runs summarize.py)"
[ "$(tail -n +2 "$sum" | wc -l)" -eq 4 ] || fail "expected 4 configurations in $sum"
/usr/bin/python3 - "$sum" <<'PY' || fail "summary $sum (above)"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
one = [r for r in rows if r["world"] == "1"]
assert len(one) == 1 and abs(float(one[0]["efficiency"]) - 1) < 1e-9, one
assert all(0 < float(r["efficiency"]) for r in rows), rows
PY
[ -s "$tmp/sweep/throughput_mlp.png" ] || fail "no throughput_mlp.png next to $sum"
echo "ok: 4 sweep rows checked, summarised and plotted"
