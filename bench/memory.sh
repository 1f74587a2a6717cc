#!/usr/bin/env bash
# Where the daemon's resident memory is: one `tthc-sync run` against fresh simulators (their own processes,
# loopback, no faults), its RSS split into anonymous and file-backed pages (the binary's mapped code)
# sampled from /proc/<pid>/smaps_rollup every 0.1 s, and the largest anonymous mappings at each second
# (mimalloc's arena is the one at 0x200…; the C library's heaps under SQLite are the 64 MiB-aligned ones).
# Prints the stored count, the daemon's CPU per dossier, the peak RSS from /usr/bin/time -v, the sampled
# peak with its anonymous part, and the mappings of the sample nearest the peak.
#
#   BIN=target/release/tthc-sync N=100000 bash bench/memory.sh
#   ENVS="MIMALLOC_SHOW_STATS=1" BIN=… bash bench/memory.sh      # environment for the daemon only
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/tthc-sync}; N=${N:-100000}; UNITS=${UNITS:-200}
SP=${SP:-28481}; PP=${PP:-28482}
source bench/lib.sh

"$BIN" simulate source --listen 127.0.0.1:$SP --dossiers "$N" --units "$UNITS" --faults none --seed 1 \
    >"$work/source.log" 2>&1 &
pids+=($!); wait_up $SP "['rowsTotal']"
"$BIN" simulate portal --listen 127.0.0.1:$PP --faults none >"$work/portal.log" 2>&1 &
pids+=($!); wait_up $PP "['stored']"
sed -e "s#{source_url}#http://127.0.0.1:$SP#" -e "s#{portal_url}#http://127.0.0.1:$PP#" \
    -e "s#{database}#$work/ledger.db#" -e "s#requests_per_second = 200#requests_per_second = 100000#" \
    config/demo.toml >"$work/bench.toml"
printf '\n[log]\nlevel = "warn"\n' >>"$work/bench.toml"

# shellcheck disable=SC2086 # ENVS holds NAME=value words
env ${ENVS:-} /usr/bin/time -v "$BIN" run --config "$work/bench.toml" >"$work/daemon.out" 2>"$work/daemon.log" &
timed=$!; pids+=($timed)
daemon=""
for _ in $(seq 1 100); do
  daemon=$(pgrep -P "$timed" || true); [[ -n "$daemon" ]] && break; sleep 0.05
done
[[ -n "$daemon" ]] || { echo "the daemon did not start"; cat "$work/daemon.log"; exit 1; }

# Every 0.1 s: "seconds rss_kib anonymous_kib"; every second, the mappings into mappings.<second>.
(
  start=$(date +%s.%N); tick=0
  while [[ -e /proc/$daemon ]]; do
    now=$(date +%s.%N)
    awk -v t="$(python3 -c "print(round($now - $start, 1))")" \
        '/^Rss:/ {r = $2} /^Anonymous:/ {a = $2} END {if (r) print t, r, a}' /proc/"$daemon"/smaps_rollup 2>/dev/null || true
    tick=$((tick + 1))
    if (( tick % 10 == 0 )); then
      awk '/^[0-9a-f]+-[0-9a-f]+ / {range = $1; name = $6} /^Anonymous:/ {if ($2 > 256) print $2 " kB", range, name}' \
          /proc/"$daemon"/smaps 2>/dev/null | sort -rn | head -8 >"$work/mappings.$((tick / 10))" || true
    fi
    sleep 0.1
  done
) >"$work/samples" &

last=-1; stable=0
while (( stable < 5 )) || [[ "$last" == 0 ]]; do
  sleep 1; stored=$(stat $PP "['stored']")
  if [[ "$stored" != "$last" ]]; then last=$stored; stable=0; else stable=$((stable + 1)); fi
done
kill -TERM "$daemon" 2>/dev/null || true; wait "$timed" 2>/dev/null || true

peak=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/daemon.log")
cpu=$(awk -F: '/User time|System time/ {s += $2} END {print s}' "$work/daemon.log")
read -r at rss anon < <(sort -n -k2 "$work/samples" | tail -1)
echo "stored $last, daemon CPU $cpu s ($(python3 -c "print(round($cpu * 1e6 / max($last, 1)))") µs per dossier)"
echo "peak RSS $peak KiB (time -v); sampled peak $rss KiB at ${at} s, of which anonymous $anon KiB, file-backed $((rss - anon)) KiB"
second=$(python3 -c "print(max(1, round($at)))")
for s in "$second" $((second + 1)) $((second - 1)); do
  if [[ -s "$work/mappings.$s" ]]; then echo "largest anonymous mappings at ${s} s:"; cat "$work/mappings.$s"; break; fi
done
