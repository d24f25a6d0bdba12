//! Scheduler benchmark. N active tenants (default 10,000; catalog rows only, the jobs never
//! run) all due at the same slot: the time of one scheduler tick (at most `max_per_tick`
//! jobs, required <= 1 s at 100,000 tenants by #18), of the back-to-back ticks that record
//! and confirm every tenant's job, and, at the next slot, of one tick with no limit.
//!
//! Baseline, same run, same tenants, the slot after: what a cron script (or a loop over
//! `pgfleet backup`) does — per tenant, record the job, publish it, wait for the confirm.
//!
//! Run: `bench/scheduler.sh [--tenants 10000]`.

use anyhow::Context;
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
        .await?
        .context("the fresh catalog has a default server")?;
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
    let scheduler = |max_per_tick| {
        Scheduler::new(
            catalog.clone(),
            publisher.clone(),
            clock.clone(),
            SchedulerSettings {
                max_per_tick,
                ..SchedulerSettings::default()
            },
        )
    };

    // Slot 1: ticks as `pgfleet scheduler` runs them (at most max_per_tick each, the next
    // at once while some are left), until every tenant's backup is recorded and confirmed.
    let bounded = scheduler(SchedulerSettings::default().max_per_tick);
    let started = Instant::now();
    let mut ticks = Vec::new();
    let mut enqueued = 0;
    loop {
        let tick_started = Instant::now();
        let report = bounded.tick().await?;
        ensure!(
            report.published == report.enqueued,
            "tick published {} of {}",
            report.published,
            report.enqueued
        );
        enqueued += report.enqueued;
        ticks.push((tick_started.elapsed(), report.enqueued, report.evaluating));
        if report.deferred == 0 {
            break;
        }
    }
    let all_bounded = started.elapsed();
    ensure!(enqueued == tenants, "ticks enqueued {enqueued} of {tenants}");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'backup'")
        .fetch_one(catalog.pool())
        .await?;
    ensure!(recorded == tenants as i64, "{recorded} jobs recorded");

    // Slot 2: one tick with no limit (all tenants in one tick).
    let next = midnight + chrono::Duration::days(1);
    clock.set(next + chrono::Duration::seconds(1));
    let unbounded = scheduler(usize::MAX);
    let started = Instant::now();
    let report = unbounded.tick().await?;
    let one_tick = started.elapsed();
    ensure!(
        report.enqueued == tenants && report.published == tenants,
        "the unlimited tick enqueued {} and published {} of {tenants}",
        report.enqueued,
        report.published
    );

    // Baseline: the next slot, one tenant at a time (record, publish, confirm).
    println!("baseline: per-tenant record + publish + confirm loop…");
    let next = midnight + chrono::Duration::days(2);
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

    let baseline_s = baseline.as_secs_f64();
    let (first_tick, first_jobs, first_evaluating) = ticks[0];
    let slowest = ticks.iter().map(|t| t.0).max().unwrap_or_default();
    println!();
    println!("{tenants} tenants due at once, jobs recorded in the catalog and confirmed by RabbitMQ:");
    println!("  baseline (per-tenant loop), all               {baseline_s:8.2} s");
    println!(
        "  pgfleet, one tick (max {} jobs)            {:8.3} s  ({first_jobs} jobs; reading and evaluating the {tenants} schedules {:.3} s; slowest of {} ticks {:.3} s; required <= 1 s: {})",
        SchedulerSettings::default().max_per_tick,
        first_tick.as_secs_f64(),
        first_evaluating.as_secs_f64(),
        ticks.len(),
        slowest.as_secs_f64(),
        if slowest.as_secs_f64() <= 1.0 { "met" } else { "NOT met" }
    );
    println!(
        "  pgfleet, back-to-back ticks, all            {:8.2} s  ({:.1}x faster than the baseline)",
        all_bounded.as_secs_f64(),
        baseline_s / all_bounded.as_secs_f64()
    );
    println!(
        "  pgfleet, one unlimited tick, all            {:8.2} s  ({:.1}x faster than the baseline)",
        one_tick.as_secs_f64(),
        baseline_s / one_tick.as_secs_f64()
    );
    println!(
        "  peak RSS of this process     {:7.1} MiB",
        peak_rss_kib(std::process::id()) as f64 / 1024.0
    );
    Ok(())
}
