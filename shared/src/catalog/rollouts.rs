//! Rollouts in the catalog: a recorded migration set (versions, checksums, SQL), the tenants
//! it covers by phase (canary, main) and their jobs. `advance_rollout` is the one place that
//! moves a rollout on: it enqueues the main phase after a clean canary, halts on too many
//! failures, and closes it when every job ended. It locks the rollout row, so any number of
//! workers (and waiting CLIs) may call it at once.

use super::error::{CatalogError, Result};
use super::tenants::{with_password, SELECT_TENANT};
use super::{Catalog, JobRecord, TenantRecord};
use crate::message::{JobKind, JobSpec, MigrateSpec};
use crate::migration_set::{Migration, MigrationSet};
use crate::slug::TenantSlug;
use crate::status::{JobStatus, RolloutStatus};
use crate::tenant_migrations::Timeouts;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A rollout with its progress counts over its tenants.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RolloutRecord {
    pub id: Uuid,
    pub target_version: i64,
    pub canary: i32,
    pub max_failures: Option<i32>,
    pub server_concurrency: i32,
    pub status: RolloutStatus,
    pub halted_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub tenants: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Tenants not finished (including those whose job was never created).
    pub remaining: i64,
    /// Jobs still queued or running (a halted rollout lets these finish).
    pub active: i64,
}

/// One tenant of a rollout: its phase, its job and how that ended.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RolloutTenant {
    pub tenant: String,
    pub phase: String,
    pub job_id: Option<Uuid>,
    pub job_status: Option<JobStatus>,
    pub attempts: Option<i32>,
    pub error: Option<String>,
    pub schema_version: Option<i64>,
}

/// A rollout with its progress, from the counters the catalog keeps per rollout (migration
/// `…_rollout_counts.sql`): O(1) in the rollout's size.
const SELECT_ROLLOUT: &str = "SELECT r.id, r.target_version, r.canary, r.max_failures, r.server_concurrency, r.status, r.halted_reason,
        r.created_at, r.finished_at,
        coalesce(c.tenants, 0) AS tenants, coalesce(c.succeeded, 0) AS succeeded, coalesce(c.failed, 0) AS failed,
        coalesce(c.skipped, 0) AS skipped, coalesce(c.remaining, 0) AS remaining, coalesce(c.active, 0) AS active
   FROM rollouts r LEFT JOIN LATERAL (
        SELECT sum(n)::bigint AS tenants,
               (sum(n) FILTER (WHERE outcome = 'succeeded'))::bigint AS succeeded,
               (sum(n) FILTER (WHERE outcome = 'failed'))::bigint AS failed,
               (sum(n) FILTER (WHERE outcome = 'skipped'))::bigint AS skipped,
               (sum(n) FILTER (WHERE outcome IN ('none', 'active')))::bigint AS remaining,
               (sum(n) FILTER (WHERE outcome = 'active'))::bigint AS active
          FROM rollout_counts WHERE rollout_id = r.id) c ON true";

/// The advisory-lock class of a tenant server's migration slots, for the tenant row `t`:
/// the server id's first 4 bytes as an int.
const SERVER_SLOT_CLASS: &str = "('x' || left(replace(t.server_id::text, '-', ''), 8))::bit(32)::int";

/// A live migrate job (`j`), as the partial index `jobs_live_by_rollout` has them, keyed by
/// `j.payload ->> 'rollout'`; queries must keep this predicate for the index to serve them.
const LIVE_MIGRATE_JOB: &str = "j.kind = 'migrate' AND j.status IN ('queued', 'running')";

/// How a rollout runs (recorded with it).
#[derive(Debug, Clone)]
pub struct RolloutSettings {
    /// Tenants migrated first (in slug order); the rest only if all of them succeed.
    pub canary: usize,
    /// Halt after this many failed tenants.
    pub max_failures: Option<i32>,
    /// Migrations at once on one tenant server, across all workers.
    pub server_concurrency: i32,
    /// Limits on each tenant's migration statements.
    pub timeouts: Timeouts,
}

