//! Signup latency during the nightly backup window (issue #18). One worker (default
//! settings), one run:
//!   idle:   S signups, one every 250 ms, with nothing else running;
//!   window: the same S signups while a backlog of B backups of a ~70 MB tenant
//!           (`bench/tenant-data.sql` at scale 1) runs on that worker.
//! Latency is published event → provision job finished (the tenant `active`), from the
//! publisher's clock and the catalog's `finished_at` (one machine, one clock).
//!
//! Run: `bench/signups.sh [--signups 40] [--backups 50]`.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use pgfleet_bench::{bench_namespace, cleanup, numeric_flag, percentiles, wait_for_consumer, AMQP_URL};
use pgfleet_shared::secrets::SecretKey;
use secrecy::ExposeSecret;
use sqlx::{Connection as _, PgConnection};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Env {
    pgfleet: PathBuf,
    namespace: String,
    catalog_url: String,
    secret_key: String,
    work: PathBuf,
}

impl Env {
    fn cmd(&self) -> Command {
        let mut cmd = Command::new(&self.pgfleet);
        cmd.env("PGFLEET_CATALOG_URL", &self.catalog_url)
            .env("PGFLEET_NAMESPACE", &self.namespace)
            .env("PGFLEET_SECRET_KEY", &self.secret_key)
            .env(
                "PGFLEET_BACKUP_URL",
                format!("file://{}", self.work.join("backups").display()),
            )
            .env("PGFLEET_LOG", "warn");
        cmd
    }

    fn pgfleet(&self, args: &[&str]) -> Result<String> {
        let out = self.cmd().args(args).output()?;
        if !out.status.success() {
            bail!(
                "pgfleet {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn worker(&self) -> Result<Child> {
        Ok(self
            .cmd()
            .arg("worker")
            .stderr(std::fs::File::create(self.work.join("worker.log"))?)
            .spawn()?)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let signups = numeric_flag("--signups", 40);
    let backups = numeric_flag("--backups", 50);
    let repo = std::env::current_dir()?;
    let data_sql = repo.join("bench/tenant-data.sql");
    if !data_sql.exists() {
        bail!("run from the repository root (needs {})", data_sql.display());
    }
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
    let mut worker = env.worker()?;
    let result = run(&env, signups, backups, &data_sql).await;
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = worker.wait();
    cleanup(&env.namespace).await?;
    let _ = std::fs::remove_dir_all(&env.work);
    result
}

async fn run(env: &Env, signups: usize, backups: usize, data_sql: &Path) -> Result<()> {
    wait_for_consumer(&env.namespace).await?;
    let mut catalog = PgConnection::connect(&env.catalog_url).await?;
    println!("filling a tenant with bench/tenant-data.sql (scale 1)…");
    env.pgfleet(&["tenant", "create", "big", "--wait"])?;
    let url = env.pgfleet(&["tenant", "url", "big"])?.trim().to_owned();
    let psql = Path::new("/usr/lib/postgresql/15/bin/psql");
    let status = Command::new(if psql.exists() { psql } else { Path::new("psql") })
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "scale=1",
            "-d",
            &url,
            "-f",
        ])
        .arg(data_sql)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("filling the tenant failed");
    }

    println!("idle: {signups} signups, one every 250 ms…");
    let idle = signup_latencies(env, &mut catalog, "idle", signups).await?;

    println!("window: {backups} backups of the tenant enqueued, then the same signups…");
    for i in 0..backups {
        env.pgfleet(&["backup", "big", "--key", &format!("backlog-{i}")])?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while running_backups(&mut catalog).await?.0 == 0 {
        if Instant::now() > deadline {
            bail!("no backup started within a minute");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let busy = signup_latencies(env, &mut catalog, "busy", signups).await?;
    let (running, queued) = running_backups(&mut catalog).await?;
    if running + queued == 0 {
        println!("warning: the backlog was done before the last signup; use more --backups");
    }
    println!("backups at the end of the window: {running} running, {queued} queued");

    let (i50, i99, imax) = percentiles(&idle);
    let (b50, b99, bmax) = percentiles(&busy);
    println!();
    println!("| signups (published → active), {signups} each | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!("| idle worker | {i50:.0} ms | {i99:.0} ms | {imax:.0} ms |");
    println!(
        "| worker running {backups} backups of a ~70 MB tenant | {b50:.0} ms | {b99:.0} ms | {bmax:.0} ms |"
    );
    println!("\nwindow p99 / idle p99: {:.2}x (required <= 2x)", b99 / i99);
    Ok(())
}

/// Publishes `n` signups (`<prefix>-0000`…) one every 250 ms; returns each one's latency
/// in ms once all are active.
async fn signup_latencies(env: &Env, catalog: &mut PgConnection, prefix: &str, n: usize) -> Result<Vec<f64>> {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = format!("{}.jobs", env.namespace);
    let mut published: Vec<(String, DateTime<Utc>)> = Vec::new();
    for i in 0..n {
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
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut latencies = Vec::new();
    for (slug, at) in &published {
        loop {
            let finished: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT finished_at FROM jobs WHERE kind = 'provision' AND tenant = $1 AND status = 'succeeded'",
            )
            .bind(slug)
            .fetch_optional(&mut *catalog)
            .await?
            .flatten();
            if let Some(finished) = finished {
                latencies.push((finished - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                break;
            }
            if Instant::now() > deadline {
                bail!("signup {slug} not active within 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(latencies)
}

async fn running_backups(catalog: &mut PgConnection) -> Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'queued')
           FROM jobs WHERE kind = 'backup'",
    )
    .fetch_one(catalog)
    .await
    .context("counting backups")
}
