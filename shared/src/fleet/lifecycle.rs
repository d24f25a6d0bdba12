//! Suspend and resume a tenant, change its limits, and measure its storage. These act on
//! the tenant's server at once (a role attribute, a session end, a setting), so they run in
//! the caller rather than as jobs; each is safe to repeat.

use super::{Fleet, FleetError, Result};
use crate::catalog::{TenantLimits, TenantRecord};
use crate::message::{JobSpec, ProvisionSpec};
use crate::postgres::quote_ident;
use crate::producer::Enqueued;
use crate::slug::TenantSlug;
use crate::status::{ServerKind, TenantStatus};
use anyhow::Context;
use tracing::info;

/// Limits to change; `None` leaves one as it is, `Some(None)` clears a setting.
#[derive(Debug, Clone, Default)]
pub struct LimitChanges {
    pub connection_limit: Option<i32>,
    pub statement_timeout_ms: Option<Option<i32>>,
    pub idle_in_transaction_timeout_ms: Option<Option<i32>>,
    pub work_mem_kb: Option<Option<i32>>,
    pub storage_quota_bytes: Option<Option<i64>>,
}

impl LimitChanges {
    pub fn is_empty(&self) -> bool {
        self.connection_limit.is_none()
            && self.statement_timeout_ms.is_none()
            && self.idle_in_transaction_timeout_ms.is_none()
            && self.work_mem_kb.is_none()
            && self.storage_quota_bytes.is_none()
    }

    fn apply(&self, mut limits: TenantLimits) -> Result<TenantLimits> {
        if let Some(n) = self.connection_limit {
            if n < -1 {
                return Err(FleetError::Invalid(
                    "connection limit must be -1 (none) or more".into(),
                ));
            }
            limits.connection_limit = n;
        }
        let non_negative = |v: Option<i32>, what: &str| match v {
            Some(n) if n < 0 => Err(FleetError::Invalid(format!("{what} must not be negative"))),
            _ => Ok(v),
        };
        if let Some(v) = self.statement_timeout_ms {
            limits.statement_timeout_ms = non_negative(v, "statement_timeout")?;
        }
        if let Some(v) = self.idle_in_transaction_timeout_ms {
            limits.idle_in_transaction_timeout_ms = non_negative(v, "idle_in_transaction_session_timeout")?;
        }
        if let Some(v) = self.work_mem_kb {
            if v.is_some_and(|kb| kb < 64) {
                return Err(FleetError::Invalid("work_mem must be at least 64kB".into()));
            }
            limits.work_mem_kb = v;
        }
        if let Some(v) = self.storage_quota_bytes {
            if v.is_some_and(|b| b < 0) {
                return Err(FleetError::Invalid("storage quota must not be negative".into()));
            }
            limits.storage_quota_bytes = v;
        }
        Ok(limits)
    }
}

impl Fleet {
    fn self_hosted(tenant: &TenantRecord, what: &str) -> Result<()> {
        if tenant.server_kind == ServerKind::Neon {
            return Err(FleetError::Invalid(format!(
                "tenant {} is on Neon server {}: {what} is for tenants on self-hosted servers",
                tenant.slug, tenant.server
            )));
        }
        Ok(())
    }

