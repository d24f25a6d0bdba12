//! The console's pages (GET): read the catalog through the fleet, render with `view`.
//! Lists are keyset-paged like the API's, so a page costs the same at 100k tenants.

use super::session::{self, Operator};
use super::view::{self, ago, ago_opt, bytes, clip, query, short_id, status};
use super::{ConsoleError, ConsoleResult, ConsoleState};
use crate::catalog::{JobSearch, TenantSearch};
use crate::slug::TenantSlug;
use crate::status::{JobKind, JobStatus, RolloutStatus, TenantStatus};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Rows per page of the tenant and job lists.
const PAGE: i64 = 50;

fn render(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// `?notice=<id>` after an action: the recorded outcome, read back from the catalog (so a
/// link cannot make the console say something it did not do).
#[derive(Deserialize, Default)]
pub(super) struct Notice {
    notice: Option<Uuid>,
}

async fn notice(state: &ConsoleState, id: Option<Uuid>) -> Option<Markup> {
    let action = state.fleet.catalog.console_action(id?).await.ok()??;
    let class = if action.ok { "notice ok" } else { "notice bad" };
    Some(html! {
        div class=(class) role="status" {
            strong { @if action.ok { "Done: " } @else { "Refused: " } }
            (action.result)
        }
    })
}

fn parse_or_400<T: std::str::FromStr>(raw: Option<&str>, what: &str) -> ConsoleResult<Option<T>> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ConsoleError::new(
                StatusCode::BAD_REQUEST,
                format!("{what} {s:?} is not one pgfleet knows"),
            )
        }),
    }
}

fn parse_slug(raw: &str) -> ConsoleResult<TenantSlug> {
    TenantSlug::parse(raw).map_err(|e| ConsoleError::new(StatusCode::NOT_FOUND, e.to_string()))
}

fn parse_uuid(raw: &str, what: &str) -> ConsoleResult<Uuid> {
    raw.parse()
        .map_err(|_| ConsoleError::new(StatusCode::NOT_FOUND, format!("no {what} {raw:?}")))
}

// ---------------------------------------------------------------------------------------
// Signing in and out

#[derive(Deserialize, Default)]
pub(super) struct NextQuery {
    next: Option<String>,
}

pub(super) async fn sign_in_page(
    State(state): State<Arc<ConsoleState>>,
    Query(q): Query<NextQuery>,
) -> Response {
    render(sign_in_form(&state, q.next.as_deref(), None))
}

