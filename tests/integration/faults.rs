//! The stuck and lost states a review found, each reproduced against the real services:
//! a consumer the broker cancels, a black-holed or unreachable catalog, a tenant session
//! sitting on a lock, a delete whose final backup fails, a worker with another server URL,
//! two installs sharing a store, a slow worker clock, a restore whose outcome was lost,
//! an S3 server without an optional call, queues declared by an older version, and history
//! that grows without bound.

use crate::support::*;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties};
use pgfleet_shared::jobs::FaultPoints;
use pgfleet_shared::TenantSlug;
use std::process::Command;
use std::time::{Duration, Instant};

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `pg_dump` processes the worker runs.
fn pg_dumps_of(worker: &WorkerProcess) -> usize {
    let out = Command::new("pgrep")
        .args(["-P", &worker.child.id().to_string(), "pg_dump"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Sessions of `role` waiting for a lock (a `pg_dump` held up by a tenant's lock).
async fn waiting_sessions(role: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'",
    )
    .bind(role)
    .fetch_one(&mut admin().await)
    .await
    .unwrap()
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn readyz(port: u16) -> (u16, serde_json::Value) {
    match http(None)
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// The catalog URL of `env` through `proxy`.
fn through(env: &TestEnv, proxy: &TcpProxy) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/{}_catalog",
        proxy.port, env.namespace
    )
}

#[tokio::test]
async fn a_job_queue_deleted_under_a_worker_gets_its_consumer_back() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let port = free_port();
    let worker = env
        .spawn_worker("w", &["--health-listen", &format!("127.0.0.1:{port}")], &[])
        .await;
    cli_ok(&env, &["tenant", "create", "requeued", "--wait"]);
    assert_eq!(readyz(port).await.0, 200);

    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    conn.create_channel()
        .await
        .unwrap()
        .queue_delete(
            format!("{}.backup", env.namespace).as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "bye".into()).await;
    worker
        .wait_for_log("the consumer of", Duration::from_secs(30))
        .await;

    // The queue is declared again and consumed: a backup published now runs.
    cli_ok(&env, &["backup", "requeued", "--key", "after-delete"]);
    env.wait_job(&catalog, "after-delete", "succeeded", Duration::from_secs(60))
        .await;
    wait_until("the worker is ready again", Duration::from_secs(30), || async {
        readyz(port).await.0 == 200
    })
    .await;
    env.cleanup().await;
}

// The proxy runs in this test's runtime while the test blocks on CLI calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_confirm_its_lease_stops_the_job_before_the_lease_expires() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = through(&env, &proxy);
    let worker = env
        .spawn_worker(
            "w",
            &[],
            &[("PGFLEET_CATALOG_URL", &url), ("PGFLEET_LEASE_SECS", "6")],
        )
        .await;
    cli_ok(&env, &["tenant", "create", "blocked", "--wait"]);
    // A session of the tenant holds a lock pg_dump waits for (up to a minute): the backup
    // is a long-running side effect.
    let mut holder = tenant_conn(&env, "blocked").await;
    sqlx::raw_sql("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    cli_ok(&env, &["backup", "blocked", "--key", "stalled"]);
    let role = format!("{}_blocked", env.namespace);
    wait_until("pg_dump waits for the lock", Duration::from_secs(30), || async {
        waiting_sessions(&role).await > 0
    })
    .await;
    assert_eq!(pg_dumps_of(&worker), 1);

    proxy.black_hole();
    let started = Instant::now();
    // (Its server session lingers, waiting for the lock: Postgres notices a vanished client
    // only when it next talks to it.)
    wait_until("pg_dump is stopped", Duration::from_secs(20), || async {
        pg_dumps_of(&worker) == 0
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "pg_dump ran {:?} after the catalog went silent, past the lease",
        started.elapsed()
    );
    worker
        .wait_for_log("stopping the job before it could expire", Duration::from_secs(6))
        .await;

    // With the catalog back and the lock released, the job is done by a later attempt.
    proxy.restore();
    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
    let job = env
        .wait_job(&catalog, "stalled", "succeeded", Duration::from_secs(90))
        .await;
    assert!(job.attempts >= 2, "{job:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn an_attempt_that_was_taken_over_records_nothing() {
    let env = TestEnv::new();
    let ctx = env.job_context(FaultPoints::default()).await;
    let slug = TenantSlug::parse("overtaken").unwrap();
    pgfleet_shared::jobs::provision::provision_tenant(&ctx, &slug, None)
        .await
        .unwrap();
    let job = claim_backup(&ctx.catalog, &slug, "overtaken-backup").await;
    // Another worker takes the job over while this attempt still runs.
    sqlx::query("UPDATE jobs SET epoch = epoch + 1 WHERE id = $1")
        .bind(job.id)
        .execute(ctx.catalog.pool())
        .await
        .unwrap();
    let err = pgfleet_shared::jobs::run(&ctx, &job)
        .await
        .expect_err("an overtaken attempt must not succeed");
    assert!(err.to_string().contains("lease lost"), "{err}");
    let good: i64 = sqlx::query_scalar("SELECT count(*) FROM backups WHERE status = 'succeeded'")
        .fetch_one(ctx.catalog.pool())
        .await
        .unwrap();
    assert_eq!(good, 0, "the overtaken attempt recorded a good backup");
    env.cleanup().await;
}

#[tokio::test]
async fn a_tenant_session_holding_a_lock_fails_only_its_own_migration() {
    let env = TestEnv::new().with_migrations(&[]);
    let _worker = env.spawn_worker("w", &["--concurrency", "4"], &[]).await;
    for slug in ["locker", "calm-a", "calm-b"] {
        cli_ok(&env, &["tenant", "create", slug, "--wait"]);
    }
    let mut holder = tenant_conn(&env, "locker").await;
    sqlx::raw_sql("BEGIN; LOCK TABLE users IN ACCESS SHARE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    std::fs::write(
        env.migrations_dir.clone().unwrap().join("2_nickname.sql"),
        "ALTER TABLE users ADD COLUMN nickname text;",
    )
    .unwrap();
    // One slot on the server: a migration waiting for ever would hold up every tenant.
    let mut migrate = env.pgfleet();
    migrate.args([
        "--max-attempts",
        "2",
        "migrate",
        "--all",
        "--wait",
        "--json",
        "--concurrency",
        "1",
        "--lock-timeout",
        "1s",
    ]);
    let out = tokio::task::spawn_blocking(move || migrate.output().unwrap())
        .await
        .unwrap();
    let rollout: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(rollout["succeeded"], 2, "{rollout}");
    let locker = rollout["per_tenant"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "locker")
        .unwrap();
    assert!(
        locker["error"].as_str().unwrap().contains("lock timeout"),
        "{locker}"
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
    cli_ok(&env, &["migrate", "--all", "--wait"]);
    env.cleanup().await;
}

// The proxy runs in this test's runtime while the test blocks on CLI calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_published_during_a_catalog_outage_wait_in_their_queue() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    declare_topology(&pgfleet_shared::Namespace::parse(&env.namespace).unwrap()).await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = through(&env, &proxy);
    let port = free_port();
    let _worker = env
        .spawn_worker(
            "w",
            &[
                "--health-listen",
                &format!("127.0.0.1:{port}"),
                "--defer-after-ms",
                "1000",
            ],
            &[("PGFLEET_CATALOG_URL", &url)],
        )
        .await;
    proxy.cut();
    wait_until(
        "the worker says why it is not ready",
        Duration::from_secs(30),
        || async {
            let (status, body) = readyz(port).await;
            status == 503 && body["worker"].as_str().unwrap_or_default().contains("catalog")
        },
    )
    .await;
    let bodies: Vec<Vec<u8>> = (1..=5)
        .map(|i| format!(r#"{{"kind": "provision", "tenant": "outage-{i}", "key": "o{i}"}}"#).into_bytes())
        .collect();
    env.publish_raw_many("provision", &bodies).await;
    // Several deferral periods later the signups still wait, untouched, with no consumer.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let queue = format!("{}.provision", env.namespace);
    let (ready, consumers) = queue_counts(&queue).await;
    assert_eq!(ready, 5, "the signups left their queue during the outage");
    assert_eq!(consumers, 0, "the worker kept consuming without a catalog");
    assert!(env.drain_dead_letters().await.is_empty());

    proxy.restore();
    for i in 1..=5 {
        env.wait_tenant_active(&catalog, &format!("outage-{i}"), Duration::from_secs(60))
            .await;
    }
    assert_eq!(readyz(port).await.0, 200);
    env.cleanup().await;
}

#[tokio::test]
async fn a_delete_that_cannot_take_its_final_backup_leaves_the_tenant_active() {
    let mut server = S3Server::start();
    let env = TestEnv::new().with_s3(&server).await;
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "keeper", "--wait"]);
    let mut conn = tenant_conn(&env, "keeper").await;
    sqlx::raw_sql("INSERT INTO users (username, email, password_hash) VALUES ('kept', 'k@x', 'h')")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);

    server.stop();
    let (ok, out, _) = env.run_cli(&[
        "--max-attempts",
        "1",
        "tenant",
        "delete",
        "keeper",
        "--wait",
        "--json",
    ]);
    assert!(!ok, "the delete succeeded without a final backup: {out}");
    let shown: serde_json::Value =
        serde_json::from_str(&cli_ok(&env, &["tenant", "show", "keeper", "--json"])).unwrap();
    assert_eq!(
        shown["status"], "active",
        "the tenant was left {}",
        shown["status"]
    );
    // Its own password works again, and nothing was lost.
    let mut conn = tenant_conn(&env, "keeper").await;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(users, 1);
    drop(conn);

    // A database missing at delete time is an error, not "deleted with no backup".
    sqlx::raw_sql(&format!(
        "DROP DATABASE \"{}_keeper\" WITH (FORCE)",
        env.namespace
    ))
    .execute(&mut admin().await)
    .await
    .unwrap();
    let (ok, out, _) = env.run_cli(&[
        "--max-attempts",
        "1",
        "tenant",
        "delete",
        "keeper",
        "--wait",
        "--json",
    ]);
    assert!(!ok);
    assert!(out.contains("does not exist"), "{out}");
    let shown: serde_json::Value =
        serde_json::from_str(&cli_ok(&env, &["tenant", "show", "keeper", "--json"])).unwrap();
    assert_ne!(shown["status"], "deleted");
    env.cleanup().await;
}

#[tokio::test]
async fn a_worker_started_with_another_server_url_is_refused() {
    let env = TestEnv::new();
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "anchored", "--wait"]);
    let elsewhere = "postgres://postgres@localhost:5432/postgres";
    let out = env
        .pgfleet()
        .arg("worker")
        .env("PGFLEET_SERVER_URL", elsewhere)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a worker silently re-pointed the default server"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pgfleet server set default"), "{err}");
    // Moving a server is an explicit command; then workers with the new URL start.
    let (ok, out, err) = env.run_cli(&["server", "set", "default", "--url", elsewhere, "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("localhost"), "{out}");
    let _moved = env
        .spawn_worker("moved", &[], &[("PGFLEET_SERVER_URL", elsewhere)])
        .await;
    tenant_conn(&env, "anchored").await;
    env.cleanup().await;
}

#[tokio::test]
async fn installs_sharing_a_store_never_touch_each_others_backups() {
    let shared_store = std::env::temp_dir().join(format!("pgfleet-shared-store-{}", std::process::id()));
    let (mut a, mut b) = (TestEnv::new(), TestEnv::new());
    for env in [&mut a, &mut b] {
        env.backup_url = format!("file://{}", shared_store.display());
    }
    let _wa = a.spawn_worker("w", &[], &[]).await;
    let _wb = b.spawn_worker("w", &[], &[]).await;
    for env in [&a, &b] {
        cli_ok(env, &["tenant", "create", "same-name", "--wait"]);
        cli_ok(env, &["backup", "same-name", "--wait"]);
        cli_ok(env, &["backup", "same-name", "--wait"]);
    }
    let (ok, _, err) = a.run_cli(&["tenant", "set", "same-name", "--keep-min", "0"]);
    assert!(!ok && err.contains("keep-min must be at least 1"), "{err}");
    // An object A has no record of, old enough to be pruned by age.
    let stray = shared_store
        .join(&a.namespace)
        .join("same-name")
        .join("manual.sql.gz");
    std::fs::write(&stray, b"x").unwrap();
    assert!(Command::new("touch")
        .args(["-d", "30 days ago"])
        .arg(&stray)
        .status()
        .unwrap()
        .success());
    cli_ok(
        &a,
        &[
            "tenant",
            "set",
            "same-name",
            "--retention-days",
            "0",
            "--keep-min",
            "1",
        ],
    );
    let pruned: serde_json::Value =
        serde_json::from_str(&cli_ok(&a, &["prune", "same-name", "--wait", "--json"])).unwrap();
    let details = &pruned["outcome"]["details"];
    assert_eq!(details["pruned"].as_array().unwrap().len(), 1, "{details}");
    assert!(
        details["unknown_objects"].to_string().contains("manual.sql.gz"),
        "{details}"
    );
    assert!(stray.exists(), "an object A has no record of was deleted");
    let b_objects = std::fs::read_dir(shared_store.join(&b.namespace).join("same-name"))
        .unwrap()
        .count();
    assert_eq!(b_objects, 2, "A's prune touched B's backups");

    // A deleted tenant's backups expire with its own retention, its final one included.
    cli_ok(&b, &["tenant", "delete", "same-name", "--wait"]);
    cli_ok(&b, &["tenant", "set", "same-name", "--retention-days", "0"]);
    cli_ok(&b, &["prune", "--all", "--wait"]);
    let listed: serde_json::Value =
        serde_json::from_str(&cli_ok(&b, &["backups", "list", "same-name", "--json"])).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] != "succeeded"),
        "{listed}"
    );
    a.cleanup().await;
    b.cleanup().await;
    let _ = std::fs::remove_dir_all(&shared_store);
}

