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
    // Defaults from --concurrency 2: two backup slots, two provision slots.
    let worker = env.spawn_worker("w", &["--concurrency", "2"], &[]).await;
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
