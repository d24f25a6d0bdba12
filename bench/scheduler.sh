#!/usr/bin/env bash
# Scheduler benchmark: one tick with 10,000 tenants due at once vs a per-tenant enqueue loop.
# Usage: bench/scheduler.sh [--tenants 10000]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p pgfleet-bench
exec target/release/bench-scheduler "$@"
