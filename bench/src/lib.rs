//! Helpers shared by the benchmarks: process peak memory, a clean WAL state between phases,
//! and removing everything a benchmark namespace created.

use anyhow::{bail, Context, Result};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sqlx::{Connection as _, PgConnection};
use std::time::{Duration, Instant};

mod delay_proxy;
pub use delay_proxy::DelayProxy;

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// VmHWM (peak resident set) of a live process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Machine-wide CPU time so far (user, system) in seconds, from /proc/stat: the difference
/// around a phase is what every process (ours, psql, Postgres backends) spent on it.
pub fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let tick = 100.0; // USER_HZ
    let get = |i: usize| fields.get(i).copied().unwrap_or(0.0);
    // user + nice; system + irq + softirq
    ((get(0) + get(1)) / tick, (get(2) + get(5) + get(6)) / tick)
}

/// The number after `name` on the command line (`--tenants 200`), or `default`.
pub fn numeric_flag(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh namespace (`bench_<hex>`) so a benchmark never meets another run's objects.
pub fn bench_namespace() -> String {
    use rand::Rng;
    let suffix: String = (0..8)
        .map(|_| format!("{:x}", rand::thread_rng().gen_range(0..16)))
        .collect();
    format!("bench_{suffix}")
}

/// Waits until a worker consumes `<namespace>.provision`.
pub async fn wait_for_consumer(namespace: &str) -> Result<()> {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
    let queue = format!("{namespace}.provision");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // A failed passive declare closes its channel, hence a new one per probe.
        let probe = conn.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = probe
            .queue_declare(queue.as_str().into(), passive, Default::default())
            .await;
        if matches!(&declared, Ok(q) if q.consumer_count() > 0) {
            let _ = conn.close(200, "bye".into()).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no worker consumed {queue} within a minute");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes `n` signups (`tenant-00000`…) as plain AMQP JSON, waiting for the confirms.
pub async fn publish_signups(namespace: &str, n: usize) -> Result<()> {
    let bodies =
        (0..n).map(|i| format!(r#"{{"kind":"provision","tenant":"tenant-{i:05}","key":"signup-{i}"}}"#));
    publish_persistent(&format!("{namespace}.jobs"), "provision", bodies).await
}

/// Publishes each body as a persistent JSON message to `exchange` with `routing_key`, then
/// waits for the broker's confirms.
pub async fn publish_persistent(
    exchange: &str,
    routing_key: &str,
    bodies: impl IntoIterator<Item = String>,
) -> Result<()> {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    for body in bodies {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                properties,
            )
            .await?;
    }
    channel.wait_for_confirms().await?;
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

/// Publishes `tenants` signups and waits until they are all active; returns the wall time
/// from the first publish. Fails as soon as a provision job fails (see `log`).
pub async fn publish_and_wait_active(
    namespace: &str,
    catalog_url: &str,
    tenants: usize,
    log: &std::path::Path,
) -> Result<Duration> {
    let mut catalog = PgConnection::connect(catalog_url).await?;
    let started = Instant::now();
    publish_signups(namespace, tenants).await?;
    loop {
        let active: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE status = 'active'")
            .fetch_one(&mut catalog)
            .await?;
        if active as usize >= tenants {
            return Ok(started.elapsed());
        }
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status IN ('failed', 'dead')")
            .fetch_one(&mut catalog)
            .await?;
        if failed > 0 {
            bail!("{failed} provision jobs failed; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A checkpoint before a timed phase, so no phase pays for another's WAL.
pub async fn checkpoint() -> Result<()> {
    let mut admin = PgConnection::connect(ADMIN_URL).await?;
    sqlx::raw_sql("CHECKPOINT").execute(&mut admin).await?;
    Ok(())
}

/// Drops the databases and roles named `<namespace>_…` and the namespace's queues.
pub async fn cleanup(namespace: &str) -> Result<()> {
    let mut admin = PgConnection::connect(ADMIN_URL).await?;
    let prefix = format!("{namespace}_");
    // A stopped worker's last `CREATE DATABASE` (a warm pool refill) may still commit after
    // the worker exited: a role that still owns something is retried after another pass.
    for pass in 1..=5 {
        match drop_databases_and_roles(&mut admin, &prefix).await {
            Ok(()) => break,
            Err(e) if pass < 5 => {
                eprintln!("cleanup: {e:#}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let queues = pgfleet_shared::JobKind::ALL
        .iter()
        .map(|k| k.as_str())
        .chain(["dead", "unroutable"]);
    for queue in queues {
        let _ = channel
            .queue_delete(format!("{namespace}.{queue}").as_str().into(), Default::default())
            .await;
    }
    for exchange in ["jobs", "dead", "unroutable"] {
        let _ = channel
            .exchange_delete(
                format!("{namespace}.{exchange}").as_str().into(),
                Default::default(),
            )
            .await;
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

async fn drop_databases_and_roles(admin: &mut PgConnection, prefix: &str) -> Result<()> {
    // Databases first: a role that owns one can't be dropped.
    let kinds = [
        (
            "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)",
            "DATABASE",
            " WITH (FORCE)",
        ),
        (
            "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1)",
            "ROLE",
            "",
        ),
    ];
    for (list, kind, option) in kinds {
        let names: Vec<String> = sqlx::query_scalar(list)
            .bind(prefix)
            .fetch_all(&mut *admin)
            .await?;
        for name in names {
            sqlx::raw_sql(&format!("DROP {kind} IF EXISTS \"{name}\"{option}"))
                .execute(&mut *admin)
                .await?;
        }
    }
    Ok(())
}

/// The directory of the Postgres client tools matching the local server's major version
/// (the binaries themselves, not Debian's pg_wrapper on PATH).
pub async fn client_bindir() -> Result<std::path::PathBuf> {
    let mut admin = PgConnection::connect(ADMIN_URL).await?;
    let num: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(&mut admin)
        .await?;
    let psql = pgfleet_shared::pg_tools::find("psql", num.parse::<u32>()? / 10_000).await?;
    Ok(psql.path.parent().context("psql has a directory")?.to_path_buf())
}

/// `psql -X -q -v ON_ERROR_STOP=1 -f FILE` on database `db` as postgres over loopback, as
/// a migration loop runs it; whether it succeeded.
pub fn psql_file(psql: &std::path::Path, db: &str, file: &std::path::Path) -> Result<bool> {
    psql_file_at(psql, 5432, db, file)
}

/// `psql_file` against 127.0.0.1:`port` (e.g. a `DelayProxy`).
pub fn psql_file_at(psql: &std::path::Path, port: u16, db: &str, file: &std::path::Path) -> Result<bool> {
    Ok(std::process::Command::new(psql)
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-f",
        ])
        .arg(file)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", psql.display()))?
        .success())
}

/// (p50, p99, max) of latency samples (nearest rank).
pub fn percentiles(samples: &[f64]) -> (f64, f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1];
    (at(0.5), at(0.99), sorted[sorted.len() - 1])
}

/// Transactions committed or rolled back in `database` so far (a backend reports its
/// counters within 10 s of going idle: PGSTAT_IDLE_INTERVAL).
pub async fn catalog_transactions(conn: &mut PgConnection, database: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1")
            .bind(database)
            .fetch_one(conn)
            .await?,
    )
}

/// CPU seconds (user + system) a live process has used, from /proc/<pid>/stat.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<f64> = after.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // utime and stime are fields 14 and 15; `fields` starts at field 4 (state is not numeric).
    (fields.get(10).copied().unwrap_or(0.0) + fields.get(11).copied().unwrap_or(0.0)) / 100.0
}
