//! The catalog: pgfleet's own Postgres database and the source of truth for tenants, the
//! servers they live on and every job. Created if missing and migrated on every start
//! (`sqlx::migrate!`, which serialises concurrent migrators with an advisory lock).
//! Credentials in it are encrypted with the install's keys (`secrets::Keyring`), each bound
//! to its row. The catalog database admits no one by default (`REVOKE ALL … FROM PUBLIC`):
//! tenant roles on a co-located server must not reach it.

mod backups;
mod branches;
mod console;
mod error;
mod history;
mod jobs;
mod metrics;
mod moves;
mod rollouts;
mod schedules;
mod secrets;
mod servers;
mod tenants;
mod warm;
mod webhooks;

pub use backups::{BackupRecord, BackupStats};
pub use branches::BranchRecord;
pub use console::{ConsoleAction, ConsoleSession, JobAttempt, JobSearch, RolloutFailure, TenantSearch};
pub use error::CatalogError;
pub use history::HistoryPruned;
pub use jobs::{producer_key, ClaimOutcome, DeadLetterRecord, Fence, JobRecord, NewJob, PRODUCER_KEY_PREFIX};
pub use metrics::{BackupAgeSummary, DurationHistogram, DURATION_BUCKETS};
pub use moves::MoveRecord;
pub use rollouts::{RolloutRecord, RolloutSettings, RolloutTenant, TenantMigrationStart, SKIPPED};
pub use schedules::{scheduled_backup_key, scheduled_prune_key, DueBackup, ScheduledTenant};
pub use secrets::RotationReport;
pub use servers::{NewServer, PlacementError, ServerRecord};
pub use tenants::{NewTenant, TenantLimits, TenantRecord};
pub use warm::{WarmDatabase, WarmServer};
pub use webhooks::{DeliveryRecord, WebhookRecord, WebhookTarget, WEBHOOK_EVENTS};

use crate::secrets::{redact_url, Binding, KeyId, Keyring};
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
/// Ids (8 bytes each, concatenated) of keys a rotation retired: no process may seal with them.
const RETIRED_KEYS_SETTING: &str = "retired_key_ids";

/// Handle on the catalog database; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    pool: PgPool,
    /// `None` for processes that never touch credentials (API, scheduler, read-only CLI):
    /// they need not hold the install's key.
    key: Option<Arc<Keyring>>,
}

impl Catalog {
    /// Creates the catalog database if missing, applies pending migrations and checks that
    /// `key` holds the key the catalog's credentials were encrypted with.
    pub async fn open(url: &SecretString, key: Arc<Keyring>, max_connections: u32) -> Result<Self> {
        Self::open_with(url, Some(key), max_connections).await
    }

    /// `open`, for a process that may have no key (checked if given): anything that needs
    /// one (a tenant's password, registering a server) then fails saying so.
    pub async fn open_with(
        url: &SecretString,
        key: Option<Arc<Keyring>>,
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
        catalog.close_to_public().await;
        if catalog.key.is_some() {
            catalog.check_secret_key().await?;
        }
        Ok(catalog)
    }

    /// The connection pool, for queries outside this module's methods.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The catalog server's time: the one clock pgfleet's records are ordered and aged by.
    pub async fn now(&self) -> error::Result<chrono::DateTime<chrono::Utc>> {
        Ok(sqlx::query_scalar("SELECT now()").fetch_one(&self.pool).await?)
    }

    /// The install's keys, or an error saying this process was started without them.
    pub fn key(&self) -> std::result::Result<&Keyring, CatalogError> {
        self.key.as_deref().ok_or_else(|| {
            CatalogError::Other(anyhow::anyhow!(
                "this needs the install's secret key: set PGFLEET_SECRET_KEY (or PGFLEET_SECRET_KEY_FILE) as on the workers"
            ))
        })
    }

    /// The first process to start stores a value encrypted with its key; every later one
    /// must decrypt it, so a worker with the wrong key fails at start, not job by job. A
    /// process whose current key a rotation retired is refused too: what it would seal, the
    /// others may no longer be able to read.
    async fn check_secret_key(&self) -> Result<()> {
        let key = self.key()?;
        let binding = Binding::setting(KEY_CHECK_SETTING);
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(KEY_CHECK_SETTING)
            .bind(key.encrypt(KEY_CHECK_PLAINTEXT, &binding))
            .execute(&self.pool)
            .await?;
        let stored: Vec<u8> = sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(KEY_CHECK_SETTING)
            .fetch_one(&self.pool)
            .await?;
        match key.decrypt(&stored, &binding) {
            Ok(plain) if plain == KEY_CHECK_PLAINTEXT => {}
            _ => anyhow::bail!(
                "PGFLEET_SECRET_KEY does not match the key this catalog was created with (or was rotated to); \
                 use the same key on every pgfleet process (for `pgfleet up`, it is in the data folder's secret.key)"
            ),
        }
        if self.retired_key_ids().await?.contains(&key.current_id()) {
            anyhow::bail!(
                "PGFLEET_SECRET_KEY (key {}) was retired by `pgfleet secret-key rotate`; \
                 start this process with the install's current key",
                key.current_id()
            );
        }
        Ok(())
    }

    /// Keys retired by rotations.
    pub async fn retired_key_ids(&self) -> error::Result<Vec<KeyId>> {
        let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(RETIRED_KEYS_SETTING)
            .fetch_optional(&self.pool)
            .await?;
        Ok(stored
            .unwrap_or_default()
            .chunks(8)
            .filter_map(KeyId::from_slice)
            .collect())
    }

    /// No role may connect to the catalog database unless granted: PUBLIC's default CONNECT
    /// would let every tenant role on a co-located server in. Revoked once, by a process that
    /// may (the database's owner); others only warn, since the operator must do it.
    async fn close_to_public(&self) {
        let open: Result<bool, sqlx::Error> = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                             WHERE d.datname = current_database() AND a.grantee = 0)",
        )
        .fetch_one(&self.pool)
        .await;
        if !matches!(open, Ok(true)) {
            return;
        }
        let revoked = sqlx::raw_sql(
            "DO $$ BEGIN EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()); END $$",
        )
        .execute(&self.pool)
        .await;
        match revoked {
            Ok(_) => tracing::info!("revoked PUBLIC's access to the catalog database"),
            Err(e) => tracing::warn!(
                error = %e,
                "PUBLIC may connect to the catalog database (so may every tenant role on this server); \
                 as its owner, run REVOKE ALL ON DATABASE <catalog> FROM PUBLIC"
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
