//! `pgfleet serve`: the HTTP API (axum), an adapter over the fleet service — producers that
//! speak HTTP rather than AMQP create tenants, start backups and rollouts, and follow jobs;
//! operators probe `/healthz`, `/readyz` and scrape `/metrics`.
//!
//! - Everything under `/v1` needs `Authorization: Bearer <PGFLEET_API_TOKEN>`, compared in
//!   constant time (`auth`). `/metrics` needs `PGFLEET_METRICS_TOKEN` if one is set (it
//!   names every tenant); probes and `/openapi.json` are open, as load balancers expect.
//! - Bodies are JSON, at most `BODY_LIMIT` bytes, unknown fields refused; every error is
//!   `{"error": "…"}` with a 4xx/5xx status (`error`). Internal errors are logged with a
//!   request id and answered without detail, so nothing about the installation leaks.
//! - `routes` parses, calls `Fleet`, and renders the CLI's `--json` shapes (`views`).

mod auth;
mod error;
mod extract;
mod metrics;
mod routes;

pub use auth::ApiToken;
pub use error::ApiError;

use crate::fleet::Fleet;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 64 * 1024;
/// How long a readiness check waits for the catalog or the broker.
const READY_TIMEOUT: Duration = Duration::from_secs(3);
/// The OpenAPI document of this API (also served at `/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Who may reach what: the API's tokens, `/metrics`' exposure, the console's sign-ins.
pub struct ApiAccess {
    pub token: Option<ApiToken>,
    pub metrics_token: Option<ApiToken>,
    pub metrics_per_tenant: bool,
    pub console: crate::console::ConsoleSettings,
}

/// What the handlers share.
pub struct ApiState {
    pub fleet: Fleet,
    /// `None` only with `--insecure-dev`: no authentication at all.
    pub token: Option<ApiToken>,
    /// `/metrics` needs this bearer token when set (it lists every tenant's slug).
    pub metrics_token: Option<ApiToken>,
    /// `/metrics` also exports one backup-age series per active tenant (off by default: at
    /// 100k tenants that is 100k series per scrape and replica).
    pub metrics_per_tenant: bool,
    /// The worker of the same process (`pgfleet up`): `/readyz` reports it too.
    pub worker: Option<Arc<crate::worker::WorkerHealth>>,
    /// Who may sign in to the web console besides the API token's holders.
    pub console: crate::console::ConsoleSettings,
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    let v1 = Router::new()
        .route(
            "/v1/tenants",
            post(routes::create_tenant).get(routes::list_tenants),
        )
        .route(
            "/v1/tenants/{slug}",
            get(routes::show_tenant).patch(routes::update_tenant),
        )
        .route("/v1/tenants/{slug}/suspend", post(routes::suspend_tenant))
        .route("/v1/tenants/{slug}/resume", post(routes::resume_tenant))
        .route("/v1/tenants/{slug}/move", post(routes::move_tenant))
        .route(
            "/v1/tenants/{slug}/branches",
            post(routes::create_branch).get(routes::list_branches),
        )
        .route(
            "/v1/tenants/{slug}/branches/{name}",
            axum::routing::delete(routes::delete_branch).patch(routes::update_branch),
        )
        .route("/v1/tenants/{slug}/branches/{name}/url", get(routes::branch_url))
        .route("/v1/servers", get(routes::list_servers).post(routes::add_server))
        .route(
            "/v1/webhooks",
            get(routes::list_webhooks).post(routes::add_webhook),
        )
        .route("/v1/webhooks/deliveries", get(routes::list_deliveries))
        .route("/v1/webhooks/{id}", axum::routing::delete(routes::remove_webhook))
        .route(
            "/v1/servers/{name}",
            axum::routing::patch(routes::update_server).delete(routes::remove_server),
        )
        .route(
            "/v1/tenants/{slug}/backups",
            post(routes::start_backup).get(routes::list_backups),
        )
        .route("/v1/migrations", post(routes::start_rollout))
        .route("/v1/rollouts/{id}", get(routes::show_rollout))
        .route("/v1/rollouts/{id}/halt", post(routes::halt_rollout))
        .route("/v1/rollouts/{id}/resume", post(routes::resume_rollout))
        .route("/v1/jobs", get(routes::list_jobs))
        .route("/v1/jobs/{id}", get(routes::show_job))
        .route("/v1/jobs/{id}/retry", post(routes::retry_job))
        .route("/v1/jobs/{id}/cancel", post(routes::cancel_job))
        .route("/v1/dead-letters", get(routes::list_dead_letters))
        .route(
            "/v1/dead-letters/{id}",
            axum::routing::delete(routes::discard_dead_letter),
        )
        .route("/v1/dead-letters/{id}/replay", post(routes::replay_dead_letter))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(metrics::render).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::require_metrics_token,
            )),
        )
        .route("/openapi.json", get(openapi))
        .merge(v1)
        .merge(crate::console::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see /openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint; see /openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown`; requests in flight are finished.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    if state.token.is_none() {
        warn!(
            "the HTTP API runs WITHOUT authentication (--insecure-dev); never expose it beyond this machine"
        );
    }
    info!(%addr, "HTTP API listening on http://{addr}; web console on http://{addr}/console");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    info!("HTTP API stopped");
    Ok(())
}

/// One log line per request: method, route, status, time. Never headers (the token).
async fn log_request(request: Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().chars().take(100).collect());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if route.starts_with("/v1") || status >= 500 {
        info!(%method, %route, status, ms, "http request");
    } else {
        tracing::debug!(%method, %route, status, ms, "http request");
    }
    response
}

/// 200 when the catalog and the broker answer, else 503 saying which does not.
async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    let catalog = tokio::time::timeout(READY_TIMEOUT, async {
        state.fleet.catalog.ping().await.map_err(anyhow::Error::from)
    })
    .await;
    let broker =
        tokio::time::timeout(READY_TIMEOUT, state.fleet.producer.publisher().ensure_connected()).await;
    let verdict = |r: Result<anyhow::Result<()>, tokio::time::error::Elapsed>, what: &str| match r {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            warn!(error = %format!("{e:#}"), "readiness: {what} unreachable");
            "unreachable"
        }
        Err(_) => {
            warn!("readiness: {what} did not answer within {READY_TIMEOUT:?}");
            "timeout"
        }
    };
    let catalog = verdict(catalog, "catalog");
    let broker = verdict(broker, "broker");
    let mut ready = catalog == "ok" && broker == "ok";
    let mut body = json!({"catalog": catalog, "broker": broker});
    if let Some(worker) = &state.worker {
        body["worker"] = match worker.ready() {
            Ok(()) => json!("ok"),
            Err(reason) => {
                ready = false;
                json!(reason)
            }
        };
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
