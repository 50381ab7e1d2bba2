#!/usr/bin/env bash
# Installs every Debian package that Ember's build, tests, benchmarks and `make run` need.
# Idempotent: packages already present are skipped, and nothing is asked on standard input.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libdnnl-dev
  libopenmpi-dev openmpi-bin
  libyaml-dev zlib1g-dev libcjson-dev libdlpack-dev
  libcriterion-dev
  clang libclang-rt-14-dev
  python3 python3-torch python3-torchvision python3-numpy python3-pytest libopenblas0-pthread
  dataset-fashion-mnist
  gnuplot-nox
  slurm-wlm munge iproute2
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: missing packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=sudo
  else
    echo "install-deps: error: installing packages needs root (run as root or with passwordless sudo):" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-deps: apt-get update"
$SUDO apt-get update -q </dev/null
echo "install-deps: apt-get install -y --no-install-recommends ${missing[*]}"
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
echo "install-deps: done"
