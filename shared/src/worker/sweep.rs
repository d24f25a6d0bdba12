//! The sweep, run by every worker every few seconds (with jitter): reaps expired leases
//! (their worker died), moves on rollouts whose last worker died before its follow-up, and
//! re-publishes queued jobs that are due and have no (recent) message — retries, jobs whose
//! producer lost the broker, deferred deliveries — and, once a minute, deletes history past
//! its retention, and every `storage_interval` measures the tenants' databases (one query
//! per server). Safe to run from every worker at once.

use super::Worker;
use crate::queue::Outgoing;
use anyhow::Result;
use rand::Rng;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Due jobs re-published per sweep transaction.
const DISPATCH_BATCH: i64 = 500;
/// History rows deleted per statement, and how often a worker prunes history.
const HISTORY_BATCH: i64 = 1_000;
const HISTORY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Worker {
    pub(super) async fn sweep_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_history = std::time::Instant::now() - HISTORY_EVERY;
        let mut last_storage = std::time::Instant::now() - self.settings.storage_interval;
        loop {
            let jitter = rand::thread_rng().gen_range(0.8..1.2);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.sweep_interval.mul_f64(jitter)) => {}
            }
            if let Err(e) = self.sweep_once().await {
                warn!(error = %format!("{e:#}"), "sweep failed; will try again");
            }
            if last_history.elapsed() >= HISTORY_EVERY {
                last_history = std::time::Instant::now();
                if let Err(e) = self.prune_history().await {
                    warn!(error = %format!("{e:#}"), "pruning old history failed; will try again");
                }
                match self
                    .ctx
                    .catalog
                    .notify_overdue_backups(crate::config::BACKUP_OVERDUE_AFTER)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => info!(tenants = n, "backup overdue: notifications recorded"),
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "checking for overdue backups failed; will try again")
                    }
                }
            }
            if last_storage.elapsed() >= self.settings.storage_interval {
                last_storage = std::time::Instant::now();
                // One worker per interval does it (pg_database_size walks each database's files):
                // skipped when every tenant was measured lately.
                let due = self
                    .ctx
                    .catalog
                    .storage_measured_within(self.settings.storage_interval.mul_f64(0.9))
                    .await
                    .map(|recent| !recent)
                    .unwrap_or(true);
                if !due {
                    continue;
                }
                match crate::limits::measure_all(&self.ctx.catalog, &self.ctx.servers).await {
                    Ok(n) => debug!(tenants = n, "measured tenant storage"),
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "measuring tenant storage failed; will try again")
                    }
                }
            }
        }
    }

    /// Keeps every self-hosted server's warm pool at its size (`jobs::warm_pool`), each
    /// sweep interval; one worker refills a server at a time, the others skip it.
    pub(super) async fn warm_pool_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let jitter = rand::thread_rng().gen_range(0.8..1.2);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.sweep_interval.mul_f64(jitter)) => {}
            }
            let servers = match self.ctx.catalog.warm_servers().await {
                Ok(servers) => servers,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "warm pool: reading the servers failed; will try again");
                    continue;
                }
            };
            for server in servers {
                if self.settings.warm_pool == 0 && server.warm_pool.unwrap_or(0) == 0 && !server.has_entries {
                    continue;
                }
                let refill =
                    crate::jobs::warm_pool::refill_server(&self.ctx, &server, self.settings.warm_pool);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = refill => if let Err(e) = result {
                        warn!(server = %server.name, error = %format!("{e:#}"), "warm pool: refill failed; will try again");
                    }
                }
            }
        }
    }

    /// Deletes history past `history_retention`, a batch at a time until none is left.
    pub async fn prune_history(&self) -> Result<()> {
        loop {
            let pruned = self
                .ctx
                .catalog
                .prune_history(self.settings.history_retention, HISTORY_BATCH)
                .await?;
            if pruned.is_empty() {
                return Ok(());
            }
            info!(
                rollouts = pruned.rollouts,
                jobs = pruned.jobs,
                dead_letters = pruned.dead_letters,
                deliveries = pruned.deliveries,
                "pruned old history"
            );
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
            let due = self
                .ctx
                .catalog
                .take_due_jobs(
                    DISPATCH_BATCH,
                    self.settings.redispatch_after,
                    crate::queue::UNCONFIRMED_DISPATCH_AFTER,
                )
                .await?;
            let count = due.len();
            if count == 0 {
                return Ok(());
            }
            let mut messages = Vec::with_capacity(count);
            for job in &due {
                match job.request() {
                    Ok(request) => messages.push(Outgoing::job(&self.ctx.namespace, &request)),
                    Err(e) => {
                        error!(job_id = %job.id, error = %format!("{e:#}"), "cannot dispatch job")
                    }
                }
            }
            let ids: Vec<uuid::Uuid> = due.iter().map(|j| j.id).collect();
            if let Err(e) = self.publisher.publish_all(messages).await {
                self.ctx.catalog.mark_undispatched_many(&ids).await?;
                return Err(e);
            }
            self.ctx.catalog.confirm_dispatched(&ids).await?;
            debug!(count, "dispatched due jobs");
            if (count as i64) < DISPATCH_BATCH {
                return Ok(());
            }
        }
    }
}
