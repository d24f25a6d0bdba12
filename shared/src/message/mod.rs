//! The message contract (DESIGN.md "Messages"): what any application publishes to
//! `<ns>.jobs`, and its parsing into a `JobRequest`. Parsing is the edge: everything that
//! is not a well-formed request for a known kind with a valid slug is refused here, with a
//! reason that ends up in `<ns>.dead`.

mod migrate;
mod move_tenant;
mod provision;
mod restore;

pub use crate::status::JobKind;
pub use migrate::MigrateSpec;
pub use move_tenant::{validate_server_name, MoveSpec};
pub use provision::{validate_region, ProvisionSpec};
pub use restore::{validate_database_name, RestoreSpec};

use crate::slug::TenantSlug;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A job's kind and its own fields, as stored in the job's `payload` (`{"kind": …, fields}`).
/// Each kind's fields and their parsing live in a file of their own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobSpec {
    Provision(ProvisionSpec),
    Backup(NoFields),
    Prune(NoFields),
    Restore(RestoreSpec),
    /// A final backup, then the tenant's database and role are dropped.
    Delete(NoFields),
    /// Apply a rollout's recorded migration set to the tenant.
    Migrate(MigrateSpec),
    /// Copy the tenant to another server, verify, switch, drop the old copy.
    Move(MoveSpec),
}

/// The fields of a kind that has none of its own (`backup`, `prune`, `delete`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoFields {}

impl JobSpec {
    pub fn kind(&self) -> JobKind {
        match self {
            JobSpec::Provision(_) => JobKind::Provision,
            JobSpec::Backup(_) => JobKind::Backup,
            JobSpec::Prune(_) => JobKind::Prune,
            JobSpec::Restore(_) => JobKind::Restore,
            JobSpec::Delete(_) => JobKind::Delete,
            JobSpec::Migrate(_) => JobKind::Migrate,
            JobSpec::Move(_) => JobKind::Move,
        }
    }

    /// A kind's fields, from a message's body.
    fn parse(kind: JobKind, fields: &Map<String, Value>) -> Result<Self, MessageError> {
        Ok(match kind {
            JobKind::Provision => JobSpec::Provision(ProvisionSpec::parse(fields)?),
            JobKind::Backup => JobSpec::Backup(NoFields {}),
            JobKind::Prune => JobSpec::Prune(NoFields {}),
            JobKind::Restore => JobSpec::Restore(RestoreSpec::parse(fields)?),
            JobKind::Delete => JobSpec::Delete(NoFields {}),
            JobKind::Migrate => JobSpec::Migrate(MigrateSpec::parse(fields)?),
            JobKind::Move => JobSpec::Move(MoveSpec::parse(fields)?),
        })
    }
}

/// An understood job request: the validated form of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRequest {
    pub tenant: TenantSlug,
    /// The producer's idempotency key (same key ⇒ same job). Stored in a namespace of its
    /// own, so it can never take one of the keys pgfleet gives its own jobs.
    pub key: Option<String>,
    pub spec: JobSpec,
    /// Set by pgfleet's own producers: the message is for this job, already recorded in the
    /// catalog (a worker claims it by id and never records a new one for it).
    pub job: Option<uuid::Uuid>,
}

impl JobRequest {
    pub fn kind(&self) -> JobKind {
        self.spec.kind()
    }

    /// The JSON body pgfleet's own producers publish.
    pub fn to_body(&self) -> Vec<u8> {
        let mut body = match serde_json::to_value(&self.spec) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        body.insert("tenant".into(), Value::String(self.tenant.to_string()));
        if let Some(key) = &self.key {
            body.insert("key".into(), Value::String(key.clone()));
        }
        if let Some(job) = &self.job {
            body.insert("job".into(), Value::String(job.to_string()));
        }
        serde_json::to_vec(&body).expect("a JSON map always serializes")
    }
}

