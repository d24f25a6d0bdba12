//! `move` — copy a self-hosted tenant to another server. Fields: `to` (required), the name of
//! the target server.

use super::{required_str, MessageError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveSpec {
    pub to: String,
}

impl MoveSpec {
    pub(super) fn parse(fields: &Map<String, Value>) -> Result<Self, MessageError> {
        let to = required_str(fields, "to")?;
        validate_server_name(to).map_err(|why| MessageError::InvalidField { field: "to", why })?;
        Ok(Self { to: to.to_owned() })
    }
}

/// Server names: 1-63 characters of letters, digits, '-' and '_'.
pub fn validate_server_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "server name {:?} is not allowed: use letters, digits, '-' and '_' (at most 63)",
            name.chars().take(70).collect::<String>()
        ))
    }
}
