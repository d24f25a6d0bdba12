//! Planning a migration rollout: refuse drift before anything runs (a migration already
//! applied anywhere whose file changed, or disappeared), then pick the tenants that are not
//! at the target — so running `migrate` again only touches what is left to do.

use crate::catalog::{Catalog, TenantRecord};
use crate::slug::TenantSlug;
use crate::tenant_migrations::MigrationSet;
use anyhow::{bail, Context, Result};

pub struct Plan {
    /// Tenants to migrate, with the versions each lacks.
    pub targets: Vec<(TenantRecord, Vec<i64>)>,
    /// Tenants in scope already at the target.
    pub up_to_date: usize,
}

/// Fails, naming the file, if `set` disagrees with what was already applied or recorded.
pub async fn check_drift(catalog: &Catalog, set: &MigrationSet) -> Result<()> {
    for (version, checksum, recorded_file) in catalog.known_migrations().await? {
        match set.migrations.iter().find(|m| m.version == version) {
            Some(m) if m.checksum != checksum => bail!(
                "migration {} was changed after it was applied or rolled out (its checksum differs); restore the original file and put the change in a new migration — no tenant was touched",
                m.file_name
            ),
            Some(_) => {}
            None => bail!(
                "migration version {version}{} was applied or rolled out but is missing from the migrations folder; restore it — no tenant was touched",
                recorded_file.map(|f| format!(" ({f})")).unwrap_or_default()
            ),
        }
    }
    Ok(())
}

/// Tenants (all active ones, or `only`) that lack some version of `set`.
pub async fn plan(catalog: &Catalog, set: &MigrationSet, only: Option<&TenantSlug>) -> Result<Plan> {
    let tenants = match only {
        Some(slug) => {
            let tenant = catalog.tenant(slug).await?.with_context(|| {
                format!("no tenant {slug}; `pgfleet tenant list` shows the existing ones")
            })?;
            if tenant.status != "active" {
                bail!(
                    "tenant {slug} is {}; only active tenants are migrated",
                    tenant.status
                );
            }
            vec![tenant]
        }
        None => catalog
            .tenants()
            .await?
            .into_iter()
            .filter(|t| t.status == "active")
            .collect(),
    };
    let mut plan = Plan {
        targets: Vec::new(),
        up_to_date: 0,
    };
    let applied_by_tenant = catalog.applied_versions().await?;
    for tenant in tenants {
        let applied = applied_by_tenant.get(&tenant.id).cloned().unwrap_or_default();
        let pending: Vec<i64> = set
            .migrations
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect();
        if pending.is_empty() {
            plan.up_to_date += 1;
        } else {
            plan.targets.push((tenant, pending));
        }
    }
    Ok(plan)
}
