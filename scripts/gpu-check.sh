#!/usr/bin/env bash
# The GPU check (docs/gpu.md): on a machine with an NVIDIA GPU, nvcc, CMake, gcc and a Python with
# PyTorch and NVIDIA's cuDNN and NCCL wheels, but no Debian packages and no network, it records
# the machine, checks PyTorch on the GPU, builds Ember's CUDA configuration without MPI against
# Debian packages carried in build/gpu-debs/ (scripts/gpu-deps.sh makes them) and runs the whole
# test suite, then the GPU tests verbosely, then the GPU training benchmark: the MLP, the small CNN
# and ResNet-20 on Fashion-MNIST (build/gpu-fmnist) for a fixed number of steps, Ember
# (ember-train-bench --device cuda) against PyTorch on the same GPU (cluster/bench/train_peer.py
# --device cuda), printed as a table and BENCH lines. Everything is bounded: one run ends within
# --budget seconds (default 450, so that the whole check fits in 8 minutes) whatever hangs.
#
#   scripts/gpu-check.sh [--jobs N] [--ctest-jobs N] [--budget S] [--work DIR] [--python PY]
#                        [--site DIR] [--unpack auto|dpkg|ar|python] [--rt-all] [--no-gpu]
#
# Logs go to $OUT (default build/gpu-out): facts.log, torch.log, unpack.log, configure.log,
# cmake-found.txt, build.log, ctest.log, gpu-tests.log, LastTest.log.gz, bench.log and summary.txt,
# which is also printed last.
# --work holds the unpacked packages (deps/), the wheel links (nccl/, cudnn/), the runtime library
# links (rt/) and the build (build/); default /tmp/ember-gpu. --site is a site-packages directory
# holding nvidia/ (default: the chosen Python's). The packages' libraries that the system also has
# are left out of rt/ (the system's copy serves), unless --rt-all. --no-gpu skips PyTorch's GPU
# check and the benchmark, for a dry run on a machine without a GPU. Exit status 0 only when every
# test passed (the benchmark reports, it does not judge).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/build/gpu-out}
DEBS=$ROOT/build/gpu-debs
FMNIST=$ROOT/build/gpu-fmnist
JOBS=$(nproc)
CTEST_JOBS=8
BUDGET=450
WORK=/tmp/ember-gpu
PY=
SITE=
UNPACK=auto
RT_ALL=0
NO_GPU=0
TEST_TIMEOUT=120 # ctest's per-test limit

usage() { sed -n '12,13p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --jobs) JOBS=${2:?}; shift ;;
    --ctest-jobs) CTEST_JOBS=${2:?}; shift ;;
    --budget) BUDGET=${2:?}; shift ;;
    --work) WORK=${2:?}; shift ;;
    --python) PY=${2:?}; shift ;;
    --site) SITE=${2:?}; shift ;;
    --unpack) UNPACK=${2:?}; shift ;;
    --rt-all) RT_ALL=1 ;;
    --no-gpu) NO_GPU=1 ;;
    -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1'" >&2; usage ;;
  esac
  shift
done
for n in "$JOBS" "$CTEST_JOBS" "$BUDGET"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "gpu-check: '$n' is not a positive integer" >&2; usage; }
done
case $UNPACK in auto | dpkg | ar | python) ;; *) echo "gpu-check: bad --unpack '$UNPACK'" >&2; usage ;; esac

PREFIX=$WORK/deps
BUILD=$WORK/build
mkdir -p "$OUT" "$WORK"
DEADLINE=$(($(date +%s) + BUDGET)) # wall clock: bounded steps run in child shells
declare -A STATUS=()
summary_lines=()
say() { printf '%s\n' "$*"; }
note() { summary_lines+=("$*"); }

# Seconds a step may take: its own cap, cut to what is left of the budget (0: none left).
allow() {
  local cap=$1 left=$((DEADLINE - $(date +%s)))
  [ "$left" -lt "$cap" ] && cap=$left
  [ "$cap" -lt 5 ] && cap=0
  echo "$cap"
}

