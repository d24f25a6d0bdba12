#!/usr/bin/env bash
# Provisioning benchmark: pgfleet vs a sequential createdb + psql loop, in one run.
# Usage: bench/provision.sh [--tenants 200] [--concurrency 8]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p pgfleet-workers -p pgfleet-bench
exec target/release/bench-provision "$@"
