//! Rollout benchmark (issue: migration rollouts). N tenants (default 500), one migration (a
//! column with a default plus an index), in one run: sequential `psql -f` loops over the N
//! databases — once with `psql` as found on PATH (Debian's Perl pg_wrapper there) and once
//! with the psql binary itself — against `pgfleet migrate --all --wait` with one worker
//! process (enqueue → all done). All apply an equivalent migration (different names, so all
//! can run on the same databases). Prints walls, the ratios and p50/p99 per-tenant times.
//!
//! Then the same again through a `DelayProxy` (`--round-trip-us`, default 1000: a database
//! on another host in the same region; 0 skips it): every connection of both pipelines —
//! pgfleet's catalog and tenant connections, each psql — crosses it.
//!
//! Run: `bench/migrate.sh [--tenants 500] [--concurrency 8] [--workers 1] [--round-trip-us 1000]`.

use anyhow::{bail, Context, Result};
use pgfleet_bench::{
    bench_namespace, catalog_transactions, checkpoint, cleanup, client_bindir, cpu_seconds, numeric_flag,
    process_cpu_seconds, psql_file_at, publish_signups, wait_for_consumer, DelayProxy,
};
use pgfleet_shared::secrets::SecretKey;
use secrecy::ExposeSecret;
use sqlx::{Connection as _, PgConnection};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LOOP_MIGRATION: &str = "ALTER TABLE users ADD COLUMN plan_loop text NOT NULL DEFAULT 'free';\nCREATE INDEX users_plan_loop ON users (plan_loop);\n";
const FLEET_MIGRATION: &str = "ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT 'free';\nCREATE INDEX users_plan ON users (plan);\n";

