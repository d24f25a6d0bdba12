#!/usr/bin/env bash
# The control plane at fleet size (#18): a scratch catalog with N tenants (catalog rows; no
# databases) and M finished jobs, then the time of what an operator and the API do there —
# the first and a middle page of `tenant list` and `jobs list` (CLI, process start
# included, and the HTTP API), a `/metrics` scrape with its series count (also at N/10
# tenants: the count must not change), and `backup --all` (N jobs recorded and published
# with confirms). The scheduler tick at fleet size: `bench/scheduler.sh --tenants N`.
# Required (issue #18): each <= 1 s except the enqueue (<= 10 s).
#
# Usage: bench/fleet-scale.sh [--tenants 100000] [--jobs 1000000]
#   CARGO_TARGET_DIR  where the release build goes (default ./target)
set -euo pipefail
cd "$(dirname "$0")/.."

tenants=100000
jobs=1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --tenants) tenants="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q -p pgfleet-workers
pgfleet="$target_dir/release/pgfleet"
bindir="$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)"
admin=postgres://postgres@127.0.0.1:5432
db=pgfleet_bench_scale
psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1)
export PGFLEET_NAMESPACE=benchscale PGFLEET_CATALOG_URL="$admin/$db" PGFLEET_SERVER_URL="$admin/postgres"
export PGFLEET_API_TOKEN=bench-scale-token-0123456789 PGFLEET_LOG=warn
export PGFLEET_SECRET_KEY="$("$pgfleet" secret-key)"

