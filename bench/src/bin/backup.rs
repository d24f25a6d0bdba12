//! Backup benchmark (issue: backups). A tenant filled with `bench/tenant-data.sql` at scale
//! N (scale 10 ≈ 750 MB of plain dump), one S3-compatible server (moto on loopback) for all,
//! in one run:
//!   (a) the guide's pipeline: `pg_dump | gzip > f && aws s3 cp f s3://…`
//!   (b) a skilled shell user's: `pg_dump | pigz | aws s3 cp - s3://…`
//!   pgfleet: `pgfleet backup SLUG --wait` (enqueue → succeeded, from the job's timestamps)
//! and the worker's peak RSS (VmHWM of a worker process that ran only that backup).
//!
//! Run: `bench/backup.sh [--scales 1,10]` (installs pigz/awscli/moto if missing).

use anyhow::{bail, Context, Result};
use pgfleet_bench::{bench_namespace, checkpoint, cleanup, peak_rss_kib};
use pgfleet_shared::secrets::SecretKey;
use secrecy::ExposeSecret;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Env {
    pgfleet: PathBuf,
    namespace: String,
    catalog_url: String,
    secret_key: String,
    endpoint: String,
    bucket: String,
    work: PathBuf,
}

impl Env {
    fn cmd(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("PGFLEET_CATALOG_URL", &self.catalog_url)
            .env("PGFLEET_NAMESPACE", &self.namespace)
            .env("PGFLEET_SECRET_KEY", &self.secret_key)
            .env("PGFLEET_BACKUP_URL", format!("s3://{}/pgfleet", self.bucket))
            .env("PGFLEET_LOG", "warn")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1");
        cmd
    }

