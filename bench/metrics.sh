#!/usr/bin/env bash
# /metrics scrape latency over a catalog holding millions of job rows: this version (counters
# maintained by triggers) beside a baseline version that counted by scanning `jobs` (the
# commit before #12 by default), both measured in this run over identical data.
#
# Usage: bench/metrics.sh [--jobs 5000000] [--scrapes 50]
#   BASELINE_REV   git revision of the baseline (default 57bd9d5, before #12)
#   BASELINE_BIN   use this baseline `pgfleet` binary instead of building BASELINE_REV
#   PGFLEET_BENCH_ADMIN_URL  server that holds the two scratch catalogs (default local Postgres)
#   CARGO_TARGET_DIR         where the release builds go (default ./target)
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=5000000
scrapes=50
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs="$2"; shift 2 ;;
    --scrapes) scrapes="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
admin="${PGFLEET_BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432}"
bindir="$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)"
psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1)

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q -p pgfleet-workers
current="$target_dir/release/pgfleet"
baseline="${BASELINE_BIN:-}"
if [ -z "$baseline" ]; then
  rev="${BASELINE_REV:-57bd9d5}"
  src="$PWD/target/bench-baseline-src"
  if [ ! -d "$src" ]; then git worktree add --detach "$src" "$rev" >/dev/null; fi
  git -C "$src" checkout -q --detach "$rev"
  cargo build --release -q -p pgfleet-workers --manifest-path "$src/Cargo.toml" --target-dir "$target_dir/bench-baseline"
  baseline="$target_dir/bench-baseline/release/pgfleet"
fi

base_db=pgfleet_bench_metrics_baseline
cur_db=pgfleet_bench_metrics_current
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null || true
  for db in "$base_db" "$cur_db"; do "${psql[@]}" "$admin/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; done
}
trap cleanup EXIT
cleanup

export PGFLEET_NAMESPACE=benchmetrics PGFLEET_SERVER_URL="$admin/postgres" PGFLEET_API_TOKEN=bench-metrics-token-0123456789
export PGFLEET_SECRET_KEY="$("$current" secret-key)"

echo "== $jobs job rows, migrated by the baseline"
PGFLEET_CATALOG_URL="$admin/$base_db" "$baseline" tenant list >/dev/null
"${psql[@]}" "$admin/$base_db" <<SQL
INSERT INTO jobs (id, idempotency_key, kind, tenant, status, attempts, max_attempts, created_at, started_at, finished_at)
SELECT gen_random_uuid(), 'bench-' || g,
       (ARRAY['provision','backup','prune','restore','delete','migrate'])[1 + g % 6],
       'tenant-' || (g % 5000),
       CASE WHEN g % 1000 = 0 THEN 'failed' WHEN g % 5000 = 1 THEN 'queued' ELSE 'succeeded' END,
       1, 5, t, t, CASE WHEN g % 5000 = 1 THEN NULL ELSE t + (g % 7000) * interval '1 ms' END
  FROM generate_series(1, $jobs) g, LATERAL (SELECT now() - (g % 2592000) * interval '1 s' AS t) x;
ANALYZE jobs;
SQL
"${psql[@]}" "$admin/postgres" -c "CREATE DATABASE $cur_db TEMPLATE $base_db"
echo "== the same rows, migrated by this version (counters backfilled)"
PGFLEET_CATALOG_URL="$admin/$cur_db" "$current" tenant list >/dev/null

# Starts `serve` on a free port, scrapes /metrics, prints p50/p99/max in ms.
measure() {
  local label="$1" bin="$2" db="$3" log port
  log="$(mktemp)"
  PGFLEET_CATALOG_URL="$admin/$db" "$bin" serve --listen 127.0.0.1:0 2>"$log" &
  server_pid=$!
  for _ in $(seq 1 300); do grep -q "listening on http://" "$log" && break; sleep 0.1; done
  port="$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$log" | head -1 | sed 's/.*://')"
  for _ in 1 2 3; do curl -sf "http://127.0.0.1:$port/metrics" >/dev/null; done
  local times
  times="$(for _ in $(seq 1 "$scrapes"); do curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/metrics"; done | sort -n)"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
  echo "$times" | awk -v label="$label" -v n="$scrapes" '
    { t[NR] = $1 * 1000 }
    END {
      p50 = t[int((n + 1) * 0.50)]; i99 = int(n * 0.99 + 0.999); if (i99 > n) i99 = n;
      printf "%-34s p50 %9.1f ms   p99 %9.1f ms   max %9.1f ms   (%d scrapes)\n", label, p50, t[i99], t[n], n
    }'
  rm -f "$log"
}

echo "== /metrics over $jobs jobs"
measure "baseline ($(basename "$(dirname "$(dirname "$baseline")")"))" "$baseline" "$base_db"
measure "pgfleet (maintained counters)" "$current" "$cur_db"
