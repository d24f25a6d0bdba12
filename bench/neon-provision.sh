#!/usr/bin/env bash
# Neon provisioning benchmark: pgfleet vs the guide's sequential signup handler, both against
# the fake Neon API (200 ms operations, 700 requests/min and 40/s enforced), in one run.
# Usage: bench/neon-provision.sh [--tenants 300] [--concurrency 16]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p pgfleet-workers -p pgfleet-bench
exec target/release/bench-neon-provision "$@"
