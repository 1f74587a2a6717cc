# The bench scripts' shared set-up, sourced after `set -euo pipefail`: a scratch directory `$work`, removed
# on exit together with every process whose pid was added to `pids`, and the simulators' statistics.

work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# stat PORT KEY: one value of a simulator's /_sim/stats, e.g. `stat 28182 "['stored']"`.
stat() { curl -sf "http://127.0.0.1:$1/_sim/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)$2)"; }

# wait_up PORT KEY: waits (up to 3 minutes) until the simulator on PORT answers with KEY in its stats.
wait_up() { for _ in $(seq 1 900); do stat "$1" "$2" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "simulator on $1 did not start"; exit 1; }