    /// Suspends the tenant: its role may not log in, its sessions are ended, scheduled
    /// backups skip it; status `suspended`. The catalog says so first, so a provision
    /// running meanwhile leaves the role locked. Idempotent.
    pub async fn suspend_tenant(&self, slug: &TenantSlug) -> Result<TenantRecord> {
        let tenant = self.tenant(slug).await?;
        Self::self_hosted(&tenant, "suspend")?;
        if !matches!(tenant.status, TenantStatus::Active | TenantStatus::Suspended) {
            return Err(FleetError::Conflict(format!(
                "tenant {slug} is {}; only an active tenant is suspended",
                tenant.status
            )));
        }
        self.catalog.set_tenant_suspended(tenant.id, true).await?;
        let admin = self.servers.admin_pool(tenant.server_id).await?;
        sqlx::raw_sql(&format!(
            "ALTER ROLE {} WITH NOLOGIN",
            quote_ident(&tenant.role_name)
        ))
        .execute(&admin)
        .await
        .with_context(|| format!("locking role {}", tenant.role_name))?;
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&tenant.role_name)
        .fetch_all(&admin)
        .await
        .context("ending the tenant's sessions")?;
        self.servers.flush_wal(tenant.server_id).await?;
        info!(tenant = %slug, sessions_ended = ended.len(), "tenant suspended");
        self.tenant(slug).await
    }

    /// Resumes a suspended tenant: its role may log in again, status `active`. If a rollout
    /// moved the schema on meanwhile, a provision is enqueued to bring it up to date
    /// (returned). Idempotent.
    pub async fn resume_tenant(&self, slug: &TenantSlug) -> Result<(TenantRecord, Option<Enqueued>)> {
        let tenant = self.tenant(slug).await?;
        Self::self_hosted(&tenant, "resume")?;
        if !matches!(tenant.status, TenantStatus::Active | TenantStatus::Suspended) {
            return Err(FleetError::Conflict(format!(
                "tenant {slug} is {}; only a suspended tenant is resumed",
                tenant.status
            )));
        }
        let admin = self.servers.admin_pool(tenant.server_id).await?;
        sqlx::raw_sql(&format!(
            "ALTER ROLE {} WITH LOGIN",
            quote_ident(&tenant.role_name)
        ))
        .execute(&admin)
        .await
        .with_context(|| format!("unlocking role {}", tenant.role_name))?;
        self.servers.flush_wal(tenant.server_id).await?;
        self.catalog.set_tenant_suspended(tenant.id, false).await?;
        let target = self
            .catalog
            .latest_migration_set()
            .await?
            .and_then(|set| set.target_version());
        let catch_up = match target {
            Some(v) if tenant.schema_version != Some(v) => Some(
                self.enqueue(
                    slug.clone(),
                    JobSpec::Provision(ProvisionSpec { region: None }),
                    None,
                )
                .await?,
            ),
            _ => None,
        };
        info!(tenant = %slug, "tenant resumed");
        Ok((self.tenant(slug).await?, catch_up))
    }

    /// Changes the tenant's limits in the catalog and on its server (role connection limit
    /// and session defaults). Returns the tenant as it now is.
    pub async fn set_tenant_limits(&self, slug: &TenantSlug, changes: &LimitChanges) -> Result<TenantRecord> {
        let tenant = self.tenant(slug).await?;
        let limits = changes.apply(tenant.limits())?;
        let on_server = limits.connection_limit != tenant.connection_limit
            || limits.statement_timeout_ms != tenant.statement_timeout_ms
            || limits.idle_in_transaction_timeout_ms != tenant.idle_in_transaction_timeout_ms
            || limits.work_mem_kb != tenant.work_mem_kb;
        if on_server {
            Self::self_hosted(&tenant, "setting role limits")?;
        }
        self.catalog.set_tenant_limits(tenant.id, &limits).await?;
        let live = matches!(
            tenant.status,
            TenantStatus::Active | TenantStatus::Suspended | TenantStatus::Moving
        );
        if on_server && live {
            let admin = self.servers.admin_pool(tenant.server_id).await?;
            sqlx::raw_sql(&format!(
                "ALTER ROLE {} WITH CONNECTION LIMIT {}",
                quote_ident(&tenant.role_name),
                limits.connection_limit
            ))
            .execute(&admin)
            .await
            .with_context(|| format!("setting the connection limit of role {}", tenant.role_name))?;
            crate::limits::ensure_settings_of(&admin, &tenant.role_name, &limits)
                .await
                .map_err(|e| FleetError::Other(anyhow::anyhow!("{e}")))?;
        }
        self.tenant(slug).await
    }

    /// Measures every live self-hosted tenant's database (see `limits::measure_all`).
    pub async fn measure_all_storage(&self) -> Result<usize> {
        Ok(crate::limits::measure_all(&self.catalog, &self.servers).await?)
    }
}
