//! The scenarios: each runs real work on at least two workers, injects its faults while the
//! work runs, waits for every job to end, then checks the invariants (`harness::check`).

use crate::harness::*;
use crate::support::*;
use lapin::options::QueueDeleteOptions;
use pgfleet_shared::{JobKind, Namespace};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long all the jobs of one phase may take to end, faults included.
const SETTLE: Duration = Duration::from_secs(600);

fn slugs(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

fn kills(workers: &Arc<std::sync::Mutex<Workers>>) -> usize {
    workers.lock().unwrap().kills
}

/// Adds a tenant migration to the environment's folder (workers started later load it; the
/// rollout records it in the catalog).
fn add_migration(env: &TestEnv, file: &str, sql: &str) {
    std::fs::write(env.migrations_dir.as_ref().unwrap().join(file), sql).unwrap();
}

/// Waits until `queue` has a consumer again; returns how long that took.
async fn consumer_back(queue: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if try_queue_counts(queue)
            .await
            .is_some_and(|(_, consumers)| consumers >= 1)
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{queue} got no consumer back within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Random workers SIGKILLed every 1–2 s (and replaced) while 200 signups, each published
/// twice, then a backup of every tenant and a rollout, then restores and deletes run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_workers_killed_during_every_kind_of_job() {
    scenario("random_workers_killed_during_every_kind_of_job", async {
        let started = Instant::now();
        let mut report = Report::new("workers SIGKILLed every 1-2 s (3 workers)");
        let env = Arc::new(TestEnv::new().with_migrations(&[]).with_s3(shared_s3()).await);
        let catalog = env.catalog().await;
        let workers = Workers::start(&env, 3, vec![]).await;
        let stop = CancellationToken::new();
        let killing = killer(env.clone(), workers.clone(), stop.clone());

        let n = 200 * scale();
        let tenants = slugs("k", n);
        signups(&env, &tenants).await;
        settle(&catalog, n as i64, SETTLE).await;

        add_migration(
            &env,
            "2_chaos.sql",
            "ALTER TABLE users ADD COLUMN nickname text; CREATE INDEX users_nickname ON users (nickname);",
        );
        cli(&env, &["backup", "--all"]).await;
        cli(&env, &["migrate", "--all"]).await;
        let mut backup_rounds = 1;
        settle(&catalog, 3 * n as i64, SETTLE).await;

        let mut restored = Vec::new();
        for slug in &tenants[..5] {
            let into = env.outside_name(&format!("live_{slug}"));
            cli(&env, &["restore", slug, "--into", &into]).await;
            restored.push(into);
        }
        let deleted = tenants[n - 10..].to_vec();
        for slug in &deleted {
            cli(&env, &["tenant", "delete", slug]).await;
        }
        settle(&catalog, 3 * n as i64 + 15, SETTLE).await;
        // A deleted tenant's restore re-creates its role for the load.
        for slug in &deleted[..2] {
            let into = env.outside_name(&format!("gone_{slug}"));
            cli(&env, &["restore", slug, "--into", &into]).await;
            restored.push(into);
        }
        settle(&catalog, 3 * n as i64 + 17, SETTLE).await;
        // At least 20 kills with work running.
        let mut jobs = 3 * n + 17;
        while kills(&workers) < 20 {
            cli(&env, &["backup", "--all"]).await;
            backup_rounds += 1;
            jobs += n - 10;
            settle(&catalog, jobs as i64, SETTLE).await;
        }
        stop.cancel();
        killing.await.unwrap();
        settle(&catalog, 0, SETTLE).await;

        report.faults = kills(&workers);
        let active: Vec<String> = tenants[..n - 10].to_vec();
        let expected = Expected {
            succeeded: vec![
                ("provision", n as i64),
                (
                    "backup",
                    backup_rounds as i64 * n as i64 - (backup_rounds as i64 - 1) * 10,
                ),
                ("migrate", n as i64),
                ("restore", 7),
                ("delete", 10),
            ],
            may_fail: vec![],
            extra: vec![],
            active,
            deleted,
            restored,
        };
        report.seconds = started.elapsed().as_secs_f64();
        check(&env, &catalog, &workers, &expected, &mut report).await;
        report.assert_clean();
        drop(workers);
        Arc::into_inner(env).unwrap().cleanup().await;
    })
    .await;
}

/// RabbitMQ's app stopped and started (`rabbitmqctl stop_app/start_app`) while signups run,
/// then a job queue deleted under the workers and used again once they re-declared it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_restarted_and_a_job_queue_deleted_under_load() {
    scenario("the_broker_restarted_and_a_job_queue_deleted_under_load", async {
        let started = Instant::now();
        let mut report = Report::new("RabbitMQ stop_app/start_app; a job queue deleted (2 workers)");
        let env = TestEnv::new().with_migrations(&[]);
        let catalog = env.catalog().await;
        let workers = Workers::start(&env, 2, vec![]).await;

        let n = 100 * scale();
        let first = slugs("b", n);
        signups(&env, &first).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        sh("rabbitmqctl -q stop_app");
        tokio::time::sleep(Duration::from_secs(5)).await;
        sh("rabbitmqctl -q start_app && rabbitmqctl -q await_startup");
        report.faults += 1;
        let second = slugs("c", n);
        signups(&env, &second).await;
        settle(&catalog, 2 * n as i64, SETTLE).await;

        // The backup queue, idle now, deleted under the workers: they must consume it again.
        let ns = Namespace::parse(&env.namespace).unwrap();
        let queue = ns.kind_queue(JobKind::Backup);
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        report.faults += 1;
        let back = consumer_back(&queue, Duration::from_secs(60)).await;
        report
            .details
            .push(format!("backup queue consumed again after {back:?}"));
        cli(&env, &["backup", "--all"]).await;
        settle(&catalog, 4 * n as i64, SETTLE).await;

        let mut active = first.clone();
        active.extend(second.iter().cloned());
        let expected = Expected {
            succeeded: vec![("provision", 2 * n as i64), ("backup", 2 * n as i64)],
            active,
            ..Expected::default()
        };
        report.seconds = started.elapsed().as_secs_f64();
        check(&env, &catalog, &workers, &expected, &mut report).await;
        // The details line about recovery time is informational, not a failure.
        report.assert_clean();
        drop(workers);
        env.cleanup().await;
    })
    .await;
}

