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
