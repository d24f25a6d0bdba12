//! `pgfleet serve`: the HTTP API (axum). Producers that speak HTTP rather than AMQP create
//! tenants, start backups and rollouts, and follow jobs; operators probe `/healthz`,
//! `/readyz` and scrape `/metrics`.
//!
//! - Everything under `/v1` needs `Authorization: Bearer <PGFLEET_API_TOKEN>`, compared in
//!   constant time (`auth`). `/metrics` needs `PGFLEET_METRICS_TOKEN` if one is set (it
//!   names every tenant); probes and `/openapi.json` are open, as load balancers expect.
//! - Bodies are JSON, at most `BODY_LIMIT` bytes, unknown fields refused; every error is
//!   `{"error": "…"}` with a 4xx/5xx status. Internal errors are logged with a request id
//!   and answered without detail, so nothing about the installation leaks.
//! - Responses use the same JSON shapes as the CLI's `--json` (`views`).
//! - Enqueuing goes through the same `Producer` as the CLI: recorded in the catalog first,
//!   then published with a confirm (or left for the sweep), so a 202 is never lost.

mod auth;
mod metrics;

pub use auth::ApiToken;

use crate::catalog::{Catalog, CatalogError};
use crate::message::{validate_key, validate_region, JobRequest, JobSpec, NoFields, ProvisionSpec};
use crate::migration_set::MigrationSet;
use crate::producer::{Enqueued, Producer};
use crate::rollouts::{RolloutError, StartOptions};
use crate::slug::TenantSlug;
use crate::status::{JobStatus, TenantStatus};
use crate::views;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

/// Largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 64 * 1024;
/// How long a readiness check waits for the catalog or the broker.
const READY_TIMEOUT: Duration = Duration::from_secs(3);
/// The OpenAPI document of this API (also served at `/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the handlers share.
pub struct ApiState {
    pub catalog: Catalog,
    pub producer: Producer,
    /// `None` only with `--insecure-dev`: no authentication at all.
    pub token: Option<ApiToken>,
    /// `/metrics` needs this bearer token when set (it lists every tenant's slug).
    pub metrics_token: Option<ApiToken>,
    /// Tenant migrations folder `POST /v1/migrations` rolls out (read at each request, like
    /// `pgfleet migrate`); `None`: the default (`migrations/tenant` or the built-in set).
    pub tenant_migrations: Option<PathBuf>,
    /// Recorded on each job the API creates.
    pub max_attempts: i32,
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    let v1 = Router::new()
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/tenants/{slug}", get(show_tenant))
        .route("/v1/tenants/{slug}/backups", post(start_backup).get(list_backups))
        .route("/v1/migrations", post(start_rollout))
        .route("/v1/rollouts/{id}", get(show_rollout))
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{id}", get(show_job))
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
    info!(%addr, "HTTP API listening on http://{addr}");
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

/// An error answer: `{"error": message}` with `status`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

/// Unexpected errors: logged in full under a request id, answered without detail (the
/// chain may name hosts or databases).
impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(e, false)
    }
}

/// A catalog that cannot be reached is a 503; anything else unexpected a 500.
impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        let unavailable = e.is_unavailable();
        Self::internal(e.into(), unavailable)
    }
}

impl ApiError {
    fn internal(e: anyhow::Error, unavailable: bool) -> Self {
        let id = Uuid::new_v4();
        error!(error_id = %id, error = %format!("{e:#}"), "API request failed");
        if unavailable {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the catalog is unreachable; retry later (error id {id})"),
            )
        } else {
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error; the server log has the details under error id {id}"),
            )
        }
    }
}

impl From<crate::producer::EnqueueError> for ApiError {
    fn from(e: crate::producer::EnqueueError) -> Self {
        match e {
            e @ crate::producer::EnqueueError::KeyReused(_) => Self::new(StatusCode::CONFLICT, e.to_string()),
            crate::producer::EnqueueError::Catalog(e) => e.into(),
            crate::producer::EnqueueError::Other(e) => e.into(),
        }
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// A JSON body: size-limited, unknown fields refused, errors as `ApiError`. An empty body
/// is `T::default()` for endpoints whose fields are all optional.
struct JsonBody<T>(T);

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
struct ApiQuery<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        Query::try_from_uri(&parts.uri)
            .map(|Query(q)| Self(q))
            .map_err(|e| ApiError::bad_request(format!("invalid query parameters: {}", e.body_text())))
    }
}

