//! Fleet figures for `/metrics`, read from the catalog so that every API replica reports the
//! same numbers whichever process ran the jobs. Job figures come from counters a trigger
//! maintains on `jobs` (migration `…_counters.sql`), so a scrape never scans the history.

use super::error::Result;
use super::Catalog;

/// Upper bounds (seconds) of the job duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Cumulative duration histogram of one job kind's finished jobs (first start → finish).
#[derive(Debug, Clone)]
pub struct DurationHistogram {
    pub kind: String,
    /// Jobs at or below each of `DURATION_BUCKETS`.
    pub buckets: Vec<i64>,
    pub count: i64,
    pub sum_seconds: f64,
}

impl Catalog {
    /// Job counts by (kind, status), from the counters the `jobs` trigger maintains: the
    /// same cost whatever the history's size.
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT kind, status, sum(n)::int8 FROM job_counts GROUP BY kind, status
             HAVING sum(n) <> 0 ORDER BY kind, status",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Duration histograms of finished jobs, by kind (maintained counters; cumulative).
    pub async fn job_durations(&self) -> Result<Vec<DurationHistogram>> {
        let rows: Vec<(String, f64, i64, f64)> = sqlx::query_as(
            "SELECT kind, le, sum(n)::int8, sum(seconds) FROM job_duration_counts GROUP BY kind, le ORDER BY kind, le",
        )
        .fetch_all(self.pool())
        .await?;
        let mut histograms: Vec<DurationHistogram> = Vec::new();
        for (kind, le, n, seconds) in rows {
            if histograms.last().map(|h| &h.kind) != Some(&kind) {
                histograms.push(DurationHistogram {
                    kind: kind.clone(),
                    buckets: vec![0; DURATION_BUCKETS.len()],
                    count: 0,
                    sum_seconds: 0.0,
                });
            }
            let h = histograms.last_mut().expect("pushed above");
            if le.is_infinite() {
                h.count = n;
                h.sum_seconds = seconds;
            } else if let Some(i) = DURATION_BUCKETS.iter().position(|b| (b - le).abs() < 1e-9) {
                h.buckets[i] = n;
            }
        }
        Ok(histograms)
    }

    /// Rollout counts by status.
    pub async fn rollout_counts(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT status, count(*) FROM rollouts GROUP BY status ORDER BY status")
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Webhook deliveries by status.
    pub async fn delivery_counts(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT status, count(*) FROM webhook_deliveries GROUP BY status ORDER BY status")
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Tenant counts by status.
    pub async fn tenant_counts(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT status, count(*) FROM tenants GROUP BY status ORDER BY status")
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Each active tenant with the seconds since its newest good backup finished (`None`:
    /// never backed up). One row per tenant: only for `--metrics-per-tenant`.
    pub async fn backup_ages(&self) -> Result<Vec<(String, Option<f64>)>> {
        Ok(sqlx::query_as(
            "SELECT slug::text, extract(epoch FROM now() - last_good_backup_at)::float8
               FROM tenants WHERE status = 'active' ORDER BY slug",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Active tenants by the age of their newest good backup: for each bound (seconds), how
    /// many are at most that old (cumulative); plus those never backed up, those with a
    /// scheduled backup due, and those due for longer than `overdue_after`. Reads `tenants`
    /// only (`last_good_backup_at`, `backup_due_since`, kept by the catalog).
    pub async fn backup_age_summary(
        &self,
        bounds: &[f64],
        overdue_after: std::time::Duration,
    ) -> Result<BackupAgeSummary> {
        let counted: Vec<String> = bounds
            .iter()
            .map(|b| {
                format!("count(*) FILTER (WHERE now() - last_good_backup_at <= make_interval(secs => {b}))")
            })
            .collect();
        let row: (Vec<i64>, i64, i64, i64, i64) = sqlx::query_as(&format!(
            "SELECT ARRAY[{}]::bigint[],
                    count(*) FILTER (WHERE last_good_backup_at IS NULL),
                    count(*) FILTER (WHERE backup_due_since IS NOT NULL),
                    count(*) FILTER (WHERE backup_due_since < now() - make_interval(secs => $1)),
                    count(*)
               FROM tenants WHERE status = 'active'",
            if counted.is_empty() {
                "NULL::bigint".to_owned()
            } else {
                counted.join(", ")
            }
        ))
        .bind(overdue_after.as_secs_f64())
        .fetch_one(self.pool())
        .await?;
        Ok(BackupAgeSummary {
            at_most: bounds.iter().copied().zip(row.0).collect(),
            never: row.1,
            due: row.2,
            overdue: row.3,
            active: row.4,
        })
    }

    /// The `n` active tenants whose newest good backup is oldest (never backed up first),
    /// with its age in seconds (`None`: never).
    pub async fn oldest_backups(&self, n: i64) -> Result<Vec<(String, Option<f64>)>> {
        Ok(sqlx::query_as(
            // `t.slug`, not the output column `slug` (text): the index's citext order.
            "SELECT t.slug::text, extract(epoch FROM now() - t.last_good_backup_at)::float8
               FROM tenants t WHERE t.status = 'active'
              ORDER BY t.last_good_backup_at NULLS FIRST, t.slug LIMIT $1",
        )
        .bind(n)
        .fetch_all(self.pool())
        .await?)
    }

    /// Live tenants' measured storage: `n` largest (all with `n` = None), and every tenant
    /// over its quota, as (slug, bytes, quota); plus the fleet's total bytes.
    pub async fn tenant_storage(
        &self,
        n: Option<i64>,
    ) -> Result<(Vec<(String, i64, Option<i64>)>, Vec<(String, i64, i64)>, i64)> {
        let largest = sqlx::query_as(
            "SELECT slug::text, storage_bytes, storage_quota_bytes FROM tenants
              WHERE status IN ('active', 'suspended', 'moving') AND storage_bytes IS NOT NULL
              ORDER BY storage_bytes DESC, slug LIMIT $1",
        )
        .bind(n)
        .fetch_all(self.pool())
        .await?;
        let over = sqlx::query_as(
            "SELECT slug::text, storage_bytes, storage_quota_bytes FROM tenants
              WHERE status IN ('active', 'suspended', 'moving') AND storage_bytes > storage_quota_bytes ORDER BY slug",
        )
        .fetch_all(self.pool())
        .await?;
        let total: Option<i64> = sqlx::query_scalar(
            "SELECT sum(storage_bytes)::int8 FROM tenants WHERE status IN ('active', 'suspended', 'moving')",
        )
        .fetch_one(self.pool())
        .await?;
        Ok((largest, over, total.unwrap_or(0)))
    }

    /// Recorded dead letters.
    pub async fn dead_letter_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(self.pool())
            .await?)
    }

    /// A round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }
}

/// Active tenants by backup age (`Catalog::backup_age_summary`).
#[derive(Debug, Clone, PartialEq)]
pub struct BackupAgeSummary {
    /// (bound in seconds, tenants whose newest good backup is at most that old).
    pub at_most: Vec<(f64, i64)>,
    pub never: i64,
    pub due: i64,
    pub overdue: i64,
    pub active: i64,
}
