//! The chaos harness: a fleet of real `pgfleet worker` processes that can be SIGKILLed and
//! respawned while work runs, and the invariants every scenario must end with:
//!
//! - every accepted job ends in a terminal state exactly once (`lost`: expected jobs that
//!   did not end as expected; `doubled`: extra jobs, or a job whose effect happened twice);
//! - every active tenant has exactly one database and role, deleted ones none;
//! - nothing is left that no row accounts for (`leftovers`: objects and unfinished uploads
//!   in the store, databases and roles in the install's namespace, unfinished restores);
//! - no job is `running` without a live lease;
//! - every job queue still has a consumer.
//!
//! Each scenario appends its figures to `chaos-report.jsonl` in cargo's test temp folder.

use crate::support::*;
use pgfleet_shared::catalog::Catalog;
use rand::Rng;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Scenarios share the broker and Postgres, which some of them restart: one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Multiplies the amounts of work (`CHAOS_SCALE`, default 1; the soak runs more).
pub fn scale() -> usize {
    std::env::var("CHAOS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Settings every chaos worker runs with: short leases and backoffs, so faults are
/// recovered from within seconds.
pub const WORKER_ENV: [(&str, &str); 4] = [
    ("PGFLEET_LEASE_SECS", "4"),
    ("PGFLEET_BACKOFF_MS", "200"),
    ("PGFLEET_SWEEP_INTERVAL_MS", "300"),
    ("PGFLEET_MAX_ATTEMPTS", "12"),
];

/// Worker processes by slot; a killed one is replaced in its slot.
pub struct Workers {
    env_extra: Vec<Vec<(String, String)>>,
    slots: Vec<Option<WorkerProcess>>,
    pub kills: usize,
    spawned: usize,
}

impl Workers {
    /// Starts `n` workers; `extra[i]` adds environment to worker `i` (e.g. a skewed clock).
    pub async fn start(env: &TestEnv, n: usize, extra: Vec<Vec<(String, String)>>) -> Arc<Mutex<Self>> {
        let mut workers = Self {
            env_extra: (0..n)
                .map(|i| extra.get(i).cloned().unwrap_or_default())
                .collect(),
            slots: Vec::new(),
            kills: 0,
            spawned: 0,
        };
        for i in 0..n {
            let process = workers.spawn(env, i);
            process.wait_for_log("consuming", Duration::from_secs(60)).await;
            workers.slots.push(Some(process));
        }
        Arc::new(Mutex::new(workers))
    }

    fn spawn(&mut self, env: &TestEnv, slot: usize) -> WorkerProcess {
        self.spawned += 1;
        let log_path = env.dir.join(format!("worker-{slot}-{}.log", self.spawned));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = env.pgfleet();
        cmd.args(["worker", "--concurrency", "4"])
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in WORKER_ENV {
            cmd.env(k, v);
        }
        for (k, v) in &self.env_extra[slot] {
            cmd.env(k, v);
        }
        WorkerProcess {
            child: cmd.spawn().expect("spawn worker"),
            log_path,
        }
    }

    /// SIGKILLs a random worker and starts a replacement in its slot.
    pub fn kill_one(&mut self, env: &TestEnv) {
        let slot = rand::thread_rng().gen_range(0..self.slots.len());
        if let Some(mut worker) = self.slots[slot].take() {
            worker.sigkill();
            self.kills += 1;
        }
        let replacement = self.spawn(env, slot);
        self.slots[slot] = Some(replacement);
    }

    pub fn live(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

/// Kills a random worker every 1–2 s until `stop`; returns the kills.
pub fn killer(
    env: Arc<TestEnv>,
    workers: Arc<Mutex<Workers>>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let pause = Duration::from_millis(rand::thread_rng().gen_range(1000..2000));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            workers.lock().unwrap().kill_one(&env);
        }
    })
}

/// Waits until no job is queued or running (and at least `at_least` jobs exist).
pub async fn settle(catalog: &Catalog, at_least: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (total, live): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status IN ('queued', 'running')) FROM jobs",
        )
        .fetch_one(catalog.pool())
        .await
        .unwrap_or((0, 1));
        if total >= at_least && live == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not settle within {timeout:?}: {live} of {total} still queued or running"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a scenario must end with.
