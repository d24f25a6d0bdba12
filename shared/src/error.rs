//! `JobError`: how a job handler fails. The one question the runtime asks of an error is
//! whether retrying can help (`is_permanent`); backoff and the dead state are decided in
//! one place (the worker), never by ad hoc loops in handlers.

/// The error a job handler returns.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Retrying will not help (invalid input, a conflict only a human can resolve).
    #[error("{0:#}")]
    Permanent(anyhow::Error),
    /// Stopped because the worker is shutting down or lost its lease; not a failure.
    #[error("cancelled: {0}")]
    Cancelled(CancelReason),
    /// Anything else: worth another attempt after a backoff.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
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
        match self {
            JobError::Permanent(_) => true,
            JobError::Cancelled(_) => false,
            JobError::Other(e) => is_permanent_database_error(e),
        }
    }
}

/// Database errors no retry can fix: SQL syntax or access rule violations (class 42),
/// data exceptions (22), integrity violations (23) and dependent objects (2B).
fn is_permanent_database_error(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                ["42", "22", "23", "2B"]
                    .iter()
                    .any(|class| code.starts_with(class))
            }),
            _ => false,
        })
}

/// `result.permanent()?` marks an error as one retrying can't fix.
pub trait PermanentExt<T> {
    fn permanent(self) -> Result<T, JobError>;
}

impl<T, E: Into<anyhow::Error>> PermanentExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, JobError> {
        self.map_err(|e| JobError::Permanent(e.into()))
    }
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Other(e.into())
    }
}
