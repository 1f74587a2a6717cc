#!/usr/bin/env bash
# Two builds of the daemon in turns, on the same data: the A/B measure of a change to the daemon's CPU.
# Each round runs `tthc-sync run` of each binary against fresh simulators (their own processes, loopback,
# no faults) until neither the portal's stored count nor its calls move, and prints the seconds to the
# last change, the daemon's user and system CPU, its peak RSS and the bytes it wrote to disk (all from
# /usr/bin/time -v). On a shared machine compare the two columns within a round, not across sessions.
#
#   BEFORE=/tmp/tthc-sync-before AFTER=target/release/tthc-sync ROUNDS=3 N=20000 bash bench/ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${BEFORE:?path to the first binary}; AFTER=${AFTER:-target/release/tthc-sync}
N=${N:-20000}; UNITS=${UNITS:-200}; ROUNDS=${ROUNDS:-3}
SP=${SP:-28381}; PP=${PP:-28382}
source bench/lib.sh

# One run of binary $1: prints "seconds user_s system_s peak_kib stored".
run() {
  local bin=$1 db="$work/ledger-$RANDOM.db"
  "$bin" simulate source --listen 127.0.0.1:$SP --dossiers "$N" --units "$UNITS" --faults none --seed 1 \
      >"$work/source.log" 2>&1 &
  local source=$!; pids+=($source); wait_up $SP "['rowsTotal']"
  "$bin" simulate portal --listen 127.0.0.1:$PP --faults none >"$work/portal.log" 2>&1 &
  local portal=$!; pids+=($portal); wait_up $PP "['stored']"
  sed -e "s#{source_url}#http://127.0.0.1:$SP#" -e "s#{portal_url}#http://127.0.0.1:$PP#" \
      -e "s#{database}#$db#" -e "s#requests_per_second = 200#requests_per_second = 100000#" \
      config/demo.toml >"$work/bench.toml"
  printf '\n[log]\nlevel = "warn"\n' >>"$work/bench.toml"
  local start last_change seen="" now stable=0 stored=0
  start=$(date +%s.%N); last_change=$start
  /usr/bin/time -v "$bin" run --config "$work/bench.toml" >"$work/daemon.out" 2>"$work/daemon.log" &
  local timer=$!; pids+=($timer)
  while (( stable < 4 )) || [[ "$stored" == 0 ]]; do
    sleep 1; now="$(stat $PP "['stored']") $(stat $PP "['calls_total']")"
    if [[ "$now" != "$seen" ]]; then seen=$now; stored=${now%% *}; last_change=$(date +%s.%N); stable=0
    else stable=$((stable + 1)); fi
  done
  kill -TERM "$(pgrep -P "$timer" | head -1)" 2>/dev/null || true; wait "$timer" 2>/dev/null || true
  kill "$source" "$portal" 2>/dev/null || true; wait "$source" "$portal" 2>/dev/null || true
  python3 - "$work/daemon.log" "$start" "$last_change" "$stored" <<'PY'
import re, sys
log = open(sys.argv[1]).read()
field = lambda name: float(re.search(name + r": ([0-9.]+)", log).group(1))
print(f"{float(sys.argv[3]) - float(sys.argv[2]):7.2f} s  user {field('User time .seconds.'):6.2f} s  "
      f"system {field('System time .seconds.'):5.2f} s  peak {int(field('Maximum resident set size .kbytes.')):,} KiB  "
      f"written {field('File system outputs') * 512 / 1e6:,.0f} MB  stored {sys.argv[4]}")
PY
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round  before: $(run "$BEFORE")"
  echo "round $round  after:  $(run "$AFTER")"
done
