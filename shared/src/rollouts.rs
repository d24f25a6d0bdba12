//! Planning a migration rollout: refuse drift before anything runs (a migration already
//! applied anywhere whose file changed, or disappeared), then pick the tenants that are not
//! at the target — so running `migrate` again only touches what is left to do.

use crate::catalog::{Catalog, JobRecord, TenantRecord};
use crate::migration_set::MigrationSet;
use crate::slug::TenantSlug;
use crate::status::TenantStatus;
use uuid::Uuid;

/// Why a rollout was not started; the API maps each to its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The options make no sense (e.g. a concurrency of 0).
    #[error("{0}")]
    Invalid(String),
    /// The migrations folder disagrees with what was applied or recorded; nothing ran.
    #[error("{0}")]
    Drift(String),
    #[error("no tenant {0}; `pgfleet tenant list` shows the existing ones")]
    NoSuchTenant(TenantSlug),
    #[error("tenant {0} is {1}; only active tenants are migrated")]
    NotActive(TenantSlug, TenantStatus),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

type Result<T, E = RolloutError> = std::result::Result<T, E>;

/// How to run a rollout (`pgfleet migrate`, `POST /v1/migrations`).
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Only this tenant; else every active tenant.
    pub only: Option<TenantSlug>,
    /// Migrations at once on one tenant server.
    pub concurrency: i32,
    pub canary: usize,
    pub max_failures: Option<i32>,
    pub dry_run: bool,
    /// Recorded on every job the rollout creates.
    pub max_attempts: i32,
}

/// What `start` did.
pub struct Started {
    pub plan: Plan,
    pub target_version: i64,
    /// The rollout and the jobs of its first phase (already published, or left for the
    /// sweep if the broker was unreachable); `None` for a dry run or nothing to do.
    pub rollout: Option<(Uuid, Vec<JobRecord>)>,
}

/// Records `set` as a rollout over the tenants that lack part of it and publishes the jobs
/// of its first phase. Drift is refused before anything is recorded.
pub async fn start(
    catalog: &Catalog,
    producer: &crate::producer::Producer,
    set: &MigrationSet,
    options: &StartOptions,
) -> Result<Started> {
    if options.concurrency < 1 || options.max_failures.is_some_and(|f| f < 1) {
        return Err(RolloutError::Invalid(
            "concurrency and max_failures must be at least 1".into(),
        ));
    }
    let target_version = set
        .target_version()
        .ok_or_else(|| RolloutError::Invalid("there are no tenant migrations to roll out".into()))?;
    check_drift(catalog, set).await?;
    let plan = plan(catalog, set, options.only.as_ref()).await?;
    if options.dry_run || plan.targets.is_empty() {
        return Ok(Started {
            plan,
            target_version,
            rollout: None,
        });
    }
    let targets: Vec<(Uuid, String)> = plan.targets.iter().map(|(t, _)| (t.id, t.slug.clone())).collect();
    let (id, jobs) = catalog
        .create_rollout(
            set,
            &targets,
            options.canary,
            options.max_failures,
            options.concurrency,
            options.max_attempts,
        )
        .await?;
    producer.publish_existing(&jobs).await;
    Ok(Started {
        plan,
        target_version,
        rollout: Some((id, jobs)),
    })
}

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
            Some(m) if m.checksum != checksum => return Err(RolloutError::Drift(format!(
                "migration {} was changed after it was applied or rolled out (its checksum differs); restore the original file and put the change in a new migration — no tenant was touched",
                m.file_name
            ))),
            Some(_) => {}
            None => return Err(RolloutError::Drift(format!(
                "migration version {version}{} was applied or rolled out but is missing from the migrations folder; restore it — no tenant was touched",
                recorded_file.map(|f| format!(" ({f})")).unwrap_or_default()
            ))),
        }
    }
    Ok(())
}

/// Tenants (all active ones, or `only`) that lack some version of `set`.
pub async fn plan(catalog: &Catalog, set: &MigrationSet, only: Option<&TenantSlug>) -> Result<Plan> {
    let tenants = match only {
        Some(slug) => {
            let tenant = catalog
                .tenant(slug)
                .await?
                .ok_or_else(|| RolloutError::NoSuchTenant(slug.clone()))?;
            if tenant.status != TenantStatus::Active {
                return Err(RolloutError::NotActive(slug.clone(), tenant.status));
            }
            vec![tenant]
        }
        None => catalog
            .tenants()
            .await?
            .into_iter()
            .filter(|t| t.status == TenantStatus::Active)
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