fn sign_in_form(state: &ConsoleState, next: Option<&str>, error: Option<&str>) -> Markup {
    let next = session::safe_next(next);
    view::bare_page(
        "Sign in",
        html! {
            h1 { "pgfleet console" }
            @if state.token.is_none() {
                p.notice.bad role="note" {
                    "This API runs without authentication (--insecure-dev): any token signs in as admin."
                }
            }
            @if let Some(error) = error {
                p.notice.bad role="alert" #sign-in-error { (error) }
            }
            form.stack method="post" action="/console/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                p.hint { "The API token (PGFLEET_API_TOKEN, or the api.token file of `pgfleet up`), a console token, or a read-only viewer token." }
                label for="operator" { "Your name" }
                input #operator type="text" name="operator" maxlength="64" autocomplete="name";
                p.hint { "Recorded with every action you take." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Deserialize)]
pub(super) struct SignIn {
    token: String,
    #[serde(default)]
    operator: String,
    next: Option<String>,
}

pub(super) async fn sign_in(
    State(state): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> ConsoleResult {
    let Some(role) = session::role_for(&state, &form.token) else {
        tracing::warn!("console sign-in refused: unknown token");
        let page = sign_in_form(
            &state,
            form.next.as_deref(),
            Some("That token is not valid here."),
        );
        return Ok((StatusCode::UNAUTHORIZED, Html(page.into_string())).into_response());
    };
    let name: String = form
        .operator
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let operator = if name.is_empty() {
        format!("unnamed {}", role.as_str())
    } else {
        name
    };
    let (secret, digest) = session::new_secret();
    state
        .fleet
        .catalog
        .create_console_session(&digest, role.as_str(), &operator, session::LIFETIME)
        .await?;
    tracing::info!(operator = %operator, role = role.as_str(), "console sign-in");
    let mut response = Redirect::to(&session::safe_next(form.next.as_deref())).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(&state, &headers, Some(&secret)),
    );
    Ok(response)
}

#[derive(Deserialize)]
pub(super) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn sign_out(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> ConsoleResult {
    if !operator.csrf_matches(&form.csrf) {
        return Err(ConsoleError::new(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token: sign out from the console's own button",
        ));
    }
    if let Some(secret) = session::cookie_value(&headers) {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        state.fleet.catalog.delete_console_session(&digest).await?;
    }
    let mut response = Redirect::to("/console/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::set_cookie(&state, &headers, None));
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// Overview

pub(super) async fn overview(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Query(n): Query<Notice>,
) -> ConsoleResult {
    let catalog = &state.fleet.catalog;
    let tenants = catalog.tenant_counts().await?;
    let recent = catalog.recent_job_counts(Duration::from_secs(3600)).await?;
    let oldest = catalog.oldest_backups(5).await?;
    let rollouts: Vec<_> = state
        .fleet
        .rollouts(20)
        .await?
        .into_iter()
        .filter(|r| r.status == RolloutStatus::Running)
        .collect();
    let dead_letters = catalog.dead_letter_count().await?;
    let queues = tokio::time::timeout(
        Duration::from_secs(3),
        state.fleet.producer.publisher().queue_depths(),
    )
    .await;
    let queues = match queues {
        Ok(Ok(q)) => Ok(q),
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "console: the broker did not give queue depths");
            Err("the broker is unreachable")
        }
        Err(_) => Err("the broker did not answer within 3 s"),
    };
    let statuses: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    let kinds: Vec<&String> = {
        let mut k: Vec<&String> = recent.iter().map(|(kind, _, _)| kind).collect();
        k.dedup();
        k
    };
    let body = html! {
        h1 { "Overview" }
        div.grid #overview data-live {
            section aria-labelledby="h-tenants" {
                h2 #h-tenants { "Tenants" }
                @if tenants.is_empty() { p { "No tenants yet." } }
                @else {
                    table { thead { tr { th scope="col" { "Status" } th.num scope="col" { "Tenants" } } }
                        tbody { @for (s, n) in &tenants {
                            tr { td { a href={ "/console/tenants?" (query(&[("status", s)])) } { (status(s)) } } td.num { (n) } }
                        } }
                    }
                }
            }
            section aria-labelledby="h-jobs" {
                h2 #h-jobs { "Jobs in the last hour" }
                @if recent.is_empty() { p { "No jobs in the last hour." } }
                @else {
                    div.table-wrap { table {
                        thead { tr { th scope="col" { "Kind" } @for s in &statuses { th.num scope="col" { (s) } } } }
                        tbody { @for kind in &kinds {
                            tr {
                                th scope="row" { a href={ "/console/jobs?" (query(&[("kind", kind), ("since", "1h")])) } { (kind) } }
                                @for s in &statuses {
                                    @let n = recent.iter().find(|(k, st, _)| k == *kind && st == s).map_or(0, |r| r.2);
                                    td.num { @if n > 0 { a href={ "/console/jobs?" (query(&[("kind", kind), ("status", s), ("since", "1h")])) } { (n) } } @else { "0" } }
                                }
                            }
                        } }
                    } }
                }
            }
            section aria-labelledby="h-queues" {
                h2 #h-queues { "Queues" }
                @match &queues {
                    Ok(queues) => {
                        div.table-wrap { table {
                            thead { tr { th scope="col" { "Queue" } th.num scope="col" { "Ready" } th.num scope="col" { "Consumers" } } }
                            tbody { @for (q, ready, consumers) in queues {
                                tr { td { code title=(q) { (q.rsplit_once('.').map_or(q.as_str(), |(_, kind)| kind)) } } td.num { (ready) } td.num {
                                    (consumers)
                                    @if *consumers == 0 && !q.ends_with(".dead") { " " span.status.bad { "✗ no worker" } }
                                } }
                            } }
                        } }
                    }
                    Err(why) => { p.notice.bad role="alert" { (why) } }
                }
            }
            section aria-labelledby="h-backups" {
                h2 #h-backups { "Oldest last backups" }
                @if oldest.is_empty() { p { "No active tenants." } }
                @else {
                    table { thead { tr { th scope="col" { "Tenant" } th scope="col" { "Last good backup" } } }
                        tbody { @for (slug, age) in &oldest {
                            tr { td { a href={ "/console/tenants/" (slug) } { (slug) } } td { (view::age_secs(*age)) } }
                        } }
                    }
                }
            }
            section aria-labelledby="h-rollouts" {
                h2 #h-rollouts { "Running rollouts" }
                @if rollouts.is_empty() { p { "None running." } }
                @else {
                    ul { @for r in &rollouts {
                        li { a href={ "/console/rollouts/" (r.id) } { "to version " (r.target_version) } " — "
                             (r.succeeded) " done, " (r.failed) " failed, " (r.remaining) " remaining" }
                    } }
                }
            }
            section aria-labelledby="h-dead" {
                h2 #h-dead { "Dead letters" }
                p { a href="/console/dead-letters" { (dead_letters) " recorded" } }
            }
        }
    };
    Ok(render(view::page(
        "Overview",
        "/console",
        &operator,
        notice(&state, n.notice).await,
        body,
    )))
}

// ---------------------------------------------------------------------------------------
// Tenants

#[derive(Deserialize, Default)]
pub(super) struct TenantsQuery {
    q: Option<String>,
    status: Option<String>,
    server: Option<String>,
    region: Option<String>,
    after: Option<String>,
}

pub(super) async fn tenants(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Query(q): Query<TenantsQuery>,
) -> ConsoleResult {
    let text =
        q.q.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| clip(s, 63));
    let status_filter: Option<TenantStatus> = parse_or_400(q.status.as_deref(), "tenant status")?;
    let nonempty = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(|s| clip(s, 100));
    let search = TenantSearch {
        text: text.clone(),
        status: status_filter,
        server: nonempty(&q.server),
        region: nonempty(&q.region),
        after: nonempty(&q.after),
        limit: PAGE,
    };
    let page = state.fleet.catalog.search_tenants(&search).await?;
    let (servers, regions) = state.fleet.catalog.server_and_region_names().await?;
    let filters: Vec<(&str, String)> = vec![
        ("q", text.clone().unwrap_or_default()),
        ("status", status_filter.map(|s| s.to_string()).unwrap_or_default()),
        ("server", search.server.clone().unwrap_or_default()),
        ("region", search.region.clone().unwrap_or_default()),
    ];
    let next = (page.len() as i64 == PAGE).then(|| {
        let mut pairs: Vec<(&str, &str)> = filters.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let last = page.last().map(|t| t.slug.as_str()).unwrap_or_default();
        pairs.push(("after", last));
        query(&pairs)
    });
    let selected = |current: &Option<String>, value: &str| current.as_deref() == Some(value);
    let body = html! {
        h1 { "Tenants" }
        form.filters method="get" action="/console/tenants" role="search" {
            label { "Slug contains " input type="search" name="q" value=[text.as_deref()] maxlength="63"; }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in TenantStatus::ALL { option value=(s.as_str()) selected[status_filter == Some(*s)] { (s.as_str()) } }
                }
            }
            label { "Server "
                select name="server" {
                    option value="" { "any" }
                    @for s in &servers { option value=(s) selected[selected(&search.server, s)] { (s) } }
                }
            }
            label { "Region "
                select name="region" {
                    option value="" { "any" }
                    @for r in &regions { option value=(r) selected[selected(&search.region, r)] { (r) } }
                }
            }
            button type="submit" { "Filter" }
        }
        div #tenant-list data-live {
            @if page.is_empty() { p { "No tenants match." } }
            @else {
                div.table-wrap { table {
                    thead { tr {
                        th scope="col" { "Tenant" } th scope="col" { "Status" } th scope="col" { "Server" }
                        th scope="col" { "Region" } th.num scope="col" { "Schema" } th.num scope="col" { "Storage" }
                        th scope="col" { "Created" }
                    } }
                    tbody { @for t in &page {
                        tr {
                            td { a href={ "/console/tenants/" (t.slug) } { (t.slug) } }
                            td { (status(t.status.as_str())) }
                            td { (t.server) }
                            td { (t.region.as_deref().unwrap_or("–")) }
                            td.num { (t.schema_version.map_or("–".to_string(), |v| v.to_string())) }
                            td.num { (bytes(t.storage_bytes)) }
                            td { (ago(&t.created_at)) }
                        }
                    } }
                } }
            }
            @if let Some(next) = &next {
                p { a rel="next" href={ "/console/tenants?" (next) } { "Next page →" } }
            }
        }
    };
    Ok(render(view::page(
        "Tenants",
        "/console/tenants",
        &operator,
        None,
        body,
    )))
}

