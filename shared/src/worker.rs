//! The worker runtime (DESIGN.md "Job lifecycle"): consume → claim in the catalog → ack →
//! run with a renewed lease → fenced outcome write. No delivery is held for the length of a
//! job. Failures retry with exponential backoff and jitter, then end `dead` with a copy in
//! `<ns>.dead`. A sweep reaps expired leases (dead workers), re-publishes due jobs whose
//! message is missing and moves on rollouts nobody moved on (their last worker died). The
//! AMQP connection is supervised: any error rebuilds connection, topology, QoS and
//! consumers. Shutdown stops consuming, lets running jobs finish within a grace period,
//! then hands their leases back.

use crate::catalog::{ClaimOutcome, JobRecord, NewJob};
use crate::config::WorkerSettings;
use crate::error::JobError;
use crate::jobs::{self, JobContext};
use crate::message::{parse_message, JobKind};
use crate::queue::{self, Outgoing, Publisher};
use anyhow::{bail, Result};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use rand::Rng;
use secrecy::SecretString;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};

/// Due jobs re-published per sweep transaction.
const DISPATCH_BATCH: i64 = 500;

pub struct Worker {
    ctx: JobContext,
    settings: WorkerSettings,
    amqp_url: SecretString,
    publisher: Arc<Publisher>,
    owner: String,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    /// Cancelled when the shutdown grace period is over: running handlers stop and hand back.
    hand_back: CancellationToken,
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
            slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            ctx,
            settings,
            amqp_url,
            publisher,
            owner,
            tracker: TaskTracker::new(),
            hand_back: CancellationToken::new(),
        })
    }

    /// Runs until `shutdown` is cancelled, then drains as described in the module docs.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        info!(owner = %self.owner, concurrency = self.settings.concurrency, namespace = %self.ctx.namespace, "worker starting");
        let sweeper = tokio::spawn(self.clone().sweep_loop(shutdown.clone()));
        self.clone().consume_until(shutdown).await;

        self.tracker.close();
        let running = self.settings.concurrency - self.slots.available_permits();
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
        self.publisher.close().await;
        info!("worker stopped");
        Ok(())
    }

    async fn consume_until(self: Arc<Self>, shutdown: CancellationToken) {
        const MAX_BACKOFF: Duration = Duration::from_secs(30);
        let mut backoff = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            let mut connected = false;
            let result = self.clone().consume_session(&shutdown, &mut connected).await;
            if connected {
                backoff = Duration::from_millis(500);
            }
            match result {
                Ok(()) => return,
                Err(e) => {
                    error!(error = %format!("{e:#}"), retry_in = ?backoff, "broker connection lost; reconnecting");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One connection's life: declare topology, consume every job queue and the
    /// unroutable queue, hand each delivery to a task. Returns `Ok` only on shutdown.
    async fn consume_session(
        self: Arc<Self>,
        shutdown: &CancellationToken,
        connected: &mut bool,
    ) -> Result<()> {
        let ns = &self.ctx.namespace;
        let conn = queue::connect(&self.amqp_url, &format!("pgfleet worker {}", self.owner)).await?;
        queue::declare_topology(&conn.create_channel().await?, ns).await?;
        let prefetch = u16::try_from(self.settings.concurrency).unwrap_or(u16::MAX);
        let mut queues: Vec<String> = JobKind::ALL.iter().map(|k| ns.kind_queue(*k)).collect();
        queues.push(ns.unroutable());
        let mut streams = Vec::new();
        for queue_name in queues {
            let channel = conn.create_channel().await?;
            channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
            let consumer = channel
                .basic_consume(
                    queue_name.as_str().into(),
                    format!("{}/{queue_name}", self.owner).into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            streams.push(consumer.map(move |d| (queue_name.clone(), d)).boxed());
        }
        let mut deliveries = futures_util::stream::select_all(streams);
        *connected = true;
        info!("consuming");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Stop taking work. Deliveries still waiting for a slot were not acked,
                    // so closing the connection returns them to the queue.
                    let _ = conn.close(200, "worker shutting down".into()).await;
                    return Ok(());
                }
                next = deliveries.next() => match next {
                    Some((queue_name, Ok(delivery))) => {
                        let this = self.clone();
                        let shutdown = shutdown.clone();
                        self.tracker.spawn(async move { this.handle_delivery(queue_name, delivery, shutdown).await });
                    }
                    Some((_, Err(e))) => return Err(e.into()),
                    None => bail!("the broker cancelled this worker's consumers (queue deleted or node restarting)"),
                }
            }
        }
    }

    async fn handle_delivery(
        self: Arc<Self>,
        queue_name: String,
        delivery: Delivery,
        shutdown: CancellationToken,
    ) {
        let routing_key = delivery.routing_key.as_str().to_owned();
        if queue_name == self.ctx.namespace.unroutable() {
            let reason = format!(
                "routing key {routing_key:?} is not a job kind; publish with the job's kind as routing key"
            );
            return self.dead_letter(&delivery, &queue_name, &reason, None).await;
        }
        let request = match parse_message(&delivery.data, Some(&routing_key)) {
            Ok(request) => request,
            Err(reason) => {
                return self
                    .dead_letter(&delivery, &queue_name, &reason.to_string(), None)
                    .await
            }
        };
        let fallback_key = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| format!("amqp:{id}"));
        let new = NewJob::from_request(&request, fallback_key, self.settings.max_attempts);

        let slot = tokio::select! {
            _ = shutdown.cancelled() => return,
            slot = tokio::time::timeout(self.settings.defer_after, self.slots.clone().acquire_owned()) => slot,
        };
        let slot = match slot {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return,
            Err(_) => {
                // Every slot is busy with long jobs: don't hold this delivery (RabbitMQ's
                // consumer timeout); the sweep re-publishes it for a worker with room.
                match self.ctx.catalog.defer_job(&new).await {
                    Ok(()) => ack(&delivery).await,
                    Err(e) => nack_later(&delivery, &e).await,
                }
                return;
            }
        };
        let claim = match self.claim_patiently(&new, &shutdown).await {
            Some(Ok(claim)) => claim,
            Some(Err(e)) => return nack_later(&delivery, &e).await,
            None => return,
        };
        match claim {
            ClaimOutcome::Claimed(job) => {
                ack(&delivery).await;
                self.run_claimed(job, slot).await;
            }
            ClaimOutcome::Finished(job) => {
                debug!(job_id = %job.id, status = %job.status, "duplicate delivery of a finished job");
                ack(&delivery).await;
            }
            ClaimOutcome::HeldElsewhere(job) => {
                debug!(job_id = %job.id, owner = ?job.lease_owner, "job is running elsewhere");
                ack(&delivery).await;
            }
            ClaimOutcome::NotDue(job) => {
                debug!(job_id = %job.id, run_after = %job.run_after, "early delivery of a job waiting for its retry");
                ack(&delivery).await;
            }
            ClaimOutcome::KeyConflict(job) => {
                let reason = if new.recorded {
                    format!(
                        "job {} is not a {} job of tenant {}",
                        job.id, new.kind, new.tenant
                    )
                } else {
                    format!(
                        "idempotency key {:?} already belongs to another job (a different kind or tenant); use a new key",
                        job.shown_key()
                    )
                };
                self.dead_letter(&delivery, &queue_name, &reason, None).await;
            }
            ClaimOutcome::UnknownJob => {
                let reason = format!(
                    "the message names job {}, which this install's catalog has no record of; \
                     applications publish without a `job` field",
                    new.id
                );
                self.dead_letter(&delivery, &queue_name, &reason, None).await;
            }
            ClaimOutcome::Exhausted(job) => {
                let reason = job.error.clone().unwrap_or_else(|| "out of attempts".into());
                warn!(job_id = %job.id, reason, "job is dead");
                self.dead_letter(&delivery, &queue_name, &reason, Some(job.id))
                    .await;
            }
        }
    }

    /// Claims, retrying while the catalog is unreachable for up to `defer_after`. Holding
    /// the delivery that long is safe (far below the consumer timeout) and, unlike a quick
    /// nack, doesn't spend the quorum queue's delivery limit during a catalog blip.
    /// `None` on shutdown (the unacked delivery returns to the queue).
    async fn claim_patiently(
        &self,
        new: &NewJob,
        shutdown: &CancellationToken,
    ) -> Option<Result<ClaimOutcome>> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(500);
        loop {
            match self
                .ctx
                .catalog
                .claim_job(new, &self.owner, self.settings.lease)
                .await
            {
                Ok(claim) => return Some(Ok(claim)),
                Err(e) if started.elapsed() >= self.settings.defer_after => return Some(Err(e)),
                Err(e) => {
                    warn!(error = %format!("{e:#}"), retry_in = ?pause, "cannot claim the job in the catalog; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Copies the message to `<ns>.dead` with the reason, records it, then acks. If the copy
    /// can't be published the delivery is requeued: nothing is ever dropped.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        queue_name: &str,
        reason: &str,
        job_id: Option<uuid::Uuid>,
    ) {
        let routing_key = delivery.routing_key.as_str();
        let copy = Outgoing::dead(
            &self.ctx.namespace,
            &delivery.data,
            reason,
            queue_name,
            routing_key,
        );
        if let Err(e) = self.publisher.publish(copy).await {
            return nack_later(delivery, &e).await;
        }
        if let Err(e) = self
            .ctx
            .catalog
            .record_dead_letter(queue_name, reason, &delivery.data, job_id)
            .await
        {
            warn!(error = %format!("{e:#}"), "dead letter published but not recorded in the catalog");
        }
        warn!(
            queue = queue_name,
            reason, "message moved to the dead-letter queue"
        );
        ack(delivery).await;
    }

    async fn run_claimed(&self, job: JobRecord, slot: OwnedSemaphorePermit) {
        let span = info_span!("job", job_id = %job.id, kind = %job.kind, tenant = %job.tenant, attempt = job.attempts);
        async {
            info!("job started");
            let started = Instant::now();
            let lease_lost = CancellationToken::new();
            let renewer = tokio::spawn(renew_lease(
                self.ctx.catalog.clone(),
                job.id,
                job.epoch,
                self.settings.lease,
                lease_lost.clone(),
            ));
            let handler = {
                let ctx = self.ctx.clone();
                let job = job.clone();
                tokio::spawn(async move { jobs::run(&ctx, &job).await }.in_current_span())
            };
            let abort = handler.abort_handle();
            let result = tokio::select! {
                joined = handler => joined.unwrap_or_else(|e| Err(JobError::Other(anyhow::anyhow!("job handler panicked: {e}")))),
                _ = lease_lost.cancelled() => { abort.abort(); Err(JobError::Cancelled("lease lost")) }
                _ = self.hand_back.cancelled() => { abort.abort(); Err(JobError::Cancelled("worker shutting down")) }
            };
            renewer.abort();
            let finished = matches!(&result, Ok(_) | Err(JobError::Permanent(_)) | Err(JobError::Other(_)));
            let succeeded = result.is_ok();
            self.record_result(&job, result, started.elapsed()).await;
            // Before the slot is free: a halting rollout must be halted before this worker
            // takes its next job.
            if finished {
                self.follow_up(&job, succeeded).await;
            }
            drop(slot);
        }
        .instrument(span)
        .await
    }

    async fn record_result(
        &self,
        job: &JobRecord,
        result: Result<jobs::Outcome, JobError>,
        elapsed: Duration,
    ) {
        let catalog = &self.ctx.catalog;
        let written = match result {
            Ok(outcome) => {
                let mut recorded = outcome.to_json();
                recorded["duration_ms"] = serde_json::json!(elapsed.as_millis() as u64);
                recorded["worker"] = serde_json::json!(self.owner);
                info!(summary = %outcome.summary, duration_ms = elapsed.as_millis() as u64, "job succeeded");
                catalog.finish_succeeded(job.id, job.epoch, &recorded).await
            }
            Err(JobError::Cancelled("worker shutting down")) => {
                info!("handing the job back");
                catalog.hand_back(job.id, job.epoch).await
            }
            Err(JobError::Cancelled(why)) => {
                warn!(why, "job stopped; another worker owns it now");
                return;
            }
            Err(e) if e.is_permanent() => {
                let message = format!("{e}");
                error!(error = %message, "job failed permanently");
                catalog
                    .finish_unsuccessful(job.id, job.epoch, "failed", &message)
                    .await
            }
            Err(e) if job.attempts >= job.max_attempts => {
                let message = format!("gave up after {} attempts; last error: {e}", job.attempts);
                error!(error = %message, "job is dead");
                let written = catalog
                    .finish_unsuccessful(job.id, job.epoch, "dead", &message)
                    .await;
                if matches!(written, Ok(true)) {
                    self.dead_letter_job(job, &message).await;
                }
                written
            }
            Err(e) => {
                let delay = backoff(&self.settings, job.attempts);
                warn!(error = %e, retry_in = ?delay, "job attempt failed; will retry");
                catalog
                    .schedule_retry(job.id, job.epoch, &e.to_string(), delay)
                    .await
            }
        };
        match written {
            Ok(true) => {}
            Ok(false) => {
                warn!("lost the lease before the outcome was recorded; the job's new owner decides")
            }
            // The lease will expire and the reaper hands the job to another attempt.
            Err(e) => {
                error!(error = %format!("{e:#}"), "could not record the job's outcome in the catalog")
            }
        }
    }

    /// Kind-specific follow-up (a rollout's next phase); its new jobs are published at once
    /// rather than waiting for the sweep.
    async fn follow_up(&self, job: &JobRecord, succeeded: bool) {
        match jobs::after_finish(&self.ctx, job, succeeded).await {
            Ok(created) if !created.is_empty() => {
                crate::producer::publish_undispatched(&self.ctx.catalog, &self.publisher, &created).await;
                info!(jobs = created.len(), "follow-up jobs enqueued");
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %format!("{e:#}"), "follow-up failed; the next job or `--wait` retries it")
            }
        }
    }

    async fn dead_letter_job(&self, job: &JobRecord, reason: &str) {
        let Ok(request) = job.request() else { return };
        let ns = &self.ctx.namespace;
        let body = request.to_body();
        let copy = Outgoing::dead(
            ns,
            &body,
            reason,
            &ns.kind_queue(request.kind()),
            request.kind().as_str(),
        );
        if let Err(e) = self.publisher.publish(copy).await {
            warn!(error = %format!("{e:#}"), "could not copy the dead job to the dead-letter queue (it is dead in the catalog)");
        }
        let _ = self
            .ctx
            .catalog
            .record_dead_letter(&ns.kind_queue(request.kind()), reason, &body, Some(job.id))
            .await;
    }

    async fn sweep_loop(self: Arc<Self>, shutdown: CancellationToken) {
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

    /// Requeues jobs whose lease expired and publishes queued jobs that are due and have no
    /// (recent) message. Safe to run from every worker at once.
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

async fn renew_lease(
    catalog: crate::catalog::Catalog,
    id: uuid::Uuid,
    epoch: i64,
    lease: Duration,
    lost: CancellationToken,
) {
    let mut last_renewed = Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        match catalog.renew_lease(id, epoch, lease).await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => {
                warn!("lease lost (reaped or handed back); stopping the job");
                lost.cancel();
                return;
            }
            Err(e) if last_renewed.elapsed() >= lease => {
                warn!(error = %format!("{e:#}"), "could not renew the lease before it expired; stopping the job");
                lost.cancel();
                return;
            }
            Err(e) => warn!(error = %format!("{e:#}"), "lease renewal failed; retrying"),
        }
    }
}

/// Exponential backoff with jitter: base·2^(attempt-1), capped, scaled by a random 50-100%.
pub fn backoff(settings: &WorkerSettings, attempt: i32) -> Duration {
    let exp = settings
        .backoff_base
        .saturating_mul(1u32 << attempt.clamp(1, 20).saturating_sub(1) as u32)
        .min(settings.backoff_max);
    exp.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        // The broker redelivers it; the claim recognises the job.
        debug!(error = %e, "ack failed");
    }
}

/// The catalog is unreachable: return the delivery to the queue after a pause, so a
/// catalog outage doesn't spin deliveries.
async fn nack_later(delivery: &Delivery, error: &anyhow::Error) {
    error!(error = %format!("{error:#}"), "cannot process the delivery now; requeueing it");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = WorkerSettings::default();
        for attempt in 1..=30 {
            let d = backoff(&s, attempt);
            let ceiling = s
                .backoff_base
                .saturating_mul(1 << (attempt.min(21) - 1))
                .min(s.backoff_max);
            assert!(d <= ceiling && d >= ceiling / 2, "attempt {attempt}: {d:?}");
        }
    }
}
