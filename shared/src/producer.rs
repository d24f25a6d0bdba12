//! Enqueuing jobs from pgfleet's own producers (CLI, API): record the job in the catalog,
//! then publish it with a confirm. If the broker is unreachable the job stays queued and a
//! worker's sweep publishes it, so an accepted job is never lost.

use crate::catalog::{Catalog, JobRecord, NewJob};
use crate::message::JobRequest;
use crate::queue::{Outgoing, Publisher};
use crate::status::JobStatus;
use anyhow::Result;
use std::sync::Arc;
use tracing::warn;
use uuid::Uuid;

pub struct Producer {
    catalog: Catalog,
    publisher: Arc<Publisher>,
    max_attempts: i32,
}

/// Why a request was not enqueued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The idempotency key belongs to a job for something else; nothing was enqueued.
    #[error("idempotency key {0:?} was already used for a different request (another kind, tenant or parameters); use a new key")]
    KeyReused(String),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub struct Enqueued {
    pub job: JobRecord,
    /// `false` when the key matched an existing job.
    pub created: bool,
    /// `false` when the broker could not be reached; a worker's sweep will publish it.
    pub published: bool,
}

impl Producer {
    pub fn new(catalog: Catalog, publisher: Arc<Publisher>, max_attempts: i32) -> Self {
        Self {
            catalog,
            publisher,
            max_attempts,
        }
    }

    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    pub async fn enqueue(&self, request: &JobRequest) -> Result<Enqueued, EnqueueError> {
        let mut enqueued = self.enqueue_many(std::slice::from_ref(request)).await?;
        Ok(enqueued.remove(0))
    }

    /// `enqueue` for many requests (e.g. `backup --all`): recorded and published in batches
    /// rather than one round trip and one confirm per job. A key already used for a
    /// different request is refused: the caller never gets someone else's job.
    pub async fn enqueue_many(&self, requests: &[JobRequest]) -> Result<Vec<Enqueued>, EnqueueError> {
        const BATCH: usize = 2_000;
        let mut out = Vec::with_capacity(requests.len());
        let mut batches = requests.chunks(BATCH);
        // Three batches at once: batch i + 1 is recorded while batch i is published and the
        // broker's confirm of batch i - 1 is recorded (the catalog and the broker work at the
        // same time). A batch is only ever published after it is recorded.
        let mut in_flight: Vec<(JobRecord, bool)> = Vec::new();
        let mut to_confirm: Vec<Uuid> = Vec::new();
        loop {
            let next = batches.next();
            let record = async {
                match next {
                    Some(chunk) => self.record(chunk).await.map(Some),
                    None => Ok(None),
                }
            };
            let confirm = async {
                match to_confirm.is_empty() {
                    true => Ok(()),
                    false => self.catalog.confirm_dispatched(&to_confirm).await,
                }
            };
            let (recorded, published, confirmed) =
                tokio::join!(record, self.publish_recorded(&in_flight), confirm);
            confirmed?;
            to_confirm.clear();
            let published = published?;
            for (job, created) in in_flight.drain(..) {
                let sent = published && (created || job.status == JobStatus::Queued);
                if sent {
                    to_confirm.push(job.id);
                }
                out.push(Enqueued {
                    job,
                    created,
                    published: sent,
                });
            }
            match recorded {
                Ok(Some(recorded)) => in_flight = recorded,
                done => {
                    // The last batch, or a refused one: what was published is confirmed.
                    if !to_confirm.is_empty() {
                        self.catalog.confirm_dispatched(&to_confirm).await?;
                    }
                    return done.map(|_| out);
                }
            }
        }
    }

