//! Helpers shared by the benchmarks: process peak memory, a clean WAL state between phases,
//! and removing everything a benchmark namespace created.

use anyhow::Result;
use lapin::{Connection, ConnectionProperties};
use sqlx::{Connection as _, PgConnection};

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
    let databases: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)")
            .bind(&prefix)
            .fetch_all(&mut admin)
            .await?;
    for db in databases {
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1)")
            .bind(&prefix)
            .fetch_all(&mut admin)
            .await?;
    for role in roles {
        sqlx::raw_sql(&format!("DROP ROLE IF EXISTS \"{role}\""))
            .execute(&mut admin)
            .await?;
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
