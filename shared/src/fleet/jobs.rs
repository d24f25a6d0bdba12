//! Jobs: list (newest first, filtered), show one, wait for some to end, and the operator's
//! actions on one: retry a failed or dead job (a new job with the same request), cancel a
//! queued one.

use super::{Fleet, FleetError, Result};
use crate::catalog::JobRecord;
use crate::slug::TenantSlug;
use crate::status::JobStatus;
use std::time::Duration;
use uuid::Uuid;

/// Which jobs to list: at most `limit` (1…1000), newest first.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub tenant: Option<TenantSlug>,
    /// Only jobs after this one in the listing's order (newest first): the previous page's
    /// last, from `cursor::parse_job_cursor`.
    pub after: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
    pub limit: i64,
}

impl Fleet {
    pub async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        Ok(self
            .catalog
            .jobs(
                filter.status,
                filter.tenant.as_ref().map(TenantSlug::as_str),
                filter.after,
                filter.limit.clamp(1, super::MAX_PAGE),
            )
            .await?)
    }

    pub async fn job(&self, id: Uuid) -> Result<JobRecord> {
        self.catalog
            .job(id)
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("no job {id}")))
    }

    /// Retries a failed or dead job: a new job with the same kind, tenant and fields, keyed
    /// `retry:<id>` so asking twice gives the same new job. Not for a rollout's `migrate`
    /// jobs (the rollout owns those: `pgfleet migrate --tenant SLUG` retries a tenant).
    /// Returns the new job and whether this call created it. Publishing is best effort: a
    /// job the broker did not take is published by a worker's sweep.
    pub async fn retry_job(&self, id: Uuid) -> Result<(JobRecord, bool)> {
        let old = self.job(id).await?;
        if !matches!(old.status, JobStatus::Failed | JobStatus::Dead) {
            return Err(FleetError::Conflict(format!(
                "job {id} is {}; only failed or dead jobs are retried",
                old.status
            )));
        }
        if old.kind == crate::status::JobKind::Migrate {
            return Err(FleetError::Conflict(format!(
                "job {id} belongs to a rollout; retry its tenant with `pgfleet migrate --tenant {}`",
                old.tenant
            )));
        }
        let tenant = TenantSlug::parse(&old.tenant).map_err(|e| FleetError::Other(e.into()))?;
        let new = crate::catalog::NewJob {
            id: Uuid::now_v7(),
            key: format!("retry:{id}"),
            kind: old.kind,
            tenant,
            payload: old.payload.clone(),
            max_attempts: self.max_attempts,
            recorded: false,
        };
        let (job, created) = self
            .catalog
            .insert_jobs(std::slice::from_ref(&new))
            .await?
            .pop()
            .ok_or_else(|| FleetError::Other(anyhow::anyhow!("the retry was not recorded")))?;
        if created || job.status == JobStatus::Queued {
            self.producer.publish_existing(std::slice::from_ref(&job)).await;
        }
        Ok((self.job(job.id).await?, created))
    }

    /// Cancels a job that has not started (`failed`, `cancelled: by operator`); its message,
    /// if delivered later, finds it finished.
    pub async fn cancel_job(&self, id: Uuid) -> Result<JobRecord> {
        let job = self.job(id).await?;
        self.catalog.cancel_job(id, "by operator").await?.ok_or_else(|| {
            FleetError::Conflict(format!(
                "job {id} is {}; only a queued job (not started) is cancelled",
                job.status
            ))
        })
    }

    /// Polls the catalog until every job is finished (succeeded, failed or dead), calling
    /// `progress` whenever the count of finished ones changes. Returns the final records.
    pub async fn wait_for_jobs(
        &self,
        ids: &[Uuid],
        mut progress: impl FnMut(&[JobRecord]),
    ) -> Result<Vec<JobRecord>> {
        let mut last_finished = usize::MAX;
        loop {
            let mut jobs = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(job) = self.catalog.job(*id).await? {
                    jobs.push(job);
                }
            }
            let finished = jobs.iter().filter(|j| j.is_finished()).count();
            if finished != last_finished {
                progress(&jobs);
                last_finished = finished;
            }
            if finished == ids.len() {
                return Ok(jobs);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Recorded dead letters, newest first.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<crate::catalog::DeadLetterRecord>> {
        Ok(self.catalog.dead_letters(limit.clamp(1, super::MAX_PAGE)).await?)
    }

    /// Publishes a dead letter again as a new job, if it now parses (the producer fixed
    /// nothing in it, but pgfleet may understand it now, e.g. after an upgrade added its
    /// kind), and forgets it. A dead *job*'s letter is retried with `jobs retry` instead.
    pub async fn replay_dead_letter(&self, id: Uuid) -> Result<crate::producer::Enqueued> {
        let letter = self
            .catalog
            .dead_letter(id)
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("no dead letter {id}")))?;
        if let Some(job) = letter.job_id {
            return Err(FleetError::Conflict(format!(
                "dead letter {id} is job {job}, which ran out of attempts: retry it with `pgfleet jobs retry {job}`"
            )));
        }
        let mut request = crate::message::parse_message(&letter.body, letter.routing_key.as_deref())
            .map_err(|e| FleetError::Conflict(format!("dead letter {id} still can't be understood: {e}")))?;
        request.job = None;
        let enqueued = self.producer.enqueue(&request).await?;
        self.catalog.delete_dead_letter(id).await?;
        Ok(enqueued)
    }

    /// Forgets a dead letter (its copy in `<ns>.dead` is the broker's to purge).
    pub async fn discard_dead_letter(&self, id: Uuid) -> Result<()> {
        if !self.catalog.delete_dead_letter(id).await? {
            return Err(FleetError::NotFound(format!("no dead letter {id}")));
        }
        Ok(())
    }
}
