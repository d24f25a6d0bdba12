//! Human and `--json` output of catalog records. JSON field names are a public contract
//! (DESIGN.md "CLI"); nothing here prints a secret.

use chrono::{DateTime, SecondsFormat, Utc};
use pgfleet_shared::catalog::{BackupRecord, JobRecord, RolloutRecord, RolloutTenant, TenantRecord};
use pgfleet_shared::rollouts::Plan;
use serde_json::{json, Value};

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn tenant_json(t: &TenantRecord) -> Value {
    json!({
        "slug": t.slug,
        "status": t.status,
        "database": t.database_name,
        "role": t.role_name,
        "server": t.server,
        "region": t.region,
        "schema_version": t.schema_version,
        "connection_limit": t.connection_limit,
        "backup_schedule": t.backup_schedule,
        "retention_days": t.retention_days,
        "keep_min": t.keep_min,
        "created_at": time(&t.created_at),
        "updated_at": time(&t.updated_at),
    })
}

pub fn job_json(j: &JobRecord) -> Value {
    json!({
        "id": j.id,
        "kind": j.kind,
        "tenant": j.tenant,
        "status": j.status,
        "attempts": j.attempts,
        "max_attempts": j.max_attempts,
        "key": j.idempotency_key,
        "error": j.error,
        "outcome": j.outcome,
        "created_at": time(&j.created_at),
        "started_at": j.started_at.as_ref().map(time),
        "finished_at": j.finished_at.as_ref().map(time),
    })
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub fn print_tenants(tenants: &[TenantRecord], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(tenants.iter().map(tenant_json).collect()));
    }
    println!(
        "{:<30} {:<13} {:<8} {:<10} {:<40}",
        "SLUG", "STATUS", "VERSION", "SERVER", "DATABASE"
    );
    for t in tenants {
        let version = t
            .schema_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<30} {:<13} {:<8} {:<10} {:<40}",
            t.slug, t.status, version, t.server, t.database_name
        );
    }
}

pub fn print_tenant(t: &TenantRecord, as_json: bool) {
    if as_json {
        return print_json(&tenant_json(t));
    }
    let v = tenant_json(t);
    for (k, val) in v.as_object().into_iter().flatten() {
        println!("{k:<17} {}", plain(val));
    }
}

pub fn print_jobs(jobs: &[JobRecord], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(jobs.iter().map(job_json).collect()));
    }
    println!(
        "{:<36} {:<10} {:<24} {:<10} {:>3}  {:<24} ERROR",
        "ID", "KIND", "TENANT", "STATUS", "TRY", "CREATED"
    );
    for j in jobs {
        println!(
            "{:<36} {:<10} {:<24} {:<10} {:>3}  {:<24} {}",
            j.id,
            j.kind,
            j.tenant,
            j.status,
            j.attempts,
            time(&j.created_at),
            j.error.as_deref().unwrap_or("")
        );
    }
}

pub fn print_job(j: &JobRecord, as_json: bool) {
    if as_json {
        return print_json(&job_json(j));
    }
    let v = job_json(j);
    for (k, val) in v.as_object().into_iter().flatten() {
        println!("{k:<13} {}", plain(val));
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn backup_json(b: &BackupRecord) -> Value {
    json!({
        "id": b.id,
        "tenant": b.tenant,
        "key": b.key,
        "bytes": b.bytes,
        "raw_bytes": b.raw_bytes,
        "sha256": b.sha256,
        "status": b.status,
        "job_id": b.job_id,
        "duration_ms": b.duration_ms,
        "error": b.error,
        "created_at": time(&b.created_at),
        "finished_at": b.finished_at.as_ref().map(time),
    })
}

pub fn print_backups(backups: &[BackupRecord], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(backups.iter().map(backup_json).collect()));
    }
    println!(
        "{:<36} {:<10} {:>12} {:<24} KEY",
        "ID", "STATUS", "BYTES", "CREATED"
    );
    for b in backups {
        let bytes = b.bytes.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<36} {:<10} {:>12} {:<24} {}",
            b.id,
            b.status,
            bytes,
            time(&b.created_at),
            b.key
        );
    }
}

pub fn rollout_json(r: &RolloutRecord) -> Value {
    json!({
        "id": r.id,
        "status": r.status,
        "target_version": r.target_version,
        "tenants": r.tenants,
        "succeeded": r.succeeded,
        "failed": r.failed,
        "skipped": r.skipped,
        "remaining": r.remaining,
        "canary": r.canary,
        "max_failures": r.max_failures,
        "concurrency": r.server_concurrency,
        "halted_reason": r.halted_reason,
        "created_at": time(&r.created_at),
        "finished_at": r.finished_at.as_ref().map(time),
    })
}

pub fn print_rollouts(rollouts: &[RolloutRecord], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(rollouts.iter().map(rollout_json).collect()));
    }
    println!(
        "{:<36} {:<8} {:>7} {:>7} {:>6} {:>7} {:>9}  CREATED",
        "ID", "STATUS", "VERSION", "TENANTS", "DONE", "FAILED", "REMAINING"
    );
    for r in rollouts {
        println!(
            "{:<36} {:<8} {:>7} {:>7} {:>6} {:>7} {:>9}  {}",
            r.id,
            r.status,
            r.target_version,
            r.tenants,
            r.succeeded,
            r.failed,
            r.remaining,
            time(&r.created_at)
        );
    }
}

pub fn print_rollout(r: &RolloutRecord, tenants: &[RolloutTenant], as_json: bool) {
    if as_json {
        let mut v = rollout_json(r);
        v["per_tenant"] = Value::Array(
            tenants
                .iter()
                .map(|t| {
                    json!({
                        "tenant": t.tenant, "phase": t.phase, "job_id": t.job_id, "status": t.job_status,
                        "attempts": t.attempts, "error": t.error, "schema_version": t.schema_version,
                    })
                })
                .collect(),
        );
        return print_json(&v);
    }
    for (k, val) in rollout_json(r).as_object().into_iter().flatten() {
        println!("{k:<15} {}", plain(val));
    }
    if !tenants.is_empty() {
        println!();
        println!(
            "{:<30} {:<7} {:<10} {:>7}  ERROR",
            "TENANT", "PHASE", "STATUS", "VERSION"
        );
        for t in tenants {
            println!(
                "{:<30} {:<7} {:<10} {:>7}  {}",
                t.tenant,
                t.phase,
                t.job_status.as_deref().unwrap_or("pending"),
                t.schema_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                t.error.as_deref().unwrap_or("")
            );
        }
    }
}

pub fn print_plan(plan: &Plan, target: i64, source: &str, as_json: bool) {
    if as_json {
        return print_json(&json!({
            "target_version": target,
            "source": source,
            "up_to_date": plan.up_to_date,
            "to_migrate": plan.targets.iter().map(|(t, pending)| json!({"tenant": t.slug, "schema_version": t.schema_version, "pending": pending})).collect::<Vec<_>>(),
        }));
    }
    println!(
        "target version {target} (from {source}): {} tenant(s) to migrate, {} already there",
        plan.targets.len(),
        plan.up_to_date
    );
    for (t, pending) in &plan.targets {
        println!(
            "  {:<30} at {:<6} pending {:?}",
            t.slug,
            t.schema_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            pending
        );
    }
}
