//! Signing in to the console and the session that follows.
//!
//! - Sign in with the API token (or `PGFLEET_CONSOLE_TOKEN`): role `admin`, which acts; with
//!   `PGFLEET_CONSOLE_VIEWER_TOKEN`: role `viewer`, which only looks. Tokens are compared in
//!   constant time (`ApiToken`). The operator also gives a name: the tokens are shared, so
//!   the name is what the record of actions says (self-declared, like a git author).
//! - The session cookie holds 32 random bytes; the catalog keeps only their SHA-256, so
//!   every API replica knows the session and signing out ends it everywhere. It is
//!   `HttpOnly`, `SameSite=Strict`, `Path=/console`, and `Secure` when the console is reached
//!   over TLS (`PGFLEET_CONSOLE_SECURE_COOKIE`, or a proxy's `X-Forwarded-Proto: https`).
//! - Every POST carries a CSRF token: an HMAC of a fixed label under the session's secret,
//!   so it needs no storage and is worthless without the cookie.

use super::{ConsoleError, ConsoleState};
use crate::api::ApiToken;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "pgfleet_console";
/// A session ends this long after sign-in, whatever happens.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// … or after this long unused.
pub const IDLE: Duration = Duration::from_secs(3600);

/// What a signed-in operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

/// Who may sign in to the console.
#[derive(Default)]
pub struct ConsoleSettings {
    /// Signs in as admin besides the API token (`PGFLEET_CONSOLE_TOKEN`).
    pub admin_token: Option<ApiToken>,
    /// Signs in as viewer (`PGFLEET_CONSOLE_VIEWER_TOKEN`).
    pub viewer_token: Option<ApiToken>,
    /// Mark the cookie `Secure`: `Some(true)` always, `Some(false)` never, `None` when the
    /// request came through a TLS-terminating proxy (`X-Forwarded-Proto: https`).
    pub secure_cookie: Option<bool>,
}

/// A signed-in operator (an extractor: pages without one redirect to the sign-in page).
#[derive(Debug, Clone)]
pub struct Operator {
    pub name: String,
    pub role: Role,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl Operator {
    pub fn can_act(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        self.csrf.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// The role `token` signs in as, if any. With no API token at all (`--insecure-dev`) any
/// token signs in as admin: the API is open anyway.
pub fn role_for(state: &ConsoleState, token: &str) -> Option<Role> {
    let token = token.trim().as_bytes();
    let Some(api) = &state.token else {
        return Some(Role::Admin);
    };
    let console = &state.console;
    if api.matches(token) || console.admin_token.as_ref().is_some_and(|t| t.matches(token)) {
        Some(Role::Admin)
    } else if console.viewer_token.as_ref().is_some_and(|t| t.matches(token)) {
        Some(Role::Viewer)
    } else {
        None
    }
}

/// A new session's cookie value (random) and its digest (what the catalog keeps).
pub fn new_secret() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let value = URL_SAFE_NO_PAD.encode(raw);
    let digest = Sha256::digest(value.as_bytes()).into();
    (value, digest)
}

/// The CSRF token of the session whose cookie is `secret`.
pub fn csrf_token(secret: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"pgfleet console csrf v1");
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The session cookie's value in the request, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// `Set-Cookie` for a session (or, with `None`, one that clears it).
pub fn set_cookie(state: &ConsoleState, headers: &HeaderMap, value: Option<&str>) -> HeaderValue {
    let secure = state.console.secure_cookie.unwrap_or_else(|| {
        headers
            .get("x-forwarded-proto")
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
    });
    let secure = if secure { "; Secure" } else { "" };
    let cookie = match value {
        Some(v) => format!(
            "{COOKIE}={v}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            LIFETIME.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&cookie).expect("cookie values are base64url")
}

/// Where a request without a live session goes: the sign-in page, coming back after.
pub struct SignInFirst(String);

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        let next = url::form_urlencoded::byte_serialize(self.0.as_bytes()).collect::<String>();
        Redirect::to(&format!("/console/login?next={next}")).into_response()
    }
}

pub enum Rejection {
    SignIn(SignInFirst),
    Error(ConsoleError),
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::SignIn(r) => r.into_response(),
            Rejection::Error(e) => e.into_response(),
        }
    }
}

impl FromRequestParts<std::sync::Arc<ConsoleState>> for Operator {
    type Rejection = Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &std::sync::Arc<ConsoleState>,
    ) -> Result<Self, Self::Rejection> {
        let back_to = if parts.method == axum::http::Method::GET {
            parts
                .uri
                .path_and_query()
                .map_or("/console", |p| p.as_str())
                .to_owned()
        } else {
            "/console".to_owned()
        };
        // A page asked for without a session goes to the sign-in page; anything else (a
        // form posted without one) is refused outright.
        let refuse = |back_to: String| {
            if parts.method == axum::http::Method::GET {
                Rejection::SignIn(SignInFirst(back_to))
            } else {
                Rejection::Error(ConsoleError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "not signed in (or the session ended): sign in to the console, then try again",
                ))
            }
        };
        let Some(secret) = cookie_value(&parts.headers) else {
            return Err(refuse(back_to));
        };
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let session = state
            .fleet
            .catalog
            .console_session(&digest, IDLE)
            .await
            .map_err(|e| Rejection::Error(ConsoleError::from(crate::fleet::FleetError::from(e))))?;
        let Some(session) = session else {
            return Err(refuse(back_to));
        };
        Ok(Operator {
            name: session.operator,
            role: if session.role == "admin" {
                Role::Admin
            } else {
                Role::Viewer
            },
            csrf: csrf_token(&secret),
        })
    }
}

/// A safe place to go after signing in: a console path, never another site.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/console") && !n.contains("//") && !n.contains('\\') => n.to_owned(),
        _ => "/console".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_depends_on_the_session() {
        let (a, _) = new_secret();
        let (b, _) = new_secret();
        assert_eq!(csrf_token(&a), csrf_token(&a));
        assert_ne!(csrf_token(&a), csrf_token(&b));
    }

    #[test]
    fn next_stays_on_the_console() {
        assert_eq!(
            safe_next(Some("/console/jobs?status=dead")),
            "/console/jobs?status=dead"
        );
        assert_eq!(safe_next(Some("https://evil.example/console")), "/console");
        assert_eq!(safe_next(Some("/console//evil.example")), "/console");
        assert_eq!(safe_next(Some("/v1/tenants")), "/console");
        assert_eq!(safe_next(None), "/console");
    }

    #[test]
    fn reads_the_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; pgfleet_console=abc; b=2"),
        );
        assert_eq!(cookie_value(&headers).as_deref(), Some("abc"));
    }
}
