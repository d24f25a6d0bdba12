//! The worker's AMQP session: declare topology, consume every job queue and the unroutable
//! queue, and turn each delivery into a claimed job (or a dead letter). A delivery waits at
//! most `defer_after` for a free slot and is acked right after its claim commits, so none
//! is held for the length of a job. Any consumer ending — a channel error, a broker-side
//! cancel (queue deleted, a queue leader restarting) — ends the session, and the whole
//! session (connection, topology, QoS, consumers) is rebuilt with backoff: no job kind is
//! ever left without its consumer.

use super::Worker;
use crate::catalog::{ClaimOutcome, NewJob};
use crate::message::parse_message;
use crate::queue;
use crate::status::JobKind;
use anyhow::{bail, Result};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How often a consuming worker checks that the catalog answers, and how long it waits.
const CATALOG_CHECK_EVERY: Duration = Duration::from_secs(2);
const CATALOG_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest the broker may take to set a consuming session up before it is retried.
const SESSION_SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Failed checks in a row that make a worker stop consuming.
const CATALOG_FAILURES_TO_PAUSE: u32 = 2;

impl Worker {
    pub(super) async fn consume_until(self: Arc<Self>, shutdown: CancellationToken) {
        const MAX_BACKOFF: Duration = Duration::from_secs(30);
        let mut backoff = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            // Deliveries are only taken while they can be claimed.
            if !self.wait_for_catalog(&shutdown).await {
                return;
            }
            let mut connected = false;
            let result = self.clone().consume_session(&shutdown, &mut connected).await;
            if connected {
                backoff = Duration::from_millis(500);
            }
            match result {
                Ok(()) => return,
                Err(e) => {
                    error!(error = %format!("{e:#}"), retry_in = ?backoff, "stopped consuming; reconnecting");
                    self.health.set_not_ready(format!("not consuming: {e:#}"));
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Waits until the catalog answers; `false` on shutdown.
    async fn wait_for_catalog(&self, shutdown: &CancellationToken) -> bool {
        let mut pause = Duration::from_millis(500);
        loop {
            match self.catalog_answers().await {
                Ok(()) => return true,
                Err(e) => {
                    self.health
                        .set_not_ready(format!("not consuming: the catalog is unreachable ({e})"));
                    warn!(error = %e, retry_in = ?pause, "the catalog is unreachable; not consuming until it answers");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }

    async fn catalog_answers(&self) -> Result<(), String> {
        match tokio::time::timeout(CATALOG_CHECK_TIMEOUT, self.ctx.catalog.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("no answer within {CATALOG_CHECK_TIMEOUT:?}")),
        }
    }

    /// One connection's life: declare topology, consume every job queue and the
    /// unroutable queue, hand each delivery to a task. Returns `Ok` only on shutdown; ends
    /// with an error when the broker fails, a consumer ends, or the catalog stops answering
    /// (closing the connection returns every unacked delivery to its queue).
    async fn consume_session(
        self: Arc<Self>,
        shutdown: &CancellationToken,
        connected: &mut bool,
    ) -> Result<()> {
        // A broker that takes the connection but never answers (booting, a queue without a
        // leader) must not hold the worker here: the setup is bounded and retried.
        let setup = async {
            let ns = &self.ctx.namespace;
            let conn = queue::connect(&self.amqp_url, &format!("pgfleet worker {}", self.owner)).await?;
            queue::declare_topology(&conn, ns).await?;

            // Each queue's prefetch is its kind's pool: no delivery sits unacked waiting for
            // a slot another kind's jobs hold (the unroutable queue: a few).
            let mut queues: Vec<(String, usize)> = JobKind::ALL
                .iter()
                .map(|k| (ns.kind_queue(*k), self.settings.kind_slots.get(*k)))
                .collect();
            queues.push((ns.unroutable(), 4));
            let mut streams = Vec::new();
            for (queue_name, slots) in queues {
                let prefetch = u16::try_from(slots).unwrap_or(u16::MAX);
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
                // A stream that ends says so (`None`), instead of silently leaving the merge.
                let ended = queue_name.clone();
                streams.push(
                    consumer
                        .map(move |d| (queue_name.clone(), Some(d)))
                        .chain(futures_util::stream::once(async move { (ended, None) }))
                        .boxed(),
                );
            }
            Ok::<_, anyhow::Error>((conn, streams))
        };
        let (conn, streams) = match tokio::time::timeout(SESSION_SETUP_TIMEOUT, setup).await {
            Ok(session) => session?,
            Err(_) => anyhow::bail!(
                "RabbitMQ did not complete the session setup (connect, declare, consume) within {SESSION_SETUP_TIMEOUT:?}"
            ),
        };
        let mut deliveries = futures_util::stream::select_all(streams);
        // Ends this session's deliveries that still wait for a slot or a claim.
        let session = shutdown.child_token();
        let _end_session = session.clone().drop_guard();
        *connected = true;
        self.health.set_ready();
        info!("consuming");
        let mut catalog_check = tokio::time::interval(CATALOG_CHECK_EVERY);
        let mut catalog_failures = 0;
        let conn = &conn;
        let closing = |reason: &'static str| async move {
            let _ = conn.close(0, reason.into()).await;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Stop taking work. Deliveries still waiting for a slot were not acked,
                    // so closing the connection returns them to the queue.
                    let _ = conn.close(200, "worker shutting down".into()).await;
                    return Ok(());
                }
                _ = catalog_check.tick() => match self.catalog_answers().await {
                    Ok(()) => catalog_failures = 0,
                    Err(e) => {
                        catalog_failures += 1;
                        if catalog_failures >= CATALOG_FAILURES_TO_PAUSE {
                            session.cancel();
                            closing("the catalog is unreachable").await;
                            bail!("the catalog is unreachable ({e}); unclaimed deliveries were returned to their queues");
                        }
                    }
                },
                next = deliveries.next() => match next {
                    Some((queue_name, Some(Ok(delivery)))) => {
                        let this = self.clone();
                        let session = session.clone();
                        self.tracker.spawn(async move { this.handle_delivery(queue_name, delivery, session).await });
                    }
                    Some((_, Some(Err(e)))) => {
                        closing("rebuilding the session").await;
                        return Err(e.into());
                    }
                    Some((queue_name, None)) => {
                        closing("rebuilding the session").await;
                        bail!("the consumer of {queue_name} ended (the broker cancelled it: queue deleted or its leader restarting)");
                    }
                    None => bail!("every consumer ended"),
                }
            }
        }
    }

    /// `session` ends when the delivery's connection does (shutdown, broker trouble, the
    /// catalog unreachable): a delivery not acked by then is back in its queue.
    async fn handle_delivery(
        self: Arc<Self>,
        queue_name: String,
        delivery: Delivery,
        session: CancellationToken,
    ) {
        let routing_key = delivery.routing_key.as_str().to_owned();
        let delivered_before = queue::previous_deliveries(&delivery.properties);
        if delivered_before >= self.settings.delivery_limit {
            let reason = format!(
                "delivered {delivered_before} times without being acknowledged (PGFLEET_DELIVERY_LIMIT {}); a worker may crash on it",
                self.settings.delivery_limit
            );
            return self.dead_letter(&delivery, &queue_name, &reason, None).await;
        }
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
        // A person is waiting for these: from delivery to recorded outcome, bulk work in
        // this worker steps aside (`crate::priority`).
        let _interactive = matches!(new.kind, JobKind::Provision | JobKind::Restore)
            .then(|| self.ctx.priority.interactive());

        let slot = tokio::select! {
            _ = session.cancelled() => return,
            slot = tokio::time::timeout(self.settings.defer_after, self.slots_of(new.kind).acquire_owned()) => slot,
        };
        let slot = match slot {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return,
            Err(_) => {
                // Every slot is busy with long jobs: don't hold this delivery (RabbitMQ's
                // consumer timeout); the sweep re-publishes it for a worker with room.
                match self.ctx.catalog.defer_job(&new).await {
                    Ok(()) => ack(&delivery).await,
                    Err(e) => nack_later(&delivery, &e.into()).await,
                }
                return;
            }
        };
        let claim = match self.claim_patiently(&new, &session).await {
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
                crate::jobs::gave_up(&self.ctx, &job).await;
                self.dead_letter(&delivery, &queue_name, &reason, Some(job.id))
                    .await;
            }
        }
    }

    /// Claims, retrying while the catalog is unreachable for up to `defer_after`. Holding
    /// the delivery that long is safe (far below the consumer timeout) and, unlike a quick
    /// nack, doesn't spend the quorum queue's delivery limit during a catalog blip; a longer
    /// outage ends the session, which returns the delivery. `None` when the session ended.
    async fn claim_patiently(
        &self,
        new: &NewJob,
        session: &CancellationToken,
    ) -> Option<Result<ClaimOutcome>> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(500);
        loop {
            let claim = tokio::select! {
                _ = session.cancelled() => return None,
                claim = self.claim(new) => claim,
            };
            match claim {
                Ok(claim) => return Some(Ok(claim)),
                Err(e) if started.elapsed() >= self.settings.defer_after => return Some(Err(e.into())),
                Err(e) => {
                    warn!(error = %format!("{e:#}"), retry_in = ?pause, "cannot claim the job in the catalog; retrying");
                    tokio::select! {
                        _ = session.cancelled() => return None,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// A new job's first claim goes with the others arriving meanwhile, in one statement;
    /// a job recorded already (or a key taken) is claimed on its own.
    async fn claim(&self, new: &NewJob) -> Result<ClaimOutcome, crate::catalog::CatalogError> {
        if !new.recorded {
            if let Some(job) = self.new_job_claims.claim(new).await? {
                return Ok(ClaimOutcome::Claimed(job));
            }
        }
        self.ctx
            .catalog
            .claim_existing_job(new, &self.owner, self.settings.lease)
            .await
    }
}

pub(super) async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        // The broker redelivers it; the claim recognises the job.
        debug!(error = %e, "ack failed");
    }
}

/// The catalog is unreachable: return the delivery to the queue after a pause, so a
/// catalog outage doesn't spin deliveries.
pub(super) async fn nack_later(delivery: &Delivery, error: &anyhow::Error) {
    error!(error = %format!("{error:#}"), "cannot process the delivery now; requeueing it");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}
