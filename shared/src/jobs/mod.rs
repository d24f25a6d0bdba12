//! Job handlers, one file per kind, all with the same shape:
//! `async fn run(ctx: &JobContext, job: &Claimed<Spec>) -> Result<Outcome, JobError>`, where
//! `Spec` is the kind's own fields (`message::*Spec`), parsed once from the job's payload.
//! Every handler is "make it so": it reads the actual state, acts on the difference only,
//! and reports "already done" when there is none, so running it twice is harmless.

pub mod backup;
pub mod delete;
pub mod dev_copy;
pub mod migrate;
pub mod move_tenant;
pub mod provision;
pub mod prune;
pub mod restore;
pub mod warm_pool;

use crate::catalog::{Catalog, JobRecord};
use crate::compress::GzipSettings;
use crate::config::Namespace;
use crate::error::JobError;
use crate::message::JobSpec;
use crate::migration_set::MigrationSet;
use crate::servers::TenantServers;
use crate::slug::TenantSlug;
use crate::status::TenantStatus;
use crate::store::BackupStore;
use anyhow::Context;
use std::sync::Arc;

/// Everything a handler may use; one per worker process.
#[derive(Clone)]
pub struct JobContext {
    pub catalog: Catalog,
    pub servers: TenantServers,
    pub namespace: Namespace,
    pub tenant_migrations: Arc<MigrationSet>,
    /// The namespace defaults new tenants get.
    pub tenant_limits: crate::catalog::TenantLimits,
    pub store: Arc<BackupStore>,
    pub gzip: GzipSettings,
    /// Attempts recorded on jobs this process creates (a rollout's next phase).
    pub max_attempts: i32,
    pub faults: FaultPoints,
    /// Scheduled backups yield the CPU to signups and restores in this worker.
    pub priority: crate::priority::Priority,
    /// Rollouts' recorded migration sets, which never change once recorded.
    pub recorded_sets: Arc<std::sync::Mutex<std::collections::HashMap<uuid::Uuid, Arc<MigrationSet>>>>,
}

impl JobContext {
    /// The migration set a rollout recorded (read from the catalog once per process).
    pub async fn recorded_set(&self, rollout: uuid::Uuid) -> anyhow::Result<Arc<MigrationSet>> {
        if let Some(set) = self.recorded_sets.lock().expect("not poisoned").get(&rollout) {
            return Ok(set.clone());
        }
        let set = Arc::new(self.catalog.rollout_migration_set(rollout).await?);
        self.recorded_sets
            .lock()
            .expect("not poisoned")
            .insert(rollout, set.clone());
        Ok(set)
    }
}

/// Mirrors a tenant's applied migrations into the catalog as they commit (and moves its
/// `schema_version` up), so drift can be checked without connecting to the fleet.
pub struct CatalogMirror<'a> {
    pub catalog: &'a Catalog,
    pub tenant_id: uuid::Uuid,
}

impl crate::tenant_migrations::AppliedSink for CatalogMirror<'_> {
    fn committed(
        &mut self,
        migrations: Vec<(i64, Vec<u8>)>,
    ) -> futures_util::future::BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.catalog
                .record_tenant_migrations(self.tenant_id, &migrations)
                .await
                .map_err(Into::into)
        })
    }
}

/// What a handler did, recorded as the job's `outcome`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// One line for humans, e.g. "provisioned" or "already active".
    pub summary: String,
    /// Figures and facts (what was created, versions, bytes, …).
    pub details: serde_json::Value,
}

