//! Tenant schema migrations: loading a folder in sqlx naming (`<version>_<name>.sql`, or
//! `.up.sql`; `.down.sql` ignored) and applying pending ones to one tenant database as the
//! tenant's role. Each migration commits together with its bookkeeping row, under an
//! advisory lock so two runs never migrate one tenant at once.

use crate::error::JobError;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use sqlx::{Connection, Executor, PgConnection};
use std::path::Path;

/// The example app schema, used when no migrations folder is configured or found.
const BUILT_IN: &[(&str, &str)] = &[(
    "1_example_app.sql",
    include_str!("../../migrations/tenant/1_example_app.sql"),
)];

/// The table in each tenant database that records what was applied.
const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS _pgfleet_migrations (
    version     bigint PRIMARY KEY,
    name        text NOT NULL,
    checksum    bytea NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now())";

/// Arbitrary constant: the advisory-lock key pgfleet's migrations take in a tenant database.
const MIGRATION_LOCK_KEY: i64 = 0x7067_666c_6565_7401;

#[derive(Clone, Debug)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub file_name: String,
    pub sql: String,
    pub checksum: Vec<u8>,
}

#[derive(Clone, Debug, Default)]
pub struct MigrationSet {
    pub migrations: Vec<Migration>,
}

impl MigrationSet {
    pub fn built_in() -> Self {
        Self::from_files(BUILT_IN.iter().map(|(n, s)| (n.to_string(), s.to_string())))
            .expect("built-in migrations are well-formed")
    }

    /// `explicit` is the configured folder (must exist); without one, `migrations/tenant`
    /// is used if present, else the built-in example schema.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, String)> {
        match explicit {
            Some(dir) => Ok((Self::load_dir(dir)?, dir.display().to_string())),
            None => {
                let default = Path::new(crate::config::DEFAULT_TENANT_MIGRATIONS);
                if default.is_dir() {
                    Ok((Self::load_dir(default)?, default.display().to_string()))
                } else {
                    Ok((Self::built_in(), "built-in example schema".to_owned()))
                }
            }
        }
    }

    pub fn load_dir(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).with_context(|| {
            format!(
                "cannot read the tenant migrations folder {} (PGFLEET_TENANT_MIGRATIONS)",
                dir.display()
            )
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".sql") || name.ends_with(".down.sql") {
                continue;
            }
            let sql = std::fs::read_to_string(entry.path())
                .with_context(|| format!("reading migration {}", entry.path().display()))?;
            files.push((name, sql));
        }
        Self::from_files(files)
    }

    pub fn from_files(files: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut migrations = Vec::new();
        for (file_name, sql) in files {
            let stem = file_name.trim_end_matches(".sql").trim_end_matches(".up");
            let Some((version, name)) = stem.split_once('_') else {
                bail!("migration file {file_name} is not named <version>_<name>.sql");
            };
            let version: i64 = version.parse().with_context(|| {
                format!("migration file {file_name}: {version:?} is not a version number")
            })?;
            let checksum = Sha256::digest(sql.as_bytes()).to_vec();
            migrations.push(Migration {
                version,
                name: name.to_owned(),
                file_name,
                sql,
                checksum,
            });
        }
        migrations.sort_by_key(|m| m.version);
        if let Some(w) = migrations.windows(2).find(|w| w[0].version == w[1].version) {
            bail!(
                "migrations {} and {} have the same version",
                w[0].file_name,
                w[1].file_name
            );
        }
        Ok(Self { migrations })
    }

    pub fn target_version(&self) -> Option<i64> {
        self.migrations.last().map(|m| m.version)
    }
}

/// What applying a set to one tenant did.
#[derive(Debug, Default)]
pub struct Applied {
    pub applied: Vec<i64>,
    pub schema_version: Option<i64>,
}

/// Where applied migrations are mirrored in the catalog (and `schema_version` moved up),
/// each as soon as it commits.
pub type Record<'a> = Option<(&'a crate::catalog::Catalog, uuid::Uuid)>;

