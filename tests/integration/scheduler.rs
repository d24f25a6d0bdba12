//! The backup scheduler, in process with an injected clock (no sleeping): several replicas
//! enqueue each slot once, downtime is caught up once, `--spread` spreads a slot, and every
//! enqueued job is confirmed by the real broker. The tenants are catalog rows only; no
//! worker runs the jobs.

use crate::support::*;
use chrono::{DateTime, Duration as Span, DurationRound, Utc};
use pgfleet_shared::catalog::{scheduled_backup_key, Catalog};
use pgfleet_shared::queue::Publisher;
use pgfleet_shared::scheduler::{ManualClock, Scheduler, SchedulerSettings, TickReport};
use pgfleet_shared::Namespace;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// A scheduler replica: its own catalog pool and broker connection, the shared clock.
async fn replica(env: &TestEnv, clock: &Arc<ManualClock>, spread: Duration) -> Scheduler {
    let settings = SchedulerSettings {
        spread,
        ..SchedulerSettings::default()
    };
    replica_with(env, clock, settings).await
}

async fn replica_with(env: &TestEnv, clock: &Arc<ManualClock>, settings: SchedulerSettings) -> Scheduler {
    let publisher = Publisher::new(
        AMQP_URL.to_owned().into(),
        Namespace::parse(&env.namespace).unwrap(),
        "test scheduler",
    );
    Scheduler::new(env.catalog().await, Arc::new(publisher), clock.clone(), settings)
}

async fn backup_keys(catalog: &Catalog) -> Vec<String> {
    sqlx::query_scalar("SELECT idempotency_key FROM jobs WHERE kind = 'backup' ORDER BY 1")
        .fetch_all(catalog.pool())
        .await
        .unwrap()
}

/// Both replicas tick at once; returns what they enqueued together.
async fn tick_both(a: &Scheduler, b: &Scheduler) -> (TickReport, TickReport) {
    let (ra, rb) = tokio::join!(a.tick(), b.tick());
    (ra.unwrap(), rb.unwrap())
}

fn next_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Span::hours(1)).unwrap() + Span::hours(1)
}

#[tokio::test]
async fn two_replicas_enqueue_each_slot_once_and_catch_up_once() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let slugs = fake_tenants(&catalog, "hourly", 25, "0 * * * *").await;
    let h0 = next_hour(Utc::now());
    let clock = Arc::new(ManualClock::new(h0 - Span::minutes(30)));
    let a = replica(&env, &clock, Duration::ZERO).await;
    let b = replica(&env, &clock, Duration::ZERO).await;

    // Before the first slot after the tenants were created: nothing is owed.
    let (ra, rb) = tick_both(&a, &b).await;
    assert_eq!(ra.due + rb.due, 0);

    // Three slots, both replicas ticking at each (and twice at the last).
    let mut expected = BTreeSet::new();
    for hour in 0..3 {
        let slot = h0 + Span::hours(hour);
        clock.set(slot + Span::seconds(20));
        let (ra, rb) = tick_both(&a, &b).await;
        assert_eq!(ra.enqueued + rb.enqueued, 25, "slot {slot}: {ra:?} {rb:?}");
        assert_eq!(ra.published + rb.published, 25);
        expected.extend(slugs.iter().map(|s| scheduled_backup_key(s, &slot)));
    }
    let (ra, rb) = tick_both(&a, &b).await;
    assert_eq!(ra.enqueued + rb.enqueued, 0);
    let keys = backup_keys(&catalog).await;
    assert_eq!(keys.len(), 75, "3 backups per tenant, not 6");
    assert_eq!(keys.into_iter().collect::<BTreeSet<_>>(), expected);
    // Confirmed by the broker: every job is a message in the backup queue.
    assert_eq!(queue_depth(&format!("{}.backup", env.namespace)).await, 75);
    // No backup ran: each tenant's backup is due since the first slot it was owed
    // (`pgfleet_backup_due_tenants` / `_overdue_tenants`).
    let due: Vec<Option<chrono::DateTime<Utc>>> =
        sqlx::query_scalar("SELECT DISTINCT backup_due_since FROM tenants")
            .fetch_all(catalog.pool())
            .await
            .unwrap();
    assert_eq!(due, vec![Some(h0)]);

    // Down for five slots: one catch-up backup per tenant, for the newest slot.
    let late = h0 + Span::hours(7) + Span::minutes(5);
    clock.set(late);
    let (ra, rb) = tick_both(&a, &b).await;
    assert_eq!(ra.enqueued + rb.enqueued, 25, "{ra:?} {rb:?}");
    let newest = h0 + Span::hours(7);
    let keys = backup_keys(&catalog).await;
    assert_eq!(keys.len(), 100);
    for slug in &slugs {
        assert!(keys.contains(&scheduled_backup_key(slug, &newest)));
        assert!(!keys.contains(&scheduled_backup_key(slug, &(h0 + Span::hours(5)))));
    }
    assert_eq!(queue_depth(&format!("{}.backup", env.namespace)).await, 100);
    env.cleanup().await;
}