fn parse_slug(raw: &str) -> ApiResult<TenantSlug> {
    TenantSlug::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn parse_id(raw: &str, what: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request(format!("{what} ids are UUIDs")))
}

/// The idempotency key: the body's `key` or the `Idempotency-Key` header (not both).
fn idempotency_key(headers: &HeaderMap, body_key: Option<String>) -> ApiResult<Option<String>> {
    let header_key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be printable ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    let key = match (header_key, body_key) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::bad_request(
                "the Idempotency-Key header and the body's key differ; send one",
            ))
        }
        (h, b) => b.or(h),
    };
    if let Some(k) = &key {
        validate_key(k).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(key)
}

/// 202 with the job, and where to follow it.
fn accepted(enqueued: Enqueued) -> Response {
    let job = &enqueued.job;
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/jobs/{}", job.id))],
        Json(json!({
            "job_id": job.id,
            "created": enqueued.created,
            "published": enqueued.published,
            "job": views::job(job),
        })),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    slug: String,
    region: Option<String>,
    key: Option<String>,
}

async fn create_tenant(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateTenant>,
) -> ApiResult {
    if body.slug.is_empty() {
        return Err(ApiError::bad_request("missing field `slug`"));
    }
    let slug = parse_slug(&body.slug)?;
    if let Some(region) = &body.region {
        validate_region(region).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let key = idempotency_key(&headers, body.key)?;
    let request = JobRequest {
        tenant: slug,
        key,
        spec: JobSpec::Provision(ProvisionSpec { region: body.region }),
        job: None,
    };
    Ok(accepted(state.producer.enqueue(&request).await?))
}

/// Default and largest page of `GET /v1/tenants`.
const TENANT_PAGE: i64 = 100;
const TENANT_PAGE_MAX: i64 = 1000;

#[derive(Deserialize)]
struct TenantFilter {
    status: Option<String>,
    /// Only tenants whose slug sorts after this one (the previous page's last).
    after: Option<String>,
    limit: Option<i64>,
}

/// A page of tenants by slug; a full page carries `Link: <…>; rel="next"`.
async fn list_tenants(
    State(state): State<Arc<ApiState>>,
    ApiQuery(filter): ApiQuery<TenantFilter>,
) -> ApiResult {
    let status = filter
        .status
        .as_deref()
        .map(str::parse::<TenantStatus>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let after = filter.after.as_deref().map(parse_slug).transpose()?;
    let limit = filter.limit.unwrap_or(TENANT_PAGE).clamp(1, TENANT_PAGE_MAX);
    let tenants = state
        .catalog
        .tenants_page(status, after.as_ref().map(|s| s.as_str()), limit)
        .await?;
    let mut response = Json(tenants.iter().map(views::tenant).collect::<Vec<_>>()).into_response();
    if tenants.len() as i64 == limit {
        let last = &tenants[tenants.len() - 1].slug;
        let status = status.map(|s| format!("&status={s}")).unwrap_or_default();
        let next = format!("</v1/tenants?limit={limit}&after={last}{status}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&next) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(response)
}

async fn tenant_or_404(catalog: &Catalog, raw: &str) -> ApiResult<crate::catalog::TenantRecord> {
    let slug = parse_slug(raw)?;
    catalog
        .tenant(&slug)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant {slug}")))
}

async fn show_tenant(State(state): State<Arc<ApiState>>, Path(slug): Path<String>) -> ApiResult {
    let tenant = tenant_or_404(&state.catalog, &slug).await?;
    Ok(Json(views::tenant(&tenant)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartBackup {
    key: Option<String>,
}

async fn start_backup(
    State(state): State<Arc<ApiState>>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<StartBackup>,
) -> ApiResult {
    let tenant = tenant_or_404(&state.catalog, &slug).await?;
    if tenant.status != TenantStatus::Active {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "tenant {} is {}; only active tenants are backed up",
                tenant.slug, tenant.status
            ),
        ));
    }
    let request = JobRequest {
        tenant: parse_slug(&tenant.slug)?,
        key: idempotency_key(&headers, body.key)?,
        spec: JobSpec::Backup(NoFields {}),
        job: None,
    };
    Ok(accepted(state.producer.enqueue(&request).await?))
}

async fn list_backups(State(state): State<Arc<ApiState>>, Path(slug): Path<String>) -> ApiResult {
    let tenant = tenant_or_404(&state.catalog, &slug).await?;
    let backups = state.catalog.backups(tenant.id).await?;
    Ok(Json(backups.iter().map(views::backup).collect::<Vec<_>>()).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartRollout {
    tenant: Option<String>,
    concurrency: Option<i32>,
    canary: Option<usize>,
    max_failures: Option<i32>,
    #[serde(default)]
    dry_run: bool,
}

async fn start_rollout(
    State(state): State<Arc<ApiState>>,
    JsonBody(body): JsonBody<StartRollout>,
) -> ApiResult {
    let only = body.tenant.as_deref().map(parse_slug).transpose()?;
    let (set, source) = MigrationSet::load(state.tenant_migrations.as_deref())?;
    let options = StartOptions {
        only,
        concurrency: body
            .concurrency
            .unwrap_or(crate::jobs::migrate::DEFAULT_SERVER_CONCURRENCY),
        canary: body.canary.unwrap_or(0),
        max_failures: body.max_failures,
        dry_run: body.dry_run,
        max_attempts: state.max_attempts,
    };
    let started = match crate::rollouts::start(&state.catalog, &state.producer, &set, &options).await {
        Ok(started) => started,
        Err(RolloutError::Other(e)) => return Err(e.into()),
        Err(RolloutError::Catalog(e)) => return Err(e.into()),
        Err(e @ RolloutError::NoSuchTenant(_)) => return Err(ApiError::not_found(e.to_string())),
        Err(e @ (RolloutError::Drift(_) | RolloutError::NotActive(..))) => {
            return Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
        }
        Err(e @ RolloutError::Invalid(_)) => return Err(ApiError::bad_request(e.to_string())),
    };
    let plan = views::plan(&started.plan, started.target_version, &source);
    match started.rollout {
        None => Ok((StatusCode::OK, Json(json!({"rollout": null, "plan": plan}))).into_response()),
        Some((id, _)) => {
            let rollout = state
                .catalog
                .rollout(id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("rollout {id} vanished right after it was created"))?;
            Ok((
                StatusCode::ACCEPTED,
                [(header::LOCATION, format!("/v1/rollouts/{id}"))],
                Json(json!({"rollout_id": id, "rollout": views::rollout(&rollout), "plan": plan})),
            )
                .into_response())
        }
    }
}

async fn show_rollout(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id, "rollout")?;
    let rollout = state
        .catalog
        .rollout(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))?;
    let tenants = state.catalog.rollout_tenants(id).await?;
    Ok(Json(views::rollout_with_tenants(&rollout, &tenants)).into_response())
}

#[derive(Deserialize)]
struct JobFilter {
    status: Option<String>,
    tenant: Option<String>,
    limit: Option<i64>,
}

async fn list_jobs(State(state): State<Arc<ApiState>>, ApiQuery(filter): ApiQuery<JobFilter>) -> ApiResult {
    let status = filter
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let tenant = filter.tenant.as_deref().map(parse_slug).transpose()?;
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
    let jobs = state
        .catalog
        .jobs(status, tenant.as_ref().map(|t| t.as_str()), limit)
        .await?;
    Ok(Json(jobs.iter().map(views::job).collect::<Vec<_>>()).into_response())
}

async fn show_job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id, "job")?;
    let job = state
        .catalog
        .job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(Json(views::job(&job)).into_response())
}

/// 200 when the catalog and the broker answer, else 503 saying which does not.
async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    let catalog = tokio::time::timeout(READY_TIMEOUT, async {
        state.catalog.ping().await.map_err(anyhow::Error::from)
    })
    .await;
    let broker = tokio::time::timeout(READY_TIMEOUT, state.producer.publisher().ensure_connected()).await;
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
    let status = if catalog == "ok" && broker == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"catalog": catalog, "broker": broker}))).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
