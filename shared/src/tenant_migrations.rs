//! Tenant schema migrations: loading a folder in sqlx naming (`<version>_<name>.sql`, or
//! `.up.sql`; `.down.sql` ignored) and applying pending ones to one tenant database as the
//! tenant's role. Each migration commits together with its bookkeeping row, under an
//! advisory lock so two runs never migrate one tenant at once.
//!
//! A file that would escape its transaction (`COMMIT`, `BEGIN`, `SAVEPOINT`, … at top level)
//! is refused when the set is loaded, before any tenant is touched; so is a statement that
//! can't run in a transaction (`CREATE INDEX CONCURRENTLY`, …) unless the file's first line
//! is `-- pgfleet:no-transaction`. Such a file runs one statement at a time and gives up
//! atomicity: if statement 3 fails, 1 and 2 stay applied and the retry runs the whole file
//! again — so its statements must be safe to re-run (`IF NOT EXISTS`, `DROP … IF EXISTS`).
//!
//! The tenant owns its `_pgfleet_migrations` table and may write anything into it, so what
//! it says is checked against the set (a version or checksum no recorded migration has
//! fails this tenant alone, and is never copied into the catalog), read with a row cap and
//! a statement timeout, after a lock taken with a lock timeout.

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

/// First line of a migration that must run outside a transaction (see the module docs).
pub const NO_TRANSACTION_MARKER: &str = "-- pgfleet:no-transaction";

/// How long pgfleet waits for the tenant's migration lock, and for its bookkeeping read:
/// a tenant session holding the lock (or a slow view in the table's place) costs a retry,
/// not a worker slot forever.
const BOOKKEEPING_TIMEOUT: &str = "30s";

/// Bookkeeping rows read at most; a tenant that wrote more has its migration fail.
const MAX_BOOKKEEPING_ROWS: usize = 100_000;

/// One migration file: its version, name, SQL and SHA-256.
#[derive(Clone, Debug)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub file_name: String,
    pub sql: String,
    pub checksum: Vec<u8>,
    /// `false` for a `-- pgfleet:no-transaction` file: its statements, one at a time.
    pub transactional: bool,
}

impl Migration {
    /// Checks the SQL (see the module docs); errors name the file and line.
    pub fn new(
        version: i64,
        name: String,
        file_name: String,
        sql: String,
        checksum: Vec<u8>,
    ) -> Result<Self> {
        let transactional = sql.lines().next().map(str::trim) != Some(NO_TRANSACTION_MARKER);
        check_transaction_use(&file_name, &sql, transactional)?;
        Ok(Self {
            version,
            name,
            file_name,
            sql,
            checksum,
            transactional,
        })
    }
}

