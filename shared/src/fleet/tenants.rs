//! Tenants: create one (a `provision` job), list them a page at a time, show one, change
//! its backup settings, delete it (a `delete` job), and its own connection URL.

use super::{Fleet, FleetError, Result};
use crate::catalog::TenantRecord;
use crate::message::{validate_region, JobSpec, NoFields, ProvisionSpec};
use crate::producer::Enqueued;
use crate::slug::TenantSlug;
use crate::status::TenantStatus;
use secrecy::SecretString;

/// Largest page of tenants one call returns.
pub const MAX_PAGE: i64 = 1000;

/// Which tenants to list: by slug, after `after`, at most `limit` (1…`MAX_PAGE`).
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    pub status: Option<TenantStatus>,
    pub after: Option<TenantSlug>,
    pub limit: i64,
}

/// Backup settings to change; `None` leaves one as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantSettings {
    /// A 5-field cron expression (UTC), or `off`.
    pub backup_schedule: Option<String>,
    pub retention_days: Option<i32>,
    pub keep_min: Option<i32>,
}

impl Fleet {
    /// Enqueues the tenant's provision: its role, database and schema.
    pub async fn create_tenant(
        &self,
        slug: TenantSlug,
        region: Option<String>,
        key: Option<String>,
    ) -> Result<Enqueued> {
        if let Some(region) = &region {
            validate_region(region).map_err(|e| FleetError::Invalid(e.to_string()))?;
        }
        self.enqueue(slug, JobSpec::Provision(ProvisionSpec { region }), key)
            .await
    }

    /// One page of tenants (see `TenantFilter`).
    pub async fn tenants(&self, filter: &TenantFilter) -> Result<Vec<TenantRecord>> {
        Ok(self
            .catalog
            .tenants_page(
                filter.status,
                filter.after.as_ref().map(TenantSlug::as_str),
                filter.limit.clamp(1, MAX_PAGE),
            )
            .await?)
    }

    /// Every tenant (optionally in one status), by slug, read a page at a time.
    pub async fn all_tenants(&self, status: Option<TenantStatus>) -> Result<Vec<TenantRecord>> {
        let mut all = Vec::new();
        let mut filter = TenantFilter {
            status,
            after: None,
            limit: MAX_PAGE,
        };
        loop {
            let page = self.tenants(&filter).await?;
            let full = page.len() as i64 == MAX_PAGE;
            filter.after = match page.last() {
                Some(last) => Some(TenantSlug::parse(&last.slug).map_err(anyhow::Error::from)?),
                None => None,
            };
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// Changes the tenant's backup settings; returns the tenant as it now is.
    pub async fn set_tenant(&self, slug: &TenantSlug, settings: &TenantSettings) -> Result<TenantRecord> {
        if let Some(schedule) = &settings.backup_schedule {
            crate::schedule::parse(schedule).map_err(|e| FleetError::Invalid(format!("{e:#}")))?;
        }
        if settings.retention_days.is_some_and(|d| d < 0) {
            return Err(FleetError::Invalid("retention days must be 0 or more".into()));
        }
        if settings.keep_min.is_some_and(|k| k < 1) {
            return Err(FleetError::Invalid(
                "keep-min must be at least 1: the newest good backup is never pruned".into(),
            ));
        }
        self.catalog
            .update_tenant_settings(
                slug,
                settings.backup_schedule.as_deref(),
                settings.retention_days,
                settings.keep_min,
            )
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("no tenant {slug}")))
    }

    /// Enqueues the tenant's move to server `to` (see `jobs::move_tenant`), checked here
    /// first so a mistake is refused at once.
    pub async fn move_tenant(&self, slug: &TenantSlug, to: &str, key: Option<String>) -> Result<Enqueued> {
        crate::message::validate_server_name(to).map_err(FleetError::Invalid)?;
        let tenant = self.tenant(slug).await?;
        let server = self.catalog.server_by_name(to).await?;
        if server.id == tenant.server_id {
            return Err(FleetError::Conflict(format!(
                "tenant {slug} is on server {to} already"
            )));
        }
        if tenant.server_kind != crate::status::ServerKind::Postgres
            || server.kind != crate::status::ServerKind::Postgres
        {
            return Err(FleetError::Invalid(
                "moves are between self-hosted servers (a Neon tenant lives in a project of its own)".into(),
            ));
        }
        if tenant.status != TenantStatus::Active {
            return Err(FleetError::Conflict(format!(
                "tenant {slug} is {}; only an active tenant is moved",
                tenant.status
            )));
        }
        if server.status != crate::status::ServerStatus::Active || server.free() == Some(0) {
            return Err(FleetError::Conflict(format!(
                "server {to} takes no new tenants ({}{})",
                server.status,
                if server.free() == Some(0) { ", full" } else { "" }
            )));
        }
        self.enqueue(
            slug.clone(),
            JobSpec::Move(crate::message::MoveSpec { to: to.to_owned() }),
            key,
        )
        .await
    }

    /// Enqueues the tenant's deletion: a final backup, then its database and role dropped.
    pub async fn delete_tenant(&self, slug: &TenantSlug, key: Option<String>) -> Result<Enqueued> {
        self.tenant(slug).await?;
        self.enqueue(slug.clone(), JobSpec::Delete(NoFields {}), key)
            .await
    }

    /// The tenant's own connection URL, password included: the one secret pgfleet prints,
    /// and only on request. Needs the install's key.
    /// A Neon tenant's is its pooled URI, or with `direct` the direct one.
    pub async fn tenant_url(&self, slug: &TenantSlug, direct: bool) -> Result<SecretString> {
        let tenant = self.tenant(slug).await?;
        if tenant.status != TenantStatus::Active {
            return Err(FleetError::Conflict(format!(
                "tenant {slug} is {}, not active",
                tenant.status
            )));
        }
        Ok(self.servers.tenant_url(&tenant, direct).await?)
    }
}
