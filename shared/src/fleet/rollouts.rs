//! Migration rollouts: refuse drift before anything runs (a migration already applied
//! anywhere whose file changed, or disappeared), pick the tenants that are not at the
//! target — so running `migrate` again only touches what is left to do — record the set and
//! publish the first phase's jobs; then watch a rollout to its end, moving it on if no
//! worker is left to.

use super::{Fleet, FleetError, Result};
use crate::catalog::{Catalog, JobRecord, RolloutRecord, RolloutSettings, RolloutTenant, TenantRecord};
use crate::migration_set::MigrationSet;
use crate::slug::TenantSlug;
use crate::status::{RolloutStatus, TenantStatus};
use crate::tenant_migrations::Timeouts;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How to run a rollout (`pgfleet migrate`, `POST /v1/migrations`).
#[derive(Debug, Clone)]
pub struct RolloutOptions {
    /// Only this tenant; else every active tenant.
    pub only: Option<TenantSlug>,
    /// Migrations at once on one tenant server.
    pub concurrency: i32,
    pub canary: usize,
    pub max_failures: Option<i32>,
    pub dry_run: bool,
    /// How long each tenant's migration waits for a lock (a tenant session holding one)
    /// before that tenant fails and is retried; `None`: for ever.
    pub lock_timeout: Option<Duration>,
    /// Longest a migration statement may run; `None`: no limit.
    pub statement_timeout: Option<Duration>,
}

/// A rollout's default lock timeout: long enough for ordinary traffic's short locks, short
/// enough that a tenant session sitting on a lock costs a retry, not a server slot.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for RolloutOptions {
    fn default() -> Self {
        Self {
            only: None,
            concurrency: crate::jobs::migrate::DEFAULT_SERVER_CONCURRENCY,
            canary: 0,
            max_failures: None,
            dry_run: false,
            lock_timeout: Some(DEFAULT_LOCK_TIMEOUT),
            statement_timeout: None,
        }
    }
}

/// What `start_rollout` did.
pub struct Started {
    pub plan: Plan,
    pub target_version: i64,
    /// Where the migration set came from (a folder, or the built-in example schema).
    pub source: String,
    /// The rollout and the jobs of its first phase (already published, or left for the
    /// sweep if the broker was unreachable); `None` for a dry run or nothing to do.
    pub rollout: Option<(Uuid, Vec<JobRecord>)>,
}

pub struct Plan {
    /// Tenants to migrate, with the versions each lacks.
    pub targets: Vec<(TenantRecord, Vec<i64>)>,
    /// Tenants in scope already at the target.
    pub up_to_date: usize,
}

/// How long `watch_rollout` sees a rollout make no progress before moving it on itself.
const STALL_BEFORE_ADVANCING: Duration = Duration::from_secs(2);

impl Fleet {
    /// Reads the tenant migrations folder and starts a rollout of it (see the module docs).
    pub async fn start_rollout(&self, options: &RolloutOptions) -> Result<Started> {
        let (set, source) = MigrationSet::load(self.tenant_migrations.as_deref())
            .map_err(|e| FleetError::Invalid(format!("{e:#}")))?;
        self.start_rollout_of(&set, source, options).await
    }

    /// Records `set` as a rollout over the tenants that lack part of it and publishes the jobs
    /// of its first phase. Drift is refused before anything is recorded.
    pub async fn start_rollout_of(
        &self,
        set: &MigrationSet,
        source: String,
        options: &RolloutOptions,
    ) -> Result<Started> {
        if options.concurrency < 1 || options.max_failures.is_some_and(|f| f < 1) {
            return Err(FleetError::Invalid(
                "concurrency and max_failures must be at least 1".into(),
            ));
        }
        let target_version = set
            .target_version()
            .ok_or_else(|| FleetError::Invalid("there are no tenant migrations to roll out".into()))?;
        check_drift(&self.catalog, set).await?;
        let plan = plan(&self.catalog, set, options.only.as_ref()).await?;
        if options.dry_run || plan.targets.is_empty() {
            return Ok(Started {
                plan,
                target_version,
                source,
                rollout: None,
            });
        }
        let targets: Vec<(Uuid, String)> = plan.targets.iter().map(|(t, _)| (t.id, t.slug.clone())).collect();
        let (id, jobs) = self
            .catalog
            .create_rollout(
                set,
                &targets,
                &RolloutSettings {
                    canary: options.canary,
                    max_failures: options.max_failures,
                    server_concurrency: options.concurrency,
                    timeouts: Timeouts {
                        lock: options.lock_timeout,
                        statement: options.statement_timeout,
                    },
                },
                self.max_attempts,
            )
            .await?;
        self.producer.publish_existing(&jobs).await;
        Ok(Started {
            plan,
            target_version,
            source,
            rollout: Some((id, jobs)),
        })
    }

