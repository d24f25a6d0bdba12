//! Scheduled backups in the catalog. `enqueue_scheduled_backups` advances each tenant's
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

/// An active tenant as the scheduler sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduledTenant {
    pub id: Uuid,
    pub slug: String,
    pub backup_schedule: String,
    /// The newest slot already handled; slots at or before it are never enqueued again.
    pub scheduled_through: DateTime<Utc>,
}

/// A backup slot that is due for a tenant.
#[derive(Debug, Clone)]
pub struct DueBackup {
    pub tenant_id: Uuid,
    pub slug: String,
    pub slot: DateTime<Utc>,
}

/// The idempotency key of a scheduled backup.
pub fn scheduled_backup_key(slug: &str, slot: &DateTime<Utc>) -> String {
    format!(
        "backup:{slug}:{}",
        slot.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

impl Catalog {
    /// Every active tenant with its schedule and the newest slot handled.
    pub async fn scheduled_tenants(&self) -> Result<Vec<ScheduledTenant>> {
        sqlx::query_as(
            "SELECT id, slug::text AS slug, backup_schedule,
                    coalesce(backup_scheduled_through, created_at) AS scheduled_through
               FROM tenants WHERE status = 'active'",
        )
        .fetch_all(self.pool())
        .await
        .map_err(Into::into)
    }

    /// Records a backup job for each due slot not handled yet (by this or another
    /// scheduler) and advances the tenants past it. Returns only the jobs created here, which
    /// the caller publishes; they are recorded as dispatched, see `mark_undispatched_many`.
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
            .map(|d| scheduled_backup_key(&d.slug, &d.slot))
            .collect();
        let payload =
            serde_json::to_value(JobSpec::Backup(NoFields {})).expect("a job spec always serializes");
        sqlx::query_as(&format!(
            "WITH due AS (
                SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[])
                    AS d(tenant_id, slot, job_id, key)),
             advanced AS (
                UPDATE tenants t SET backup_scheduled_through = d.slot
                  FROM due d
                 WHERE t.id = d.tenant_id AND t.status = 'active'
                   AND coalesce(t.backup_scheduled_through, t.created_at) < d.slot
                RETURNING t.slug, d.job_id, d.key)
             {}",
            insert_jobs_sql(
                "SELECT job_id, key, $5::text, slug, $6::jsonb, $7::int FROM advanced",
                Dispatch::Now,
                "DO NOTHING",
                true,
            )
        ))
        .bind(&tenant_ids)
        .bind(&slots)
        .bind(&job_ids)
        .bind(&keys)
        .bind(JobKind::Backup.as_str())
        .bind(&payload)
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
