#!/usr/bin/env bash
# End-to-end benchmark: generated dossiers through both simulators, each in its own process (their own
# memory is measured by bench/sim-scale.sh), into `tthc-sync run`.
#
#   bash bench/e2e.sh                 # 20,000 then 100,000 dossiers, 200 units
#   SIZES="100000" bash bench/e2e.sh  # one size
#
# Prints, per size: dossiers stored on the portal, seconds from the daemon's start to the last one stored,
# dossiers/s, and the daemon's peak resident memory (from /usr/bin/time -v). The ratio of peak memory
# between the two sizes shows whether the daemon's memory grows with the backlog.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"20000 100000"}
UNITS=${UNITS:-200}
FAULTS=${FAULTS:-none}
SOURCE_PORT=${SOURCE_PORT:-18081}
PORTAL_PORT=${PORTAL_PORT:-18082}

cargo build --release --quiet
BIN=target/release/tthc-sync
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

stat() { curl -sf "http://127.0.0.1:$1/_sim/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)$2)"; }

declare -A peak
for size in $SIZES; do
  "$BIN" simulate source --listen "127.0.0.1:$SOURCE_PORT" --dossiers "$size" --units "$UNITS" --faults "$FAULTS" --seed 1 \
    >"$work/source.log" 2>&1 &
  source_pid=$!; pids+=("$source_pid")
  "$BIN" simulate portal --listen "127.0.0.1:$PORTAL_PORT" --faults "$FAULTS" >"$work/portal.log" 2>&1 &
  portal_pid=$!; pids+=("$portal_pid")
  for _ in $(seq 1 600); do
    stat "$SOURCE_PORT" "['rowsTotal']" >/dev/null 2>&1 && stat "$PORTAL_PORT" "['stored']" >/dev/null 2>&1 && break
    sleep 0.2
  done

  sed -e "s#{source_url}#http://127.0.0.1:$SOURCE_PORT#" -e "s#{portal_url}#http://127.0.0.1:$PORTAL_PORT#" \
      -e "s#{database}#$work/bench-$size.db#" -e "s#requests_per_second = 200#requests_per_second = 1000#" \
      config/demo.toml >"$work/bench.toml"
  printf '\n[log]\nlevel = "warn"\n' >>"$work/bench.toml"

  start=$(date +%s.%N)
  /usr/bin/time -v "$BIN" run --config "$work/bench.toml" 2>"$work/daemon-$size.log" &
  daemon_pid=$!; pids+=("$daemon_pid")

  last=-1; last_change=$start; stable=0
  while (( stable < 5 )); do
    sleep 1
    stored=$(stat "$PORTAL_PORT" "['stored']")
    if [[ "$stored" != "$last" ]]; then last=$stored; last_change=$(date +%s.%N); stable=0; else stable=$((stable + 1)); fi
  done
  pkill -TERM -P "$daemon_pid" || true; wait "$daemon_pid" || true
  kill "$source_pid" "$portal_pid"; wait "$source_pid" "$portal_pid" 2>/dev/null || true

  seconds=$(python3 -c "print(round($last_change - $start, 2))")
  rate=$(python3 -c "print(round($last / ($last_change - $start)))")
  rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/daemon-$size.log")
  peak[$size]=$rss
  printf 'dossiers=%s stored_on_portal=%s seconds=%s dossiers_per_second=%s daemon_peak_rss_kib=%s\n' \
    "$size" "$last" "$seconds" "$rate" "$rss"
done

set -- $SIZES
if (( $# >= 2 )); then
  python3 -c "print('peak memory ratio ${!#}/$1 dossiers: %.2f' % (${peak[${!#}]} / ${peak[$1]}))"
fi