/// Applies the pending migrations of `set` on `conn` (connected as the tenant's role).
pub async fn apply(
    conn: &mut PgConnection,
    set: &MigrationSet,
    record: Record<'_>,
) -> Result<Applied, JobError> {
    // One round trip: take the lock, then (under it) see whether the bookkeeping table exists.
    let table_exists: bool = sqlx::query_scalar(
        "SELECT to_regclass('_pgfleet_migrations') IS NOT NULL FROM (SELECT pg_advisory_lock($1)) AS locked",
    )
    .bind(MIGRATION_LOCK_KEY)
    .fetch_one(&mut *conn)
    .await
    .context("taking the tenant's migration lock")?;
    let result = apply_locked(conn, set, table_exists, record).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    let applied = result?;
    unlocked.context("releasing the tenant's migration lock")?;
    Ok(applied)
}

/// The bookkeeping table is created inside the first migration's transaction rather than
/// on its own: one commit less per new tenant.
async fn apply_locked(
    conn: &mut PgConnection,
    set: &MigrationSet,
    table_exists: bool,
    record: Record<'_>,
) -> Result<Applied, JobError> {
    let done: Vec<(i64, Vec<u8>)> = if table_exists {
        sqlx::query_as("SELECT version, checksum FROM _pgfleet_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await
            .context("reading the tenant's migrations table")?
    } else {
        Vec::new()
    };
    if let Some((catalog, tenant_id)) = record {
        catalog.record_tenant_migrations(tenant_id, &done).await?;
    }
    for (version, checksum) in &done {
        if let Some(m) = set.migrations.iter().find(|m| m.version == *version) {
            if &m.checksum != checksum {
                return Err(JobError::Permanent(anyhow::anyhow!(
                    "migration {} was changed after it was applied (checksum differs); restore the original file and add a new migration instead",
                    m.file_name
                )));
            }
        }
    }
    let mut applied = Vec::new();
    for m in &set.migrations {
        if done.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        let mut tx = conn.begin().await?;
        sqlx::query(CREATE_MIGRATIONS_TABLE).execute(&mut *tx).await?;
        // A `&str` without arguments runs over the simple query protocol, so a migration
        // file may hold many statements.
        (&mut *tx)
            .execute(m.sql.as_str())
            .await
            .with_context(|| format!("applying migration {}", m.file_name))?;
        sqlx::query("INSERT INTO _pgfleet_migrations (version, name, checksum) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(&m.name)
            .bind(&m.checksum)
            .execute(&mut *tx)
            .await?;
        tx.commit()
            .await
            .with_context(|| format!("committing migration {}", m.file_name))?;
        applied.push(m.version);
        if let Some((catalog, tenant_id)) = record {
            catalog
                .record_tenant_migrations(tenant_id, &[(m.version, m.checksum.clone())])
                .await?;
        }
    }
    let schema_version = done.iter().map(|(v, _)| *v).chain(applied.iter().copied()).max();
    Ok(Applied {
        applied,
        schema_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlx_names_in_version_order() {
        let set = MigrationSet::from_files([
            ("20_b.sql".to_owned(), "b".to_owned()),
            ("3_a.up.sql".to_owned(), "a".to_owned()),
        ])
        .unwrap();
        let versions: Vec<_> = set
            .migrations
            .iter()
            .map(|m| (m.version, m.name.as_str()))
            .collect();
        assert_eq!(versions, [(3, "a"), (20, "b")]);
        assert!(MigrationSet::from_files([("x.sql".to_owned(), String::new())]).is_err());
        assert!(MigrationSet::from_files([
            ("1_a.sql".to_owned(), String::new()),
            ("1_b.sql".to_owned(), String::new())
        ])
        .is_err());
        assert_eq!(MigrationSet::built_in().target_version(), Some(1));
    }
}
