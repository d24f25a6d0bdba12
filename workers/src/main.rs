//! The `pgfleet` binary: parses flags, builds the services from `pgfleet_shared`, and runs
//! one command. Logic lives in the library.

mod cli;
mod output;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::{
    BackupsCommand, Cli, Command, EnqueueArgs, GlobalArgs, JobsCommand, LogFormat, RolloutsCommand,
    SchedulerArgs, SecretKeyCommand, ServeArgs, ServerCommand, TenantCommand, WorkerArgs,
};
use pgfleet_shared::api::{ApiState, ApiToken};
use pgfleet_shared::jobs::FaultPoints;
use pgfleet_shared::message::{NoFields, ProvisionSpec, RestoreSpec};
use pgfleet_shared::migration_set::MigrationSet;
use pgfleet_shared::producer::wait_for_jobs;
use pgfleet_shared::rollouts::StartOptions;
use pgfleet_shared::scheduler::{Scheduler, SchedulerSettings, SystemClock};
use pgfleet_shared::secrets::{KeySource, Keyring, SecretKey};
use pgfleet_shared::services::Services;
use pgfleet_shared::status::{JobStatus, RolloutStatus, TenantStatus};
use pgfleet_shared::worker::Worker;
use pgfleet_shared::{Config, JobRequest, JobSpec, Namespace, TenantSlug, WorkerSettings};
use secrecy::ExposeSecret;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