pub(super) async fn tenant(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Path(slug): Path<String>,
    Query(n): Query<Notice>,
) -> ConsoleResult {
    let slug = parse_slug(&slug)?;
    let t = state.fleet.tenant(&slug).await?;
    let backups = state.fleet.backups(&slug).await?;
    let branches = state.fleet.branches(&slug).await?;
    let jobs = state
        .fleet
        .catalog
        .search_jobs(&JobSearch {
            tenant: Some(t.slug.clone()),
            limit: 20,
            ..JobSearch::default()
        })
        .await?;
    let next_backup = match crate::schedule::parse(&t.backup_schedule) {
        Ok(Some(cron)) => cron
            .find_next_occurrence(&Utc::now(), false)
            .ok()
            .map(|at| html! { (ago(&at)) }),
        Ok(None) => Some(html! { "off" }),
        Err(_) => Some(html! { span.status.bad { "✗ the schedule does not parse" } }),
    };
    let live = matches!(t.status, TenantStatus::Active | TenantStatus::Suspended);
    let limit = |v: Option<i32>, unit: &str| v.map_or("none".to_string(), |v| format!("{v} {unit}"));
    let body = html! {
        h1 { "Tenant " (t.slug) }
        div #tenant-facts data-live {
            dl.facts {
                dt { "Status" } dd { (status(t.status.as_str())) @if let Some(at) = &t.suspended_at { " since " (ago(at)) } }
                dt { "Server" } dd { (t.server) " (" (t.server_kind.as_str()) ")" }
                dt { "Region" } dd { (t.region.as_deref().unwrap_or("–")) }
                dt { "Database / role" } dd { code { (t.database_name) } " / " code { (t.role_name) } }
                dt { "Schema version" } dd { (t.schema_version.map_or("none".to_string(), |v| v.to_string())) }
                dt { "Storage" } dd { (bytes(t.storage_bytes)) " measured " (ago_opt(t.storage_measured_at.as_ref()))
                    @if t.over_quota() { " " span.status.bad { "✗ over quota" } } }
                dt { "Limits" } dd {
                    "connections " (t.connection_limit) ", statement timeout " (limit(t.statement_timeout_ms, "ms"))
                    ", idle in transaction " (limit(t.idle_in_transaction_timeout_ms, "ms")) ", work_mem " (limit(t.work_mem_kb, "kB"))
                    ", storage quota " (bytes(t.storage_quota_bytes))
                }
                dt { "Backup schedule" } dd { code { (t.backup_schedule) } " (UTC) — next " @if let Some(next) = next_backup { (next) } @else { "–" } }
                dt { "Retention" } dd { (t.retention_days) " days, at least " (t.keep_min) " kept" }
                dt { "Created" } dd { (ago(&t.created_at)) }
            }
        }
        @if live {
            div.actions {
                (view::action_link("tenant-backup", &t.slug, "Back up now", &[]))
                @if t.status == TenantStatus::Active { (view::action_link("tenant-suspend", &t.slug, "Suspend", &[])) }
                @if t.status == TenantStatus::Suspended { (view::action_link("tenant-resume", &t.slug, "Resume", &[])) }
            }
        }
        section aria-labelledby="h-tjobs" {
            h2 #h-tjobs { "Jobs" }
            div #tenant-jobs data-live { (job_table(&jobs)) }
            p { a href={ "/console/jobs?" (query(&[("tenant", &t.slug)])) } { "All jobs of " (t.slug) " →" } }
        }
        section aria-labelledby="h-backups" {
            h2 #h-backups { "Backups" }
            div #tenant-backups data-live {
                @if backups.is_empty() { p { "No backups yet." } }
                @else {
                    div.table-wrap { table {
                        thead { tr {
                            th scope="col" { "Backup" } th scope="col" { "Status" } th scope="col" { "Taken" }
                            th.num scope="col" { "Size" } th.num scope="col" { "Duration" } th scope="col" { "SHA-256" } th scope="col" { "" }
                        } }
                        tbody { @for b in backups.iter().take(100) {
                            tr {
                                td { code title=(b.id) { (short_id(&b.id)) } @if let Some(branch) = &b.branch { " (dev copy " (branch) ")" } }
                                td { (status(b.status.as_str())) @if let Some(e) = &b.error { br; span.error { (clip(e, 200)) } } }
                                td { (ago(&b.created_at)) }
                                td.num { (bytes(b.bytes)) }
                                td.num { (view::millis(b.duration_ms)) }
                                td { @if let Some(sha) = &b.sha256 { code title=(sha) { (clip(sha, 12)) } } @else { "–" } }
                                td { @if b.status.as_str() == "succeeded" && live {
                                    (view::action_link("tenant-restore", &t.slug, "Restore…", &[("backup", &b.id.to_string())]))
                                } }
                            }
                        } }
                    } }
                }
            }
        }
        section aria-labelledby="h-branches" {
            h2 #h-branches { "Branches and dev copies" }
            @if branches.is_empty() { p { "None." } }
            @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Purpose" } th scope="col" { "Ready" } th scope="col" { "Database" } th scope="col" { "Created" } } }
                    tbody { @for b in &branches {
                        tr {
                            td { (b.name) } td { (b.purpose) @if b.schema_only { " (schema only)" } }
                            td { @if b.ready { (status("ok")) } @else { (status("pending")) } }
                            td { (b.database_name.as_deref().or(b.neon_branch_id.as_deref()).unwrap_or("–")) }
                            td { (ago(&b.created_at)) }
                        }
                    } }
                } }
            }
        }
    };
    Ok(render(view::page(
        &format!("Tenant {}", t.slug),
        "/console/tenants",
        &operator,
        notice(&state, n.notice).await,
        body,
    )))
}

