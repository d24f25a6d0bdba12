//! Scheduler benchmark (issue: producers). N active tenants (default 10,000; catalog rows
//! only, the jobs never run) all due at the same slot: the time of one scheduler tick until
//! every backup job is recorded in the catalog and confirmed by the broker. Required ≤ 5 s.
//!
//! Baseline, same run, same tenants, the next slot: what a cron script (or a loop over
//! `pgfleet backup`) does — per tenant, record the job, publish it, wait for the confirm.
//!
//! Run: `bench/scheduler.sh [--tenants 10000]`.

use anyhow::{ensure, Result};
use chrono::{DurationRound, Utc};
use pgfleet_bench::{bench_namespace, cleanup, numeric_flag, peak_rss_kib, AMQP_URL};
use pgfleet_shared::catalog::{scheduled_backup_key, Catalog};
use pgfleet_shared::config::Namespace;
use pgfleet_shared::producer::Producer;
use pgfleet_shared::queue::Publisher;
use pgfleet_shared::scheduler::{ManualClock, Scheduler, SchedulerSettings};
use pgfleet_shared::secrets::SecretKey;
use pgfleet_shared::{JobRequest, JobSpec, TenantSlug};
use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<()> {
    let tenants = numeric_flag("--tenants", 10_000);
    let namespace = bench_namespace();
    let result = run(&namespace, tenants).await;
    cleanup(&namespace).await?;
    result
}

async fn run(namespace: &str, tenants: usize) -> Result<()> {
    let ns = Namespace::parse(namespace)?;
    let catalog_url = format!("postgres://postgres@127.0.0.1:5432/{namespace}_catalog");
    let catalog = Catalog::open(&catalog_url.into(), Arc::new(SecretKey::generate().into()), 8).await?;
    let server = catalog
        .ensure_default_server(Some(&pgfleet_bench::ADMIN_URL.to_owned().into()))
        .await?;
    println!("recording {tenants} active tenants (catalog rows) due at the same midnight…");
    sqlx::query(
        "INSERT INTO tenants (slug, status, server_id, database_name, role_name, password_ciphertext, connection_limit)
         SELECT 'tenant-' || lpad(i::text, 6, '0'), 'active', $1, 'db_' || i, 'role_' || i, '\\x00', 10
           FROM generate_series(1, $2) AS i",
    )
    .bind(server.id)
    .bind(tenants as i32)
    .execute(catalog.pool())
    .await?;
    sqlx::raw_sql("VACUUM ANALYZE tenants")
        .execute(catalog.pool())
        .await?;

    let publisher = Arc::new(Publisher::new(
        AMQP_URL.to_owned().into(),
        ns.clone(),
        "bench scheduler",
    ));
    // A running scheduler holds its broker connection; so does the timed one.
    publisher.ensure_connected().await?;
    let midnight = Utc::now().duration_trunc(chrono::Duration::days(1))? + chrono::Duration::days(1);
    let clock = Arc::new(ManualClock::new(midnight + chrono::Duration::seconds(1)));
    let scheduler = Scheduler::new(
        catalog.clone(),
        publisher.clone(),
        clock.clone(),
        SchedulerSettings::default(),
    );

    let started = Instant::now();
    let report = scheduler.tick().await?;
    let tick = started.elapsed();
    ensure!(
        report.enqueued == tenants && report.published == tenants,
        "tick enqueued {} and published {} of {tenants}",
        report.enqueued,
        report.published
    );
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'backup'")
        .fetch_one(catalog.pool())
        .await?;
    ensure!(recorded == tenants as i64, "{recorded} jobs recorded");

    // Baseline: the next slot, one tenant at a time (record, publish, confirm).
    println!("baseline: per-tenant record + publish + confirm loop…");
    let next = midnight + chrono::Duration::days(1);
    let producer = Producer::new(catalog.clone(), publisher.clone(), 5);
    let slugs: Vec<String> = sqlx::query_scalar("SELECT slug::text FROM tenants ORDER BY slug")
        .fetch_all(catalog.pool())
        .await?;
    let started = Instant::now();
    for slug in &slugs {
        let request = JobRequest {
            tenant: TenantSlug::parse(slug)?,
            key: Some(scheduled_backup_key(slug, &next)),
            spec: JobSpec::Backup(pgfleet_shared::message::NoFields {}),
            job: None,
        };
        let enqueued = producer.enqueue(&request).await?;
        ensure!(
            enqueued.created && enqueued.published,
            "baseline job not created/published"
        );
    }
    let baseline = started.elapsed();
    publisher.close().await;

    let tick_s = tick.as_secs_f64();
    let baseline_s = baseline.as_secs_f64();
    println!();
    println!("{tenants} tenants due at once, jobs recorded in the catalog and confirmed by RabbitMQ:");
    println!("  baseline (per-tenant loop)   {baseline_s:7.2} s");
    println!(
        "  pgfleet scheduler tick       {tick_s:7.2} s   ({:.1}x faster; required <= 5 s: {})",
        baseline_s / tick_s,
        if tick_s <= 5.0 { "met" } else { "NOT met" }
    );
    println!(
        "  peak RSS of this process     {:7.1} MiB",
        peak_rss_kib(std::process::id()) as f64 / 1024.0
    );
    Ok(())
}
