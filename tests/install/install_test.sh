#!/usr/bin/env bash
# install_test.sh: Ember installed into a temporary prefix, and used from outside the tree.
#   usage: install_test.sh BUILD_DIR SOURCE_DIR [CFLAGS]
# CFLAGS: flags every out-of-tree program needs too (the sanitizer flags of an Asan build).
# CC: the C compiler (default cc); the CMake project picks it up too.
# Installs BUILD_DIR with cmake --install, then builds tests/install/consumer/main.c four ways and
# runs each binary:
#   pkgconfig         cc main.c $(pkg-config --cflags --libs ember)      libember.so.0
#   pkgconfig-static  the archive, with pkg-config --static's dependencies
#   cmake             find_package(Ember), Ember::ember                  libember.so.0
#   cmake-static      find_package(Ember), Ember::ember_static           libember.a
# Each must print "consumer ok" with the hand-computed matmul and a loss that went down, the same
# losses every way; the shared ones must need libember.so.0, the static ones must not. Then the
# installed ddprun must find the installed ember-train (a --dry-run of a job file without a
# program). Writes only under a mktemp -d directory, removed at exit.
set -uo pipefail
build=$1 src=$2 cflags=${3:-}
T=$(mktemp -d "${TMPDIR:-/tmp}/ember-install.XXXXXX")
trap 'rm -rf "$T"' EXIT
out=$T/out
fail() {
  echo "FAIL: $*"
  [ -f "$out" ] && { echo "---- output:"; tail -n 40 "$out"; }
  exit 1
}
# step WHAT CMD...: runs CMD with its output in $out; a non-zero status fails the test.
step() {
  local what=$1
  shift
  "$@" >"$out" 2>&1 || fail "$what (exit status $?)"
}

# ---- install ------------------------------------------------------------------------------------
P=$T/prefix
unset DESTDIR
step "cmake --install" cmake --install "$build" --prefix "$P"
libdir=$(dirname "$(find "$P" -name libember.so.0 -print -quit)")
[ -d "$libdir" ] || fail "no libember.so.0 under $P"
for f in "$libdir/libember.a" "$libdir/pkgconfig/ember.pc" "$libdir/cmake/Ember/EmberConfig.cmake" \
  "$P/include/ember/ember.h" "$P/bin/ddprun" "$P/bin/ember-train"; do
  [ -e "$f" ] || fail "not installed: $f"
done
# The soname chain: libember.so -> libember.so.0 -> libember.so.0.1, whose soname is libember.so.0.
[ "$(readlink "$libdir/libember.so")" = libember.so.0 ] || fail "libember.so does not link to .so.0"
soname=$(readelf -d "$libdir/libember.so.0" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libember.so.0 ] || fail "soname '$soname', expected libember.so.0"
# Private headers stay in the tree.
for h in coll_internal.h mpi_types.h mpi_wait.h dl_paths.h internal.h; do
  [ ! -e "$P/include/ember/$h" ] || fail "private header installed: $h"
done

# Each installed header compiles on its own, with only the installed directory to include from.
read -ra CF <<<"$cflags"
cc=${CC:-cc}
for h in "$P"/include/ember/*.h; do
  echo "#include <${h##*/}>" >"$T/one.c"
  step "${h##*/} on its own" "$cc" -std=c11 -Wall -Wextra -Werror -fsyntax-only \
    -I "$P/include/ember" "$T/one.c"
done

# ---- the consumer, four ways ------------------------------------------------------------------
consumer=$src/tests/install/consumer
export PKG_CONFIG_PATH=$libdir/pkgconfig
step "pkg-config ember" pkg-config --cflags --libs ember
read -ra PC_SHARED <<<"$(pkg-config --cflags --libs ember)"
read -ra PC_CFLAGS <<<"$(pkg-config --cflags ember)"
read -ra PC_STATIC <<<"$(pkg-config --static --libs ember)"
step "cc (pkg-config)" "$cc" -std=c11 -Wall -Wextra -Werror "${CF[@]}" "$consumer/main.c" \
  -o "$T/consumer_pkgconfig" "${PC_SHARED[@]}" -Wl,-rpath,"$libdir"
