//! Neon provisioning benchmark (issue 13): N signups against the fake Neon API with slow
//! operations (200 ms each, two per new project) and Neon's rate limit enforced by the fake
//! (700 requests a minute, 40 a second, `429` beyond), two ways in the same run:
//!
//! - the guide's signup handler, one signup after another: `POST /projects`, poll the
//!   operations until finished, `GET …/connection_uri`, `psql -f` the schema over it (the
//!   server's own psql);
//! - pgfleet: N provision messages to one `pgfleet worker` with the limiter at Neon's
//!   limits (`PGFLEET_NEON_RATE_LIMIT=700`, `PGFLEET_NEON_BURST=40`).
//!
//! Prints both, the requests each tenant cost, the bound the rate limit sets
//! (700 / requests-per-tenant tenants a minute), the most requests the fake saw in any
//! minute and second, and how many it answered `429`.
//!
//! Run after a release build (`cargo build --release -p pgfleet-workers -p pgfleet-bench`):
//! `target/release/bench-neon-provision [--tenants 300] [--concurrency 16]`.

use anyhow::{bail, Context, Result};
use fake_neon::{FakeNeon, FakeNeonConfig};
use pgfleet_bench::{
    bench_namespace, cleanup, client_bindir, numeric_flag, publish_and_wait_active, wait_for_consumer,
};
use pgfleet_shared::secrets::SecretKey;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const KEY: &str = "bench-neon-key-0123456789";

#[tokio::main]
async fn main() -> Result<()> {
    let tenants = numeric_flag("--tenants", 300);
    let concurrency = numeric_flag("--concurrency", 16);
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
    println!("Neon provisioning benchmark: {tenants} tenants; fake Neon API with 200 ms operations and a 700/min, 40/s limit");

    let start_fake = |tag: &str| {
        let mut config = FakeNeonConfig::local(KEY, &format!("{namespace}_{tag}"));
        config.operation_ms = 200;
        config.rate_limit = Some((700, 40));
        config.faults.retry_after_secs = 1;
        FakeNeon::start(config)
    };
    let psql = client_bindir().await?.join("psql");

    let fake = start_fake("guide").await?;
    let guide = guide_loop(&fake, tenants, &psql, &schema).await;
    let guide_stats = stats(&fake, 0);
    drop(fake);

    let fake = start_fake("neon").await?;
    let ours = run_pgfleet(&pgfleet, &fake, &namespace, tenants, concurrency).await;
    let our_stats = stats(&fake, 1);
    drop(fake);
    cleanup(&namespace).await?;
    let (guide, ours) = (guide?, ours?);

    let per_min = |d: Duration| tenants as f64 * 60.0 / d.as_secs_f64();
    println!();
    println!(
        "| pipeline | wall | tenants/min | requests/tenant | most in a minute | most in a second | 429s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, wall, s) in [
        (
            "guide's handler, sequential (POST, poll, connection_uri, psql -f)",
            guide,
            &guide_stats,
        ),
        ("pgfleet worker, limiter at 700/min 40/s", ours, &our_stats),
    ] {
        println!(
            "| {name} | {:.1} s | {:.0} | {:.1} | {} | {} | {} |",
            wall.as_secs_f64(),
            per_min(wall),
            s.requests as f64 / tenants as f64,
            s.most_minute,
            s.most_second,
            s.too_many
        );
    }
    // With requests always waiting, the sliding window runs saturated: 700 in every minute
    // (40 a second until the minute's budget is spent, then nothing until the window slides).
    println!();
    println!(
        "pgfleet: {} requests in {:.2} min; most in any minute {} of 700 allowed, in any second {} of 40{}",
        our_stats.requests,
        ours.as_secs_f64() / 60.0,
        our_stats.most_minute,
        our_stats.most_second,
        if our_stats.most_minute >= 695 {
            " — the limit, not pgfleet, is the bound"
        } else {
            ""
        }
    );
    println!(
        "throughput ratio (pgfleet / guide): {:.2}x",
        guide.as_secs_f64() / ours.as_secs_f64()
    );
    Ok(())
}

struct Stats {
    requests: usize,
    most_minute: usize,
    most_second: usize,
    too_many: usize,
}

