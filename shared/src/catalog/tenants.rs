//! Tenants in the catalog. A row is written before anything exists on a tenant server, with
//! the names and (encrypted) password the provision will use, so a replay reuses them.

use super::error::Result;
use super::jobs::fenced_by;
use super::{Catalog, Fence};
use crate::secrets::Binding;
use crate::slug::TenantSlug;
use crate::status::TenantStatus;
use anyhow::Context;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

/// A tenant: where its database lives, its names, schema version and backup settings.
/// Its password stays encrypted (`Catalog::tenant_password`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRecord {
    pub id: Uuid,
    pub slug: String,
    pub status: TenantStatus,
    pub server_id: Uuid,
    pub server: String,
    pub server_kind: crate::status::ServerKind,
    pub region: Option<String>,
    pub database_name: String,
    pub role_name: String,
    pub connection_limit: i32,
    pub schema_version: Option<i64>,
    pub backup_schedule: String,
    pub retention_days: i32,
    pub keep_min: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Neon tenants: their project (kept after delete: Neon can recover it for 7 days) and
    /// the project's default branch.
    pub neon_project_id: Option<String>,
    pub neon_branch_id: Option<String>,
    /// Set while suspended (see `TenantStatus::Suspended`).
    pub suspended_at: Option<DateTime<Utc>>,
    pub statement_timeout_ms: Option<i32>,
    pub idle_in_transaction_timeout_ms: Option<i32>,
    pub work_mem_kb: Option<i32>,
    pub storage_quota_bytes: Option<i64>,
    /// `pg_database_size` of its database when last measured.
    pub storage_bytes: Option<i64>,
    pub storage_measured_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    password_ciphertext: Vec<u8>,
    #[sqlx(skip)]
    direct_uri_ciphertext: Option<Vec<u8>>,
    #[sqlx(skip)]
    pooled_uri_ciphertext: Option<Vec<u8>>,
}

/// What `place_tenant` records for a new tenant.
pub struct NewTenant<'a> {
    pub slug: &'a TenantSlug,
    pub database_name: String,
    pub role_name: String,
    pub password: SecretString,
    /// The namespace's defaults (`PGFLEET_TENANT_*`), copied onto the tenant.
    pub limits: TenantLimits,
}

/// What one tenant may use: its role's connection limit and session defaults (role-level
/// settings, visible in `pg_db_role_setting`), and a storage quota that is reported, never
/// enforced by deleting anything. `None`: the server's default (no quota).
///
/// Postgres lets a role change its own session defaults (`ALTER ROLE … SET`, or `SET` in a
/// session), so the settings are defaults a well-behaved application gets, re-asserted by
/// every provision; the connection limit needs CREATEROLE to change and is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TenantLimits {
    pub connection_limit: i32,
    pub statement_timeout_ms: Option<i32>,
    pub idle_in_transaction_timeout_ms: Option<i32>,
    pub work_mem_kb: Option<i32>,
    pub storage_quota_bytes: Option<i64>,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            connection_limit: 20,
            statement_timeout_ms: None,
            idle_in_transaction_timeout_ms: None,
            work_mem_kb: None,
            storage_quota_bytes: None,
        }
    }
}

impl TenantRecord {
    pub fn limits(&self) -> TenantLimits {
        TenantLimits {
            connection_limit: self.connection_limit,
            statement_timeout_ms: self.statement_timeout_ms,
            idle_in_transaction_timeout_ms: self.idle_in_transaction_timeout_ms,
            work_mem_kb: self.work_mem_kb,
            storage_quota_bytes: self.storage_quota_bytes,
        }
    }

    /// Whether its measured storage is past its quota.
    pub fn over_quota(&self) -> bool {
        matches!((self.storage_bytes, self.storage_quota_bytes), (Some(used), Some(quota)) if used > quota)
    }
}

pub(super) const SELECT_TENANT: &str = "SELECT t.id, t.slug::text AS slug, t.status, t.server_id, s.name::text AS server,
        s.kind AS server_kind, t.region,
        t.database_name, t.role_name, t.connection_limit, t.schema_version, t.backup_schedule, t.retention_days,
        t.keep_min, t.created_at, t.updated_at, t.neon_project_id, t.neon_branch_id, t.suspended_at,
        t.statement_timeout_ms, t.idle_in_transaction_timeout_ms, t.work_mem_kb, t.storage_quota_bytes,
        t.storage_bytes, t.storage_measured_at,
        t.password_ciphertext, t.direct_uri_ciphertext, t.pooled_uri_ciphertext
   FROM tenants t JOIN tenant_servers s ON s.id = t.server_id";

pub(super) fn with_password(row: sqlx::postgres::PgRow) -> Result<TenantRecord> {
    use sqlx::{FromRow, Row};
    let mut record = TenantRecord::from_row(&row)?;
    record.password_ciphertext = row.try_get("password_ciphertext")?;
    record.direct_uri_ciphertext = row.try_get("direct_uri_ciphertext")?;
    record.pooled_uri_ciphertext = row.try_get("pooled_uri_ciphertext")?;
    Ok(record)
}

