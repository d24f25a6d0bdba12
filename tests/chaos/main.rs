//! The chaos suite: real `pgfleet worker` processes, RabbitMQ, Postgres, `pg_dump` and an
//! S3-compatible server, with faults injected while work runs, and the same invariants
//! checked after every scenario (see `harness`). Each scenario prints a `CHAOS {json}` line
//! and appends it to `chaos-report.jsonl`; `bench/chaos-soak.sh` runs it longer.

#[path = "../integration/support.rs"]
#[allow(dead_code, unused_imports)]
mod support;

mod harness;
mod scenarios;