    /// Follows a rollout until it ends and none of its jobs is live, calling `progress`
    /// whenever its counts change. Workers move a rollout on as its jobs finish; this does
    /// too when none of its jobs is live or nothing moved for a while, in case no worker is
    /// left to — not on every poll, which would lock the rollout ten times a second.
    pub async fn watch_rollout(
        &self,
        id: Uuid,
        mut progress: impl FnMut(&RolloutRecord),
    ) -> Result<RolloutRecord> {
        let mut last = None;
        let mut last_change = Instant::now();
        loop {
            let mut r = self.rollout_record(id).await?;
            if r.status == RolloutStatus::Running
                && (r.active == 0 || last_change.elapsed() >= STALL_BEFORE_ADVANCING)
            {
                let created = self.catalog.advance_rollout(id, self.max_attempts).await?;
                self.producer.publish_existing(&created).await;
                r = self.rollout_record(id).await?;
                last_change = Instant::now();
            }
            let counts = (r.succeeded, r.failed, r.skipped, r.remaining);
            if last != Some(counts) {
                progress(&r);
                last = Some(counts);
                last_change = Instant::now();
            }
            // A halted rollout still lets jobs that had started finish; wait for them too.
            if r.status != RolloutStatus::Running && r.active == 0 {
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A rollout with its per-tenant results.
    pub async fn rollout(&self, id: Uuid) -> Result<(RolloutRecord, Vec<RolloutTenant>)> {
        let rollout = self.rollout_record(id).await?;
        Ok((rollout, self.catalog.rollout_tenants(id).await?))
    }

    /// Halts a running rollout (`why`: who asked and why, recorded as its reason): its jobs
    /// not started are skipped; the ones running finish.
    pub async fn halt_rollout(&self, id: Uuid, why: &str) -> Result<RolloutRecord> {
        if let Err(status) = self.catalog.halt_rollout(id, why).await? {
            return Err(FleetError::Conflict(format!(
                "rollout {id} is {status}; only a running rollout is halted"
            )));
        }
        self.rollout_record(id).await
    }

    /// Resumes a halted rollout (see `Catalog::resume_rollout`) and publishes its new jobs.
    pub async fn resume_rollout(&self, id: Uuid) -> Result<(RolloutRecord, usize)> {
        let jobs = match self.catalog.resume_rollout(id, self.max_attempts).await? {
            Ok(jobs) => jobs,
            Err(status) => {
                return Err(FleetError::Conflict(format!(
                    "rollout {id} is {status}; only a halted rollout is resumed"
                )))
            }
        };
        self.producer.publish_existing(&jobs).await;
        // Nothing left to run (every skipped tenant had failed meanwhile): close it now.
        if jobs.is_empty() {
            let created = self.catalog.advance_rollout(id, self.max_attempts).await?;
            self.producer.publish_existing(&created).await;
        }
        Ok((self.rollout_record(id).await?, jobs.len()))
    }

    /// Rollouts, newest first.
    pub async fn rollouts(&self, limit: i64) -> Result<Vec<RolloutRecord>> {
        Ok(self.catalog.rollouts(limit.clamp(1, 1000)).await?)
    }

    async fn rollout_record(&self, id: Uuid) -> Result<RolloutRecord> {
        self.catalog
            .rollout(id)
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("no rollout {id}")))
    }
}

/// Fails, naming the file, if `set` disagrees with what was already applied or recorded.
pub async fn check_drift(catalog: &Catalog, set: &MigrationSet) -> Result<()> {
    for (version, checksum, recorded_file) in catalog.known_migrations().await? {
        match set.migrations.iter().find(|m| m.version == version) {
            Some(m) if m.checksum != checksum => return Err(FleetError::Conflict(format!(
                "migration {} was changed after it was applied or rolled out (its checksum differs); restore the original file and put the change in a new migration — no tenant was touched",
                m.file_name
            ))),
            Some(_) => {}
            None => return Err(FleetError::Conflict(format!(
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
                .ok_or_else(|| FleetError::NotFound(format!("no tenant {slug}")))?;
            if tenant.status != TenantStatus::Active {
                return Err(FleetError::Conflict(format!(
                    "tenant {slug} is {}; only active tenants are migrated",
                    tenant.status
                )));
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