# The archive by its path; --as-needed drops libember.so, which pkg-config's -lember also names.
step "cc (pkg-config --static)" "$cc" -std=c11 -Wall -Wextra -Werror "${CF[@]}" "$consumer/main.c" \
  -o "$T/consumer_pkgconfig_static" "${PC_CFLAGS[@]}" "$libdir/libember.a" -Wl,--as-needed \
  "${PC_STATIC[@]}"
step "cmake configure (find_package)" cmake -S "$consumer" -B "$T/cmake" \
  -DCMAKE_PREFIX_PATH="$P" -DCMAKE_C_FLAGS="$cflags"
step "cmake build" cmake --build "$T/cmake" -j2
cp "$T/cmake/consumer_cmake" "$T/consumer_cmake"
cp "$T/cmake/consumer_cmake_static" "$T/consumer_cmake_static"

needs_libember() { readelf -d "$1" | grep -q 'NEEDED.*\[libember\.so\.0\]'; }
first=""
for way in pkgconfig pkgconfig-static cmake cmake-static; do
  bin=$T/consumer_${way/-/_}
  step "run $way" "$bin" "$way"
  line=$(grep '^consumer ok ' "$out") || fail "$way: no 'consumer ok' line"
  echo "$line"
  case $line in
    *" way=$way world=1 matmul=58,64,139,154 "*) ;;
    *) fail "$way: unexpected line: $line" ;;
  esac
  losses=${line#* matmul=58,64,139,154 }
  awk -v l="$losses" 'BEGIN {
    split(l, w, /[ =]/); exit !(w[1] == "loss0" && w[3] == "loss20" && w[4] < w[2] - 0.1)
  }' || fail "$way: the loss did not go down by 0.1 in 20 steps: $losses"
  [ -z "$first" ] && first=$losses
  [ "$losses" = "$first" ] || fail "$way: losses '$losses' differ from the first way's '$first'"
  case $way in
    *-static) ! needs_libember "$bin" || fail "$way: needs libember.so.0" ;;
    *) needs_libember "$bin" || fail "$way: does not need libember.so.0" ;;
  esac
done

# ---- the installed tools ----------------------------------------------------------------------
printf 'launch:\n  nproc_per_node: 1\n' >"$T/job.yaml"
step "installed ddprun --dry-run" "$P/bin/ddprun" --dry-run --config "$T/job.yaml"
grep -qF -- "-- $P/bin/ember-train $T/job.yaml" "$out" ||
  fail "the installed ddprun does not run the installed ember-train"
step "installed ember-train --help" "$P/bin/ember-train" --help
grep -q '^usage: ember-train CONFIG.yaml' "$out" || fail "ember-train --help: no usage line"
# ---- the installed Python package ---------------------------------------------------------------
# It finds the installed libember.so.0 by its own path (no EMBER_LIBRARY). Not in sanitizer builds:
# an instrumented library loads into python3 only behind a preloaded ASan runtime.
py=${PYTHON:-python3}
if [ -n "$cflags" ]; then
  echo "python: skipped in a sanitizer build"
elif ! command -v "$py" >/dev/null; then
  echo "python: skipped, no $py"
else
  step "installed python package" env -u EMBER_LIBRARY PYTHONPATH="$libdir/python3/dist-packages" \
    "$py" -c 'import ember, ember._lib as L; t = ember.full((3,), 2.5); print("py", t.tolist(), L.lib._name)'
  grep -qxF "py [2.5, 2.5, 2.5] $libdir/libember.so.0" "$out" ||
    fail "the installed package did not load the installed library: $(cat "$out")"
  echo "python: $(cat "$out")"
fi
echo "install ok: $P (libdir ${libdir#"$P"/})"