    fn pgfleet(&self, args: &[&str]) -> Result<String> {
        let out = self.cmd(&self.pgfleet).args(args).output()?;
        if !out.status.success() {
            bail!(
                "pgfleet {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn worker(&self) -> Result<Child> {
        Ok(self
            .cmd(&self.pgfleet)
            .args(["worker", "--concurrency", "2"])
            .stderr(std::fs::File::create(self.work.join("worker.log"))?)
            .spawn()?)
    }

    fn shell(&self, script: &str) -> Result<Duration> {
        let started = Instant::now();
        let status = self
            .cmd(Path::new("bash"))
            .args(["-c", &format!("set -euo pipefail; {script}")])
            .status()?;
        if !status.success() {
            bail!("baseline failed: {script}");
        }
        Ok(started.elapsed())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let scales: Vec<u32> = args
        .iter()
        .position(|a| a == "--scales")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 10]);
    let repo = std::env::current_dir()?;
    let data_sql = repo.join("bench/tenant-data.sql");
    if !data_sql.exists() {
        bail!("run from the repository root (needs {})", data_sql.display());
    }
    let pgfleet = std::env::current_exe()?.with_file_name("pgfleet");
    let namespace = bench_namespace();
    let work = std::env::temp_dir().join(&namespace);
    std::fs::create_dir_all(&work)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut moto = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("moto_server not found (pip install \"moto[server]\")")?;
    let env = Env {
        pgfleet,
        catalog_url: format!("postgres://postgres@127.0.0.1:5432/{namespace}_catalog"),
        secret_key: SecretKey::generate().to_base64().expose_secret().to_owned(),
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: namespace.replace('_', "-"),
        namespace,
        work,
    };
    let result = run(&env, &scales, &data_sql).await;
    let _ = moto.kill();
    cleanup(&env.namespace).await?;
    let _ = std::fs::remove_dir_all(&env.work);
    result
}

async fn run(env: &Env, scales: &[u32], data_sql: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(env.endpoint.trim_start_matches("http://")).is_err() {
        if Instant::now() > deadline {
            bail!("moto did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.shell(&format!(
        "aws --endpoint-url {} s3 mb s3://{} >/dev/null",
        env.endpoint, env.bucket
    ))?;
    let mut rows = Vec::new();
    for &scale in scales {
        let slug = format!("bench-scale-{scale}");
        println!("scale {scale}: provisioning and filling {slug}…");
        let mut worker = env.worker()?;
        let result = async {
            env.pgfleet(&["tenant", "create", &slug, "--wait"])?;
            let url = env.pgfleet(&["tenant", "url", &slug])?.trim().to_owned();
            let status = Command::new("psql")
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-v",
                    &format!("scale={scale}"),
                    "-d",
                    &url,
                    "-f",
                ])
                .arg(data_sql)
                .stdout(Stdio::null())
                // ANALYZE warns about catalogs only a superuser may analyze.
                .stderr(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("filling the tenant failed");
            }
            Ok(url)
        }
        .await;
        let _ = Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status();
        let _ = worker.wait();
        let url = result?;
        checkpoint().await?;
        // Warm the page cache the same way for everyone.
        env.shell(&format!("pg_dump '{url}' > /dev/null"))?;
        let raw = env.shell(&format!("pg_dump '{url}' > /dev/null"))?;
        let file = env.work.join("dump.sql.gz");
        let guide = env.shell(&format!(
            "pg_dump '{url}' | gzip > '{f}' && aws --endpoint-url {e} s3 cp --quiet '{f}' s3://{b}/guide/{slug}.sql.gz",
            f = file.display(),
            e = env.endpoint,
            b = env.bucket
        ))?;
        let dump_bytes = std::fs::metadata(&file)?.len();
        std::fs::remove_file(&file)?;
        let skilled = env.shell(&format!(
            "pg_dump '{url}' | pigz -6 | aws --endpoint-url {e} s3 cp --quiet - s3://{b}/pigz/{slug}.sql.gz",
            e = env.endpoint,
            b = env.bucket
        ))?;

        // pgfleet: a fresh worker that runs only this backup, so its VmHWM is this backup's.
        let mut worker = env.worker()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let measured = async {
            let out = env.pgfleet(&["backup", &slug, "--wait", "--json"])?;
            let job: serde_json::Value = serde_json::from_str(&out)?;
            let ms = |field: &str| -> Result<i64> {
                let t = job[field].as_str().context("missing timestamp")?;
                Ok(chrono::DateTime::parse_from_rfc3339(t)?.timestamp_millis())
            };
            let wall = Duration::from_millis((ms("finished_at")? - ms("created_at")?) as u64);
            let details = &job["outcome"]["details"];
            Ok::<_, anyhow::Error>((
                wall,
                details["bytes"].as_u64().unwrap_or(0),
                details["raw_bytes"].as_u64().unwrap_or(0),
            ))
        }
        .await;
        let rss = peak_rss_kib(worker.id());
        let _ = Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status();
        let _ = worker.wait();
        let (pgfleet, stored, raw_bytes) = measured?;
        rows.push((
            scale, raw, guide, skilled, pgfleet, rss, raw_bytes, stored, dump_bytes,
        ));
    }

    println!();
    println!("| scale | plain dump | pg_dump > /dev/null | (a) pg_dump \\| gzip > f; aws s3 cp | (b) pg_dump \\| pigz \\| aws s3 cp - | pgfleet backup | pgfleet / (a) | pgfleet / (b) | worker peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (scale, raw, guide, skilled, pgfleet, rss, raw_bytes, stored, gzip_bytes) in rows {
        println!(
            "| {scale} | {:.0} MB | {:.2} s | {:.2} s ({:.0} MB) | {:.2} s | {:.2} s ({:.0} MB) | {:.2}x | {:.2}x | {:.1} MiB |",
            raw_bytes as f64 / 1e6,
            raw.as_secs_f64(),
            guide.as_secs_f64(),
            gzip_bytes as f64 / 1e6,
            skilled.as_secs_f64(),
            pgfleet.as_secs_f64(),
            stored as f64 / 1e6,
            pgfleet.as_secs_f64() / guide.as_secs_f64(),
            pgfleet.as_secs_f64() / skilled.as_secs_f64(),
            rss as f64 / 1024.0,
        );
    }
    println!("\nrequired: pgfleet <= 0.5x (a) and peak RSS <= 64 MiB; target: <= 1.0x (b)");
    Ok(())
}
