#!/usr/bin/env bash
# merge-rows.sh: gathers the CSV files that bench-row.sh's rows went into (each: the header, then
# rows) into one CSV on stdout, with one column added at the end:
#
#   efficiency   samples_per_s / (world x samples_per_s of the 1-rank row of the same machine
#                (cpu_model, cores), launcher, model, batch, threads and link); empty when the
#                sweep has no such row. 1 is perfect (weak) scaling.
#
#   usage: merge-rows.sh FILE...        (exit 1 naming the file whose header differs, or that
#                                        holds no row)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -gt 0 ] || { echo "usage: merge-rows.sh FILE..." >&2; exit 2; }
header=$("$here/bench-row.sh" --header)
for f in "$@"; do
  [ "$(head -n 1 "$f")" = "$header" ] || { echo "merge-rows: $f: not bench-row.sh's header" >&2; exit 1; }
  [ "$(wc -l <"$f")" -ge 2 ] || { echo "merge-rows: $f: no row" >&2; exit 1; }
done
tail -q -n +2 "$@" | awk -F, -v header="$header" '
  BEGIN { n = split(header, h, ","); for (i = 1; i <= n; i++) col[h[i]] = i }
  function key(r) {
    return r[col["cpu_model"]] "," r[col["cores"]] "," r[col["launcher"]] "," r[col["model"]] "," \
           r[col["batch"]] "," r[col["threads"]] "," r[col["link"]]
  }
  { line[NR] = $0; split($0, r, ",")
    if (r[col["world"]] == 1 && !(key(r) in base)) base[key(r)] = r[col["samples_per_s"]] }
  END {
    print header ",efficiency"
    for (i = 1; i <= NR; i++) {
      split(line[i], r, ",")
      k = key(r)
      eff = (k in base && base[k] > 0) ? sprintf("%.3f", r[col["samples_per_s"]] / (r[col["world"]] * base[k])) : ""
      print line[i] "," eff
    }
  }'
