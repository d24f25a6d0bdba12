//! Applying a migration set to one tenant database, as the tenant's role. Each migration
//! commits together with its bookkeeping row in the tenant's `_pgfleet_migrations`, under an
//! advisory lock so two runs never migrate one tenant at once; each commit is reported to
//! an `AppliedSink` (the caller's mirror in the catalog) as it happens. This module knows
//! nothing of the catalog.
//!
//! The tenant owns its `_pgfleet_migrations` table and may write anything into it, so what
//! it says is checked against the set (a version or checksum no migration of the set has
//! fails this tenant alone, and is never reported to the sink), read with a row cap and a
//! statement timeout, after a lock taken with a lock timeout.

use crate::migration_set::{Migration, MigrationSet};
use futures_util::future::BoxFuture;
use sqlx::{Executor, PgConnection};

/// The table in each tenant database that records what was applied.
const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS _pgfleet_migrations (
    version     bigint PRIMARY KEY,
    name        text NOT NULL,
    checksum    bytea NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now())";

/// Arbitrary constant: the advisory-lock key pgfleet's migrations take in a tenant database.
const MIGRATION_LOCK_KEY: i64 = 0x7067_666c_6565_7401;

/// How long pgfleet waits for the tenant's migration lock, and for its bookkeeping read:
/// a tenant session holding the lock (or a slow view in the table's place) costs a retry,
/// not a worker slot forever.
const BOOKKEEPING_TIMEOUT: &str = "30s";

/// Bookkeeping rows read at most; a tenant that wrote more has its migration fail.
const MAX_BOOKKEEPING_ROWS: usize = 100_000;

/// How applying migrations to a tenant failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The tenant's bookkeeping disagrees with the set (a changed file, or rows the tenant
    /// wrote): this tenant's problem, to be fixed by a human.
    #[error("{0}")]
    Bookkeeping(String),
    /// Another session holds the tenant's migration lock.
    #[error("the tenant's migration lock is held by another session (a migration, or a session of the tenant's) for over {BOOKKEEPING_TIMEOUT}; will retry")]
    LockBusy,
    /// A migration's SQL failed; `line` is the line of the file where the server saw it.
    #[error("migration {file}{} failed: {source}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Sql {
        file: String,
        line: Option<usize>,
        #[source]
        source: sqlx::Error,
    },
    /// The tenant's server or the connection failed around the migrations.
    #[error("{doing}: {source}")]
    Server {
        doing: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A migration committed but the sink could not record it (it is re-reported next time).
    #[error("recording applied migrations: {0:#}")]
    Record(anyhow::Error),
}

/// What applying a set to one tenant did.
#[derive(Debug, Default)]
pub struct Applied {
    pub applied: Vec<i64>,
    pub schema_version: Option<i64>,
}

/// Told about (version, checksum) pairs as they commit in the tenant — the ones found
/// there already (and consistent with the set) together with the first new one.
pub trait AppliedSink: Send {
    fn committed(&mut self, migrations: Vec<(i64, Vec<u8>)>) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// Limits on a migration's statements (`lock_timeout`, `statement_timeout`); `None`: none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub lock: Option<std::time::Duration>,
    pub statement: Option<std::time::Duration>,
}

impl Timeouts {
    /// `SET [LOCAL] …` statements for these limits (`scope`: `LOCAL` inside a transaction).
    fn sql(&self, scope: &str) -> String {
        let mut sql = String::new();
        for (name, limit) in [("lock_timeout", self.lock), ("statement_timeout", self.statement)] {
            let ms = limit.map_or(0, |d| d.as_millis().max(1));
            sql.push_str(&format!("SET {scope} {name} = {ms};\n"));
        }
        sql
    }
}

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
    sink: &mut dyn AppliedSink,
    durability: Durability,
    timeouts: Timeouts,
) -> Result<Applied, MigrationError> {
    let (done, table_exists) = lock_and_read_applied(conn).await?;
    let result = apply_locked(conn, set, done, table_exists, sink, durability, timeouts).await;
    if !matches!(&result, Ok((_, true))) {
        // Nothing ran (the lock is still ours) or a migration failed mid-transaction.
        let unlock = format!("ROLLBACK; SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})");
        let unlocked = conn.execute(unlock.as_str()).await;
        if result.is_ok() {
            unlocked.map_err(|source| MigrationError::Server {
                doing: "releasing the tenant's migration lock",
                source,
            })?;
        }
    }
    result.map(|(applied, _)| applied)
}

