#!/usr/bin/env bash
# Signup latency, published → active: N signups at R/s on one worker without a pool, then
# the same with a warm pool filled first (issue #17), one run.
# Usage: bench/warm-signups.sh [--signups 500] [--rate 10] [--pool N]
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
profile="${PGFLEET_BENCH_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release -q -p pgfleet-workers -p pgfleet-bench
else
  cargo build -q -p pgfleet-workers -p pgfleet-bench
fi
exec "$target_dir/$profile/bench-warm-signups" "$@"