fn main() -> ExitCode {
    bound_heap_growth();
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Backups pass ~8 MiB part buffers between threads. glibc's malloc would otherwise raise its
/// mmap threshold after the first such buffer is freed and keep later ones in per-thread
/// arenas, so RSS creeps up with the dump size; a fixed threshold hands them back to the OS.
fn bound_heap_growth() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let long_running = matches!(
        cli.command,
        Command::Up { .. } | Command::Worker(_) | Command::Serve(_) | Command::Scheduler(_)
    );
    let default = if long_running {
        "info,sqlx=warn,lapin=warn"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_env("PGFLEET_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a terminal: log files and journald get plain text.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.global.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match &cli.command {
        Command::SecretKey { action: None } => {
            println!("{}", SecretKey::generate().to_base64().expose_secret());
            Ok(ExitCode::SUCCESS)
        }
        Command::SecretKey {
            action: Some(SecretKeyCommand::Rotate { batch, json }),
        } => rotate_secret_key(g, *batch, *json).await,
        Command::Up {
            worker,
            api,
            scheduler,
        } => run_up(g, worker, api, scheduler).await,
        Command::Worker(args) => run_worker(g, args).await,
        Command::Serve(args) => run_serve(g, args).await,
        Command::Scheduler(args) => run_scheduler(g, args).await,
        Command::Tenant(cmd) => tenant_command(g, cmd).await,
        Command::Jobs(cmd) => jobs_command(g, cmd).await,
        Command::Server(ServerCommand::Check { name, json }) => {
            let services = Services::open(&config(g)?, secret_key(g, false)?, 2).await?;
            let server = services.catalog.server_by_name(name).await?;
            let report =
                pgfleet_shared::server_check::check(&services.catalog, &services.servers, &server).await?;
            output::print_server_report(&report, *json);
            Ok(if report.findings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Backup { slug, all, enqueue } => {
            for_tenants(g, slug.as_deref(), *all, enqueue, |_| {
                JobSpec::Backup(NoFields {})
            })
            .await
        }
        Command::Prune { slug, all, enqueue } => {
            for_tenants(g, slug.as_deref(), *all, enqueue, |_| JobSpec::Prune(NoFields {})).await
        }
        Command::Restore {
            slug,
            backup,
            into,
            enqueue,
        } => {
            pgfleet_shared::message::validate_database_name(into)?;
            let namespace = Namespace::parse(&g.namespace)?;
            if namespace.owns_name(into) {
                bail!("database name {into} is reserved: names starting with {namespace}_ are pgfleet's own tenant databases; choose another --into");
            }
            let spec = JobSpec::Restore(RestoreSpec {
                backup: *backup,
                into: into.clone(),
            });
            for_tenants(g, Some(slug), false, enqueue, move |_| spec.clone()).await
        }
        Command::Migrate {
            all: _,
            tenant,
            wait,
            concurrency,
            canary,
            max_failures,
            dry_run,
            json,
        } => {
            let options = MigrateOptions {
                tenant: tenant.as_deref(),
                wait: *wait,
                concurrency: *concurrency,
                canary: *canary,
                max_failures: *max_failures,
                dry_run: *dry_run,
                json: *json,
            };
            migrate(g, options).await
        }
        Command::Rollouts(cmd) => rollouts_command(g, cmd).await,
        Command::Backups(BackupsCommand::List { slug, json }) => {
            let slug = parse_slug(slug)?;
            let services = Services::open_with(&config(g)?, optional_secret_key(g)?, 2).await?;
            let tenant = services.catalog.tenant(&slug).await?.with_context(|| {
                format!("no tenant {slug}; `pgfleet tenant list` shows the existing ones")
            })?;
            output::print_backups(&services.catalog.backups(tenant.id).await?, *json);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn config(g: &GlobalArgs) -> Result<Config> {
    Ok(Config {
        catalog_url: g.catalog_url.clone().into(),
        amqp_url: g.amqp_url.clone().into(),
        server_url: g.server_url.clone().into(),
        namespace: Namespace::parse(&g.namespace)?,
        tenant_migrations: g.tenant_migrations.clone(),
        tenant_connection_limit: g.tenant_connection_limit,
        backup_url: g.backup_url.clone(),
        backup_gzip_level: g.backup_gzip_level,
    })
}

fn key_source(g: &GlobalArgs) -> KeySource<'_> {
    KeySource {
        key: g.secret_key.as_deref(),
        previous: g.secret_key_previous.as_deref(),
        file: g
            .secret_key_file
            .clone()
            .unwrap_or_else(|| g.data_dir.join("secret.key")),
    }
}

/// The keyring from the flags/env or the key file; `create` (for `up`) makes a key file.
fn secret_key(g: &GlobalArgs, create: bool) -> Result<Keyring> {
    let source = key_source(g);
    let (keyring, created) = source.load(create)?;
    if created {
        warn!(path = %source.file.display(), "generated a new secret key; keep this file (or set PGFLEET_SECRET_KEY from it): without it the tenants' stored credentials cannot be read");
    }
    Ok(keyring)
}

/// The keyring if one is configured, for commands that work without it and only need it
/// to read a credential (`tenant url`).
fn optional_secret_key(g: &GlobalArgs) -> Result<Option<Keyring>> {
    key_source(g).load_optional()
}

fn worker_settings(g: &GlobalArgs, args: &WorkerArgs) -> WorkerSettings {
    WorkerSettings {
        concurrency: args.concurrency.max(1),
        lease: Duration::from_secs(args.lease_secs.max(3)),
        max_attempts: g.max_attempts.max(1),
        backoff_base: Duration::from_millis(args.backoff_ms),
        sweep_interval: Duration::from_millis(args.sweep_interval_ms.max(100)),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        ..WorkerSettings::default()
    }
}

/// Opens the catalog and registers the default server; the worker's job context.
async fn worker_parts(
    g: &GlobalArgs,
    config: &Config,
    settings: &WorkerSettings,
    create_key: bool,
    extra_connections: u32,
) -> Result<(Services, Arc<Worker>)> {
    let key = secret_key(g, create_key)?;
    let pool_size = (settings.concurrency as u32 + 4 + extra_connections).min(60);
    let services = Services::open(config, key, pool_size).await?;
    services
        .catalog
        .register_default_server(&config.server_url)
        .await?;
    let (migrations, source) = MigrationSet::load(config.tenant_migrations.as_deref())?;
    info!(source, target_version = ?migrations.target_version(), "tenant migrations loaded");
    let mut ctx = services
        .job_context(config, migrations, FaultPoints::default())
        .await?;
    ctx.max_attempts = settings.max_attempts;
    info!(store = %ctx.store.describe(), "backup store");
    let worker = Worker::new(ctx, settings.clone(), config.amqp_url.clone());
    Ok((services, worker))
}

async fn run_worker(g: &GlobalArgs, args: &WorkerArgs) -> Result<ExitCode> {
    let config = config(g)?;
    let settings = worker_settings(g, args);
    let (_services, worker) = worker_parts(g, &config, &settings, false, 0).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    worker.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// The API token: the flag/env, or (`up` only) a token file in the data dir, created with a
/// random token on first start. `None` only with `--insecure-dev`.
fn api_token(g: &GlobalArgs, args: &ServeArgs, create: bool) -> Result<Option<ApiToken>> {
    if args.insecure_dev {
        return Ok(None);
    }
    if let Some(token) = &args.api_token {
        return Ok(Some(ApiToken::new(&token.clone().into())?));
    }
    if create {
        let path = g.data_dir.join("api.token");
        let (token, created) = pgfleet_shared::secrets::load_or_create_token_file(&path)?;
        if created {
            warn!(path = %path.display(), "generated an API token; clients send `Authorization: Bearer <the file's content>` (or set PGFLEET_API_TOKEN)");
        } else {
            info!(path = %path.display(), "API token read from file");
        }
        return Ok(Some(
            ApiToken::new(&token).with_context(|| path.display().to_string())?,
        ));
    }
    bail!(
        "no API token: set PGFLEET_API_TOKEN (at least 16 characters, e.g. `openssl rand -hex 32`), \
         or pass --insecure-dev for a local API without authentication"
    )
}

fn api_state(
    g: &GlobalArgs,
    args: &ServeArgs,
    config: &Config,
    services: &Services,
    token: Option<ApiToken>,
) -> Result<Arc<ApiState>> {
    let max_attempts = g.max_attempts.max(1);
    let metrics_token = args
        .metrics_token
        .as_ref()
        .map(|t| ApiToken::new(&t.clone().into()).context("PGFLEET_METRICS_TOKEN"))
        .transpose()?;
    Ok(Arc::new(ApiState {
        catalog: services.catalog.clone(),
        producer: services.producer(config, max_attempts),
        token,
        metrics_token,
        tenant_migrations: config.tenant_migrations.clone(),
        max_attempts,
    }))
}

async fn listen(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}; choose another address with --listen / PGFLEET_LISTEN")
    })
}

async fn run_serve(g: &GlobalArgs, args: &ServeArgs) -> Result<ExitCode> {
    let config = config(g)?;
    let token = api_token(g, args, false)?;
    let listener = listen(args.listen).await?;
    let services = Services::open_with(&config, optional_secret_key(g)?, 10).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    pgfleet_shared::api::serve(listener, api_state(g, args, &config, &services, token)?, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

fn scheduler(g: &GlobalArgs, config: &Config, services: &Services, args: &SchedulerArgs) -> Scheduler {
    let max_attempts = g.max_attempts.max(1);
    let publisher = services.producer(config, max_attempts).publisher().clone();
    Scheduler::new(
        services.catalog.clone(),
        publisher,
        Arc::new(SystemClock),
        SchedulerSettings {
            interval: args.schedule_interval.max(Duration::from_secs(1)),
            spread: args.spread,
            max_attempts,
        },
    )
}

async fn run_scheduler(g: &GlobalArgs, args: &SchedulerArgs) -> Result<ExitCode> {
    let config = config(g)?;
    let services = Services::open_with(&config, optional_secret_key(g)?, 4).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    scheduler(g, &config, &services, args).run(shutdown).await;
    Ok(ExitCode::SUCCESS)
}

/// Worker, scheduler and API in one process; if one part fails, the others are stopped.
async fn run_up(
    g: &GlobalArgs,
    worker_args: &WorkerArgs,
    api_args: &ServeArgs,
    scheduler_args: &SchedulerArgs,
) -> Result<ExitCode> {
    let config = config(g)?;
    let settings = worker_settings(g, worker_args);
    let (services, worker) = worker_parts(g, &config, &settings, true, 8).await?;
    let token = api_token(g, api_args, true)?;
    let listener = listen(api_args.listen).await?;
    let api = api_state(g, api_args, &config, &services, token)?;
    let scheduler = scheduler(g, &config, &services, scheduler_args);

    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    info!(namespace = %config.namespace, api = %listener.local_addr()?, "pgfleet is up; create a tenant with `pgfleet tenant create <slug> --wait` or POST /v1/tenants; Ctrl-C stops");
    let stop_all = |result: Result<()>, what: &str| {
        if let Err(e) = &result {
            tracing::error!(error = %format!("{e:#}"), "{what} failed; stopping pgfleet");
        }
        shutdown.cancel();
        result
    };
    let (worker_result, api_result, ()) = tokio::join!(
        async { stop_all(worker.run(shutdown.clone()).await, "the worker") },
        async {
            stop_all(
                pgfleet_shared::api::serve(listener, api, shutdown.clone()).await,
                "the HTTP API",
            )
        },
        scheduler.run(shutdown.clone()),
    );
    worker_result?;
    api_result?;
    Ok(ExitCode::SUCCESS)
}

/// First SIGINT/SIGTERM: graceful shutdown. Second: exit at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        warn!("cannot listen for signals");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    info!("shutdown requested; stopping (send the signal again to exit at once)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    std::process::exit(130);
}

fn parse_slug(raw: &str) -> Result<TenantSlug> {
    Ok(TenantSlug::parse(raw)?)
}

async fn tenant_command(g: &GlobalArgs, cmd: &TenantCommand) -> Result<ExitCode> {
    let config = config(g)?;
    // Validate input before touching any service.
    if let TenantCommand::Create { slug, region, .. } = cmd {
        parse_slug(slug)?;
        if let Some(region) = region {
            pgfleet_shared::message::validate_region(region)?;
        }
    }
    let services = Services::open_with(&config, optional_secret_key(g)?, 4).await?;
    let catalog = &services.catalog;
    match cmd {
        TenantCommand::Create {
            slug,
            region,
            key,
            wait,
            json,
        } => {
            let args = EnqueueArgs {
                wait: *wait,
                key: key.clone(),
                json: *json,
            };
            let spec = JobSpec::Provision(ProvisionSpec {
                region: region.clone(),
            });
            let request = JobRequest {
                tenant: parse_slug(slug)?,
                key: key.clone(),
                spec,
                job: None,
            };
            enqueue(&services, &config, g.max_attempts.max(1), vec![request], &args).await
        }
        TenantCommand::Set {
            slug,
            backup_schedule,
            retention_days,
            keep_min,
            json,
        } => {
            let slug = parse_slug(slug)?;
            if let Some(schedule) = backup_schedule {
                pgfleet_shared::schedule::parse(schedule)?;
            }
            if retention_days.is_some_and(|d| d < 0) || keep_min.is_some_and(|k| k < 0) {
                bail!("--retention-days and --keep-min must be 0 or more");
            }
            let tenant = catalog
                .update_tenant_settings(&slug, backup_schedule.as_deref(), *retention_days, *keep_min)
                .await?
                .with_context(|| {
                    format!("no tenant {slug}; `pgfleet tenant list` shows the existing ones")
                })?;
            output::print_tenant(&tenant, *json);
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::Delete { slug, enqueue: args } => {
            let request = JobRequest {
                tenant: parse_slug(slug)?,
                key: args.key.clone(),
                spec: JobSpec::Delete(NoFields {}),
                job: None,
            };
            enqueue(&services, &config, g.max_attempts.max(1), vec![request], args).await
        }
        TenantCommand::List { json } => {
            output::print_tenants(&catalog.tenants().await?, *json);
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::Show { slug, json } => {
            let slug = parse_slug(slug)?;
            let tenant = catalog.tenant(&slug).await?.with_context(|| {
                format!("no tenant {slug}; `pgfleet tenant list` shows the existing ones")
            })?;
            output::print_tenant(&tenant, *json);
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::Url { slug } => {
            let slug = parse_slug(slug)?;
            let tenant = catalog.tenant(&slug).await?.with_context(|| {
                format!("no tenant {slug}; `pgfleet tenant list` shows the existing ones")
            })?;
            if tenant.status != TenantStatus::Active {
                bail!("tenant {slug} is {}, not active yet", tenant.status);
            }
            println!("{}", services.servers.tenant_url(&tenant).await?.expose_secret());
            Ok(ExitCode::SUCCESS)
        }
    }
}

struct MigrateOptions<'a> {
    tenant: Option<&'a str>,
    wait: bool,
    concurrency: i32,
    canary: usize,
    max_failures: Option<i32>,
    dry_run: bool,
    json: bool,
}

/// How long `migrate --wait` watches a rollout make no progress before moving it on itself.
const STALL_BEFORE_ADVANCING: Duration = Duration::from_secs(2);

async fn migrate(g: &GlobalArgs, o: MigrateOptions<'_>) -> Result<ExitCode> {
    let config = config(g)?;
    let only = o.tenant.map(parse_slug).transpose()?;
    let (set, source) = MigrationSet::load(config.tenant_migrations.as_deref())?;
    let max_attempts = g.max_attempts.max(1);
    let services = Services::open_with(&config, optional_secret_key(g)?, 4).await?;
    let catalog = &services.catalog;
    let producer = services.producer(&config, max_attempts);
    let options = StartOptions {
        only,
        concurrency: o.concurrency,
        canary: o.canary,
        max_failures: o.max_failures,
        dry_run: o.dry_run,
        max_attempts,
    };
    let started = pgfleet_shared::rollouts::start(catalog, &producer, &set, &options).await?;
    let Some((id, _)) = started.rollout else {
        output::print_plan(&started.plan, started.target_version, &source, o.json);
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!(
        "rollout {id}: {} tenant(s) to version {} from {source}",
        started.plan.targets.len(),
        started.target_version
    );
    if !o.wait {
        output::print_rollout(
            &catalog.rollout(id).await?.context("rollout vanished")?,
            &[],
            o.json,
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut last = None;
    let mut last_change = Instant::now();
    let rollout = loop {
        let mut r = catalog.rollout(id).await?.context("rollout vanished")?;
        // Workers move the rollout on (next phase, halt, done) as their jobs finish. Waiting
        // does it too when none of its jobs is live or nothing moved for a while, in case no
        // worker is left to do it; not on every poll, which would lock the rollout and count
        // its tenants again ten times a second.
        if r.status == RolloutStatus::Running
            && (r.active == 0 || last_change.elapsed() >= STALL_BEFORE_ADVANCING)
        {
            let created = catalog.advance_rollout(id, max_attempts).await?;
            producer.publish_existing(&created).await;
            r = catalog.rollout(id).await?.context("rollout vanished")?;
            last_change = Instant::now();
        }
        let progress = (r.succeeded, r.failed, r.skipped, r.remaining);
        if last != Some(progress) {
            eprintln!(
                "  done {} / failed {} / skipped {} / remaining {}",
                r.succeeded, r.failed, r.skipped, r.remaining
            );
            last = Some(progress);
            last_change = Instant::now();
        }
        // A halted rollout still lets jobs that had started finish; wait for them too.
        if r.status != RolloutStatus::Running && r.active == 0 {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    output::print_rollout(&rollout, &catalog.rollout_tenants(id).await?, o.json);
    let clean = rollout.status == RolloutStatus::Done && rollout.failed == 0 && rollout.skipped == 0;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn rollouts_command(g: &GlobalArgs, cmd: &RolloutsCommand) -> Result<ExitCode> {
    let services = Services::open_with(&config(g)?, optional_secret_key(g)?, 2).await?;
    match cmd {
        RolloutsCommand::List { json } => {
            output::print_rollouts(&services.catalog.rollouts(100).await?, *json)
        }
        RolloutsCommand::Show { id, json } => {
            let id = *id;
            let rollout = services
                .catalog
                .rollout(id)
                .await?
                .with_context(|| format!("no rollout {id}; `pgfleet rollouts list` shows recent ones"))?;
            output::print_rollout(&rollout, &services.catalog.rollout_tenants(id).await?, *json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Enqueues `spec` for one tenant, or (`all`) for every active tenant.
async fn for_tenants(
    g: &GlobalArgs,
    slug: Option<&str>,
    all: bool,
    args: &EnqueueArgs,
    spec: impl Fn(&str) -> JobSpec,
) -> Result<ExitCode> {
    let config = config(g)?;
    let slug = slug.map(parse_slug).transpose()?;
    let services = Services::open_with(&config, optional_secret_key(g)?, 4).await?;
    let requests: Vec<JobRequest> = if all {
        let tenants = services.catalog.tenants().await?;
        tenants
            .iter()
            .filter(|t| t.status == TenantStatus::Active)
            .map(|t| {
                Ok(JobRequest {
                    tenant: parse_slug(&t.slug)?,
                    key: None,
                    spec: spec(&t.slug),
                    job: None,
                })
            })
            .collect::<Result<_>>()?
    } else {
        let slug = slug.context("name a tenant or use --all")?;
        if services.catalog.tenant(&slug).await?.is_none() {
            bail!("no tenant {slug}; `pgfleet tenant list` shows the existing ones");
        }
        vec![JobRequest {
            spec: spec(slug.as_str()),
            tenant: slug,
            key: args.key.clone(),
            job: None,
        }]
    };
    if requests.is_empty() {
        eprintln!("no active tenants");
        return Ok(ExitCode::SUCCESS);
    }
    enqueue(&services, &config, g.max_attempts.max(1), requests, args).await
}

/// Enqueues the requests, then prints the job(s) — after waiting for them with `--wait`.
async fn enqueue(
    services: &Services,
    config: &Config,
    max_attempts: i32,
    requests: Vec<JobRequest>,
    args: &EnqueueArgs,
) -> Result<ExitCode> {
    let producer = services.producer(config, max_attempts);
    let enqueued = producer.enqueue_many(&requests).await?;
    let unpublished = enqueued
        .iter()
        .filter(|e| !e.published && e.job.status == JobStatus::Queued)
        .count();
    if unpublished > 0 {
        eprintln!(
            "warning: the broker is unreachable; {unpublished} job(s) are recorded and a worker will pick them up when it can"
        );
    }
    let mut jobs: Vec<_> = enqueued.into_iter().map(|e| e.job).collect();
    if args.wait {
        let ids: Vec<uuid::Uuid> = jobs.iter().map(|j| j.id).collect();
        let kind = requests[0].kind();
        eprintln!("waiting for {} {kind} job(s)…", ids.len());
        jobs = wait_for_jobs(&services.catalog, &ids, None, |jobs| {
            let done = jobs.iter().filter(|j| j.status == JobStatus::Succeeded).count();
            let failed = jobs
                .iter()
                .filter(|j| j.is_finished() && j.status != JobStatus::Succeeded)
                .count();
            eprintln!(
                "  done {done} / failed {failed} / remaining {}",
                jobs.len() - done - failed
            );
        })
        .await?;
    }
    if jobs.len() == 1 {
        output::print_job(&jobs[0], args.json);
    } else {
        output::print_jobs(&jobs, args.json);
    }
    Ok(if args.wait {
        exit_for(&jobs)
    } else {
        ExitCode::SUCCESS
    })
}

fn exit_for(jobs: &[pgfleet_shared::catalog::JobRecord]) -> ExitCode {
    if jobs.iter().all(|j| j.status == JobStatus::Succeeded) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn jobs_command(g: &GlobalArgs, cmd: &JobsCommand) -> Result<ExitCode> {
    let config = config(g)?;
    let services = Services::open_with(&config, optional_secret_key(g)?, 2).await?;
    match cmd {
        JobsCommand::List {
            status,
            tenant,
            limit,
            json,
        } => {
            let jobs = services.catalog.jobs(*status, tenant.as_deref(), *limit).await?;
            output::print_jobs(&jobs, *json);
        }
        JobsCommand::Show { id, json } => {
            let id = *id;
            let job = services
                .catalog
                .job(id)
                .await?
                .with_context(|| format!("no job {id}; `pgfleet jobs list` shows recent ones"))?;
            output::print_job(&job, *json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn rotate_secret_key(g: &GlobalArgs, batch: i64, json: bool) -> Result<ExitCode> {
    let services = Services::open(&config(g)?, secret_key(g, false)?, 2).await?;
    let report = services.catalog.rotate_secrets(batch.max(1)).await?;
    output::print_rotation(&report, json);
    Ok(ExitCode::SUCCESS)
}
