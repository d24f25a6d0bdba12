//! Start-up wiring shared by every command: open (create, migrate) the catalog and build
//! the `JobContext` workers run handlers with, or a `Producer` for enqueuing.

use crate::catalog::Catalog;
use crate::compress::GzipSettings;
use crate::config::Config;
use crate::jobs::{FaultPoints, JobContext};
use crate::migration_set::MigrationSet;
use crate::producer::Producer;
use crate::queue::Publisher;
use crate::secrets::Keyring;
use crate::servers::TenantServers;
use crate::store::{BackupStore, S3Settings};
use anyhow::Result;
use std::sync::Arc;

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
        let servers = TenantServers::new(catalog.clone(), pool_size);
        Ok(Self { catalog, servers })
    }

    /// Everything handlers need; opens the backup store.
    pub async fn job_context(
        &self,
        config: &Config,
        migrations: MigrationSet,
        faults: FaultPoints,
    ) -> Result<JobContext> {
        let store = BackupStore::open(&config.backup_url, S3Settings::default()).await?;
        Ok(JobContext {
            catalog: self.catalog.clone(),
            servers: self.servers.clone(),
            namespace: config.namespace.clone(),
            tenant_migrations: Arc::new(migrations),
            tenant_connection_limit: config.tenant_connection_limit,
            store: Arc::new(store),
            max_attempts: 5,
            gzip: GzipSettings {
                level: config.backup_gzip_level,
                ..GzipSettings::default()
            },
            faults,
            recorded_sets: Arc::default(),
        })
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
}
