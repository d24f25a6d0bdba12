#!/usr/bin/env bash
# Rollout benchmark: `pgfleet migrate --all --wait` vs a sequential psql -f loop, one run.
# Usage: bench/migrate.sh [--tenants 500] [--concurrency 8] [--workers 1] [--round-trip-us 1000]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p pgfleet-workers -p pgfleet-bench
exec target/release/bench-migrate "$@"
