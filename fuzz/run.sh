#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 60) each, from the seed corpus made by
# seeds.py plus what earlier runs kept in fuzz/corpus/, and prints the executions per target.
# A crash or a failed property stops with the target's output and the reproducer's path.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-60}"
targets=(authorization decide confirmation xfcc certificate_header certificate_shapes config route exempt)

python3 seeds.py seeds >/dev/null
cargo +nightly fuzz build
mkdir -p logs
summary=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  log="logs/$target.log"
  max_len=4096
  case "$target" in certificate_header|xfcc) max_len=16384 ;; esac
  if ! cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "FAILED: fuzz target $target (log: fuzz/$log, reproducer under fuzz/artifacts/$target/)"
    exit 1
  fi
  runs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 | awk '{print $2}')
  summary+=("$(printf '%-20s %10s executions in %s s' "$target" "${runs:-?}" "$seconds")")
done
printf '%s\n' "${summary[@]}"
