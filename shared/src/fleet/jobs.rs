//! Jobs: list (newest first, filtered), show one, and wait for some to end.

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
}
