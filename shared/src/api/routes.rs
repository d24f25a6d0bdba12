//! The `/v1` handlers: parse the request, call the fleet, render the same JSON shapes as
//! the CLI's `--json` (`views`). No rule lives here.

use super::error::{ApiError, ApiResult};
use super::extract::{idempotency_key, parse_id, parse_opt, parse_slug, ApiQuery, JsonBody};
use super::ApiState;
use crate::fleet::{cursor, JobFilter, RolloutOptions, TenantFilter};
use crate::producer::Enqueued;
use crate::views;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Default page of `GET /v1/tenants` and `GET /v1/jobs`.
const PAGE: i64 = 100;

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
pub(super) struct CreateTenant {
    slug: String,
    region: Option<String>,
    key: Option<String>,
}

pub(super) async fn create_tenant(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateTenant>,
) -> ApiResult {
    if body.slug.is_empty() {
        return Err(ApiError::bad_request("missing field `slug`"));
    }
    let slug = parse_slug(&body.slug)?;
    let key = idempotency_key(&headers, body.key)?;
    Ok(accepted(state.fleet.create_tenant(slug, body.region, key).await?))
}

#[derive(Deserialize)]
pub(super) struct TenantQuery {
    status: Option<String>,
    /// The `cursor` of the previous page's `Link: <…>; rel="next"`.
    cursor: Option<String>,
    /// Only tenants whose slug sorts after this one (older form of `cursor`).
    after: Option<String>,
    limit: Option<i64>,
}

