//! Scheduled backups in the catalog — and scheduled prunes of deleted tenants that still
//! have backups, so those expire by their own retention. `enqueue_scheduled_backups` advances each tenant's
//! `backup_scheduled_through` and records the slot's job in one statement: the conditional
//! UPDATE is what makes a slot enqueue once across scheduler replicas (a second replica's
//! update finds the row already advanced and returns nothing), and the job's key
//! `backup:<slug>:<slot>` makes it once even if a row were reset by hand.

use super::error::Result;
use super::jobs::{insert_jobs_sql, Dispatch};
use super::{Catalog, JobRecord};
use crate::message::{JobKind, JobSpec, NoFields};
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

/// A tenant as the scheduler sees it: an active one (backed up at its slots) or a deleted
/// one with backups left (pruned at its slots).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduledTenant {
    pub id: Uuid,
    pub slug: String,
    pub backup_schedule: String,
    /// The newest slot already handled; slots at or before it are never enqueued again.
    pub scheduled_through: DateTime<Utc>,
    pub deleted: bool,
    /// How many tenants the query found in all (before its limit).
    pub candidates: i64,
}

/// A slot that is due for a tenant: a backup, or for a deleted tenant a prune.
#[derive(Debug, Clone)]
pub struct DueBackup {
    pub tenant_id: Uuid,
    pub slug: String,
    pub slot: DateTime<Utc>,
    pub prune_only: bool,
}

/// The idempotency key of a scheduled backup.
pub fn scheduled_backup_key(slug: &str, slot: &DateTime<Utc>) -> String {
    format!(
        "backup:{slug}:{}",
        slot.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// The idempotency key of a deleted tenant's scheduled prune.
pub fn scheduled_prune_key(slug: &str, slot: &DateTime<Utc>) -> String {
    format!("prune:{slug}:{}", slot.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The tenants the scheduler serves: active ones, and deleted ones whose backups still have
/// to expire. A UNION rather than `active OR (deleted AND EXISTS …)`: with the OR, the
/// planner costs the EXISTS once per tenant, and at 100,000 tenants that estimate makes
/// Postgres JIT-compile the query — ~150 ms of compiling for ~25 ms of work, every tick.
const SCHEDULED_TENANTS: &str = "(SELECT * FROM tenants WHERE status = 'active'
     UNION ALL
     SELECT * FROM tenants d WHERE d.status = 'deleted'
        AND EXISTS (SELECT 1 FROM backups b WHERE b.tenant_id = d.id AND b.status IN ('succeeded', 'pruning')))";

impl Catalog {
    /// The schedules the scheduler's tenants use, with how many tenants use each: a fleet
    /// shares a handful, so a tick works out each one's newest slot once.
    pub async fn schedules_in_use(&self) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(&format!(
            "SELECT backup_schedule, count(*) FROM {SCHEDULED_TENANTS} t GROUP BY 1 ORDER BY 1"
        ))
        .fetch_all(self.pool())
        .await?)
    }

    /// The scheduler's tenants on these schedules whose newest handled slot is before the
    /// schedule's `newest` slot — the only ones that can owe a backup (a spread offset only
    /// makes a tenant's slot older) — oldest slot first; at most `limit` (each row
    /// says how many there were in all).
    pub async fn scheduled_tenants(
        &self,
        schedules: &[(String, DateTime<Utc>)],
        limit: Option<i64>,
    ) -> Result<Vec<ScheduledTenant>> {
        let (names, newest): (Vec<&str>, Vec<DateTime<Utc>>) = schedules
            .iter()
            .map(|(name, slot)| (name.as_str(), *slot))
            .unzip();
        Ok(sqlx::query_as(&format!(
            "SELECT t.id, t.slug::text AS slug, t.backup_schedule,
                    coalesce(t.backup_scheduled_through, t.created_at) AS scheduled_through,
                    t.status = 'deleted' AS deleted, count(*) OVER () AS candidates
               FROM unnest($1::text[], $2::timestamptz[]) AS s (schedule, newest)
               JOIN {SCHEDULED_TENANTS} t ON t.backup_schedule = s.schedule
              WHERE coalesce(t.backup_scheduled_through, t.created_at) < s.newest
              ORDER BY s.newest, t.id
              LIMIT $3"
        ))
        .bind(&names)
        .bind(&newest)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// Records a backup (or a deleted tenant's prune) job for each due slot not handled yet (by this or another
    /// scheduler) and advances the tenants past it. Returns only the jobs created here, which
    /// the caller publishes; they are recorded as dispatched (unconfirmed), see
    /// `confirm_dispatched` and `mark_undispatched_many`.
    pub async fn enqueue_scheduled_backups(
        &self,
        due: &[DueBackup],
        max_attempts: i32,
    ) -> Result<Vec<JobRecord>> {
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let tenant_ids: Vec<Uuid> = due.iter().map(|d| d.tenant_id).collect();
        let slots: Vec<DateTime<Utc>> = due.iter().map(|d| d.slot).collect();
        let job_ids: Vec<Uuid> = due.iter().map(|_| Uuid::now_v7()).collect();
        let keys: Vec<String> = due
            .iter()
            .map(|d| match d.prune_only {
                false => scheduled_backup_key(&d.slug, &d.slot),
                true => scheduled_prune_key(&d.slug, &d.slot),
            })
            .collect();
        let specs: Vec<JobSpec> = due
            .iter()
            .map(|d| match d.prune_only {
                false => JobSpec::Backup(NoFields {}),
                true => JobSpec::Prune(NoFields {}),
            })
            .collect();
        let kinds: Vec<JobKind> = specs.iter().map(JobSpec::kind).collect();
        let payloads: Vec<serde_json::Value> = specs
            .iter()
            .map(|s| serde_json::to_value(s).expect("a job spec always serializes"))
            .collect();
        // `t.id = ANY($1)` besides the join: without it the planner hashes the whole
        // `tenants` table for every batch (45 ms per 2,000 tenants at 100k tenants, so a
        // tick grew with the square of the fleet); with it, it looks the batch up by key.
        sqlx::query_as(&format!(
            "WITH due AS (
                SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[], $5::text[], $6::jsonb[])
                    AS d(tenant_id, slot, job_id, key, kind, payload)),
             advanced AS (
                UPDATE tenants t SET backup_scheduled_through = d.slot,
                       backup_due_since = CASE WHEN d.kind = 'backup'
                                               THEN coalesce(t.backup_due_since, d.slot)
                                               ELSE t.backup_due_since END
                  FROM due d
                 WHERE t.id = d.tenant_id AND t.id = ANY($1) AND t.status IN ('active', 'deleted')
                   AND coalesce(t.backup_scheduled_through, t.created_at) < d.slot
                RETURNING t.slug, d.job_id, d.key, d.kind, d.payload)
             {}",
            insert_jobs_sql(
                "SELECT job_id, key, kind, slug, payload, $7::int FROM advanced",
                Dispatch::Publishing,
                "DO NOTHING",
                true,
            )
        ))
        .bind(&tenant_ids)
        .bind(&slots)
        .bind(&job_ids)
        .bind(&keys)
        .bind(&kinds)
        .bind(&payloads)
        .bind(max_attempts)
        .fetch_all(self.pool())
        .await
        .map_err(Into::into)
    }

    /// Publishing failed: leave these queued jobs for a worker's sweep to dispatch.
    pub async fn mark_undispatched_many(&self, ids: &[Uuid]) -> Result<()> {
        sqlx::query("UPDATE jobs SET dispatched_at = NULL WHERE id = ANY($1) AND status = 'queued'")
            .bind(ids)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