#[derive(Default)]
pub struct Expected {
    /// Jobs by kind that must have succeeded, each exactly once.
    pub succeeded: Vec<(&'static str, i64)>,
    /// Jobs by kind allowed to end otherwise (failed or dead) rather than succeed.
    pub may_fail: Vec<&'static str>,
    /// Jobs by kind beyond `succeeded` that the scenario itself asked for (e.g. a rollout
    /// run again after a failure).
    pub extra: Vec<(&'static str, i64)>,
    pub active: Vec<String>,
    pub deleted: Vec<String>,
    /// Restore targets that must exist, complete.
    pub restored: Vec<String>,
}

/// The figures of one scenario run.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub scenario: String,
    pub faults: usize,
    pub jobs: i64,
    pub lost: i64,
    pub doubled: i64,
    pub leftovers: usize,
    pub seconds: f64,
    pub details: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            ..Self::default()
        }
    }

    /// Panics with the details unless nothing was lost, doubled or left over.
    pub fn assert_clean(&self) {
        assert!(
            self.lost == 0 && self.doubled == 0 && self.leftovers == 0,
            "{}: lost {}, doubled {}, leftovers {}:\n{}",
            self.scenario,
            self.lost,
            self.doubled,
            self.leftovers,
            self.details.join("\n")
        );
    }

    pub fn fail(&mut self, what: &str, detail: String, counter: fn(&mut Report) -> &mut i64) {
        *counter(self) += 1;
        self.details.push(format!("{what}: {detail}"));
    }
}

