//! Keeping history bounded: finished jobs, finished rollouts, dead letters and finished
//! webhook deliveries older than the
//! retention are deleted in small batches (each its own short statement), by every worker's
//! sweep now and then. Kept whatever their age: jobs still referenced by a rollout that is
//! kept, the newest rollout (its recorded set is what new tenants get), and anything not
//! finished.

use super::error::Result;
use super::Catalog;
use std::time::Duration;

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPruned {
    pub rollouts: u64,
    pub jobs: u64,
    pub dead_letters: u64,
    pub deliveries: u64,
}

impl HistoryPruned {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Catalog {
    /// Deletes up to `batch` rows of each kind of history finished before `retention`.
    pub async fn prune_history(&self, retention: Duration, batch: i64) -> Result<HistoryPruned> {
        let cutoff = retention.as_secs_f64();
        let rollouts = self
            .delete_history(
                "DELETE FROM rollouts WHERE id IN (
                    SELECT id FROM rollouts
                     WHERE status <> 'running' AND finished_at < now() - make_interval(secs => $1)
                       AND id <> (SELECT id FROM rollouts ORDER BY created_at DESC LIMIT 1)
                     LIMIT $2)",
                cutoff,
                batch,
            )
            .await?;
        let jobs = self
            .delete_history(
                "DELETE FROM jobs WHERE id IN (
                    SELECT j.id FROM jobs j
                     WHERE j.finished_at < now() - make_interval(secs => $1)
                       AND j.status IN ('succeeded', 'failed', 'dead')
                       AND NOT EXISTS (SELECT 1 FROM rollout_tenants rt WHERE rt.job_id = j.id)
                     LIMIT $2)",
                cutoff,
                batch,
            )
            .await?;
        let dead_letters = self
            .delete_history(
                "DELETE FROM dead_letters WHERE id IN (
                    SELECT id FROM dead_letters WHERE received_at < now() - make_interval(secs => $1) LIMIT $2)",
                cutoff,
                batch,
            )
            .await?;
        let deliveries = self
            .delete_history(
                "DELETE FROM webhook_deliveries WHERE id IN (
                    SELECT id FROM webhook_deliveries
                     WHERE status <> 'pending' AND created_at < now() - make_interval(secs => $1) LIMIT $2)",
                cutoff,
                batch,
            )
            .await?;
        Ok(HistoryPruned {
            rollouts,
            jobs,
            dead_letters,
            deliveries,
        })
    }

    /// One batch of one kind of history: `sql` deletes at most `$2` rows older than `$1`
    /// seconds.
    async fn delete_history(&self, sql: &str, cutoff_secs: f64, batch: i64) -> Result<u64> {
        Ok(sqlx::query(sql)
            .bind(cutoff_secs)
            .bind(batch)
            .execute(self.pool())
            .await?
            .rows_affected())
    }
}