# capped CAP COMMAND...: COMMAND under its own timeout, CAP cut to what is left of the budget;
# not run (exit 124) when nothing is left: "timeout 0" would mean no limit at all, and a program
# under its own timeout is out of the reach of the step's (a process group of its own).
capped() {
  local cap
  cap=$(allow "$1")
  shift
  if [ "$cap" = 0 ]; then
    echo "not run, the budget of ${BUDGET}s is spent: $*"
    return 124
  fi
  timeout -k 5 "$cap" "$@"
}

# The variables the steps' functions read; bounded() hands them, and every function, to the
# child shell that timeout runs (timeout runs programs, not shell functions).
STATE_VARS=(ROOT OUT DEBS PREFIX WORK BUILD UNPACK RT_ALL PY SITES CMAKE CTEST NVCC GEN ARCH_LIBS
            GPU_PROGS GPU_REGEX TEST_TIMEOUT DEADLINE BUDGET BENCH_BATCH BENCH_RUN_CAP)
# bounded CAP COMMAND...: COMMAND (a function or a program) under timeout, which stops the child's
# whole process group when CAP seconds have passed.
bounded() {
  local cap=$1
  shift
  timeout -k 5 "$cap" bash -c "$(declare -f; declare -p "${STATE_VARS[@]}" 2>/dev/null); \"\$@\"" \
    bounded "$@"
}

# step NAME CAP LOG COMMAND...: runs COMMAND bounded into LOG; STATUS[NAME] says how it went.
step() {
  local name=$1 cap t rc log=$3
  cap=$(allow "$2")
  shift 3
  if [ "$cap" = 0 ]; then
    STATUS[$name]="skipped (budget spent)"
    say "== $name: skipped, the budget of ${BUDGET}s is spent"
    return 124
  fi
  say "== $name (up to ${cap}s) -> ${log#"$OUT"/}"
  t=$SECONDS
  bounded "$cap" "$@" >>"$log" 2>&1
  rc=$?
  if [ $rc = 0 ]; then
    STATUS[$name]="ok ($((SECONDS - t))s)"
  elif [ $rc = 124 ] || [ $rc = 137 ]; then
    STATUS[$name]="TIMED OUT after ${cap}s"
  else
    STATUS[$name]="FAILED (exit $rc, $((SECONDS - t))s)"
  fi
  say "   $name: ${STATUS[$name]}"
  return $rc
}

# ---- tools and the Python with PyTorch ------------------------------------------------------------
# cmake and ctest are resolved before the Python's directory joins PATH (a venv may hold its own).
CMAKE=$(command -v cmake || true)
CTEST=$(command -v ctest || true)
NVCC=$(command -v nvcc || true)
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
if [ -z "$PY" ]; then
  for p in /opt/torch/.venv/bin/python3 /usr/bin/python3 "$(command -v python3 || true)"; do
    [ -n "$p" ] && [ -x "$p" ] && { PY=$p; break; }
  done
fi
# Tests and scripts that run "python3" from PATH get this one: a wrapper, not a link, so that a
# venv's interpreter still finds its pyvenv.cfg.
mkdir -p "$WORK/pybin"
if [ -n "$PY" ]; then
  printf '#!/bin/sh\nexec %q "$@"\n' "$PY" >"$WORK/pybin/python3"
  chmod +x "$WORK/pybin/python3"
fi