/// libfaketime's preload library (Debian's `faketime` package; `.ci/run` installs it).
fn libfaketime() -> String {
    let path = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(path).exists(),
        "install faketime (apt-get install faketime; .ci/run does)"
    );
    path.to_owned()
}

#[tokio::test]
async fn a_worker_with_a_slow_clock_does_not_make_the_newest_backup_look_oldest() {
    let env = TestEnv::new();
    let mut on_time = env.spawn_worker("on-time", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "timely", "--wait"]);
    cli_ok(&env, &["backup", "timely", "--wait"]);
    on_time.terminate();
    // The newest backup is taken by a worker whose clock is 30 days slow.
    let preload = libfaketime();
    let _slow = env
        .spawn_worker(
            "slow",
            &[],
            &[
                ("LD_PRELOAD", &preload),
                ("FAKETIME", "-30d"),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        )
        .await;
    cli_ok(&env, &["backup", "timely", "--wait"]);
    let listed: serde_json::Value =
        serde_json::from_str(&cli_ok(&env, &["backups", "list", "timely", "--json"])).unwrap();
    let newest_key = listed[0]["key"].as_str().unwrap().to_owned();
    let today = chrono::Utc::now().format("%Y%m%d").to_string();
    assert!(
        newest_key.contains(&format!("/{today}T")),
        "the key took the worker's clock: {newest_key}"
    );

    cli_ok(
        &env,
        &[
            "tenant",
            "set",
            "timely",
            "--retention-days",
            "7",
            "--keep-min",
            "1",
        ],
    );
    cli_ok(&env, &["prune", "timely", "--wait"]);
    let listed: serde_json::Value =
        serde_json::from_str(&cli_ok(&env, &["backups", "list", "timely", "--json"])).unwrap();
    let kept: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["status"] == "succeeded")
        .map(|b| b["key"].as_str().unwrap())
        .collect();
    assert_eq!(kept.len(), 2, "a fresh backup was pruned: {listed}");
    assert!(kept.contains(&newest_key.as_str()));
    env.cleanup().await;
}