/// A table of jobs (shared by the job list, a tenant's page).
fn job_table(jobs: &[crate::catalog::JobRecord]) -> Markup {
    html! {
        @if jobs.is_empty() { p { "No jobs." } }
        @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Kind" } th scope="col" { "Tenant" } th scope="col" { "Status" }
                    th.num scope="col" { "Attempts" } th scope="col" { "Created" } th.num scope="col" { "Took" } th scope="col" { "Error" }
                } }
                tbody { @for j in jobs {
                    tr data-job=(j.id) {
                        td { a href={ "/console/jobs/" (j.id) } title=(j.id) { (short_id(&j.id)) } }
                        td { (j.kind.as_str()) }
                        td { a href={ "/console/tenants/" (j.tenant) } { (j.tenant) } }
                        td.job-status { (status(j.status.as_str())) }
                        td.num { (j.attempts) "/" (j.max_attempts) }
                        td { (ago(&j.created_at)) }
                        td.num { (took(j)) }
                        td { @if let Some(e) = &j.error { span.error { (clip(e, 120)) } } }
                    }
                } }
            } }
        }
    }
}

fn took(j: &crate::catalog::JobRecord) -> String {
    match (j.started_at, j.finished_at) {
        (Some(s), Some(f)) => view::millis(Some((f - s).num_milliseconds())),
        (Some(s), None) => format!(
            "{} so far",
            view::millis(Some((Utc::now() - s).num_milliseconds()))
        ),
        _ => "–".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Jobs

#[derive(Deserialize, Default)]
pub(super) struct JobsQuery {
    kind: Option<String>,
    status: Option<String>,
    tenant: Option<String>,
    /// 1h, 24h, 7d, or empty for any time.
    since: Option<String>,
    before_at: Option<String>,
    before_id: Option<String>,
}

const SINCE: [(&str, &str, i64); 3] = [
    ("1h", "last hour", 3600),
    ("24h", "last 24 hours", 86_400),
    ("7d", "last 7 days", 604_800),
];

pub(super) async fn jobs(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Query(q): Query<JobsQuery>,
) -> ConsoleResult {
    let kind: Option<JobKind> = parse_or_400(q.kind.as_deref(), "job kind")?;
    let status_filter: Option<JobStatus> = parse_or_400(q.status.as_deref(), "job status")?;
    let tenant = match q.tenant.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(t) => Some(parse_slug(t)?.as_str().to_owned()),
        None => None,
    };
    let since_key = q.since.clone().unwrap_or_default();
    let since = SINCE
        .iter()
        .find(|(k, _, _)| *k == since_key)
        .map(|(_, _, secs)| Utc::now() - chrono::Duration::seconds(*secs));
    let before = match (q.before_at.as_deref(), q.before_id.as_deref()) {
        (Some(at), Some(id)) => Some((
            chrono::DateTime::parse_from_rfc3339(at)
                .map_err(|_| ConsoleError::new(StatusCode::BAD_REQUEST, "bad page cursor"))?
                .with_timezone(&Utc),
            parse_uuid(id, "job")?,
        )),
        _ => None,
    };
    let page = state
        .fleet
        .catalog
        .search_jobs(&JobSearch {
            kind,
            status: status_filter,
            tenant: tenant.clone(),
            since,
            before,
            limit: PAGE,
        })
        .await?;
    let kind_s = kind.map(|k| k.as_str().to_string()).unwrap_or_default();
    let status_s = status_filter.map(|s| s.as_str().to_string()).unwrap_or_default();
    let tenant_s = tenant.clone().unwrap_or_default();
    let next = (page.len() as i64 == PAGE).then(|| {
        let last = page.last().expect("a full page");
        query(&[
            ("kind", &kind_s),
            ("status", &status_s),
            ("tenant", &tenant_s),
            ("since", &since_key),
            ("before_at", &crate::views::time(&last.created_at)),
            ("before_id", &last.id.to_string()),
        ])
    });
    let body = html! {
        h1 { "Jobs" }
        form.filters method="get" action="/console/jobs" role="search" {
            label { "Kind "
                select name="kind" {
                    option value="" { "any" }
                    @for k in JobKind::ALL { option value=(k.as_str()) selected[kind == Some(*k)] { (k.as_str()) } }
                }
            }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in JobStatus::ALL { option value=(s.as_str()) selected[status_filter == Some(*s)] { (s.as_str()) } }
                }
            }
            label { "Tenant " input type="search" name="tenant" value=[tenant.as_deref()] maxlength="63"; }
            label { "Created "
                select name="since" {
                    option value="" { "any time" }
                    @for (k, label, _) in SINCE { option value=(k) selected[since_key == k] { (label) } }
                }
            }
            button type="submit" { "Filter" }
        }
        div #job-list data-live {
            (job_table(&page))
            @if let Some(next) = &next { p { a rel="next" href={ "/console/jobs?" (next) } { "Older →" } } }
        }
    };
    Ok(render(view::page("Jobs", "/console/jobs", &operator, None, body)))
}