# ---- 1. facts ----------------------------------------------------------------------------------------
FACTS_END=$((SECONDS + 60))
fact() {
  local t=$((FACTS_END - SECONDS))
  [ $t -gt 20 ] && t=20
  echo "### $1"
  if [ $t -lt 2 ]; then echo "(skipped: the facts' minute is spent)"; return; fi
  timeout -k 2 "$t" bash -c "$2" 2>&1 | head -n 60
  echo
}
say "== facts -> facts.log"
{
  fact "date, host" "date -u; uname -a; nproc; free -g | head -2; df -h /tmp . | tail -n +1"
  fact "os-release" "cat /etc/os-release"
  fact "nvidia-smi" "nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv"
  fact "nvcc ($NVCC)" "ls -d /usr/local/cuda* 2>&1; '${NVCC:-nvcc}' --version"
  fact "cmake, ninja, gcc, glibc" "'${CMAKE:-cmake}' --version | head -1; ninja --version; gcc --version | head -1; g++ --version | head -1; ldd --version | head -1"
  fact "python ($PY)" "'$PY' --version; '$PY' -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version(), \"nccl\", torch.cuda.nccl.version() if torch.cuda.is_available() else None)'; '$PY' -c 'import numpy; print(\"numpy\", numpy.__version__)'"
  fact "site-packages of $PY" "'$PY' -c 'import site, sysconfig; print(*dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()[\"purelib\"]]), sep=\"\n\")'"
  fact "NVIDIA wheels: include and lib dirs" "for s in \$('$PY' -c 'import site, sysconfig; print(*dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()[\"purelib\"]]))'); do find \$s/nvidia -maxdepth 3 -type d \\( -name include -o -name lib \\) 2>/dev/null; ls -l \$s/nvidia/nccl/lib \$s/nvidia/cudnn/lib 2>/dev/null; done"
  fact "ldconfig -p (Ember's libraries)" "ldconfig -p | grep -E 'dnnl|yaml|cjson|criterion|libz\\.|OpenCL|git2|nanomsg|libssl|libcrypto|krb5|gomp|nccl|cudnn'"
  fact "unpack tools" "for t in dpkg dpkg-deb ar tar xz zstd sha256sum; do printf '%s: %s\n' \$t \"\$(command -v \$t || echo absent)\"; done"
  fact "environment" "env | grep -E '^(PATH|LD_LIBRARY_PATH|CUDA[A-Z_]*|NCCL[A-Z_]*|CUDNN[A-Z_]*|NVIDIA[A-Z_]*)=' | sort"
} >"$OUT/facts.log" 2>&1
GPU_NAME=$(grep -A1 '^name, driver_version' "$OUT/facts.log" | tail -1)
say "   GPU: ${GPU_NAME:-none listed by nvidia-smi}"

# ---- 4. PyTorch on the GPU (first: it says whether the GPU works at all) ------------------------------
if [ $NO_GPU = 0 ]; then
  step torch 60 "$OUT/torch.log" "$PY" - <<'EOF'
import time
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
dev = torch.device("cuda")
print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
torch.backends.cuda.matmul.allow_tf32 = False  # f32 for the comparison below
g = torch.Generator(device="cpu").manual_seed(0)
a = torch.randn(4096, 4096, generator=g)
b = torch.randn(4096, 4096, generator=g)
ad, bd = a.to(dev), b.to(dev)
c = ad @ bd
torch.cuda.synchronize()
ref = a[:64].double() @ b.double()
err = ((c[:64].cpu().double() - ref).abs().max() / ref.abs().max()).item()
t = time.perf_counter()
for _ in range(10):
    c = ad @ bd
torch.cuda.synchronize()
dt = (time.perf_counter() - t) / 10
print(f"matmul 4096^3 f32: max rel err vs CPU f64 {err:.2e}, {2 * 4096**3 / dt / 1e12:.1f} TFLOP/s")
assert err < 1e-4, "GPU matmul differs from the CPU"
print("TORCH_OK", torch.cuda.get_device_name(0))
EOF
  grep -E '^(device|matmul|TORCH_OK)' "$OUT/torch.log" | sed 's/^/   /'
  note "torch:     ${STATUS[torch]}: $(grep -E '^matmul' "$OUT/torch.log" || tail -1 "$OUT/torch.log")"
