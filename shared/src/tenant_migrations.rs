//! Tenant schema migrations: loading a folder in sqlx naming (`<version>_<name>.sql`, or
//! `.up.sql`; `.down.sql` ignored) and applying pending ones to one tenant database as the
//! tenant's role. Each migration commits together with its bookkeeping row, under an
//! advisory lock so two runs never migrate one tenant at once.

use crate::error::JobError;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use sqlx::{Executor, PgConnection};
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

/// When the last migration's commit must be durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The caller flushes the server's WAL itself later (provision: one flush for many steps).
    CallerFlushes,
    /// The last migration commits synchronously: durable before `apply` returns.
    OnCommit,
}

/// Applies the pending migrations of `set` on `conn` (connected as the tenant's role).
///
/// A migration connection is fresh and used once, so statements go over the simple query
/// protocol (no prepare round trips, no plans cached for nothing): one round trip takes the
/// lock and reads what is applied, then one per pending migration (its transaction, with its
/// bookkeeping row; the last one also releases the lock). Per-tenant server work is the cost
/// of a rollout, so round trips here are what counts.
pub async fn apply(
    conn: &mut PgConnection,
    set: &MigrationSet,
    record: Record<'_>,
    durability: Durability,
) -> Result<Applied, JobError> {
    let (done, table_exists) = lock_and_read_applied(conn).await?;
    let result = apply_locked(conn, set, done, table_exists, record, durability).await;
    if !matches!(&result, Ok((_, true))) {
        // Nothing ran (the lock is still ours) or a migration failed mid-transaction.
        let unlock = format!("ROLLBACK; SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})");
        let unlocked = conn.execute(unlock.as_str()).await;
        if result.is_ok() {
            unlocked.context("releasing the tenant's migration lock")?;
        }
    }
    result.map(|(applied, _)| applied)
}

/// Takes the tenant's migration lock and reads `_pgfleet_migrations` in one round trip. A
/// database without the table (a new tenant) has nothing applied.
async fn lock_and_read_applied(conn: &mut PgConnection) -> Result<(Vec<(i64, Vec<u8>)>, bool), JobError> {
    use sqlx::Row;
    let sql = format!(
        "SELECT pg_advisory_lock({MIGRATION_LOCK_KEY});
         SELECT version::text, encode(checksum, 'hex') FROM _pgfleet_migrations ORDER BY version"
    );
    let read = conn.fetch_all(sql.as_str()).await;
    let rows = match read {
        Ok(rows) => rows,
        // The session lock outlives the failed statement; the table is just not there yet.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
            return Ok((Vec::new(), false))
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context("taking the tenant's migration lock")
                .into())
        }
    };
    let mut done = Vec::new();
    for row in rows.iter().filter(|r| r.len() == 2) {
        let version: String = row.try_get(0).context("reading _pgfleet_migrations")?;
        let checksum: String = row.try_get(1).context("reading _pgfleet_migrations")?;
        done.push((
            version.parse().context("a version in _pgfleet_migrations")?,
            hex_decode(&checksum).context("a checksum in _pgfleet_migrations")?,
        ));
    }
    Ok((done, true))
}

fn hex_decode(hex: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(hex.len() % 2 == 0, "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(anyhow::Error::from))
        .collect()
}

/// Applies what is pending; the bool says whether the lock was released on the way (by the
/// last migration's round trip).
async fn apply_locked(
    conn: &mut PgConnection,
    set: &MigrationSet,
    done: Vec<(i64, Vec<u8>)>,
    table_exists: bool,
    record: Record<'_>,
    durability: Durability,
) -> Result<(Applied, bool), JobError> {
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
    let pending: Vec<&Migration> = set
        .migrations
        .iter()
        .filter(|m| !done.iter().any(|(v, _)| *v == m.version))
        .collect();
    // The catalog mirror learns what was already there together with the first new one.
    let mut to_record = done.clone();
    let mut applied = Vec::new();
    let mut unlocked = false;
    for (i, m) in pending.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == pending.len();
        let mut sql = String::from("BEGIN;\n");
        if last && durability == Durability::OnCommit {
            sql.push_str("SET LOCAL synchronous_commit = on;\n");
        }
        if first && !table_exists {
            // Created inside the first migration's transaction: one commit less per new tenant.
            sql.push_str(CREATE_MIGRATIONS_TABLE);
            sql.push_str(";\n");
        }
        // The file as it is (many statements allowed); the newline ends a trailing comment.
        sql.push_str(&m.sql);
        let checksum_hex: String = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
        sql.push_str(&format!(
            "\n;\nINSERT INTO _pgfleet_migrations (version, name, checksum) VALUES ({}, {}, '\\x{checksum_hex}'::bytea);\nCOMMIT;",
            m.version,
            crate::slug::quote_literal(&m.name),
        ));
        if last {
            sql.push_str(&format!("\nSELECT pg_advisory_unlock({MIGRATION_LOCK_KEY});"));
        }
        conn.execute(sql.as_str())
            .await
            .with_context(|| format!("applying migration {}", m.file_name))?;
        unlocked = last;
        applied.push(m.version);
        to_record.push((m.version, m.checksum.clone()));
        if let Some((catalog, tenant_id)) = record {
            catalog
                .record_tenant_migrations(tenant_id, &std::mem::take(&mut to_record))
                .await?;
        }
    }
    if let Some((catalog, tenant_id)) = record {
        catalog.record_tenant_migrations(tenant_id, &to_record).await?;
    }
    let schema_version = done.iter().map(|(v, _)| *v).chain(applied.iter().copied()).max();
    Ok((
        Applied {
            applied,
            schema_version,
        },
        unlocked,
    ))
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