fn check_transaction_use(file_name: &str, sql: &str, transactional: bool) -> Result<()> {
    use crate::sql_scan::{statements, TransactionUse};
    for statement in statements(sql) {
        let shown = statement.words.join(" ");
        match (statement.transaction_use(), transactional) {
            (TransactionUse::Ordinary, _) | (TransactionUse::NeedsNoTransaction, false) => {}
            (TransactionUse::Control, true) => bail!(
                "migration {file_name} line {}: `{shown}` would end or split the transaction pgfleet runs each migration in \
                 (together with its bookkeeping row); remove it — every file already runs in a transaction of its own",
                statement.line
            ),
            (TransactionUse::Control, false) => bail!(
                "migration {file_name} line {}: `{shown}` is transaction control, and a {NO_TRANSACTION_MARKER} file runs each \
                 statement on its own; remove it",
                statement.line
            ),
            (TransactionUse::NeedsNoTransaction, true) => bail!(
                "migration {file_name} line {}: `{shown}` cannot run inside a transaction; move it to a file of its own whose \
                 first line is `{NO_TRANSACTION_MARKER}` (that file runs one statement at a time, without rollback on \
                 failure, so make each statement safe to re-run)",
                statement.line
            ),
        }
    }
    Ok(())
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
            migrations.push(Migration::new(
                version,
                name.to_owned(),
                file_name,
                sql,
                checksum,
            )?);
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

/// Takes the tenant's migration lock and reads `_pgfleet_migrations` in one round trip,
/// both bounded in time (the tenant can hold the lock or replace the table). A database
/// without the table (a new tenant) has nothing applied.
async fn lock_and_read_applied(conn: &mut PgConnection) -> Result<(Vec<(i64, Vec<u8>)>, bool), JobError> {
    use sqlx::Row;
    let sql = format!(
        "SET LOCAL lock_timeout = '{BOOKKEEPING_TIMEOUT}'; SET LOCAL statement_timeout = '{BOOKKEEPING_TIMEOUT}';
         SELECT pg_advisory_lock({MIGRATION_LOCK_KEY});
         SELECT version::text, encode(checksum, 'hex') FROM _pgfleet_migrations ORDER BY version LIMIT {}",
        MAX_BOOKKEEPING_ROWS + 1
    );
    let read = conn.fetch_all(sql.as_str()).await;
    let rows = match read {
        Ok(rows) => rows,
        // The session lock outlives the failed statement; the table is just not there yet.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
            return Ok((Vec::new(), false))
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
            return Err(anyhow::anyhow!(
                "the tenant's migration lock is held by another session (a migration, or a session of the tenant's) for over {BOOKKEEPING_TIMEOUT}; will retry"
            )
            .into())
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context("taking the tenant's migration lock and reading _pgfleet_migrations")
                .into())
        }
    };
    let rows: Vec<_> = rows.iter().filter(|r| r.len() == 2).collect();
    if rows.len() > MAX_BOOKKEEPING_ROWS {
        return Err(JobError::Permanent(anyhow::anyhow!(
            "the tenant's _pgfleet_migrations has more than {MAX_BOOKKEEPING_ROWS} rows; pgfleet did not write them — fix the tenant's table"
        )));
    }
    let mut done = Vec::new();
    for row in rows {
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
    // The tenant can write this table: anything in it that no migration of the set has is
    // this tenant's problem (its job fails), never the catalog's or the fleet's.
    for (version, checksum) in &done {
        match set.migrations.iter().find(|m| m.version == *version) {
            Some(m) if &m.checksum != checksum => {
                return Err(JobError::Permanent(anyhow::anyhow!(
                    "the tenant's _pgfleet_migrations records migration {} with a different checksum than the recorded one; \
                     either the file was changed after it was applied, or the table was altered in the tenant's database",
                    m.file_name
                )))
            }
            Some(_) => {}
            None => {
                return Err(JobError::Permanent(anyhow::anyhow!(
                    "the tenant's _pgfleet_migrations lists version {version}, which is not in the migration set being applied; \
                     pgfleet did not write that row (or the set lost a migration) — remove the row from the tenant's table, or \
                     restore the missing migration"
                )))
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
        let mut sql = String::new();
        if !m.transactional {
            if first && !table_exists {
                conn.execute(CREATE_MIGRATIONS_TABLE)
                    .await
                    .context("creating _pgfleet_migrations")?;
            }
            for statement in crate::sql_scan::statements(&m.sql) {
                conn.execute(statement.text.as_str()).await.with_context(|| {
                    format!(
                        "applying migration {} (statement at line {}; the statements before it stay applied)",
                        m.file_name, statement.line
                    )
                })?;
            }
        }
        sql.push_str("BEGIN;\n");
        if last && durability == Durability::OnCommit {
            sql.push_str("SET LOCAL synchronous_commit = on;\n");
        }
        if first && !table_exists && m.transactional {
            // Created inside the first migration's transaction: one commit less per new tenant.
            sql.push_str(CREATE_MIGRATIONS_TABLE);
            sql.push_str(";\n");
        }
        if m.transactional {
            // The file as it is (many statements allowed); the newline ends a trailing comment.
            sql.push_str(&m.sql);
        }
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
