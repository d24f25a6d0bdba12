//! The Neon API client (reqwest): every request through the process's rate limiter, with a
//! timeout, `Authorization: Bearer` from the sealed key, and retries where a retry is safe:
//!
//! - `423 Locked` (a conflicting operation is running; nothing was done) and `429` (over
//!   budget; `Retry-After` honoured, and every caller in the process held back) are retried
//!   for any request;
//! - `5xx`, timeouts and lost connections are retried for idempotent requests (GET, DELETE);
//!   for a create (`POST`) they mean "maybe done", and the caller looks before it asks
//!   again (`NeonError::maybe_applied`), so a lost response never makes a second project;
//! - backoff is exponential with full jitter, so workers that failed together don't retry
//!   together.
//!
//! Errors are one line: method, path, status, Neon's message and request id. The key is
//! only ever in a request header; nothing here prints it.

use super::limiter::RateLimiter;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How requests are retried and how long operations are waited for.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts of one request (all causes together).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Longest one request may take.
    pub request_timeout: Duration,
    /// Longest an operation (project creation, branch, …) is waited for before the job
    /// fails this attempt (and is retried later, finding the operation done).
    pub operation_deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            operation_deadline: Duration::from_secs(300),
        }
    }
}

/// A failed Neon API call, as one readable line.
#[derive(Debug, thiserror::Error)]
pub enum NeonError {
    #[error("Neon API {method} {path}: {status}{message}{request_id}", message = fmt_message(message), request_id = fmt_request_id(request_id))]
    Api {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
        request_id: Option<String>,
        /// A create that failed with 5xx may have been done before the error.
        maybe_applied: bool,
    },
    #[error("Neon API {method} {path}: {detail}")]
    Transport {
        method: &'static str,
        path: String,
        detail: String,
        maybe_applied: bool,
    },
    #[error("Neon operation {operation} ({action}) of project {project} is still {status} after {waited:?}; the job is retried later")]
    OperationTimeout {
        project: String,
        operation: String,
        action: String,
        status: String,
        waited: Duration,
    },
    #[error("unexpected answer from the Neon API ({what}): {detail}")]
    Unexpected { what: String, detail: String },
}

fn fmt_message(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn fmt_request_id(id: &Option<String>) -> String {
    id.as_ref()
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default()
}

impl NeonError {
    /// The request may have taken effect although it failed (a create's lost response).
    pub fn maybe_applied(&self) -> bool {
        matches!(
            self,
            NeonError::Api {
                maybe_applied: true,
                ..
            } | NeonError::Transport {
                maybe_applied: true,
                ..
            }
        )
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            NeonError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Retrying the job later cannot help (a 4xx other than 408/423/429).
    pub fn is_permanent(&self) -> bool {
        matches!(self.status(), Some(s) if (400..500).contains(&s) && ![408, 423, 429].contains(&s))
            || matches!(self, NeonError::Unexpected { .. })
    }
}

impl From<NeonError> for crate::error::JobError {
    fn from(e: NeonError) -> Self {
        if e.is_permanent() {
            crate::error::JobError::Permanent(e.into())
        } else {
            crate::error::JobError::Other(e.into())
        }
    }
}

/// reqwest's rustls uses the process's default crypto provider: the same aws-lc-rs as every
/// other TLS connection pgfleet makes. Any reqwest client in a process that links pgfleet
/// needs it installed (reqwest panics without one); safe to call again.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A client for one Neon API URL and key; cheap to clone.
#[derive(Clone)]
pub struct NeonClient {
    http: reqwest::Client,
    base: String,
    key: Arc<SecretString>,
    limiter: Arc<RateLimiter>,
    policy: RetryPolicy,
}

impl NeonClient {
    pub fn new(
        api_url: &str,
        key: SecretString,
        limiter: Arc<RateLimiter>,
        policy: RetryPolicy,
    ) -> anyhow::Result<Self> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(policy.request_timeout)
            .user_agent(concat!("pgfleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("building the Neon API client: {e}"))?;
        Ok(Self {
            http,
            base: api_url.trim_end_matches('/').to_owned(),
            key: Arc::new(key),
            limiter,
            policy,
        })
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, NeonError> {
        self.send(reqwest::Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, NeonError> {
        self.send(reqwest::Method::POST, path, &[], Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, NeonError> {
        self.send(reqwest::Method::DELETE, path, &[], None).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, NeonError> {
        let method_name: &'static str = match method {
            reqwest::Method::GET => "GET",
            reqwest::Method::POST => "POST",
            reqwest::Method::DELETE => "DELETE",
            reqwest::Method::PATCH => "PATCH",
            _ => "request",
        };
        let idempotent = method != reqwest::Method::POST;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let last = attempt >= self.policy.max_attempts;
            // Held until the answer is read: the limiter counts the request until then.
            let permit = self.limiter.acquire().await;
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(self.key.expose_secret())
                .header("Accept", "application/json");
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    drop(permit);
                    // Refused before anything was sent: safe to retry any request.
                    let not_sent = e.is_connect();
                    let detail = transport_detail(&e);
                    if (idempotent || not_sent) && !last {
                        tracing::debug!(
                            method = method_name,
                            path,
                            detail,
                            attempt,
                            "Neon API request failed; retrying"
                        );
                        tokio::time::sleep(self.backoff(attempt)).await;
                        continue;
                    }
                    return Err(NeonError::Transport {
                        method: method_name,
                        path: path.to_owned(),
                        detail,
                        maybe_applied: !idempotent && !not_sent,
                    });
                }
            };
            let status = response.status().as_u16();
            let request_id = response
                .headers()
                .get("x-neon-ret-request-id")
                .or_else(|| response.headers().get("x-request-id"))
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(80).collect::<String>());
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(300.0)));
            let text = response.text().await.unwrap_or_default();
            drop(permit);
            if (200..300).contains(&status) {
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                return serde_json::from_str(&text).map_err(|e| NeonError::Unexpected {
                    what: format!("{method_name} {path}"),
                    detail: format!("the body is not JSON: {e}"),
                });
            }
            let retry = match status {
                423 => true,
                429 => {
                    let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                    self.limiter.hold_until(Instant::now() + wait);
                    true
                }
                500..=599 => idempotent,
                _ => false,
            };
            if retry && !last {
                tracing::debug!(
                    method = method_name,
                    path,
                    status,
                    attempt,
                    "Neon API answered with a retryable status; retrying"
                );
                if status != 429 {
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                continue;
            }
            return Err(NeonError::Api {
                method: method_name,
                path: path.to_owned(),
                status,
                message: api_message(&text),
                request_id,
                maybe_applied: !idempotent && status >= 500,
            });
        }
    }

    /// Full jitter: a random delay up to `base · 2^attempt`, capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .policy
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.policy.max_delay);
        let millis = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(millis / 4..=millis))
    }
}

/// Neon's `{"message": …}`, or the start of whatever the body is.
fn api_message(body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    message.chars().take(300).collect()
}

/// A transport error without its URL (the URL is ours, but keep errors short and uniform).
fn transport_detail(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the connection failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}
