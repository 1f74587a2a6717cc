#!/usr/bin/env bash
# The simulators at scale: the source simulator with N dossiers (1,000,000 by default), its start-up time
# and resident memory once up, after a client paged through the whole feed, and the portal simulator's
# after storing all of it (the raw pipe of ../shared/bench/raw-pipe moves it, batches of 100).
#
#   bash bench/sim-scale.sh                  # 1,000,000 dossiers, 200 units, faults none, seed 1
#   N=100000 bash bench/sim-scale.sh
#   RAW=/path/to/raw-pipe bash bench/sim-scale.sh
#   PORTAL_ARGS=--record-payloads N=100000 bash bench/sim-scale.sh   # the portal keeping every payload
#
# Peaks come from /usr/bin/time -v (Maximum resident set size) and /proc/<pid>/status (VmHWM, VmRSS).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}; UNITS=${UNITS:-200}
SP=${SP:-28391}; PP=${PP:-28392}
RAW=${RAW:-../shared/bench/raw-pipe/target/release/raw-pipe}
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet
BIN=target/release/tthc-sync
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

stat() { curl -sf "http://127.0.0.1:$1/_sim/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)$2)"; }
memory() { awk '/VmHWM|VmRSS/ {printf "%s %.0f MB  ", $1, $2/1024}' "/proc/$1/status"; }
child() { pgrep -P "$1" | head -1; }

for port in $SP $PP; do
  if curl -s -o /dev/null "http://127.0.0.1:$port/"; then echo "port $port is taken: set SP= and PP= to free ones"; exit 1; fi
done

start=$(date +%s.%N)
/usr/bin/time -v "$BIN" simulate source --listen 127.0.0.1:$SP --dossiers "$N" --units "$UNITS" --faults none --seed 1 \
  >"$work/source.log" 2>"$work/source.time" &
pids+=($!); source_time=$!
until stat $SP "['rowsTotal']" >/dev/null 2>&1; do sleep 0.1; done
up=$(python3 -c "print(round($(date +%s.%N) - $start, 2))")
source_pid=$(child "$source_time")
echo "source: $N dossiers up in ${up} s; $(memory "$source_pid")"

# A client that pages through the whole feed, 500 rows a page (no faults: plain offset paging is exact).
walk_start=$(date +%s.%N)
python3 - "$SP" <<'EOF'
import json, sys, urllib.parse, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": "demo", "client_secret": "demo-secret"}).encode()
token = json.load(urllib.request.urlopen(base + "/oauth/token", form))["access_token"]
seen, page = 0, 0
while True:
    query = urllib.parse.urlencode({"updated-from": "2000-01-01T00:00:00.000+0700", "sort": "updatedDate,asc", "page": page, "size": 500})
    request = urllib.request.Request(f"{base}/pa/dossier/search?{query}", headers={"Authorization": "Bearer " + token})
    body = json.load(urllib.request.urlopen(request))
    seen += len(body["content"])
    if body["last"] or not body["content"]:
        break
    page += 1
print(f"walked {seen} rows in {page + 1} pages")
EOF
walk=$(python3 -c "print(round($(date +%s.%N) - $walk_start, 1))")
echo "source: after the walk (${walk} s); $(memory "$source_pid")"

if [ -x "$RAW" ]; then
  /usr/bin/time -v "$BIN" simulate portal --listen 127.0.0.1:$PP --faults none ${PORTAL_ARGS:-} >"$work/portal.log" 2>"$work/portal.time" &
  pids+=($!); portal_time=$!
  until stat $PP "['stored']" >/dev/null 2>&1; do sleep 0.1; done
  portal_pid=$(child "$portal_time")
  echo "raw pipe: $("$RAW" http://127.0.0.1:$SP http://127.0.0.1:$PP demo demo-secret demo demo-secret DEMO 000.00.00.H60 \
    2000-01-01T00:00:00.000+0700 4 100)"
  echo "portal: $(stat $PP "['stored']") stored; $(memory "$portal_pid")"
  echo "source: after the raw pipe too; $(memory "$source_pid")"
  kill "$portal_pid"; wait "$portal_time" 2>/dev/null || true
  echo "portal peak: $(awk -F: '/Maximum resident/ {printf "%.0f MB", $2/1024}' "$work/portal.time")"
else
  echo "no raw pipe at $RAW: build it (cd ../shared/bench/raw-pipe && cargo build --release) for the portal's figures"
fi
kill "$source_pid"; wait "$source_time" 2>/dev/null || true
echo "source peak: $(awk -F: '/Maximum resident/ {printf "%.0f MB", $2/1024}' "$work/source.time")"
grep -o 'seconds=[0-9.]*' "$work/source.log" | head -1 | sed 's/^/source plan: /' || true