/// Why a message was refused; the text goes to the `x-pgfleet-reason` header and the catalog.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("body is not UTF-8 JSON: {0}")]
    NotJson(String),
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    #[error("field `{0}` must be a string")]
    NotAString(&'static str),
    #[error("unknown job kind {0:?} (known: {known})", known = JobKind::choices())]
    UnknownKind(String),
    #[error("kind {body:?} in the body does not match routing key {routing_key:?}")]
    KindMismatch { body: String, routing_key: String },
    #[error(transparent)]
    InvalidSlug(#[from] crate::slug::InvalidSlug),
    #[error("invalid field `{field}`: {why}")]
    InvalidField { field: &'static str, why: String },
}

const MAX_KEY_LEN: usize = 200;

/// Parses a delivered body. `routing_key` is the key it was published with, when known.
pub fn parse_message(body: &[u8], routing_key: Option<&str>) -> Result<JobRequest, MessageError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| MessageError::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(MessageError::NotAnObject);
    };
    let kind_raw = required_str(&map, "kind")?;
    let kind = JobKind::parse(kind_raw).ok_or_else(|| MessageError::UnknownKind(truncate(kind_raw)))?;
    if let Some(rk) = routing_key {
        if rk != kind_raw {
            return Err(MessageError::KindMismatch {
                body: truncate(kind_raw),
                routing_key: truncate(rk),
            });
        }
    }
    let tenant = TenantSlug::parse(required_str(&map, "tenant")?)?;
    let key = match map.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => {
            validate_key(k)?;
            Some(k.clone())
        }
        Some(_) => return Err(MessageError::NotAString("key")),
    };
    let job = optional_uuid(&map, "job", "a job id")?;
    let spec = JobSpec::parse(kind, &map)?;
    Ok(JobRequest {
        tenant,
        key,
        spec,
        job,
    })
}

/// An optional UUID field (`what` names it in the error, e.g. "a backup id").
pub(crate) fn optional_uuid(
    map: &Map<String, Value>,
    field: &'static str,
    what: &str,
) -> Result<Option<uuid::Uuid>, MessageError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => id.parse().map(Some).map_err(|_| MessageError::InvalidField {
            field,
            why: format!("must be {what} (UUID)"),
        }),
        Some(_) => Err(MessageError::NotAString(field)),
    }
}

pub(crate) fn required_str<'a>(
    map: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, MessageError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(MessageError::MissingField(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(MessageError::NotAString(field)),
    }
}

/// An idempotency key: 1-MAX_KEY_LEN characters, no control characters.
pub fn validate_key(key: &str) -> Result<(), MessageError> {
    if !key.is_empty() && key.len() <= MAX_KEY_LEN && !key.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(MessageError::InvalidField {
            field: "key",
            why: format!("must be 1-{MAX_KEY_LEN} characters without control characters"),
        })
    }
}

/// An optional string field.
pub(crate) fn optional_str<'a>(
    map: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, MessageError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(MessageError::NotAString(field)),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_signup() {
        let req = parse_message(
            br#"{"kind":"provision","tenant":"acme-corp","key":"signup-8841","region":"eu-1","extra":1}"#,
            Some("provision"),
        )
        .unwrap();
        assert_eq!(req.tenant.as_str(), "acme-corp");
        assert_eq!(req.key.as_deref(), Some("signup-8841"));
        assert_eq!(
            req.spec,
            JobSpec::Provision(ProvisionSpec {
                region: Some("eu-1".into())
            })
        );
        assert_eq!(parse_message(&req.to_body(), Some("provision")).unwrap(), req);
    }

    #[test]
    fn refuses_bad_messages_with_reasons() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not UTF-8 JSON"),
            (b"[1]", "not a JSON object"),
            (br#"{"tenant":"acme"}"#, "missing required field `kind`"),
            (br#"{"kind":"provision"}"#, "missing required field `tenant`"),
            (br#"{"kind":"explode","tenant":"acme"}"#, "unknown job kind"),
            (
                br#"{"kind":"provision","tenant":"x\"; drop database postgres; --"}"#,
                "invalid tenant slug",
            ),
            (br#"{"kind":"provision","tenant":7}"#, "must be a string"),
            (
                br#"{"kind":"provision","tenant":"acme","region":"../x"}"#,
                "invalid field `region`",
            ),
        ];
        for (body, expected) in cases {
            let err = parse_message(body, Some("provision")).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        let err = parse_message(br#"{"kind":"provision","tenant":"acme"}"#, Some("backup")).unwrap_err();
        assert!(matches!(err, MessageError::KindMismatch { .. }));
    }
}
