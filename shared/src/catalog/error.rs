//! `CatalogError`: how a catalog call fails, in the four cases callers act on differently.
//! Decided once, here, from the sqlx error itself — the runtime retries `Unavailable`, the
//! API answers it with 503, nobody searches an error chain for a SQLSTATE.

/// A failed catalog call.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The catalog could not be reached or dropped the connection (network, pool timeout,
    /// server shutting down or out of connections): retry later.
    #[error("the catalog is unreachable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Something that must exist does not (a lookup that can miss returns `Option`).
    #[error("{0}")]
    NotFound(String),
    /// A uniqueness rule refused the write (another writer got there first).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

impl From<sqlx::Error> for CatalogError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            return CatalogError::Unavailable(e);
        }
        if let sqlx::Error::Database(db) = &e {
            if db.code().as_deref() == Some("23505") {
                return CatalogError::Conflict(db.message().to_owned());
            }
        }
        CatalogError::Other(e.into())
    }
}

impl CatalogError {
    /// Whether retrying later can help (the catalog could not be reached).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CatalogError::Unavailable(_))
    }
}

/// Errors that say the database (not the statement) is the problem.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        // 08: connection exception; 57P01-3: shutdown, crash, not yet accepting; 53300: too
        // many connections.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || ["57P01", "57P02", "57P03", "53300"].contains(&c.as_ref())
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_unavailable() {
        assert!(CatalogError::from(sqlx::Error::PoolTimedOut).is_unavailable());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(CatalogError::from(sqlx::Error::Io(io)).is_unavailable());
        assert!(!CatalogError::from(sqlx::Error::RowNotFound).is_unavailable());
    }
}