pub(super) async fn job(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> ConsoleResult {
    let id = parse_uuid(&id, "job")?;
    let j = state.fleet.job(id).await?;
    let attempts = state.fleet.catalog.job_attempts(id).await?;
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let retryable = matches!(j.status, JobStatus::Failed | JobStatus::Dead) && j.kind != JobKind::Migrate;
    let rollout = j
        .payload
        .get("rollout")
        .and_then(|r| r.as_str())
        .map(str::to_owned);
    let body = html! {
        h1 { "Job " code { (short_id(&j.id)) } }
        div #job-facts data-live {
            dl.facts {
                dt { "Id" } dd { code { (j.id) } }
                dt { "Kind" } dd { (j.kind.as_str()) }
                dt { "Tenant" } dd { a href={ "/console/tenants/" (j.tenant) } { (j.tenant) } }
                dt { "Status" } dd.job-status { (status(j.status.as_str())) }
                dt { "Attempts" } dd { (j.attempts) " of " (j.max_attempts) }
                dt { "Worker" } dd { (j.lease_owner.as_deref().or(attempts.last().and_then(|a| a.worker.as_deref())).unwrap_or("–")) }
                dt { "Created" } dd { (ago(&j.created_at)) }
                dt { "Started" } dd { (ago_opt(j.started_at.as_ref())) }
                dt { "Finished" } dd { (ago_opt(j.finished_at.as_ref())) " (took " (took(&j)) ")" }
                @if j.status == JobStatus::Queued && j.run_after > Utc::now() {
                    dt { "Next try" } dd { (ago(&j.run_after)) }
                }
                dt { "Key" } dd { code { (j.shown_key()) } }
                @if let Some(r) = &rollout { dt { "Rollout" } dd { a href={ "/console/rollouts/" (r) } { (r) } } }
                @if let Some(e) = &j.error { dt { "Error" } dd { pre.error { (e) } } }
            }
            @if let Some(outcome) = &j.outcome { h2 { "Outcome" } pre { (pretty(outcome)) } }
        }
        @if operator.can_act() {
            div.actions {
                @if retryable { (view::action_link("job-retry", &j.id.to_string(), "Retry", &[])) }
                @if j.status == JobStatus::Queued { (view::action_link("job-cancel", &j.id.to_string(), "Cancel", &[])) }
            }
        }
        h2 { "Request" }
        pre { (pretty(&j.payload)) }
        h2 { "Failed attempts" }
        @if attempts.is_empty() { p { "None recorded." } }
        @else {
            div.table-wrap { table {
                thead { tr { th.num scope="col" { "Attempt" } th scope="col" { "Worker" } th scope="col" { "Started" } th scope="col" { "Ended" } th scope="col" { "Then" } th scope="col" { "Error" } } }
                tbody { @for a in &attempts {
                    tr {
                        td.num { (a.attempt) } td { (a.worker.as_deref().unwrap_or("–")) }
                        td { (ago_opt(a.started_at.as_ref())) } td { (ago(&a.ended_at)) }
                        td { (status(&a.status)) } td { pre.error { (a.error) } }
                    }
                } }
            } }
        }
    };
    Ok(render(view::page(
        "Job",
        "/console/jobs",
        &operator,
        notice(&state, n.notice).await,
        body,
    )))
}

