//! Human and `--json` output of catalog records. JSON field names are a public contract
//! (DESIGN.md "CLI"); nothing here prints a secret.

use pgfleet_shared::catalog::{BackupRecord, JobRecord, RolloutRecord, RolloutTenant, TenantRecord};
use pgfleet_shared::fleet::Plan;
use pgfleet_shared::status::JobStatus;
use pgfleet_shared::views::{self, time};
use serde_json::Value;

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub fn print_tenants(tenants: &[TenantRecord], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(tenants.iter().map(views::tenant).collect()));
    }
    println!(
        "{:<30} {:<13} {:<8} {:<10} {:<40}",
        "SLUG", "STATUS", "VERSION", "SERVER", "DATABASE"
    );
    for t in tenants {
        let version = t
            .schema_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<30} {:<13} {:<8} {:<10} {:<40}",
            t.slug, t.status, version, t.server, t.database_name
        );
    }
}

pub fn print_tenant(t: &TenantRecord, as_json: bool) {
    if as_json {
        return print_json(&views::tenant(t));
    }
    let v = views::tenant(t);
    for (k, val) in v.as_object().into_iter().flatten() {
        println!("{k:<17} {}", plain(val));
    }
}

pub fn print_jobs(jobs: &[JobRecord], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(jobs.iter().map(views::job).collect()));
    }
    println!(
        "{:<36} {:<10} {:<24} {:<10} {:>3}  {:<24} ERROR",
        "ID", "KIND", "TENANT", "STATUS", "TRY", "CREATED"
    );
    for j in jobs {
        println!(
            "{:<36} {:<10} {:<24} {:<10} {:>3}  {:<24} {}",
            j.id,
            j.kind,
            j.tenant,
            j.status,
            j.attempts,
            time(&j.created_at),
            j.error.as_deref().unwrap_or("")
        );
    }
}

/// `--wait`'s progress line over the jobs followed.
pub fn print_job_progress(jobs: &[JobRecord]) {
    let done = jobs.iter().filter(|j| j.status == JobStatus::Succeeded).count();
    let failed = jobs.iter().filter(|j| j.is_finished()).count() - done;
    eprintln!(
        "  done {done} / failed {failed} / remaining {}",
        jobs.len() - done - failed
    );
}

/// `migrate --wait`'s progress line.
pub fn print_rollout_progress(r: &RolloutRecord) {
    eprintln!(
        "  done {} / failed {} / skipped {} / remaining {}",
        r.succeeded, r.failed, r.skipped, r.remaining
    );
}

pub fn print_job(j: &JobRecord, as_json: bool) {
    if as_json {
        return print_json(&views::job(j));
    }
    let v = views::job(j);
    for (k, val) in v.as_object().into_iter().flatten() {
        println!("{k:<13} {}", plain(val));
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn print_backups(backups: &[BackupRecord], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(backups.iter().map(views::backup).collect()));
    }
    println!(
        "{:<36} {:<10} {:>12} {:<24} KEY",
        "ID", "STATUS", "BYTES", "CREATED"
    );
    for b in backups {
        let bytes = b.bytes.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<36} {:<10} {:>12} {:<24} {}",
            b.id,
            b.status,
            bytes,
            time(&b.created_at),
            b.key
        );
    }
}

pub fn print_rollouts(rollouts: &[RolloutRecord], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(rollouts.iter().map(views::rollout).collect()));
    }
    println!(
        "{:<36} {:<8} {:>7} {:>7} {:>6} {:>7} {:>9}  CREATED",
        "ID", "STATUS", "VERSION", "TENANTS", "DONE", "FAILED", "REMAINING"
    );
    for r in rollouts {
        println!(
            "{:<36} {:<8} {:>7} {:>7} {:>6} {:>7} {:>9}  {}",
            r.id,
            r.status,
            r.target_version,
            r.tenants,
            r.succeeded,
            r.failed,
            r.remaining,
            time(&r.created_at)
        );
    }
}

