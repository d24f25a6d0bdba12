//! `JobError`: how a job handler fails. The one question the runtime asks of an error is
//! whether retrying can help (`is_permanent`); backoff and the dead state are decided in
//! one place (`worker::disposition`), never by ad hoc loops in handlers.
//!
//! Permanence is decided where the error is still typed, never by searching a chain: a
//! catalog error by its `CatalogError` variant (an unreachable catalog is retried), an SQL
//! error from a tenant server by its own SQLSTATE class (`ServerSql::doing`), a migration
//! error by its `MigrationError` variant.

use crate::catalog::CatalogError;
use crate::postgres::statement_is_at_fault;

/// The error a job handler returns.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Retrying will not help (invalid input, a conflict only a human can resolve).
    #[error("{}", one_line(.0))]
    Permanent(anyhow::Error),
    /// Stopped because the worker is shutting down or lost its lease; not a failure.
    #[error("cancelled: {0}")]
    Cancelled(CancelReason),
    /// Anything else: worth another attempt after a backoff.
    #[error("{}", one_line(.0))]
    Other(#[from] anyhow::Error),
}

/// An error and its causes on one line, each said once: a cause whose text the line already
/// holds is skipped (sqlx shows a server error as "error returned from database: X" and
/// then has X as its source; our errors that quote their source would repeat it too).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Why a running job was stopped before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The worker is shutting down and its grace period is over: hand the job back.
    Shutdown,
    /// The lease could not be renewed: another worker may own the job now.
    LeaseLost,
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CancelReason::Shutdown => "worker shutting down",
            CancelReason::LeaseLost => "lease lost",
        })
    }
}

impl JobError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, JobError::Permanent(_))
    }

    /// A permanent error from a message.
    pub fn permanent(message: impl std::fmt::Display + Send + Sync + 'static) -> Self {
        JobError::Permanent(anyhow::anyhow!("{message}"))
    }
}

/// Something that must exist and doesn't will not appear by retrying; everything else the
/// catalog says (unreachable, a concurrent writer) may pass.
impl From<CatalogError> for JobError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound(_) => JobError::Permanent(e.into()),
            _ => JobError::Other(e.into()),
        }
    }
}

/// An SQL error a tenant server returned for a statement pgfleet sent: permanent when the
/// statement itself is wrong — syntax or access rule (SQLSTATE class 42), data exception
/// (22), integrity violation (23), dependent objects (2B) — retried otherwise.
impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        if statement_is_at_fault(&e) {
            JobError::Permanent(e.into())
        } else {
            JobError::Other(e.into())
        }
    }
}

/// `result.doing("creating role x")?`: a tenant server's SQL error, classified by its own
/// SQLSTATE, with what pgfleet was doing.
pub trait ServerSql<T> {
    fn doing(self, what: impl std::fmt::Display) -> Result<T, JobError>;
}

impl<T> ServerSql<T> for Result<T, sqlx::Error> {
    fn doing(self, what: impl std::fmt::Display) -> Result<T, JobError> {
        self.map_err(|e| server_sql_error(e, what))
    }
}

/// A tenant server's SQL error while doing `what`, classified by its own SQLSTATE.
pub fn server_sql_error(e: sqlx::Error, what: impl std::fmt::Display) -> JobError {
    let permanent = statement_is_at_fault(&e);
    let e = anyhow::Error::new(e).context(what.to_string());
    if permanent {
        JobError::Permanent(e)
    } else {
        JobError::Other(e)
    }
}

/// A tenant's bookkeeping that disagrees needs a human; a migration's SQL error is as
/// permanent as its SQLSTATE says; lock, connection and recording trouble pass.
impl From<crate::tenant_migrations::MigrationError> for JobError {
    fn from(e: crate::tenant_migrations::MigrationError) -> Self {
        let permanent = match &e {
            crate::tenant_migrations::MigrationError::Bookkeeping(_) => true,
            crate::tenant_migrations::MigrationError::Sql { source, .. } => statement_is_at_fault(source),
            crate::tenant_migrations::MigrationError::LockBusy
            | crate::tenant_migrations::MigrationError::Server { .. }
            | crate::tenant_migrations::MigrationError::Record(_) => false,
        };
        if permanent {
            JobError::Permanent(e.into())
        } else {
            JobError::Other(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error returned from database: {0}")]
    struct Wrapper(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("canceling statement due to lock timeout")]
    struct Inner;

    #[test]
    fn a_cause_already_quoted_is_said_once() {
        let e = anyhow::Error::new(Wrapper(Inner)).context("migration 2_x.sql failed");
        assert_eq!(
            one_line(&e),
            "migration 2_x.sql failed: error returned from database: canceling statement due to lock timeout"
        );
        assert_eq!(
            JobError::Other(e).to_string(),
            "migration 2_x.sql failed: error returned from database: canceling statement due to lock timeout"
        );
    }
}
