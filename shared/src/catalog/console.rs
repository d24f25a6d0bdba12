//! What the web console reads and writes beyond the API's queries: sessions, the record of
//! operators' actions, a job's failed attempts, and the filtered lists its pages show.
//! Every list is keyset-paged on an indexed order, so a page costs the same at 100k tenants.

use super::error::Result;
use super::jobs::JOB_COLUMNS;
use super::tenants::{with_password, SELECT_TENANT};
use super::{Catalog, JobRecord, TenantRecord};
use crate::status::{JobKind, JobStatus, TenantStatus};
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

/// A signed-in console session (the cookie's secret is not kept, only its digest).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConsoleSession {
    pub role: String,
    pub operator: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One recorded console action.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConsoleAction {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub operator: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub ok: bool,
    pub result: String,
}

/// An attempt of a job that ended in an error (trigger `jobs_failed_attempt`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobAttempt {
    pub attempt: i32,
    pub worker: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
    pub status: String,
    pub error: String,
}

/// Which tenants the console's list shows.
#[derive(Debug, Clone, Default)]
pub struct TenantSearch {
    /// Part of the slug.
    pub text: Option<String>,
    pub status: Option<TenantStatus>,
    pub server: Option<String>,
    pub region: Option<String>,
    /// The last slug of the previous page.
    pub after: Option<String>,
    pub limit: i64,
}

/// Which jobs the console's list shows (newest first).
#[derive(Debug, Clone, Default)]
pub struct JobSearch {
    pub kind: Option<JobKind>,
    pub status: Option<JobStatus>,
    pub tenant: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// The previous page's last (created_at, id).
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// A rollout tenant whose migration failed, with the database's error.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RolloutFailure {
    pub tenant: String,
    pub phase: String,
    pub job_id: Uuid,
    pub attempts: i32,
    pub error: Option<String>,
    pub skipped: bool,
}

