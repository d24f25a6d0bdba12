//! Webhooks: register a receiver for failure notifications (its signing secret is shown
//! once, then only sealed in the catalog), list and remove them, and see delivery attempts.

use super::{Fleet, FleetError, Result};
use crate::catalog::{DeliveryRecord, WebhookRecord, WEBHOOK_EVENTS};
use secrecy::{ExposeSecret, SecretString};

impl Fleet {
    /// Registers a webhook for `events` (all when empty) in `format` (`json` or `slack`);
    /// returns it with its signing secret.
    pub async fn add_webhook(
        &self,
        url: &SecretString,
        events: &[String],
        format: &str,
    ) -> Result<(WebhookRecord, SecretString)> {
        let parsed = url::Url::parse(url.expose_secret())
            .map_err(|_| FleetError::Invalid("the webhook URL is not a URL".into()))?;
        if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
            return Err(FleetError::Invalid(
                "a webhook URL is http:// or https:// with a host".into(),
            ));
        }
        let events: Vec<String> = if events.is_empty() {
            WEBHOOK_EVENTS.iter().map(|e| (*e).to_owned()).collect()
        } else {
            events.to_vec()
        };
        if let Some(unknown) = events.iter().find(|e| !WEBHOOK_EVENTS.contains(&e.as_str())) {
            return Err(FleetError::Invalid(format!(
                "unknown event {:?}: use {}",
                unknown.chars().take(40).collect::<String>(),
                WEBHOOK_EVENTS.join(", ")
            )));
        }
        if !matches!(format, "json" | "slack") {
            return Err(FleetError::Invalid("the format is json or slack".into()));
        }
        let secret: SecretString = format!(
            "whsec_{}",
            crate::hex::encode(&rand::Rng::gen::<[u8; 24]>(&mut rand::thread_rng()))
        )
        .into();
        let display = crate::webhooks::display_url(&parsed);
        let record = self
            .catalog
            .add_webhook(url, &display, &secret, &events, format)
            .await?;
        Ok((record, secret))
    }

    pub async fn webhooks(&self) -> Result<Vec<WebhookRecord>> {
        Ok(self.catalog.webhooks().await?)
    }

    pub async fn remove_webhook(&self, id: uuid::Uuid) -> Result<()> {
        Ok(self.catalog.remove_webhook(id).await?)
    }

    /// The newest delivery attempts' records (at most `limit`, 1…`MAX_PAGE`).
    pub async fn webhook_deliveries(&self, limit: i64) -> Result<Vec<DeliveryRecord>> {
        Ok(self
            .catalog
            .webhook_deliveries(limit.clamp(1, super::MAX_PAGE))
            .await?)
    }
}
