//! Backups in the catalog: one row per attempt, written `running` before the first byte
//! goes to the store and `succeeded` only after the object was completed and verified.
//! Pruning is two-phase (`pruning`, delete the object, `pruned`) so a replay resumes it.

use super::error::{CatalogError, Result};
use super::jobs::fenced_by;
use super::{Catalog, Fence};
use crate::status::{BackupStatus, JobStatus};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One backup attempt of a tenant, and its object in the store.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackupRecord {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tenant: String,
    pub job_id: Option<Uuid>,
    pub key: String,
    pub status: BackupStatus,
    pub bytes: Option<i64>,
    pub raw_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub compression: String,
    pub pg_dump: Option<String>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub pruned_at: Option<DateTime<Utc>>,
    /// Status of the job that wrote it (`None` if the job row is gone).
    pub job_status: Option<JobStatus>,
    /// A backup of the tenant's dev copy of that name (`None`: of the tenant itself).
    pub branch: Option<String>,
}

const SELECT_BACKUP: &str =
    "SELECT b.id, b.tenant_id, t.slug::text AS tenant, b.job_id, b.key, b.status, b.bytes,
        b.raw_bytes, b.sha256, b.compression, b.pg_dump, b.duration_ms, b.error, b.created_at, b.finished_at,
        b.pruned_at, j.status AS job_status, b.branch
   FROM backups b JOIN tenants t ON t.id = b.tenant_id LEFT JOIN jobs j ON j.id = b.job_id";

/// Figures of a completed backup.
pub struct BackupStats<'a> {
    pub bytes: u64,
    pub raw_bytes: u64,
    pub sha256: &'a str,
    pub pg_dump: &'a str,
    pub duration_ms: u64,
}

impl Catalog {
    /// Records a backup attempt as `running` and returns its id. Two attempts of one job in
    /// the same second share a key; the earlier one must have failed, and its row is reused.
    pub async fn insert_backup(
        &self,
        id: Uuid,
        tenant_id: Uuid,
        fence: Fence,
        key: &str,
        created_at: DateTime<Utc>,
        branch: Option<&str>,
    ) -> Result<Uuid> {
        let recorded: Option<Uuid> = sqlx::query_scalar(&format!(
            "INSERT INTO backups (id, tenant_id, job_id, key, created_at, branch)
             SELECT $1, $2, $3, $4, $5, $7 WHERE {fenced}
             ON CONFLICT (key) DO UPDATE SET status = 'running', error = NULL, finished_at = NULL,
                    created_at = EXCLUDED.created_at
             WHERE backups.status = 'failed' AND backups.job_id = EXCLUDED.job_id
             RETURNING id",
            fenced = fenced_by(3, 6)
        ))
        .bind(id)
        .bind(tenant_id)
        .bind(fence.job_id)
        .bind(key)
        .bind(created_at)
        .bind(fence.epoch)
        .bind(branch)
        .fetch_optional(self.pool())
        .await?;
        recorded.ok_or_else(|| {
            CatalogError::Conflict(format!(
                "backup key {key} is already in use by another attempt that did not fail"
            ))
        })
    }

    /// The object is stored and verified: `succeeded`, with its figures. Fenced: `false`
    /// (nothing written) if the job was taken over meanwhile.
    pub async fn finish_backup_succeeded(
        &self,
        id: Uuid,
        fence: Fence,
        stats: &BackupStats<'_>,
    ) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE backups SET status = 'succeeded', bytes = $2, raw_bytes = $3, sha256 = $4, pg_dump = $5,
                    duration_ms = $6, error = NULL, finished_at = now()
             WHERE id = $1 AND status = 'running' AND {fenced}",
            fenced = fenced_by(7, 8)
        ))
        .bind(id)
        .bind(stats.bytes as i64)
        .bind(stats.raw_bytes as i64)
        .bind(stats.sha256)
        .bind(stats.pg_dump)
        .bind(stats.duration_ms as i64)
        .bind(fence.job_id)
        .bind(fence.epoch)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The attempt failed: `failed`, with the error (no object under its key).
    pub async fn finish_backup_failed(&self, id: Uuid, error: &str) -> Result<()> {
        sqlx::query("UPDATE backups SET status = 'failed', error = $2, finished_at = now() WHERE id = $1 AND status = 'running'")
            .bind(id)
            .bind(error)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Rows still `running` whose job is not running any more (a killed worker) are failed:
    /// their write never completed.
    pub async fn fail_interrupted_backups(&self, tenant_id: Uuid, except_job: Option<Uuid>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE backups b SET status = 'failed', error = 'interrupted (its worker stopped)', finished_at = now()
             WHERE b.tenant_id = $1 AND b.status = 'running' AND b.job_id IS DISTINCT FROM $2
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = b.job_id AND j.status = 'running')",
        )
        .bind(tenant_id)
        .bind(except_job)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// This job's own earlier attempts that never finished (their keys, to discard what they
    /// stored).
    pub async fn own_running_backups(&self, job_id: Uuid) -> Result<Vec<(Uuid, String)>> {
        Ok(
            sqlx::query_as("SELECT id, key FROM backups WHERE job_id = $1 AND status = 'running'")
                .bind(job_id)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Fails one of this job's earlier attempts once its object is gone.
    pub async fn fail_own_running_backup(&self, id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE backups SET status = 'failed', error = 'interrupted (an earlier attempt of this job)', finished_at = now()
             WHERE id = $1 AND status = 'running'",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The good backup an earlier attempt of this job stored and recorded, if any: the job's
    /// own outcome was lost after it (a killed worker), and a re-run must not store another.
    /// `branch`: of that dev copy; `None`: of the tenant itself.
    pub async fn succeeded_backup_of_job(
        &self,
        job_id: Uuid,
        branch: Option<&str>,
    ) -> Result<Option<BackupRecord>> {
        Ok(sqlx::query_as(&format!(
            "{SELECT_BACKUP} WHERE b.job_id = $1 AND b.status = 'succeeded' AND b.branch IS NOT DISTINCT FROM $2
              ORDER BY b.created_at DESC LIMIT 1"
        ))
        .bind(job_id)
        .bind(branch)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Newest first: the tenant's own and its dev copies' (`branch` set).
    pub async fn backups(&self, tenant_id: Uuid) -> Result<Vec<BackupRecord>> {
        Ok(sqlx::query_as(&format!(
            "{SELECT_BACKUP} WHERE b.tenant_id = $1 ORDER BY b.created_at DESC, b.id DESC"
        ))
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// One backup by id.
    pub async fn backup(&self, id: Uuid) -> Result<Option<BackupRecord>> {
        Ok(sqlx::query_as(&format!("{SELECT_BACKUP} WHERE b.id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// First phase of a prune: `false` if the backup is not `succeeded` (any more).
    pub async fn mark_backup_pruning(&self, id: Uuid) -> Result<bool> {
        let done =
            sqlx::query("UPDATE backups SET status = 'pruning' WHERE id = $1 AND status = 'succeeded'")
                .bind(id)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Second phase of a prune, once the object is deleted.
    pub async fn mark_backup_pruned(&self, id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE backups SET status = 'pruned', pruned_at = now() WHERE id = $1 AND status = 'pruning'",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
