//! Migration rollouts over a fleet of 20 tenants: every tenant reaches the target, failures
//! stay isolated and resumable, drift is refused up front, workers apply the recorded SQL,
//! concurrent rollouts never apply twice, and canary / max-failures stop where they should.

use crate::support::*;
use pgfleet_shared::jobs::{provision, FaultPoints};
use pgfleet_shared::TenantSlug;
use sqlx::{Connection as _, PgConnection};
use std::time::Duration;

const FLEET: usize = 20;
const NICKNAME: (&str, &str) = (
    "2_nickname.sql",
    "ALTER TABLE users ADD COLUMN nickname text NOT NULL DEFAULT ''; CREATE INDEX users_nickname ON users (nickname);",
);

/// Provisions `FLEET` tenants `<prefix>-00…` in-process (the provision path has its own tests).
async fn fleet(env: &TestEnv, prefix: &str) -> Vec<String> {
    let ctx = env.job_context(FaultPoints::default()).await;
    let slugs: Vec<String> = (0..FLEET).map(|i| format!("{prefix}-{i:02}")).collect();
    for chunk in slugs.chunks(4) {
        let runs = chunk.iter().map(|s| {
            let ctx = ctx.clone();
            let slug = TenantSlug::parse(s).unwrap();
            async move { provision::provision_tenant(&ctx, &slug, None).await.unwrap() }
        });
        futures_util::future::join_all(runs).await;
    }
    slugs
}

async fn tenant_db(env: &TestEnv, slug: &str) -> PgConnection {
    PgConnection::connect(&format!(
        "postgres://postgres@127.0.0.1:5432/{}_{slug}",
        env.namespace
    ))
    .await
    .unwrap()
}

/// (version, checksum) rows of the tenant's own migrations table.
async fn tenant_migrations(env: &TestEnv, slug: &str) -> Vec<(i64, Vec<u8>)> {
    sqlx::query_as("SELECT version, checksum FROM _pgfleet_migrations ORDER BY version")
        .fetch_all(&mut tenant_db(env, slug).await)
        .await
        .unwrap()
}

fn cli(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    env.run_cli(args)
}

fn rollout_json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn a_new_migration_reaches_every_tenant_and_the_catalog_agrees() {
    let env = TestEnv::new().with_migrations(&[]);
    let slugs = fleet(&env, "reach").await;
    std::fs::write(env.migrations_dir.as_ref().unwrap().join(NICKNAME.0), NICKNAME.1).unwrap();
    let _worker = env.spawn_worker("w", &["--concurrency", "4"], &[]).await;

    let (ok, out, err) = cli(&env, &["migrate", "--all", "--wait", "--json"]);
    assert!(ok, "{out}\n{err}");
    let rollout = rollout_json(&out);
    assert_eq!(rollout["succeeded"], FLEET as i64);
    assert_eq!(rollout["status"], "done");
    let catalog = env.catalog().await;
    for slug in &slugs {
        let tenant = catalog
            .tenant(&TenantSlug::parse(slug).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tenant.schema_version, Some(2), "{slug}");
        let in_tenant = tenant_migrations(&env, slug).await;
        let in_catalog: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT version, checksum FROM tenant_migrations WHERE tenant_id = $1 ORDER BY version",
        )
        .bind(tenant.id)
        .fetch_all(catalog.pool())
        .await
        .unwrap();
        assert_eq!(in_tenant, in_catalog, "{slug}: catalog and tenant disagree");
        assert_eq!(in_tenant.len(), 2);
    }
    // Nothing left to do: a rerun touches nobody.
    let (ok, out, _) = cli(&env, &["migrate", "--all", "--wait"]);
    assert!(ok && out.contains("0 tenant(s) to migrate"), "{out}");
    env.cleanup().await;
}

/// Adds a migration file to the environment's folder.
fn add_migration(env: &TestEnv, (name, sql): (&str, &str)) {
    std::fs::write(env.migrations_dir.as_ref().unwrap().join(name), sql).unwrap();
}