// ---------------------------------------------------------------------------------------
// Rollouts

fn progress(r: &crate::catalog::RolloutRecord) -> Markup {
    let finished = r.succeeded + r.failed + r.skipped;
    html! {
        progress max=(r.tenants.max(1)) value=(finished) aria-label="finished tenants" {}
        " " (r.succeeded) " ✓ · " (r.failed) " ✗ · " (r.skipped) " skipped · " (r.remaining) " remaining of " (r.tenants)
    }
}

pub(super) async fn rollouts(State(state): State<Arc<ConsoleState>>, operator: Operator) -> ConsoleResult {
    let list = state.fleet.rollouts(100).await?;
    let body = html! {
        h1 { "Rollouts" }
        div #rollout-list data-live {
            @if list.is_empty() { p { "No rollouts yet: `pgfleet migrate` starts one." } }
            @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Rollout" } th scope="col" { "Status" } th.num scope="col" { "To version" } th scope="col" { "Progress" } th scope="col" { "Started" } } }
                    tbody { @for r in &list {
                        tr {
                            td { a href={ "/console/rollouts/" (r.id) } title=(r.id) { (short_id(&r.id)) } }
                            td { (status(r.status.as_str())) }
                            td.num { (r.target_version) }
                            td { (progress(r)) }
                            td { (ago(&r.created_at)) }
                        }
                    } }
                } }
            }
        }
    };
    Ok(render(view::page(
        "Rollouts",
        "/console/rollouts",
        &operator,
        None,
        body,
    )))
}

