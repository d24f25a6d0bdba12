//! JSON shapes of catalog records. They are a public contract (DESIGN.md "CLI"): the CLI's
//! `--json` and the HTTP API both use them, so a field means the same everywhere. Nothing
//! here carries a secret.

use crate::catalog::{
    BackupRecord, BranchRecord, JobRecord, RolloutRecord, RolloutTenant, ServerRecord, TenantRecord,
};
use crate::fleet::Plan;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn tenant(t: &TenantRecord) -> Value {
    json!({
        "slug": t.slug,
        "status": t.status,
        "database": t.database_name,
        "role": t.role_name,
        "server": t.server,
        "server_kind": t.server_kind,
        "neon_project_id": t.neon_project_id,
        "region": t.region,
        "schema_version": t.schema_version,
        "connection_limit": t.connection_limit,
        "limits": {
            "connection_limit": t.connection_limit,
            "statement_timeout_ms": t.statement_timeout_ms,
            "idle_in_transaction_timeout_ms": t.idle_in_transaction_timeout_ms,
            "work_mem_kb": t.work_mem_kb,
            "storage_quota_bytes": t.storage_quota_bytes,
        },
        "storage_bytes": t.storage_bytes,
        "storage_measured_at": t.storage_measured_at.as_ref().map(time),
        "over_storage_quota": t.over_quota(),
        "suspended_at": t.suspended_at.as_ref().map(time),
        "backup_schedule": t.backup_schedule,
        "retention_days": t.retention_days,
        "keep_min": t.keep_min,
        "created_at": time(&t.created_at),
        "updated_at": time(&t.updated_at),
    })
}

/// A tenant server; its admin URL redacted, a Neon server's key never shown.
pub fn server(s: &ServerRecord) -> Value {
    let neon = s.neon.as_ref().map(|n| {
        json!({
            "api_url": crate::secrets::redact_url(&n.api_url),
            "region_id": n.region_id,
            "pg_version": n.pg_version,
            "org_id": n.org_id,
        })
    });
    json!({
        "name": s.name,
        "kind": s.kind,
        "region": s.region,
        "url": s.display_url,
        "status": s.status,
        "capacity": s.capacity,
        "tenants": s.tenants,
        "free": s.free(),
        "neon": neon,
        "warm_pool": {
            "size": s.warm_target,
            "ready": s.warm_ready,
            "building": s.warm_building,
            "short_since": s.warm_short_since.as_ref().map(time),
        },
    })
}

/// A server with its version as the server reported it (`null`: it did not answer).
pub fn server_state(s: &crate::fleet::ServerState) -> Value {
    let mut v = server(&s.record);
    v["version"] = json!(s.version);
    v["reachable"] = json!(s.version.is_some());
    v
}

/// A Neon tenant's branch (its URL is printed only when it is made).
pub fn branch(b: &BranchRecord) -> Value {
    json!({
        "name": b.name,
        "purpose": b.purpose,
        "schema_only": b.schema_only,
        "neon_branch_id": b.neon_branch_id,
        "ready": b.ready,
        "job_id": b.job_id,
        "database": b.database_name,
        "backup_id": b.backup_id,
        "backups": b.backups_enabled,
        "created_at": time(&b.created_at),
    })
}

pub fn job(j: &JobRecord) -> Value {
    json!({
        "id": j.id,
        "kind": j.kind,
        "tenant": j.tenant,
        "status": j.status,
        "attempts": j.attempts,
        "max_attempts": j.max_attempts,
        "key": j.shown_key(),
        "error": j.error,
        "outcome": j.outcome,
        "created_at": time(&j.created_at),
        "started_at": j.started_at.as_ref().map(time),
        "finished_at": j.finished_at.as_ref().map(time),
    })
}

pub fn backup(b: &BackupRecord) -> Value {
    json!({
        "id": b.id,
        "tenant": b.tenant,
        "branch": b.branch,
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

pub fn rollout(r: &RolloutRecord) -> Value {
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

/// A rollout with its per-tenant results.
pub fn rollout_with_tenants(r: &RolloutRecord, tenants: &[RolloutTenant]) -> Value {
    let mut v = rollout(r);
    v["per_tenant"] = tenants
        .iter()
        .map(|t| {
            json!({
                "tenant": t.tenant, "phase": t.phase, "job_id": t.job_id, "status": t.job_status,
                "attempts": t.attempts, "error": t.error, "schema_version": t.schema_version,
            })
        })
        .collect();
    v
}

/// What a rollout would do (or, with nothing to do, why it did not start).
pub fn plan(plan: &Plan, target: i64, source: &str) -> Value {
    json!({
        "target_version": target,
        "source": source,
        "up_to_date": plan.up_to_date,
        "to_migrate": plan.targets.iter().map(|(t, pending)| json!({
            "tenant": t.slug, "schema_version": t.schema_version, "pending": pending,
        })).collect::<Vec<_>>(),
    })
}

/// A webhook (its URL shown as scheme://host/… only; its secret never).
pub fn webhook(w: &crate::catalog::WebhookRecord) -> Value {
    json!({
        "id": w.id,
        "url": w.display_url,
        "events": w.events,
        "format": w.format,
        "created_at": time(&w.created_at),
    })
}

/// A webhook delivery: the event it carries and how its attempts went.
pub fn delivery(d: &crate::catalog::DeliveryRecord) -> Value {
    json!({
        "id": d.id,
        "webhook_id": d.webhook_id,
        "event": d.event,
        "payload": d.payload,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": time(&d.next_attempt_at),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": time(&d.created_at),
        "delivered_at": d.delivered_at.as_ref().map(time),
    })
}

/// A dead letter: its body as text (invalid UTF-8 replaced; at most 4 KiB shown, the length
/// given) — untrusted bytes, for whoever renders it to escape.
pub fn dead_letter(d: &crate::catalog::DeadLetterRecord) -> Value {
    const SHOWN: usize = 4096;
    let text = String::from_utf8_lossy(&d.body[..d.body.len().min(SHOWN)]).into_owned();
    json!({
        "id": d.id,
        "queue": d.queue,
        "routing_key": d.routing_key,
        "reason": d.reason,
        "body": text,
        "body_bytes": d.body.len(),
        "job_id": d.job_id,
        "received_at": time(&d.received_at),
    })
}
