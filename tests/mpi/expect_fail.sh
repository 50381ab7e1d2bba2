#!/usr/bin/env bash
# expect_fail.sh: runs a command that must fail, and checks what it said and how fast it failed.
#   usage: expect_fail.sh [-t MAX_S] [-e ERE]... [-x ERE]... -- command [args...]
# Passes when the command exits non-zero within MAX_S seconds (0: no limit), and its output
# (stdout and stderr together) matches every -e pattern and none of the -x patterns (grep -E).
# One line on success; on failure, what was wrong and the whole output.
set -uo pipefail
max=0 musts=() nots=()
usage() { echo "usage: $0 [-t MAX_S] [-e ERE]... [-x ERE]... -- command [args...]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
  -t) max=$2; shift 2 ;;
  -e) musts+=("$2"); shift 2 ;;
  -x) nots+=("$2"); shift 2 ;;
  --) shift; break ;;
  *) usage ;;
  esac
done
[ $# -gt 0 ] || usage
out=$(mktemp)
trap 'rm -f "$out"' EXIT
t0=$(date +%s%N)
"$@" >"$out" 2>&1
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
problems=()
[ "$rc" -eq 0 ] && problems+=("the command exited 0; a failure was expected")
[ "$max" != 0 ] && [ "$ms" -gt $((max * 1000)) ] && problems+=("it took ${ms} ms, limit ${max} s")
for p in "${musts[@]}"; do
  grep -Eq -- "$p" "$out" || problems+=("no output line matches /$p/")
done
for p in "${nots[@]}"; do grep -Eq -- "$p" "$out" && problems+=("an output line matches /$p/"); done
if [ ${#problems[@]} -gt 0 ]; then
  printf 'expect_fail: FAILED: %s\n' "${problems[@]}"
  echo "expect_fail: exit status $rc after ${ms} ms; output of: $*"
  cat "$out"
  exit 1
fi
names=()
for a in "$@"; do names+=("${a##*/}"); done
echo "expect_fail: ok: ${names[*]}: failed as expected (exit status $rc, ${ms} ms)"