pub(super) async fn rollout(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> ConsoleResult {
    let id = parse_uuid(&id, "rollout")?;
    let r = state
        .fleet
        .catalog
        .rollout(id)
        .await?
        .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, format!("no rollout {id}")))?;
    let phases = state.fleet.catalog.rollout_phase_counts(id).await?;
    let failures = state.fleet.catalog.rollout_failures(id, 200).await?;
    let phase_n = |phase: &str, outcome: &str| {
        phases
            .iter()
            .filter(|(p, o, _)| p == phase && (outcome.is_empty() || o == outcome))
            .map(|(_, _, n)| n)
            .sum::<i64>()
    };
    let canary_total = phase_n("canary", "");
    let canary_state = if r.canary == 0 {
        "no canary".to_string()
    } else if canary_total == 0 {
        format!("{} canary tenants; passed on by an operator", r.canary)
    } else {
        let (ok, bad, skipped) = (
            phase_n("canary", "succeeded"),
            phase_n("canary", "failed"),
            phase_n("canary", "skipped"),
        );
        let waiting = canary_total - ok - bad - skipped;
        let verdict = if bad > 0 {
            "failed: the rest were not started"
        } else if waiting > 0 {
            "running"
        } else {
            "passed"
        };
        format!(
            "{canary_total} canary tenants: {ok} succeeded, {bad} failed, {waiting} in flight — {verdict}"
        )
    };
    let body = html! {
        h1 { "Rollout " code { (short_id(&r.id)) } }
        div #rollout-facts data-live {
            dl.facts {
                dt { "Status" } dd { (status(r.status.as_str())) }
                @if let Some(reason) = &r.halted_reason { dt { "Halted because" } dd.error { (reason) } }
                dt { "Target version" } dd { (r.target_version) }
                dt { "Progress" } dd { (progress(&r)) }
                dt { "In flight" } dd { (r.active) }
                dt { "Canary" } dd #canary-state { (canary_state) }
                dt { "Max failures" } dd { (r.max_failures.map_or("none".to_string(), |m| m.to_string())) }
                dt { "Per-server concurrency" } dd { (r.server_concurrency) }
                dt { "Started" } dd { (ago(&r.created_at)) }
                dt { "Finished" } dd { (ago_opt(r.finished_at.as_ref())) }
            }
            h2 { "Failed tenants" }
            @if failures.is_empty() { p { "None." } }
            @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Tenant" } th scope="col" { "Phase" } th scope="col" { "Job" } th.num scope="col" { "Attempts" } th scope="col" { "Error" } } }
                    tbody { @for f in &failures {
                        tr {
                            td { a href={ "/console/tenants/" (f.tenant) } { (f.tenant) } }
                            td { (f.phase) }
                            td { a href={ "/console/jobs/" (f.job_id) } { (short_id(&f.job_id)) } }
                            td.num { (f.attempts) }
                            td { pre.error { (f.error.as_deref().unwrap_or("")) } }
                        }
                    } }
                } }
                @if failures.len() == 200 { p { "The first 200 shown; `pgfleet rollouts show` lists them all." } }
            }
        }
        @if operator.can_act() {
            div.actions {
                @if r.status == RolloutStatus::Running { (view::action_link("rollout-halt", &r.id.to_string(), "Halt", &[])) }
                @if r.status == RolloutStatus::Halted { (view::action_link("rollout-resume", &r.id.to_string(), "Resume", &[])) }
            }
        }
    };
    Ok(render(view::page(
        "Rollout",
        "/console/rollouts",
        &operator,
        notice(&state, n.notice).await,
        body,
    )))
}

