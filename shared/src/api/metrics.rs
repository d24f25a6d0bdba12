//! `GET /metrics`: Prometheus text exposition, every name prefixed `pgfleet_`. Fleet
//! figures come from the catalog and queue depths from the broker at scrape time, so every
//! replica reports the same numbers whichever process ran the jobs. If the catalog or broker
//! is down, their series are left out and `pgfleet_catalog_up` / `pgfleet_broker_up` say 0.

use super::ApiState;
use crate::catalog::DURATION_BUCKETS;
use crate::status::{JobKind, JobStatus, TenantStatus};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::fmt::Write;
use std::sync::Arc;
use tracing::warn;

/// Upper bounds (seconds) of `pgfleet_backup_age_tenants`: 1 h, 6 h, 12 h, 1 d, 2 d, 3 d,
/// 7 d, 30 d.
const BACKUP_AGE_BOUNDS: [f64; 8] = [
    3600.0, 21600.0, 43200.0, 86400.0, 172800.0, 259200.0, 604800.0, 2592000.0,
];

use crate::config::BACKUP_OVERDUE_AFTER;

/// How many of the oldest tenants `pgfleet_backup_oldest_age_seconds` names.
const OLDEST_SHOWN: i64 = 10;

pub(super) async fn render(State(state): State<Arc<ApiState>>) -> Response {
    let mut out = String::with_capacity(16 * 1024);
    let catalog_up = match catalog_series(&state, &mut out).await {
        Ok(()) => 1,
        Err(e) => {
            warn!(error = %format!("{e:#}"), "metrics: catalog unreachable");
            0
        }
    };
    let broker_up = match broker_series(&state, &mut out).await {
        Ok(()) => 1,
        Err(e) => {
            warn!(error = %format!("{e:#}"), "metrics: broker unreachable");
            0
        }
    };
    gauge(
        &mut out,
        "pgfleet_catalog_up",
        "1 if the catalog answered this scrape.",
        catalog_up,
    );
    gauge(
        &mut out,
        "pgfleet_broker_up",
        "1 if RabbitMQ answered this scrape.",
        broker_up,
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response()
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A gauge family with its one unlabelled sample.
fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// A label value, escaped as the exposition format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

/// Renders into a buffer first, so a failed query leaves no half-written family.
async fn catalog_series(state: &ApiState, out: &mut String) -> anyhow::Result<()> {
    let catalog = &state.fleet.catalog;
    let mut s = String::new();

    // Every known (kind, status) is present, 0 when there are none, so alerts and rates
    // work from the first scrape.
    let counts = catalog.job_counts().await?;
    family(
        &mut s,
        "pgfleet_jobs",
        "gauge",
        "Jobs in the catalog by kind and status.",
    );
    let mut kinds: Vec<String> = JobKind::ALL.iter().map(|k| k.as_str().to_owned()).collect();
    for (kind, _, _) in &counts {
        if !kinds.contains(kind) {
            kinds.push(kind.clone());
        }
    }
    for kind in &kinds {
        for status in JobStatus::ALL {
            let n = counts
                .iter()
                .find(|(k, st, _)| k == kind && st == status.as_str())
                .map_or(0, |c| c.2);
            let _ = writeln!(
                s,
                "pgfleet_jobs{{kind=\"{}\",status=\"{status}\"}} {n}",
                label(kind)
            );
        }
    }

    family(
        &mut s,
        "pgfleet_job_duration_seconds",
        "histogram",
        "Time from a job's first start to its end, by kind (finished jobs).",
    );
    for h in catalog.job_durations().await? {
        let kind = label(&h.kind);
        for (bound, n) in DURATION_BUCKETS.iter().zip(&h.buckets) {
            let _ = writeln!(
                s,
                "pgfleet_job_duration_seconds_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            s,
            "pgfleet_job_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            s,
            "pgfleet_job_duration_seconds_sum{{kind=\"{kind}\"}} {}",
            h.sum_seconds
        );
        let _ = writeln!(
            s,
            "pgfleet_job_duration_seconds_count{{kind=\"{kind}\"}} {}",
            h.count
        );
    }

    family(
        &mut s,
        "pgfleet_rollouts",
        "gauge",
        "Rollouts in the catalog by status.",
    );
    let rollout_counts = catalog.rollout_counts().await?;
    for status in crate::status::RolloutStatus::ALL {
        let n = rollout_counts
            .iter()
            .find(|(st, _)| st == status.as_str())
            .map_or(0, |c| c.1);
        let _ = writeln!(s, "pgfleet_rollouts{{status=\"{status}\"}} {n}");
    }
    family(
        &mut s,
        "pgfleet_webhook_deliveries",
        "gauge",
        "Webhook deliveries in the catalog by status (pending: not delivered yet, retrying).",
    );
    let delivery_counts = catalog.delivery_counts().await?;
    for status in ["pending", "delivered", "failed"] {
        let n = delivery_counts
            .iter()
            .find(|(st, _)| st == status)
            .map_or(0, |c| c.1);
        let _ = writeln!(s, "pgfleet_webhook_deliveries{{status=\"{status}\"}} {n}");
    }

    family(&mut s, "pgfleet_tenants", "gauge", "Tenants by status.");
    let tenant_counts = catalog.tenant_counts().await?;
    for status in TenantStatus::ALL {
        let n = tenant_counts
            .iter()
            .find(|(st, _)| st == status.as_str())
            .map_or(0, |c| c.1);
        let _ = writeln!(s, "pgfleet_tenants{{status=\"{status}\"}} {n}");
    }

    // Backup ages as a distribution, whatever the fleet's size; one series per tenant only
    // when asked for (`--metrics-per-tenant`).
    let ages = catalog
        .backup_age_summary(&BACKUP_AGE_BOUNDS, BACKUP_OVERDUE_AFTER)
        .await?;
    family(
        &mut s,
        "pgfleet_backup_age_tenants",
        "gauge",
        "Active tenants whose newest good backup finished at most `le` seconds ago (cumulative; +Inf: all active tenants, never backed up included).",
    );
    for (bound, n) in &ages.at_most {
        let _ = writeln!(s, "pgfleet_backup_age_tenants{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(s, "pgfleet_backup_age_tenants{{le=\"+Inf\"}} {}", ages.active);
    gauge(
        &mut s,
        "pgfleet_backup_never_tenants",
        "Active tenants without any good backup.",
        ages.never,
    );
    gauge(
        &mut s,
        "pgfleet_backup_due_tenants",
        "Active tenants whose scheduled backup has not produced a good backup yet.",
        ages.due,
    );
    gauge(
        &mut s,
        "pgfleet_backup_overdue_tenants",
        "Active tenants whose scheduled backup has been due for more than 6 hours without a good backup.",
        ages.overdue,
    );
    family(
        &mut s,
        "pgfleet_backup_oldest_age_seconds",
        "gauge",
        "The active tenants with the oldest newest good backup (at most 10), seconds since it finished (+Inf: never).",
    );
    for (slug, age) in catalog.oldest_backups(OLDEST_SHOWN).await? {
        let _ = writeln!(
            s,
            "pgfleet_backup_oldest_age_seconds{{tenant=\"{}\"}} {}",
            label(&slug),
            number(age.unwrap_or(f64::INFINITY))
        );
    }
    if state.metrics_per_tenant {
        family(
            &mut s,
            "pgfleet_tenant_last_backup_age_seconds",
            "gauge",
            "Seconds since each active tenant's newest good backup finished (+Inf: never backed up).",
        );
        for (slug, age) in catalog.backup_ages().await? {
            let _ = writeln!(
                s,
                "pgfleet_tenant_last_backup_age_seconds{{tenant=\"{}\"}} {}",
                label(&slug),
                number(age.unwrap_or(f64::INFINITY))
            );
        }
    }

    // Storage: the largest tenants (all with --metrics-per-tenant) and every tenant over its
    // quota, as measured by the workers (`PGFLEET_STORAGE_INTERVAL`).
    let (largest, over_quota, total) = catalog
        .tenant_storage((!state.metrics_per_tenant).then_some(OLDEST_SHOWN))
        .await?;
    gauge(
        &mut s,
        "pgfleet_storage_bytes_total",
        "Sum of the live tenants' database sizes as last measured.",
        total,
    );
    family(
        &mut s,
        "pgfleet_tenant_storage_bytes",
        "gauge",
        "Database size of the largest tenants (at most 10; every tenant with --metrics-per-tenant) as last measured.",
    );
    for (slug, bytes, _) in &largest {
        let _ = writeln!(
            s,
            "pgfleet_tenant_storage_bytes{{tenant=\"{}\"}} {bytes}",
            label(slug)
        );
    }
    family(
        &mut s,
        "pgfleet_tenant_storage_over_quota_bytes",
        "gauge",
        "Tenants past their storage quota: bytes above it (reported, never enforced).",
    );
    for (slug, bytes, quota) in &over_quota {
        let _ = writeln!(
            s,
            "pgfleet_tenant_storage_over_quota_bytes{{tenant=\"{}\"}} {}",
            label(slug),
            bytes - quota
        );
    }
    gauge(
        &mut s,
        "pgfleet_tenants_over_storage_quota",
        "Tenants whose database is larger than their storage quota.",
        over_quota.len() as i64,
    );
    family(
        &mut s,
        "pgfleet_server_tenants",
        "gauge",
        "Tenants (not deleted) on each server, with its capacity and status.",
    );
    let servers = catalog.servers().await?;
    for server in &servers {
        let _ = writeln!(
            s,
            "pgfleet_server_tenants{{server=\"{}\",status=\"{}\"}} {}",
            label(&server.name),
            server.status,
            server.tenants
        );
    }
    family(
        &mut s,
        "pgfleet_server_capacity",
        "gauge",
        "Tenants each server may hold (servers with a capacity only).",
    );
    for server in &servers {
        if let Some(capacity) = server.capacity {
            let _ = writeln!(
                s,
                "pgfleet_server_capacity{{server=\"{}\"}} {capacity}",
                label(&server.name)
            );
        }
    }
    // Warm pool, per server that has one: its size, ready entries, and how long it has been
    // short (0 when full) — a refill lag that keeps growing means signups go cold.
    let warm: Vec<_> = servers.iter().filter(|srv| srv.warm_target.is_some()).collect();
    for (name, help) in [
        (
            "pgfleet_warm_pool_size",
            "Databases each server's warm pool is kept at.",
        ),
        (
            "pgfleet_warm_pool_ready",
            "Warm pool databases ready to be claimed by a signup.",
        ),
        (
            "pgfleet_warm_pool_short_seconds",
            "Seconds each server's warm pool has been below its size (0: full).",
        ),
    ] {
        family(&mut s, name, "gauge", help);
        for server in &warm {
            let value = match name {
                "pgfleet_warm_pool_size" => f64::from(server.warm_target.unwrap_or(0)),
                "pgfleet_warm_pool_ready" => server.warm_ready as f64,
                _ => server.warm_short_since.map_or(0.0, |since| {
                    (chrono::Utc::now() - since).num_milliseconds() as f64 / 1000.0
                }),
            };
            let _ = writeln!(s, "{name}{{server=\"{}\"}} {value}", label(&server.name));
        }
    }

    gauge(
        &mut s,
        "pgfleet_dead_letters",
        "Messages dead-lettered with a reason recorded in the catalog.",
        catalog.dead_letter_count().await?,
    );

    out.push_str(&s);
    Ok(())
}

async fn broker_series(state: &ApiState, out: &mut String) -> anyhow::Result<()> {
    let depths = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        state.fleet.producer.publisher().queue_depths(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within 3 s"))??;
    let mut s = String::new();
    family(
        &mut s,
        "pgfleet_queue_messages",
        "gauge",
        "Messages ready in each queue (not yet delivered to a worker).",
    );
    for (queue, messages, _) in &depths {
        let _ = writeln!(
            s,
            "pgfleet_queue_messages{{queue=\"{}\"}} {messages}",
            label(queue)
        );
    }
    family(
        &mut s,
        "pgfleet_queue_consumers",
        "gauge",
        "Consumers (workers) of each queue.",
    );
    for (queue, _, consumers) in &depths {
        let _ = writeln!(
            s,
            "pgfleet_queue_consumers{{queue=\"{}\"}} {consumers}",
            label(queue)
        );
    }
    out.push_str(&s);
    Ok(())
}
