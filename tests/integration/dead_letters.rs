//! Bad input: every message that can't be understood ends in `<ns>.dead` with its reason,
//! nothing built from it reaches SQL, and the worker carries on.

use crate::support::*;
use std::time::Duration;

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_a_reason_and_the_worker_goes_on() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let worker = env.spawn_worker("w", &["--concurrency", "2"], &[]).await;

    let poison: &[(&str, &[u8], &str)] = &[
        ("provision", b"this is not json {", "not UTF-8 JSON"),
        (
            "provision",
            br#"{"tenant":"no-kind"}"#,
            "missing required field `kind`",
        ),
        (
            "provision",
            br#"{"kind":"provision"}"#,
            "missing required field `tenant`",
        ),
        (
            "provision",
            br#"{"kind":"explode","tenant":"acme"}"#,
            "unknown job kind",
        ),
        (
            "explode",
            br#"{"kind":"explode","tenant":"acme-two"}"#,
            "routing key",
        ),
        (
            "provision",
            br#"{"kind":"provision","tenant":"x\"; drop database postgres; --"}"#,
            "invalid tenant slug",
        ),
        (
            "provision",
            br#"{"kind":"provision","tenant":"UPPER-case"}"#,
            "invalid tenant slug",
        ),
    ];
    for (routing_key, body, _) in poison {
        env.publish_raw(routing_key, body).await;
    }
    // The worker is still up and working.
    env.publish_raw(
        "provision",
        br#"{"kind":"provision","tenant":"survivor","key":"k-ok"}"#,
    )
    .await;
    env.wait_job(&catalog, "k-ok", "succeeded", Duration::from_secs(60))
        .await;

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while catalog.dead_letter_reasons().await.unwrap().len() < poison.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "not all poison messages were dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = env.drain_dead_letters().await;
    assert_eq!(dead.len(), poison.len(), "{dead:?}");
    for (_, body, expected) in poison {
        let (_, reason) = dead
            .iter()
            .find(|(b, _)| b == body)
            .unwrap_or_else(|| panic!("{} not in the dead-letter queue", String::from_utf8_lossy(body)));
        let reason = reason.as_deref().expect("x-pgfleet-reason header");
        assert!(
            reason.contains(expected),
            "{reason:?} should mention {expected:?}"
        );
    }
    assert_eq!(catalog.dead_letter_reasons().await.unwrap().len(), poison.len());
    // Nothing was created for any poison message; no job row either.
    assert_eq!(
        env.tenant_databases().await,
        [format!("{}_survivor", env.namespace)]
    );
    assert_eq!(catalog.jobs(None, None, None, 100).await.unwrap().len(), 1);
    let mut admin = admin().await;
    let postgres_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'postgres')")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(postgres_exists);
    drop(worker);
    env.cleanup().await;
}
