//! The operator's actions on a job, from the CLI and the API: retry a failed one once its
//! cause is fixed (asking twice gives the same new job), cancel a queued one (its message,
//! delivered later, runs nothing), and refusals for the wrong states.

use crate::support::*;
use serde_json::Value;
use std::time::Duration;

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_is_retried_once_fixed_and_a_queued_one_cancelled() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let receiver = crate::webhooks::Receiver::start().await;
    cli_ok(&env, &["webhook", "add", &receiver.url, "--events", "job.failed"]);
    let worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "oops", "--wait"]);
    let into = env.outside_name("restored");
    let (ok, out, _) = env.run_cli(&["restore", "oops", "--into", &into, "--wait", "--json"]);
    assert!(!ok, "no backup yet: the restore fails");
    let failed = json_of(&out);
    let failed_id = failed["id"].as_str().unwrap().to_owned();

    // Fixed (a backup now exists): the retry succeeds; asking again gives the same job.
    cli_ok(&env, &["backup", "oops", "--wait"]);
    let retried = json_of(&cli_ok(&env, &["jobs", "retry", &failed_id, "--wait", "--json"]));
    assert_eq!(retried["status"], "succeeded", "{retried}");
    assert_ne!(retried["id"], failed["id"]);
    assert_eq!(retried["kind"], "restore");
    let again = json_of(&cli_ok(&env, &["jobs", "retry", &failed_id, "--json"]));
    assert_eq!(again["id"], retried["id"]);
    let (ok, _, err) = env.run_cli(&["jobs", "retry", retried["id"].as_str().unwrap()]);
    assert!(!ok && err.contains("only failed or dead jobs"), "{err}");

    // Cancel: with no worker running the backup stays queued; cancelled, it never runs.
    drop(worker);
    let queued = json_of(&cli_ok(&env, &["backup", "oops", "--json"]));
    let queued_id = queued["id"].as_str().unwrap().to_owned();
    let (_api, base) = env.spawn_api("api").await;
    let client = http(Some(API_TOKEN));
    let cancelled: Value = client
        .post(format!("{base}/v1/jobs/{queued_id}/cancel"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "failed", "{cancelled}");
    assert!(cancelled["error"].as_str().unwrap().starts_with("cancelled:"));
    let refused = client
        .post(format!("{base}/v1/jobs/{queued_id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let backups_before = json_of(&cli_ok(&env, &["backups", "list", "oops", "--json"]))
        .as_array()
        .unwrap()
        .len();
    let _worker = env.spawn_worker("w2", &[], &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        json_of(&cli_ok(&env, &["backups", "list", "oops", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        backups_before,
        "the cancelled backup ran"
    );
    assert_eq!(
        json_of(&cli_ok(&env, &["jobs", "show", &queued_id, "--json"]))["status"],
        "failed"
    );
    // Over the API: the failed restore's retry is the same job as the CLI's.
    let answer = client
        .post(format!("{base}/v1/jobs/{failed_id}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        (body["job_id"].clone(), body["created"].clone()),
        (retried["id"].clone(), Value::Bool(false))
    );

    // Notified: the restore's failure, not the operator's cancellation.
    let got = receiver.wait_accepted(1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events: Vec<Value> = receiver
        .accepted()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!((got.len(), events.len()), (1, 1), "{events:?}");
    assert_eq!(events[0]["job"]["id"].as_str(), Some(failed_id.as_str()));
    drop(catalog);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_safely_replayed_when_understood_and_discarded() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let _worker = env.spawn_worker("w", &[], &[]).await;
    // Hostile: a slug that is markup. Dead-lettered with its reason, body kept as bytes.
    env.publish_raw(
        "provision",
        br#"{"kind":"provision","tenant":"<script>alert(1)</script>"}"#,
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let hostile = loop {
        let listed = json_of(&cli_ok(&env, &["dead-letters", "list", "--json"]));
        if let Some(first) = listed.as_array().unwrap().first() {
            break first.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no dead letter recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(hostile["routing_key"], "provision");
    assert!(
        hostile["reason"]
            .as_str()
            .unwrap()
            .contains("invalid tenant slug"),
        "{hostile}"
    );
    assert!(hostile["body"].as_str().unwrap().contains("<script>"));
    let id = hostile["id"].as_str().unwrap().to_owned();
    let (ok, _, err) = env.run_cli(&["dead-letters", "replay", &id]);
    assert!(!ok && err.contains("still can't be understood"), "{err}");

    // A letter this version understands (as after an upgrade that added its kind): replayed
    // as a new job, which runs, and the letter is forgotten.
    sqlx::query(
        "INSERT INTO dead_letters (queue, routing_key, reason, body)
         VALUES ($1, 'provision', 'unknown job kind (older version)', $2)",
    )
    .bind(format!("{}.provision", env.namespace))
    .bind(br#"{"kind":"provision","tenant":"late-arrival"}"#.to_vec())
    .execute(catalog.pool())
    .await
    .unwrap();
    let listed = json_of(&cli_ok(&env, &["dead-letters", "list", "--json"]));
    let understood = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["body"].as_str().unwrap().contains("late-arrival"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_api, base) = env.spawn_api("api").await;
    let answer = http(Some(API_TOKEN))
        .post(format!("{base}/v1/dead-letters/{understood}/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    env.wait_tenant_active(&catalog, "late-arrival", Duration::from_secs(60))
        .await;
    let gone = http(Some(API_TOKEN))
        .delete(format!("{base}/v1/dead-letters/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    let left = json_of(&cli_ok(&env, &["dead-letters", "list", "--json"]));
    assert!(left.as_array().unwrap().is_empty(), "{left}");
    env.cleanup().await;
}
