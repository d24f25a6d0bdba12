//! Request parsing that answers in the API's own error shape: JSON bodies (size-limited,
//! unknown fields refused), query strings, path parameters and the idempotency key.

use super::error::{ApiError, ApiResult};
use super::BODY_LIMIT;
use crate::slug::TenantSlug;
use axum::extract::{FromRequest, Query, Request};
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// A JSON body: size-limited, unknown fields refused, errors as `ApiError`. An empty body
/// is `T::default()` for endpoints whose fields are all optional.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body larger than {BODY_LIMIT} bytes"),
                ),
                status => ApiError::new(status, e.body_text()),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
    }
}

/// Query parameters, with a JSON 400 (like every other error) when they don't parse.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        Query::try_from_uri(&parts.uri)
            .map(|Query(q)| Self(q))
            .map_err(|e| ApiError::bad_request(format!("invalid query parameters: {}", e.body_text())))
    }
}

pub fn parse_slug(raw: &str) -> ApiResult<TenantSlug> {
    TenantSlug::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

pub fn parse_id(raw: &str, what: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request(format!("{what} ids are UUIDs")))
}

/// `raw` parsed into `T` (a status filter), or a 400 with the parser's message.
pub fn parse_opt<T: std::str::FromStr<Err = String>>(raw: Option<&str>) -> ApiResult<Option<T>> {
    raw.map(str::parse).transpose().map_err(ApiError::bad_request)
}

/// The idempotency key: the body's `key` or the `Idempotency-Key` header (not both).
pub fn idempotency_key(headers: &HeaderMap, body_key: Option<String>) -> ApiResult<Option<String>> {
    let header_key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be printable ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    match (header_key, body_key) {
        (Some(h), Some(b)) if h != b => Err(ApiError::bad_request(
            "the Idempotency-Key header and the body's key differ; send one",
        )),
        (h, b) => Ok(b.or(h)),
    }
}
