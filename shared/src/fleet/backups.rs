//! Backups: start one (only of an active tenant) or of every active tenant, prune, restore
//! into a new database (never one of pgfleet's own names), and list a tenant's backups.

use super::{Fleet, FleetError, Result};
use crate::catalog::BackupRecord;
use crate::message::{validate_database_name, JobSpec, NoFields, RestoreSpec};
use crate::producer::Enqueued;
use crate::slug::TenantSlug;
use crate::status::TenantStatus;
use uuid::Uuid;

impl Fleet {
    /// Enqueues a backup of the tenant, which must be active.
    pub async fn start_backup(&self, slug: &TenantSlug, key: Option<String>) -> Result<Enqueued> {
        let tenant = self.tenant(slug).await?;
        if tenant.status != TenantStatus::Active {
            return Err(FleetError::Conflict(format!(
                "tenant {slug} is {}; only active tenants are backed up",
                tenant.status
            )));
        }
        self.enqueue(slug.clone(), JobSpec::Backup(NoFields {}), key)
            .await
    }

    /// Enqueues a backup of every active tenant (in batches; no keys).
    pub async fn backup_all(&self) -> Result<Vec<Enqueued>> {
        let tenants = self.active_slugs().await?;
        self.enqueue_for(tenants, JobSpec::Backup(NoFields {})).await
    }

    /// Enqueues a prune of the tenant's backups past its retention.
    pub async fn prune(&self, slug: &TenantSlug, key: Option<String>) -> Result<Enqueued> {
        self.tenant(slug).await?;
        self.enqueue(slug.clone(), JobSpec::Prune(NoFields {}), key).await
    }

    /// Enqueues a prune of every active tenant, and of every deleted one (whose backups
    /// expire with its retention).
    pub async fn prune_all(&self) -> Result<Vec<Enqueued>> {
        let mut tenants = self.active_slugs().await?;
        for deleted in self.all_tenants(Some(TenantStatus::Deleted)).await? {
            tenants.push(TenantSlug::parse(&deleted.slug).map_err(|e| FleetError::Other(e.into()))?);
        }
        self.enqueue_for(tenants, JobSpec::Prune(NoFields {})).await
    }

    /// Enqueues a restore of the tenant's backup (default: its newest good one) into a new
    /// database `into`, which must be a plain name outside pgfleet's own `<namespace>_…`.
    pub async fn restore(
        &self,
        slug: &TenantSlug,
        backup: Option<Uuid>,
        into: String,
        key: Option<String>,
    ) -> Result<Enqueued> {
        validate_database_name(&into).map_err(|e| FleetError::Invalid(e.to_string()))?;
        if self.namespace.owns_name(&into) {
            return Err(FleetError::Invalid(format!(
                "database name {into} is reserved: names starting with {}_ are pgfleet's own tenant databases; choose another --into",
                self.namespace
            )));
        }
        self.tenant(slug).await?;
        self.enqueue(
            slug.clone(),
            JobSpec::Restore(RestoreSpec {
                backup,
                into,
                schema_only: false,
            }),
            key,
        )
        .await
    }

    /// The tenant's backups, newest first.
    pub async fn backups(&self, slug: &TenantSlug) -> Result<Vec<BackupRecord>> {
        let tenant = self.tenant(slug).await?;
        Ok(self.catalog.backups(tenant.id).await?)
    }

    async fn active_slugs(&self) -> Result<Vec<TenantSlug>> {
        self.catalog
            .tenant_slugs(TenantStatus::Active)
            .await?
            .iter()
            .map(|slug| TenantSlug::parse(slug).map_err(|e| FleetError::Other(e.into())))
            .collect()
    }
}
