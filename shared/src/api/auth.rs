//! Bearer-token authentication of `/v1`. The token is compared in constant time (over
//! SHA-256 digests, so neither its content nor its length leaks through timing), and it is
//! never logged or echoed.

use super::{ApiError, ApiState};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Shortest token accepted: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The API's bearer token; only its digest is kept.
pub struct ApiToken {
    digest: [u8; 32],
}

impl ApiToken {
    pub fn new(token: &SecretString) -> anyhow::Result<Self> {
        let token = token.expose_secret().trim();
        if token.len() < MIN_TOKEN_LEN {
            anyhow::bail!(
                "PGFLEET_API_TOKEN is too short: use at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"
            );
        }
        Ok(Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// The API's token: `explicit` (`PGFLEET_API_TOKEN`), else — with `generate_in`, as
    /// `pgfleet up` does — the token in that file, created with a random token on first
    /// start. `None` only when `insecure_dev` asks for no authentication at all.
    pub fn resolve(
        explicit: Option<&str>,
        generate_in: Option<&std::path::Path>,
        insecure_dev: bool,
    ) -> anyhow::Result<Option<Self>> {
        use anyhow::Context;
        if insecure_dev {
            return Ok(None);
        }
        if let Some(token) = explicit {
            return Ok(Some(Self::new(&token.to_owned().into())?));
        }
        let Some(path) = generate_in else {
            anyhow::bail!(
                "no API token: set PGFLEET_API_TOKEN (at least 16 characters, e.g. `openssl rand -hex 32`), \
                 or pass --insecure-dev for a local API without authentication"
            );
        };
        let (token, created) = crate::secrets::load_or_create_token_file(path)?;
        if created {
            tracing::warn!(path = %path.display(), "generated an API token; clients send `Authorization: Bearer <the file's content>` (or set PGFLEET_API_TOKEN)");
        } else {
            tracing::info!(path = %path.display(), "API token read from file");
        }
        Ok(Some(
            Self::new(&token).with_context(|| path.display().to_string())?,
        ))
    }

    /// Whether `presented` is the token (constant time).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// `/v1`: the API token (none only with `--insecure-dev`).
pub(super) async fn require_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    check(state.token.as_ref(), "PGFLEET_API_TOKEN", request, next).await
}

/// `/metrics`: the metrics token, if one is set (`PGFLEET_METRICS_TOKEN`); Prometheus sends
/// it as `authorization: {credentials: …}` or `bearer_token_file`.
pub(super) async fn require_metrics_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    check(
        state.metrics_token.as_ref(),
        "PGFLEET_METRICS_TOKEN",
        request,
        next,
    )
    .await
}

async fn check(token: Option<&ApiToken>, variable: &str, request: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(p) if token.matches(p) => next.run(request).await,
        Some(_) => unauthorized("invalid bearer token"),
        None => unauthorized(&format!(
            "missing bearer token: send `Authorization: Bearer <{variable}>`"
        )),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_token() {
        let token = ApiToken::new(&SecretString::from("0123456789abcdef-secret")).unwrap();
        assert!(token.matches(b"0123456789abcdef-secret"));
        assert!(!token.matches(b"0123456789abcdef-secreT"));
        assert!(!token.matches(b"0123456789abcdef-secret "));
        assert!(!token.matches(b""));
        assert!(ApiToken::new(&SecretString::from("short")).is_err());
    }
}