#[tokio::test]
async fn a_restore_run_again_after_its_outcome_was_lost_succeeds() {
    let env = TestEnv::new();
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "twice", "--wait"]);
    cli_ok(&env, &["backup", "twice", "--wait"]);
    let target = env.outside_name("twice_copy");
    let out = cli_ok(&env, &["restore", "twice", "--into", &target, "--wait", "--json"]);
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The outcome write was lost: the job is queued again and a worker runs it again.
    let catalog = env.catalog().await;
    sqlx::query("UPDATE jobs SET status = 'queued', finished_at = NULL, outcome = NULL, dispatched_at = NULL WHERE id = $1")
        .bind(uuid::Uuid::parse_str(job["id"].as_str().unwrap()).unwrap())
        .execute(catalog.pool())
        .await
        .unwrap();
    let again = env
        .wait_job(
            &catalog,
            job["key"].as_str().unwrap(),
            "succeeded",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(again.attempts, 2, "{again:?}");
    assert_eq!(again.outcome.unwrap()["summary"], "restored");
    env.cleanup().await;
}

// The proxy runs in this test's runtime while the test blocks on CLI calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_work_on_an_s3_server_without_list_multipart_uploads() {
    let server = S3Server::start();
    let gateway = S3Gateway::start(&server.endpoint).await;
    let mut env = TestEnv::new().with_s3(&server).await;
    env.s3_endpoint = Some(gateway.endpoint.clone());
    let worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "gatewayed", "--wait"]);
    cli_ok(&env, &["backup", "gatewayed", "--wait"]);
    cli_ok(&env, &["backup", "gatewayed", "--wait"]);
    assert!(
        gateway.refused() > 0,
        "the gateway was never asked to list uploads"
    );
    let log = worker.log();
    assert_eq!(
        log.matches("does not list unfinished uploads").count(),
        1,
        "{log}"
    );

    // An S3 error is one readable line.
    drop(gateway);
    let (ok, out, _) = env.run_cli(&["--max-attempts", "1", "backup", "gatewayed", "--wait", "--json"]);
    assert!(!ok);
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("S3 ") && error.contains(" failed: "), "{error}");
    assert!(
        !error.contains('\n') && !error.contains("DispatchFailure(") && !error.contains("SdkError"),
        "{error}"
    );
    env.cleanup().await;
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