pub fn print_rollout(r: &RolloutRecord, tenants: &[RolloutTenant], as_json: bool) {
    if as_json {
        return print_json(&views::rollout_with_tenants(r, tenants));
    }
    for (k, val) in views::rollout(r).as_object().into_iter().flatten() {
        println!("{k:<15} {}", plain(val));
    }
    if !tenants.is_empty() {
        println!();
        println!(
            "{:<30} {:<7} {:<10} {:>7}  ERROR",
            "TENANT", "PHASE", "STATUS", "VERSION"
        );
        for t in tenants {
            println!(
                "{:<30} {:<7} {:<10} {:>7}  {}",
                t.tenant,
                t.phase,
                t.job_status.map_or("pending", |s| s.as_str()),
                t.schema_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                t.error.as_deref().unwrap_or("")
            );
        }
    }
}

pub fn print_plan(plan: &Plan, target: i64, source: &str, as_json: bool) {
    if as_json {
        return print_json(&views::plan(plan, target, source));
    }
    println!(
        "target version {target} (from {source}): {} tenant(s) to migrate, {} already there",
        plan.targets.len(),
        plan.up_to_date
    );
    for (t, pending) in &plan.targets {
        println!(
            "  {:<30} at {:<6} pending {:?}",
            t.slug,
            t.schema_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            pending
        );
    }
}

pub fn print_rotation(report: &pgfleet_shared::catalog::RotationReport, as_json: bool) {
    let retired: Vec<String> = report.retired.iter().map(|id| id.to_string()).collect();
    let current = report.current.map(|id| id.to_string()).unwrap_or_default();
    if as_json {
        let resealed: serde_json::Map<String, Value> = report
            .resealed
            .iter()
            .map(|(what, n)| (what.to_string(), Value::from(*n)))
            .collect();
        return print_json(&serde_json::json!({
            "current_key": current, "resealed": resealed, "retired_keys": retired,
        }));
    }
    println!("every stored credential is sealed with key {current}");
    for (what, n) in &report.resealed {
        println!("  {what:<18} {n} re-sealed");
    }
    if retired.is_empty() {
        println!("no previous key was given; nothing retired");
    } else {
        println!(
            "retired: {} (processes can no longer start with it; remove PGFLEET_SECRET_KEY_PREVIOUS)",
            retired.join(", ")
        );
    }
}

pub fn print_server(s: &pgfleet_shared::catalog::ServerRecord, as_json: bool) {
    let v = views::server(s);
    if as_json {
        return print_json(&v);
    }
    for (k, val) in v.as_object().into_iter().flatten() {
        println!("{k:<8} {}", plain(val));
    }
}

pub fn print_server_report(r: &pgfleet_shared::fleet::ServerReport, as_json: bool) {
    if as_json {
        return print_json(&serde_json::to_value(r).unwrap_or_default());
    }
    println!("server            {}", r.server);
    println!("version           {}", r.version);
    println!(
        "admin role        {} ({})",
        r.admin_role,
        if r.admin_can_provision {
            "can provision"
        } else {
            "CANNOT create roles and databases"
        }
    );
    println!(
        "connections       tenants' limits {} ({} tenants) of max_connections {} ({} reserved)",
        r.tenant_connection_limits, r.tenants, r.max_connections, r.reserved_connections
    );
    if r.reachable_by_every_tenant.is_empty() {
        println!("reachable         no database is open to every tenant role");
    } else {
        println!("reachable by every tenant role:");
        for d in &r.reachable_by_every_tenant {
            println!("  {:<24} {:<12} fix: {}", d.name, d.kind, d.fix);
        }
    }
    for finding in &r.findings {
        println!("! {finding}");
    }
}

pub fn print_servers(servers: &[pgfleet_shared::fleet::ServerState], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(servers.iter().map(views::server_state).collect()));
    }
    println!(
        "{:<20} {:<9} {:<14} {:<9} {:>8} {:>9} {:>9} {:<12} WHERE",
        "NAME", "KIND", "REGION", "STATUS", "TENANTS", "CAPACITY", "WARM", "VERSION"
    );
    for state in servers {
        let s = &state.record;
        println!(
            "{:<20} {:<9} {:<14} {:<9} {:>8} {:>9} {:>9} {:<12} {}",
            s.name,
            s.kind,
            s.region.as_deref().unwrap_or("-"),
            s.status,
            s.tenants,
            s.capacity.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            s.warm_target
                .map_or_else(|| "-".to_owned(), |size| format!("{}/{size}", s.warm_ready)),
            state.version.as_deref().unwrap_or("unreachable"),
            s.display_url
        );
    }
}

