#!/usr/bin/env bash
# Backup benchmark: pgfleet vs `pg_dump | gzip > f; aws s3 cp` and `pg_dump | pigz | aws s3 cp -`,
# one S3-compatible server (moto on loopback), one run. Usage: bench/backup.sh [--scales 1,10]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v pigz >/dev/null || { apt-get install -y -q pigz || { apt-get update -q && apt-get install -y -q pigz; }; }
command -v aws >/dev/null && aws --version >/dev/null 2>&1 || python3 -m pip install --quiet awscli
command -v moto_server >/dev/null || python3 -m pip install --quiet "moto[server]"
cargo build --release -q -p pgfleet-workers -p pgfleet-bench
exec target/release/bench-backup "$@"