/// Figures over the requests from the `from`-th on (pgfleet's: after `server add`'s key check,
/// which is another process's request).
fn stats(fake: &FakeNeon, from: usize) -> Stats {
    let requests = fake.requests()[from..].to_vec();
    let times: Vec<Instant> = requests.iter().map(|r| r.at).collect();
    let most = |len: Duration| {
        let mut start = 0;
        (0..times.len())
            .map(|end| {
                while times[end].duration_since(times[start]) >= len {
                    start += 1;
                }
                end - start + 1
            })
            .max()
            .unwrap_or(0)
    };
    Stats {
        requests: requests.len(),
        most_minute: most(Duration::from_secs(60)),
        most_second: most(Duration::from_secs(1)),
        too_many: requests.iter().filter(|r| r.status == 429).count(),
    }
}

/// One Neon API call as the guide's script makes it: `fetch`, and on 429 wait `Retry-After`.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Result<Value> {
    loop {
        let mut request = http.request(method.clone(), &url).bearer_auth(KEY);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        if status == 429 || status == 423 {
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        if !(200..300).contains(&status) {
            bail!(
                "{method} {url}: {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        return Ok(response.json().await?);
    }
}

async fn guide_loop(
    fake: &FakeNeon,
    tenants: usize,
    psql: &std::path::Path,
    schema: &std::path::Path,
) -> Result<Duration> {
    pgfleet_shared::neon::client::install_crypto_provider();
    let http = reqwest::Client::new();
    let base = &fake.url;
    let started = Instant::now();
    for i in 0..tenants {
        let created = call(
            &http,
            reqwest::Method::POST,
            format!("{base}/projects"),
            Some(
                json!({ "project": { "name": format!("guide-{i}"), "region_id": "aws-us-east-2",
                          "branch": { "role_name": "app", "database_name": "app" } } }),
            ),
        )
        .await?;
        let project = created["project"]["id"]
            .as_str()
            .context("project id")?
            .to_owned();
        for op in created["operations"].as_array().cloned().unwrap_or_default() {
            let id = op["id"].as_str().context("operation id")?.to_owned();
            loop {
                let got = call(
                    &http,
                    reqwest::Method::GET,
                    format!("{base}/projects/{project}/operations/{id}"),
                    None,
                )
                .await?;
                if got["operation"]["status"] == "finished" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let uri = call(
            &http,
            reqwest::Method::GET,
            format!("{base}/projects/{project}/connection_uri?database_name=app&role_name=app"),
            None,
        )
        .await?;
        let uri = uri["uri"].as_str().context("uri")?;
        let ok = Command::new(psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", uri, "-f"])
            .arg(schema)
            .stdout(std::process::Stdio::null())
            .status()?
            .success();
        if !ok {
            bail!("psql -f failed for tenant {i}");
        }
    }
    Ok(started.elapsed())
}

async fn run_pgfleet(
    pgfleet: &std::path::Path,
    fake: &FakeNeon,
    namespace: &str,
    tenants: usize,
    concurrency: usize,
) -> Result<Duration> {
    let catalog_url = format!("postgres://postgres@127.0.0.1:5432/{namespace}_catalog");
    let key = SecretKey::generate().to_base64().expose_secret().to_owned();
    let env = |cmd: &mut Command| {
        cmd.env("PGFLEET_CATALOG_URL", &catalog_url)
            .env("PGFLEET_NAMESPACE", namespace)
            .env("PGFLEET_SECRET_KEY", &key);
    };
    let mut add = Command::new(pgfleet);
    add.args([
        "server",
        "add",
        "neon",
        "--neon",
        "--region",
        "aws-us-east-2",
        "--neon-api-url",
        &fake.url,
    ])
    .env("PGFLEET_NEON_API_KEY", KEY);
    env(&mut add);
    if !add.status()?.success() {
        bail!("pgfleet server add failed");
    }
    let log_path = std::env::temp_dir().join(format!("{namespace}-neon-worker.log"));
    let mut cmd = Command::new(pgfleet);
    cmd.args(["worker", "--concurrency", &concurrency.to_string()])
        .env("PGFLEET_NEON_RATE_LIMIT", "700")
        .env("PGFLEET_NEON_BURST", "40")
        .env("PGFLEET_LOG", "warn")
        .stderr(std::fs::File::create(&log_path)?);
    env(&mut cmd);
    let mut worker = cmd.spawn().context("starting the worker")?;
    let result = async {
        wait_for_consumer(namespace).await?;
        // The worker registered the self-hosted `default` server: new tenants go to Neon.
        let mut drain = Command::new(pgfleet);
        drain.args(["server", "drain", "default"]);
        env(&mut drain);
        if !drain.status()?.success() {
            bail!("pgfleet server drain default failed");
        }
        publish_and_wait_active(namespace, &catalog_url, tenants, &log_path).await
    }
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = worker.wait();
    result
}
