//! Running a claimed job: the handler runs in its own task while the lease is renewed every
//! third of its length; a lost lease or the end of the shutdown grace stops it. Its fate is
//! decided by `disposition` and written with a fenced outcome write; a rollout's follow-up
//! (its next phase, a halt, its end) comes before the slot is freed.

use super::disposition::{disposition, Disposition};
use super::Worker;
use crate::catalog::{Catalog, JobRecord};
use crate::config::WorkerSettings;
use crate::error::{CancelReason, JobError};
use crate::jobs;
use rand::Rng;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

impl Worker {
    pub(super) async fn run_claimed(&self, job: JobRecord, slot: OwnedSemaphorePermit) {
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
                let noop = self.settings.noop_jobs;
                tokio::spawn(
                    async move {
                        if noop {
                            return Ok(jobs::Outcome::new("no-op (benchmark worker)", serde_json::json!({})));
                        }
                        jobs::run(&ctx, &job).await
                    }
                    .in_current_span(),
                )
            };
            let abort = handler.abort_handle();
            let result = tokio::select! {
                joined = handler => joined.unwrap_or_else(|e| Err(JobError::Other(anyhow::anyhow!("job handler panicked: {e}")))),
                _ = lease_lost.cancelled() => { abort.abort(); Err(JobError::Cancelled(CancelReason::LeaseLost)) }
                _ = self.hand_back.cancelled() => { abort.abort(); Err(JobError::Cancelled(CancelReason::Shutdown)) }
            };
            renewer.abort();
            let fate = disposition(
                result,
                job.attempts,
                job.max_attempts,
                backoff(&self.settings, job.attempts),
            );
            let finished = matches!(
                fate,
                Disposition::Succeeded(_) | Disposition::Failed(_) | Disposition::Dead(_) | Disposition::Retry { .. }
            );
            let succeeded = matches!(fate, Disposition::Succeeded(_));
            self.record(&job, fate, started.elapsed()).await;
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

    /// Writes the attempt's fate, fenced by the lease epoch.
    async fn record(&self, job: &JobRecord, fate: Disposition, elapsed: Duration) {
        let catalog = &self.ctx.catalog;
        let written = match fate {
            Disposition::Succeeded(outcome) => {
                let mut recorded = outcome.to_json();
                recorded["duration_ms"] = serde_json::json!(elapsed.as_millis() as u64);
                recorded["worker"] = serde_json::json!(self.owner);
                info!(summary = %outcome.summary, duration_ms = elapsed.as_millis() as u64, "job succeeded");
                self.successes.succeeded(job.id, job.epoch, recorded).await
            }
            Disposition::HandBack => {
                info!("handing the job back");
                catalog.hand_back(job.id, job.epoch).await
            }
            Disposition::Abandon => {
                warn!("job stopped: its lease was lost, another worker owns it now");
                return;
            }
            Disposition::Failed(message) => {
                error!(error = %message, "job failed permanently");
                let written = catalog
                    .finish_unsuccessful(job.id, job.epoch, crate::status::JobStatus::Failed, &message)
                    .await;
                if matches!(written, Ok(true)) && job.kind == crate::status::JobKind::Move {
                    let mut ended = job.clone();
                    ended.error = Some(message.clone());
                    jobs::gave_up(&self.ctx, &ended).await;
                }
                written
            }
            Disposition::Dead(message) => {
                error!(error = %message, "job is dead");
                let written = catalog
                    .finish_unsuccessful(job.id, job.epoch, crate::status::JobStatus::Dead, &message)
                    .await;
                if matches!(written, Ok(true)) {
                    if job.kind == crate::status::JobKind::Move {
                        let mut ended = job.clone();
                        ended.error = Some(message.clone());
                        jobs::gave_up(&self.ctx, &ended).await;
                    }
                    self.dead_letter_job(job, &message).await;
                }
                written
            }
            Disposition::Retry { error, delay } => {
                warn!(error = %error, retry_in = ?delay, "job attempt failed; will retry");
                catalog.schedule_retry(job.id, job.epoch, &error, delay).await
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
}

/// Renews the lease every third of its length, each call bounded (a black-holed catalog
/// connection must not hang the renewal). When no renewal was confirmed for half the
/// lease, the job is stopped — its `pg_dump`/`psql` killed, its upload aborted — while the
/// lease is still ours, so no other worker's attempt ever runs beside it.
async fn renew_lease(catalog: Catalog, id: uuid::Uuid, epoch: i64, lease: Duration, lost: CancellationToken) {
    let mut last_confirmed = Instant::now();
    let give_up_after = lease / 2;
    let mut wait = lease / 3;
    loop {
        tokio::time::sleep(wait).await;
        let left = give_up_after.saturating_sub(last_confirmed.elapsed());
        let renewed = tokio::time::timeout(left.min(lease / 4), catalog.renew_lease(id, epoch, lease)).await;
        match renewed {
            Ok(Ok(true)) => {
                last_confirmed = Instant::now();
                wait = lease / 3;
                continue;
            }
            Ok(Ok(false)) => {
                warn!("lease lost (reaped or handed back); stopping the job");
                lost.cancel();
                return;
            }
            Ok(Err(e)) => warn!(error = %format!("{e:#}"), "lease renewal failed; retrying"),
            Err(_) => warn!("lease renewal got no answer from the catalog; retrying"),
        }
        if last_confirmed.elapsed() >= give_up_after {
            warn!("could not confirm the lease for half its length; stopping the job before it could expire");
            lost.cancel();
            return;
        }
        wait = Duration::from_millis(250).min(give_up_after.saturating_sub(last_confirmed.elapsed()));
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