    /// Records one batch of requests; a key already used for a different request is refused.
    async fn record(&self, requests: &[JobRequest]) -> Result<Vec<(JobRecord, bool)>, EnqueueError> {
        let news: Vec<NewJob> = requests
            .iter()
            .map(|r| NewJob::from_request(r, None, self.max_attempts))
            .collect();
        let recorded = self.catalog.insert_jobs(&news).await?;
        if let Some((new, _)) = news
            .iter()
            .zip(&recorded)
            .find(|(new, (job, created))| !created && !new.matches(job))
        {
            let key = new
                .key
                .strip_prefix(crate::catalog::PRODUCER_KEY_PREFIX)
                .unwrap_or(&new.key);
            return Err(EnqueueError::KeyReused(key.to_owned()));
        }
        Ok(recorded)
    }

    /// Publishes a recorded batch's new jobs, and its existing ones still queued (their
    /// message may have been lost; the claim makes a duplicate harmless). Whether the
    /// broker confirmed them (the caller records that).
    async fn publish_recorded(&self, recorded: &[(JobRecord, bool)]) -> Result<bool, EnqueueError> {
        let to_publish: Vec<&JobRecord> = recorded
            .iter()
            .filter(|(job, created)| *created || job.status == JobStatus::Queued)
            .map(|(job, _)| job)
            .collect();
        if to_publish.is_empty() {
            return Ok(false);
        }
        Ok(publish_unconfirmed(&self.catalog, &self.publisher, &to_publish).await?)
    }

    /// Publishes jobs already recorded (e.g. a rollout's); on failure they stay for the sweep.
    pub async fn publish_existing(&self, jobs: &[JobRecord]) {
        publish_undispatched(&self.catalog, &self.publisher, jobs).await;
    }
}

/// The messages of recorded jobs.
pub fn job_messages<'a>(
    publisher: &Publisher,
    jobs: impl IntoIterator<Item = &'a JobRecord>,
) -> Vec<Outgoing> {
    jobs.into_iter()
        .filter_map(|j| j.request().ok())
        .map(|r| Outgoing::job(publisher.namespace(), &r))
        .collect()
}

/// Publishes jobs recorded as dispatched (unconfirmed) and records the broker's confirm; if
/// the broker does not confirm them, marks them undispatched so a worker's sweep publishes
/// them. Returns whether they were published. (Dying in between leaves them unconfirmed: the
/// sweep re-publishes them after the confirm deadline.)
pub async fn publish_dispatched(
    catalog: &Catalog,
    publisher: &Publisher,
    jobs: &[&JobRecord],
) -> Result<bool> {
    let published = publish_unconfirmed(catalog, publisher, jobs).await?;
    if published {
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        catalog.confirm_dispatched(&ids).await?;
    }
    Ok(published)
}

/// The first half of `publish_dispatched`: publishes with confirms, or marks the jobs
/// undispatched if the broker did not confirm them; the caller records the confirm
/// (`Catalog::confirm_dispatched`) when it returns `true`.
pub async fn publish_unconfirmed(
    catalog: &Catalog,
    publisher: &Publisher,
    jobs: &[&JobRecord],
) -> Result<bool> {
    match publisher
        .publish_all(job_messages(publisher, jobs.iter().copied()))
        .await
    {
        Ok(()) => Ok(true),
        Err(e) => {
            warn!(error = %format!("{e:#}"), jobs = jobs.len(), "jobs recorded but not published; a worker's sweep will dispatch them");
            let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
            catalog.mark_undispatched_many(&ids).await?;
            Ok(false)
        }
    }
}

/// Publishes jobs recorded undispatched (a rollout's phase) and marks them dispatched; if
/// the broker does not confirm them they stay for a worker's sweep.
pub async fn publish_undispatched(catalog: &Catalog, publisher: &Publisher, jobs: &[JobRecord]) {
    if jobs.is_empty() {
        return;
    }
    match publisher.publish_all(job_messages(publisher, jobs)).await {
        Ok(()) => {
            let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
            if let Err(e) = catalog.mark_dispatched(&ids).await {
                warn!(error = %format!("{e:#}"), "published, but not marked dispatched; the sweep may publish again (harmless)");
            }
        }
        Err(e) => {
            warn!(error = %format!("{e:#}"), "jobs recorded but not published; a worker's sweep will dispatch them")
        }
    }
}