fi

# ---- 2. the Debian packages, unpacked into a private prefix -------------------------------------------
# One .deb into $PREFIX: dpkg-deb, else ar + tar, else Python (ar is a simple format, tarfile
# reads xz).
unpack_one() {
  local deb=$1 how=$2 d
  case $how in
    dpkg) dpkg-deb -x "$deb" "$PREFIX" ;;
    ar)
      d=$(mktemp -d "$WORK/ar.XXXXXX")
      (cd "$d" && ar x "$deb") && tar -xf "$d"/data.tar.* -C "$PREFIX"
      local rc=$?
      rm -rf "$d"
      return $rc
      ;;
    python)
      "$PY" - "$deb" "$PREFIX" <<'EOF'
import io, sys, tarfile
deb, dest = sys.argv[1], sys.argv[2]
data = open(deb, "rb").read()
if data[:8] != b"!<arch>\n":
    sys.exit(f"{deb}: not an ar archive")
pos = 8
while pos + 60 <= len(data):
    name = data[pos:pos + 16].decode().strip().rstrip("/")
    size = int(data[pos + 48:pos + 58])
    body = data[pos + 60:pos + 60 + size]
    pos += 60 + size + (size & 1)
    if name.startswith("data.tar"):
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as t:
            # "tar", not "data": the packages hold absolute symbolic links (libz.so).
            kw = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
            t.extractall(dest, **kw)
        sys.exit(0)
sys.exit(f"{deb}: no data.tar member")
EOF
      ;;
  esac
}

unpack() {
  local how=$UNPACK deb n l t
  if [ "$how" = auto ]; then
    if command -v dpkg-deb >/dev/null; then how="dpkg"
    elif command -v ar >/dev/null && command -v tar >/dev/null; then how="ar"
    else how="python"; fi
  fi
  echo "unpacking $(find "$DEBS" -name '*.deb' | wc -l) packages with $how into $PREFIX"
  (cd "$DEBS" && sha256sum -c --quiet SHA256SUMS) || { echo "build/gpu-debs: checksums differ"; return 1; }
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX"
  for deb in "$DEBS"/*.deb; do
    if ! unpack_one "$deb" "$how"; then
      [ "$how" = python ] && { echo "$deb: cannot unpack"; return 1; }
      echo "$deb: $how failed, trying Python"
      unpack_one "$deb" python || { echo "$deb: cannot unpack"; return 1; }
    fi
  done
  # Absolute links (zlib1g-dev's libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) point into the
  # prefix where their target is there.
  while IFS= read -r l; do
    t=$(readlink "$l")
    if [ -e "$PREFIX$t" ]; then ln -sfn "$PREFIX$t" "$l"; echo "link $l -> $PREFIX$t"; fi
  done < <(find "$PREFIX" -type l -lname '/*')
  # The run-time directory: a link per soname this system lacks. One it has keeps its own copy
  # (same soname, same ABI), so that nothing else run by the tests, PyTorch included, loads
  # Debian's copy in place of the system's (--rt-all: link them all).
  rm -rf "$WORK/rt"
  mkdir -p "$WORK/rt"
  local system=""
  [ "$RT_ALL" = 1 ] || system=$(ldconfig -p 2>/dev/null | awk 'NR > 1 { print $1 }' | sort -u)
  for l in "$PREFIX"/usr/lib/x86_64-linux-gnu/lib*.so.* "$PREFIX"/lib/x86_64-linux-gnu/lib*.so.*; do
    if [ -L "$l" ] || [ ! -f "$l" ]; then continue; fi
    n=$(readelf -d "$l" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
    [ -n "$n" ] || n=${l##*/}
    if grep -qxF "$n" <<<"$system"; then
      echo "the system has $n: using its copy at run time"
    else
      ln -sfn "$l" "$WORK/rt/$n"
    fi
  done
  echo "run-time links in $WORK/rt: $(find "$WORK/rt" -mindepth 1 -printf '%f ')"
}