#[tokio::test]
async fn spread_places_each_tenant_in_the_window_and_off_means_off() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    fake_tenants(&catalog, "nightly", 200, "0 0 * * *").await;
    fake_tenants(&catalog, "manual", 1, "off").await;
    fake_tenants(&catalog, "broken", 1, "not a schedule").await;
    let midnight = Utc::now().duration_trunc(Span::days(1)).unwrap() + Span::days(1);
    let clock = Arc::new(ManualClock::new(midnight));
    let hour = Duration::from_secs(3600);
    let a = replica(&env, &clock, hour).await;
    let b = replica(&env, &clock, hour).await;

    let (ra, rb) = tick_both(&a, &b).await;
    let at_midnight = ra.enqueued + rb.enqueued;
    assert!(at_midnight < 10, "{at_midnight} of 200 started at the slot time");
    assert_eq!(ra.invalid, 1, "the unparseable schedule is reported");

    clock.set(midnight + Span::minutes(30));
    let (ra, rb) = tick_both(&a, &b).await;
    let by_half = at_midnight + ra.enqueued + rb.enqueued;
    assert!(
        (60..=140).contains(&by_half),
        "{by_half} of 200 by half the window"
    );

    clock.set(midnight + Span::minutes(60));
    let (ra, rb) = tick_both(&a, &b).await;
    assert_eq!(by_half + ra.enqueued + rb.enqueued, 200);
    let keys = backup_keys(&catalog).await;
    assert_eq!(keys.len(), 200, "each tenant once, the spread does not duplicate");
    assert!(keys
        .iter()
        .all(|k| k.starts_with("backup:nightly-") && k.ends_with("T00:00:00Z")));
    env.cleanup().await;
}

