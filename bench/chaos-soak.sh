#!/usr/bin/env bash
# The chaos suite (tests/chaos), longer: every scenario ROUNDS times with CHAOS_SCALE times
# the work (signups, tenants; kills go on for as long as the work runs), then the
# reliability table (scenario, runs, faults injected, jobs, lost, doubled, leftovers) summed
# from the suite's own output. `.ci/run` runs the suite once at scale 1.
#
# Usage: bench/chaos-soak.sh [--rounds 3] [--scale 2] [--only NAME_FILTER]
# Needs what `.ci/run` sets up (Postgres, RabbitMQ, moto_server, faketime).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
scale=2
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --scale) scale="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

report="$PWD/target/tmp/chaos-report.jsonl"
mkdir -p "$(dirname "$report")"
rm -f "$report"
failed=0
for round in $(seq 1 "$rounds"); do
  echo "== round $round of $rounds (CHAOS_SCALE=$scale)"
  if ! CHAOS_SCALE="$scale" cargo test -q -p pgfleet-workers --test chaos -- --test-threads=1 $only; then
    failed=$((failed + 1))
  fi
done

python3 - "$report" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    t = rows.setdefault(r["scenario"], {"runs": 0, "faults": 0, "jobs": 0, "lost": 0, "doubled": 0, "leftovers": 0, "seconds": 0.0})
    t["runs"] += 1
    for k in ("faults", "jobs", "lost", "doubled", "leftovers"):
        t[k] += r[k]
    t["seconds"] += r["seconds"]
print("| scenario | runs | faults injected | jobs | lost | doubled | leftovers | time |")
print("|---|---|---|---|---|---|---|---|")
for name, t in rows.items():
    print(f"| {name} | {t['runs']} | {t['faults']} | {t['jobs']} | {t['lost']} | {t['doubled']} | {t['leftovers']} | {t['seconds']:.0f} s |")
PY
if [ "$failed" -gt 0 ]; then
  echo "chaos-soak: $failed of $rounds rounds failed (details above)" >&2
  exit 1
fi
