//! A tenant migration set: the files of a migrations folder in sqlx naming
//! (`<version>_<name>.sql`, or `.up.sql`; `.down.sql` ignored), in version order, each with
//! its SHA-256 — what a rollout records in the catalog and workers apply, whatever is on
//! their disk.
//!
//! A file that would escape the transaction pgfleet runs it in (`COMMIT`, `BEGIN`,
//! `SAVEPOINT`, … at top level) is refused when the set is built, before any tenant is
//! touched; so is a statement that can't run in a transaction (`CREATE INDEX CONCURRENTLY`,
//! …) unless the file's first line is `-- pgfleet:no-transaction`. Such a file runs one
//! statement at a time and gives up atomicity: if statement 3 fails, 1 and 2 stay applied
//! and the retry runs the whole file again — so its statements must be safe to re-run
//! (`IF NOT EXISTS`, `DROP … IF EXISTS`).

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The tenant migrations folder used when none is configured (if it exists).
pub const DEFAULT_TENANT_MIGRATIONS: &str = "migrations/tenant";

/// First line of a migration that must run outside a transaction (see the module docs).
pub const NO_TRANSACTION_MARKER: &str = "-- pgfleet:no-transaction";

/// The example app schema, used when no migrations folder is configured or found.
const BUILT_IN: &[(&str, &str)] = &[(
    "1_example_app.sql",
    include_str!("../../migrations/tenant/1_example_app.sql"),
)];

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
                let default = Path::new(DEFAULT_TENANT_MIGRATIONS);
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

    /// SHA-256 over every migration's (version, checksum), in order: two sets with the same
    /// digest leave a database with the same `_pgfleet_migrations`.
    pub fn digest(&self) -> Vec<u8> {
        let mut hasher = Sha256::new();
        for m in &self.migrations {
            hasher.update(m.version.to_be_bytes());
            hasher.update(&m.checksum);
        }
        hasher.finalize().to_vec()
    }
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