impl Outcome {
    pub fn new(summary: impl Into<String>, details: serde_json::Value) -> Self {
        Self {
            summary: summary.into(),
            details,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// What every handler gets: the claimed job (its lease epoch fences the outcome), its
/// tenant, and its kind's fields.
pub struct Claimed<S> {
    pub job: JobRecord,
    pub tenant: TenantSlug,
    pub spec: S,
}

/// Runs a claimed job with the handler of its kind. The registry of kinds: one line each.
pub async fn run(ctx: &JobContext, job: &JobRecord) -> Result<Outcome, JobError> {
    let request = job.request().map_err(JobError::Permanent)?;
    let (job, tenant) = (job.clone(), request.tenant);
    match request.spec {
        JobSpec::Provision(spec) => provision::run(ctx, &Claimed { job, tenant, spec }).await,
        JobSpec::Backup(spec) => backup::run(ctx, &Claimed { job, tenant, spec }).await,
        JobSpec::Prune(spec) => prune::run(ctx, &Claimed { job, tenant, spec }).await,
        JobSpec::Restore(spec) => restore::run(ctx, &Claimed { job, tenant, spec }).await,
        JobSpec::Delete(spec) => delete::run(ctx, &Claimed { job, tenant, spec }).await,
        JobSpec::Migrate(spec) => migrate::run(ctx, &Claimed { job, tenant, spec }).await,
        JobSpec::Move(spec) => move_tenant::run(ctx, &Claimed { job, tenant, spec }).await,
    }
}

/// The tenant, if it exists and is active; otherwise a permanent error saying what
/// (`action`, e.g. "backed up") only active tenants get.
pub async fn active_tenant(
    ctx: &JobContext,
    slug: &TenantSlug,
    action: &str,
) -> Result<crate::catalog::TenantRecord, JobError> {
    require_active(ctx.catalog.tenant(slug).await?, slug, action)
}

/// `active_tenant` for a tenant row already read (`None`: no such tenant).
pub fn require_active(
    tenant: Option<crate::catalog::TenantRecord>,
    slug: &TenantSlug,
    action: &str,
) -> Result<crate::catalog::TenantRecord, JobError> {
    let tenant = tenant.ok_or_else(|| JobError::Permanent(anyhow::anyhow!("no tenant {slug}")))?;
    if tenant.status != TenantStatus::Active {
        return Err(JobError::Permanent(anyhow::anyhow!(
            "tenant {slug} is {}; only active tenants are {action}",
            tenant.status
        )));
    }
    Ok(tenant)
}

/// Follow-up once a job's outcome is recorded: a migrate job moves its rollout on (next
/// phase, halt, done). Returns jobs created on the way, for the caller to publish.
pub async fn after_finish(
    ctx: &JobContext,
    job: &JobRecord,
    succeeded: bool,
) -> anyhow::Result<Vec<JobRecord>> {
    match job.request().map(|r| r.spec) {
        Ok(JobSpec::Migrate(crate::message::MigrateSpec { rollout, canary })) => {
            // A success in the middle of a rollout changes nothing; skip the locking pass
            // unless this job failed, may end a canary phase, or may be the last one (a
            // main-phase job: every tenant of the rollout has its job by then).
            let decisive = !succeeded || canary || !ctx.catalog.rollout_has_live_jobs(rollout).await?;
            if decisive {
                Ok(ctx.catalog.advance_rollout(rollout, ctx.max_attempts).await?)
            } else {
                Ok(Vec::new())
            }
        }
        _ => Ok(Vec::new()),
    }
}

/// A job ended for good without success (failed, dead, or out of attempts at a claim): the
/// kinds that leave a tenant half-way put it back (a delete hands the tenant back, a move is
/// undone or, past its switch, finished). Safe to call more than once.
pub async fn gave_up(ctx: &JobContext, job: &JobRecord) {
    let result = match job.kind {
        crate::status::JobKind::Delete => delete::give_up(ctx, job).await,
        crate::status::JobKind::Move => move_tenant::give_up(ctx, job).await,
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(job_id = %job.id, error = %format!("{e:#}"), "could not put the tenant of a job that gave up back in order; `pgfleet jobs show` has the job");
    }
}

/// Named points inside handlers where tests inject a failure, to prove that an interrupted
/// job completes on retry. Empty (and free) in production.
#[derive(Clone, Default)]
pub struct FaultPoints(Option<Arc<FaultHook>>);

/// Called with the point's name and the job's tenant; an `Err` fails the job there.
pub type FaultHook = dyn Fn(&str, &TenantSlug) -> anyhow::Result<()> + Send + Sync;

impl FaultPoints {
    pub fn new(hook: impl Fn(&str, &TenantSlug) -> anyhow::Result<()> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(hook)))
    }

    pub fn check(&self, point: &str, tenant: &TenantSlug) -> Result<(), JobError> {
        match &self.0 {
            Some(hook) => hook(point, tenant)
                .with_context(|| format!("injected fault at {point}"))
                .map_err(JobError::Other),
            None => Ok(()),
        }
    }
}
