#!/usr/bin/env bash
# Signup latency during a backup window: S signups on an idle worker against the same
# signups while B backups of a ~70 MB tenant run on it, one run.
# Usage: bench/signups.sh [--signups 40] [--backups 50]
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q -p pgfleet-workers -p pgfleet-bench
exec "$target_dir/release/bench-signups" "$@"