cleanup() {
  [ -n "${api_pid:-}" ] && kill "$api_pid" 2>/dev/null || true
  "${psql[@]}" "$admin/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  for q in provision backup prune restore delete migrate dead unroutable; do
    rabbitmqctl -q delete_queue "benchscale.$q" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
cleanup

# A worker's start creates and migrates the catalog and registers the default server.
PGFLEET_LOG=info "$pgfleet" worker 2>/tmp/benchscale-worker.log &
worker_pid=$!
for _ in $(seq 1 600); do grep -q "consuming" /tmp/benchscale-worker.log && break; sleep 0.1; done
kill "$worker_pid"; wait "$worker_pid" 2>/dev/null || true
fill_tenants() { # from, to
  "${psql[@]}" "$admin/$db" -c "
    INSERT INTO tenants (slug, status, server_id, database_name, role_name, password_ciphertext, connection_limit, backup_schedule)
    SELECT 'tenant-' || lpad(g::text, 7, '0'), 'active', s.id, 'benchscale_t' || g, 'benchscale_t' || g, '\\x00'::bytea, 10, '0 0 * * *'
      FROM generate_series($1, $2) g, (SELECT id FROM tenant_servers WHERE name = 'default') s;
    ANALYZE tenants;"
}

ms() { # command...: wall time in ms
  local start end
  start=$(date +%s%N); "$@" >/dev/null 2>&1; end=$(date +%s%N)
  echo $(( (end - start) / 1000000 ))
}
curl_ms() { curl -sf -o /dev/null -H "Authorization: Bearer $PGFLEET_API_TOKEN" -w '%{time_total}' "$1" | awk '{printf "%d", $1 * 1000}'; }
series() { curl -sf "http://127.0.0.1:$port/metrics" | grep -vc '^#'; }

PGFLEET_LOG=info "$pgfleet" serve --listen 127.0.0.1:0 2>"/tmp/benchscale-api.log" &
api_pid=$!
for _ in $(seq 1 300); do grep -q "listening on http://" /tmp/benchscale-api.log && break; sleep 0.1; done
port="$(grep -o 'listening on http://[0-9.]*:[0-9]*' /tmp/benchscale-api.log | head -1 | sed 's/.*://')"

echo "== $((tenants / 10)) tenants"
fill_tenants 1 $((tenants / 10))
small_series=$(series)
echo "== $tenants tenants, $jobs finished jobs"
fill_tenants $((tenants / 10 + 1)) "$tenants"
# In one statement: the counters are kept per statement (from its transition table), so a
# bulk statement costs in proportion to its rows. (With the row triggers they had until
# 2026-11-28 this statement ran for more than 14 minutes.)
insert_jobs() {
  "${psql[@]}" "$admin/$db" -c "
  INSERT INTO jobs (id, idempotency_key, kind, tenant, status, attempts, max_attempts, created_at, started_at, finished_at)
  SELECT gen_random_uuid(), 'bench-' || g, (ARRAY['provision','backup','prune','migrate'])[1 + g % 4],
         'tenant-' || lpad((1 + g % $tenants)::text, 7, '0'), CASE WHEN g % 500 = 0 THEN 'failed' ELSE 'succeeded' END,
         1, 5, t, t, t + interval '1 s'
    FROM generate_series(1, $jobs) g,
         LATERAL (SELECT now() - (g % 2592000) * interval '1 s' AS t) x;"
}
insert_ms="$(ms insert_jobs)"
"${psql[@]}" "$admin/$db" -c "ANALYZE jobs"
middle_slug="tenant-$(printf '%07d' $((tenants / 2)))"
# The middle page of jobs: the cursor of the job at the middle, as the API's Link carries it.
middle_job="$("${psql[@]}" -At "$admin/$db" -c "SELECT (extract(epoch FROM created_at) * 1000000)::bigint || ':' || id FROM jobs ORDER BY created_at DESC, id DESC OFFSET $((jobs / 2)) LIMIT 1")"
job_cursor="$(printf 'j1:%s' "$middle_job" | base64 -w0 | tr '+/' '-_' | tr -d '=')"
tenant_cursor="$(printf 't1:%s' "$middle_slug" | base64 -w0 | tr '+/' '-_' | tr -d '=')"
"$pgfleet" tenant list --limit 100 >/dev/null 2>&1 # warm

printf '%-58s %8s\n' "operation" "ms"
printf '%-58s %8s\n' "CLI tenant list --limit 100 (first page)" "$(ms "$pgfleet" tenant list --limit 100 --json)"
printf '%-58s %8s\n' "CLI tenant list --limit 100 --cursor (middle page)" "$(ms "$pgfleet" tenant list --limit 100 --cursor "$tenant_cursor" --json)"
printf '%-58s %8s\n' "CLI jobs list --limit 100 (first page)" "$(ms "$pgfleet" jobs list --limit 100 --json)"
printf '%-58s %8s\n' "CLI jobs list --limit 100 --cursor (middle page)" "$(ms "$pgfleet" jobs list --limit 100 --cursor "$job_cursor" --json)"
printf '%-58s %8s\n' "GET /v1/tenants?limit=100 (first page)" "$(curl_ms "http://127.0.0.1:$port/v1/tenants?limit=100")"
printf '%-58s %8s\n' "GET /v1/tenants?limit=100&cursor= (middle page)" "$(curl_ms "http://127.0.0.1:$port/v1/tenants?limit=100&cursor=$tenant_cursor")"
printf '%-58s %8s\n' "GET /v1/jobs?limit=100 (first page)" "$(curl_ms "http://127.0.0.1:$port/v1/jobs?limit=100")"
printf '%-58s %8s\n' "GET /v1/jobs?limit=100&cursor= (middle page)" "$(curl_ms "http://127.0.0.1:$port/v1/jobs?limit=100&cursor=$job_cursor")"
curl -sf -o /dev/null "http://127.0.0.1:$port/metrics"
printf '%-58s %8s\n' "GET /metrics" "$(curl_ms "http://127.0.0.1:$port/metrics")"
printf '%-58s %8s\n' "/metrics series at $((tenants / 10)) / $tenants tenants" "$small_series / $(series)"
printf '%-58s %8s\n' "CLI backup --all ($tenants jobs recorded + published)" "$(ms "$pgfleet" backup --all)"
printf '%-58s %8s\n' "catalog: one INSERT of $jobs jobs (counters kept)" "$insert_ms"
"${psql[@]}" -At "$admin/$db" -c "
  SELECT format('%-58s %8s', 'catalog: job counters add up to a recount', (SELECT sum(n) FROM job_counts) = (SELECT count(*) FROM jobs))"
"${psql[@]}" -At "$admin/$db" -c "
  SELECT format('%-58s %8s', 'catalog: tenants table + indexes (' || (SELECT count(*) FROM tenants) || ' rows)', pg_size_pretty(pg_total_relation_size('tenants')))
  UNION ALL
  SELECT format('%-58s %8s', 'catalog: jobs table + indexes (' || (SELECT count(*) FROM jobs) || ' rows)', pg_size_pretty(pg_total_relation_size('jobs')))
  UNION ALL
  SELECT format('%-58s %8s', 'catalog database', pg_size_pretty(pg_database_size(current_database())))"
