//! `restore` — load a backup into a new database. Fields: `into` (required, a plain
//! database name; for a Neon tenant `branch:NAME`, a new branch of its project), `backup`
//! (optional backup id; default: the newest good one), `schema_only` (a branch of the live
//! schema, no data). For a self-hosted tenant, `branch:NAME` is a dev copy: a database and a
//! role of its own on the tenant's server.

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
    /// A self-hosted tenant's dev copy (`branch:NAME`) of its schema only, from the live
    /// database instead of a backup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub schema_only: bool,
}

impl RestoreSpec {
    pub(super) fn parse(fields: &Map<String, Value>) -> Result<Self, MessageError> {
        let into = required_str(fields, "into")?;
        validate_database_name(into)?;
        let schema_only = match fields.get("schema_only") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(MessageError::InvalidField {
                    field: "schema_only",
                    why: "must be true or false".into(),
                })
            }
        };
        let backup = optional_uuid(fields, "backup", "a backup id")?;
        if schema_only && (backup.is_some() || !into.starts_with("branch:")) {
            return Err(MessageError::InvalidField {
                field: "schema_only",
                why: "is for branches (into branch:NAME) and copies the live schema, so it takes no backup"
                    .into(),
            });
        }
        Ok(Self {
            backup,
            into: into.to_owned(),
            schema_only,
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
