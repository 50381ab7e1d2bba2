#!/usr/bin/env bash
# bad_input.sh EMBER_TRAIN DDPRUN GROUP: "bad input everywhere", table-driven. Runs the rows of
# bad_input.table (next to this script) of one group: config (kinds config, override, train),
# ddprun (ddprun, offline, job) or data (data), each against the real ember-train or ddprun.
# Every row must end within its timeout, with the table's exit status, never by a signal (a crash)
# nor with a sanitizer's report; a failing row must print exactly one error line (ddprun's usage
# hint aside), which matches the row's REGEX (naming the input), and leave nothing behind: no
# checkpoint, no metrics, no ddprun log directory (the controls, which must succeed, show that
# these would be seen). Every row runs, then the failures are listed: exit 1 if there is one.
set -uo pipefail
train=$1 ddprun=$2 group=$3
table=$(dirname "$0")/bad_input.table
case $group in
config) kinds=" config override train " ;;
ddprun) kinds=" ddprun offline job " ;;
data) kinds=" data " ;;
*) echo "bad_input.sh: unknown group '$group' (config, ddprun, data)" >&2; exit 1 ;;
esac
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-fault-input.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
LIMIT=60 # seconds per run; a bad input is refused in well under one

# Outside influences: a Slurm allocation or EMBER_* variables would change what runs.
for v in $(env | grep -oE '^(SLURM_[A-Z_]*|EMBER_[A-Z_]*)='); do unset "${v%=}"; done

