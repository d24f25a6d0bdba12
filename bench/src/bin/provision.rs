//! Provisioning benchmark (issue: foundation). N signups published at once to a single
//! `pgfleet worker` process until all tenants are active, against the loop pgfleet
//! replaces — `createdb` then `psql -f <schema>` per tenant, sequentially — in the same run,
//! on the same server, twice: with the tools as found on PATH (on Debian/Ubuntu, the Perl
//! pg_wrapper, which starts Perl on every call) and with the server version's binaries
//! themselves (the like-for-like baseline). Prints all, the ratios, and the worker's peak RSS.
//!
//! Run: `bench/provision.sh` (builds release binaries), or after a release build:
//! `target/release/bench-provision [--tenants 200] [--concurrency 8]`.

use anyhow::{bail, Context, Result};
use pgfleet_bench::{
    bench_namespace, checkpoint, cleanup, client_bindir, numeric_flag, peak_rss_kib, psql_file,
    publish_and_wait_active, wait_for_consumer,
};
use pgfleet_shared::secrets::SecretKey;
use secrecy::ExposeSecret;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<()> {
    let tenants = numeric_flag("--tenants", 200);
    let concurrency = numeric_flag("--concurrency", 8);
    let repo = std::env::current_dir()?;
    let schema = repo.join("migrations/tenant/1_example_app.sql");
    if !schema.exists() {
        bail!("run from the repository root (needs {})", schema.display());
    }
    let pgfleet = std::env::current_exe()?.with_file_name("pgfleet");
    if !pgfleet.exists() {
        bail!(
            "{} is missing: build it first (`cargo build --release -p pgfleet-workers`)",
            pgfleet.display()
        );
    }
    let namespace = bench_namespace();

    println!("provisioning benchmark: {tenants} tenants, one worker process (concurrency {concurrency})");
    // Each phase writes ~7 MB of WAL per database; a checkpoint before each keeps one
    // phase from paying for the other's WAL.
    checkpoint().await?;
    let on_path = run_loop_baseline(&namespace, "loop", tenants, &schema, None);
    let bindir = client_bindir().await;
    checkpoint().await?;
    let binaries = match &bindir {
        Ok(dir) => run_loop_baseline(&namespace, "bin", tenants, &schema, Some(dir)),
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    checkpoint().await?;
    let result = run_pgfleet(&pgfleet, &namespace, tenants, concurrency).await;
    cleanup(&namespace).await?;
    let (on_path, binaries, bindir) = (on_path?, binaries?, bindir?);
    let (pgfleet_wall, peak_rss_kib) = result?;

    let per = |d: Duration| d.as_secs_f64() * 1000.0 / tenants as f64;
    let rate = |d: Duration| tenants as f64 / d.as_secs_f64();
    let baselines = [
        ("createdb + psql -f loop, tools on PATH".to_owned(), on_path),
        (format!("createdb + psql -f loop, {}", bindir.display()), binaries),
    ];
    println!();
    println!("| pipeline | wall | per tenant | tenants/s |");
    println!("|---|---|---|---|");
    for (name, wall) in &baselines {
        println!(
            "| {name} | {:.2} s | {:.1} ms | {:.1} |",
            wall.as_secs_f64(),
            per(*wall),
            rate(*wall)
        );
    }
    println!(
        "| pgfleet: {tenants} signups on AMQP -> all active | {:.2} s | {:.1} ms | {:.1} |",
        pgfleet_wall.as_secs_f64(),
        per(pgfleet_wall),
        rate(pgfleet_wall)
    );
    println!();
    for (name, wall) in &baselines {
        println!(
            "throughput ratio (pgfleet / {name}): {:.2}x   (target >= 3x)",
            wall.as_secs_f64() / pgfleet_wall.as_secs_f64()
        );
    }
    println!("worker peak RSS: {:.1} MiB", peak_rss_kib as f64 / 1024.0);
    Ok(())
}

/// `createdb` + `psql -f` per tenant; the tools from `bindir`, or from PATH.
fn run_loop_baseline(
    namespace: &str,
    tag: &str,
    tenants: usize,
    schema: &std::path::Path,
    bindir: Option<&std::path::Path>,
) -> Result<Duration> {
    let tool = |name: &str| bindir.map_or_else(|| PathBuf::from(name), |dir| dir.join(name));
    let started = Instant::now();
    for i in 0..tenants {
        let db = format!("{namespace}_{tag}_{i}");
        let ok = Command::new(tool("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", &db])
            .status()?
            .success()
            && psql_file(&tool("psql"), &db, schema)?;
        if !ok {
            bail!("baseline loop failed at tenant {i}");
        }
    }
    Ok(started.elapsed())
}

async fn run_pgfleet(
    pgfleet: &PathBuf,
    namespace: &str,
    tenants: usize,
    concurrency: usize,
) -> Result<(Duration, u64)> {
    let catalog_url = format!("postgres://postgres@127.0.0.1:5432/{namespace}_catalog");
    let log_path = std::env::temp_dir().join(format!("{namespace}-worker.log"));
    let mut worker = Command::new(pgfleet)
        .args(["worker", "--concurrency", &concurrency.to_string()])
        .env("PGFLEET_CATALOG_URL", &catalog_url)
        .env("PGFLEET_NAMESPACE", namespace)
        .env(
            "PGFLEET_SECRET_KEY",
            SecretKey::generate().to_base64().expose_secret(),
        )
        .env("PGFLEET_LOG", "warn")
        .env("PGFLEET_LOG_FORMAT", "json")
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .context("starting the worker")?;
    let pid = worker.id();

    let result = async {
        wait_for_consumer(namespace).await?;
        publish_and_wait_active(namespace, &catalog_url, tenants, &log_path).await
    }
    .await;
    let peak_rss = peak_rss_kib(pid);
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = worker.wait();
    Ok((result?, peak_rss))
}
