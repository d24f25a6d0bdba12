//! `restore` — load a backup into a new database. Fields: `into` (required, a plain
//! database name; for a Neon tenant `branch:NAME`, a new branch of its project), `backup`
//! (optional backup id; default: the newest good one).

use super::{optional_uuid, required_str, MessageError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSpec {
    /// Backup id; the newest good backup when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<uuid::Uuid>,
    /// New database to restore into.
    pub into: String,
}

impl RestoreSpec {
    pub(super) fn parse(fields: &Map<String, Value>) -> Result<Self, MessageError> {
        let into = required_str(fields, "into")?;
        validate_database_name(into)?;
        Ok(Self {
            backup: optional_uuid(fields, "backup", "a backup id")?,
            into: into.to_owned(),
        })
    }
}

/// Restore targets: a plain identifier (a database), or `branch:`/`project:` and one (Neon).
pub fn validate_database_name(name: &str) -> Result<(), MessageError> {
    let name = name
        .strip_prefix("branch:")
        .or_else(|| name.strip_prefix("project:"))
        .unwrap_or(name);
    let ok = (1..=63).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(MessageError::InvalidField {
            field: "into",
            why: "a database name (or, for a Neon tenant, branch:NAME) is 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter".into(),
        })
    }
}
