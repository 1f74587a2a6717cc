#!/usr/bin/env bash
# Peak memory of `tthc-sync resync` against the period's size: it streams (a page of ids, chunks of 100
# dossiers fetched and written in turn), so its peak resident memory should not grow with the period.
#
#   bash bench/resync-memory.sh                      # 5,000 then 40,000 dossiers, debug build
#   SIZES="20000 100000" BIN=target/release/tthc-sync bash bench/resync-memory.sh
#
# Prints, per size: dossiers read again, seconds, and the command's peak resident memory (VmHWM, from
# /usr/bin/time -v). Each size starts from an empty ledger, so every dossier is fetched and written.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"5000 40000"}
UNITS=${UNITS:-50}
SOURCE_PORT=${SOURCE_PORT:-18181}
PORTAL_PORT=${PORTAL_PORT:-18182}
BIN=${BIN:-target/debug/tthc-sync}
[[ -x "$BIN" ]] || cargo build --quiet
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

stat() { curl -sf "http://127.0.0.1:$1/_sim/stats" >/dev/null 2>&1; }
today=$(TZ=Asia/Ho_Chi_Minh date +%F)
for size in $SIZES; do
  "$BIN" simulate source --listen "127.0.0.1:$SOURCE_PORT" --dossiers "$size" --units "$UNITS" --faults none --seed 1 \
    >"$work/source.log" 2>&1 &
  source_pid=$!; pids+=("$source_pid")
  "$BIN" simulate portal --listen "127.0.0.1:$PORTAL_PORT" --faults none >"$work/portal.log" 2>&1 &
  portal_pid=$!; pids+=("$portal_pid")
  for _ in $(seq 1 600); do stat "$SOURCE_PORT" && stat "$PORTAL_PORT" && break; sleep 0.2; done
  sed -e "s#{source_url}#http://127.0.0.1:$SOURCE_PORT#" -e "s#{portal_url}#http://127.0.0.1:$PORTAL_PORT#" \
      -e "s#{database}#$work/resync-$size.db#" config/demo.toml >"$work/bench.toml"
  printf '\n[log]\nlevel = "warn"\n' >>"$work/bench.toml"
  start=$(date +%s.%N)
  /usr/bin/time -v "$BIN" resync --config "$work/bench.toml" --from 2000-01-01 --to "$today" \
    >"$work/resync-$size.out" 2>"$work/resync-$size.err"
  end=$(date +%s.%N)
  kill "$source_pid" "$portal_pid"; wait "$source_pid" "$portal_pid" 2>/dev/null || true
  peak=$(grep 'Maximum resident set size' "$work/resync-$size.err" | awk '{print $NF}')
  printf '%8s dossiers: %s | %.1f s | peak RSS %d MB\n' "$size" "$(head -c 60 "$work/resync-$size.out")" \
    "$(python3 -c "print($end - $start)")" "$((peak / 1024))"
done
