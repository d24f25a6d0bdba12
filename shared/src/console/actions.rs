//! Console actions. `GET /console/confirm?action=…&target=…` says what the action will do
//! and, for an admin, shows the form that does it; `POST /console/actions` does it after
//! checking the session, the CSRF token, the Origin and the role, records who did what and
//! how it ended (`console_actions`), and redirects to the page of the result with that
//! record as its notice. The confirmation form carries a random nonce that becomes the
//! job's idempotency key, so a form sent twice (a double click, a resubmitted POST) queues
//! one job.

use super::session::Operator;
use super::view::{self, ago, bytes, clip, short_id};
use super::{ConsoleError, ConsoleResult, ConsoleState};
use crate::fleet::FleetError;
use crate::slug::TenantSlug;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use std::sync::Arc;
use uuid::Uuid;

/// What the console can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    JobRetry,
    JobCancel,
    TenantBackup,
    TenantRestore,
    TenantSuspend,
    TenantResume,
    RolloutHalt,
    RolloutResume,
    DeadLetterReplay,
    DeadLetterDiscard,
}

impl Action {
    const ALL: [Action; 10] = [
        Action::JobRetry,
        Action::JobCancel,
        Action::TenantBackup,
        Action::TenantRestore,
        Action::TenantSuspend,
        Action::TenantResume,
        Action::RolloutHalt,
        Action::RolloutResume,
        Action::DeadLetterReplay,
        Action::DeadLetterDiscard,
    ];

    fn name(self) -> &'static str {
        match self {
            Action::JobRetry => "job-retry",
            Action::JobCancel => "job-cancel",
            Action::TenantBackup => "tenant-backup",
            Action::TenantRestore => "tenant-restore",
            Action::TenantSuspend => "tenant-suspend",
            Action::TenantResume => "tenant-resume",
            Action::RolloutHalt => "rollout-halt",
            Action::RolloutResume => "rollout-resume",
            Action::DeadLetterReplay => "dead-letter-replay",
            Action::DeadLetterDiscard => "dead-letter-discard",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Action::JobRetry => "Retry job",
            Action::JobCancel => "Cancel job",
            Action::TenantBackup => "Back up tenant now",
            Action::TenantRestore => "Restore a backup into a new database",
            Action::TenantSuspend => "Suspend tenant",
            Action::TenantResume => "Resume tenant",
            Action::RolloutHalt => "Halt rollout",
            Action::RolloutResume => "Resume rollout",
            Action::DeadLetterReplay => "Replay dead letter",
            Action::DeadLetterDiscard => "Discard dead letter",
        }
    }

    fn parse(raw: &str) -> Result<Self, ConsoleError> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == raw)
            .ok_or_else(|| ConsoleError::new(StatusCode::BAD_REQUEST, format!("no console action {raw:?}")))
    }

    /// The page the action is about (where the operator goes back to).
    fn target_page(self, target: &str) -> String {
        let target: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
        match self {
            Action::JobRetry | Action::JobCancel => format!("/console/jobs/{target}"),
            Action::TenantBackup | Action::TenantRestore | Action::TenantSuspend | Action::TenantResume => {
                format!("/console/tenants/{target}")
            }
            Action::RolloutHalt | Action::RolloutResume => format!("/console/rollouts/{target}"),
            Action::DeadLetterReplay => format!("/console/dead-letters/{target}"),
            Action::DeadLetterDiscard => "/console/dead-letters".into(),
        }
    }
}

fn bad(message: impl Into<String>) -> ConsoleError {
    ConsoleError::new(StatusCode::BAD_REQUEST, message)
}

fn uuid_of(raw: &str, what: &str) -> Result<Uuid, ConsoleError> {
    raw.trim()
        .parse()
        .map_err(|_| bad(format!("{raw:?} is not a {what} id")))
}

fn slug_of(raw: &str) -> Result<TenantSlug, ConsoleError> {
    TenantSlug::parse(raw.trim()).map_err(|e| bad(e.to_string()))
}

#[derive(Deserialize)]
pub(super) struct ConfirmQuery {
    action: String,
    target: String,
    /// Restore: which backup.
    backup: Option<String>,
}

