#!/usr/bin/env bash
# A network like the real one: both simulators answer after LATENCY_MS (± JITTER_MS), and the portal takes
# at most RATE calls per second, answering 429 with Retry-After beyond it. Side by side, in one run:
#   the vendor style (one dossier per call, one call at a time: how provinces push today), over VENDOR_N;
#   tthc-sync with a fixed number of calls in flight (FIXED, e.g. "1 4 16");
#   tthc-sync with adaptive concurrency (up to 16 in flight).
# For each: dossiers stored per second, portal calls per second (against RATE), and the share of calls
# answered 429. Batches are BATCH dossiers (10 by default, so that the portal's rate, not the source,
# bounds the run at this size).
# Usage: BIN=target/release/tthc-sync N=20000 bash bench/wan.sh   (from the repository)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$here/../target/release/tthc-sync}
N=${N:-20000}; UNITS=${UNITS:-200}; BATCH=${BATCH:-10}
LATENCY_MS=${LATENCY_MS:-80}; JITTER_MS=${JITTER_MS:-10}; RATE=${RATE:-50}
FIXED=${FIXED:-"1 4 16"}; VENDOR_N=${VENDOR_N:-200}; VENDOR=${VENDOR:-1}
RAW=${RAW:-$here/../../shared/bench/raw-pipe/target/release/raw-pipe}
SP=${SP:-28181}; PP=${PP:-28182}
source "$here/lib.sh"
network=(--latency-ms "$LATENCY_MS" --latency-jitter-ms "$JITTER_MS")

"$BIN" simulate source --listen 127.0.0.1:$SP --dossiers "$N" --units "$UNITS" --faults none --seed 1 \
    "${network[@]}" >"$work/source.log" 2>&1 &
pids+=($!); wait_up $SP "['rowsTotal']"
portal() {
  "$BIN" simulate portal --listen 127.0.0.1:$PP --faults none "${network[@]}" --rate-limit "$RATE" \
      >"$work/portal.log" 2>&1 &
  portal_pid=$!; pids+=($portal_pid); wait_up $PP "['stored']"
}
stop_portal() { kill "$portal_pid"; wait "$portal_pid" 2>/dev/null || true; }
calls() { stat $PP "['calls_total']"; }
rejected() { stat $PP "['rejected429']"; }

# One tthc-sync run against a fresh portal: $1 = concurrency, $2 = adaptive (true/false).
daemon() {
  portal
  sed -e "s#{source_url}#http://127.0.0.1:$SP#" -e "s#{portal_url}#http://127.0.0.1:$PP#" \
      -e "s#{database}#$work/bench-$1-$2.db#" -e "s#^concurrency = .*#concurrency = $1\nadaptive_concurrency = $2\nbatch_size = $BATCH#" \
      -e "s#requests_per_second = 200#requests_per_second = 1000#" \
      "$here/../config/demo.toml" >"$work/bench.toml"
  printf '\n[log]\nlevel = "warn"\n' >>"$work/bench.toml"
  local start last=-1 last_change stable=0
  start=$(date +%s.%N); last_change=$start
  "$BIN" run --config "$work/bench.toml" >"$work/daemon.out" 2>"$work/daemon.log" &
  local dpid=$!; pids+=($dpid)
  # Until neither the stored count nor the calls (progress entries follow their dossiers) move.
  local seen=-1
  while (( stable < 8 )) || [[ "$last" == 0 ]]; do
    sleep 1; local s now; s=$(stat $PP "['stored']"); now="$s $(calls) $(rejected)"
    if [[ "$now" != "$seen" ]]; then seen=$now; last=$s; last_change=$(date +%s.%N); stable=0; else stable=$((stable+1)); fi
  done
  kill -TERM "$dpid" 2>/dev/null || true; wait "$dpid" 2>/dev/null || true
  local c r; c=$(calls); r=$(rejected)
  stop_portal
  python3 -c "
secs = $last_change - $start
print('{\"stored\": %d, \"seconds\": %.1f, \"dossiers_per_s\": %.0f, \"calls_per_s\": %.1f, \"share_of_rate\": %.2f, \"answered_429\": %d, \"share_429\": %.4f}' % (
    $last, secs, $last / secs, $c / secs, $c / secs / $RATE, $r, $r / max($c + $r, 1)))"
}

SINCE="2000-01-01T00:00:00.000+0700"
echo "network: ${LATENCY_MS} ms ± ${JITTER_MS} ms per call, portal limit ${RATE} calls/s, ${N} dossiers, batches of ${BATCH}"
if [[ "$VENDOR" != 1 ]]; then
  :
elif [[ -x "$RAW" ]]; then
  portal
  start=$(date +%s.%N)
  timeout 900 "$RAW" http://127.0.0.1:$SP http://127.0.0.1:$PP demo demo-secret demo demo-secret DEMO \
      000.00.00.H60 "$SINCE" 1 1 "$VENDOR_N" >"$work/vendor.out" 2>&1 || true
  secs=$(python3 -c "print($(date +%s.%N) - $start)"); stored=$(stat $PP "['stored']")
  stop_portal
  echo "vendor style (1 per call, 1 at a time): $(python3 -c "print('{\"stored\": %d, \"seconds\": %.1f, \"dossiers_per_s\": %.1f}' % ($stored, $secs, $stored / $secs))")"
else
  echo "vendor style: skipped (build $RAW with cargo build --release in its folder)"
fi
for c in $FIXED; do
  echo "tthc-sync, $c in flight (fixed):     $(daemon "$c" false)"
done
echo "tthc-sync, adaptive (at most 16):    $(daemon 16 true)"
