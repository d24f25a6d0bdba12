#!/usr/bin/env bash
# Web console at fleet scale: 100k tenants and 300k jobs in a scratch catalog, `pgfleet
# serve` on loopback, a signed-in session, and the median time (5 runs, after one warm-up)
# of each console page an operator pages through — beside, in the same run, the JSON API's
# page of the same rows and the OFFSET query a naive pager would run at the same depth.
# Usage: bench/console.sh [TENANTS]   (default 100000)
#        PGFLEET_BIN=target/debug/pgfleet bench/console.sh   (skip the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
tenants="${1:-100000}"
bin=/usr/lib/postgresql/15/bin
pg="postgres://postgres@127.0.0.1:5432"
if [ -z "${PGFLEET_BIN:-}" ]; then
  cargo build --release -q -p pgfleet-workers
  PGFLEET_BIN="$PWD/target/release/pgfleet"
fi
pgfleet="$PGFLEET_BIN"

ns="benchconsole$(date +%s)"
work="$(mktemp -d)"
token="bench-console-token-$(date +%s%N)"
export PGFLEET_NAMESPACE="$ns" PGFLEET_CATALOG_URL="$pg/${ns}_catalog" PGFLEET_SERVER_URL="$pg/postgres"
export PGFLEET_BACKUP_URL="file://$work/backups" PGFLEET_LOG=warn PGFLEET_API_TOKEN="$token"
api_pid=""
cleanup() {
  [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null || true
  "$bin/psql" -X -q -d "$pg/postgres" -c "DROP DATABASE IF EXISTS ${ns}_catalog WITH (FORCE)" >/dev/null 2>&1 || true
  for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^${ns}\." || true); do rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

export PGFLEET_SECRET_KEY="$("$pgfleet" secret-key)"
"$pgfleet" server list >/dev/null # creates and migrates the catalog
"$pgfleet" server add default "$pg/postgres" >/dev/null 2>&1 || true
catalog="$pg/${ns}_catalog"
echo "filling the catalog: $tenants tenants, $((tenants * 3)) jobs…"
"$bin/psql" -X -q -d "$catalog" -v n="$tenants" <<'SQL' >/dev/null
INSERT INTO tenants (slug, status, server_id, database_name, role_name, password_ciphertext, connection_limit, backup_schedule, created_at)
SELECT 'tenant-' || lpad(i::text, 6, '0'), CASE WHEN i % 500 = 0 THEN 'suspended' ELSE 'active' END,
       (SELECT id FROM tenant_servers WHERE name = 'default'), 'db_' || i, 'role_' || i, '\x00', 10, '0 3 * * *',
       now() - make_interval(mins => i)
  FROM generate_series(1, :n) AS i;
INSERT INTO jobs (id, idempotency_key, kind, tenant, status, attempts, max_attempts, error, created_at, started_at, finished_at)
SELECT gen_random_uuid(), 'bench:' || i, (ARRAY['backup', 'prune', 'migrate'])[1 + i % 3],
       'tenant-' || lpad((1 + i % :n)::text, 6, '0'), CASE WHEN i % 1000 = 0 THEN 'failed' ELSE 'succeeded' END,
       1, 5, CASE WHEN i % 1000 = 0 THEN 'pg_dump: error: connection refused' END,
       now() - make_interval(secs => i), now() - make_interval(secs => i), now() - make_interval(secs => i) + interval '2 s'
  FROM generate_series(1, 3 * :n) AS i;
ANALYZE;
SQL

PGFLEET_LOG=info "$pgfleet" serve --listen 127.0.0.1:0 2>"$work/api.log" &
api_pid=$!
for _ in $(seq 1 100); do grep -q "listening on http://" "$work/api.log" && break; sleep 0.2; done
base="$(grep -o 'listening on http://[0-9.:]*' "$work/api.log" | head -1 | sed 's/listening on //')"
curl -s -o /dev/null -c "$work/cookies" --data-urlencode "token=$token" --data-urlencode "operator=bench" "$base/console/login"

deep="tenant-$(printf '%06d' $((tenants * 9 / 10)))"
median_ms() { # url, [auth header]
  local url="$1" times=() code
  code=$(curl -s -o /dev/null -w '%{http_code}' -b "$work/cookies" ${2:+-H "$2"} "$url")
  [ "$code" = 200 ] || { echo "GET $url answered $code, not 200" >&2; exit 1; }
  for i in 0 1 2 3 4 5; do
    t=$(curl -s -o /dev/null -w '%{time_total}' -b "$work/cookies" ${2:+-H "$2"} "$url")
    [ "$i" -gt 0 ] && times+=("$t")
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n 3p | awk '{printf "%.1f", $1 * 1000}'
}
sql_ms() { # query → server-side execution time (ms) of the median of 5
  for _ in 1 2 3 4 5; do
    "$bin/psql" -X -At -d "$catalog" -c "EXPLAIN (ANALYZE, FORMAT JSON) $1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Execution Time"])'
  done | sort -n | sed -n 3p | awk '{printf "%.1f", $1}'
}

printf '\n%-58s %10s\n' "page ($tenants tenants, $((tenants * 3)) jobs)" "median ms"
row() { printf '%-58s %10s\n' "$1" "$2"; }
row "console: overview" "$(median_ms "$base/console")"
row "console: tenants, first page" "$(median_ms "$base/console/tenants")"
row "console: tenants, page after $deep (90% deep)" "$(median_ms "$base/console/tenants?after=$deep")"
row "console: tenants, slug contains '09999'" "$(median_ms "$base/console/tenants?q=09999")"
row "console: tenants, status suspended" "$(median_ms "$base/console/tenants?status=suspended")"
row "console: a tenant's page" "$(median_ms "$base/console/tenants/$deep")"
row "console: jobs, first page" "$(median_ms "$base/console/jobs")"
row "console: jobs, failed in the last 24 hours" "$(median_ms "$base/console/jobs?status=failed&since=24h")"
echo "baselines, same run:"
row "  API: GET /v1/tenants?limit=50&after=$deep (JSON)" "$(median_ms "$base/v1/tenants?limit=50&after=$deep" "Authorization: Bearer $token")"
row "  SQL: the same 50 rows by keyset (server time)" "$(sql_ms "SELECT * FROM tenants WHERE slug > '$deep' ORDER BY slug LIMIT 50")"
row "  SQL: the same 50 rows by OFFSET $((tenants * 9 / 10)) (server time)" "$(sql_ms "SELECT * FROM tenants ORDER BY slug OFFSET $((tenants * 9 / 10)) LIMIT 50")"
