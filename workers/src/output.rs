//! Human and `--json` output of catalog records. JSON field names are a public contract
//! (DESIGN.md "CLI"); nothing here prints a secret.

use chrono::{DateTime, SecondsFormat, Utc};
use pgfleet_shared::catalog::{BackupRecord, JobRecord, TenantRecord};
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
