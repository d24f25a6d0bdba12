//! Scale (#18): capacity per job kind, so bulk work never delays a signup.

use crate::support::*;
use std::time::{Duration, Instant};

/// A worker whose backup slots are all busy (two tenants whose sessions hold a lock their
/// `pg_dump` waits for) still provisions a signup at once: every kind has a slot pool of
/// its own, and a queue's prefetch matches its pool.
#[tokio::test]
async fn a_worker_whose_backup_slots_are_all_busy_still_provisions_at_once() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    // Two backup slots, two provision slots.
    let worker = env
        .spawn_worker(
            "w",
            &["--concurrency", "2", "--kind-concurrency", "backup=2"],
            &[],
        )
        .await;
    assert!(worker.log().contains("backup=2"), "{}", worker.log());
    let mut holders = Vec::new();
    for slug in ["held-a", "held-b"] {
        cli_ok(&env, &["tenant", "create", slug, "--wait"]);
        let mut conn = tenant_conn(&env, slug).await;
        sqlx::raw_sql("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            .execute(&mut conn)
            .await
            .unwrap();
        holders.push(conn);
    }
    for slug in ["held-a", "held-b"] {
        cli_ok(&env, &["backup", slug, "--key", &format!("b-{slug}")]);
    }
    for slug in ["held-a", "held-b"] {
        env.wait_job(&catalog, &format!("b-{slug}"), "running", Duration::from_secs(30))
            .await;
    }
    // More bulk work queued behind them.
    cli_ok(&env, &["backup", "--all"]);

    let started = Instant::now();
    env.publish_raw(
        "provision",
        br#"{"kind": "provision", "tenant": "night-signup", "key": "signup-0200"}"#,
    )
    .await;
    env.wait_tenant_active(&catalog, "night-signup", Duration::from_secs(50))
        .await;
    let waited = started.elapsed();
    // The backups still hold both their slots (first attempt, still waiting for the lock):
    // the signup did not wait for one of theirs.
    for slug in ["held-a", "held-b"] {
        let job = env
            .wait_job(&catalog, &format!("b-{slug}"), "running", Duration::from_secs(1))
            .await;
        assert_eq!(job.attempts, 1, "the signup took {waited:?}: {job:?}");
    }
    drop(holders);
    env.wait_job(&catalog, "b-held-a", "succeeded", Duration::from_secs(60))
        .await;
    env.cleanup().await;
}

/// Series lines (not comments) of a scrape.
fn series(metrics: &str) -> Vec<&str> {
    metrics.lines().filter(|l| !l.starts_with('#')).collect()
}

