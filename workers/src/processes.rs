//! The long-running processes: a worker, the HTTP API, the scheduler, or all three in one
//! (`up`). Each stops cleanly on SIGTERM/SIGINT; in `up`, a part that fails stops the rest.

use crate::cli::{GlobalArgs, SchedulerArgs, ServeArgs, WorkerArgs};
use anyhow::{Context, Result};
use pgfleet_shared::api::{ApiAccess, ApiToken};
use pgfleet_shared::services::Services;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub async fn worker(g: &GlobalArgs, args: &WorkerArgs) -> Result<ExitCode> {
    let config = g.config()?;
    let settings = args.settings(g)?;
    let services = Services::open(&config, g.keyring(false)?, pool_size(&settings, 0)).await?;
    let worker = services.worker(&config, &settings).await?;
    let shutdown = shutdown_on_signal();
    if let Some(addr) = args.health_listen {
        let probes =
            pgfleet_shared::worker::serve_health(listen(addr).await?, worker.health(), shutdown.clone());
        let (worker_result, probes_result) = tokio::join!(worker.run(shutdown.clone()), probes);
        worker_result?;
        probes_result?;
    } else {
        worker.run(shutdown).await?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn serve(g: &GlobalArgs, args: &ServeArgs) -> Result<ExitCode> {
    let config = g.config()?;
    let (token, metrics_token) = tokens(args, None)?;
    let listener = listen(args.listen).await?;
    let services = Services::open_with(&config, g.optional_keyring()?, 10).await?;
    let state = services.api_state(
        &config,
        g.max_attempts(),
        ApiAccess {
            token,
            metrics_token,
            metrics_per_tenant: args.metrics_per_tenant,
            console: console_settings(args)?,
        },
        None,
    );
    pgfleet_shared::api::serve(listener, state, shutdown_on_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn scheduler(g: &GlobalArgs, args: &SchedulerArgs) -> Result<ExitCode> {
    let config = g.config()?;
    let services = Services::open_with(&config, g.optional_keyring()?, 4).await?;
    let scheduler = services.scheduler(&config, args.settings(g));
    scheduler.run(shutdown_on_signal()).await;
    Ok(ExitCode::SUCCESS)
}

/// Worker, scheduler and API in one process; if one part fails, the others are stopped.
pub async fn up(
    g: &GlobalArgs,
    worker_args: &WorkerArgs,
    api_args: &ServeArgs,
    scheduler_args: &SchedulerArgs,
) -> Result<ExitCode> {
    let config = g.config()?;
    let settings = worker_args.settings(g)?;
    let services = Services::open(&config, g.keyring(true)?, pool_size(&settings, 8)).await?;
    let worker = services.worker(&config, &settings).await?;
    let (token, metrics_token) = tokens(api_args, Some(&g.data_dir.join("api.token")))?;
    let listener = listen(api_args.listen).await?;
    let api = services.api_state(
        &config,
        g.max_attempts(),
        ApiAccess {
            token,
            metrics_token,
            metrics_per_tenant: api_args.metrics_per_tenant,
            console: console_settings(api_args)?,
        },
        Some(worker.health()),
    );
    let scheduler = services.scheduler(&config, scheduler_args.settings(g));

    let shutdown = shutdown_on_signal();
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

/// Catalog connections, opened as needed: one per job slot, a few for the runtime, `extra`
/// for the rest.
fn pool_size(settings: &pgfleet_shared::WorkerSettings, extra: u32) -> u32 {
    (settings.kind_slots.total() as u32 + 4 + extra).min(60)
}

/// The API token (generated into `generate_in` by `up`) and the metrics token.
fn tokens(
    args: &ServeArgs,
    generate_in: Option<&std::path::Path>,
) -> Result<(Option<ApiToken>, Option<ApiToken>)> {
    let token = ApiToken::resolve(args.api_token.as_deref(), generate_in, args.insecure_dev)?;
    let metrics_token = args
        .metrics_token
        .as_ref()
        .map(|t| ApiToken::new(&t.clone().into()).context("PGFLEET_METRICS_TOKEN"))
        .transpose()?;
    Ok((token, metrics_token))
}

/// Who may sign in to the web console besides the API token's holders.
fn console_settings(args: &ServeArgs) -> Result<pgfleet_shared::console::ConsoleSettings> {
    let token = |t: &Option<String>, what: &str| {
        t.as_ref()
            .map(|t| ApiToken::new(&t.clone().into()).context(what.to_owned()))
            .transpose()
    };
    Ok(pgfleet_shared::console::ConsoleSettings {
        admin_token: token(&args.console_token, "PGFLEET_CONSOLE_TOKEN")?,
        viewer_token: token(&args.console_viewer_token, "PGFLEET_CONSOLE_VIEWER_TOKEN")?,
        secure_cookie: args.console_secure_cookie,
    })
}

async fn listen(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}; choose another address with --listen / PGFLEET_LISTEN")
    })
}

/// A token cancelled by the first SIGINT/SIGTERM (graceful shutdown); a second one exits
/// at once.
fn shutdown_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            warn!("cannot listen for signals");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        info!("shutdown requested; stopping (send the signal again to exit at once)");
        token.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        std::process::exit(130);
    });
    shutdown
}
