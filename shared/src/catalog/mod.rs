//! The catalog: pgfleet's own Postgres database and the source of truth for tenants, the
//! servers they live on and every job. Created if missing and migrated on every start
//! (`sqlx::migrate!`, which serialises concurrent migrators with an advisory lock).
//! Credentials in it are encrypted with the install's `SecretKey`.

mod backups;
mod jobs;
mod metrics;
mod rollouts;
mod schedules;
mod servers;
mod tenants;

pub use backups::{BackupRecord, BackupStats};
pub use jobs::{ClaimOutcome, DispatchItem, JobRecord, NewJob};
pub use metrics::{DurationHistogram, DURATION_BUCKETS};
pub use rollouts::{RolloutRecord, RolloutTenant, TenantMigrationStart, SKIPPED};
pub use schedules::{scheduled_backup_key, DueBackup, ScheduledTenant};
pub use servers::ServerRecord;
pub use tenants::{NewTenant, TenantRecord};

use crate::secrets::{redact_url, SecretKey};
use anyhow::{Context, Result};
use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::{ConnectOptions, PgPool, Postgres};
use std::sync::Arc;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/catalog");

const KEY_CHECK_SETTING: &str = "secret_key_check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"pgfleet secret key check v1";

/// Handle on the catalog database; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    pool: PgPool,
    /// `None` for processes that never touch credentials (API, scheduler, read-only CLI):
    /// they need not hold the install's key.
    key: Option<Arc<SecretKey>>,
}

impl Catalog {
    /// Creates the catalog database if missing, applies pending migrations and checks that
    /// `key` is the key the catalog's credentials were encrypted with.
    pub async fn open(url: &SecretString, key: Arc<SecretKey>, max_connections: u32) -> Result<Self> {
        Self::open_with(url, Some(key), max_connections).await
    }

    /// `open`, for a process that may have no key (checked if given): anything that needs
    /// one (a tenant's password, registering a server) then fails saying so.
    pub async fn open_with(
        url: &SecretString,
        key: Option<Arc<SecretKey>>,
        max_connections: u32,
    ) -> Result<Self> {
        let shown = redact_url(url.expose_secret());
        let options = crate::postgres::connect_options(url.expose_secret())
            .with_context(|| format!("PGFLEET_CATALOG_URL ({shown}) is not a valid Postgres URL"))?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        create_database_if_missing(url, &shown).await?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot connect to the catalog at {shown}; is Postgres running and PGFLEET_CATALOG_URL right?"))?;
        MIGRATOR
            .run(&pool)
            .await
            .with_context(|| format!("migrating the catalog at {shown}"))?;
        let catalog = Self { pool, key };
        if catalog.key.is_some() {
            catalog.check_secret_key().await?;
        }
        Ok(catalog)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The install's secret key, or an error saying this process was started without it.
    pub fn key(&self) -> Result<&SecretKey> {
        self.key.as_deref().context(
            "this needs the install's secret key: set PGFLEET_SECRET_KEY (or PGFLEET_SECRET_KEY_FILE) as on the workers",
        )
    }

    /// The first process to start stores a value encrypted with its key; every later one
    /// must decrypt it, so a worker with the wrong key fails at start, not job by job.
    async fn check_secret_key(&self) -> Result<()> {
        let key = self.key()?;
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(KEY_CHECK_SETTING)
            .bind(key.encrypt(KEY_CHECK_PLAINTEXT))
            .execute(&self.pool)
            .await?;
        let stored: Vec<u8> = sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(KEY_CHECK_SETTING)
            .fetch_one(&self.pool)
            .await?;
        match key.decrypt(&stored) {
            Ok(plain) if plain == KEY_CHECK_PLAINTEXT => Ok(()),
            _ => anyhow::bail!(
                "PGFLEET_SECRET_KEY does not match the key this catalog was created with; \
                 use the same key on every pgfleet process (for `pgfleet up`, it is in the data folder's secret.key)"
            ),
        }
    }
}

async fn create_database_if_missing(url: &SecretString, shown: &str) -> Result<()> {
    let url = url.expose_secret();
    let exists = Postgres::database_exists(url).await.with_context(|| {
        format!(
            "cannot reach the catalog server at {shown}; is Postgres running and PGFLEET_CATALOG_URL right?"
        )
    })?;
    if !exists {
        if let Err(err) = Postgres::create_database(url).await {
            // Another process may have created it at the same moment.
            if !Postgres::database_exists(url).await.unwrap_or(false) {
                return Err(anyhow::Error::new(err).context(format!("creating the catalog database {shown}")));
            }
        } else {
            tracing::info!(catalog = %shown, "created the catalog database");
        }
    }
    Ok(())
}
