#!/usr/bin/env bash
# The demo, again and again: `tthc-sync demo --exit-when-synced --faults realistic` N times, each in a fresh
# temporary data directory, to show that it passes every time (a race that fails one run in ten shows up).
#
#   bash bench/demo-loop.sh                  # 50 runs of the release build
#   RUNS=10 bash bench/demo-loop.sh          # fewer runs
#   BIN=target/debug/tthc-sync bash bench/demo-loop.sh   # another binary (no build)
#   VARY_SEED=1 bash bench/demo-loop.sh      # seed = run number instead of the demo's default seed
#   DEMO_ARGS="--dossiers 1000 --faults harsh" bash bench/demo-loop.sh   # more arguments to the demo
#
# Prints one line per run (pass/FAIL, seconds), then the counts, then the last lines of every failing
# run's output. Exits 1 if any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-50}
if [[ -z "${BIN:-}" ]]; then
  cargo build --release --quiet
  BIN=target/release/tthc-sync
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pass=0
fail=0
failed=()
for run in $(seq 1 "$RUNS"); do
  dir="$work/run-$run"
  mkdir -p "$dir"
  args=(demo --exit-when-synced --faults realistic --data-dir "$dir/data" --status-listen 127.0.0.1:0)
  if [[ -n "${VARY_SEED:-}" ]]; then args+=(--seed "$run"); fi
  # shellcheck disable=SC2206
  args+=(${DEMO_ARGS:-})
  started=$(date +%s)
  if "$BIN" "${args[@]}" >"$dir/output.txt" 2>&1; then
    pass=$((pass + 1))
    echo "run $run: pass ($(( $(date +%s) - started )) s)"
  else
    fail=$((fail + 1))
    failed+=("$run")
    cp "$dir/output.txt" "$work/failed-$run.txt"
    echo "run $run: FAIL ($(( $(date +%s) - started )) s)"
  fi
  rm -rf "$dir"
done

echo "demo runs: $RUNS, passed: $pass, failed: $fail"
for run in "${failed[@]}"; do
  echo "--- run $run, last lines:"
  tail -n 12 "$work/failed-$run.txt"
done
[[ $fail -eq 0 ]]