#[tokio::main]
async fn main() -> Result<()> {
    let tenants = numeric_flag("--tenants", 500);
    let concurrency = numeric_flag("--concurrency", 8);
    let workers = numeric_flag("--workers", 1).max(1);
    let repo = std::env::current_dir()?;
    let schema = repo.join("migrations/tenant/1_example_app.sql");
    if !schema.exists() {
        bail!("run from the repository root");
    }
    let pgfleet = std::env::current_exe()?.with_file_name("pgfleet");
    let namespace = bench_namespace();
    let work = std::env::temp_dir().join(&namespace);
    let migrations = work.join("migrations");
    std::fs::create_dir_all(&migrations)?;
    std::fs::copy(&schema, migrations.join("1_example_app.sql"))?;
    let result = run(&pgfleet, &namespace, &work, tenants, concurrency, workers).await;
    cleanup(&namespace).await?;
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn pgfleet_cmd(pgfleet: &Path, namespace: &str, work: &Path, key: &str, route: Route) -> Command {
    let mut cmd = Command::new(pgfleet);
    cmd.env("PGFLEET_CATALOG_URL", route.catalog_url(namespace))
        .env("PGFLEET_SERVER_URL", route.server_url())
        .env("PGFLEET_NAMESPACE", namespace)
        .env("PGFLEET_SECRET_KEY", key)
        .env("PGFLEET_TENANT_MIGRATIONS", work.join("migrations"))
        .env(
            "PGFLEET_BACKUP_URL",
            format!("file://{}", work.join("backups").display()),
        )
        .env("PGFLEET_LOG", "warn");
    cmd
}

/// Where Postgres is: directly on loopback, or behind a `DelayProxy`.
#[derive(Clone, Copy)]
struct Route {
    port: u16,
    /// Added round trip (zero: direct).
    round_trip: Duration,
}

impl Route {
    fn catalog_url(&self, namespace: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{namespace}_catalog", self.port)
    }

    fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn name(&self) -> String {
        if self.round_trip.is_zero() {
            "direct (loopback)".into()
        } else {
            format!(
                "{:.1} ms round trip (delay proxy)",
                self.round_trip.as_secs_f64() * 1000.0
            )
        }
    }
}

/// What one pipeline did over every tenant.
struct Run {
    pipeline: String,
    wall: Duration,
    /// Per-tenant times in ms, sorted.
    per_tenant_ms: Vec<i64>,
}

async fn run(
    pgfleet: &Path,
    namespace: &str,
    work: &Path,
    tenants: usize,
    concurrency: usize,
    workers_count: usize,
) -> Result<()> {
    let key = SecretKey::generate().to_base64().expose_secret().to_owned();
    let round_trip = Duration::from_micros(numeric_flag("--round-trip-us", 1000) as u64);
    let direct = Route {
        port: 5432,
        round_trip: Duration::ZERO,
    };
    let mut workers = start_workers(pgfleet, namespace, work, &key, direct, workers_count, concurrency)?;
    println!("provisioning {tenants} tenants…");
    let databases = {
        wait_for_consumer(namespace).await?;
        publish_signups(namespace, tenants).await?;
        let mut catalog = PgConnection::connect(&direct.catalog_url(namespace)).await?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let active: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE status = 'active'")
                .fetch_one(&mut catalog)
                .await?;
            if active as usize >= tenants {
                break;
            }
            if Instant::now() > deadline {
                bail!("provisioning did not finish");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let databases: Vec<String> = sqlx::query_scalar("SELECT database_name FROM tenants ORDER BY slug")
            .fetch_all(&mut catalog)
            .await?;
        databases
    };

    let binary = client_bindir().await?.join("psql");
    let on_path = std::path::PathBuf::from("psql");
    let wrapper = if is_script(Path::new("psql")) {
        " (a script: Debian's pg_wrapper)"
    } else {
        ""
    };
    let mut rounds: Vec<(Route, Vec<Run>)> = Vec::new();

    // Direct: both loops (`psql` as a script finds it on PATH — on Debian/Ubuntu that is
    // postgresql-common's Perl wrapper, which picks the version's binary on every call —
    // and the psql binary itself, the like-for-like baseline), then pgfleet.
    {
        let mut runs = Vec::new();
        for (psql, name) in [
            (&on_path, format!("`psql` on PATH{wrapper}")),
            (&binary, binary.display().to_string()),
        ] {
            let file = work.join(format!("loop{}.sql", runs.len()));
            std::fs::write(
                &file,
                LOOP_MIGRATION.replace("plan_loop", &format!("plan_loop{}", runs.len())),
            )?;
            checkpoint().await?;
            runs.push(psql_loop(psql, &name, direct.port, &databases, &file)?);
        }
        runs.push(
            fleet_rollout(
                pgfleet,
                namespace,
                work,
                &key,
                direct,
                "2_plan.sql",
                "plan",
                concurrency,
                workers_count,
            )
            .await?,
        );
        rounds.push((direct, runs));
    }

    // Through the delay proxy: every connection both pipelines make (pgfleet's catalog and
    // tenant connections, each psql) crosses it. The registered server moves to the proxy's
    // address and the workers restart with it.
    if !round_trip.is_zero() {
        drop(workers);
        let proxy = DelayProxy::start("127.0.0.1:5432".parse()?, round_trip)?;
        let delayed = Route {
            port: proxy.port,
            round_trip,
        };
        let (direct_rtt, delayed_rtt) = (
            select_round_trip(direct.port).await?,
            select_round_trip(delayed.port).await?,
        );
        println!(
            "`SELECT 1` round trip, median of 200: direct {:.3} ms, through the proxy {:.3} ms",
            direct_rtt.as_secs_f64() * 1000.0,
            delayed_rtt.as_secs_f64() * 1000.0
        );
        let moved = pgfleet_cmd(pgfleet, namespace, work, &key, delayed)
            .env_remove("PGFLEET_SERVER_URL")
            .args(["server", "set", "default", "--url", &delayed.server_url()])
            .output()?;
        if !moved.status.success() {
            bail!(
                "moving the default server to the proxy failed: {}",
                String::from_utf8_lossy(&moved.stderr)
            );
        }
        workers = start_workers(
            pgfleet,
            namespace,
            work,
            &key,
            delayed,
            workers_count,
            concurrency,
        )?;
        {
            wait_for_consumer(namespace).await?;
            let file = work.join("loop_delayed.sql");
            std::fs::write(&file, LOOP_MIGRATION.replace("plan_loop", "plan_loop_delayed"))?;
            checkpoint().await?;
            let mut runs = vec![psql_loop(
                &binary,
                &binary.display().to_string(),
                delayed.port,
                &databases,
                &file,
            )?];
            runs.push(
                fleet_rollout(
                    pgfleet,
                    namespace,
                    work,
                    &key,
                    delayed,
                    "3_plan_delayed.sql",
                    "plan_delayed",
                    concurrency,
                    workers_count,
                )
                .await?,
            );
            rounds.push((delayed, runs));
        }
    }
    drop(workers);

    let pct = |v: &[i64], p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!();
    println!("| network | pipeline | wall | per tenant p50 | p99 |");
    println!("|---|---|---|---|---|");
    for (route, runs) in &rounds {
        for run in runs {
            println!(
                "| {} | {} | {:.2} s | {} ms | {} ms |",
                route.name(),
                run.pipeline,
                run.wall.as_secs_f64(),
                pct(&run.per_tenant_ms, 0.5),
                pct(&run.per_tenant_ms, 0.99)
            );
        }
    }
    println!();
    for (route, runs) in &rounds {
        let (loops, fleet) = runs.split_at(runs.len() - 1);
        for l in loops {
            println!(
                "{}: speed-up (loop / pgfleet), loop with {}: {:.1}x   (required with the proxy >= 5x)",
                route.name(),
                l.pipeline,
                l.wall.as_secs_f64() / fleet[0].wall.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Worker processes, stopped (SIGTERM, then waited for) when dropped: on every way out.
struct Workers(Vec<std::process::Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &worker.id().to_string()])
                .status();
            let _ = worker.wait();
        }
    }
}

fn start_workers(
    pgfleet: &Path,
    namespace: &str,
    work: &Path,
    key: &str,
    route: Route,
    count: usize,
    concurrency: usize,
) -> Result<Workers> {
    let mut workers = Workers(Vec::new());
    for i in 0..count {
        workers.0.push(
            pgfleet_cmd(pgfleet, namespace, work, key, route)
                .args(["worker", "--concurrency", &concurrency.to_string()])
                .stderr(std::fs::File::create(
                    work.join(format!("worker-{}-{i}.log", route.port)),
                )?)
                .spawn()?,
        );
    }
    Ok(workers)
}

/// `pgfleet migrate --all --wait` of one new migration file (`column` added with an index).
#[allow(clippy::too_many_arguments)]
async fn fleet_rollout(
    pgfleet: &Path,
    namespace: &str,
    work: &Path,
    key: &str,
    route: Route,
    file: &str,
    column: &str,
    concurrency: usize,
    workers_count: usize,
) -> Result<Run> {
    let catalog_url = route.catalog_url(namespace);
    // The bench's own reads go around the proxy: they are not part of either pipeline.
    let mut catalog =
        PgConnection::connect(&format!("postgres://postgres@127.0.0.1:5432/{namespace}_catalog")).await?;
    checkpoint().await?;
    std::fs::write(
        work.join("migrations").join(file),
        FLEET_MIGRATION.replace("plan", column),
    )?;
    // PGFLEET_BENCH_PERF=FILE: a system-wide `perf record` of the (direct) rollout phase.
    let perf = match std::env::var("PGFLEET_BENCH_PERF") {
        Ok(file) if route.round_trip.is_zero() => Some(
            Command::new("perf")
                .args(["record", "-a", "-g", "-F", "499", "-o", &file])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ),
        _ => None,
    };
    if perf.is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let catalog_db = format!("{namespace}_catalog");
    let xacts_before = catalog_transactions(&mut catalog, &catalog_db).await?;
    let proxy_before = process_cpu_seconds(std::process::id());
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let out = pgfleet_cmd(pgfleet, namespace, work, key, route)
        .env("PGFLEET_CATALOG_URL", &catalog_url)
        .args([
            "migrate",
            "--all",
            "--wait",
            "--json",
            "--concurrency",
            &concurrency.to_string(),
        ])
        .stderr(Stdio::null())
        .output()?;
    let wall = started.elapsed();
    let cpu = cpu_delta(cpu_before);
    let proxy_cpu = process_cpu_seconds(std::process::id()) - proxy_before;
    if let Some(mut perf) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    if !out.status.success() {
        bail!("pgfleet migrate failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let rollout: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let rollout_id: uuid::Uuid = rollout["id"].as_str().context("rollout id")?.parse()?;
    let per_tenant_ms: Vec<i64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM j.finished_at - j.started_at) * 1000)::bigint FROM rollout_tenants rt JOIN jobs j ON j.id = rt.job_id
         WHERE rt.rollout_id = $1 ORDER BY 1",
    )
    .bind(rollout_id)
    .fetch_all(&mut catalog)
    .await?;
    // How long the CLI took to plan and record the rollout before the first job ran.
    let to_first_job_ms: i64 = sqlx::query_scalar(
        "SELECT (extract(epoch FROM min(j.started_at) - r.created_at) * 1000)::bigint
           FROM rollouts r JOIN rollout_tenants rt ON rt.rollout_id = r.id JOIN jobs j ON j.id = rt.job_id
          WHERE r.id = $1 GROUP BY r.created_at",
    )
    .bind(rollout_id)
    .fetch_one(&mut catalog)
    .await?;
    // An idle backend reports its counters within 10 s (PGSTAT_IDLE_INTERVAL).
    tokio::time::sleep(Duration::from_millis(11_000)).await;
    let xacts_after = catalog_transactions(&mut catalog, &catalog_db).await?;
    let n = per_tenant_ms.len().max(1) as f64;
    println!(
        "{}: pgfleet rollout recorded → first job started {to_first_job_ms} ms; {:.1} catalog transactions and {:.1} ms user + {:.1} ms system machine CPU per tenant, {:.1} ms of it this process's (the delay proxy)",
        route.name(),
        (xacts_after - xacts_before) as f64 / n,
        cpu.0 * 1000.0 / n,
        cpu.1 * 1000.0 / n,
        proxy_cpu * 1000.0 / n
    );
    Ok(Run {
        pipeline: format!(
            "pgfleet migrate --all --wait ({} tenants, {workers_count} worker(s), concurrency {concurrency})",
            rollout["succeeded"].as_i64().unwrap_or(0)
        ),
        wall,
        per_tenant_ms,
    })
}

/// Median of 200 `SELECT 1` round trips on one connection through `port`.
async fn select_round_trip(port: u16) -> Result<Duration> {
    let mut conn = PgConnection::connect(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    ))
    .await?;
    let mut times = Vec::new();
    for _ in 0..200 {
        let one = Instant::now();
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        times.push(one.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// One sequential `psql -f` loop over every database through 127.0.0.1:`port`.
fn psql_loop(psql: &Path, name: &str, port: u16, databases: &[String], file: &Path) -> Result<Run> {
    let mut per_tenant_ms = Vec::with_capacity(databases.len());
    let proxy_before = process_cpu_seconds(std::process::id());
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    for db in databases {
        let one = Instant::now();
        if !psql_file_at(psql, port, db, file)? {
            bail!("psql loop failed on {db}");
        }
        per_tenant_ms.push(one.elapsed().as_millis() as i64);
    }
    let wall = started.elapsed();
    let cpu = cpu_delta(cpu_before);
    let proxy_cpu = process_cpu_seconds(std::process::id()) - proxy_before;
    let n = databases.len().max(1) as f64;
    println!(
        "psql -f loop with {name} on port {port}: {:.2} s; {:.1} ms user + {:.1} ms system machine CPU per tenant, {:.1} ms of it this process's (the delay proxy)",
        wall.as_secs_f64(),
        cpu.0 * 1000.0 / n,
        cpu.1 * 1000.0 / n,
        proxy_cpu * 1000.0 / n
    );
    per_tenant_ms.sort_unstable();
    Ok(Run {
        pipeline: format!("psql -f loop over {} databases, {name}", databases.len()),
        wall,
        per_tenant_ms,
    })
}

/// Whether the `name` found on PATH is a script (starts with `#!`) rather than a binary.
fn is_script(name: &Path) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::read(p).ok())
        .is_some_and(|bytes| bytes.starts_with(b"#!"))
}

fn cpu_delta(before: (f64, f64)) -> (f64, f64) {
    let after = cpu_seconds();
    (after.0 - before.0, after.1 - before.1)
}
