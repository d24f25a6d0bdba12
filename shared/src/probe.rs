//! `pgfleet probe`: the container healthcheck. GETs a health URL (the API's `/healthz`, or a
//! worker's `PGFLEET_HEALTH_LISTEN` address) and succeeds on a 2xx, within 3 seconds.

use anyhow::{bail, Context, Result};

pub async fn probe(url: &str) -> Result<()> {
    crate::neon::client::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .context("building the probe's HTTP client")?;
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("probing {url}"))?;
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    Ok(())
}
