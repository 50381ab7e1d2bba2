#!/usr/bin/env bash
# soak.sh EMBER_TRAIN DDPRUN SOURCE_DIR: save, kill, restart, for SOAK_SECONDS (default 600).
# `make soak`; not part of ctest (docs/reliability.md, "Soak").
#
# Rounds, until SOAK_SECONDS have passed (a round started then runs to its end: the whole is
# bounded by SOAK_SECONDS plus one round's limit, 300 s). A round is one job of 2 ranks under
# ddprun --max-restarts SOAK_KILLS (default 4), the fault tests' small model, 20,000 steps and a
# checkpoint every 100 (3 kept). While it runs, the script picks a random rank, waits for it to
# start (in the next attempt), sleeps a random 0-4 s and SIGKILLs it, whatever it is doing
# (starting, resuming, stepping, all-reducing, saving, ending); and again, SOAK_KILLS times.
# ddprun restarts the job each time and it resumes from its last complete checkpoint. After each
# round:
#   - ddprun exited 0: every kill was recovered from within the restarts
#   - every checkpoint left loads (checksums) and holds only finite values; no temporary file
#   - the final parameters and optimizer state are byte-identical to an uninterrupted run's
#   - no process of the job is left running
# Each kill ends one attempt, so the restarts must equal the kills. SOAK_SEED (default: the time)
# seeds the schedule of kills (their timing still varies).
# Exit 0 and a summary line (rounds, kills, restarts, the steps resumed from) when all hold; on a
# failure the scratch directory (logs, checkpoints) is kept and named.
set -euo pipefail
train=$(readlink -f "$1") ddprun=$(readlink -f "$2") src=$(cd "$3" && pwd) # make soak: relative
soak_seconds=${SOAK_SECONDS:-600}
kills_per_round=${SOAK_KILLS:-4}
seed=${SOAK_SEED:-$(date +%s)}
RANDOM=$seed
command -v mpirun >/dev/null || { echo "soak: mpirun is not installed (openmpi-bin)" >&2; exit 1; }
# checkpoint.py needs NumPy: Debian's python3 has it (pyenv's may not)
[ -n "${EMBER_PYTHON3:-}" ] || { [ -x /usr/bin/python3 ] && export EMBER_PYTHON3=/usr/bin/python3; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-soak.XXXXXX")
steps=20000 every=100 job_limit=300
. "$(dirname "$0")/common.sh"
. "$(dirname "$0")/ranks.sh"
done_ok=0
trap 'kill_ours; if [ $done_ok = 1 ]; then rm -rf "$tmp"; else echo "soak: kept $tmp" >&2; fi' EXIT

echo "soak: ${soak_seconds} s, ${kills_per_round} kills per round, seed $seed, scratch $tmp"
job_run ref 0
expect_status 0 "the uninterrupted run"
final=ckpt-$(printf %08d "$steps").safetensors
start=$SECONDS
rounds=0 kills=0 restarts=0 resumes=()
while [ $((SECONDS - start)) -lt "$soak_seconds" ]; do
  rounds=$((rounds + 1))
  name=round$rounds
  job_start "$name" "$kills_per_round"
  round_kills=() last_attempt=-1
  while [ "${#round_kills[@]}" -lt "$kills_per_round" ] && kill -0 "$job_pid" 2>/dev/null; do
    # the victim: a random rank of the next attempt, once it has started (one kill per attempt:
    # the other rank of an attempt already failing is left to ddprun)
    rank=$((RANDOM % 2))
    pid=$(find_rank "$rank") || { sleep 0.05; continue; }
    attempt=$(proc_lines "$pid" environ | sed -n 's/^EMBER_RESTART_COUNT=//p')
    [ -n "$attempt" ] && [ "$attempt" -gt "$last_attempt" ] || { sleep 0.05; continue; }
    r=$((RANDOM % 4000))
    sleep "$((r / 1000)).$(printf %03d $((r % 1000)))" # 0-4 s into it: any moment
    kill -KILL "$pid" 2>/dev/null || continue # it ended (the job's end)
    last_attempt=$attempt
    latest=$(cat "$tmp/$name.ck/latest" 2>/dev/null || echo none)
    round_kills+=("r$rank@${latest//[^0-9]/}")
  done
  job_wait
  cp "$job_out" "$tmp/out"
  expect_status 0 "round $rounds (kills: ${round_kills[*]:-none})"
  n=$(grep -c '^ddprun: restart [0-9]* of' "$job_out" || true)
  [ "$n" -eq "${#round_kills[@]}" ] ||
    fail "round $rounds: $n restarts for ${#round_kills[@]} kills (${round_kills[*]:-})"
  steps_from=$(grep -ho '^resumed from .* at step [0-9]*' "$tmp/$name.logs"/rank-0.attempt-*.log |
    sed 's/.* at step //' | tr '\n' ' ')
  left=$(cd "$tmp/$name.ck" && ls -A | grep -F .tmp. || true)
  [ -z "$left" ] || fail "round $rounds: temporary files left: $left"
  checkpoints_ok "$tmp/$name.ck"/ckpt-*.safetensors >/dev/null
  same_params "$tmp/ref.ck/$final" "$tmp/$name.ck/$final" >/dev/null
  no_orphans "round $rounds"
  echo "round $rounds ($((SECONDS - start)) s): ${#round_kills[@]} kills (rank@latest:" \
    "${round_kills[*]:-}), $n restarts, resumed at steps: ${steps_from:-none}; final identical"
  kills=$((kills + ${#round_kills[@]}))
  restarts=$((restarts + n))
  resumes+=($steps_from)
  rm -rf "$tmp/$name.ck" "$tmp/$name.logs" "$tmp/$name.out"
done
done_ok=1
echo "PASS soak: $((SECONDS - start)) s, $rounds rounds, $kills kills, $restarts restarts," \
  "${#resumes[@]} resumes from a checkpoint (an attempt killed before it resumed, or before the" \
  "first save, has none); every round's final parameters byte-identical to the uninterrupted run's"