if [ -f "$DEBS/SHA256SUMS" ]; then
  step unpack 60 "$OUT/unpack.log" unpack
else
  STATUS[unpack]="MISSING: no build/gpu-debs (run scripts/gpu-deps.sh where Debian's archive is reachable)"
  say "== unpack: ${STATUS[unpack]}"
fi

# ---- NCCL and cuDNN from the wheels -------------------------------------------------------------------
# CMake's find_library wants libnccl.so / libcudnn.so; the wheels may hold only libnccl.so.2 and
# libcudnn.so.9. $WORK/nccl and $WORK/cudnn are roots with include/ and lib/ made of links.
SITES=()
if [ -n "$SITE" ]; then
  SITES=("$SITE")
elif [ -n "$PY" ]; then
  mapfile -t SITES < <(timeout 20 "$PY" -c 'import site, sysconfig
print(*dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"]]), sep="\n")' 2>/dev/null)
fi
# wheel_root NAME HEADER LIBGLOB: links $WORK/NAME/{include,lib}; prints the wheel's lib dir.
wheel_root() {
  local name=$1 h="" so="" s
  for s in "${SITES[@]}"; do
    [ -d "$s/nvidia" ] || continue
    [ -z "$h" ] && h=$(find "$s/nvidia" -maxdepth 4 -name "$2" | sort | head -1)
    [ -z "$so" ] && so=$(find "$s/nvidia" -maxdepth 4 -name "$3" \( -type f -o -type l \) | sort | head -1)
  done
  [ -n "$h" ] && [ -n "$so" ] || return 1
  rm -rf "${WORK:?}/$name"
  mkdir -p "$WORK/$name/lib"
  ln -sfn "$(dirname "$h")" "$WORK/$name/include"
  ln -sfn "$so" "$WORK/$name/lib/lib$name.so"
  dirname "$so"
}
NCCL_LIBDIR=$(wheel_root nccl nccl.h 'libnccl.so*') && NCCL_OPT=ON || NCCL_OPT=AUTO
CUDNN_LIBDIR=$(wheel_root cudnn cudnn.h 'libcudnn.so*') && CUDNN_OPT=ON || CUDNN_OPT=AUTO
CUDA_OPT=AUTO
[ -n "$NVCC" ] && CUDA_OPT=ON
say "== wheels: NCCL ${NCCL_LIBDIR:-not found} ; cuDNN ${CUDNN_LIBDIR:-not found} ; nvcc ${NVCC:-not found}"

# ---- configure and build --------------------------------------------------------------------------
ARCH_LIBS="$PREFIX/usr/lib/x86_64-linux-gnu:$PREFIX/lib/x86_64-linux-gnu"
export PATH="$WORK/pybin:$PATH"
export LD_LIBRARY_PATH="$WORK/rt${NCCL_LIBDIR:+:$NCCL_LIBDIR}${CUDNN_LIBDIR:+:$CUDNN_LIBDIR}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -f "$FMNIST/train-images-idx3-ubyte.gz" ] && export EMBER_FMNIST_DIR=$FMNIST
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)

configure() {
  local cuda=$1 nccl=$2 cudnn=$3 args
  [ -f "$BUILD/CMakeCache.txt" ] && rm -f "$BUILD/CMakeCache.txt"
  args=(-S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release
        -DEMBER_MPI=OFF -DEMBER_CUDA="$cuda" -DEMBER_NCCL="$nccl" -DEMBER_CUDNN="$cudnn"
        -DCMAKE_PREFIX_PATH="$PREFIX/usr" -DCMAKE_INCLUDE_PATH="$PREFIX/usr/include"
        -DCMAKE_LIBRARY_PATH="${ARCH_LIBS//:/;}" -DZLIB_ROOT="$PREFIX/usr"
        "-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,$ARCH_LIBS"
        "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath-link,$ARCH_LIBS")
  [ -n "$PY" ] && args+=(-DEMBER_PYTHON3="$PY")
  [ "$nccl" = ON ] && args+=(-DNCCL_ROOT="$WORK/nccl")
  [ "$cudnn" = ON ] && args+=(-DCUDNN_ROOT="$WORK/cudnn")
  if [ -n "$NVCC" ]; then
    local cuda_root cudart
    cuda_root=$(dirname "$(dirname "$(readlink -f "$NVCC")")")
    args+=(-DCUDAToolkit_ROOT="$cuda_root")
    # A toolkit from wheels may hold only libcudart.so.13, which find_library does not take.
    if ! compgen -G "$cuda_root/lib*/libcudart.so" >/dev/null; then
      cudart=$(find "$cuda_root"/lib* -maxdepth 1 -name 'libcudart.so.*' 2>/dev/null | sort | head -1)
      [ -n "$cudart" ] && args+=(-DCUDA_CUDART="$cudart")
    fi
  fi
  echo "cmake ${args[*]}"
  "$CMAKE" "${args[@]}"
}

CONFIG="EMBER_CUDA=$CUDA_OPT NCCL=$NCCL_OPT CUDNN=$CUDNN_OPT"
if [ -z "$CMAKE" ]; then
  STATUS[configure]="FAILED (no cmake)"
elif ! step configure 120 "$OUT/configure.log" configure "$CUDA_OPT" "$NCCL_OPT" "$CUDNN_OPT"; then
  # One more try with everything optional, so that at least the CPU build and its tests report.
  CONFIG="AUTO (retry after: ${STATUS[configure]})"
  echo "---- retry with EMBER_CUDA/NCCL/CUDNN=AUTO" >>"$OUT/configure.log"
  step configure 120 "$OUT/configure.log" configure AUTO AUTO AUTO
fi
FOUND=$(grep -h '^-- Ember: MPI=' "$OUT/configure.log" 2>/dev/null | tail -1 | sed 's/^-- Ember: //')
if [ -f "$BUILD/CMakeCache.txt" ]; then
  grep -E '^(DNNL|YAML|CJSON|ZLIB|CRITERION|NCCL|CUDNN)_(LIBRARY|INCLUDE_DIR)[A-Z_]*:|^EMBER_(PYTHON3|MODEL_PYTHON3):|^CUDAToolkit_(BIN_DIR|LIBRARY_DIR):|^CMAKE_(C_COMPILER|GENERATOR):' \
    "$BUILD/CMakeCache.txt" | sort >"$OUT/cmake-found.txt"
  sed 's/^/   /' "$OUT/cmake-found.txt"
fi

if [[ ${STATUS[configure]:-} == ok* ]]; then
  step build 240 "$OUT/build.log" "$CMAKE" --build "$BUILD" -j"$JOBS"
  WARNINGS=$(grep -c 'warning:' "$OUT/build.log")
  # What the test programs load, and from where: a "not found" here explains a failing suite.
  for b in "$BUILD/tests/test_coll_nccl" "$BUILD/tests/test_dl_loader"; do
    [ -x "$b" ] && { echo "### ldd $b"; ldd "$b"; } >>"$OUT/build.log" 2>&1
  done
  grep -q '^### ldd' "$OUT/build.log" &&
    NOT_FOUND=$(sed -n '/^### ldd/,$p' "$OUT/build.log" | grep -c 'not found')
fi

# ---- 3. the whole suite, then the GPU tests verbosely -----------------------------------------------
# Test programs whose source touches CUDA or NCCL, and the world-of-1 bootstrap tests.
mapfile -t GPU_PROGS < <(cd "$ROOT/tests" && grep -liE 'cuda|nccl' test_*.c | sed 's/\.c$//')
GPU_REGEX="^($(IFS='|'; echo "${GPU_PROGS[*]}")|coll_bootstrap_.*)\$"

gpu_tests() {
  local p rc ctest_rc
  echo "## ctest -R '$GPU_REGEX'"
  (cd "$BUILD" && "$CTEST" -R "$GPU_REGEX" -j1 --timeout "$TEST_TIMEOUT" --output-on-failure)
  ctest_rc=$?
  # Each program's own timeout starts a process group of its own, out of the step's reach: it is
  # cut to what is left of the budget (capped).
  for p in "${GPU_PROGS[@]}"; do
    [ -x "$BUILD/tests/$p" ] || continue
    echo "## $p --verbose"
    capped "$TEST_TIMEOUT" "$BUILD/tests/$p" --jobs 1 --verbose
    rc=$?
    echo "## $p: exit $rc"
  done
  # ddp_init on the GPU: EMBER_DEVICE=cuda makes an NCCL communicator for a world of 1.
  echo "## probe: EMBER_DEVICE=cuda test_coll_bootstrap --single"
  EMBER_DEVICE=cuda capped 60 "$BUILD/tests/mpi/test_coll_bootstrap" --single
  echo "## probe: exit $?"
  return $ctest_rc # the step is ok only when the GPU tests passed
}

if [[ ${STATUS[build]:-} == ok* ]]; then
  step ctest 180 "$OUT/ctest.log" bash -c "cd '$BUILD' && '$CTEST' -j$CTEST_JOBS --timeout $TEST_TIMEOUT --output-on-failure"
  [ -f "$BUILD/Testing/Temporary/LastTest.log" ] && gzip -c "$BUILD/Testing/Temporary/LastTest.log" >"$OUT/LastTest.log.gz"
  step gpu-tests 120 "$OUT/gpu-tests.log" gpu_tests
fi

# ---- 5. the GPU training benchmark: Ember against PyTorch on the same GPU ------------------------------
# Same model, data (Fashion-MNIST's training set, one fixed permutation), batch, optimizer (SGD
# momentum 0.9) and step count for both; each gathers its batch on the CPU and copies it to cuda:0,
# and reads the clock after the device finished (DESIGN.md's BENCH lines come from the programs).
# Steps per model are few enough that the six runs fit the step's cap on an H200 with room for
# PyTorch's start-up (a few seconds per run); each run has its own cap.
BENCH_BATCH=128
BENCH_RUN_CAP=25
gpu_bench() {
  local bin="$BUILD/cluster/bench/ember-train-bench" peer="$ROOT/cluster/bench/train_peer.py"
  local model steps e p
  if [ -z "${EMBER_FMNIST_DIR:-}" ]; then
    echo "no build/gpu-fmnist: no data for the benchmark"
    return 1
  fi
  declare -A nsteps=([mlp]=200 [cnn]=100 [resnet]=50)
  for model in mlp cnn resnet; do
    steps=${nsteps[$model]}
    echo "## ember $model"
    capped "$BENCH_RUN_CAP" "$bin" --model $model --device cuda --steps "$steps" \
      --warmup 10 --batch "$BENCH_BATCH" --threads 1
    echo "## ember $model: exit $?"
    echo "## pytorch $model"
    capped "$BENCH_RUN_CAP" "$PY" "$peer" --model $model --device cuda \
      --steps "$steps" --warmup 10 --batch "$BENCH_BATCH" --threads 1 --data "$EMBER_FMNIST_DIR"
    echo "## pytorch $model: exit $?"
  done
  echo
  echo "## table: GPU step time, batch $BENCH_BATCH (ratio = Ember / PyTorch; below 1: Ember faster)"
  printf '%-8s %14s %16s %8s\n' model "ember step ms" "pytorch step ms" ratio
  for model in mlp cnn resnet; do
    e=$(sed -n "s/^BENCH suite=train case=$model impl=ember .*step_ms=\([0-9.]*\).*/\1/p" "$OUT/bench.log" | tail -1)
    p=$(sed -n "s/^BENCH suite=train case=$model impl=pytorch .*step_ms=\([0-9.]*\).*/\1/p" "$OUT/bench.log" | tail -1)
    printf '%-8s %14s %16s %8s\n' $model "${e:-failed}" "${p:-failed}" \
      "$(awk -v e="$e" -v p="$p" 'BEGIN { if (e > 0 && p > 0) printf "%.2f", e / p; else print "-" }')"
  done
}

if [ $NO_GPU = 1 ]; then
  STATUS[bench]="skipped (--no-gpu)"
elif [[ ${STATUS[build]:-} == ok* ]]; then
  step bench 130 "$OUT/bench.log" gpu_bench
fi

# ---- summary ------------------------------------------------------------------------------------------
{
  echo "==== gpu-check summary: $(hostname), ${GPU_NAME:-no GPU listed}, $((SECONDS))s of ${BUDGET}s"
  echo "unpack:    ${STATUS[unpack]:-not run}"
  echo "configure: ${STATUS[configure]:-not run}; asked $CONFIG; got ${FOUND:-nothing}"
  echo "build:     ${STATUS[build]:-not run}${WARNINGS:+, $WARNINGS warnings}${NOT_FOUND:+, $NOT_FOUND libraries not found by ldd}"
  if [ -s "$OUT/ctest.log" ]; then
    echo "ctest:     ${STATUS[ctest]}: $(grep -E 'tests passed' "$OUT/ctest.log" | tail -1)"
    sed -n '/The following tests FAILED/,/^Errors/p' "$OUT/ctest.log" | grep -E '^\s+[0-9]+ - ' |
      sed 's/^\s*/  failed: /'
    # Skipped tests (exit 77: the Python suites where pytest, NumPy or PyTorch is missing) pass
    # ctest; name them so that nobody takes them for run.
    sed -n '/The following tests did not run/,/^$/p' "$OUT/ctest.log" | grep -E '^\s+[0-9]+ - ' |
      sed 's/^\s*/  not run: /'
  fi
  if [ -s "$OUT/gpu-tests.log" ]; then
    echo "gpu tests: ${STATUS[gpu-tests]}: $(grep -E 'tests passed' "$OUT/gpu-tests.log" | head -1)"
    awk '/^## .* --verbose$/ { p = $2 } /Synthesis:/ { sub(/.*Synthesis: /, ""); print "  " p ": " $0 }' \
      "$OUT/gpu-tests.log"
    grep -E '^\[SKIP\]' "$OUT/gpu-tests.log" | sed 's/^\[SKIP\] [^:]*::[^:]*: //' | sort | uniq -c |
      sed 's/^ */  skipped: /'
    echo "  probe EMBER_DEVICE=cuda ddp_init: $(grep -E '^## probe: exit' "$OUT/gpu-tests.log" | sed 's/## probe: //');" \
      "$(sed -n '/^## probe: EMBER/,/^## probe: exit/p' "$OUT/gpu-tests.log" | sed -n '2p')"
  fi
  echo "bench:     ${STATUS[bench]:-not run}"
  if [ -s "$OUT/bench.log" ]; then
    sed -n '/^## table/,$p' "$OUT/bench.log" | sed 's/^## //; s/^/  /'
    grep -E '^BENCH ' "$OUT/bench.log"
  fi
  [ -n "${EMBER_FMNIST_DIR:-}" ] || echo "data:      no build/gpu-fmnist: tests that read Fashion-MNIST fail"
  for l in "${summary_lines[@]}"; do echo "$l"; done
} | tee "$OUT/summary.txt"

[[ ${STATUS[ctest]:-} == ok* && ${STATUS[gpu-tests]:-} == ok* ]] && [[ $NO_GPU = 1 || ${STATUS[torch]:-} == ok* ]]
