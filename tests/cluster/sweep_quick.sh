#!/usr/bin/env bash
# cluster/scaling/sweep.sh --quick end to end: one node at 1, 2 and 4 ranks, buckets, compression,
# then 2 network-namespace nodes at an unshaped and a 1 Gbit/s link, each with overlap on and off;
# the summary has every configuration, the plots exist, and the scale-out model predicted each
# netns run from the measured 1-rank profile. Bad options are refused with exit status 2.
#   usage: sweep_quick.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
sweep=$src/cluster/scaling/sweep.sh
fail() { echo "FAIL: $*" >&2; exit 1; }
for bad in "--rates 7" "--layouts 2" "--parts gpu" "--rounds 0" "--models resnet"; do
  # shellcheck disable=SC2086
  if out=$("$sweep" --build "$build" $bad 2>&1); then fail "sweep.sh $bad succeeded"; fi
  rc=$("$sweep" --build "$build" $bad >/dev/null 2>&1; echo $?) || true
  [ "$rc" = 2 ] || fail "sweep.sh $bad: exit $rc, expected 2"
  grep -q -- "sweep: ${bad%% *}" <<<"$out" || fail "sweep.sh $bad: no message naming the option: $out"
done
if [ "$(id -u)" -ne 0 ] || ! ip netns list >/dev/null 2>&1; then
  echo "SKIP: the netns part needs root and iproute2 (apt-get install iproute2)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; "$src/cluster/netns/netns-cluster.sh" down >/dev/null 2>&1 || true' EXIT
"$sweep" --build "$build" --quick --out "$tmp/s" >"$tmp/out" 2>&1 || { cat "$tmp/out"; fail "sweep.sh --quick failed"; }
for f in summary.csv tables.md measured_mlp.csv profile_mlp.json model_mlp.csv throughput_mlp.png \
  efficiency_vs_link.png overlap.png bucket.png compress.png; do
  [ -s "$tmp/s/$f" ] || { cat "$tmp/out"; fail "no $f"; }
done
/usr/bin/python3 - "$tmp/s" <<'PY' || fail "summary or model output (above)"
import csv, os, sys
d = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(d, "summary.csv"))))
def find(**kw):
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]
# one node: 1 rank (efficiency 1 by definition), 2 and 4 ranks with overlap off and on
one = find(launcher="local", world="1")
assert len(one) == 1 and float(one[0]["efficiency"]) == 1.0, one
for w in ("2", "4"):
    for ov in ("yes", "no"):
        assert len(find(launcher="local", world=w, overlap=ov, setting="overlap-" +
                        ("on" if ov == "yes" else "off"))) == 1, (w, ov)
assert len(find(launcher="local", world="4", oversubscribed="1")) == 2
assert sorted(float(r["bucket_mb"]) for r in find(setting="bucket")) == [1, 4, 16]
assert sorted(r["compress"] for r in find(setting="compress")) == ["bf16", "fp16", "none"]
# netns: 2 nodes x 1 rank, unshaped and 1 Gbit/s, overlap on and off
for link in ("none", "1gbit"):
    for ov in ("yes", "no"):
        r = find(launcher="netns", nodes="2", world="2", link=link, overlap=ov)
        assert len(r) == 1, (link, ov, r)
        assert float(r[0]["samples_per_s"]) > 0 and float(r[0]["comm_ms"]) > 0, r
# the 1 Gbit/s link is slower than the unshaped one: more all-reduce time per step
slow = find(launcher="netns", link="1gbit", overlap="no")[0]
fast = find(launcher="netns", link="none", overlap="no")[0]
assert float(slow["comm_ms"]) > float(fast["comm_ms"]), (slow, fast)
model = list(csv.DictReader(open(os.path.join(d, "model_mlp.csv"))))
assert len(model) == 4 and all(float(m["predicted_ms"]) > 0 for m in model), model
print("sweep_quick: %d configurations, model error %s%%" %
      (len(rows), ", ".join("%.0f" % float(m["error_pct"]) for m in model)))
PY
echo "ok: sweep.sh --quick"
