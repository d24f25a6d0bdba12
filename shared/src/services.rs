//! Start-up wiring shared by every command: open (create, migrate) the catalog, then build
//! what a process runs — a worker, the fleet service the CLI and the API call, the HTTP
//! API's state, a scheduler.

use crate::api::ApiState;
use crate::catalog::Catalog;
use crate::compress::GzipSettings;
use crate::config::{Config, WorkerSettings};
use crate::fleet::Fleet;
use crate::jobs::{FaultPoints, JobContext};
use crate::migration_set::MigrationSet;
use crate::producer::Producer;
use crate::queue::Publisher;
use crate::scheduler::{Scheduler, SchedulerSettings, SystemClock};
use crate::secrets::Keyring;
use crate::servers::TenantServers;
use crate::store::{BackupStore, S3Settings};
use crate::worker::Worker;
use anyhow::Result;
use std::sync::Arc;
use tracing::info;

/// The catalog and the tenant servers' connections of one process.
pub struct Services {
    pub catalog: Catalog,
    pub servers: TenantServers,
}

impl Services {
    /// `pool_size` bounds connections to the catalog and to each tenant server.
    pub async fn open(config: &Config, key: impl Into<Keyring>, pool_size: u32) -> Result<Self> {
        Self::open_with(config, Some(key.into()), pool_size).await
    }

    /// `open` for processes that may run without the secret key (API, scheduler, CLI
    /// commands that never read a credential).
    pub async fn open_with(config: &Config, key: Option<Keyring>, pool_size: u32) -> Result<Self> {
        let catalog = Catalog::open_with(&config.catalog_url, key.map(Arc::new), pool_size).await?;
        let servers =
            TenantServers::with_neon_limits(catalog.clone(), pool_size, crate::neon::NeonLimits::from_env()?);
        Ok(Self { catalog, servers })
    }

    /// Everything handlers need; opens the backup store.
    pub async fn job_context(
        &self,
        config: &Config,
        migrations: MigrationSet,
        faults: FaultPoints,
    ) -> Result<JobContext> {
        let store = BackupStore::open(
            &config.backup_url,
            S3Settings {
                attempt_timeout: config.s3_attempt_timeout,
                ..S3Settings::default()
            },
        )
        .await?;
        Ok(JobContext {
            catalog: self.catalog.clone(),
            servers: self.servers.clone(),
            namespace: config.namespace.clone(),
            tenant_migrations: Arc::new(migrations),
            tenant_limits: config.tenant_limits,
            store: Arc::new(store),
            max_attempts: 5,
            gzip: GzipSettings {
                level: config.backup_gzip_level,
                ..GzipSettings::default()
            },
            faults,
            priority: Default::default(),
            recorded_sets: Arc::default(),
        })
    }

    /// A worker: registers the default tenant server, loads the tenant migrations (new
    /// tenants get them until a rollout records a set) and opens the backup store.
    pub async fn worker(&self, config: &Config, settings: &WorkerSettings) -> Result<Arc<Worker>> {
        self.catalog
            .ensure_default_server(config.server_url.as_ref())
            .await?;
        let (migrations, source) = MigrationSet::load(config.tenant_migrations.as_deref())?;
        info!(source, target_version = ?migrations.target_version(), "tenant migrations loaded");
        let mut ctx = self
            .job_context(config, migrations, stall_point_from_env())
            .await?;
        ctx.max_attempts = settings.max_attempts;
        info!(store = %ctx.store.describe(), "backup store");
        Ok(Worker::new(ctx, settings.clone(), config.amqp_url.clone()))
    }

    /// `max_attempts` is recorded on every job this producer creates.
    pub fn producer(&self, config: &Config, max_attempts: i32) -> Producer {
        let publisher = Arc::new(Publisher::new(
            config.amqp_url.clone(),
            config.namespace.clone(),
            "pgfleet producer",
        ));
        Producer::new(self.catalog.clone(), publisher, max_attempts)
    }

    /// The fleet service the CLI and the API call.
    pub fn fleet(&self, config: &Config, max_attempts: i32) -> Fleet {
        Fleet {
            catalog: self.catalog.clone(),
            servers: self.servers.clone(),
            producer: self.producer(config, max_attempts),
            namespace: config.namespace.clone(),
            tenant_migrations: config.tenant_migrations.clone(),
            max_attempts,
        }
    }

    /// The HTTP API's state; `worker` is the same process's worker (`up`), whose readiness
    /// `/readyz` then includes.
    pub fn api_state(
        &self,
        config: &Config,
        max_attempts: i32,
        access: crate::api::ApiAccess,
        worker: Option<Arc<crate::worker::WorkerHealth>>,
    ) -> Arc<ApiState> {
        Arc::new(ApiState {
            fleet: self.fleet(config, max_attempts),
            token: access.token,
            metrics_token: access.metrics_token,
            metrics_per_tenant: access.metrics_per_tenant,
            worker,
            console: access.console,
        })
    }

    pub fn scheduler(&self, config: &Config, settings: SchedulerSettings) -> Scheduler {
        let publisher = self.producer(config, settings.max_attempts).publisher().clone();
        Scheduler::new(self.catalog.clone(), publisher, Arc::new(SystemClock), settings)
    }
}

/// `PGFLEET_TEST_STALL_AT=<fault point>`: a worker that stops dead at that point of a
/// handler (its job's thread sleeps), for tests that SIGKILL a worker at an exact step of
/// a job. Unset in production: no fault points at all.
fn stall_point_from_env() -> FaultPoints {
    match std::env::var("PGFLEET_TEST_STALL_AT") {
        Ok(point) if !point.is_empty() => {
            tracing::warn!(
                point,
                "PGFLEET_TEST_STALL_AT is set: jobs stall at that point (tests only)"
            );
            FaultPoints::new(move |at, tenant| {
                if at == point {
                    tracing::warn!(point = at, %tenant, "stalled at fault point");
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                    }
                }
                Ok(())
            })
        }
        _ => FaultPoints::default(),
    }
}