impl Catalog {
    /// One tenant by slug.
    pub async fn tenant(&self, slug: &TenantSlug) -> Result<Option<TenantRecord>> {
        let row = sqlx::query(&format!("{SELECT_TENANT} WHERE t.slug = $1::citext"))
            .bind(slug.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.map(with_password).transpose()
    }

    /// One tenant by id.
    pub async fn tenant_by_id(&self, id: Uuid) -> Result<Option<TenantRecord>> {
        let row = sqlx::query(&format!("{SELECT_TENANT} WHERE t.id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(with_password).transpose()
    }

    /// Every tenant, by slug.
    pub async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows = sqlx::query(&format!("{SELECT_TENANT} ORDER BY t.slug"))
            .fetch_all(self.pool())
            .await?;
        rows.into_iter().map(with_password).collect()
    }

    /// The slugs of every tenant in `status`, by slug: what a fleet-wide enqueue needs, in
    /// one query (at 100,000 tenants a page-by-page read of whole tenant rows took ~0.5 s).
    pub async fn tenant_slugs(&self, status: TenantStatus) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT slug::text FROM tenants WHERE status = $1 ORDER BY tenants.slug")
                .bind(status)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// One page of tenants by slug: those after `after`, at most `limit`, optionally only
    /// in `status`.
    pub async fn tenants_page(
        &self,
        status: Option<TenantStatus>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TenantRecord>> {
        let rows = sqlx::query(&format!(
            "{SELECT_TENANT} WHERE ($1::text IS NULL OR t.status = $1) AND ($2::text IS NULL OR t.slug > $2::citext)
              ORDER BY t.slug LIMIT $3"
        ))
        .bind(status)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(with_password).collect()
    }

    /// The tenant role's password; only for connecting as the tenant or `tenant url`.
    pub fn tenant_password(&self, tenant: &TenantRecord) -> Result<SecretString> {
        Ok(self
            .key()?
            .decrypt_string(&tenant.password_ciphertext, &Binding::tenant_password(tenant.id))
            .with_context(|| format!("decrypting the password of tenant {}", tenant.slug))?)
    }

    /// A Neon tenant's connection URI (`direct` for migrations and pg_dump, else pooled);
    /// `None` until its provision has fetched them.
    pub fn tenant_uri(&self, tenant: &TenantRecord, direct: bool) -> Result<Option<SecretString>> {
        let (sealed, binding) = if direct {
            (
                &tenant.direct_uri_ciphertext,
                Binding::tenant_direct_uri(tenant.id),
            )
        } else {
            (
                &tenant.pooled_uri_ciphertext,
                Binding::tenant_pooled_uri(tenant.id),
            )
        };
        sealed
            .as_ref()
            .map(|sealed| {
                self.key()?
                    .decrypt_string(sealed, &binding)
                    .with_context(|| format!("decrypting a connection URI of tenant {}", tenant.slug))
                    .map_err(Into::into)
            })
            .transpose()
    }

    /// Records the Neon project made (or found) for the tenant; a project already recorded
    /// is kept. Returns the recorded (project, branch).
    pub async fn set_tenant_neon_project(
        &self,
        tenant_id: Uuid,
        project_id: &str,
        branch_id: Option<&str>,
    ) -> Result<(String, Option<String>)> {
        Ok(sqlx::query_as(
            "UPDATE tenants SET neon_project_id = coalesce(neon_project_id, $2),
                    neon_branch_id = CASE WHEN neon_project_id IS NULL OR neon_project_id = $2
                                          THEN coalesce($3, neon_branch_id) ELSE neon_branch_id END,
                    updated_at = now()
              WHERE id = $1 RETURNING neon_project_id, neon_branch_id",
        )
        .bind(tenant_id)
        .bind(project_id)
        .bind(branch_id)
        .fetch_one(self.pool())
        .await?)
    }

    /// Stores (sealed) the connection URIs Neon gave for the tenant.
    pub async fn set_tenant_uris(
        &self,
        tenant_id: Uuid,
        direct: &SecretString,
        pooled: &SecretString,
    ) -> Result<()> {
        let key = self.key()?;
        sqlx::query(
            "UPDATE tenants SET direct_uri_ciphertext = $2, pooled_uri_ciphertext = $3, updated_at = now() WHERE id = $1",
        )
        .bind(tenant_id)
        .bind(key.encrypt_str(direct, &Binding::tenant_direct_uri(tenant_id)))
        .bind(key.encrypt_str(pooled, &Binding::tenant_pooled_uri(tenant_id)))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Sets the status (a no-op if it already is). Fenced by the job doing it: `false` if
    /// that job was taken over meanwhile. `Active` means "back in service": a suspended
    /// tenant (one with `suspended_at`) goes back to `suspended`.
    pub async fn set_tenant_status(
        &self,
        tenant_id: Uuid,
        status: TenantStatus,
        fence: Option<Fence>,
    ) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE tenants SET status = CASE WHEN $2 = 'active' AND suspended_at IS NOT NULL THEN 'suspended' ELSE $2 END,
                    updated_at = now() WHERE id = $1 AND {}",
            fenced_by(3, 4)
        ))
        .bind(tenant_id)
        .bind(status)
        .bind(fence.map(|f| f.job_id))
        .bind(fence.map(|f| f.epoch))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Changes the given backup settings; `None` leaves one as it is. Returns the new row.
    pub async fn update_tenant_settings(
        &self,
        slug: &TenantSlug,
        backup_schedule: Option<&str>,
        retention_days: Option<i32>,
        keep_min: Option<i32>,
    ) -> Result<Option<TenantRecord>> {
        sqlx::query(
            // A new schedule counts from now: its past slots are not "missed".
            "UPDATE tenants SET backup_schedule = coalesce($2, backup_schedule),
                    backup_scheduled_through = CASE WHEN $2 IS DISTINCT FROM backup_schedule AND $2 IS NOT NULL
                                                    THEN now() ELSE backup_scheduled_through END,
                    retention_days = coalesce($3, retention_days), keep_min = coalesce($4, keep_min),
                    updated_at = now()
             WHERE slug = $1::citext",
        )
        .bind(slug.as_str())
        .bind(backup_schedule)
        .bind(retention_days)
        .bind(keep_min)
        .execute(self.pool())
        .await?;
        self.tenant(slug).await
    }

    /// Provisioned: `active` at `schema_version`. Fenced by the provision job: `false` if
    /// it was taken over meanwhile.
    pub async fn mark_tenant_active(
        &self,
        tenant_id: Uuid,
        schema_version: Option<i64>,
        fence: Option<Fence>,
    ) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE tenants SET status = 'active', schema_version = $2, updated_at = now()
             WHERE id = $1 AND {}",
            fenced_by(3, 4)
        ))
        .bind(tenant_id)
        .bind(schema_version)
        .bind(fence.map(|f| f.job_id))
        .bind(fence.map(|f| f.epoch))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Catalog {
    /// Changes the tenant's limits to `limits` (the whole set, as `tenant set` computed it).
    pub async fn set_tenant_limits(&self, tenant_id: Uuid, limits: &TenantLimits) -> Result<()> {
        sqlx::query(
            "UPDATE tenants SET connection_limit = $2, statement_timeout_ms = $3, idle_in_transaction_timeout_ms = $4,
                    work_mem_kb = $5, storage_quota_bytes = $6, updated_at = now() WHERE id = $1",
        )
        .bind(tenant_id)
        .bind(limits.connection_limit)
        .bind(limits.statement_timeout_ms)
        .bind(limits.idle_in_transaction_timeout_ms)
        .bind(limits.work_mem_kb)
        .bind(limits.storage_quota_bytes)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Whether every live self-hosted tenant's storage was measured within `interval` (by
    /// another worker's sweep, a provision or a move): the sweep then skips measuring.
    pub async fn storage_measured_within(&self, interval: std::time::Duration) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM tenants t JOIN tenant_servers s ON s.id = t.server_id
                                 WHERE s.kind = 'postgres' AND t.status IN ('active', 'suspended', 'moving')
                                   AND (t.storage_measured_at IS NULL
                                        OR t.storage_measured_at < now() - make_interval(secs => $1)))",
        )
        .bind(interval.as_secs_f64())
        .fetch_one(self.pool())
        .await?)
    }

    /// Records measured database sizes: (tenant id, bytes).
    pub async fn record_storage(&self, sizes: &[(Uuid, i64)]) -> Result<()> {
        if sizes.is_empty() {
            return Ok(());
        }
        let (ids, bytes): (Vec<Uuid>, Vec<i64>) = sizes.iter().copied().unzip();
        sqlx::query(
            "UPDATE tenants t SET storage_bytes = m.bytes, storage_measured_at = now()
               FROM unnest($1::uuid[], $2::bigint[]) AS m(id, bytes) WHERE t.id = m.id",
        )
        .bind(ids)
        .bind(bytes)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Suspends (`true`) or resumes the tenant in the catalog: only an active tenant is
    /// suspended and only a suspended one resumed; anything else is left as it is. Returns
    /// the tenant as it now is.
    pub async fn set_tenant_suspended(&self, tenant_id: Uuid, suspended: bool) -> Result<()> {
        let sql = if suspended {
            "UPDATE tenants SET status = 'suspended', suspended_at = coalesce(suspended_at, now()), updated_at = now()
              WHERE id = $1 AND status IN ('active', 'suspended')"
        } else {
            "UPDATE tenants SET status = 'active', suspended_at = NULL, updated_at = now()
              WHERE id = $1 AND status IN ('active', 'suspended')"
        };
        sqlx::query(sql).bind(tenant_id).execute(self.pool()).await?;
        Ok(())
    }
}
