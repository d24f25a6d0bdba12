//! One-shot commands: build the fleet service, call it, render the answer (`output`).
//! Enqueuing commands print the job(s), or with `--wait` follow them to their end and exit
//! 0 only if all succeeded.

use crate::cli::{
    BackupsCommand, Command, DeadLettersCommand, EnqueueArgs, GlobalArgs, JobsCommand, RolloutsCommand,
    SecretKeyCommand, ServerCommand, TenantCommand, WebhookCommand,
};
use crate::output;
use anyhow::Result;
use pgfleet_shared::catalog::JobRecord;
use pgfleet_shared::fleet::{
    cursor, BranchMade, Fleet, JobFilter, LimitChanges, RolloutOptions, ServerChanges, ServerSpec,
    TenantFilter, TenantSettings, MAX_PAGE,
};
use pgfleet_shared::neon::NeonSettings;
use pgfleet_shared::producer::Enqueued;
use pgfleet_shared::secrets::SecretKey;
use pgfleet_shared::services::Services;
use pgfleet_shared::status::{JobStatus, RolloutStatus, ServerStatus};
use secrecy::ExposeSecret;
use std::process::ExitCode;

pub async fn run(g: &GlobalArgs, command: &Command) -> Result<ExitCode> {
    match command {
        Command::SecretKey { action: None } => {
            println!("{}", SecretKey::generate().to_base64().expose_secret());
        }
        Command::SecretKey {
            action: Some(SecretKeyCommand::Rotate { batch, json }),
        } => {
            let services = Services::open(&g.config()?, g.keyring(false)?, 2).await?;
            output::print_rotation(&services.catalog.rotate_secrets((*batch).max(1)).await?, *json);
        }
        Command::Server(ServerCommand::Add {
            name,
            admin_url,
            url,
            capacity,
            neon,
            region,
            pg_version,
            org,
            neon_api_url,
            neon_api_key,
            json,
        }) => {
            let fleet = fleet_with_key(g).await?;
            let spec = if *neon {
                ServerSpec::Neon {
                    settings: NeonSettings {
                        api_url: neon_api_url.clone(),
                        region_id: region.clone().unwrap_or_default(),
                        pg_version: *pg_version,
                        org_id: org.clone(),
                    },
                    api_key: neon_api_key.clone().unwrap_or_default().into(),
                }
            } else {
                let Some(url) = admin_url.clone().or_else(|| url.clone()) else {
                    anyhow::bail!("give the server's admin URL: `pgfleet server add NAME URL` (or --url / PGFLEET_NEW_SERVER_URL), or --neon");
                };
                ServerSpec::Postgres { url: url.into() }
            };
            let (server, report) = fleet.add_server(name, region.as_deref(), *capacity, spec).await?;
            output::print_server(&server, *json);
            for finding in report.iter().flat_map(|r| &r.findings) {
                eprintln!("warning: {finding}");
            }
        }
        Command::Server(ServerCommand::List { json }) => {
            output::print_servers(&fleet_with_optional_key(g).await?.servers().await?, *json);
        }
        Command::Server(ServerCommand::Set {
            name,
            url,
            capacity,
            region,
            warm_pool,
            json,
        }) => {
            let fleet = fleet_with_key(g).await?;
            let changes = ServerChanges {
                url: url.clone().map(Into::into),
                capacity: *capacity,
                region: region.clone(),
                status: None,
                warm_pool: *warm_pool,
            };
            output::print_server(&fleet.set_server(name, changes).await?, *json);
        }
        Command::Server(ServerCommand::Drain { name, json })
        | Command::Server(ServerCommand::Undrain { name, json }) => {
            let status = if matches!(command, Command::Server(ServerCommand::Drain { .. })) {
                ServerStatus::Draining
            } else {
                ServerStatus::Active
            };
            let changes = ServerChanges {
                status: Some(status),
                ..ServerChanges::default()
            };
            output::print_server(&fleet(g).await?.set_server(name, changes).await?, *json);
        }
        Command::Server(ServerCommand::Remove { name }) => {
            fleet(g).await?.remove_server(name).await?;
            eprintln!("removed server {name}");
        }
        Command::Server(ServerCommand::Check { name, json }) => {
            let report = fleet(g).await?.check_server(name).await?;
            output::print_server_report(&report, *json);
            return Ok(exit(report.findings.is_empty()));
        }
        Command::DeadLetters(DeadLettersCommand::List { limit, json }) => {
            output::print_dead_letters(&fleet(g).await?.dead_letters(*limit).await?, *json)
        }
        Command::DeadLetters(DeadLettersCommand::Replay { id, json }) => {
            output::print_job(&fleet(g).await?.replay_dead_letter(*id).await?.job, *json)
        }
        Command::DeadLetters(DeadLettersCommand::Discard { id }) => {
            fleet(g).await?.discard_dead_letter(*id).await?;
            eprintln!("discarded dead letter {id}");
        }
        Command::Probe { url } => {
            if let Err(e) = pgfleet_shared::probe::probe(url).await {
                eprintln!("unhealthy: {e:#}");
                return Ok(exit(false));
            }
        }
        Command::Webhook(WebhookCommand::Add {
            url,
            events,
            format,
            json,
        }) => {
            let fleet = fleet_with_key(g).await?;
            let (webhook, secret) = fleet.add_webhook(&url.clone().into(), events, format).await?;
            output::print_webhook_added(&webhook, &secret, *json);
        }
        Command::Webhook(WebhookCommand::List { json }) => {
            output::print_webhooks(&fleet(g).await?.webhooks().await?, *json)
        }
        Command::Webhook(WebhookCommand::Remove { id }) => {
            fleet(g).await?.remove_webhook(*id).await?;
            eprintln!("removed webhook {id}");
        }
        Command::Webhook(WebhookCommand::Deliveries { limit, json }) => {
            output::print_deliveries(&fleet(g).await?.webhook_deliveries(*limit).await?, *json)
        }
        Command::Tenant(cmd) => return tenant(&fleet(g).await?, cmd).await,
        Command::Jobs(JobsCommand::List {
            status,
            tenant,
            limit,
            cursor,
            json,
        }) => {
            let filter = JobFilter {
                status: *status,
                tenant: tenant.clone(),
                after: cursor.as_deref().map(cursor::parse_job_cursor).transpose()?,
                limit: (*limit).clamp(1, MAX_PAGE),
            };
            let jobs = fleet(g).await?.jobs(&filter).await?;
            output::print_jobs(&jobs, *json);
            if let Some(next) = cursor::next_job_page(&jobs, filter.limit) {
                eprintln!("next page: --cursor {next}");
            }
        }
        Command::Jobs(JobsCommand::Retry { id, wait, json }) => {
            let fleet = fleet(g).await?;
            let (job, created) = fleet.retry_job(*id).await?;
            if !created {
                eprintln!("job {id} was retried already: job {}", job.id);
            }
            let mut job = job;
            if *wait {
                job = fleet
                    .wait_for_jobs(&[job.id], output::print_job_progress)
                    .await?
                    .remove(0);
            }
            output::print_job(&job, *json);
            return Ok(exit(!*wait || job.status == JobStatus::Succeeded));
        }
        Command::Jobs(JobsCommand::Cancel { id, json }) => {
            output::print_job(&fleet(g).await?.cancel_job(*id).await?, *json)
        }
        Command::Jobs(JobsCommand::Show { id, json }) => {
            output::print_job(&fleet(g).await?.job(*id).await?, *json)
        }
        Command::Backup { slug, all, enqueue } => {
            let fleet = fleet(g).await?;
            let enqueued = match slug {
                Some(slug) if !all => vec![fleet.start_backup(slug, enqueue.key.clone()).await?],
                _ => fleet.backup_all().await?,
            };
            return follow(&fleet, enqueued, enqueue).await;
        }
        Command::Prune { slug, all, enqueue } => {
            let fleet = fleet(g).await?;
            let enqueued = match slug {
                Some(slug) if !all => vec![fleet.prune(slug, enqueue.key.clone()).await?],
                _ => fleet.prune_all().await?,
            };
            return follow(&fleet, enqueued, enqueue).await;
        }
        Command::Restore {
            slug,
            backup,
            into,
            enqueue,
        } => {
            let fleet = fleet(g).await?;
            let enqueued = fleet
                .restore(slug, *backup, into.clone(), enqueue.key.clone())
                .await?;
            return follow(&fleet, vec![enqueued], enqueue).await;
        }
        Command::Backups(BackupsCommand::List { slug, json }) => {
            output::print_backups(&fleet(g).await?.backups(slug).await?, *json)
        }
        Command::Migrate {
            all: _,
            tenant,
            wait,
            concurrency,
            canary,
            max_failures,
            dry_run,
            lock_timeout,
            statement_timeout,
            json,
        } => {
            let limit = |d: &std::time::Duration| (!d.is_zero()).then_some(*d);
            let options = RolloutOptions {
                only: tenant.clone(),
                concurrency: *concurrency,
                canary: *canary,
                max_failures: *max_failures,
                dry_run: *dry_run,
                lock_timeout: limit(lock_timeout),
                statement_timeout: limit(statement_timeout),
            };
            return migrate(&fleet(g).await?, &options, *wait, *json).await;
        }
        Command::Rollouts(RolloutsCommand::List { json }) => {
            output::print_rollouts(&fleet(g).await?.rollouts(100).await?, *json)
        }
        Command::Rollouts(RolloutsCommand::Halt { id, reason, json }) => {
            let rollout = fleet(g).await?.halt_rollout(*id, reason).await?;
            output::print_rollout(&rollout, &[], *json);
        }
        Command::Rollouts(RolloutsCommand::Resume { id, json }) => {
            let (rollout, jobs) = fleet(g).await?.resume_rollout(*id).await?;
            if *json {
                let mut body = pgfleet_shared::views::rollout(&rollout);
                body["new_jobs"] = serde_json::json!(jobs);
                output::print_json(&body);
            } else {
                println!("resumed: {jobs} new jobs");
                output::print_rollout(&rollout, &[], false);
            }
        }
        Command::Rollouts(RolloutsCommand::Show { id, json }) => {
            let (rollout, tenants) = fleet(g).await?.rollout(*id).await?;
            output::print_rollout(&rollout, &tenants, *json);
        }
        Command::Up { .. } | Command::Worker(_) | Command::Serve(_) | Command::Scheduler(_) => {
            unreachable!("long-running processes are started by main")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The fleet service, with the install's key if one is configured (only `tenant url`
/// reads a credential).
async fn fleet(g: &GlobalArgs) -> Result<Fleet> {
    let config = g.config()?;
    let services = Services::open_with(&config, g.optional_keyring()?, 4).await?;
    Ok(services.fleet(&config, g.max_attempts()))
}

/// `fleet`, named for commands that read servers (the key, if configured, opens admin URLs).
async fn fleet_with_optional_key(g: &GlobalArgs) -> Result<Fleet> {
    fleet(g).await
}

/// The fleet service with the install's key (commands that write a credential).
async fn fleet_with_key(g: &GlobalArgs) -> Result<Fleet> {
    let config = g.config()?;
    let services = Services::open(&config, g.keyring(false)?, 4).await?;
    Ok(services.fleet(&config, g.max_attempts()))
}

async fn tenant(fleet: &Fleet, cmd: &TenantCommand) -> Result<ExitCode> {
    match cmd {
        TenantCommand::Create {
            slug,
            region,
            key,
            wait,
            json,
        } => {
            let enqueued = fleet
                .create_tenant(slug.clone(), region.clone(), key.clone())
                .await?;
            let args = EnqueueArgs {
                wait: *wait,
                key: key.clone(),
                json: *json,
            };
            return follow(fleet, vec![enqueued], &args).await;
        }
        TenantCommand::Delete { slug, enqueue } => {
            let enqueued = fleet.delete_tenant(slug, enqueue.key.clone()).await?;
            return follow(fleet, vec![enqueued], enqueue).await;
        }
        TenantCommand::Set {
            slug,
            connection_limit,
            statement_timeout,
            idle_in_transaction_timeout,
            work_mem,
            storage_quota,
            backup_schedule,
            retention_days,
            keep_min,
            json,
        } => {
            let settings = TenantSettings {
                backup_schedule: backup_schedule.clone(),
                retention_days: *retention_days,
                keep_min: *keep_min,
            };
            let limits = LimitChanges {
                connection_limit: *connection_limit,
                statement_timeout_ms: *statement_timeout,
                idle_in_transaction_timeout_ms: *idle_in_transaction_timeout,
                work_mem_kb: *work_mem,
                storage_quota_bytes: *storage_quota,
            };
            let mut tenant = fleet.set_tenant(slug, &settings).await?;
            if !limits.is_empty() {
                tenant = fleet.set_tenant_limits(slug, &limits).await?;
            }
            output::print_tenant(&tenant, *json);
        }
        TenantCommand::Move { slug, to, enqueue } => {
            let enqueued = fleet.move_tenant(slug, to, enqueue.key.clone()).await?;
            let job = enqueued.job.id;
            let code = follow(fleet, vec![enqueued], enqueue).await?;
            if enqueue.wait {
                let done = fleet.job(job).await?;
                if let Some(outcome) = done
                    .outcome
                    .as_ref()
                    .filter(|_| done.status == JobStatus::Succeeded)
                {
                    let details = &outcome["details"];
                    eprintln!(
                        "moved {slug} from {} to {}: downtime {} ms, total {} ms",
                        details["from"].as_str().unwrap_or("?"),
                        details["to"].as_str().unwrap_or("?"),
                        details["downtime_ms"],
                        outcome["duration_ms"]
                    );
                }
            }
            return Ok(code);
        }
        TenantCommand::Suspend { slug, json } => {
            output::print_tenant(&fleet.suspend_tenant(slug).await?, *json);
        }
        TenantCommand::Resume { slug, json } => {
            let (tenant, catch_up) = fleet.resume_tenant(slug).await?;
            if let Some(job) = catch_up {
                eprintln!(
                    "schema behind the latest rollout: provision job {} brings it up to date",
                    job.job.id
                );
            }
            output::print_tenant(&tenant, *json);
        }
        TenantCommand::List {
            limit: None,
            cursor: None,
            json,
        } => output::print_tenants(&fleet.all_tenants(None).await?, *json),
        TenantCommand::List { limit, cursor, json } => {
            let filter = TenantFilter {
                status: None,
                after: cursor.as_deref().map(cursor::parse_tenant_cursor).transpose()?,
                limit: limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE),
            };
            let tenants = fleet.tenants(&filter).await?;
            output::print_tenants(&tenants, *json);
            if let Some(next) = cursor::next_tenant_page(&tenants, filter.limit) {
                eprintln!("next page: --cursor {next}");
            }
        }
        TenantCommand::Show { slug, json } => output::print_tenant(&fleet.tenant(slug).await?, *json),
        TenantCommand::Url { slug, direct, branch } => {
            let url = match branch {
                Some(name) => fleet.branch_url(slug, name).await?,
                None => fleet.tenant_url(slug, *direct).await?,
            };
            println!("{}", url.expose_secret())
        }
        TenantCommand::Branch {
            slug,
            name,
            schema_only,
            from_backup,
            backups,
            json,
        } => match fleet
            .branch_tenant(slug, name, *schema_only, *from_backup, *backups, None)
            .await?
        {
            BranchMade::Ready(branch, url) => output::print_branch_made(&branch, &url, *json),
            BranchMade::Enqueued(enqueued) => {
                eprintln!("making branch {name} of {slug} (job {})…", enqueued.job.id);
                let jobs = fleet.wait_for_jobs(&[enqueued.job.id], |_| {}).await?;
                if jobs[0].status != JobStatus::Succeeded {
                    output::print_job(&jobs[0], *json);
                    return Ok(exit(false));
                }
                let tenant = fleet.tenant(slug).await?;
                let branch = fleet
                    .catalog
                    .branch(tenant.id, name)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("branch {name} vanished"))?;
                output::print_branch_made(&branch, &fleet.branch_url(slug, name).await?, *json);
            }
        },
        TenantCommand::Branches { slug, json } => output::print_branches(&fleet.branches(slug).await?, *json),
        TenantCommand::BranchSet {
            slug,
            name,
            backups,
            json,
        } => output::print_branches(&[fleet.set_branch_backups(slug, name, *backups).await?], *json),
        TenantCommand::BranchDelete { slug, name } => {
            fleet.delete_branch(slug, name).await?;
            eprintln!("deleted branch {name} of tenant {slug}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the enqueued job(s) — after following them to their end with `--wait`.
async fn follow(fleet: &Fleet, enqueued: Vec<Enqueued>, args: &EnqueueArgs) -> Result<ExitCode> {
    if enqueued.is_empty() {
        eprintln!("no active tenants");
        return Ok(ExitCode::SUCCESS);
    }
    let unpublished = enqueued
        .iter()
        .filter(|e| !e.published && e.job.status == JobStatus::Queued)
        .count();
    if unpublished > 0 {
        eprintln!(
            "warning: the broker is unreachable; {unpublished} job(s) are recorded and a worker will pick them up when it can"
        );
    }
    let mut jobs: Vec<JobRecord> = enqueued.into_iter().map(|e| e.job).collect();
    if args.wait {
        let ids: Vec<uuid::Uuid> = jobs.iter().map(|j| j.id).collect();
        eprintln!("waiting for {} {} job(s)…", ids.len(), jobs[0].kind);
        jobs = fleet.wait_for_jobs(&ids, output::print_job_progress).await?;
    }
    if jobs.len() == 1 {
        output::print_job(&jobs[0], args.json);
    } else {
        output::print_jobs(&jobs, args.json);
    }
    Ok(exit(
        !args.wait || jobs.iter().all(|j| j.status == JobStatus::Succeeded),
    ))
}

async fn migrate(fleet: &Fleet, options: &RolloutOptions, wait: bool, json: bool) -> Result<ExitCode> {
    let started = fleet.start_rollout(options).await?;
    let Some((id, _)) = started.rollout else {
        output::print_plan(&started.plan, started.target_version, &started.source, json);
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!(
        "rollout {id}: {} tenant(s) to version {} from {}",
        started.plan.targets.len(),
        started.target_version,
        started.source
    );
    if !wait {
        let (rollout, _) = fleet.rollout(id).await?;
        output::print_rollout(&rollout, &[], json);
        return Ok(ExitCode::SUCCESS);
    }
    fleet.watch_rollout(id, output::print_rollout_progress).await?;
    let (rollout, tenants) = fleet.rollout(id).await?;
    output::print_rollout(&rollout, &tenants, json);
    Ok(exit(
        rollout.status == RolloutStatus::Done && rollout.failed == 0 && rollout.skipped == 0,
    ))
}

fn exit(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