#[tokio::test]
async fn queues_declared_by_an_older_version_keep_working_and_the_delivery_limit_holds() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    // As an earlier pgfleet declared them: delivery limit and dead-lettering as arguments.
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("quorum"));
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(7));
    args.insert(
        "x-dead-letter-exchange".into(),
        long(&format!("{}.dead", env.namespace)),
    );
    channel
        .queue_declare(
            format!("{}.provision", env.namespace).as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    let _ = conn.close(200, "bye".into()).await;

    let _worker = env
        .spawn_worker("w", &[], &[("PGFLEET_DELIVERY_LIMIT", "10")])
        .await;
    cli_ok(&env, &["tenant", "create", "legacy", "--wait"]);

    // A message delivered too often goes to the dead-letter queue unprocessed.
    let mut headers = FieldTable::default();
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(12));
    publish_with_headers(
        &env,
        "provision",
        br#"{"kind": "provision", "tenant": "poison", "key": "p1"}"#,
        headers,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = env.drain_dead_letters().await;
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        dead.iter()
            .any(|(_, r)| r.as_deref().is_some_and(|r| r.contains("delivered 12 times"))),
        "{dead:?}"
    );
    assert!(
        catalog.job_by_producer_key("p1").await.unwrap().is_none(),
        "the poison message was processed"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn history_past_its_retention_is_pruned_and_metrics_do_not_scan_it() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    // 5,000 jobs finished 40 days ago, 10 finished yesterday, 20 old dead letters.
    // Inserted running, then finished, as jobs are: the counters see every transition.
    sqlx::raw_sql(
        "INSERT INTO jobs (id, idempotency_key, kind, tenant, payload, status, max_attempts, started_at)
         SELECT gen_random_uuid(), 'old-' || i, 'backup', 'someone', '{\"kind\":\"backup\"}', 'running', 5,
                now() - interval '40 days' - interval '1 second'
           FROM generate_series(1, 5000) i;
         UPDATE jobs SET status = 'succeeded', finished_at = now() - interval '40 days' WHERE idempotency_key LIKE 'old-%';
         INSERT INTO jobs (id, idempotency_key, kind, tenant, payload, status, max_attempts, started_at)
         SELECT gen_random_uuid(), 'recent-' || i, 'backup', 'someone', '{\"kind\":\"backup\"}', 'running', 5,
                now() - interval '1 day'
           FROM generate_series(1, 10) i;
         UPDATE jobs SET status = 'failed', finished_at = now() - interval '1 day' WHERE idempotency_key LIKE 'recent-%';
         INSERT INTO dead_letters (queue, reason, body, received_at)
         SELECT 'q', 'old', '\\x00', now() - interval '40 days' FROM generate_series(1, 20);",
    )
    .execute(catalog.pool())
    .await
    .unwrap();
    let (api, base) = env.spawn_api("api").await;
    let scraped = http(None)
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |kind: &str, status: &str| format!("pgfleet_jobs{{kind=\"{kind}\",status=\"{status}\"}}");
    assert!(
        scraped.contains(&format!("{} 5000", line("backup", "succeeded"))),
        "{scraped}"
    );
    assert!(
        scraped.contains("pgfleet_job_duration_seconds_count{kind=\"backup\"} 5010"),
        "{scraped}"
    );

    // Finished webhook deliveries age out with the rest; a pending one never does.
    sqlx::raw_sql(
        "INSERT INTO webhooks (id, display_url, url_ciphertext, secret_ciphertext, events)
              VALUES ('00000000-0000-0000-0000-0000000000aa', 'http://receiver/', '\\x00', '\\x00', '{job.failed}');
         INSERT INTO webhook_deliveries (webhook_id, event, payload, status, created_at, next_attempt_at)
              VALUES ('00000000-0000-0000-0000-0000000000aa', 'job.failed', '{}', 'delivered', now() - interval '40 days', now()),
                     ('00000000-0000-0000-0000-0000000000aa', 'job.failed', '{}', 'pending', now() - interval '40 days', now() + interval '1 day'),
                     ('00000000-0000-0000-0000-0000000000aa', 'job.failed', '{}', 'delivered', now(), now())",
    )
    .execute(catalog.pool())
    .await
    .unwrap();
    let _worker = env
        .spawn_worker("w", &[], &[("PGFLEET_HISTORY_RETENTION", "30d")])
        .await;
    wait_until("old history is pruned", Duration::from_secs(60), || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE idempotency_key LIKE 'old-%'")
            .fetch_one(catalog.pool())
            .await
            .unwrap();
        left == 0
    })
    .await;
    let recent: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE idempotency_key LIKE 'recent-%'")
        .fetch_one(catalog.pool())
        .await
        .unwrap();
    assert_eq!(recent, 10);
    let deliveries: Vec<(String, bool)> = sqlx::query_as(
        "SELECT status, created_at > now() - interval '1 day' FROM webhook_deliveries ORDER BY 1, 2",
    )
    .fetch_all(catalog.pool())
    .await
    .unwrap();
    assert_eq!(
        deliveries,
        vec![("delivered".to_owned(), true), ("pending".to_owned(), false)]
    );
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(catalog.pool())
        .await
        .unwrap();
    assert_eq!(dead, 0);
    let scraped = http(None)
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scraped.contains(&format!("{} 0", line("backup", "succeeded"))),
        "{scraped}"
    );
    assert!(
        scraped.contains(&format!("{} 10", line("backup", "failed"))),
        "{scraped}"
    );
    // The histogram counts what happened, pruned or not.
    assert!(
        scraped.contains("pgfleet_job_duration_seconds_count{kind=\"backup\"} 5010"),
        "{scraped}"
    );
    drop(api);
    env.cleanup().await;
}