/// The catalog's Postgres restarted while signups run, then the workers' path to the catalog
/// black-holed (nothing forwarded, connections left open) for 2.5 leases while backups run
/// and more signups arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_restarted_and_black_holed_for_longer_than_a_lease() {
    scenario(
        "the_catalog_restarted_and_black_holed_for_longer_than_a_lease",
        async {
            let started = Instant::now();
            let mut report =
                Report::new("catalog restarted; catalog black-holed 10 s (2 workers, 4 s lease)");
            let env = TestEnv::new().with_migrations(&[]).with_s3(shared_s3()).await;
            let catalog = env.catalog().await;
            let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
            let through = env
                .catalog_url
                .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
            let extra = vec![vec![("PGFLEET_CATALOG_URL".to_owned(), through)]; 2];
            let workers = Workers::start(&env, 2, extra).await;

            let n = 100 * scale();
            let first = slugs("r", n);
            signups(&env, &first).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            sh("pg_ctlcluster --skip-systemctl-redirect 15 main restart");
            report.faults += 1;
            settle(&catalog, n as i64, SETTLE).await;

            cli(&env, &["backup", "--all"]).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            proxy.black_hole();
            let second = slugs("h", n);
            signups(&env, &second).await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            proxy.restore();
            report.faults += 1;
            settle(&catalog, 3 * n as i64, SETTLE).await;

            let mut active = first.clone();
            active.extend(second.iter().cloned());
            let expected = Expected {
                succeeded: vec![("provision", 2 * n as i64), ("backup", n as i64)],
                active,
                ..Expected::default()
            };
            report.seconds = started.elapsed().as_secs_f64();
            check(&env, &catalog, &workers, &expected, &mut report).await;
            report.assert_clean();
            drop(workers);
            env.cleanup().await;
        },
    )
    .await;
}

