#!/usr/bin/env bash
# ember-ddp-bench --profile (cluster/bench/profile.h): the JSON it writes lists every parameter of
# the MLP 784-1024-1024-10 once, with its element count, in the order backward makes them ready
# (last layer first), with per-layer times that add up to the time of the last one.
# The scale-out model (cluster/model/profiles.py) then loads it.
#   usage: bench_profile.sh EMBER_DDP_BENCH SOURCE_DIR
set -euo pipefail
bench=$1
model=$2/cluster/model
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mpi=(--mca btl_vader_single_copy_mechanism none)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
OMP_NUM_THREADS=1 timeout -k 5 120 mpirun -np 1 "${mpi[@]}" "$bench" --steps 5 --warmup 2 \
  --profile "$dir/p.json" >"$dir/out" 2>&1 || { cat "$dir/out"; exit 1; }
/usr/bin/python3 - "$dir/p.json" "$model" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
# The oracle: the layer sizes of em_mlp(784, {1024, 1024}, 2, 10), weight (out, in) and bias.
want = {"0.weight": 784 * 1024, "0.bias": 1024, "2.weight": 1024 * 1024, "2.bias": 1024,
        "4.weight": 1024 * 10, "4.bias": 10}
got = {l["name"]: l["params"][0] for l in p["layers"]}
assert all(len(l["params"]) == 1 for l in p["layers"]), p["layers"]
assert got == want, f"parameters {got} != {want}"
assert p["format"] == "ember-scale-profile" and p["version"] == 1 and p["order"] == "backward"
assert p["name"] == "mlp" and p["batch"] == 64 and p["steps"] == 5, p
names = [l["name"] for l in p["layers"]]
# backward reaches the last layer first: its weight is ready before the first layer's
assert names.index("4.weight") < names.index("2.weight") < names.index("0.weight"), names
ready = [l["ready_s"] for l in p["layers"]]
assert ready == sorted(ready) and ready[0] > 0, ready
total = sum(l["backward_s"] for l in p["layers"])
assert abs(total - ready[-1]) <= 1e-9 * max(1, ready[-1]), (total, ready[-1])
assert 0 < ready[-1] <= p["backward_s"] * 1.0001, (ready[-1], p["backward_s"])
assert p["forward_s"] > 0 and p["optimizer_s"] > 0, p
# and the scale-out model reads it (in registration order: the reverse of ready order), the MLP's 1,863,690 parameters
sys.path.insert(0, sys.argv[2])
import profiles
prof = profiles.load_profile(sys.argv[1])
assert [l.name for l in prof.layers] == names[::-1], [l.name for l in prof.layers]
assert sum(l.param_count() for l in prof.layers) == sum(want.values()) == 1863690
print(f"profile ok: {len(names)} parameters, backward {1e3 * p['backward_s']:.3f} ms")
PY
# A path that cannot be written: a clear error and a non-zero exit, nothing left behind.
if OMP_NUM_THREADS=1 timeout -k 5 120 mpirun -np 1 "${mpi[@]}" "$bench" --steps 2 --warmup 0 \
  --profile "$dir/missing/p.json" >"$dir/out" 2>&1; then
  echo "expected a failure for an unwritable --profile path"; exit 1
fi
grep -q -- "--profile: .*missing/p.json" "$dir/out" || { cat "$dir/out"; exit 1; }
echo "bench_profile: ok"