/// Takes the tenant's migration lock and reads `_pgfleet_migrations` in one round trip,
/// both bounded in time (the tenant can hold the lock or replace the table). A database
/// without the table (a new tenant) has nothing applied.
async fn lock_and_read_applied(
    conn: &mut PgConnection,
) -> Result<(Vec<(i64, Vec<u8>)>, bool), MigrationError> {
    use sqlx::Row;
    let sql = format!(
        "SET LOCAL lock_timeout = '{BOOKKEEPING_TIMEOUT}'; SET LOCAL statement_timeout = '{BOOKKEEPING_TIMEOUT}';
         SELECT pg_advisory_lock({MIGRATION_LOCK_KEY});
         SELECT version::text, encode(checksum, 'hex') FROM _pgfleet_migrations ORDER BY version LIMIT {}",
        MAX_BOOKKEEPING_ROWS + 1
    );
    let rows = match conn.fetch_all(sql.as_str()).await {
        Ok(rows) => rows,
        // The session lock outlives the failed statement; the table is just not there yet.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
            return Ok((Vec::new(), false))
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
            return Err(MigrationError::LockBusy)
        }
        Err(source) => {
            return Err(MigrationError::Server {
                doing: "taking the tenant's migration lock and reading _pgfleet_migrations",
                source,
            })
        }
    };
    let rows: Vec<_> = rows.iter().filter(|r| r.len() == 2).collect();
    if rows.len() > MAX_BOOKKEEPING_ROWS {
        return Err(MigrationError::Bookkeeping(format!(
            "the tenant's _pgfleet_migrations has more than {MAX_BOOKKEEPING_ROWS} rows; pgfleet did not write them — fix the tenant's table"
        )));
    }
    let unreadable = |what: &str| {
        MigrationError::Bookkeeping(format!(
            "the tenant's _pgfleet_migrations holds {what} pgfleet did not write — fix the tenant's table"
        ))
    };
    let mut done = Vec::new();
    for row in rows {
        let version: String = row.try_get(0).map_err(|_| unreadable("a row"))?;
        let checksum: String = row.try_get(1).map_err(|_| unreadable("a row"))?;
        done.push((
            version.parse().map_err(|_| unreadable("a version"))?,
            crate::hex::decode(&checksum).ok_or_else(|| unreadable("a checksum"))?,
        ));
    }
    Ok((done, true))
}

/// Checks the tenant's rows against the set: anything in them that no migration of the set
/// has is this tenant's problem (its job fails), never the catalog's or the fleet's.
fn check_bookkeeping(set: &MigrationSet, done: &[(i64, Vec<u8>)]) -> Result<(), MigrationError> {
    for (version, checksum) in done {
        match set.migrations.iter().find(|m| m.version == *version) {
            Some(m) if &m.checksum != checksum => {
                return Err(MigrationError::Bookkeeping(format!(
                    "the tenant's _pgfleet_migrations records migration {} with a different checksum than the recorded one; \
                     either the file was changed after it was applied, or the table was altered in the tenant's database",
                    m.file_name
                )))
            }
            Some(_) => {}
            None => {
                return Err(MigrationError::Bookkeeping(format!(
                    "the tenant's _pgfleet_migrations lists version {version}, which is not in the migration set being applied; \
                     pgfleet did not write that row (or the set lost a migration) — remove the row from the tenant's table, or \
                     restore the missing migration"
                )))
            }
        }
    }
    Ok(())
}

