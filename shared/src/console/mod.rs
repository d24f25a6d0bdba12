//! The web console, served by the API process under `/console`: server-rendered pages over
//! the same fleet service as the CLI and the API, for the operator who wants to look rather
//! than compose requests.
//!
//! - Pages (`pages`): overview, tenants, a tenant, jobs, a job, rollouts, a rollout, dead
//!   letters, a dead letter, and the record of console actions. HTML comes from `maud`,
//!   which escapes every interpolated value: slugs, errors and dead-letter bodies are
//!   attacker-controlled. No secret is ever rendered (no URL with credentials, no password).
//! - Actions (`actions`): a GET page says what the action will do, a POST with the CSRF
//!   token does it; each is recorded (who, what, how it ended) in `console_actions`.
//! - Live: regions marked `data-live` are refreshed by `console.js` every few seconds, and
//!   not while the tab is hidden. Without JavaScript the pages work, just not live.
//! - Headers: a strict Content-Security-Policy (no inline script or style at all), no
//!   framing, no caching, no sniffing — a second wall behind the escaping.

mod actions;
mod pages;
pub mod session;
mod view;

pub use session::{ConsoleSettings, Role};

use crate::api::{ApiError, ApiState};
use crate::fleet::FleetError;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// The console shares the API's state (its fleet, its tokens).
pub type ConsoleState = ApiState;

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// The console's routes (merged into the API's router).
pub fn router() -> Router<Arc<ConsoleState>> {
    Router::new()
        .route("/console", get(pages::overview))
        .route("/console/", get(pages::overview))
        .route("/console/login", get(pages::sign_in_page).post(pages::sign_in))
        .route("/console/logout", post(pages::sign_out))
        .route("/console/tenants", get(pages::tenants))
        .route("/console/tenants/{slug}", get(pages::tenant))
        .route("/console/jobs", get(pages::jobs))
        .route("/console/jobs/{id}", get(pages::job))
        .route("/console/rollouts", get(pages::rollouts))
        .route("/console/rollouts/{id}", get(pages::rollout))
        .route("/console/dead-letters", get(pages::dead_letters))
        .route("/console/dead-letters/{id}", get(pages::dead_letter))
        .route("/console/activity", get(pages::activity))
        .route("/console/confirm", get(actions::confirm))
        .route("/console/actions", post(actions::act))
        .route(
            "/console/static/console.css",
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/console/static/console.js",
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        )
        .layer(axum::middleware::from_fn(security_headers))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Headers on every console answer.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// An error shown as a page: the fleet's message for what the operator can fix, an error
/// id for the rest (details only in the log, as with the API).
#[derive(Debug)]
pub struct ConsoleError {
    status: StatusCode,
    message: String,
}

impl ConsoleError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<FleetError> for ConsoleError {
    fn from(e: FleetError) -> Self {
        let api = ApiError::from(e);
        let (status, message) = api.parts();
        Self::new(status, message)
    }
}

impl From<crate::catalog::CatalogError> for ConsoleError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        FleetError::from(e).into()
    }
}

impl From<anyhow::Error> for ConsoleError {
    fn from(e: anyhow::Error) -> Self {
        FleetError::Other(e).into()
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let page = view::bare_page(
            "Error",
            maud::html! {
                h1 { "Something went wrong" }
                p.error role="alert" { (self.message) }
                p { a href="/console" { "Back to the overview" } }
            },
        );
        (self.status, Html(page.into_string())).into_response()
    }
}

pub type ConsoleResult<T = Response> = Result<T, ConsoleError>;