/// What a migrate job found when it started (see `Catalog::start_tenant_migration`).
#[derive(Debug)]
pub struct TenantMigrationStart {
    /// The rollout's limits on the tenant's migration statements.
    pub timeouts: Timeouts,
    pub rollout_status: RolloutStatus,
    pub halted_reason: Option<String>,
    pub tenant: Option<TenantRecord>,
    /// The slot's advisory lock key (class, slot), held on the connection the query ran on.
    pub slot: Option<(i32, i32)>,
}

/// Prefix of the error of a job that never ran because its rollout halted.
pub const SKIPPED: &str = "skipped:";

impl Catalog {
    /// Every (version, checksum) applied to any tenant or recorded by any rollout.
    pub async fn known_migrations(&self) -> Result<Vec<(i64, Vec<u8>, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT version, checksum, max(file_name) FROM (
                SELECT version, checksum, NULL::text AS file_name FROM tenant_migrations
                UNION ALL SELECT version, checksum, file_name FROM rollout_migrations) m
             GROUP BY version, checksum ORDER BY version",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Versions applied to every tenant, as recorded (one query for the whole fleet).
    pub async fn applied_versions(&self) -> Result<std::collections::HashMap<Uuid, Vec<i64>>> {
        let rows: Vec<(Uuid, Vec<i64>)> = sqlx::query_as(
            "SELECT tenant_id, array_agg(version ORDER BY version) FROM tenant_migrations GROUP BY tenant_id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Mirrors migrations applied to a tenant and moves its `schema_version` up. Commits
    /// asynchronously: the tenant's own table is the truth, and the next provision/migrate of
    /// the tenant re-mirrors it.
    pub async fn record_tenant_migrations(&self, tenant_id: Uuid, applied: &[(i64, Vec<u8>)]) -> Result<()> {
        if applied.is_empty() {
            return Ok(());
        }
        let versions: Vec<i64> = applied.iter().map(|(v, _)| *v).collect();
        let checksums: Vec<Vec<u8>> = applied.iter().map(|(_, c)| c.clone()).collect();
        sqlx::query(
            "WITH new AS (
                INSERT INTO tenant_migrations (tenant_id, version, checksum)
                SELECT $1, v, c FROM unnest($2::bigint[], $3::bytea[]) AS x(v, c)
                ON CONFLICT (tenant_id, version) DO NOTHING)
             UPDATE tenants SET schema_version = (SELECT max(v) FROM unnest($2::bigint[]) v), updated_at = now()
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
             WHERE id = $1 AND coalesce(schema_version, 0) < (SELECT max(v) FROM unnest($2::bigint[]) v)",
        )
        .bind(tenant_id)
        .bind(&versions)
        .bind(&checksums)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a rollout of `set` over `targets` (tenant id, slug), canary first. Creates
    /// the jobs of the first phase (undispatched; the caller or a sweep publishes them).
    pub async fn create_rollout(
        &self,
        set: &MigrationSet,
        targets: &[(Uuid, String)],
        settings: &RolloutSettings,
        max_attempts: i32,
    ) -> Result<(Uuid, Vec<JobRecord>)> {
        let RolloutSettings {
            canary,
            max_failures,
            server_concurrency,
            timeouts,
        } = settings.clone();
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis().clamp(1, i32::MAX as u128) as i32);
        let id = Uuid::now_v7();
        let target_version = set
            .target_version()
            .ok_or_else(|| CatalogError::Other(anyhow::anyhow!("the migration set is empty")))?;
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO rollouts (id, target_version, canary, max_failures, server_concurrency, lock_timeout_ms, statement_timeout_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(target_version)
        .bind(canary as i32)
        .bind(max_failures)
        .bind(server_concurrency)
        .bind(ms(timeouts.lock))
        .bind(ms(timeouts.statement))
        .execute(&mut *tx)
        .await?;
        for m in &set.migrations {
            sqlx::query(
                "INSERT INTO rollout_migrations (rollout_id, version, name, file_name, checksum, sql) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(m.version)
            .bind(&m.name)
            .bind(&m.file_name)
            .bind(&m.checksum)
            .bind(&m.sql)
            .execute(&mut *tx)
            .await?;
        }
        let canary = canary.min(targets.len());
        let ids: Vec<Uuid> = targets.iter().map(|(id, _)| *id).collect();
        let phases: Vec<&str> = (0..targets.len())
            .map(|i| if i < canary { "canary" } else { "main" })
            .collect();
        sqlx::query(
            "INSERT INTO rollout_tenants (rollout_id, tenant_id, phase)
             SELECT $1, t, p FROM unnest($2::uuid[], $3::text[]) AS x(t, p)",
        )
        .bind(id)
        .bind(&ids)
        .bind(&phases)
        .execute(&mut *tx)
        .await?;
        let first_phase = if canary > 0 { "canary" } else { "main" };
        let jobs = create_phase_jobs(&mut tx, id, first_phase, max_attempts).await?;
        tx.commit().await?;
        Ok((id, jobs))
    }

    /// Moves a rollout on (see the module docs). Returns jobs it created, to be published.
    pub async fn advance_rollout(&self, id: Uuid, max_attempts: i32) -> Result<Vec<JobRecord>> {
        let mut tx = self.pool().begin().await?;
        let status: Option<RolloutStatus> =
            sqlx::query_scalar("SELECT status FROM rollouts WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if status != Some(RolloutStatus::Running) {
            return Ok(Vec::new());
        }
        let r: RolloutRecord = sqlx::query_as(&format!("{SELECT_ROLLOUT} WHERE r.id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let (canary_total, canary_ok, canary_failed, main_started): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(n) FILTER (WHERE phase = 'canary'), 0)::bigint,
                    coalesce(sum(n) FILTER (WHERE phase = 'canary' AND outcome = 'succeeded'), 0)::bigint,
                    coalesce(sum(n) FILTER (WHERE phase = 'canary' AND outcome IN ('failed', 'skipped')), 0)::bigint,
                    coalesce(sum(n) FILTER (WHERE phase = 'main' AND outcome <> 'none'), 0)::bigint
               FROM rollout_counts WHERE rollout_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let mut created = Vec::new();
        let halt = if canary_failed > 0 {
            Some(format!(
                "{canary_failed} of {canary_total} canary tenants failed; the rest were not started"
            ))
        } else {
            r.max_failures
                .filter(|max| r.failed >= i64::from(*max))
                .map(|max| {
                    format!(
                        "{} tenants failed (--max-failures {max}); jobs not yet started are skipped",
                        r.failed
                    )
                })
        };
        if let Some(reason) = halt {
            halt_in(&mut tx, id, &reason).await?;
        } else if canary_total > 0 && canary_ok == canary_total && main_started == 0 {
            created = create_phase_jobs(&mut tx, id, "main", max_attempts).await?;
        } else if r.remaining == 0 && (canary_total == 0 || main_started > 0 || r.tenants == canary_total) {
            sqlx::query("UPDATE rollouts SET status = 'done', finished_at = now() WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    /// An operator halts a running rollout: jobs not started are skipped (`skipped: rollout
    /// halted: <reason>`), running ones finish. `Err(status)` if it was not running.
    pub async fn halt_rollout(
        &self,
        id: Uuid,
        reason: &str,
    ) -> Result<std::result::Result<(), RolloutStatus>> {
        let mut tx = self.pool().begin().await?;
        match lock_rollout(&mut tx, id).await? {
            RolloutStatus::Running => {
                halt_in(&mut tx, id, reason).await?;
                tx.commit().await?;
                Ok(Ok(()))
            }
            other => Ok(Err(other)),
        }
    }

    /// An operator resumes a halted rollout: the tenants its halt skipped get new jobs
    /// (keyed `migrate:<rollout>:<slug>:resume-<n>`), tenants that failed stay failed (retry
    /// them with `pgfleet migrate --tenant`), and `max_failures` allows as many failures again
    /// as it did. A rollout halted by its canary goes on past it: the canary tenants count as
    /// the main phase from then on (the operator has seen their errors and accepted them).
    /// Returns the jobs to publish; `Err(status)` if it was not halted.
    pub async fn resume_rollout(
        &self,
        id: Uuid,
        max_attempts: i32,
    ) -> Result<std::result::Result<Vec<JobRecord>, RolloutStatus>> {
        let mut tx = self.pool().begin().await?;
        match lock_rollout(&mut tx, id).await? {
            RolloutStatus::Halted => {}
            other => return Ok(Err(other)),
        }
        let r: RolloutRecord = sqlx::query_as(&format!("{SELECT_ROLLOUT} WHERE r.id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE rollout_tenants rt SET job_id = NULL FROM jobs j
              WHERE rt.rollout_id = $1 AND j.id = rt.job_id AND j.status = 'failed' AND j.error LIKE $2",
        )
        .bind(id)
        .bind(format!("{SKIPPED}%"))
        .execute(&mut *tx)
        .await?;
        let resumes: i32 = sqlx::query_scalar(
            "UPDATE rollouts SET status = 'running', halted_reason = NULL, finished_at = NULL,
                    resumes = resumes + 1, max_failures = max_failures + $2
              WHERE id = $1 RETURNING resumes",
        )
        .bind(id)
        .bind(i32::try_from(r.failed).unwrap_or(i32::MAX))
        .fetch_one(&mut *tx)
        .await?;
        let (canary_failed, canary_waiting): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(n) FILTER (WHERE outcome = 'failed'), 0)::bigint,
                    coalesce(sum(n) FILTER (WHERE outcome = 'none'), 0)::bigint
               FROM rollout_counts WHERE rollout_id = $1 AND phase = 'canary'",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let suffix = format!(":resume-{resumes}");
        let phase = if canary_failed > 0 {
            sqlx::query(
                "UPDATE rollout_tenants SET phase = 'main' WHERE rollout_id = $1 AND phase = 'canary'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            "main"
        } else if canary_waiting > 0 {
            "canary"
        } else {
            "main"
        };
        let jobs = create_phase_jobs_keyed(&mut tx, id, phase, max_attempts, &suffix).await?;
        tx.commit().await?;
        Ok(Ok(jobs))
    }

    /// Everything a migrate job needs before it touches its tenant, in one round trip on
    /// `conn`: the rollout's status, the tenant, and — only if the rollout isn't halted and
    /// the tenant is active — one of the rollout's per-server slots, a session advisory lock
    /// on `conn` (`slot`: None when all are taken). The slots are tried in order and the
    /// first one got stops the scan (the filter runs row by row under the LIMIT), so no
    /// second lock is ever taken. `None` if there is no such rollout.
    pub async fn start_tenant_migration(
        &self,
        conn: &mut sqlx::PgConnection,
        rollout: Uuid,
        slug: &TenantSlug,
    ) -> Result<Option<TenantMigrationStart>> {
        use sqlx::Row;
        let row = sqlx::query(&format!(
            "SELECT r.status AS rollout_status, r.halted_reason, r.lock_timeout_ms, r.statement_timeout_ms, t.*,
                    {SERVER_SLOT_CLASS} AS slot_class,
                    CASE WHEN r.status <> 'halted' AND t.status = 'active' THEN
                        (SELECT slot FROM generate_series(0, r.server_concurrency - 1) AS slot
                          WHERE pg_try_advisory_lock({SERVER_SLOT_CLASS}, slot) LIMIT 1)
                    END AS slot
               FROM rollouts r LEFT JOIN ({SELECT_TENANT} WHERE t.slug = $2::citext) t ON true
              WHERE r.id = $1"
        ))
        .bind(rollout)
        .bind(slug.as_str())
        .fetch_optional(conn)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let tenant_id: Option<Uuid> = row.try_get("id")?;
        let rollout_status: RolloutStatus = row.try_get("rollout_status")?;
        let halted_reason: Option<String> = row.try_get("halted_reason")?;
        let ms = |column: &str| -> Result<Option<std::time::Duration>> {
            let value: Option<i32> = row.try_get(column)?;
            Ok(value.map(|ms| std::time::Duration::from_millis(ms as u64)))
        };
        let timeouts = Timeouts {
            lock: ms("lock_timeout_ms")?,
            statement: ms("statement_timeout_ms")?,
        };
        let slot = match (
            row.try_get::<Option<i32>, _>("slot_class")?,
            row.try_get::<Option<i32>, _>("slot")?,
        ) {
            (Some(class), Some(slot)) => Some((class, slot)),
            _ => None,
        };
        let tenant = match tenant_id {
            Some(_) => Some(with_password(row)?),
            None => None,
        };
        Ok(Some(TenantMigrationStart {
            timeouts,
            rollout_status,
            halted_reason,
            tenant,
            slot,
        }))
    }

    /// Whether the rollout has jobs still queued or running (an index lookup, whatever the
    /// rollout's size). Tenants of a phase not started yet have no job, so this says nothing
    /// about them: ask it for main-phase jobs, whose phase links every tenant at once.
    pub async fn rollout_has_live_jobs(&self, id: Uuid) -> Result<bool> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM jobs j WHERE {LIVE_MIGRATE_JOB} AND j.payload ->> 'rollout' = $1)"
        ))
        .bind(id.to_string())
        .fetch_one(self.pool())
        .await?)
    }

    /// Running rollouts none of whose jobs is queued or running: finished, between phases or
    /// due a halt, and nobody moved them on — the worker that finished their last job died
    /// before its follow-up, or two last jobs finished at once and each saw the other still
    /// running. A worker's sweep moves them on.
    pub async fn rollouts_without_live_jobs(&self) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT r.id FROM rollouts r
              WHERE r.status = 'running'
                AND NOT EXISTS (SELECT 1 FROM jobs j WHERE {LIVE_MIGRATE_JOB} AND j.payload ->> 'rollout' = r.id::text)"
        ))
        .fetch_all(self.pool())
        .await?)
    }

    /// One rollout with its counts.
    pub async fn rollout(&self, id: Uuid) -> Result<Option<RolloutRecord>> {
        Ok(sqlx::query_as(&format!("{SELECT_ROLLOUT} WHERE r.id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Rollouts, newest first.
    pub async fn rollouts(&self, limit: i64) -> Result<Vec<RolloutRecord>> {
        Ok(
            sqlx::query_as(&format!("{SELECT_ROLLOUT} ORDER BY r.created_at DESC LIMIT $1"))
                .bind(limit)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// A rollout's tenants, by phase and slug.
    pub async fn rollout_tenants(&self, id: Uuid) -> Result<Vec<RolloutTenant>> {
        Ok(sqlx::query_as(
            "SELECT t.slug::text AS tenant, rt.phase, rt.job_id, j.status AS job_status, j.attempts, j.error, t.schema_version
               FROM rollout_tenants rt JOIN tenants t ON t.id = rt.tenant_id LEFT JOIN jobs j ON j.id = rt.job_id
              WHERE rt.rollout_id = $1 ORDER BY rt.phase, t.slug",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?)
    }

    /// The migration set a rollout recorded.
    pub async fn rollout_migration_set(&self, id: Uuid) -> Result<MigrationSet> {
        let rows: Vec<(i64, String, String, Vec<u8>, String)> = sqlx::query_as(
            "SELECT version, name, file_name, checksum, sql FROM rollout_migrations WHERE rollout_id = $1 ORDER BY version",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        let migrations = rows
            .into_iter()
            .map(|(version, name, file_name, checksum, sql)| {
                Migration::new(version, name, file_name, sql, checksum)
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| {
                CatalogError::Other(
                    e.context(format!("rollout {id} recorded a migration this version refuses")),
                )
            })?;
        Ok(MigrationSet { migrations })
    }

    /// Messages of these jobs were confirmed by the broker.
    pub async fn mark_dispatched(&self, ids: &[Uuid]) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET dispatched_at = now(), dispatch_count = dispatch_count + 1, dispatch_confirmed = true
              WHERE id = ANY($1)",
        )
        .bind(ids)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The newest recorded set, which tenants provisioned from now on get.
    pub async fn latest_migration_set(&self) -> Result<Option<MigrationSet>> {
        let latest: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM rollouts ORDER BY created_at DESC LIMIT 1")
                .fetch_optional(self.pool())
                .await?;
        match latest {
            Some(id) => Ok(Some(self.rollout_migration_set(id).await?)),
            None => Ok(None),
        }
    }
}

/// Creates the jobs of one phase of a rollout (keys `migrate:<rollout>:<slug>`).
async fn create_phase_jobs(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    rollout: Uuid,
    phase: &str,
    max_attempts: i32,
) -> Result<Vec<JobRecord>> {
    create_phase_jobs_keyed(tx, rollout, phase, max_attempts, "").await
}

/// Locks the rollout's row in `tx`; its status.
async fn lock_rollout(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    id: Uuid,
) -> Result<RolloutStatus> {
    sqlx::query_scalar("SELECT status FROM rollouts WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| CatalogError::NotFound(format!("no rollout {id}")))
}

/// Halts the rollout (its row locked by `tx`): status, reason, and its queued jobs skipped.
async fn halt_in(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, id: Uuid, reason: &str) -> Result<()> {
    sqlx::query(
        "UPDATE rollouts SET status = 'halted', halted_reason = $2, finished_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    // Queued jobs of the rollout will never run: say so on each.
    sqlx::query(
        "UPDATE jobs SET status = 'failed', error = $2, finished_at = now(), updated_at = now()
         WHERE status = 'queued' AND id IN (SELECT job_id FROM rollout_tenants WHERE rollout_id = $1)",
    )
    .bind(id)
    .bind(format!("{SKIPPED} rollout halted: {reason}"))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `create_phase_jobs` with `key_suffix` after each job's key (a resume's jobs are new).
async fn create_phase_jobs_keyed(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    rollout: Uuid,
    phase: &str,
    max_attempts: i32,
    key_suffix: &str,
) -> Result<Vec<JobRecord>> {
    let spec = JobSpec::Migrate(MigrateSpec {
        rollout,
        canary: phase == "canary",
    });
    let payload = serde_json::to_value(spec).expect("a job spec always serializes");
    let jobs: Vec<JobRecord> = sqlx::query_as(&format!(
        "WITH phase AS (
            SELECT rt.tenant_id, t.slug FROM rollout_tenants rt JOIN tenants t ON t.id = rt.tenant_id
             WHERE rt.rollout_id = $1 AND rt.phase = $2 AND rt.job_id IS NULL ORDER BY t.slug),
         created AS ({insert}),
         linked AS (
            UPDATE rollout_tenants rt SET job_id = c.id FROM created c, tenants t
             WHERE rt.rollout_id = $1 AND t.id = rt.tenant_id AND t.slug = c.tenant::citext)
         SELECT {cols} FROM created ORDER BY tenant",
        cols = super::jobs::JOB_COLUMNS,
        insert = super::jobs::insert_jobs_sql(
            "SELECT gen_random_uuid(), 'migrate:' || $1 || ':' || slug || $6, $3::text, slug, $4::jsonb, $5::int FROM phase",
            super::jobs::Dispatch::Later,
            "DO NOTHING",
            true,
        ),
    ))
    .bind(rollout)
    .bind(phase)
    .bind(JobKind::Migrate.as_str())
    .bind(&payload)
    .bind(max_attempts)
    .bind(key_suffix)
    .fetch_all(&mut **tx)
    .await?;
    Ok(jobs)
}
