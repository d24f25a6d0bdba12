//! Rollout benchmark (issue: migration rollouts). N tenants (default 500), one migration (a
//! column with a default plus an index), in one run: sequential `psql -f` loops over the N
//! databases — once with `psql` as found on PATH (Debian's Perl pg_wrapper there) and once
//! with the psql binary itself — against `pgfleet migrate --all --wait` with one worker
//! process (enqueue → all done). All apply an equivalent migration (different names, so all
//! can run on the same databases). Prints walls, the ratios and p50/p99 per-tenant times.
//!
//! Run: `bench/migrate.sh [--tenants 500] [--concurrency 8] [--workers 1]`.

use anyhow::{bail, Context, Result};
use pgfleet_bench::{
    bench_namespace, checkpoint, cleanup, client_bindir, cpu_seconds, numeric_flag, psql_file,
    publish_signups, wait_for_consumer,
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

fn pgfleet_cmd(pgfleet: &Path, namespace: &str, work: &Path, key: &str) -> Command {
    let mut cmd = Command::new(pgfleet);
    cmd.env(
        "PGFLEET_CATALOG_URL",
        format!("postgres://postgres@127.0.0.1:5432/{namespace}_catalog"),
    )
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

async fn run(
    pgfleet: &Path,
    namespace: &str,
    work: &Path,
    tenants: usize,
    concurrency: usize,
    workers_count: usize,
) -> Result<()> {
    let key = SecretKey::generate().to_base64().expose_secret().to_owned();
    let mut workers = Vec::new();
    for i in 0..workers_count {
        workers.push(
            pgfleet_cmd(pgfleet, namespace, work, &key)
                .args(["worker", "--concurrency", &concurrency.to_string()])
                .stderr(std::fs::File::create(work.join(format!("worker-{i}.log")))?)
                .spawn()?,
        );
    }
    let result = async {
        println!("provisioning {tenants} tenants…");
        wait_for_consumer(namespace).await?;
        publish_signups(namespace, tenants).await?;
        let catalog_url = format!("postgres://postgres@127.0.0.1:5432/{namespace}_catalog");
        let mut catalog = PgConnection::connect(&catalog_url).await?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let active: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE status = 'active'").fetch_one(&mut catalog).await?;
            if active as usize >= tenants {
                break;
            }
            if Instant::now() > deadline {
                bail!("provisioning did not finish");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let databases: Vec<String> = sqlx::query_scalar("SELECT database_name FROM tenants ORDER BY slug").fetch_all(&mut catalog).await?;

        // Two sequential loops, each with its own column so both run on the same databases:
        // `psql` as a script finds it on PATH (on Debian/Ubuntu that is postgresql-common's
        // Perl wrapper, pg_wrapper, which picks the version's binary on every call), and the
        // psql binary itself. The binary is the like-for-like baseline; on Debian most of
        // the PATH loop's time is Perl starting up.
        let binary = client_bindir().await?.join("psql");
        let on_path = std::path::PathBuf::from("psql");
        let mut loops = Vec::new();
        for (i, psql) in [&on_path, &binary].into_iter().enumerate() {
            let migration = LOOP_MIGRATION.replace("plan_loop", &format!("plan_loop{i}"));
            let file = work.join(format!("loop{i}.sql"));
            std::fs::write(&file, migration)?;
            checkpoint().await?;
            loops.push(psql_loop(psql, &databases, &file)?);
        }

        checkpoint().await?;
        std::fs::write(work.join("migrations/2_plan.sql"), FLEET_MIGRATION)?;
        // PGFLEET_BENCH_PERF=FILE: a system-wide `perf record` of the rollout phase.
        let perf = match std::env::var("PGFLEET_BENCH_PERF") {
            Ok(file) => Some(
                Command::new("perf")
                    .args(["record", "-a", "-g", "-F", "499", "-o", &file])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            ),
            Err(_) => None,
        };
        if perf.is_some() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let catalog_db = format!("{namespace}_catalog");
        let xacts_before = catalog_transactions(&mut catalog, &catalog_db).await?;
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let out = pgfleet_cmd(pgfleet, namespace, work, &key)
            .args(["migrate", "--all", "--wait", "--json", "--concurrency", &concurrency.to_string()])
            .stderr(Stdio::null())
            .output()?;
        let fleet_wall = started.elapsed();
        let fleet_cpu = cpu_delta(cpu_before);
        if let Some(mut perf) = perf {
            let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
            let _ = perf.wait();
        }
        if !out.status.success() {
            bail!("pgfleet migrate failed: {}", String::from_utf8_lossy(&out.stdout));
        }
        let rollout: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let rollout_id: uuid::Uuid = rollout["id"].as_str().context("rollout id")?.parse()?;
        let job_ms: Vec<i64> = sqlx::query_scalar(
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
        println!("rollout recorded → first job started: {to_first_job_ms} ms");
        // Backends report their counters within about a second of going idle.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let xacts_after = catalog_transactions(&mut catalog, &catalog_db).await?;
        println!(
            "catalog transactions per tenant during the rollout: {:.1}",
            (xacts_after - xacts_before) as f64 / databases.len() as f64
        );
        let n = databases.len() as f64;
        let per_tenant = |cpu: (f64, f64)| format!("{:.1} ms user + {:.1} ms system", cpu.0 * 1000.0 / n, cpu.1 * 1000.0 / n);
        println!(
            "machine CPU per tenant: loop with `psql` on PATH {}; loop with {} {}; pgfleet {}",
            per_tenant(loops[0].cpu),
            binary.display(),
            per_tenant(loops[1].cpu),
            per_tenant(fleet_cpu)
        );
        Ok((loops, binary, fleet_wall, job_ms, rollout["succeeded"].as_i64().unwrap_or(0)))
    }
    .await;
    for mut worker in workers {
        let _ = Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status();
        let _ = worker.wait();
    }
    let (loops, binary, fleet_wall, job_ms, succeeded) = result?;
    let pct = |v: &[i64], p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let wrapper = if is_script(Path::new("psql")) {
        " (a script: Debian's pg_wrapper)"
    } else {
        ""
    };
    let names = [
        format!("`psql` on PATH{wrapper}"),
        format!("{}", binary.display()),
    ];
    println!();
    println!("| pipeline | wall | per tenant p50 | p99 |");
    println!("|---|---|---|---|");
    for (name, l) in names.iter().zip(&loops) {
        let mut ms: Vec<i64> = l.times.iter().map(|d| d.as_millis() as i64).collect();
        ms.sort_unstable();
        println!(
            "| psql -f loop over {tenants} databases, {name} | {:.2} s | {} ms | {} ms |",
            l.wall.as_secs_f64(),
            pct(&ms, 0.5),
            pct(&ms, 0.99)
        );
    }
    println!(
        "| pgfleet migrate --all --wait ({succeeded} tenants, {workers_count} worker(s), concurrency {concurrency}) | {:.2} s | {} ms | {} ms |",
        fleet_wall.as_secs_f64(),
        pct(&job_ms, 0.5),
        pct(&job_ms, 0.99)
    );
    println!();
    for (name, l) in names.iter().zip(&loops) {
        println!(
            "speed-up (loop / pgfleet), loop with {name}: {:.1}x   (required >= 5x, target >= 10x)",
            l.wall.as_secs_f64() / fleet_wall.as_secs_f64()
        );
    }
    Ok(())
}

/// One sequential loop: wall, per-database times, machine CPU (user, system) seconds.
struct LoopRun {
    wall: Duration,
    times: Vec<Duration>,
    cpu: (f64, f64),
}

fn psql_loop(psql: &Path, databases: &[String], file: &Path) -> Result<LoopRun> {
    let mut times = Vec::with_capacity(databases.len());
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    for db in databases {
        let one = Instant::now();
        let ok = psql_file(psql, db, file)?;
        if !ok {
            bail!("psql loop failed on {db}");
        }
        times.push(one.elapsed());
    }
    Ok(LoopRun {
        wall: started.elapsed(),
        times,
        cpu: cpu_delta(cpu_before),
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

/// Transactions committed or rolled back in the catalog database so far.
async fn catalog_transactions(conn: &mut PgConnection, database: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1")
            .bind(database)
            .fetch_one(conn)
            .await?,
    )
}