/// Found by the chaos suite: a worker SIGKILLed between recording a sweep's dispatch and
/// the broker's confirm left the job `queued`, recorded as dispatched, with no message
/// anywhere — until the re-publish interval, which doubles per dispatch (10 min on the
/// second, hours later on). An unconfirmed dispatch is published again after the confirm
/// deadline.
#[tokio::test]
async fn a_job_whose_publisher_died_before_the_confirm_is_published_again() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    cli_ok(&env, &["tenant", "create", "orphaned"]);
    // The message never reached the broker (its publisher died first): no message, and the
    // row as the dying publisher left it, on its third dispatch, 61 s ago.
    let ns = pgfleet_shared::Namespace::parse(&env.namespace).unwrap();
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_purge(
            ns.kind_queue(pgfleet_shared::JobKind::Provision).as_str().into(),
            lapin::options::QueuePurgeOptions::default(),
        )
        .await
        .unwrap();
    let updated = sqlx::query(
        "UPDATE jobs SET dispatched_at = now() - interval '61 seconds', dispatch_count = 3,
                dispatch_confirmed = false
          WHERE kind = 'provision' AND tenant = 'orphaned' AND status = 'queued'",
    )
    .execute(catalog.pool())
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(updated, 1);
    let _worker = env.spawn_worker("w", &[], &[]).await;
    env.wait_tenant_active(&catalog, "orphaned", Duration::from_secs(20))
        .await;
    // A confirmed dispatch is left alone for its re-publish interval (the message is queued).
    let confirmed: bool = sqlx::query_scalar(
        "SELECT dispatch_confirmed FROM jobs WHERE kind = 'provision' AND tenant = 'orphaned'",
    )
    .fetch_one(catalog.pool())
    .await
    .unwrap();
    assert!(confirmed, "the sweep's re-publish was confirmed");
    env.cleanup().await;
}