/// The S3 server unreachable mid-upload (a proxy in front of it drops every connection and
/// refuses new ones) for 3 s, then for 40 s — longer than the SDK's retries and several
/// job attempts — and, last, answering nothing for 15 s (requests hang until the
/// attempt timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_server_stopped_mid_upload_and_for_longer_than_the_retries() {
    scenario("the_s3_server_stopped_mid_upload_and_for_longer_than_the_retries", async {
        let started = Instant::now();
        let mut report = Report::new("S3 unreachable mid-upload 3 s, 40 s; S3 silent 15 s (2 workers)");
        let server = S3Server::start();
        let env = TestEnv::new().with_migrations(&[]).with_s3(&server).await;
        let catalog = env.catalog().await;
        let proxy = TcpProxy::start(format!("127.0.0.1:{}", server.port).parse().unwrap()).await;
        let extra = vec![
            vec![
                (
                    "AWS_ENDPOINT_URL".to_owned(),
                    format!("http://127.0.0.1:{}", proxy.port)
                ),
                ("PGFLEET_S3_ATTEMPT_TIMEOUT".to_owned(), "5s".to_owned()),
            ];
            2
        ];
        let workers = Workers::start(&env, 2, extra).await;

        let tenants = slugs("s", 12);
        signups(&env, &tenants).await;
        settle(&catalog, 12, SETTLE).await;
        // Big enough that dumps upload several parts.
        for slug in &tenants[..3] {
            let mut conn = tenant_conn(&env, slug).await;
            sqlx::raw_sql(
                "CREATE TABLE bulk AS SELECT g, md5(g::text) || md5((g * 7)::text) AS a, md5((g * 13)::text) AS b
                   FROM generate_series(1, 400000) g",
            )
            .execute(&mut conn)
            .await
            .unwrap();
        }
        let client = s3_client(&server.endpoint);
        let mut rounds = 0;
        for (outage, silent) in [(3, false), (40, false), (15, true)] {
            // The attempt budget is the producer's (recorded with each job): enough attempts
            // to outlast the longest outage (backoff doubles from 200 ms, capped at 30 s).
            cli_with(&env, &["backup", "--all"], &[("PGFLEET_MAX_ATTEMPTS", "30")]).await;
            rounds += 1;
            upload_started(&client, &env.bucket()).await;
            if silent {
                proxy.black_hole();
            } else {
                proxy.cut();
            }
            tokio::time::sleep(Duration::from_secs(outage)).await;
            proxy.restore();
            report.faults += 1;
            settle(&catalog, 12 + 12 * rounds, SETTLE).await;
        }

        let expected = Expected {
            succeeded: vec![("provision", 12), ("backup", 12 * rounds)],
            active: tenants,
            ..Expected::default()
        };
        report.seconds = started.elapsed().as_secs_f64();
        check(&env, &catalog, &workers, &expected, &mut report).await;
        report.assert_clean();
        drop(workers);
        env.cleanup().await;
    })
    .await;
}

/// A tenant's own session holds a lock its migration needs during a rollout over the fleet,
/// while workers are killed: only that tenant's migration fails (lock timeout), nobody else
/// waits, and it succeeds once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_lock_during_a_rollout_fails_only_that_tenant() {
    scenario("a_tenant_lock_during_a_rollout_fails_only_that_tenant", async {
        let started = Instant::now();
        let mut report =
            Report::new("tenant session holds a lock during a rollout, workers killed (2 workers)");
        let env = Arc::new(TestEnv::new().with_migrations(&[]));
        let catalog = env.catalog().await;
        let workers = Workers::start(&env, 2, vec![]).await;
        let n = 40;
        let tenants = slugs("l", n);
        signups(&env, &tenants).await;
        settle(&catalog, n as i64, SETTLE).await;

        let locked = &tenants[7];
        let mut holder = tenant_conn(&env, locked).await;
        sqlx::raw_sql("BEGIN; LOCK TABLE users IN ACCESS SHARE MODE")
            .execute(&mut holder)
            .await
            .unwrap();
        add_migration(
            &env,
            "2_nickname.sql",
            "ALTER TABLE users ADD COLUMN nickname text;",
        );
        let stop = CancellationToken::new();
        let killing = killer(env.clone(), workers.clone(), stop.clone());
        let mut migrate = env.pgfleet();
        migrate.args([
            "--max-attempts",
            "5",
            "migrate",
            "--all",
            "--wait",
            "--json",
            "--concurrency",
            "2",
            "--lock-timeout",
            "1s",
        ]);
        let out = tokio::task::spawn_blocking(move || migrate.output().unwrap())
            .await
            .unwrap();
        stop.cancel();
        killing.await.unwrap();
        report.faults = kills(&workers) + 1;
        let rollout: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        if rollout["succeeded"] != n - 1 || rollout["failed"] != 1 {
            report.fail("lost", format!("rollout: {rollout}"), |r| &mut r.lost);
        }
        sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
        drop(holder);
        cli(&env, &["migrate", "--all", "--wait"]).await;
        settle(&catalog, 0, SETTLE).await;

        let expected = Expected {
            // n + 1 migrate jobs: the locked tenant's failed one, then its retry by the second rollout.
            succeeded: vec![("provision", n as i64), ("migrate", n as i64)],
            extra: vec![("migrate", 1)],
            active: tenants.clone(),
            ..Expected::default()
        };
        report.seconds = started.elapsed().as_secs_f64();
        check(&env, &catalog, &workers, &expected, &mut report).await;
        // The locked tenant: one job that gave up (lock timeouts), then one that succeeded.
        let jobs: Vec<(String, i32)> = sqlx::query_as(
            "SELECT status, attempts FROM jobs WHERE kind = 'migrate' AND tenant = $1 ORDER BY created_at",
        )
        .bind(locked)
        .fetch_all(catalog.pool())
        .await
        .unwrap();
        let statuses: Vec<&str> = jobs.iter().map(|j| j.0.as_str()).collect();
        if statuses != ["dead", "succeeded"] {
            report.fail("lost", format!("{locked}'s migrate jobs: {jobs:?}"), |r| {
                &mut r.lost
            });
        }
        report.assert_clean();
        drop(workers);
        Arc::into_inner(env).unwrap().cleanup().await;
    })
    .await;
}