// ---------------------------------------------------------------------------------------
// Dead letters

pub(super) async fn dead_letters(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Query(n): Query<Notice>,
) -> ConsoleResult {
    let letters = state.fleet.dead_letters(200).await?;
    let body = html! {
        h1 { "Dead letters" }
        p { "Messages no worker could understand, and jobs that ran out of attempts. Bodies are shown as text, never run." }
        div #dead-letter-list data-live {
            @if letters.is_empty() { p { "None." } }
            @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Received" } th scope="col" { "Routing key" } th scope="col" { "Reason" } th.num scope="col" { "Body" } th scope="col" { "" } } }
                    tbody { @for d in &letters {
                        tr {
                            td { (ago(&d.received_at)) }
                            td { code { (d.routing_key.as_deref().unwrap_or("–")) } }
                            td { (clip(&d.reason, 160)) }
                            td.num { (bytes(Some(d.body.len() as i64))) }
                            td { a href={ "/console/dead-letters/" (d.id) } { "Open" } }
                        }
                    } }
                } }
            }
        }
    };
    Ok(render(view::page(
        "Dead letters",
        "/console/dead-letters",
        &operator,
        notice(&state, n.notice).await,
        body,
    )))
}

pub(super) async fn dead_letter(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> ConsoleResult {
    let id = parse_uuid(&id, "dead letter")?;
    let d = state.fleet.catalog.dead_letter(id).await?.ok_or_else(|| {
        ConsoleError::new(
            StatusCode::NOT_FOUND,
            format!("no dead letter {id} (replayed or discarded?)"),
        )
    })?;
    const SHOWN: usize = 16 * 1024;
    let text = String::from_utf8_lossy(&d.body[..d.body.len().min(SHOWN)]).into_owned();
    let body = html! {
        h1 { "Dead letter" }
        dl.facts {
            dt { "Received" } dd { (ago(&d.received_at)) }
            dt { "Queue" } dd { code { (d.queue) } }
            dt { "Routing key" } dd { code { (d.routing_key.as_deref().unwrap_or("–")) } }
            dt { "Reason" } dd #dead-letter-reason { (d.reason) }
            @if let Some(job) = d.job_id { dt { "Job" } dd { a href={ "/console/jobs/" (job) } { (job) } } }
            dt { "Body" } dd { (bytes(Some(d.body.len() as i64))) @if d.body.len() > SHOWN { " (the first 16 KiB shown)" } }
        }
        pre.body #dead-letter-body { (text) }
        @if operator.can_act() {
            div.actions {
                @if d.job_id.is_none() { (view::action_link("dead-letter-replay", &d.id.to_string(), "Replay", &[])) }
                (view::action_link("dead-letter-discard", &d.id.to_string(), "Discard", &[]))
            }
        }
    };
    Ok(render(view::page(
        "Dead letter",
        "/console/dead-letters",
        &operator,
        notice(&state, n.notice).await,
        body,
    )))
}

// ---------------------------------------------------------------------------------------
// Activity

pub(super) async fn activity(State(state): State<Arc<ConsoleState>>, operator: Operator) -> ConsoleResult {
    let actions = state.fleet.catalog.console_actions(200).await?;
    let body = html! {
        h1 { "Activity" }
        p { "What operators did from the console, newest first." }
        div #activity-list data-live {
            @if actions.is_empty() { p { "Nothing yet." } }
            @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Result" } } }
                    tbody { @for a in &actions {
                        tr {
                            td { (ago(&a.at)) }
                            td { (a.operator) " (" (a.role) ")" }
                            td { (a.action) }
                            td { code { (a.target) } }
                            td { @if a.ok { (status("ok")) } @else { (status("failed")) } " " (a.result) }
                        }
                    } }
                } }
            }
        }
    };
    Ok(render(view::page(
        "Activity",
        "/console/activity",
        &operator,
        None,
        body,
    )))
}
