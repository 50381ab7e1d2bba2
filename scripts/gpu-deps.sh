#!/usr/bin/env bash
# Gathers, on this Debian 12 machine, the Debian packages that Ember's build and tests need on a
# GPU machine that has none of them and no network (docs/gpu.md): the -dev packages, their
# runtime libraries, and every library those link against that is not part of a plain Linux with
# gcc. scripts/gpu-check.sh unpacks them there into a private prefix.
#
#   scripts/gpu-deps.sh [--fmnist]
#
# Writes build/gpu-debs/ (git-ignored): the .deb files, MANIFEST (package, version, bytes, why)
# and SHA256SUMS. --fmnist also copies Fashion-MNIST (Debian's dataset-fashion-mnist, 30 MB)
# to build/gpu-fmnist/ for the tests and examples that train on it.
#
# The set is closed by reading the libraries: each shared object the packages hold names its
# DT_NEEDED libraries; one that neither the set nor the assumed base provides is looked up with
# dpkg -S (this machine has the packages installed) and its package joins the set, until nothing
# is missing. The assumed base (ASSUMED below) is glibc, gcc's runtime (libstdc++, libgcc_s,
# libgomp: OpenMP comes with gcc) and the CUDA libraries.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=$ROOT/build/gpu-debs
FMNIST_DEST=$ROOT/build/gpu-fmnist
FMNIST_SRC=/usr/share/datasets/fashion-mnist
with_fmnist=0
for a in "$@"; do
  case $a in
    --fmnist) with_fmnist=1 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "gpu-deps: unknown argument '$a' (usage: scripts/gpu-deps.sh [--fmnist])" >&2; exit 2 ;;
  esac
done

# What the build finds (CMakeLists.txt, tests/CMakeLists.txt) and the libraries behind it. zlib's
# runtime comes along although every system has one: zlib1g-dev's libz.so is an absolute link to
# /lib/x86_64-linux-gnu/libz.so.1.2.13, which gpu-check.sh points at the copy in the prefix.
SEEDS=(libdnnl-dev libdnnl2 libyaml-dev libyaml-0-2 libcjson-dev libcjson1 zlib1g-dev zlib1g
       libcriterion-dev libcriterion3 libdlpack-dev)
# Sonames a GPU machine with gcc and CUDA has without any of these packages.
ASSUMED='^(libc|libm|libdl|librt|libpthread|libresolv|libutil|ld-linux-x86-64|libstdc\+\+|libgcc_s|libgomp|libcuda|libcudart|libnccl|libcudnn)\.so'

for tool in apt-get dpkg dpkg-deb readelf sha256sum; do
  command -v "$tool" >/dev/null || { echo "gpu-deps: error: '$tool' not found (Debian tools)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/ember-gpu-deps.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir -p "$work/debs" "$work/root"

declare -A want=() why=()
for p in "${SEEDS[@]}"; do want[$p]=1; why[$p]="build"; done

# Downloads every wanted package not yet fetched and unpacks it into $work/root.
fetch() {
  local p
  for p in "${!want[@]}"; do
    compgen -G "$work/debs/${p}_*.deb" >/dev/null && continue
    (cd "$work/debs" && timeout 120 apt-get -q -o APT::Sandbox::User=root download "$p" >/dev/null) ||
      { echo "gpu-deps: error: apt-get download $p failed (network? apt-get update?)" >&2; exit 1; }
    dpkg-deb -x "$work/debs/${p}"_*.deb "$work/root"
  done
}

# Prints each DT_NEEDED soname of the unpacked libraries that nothing provides: not a file in
# $work/root, not in the assumed base.
missing_sonames() {
  local f n
  while IFS= read -r f; do
    readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
  done < <(find "$work/root" -type f -name 'lib*.so*') | sort -u | while IFS= read -r n; do
    [[ $n =~ $ASSUMED ]] && continue
    [ -n "$(find "$work/root" -name "$n" -print -quit)" ] && continue
    echo "$n"
  done
}

for round in 1 2 3 4 5 6 7 8; do
  fetch
  mapfile -t need < <(missing_sonames)
  [ ${#need[@]} -eq 0 ] && break
  for so in "${need[@]}"; do
    owner=$(dpkg -S "*/$so" 2>/dev/null | head -1 | cut -d: -f1)
    if [ -z "$owner" ]; then
      echo "gpu-deps: error: no installed package provides $so (install Ember's deps here first:" \
           "scripts/install-deps.sh)" >&2
      exit 1
    fi
    want[$owner]=1
    why[$owner]="provides $so"
  done
  [ "$round" = 8 ] && { echo "gpu-deps: error: the closure did not settle in 8 rounds" >&2; exit 1; }
done

rm -rf "$DEST"
mkdir -p "$DEST"
cp "$work"/debs/*.deb "$DEST"/
{
  echo "# package version bytes why (gpu-deps.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(sed -n 's/^PRETTY_NAME="\(.*\)"/\1/p' /etc/os-release))"
  for deb in "$DEST"/*.deb; do
    p=$(dpkg-deb -f "$deb" Package)
    printf '%s %s %s %s\n' "$p" "$(dpkg-deb -f "$deb" Version)" "$(stat -c %s "$deb")" "${why[$p]}"
  done
} > "$DEST/MANIFEST"
(cd "$DEST" && sha256sum -- *.deb > SHA256SUMS)
echo "gpu-deps: $(find "$DEST" -name '*.deb' | wc -l) packages, $(du -sh "$DEST" | cut -f1) in $DEST"
head -1 "$DEST/MANIFEST"
tail -n +2 "$DEST/MANIFEST" | column -t 2>/dev/null || tail -n +2 "$DEST/MANIFEST"
echo "gpu-deps: assumed on the GPU machine: glibc, libstdc++, libgcc_s, libgomp, CUDA, NCCL, cuDNN"

if [ $with_fmnist = 1 ]; then
  if [ ! -f "$FMNIST_SRC/train-images-idx3-ubyte.gz" ]; then
    echo "gpu-deps: error: $FMNIST_SRC/train-images-idx3-ubyte.gz: not found (dataset-fashion-mnist)" >&2
    exit 1
  fi
  rm -rf "$FMNIST_DEST"
  mkdir -p "$FMNIST_DEST"
  cp "$FMNIST_SRC"/*-ubyte.gz "$FMNIST_DEST"/
  echo "gpu-deps: Fashion-MNIST, $(du -sh "$FMNIST_DEST" | cut -f1) in $FMNIST_DEST"
fi
