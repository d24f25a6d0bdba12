#!/usr/bin/env bash
# The job runtime's own cost: N no-op jobs through the real broker and catalog on one
# worker (`pgfleet worker --noop-jobs`), beside the broker alone (issue #17), one run.
# Usage: bench/noop-jobs.sh [--jobs 20000] [--concurrency 8]
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
profile="${PGFLEET_BENCH_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release -q -p pgfleet-workers -p pgfleet-bench
else
  cargo build -q -p pgfleet-workers -p pgfleet-bench
fi
exec "$target_dir/$profile/bench-noop-jobs" "$@"
