//! The worker runtime against real services: retries, crashed workers, horizontal scaling,
//! broker connection loss, graceful shutdown, and secrets kept out of logs.

use crate::support::*;
use pgfleet_shared::worker::Worker;
use pgfleet_shared::{TenantSlug, WorkerSettings};
use secrecy::ExposeSecret;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A tenant migration slow enough to kill or stop a worker in the middle of it.
const SLOW_MIGRATION: (&str, &str) = (
    "2_slow.sql",
    "SELECT pg_sleep(4); CREATE TABLE slow_done (id int);",
);

#[tokio::test]
async fn a_failed_attempt_is_retried_by_the_runtime_and_succeeds() {
    let env = TestEnv::new();
    let (faults, failures) = fail_once_at("provision.after_role");
    let ctx = env.job_context(faults).await;
    let catalog = ctx.catalog.clone();
    let settings = WorkerSettings {
        concurrency: 2,
        backoff_base: Duration::from_millis(100),
        sweep_interval: Duration::from_millis(200),
        ..WorkerSettings::default()
    };
    let namespace = ctx.namespace.clone();
    let worker = Worker::new(ctx, settings, AMQP_URL.to_owned().into());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    declare_topology(&namespace).await;

    env.publish_raw(
        "provision",
        br#"{"kind":"provision","tenant":"retry-me","key":"k-retry"}"#,
    )
    .await;
    let job = env
        .wait_job(&catalog, "k-retry", "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(job.attempts, 2, "one failed attempt, one success");
    assert!(job.error.is_none());
    assert_eq!(failures.load(Ordering::SeqCst), 2);
    env.wait_tenant_active(&catalog, "retry-me", Duration::from_secs(5))
        .await;
    assert_eq!(env.tenant_roles().await.len(), 1);

    shutdown.cancel();
    running.await.unwrap().unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_whose_worker_is_killed_is_finished_by_another_after_the_lease_expires() {
    let env = TestEnv::new().with_migrations(&[SLOW_MIGRATION]);
    let catalog = env.catalog().await;
    let short_lease = [("PGFLEET_LEASE_SECS", "3")];
    let mut doomed = env.spawn_worker("doomed", &[], &short_lease).await;

    env.publish_raw(
        "provision",
        br#"{"kind":"provision","tenant":"crashy","key":"k-crash"}"#,
    )
    .await;
    let running = env
        .wait_job(&catalog, "k-crash", "running", Duration::from_secs(30))
        .await;
    doomed.sigkill();

    let _rescuer = env.spawn_worker("rescuer", &[], &short_lease).await;
    let done = env
        .wait_job(&catalog, "k-crash", "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(done.id, running.id);
    assert_eq!(done.attempts, 2, "the killed attempt and the finishing one");
    assert_ne!(
        done.outcome.as_ref().unwrap()["worker"].as_str(),
        running.lease_owner.as_deref()
    );
    let tenant = env
        .wait_tenant_active(&catalog, "crashy", Duration::from_secs(5))
        .await;
    assert_eq!(tenant.schema_version, Some(2));
    assert_eq!(env.tenant_databases().await.len(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn two_workers_share_fifty_signups_and_provision_each_once() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let _a = env.spawn_worker("a", &["--concurrency", "4"], &[]).await;
    let _b = env.spawn_worker("b", &["--concurrency", "4"], &[]).await;

    let bodies: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            format!(r#"{{"kind":"provision","tenant":"shared-{i:02}","key":"signup-{i}"}}"#).into_bytes()
        })
        .collect();
    env.publish_raw_many("provision", &bodies).await;
    for i in 0..50 {
        env.wait_job(
            &catalog,
            &format!("signup-{i}"),
            "succeeded",
            Duration::from_secs(120),
        )
        .await;
    }
    let jobs = catalog.jobs(None, None, None, 1000).await.unwrap();
    assert_eq!(jobs.len(), 50);
    let mut workers = HashSet::new();
    for job in &jobs {
        assert_eq!(job.attempts, 1, "{job:?}");
        let outcome = job.outcome.as_ref().unwrap();
        assert_eq!(
            outcome["summary"], "provisioned",
            "each tenant provisioned by exactly one job"
        );
        workers.insert(outcome["worker"].as_str().unwrap().to_owned());
    }
    assert_eq!(workers.len(), 2, "both workers took a share: {workers:?}");
    assert_eq!(env.tenant_databases().await.len(), 50);
    assert_eq!(env.tenant_roles().await.len(), 50);
    env.cleanup().await;
}

#[tokio::test]
async fn copies_of_one_message_claimed_together_make_one_job_done_once() {
    // New jobs' first claims are written many per statement: copies of one key in the same
    // batch (or racing batches of two workers) must still make one job, run once.
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let _a = env.spawn_worker("a", &["--concurrency", "16"], &[]).await;
    let _b = env.spawn_worker("b", &["--concurrency", "16"], &[]).await;
    let mut bodies = Vec::new();
    for _copy in 0..8 {
        for i in 0..10 {
            bodies.push(
                format!(r#"{{"kind":"provision","tenant":"copied-{i}","key":"copied-{i}"}}"#).into_bytes(),
            );
        }
    }
    env.publish_raw_many("provision", &bodies).await;
    for i in 0..10 {
        env.wait_job(
            &catalog,
            &format!("copied-{i}"),
            "succeeded",
            Duration::from_secs(120),
        )
        .await;
    }
    let queue = format!("{}.provision", env.namespace);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while queue_depth(&queue).await > 0 {
        assert!(std::time::Instant::now() < deadline, "every copy is acked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = catalog.jobs(None, None, None, 1000).await.unwrap();
    assert_eq!(jobs.len(), 10, "one job per key: {jobs:?}");
    for job in &jobs {
        assert_eq!(job.attempts, 1, "{job:?}");
        assert_eq!(job.outcome.as_ref().unwrap()["summary"], "provisioned", "{job:?}");
    }
    assert!(env.drain_dead_letters().await.is_empty());
    assert_eq!(env.tenant_databases().await.len(), 10);
    env.cleanup().await;
}

#[tokio::test]
async fn a_batched_success_is_written_only_for_jobs_whose_lease_is_still_held() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let held = claim_backup(&catalog, &TenantSlug::parse("held").unwrap(), "held").await;
    let lost = claim_backup(&catalog, &TenantSlug::parse("lost").unwrap(), "lost").await;
    // Another worker took `lost` over meanwhile (its epoch moved on).
    sqlx::query("UPDATE jobs SET epoch = epoch + 1, lease_owner = 'other' WHERE id = $1")
        .bind(lost.id)
        .execute(catalog.pool())
        .await
        .unwrap();
    let outcome = serde_json::json!({"summary": "done"});
    let written = catalog
        .finish_succeeded(&[
            (held.id, held.epoch, outcome.clone()),
            (lost.id, lost.epoch, outcome.clone()),
            // An earlier attempt's success of the same job, in the same batch.
            (held.id, held.epoch - 1, serde_json::json!({"summary": "stale"})),
        ])
        .await
        .unwrap();
    assert_eq!(written, vec![(held.id, held.epoch)]);
    let held_now = catalog.job(held.id).await.unwrap().unwrap();
    assert_eq!(held_now.status, JobStatus::Succeeded);
    assert_eq!(held_now.outcome.unwrap()["summary"], "done");
    let lost_now = catalog.job(lost.id).await.unwrap().unwrap();
    assert_eq!(lost_now.status, JobStatus::Running);
    assert_eq!(lost_now.lease_owner.as_deref(), Some("other"));
    env.cleanup().await;
}

#[tokio::test]
async fn the_noop_benchmark_flag_is_refused_outside_a_benchmark_namespace() {
    let env = TestEnv::new();
    let (ok, _, err) = env.run_cli(&["worker", "--noop-jobs"]);
    assert!(!ok);
    assert!(err.contains("benchmark namespaces"), "{err}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_worker_reconnects_after_the_broker_drops_its_connections() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let worker = env.spawn_worker("w", &["--concurrency", "2"], &[]).await;
    let pid = worker.child.id().to_string();

    // Close this worker's connections from the broker side, as a broker restart would.
    let listed = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let mut closed = 0;
    for line in listed.lines().filter(|l| l.contains(&format!(":{pid}:"))) {
        let conn_pid = line.split_whitespace().next().unwrap();
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", conn_pid, "test: simulated broker restart"])
            .status()
            .unwrap();
        assert!(status.success());
        closed += 1;
    }
    assert!(closed >= 1, "found no connection of worker {pid} in:\n{listed}");
    worker.wait_for_log("reconnecting", Duration::from_secs(30)).await;

    env.publish_raw(
        "provision",
        br#"{"kind":"provision","tenant":"after-drop","key":"k-drop"}"#,
    )
    .await;
    env.wait_job(&catalog, "k-drop", "succeeded", Duration::from_secs(60))
        .await;
    drop(worker);
    env.cleanup().await;
}

#[tokio::test]
async fn sigterm_hands_a_running_job_back_after_the_grace_period() {
    let env = TestEnv::new().with_migrations(&[SLOW_MIGRATION]);
    let catalog = env.catalog().await;
    let mut leaving = env
        .spawn_worker("leaving", &["--shutdown-grace-secs", "1"], &[])
        .await;
    env.publish_raw(
        "provision",
        br#"{"kind":"provision","tenant":"handed-back","key":"k-hand"}"#,
    )
    .await;
    env.wait_job(&catalog, "k-hand", "running", Duration::from_secs(30))
        .await;

    let status = leaving.terminate();
    assert!(status.success(), "graceful exit: {status:?}\n{}", leaving.log());
    assert!(
        leaving.log().contains("handing the job back"),
        "{}",
        leaving.log()
    );
    let job = catalog.job_by_producer_key("k-hand").await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.attempts, 0, "a handed-back attempt is not spent");

    let _next = env.spawn_worker("next", &[], &[]).await;
    let job = env
        .wait_job(&catalog, "k-hand", "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(job.attempts, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn no_password_or_secret_url_appears_in_logs_or_json_output() {
    let env = TestEnv::new();
    let services = env.services().await;
    let worker = env
        .spawn_worker("verbose", &[], &[("PGFLEET_LOG", "trace")])
        .await;
    let (ok, out, err) = env.run_cli(&["tenant", "create", "secretive", "--wait", "--json"]);
    assert!(ok, "{out}{err}");
    let tenant = env
        .wait_tenant_active(&services.catalog, "secretive", Duration::from_secs(30))
        .await;
    let password = services.catalog.tenant_password(&tenant).unwrap();
    let password = password.expose_secret();

    let mut outputs = vec![worker.log(), out, err];
    for args in [
        &["tenant", "show", "secretive", "--json"][..],
        &["tenant", "list", "--json"],
        &["jobs", "list", "--json"],
    ] {
        let (ok, out, err) = env.run_cli(args);
        assert!(ok, "{args:?}: {err}");
        outputs.push(out);
        outputs.push(err);
    }
    assert!(
        outputs[0].contains("job succeeded"),
        "the log was captured:\n{}",
        outputs[0]
    );
    for text in &outputs {
        assert!(!text.contains(password), "the tenant password leaked:\n{text}");
        assert!(
            !text.contains("SCRAM-SHA-256$"),
            "a password verifier leaked:\n{text}"
        );
        assert!(!text.contains(&env.secret_key), "the secret key leaked:\n{text}");
        assert!(
            !text.contains("guest:guest"),
            "the broker password leaked:\n{text}"
        );
    }
    // The one command that prints a secret, because the user asked for it.
    let (ok, url, _) = env.run_cli(&["tenant", "url", "secretive"]);
    assert!(ok && url.contains(password));
    drop(worker);
    let _ = TenantSlug::parse("secretive");
    env.cleanup().await;
}
