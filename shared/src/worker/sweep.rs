//! The sweep, run by every worker every few seconds (with jitter): reaps expired leases
//! (their worker died), moves on rollouts whose last worker died before its follow-up, and
//! re-publishes queued jobs that are due and have no (recent) message — retries, jobs whose
//! producer lost the broker, deferred deliveries. Safe to run from every worker at once.

use super::Worker;
use crate::queue::Outgoing;
use anyhow::Result;
use rand::Rng;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Due jobs re-published per sweep transaction.
const DISPATCH_BATCH: i64 = 500;

impl Worker {
    pub(super) async fn sweep_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let jitter = rand::thread_rng().gen_range(0.8..1.2);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.sweep_interval.mul_f64(jitter)) => {}
            }
            if let Err(e) = self.sweep_once().await {
                warn!(error = %format!("{e:#}"), "sweep failed; will try again");
            }
        }
    }

    /// One sweep (see the module docs).
    pub async fn sweep_once(&self) -> Result<()> {
        for (job_id, owner) in self.ctx.catalog.reap_expired_leases().await? {
            warn!(%job_id, owner = owner.as_deref().unwrap_or("?"), "lease expired; job requeued");
        }
        for rollout in self.ctx.catalog.rollouts_without_live_jobs().await? {
            let created = self
                .ctx
                .catalog
                .advance_rollout(rollout, self.ctx.max_attempts)
                .await?;
            if !created.is_empty() {
                crate::producer::publish_undispatched(&self.ctx.catalog, &self.publisher, &created).await;
                info!(%rollout, jobs = created.len(), "rollout moved on by the sweep");
            }
        }
        loop {
            let batch = self
                .ctx
                .catalog
                .take_due_jobs(DISPATCH_BATCH, self.settings.redispatch_after)
                .await?;
            let count = batch.items.len();
            if count == 0 {
                return Ok(());
            }
            let mut messages = Vec::with_capacity(count);
            for item in &batch.items {
                match item.job.request() {
                    Ok(request) => messages.push(Outgoing::job(&self.ctx.namespace, &request)),
                    Err(e) => {
                        error!(job_id = %item.job.id, error = %format!("{e:#}"), "cannot dispatch job")
                    }
                }
            }
            self.publisher.publish_all(messages).await?;
            batch.commit().await?;
            debug!(count, "dispatched due jobs");
            if (count as i64) < DISPATCH_BATCH {
                return Ok(());
            }
        }
    }
}