/// A page of tenants by slug; a full page carries `Link: <…?cursor=…>; rel="next"`.
pub(super) async fn list_tenants(
    State(state): State<Arc<ApiState>>,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> ApiResult {
    let after = match (&query.cursor, &query.after) {
        (Some(cursor), _) => Some(cursor::parse_tenant_cursor(cursor)?),
        (None, Some(after)) => Some(parse_slug(after)?),
        (None, None) => None,
    };
    let filter = TenantFilter {
        status: parse_opt(query.status.as_deref())?,
        after,
        limit: query.limit.unwrap_or(PAGE).clamp(1, crate::fleet::MAX_PAGE),
    };
    let tenants = state.fleet.tenants(&filter).await?;
    let mut response = Json(tenants.iter().map(views::tenant).collect::<Vec<_>>()).into_response();
    if let Some(next) = cursor::next_tenant_page(&tenants, filter.limit) {
        let status = filter.status.map(|s| format!("&status={s}")).unwrap_or_default();
        let query = format!("limit={}{status}", filter.limit);
        next_link(&mut response, "/v1/tenants", &query, &next);
    }
    Ok(response)
}

/// `Link: <path?query&cursor=…>; rel="next"`.
fn next_link(response: &mut Response, path: &str, query: &str, cursor: &str) {
    let next = format!("<{path}?{query}&cursor={cursor}>; rel=\"next\"");
    if let Ok(v) = HeaderValue::from_str(&next) {
        response.headers_mut().insert(header::LINK, v);
    }
}

pub(super) async fn show_tenant(State(state): State<Arc<ApiState>>, Path(slug): Path<String>) -> ApiResult {
    let tenant = state.fleet.tenant(&parse_slug(&slug)?).await?;
    Ok(Json(views::tenant(&tenant)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct StartBackup {
    key: Option<String>,
}

pub(super) async fn start_backup(
    State(state): State<Arc<ApiState>>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<StartBackup>,
) -> ApiResult {
    let slug = parse_slug(&slug)?;
    let key = idempotency_key(&headers, body.key)?;
    Ok(accepted(state.fleet.start_backup(&slug, key).await?))
}

pub(super) async fn list_backups(State(state): State<Arc<ApiState>>, Path(slug): Path<String>) -> ApiResult {
    let backups = state.fleet.backups(&parse_slug(&slug)?).await?;
    Ok(Json(backups.iter().map(views::backup).collect::<Vec<_>>()).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct StartRollout {
    tenant: Option<String>,
    concurrency: Option<i32>,
    canary: Option<usize>,
    max_failures: Option<i32>,
    #[serde(default)]
    dry_run: bool,
    /// Milliseconds; 0: no limit.
    lock_timeout_ms: Option<u64>,
    statement_timeout_ms: Option<u64>,
}

pub(super) async fn start_rollout(
    State(state): State<Arc<ApiState>>,
    JsonBody(body): JsonBody<StartRollout>,
) -> ApiResult {
    let defaults = RolloutOptions::default();
    let options = RolloutOptions {
        only: body.tenant.as_deref().map(parse_slug).transpose()?,
        concurrency: body.concurrency.unwrap_or(defaults.concurrency),
        canary: body.canary.unwrap_or(defaults.canary),
        max_failures: body.max_failures,
        dry_run: body.dry_run,
        lock_timeout: match body.lock_timeout_ms {
            None => defaults.lock_timeout,
            Some(ms) => (ms > 0).then(|| std::time::Duration::from_millis(ms)),
        },
        statement_timeout: body
            .statement_timeout_ms
            .filter(|ms| *ms > 0)
            .map(std::time::Duration::from_millis),
    };
    let started = state.fleet.start_rollout(&options).await?;
    let plan = views::plan(&started.plan, started.target_version, &started.source);
    match started.rollout {
        None => Ok((StatusCode::OK, Json(json!({"rollout": null, "plan": plan}))).into_response()),
        Some((id, _)) => {
            let (rollout, _) = state.fleet.rollout(id).await?;
            Ok((
                StatusCode::ACCEPTED,
                [(header::LOCATION, format!("/v1/rollouts/{id}"))],
                Json(json!({"rollout_id": id, "rollout": views::rollout(&rollout), "plan": plan})),
            )
                .into_response())
        }
    }
}

pub(super) async fn show_rollout(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
    let (rollout, tenants) = state.fleet.rollout(parse_id(&id, "rollout")?).await?;
    Ok(Json(views::rollout_with_tenants(&rollout, &tenants)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct HaltRollout {
    reason: Option<String>,
}

pub(super) async fn halt_rollout(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<HaltRollout>,
) -> ApiResult {
    let reason = body
        .reason
        .unwrap_or_else(|| "halted by an operator (API)".into());
    if reason.len() > 500 {
        return Err(ApiError::bad_request("`reason` is longer than 500 bytes"));
    }
    let rollout = state
        .fleet
        .halt_rollout(parse_id(&id, "rollout")?, &reason)
        .await?;
    Ok(Json(views::rollout(&rollout)).into_response())
}

pub(super) async fn resume_rollout(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
    let (rollout, jobs) = state.fleet.resume_rollout(parse_id(&id, "rollout")?).await?;
    let mut body = views::rollout(&rollout);
    body["new_jobs"] = json!(jobs);
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
pub(super) struct JobQuery {
    status: Option<String>,
    tenant: Option<String>,
    /// The `cursor` of the previous page's `Link: <…>; rel="next"`.
    cursor: Option<String>,
    limit: Option<i64>,
}

/// A page of jobs, newest first; a full page carries `Link: <…?cursor=…>; rel="next"`.
pub(super) async fn list_jobs(
    State(state): State<Arc<ApiState>>,
    ApiQuery(query): ApiQuery<JobQuery>,
) -> ApiResult {
    let filter = JobFilter {
        status: parse_opt(query.status.as_deref())?,
        tenant: query.tenant.as_deref().map(parse_slug).transpose()?,
        after: query
            .cursor
            .as_deref()
            .map(cursor::parse_job_cursor)
            .transpose()?,
        limit: query.limit.unwrap_or(PAGE).clamp(1, crate::fleet::MAX_PAGE),
    };
    let jobs = state.fleet.jobs(&filter).await?;
    let mut response = Json(jobs.iter().map(views::job).collect::<Vec<_>>()).into_response();
    if let Some(next) = cursor::next_job_page(&jobs, filter.limit) {
        let mut query = format!("limit={}", filter.limit);
        if let Some(status) = filter.status {
            query.push_str(&format!("&status={status}"));
        }
        if let Some(tenant) = &filter.tenant {
            query.push_str(&format!("&tenant={tenant}"));
        }
        next_link(&mut response, "/v1/jobs", &query, &next);
    }
    Ok(response)
}

pub(super) async fn show_job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
    let job = state.fleet.job(parse_id(&id, "job")?).await?;
    Ok(Json(views::job(&job)).into_response())
}

/// A field that may be absent (leave it), `null` (clear it) or a value.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /v1/tenants/{slug}`: backup settings and limits (absent: unchanged; `null`: cleared).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateTenant {
    backup_schedule: Option<String>,
    retention_days: Option<i32>,
    keep_min: Option<i32>,
    connection_limit: Option<i32>,
    #[serde(default, deserialize_with = "nullable")]
    statement_timeout_ms: Option<Option<i32>>,
    #[serde(default, deserialize_with = "nullable")]
    idle_in_transaction_timeout_ms: Option<Option<i32>>,
    #[serde(default, deserialize_with = "nullable")]
    work_mem_kb: Option<Option<i32>>,
    #[serde(default, deserialize_with = "nullable")]
    storage_quota_bytes: Option<Option<i64>>,
}

pub(super) async fn update_tenant(
    State(state): State<Arc<ApiState>>,
    Path(slug): Path<String>,
    JsonBody(body): JsonBody<UpdateTenant>,
) -> ApiResult {
    let slug = parse_slug(&slug)?;
    let settings = crate::fleet::TenantSettings {
        backup_schedule: body.backup_schedule,
        retention_days: body.retention_days,
        keep_min: body.keep_min,
    };
    let limits = crate::fleet::LimitChanges {
        connection_limit: body.connection_limit,
        statement_timeout_ms: body.statement_timeout_ms,
        idle_in_transaction_timeout_ms: body.idle_in_transaction_timeout_ms,
        work_mem_kb: body.work_mem_kb,
        storage_quota_bytes: body.storage_quota_bytes,
    };
    let mut tenant = state.fleet.set_tenant(&slug, &settings).await?;
    if !limits.is_empty() {
        tenant = state.fleet.set_tenant_limits(&slug, &limits).await?;
    }
    Ok(Json(views::tenant(&tenant)).into_response())
}

pub(super) async fn suspend_tenant(
    State(state): State<Arc<ApiState>>,
    Path(slug): Path<String>,
) -> ApiResult {
    let tenant = state.fleet.suspend_tenant(&parse_slug(&slug)?).await?;
    Ok(Json(views::tenant(&tenant)).into_response())
}

pub(super) async fn resume_tenant(State(state): State<Arc<ApiState>>, Path(slug): Path<String>) -> ApiResult {
    let (tenant, catch_up) = state.fleet.resume_tenant(&parse_slug(&slug)?).await?;
    let mut body = views::tenant(&tenant);
    body["catch_up_job_id"] = json!(catch_up.map(|e| e.job.id));
    Ok(Json(body).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct MoveTenant {
    to: String,
    key: Option<String>,
}

pub(super) async fn move_tenant(
    State(state): State<Arc<ApiState>>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<MoveTenant>,
) -> ApiResult {
    let slug = parse_slug(&slug)?;
    let key = idempotency_key(&headers, body.key)?;
    Ok(accepted(state.fleet.move_tenant(&slug, &body.to, key).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBranch {
    name: String,
    #[serde(default)]
    schema_only: bool,
    from_backup: Option<uuid::Uuid>,
    #[serde(default)]
    backups: bool,
    key: Option<String>,
}

/// 201 with the branch and its URL when it is ready at once (Neon, or made before); 202
/// with the job making it otherwise (its URL: `GET …/branches/{name}/url` once done).
pub(super) async fn create_branch(
    State(state): State<Arc<ApiState>>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateBranch>,
) -> ApiResult {
    use secrecy::ExposeSecret;
    let slug = parse_slug(&slug)?;
    let key = idempotency_key(&headers, body.key)?;
    match state
        .fleet
        .branch_tenant(
            &slug,
            &body.name,
            body.schema_only,
            body.from_backup,
            body.backups,
            key,
        )
        .await?
    {
        crate::fleet::BranchMade::Ready(branch, url) => {
            let mut v = views::branch(&branch);
            v["url"] = json!(url.expose_secret());
            Ok((StatusCode::CREATED, Json(v)).into_response())
        }
        crate::fleet::BranchMade::Enqueued(enqueued) => Ok(accepted(enqueued)),
    }
}

pub(super) async fn list_branches(State(state): State<Arc<ApiState>>, Path(slug): Path<String>) -> ApiResult {
    let branches = state.fleet.branches(&parse_slug(&slug)?).await?;
    Ok(Json(branches.iter().map(views::branch).collect::<Vec<_>>()).into_response())
}

/// The branch's connection URL (with its password): asked for explicitly.
pub(super) async fn branch_url(
    State(state): State<Arc<ApiState>>,
    Path((slug, name)): Path<(String, String)>,
) -> ApiResult {
    use secrecy::ExposeSecret;
    let url = state.fleet.branch_url(&parse_slug(&slug)?, &name).await?;
    Ok(Json(json!({ "url": url.expose_secret() })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBranch {
    backups: bool,
}

pub(super) async fn update_branch(
    State(state): State<Arc<ApiState>>,
    Path((slug, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateBranch>,
) -> ApiResult {
    let branch = state
        .fleet
        .set_branch_backups(&parse_slug(&slug)?, &name, body.backups)
        .await?;
    Ok(Json(views::branch(&branch)).into_response())
}

pub(super) async fn delete_branch(
    State(state): State<Arc<ApiState>>,
    Path((slug, name)): Path<(String, String)>,
) -> ApiResult {
    state.fleet.delete_branch(&parse_slug(&slug)?, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn list_servers(State(state): State<Arc<ApiState>>) -> ApiResult {
    let servers = state.fleet.servers().await?;
    Ok(Json(servers.iter().map(views::server_state).collect::<Vec<_>>()).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct AddServer {
    name: String,
    /// Admin URL of a self-hosted server (stored encrypted, never shown again).
    url: String,
    region: Option<String>,
    capacity: Option<i32>,
}

/// Registers a self-hosted server (checked first); 201 with it and the check's warnings.
pub(super) async fn add_server(
    State(state): State<Arc<ApiState>>,
    JsonBody(body): JsonBody<AddServer>,
) -> ApiResult {
    if let Some(region) = &body.region {
        crate::message::validate_region(region).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let spec = crate::fleet::ServerSpec::Postgres { url: body.url.into() };
    let (server, report) = state
        .fleet
        .add_server(&body.name, body.region.as_deref(), body.capacity, spec)
        .await?;
    let mut v = views::server(&server);
    v["warnings"] = json!(report.map(|r| r.findings).unwrap_or_default());
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateServer {
    url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    capacity: Option<Option<i32>>,
    #[serde(default, deserialize_with = "nullable")]
    region: Option<Option<String>>,
    /// `active` or `draining`.
    status: Option<String>,
    /// Warm pool size; `null`: the workers' `PGFLEET_WARM_POOL`.
    #[serde(default, deserialize_with = "nullable")]
    warm_pool: Option<Option<i32>>,
}

pub(super) async fn update_server(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<UpdateServer>,
) -> ApiResult {
    let changes = crate::fleet::ServerChanges {
        url: body.url.map(Into::into),
        capacity: body.capacity,
        region: body.region,
        status: parse_opt(body.status.as_deref())?,
        warm_pool: body.warm_pool,
    };
    let server = state.fleet.set_server(&name, changes).await?;
    Ok(Json(views::server(&server)).into_response())
}

pub(super) async fn remove_server(State(state): State<Arc<ApiState>>, Path(name): Path<String>) -> ApiResult {
    state.fleet.remove_server(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn list_webhooks(State(state): State<Arc<ApiState>>) -> ApiResult {
    let webhooks = state.fleet.webhooks().await?;
    Ok(Json(webhooks.iter().map(views::webhook).collect::<Vec<_>>()).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct AddWebhook {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    format: Option<String>,
}

/// 201 with the webhook and its signing secret (the one time it is shown).
pub(super) async fn add_webhook(
    State(state): State<Arc<ApiState>>,
    JsonBody(body): JsonBody<AddWebhook>,
) -> ApiResult {
    use secrecy::ExposeSecret;
    let (webhook, secret) = state
        .fleet
        .add_webhook(
            &body.url.into(),
            &body.events,
            body.format.as_deref().unwrap_or("json"),
        )
        .await?;
    let mut v = views::webhook(&webhook);
    v["secret"] = json!(secret.expose_secret());
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub(super) async fn remove_webhook(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
    state.fleet.remove_webhook(parse_id(&id, "webhook")?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `?limit=N` of the lists that are only ever read newest first.
#[derive(Deserialize)]
pub(super) struct LimitQuery {
    limit: Option<i64>,
}

pub(super) async fn list_deliveries(
    State(state): State<Arc<ApiState>>,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> ApiResult {
    let deliveries = state
        .fleet
        .webhook_deliveries(query.limit.unwrap_or(PAGE))
        .await?;
    Ok(Json(deliveries.iter().map(views::delivery).collect::<Vec<_>>()).into_response())
}

/// 202 with the new job (the same one if the job was retried already).
pub(super) async fn retry_job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
    let (job, created) = state.fleet.retry_job(parse_id(&id, "job")?).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/jobs/{}", job.id))],
        Json(json!({"job_id": job.id, "created": created, "job": views::job(&job)})),
    )
        .into_response())
}

pub(super) async fn cancel_job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
    let job = state.fleet.cancel_job(parse_id(&id, "job")?).await?;
    Ok(Json(views::job(&job)).into_response())
}

pub(super) async fn list_dead_letters(
    State(state): State<Arc<ApiState>>,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> ApiResult {
    let letters = state.fleet.dead_letters(query.limit.unwrap_or(PAGE)).await?;
    Ok(Json(letters.iter().map(views::dead_letter).collect::<Vec<_>>()).into_response())
}

pub(super) async fn replay_dead_letter(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(accepted(
        state
            .fleet
            .replay_dead_letter(parse_id(&id, "dead letter")?)
            .await?,
    ))
}

pub(super) async fn discard_dead_letter(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult {
    state
        .fleet
        .discard_dead_letter(parse_id(&id, "dead letter")?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
