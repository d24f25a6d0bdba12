//! Tenant moves (`move` jobs): one row per job, written before anything is made on the
//! target, so an interrupted move knows where it was. The switch to the new server is one
//! fenced transaction: only the job's live lease may point the tenant elsewhere.

use super::error::{CatalogError, Result};
use super::jobs::fenced_by;
use super::{Catalog, Fence};
use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MoveRecord {
    pub job_id: Uuid,
    pub tenant_id: Uuid,
    pub from_server_id: Uuid,
    pub to_server_id: Uuid,
    /// copying, switched, done or rolled_back.
    pub phase: String,
    pub blocked_at: Option<DateTime<Utc>>,
    pub switched_at: Option<DateTime<Utc>>,
    pub downtime_ms: Option<i64>,
    pub verified: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const SELECT_MOVE: &str =
    "SELECT job_id, tenant_id, from_server_id, to_server_id, phase, blocked_at, switched_at,
        downtime_ms, verified, error, created_at, finished_at FROM tenant_moves";

impl Catalog {
    pub async fn tenant_move(&self, job_id: Uuid) -> Result<Option<MoveRecord>> {
        Ok(sqlx::query_as(&format!("{SELECT_MOVE} WHERE job_id = $1"))
            .bind(job_id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// The tenant's moves, newest first.
    pub async fn tenant_moves(&self, tenant_id: Uuid) -> Result<Vec<MoveRecord>> {
        Ok(sqlx::query_as(&format!(
            "{SELECT_MOVE} WHERE tenant_id = $1 ORDER BY created_at DESC"
        ))
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Records the move (once per job) and marks the active tenant `moving`; a tenant that
    /// is already moving for this job stays so. `Conflict` if another move of the tenant
    /// is unfinished or the tenant is not active.
    pub async fn start_move(&self, job: Fence, tenant_id: Uuid, from: Uuid, to: Uuid) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO tenant_moves (job_id, tenant_id, from_server_id, to_server_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(job.job_id)
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("tenant_moves_one_live") => {
                return Err(CatalogError::Conflict(
                    "another move of this tenant is unfinished; wait for it to end".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let marked = sqlx::query(&format!(
            "UPDATE tenants SET status = 'moving', updated_at = now()
              WHERE id = $1 AND status IN ('active', 'moving') AND {}",
            fenced_by(2, 3)
        ))
        .bind(tenant_id)
        .bind(job.job_id)
        .bind(job.epoch)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() == 0 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// When the tenant's logins were first blocked for this move (kept across attempts: the
    /// downtime counts from the first block).
    pub async fn move_blocked(&self, job_id: Uuid) -> Result<()> {
        sqlx::query("UPDATE tenant_moves SET blocked_at = coalesce(blocked_at, now()) WHERE job_id = $1")
            .bind(job_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Points the tenant at the target server and ends its downtime, in one transaction
    /// fenced by the job. `false` if the job lost its lease.
    pub async fn switch_move(&self, job: Fence, verified: &serde_json::Value) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let moved = sqlx::query(&format!(
            "UPDATE tenants t SET server_id = m.to_server_id, status = 'active', updated_at = now()
               FROM tenant_moves m
              WHERE m.job_id = $1 AND t.id = m.tenant_id AND m.phase = 'copying' AND {}",
            fenced_by(1, 2)
        ))
        .bind(job.job_id)
        .bind(job.epoch)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE tenant_moves SET phase = 'switched', switched_at = now(), verified = $2,
                    downtime_ms = (extract(epoch FROM now() - blocked_at) * 1000)::bigint
              WHERE job_id = $1",
        )
        .bind(job.job_id)
        .bind(verified)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The old copy is gone: the move is done.
    pub async fn finish_move(&self, job_id: Uuid) -> Result<()> {
        sqlx::query("UPDATE tenant_moves SET phase = 'done', finished_at = now() WHERE job_id = $1 AND phase = 'switched'")
            .bind(job_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The move was undone before its switch: the tenant is active on its old server again.
    /// `error` given: for good (the row is closed); `None`: a retry will start it again.
    pub async fn roll_back_move(&self, job_id: Uuid, tenant_id: Uuid, error: Option<&str>) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "UPDATE tenants SET status = CASE WHEN suspended_at IS NOT NULL THEN 'suspended' ELSE 'active' END,
                    updated_at = now()
              WHERE id = $1 AND status = 'moving'
                AND EXISTS (SELECT 1 FROM tenant_moves WHERE job_id = $2 AND phase = 'copying')",
        )
        .bind(tenant_id)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        if let Some(error) = error {
            sqlx::query(
                "UPDATE tenant_moves SET phase = 'rolled_back', error = $2, finished_at = now()
                  WHERE job_id = $1 AND phase = 'copying'",
            )
            .bind(job_id)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
