#!/usr/bin/env bash
# Tenant move benchmark: `pgfleet tenant move` against the by-hand way (`pg_dump -Fc` to a file,
# then `pg_restore` into the other server, with the servers' own binaries), same tenant data
# (bench/tenant-data.sql), same two clusters (127.0.0.1:5432 → 127.0.0.1:5433), one run.
# Prints downtime and total time of each.
# Usage: bench/tenant-move.sh [SCALE]   (default 4; scale 1 ≈ 75 MB of plain dump)
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-4}"
bin=/usr/lib/postgresql/15/bin
src="postgres://postgres@127.0.0.1:5432"
dst="postgres://postgres@127.0.0.1:5433"

if ! "$bin/pg_isready" -h 127.0.0.1 -p 5433 >/dev/null 2>&1; then
  pg_createcluster 15 fleet2 --port 5433 --start -- --auth-host=trust --auth-local=trust >/dev/null
fi
cargo build --release -q -p pgfleet-workers
pgfleet="$PWD/target/release/pgfleet"

ns="benchmove$(date +%s)"
work="$(mktemp -d)"
export PGFLEET_NAMESPACE="$ns" PGFLEET_CATALOG_URL="$src/${ns}_catalog" PGFLEET_SERVER_URL="$src/postgres"
export PGFLEET_SECRET_KEY="$("$pgfleet" secret-key)" PGFLEET_BACKUP_URL="file://$work/backups" PGFLEET_LOG=warn
worker_pid=""
cleanup() {
  [ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null || true
  for url in "$src" "$dst"; do
    "$bin/psql" -X -q -d "$url/postgres" -At -c "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE);', datname) FROM pg_database WHERE datname LIKE '${ns}%'" | "$bin/psql" -X -q -d "$url/postgres" >/dev/null 2>&1 || true
    "$bin/psql" -X -q -d "$url/postgres" -At -c "SELECT format('DROP ROLE IF EXISTS %I;', rolname) FROM pg_roles WHERE rolname LIKE '${ns}%'" | "$bin/psql" -X -q -d "$url/postgres" >/dev/null 2>&1 || true
  done
  for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^${ns}\." || true); do rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
ms() { python3 -c "print(round(($2 - $1) * 1000))"; }

"$pgfleet" worker --concurrency 2 2>"$work/worker.log" &
worker_pid=$!
for _ in $(seq 1 60); do grep -q consuming "$work/worker.log" && break; sleep 0.5; done
"$pgfleet" server add second "$dst/postgres" >/dev/null 2>&1
"$pgfleet" server drain second >/dev/null
"$pgfleet" tenant create big --wait >/dev/null
tenant_url="$("$pgfleet" tenant url big)"
db="${ns}_big"
echo "loading bench/tenant-data.sql scale $scale into tenant big…"
"$bin/psql" -X -q -v scale="$scale" -d "$tenant_url" -f bench/tenant-data.sql >/dev/null 2>&1
size="$("$bin/psql" -X -At -d "$src/postgres" -c "SELECT pg_size_pretty(pg_database_size('$db'))")"
"$pgfleet" server undrain second >/dev/null

# By hand, at its best: custom-format dump to a file, then restore (single, and -j 2 on
# these 2 cores). The application is kept out for all of it, so downtime = total.
echo "by hand: pg_dump -Fc + pg_restore (database $size)…"
t0=$(now)
"$bin/pg_dump" -Fc -d "$src/$db" -f "$work/big.dump"
t1=$(now)
"$bin/createdb" -h 127.0.0.1 -p 5433 -U postgres "${ns}_hand1"
"$bin/pg_restore" --no-owner -d "$dst/${ns}_hand1" "$work/big.dump"
t2=$(now)
"$bin/createdb" -h 127.0.0.1 -p 5433 -U postgres "${ns}_hand2"
t3=$(now)
"$bin/pg_restore" --no-owner -j 2 -d "$dst/${ns}_hand2" "$work/big.dump"
t4=$(now)
dump_ms=$(ms "$t0" "$t1"); restore_ms=$(ms "$t1" "$t2"); restore_j_ms=$(ms "$t3" "$t4")
hand_ms=$((dump_ms + restore_ms)); hand_j_ms=$((dump_ms + restore_j_ms))
"$bin/dropdb" -h 127.0.0.1 -p 5433 -U postgres "${ns}_hand1"
"$bin/dropdb" -h 127.0.0.1 -p 5433 -U postgres "${ns}_hand2"
rm -f "$work/big.dump"

echo "pgfleet: tenant move big --to second…"
t0=$(now)
"$pgfleet" tenant move big --to second --wait --json >"$work/move.json" 2>"$work/move.err"
t1=$(now)
read -r downtime job_ms verified < <(python3 -c "
import json; j = json.load(open('$work/move.json')); d = j['outcome']['details']
print(d['downtime_ms'], j['outcome']['duration_ms'], str(d['verified']['tables']) + '_tables/' + str(d['verified']['rows']) + '_rows')")
cli_ms=$(ms "$t0" "$t1")

printf '\nmove of a tenant of %s (bench/tenant-data.sql scale %s), 5432 → 5433 on one machine\n' "$size" "$scale"
printf '%-52s %12s %12s\n' "" "downtime" "total"
printf '%-52s %10s ms %10s ms\n' "by hand: pg_dump -Fc + pg_restore" "$hand_ms" "$hand_ms"
printf '%-52s %10s ms %10s ms\n' "by hand: pg_dump -Fc + pg_restore -j 2" "$hand_j_ms" "$hand_j_ms"
printf "%-52s %10s ms %10s ms\n" "pgfleet tenant move (the job, copy verified)" "$downtime" "$job_ms"
printf '%-52s %10s    %10s ms\n' "pgfleet tenant move --wait, as the CLI user waits" "" "$cli_ms"
printf '(verified: %s; by hand: dump %s ms, restore %s ms / -j 2 %s ms, no verification, no catalog switch, roles made by hand)\n' "${verified//_/ }" "$dump_ms" "$restore_ms" "$restore_j_ms"
