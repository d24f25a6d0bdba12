//! `migrate` — apply a rollout's recorded migration set to one tenant. Published by pgfleet
//! itself (a rollout's phases). Fields: `rollout` (required id), `canary` (optional bool).

use super::{required_str, MessageError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateSpec {
    pub rollout: uuid::Uuid,
    /// Part of the rollout's canary phase.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
}

impl MigrateSpec {
    pub(super) fn parse(fields: &Map<String, Value>) -> Result<Self, MessageError> {
        let rollout = required_str(fields, "rollout")?
            .parse()
            .map_err(|_| MessageError::InvalidField {
                field: "rollout",
                why: "must be a rollout id (UUID)".into(),
            })?;
        let canary = match fields.get("canary") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(MessageError::InvalidField {
                    field: "canary",
                    why: "must be true or false".into(),
                })
            }
        };
        Ok(Self { rollout, canary })
    }
}