/// `/metrics` has as many series with 20 tenants as with 520: backup ages are a distribution
/// (tenants per age bucket, never backed up, due, overdue) plus the 10 oldest; one series
/// per tenant only with `--metrics-per-tenant`.
#[tokio::test]
async fn metrics_series_do_not_grow_with_the_number_of_tenants() {
    use crate::api::sample;
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let (_api, base) = env.spawn_api("api").await;
    let scrape = |base: String| async move {
        http(None)
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    fake_tenants(&catalog, "few", 20, "0 0 * * *").await;
    let few = scrape(base.clone()).await;
    fake_tenants(&catalog, "many", 500, "0 0 * * *").await;
    // Some have a scheduled backup due: 5 for 7 hours (overdue), 3 for one hour.
    for (n, hours) in [(5, 7), (3, 1)] {
        sqlx::query(
            "UPDATE tenants SET backup_due_since = now() - make_interval(hours => $2)
              WHERE id IN (SELECT id FROM tenants WHERE backup_due_since IS NULL AND slug LIKE 'many-%' LIMIT $1)",
        )
        .bind(n as i64)
        .bind(hours)
        .execute(catalog.pool())
        .await
        .unwrap();
    }
    let many = scrape(base.clone()).await;
    assert_eq!(series(&few).len(), series(&many).len(), "{many}");
    assert_eq!(
        sample(&many, r#"pgfleet_backup_age_tenants{le="+Inf"}"#),
        Some(520.0)
    );
    assert_eq!(sample(&many, "pgfleet_backup_never_tenants"), Some(520.0));
    assert_eq!(sample(&many, "pgfleet_backup_due_tenants"), Some(8.0));
    assert_eq!(sample(&many, "pgfleet_backup_overdue_tenants"), Some(5.0));
    assert_eq!(
        many.lines()
            .filter(|l| l.starts_with("pgfleet_backup_oldest_age_seconds{"))
            .count(),
        10
    );
    assert!(!many.contains("pgfleet_tenant_last_backup_age_seconds{"));

    // A backup taken after the slot fulfils it: the trigger clears `due`, sets the age.
    let tenant: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM tenants WHERE backup_due_since < now() - interval '6 hours' LIMIT 1",
    )
    .fetch_one(catalog.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO backups (id, tenant_id, key, status, created_at, finished_at) VALUES ($1, $2, $3, 'succeeded', now(), now())",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(tenant)
    .bind(format!("fake/{tenant}.sql.gz"))
    .execute(catalog.pool())
    .await
    .unwrap();
    let after = scrape(base.clone()).await;
    assert_eq!(sample(&after, "pgfleet_backup_overdue_tenants"), Some(4.0));
    assert_eq!(sample(&after, "pgfleet_backup_never_tenants"), Some(519.0));
    assert_eq!(
        sample(&after, r#"pgfleet_backup_age_tenants{le="3600"}"#),
        Some(1.0)
    );

    // Per tenant on request.
    let per_tenant_api = env
        .spawn_process(
            "api-per-tenant",
            &["serve", "--listen", "127.0.0.1:0", "--metrics-per-tenant"],
            &[("PGFLEET_API_TOKEN", API_TOKEN)],
            "listening on http://",
        )
        .await;
    let per_tenant = scrape(api_base_url(&per_tenant_api.log())).await;
    assert_eq!(
        per_tenant
            .lines()
            .filter(|l| l.starts_with("pgfleet_tenant_last_backup_age_seconds{"))
            .count(),
        520
    );
    env.cleanup().await;
}

/// Follows `GET path` and its `Link: rel="next"` pages; returns every listed row's `field`.
async fn page_through(base: &str, path: &str, field: &str) -> Vec<String> {
    let client = http(Some(API_TOKEN));
    let mut next = Some(path.to_owned());
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(path) = next.take() {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        next = response
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned())
            .map(|l| l.trim_start_matches('<').split('>').next().unwrap().to_owned());
        let rows: Vec<serde_json::Value> = response.json().await.unwrap();
        seen.extend(rows.iter().map(|r| r[field].as_str().unwrap().to_owned()));
        pages += 1;
        assert!(pages < 100, "paging does not end");
    }
    seen
}

/// Tenants and jobs page through 10,000 rows with opaque cursors while rows are added
/// between pages: every row that existed when paging began is listed exactly once.
#[tokio::test]
async fn cursors_page_through_ten_thousand_rows_while_rows_are_added() {
    use std::collections::HashSet;
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let (_api, base) = env.spawn_api("api").await;
    let tenants: HashSet<String> = fake_tenants(&catalog, "t", 10_000, "off")
        .await
        .into_iter()
        .collect();
    // Jobs three to a timestamp, so the cursor's tie-break (id) matters.
    sqlx::query(
        "INSERT INTO jobs (id, idempotency_key, kind, tenant, status, attempts, max_attempts, created_at)
         SELECT gen_random_uuid(), 'page-' || g, 'backup', 't-1', 'succeeded', 1, 5,
                now() - (g / 3) * interval '1 ms'
           FROM generate_series(1, 10000) g",
    )
    .execute(catalog.pool())
    .await
    .unwrap();
    let jobs: HashSet<String> = sqlx::query_scalar("SELECT id::text FROM jobs")
        .fetch_all(catalog.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();

    let seen = page_through(&base, "/v1/tenants?limit=700", "slug").await;
    let pool = catalog.pool().clone();
    // Rows added while paging: tenants sorting before and after the cursor, newer jobs.
    let adder = tokio::spawn(async move {
        for round in 0..40 {
            sqlx::query(
                "INSERT INTO tenants (slug, status, server_id, database_name, role_name, password_ciphertext, connection_limit)
                 SELECT 'a' || $1 || '-' || g, 'active', server_id, 'fake_a' || $1 || g, 'fake_ra' || $1 || g, '\\x00'::bytea, 10
                   FROM tenants, generate_series(1, 5) g WHERE slug = 't-1'
                 UNION ALL
                 SELECT 'z' || $1 || '-' || g, 'active', server_id, 'fake_z' || $1 || g, 'fake_rz' || $1 || g, '\\x00'::bytea, 10
                   FROM tenants, generate_series(1, 5) g WHERE slug = 't-1'",
            )
            .bind(round)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO jobs (id, idempotency_key, kind, tenant, status, attempts, max_attempts)
                 SELECT gen_random_uuid(), 'new-' || $1 || '-' || g, 'backup', 't-1', 'queued', 0, 5
                   FROM generate_series(1, 10) g",
            )
            .bind(round)
            .execute(&pool)
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let seen_during = page_through(&base, "/v1/tenants?limit=700", "slug").await;
    let jobs_seen = page_through(&base, "/v1/jobs?limit=700", "id").await;
    adder.await.unwrap();

    for (listed, existing, what) in [
        (&seen, &tenants, "tenants"),
        (&seen_during, &tenants, "tenants"),
        (&jobs_seen, &jobs, "jobs"),
    ] {
        let unique: HashSet<&String> = listed.iter().collect();
        assert_eq!(unique.len(), listed.len(), "{what}: a row was listed twice");
        let missing = existing.iter().filter(|r| !unique.contains(r)).count();
        assert_eq!(missing, 0, "{what}: {missing} existing rows were skipped");
    }
    assert_eq!(seen.len(), 10_000);

    // The CLI pages the same way.
    let (ok, out, err) = env.run_cli(&["jobs", "list", "--limit", "3", "--json"]);
    assert!(ok, "{err}");
    let first: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let cursor = err
        .lines()
        .find_map(|l| l.strip_prefix("next page: --cursor "))
        .unwrap()
        .to_owned();
    let (ok, out, err) = env.run_cli(&["jobs", "list", "--limit", "3", "--cursor", &cursor, "--json"]);
    assert!(ok, "{err}");
    let second: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(second.len(), 3);
    assert!(first.iter().all(|j| !second.contains(j)));
    let (ok, _, err) = env.run_cli(&["tenant", "list", "--cursor", "not-a-cursor"]);
    assert!(!ok);
    assert!(err.contains("invalid cursor"), "{err}");
    env.cleanup().await;
}

/// The counters behind `/metrics` and `rollouts show` stay exact when single statements move
/// thousands of jobs at once (a rollout phase recorded in one statement, bulk status moves,
/// an upsert that revives finished jobs, history pruning): they are kept per statement, from
/// the statement's transition tables, and must add up to what a recount finds.
#[tokio::test]
async fn counters_stay_exact_when_one_statement_moves_thousands_of_jobs() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    fake_tenants(&catalog, "bulk", 3000, "off").await;
    let rollout = uuid::Uuid::now_v7();
    let statements = [
        format!("INSERT INTO rollouts (id, target_version, canary, server_concurrency) VALUES ('{rollout}', 7, 10, 4)"),
        // Every tenant joins in one statement; the first 10 (slug order) are the canary.
        format!(
            "INSERT INTO rollout_tenants (rollout_id, tenant_id, phase)
             SELECT '{rollout}', id, CASE WHEN row_number() OVER (ORDER BY slug) <= 10 THEN 'canary' ELSE 'main' END
               FROM tenants WHERE slug LIKE 'bulk-%'"
        ),
        // The phase's jobs recorded and attached in one statement.
        format!(
            "WITH j AS (
               INSERT INTO jobs (id, idempotency_key, kind, tenant, payload, max_attempts)
               SELECT gen_random_uuid(), 'migrate:{rollout}:' || t.slug, 'migrate', t.slug,
                      jsonb_build_object('kind', 'migrate', 'rollout', '{rollout}'), 3
                 FROM rollout_tenants rt JOIN tenants t ON t.id = rt.tenant_id
                WHERE rt.rollout_id = '{rollout}'
               RETURNING id, tenant)
             UPDATE rollout_tenants rt SET job_id = j.id FROM j JOIN tenants t ON t.slug = j.tenant
              WHERE rt.tenant_id = t.id AND rt.rollout_id = '{rollout}'"
        ),
        // Scheduled backups of every tenant, one statement.
        "INSERT INTO jobs (id, idempotency_key, kind, tenant, max_attempts)
         SELECT gen_random_uuid(), 'backup:' || slug, 'backup', slug, 3 FROM tenants WHERE slug LIKE 'bulk-%'"
            .to_owned(),
        "UPDATE jobs SET status = 'running', attempts = 1, started_at = now() - interval '2 seconds'
          WHERE tenant LIKE 'bulk-%' AND hashtext(id::text) % 3 <> 0"
            .to_owned(),
        "UPDATE jobs SET status = 'succeeded', finished_at = now()
          WHERE tenant LIKE 'bulk-%' AND status = 'running' AND hashtext(id::text) % 2 = 0"
            .to_owned(),
        "UPDATE jobs SET status = 'failed', error = 'skipped: tenant is not active', finished_at = now()
          WHERE tenant LIKE 'bulk-%' AND status = 'running' AND hashtext(id::text) % 5 = 1"
            .to_owned(),
        "UPDATE jobs SET status = 'failed', error = 'relation \"users\" already exists', finished_at = now()
          WHERE tenant LIKE 'bulk-%' AND status = 'running' AND kind = 'migrate' AND hashtext(id::text) % 7 = 1"
            .to_owned(),
        // Lease renewals move nothing.
        "UPDATE jobs SET lease_expires_at = now() + interval '1 minute' WHERE status = 'running'".to_owned(),
        // A producer upsert that re-queues 500 finished or running backups.
        "INSERT INTO jobs (id, idempotency_key, kind, tenant, max_attempts)
         SELECT gen_random_uuid(), 'backup:' || slug, 'backup', slug, 3 FROM tenants
          WHERE slug LIKE 'bulk-%' AND slug < 'bulk-1450'
         ON CONFLICT (idempotency_key) DO UPDATE SET status = 'queued', error = NULL, finished_at = NULL"
            .to_owned(),
        // Canary tenants moved to the main phase; history pruning removes finished backups.
        format!("UPDATE rollout_tenants SET phase = 'main' WHERE rollout_id = '{rollout}' AND phase = 'canary'"),
        "DELETE FROM jobs WHERE kind = 'backup' AND status = 'succeeded'".to_owned(),
    ];
    for sql in &statements {
        sqlx::raw_sql(sql).execute(catalog.pool()).await.unwrap();
    }

    // What /metrics reads (pgfleet_jobs) against a recount.
    let mut counted: Vec<(String, String, i64)> = catalog
        .job_counts()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, _, n)| *n != 0)
        .collect();
    counted.sort();
    let recount: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT kind, status, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")
            .fetch_all(catalog.pool())
            .await
            .unwrap();
    assert_eq!(counted, recount);
    assert!(
        recount.len() >= 6,
        "the workload moved jobs through every status: {recount:?}"
    );

    // The duration histogram's +Inf bucket: every job that finished (pruned ones included).
    let finished_ever: i64 =
        sqlx::query_scalar("SELECT sum(n)::int8 FROM job_duration_counts WHERE le = 'Infinity'")
            .fetch_one(catalog.pool())
            .await
            .unwrap();
    assert!(finished_ever > 2000, "{finished_ever}");

    // What `rollouts show` reads against a recount of the rollout's tenants and their jobs.
    let shown = catalog.rollout(rollout).await.unwrap().unwrap();
    let (tenants, succeeded, failed, skipped, remaining): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE o = 'succeeded'), count(*) FILTER (WHERE o = 'failed'),
                count(*) FILTER (WHERE o = 'skipped'), count(*) FILTER (WHERE o IN ('none', 'active'))
           FROM (SELECT pgfleet_rollout_outcome(j.status, j.error) AS o
                   FROM rollout_tenants rt LEFT JOIN jobs j ON j.id = rt.job_id
                  WHERE rt.rollout_id = $1) x",
    )
    .bind(rollout)
    .fetch_one(catalog.pool())
    .await
    .unwrap();
    assert_eq!(tenants, 3000);
    assert!(succeeded > 0 && failed > 0 && skipped > 0 && remaining > 0);
    assert_eq!(
        (
            shown.tenants,
            shown.succeeded,
            shown.failed,
            shown.skipped,
            shown.remaining
        ),
        (tenants, succeeded, failed, skipped, remaining)
    );
    let canary: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(n), 0)::int8 FROM rollout_counts WHERE rollout_id = $1 AND phase = 'canary'",
    )
    .bind(rollout)
    .fetch_one(catalog.pool())
    .await
    .unwrap();
    assert_eq!(canary, 0, "the canary tenants moved to the main phase");
    env.cleanup().await;
}