#[tokio::test]
async fn the_scheduler_process_enqueues_a_due_backup() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let slugs = fake_tenants(&catalog, "standalone", 12, "0 * * * *").await;
    // As if the last slot handled was two hours ago: this hour's slot is owed now.
    sqlx::query("UPDATE tenants SET backup_scheduled_through = now() - interval '2 hours'")
        .execute(catalog.pool())
        .await
        .unwrap();
    // Ticks an hour apart, 5 jobs per tick: the 12 due backups take three ticks, which
    // follow each other at once because the first two left backups due.
    let scheduler = env
        .spawn_process(
            "scheduler",
            &["scheduler", "--schedule-interval", "1h", "--max-per-tick", "5"],
            &[],
            "scheduler running",
        )
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let keys = loop {
        let keys = backup_keys(&catalog).await;
        if keys.len() >= slugs.len() || std::time::Instant::now() > deadline {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(keys.len(), 12, "{keys:?}\n{}", scheduler.log());
    for slug in &slugs {
        // This hour's slot (whichever hour it is by now).
        assert!(
            keys.iter()
                .any(|key| key.starts_with(&format!("backup:{slug}:")) && key.ends_with(":00:00Z")),
            "{slug}: {keys:?}"
        );
    }
    scheduler
        .wait_for_log("scheduled backups enqueued", Duration::from_secs(10))
        .await;
    assert_eq!(queue_depth(&format!("{}.backup", env.namespace)).await, 12);
    assert_eq!(
        scheduler.log().matches("scheduled backups enqueued").count(),
        3,
        "{}",
        scheduler.log()
    );
    drop(scheduler);
    env.cleanup().await;
}

/// A tick enqueues at most `max_per_tick` backups, the longest owed first; the rest stay due
/// for the next tick, and every one is enqueued exactly once.
#[tokio::test]
async fn a_tick_enqueues_at_most_its_budget_longest_owed_first() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let h0 = next_hour(Utc::now());
    let hourly = fake_tenants(&catalog, "hourly", 20, "0 * * * *").await;
    // Daily at h0's hour: at h0 + 2h their slot (h0) is owed longer than the hourly ones'.
    let daily = fake_tenants(&catalog, "daily", 10, &format!("0 {} * * *", h0.format("%-H"))).await;
    let clock = Arc::new(ManualClock::new(h0 + Span::hours(2) + Span::seconds(20)));
    let settings = SchedulerSettings {
        max_per_tick: 12,
        ..SchedulerSettings::default()
    };
    let scheduler = replica_with(&env, &clock, settings).await;

    let first = scheduler.tick().await.unwrap();
    assert_eq!(
        (first.due, first.enqueued, first.published, first.deferred),
        (30, 12, 12, 18)
    );
    let keys = backup_keys(&catalog).await;
    for slug in &daily {
        assert!(
            keys.contains(&scheduled_backup_key(slug, &h0)),
            "{slug}: {keys:?}"
        );
    }
    let second = scheduler.tick().await.unwrap();
    assert_eq!((second.due, second.enqueued, second.deferred), (18, 12, 6));
    let third = scheduler.tick().await.unwrap();
    assert_eq!((third.due, third.enqueued, third.deferred), (6, 6, 0));
    let last = scheduler.tick().await.unwrap();
    assert_eq!((last.due, last.enqueued), (0, 0));

    let keys = backup_keys(&catalog).await;
    assert_eq!(keys.len(), 30, "{keys:?}");
    for slug in &hourly {
        assert!(keys.contains(&scheduled_backup_key(slug, &(h0 + Span::hours(2)))));
    }
    assert_eq!(queue_depth(&format!("{}.backup", env.namespace)).await, 30);
    env.cleanup().await;
}

/// A deleted tenant whose backups have not all expired gets a prune at its slots (so they
/// expire by its own retention); one with none left, nothing.
#[tokio::test]
async fn deleted_tenants_with_backups_left_are_pruned_on_their_schedule() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let h0 = next_hour(Utc::now());
    fake_tenants(&catalog, "gone", 2, "0 * * * *").await;
    sqlx::query("UPDATE tenants SET status = 'deleted' WHERE slug LIKE 'gone-%'")
        .execute(catalog.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO backups (id, tenant_id, key, status, created_at, finished_at)
         SELECT $1, id, 'fake/gone-1.sql.gz', 'succeeded', now(), now() FROM tenants WHERE slug = 'gone-1'",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(catalog.pool())
    .await
    .unwrap();
    let clock = Arc::new(ManualClock::new(h0 + Span::seconds(20)));
    let scheduler = replica(&env, &clock, Duration::ZERO).await;
    let report = scheduler.tick().await.unwrap();
    assert_eq!(
        (report.due, report.enqueued, report.published),
        (1, 1, 1),
        "{report:?}"
    );
    let keys: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM jobs WHERE kind = 'prune'")
        .fetch_all(catalog.pool())
        .await
        .unwrap();
    assert_eq!(
        keys,
        vec![pgfleet_shared::catalog::scheduled_prune_key("gone-1", &h0)]
    );
    env.cleanup().await;
}
