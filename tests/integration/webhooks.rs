//! Failure notifications through webhooks, against a local HTTP receiver: signed (checked
//! here with the openssl CLI, not pgfleet's own code), written in the event's transaction
//! so a worker killed right after a job failed loses nothing, and retried until a receiver
//! that was down takes every event, once.

use crate::support::*;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    answered: u16,
}

/// A minimal HTTP/1.1 receiver: records every request, answers 200 while `up`, else 503.
pub struct Receiver {
    pub url: String,
    up: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hooks/pgfleet?token=receiver-secret",
            listener.local_addr().unwrap()
        );
        let up = Arc::new(AtomicBool::new(true));
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let (up2, got2) = (up.clone(), got.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (up, got) = (up2.clone(), got2.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let header_end = loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
                    let headers: HashMap<String, String> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let length: usize = headers
                        .get("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < header_end + length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let answered = if up.load(Ordering::SeqCst) { 200 } else { 503 };
                    got.lock().unwrap().push(Received {
                        headers,
                        body: buf[header_end..].to_vec(),
                        answered,
                    });
                    let reply =
                        format!("HTTP/1.1 {answered} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        Self { url, up, got }
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.answered == 200)
            .cloned()
            .collect()
    }

    pub async fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} notifications arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Checks `X-Pgfleet-Signature` with the openssl CLI: HMAC-SHA256(secret, "<t>.<body>").
fn assert_signed(received: &Received, secret: &str) {
    let header = &received.headers["x-pgfleet-signature"];
    let (t, v1) = header
        .split_once(',')
        .map(|(t, v)| (t.trim_start_matches("t="), v.trim_start_matches("v1=")))
        .unwrap();
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((0..300).contains(&age), "signature timestamp {age} s old");
    let mut signed = t.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(&received.body);
    let mut openssl = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    openssl.stdin.take().unwrap().write_all(&signed).unwrap();
    let out = String::from_utf8(openssl.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(
        out.trim().rsplit(' ').next().unwrap(),
        v1,
        "signature does not verify"
    );
}

fn add_webhook(env: &TestEnv, url: &str, extra: &[&str]) -> Value {
    let mut args = vec!["webhook", "add", url, "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&cli_ok(env, &args)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_is_notified_even_when_its_worker_dies_right_after() {
    let env = TestEnv::new();
    let _catalog = env.catalog().await;
    let receiver = Receiver::start().await;
    let hook = add_webhook(&env, &receiver.url, &[]);
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let listed = cli_ok(&env, &["webhook", "list", "--json"]);
    assert!(
        !listed.contains("receiver-secret") && !listed.contains(&secret),
        "{listed}"
    );

    // This worker delivers nothing: the failure it causes waits in the outbox.
    let mut doomed = env
        .spawn_worker("doomed", &[], &[("PGFLEET_DELIVER_WEBHOOKS", "false")])
        .await;
    cli_ok(&env, &["tenant", "create", "hooky", "--wait"]);
    let into = env.outside_name("nothing");
    let (ok, out, _) = env.run_cli(&["restore", "hooky", "--into", &into, "--wait", "--json"]);
    assert!(!ok, "a restore without any backup fails");
    let job: Value = serde_json::from_str(&out).unwrap();
    doomed.sigkill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.accepted().is_empty(), "the doomed worker posted");

    let _rescuer = env.spawn_worker("rescuer", &[], &[]).await;
    let got = receiver.wait_accepted(1, Duration::from_secs(30)).await;
    let event: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(event["event"], "job.failed");
    assert_eq!(event["tenant"], "hooky");
    assert_eq!(event["job"]["id"], job["id"]);
    assert_eq!(event["job"]["kind"], "restore");
    assert!(
        event["job"]["error"]
            .as_str()
            .unwrap()
            .contains("no successful backup"),
        "{event}"
    );
    assert_eq!(got[0].headers["x-pgfleet-event"], "job.failed");
    assert_eq!(
        got[0].headers["x-pgfleet-delivery"],
        event["id"].as_str().unwrap()
    );
    assert_signed(&got[0], &secret);
    // Once: nothing more arrives, and the attempt is on record.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.got.lock().unwrap().len(), 1);
    let deliveries: Value =
        serde_json::from_str(&cli_ok(&env, &["webhook", "deliveries", "--json"])).unwrap();
    assert_eq!(deliveries[0]["status"], "delivered");
    assert_eq!(deliveries[0]["attempts"], 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_was_down_gets_every_event_once_in_either_format() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let receiver = Receiver::start().await;
    receiver.up.store(false, Ordering::SeqCst);
    let down_since = Instant::now();
    let json_hook = add_webhook(&env, &receiver.url, &[]);
    let slack_hook = add_webhook(
        &env,
        &receiver.url,
        &["--format", "slack", "--events", "backup.overdue"],
    );
    let (ok, _, err) = env.run_cli(&["webhook", "add", &receiver.url, "--events", "job.exploded"]);
    assert!(!ok && err.contains("unknown event"), "{err}");

    {
        let _setup = env
            .spawn_worker("setup", &[], &[("PGFLEET_DELIVER_WEBHOOKS", "false")])
            .await;
        cli_ok(&env, &["tenant", "create", "late", "--wait"]);
        for name in ["one", "two", "three"] {
            let into = env.outside_name(name);
            let (ok, _, _) = env.run_cli(&["restore", "late", "--into", &into, "--wait"]);
            assert!(!ok);
        }
    }
    // A scheduled backup due for 7 hours: overdue, noticed by the first sweep.
    sqlx::query("UPDATE tenants SET backup_due_since = now() - interval '7 hours' WHERE slug = 'late'")
        .execute(catalog.pool())
        .await
        .unwrap();
    let _worker = env.spawn_worker("w", &[], &[]).await;
    // Down: attempts pile up on record, nothing is lost.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let deliveries: Value =
            serde_json::from_str(&cli_ok(&env, &["webhook", "deliveries", "--json"])).unwrap();
        let all = deliveries.as_array().unwrap();
        if all.len() == 5 && all.iter().all(|d| d["attempts"].as_i64().unwrap() >= 2) {
            assert!(
                all.iter()
                    .all(|d| d["status"] == "pending" && d["last_status"] == 503),
                "{deliveries}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries were not retried: {deliveries}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Down for a minute in all, as a receiver's deploy or outage would be.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(down_since.elapsed())).await;
    receiver.up.store(true, Ordering::SeqCst);
    let got = receiver.wait_accepted(5, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_after = receiver.accepted();
    assert_eq!(got_after.len(), 5, "an event arrived twice");
    let ids: std::collections::HashSet<&str> = got
        .iter()
        .map(|r| r.headers["x-pgfleet-delivery"].as_str())
        .collect();
    assert_eq!(ids.len(), 5);
    let mut by_event: HashMap<String, usize> = HashMap::new();
    for r in &got {
        *by_event.entry(r.headers["x-pgfleet-event"].clone()).or_default() += 1;
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        if body.get("text").is_some() {
            assert!(body["text"].as_str().unwrap().contains("`late`"), "{body}");
            assert_signed(r, slack_hook["secret"].as_str().unwrap());
        } else {
            assert_signed(r, json_hook["secret"].as_str().unwrap());
        }
    }
    assert_eq!(by_event["job.failed"], 3);
    assert_eq!(by_event["backup.overdue"], 2, "one per webhook");
    env.cleanup().await;
}
