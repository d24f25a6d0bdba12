//! Webhooks and their outbox (`webhook_deliveries`): deliveries are written by triggers in
//! the transaction of the event itself (a job failing or dying, a rollout halting) and by
//! the sweep (a backup overdue), then claimed by any worker with a short lease, so a
//! notification survives the worker that caused it.

use super::error::{CatalogError, Result};
use super::Catalog;
use crate::secrets::Binding;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

/// Events a webhook can subscribe to.
pub const WEBHOOK_EVENTS: [&str; 4] = ["job.failed", "job.dead", "rollout.halted", "backup.overdue"];

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRecord {
    pub id: Uuid,
    pub display_url: String,
    pub events: Vec<String>,
    /// `json` or `slack`.
    pub format: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event: String,
    pub payload: serde_json::Value,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

const SELECT_DELIVERY: &str =
    "SELECT id, webhook_id, event, payload, status, attempts, next_attempt_at, last_status,
        last_error, created_at, delivered_at FROM webhook_deliveries";

/// A webhook row with its sealed URL and secret.
type SealedWebhookRow = (Uuid, String, Vec<String>, String, DateTime<Utc>, Vec<u8>, Vec<u8>);

/// A webhook with its decrypted URL and signing secret (for posting; never for printing).
pub struct WebhookTarget {
    pub record: WebhookRecord,
    pub url: SecretString,
    pub secret: SecretString,
}

impl Catalog {
    pub async fn add_webhook(
        &self,
        url: &SecretString,
        display_url: &str,
        secret: &SecretString,
        events: &[String],
        format: &str,
    ) -> Result<WebhookRecord> {
        let id = Uuid::now_v7();
        let key = self.key()?;
        Ok(sqlx::query_as(
            "INSERT INTO webhooks (id, display_url, url_ciphertext, secret_ciphertext, events, format)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, display_url, events, format, created_at",
        )
        .bind(id)
        .bind(display_url)
        .bind(key.encrypt_str(url, &Binding::webhook_url(id)))
        .bind(key.encrypt_str(secret, &Binding::webhook_secret(id)))
        .bind(events)
        .bind(format)
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn webhooks(&self) -> Result<Vec<WebhookRecord>> {
        Ok(sqlx::query_as(
            "SELECT id, display_url, events, format, created_at FROM webhooks ORDER BY created_at",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Removes a webhook and its deliveries; `NotFound` if there is none.
    pub async fn remove_webhook(&self, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(CatalogError::NotFound(format!("no webhook {id}")));
        }
        Ok(())
    }

    pub async fn webhook_target(&self, id: Uuid) -> Result<Option<WebhookTarget>> {
        let row: Option<SealedWebhookRow> = sqlx::query_as(
            "SELECT id, display_url, events, format, created_at, url_ciphertext, secret_ciphertext FROM webhooks WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let Some((id, display_url, events, format, created_at, url, secret)) = row else {
            return Ok(None);
        };
        let key = self.key()?;
        Ok(Some(WebhookTarget {
            url: key.decrypt_string(&url, &Binding::webhook_url(id))?,
            secret: key.decrypt_string(&secret, &Binding::webhook_secret(id))?,
            record: WebhookRecord {
                id,
                display_url,
                events,
                format,
                created_at,
            },
        }))
    }

    /// Newest first, at most `limit`.
    pub async fn webhook_deliveries(&self, limit: i64) -> Result<Vec<DeliveryRecord>> {
        Ok(sqlx::query_as(&format!(
            "{SELECT_DELIVERY} ORDER BY created_at DESC, id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// Takes up to `limit` due deliveries for `lease` (counting an attempt on each).
    pub async fn claim_deliveries(
        &self,
        limit: i64,
        lease: std::time::Duration,
    ) -> Result<Vec<DeliveryRecord>> {
        Ok(sqlx::query_as(
            "UPDATE webhook_deliveries d SET attempts = d.attempts + 1,
                    lease_expires_at = now() + make_interval(secs => $2)
              WHERE d.id IN (SELECT id FROM webhook_deliveries
                              WHERE status = 'pending' AND next_attempt_at <= now()
                                AND (lease_expires_at IS NULL OR lease_expires_at < now())
                              ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
          RETURNING d.id, d.webhook_id, d.event, d.payload, d.status, d.attempts, d.next_attempt_at,
                    d.last_status, d.last_error, d.created_at, d.delivered_at",
        )
        .bind(limit)
        .bind(lease.as_secs_f64())
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn delivery_succeeded(&self, id: Uuid, status: i32) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), last_status = $2,
                    last_error = NULL, lease_expires_at = NULL WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(status)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A failed attempt: retried after `retry_in`, or `failed` for good when `None`.
    pub async fn delivery_failed(
        &self,
        id: Uuid,
        status: Option<i32>,
        error: &str,
        retry_in: Option<std::time::Duration>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET last_status = $2, last_error = $3, lease_expires_at = NULL,
                    status = CASE WHEN $4::float8 IS NULL THEN 'failed' ELSE 'pending' END,
                    next_attempt_at = now() + make_interval(secs => coalesce($4, 0))
              WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(retry_in.map(|d| d.as_secs_f64()))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a `backup.overdue` event for every active tenant whose scheduled backup has
    /// been due for longer than `after`, once per overdue episode. Returns how many.
    pub async fn notify_overdue_backups(&self, after: std::time::Duration) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "WITH overdue AS (
                UPDATE tenants SET backup_overdue_notified_at = now()
                 WHERE status = 'active' AND backup_due_since < now() - make_interval(secs => $1)
                   AND (backup_overdue_notified_at IS NULL OR backup_overdue_notified_at < backup_due_since)
                RETURNING slug, backup_due_since)
             SELECT count(pgfleet_webhook_event('backup.overdue',
                        jsonb_build_object('tenant', slug::text, 'due_since', backup_due_since)))
               FROM overdue",
        )
        .bind(after.as_secs_f64())
        .fetch_one(self.pool())
        .await?;
        Ok(n as u64)
    }
}