/// Two workers whose clocks are an hour ahead and an hour behind the catalog's (libfaketime):
/// leases, backoffs and backup times follow the catalog, so no job is taken over or retried
/// and backups are ordered as they were taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_clocks_an_hour_off_take_nothing_over() {
    scenario("workers_with_clocks_an_hour_off_take_nothing_over", async {
        let started = Instant::now();
        let mut report = Report::new("worker clocks +1 h and -1 h (2 workers)");
        let preload = libfaketime();
        let env = TestEnv::new().with_migrations(&[]).with_s3(shared_s3()).await;
        let catalog = env.catalog().await;
        let skewed = |offset: &str| {
            vec![
                ("LD_PRELOAD".to_owned(), preload.clone()),
                ("FAKETIME".to_owned(), offset.to_owned()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
            ]
        };
        let workers = Workers::start(&env, 2, vec![skewed("+1h"), skewed("-1h")]).await;
        let n = 60;
        let tenants = slugs("c", n);
        signups(&env, &tenants).await;
        settle(&catalog, n as i64, SETTLE).await;
        add_migration(
            &env,
            "2_nickname.sql",
            "ALTER TABLE users ADD COLUMN nickname text;",
        );
        cli(&env, &["backup", "--all"]).await;
        cli(&env, &["migrate", "--all"]).await;
        settle(&catalog, 3 * n as i64, SETTLE).await;
        cli(&env, &["backup", "--all"]).await;
        settle(&catalog, 4 * n as i64, SETTLE).await;
        report.faults = 2;

        let expected = Expected {
            succeeded: vec![
                ("provision", n as i64),
                ("backup", 2 * n as i64),
                ("migrate", n as i64),
            ],
            active: tenants.clone(),
            ..Expected::default()
        };
        report.seconds = started.elapsed().as_secs_f64();
        check(&env, &catalog, &workers, &expected, &mut report).await;
        let retried: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE attempts <> 1")
            .fetch_one(catalog.pool())
            .await
            .unwrap();
        if retried > 0 {
            report.fail("doubled", format!("{retried} jobs ran more than once"), |r| {
                &mut r.doubled
            });
        }
        // Each tenant's second backup is its newest by the catalog's clock.
        let misordered: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (
               SELECT b.tenant_id, array_agg(b.job_id ORDER BY b.created_at) AS by_time,
                      array_agg(b.job_id ORDER BY j.created_at) AS by_request
                 FROM backups b JOIN jobs j ON j.id = b.job_id GROUP BY b.tenant_id) x
              WHERE by_time <> by_request",
        )
        .fetch_one(catalog.pool())
        .await
        .unwrap();
        if misordered > 0 {
            report.fail(
                "lost",
                format!("{misordered} tenants' backups out of order"),
                |r| &mut r.lost,
            );
        }
        report.assert_clean();
        drop(workers);
        env.cleanup().await;
    })
    .await;
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

/// Waits until a multipart upload is under way in `bucket`.
async fn upload_started(client: &aws_sdk_s3::Client, bucket: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let uploads = client
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        if !uploads.uploads().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "no upload started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