/// Files under the local store's folder for `slug`, relative to the store root.
fn stored_keys(env: &TestEnv, slug: &str) -> Vec<String> {
    let root = env.dir.join("backups");
    let dir = root.join(&env.namespace).join(slug);
    let mut keys: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| format!("{}/{slug}/{}", env.namespace, e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_backup_run_again_after_its_upload_or_its_outcome_was_lost_stores_one_object() {
    let env = TestEnv::new();
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "once", "--wait"]);
    let out = cli_ok(&env, &["backup", "once", "--wait", "--json"]);
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    let job_id = uuid::Uuid::parse_str(job["id"].as_str().unwrap()).unwrap();
    let catalog = env.catalog().await;
    let first: Vec<String> = stored_keys(&env, "once");
    assert_eq!(first.len(), 1, "{first:?}");
    let requeue = |job_id| {
        sqlx::query("UPDATE jobs SET status = 'queued', finished_at = NULL, outcome = NULL, dispatched_at = NULL WHERE id = $1")
            .bind(job_id)
            .execute(catalog.pool())
    };

    // 1. The backup was stored and recorded, then the worker died before the job's outcome:
    // the re-run reports that backup and stores nothing more.
    requeue(job_id).await.unwrap();
    let again = env
        .wait_job(
            &catalog,
            job["key"].as_str().unwrap(),
            "succeeded",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(again.attempts, 2, "{again:?}");
    assert_eq!(stored_keys(&env, "once"), first, "a second object was stored");
    let good: i64 =
        sqlx::query_scalar("SELECT count(*) FROM backups WHERE job_id = $1 AND status = 'succeeded'")
            .bind(job_id)
            .fetch_one(catalog.pool())
            .await
            .unwrap();
    assert_eq!(good, 1);

    // 2. The object was complete but the worker died before recording it (row still
    // `running`): the re-run discards that object and stores a new one.
    sqlx::query("UPDATE backups SET status = 'running', finished_at = NULL WHERE job_id = $1")
        .bind(job_id)
        .execute(catalog.pool())
        .await
        .unwrap();
    requeue(job_id).await.unwrap();
    let third = env
        .wait_job(
            &catalog,
            job["key"].as_str().unwrap(),
            "succeeded",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(third.attempts, 3, "{third:?}");
    let now = stored_keys(&env, "once");
    assert_eq!(now.len(), 1, "the unrecorded object was left: {now:?}");
    // (Within the same second the new attempt's key is the old one, its row re-used.)
    let good: Vec<(String, String)> =
        sqlx::query_as("SELECT key, sha256 FROM backups WHERE job_id = $1 AND status = 'succeeded'")
            .bind(job_id)
            .fetch_all(catalog.pool())
            .await
            .unwrap();
    assert_eq!(good.len(), 1, "{good:?}");
    assert_eq!(good[0].0, now[0]);
    let bytes = std::fs::read(env.dir.join("backups").join(&now[0])).unwrap();
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(good[0].1, sha, "the stored object is not the recorded one");

    // 3. A failed attempt's object that nobody discarded (its job gave up): the next prune
    // removes it and says so.
    let leftover = format!(
        "{}/once/20000101T000000Z-{}.sql.gz",
        env.namespace,
        uuid::Uuid::now_v7()
    );
    std::fs::write(env.dir.join("backups").join(&leftover), b"partial").unwrap();
    sqlx::query(
        "INSERT INTO backups (id, tenant_id, job_id, key, status, error, created_at, finished_at)
         SELECT $1, id, NULL, $2, 'failed', 'interrupted', now(), now() FROM tenants WHERE slug = 'once'",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(&leftover)
    .execute(catalog.pool())
    .await
    .unwrap();
    let out = cli_ok(&env, &["prune", "once", "--wait", "--json"]);
    let prune: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        prune["outcome"]["details"]["failed_discarded"],
        serde_json::json!([leftover]),
        "{prune}"
    );
    assert_eq!(stored_keys(&env, "once"), now);
    env.cleanup().await;
}

/// A broker that takes a connection and then never answers (booting, a node without its
/// queues' leaders) must not hold a worker forever: its first connection here is accepted
/// and left silent for the whole test, later ones are forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_broker_never_answers_the_first_connection_consumes_on_the_next() {
    let env = TestEnv::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let held = silent.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut held = held.lock().unwrap();
            if held.is_empty() {
                held.push(inbound); // accepted, never answered, never closed
                continue;
            }
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect("127.0.0.1:5672").await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let amqp = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    // Waits up to 60 s for "consuming".
    let worker = env.spawn_worker("w", &[], &[("PGFLEET_AMQP_URL", &amqp)]).await;
    assert_eq!(
        silent.lock().unwrap().len(),
        1,
        "the silent connection was never tried"
    );
    assert!(
        worker.log().contains("did not complete the session setup"),
        "{}",
        worker.log()
    );
    cli_ok(&env, &["tenant", "create", "patient", "--wait"]);
    env.cleanup().await;
}

/// A delete whose every attempt's worker was killed after it locked the tenant out ends
/// `dead` at its next claim without its handler's failure path ever running: the tenant is
/// handed back — `active`, its own password working — not left `deleting` and locked out.
#[tokio::test]
async fn a_delete_that_gave_up_after_its_workers_died_hands_the_tenant_back() {
    let env = TestEnv::new();
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "given-up", "--wait"]);
    let catalog = env.catalog().await;
    let tenant = env
        .wait_tenant_active(&catalog, "given-up", Duration::from_secs(10))
        .await;
    // What the last killed attempt left: the role's password replaced, the tenant
    // `deleting`, the job queued with no attempt left.
    sqlx::raw_sql(&format!(
        "ALTER ROLE \"{}\" PASSWORD 'only-the-dead-attempt-knew'",
        tenant.role_name
    ))
    .execute(&mut admin().await)
    .await
    .unwrap();
    sqlx::query("UPDATE tenants SET status = 'deleting' WHERE slug = 'given-up'")
        .execute(catalog.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, idempotency_key, kind, tenant, payload, status, attempts, max_attempts, error)
         VALUES ($1, 'key:delete-given-up', 'delete', 'given-up', '{\"kind\": \"delete\"}', 'queued', 5, 5,
                 'interrupted: its worker stopped')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(catalog.pool())
    .await
    .unwrap();
    // The sweep publishes it; the claim finds no attempt left.
    let job = env
        .wait_job(&catalog, "delete-given-up", "dead", Duration::from_secs(60))
        .await;
    assert!(job.error.unwrap().contains("gave up"));
    let tenant = env
        .wait_tenant_active(&catalog, "given-up", Duration::from_secs(30))
        .await;
    assert_eq!(tenant.status.as_str(), "active");
    let mut conn = tenant_conn(&env, "given-up").await;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await.unwrap();
    assert_eq!(one, 1);
    env.cleanup().await;
}
