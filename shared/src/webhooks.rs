//! Delivering failure notifications: due rows of the catalog's outbox are claimed with a
//! short lease (so two workers never post the same delivery at once, and a dead worker's are
//! taken over), posted with an HMAC-SHA256 signature, and marked delivered on a 2xx or
//! retried with backoff (1 s doubling to 10 min; `failed` after `MAX_ATTEMPTS`, ~1 day).
//!
//! Signature (`X-Pgfleet-Signature: t=<unix seconds>,v1=<hex>`): HMAC-SHA256 with the
//! webhook's secret over `<t>.<body>`. A receiver recomputes it, compares in constant time
//! and refuses a `t` older than a few minutes, so a captured request can't be replayed.
//! `X-Pgfleet-Delivery` is the delivery's id: the same on every retry, for de-duplication
//! (delivery is at least once: a worker dying between the receiver's 200 and the catalog
//! write posts again).

use crate::catalog::{Catalog, DeliveryRecord};
use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Attempts before a delivery is `failed` for good.
pub const MAX_ATTEMPTS: i32 = 150;
const MAX_BACKOFF: Duration = Duration::from_secs(600);
const LEASE: Duration = Duration::from_secs(60);
const BATCH: i64 = 20;

/// `t=<unix>,v1=<hex hmac>` for `body` at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        crate::hex::encode(&mac.finalize().into_bytes())
    )
}

/// The body posted for a delivery: the event as JSON (with the delivery's `id`), or for
/// `slack` a message Slack's incoming webhooks take (`{"text": …}`).
pub fn body(delivery: &DeliveryRecord, format: &str) -> serde_json::Value {
    let mut event = delivery.payload.clone();
    event["id"] = serde_json::json!(delivery.id);
    if format != "slack" {
        return event;
    }
    let tenant = event["tenant"].as_str().unwrap_or("-");
    let text = match delivery.event.as_str() {
        "job.failed" | "job.dead" => format!(
            ":rotating_light: pgfleet: {} job {} of tenant `{tenant}` is {} after {} attempt(s): {}",
            event["job"]["kind"].as_str().unwrap_or("?"),
            event["job"]["id"].as_str().unwrap_or("?"),
            event["job"]["status"].as_str().unwrap_or("?"),
            event["job"]["attempts"],
            event["job"]["error"].as_str().unwrap_or("no error recorded"),
        ),
        "rollout.halted" => format!(
            ":octagonal_sign: pgfleet: rollout {} halted: {}",
            event["rollout"]["id"].as_str().unwrap_or("?"),
            event["rollout"]["reason"].as_str().unwrap_or("?")
        ),
        "backup.overdue" => format!(
            ":warning: pgfleet: tenant `{tenant}` has had a scheduled backup due since {} without a good backup",
            event["due_since"].as_str().unwrap_or("?")
        ),
        other => format!("pgfleet: {other}"),
    };
    serde_json::json!({ "text": text, "event": event })
}

/// Retry delay after `attempts` attempts: 1 s doubling, at most 10 min.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 10) as u32).min(MAX_BACKOFF)
}

/// Posts what is due, until nothing is; returns how many were delivered.
pub async fn deliver_due(catalog: &Catalog, client: &reqwest::Client) -> Result<usize> {
    let mut delivered = 0;
    loop {
        let due = catalog.claim_deliveries(BATCH, LEASE).await?;
        if due.is_empty() {
            return Ok(delivered);
        }
        for delivery in due {
            delivered += usize::from(deliver_one(catalog, client, &delivery).await?);
        }
    }
}

async fn deliver_one(catalog: &Catalog, client: &reqwest::Client, delivery: &DeliveryRecord) -> Result<bool> {
    let Some(target) = catalog.webhook_target(delivery.webhook_id).await? else {
        return Ok(false); // removed meanwhile (its deliveries go with it)
    };
    let body = serde_json::to_vec(&body(delivery, &target.record.format)).context("encoding the event")?;
    let timestamp = chrono::Utc::now().timestamp();
    let signed = signature(target.secret.expose_secret().as_bytes(), timestamp, &body);
    let sent = client
        .post(target.url.expose_secret())
        .header("content-type", "application/json")
        .header("user-agent", "pgfleet-webhooks")
        .header("x-pgfleet-event", &delivery.event)
        .header("x-pgfleet-delivery", delivery.id.to_string())
        .header("x-pgfleet-signature", signed)
        .body(body)
        .send()
        .await;
    let (status, error) = match sent {
        Ok(response) if response.status().is_success() => {
            catalog
                .delivery_succeeded(delivery.id, i32::from(response.status().as_u16()))
                .await?;
            info!(delivery = %delivery.id, event = %delivery.event, webhook = %target.record.display_url, "webhook delivered");
            return Ok(true);
        }
        Ok(response) => (
            Some(i32::from(response.status().as_u16())),
            format!("the receiver answered {}", response.status()),
        ),
        // reqwest's errors name the URL, which may hold a secret: keep only the kind.
        Err(e) if e.is_timeout() => (None, "no answer within 10 s".to_owned()),
        Err(e) if e.is_connect() => (None, "could not connect to the receiver".to_owned()),
        Err(_) => (None, "the request failed".to_owned()),
    };
    let retry = (delivery.attempts < MAX_ATTEMPTS).then(|| backoff(delivery.attempts));
    warn!(delivery = %delivery.id, event = %delivery.event, webhook = %target.record.display_url,
          attempts = delivery.attempts, error, retry_in = ?retry, "webhook delivery failed");
    catalog
        .delivery_failed(delivery.id, status, &error, retry)
        .await?;
    Ok(false)
}

/// The HTTP client deliveries use (10 s per request, no redirects: a receiver that moved
/// says so in the delivery's error rather than sending the event elsewhere).
pub fn client() -> Result<reqwest::Client> {
    crate::neon::client::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the webhook HTTP client")
}

/// `scheme://host[:port]/…`: a webhook URL as shown (paths and queries may hold secrets).
pub fn display_url(url: &url::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = if url.path() == "/" && url.query().is_none() {
        "/"
    } else {
        "/…"
    };
    format!("{}://{}{port}{rest}", url.scheme(), url.host_str().unwrap_or(""))
}

/// Runs deliveries every `interval` until `shutdown`.
pub async fn delivery_loop(
    catalog: Catalog,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %format!("{e:#}"), "webhook deliveries are off");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match deliver_due(&catalog, &client).await {
            Ok(0) => {}
            Ok(n) => debug!(delivered = n, "webhook deliveries"),
            Err(e) => warn!(error = %format!("{e:#}"), "webhook deliveries failed; will try again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_timestamp_and_body() {
        // HMAC-SHA256("secret", "1700000000.{}"), computed independently:
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature(b"secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        assert_ne!(signature(b"secret", 1, b"a"), signature(b"secret", 2, b"a"));
        assert_ne!(signature(b"other", 1, b"a"), signature(b"secret", 1, b"a"));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn shows_no_path_or_query() {
        let url = url::Url::parse("https://hooks.slack.com/services/T0/B0/secret?x=1").unwrap();
        assert_eq!(display_url(&url), "https://hooks.slack.com/…");
    }
}