# ---- fixtures -----------------------------------------------------------------------------------
bytes() { local v; for v in "$@"; do printf '%b' "\\0$(printf %03o "$v")"; done; } # one per value
be32() { bytes $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)); }
# idx FILE DIM... < ELEMENTS: an IDX file of u8 elements, gzipped like the real ones
idx() {
  local f=$1 d
  shift
  { bytes 0 0 8 $#; for d in "$@"; do be32 "$d"; done; cat; } | gzip -n >"$f"
}
# labels_data N: 0..9 repeating; images_data N H W: pixel bytes 0, 1, ..., 255, 0, 1, ...
labels_data() { local i; for ((i = 0; i < $1; i++)); do bytes $((i % 10)); done; }
bytes $(seq 0 255) >"$tmp/pixels"
for _ in 1 2 3 4 5 6 7 8; do # 65536 bytes
  cat "$tmp/pixels" "$tmp/pixels" >"$tmp/p" && mv "$tmp/p" "$tmp/pixels"
done
images_data() { head -c $(($1 * $2 * $3)) "$tmp/pixels"; }
# Fashion-MNIST's four files, small: 64 training and 32 test images
good=$tmp/fmnist
mkdir "$good"
for s in train:64 t10k:32; do
  images_data "${s#*:}" 28 28 | idx "$good/${s%:*}-images-idx3-ubyte.gz" "${s#*:}" 28 28
  labels_data "${s#*:}" | idx "$good/${s%:*}-labels-idx1-ubyte.gz" "${s#*:}"
done
# A valid 2-step job; its checkpoint and metrics directories are relative: in the row's directory
base=$tmp/base.yaml
cat >"$base" <<EOF
model: {name: mlp, hidden: [16]}
data: {dir: $good, batch: 16, eval_batch: 16, workers: 1}
train: {steps: 2, threads: 1, log_every: 1, metrics: metrics}
checkpoint: {dir: ck}
EOF
: >"$tmp/empty.yaml"
printf 'launch:\n  nproc_per_node: 0\n' >"$tmp/launch0.yaml"
printf 'nohost.invalid slots=1\n' >"$tmp/hosts.invalid"
printf 'localhost slots=1\nvm slots=two\n' >"$tmp/hosts.bad"
mkdir "$tmp/tmpdir" # TMPDIR of ddprun rows: ddprun's and mpirun's temporary directories

# ---- data changes: data_WHAT FILE ARGS, run in the copy's directory -----------------------------
raw() { gzip -dc -f "$1"; } # the uncompressed bytes (as they are, if not gzipped)
regz() { gzip -n >"$1.new" && mv "$1.new" "$1"; }
data_none() { :; }
data_gunzip() { raw "$1" >"$1.new" && mv "$1.new" "$1"; }
data_missing() { rm "$1"; }
data_directory() { rm "$1" && mkdir "$1"; }
data_empty() { : >"$1"; }
data_magic() { { bytes $((16#$2)) $((16#$3)) $((16#$4)) $((16#$5)); raw "$1" | tail -c +5; } |
  regz "$1"; }
data_text() { printf 'hello, world\n' | regz "$1"; }
data_shorten() { raw "$1" | head -c -"$2" | regz "$1"; }
data_shorten_plain() { raw "$1" | head -c -"$2" >"$1.new" && mv "$1.new" "$1"; }
data_extend() { { raw "$1"; head -c "$2" /dev/zero; } | regz "$1"; }
data_cut_gzip() { head -c $(($(stat -c %s "$1") / 2)) "$1" >"$1.new" && mv "$1.new" "$1"; }
patch_byte() { bytes "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; } # FILE AT V
# one bit of the gzip trailer's CRC-32: the data inflates, its checksum does not match
data_flip_gzip() {
  local at
  at=$(($(stat -c %s "$1") - 8))
  patch_byte "$1" "$at" $(($(od -An -tu1 -j "$at" -N1 "$1") ^ 1))
}
data_labels() { labels_data "$2" | idx "$1" "$2"; }
data_images() { images_data "$2" "$3" "$4" | idx "$1" "$2" "$3" "$4"; }
data_label() { # FILE ITEM VALUE: one label replaced
  raw "$1" >"$1.raw" && patch_byte "$1.raw" $((8 + $2)) "$3" && regz "$1" <"$1.raw" && rm "$1.raw"
}

# ---- one row ------------------------------------------------------------------------------------
esc() { sed 's/[][\.*^$()+?{}|]/\\&/g' <<<"$1"; } # a path as a literal in a regex
# subst TEXT REGEX: the placeholders replaced (REGEX=1: by regexes matching them literally)
subst() {
  local s=$1 t=$tmp b=$base tr=$train d=${data:-}
  if [ "$2" = 1 ]; then t=$(esc "$tmp") b=$(esc "$base") tr=$(esc "$train") d=$(esc "${data:-}"); fi
  s=${s//@BASE@/$b}
  s=${s//@TRAIN@/$tr}
  s=${s//@DATA@/$d}
  printf '%s' "${s//@TMP@/$t}"
}
rows=0 skipped=0 failed=()
row_fail() {
  failed+=("$kind/$name: $*")
  echo "FAIL $kind/$name: $*"
  sed 's/^/    | /' "$out" | head -20
}

# The command of a row (in cmd), after making its data; false if that failed.
row_command() {
  local words=() i
  read -ra words <<<"$(subst "$input" 0)"
  for i in "${!words[@]}"; do [ "${words[i]}" = @EMPTY@ ] && words[i]=; done
  case $kind in
  config) printf '%b' "$input" >"$run/job.yaml" && cmd=("$train" job.yaml) ;;
  override) cmd=("$train" "$base" "${words[@]}") ;;
  train) cmd=("$train" "${words[@]}") ;;
  ddprun | job) cmd=("$ddprun" "${words[@]}") ;;
  offline) # without a network where allowed: no lookup leaves this machine
    cmd=("$ddprun" "${words[@]}")
    if unshare -n true 2>/dev/null; then cmd=(unshare -n "${cmd[@]}"); fi ;;
  data)
    data=$tmp/data
    cp -r "$good" "$data" && (cd "$data" && "data_${words[0]}" "${words[@]:1}") &&
      cmd=("$train" "$base" data.dir="$data") ;;
  esac
}

run_row() {
  local status=0 run=$tmp/run cmd=() tmpdir=${TMPDIR:-/tmp} re lines left logs keep=job.yaml
  out=$tmp/out data=
  rm -rf "$run" "$tmp/tmpdir"/* "$tmp/data"
  mkdir "$run"
  : >"$out"
  if [ "$kind" = job ] && ! command -v mpirun >/dev/null; then
    echo "skip $kind/$name: no mpirun"
    skipped=$((skipped + 1))
    return
  fi
  rows=$((rows + 1))
  row_command || { row_fail "making its input failed"; return; }
  [[ $kind == ddprun || $kind == offline || $kind == job ]] && tmpdir=$tmp/tmpdir
  (cd "$run" && TMPDIR=$tmpdir timeout -k 5 "$LIMIT" "${cmd[@]}") >"$out" 2>&1 || status=$?
  re=$(subst "$regex" 1)
  # a hang, a crash, a sanitizer's report
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    row_fail "no answer in $LIMIT s"
    return
  fi
  [ "$status" -le 128 ] || { row_fail "killed by signal $((status - 128))"; return; }
  # (A job's rank that crashed ends ddprun with 128 + its signal, seen above. Open MPI's own
  # "Segmentation fault" report there may be mpirun's: Open MPI 4.1's mpirun can crash in
  # PMIx_Finalize when ddprun's fallback SIGTERMs it, 2 s after a rank failed, while it is still
  # aborting the job, as in the sanitizer build, where the rank's agent is slow to exit.)
  local crash='Sanitizer|runtime error:|Segmentation fault|core dumped'
  [ "$kind" = job ] && crash='Sanitizer|runtime error:'
  if grep -Eq "$crash" "$out"; then
    row_fail "a sanitizer's report or a crash"
    return
  fi
  [ "$status" -eq "$want" ] || { row_fail "exit status $status, expected $want"; return; }
  if [ "$want" -ne 0 ] && [ "$kind" != job ]; then
    # one error line: everything but ddprun's usage hint
    lines=$(grep -cv '^usage: ddprun ' "$out")
    [ "$lines" -eq 1 ] || { row_fail "$lines lines of output, expected one error line"; return; }
    grep -v '^usage: ddprun ' "$out" | grep -Eq -- "$re" ||
      { row_fail "the error lacks /$re/"; return; }
  else # a job's rank: its line among ddprun's and mpirun's
    grep -Eq -- "$re" "$out" || { row_fail "the output lacks /$re/"; return; }
  fi
  # Nothing left behind by a failure (a runtime error may leave checkpoint.dir, created and
  # test-written at start, empty: docs/ember-train.md); a control's files show they would be seen.
  [ "$want" -eq 1 ] && keep=ck
  left=$(cd "$run" && find . -mindepth 1 ! -name job.yaml ! -path "./$keep" | sort | tr '\n' ' ')
  if [ "$want" -eq 0 ]; then
    if [ ! -f "$run/ck/latest" ] || [ ! -f "$run/metrics/metrics.csv" ]; then
      row_fail "the control left no checkpoint or metrics: $left"
      return
    fi
  elif [ -n "$left" ]; then
    row_fail "left behind: $left"
    return
  fi
  # ddprun's temporary log directory: removed at the end, unless a rank failed (then kept)
  logs=$(find "$tmp/tmpdir" -maxdepth 1 -name 'ddprun.*' -printf '%f ')
  if [ -n "$logs" ] && ! { [ "$kind" = job ] && [ "$want" -ne 0 ]; }; then
    row_fail "ddprun left $logs"
    return
  fi
  echo "ok   $kind/$name (exit $status): $(grep -Em1 -- "$re" "$out")"
}

trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; printf '%s' "${s%"${s##*[![:space:]]}"}"; }
while IFS='|' read -r kind name want regex input; do
  kind=$(trim "$kind")
  case $kind in '' | '#'*) continue ;; esac
  [[ $kinds == *" $kind "* ]] || continue
  name=$(trim "$name") want=$(trim "$want") regex=$(trim "$regex")
  input=${input# } # a body may end in blanks: only the separator's one is dropped
  run_row
done <"$table"

skips=""
[ "$skipped" -eq 0 ] || skips=" ($skipped skipped)"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAIL: ${#failed[@]} of $rows rows ($group)$skips:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
[ "$rows" -gt 0 ] || { echo "FAIL: no rows ran ($group)"; exit 1; }
echo "PASS: $rows rows ($group)$skips: each bad input refused with its exit status and one error" \
  "line naming it; the controls succeeded"