/// Checks every invariant (see the module docs) and writes the report.
pub async fn check(
    env: &TestEnv,
    catalog: &Catalog,
    workers: &Arc<Mutex<Workers>>,
    expected: &Expected,
    report: &mut Report,
) {
    let jobs: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT kind, status, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")
            .fetch_all(catalog.pool())
            .await
            .unwrap();
    report.jobs = jobs.iter().map(|j| j.2).sum();
    for (kind, want) in &expected.succeeded {
        let got: i64 = jobs
            .iter()
            .filter(|j| j.0 == *kind && j.1 == "succeeded")
            .map(|j| j.2)
            .sum();
        let all: i64 = jobs.iter().filter(|j| j.0 == *kind).map(|j| j.2).sum();
        if got < *want && !expected.may_fail.contains(kind) {
            // What became of the others: status, attempts, error.
            let others: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
                "SELECT tenant::text, status, attempts, error FROM jobs WHERE kind = $1 AND status <> 'succeeded' LIMIT 5",
            )
            .bind(kind)
            .fetch_all(catalog.pool())
            .await
            .unwrap();
            report.fail(
                "lost",
                format!("{got} of {want} {kind} jobs succeeded; the others: {others:?}"),
                |r| &mut r.lost,
            );
            report.lost += want - got - 1;
        }
        let extra: i64 = expected.extra.iter().filter(|e| e.0 == *kind).map(|e| e.1).sum();
        if all > *want + extra {
            report.fail("doubled", format!("{all} {kind} jobs for {want} requests"), |r| {
                &mut r.doubled
            });
        }
    }
    let stuck: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE status = 'running' AND coalesce(lease_expires_at < now(), true)",
    )
    .fetch_one(catalog.pool())
    .await
    .unwrap();
    if stuck > 0 {
        report.fail(
            "lost",
            format!("{stuck} jobs running without a live lease"),
            |r| &mut r.lost,
        );
    }
    // One good backup per successful backup job.
    let doubled_backups: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT job_id FROM backups WHERE status = 'succeeded' AND job_id IS NOT NULL
                                 GROUP BY job_id HAVING count(*) > 1) x",
    )
    .fetch_one(catalog.pool())
    .await
    .unwrap();
    if doubled_backups > 0 {
        report.fail(
            "doubled",
            format!("{doubled_backups} jobs stored two good backups"),
            |r| &mut r.doubled,
        );
    }

    // Databases and roles of the namespace are exactly those of the active tenants.
    let mut want_databases: Vec<String> = expected
        .active
        .iter()
        .map(|s| format!("{}_{s}", env.namespace))
        .collect();
    want_databases.sort();
    let databases = env.tenant_databases().await;
    if databases != want_databases {
        let extra: Vec<&String> = databases.iter().filter(|d| !want_databases.contains(d)).collect();
        let missing: Vec<&String> = want_databases.iter().filter(|d| !databases.contains(d)).collect();
        report.leftovers += extra.len();
        report.lost += missing.len() as i64;
        report
            .details
            .push(format!("databases: extra {extra:?}, missing {missing:?}"));
    }
    // A deleted tenant's role re-created by a restore owns the restored database: accounted for.
    let roles: Vec<String> = sqlx::query_scalar(
        "SELECT rolname::text FROM pg_roles r WHERE starts_with(rolname, $1)
            AND NOT (rolcanlogin = false AND EXISTS (SELECT FROM pg_database d WHERE d.datdba = r.oid))
          ORDER BY 1",
    )
    .bind(format!("{}_", env.namespace))
    .fetch_all(&mut admin().await)
    .await
    .unwrap();
    let extra_roles: Vec<&String> = roles.iter().filter(|r| !want_databases.contains(r)).collect();
    if !extra_roles.is_empty() || roles.len() != want_databases.len() {
        report.leftovers += extra_roles.len();
        report.details.push(format!(
            "roles: {} for {} active tenants, extra {extra_roles:?}",
            roles.len(),
            want_databases.len()
        ));
    }
    let statuses: Vec<(String, String)> = sqlx::query_as("SELECT slug::text, status FROM tenants ORDER BY 1")
        .fetch_all(catalog.pool())
        .await
        .unwrap();
    for (slug, status) in &statuses {
        let want = if expected.active.contains(slug) {
            "active"
        } else if expected.deleted.contains(slug) {
            "deleted"
        } else {
            "?"
        };
        if status != want {
            report.fail(
                "lost",
                format!("tenant {slug} is {status}, expected {want}"),
                |r| &mut r.lost,
            );
        }
    }
    for target in &expected.restored {
        let comment: Option<Option<String>> = sqlx::query_scalar(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
        )
        .bind(target)
        .fetch_optional(&mut admin().await)
        .await
        .unwrap();
        match comment.flatten() {
            Some(c) if !c.contains("incomplete") => {}
            other => report.fail("lost", format!("restore target {target}: {other:?}"), |r| {
                &mut r.lost
            }),
        }
    }

    // The store holds exactly the good backups the catalog records.
    if let Some(endpoint) = &env.s3_endpoint {
        let client = s3_client(endpoint);
        let mut objects = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(env.bucket())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap();
            objects.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        let recorded: Vec<String> =
            sqlx::query_scalar("SELECT key FROM backups WHERE status IN ('succeeded', 'pruning')")
                .fetch_all(catalog.pool())
                .await
                .unwrap();
        let unaccounted: Vec<&String> = objects.iter().filter(|o| !recorded.contains(o)).collect();
        let missing: Vec<&String> = recorded.iter().filter(|r| !objects.contains(r)).collect();
        let uploads = client
            .list_multipart_uploads()
            .bucket(env.bucket())
            .send()
            .await
            .unwrap()
            .uploads()
            .len();
        report.leftovers += unaccounted.len() + uploads;
        report.lost += missing.len() as i64;
        if !unaccounted.is_empty() || uploads > 0 || !missing.is_empty() {
            report.details.push(format!(
                "store: unaccounted {unaccounted:?}, unfinished uploads {uploads}, recorded but missing {missing:?}"
            ));
        }
    }

    // Nothing was dead-lettered: every message in these scenarios is well-formed.
    // (A job that gave up is copied there too; whether it should have is the counts' business.)
    let dead: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters d WHERE NOT EXISTS (SELECT FROM jobs j WHERE j.id = d.job_id AND j.status = 'dead')",
    )
        .fetch_one(catalog.pool())
        .await
        .unwrap();
    if dead > 0 {
        let reasons: Vec<String> = sqlx::query_scalar("SELECT queue || ': ' || reason FROM dead_letters")
            .fetch_all(catalog.pool())
            .await
            .unwrap();
        report.fail(
            "lost",
            format!("{dead} messages dead-lettered ({reasons:?})"),
            |r| &mut r.lost,
        );
    }
    // Restores spool to unlinked temp files: none may be left with a name.
    let temp_files = std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("pgfleet-restore-"))
                .count()
        })
        .unwrap_or(0);
    if temp_files > 0 {
        report.leftovers += temp_files;
        report
            .details
            .push(format!("{temp_files} restore temp files left"));
    }

    // Every job queue still has a consumer.
    let ns = pgfleet_shared::Namespace::parse(&env.namespace).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for kind in pgfleet_shared::JobKind::ALL {
        let queue = ns.kind_queue(*kind);
        loop {
            let consumers = try_queue_counts(&queue).await.map_or(0, |(_, c)| c);
            if consumers >= 1 {
                break;
            }
            if Instant::now() > deadline {
                report.details.push(format!(
                    "queue {queue} has no consumer (of {} workers)",
                    workers.lock().unwrap().live()
                ));
                report.lost += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    write_report(report);
}

fn write_report(report: &Report) {
    let line = serde_json::to_string(report).unwrap();
    println!("CHAOS {line}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-report.jsonl");
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

/// Publishes each signup twice (an application retrying), as plain AMQP.
pub async fn signups(env: &TestEnv, slugs: &[String]) {
    let bodies: Vec<Vec<u8>> = slugs
        .iter()
        .flat_map(|s| {
            let body =
                format!(r#"{{"kind": "provision", "tenant": "{s}", "key": "signup-{s}"}}"#).into_bytes();
            [body.clone(), body]
        })
        .collect();
    env.publish_raw_many("provision", &bodies).await;
}

/// Longest one CLI command of a scenario may take (they enqueue; none waits for jobs).
const CLI_LIMIT: Duration = Duration::from_secs(120);

/// Longest a scenario may take, faults, waits and checks included: a stuck scenario fails
/// with this message instead of holding CI (its worker processes are killed on the way out).
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(360);

/// Runs one scenario: alone (they restart shared services), within `SCENARIO_LIMIT` times
/// the scale.
pub async fn scenario(name: &str, body: impl std::future::Future<Output = ()>) {
    let _serial = SERIAL.lock().await;
    let limit = SCENARIO_LIMIT * scale() as u32;
    if tokio::time::timeout(limit, body).await.is_err() {
        panic!("chaos scenario {name:?} did not finish within {limit:?}");
    }
}

/// Runs a pgfleet CLI command; panics unless it succeeds within `CLI_LIMIT`.
pub async fn cli(env: &TestEnv, args: &[&str]) -> String {
    cli_with(env, args, &[]).await
}

/// `cli` with extra environment (e.g. the jobs' attempt budget, which producers set).
pub async fn cli_with(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> String {
    let mut cmd = env.pgfleet();
    cmd.args(args);
    // The same attempt budget as the workers give the jobs they record.
    for (k, v) in WORKER_ENV.iter().chain(vars) {
        cmd.env(k, v);
    }
    let shown = format!("{args:?}");
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(CLI_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("pgfleet {shown} did not end within {CLI_LIMIT:?}"))
        .unwrap();
    assert!(
        out.status.success(),
        "pgfleet {shown} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell command to completion.
pub fn sh(command: &str) {
    let status = Command::new("bash").arg("-c").arg(command).status().unwrap();
    assert!(status.success(), "{command}");
}
