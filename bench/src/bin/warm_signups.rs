//! Signup latency with and without the warm pool (issue #17), one run, one worker:
//!   cold: N signups published at R per second, worker with no pool;
//!   warm: the same on a worker keeping a pool of K per server (filled before the first
//!         signup; `--pool` defaults to N so the burst never drains it — the refill's own
//!         rate is printed too).
//! Latency is published (publisher's clock) → the tenant `active`, as the catalog records
//! it (the provision job's `finished_at`, written in the activating transaction's wake;
//! one machine, one clock).
//!
//! Run: `bench/warm-signups.sh [--signups 500] [--rate 10] [--pool N]`.

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use pgfleet_bench::{
    bench_namespace, checkpoint, cleanup, numeric_flag, percentiles, wait_for_consumer, AMQP_URL,
};
use pgfleet_shared::secrets::SecretKey;
use secrecy::ExposeSecret;
use sqlx::{Connection as _, PgConnection};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Env {
    pgfleet: PathBuf,
    namespace: String,
    catalog_url: String,
    secret_key: String,
    work: PathBuf,
}

impl Env {
    fn worker(&self, pool: usize, log: &str) -> Result<Child> {
        Ok(Command::new(&self.pgfleet)
            .arg("worker")
            .env("PGFLEET_CATALOG_URL", &self.catalog_url)
            .env("PGFLEET_NAMESPACE", &self.namespace)
            .env("PGFLEET_SECRET_KEY", &self.secret_key)
            .env(
                "PGFLEET_BACKUP_URL",
                format!("file://{}", self.work.join("backups").display()),
            )
            .env("PGFLEET_WARM_POOL", pool.to_string())
            .env("PGFLEET_LOG", "warn")
            .stderr(std::fs::File::create(self.work.join(log))?)
            .spawn()?)
    }
}

fn stop(mut worker: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = worker.wait();
}

#[tokio::main]
async fn main() -> Result<()> {
    let signups = numeric_flag("--signups", 500);
    let rate = numeric_flag("--rate", 10).max(1);
    let pool = numeric_flag("--pool", signups);
    let namespace = bench_namespace();
    let work = std::env::temp_dir().join(&namespace);
    std::fs::create_dir_all(&work)?;
    let env = Env {
        pgfleet: std::env::current_exe()?.with_file_name("pgfleet"),
        catalog_url: format!("postgres://postgres@127.0.0.1:5432/{namespace}_catalog"),
        secret_key: SecretKey::generate().to_base64().expose_secret().to_owned(),
        namespace,
        work,
    };
    let result = run(&env, signups, rate, pool).await;
    cleanup(&env.namespace).await?;
    let _ = std::fs::remove_dir_all(&env.work);
    result
}

async fn run(env: &Env, signups: usize, rate: usize, pool: usize) -> Result<()> {
    println!("cold: {signups} signups at {rate}/s, no pool…");
    let worker = env.worker(0, "cold.log")?;
    wait_for_consumer(&env.namespace).await?;
    let mut catalog = PgConnection::connect(&env.catalog_url).await?;
    checkpoint().await?;
    let cold = latencies(env, &mut catalog, "cold", signups, rate).await?;
    stop(worker);

    println!("warm: filling a pool of {pool}…");
    let started = Instant::now();
    let worker = env.worker(pool, "warm.log")?;
    wait_for_consumer(&env.namespace).await?;
    loop {
        let ready: i64 = sqlx::query_scalar("SELECT count(*) FROM warm_databases WHERE status = 'ready'")
            .fetch_one(&mut catalog)
            .await
            .unwrap_or(0);
        if ready as usize >= pool {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the pool did not fill within 30 minutes ({ready} of {pool})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fill = started.elapsed();
    println!(
        "pool of {pool} filled in {:.1} s ({:.1} databases/s by one refill)",
        fill.as_secs_f64(),
        pool as f64 / fill.as_secs_f64()
    );
    checkpoint().await?;
    println!("warm: {signups} signups at {rate}/s…");
    let warm = latencies(env, &mut catalog, "warm", signups, rate).await?;
    let claimed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'provision' AND tenant LIKE 'warm-%' AND outcome -> 'details' ->> 'warm_pool' IS NOT NULL",
    )
    .fetch_one(&mut catalog)
    .await?;
    stop(worker);

    let (c50, c99, cmax) = percentiles(&cold);
    let (w50, w99, wmax) = percentiles(&warm);
    println!();
    println!("| {signups} signups at {rate}/s (published → active) | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!("| cold provision | {c50:.0} ms | {c99:.0} ms | {cmax:.0} ms |");
    println!("| warm pool ({claimed} of {signups} claimed a pool database) | {w50:.0} ms | {w99:.0} ms | {wmax:.0} ms |");
    println!(
        "\nwarm p99 {w99:.0} ms (required <= 100 ms, target <= 50 ms); cold p99 / warm p99 = {:.1}x",
        c99 / w99
    );
    Ok(())
}

/// Publishes `n` signups `<prefix>-NNNN` at `rate` per second; each one's latency in ms.
async fn latencies(
    env: &Env,
    catalog: &mut PgConnection,
    prefix: &str,
    n: usize,
    rate: usize,
) -> Result<Vec<f64>> {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = format!("{}.jobs", env.namespace);
    let mut published: Vec<(String, DateTime<Utc>)> = Vec::new();
    let start = Instant::now();
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    for i in 0..n {
        // A fixed schedule: a slow confirm does not push the next signups later.
        let due = start + every * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let slug = format!("{prefix}-{i:04}");
        let body = format!(r#"{{"kind":"provision","tenant":"{slug}","key":"signup-{slug}"}}"#);
        let at = Utc::now();
        channel
            .basic_publish(
                exchange.as_str().into(),
                "provision".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        published.push((slug, at));
    }
    let _ = conn.close(200, "bye".into()).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE kind = 'provision' AND tenant LIKE $1 AND status = 'succeeded'",
        )
        .bind(format!("{prefix}-%"))
        .fetch_one(&mut *catalog)
        .await?;
        if done as usize >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {done} of {n} signups active within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT tenant::text, finished_at FROM jobs WHERE kind = 'provision' AND tenant LIKE $1 AND status = 'succeeded'",
    )
    .bind(format!("{prefix}-%"))
    .fetch_all(&mut *catalog)
    .await?;
    let finished: std::collections::HashMap<String, DateTime<Utc>> = finished.into_iter().collect();
    Ok(published
        .iter()
        .map(|(slug, at)| (finished[slug] - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        .collect())
}