/// What the action will do, in words, from the current state of its target.
async fn describe(
    state: &ConsoleState,
    action: Action,
    target: &str,
    backup: Option<&str>,
) -> ConsoleResult<Markup> {
    let fleet = &state.fleet;
    Ok(match action {
        Action::JobRetry | Action::JobCancel => {
            let job = fleet.job(uuid_of(target, "job")?).await?;
            let what = html! {
                "job " code { (job.id) } " — " (job.kind.as_str()) " of tenant " strong { (job.tenant) } ", "
                (job.status.as_str()) " after " (job.attempts) " attempts"
                @if let Some(e) = &job.error { ": " span.error { (clip(e, 300)) } }
            };
            if action == Action::JobRetry {
                html! { p { "Queue a new job with the same request as " (what) "." }
                p { "The old job stays as it ended; the new one is linked from it by its key " code { "retry:" (job.id) } "." } }
            } else {
                html! { p { "Cancel " (what) "." }
                p { "It will not run: it ends " code { "failed" } " with " code { "cancelled: by operator" } ". No webhook is sent." } }
            }
        }
        Action::TenantBackup => {
            let t = fleet.tenant(&slug_of(target)?).await?;
            html! { p { "Back up tenant " strong { (t.slug) } " now: a backup job is queued, its dump is compressed into the tenant's prefix and recorded under its backups." }
            p { "Its schedule (" code { (t.backup_schedule) } ") is not changed." } }
        }
        Action::TenantRestore => {
            let slug = slug_of(target)?;
            let t = fleet.tenant(&slug).await?;
            let id = uuid_of(backup.unwrap_or_default(), "backup")?;
            let b = fleet
                .backups(&slug)
                .await?
                .into_iter()
                .find(|b| b.id == id)
                .ok_or_else(|| {
                    ConsoleError::new(StatusCode::NOT_FOUND, format!("tenant {slug} has no backup {id}"))
                })?;
            html! { p { "Restore backup " code { (short_id(&b.id)) } " of tenant " strong { (t.slug) } " (taken " (ago(&b.created_at)) ", " (bytes(b.bytes)) ") into a new database on its server " (t.server) "." }
            p { "The tenant's own database is not touched. The backup's checksum is verified before anything is loaded." } }
        }
        Action::TenantSuspend => {
            let t = fleet.tenant(&slug_of(target)?).await?;
            html! { p { "Suspend tenant " strong { (t.slug) } ": its role can no longer log in and its open connections are ended. Its data, backups and schedule are kept." }
            p { "Resume gives it back as it was." } }
        }
        Action::TenantResume => {
            let t = fleet.tenant(&slug_of(target)?).await?;
            html! { p { "Resume tenant " strong { (t.slug) } ": its role can log in again (and it is migrated if a rollout passed it by while suspended)." } }
        }
        Action::RolloutHalt => {
            let r = fleet
                .catalog
                .rollout(uuid_of(target, "rollout")?)
                .await?
                .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, format!("no rollout {target}")))?;
            html! { p { "Halt the rollout to version " (r.target_version) " (" (r.succeeded) " done, " (r.remaining) " remaining)." }
            p { "Jobs not started yet are skipped; the " (r.active) " in flight finish. Resume starts the skipped tenants again." } }
        }
        Action::RolloutResume => {
            let r = fleet
                .catalog
                .rollout(uuid_of(target, "rollout")?)
                .await?
                .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, format!("no rollout {target}")))?;
            html! { p { "Resume the rollout to version " (r.target_version) ": the " (r.skipped) " tenants its halt skipped get new jobs." }
            @if let Some(reason) = &r.halted_reason { p { "It halted because: " span.error { (reason) } } }
            p { "Tenants that failed (" (r.failed) ") stay failed; a failed canary is passed. It may fail as many tenants again as " code { "max failures" } " allowed." } }
        }
        Action::DeadLetterReplay | Action::DeadLetterDiscard => {
            let id = uuid_of(target, "dead letter")?;
            let d =
                fleet.catalog.dead_letter(id).await?.ok_or_else(|| {
                    ConsoleError::new(StatusCode::NOT_FOUND, format!("no dead letter {id}"))
                })?;
            let what = html! { "the dead letter received " (ago(&d.received_at)) " (" (bytes(Some(d.body.len() as i64))) ", reason: " span.error { (clip(&d.reason, 200)) } ")" };
            if action == Action::DeadLetterReplay {
                html! { p { "Publish " (what) " again as a new job, if this version of pgfleet understands it now, and forget it." } }
            } else {
                html! { p { "Forget " (what) ". Its copy in the broker's dead-letter queue is the broker's to purge." } }
            }
        }
    })
}