/// A scheduled backup steps aside while a signup is in flight in its worker: it does not
/// start `pg_dump` (nor read its next block) until the signup's outcome is recorded — then
/// it goes on and succeeds. Real `pg_dump`, real tenant, real store.
#[tokio::test]
async fn a_backup_waits_while_a_signup_is_in_flight_in_its_worker() {
    use pgfleet_shared::jobs::FaultPoints;
    use pgfleet_shared::priority::MAX_PAUSE;
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "steady", "--wait"]);
    drop(worker);
    let ctx = env.job_context(FaultPoints::default()).await;

    // A signup between its delivery and its outcome in this worker.
    let signup = ctx.priority.interactive();
    let job = claim_backup(
        &catalog,
        &pgfleet_shared::TenantSlug::parse("steady").unwrap(),
        "backup-during-signup",
    )
    .await;
    let backup = tokio::spawn({
        let ctx = ctx.clone();
        async move { pgfleet_shared::jobs::run(&ctx, &job).await }
    });
    // A backup of this small tenant takes well under a second when nothing holds it.
    tokio::time::sleep(MAX_PAUSE / 2).await;
    assert!(!backup.is_finished(), "the backup ran during the signup");
    drop(signup);
    let outcome = tokio::time::timeout(Duration::from_secs(60), backup)
        .await
        .expect("the backup went on after the signup")
        .unwrap()
        .unwrap();
    assert_eq!(outcome.summary, "backed up", "{outcome:?}");
    env.cleanup().await;
}
