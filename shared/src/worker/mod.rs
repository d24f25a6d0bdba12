//! The worker runtime (DESIGN.md "Job lifecycle"), one file per duty:
//!
//! - `consume`: the supervised AMQP session — deliveries are parsed, wait for a slot, are
//!   claimed in the catalog and acked; no delivery is held for the length of a job. Any
//!   channel error, consumer cancel or missed heartbeat rebuilds the whole session.
//! - `execute`: runs a claimed job with its lease renewed, then writes its fate
//!   (`disposition`, a pure function of the result) with a fenced outcome write.
//! - `sweep`: every worker, every few seconds — reaps expired leases (dead workers),
//!   re-publishes due jobs whose message is missing, moves on rollouts nobody moved on.
//! - `outcomes`: claims of new jobs arriving together, and successes finishing together,
//!   are each written in one statement.
//! - `dead_letter`: copies what can't be processed to `<ns>.dead` with the reason.
//! - `health`: what the readiness probe says (consuming every queue, catalog reachable).
//!
//! Shutdown stops consuming, lets running jobs finish within a grace period, then hands
//! their leases back.

mod consume;
mod dead_letter;
pub mod disposition;
mod execute;
mod health;
mod outcomes;
mod sweep;

pub use disposition::{disposition, Disposition};
pub use execute::backoff;
pub use health::{serve as serve_health, WorkerHealth};

use crate::config::WorkerSettings;
use crate::jobs::JobContext;
use crate::queue::Publisher;
use anyhow::Result;
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// One worker process's runtime: its job slots, its broker connections and its identity
/// (`owner`, recorded on every lease it takes).
pub struct Worker {
    ctx: JobContext,
    settings: WorkerSettings,
    amqp_url: SecretString,
    publisher: Arc<Publisher>,
    owner: String,
    /// Job slots, a pool per kind (`WorkerSettings::kind_slots`).
    slots: std::collections::BTreeMap<crate::message::JobKind, Arc<Semaphore>>,
    tracker: TaskTracker,
    /// Cancelled when the shutdown grace period is over: running handlers stop and hand back.
    hand_back: CancellationToken,
    health: Arc<WorkerHealth>,
    /// Successes and new jobs' first claims are written in batches (`outcomes`).
    successes: outcomes::SuccessWriter,
    new_job_claims: outcomes::NewJobClaims,
}

impl Worker {
    pub fn new(ctx: JobContext, settings: WorkerSettings, amqp_url: SecretString) -> Arc<Self> {
        let owner = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let publisher = Arc::new(Publisher::new(
            amqp_url.clone(),
            ctx.namespace.clone(),
            format!("pgfleet worker {owner} (publisher)"),
        ));
        Arc::new(Self {
            successes: outcomes::SuccessWriter::start(ctx.catalog.clone()),
            new_job_claims: outcomes::NewJobClaims::start(ctx.catalog.clone(), owner.clone(), settings.lease),
            slots: settings
                .kind_slots
                .iter()
                .map(|(kind, n)| (kind, Arc::new(Semaphore::new(n.max(1)))))
                .collect(),
            ctx,
            settings,
            amqp_url,
            publisher,
            owner,
            tracker: TaskTracker::new(),
            hand_back: CancellationToken::new(),
            health: Arc::default(),
        })
    }

    /// The slot pool of `kind` (`KindSlots` has one for every kind).
    fn slots_of(&self, kind: crate::message::JobKind) -> Arc<Semaphore> {
        self.slots[&kind].clone()
    }

    /// What this worker's readiness probe reports.
    pub fn health(&self) -> Arc<WorkerHealth> {
        self.health.clone()
    }

    /// Runs until `shutdown` is cancelled, then drains as described in the module docs.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        info!(owner = %self.owner, slots = %self.settings.kind_slots, namespace = %self.ctx.namespace, "worker starting");
        let sweeper = tokio::spawn(self.clone().sweep_loop(shutdown.clone()));
        let warm_pool = tokio::spawn(self.clone().warm_pool_loop(shutdown.clone()));
        let webhooks = self.settings.deliver_webhooks.then(|| {
            tokio::spawn(crate::webhooks::delivery_loop(
                self.ctx.catalog.clone(),
                Duration::from_secs(1),
                shutdown.clone(),
            ))
        });
        self.clone().consume_until(shutdown).await;

        self.tracker.close();
        let running: usize = self
            .settings
            .kind_slots
            .iter()
            .map(|(kind, n)| n - self.slots_of(kind).available_permits())
            .sum();
        if running > 0 {
            info!(running, grace = ?self.settings.shutdown_grace, "shutting down: waiting for running jobs");
        }
        if tokio::time::timeout(self.settings.shutdown_grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("shutdown grace period over: handing back the leases of unfinished jobs");
            self.hand_back.cancel();
            if tokio::time::timeout(Duration::from_secs(15), self.tracker.wait())
                .await
                .is_err()
            {
                warn!("some jobs did not stop; their leases will expire and another worker will take them");
            }
        }
        let _ = sweeper.await;
        let _ = warm_pool.await;
        if let Some(webhooks) = webhooks {
            let _ = webhooks.await;
        }
        self.publisher.close().await;
        info!("worker stopped");
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
