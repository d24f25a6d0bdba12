//! Opaque page cursors for listings (`tenant list`, `jobs list`, `GET /v1/tenants`,
//! `GET /v1/jobs`). A cursor names the last row of a page in the listing's own stable order
//! — tenants by slug, jobs by (created_at, id) newest first — so the next page starts right
//! after it however many rows are added meanwhile: no row is listed twice, and none that
//! existed when paging began is skipped. Clients pass them back unchanged; the encoding
//! (base64url of a tagged string) is ours to change.

use super::FleetError;
use crate::catalog::{JobRecord, TenantRecord};
use crate::slug::TenantSlug;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where a page of tenants ends.
fn tenant_cursor(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("t1:{last}"))
}

/// Where a page of jobs ends.
fn job_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("j1:{}:{id}", created_at.timestamp_micros()))
}

/// The cursor of the page after `page` of tenants, if `page` is full (`limit` rows).
pub fn next_tenant_page(page: &[TenantRecord], limit: i64) -> Option<String> {
    let last = page.last().filter(|_| page.len() as i64 == limit)?;
    Some(tenant_cursor(&last.slug))
}

/// The cursor of the page after `page` of jobs, if `page` is full (`limit` rows).
pub fn next_job_page(page: &[JobRecord], limit: i64) -> Option<String> {
    let last = page.last().filter(|_| page.len() as i64 == limit)?;
    Some(job_cursor(last.created_at, last.id))
}

fn decode(cursor: &str, tag: &str) -> Result<String, FleetError> {
    let invalid = || {
        FleetError::Invalid(format!(
            "invalid cursor {cursor:?}: pass back the `cursor` of the previous page unchanged"
        ))
    };
    let raw = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    raw.strip_prefix(tag).map(str::to_owned).ok_or_else(invalid)
}

pub fn parse_tenant_cursor(cursor: &str) -> Result<TenantSlug, FleetError> {
    let slug = decode(cursor, "t1:")?;
    TenantSlug::parse(&slug).map_err(|e| FleetError::Invalid(format!("invalid cursor: {e}")))
}

pub fn parse_job_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), FleetError> {
    let raw = decode(cursor, "j1:")?;
    let invalid = || FleetError::Invalid(format!("invalid cursor {cursor:?}"));
    let (micros, id) = raw.split_once(':').ok_or_else(invalid)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| invalid())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_they_did_not_make() {
        let slug = parse_tenant_cursor(&tenant_cursor("acme-corp")).unwrap();
        assert_eq!(slug.as_str(), "acme-corp");
        let at = DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap();
        let id = Uuid::now_v7();
        assert_eq!(parse_job_cursor(&job_cursor(at, id)).unwrap(), (at, id));
        for bad in ["", "%%%", "dDE6", &tenant_cursor("x")] {
            assert!(parse_job_cursor(bad).is_err(), "{bad}");
        }
        assert!(parse_tenant_cursor(&job_cursor(at, id)).is_err());
        assert!(parse_tenant_cursor(&URL_SAFE_NO_PAD.encode("t1:Bad Slug;")).is_err());
    }
}