async fn applied_at(env: &TestEnv, slug: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT applied_at::text FROM _pgfleet_migrations ORDER BY version")
        .fetch_all(&mut tenant_db(env, slug).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn one_sabotaged_tenant_fails_alone_and_is_finished_after_the_fix() {
    let env = TestEnv::new().with_migrations(&[]);
    let slugs = fleet(&env, "sab").await;
    let broken = slugs[7].clone();
    // An object the migration's index name collides with.
    sqlx::raw_sql("CREATE TABLE users_nickname (x int)")
        .execute(&mut tenant_db(&env, &broken).await)
        .await
        .unwrap();
    add_migration(&env, NICKNAME);
    let _worker = env.spawn_worker("w", &["--concurrency", "4"], &[]).await;

    let (ok, out, _) = cli(&env, &["migrate", "--all", "--wait", "--json"]);
    assert!(!ok, "a failed tenant makes --wait exit non-zero");
    let rollout = rollout_json(&out);
    assert_eq!(rollout["succeeded"], (FLEET - 1) as i64);
    assert_eq!(rollout["failed"], 1);
    let failed: Vec<&serde_json::Value> = rollout["per_tenant"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["tenant"], broken.as_str());
    assert!(
        failed[0]["error"].as_str().unwrap().contains("already exists"),
        "{}",
        failed[0]
    );
    assert_eq!(
        tenant_migrations(&env, &broken).await.len(),
        1,
        "the failed migration rolled back"
    );

    let before: Vec<Vec<String>> = {
        let mut v = Vec::new();
        for slug in slugs.iter().filter(|s| **s != broken) {
            v.push(applied_at(&env, slug).await);
        }
        v
    };
    sqlx::raw_sql("DROP TABLE users_nickname")
        .execute(&mut tenant_db(&env, &broken).await)
        .await
        .unwrap();
    let (ok, out, err) = cli(&env, &["migrate", "--tenant", &broken, "--wait", "--json"]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(rollout_json(&out)["tenants"], 1, "only the fixed tenant");
    assert_eq!(tenant_migrations(&env, &broken).await.len(), 2);
    let (ok, out, _) = cli(&env, &["migrate", "--all", "--wait"]);
    assert!(ok && out.contains("0 tenant(s) to migrate"), "{out}");
    let mut after = Vec::new();
    for slug in slugs.iter().filter(|s| **s != broken) {
        after.push(applied_at(&env, slug).await);
    }
    assert_eq!(before, after, "the others were not touched again");
    env.cleanup().await;
}

#[tokio::test]
async fn an_edited_or_missing_applied_migration_is_refused_before_any_tenant_changes() {
    let env = TestEnv::new().with_migrations(&[]);
    let slugs = fleet(&env, "drift").await;
    add_migration(&env, NICKNAME);
    let _worker = env.spawn_worker("w", &["--concurrency", "4"], &[]).await;
    let (ok, _, err) = cli(&env, &["migrate", "--all", "--wait"]);
    assert!(ok, "{err}");
    let before = applied_at(&env, &slugs[0]).await;

    add_migration(
        &env,
        (
            NICKNAME.0,
            "ALTER TABLE users ADD COLUMN nickname text; -- edited",
        ),
    );
    add_migration(&env, ("3_more.sql", "CREATE TABLE more (id int);"));
    let (ok, _, err) = cli(&env, &["migrate", "--all", "--wait"]);
    assert!(!ok);
    assert!(err.contains("2_nickname.sql") && err.contains("changed"), "{err}");

    add_migration(&env, NICKNAME);
    std::fs::remove_file(env.migrations_dir.as_ref().unwrap().join("1_example_app.sql")).unwrap();
    let (ok, _, err) = cli(&env, &["migrate", "--all", "--wait"]);
    assert!(!ok);
    assert!(err.contains("version 1") && err.contains("missing"), "{err}");

    let (_, rollouts, _) = cli(&env, &["rollouts", "list", "--json"]);
    assert_eq!(
        rollout_json(&rollouts).as_array().unwrap().len(),
        1,
        "no rollout was recorded for the refused runs"
    );
    for slug in &slugs {
        assert_eq!(tenant_migrations(&env, slug).await.len(), 2, "{slug} changed");
    }
    assert_eq!(applied_at(&env, &slugs[0]).await, before);
    env.cleanup().await;
}

#[tokio::test]
async fn workers_with_different_local_folders_apply_the_recorded_set() {
    let env = TestEnv::new().with_migrations(&[]);
    let slugs = fleet(&env, "same").await;
    add_migration(&env, ("2_from_cli.sql", "CREATE TABLE from_cli (id int);"));
    // A second folder whose version 2 is something else entirely.
    let other = env.dir.join("other-migrations");
    std::fs::create_dir_all(&other).unwrap();
    for entry in std::fs::read_dir(env.migrations_dir.as_ref().unwrap()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), other.join(entry.file_name())).unwrap();
    }
    std::fs::write(
        other.join("2_from_cli.sql"),
        "CREATE TABLE from_worker_disk (id int);",
    )
    .unwrap();
    let other = other.display().to_string();
    let _a = env.spawn_worker("a", &["--concurrency", "2"], &[]).await;
    let _b = env
        .spawn_worker(
            "b",
            &["--concurrency", "2"],
            &[("PGFLEET_TENANT_MIGRATIONS", &other)],
        )
        .await;

    let (ok, out, err) = cli(&env, &["migrate", "--all", "--wait", "--json"]);
    assert!(ok, "{out}\n{err}");
    let catalog = env.catalog().await;
    let mut workers = std::collections::HashSet::new();
    for job in catalog
        .jobs(Some(JobStatus::Succeeded), None, None, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|j| j.kind == pgfleet_shared::JobKind::Migrate)
    {
        workers.insert(
            job.outcome.as_ref().unwrap()["worker"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(workers.len(), 2, "both workers migrated tenants: {workers:?}");
    for slug in &slugs {
        let tables = table_names(&mut tenant_db(&env, slug).await).await;
        assert!(tables.contains(&"from_cli".to_owned()), "{slug}: {tables:?}");
        assert!(
            !tables.contains(&"from_worker_disk".to_owned()),
            "{slug} ran a worker's local file"
        );
    }
    // A tenant provisioned later, by the worker whose folder differs, gets the recorded set.
    drop(_a);
    let (ok, _, err) = cli(&env, &["tenant", "create", "same-later", "--wait"]);
    assert!(ok, "{err}");
    let tables = table_names(&mut tenant_db(&env, "same-later").await).await;
    assert!(
        tables.contains(&"from_cli".to_owned()) && !tables.contains(&"from_worker_disk".to_owned()),
        "{tables:?}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn two_rollouts_at_once_never_apply_a_migration_twice() {
    let env = TestEnv::new().with_migrations(&[]);
    let slugs = fleet(&env, "twice").await;
    add_migration(
        &env,
        (
            "2_counter.sql",
            "CREATE TABLE IF NOT EXISTS counter (n int); INSERT INTO counter VALUES (1);",
        ),
    );
    let _a = env.spawn_worker("a", &["--concurrency", "4"], &[]).await;
    let _b = env.spawn_worker("b", &["--concurrency", "4"], &[]).await;

    let start = || {
        env.pgfleet()
            .args(["migrate", "--all", "--wait"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (start(), start());
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    for slug in &slugs {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM counter")
            .fetch_one(&mut tenant_db(&env, slug).await)
            .await
            .unwrap();
        assert_eq!(count, 1, "{slug}: migration 2 ran {count} times");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_failed_canary_stops_the_rollout_before_the_rest() {
    let env = TestEnv::new().with_migrations(&[]);
    let slugs = fleet(&env, "canary").await;
    // Canary tenants are the first by slug; break one of them.
    sqlx::raw_sql("CREATE TABLE users_nickname (x int)")
        .execute(&mut tenant_db(&env, &slugs[1]).await)
        .await
        .unwrap();
    add_migration(&env, NICKNAME);
    let _worker = env.spawn_worker("w", &["--concurrency", "4"], &[]).await;

    let (ok, out, _) = cli(&env, &["migrate", "--all", "--canary", "3", "--wait", "--json"]);
    assert!(!ok);
    let rollout = rollout_json(&out);
    assert_eq!(rollout["status"], "halted");
    // The other two canaries ran (or, if the failure came first, were skipped).
    assert_eq!(
        rollout["succeeded"].as_i64().unwrap() + rollout["skipped"].as_i64().unwrap(),
        2,
        "{rollout}"
    );
    assert_eq!(rollout["failed"], 1);
    let per_tenant = rollout["per_tenant"].as_array().unwrap();
    let started: Vec<&serde_json::Value> = per_tenant.iter().filter(|t| !t["job_id"].is_null()).collect();
    assert_eq!(started.len(), 3, "only the canaries ran");
    for slug in &slugs[3..] {
        assert_eq!(
            tenant_migrations(&env, slug).await.len(),
            1,
            "{slug} was migrated despite the failed canary"
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_rollout_whose_last_worker_died_is_moved_on_by_another_workers_sweep() {
    let env = TestEnv::new().with_migrations(&[]);
    let slugs = fleet(&env, "orphan").await;
    add_migration(&env, NICKNAME);
    // No worker yet: the rollout is recorded with its two canary jobs queued.
    let (ok, out, err) = cli(&env, &["migrate", "--all", "--canary", "2", "--json"]);
    assert!(ok, "{out}\n{err}");
    let rollout_id: uuid::Uuid = rollout_json(&out)["id"].as_str().unwrap().parse().unwrap();

    // A worker runs both canaries, records their success and dies before its follow-up
    // (which would have started the main phase).
    let catalog = env.catalog().await;
    let ctx = env.job_context(FaultPoints::default()).await;
    for slug in &slugs[..2] {
        let job = env
            .wait_job(
                &catalog,
                &format!("migrate:{rollout_id}:{slug}"),
                "queued",
                Duration::from_secs(5),
            )
            .await;
        pgfleet_shared::jobs::run(&ctx, &job).await.unwrap();
        sqlx::query("UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = $1")
            .bind(job.id)
            .execute(catalog.pool())
            .await
            .unwrap();
    }
    let stuck = catalog.rollout(rollout_id).await.unwrap().unwrap();
    assert_eq!(
        (stuck.status.as_str(), stuck.succeeded, stuck.active),
        ("running", 2, 0)
    );

    // Any other worker's sweep notices the rollout nobody moves on: main phase, then done.
    let _worker = env
        .spawn_worker(
            "w",
            &["--concurrency", "4"],
            &[("PGFLEET_SWEEP_INTERVAL_MS", "200")],
        )
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let r = catalog.rollout(rollout_id).await.unwrap().unwrap();
        if r.status != RolloutStatus::Running {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rollout still running: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (done.status.as_str(), done.succeeded),
        ("done", FLEET as i64),
        "{done:?}"
    );
    for slug in &slugs {
        assert_eq!(tenant_migrations(&env, slug).await.len(), 2, "{slug}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn max_failures_halts_the_rollout_and_skips_what_had_not_started() {
    let env = TestEnv::new().with_migrations(&[]);
    let slugs = fleet(&env, "maxf").await;
    for slug in &slugs[..3] {
        sqlx::raw_sql("CREATE TABLE users_nickname (x int)")
            .execute(&mut tenant_db(&env, slug).await)
            .await
            .unwrap();
    }
    add_migration(&env, NICKNAME);
    let receiver = crate::webhooks::Receiver::start().await;
    cli_ok(
        &env,
        &[
            "webhook",
            "add",
            &receiver.url,
            "--events",
            "rollout.halted,job.failed",
        ],
    );
    // One job at a time, in slug order: the two first failures halt it.
    let _worker = env.spawn_worker("w", &["--concurrency", "1"], &[]).await;

    let (ok, out, _) = cli(
        &env,
        &["migrate", "--all", "--max-failures", "2", "--wait", "--json"],
    );
    assert!(!ok);
    let rollout = rollout_json(&out);
    assert_eq!(rollout["status"], "halted");
    assert_eq!(rollout["failed"], 2, "{rollout}");
    assert_eq!(rollout["skipped"], (FLEET - 2) as i64, "{rollout}");
    // Progress comes from counters the catalog keeps: they agree with the per-tenant rows.
    assert_eq!(rollout["tenants"], FLEET as i64, "{rollout}");
    assert_eq!(rollout["succeeded"], 0, "{rollout}");
    assert_eq!(rollout["remaining"], 0, "{rollout}");
    assert_eq!(rollout["per_tenant"].as_array().unwrap().len(), FLEET);
    assert!(rollout["halted_reason"]
        .as_str()
        .unwrap()
        .contains("max-failures 2"));
    // Notified: the halt once, the two failures; the skipped jobs are not failures of their own.
    let got = receiver.wait_accepted(3, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events: Vec<serde_json::Value> = receiver
        .accepted()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!((got.len(), events.len()), (3, 3), "{events:?}");
    let halted: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "rollout.halted").collect();
    assert_eq!(halted.len(), 1, "{events:?}");
    assert!(halted[0]["rollout"]["reason"]
        .as_str()
        .unwrap()
        .contains("max-failures 2"));
    assert_eq!(
        events.iter().filter(|e| e["event"] == "job.failed").count(),
        2,
        "{events:?}"
    );
    let skipped = rollout["per_tenant"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["error"].as_str().is_some_and(|e| e.starts_with("skipped:")));
    assert_eq!(skipped.count(), FLEET - 2);
    for slug in &slugs[2..] {
        assert_eq!(
            tenant_migrations(&env, slug).await.len(),
            1,
            "{slug} ran after the halt"
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn the_per_server_cap_holds_across_workers() {
    let env = TestEnv::new().with_migrations(&[]);
    let slugs = fleet(&env, "capped").await;
    // Slow enough that uncapped migrations would overlap far beyond the cap.
    std::fs::write(
        env.migrations_dir.as_ref().unwrap().join("2_slow.sql"),
        "SELECT pg_sleep(0.15); ALTER TABLE users ADD COLUMN slow boolean;",
    )
    .unwrap();
    // Two workers that could run 12 jobs at once between them.
    let _w1 = env.spawn_worker("w1", &["--concurrency", "6"], &[]).await;
    let _w2 = env.spawn_worker("w2", &["--concurrency", "6"], &[]).await;

    let sampling = tokio::sync::watch::channel(true);
    let namespace = env.namespace.clone();
    let mut stop = sampling.1.clone();
    let sampler = tokio::spawn(async move {
        let mut admin = admin().await;
        let mut most = 0i64;
        while *stop.borrow_and_update() {
            // Sessions of tenant roles in their own databases: the migrations running now.
            let running: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE starts_with(usename, $1) AND starts_with(datname, $1) AND state = 'active'",
            )
            .bind(format!("{namespace}_"))
            .fetch_one(&mut admin)
            .await
            .unwrap();
            most = most.max(running);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        most
    });
    let mut migrate = env.pgfleet();
    migrate.args(["migrate", "--all", "--wait", "--json", "--concurrency", "2"]);
    // Off the test's (single-threaded) runtime, so the sampler runs meanwhile.
    let out = tokio::task::spawn_blocking(move || migrate.output().unwrap())
        .await
        .unwrap();
    let (ok, out, err) = (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    sampling.0.send(false).unwrap();
    let most = sampler.await.unwrap();
    assert!(ok, "{out}\n{err}");
    assert_eq!(rollout_json(&out)["succeeded"], slugs.len() as i64);
    assert_eq!(
        most, 2,
        "at most 2 migrations at once on the server, and the cap was reached"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn an_operator_halts_a_rollout_and_resumes_it_where_it_stopped() {
    let env = TestEnv::new().with_migrations(&[]);
    let slugs = fleet(&env, "pause").await;
    add_migration(&env, NICKNAME);
    // No worker yet: the two canary jobs stay queued.
    let (ok, out, err) = cli(&env, &["migrate", "--all", "--canary", "2", "--json"]);
    assert!(ok, "{out}\n{err}");
    let id = rollout_json(&out)["id"].as_str().unwrap().to_owned();

    let halted = rollout_json(&cli_ok(
        &env,
        &["rollouts", "halt", &id, "--reason", "db maintenance", "--json"],
    ));
    assert_eq!(halted["status"], "halted", "{halted}");
    assert_eq!(halted["halted_reason"], "db maintenance");
    assert_eq!(
        halted["skipped"], 2,
        "the queued canary jobs are skipped: {halted}"
    );
    let (ok, _, err) = cli(&env, &["rollouts", "halt", &id]);
    assert!(!ok && err.contains("only a running rollout is halted"), "{err}");

    // Halted, a worker runs nothing of it.
    let _worker = env.spawn_worker("w", &["--concurrency", "4"], &[]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let catalog = env.catalog().await;
    let at_target: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE schema_version = 2")
        .fetch_one(catalog.pool())
        .await
        .unwrap();
    assert_eq!(at_target, 0);

    // Resumed: the skipped canaries get new jobs, then the main phase runs as usual.
    let resumed = rollout_json(&cli_ok(&env, &["rollouts", "resume", &id, "--json"]));
    assert_eq!(resumed["new_jobs"], 2, "{resumed}");
    assert_eq!(resumed["status"], "running");
    let (ok, _, err) = cli(&env, &["rollouts", "resume", &id]);
    assert!(!ok && err.contains("only a halted rollout is resumed"), "{err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let done = loop {
        let r = rollout_json(&cli_ok(&env, &["rollouts", "show", &id, "--json"]));
        if r["status"] == "done" {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "rollout not done: {r}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(done["succeeded"], FLEET as i64, "{done}");
    assert_eq!(done["skipped"], 0, "the skipped jobs were replaced: {done}");
    for slug in &slugs {
        assert_eq!(tenant_migrations(&env, slug).await.len(), 2, "{slug}");
    }
    env.cleanup().await;
}
