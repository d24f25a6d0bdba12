//! The `pgfleet` binary: parse the command line, build what the command needs from
//! `pgfleet_shared`, call it, render the result. Long-running processes (`up`, `worker`,
//! `serve`, `scheduler`) are wired in `processes`, one-shot commands in `commands`; every
//! rule lives in the library's fleet service.

mod cli;
mod commands;
mod output;
mod processes;

use clap::Parser;
use cli::{Cli, Command, LogFormat};
use std::process::ExitCode;

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
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Up {
                worker,
                api,
                scheduler,
            } => processes::up(&cli.global, worker, api, scheduler).await,
            Command::Worker(args) => processes::worker(&cli.global, args).await,
            Command::Serve(args) => processes::serve(&cli.global, args).await,
            Command::Scheduler(args) => processes::scheduler(&cli.global, args).await,
            command => commands::run(&cli.global, command).await,
        }
    });
    match result {
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
