//! `provision` — a tenant signup. Fields: `region` (optional), which picks the tenant server
//! registered for it.

use super::{optional_str, MessageError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl ProvisionSpec {
    pub(super) fn parse(fields: &Map<String, Value>) -> Result<Self, MessageError> {
        let region = optional_str(fields, "region")?;
        if let Some(region) = region {
            validate_region(region)?;
        }
        Ok(Self {
            region: region.map(str::to_owned),
        })
    }
}

/// Regions name tenant servers: 1-32 characters of a-z, 0-9 and '-'.
pub fn validate_region(region: &str) -> Result<(), MessageError> {
    let ok = (1..=32).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(MessageError::InvalidField {
            field: "region",
            why: "must be 1-32 characters of a-z, 0-9 and '-'".into(),
        })
    }
}