/// Applies what is pending; the bool says whether the lock was released on the way (by the
/// last migration's round trip).
async fn apply_locked(
    conn: &mut PgConnection,
    set: &MigrationSet,
    done: Vec<(i64, Vec<u8>)>,
    table_exists: bool,
    sink: &mut dyn AppliedSink,
    durability: Durability,
    timeouts: Timeouts,
) -> Result<(Applied, bool), MigrationError> {
    check_bookkeeping(set, &done)?;
    let pending: Vec<&Migration> = set
        .migrations
        .iter()
        .filter(|m| !done.iter().any(|(v, _)| *v == m.version))
        .collect();
    // The sink learns what was already there together with the first new one.
    let mut to_record = done.clone();
    let mut applied = Vec::new();
    let mut unlocked = false;
    for (i, m) in pending.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == pending.len();
        if !m.transactional {
            apply_statement_by_statement(conn, m, first && !table_exists, timeouts).await?;
        }
        let mut sql = String::from("BEGIN;\n");
        sql.push_str(&timeouts.sql("LOCAL"));
        if last && durability == Durability::OnCommit {
            sql.push_str("SET LOCAL synchronous_commit = on;\n");
        }
        if first && !table_exists && m.transactional {
            // Created inside the first migration's transaction: one commit less per new tenant.
            sql.push_str(CREATE_MIGRATIONS_TABLE);
            sql.push_str(";\n");
        }
        // Where the file starts in the query text, to map the server's error position to
        // a line of the file.
        let file_offset = sql.chars().count();
        if m.transactional {
            // The file as it is (many statements allowed); the newline ends a trailing comment.
            sql.push_str(&m.sql);
        }
        let checksum_hex = crate::hex::encode(&m.checksum);
        sql.push_str(&format!(
            "\n;\nINSERT INTO _pgfleet_migrations (version, name, checksum) VALUES ({}, {}, '\\x{checksum_hex}'::bytea);\nCOMMIT;",
            m.version,
            crate::postgres::quote_literal(&m.name),
        ));
        if last {
            sql.push_str(&format!("\nSELECT pg_advisory_unlock({MIGRATION_LOCK_KEY});"));
        }
        conn.execute(sql.as_str())
            .await
            .map_err(|source| MigrationError::Sql {
                file: m.file_name.clone(),
                line: m
                    .transactional
                    .then(|| line_of(&source, &m.sql, file_offset))
                    .flatten(),
                source,
            })?;
        unlocked = last;
        applied.push(m.version);
        to_record.push((m.version, m.checksum.clone()));
        sink.committed(std::mem::take(&mut to_record))
            .await
            .map_err(MigrationError::Record)?;
    }
    if !to_record.is_empty() {
        sink.committed(to_record).await.map_err(MigrationError::Record)?;
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

/// A `-- pgfleet:no-transaction` file: each statement on its own, outside a transaction.
async fn apply_statement_by_statement(
    conn: &mut PgConnection,
    m: &Migration,
    create_table: bool,
    timeouts: Timeouts,
) -> Result<(), MigrationError> {
    conn.execute(timeouts.sql("SESSION").as_str())
        .await
        .map_err(|source| MigrationError::Server {
            doing: "setting the migration's timeouts",
            source,
        })?;
    if create_table {
        conn.execute(CREATE_MIGRATIONS_TABLE)
            .await
            .map_err(|source| MigrationError::Server {
                doing: "creating _pgfleet_migrations",
                source,
            })?;
    }
    for statement in crate::sql_scan::statements(&m.sql) {
        conn.execute(statement.text.as_str())
            .await
            .map_err(|source| MigrationError::Sql {
                file: m.file_name.clone(),
                line: Some(statement.line),
                source,
            })?;
    }
    Ok(())
}

/// The line of the file the server's error points at (its 1-based character position in
/// the query, of which the file starts at `file_offset`).
fn line_of(error: &sqlx::Error, file: &str, file_offset: usize) -> Option<usize> {
    let position = error
        .as_database_error()?
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?
        .position()?;
    let sqlx::postgres::PgErrorPosition::Original(at) = position else {
        return None;
    };
    let in_file = at.checked_sub(file_offset + 1)?;
    if in_file >= file.chars().count() {
        return None;
    }
    Some(1 + file.chars().take(in_file).filter(|c| *c == '\n').count())
}
