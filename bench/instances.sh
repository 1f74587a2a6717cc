#!/usr/bin/env bash
# Several instances on one PostgreSQL ledger, against a portal LATENCY_MS away (so that pushing, not
# polling, bounds the run): 1, 2 and 3 instances (INSTANCES), each with CONCURRENCY calls in flight (fixed)
# and batches of BATCH, each run on a fresh database. One instance polls (the lease), all push.
# Prints dossiers stored per second for each count and its ratio to one instance.
# Usage: BIN=target/release/tthc-sync N=20000 PG=postgres://postgres@127.0.0.1:5432 bash bench/instances.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$here/../target/release/tthc-sync}
N=${N:-20000}; UNITS=${UNITS:-200}; BATCH=${BATCH:-10}; CONCURRENCY=${CONCURRENCY:-2}
LATENCY_MS=${LATENCY_MS:-80}; JITTER_MS=${JITTER_MS:-10}; INSTANCES=${INSTANCES:-"1 2 3"}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
SP=${SP:-28381}; PP=${PP:-28382}
source "$here/lib.sh"

"$BIN" simulate source --listen 127.0.0.1:$SP --dossiers "$N" --units "$UNITS" --faults none --seed 1 \
    >"$work/source.log" 2>&1 &
pids+=($!); wait_up $SP "['rowsTotal']"

run() {
  local count=$1 db="tthc_bench_instances_$1"
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null
  psql "$PG/postgres" -qc "CREATE DATABASE $db" >/dev/null
  "$BIN" simulate portal --listen 127.0.0.1:$PP --faults none --latency-ms "$LATENCY_MS" \
      --latency-jitter-ms "$JITTER_MS" >"$work/portal.log" 2>&1 &
  local portal_pid=$!; pids+=($portal_pid); wait_up $PP "['stored']"
  local daemons=() start; start=$(date +%s.%N)
  for i in $(seq 1 "$count"); do
    sed -e "s#{source_url}#http://127.0.0.1:$SP#" -e "s#{portal_url}#http://127.0.0.1:$PP#" \
        -e "s#^path = .*#url = \"$PG/$db\"\npool_size = 8#" -e "s#^instance = .*#instance = \"bench-$i\"#" \
        -e "s#^concurrency = .*#concurrency = $CONCURRENCY\nadaptive_concurrency = false\nbatch_size = $BATCH#" \
        -e "s#requests_per_second = 200#requests_per_second = 1000#" \
        "$here/../config/demo.toml" >"$work/instance-$i.toml"
    printf '\n[log]\nlevel = "warn"\n' >>"$work/instance-$i.toml"
    "$BIN" run --config "$work/instance-$i.toml" >"$work/instance-$i.out" 2>"$work/instance-$i.log" &
    daemons+=($!); pids+=($!)
  done
  local last=-1 last_change=$start stable=0 seen=-1
  while (( stable < 6 )) || [[ "$last" == 0 ]]; do
    sleep 1; local s now; s=$(stat $PP "['stored']"); now="$s $(stat $PP "['calls_total']")"
    if [[ "$now" != "$seen" ]]; then seen=$now; last=$s; last_change=$(date +%s.%N); stable=0; else stable=$((stable+1)); fi
  done
  for d in "${daemons[@]}"; do kill -TERM "$d" 2>/dev/null || true; done
  for d in "${daemons[@]}"; do wait "$d" 2>/dev/null || true; done
  kill "$portal_pid"; wait "$portal_pid" 2>/dev/null || true
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null
  python3 -c "print('%d %.1f %.0f' % ($last, $last_change - $start, $last / ($last_change - $start)))"
}

echo "portal ${LATENCY_MS} ms ± ${JITTER_MS} ms away, ${N} dossiers, batches of ${BATCH}, ${CONCURRENCY} calls in flight per instance, PostgreSQL ledger"
base=""
for count in $INSTANCES; do
  read -r stored secs rate < <(run "$count")
  [[ -z "$base" ]] && base=$rate
  echo "$count instance(s): {\"stored\": $stored, \"seconds\": $secs, \"dossiers_per_s\": $rate, \"ratio_to_one\": $(python3 -c "print(round($rate / $base, 2))")}"
done