pub(super) async fn confirm(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Query(q): Query<ConfirmQuery>,
) -> ConsoleResult {
    let action = Action::parse(&q.action)?;
    let description = describe(&state, action, &q.target, q.backup.as_deref()).await?;
    let default_into = format!(
        "restore_{}_{}",
        q.target.replace('-', "_"),
        chrono::Utc::now().format("%Y%m%d%H%M")
    );
    let nonce = Uuid::new_v4().to_string();
    let body = html! {
        h1 { (action.title()) }
        div.confirm #confirm-text { (description) }
        @if operator.can_act() {
            form.stack method="post" action="/console/actions" {
                input type="hidden" name="csrf" value=(operator.csrf);
                input type="hidden" name="action" value=(action.name());
                input type="hidden" name="target" value=(q.target);
                input type="hidden" name="nonce" value=(nonce);
                @if let Some(b) = &q.backup { input type="hidden" name="backup" value=(b); }
                @if action == Action::TenantRestore {
                    label for="into" { "New database name" }
                    input #into type="text" name="into" value=(clip(&default_into, 63)) maxlength="63" required pattern="[a-z_][a-z0-9_]*";
                }
                div.actions {
                    button #confirm type="submit" { "Yes, " (action.title().to_lowercase()) }
                    a href=(action.target_page(&q.target)) { "No, go back" }
                }
            }
        } @else {
            p.notice.bad role="note" { "You are signed in as a viewer: you can see what this would do, but not do it. Sign in with an admin token to act." }
        }
    };
    Ok(Html(view::page(action.title(), "", &operator, None, body).into_string()).into_response())
}

#[derive(Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    action: String,
    target: String,
    nonce: Option<String>,
    backup: Option<String>,
    into: Option<String>,
}

/// The form came from this site: a browser's `Origin`, when sent, names this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    origin_host.eq_ignore_ascii_case(host)
}

