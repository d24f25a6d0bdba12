//! The Neon provider: a tenant server of kind `neon` is a Neon account (API key) and
//! region, and each tenant on it is one Neon project holding the tenant's role and
//! database. pgfleet asks the Neon API for projects, branches and connection URIs, and then
//! works with the tenant's database exactly as with a self-hosted one: migrations, pg_dump
//! and psql over the direct URI.
//!
//! - `client`: requests, retries, errors; `limiter`: the process-wide rate limit;
//! - `api`: the typed calls; `tenants`: what the job handlers need (make a tenant's project
//!   exist exactly once, its URIs, its branches, delete it).

pub mod api;
pub mod client;
pub mod limiter;
pub mod tenants;

pub use client::{NeonClient, NeonError, RetryPolicy};
pub use limiter::{RateLimiter, RateLimits};

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Neon's public API.
pub const DEFAULT_API_URL: &str = "https://console.neon.tech/api/v2";

/// What a registered Neon server holds besides its key (stored as `tenant_servers.neon`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NeonSettings {
    pub api_url: String,
    pub region_id: String,
    /// Postgres major version of new projects (Neon's default if not set).
    #[serde(default)]
    pub pg_version: Option<u32>,
    /// Organisation new projects belong to (needed with a personal API key).
    #[serde(default)]
    pub org_id: Option<String>,
}

/// The process's Neon client settings: `PGFLEET_NEON_RATE_LIMIT` (requests a minute),
/// `PGFLEET_NEON_BURST` (a second), `PGFLEET_NEON_OPERATION_TIMEOUT_SECS`.
#[derive(Debug, Clone, Copy)]
pub struct NeonLimits {
    pub rate: RateLimits,
    pub retry: RetryPolicy,
}

impl NeonLimits {
    pub fn from_env() -> anyhow::Result<Self> {
        let number = |name: &str| -> anyhow::Result<Option<u64>> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| anyhow::anyhow!("{name} must be a whole number, not {v:?}")),
                Err(_) => Ok(None),
            }
        };
        let mut limits = NeonLimits {
            rate: RateLimits::DEFAULT,
            retry: RetryPolicy::default(),
        };
        if let Some(n) = number("PGFLEET_NEON_RATE_LIMIT")? {
            limits.rate.per_minute = n.clamp(1, 100_000) as u32;
        }
        if let Some(n) = number("PGFLEET_NEON_BURST")? {
            limits.rate.per_second = n.clamp(1, 10_000) as u32;
        }
        if let Some(n) = number("PGFLEET_NEON_OPERATION_TIMEOUT_SECS")? {
            limits.retry.operation_deadline = Duration::from_secs(n.max(1));
        }
        Ok(limits)
    }
}

impl Default for NeonLimits {
    fn default() -> Self {
        Self {
            rate: RateLimits::DEFAULT,
            retry: RetryPolicy::default(),
        }
    }
}