impl Catalog {
    /// Records a new session; also forgets expired ones.
    pub async fn create_console_session(
        &self,
        digest: &[u8],
        role: &str,
        operator: &str,
        lifetime: Duration,
    ) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < now()")
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions (id_digest, role, operator, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        )
        .bind(digest)
        .bind(role)
        .bind(operator)
        .bind(lifetime.as_secs_f64())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The live session of this digest: not expired, and used within `idle`. Marks it used
    /// (at most once a minute, so browsing is not a write per page).
    pub async fn console_session(&self, digest: &[u8], idle: Duration) -> Result<Option<ConsoleSession>> {
        Ok(sqlx::query_as(
            "WITH live AS (
                SELECT id_digest, role, operator, created_at, expires_at, last_seen_at FROM console_sessions
                 WHERE id_digest = $1 AND expires_at > now() AND last_seen_at > now() - make_interval(secs => $2)),
             touched AS (
                UPDATE console_sessions s SET last_seen_at = now() FROM live
                 WHERE s.id_digest = live.id_digest AND live.last_seen_at < now() - interval '1 minute')
             SELECT role, operator, created_at, expires_at FROM live",
        )
        .bind(digest)
        .bind(idle.as_secs_f64())
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn delete_console_session(&self, digest: &[u8]) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id_digest = $1")
            .bind(digest)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records what an operator did (or tried); returns the record's id.
    pub async fn record_console_action(
        &self,
        operator: &str,
        role: &str,
        action: &str,
        target: &str,
        ok: bool,
        result: &str,
    ) -> Result<Uuid> {
        Ok(sqlx::query_scalar(
            "INSERT INTO console_actions (operator, role, action, target, ok, result)
             VALUES ($1, $2, $3, $4, $5, left($6, 2000)) RETURNING id",
        )
        .bind(operator)
        .bind(role)
        .bind(action)
        .bind(target)
        .bind(ok)
        .bind(result)
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn console_action(&self, id: Uuid) -> Result<Option<ConsoleAction>> {
        Ok(sqlx::query_as("SELECT * FROM console_actions WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Recorded actions, newest first.
    pub async fn console_actions(&self, limit: i64) -> Result<Vec<ConsoleAction>> {
        Ok(
            sqlx::query_as("SELECT * FROM console_actions ORDER BY at DESC LIMIT $1")
                .bind(limit)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// A job's failed attempts, oldest first.
    pub async fn job_attempts(&self, job: Uuid) -> Result<Vec<JobAttempt>> {
        Ok(sqlx::query_as(
            "SELECT attempt, worker, started_at, ended_at, status, error FROM job_attempts
              WHERE job_id = $1 ORDER BY ended_at LIMIT 100",
        )
        .bind(job)
        .fetch_all(self.pool())
        .await?)
    }

    /// Jobs created in the last `window`, counted by (kind, status).
    pub async fn recent_job_counts(&self, window: Duration) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT kind, status, count(*) FROM jobs WHERE created_at > now() - make_interval(secs => $1)
              GROUP BY kind, status ORDER BY kind, status",
        )
        .bind(window.as_secs_f64())
        .fetch_all(self.pool())
        .await?)
    }

    /// A page of tenants matching `search`, by slug.
    pub async fn search_tenants(&self, search: &TenantSearch) -> Result<Vec<TenantRecord>> {
        let rows = sqlx::query(&format!(
            "{SELECT_TENANT}
              WHERE ($1::text IS NULL OR strpos(t.slug::text, $1) > 0)
                AND ($2::text IS NULL OR t.status = $2)
                AND ($3::text IS NULL OR s.name = $3::citext)
                AND ($4::text IS NULL OR t.region = $4)
                AND ($5::text IS NULL OR t.slug > $5::citext)
              ORDER BY t.slug LIMIT $6"
        ))
        .bind(search.text.as_deref().map(str::to_lowercase))
        .bind(search.status)
        .bind(search.server.as_deref())
        .bind(search.region.as_deref())
        .bind(search.after.as_deref())
        .bind(search.limit)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(with_password).collect()
    }

    /// A page of jobs matching `search`, newest first.
    pub async fn search_jobs(&self, search: &JobSearch) -> Result<Vec<JobRecord>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs
              WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR status = $2)
                AND ($3::text IS NULL OR tenant = $3::citext)
                AND ($4::timestamptz IS NULL OR created_at >= $4)
                AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6))
              ORDER BY created_at DESC, id DESC LIMIT $7"
        ))
        .bind(search.kind.map(|k| k.as_str()))
        .bind(search.status)
        .bind(search.tenant.as_deref())
        .bind(search.since)
        .bind(search.before.map(|b| b.0))
        .bind(search.before.map(|b| b.1))
        .bind(search.limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// A rollout's failed tenants (real failures first, then those its halt skipped), at
    /// most `limit`.
    pub async fn rollout_failures(&self, rollout: Uuid, limit: i64) -> Result<Vec<RolloutFailure>> {
        Ok(sqlx::query_as(
            "SELECT t.slug::text AS tenant, rt.phase, j.id AS job_id, j.attempts, j.error,
                    coalesce(j.error LIKE 'skipped:%', false) AS skipped
               FROM rollout_tenants rt JOIN jobs j ON j.id = rt.job_id JOIN tenants t ON t.id = rt.tenant_id
              WHERE rt.rollout_id = $1 AND j.status IN ('failed', 'dead')
              ORDER BY skipped, t.slug LIMIT $2",
        )
        .bind(rollout)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// A rollout's tenants counted by (phase, outcome) (its maintained counters).
    pub async fn rollout_phase_counts(&self, rollout: Uuid) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT phase, outcome, sum(n)::int8 FROM rollout_counts WHERE rollout_id = $1
              GROUP BY phase, outcome HAVING sum(n) <> 0",
        )
        .bind(rollout)
        .fetch_all(self.pool())
        .await?)
    }

    /// Servers' and regions' names, for the tenant list's filters.
    pub async fn server_and_region_names(&self) -> Result<(Vec<String>, Vec<String>)> {
        let servers = sqlx::query_scalar(
            "SELECT name::text FROM tenant_servers WHERE status <> 'removed' ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        let regions = sqlx::query_scalar(
            "SELECT DISTINCT region FROM tenant_servers WHERE region IS NOT NULL AND status <> 'removed' ORDER BY 1",
        )
        .fetch_all(self.pool())
        .await?;
        Ok((servers, regions))
    }
}