pub(super) async fn act(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> ConsoleResult {
    if !operator.csrf_matches(&form.csrf) {
        tracing::warn!(operator = %operator.name, "console action refused: missing or wrong CSRF token");
        return Err(ConsoleError::new(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token: use the console's own confirmation form",
        ));
    }
    if !same_origin(&headers) {
        return Err(ConsoleError::new(
            StatusCode::FORBIDDEN,
            "the form was sent from another site",
        ));
    }
    let action = Action::parse(&form.action)?;
    let target = clip(form.target.trim(), 100);
    if !operator.can_act() {
        let why = "refused: the viewer role can't act";
        record(&state, &operator, action, &target, false, why).await?;
        return Err(ConsoleError::new(
            StatusCode::FORBIDDEN,
            "you are signed in as a viewer: viewers can't act",
        ));
    }
    let key = match form.nonce.as_deref() {
        Some(n) => Some(format!("console:{}", uuid_of(n, "form")?)),
        None => None,
    };
    let outcome = run(&state, &operator, action, &target, &form, key).await;
    let (ok, result, go_to) = match outcome {
        Ok((result, go_to)) => (true, result, go_to),
        Err(e) => {
            let message = ConsoleError::from(e).message;
            (false, message, action.target_page(&target))
        }
    };
    tracing::info!(operator = %operator.name, action = action.name(), target = %target, ok, "console action");
    let id = record(&state, &operator, action, &target, ok, &result).await?;
    let separator = if go_to.contains('?') { '&' } else { '?' };
    Ok(Redirect::to(&format!("{go_to}{separator}notice={id}")).into_response())
}

/// Records what `operator` did (or tried) and how it ended.
async fn record(
    state: &ConsoleState,
    operator: &Operator,
    action: Action,
    target: &str,
    ok: bool,
    result: &str,
) -> ConsoleResult<Uuid> {
    Ok(state
        .fleet
        .catalog
        .record_console_action(
            &operator.name,
            operator.role.as_str(),
            action.name(),
            target,
            ok,
            result,
        )
        .await?)
}

/// Does the action: what to record as its result, and where to go next.
async fn run(
    state: &ConsoleState,
    operator: &Operator,
    action: Action,
    target: &str,
    form: &ActionForm,
    key: Option<String>,
) -> Result<(String, String), FleetError> {
    let fleet = &state.fleet;
    let invalid = |e: ConsoleError| FleetError::Invalid(e.message);
    Ok(match action {
        Action::JobRetry => {
            let (job, created) = fleet.retry_job(uuid_of(target, "job").map_err(invalid)?).await?;
            let verb = if created { "queued" } else { "already queued" };
            (
                format!("{verb} job {} to retry job {target}", job.id),
                format!("/console/jobs/{}", job.id),
            )
        }
        Action::JobCancel => {
            let job = fleet.cancel_job(uuid_of(target, "job").map_err(invalid)?).await?;
            (
                format!("cancelled job {}", job.id),
                format!("/console/jobs/{}", job.id),
            )
        }
        Action::TenantBackup => {
            let slug = slug_of(target).map_err(invalid)?;
            let e = fleet.start_backup(&slug, key).await?;
            (
                format!("queued backup job {} of tenant {slug}", e.job.id),
                format!("/console/tenants/{slug}"),
            )
        }
        Action::TenantRestore => {
            let slug = slug_of(target).map_err(invalid)?;
            let backup = uuid_of(form.backup.as_deref().unwrap_or_default(), "backup").map_err(invalid)?;
            let into = form.into.as_deref().unwrap_or_default().trim().to_owned();
            let e = fleet.restore(&slug, Some(backup), into.clone(), key).await?;
            (
                format!(
                    "queued restore job {} of backup {backup} into database {into}",
                    e.job.id
                ),
                format!("/console/jobs/{}", e.job.id),
            )
        }
        Action::TenantSuspend => {
            let slug = slug_of(target).map_err(invalid)?;
            fleet.suspend_tenant(&slug).await?;
            (
                format!("suspended tenant {slug}"),
                format!("/console/tenants/{slug}"),
            )
        }
        Action::TenantResume => {
            let slug = slug_of(target).map_err(invalid)?;
            let (_, migrate) = fleet.resume_tenant(&slug).await?;
            let more = migrate
                .map(|e| format!("; queued its migration (job {})", e.job.id))
                .unwrap_or_default();
            (
                format!("resumed tenant {slug}{more}"),
                format!("/console/tenants/{slug}"),
            )
        }
        Action::RolloutHalt => {
            let id = uuid_of(target, "rollout").map_err(invalid)?;
            fleet
                .halt_rollout(id, &format!("halted by {} from the console", operator.name))
                .await?;
            (format!("halted rollout {id}"), format!("/console/rollouts/{id}"))
        }
        Action::RolloutResume => {
            let id = uuid_of(target, "rollout").map_err(invalid)?;
            let (_, jobs) = fleet.resume_rollout(id).await?;
            (
                format!("resumed rollout {id}: {jobs} new jobs"),
                format!("/console/rollouts/{id}"),
            )
        }
        Action::DeadLetterReplay => {
            let id = uuid_of(target, "dead letter").map_err(invalid)?;
            let e = fleet.replay_dead_letter(id).await?;
            (
                format!("replayed dead letter {id} as job {}", e.job.id),
                format!("/console/jobs/{}", e.job.id),
            )
        }
        Action::DeadLetterDiscard => {
            let id = uuid_of(target, "dead letter").map_err(invalid)?;
            fleet.discard_dead_letter(id).await?;
            (
                format!("discarded dead letter {id}"),
                "/console/dead-letters".into(),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_parses_from_its_name() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.name()).unwrap(), a);
        }
        assert!(Action::parse("drop-everything").is_err());
    }

    #[test]
    fn origin_must_be_this_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