/// A branch just made, with its URL: the one place a branch's password is printed.
pub fn print_branch_made(
    b: &pgfleet_shared::catalog::BranchRecord,
    url: &secrecy::SecretString,
    as_json: bool,
) {
    use secrecy::ExposeSecret;
    if as_json {
        let mut v = views::branch(b);
        v["url"] = Value::String(url.expose_secret().to_owned());
        return print_json(&v);
    }
    println!("{}", url.expose_secret());
}

pub fn print_branches(branches: &[pgfleet_shared::catalog::BranchRecord], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(branches.iter().map(views::branch).collect()));
    }
    println!(
        "{:<24} {:<8} {:<12} {:<6} {:<24} NEON BRANCH",
        "NAME", "PURPOSE", "SCHEMA ONLY", "READY", "CREATED"
    );
    for b in branches {
        println!(
            "{:<24} {:<8} {:<12} {:<6} {:<24} {}",
            b.name,
            b.purpose,
            if b.schema_only { "yes" } else { "no" },
            if b.ready { "yes" } else { "no" },
            time(&b.created_at),
            b.neon_branch_id.as_deref().unwrap_or("-")
        );
    }
}

/// A webhook just added, with its signing secret: the one time it is printed.
pub fn print_webhook_added(
    w: &pgfleet_shared::catalog::WebhookRecord,
    secret: &secrecy::SecretString,
    as_json: bool,
) {
    use secrecy::ExposeSecret;
    let mut v = views::webhook(w);
    v["secret"] = Value::String(secret.expose_secret().to_owned());
    if as_json {
        return print_json(&v);
    }
    println!(
        "webhook {} → {} ({}; {})",
        w.id,
        w.display_url,
        w.events.join(", "),
        w.format
    );
    println!("signing secret (shown once): {}", secret.expose_secret());
}

pub fn print_webhooks(webhooks: &[pgfleet_shared::catalog::WebhookRecord], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(webhooks.iter().map(views::webhook).collect()));
    }
    println!("{:<36} {:<6} {:<40} EVENTS", "ID", "FORMAT", "URL");
    for w in webhooks {
        println!(
            "{:<36} {:<6} {:<40} {}",
            w.id,
            w.format,
            w.display_url,
            w.events.join(",")
        );
    }
}

pub fn print_deliveries(deliveries: &[pgfleet_shared::catalog::DeliveryRecord], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(deliveries.iter().map(views::delivery).collect()));
    }
    println!(
        "{:<36} {:<15} {:<10} {:>4}  {:<24} LAST",
        "ID", "EVENT", "STATUS", "TRY", "CREATED"
    );
    for d in deliveries {
        let last = match (d.last_status, &d.last_error) {
            (_, Some(e)) => e.clone(),
            (Some(s), None) => s.to_string(),
            _ => String::new(),
        };
        println!(
            "{:<36} {:<15} {:<10} {:>4}  {:<24} {}",
            d.id,
            d.event,
            d.status,
            d.attempts,
            time(&d.created_at),
            last
        );
    }
}

pub fn print_dead_letters(letters: &[pgfleet_shared::catalog::DeadLetterRecord], as_json: bool) {
    if as_json {
        return print_json(&Value::Array(letters.iter().map(views::dead_letter).collect()));
    }
    println!("{:<36} {:<24} {:<12} REASON", "ID", "RECEIVED", "ROUTING KEY");
    for d in letters {
        // The reason quotes the untrusted body: control characters are shown escaped.
        let reason: String = d.reason.chars().flat_map(char::escape_debug).take(200).collect();
        println!(
            "{:<36} {:<24} {:<12} {}",
            d.id,
            time(&d.received_at),
            d.routing_key.as_deref().unwrap_or("-").escape_debug(),
            reason
        );
    }
}
