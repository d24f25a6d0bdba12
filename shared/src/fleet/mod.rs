//! The fleet service: every use case of pgfleet's CLI and HTTP API, once — create a tenant,
//! start a backup, restore, roll migrations out and watch them, list and show what
//! happened. It takes typed inputs, applies the rules (who may be backed up, which names a
//! restore may take, what an idempotency key may be) and returns typed results or a
//! `FleetError` whose variant the adapters map to an exit code or an HTTP status. The CLI
//! (`workers/`) and the API (`api/`) only parse, call and render.

mod backups;
pub mod cursor;
mod jobs;
mod lifecycle;
mod neon;
pub mod rollouts;
mod servers;
mod tenants;
mod webhooks;

pub use jobs::JobFilter;
pub use lifecycle::LimitChanges;
pub use neon::{BranchMade, ServerSpec};
pub use rollouts::{Plan, RolloutOptions, Started};
pub use servers::{ReachableDatabase, ServerChanges, ServerReport, ServerState};
pub use tenants::{TenantFilter, TenantSettings, MAX_PAGE};

use crate::catalog::{Catalog, CatalogError};
use crate::config::Namespace;
use crate::message::{validate_key, JobRequest, JobSpec};
use crate::producer::{EnqueueError, Enqueued, Producer};
use crate::servers::TenantServers;
use crate::slug::TenantSlug;
use std::path::PathBuf;

/// Why a use case was refused or failed; each variant is one answer for a user.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The input breaks a rule (a name, a key, an option): nothing was done.
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the fleet's state (a tenant not active, a reused key, an
    /// applied migration that changed): nothing was done.
    #[error("{0}")]
    Conflict(String),
    /// The catalog can't be reached now: retry later.
    #[error("the catalog is unreachable; retry later: {0}")]
    Unavailable(#[source] CatalogError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<CatalogError> for FleetError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Unavailable(_) => FleetError::Unavailable(e),
            CatalogError::NotFound(m) => FleetError::NotFound(m),
            CatalogError::Conflict(m) => FleetError::Conflict(m),
            CatalogError::Other(e) => FleetError::Other(e),
        }
    }
}

impl From<EnqueueError> for FleetError {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::KeyReused(_) => FleetError::Conflict(e.to_string()),
            EnqueueError::Catalog(e) => e.into(),
            EnqueueError::Other(e) => FleetError::Other(e),
        }
    }
}

pub type Result<T, E = FleetError> = std::result::Result<T, E>;

/// The fleet, as the CLI and the API see it. Cheap to share behind an `Arc`.
pub struct Fleet {
    pub catalog: Catalog,
    /// Needed only for `tenant_url` and `check_server` (connections to tenant servers).
    pub servers: TenantServers,
    pub producer: Producer,
    pub namespace: Namespace,
    /// The tenant migrations folder rollouts read, at each call; `None`: the default
    /// (`migrations/tenant` if present, else the built-in example schema).
    pub tenant_migrations: Option<PathBuf>,
    /// Recorded on every job this fleet enqueues.
    pub max_attempts: i32,
}

impl Fleet {
    /// The tenant, or `NotFound` saying where to look.
    pub async fn tenant(&self, slug: &TenantSlug) -> Result<crate::catalog::TenantRecord> {
        self.catalog
            .tenant(slug)
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("no tenant {slug}")))
    }

    /// Records and publishes one job (see `Producer`).
    async fn enqueue(&self, tenant: TenantSlug, spec: JobSpec, key: Option<String>) -> Result<Enqueued> {
        if let Some(key) = &key {
            validate_key(key).map_err(|e| FleetError::Invalid(e.to_string()))?;
        }
        let request = JobRequest {
            tenant,
            key,
            spec,
            job: None,
        };
        Ok(self.producer.enqueue(&request).await?)
    }

    /// Records and publishes one job per tenant (no keys: `--all` runs).
    async fn enqueue_for(&self, tenants: Vec<TenantSlug>, spec: JobSpec) -> Result<Vec<Enqueued>> {
        let requests: Vec<JobRequest> = tenants
            .into_iter()
            .map(|tenant| JobRequest {
                tenant,
                key: None,
                spec: spec.clone(),
                job: None,
            })
            .collect();
        Ok(self.producer.enqueue_many(&requests).await?)
    }
}
