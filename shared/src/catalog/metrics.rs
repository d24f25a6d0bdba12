//! Fleet figures for `/metrics`, read from the catalog so that every API replica reports the
//! same numbers whichever process ran the jobs. Each is one aggregate query.

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
    /// Job counts by (kind, status).
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT kind, status, count(*) FROM jobs GROUP BY kind, status ORDER BY kind, status",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Duration histograms of finished jobs, by kind.
    pub async fn job_durations(&self) -> Result<Vec<DurationHistogram>> {
        let buckets: Vec<String> = DURATION_BUCKETS
            .iter()
            .map(|b| format!("count(*) FILTER (WHERE d <= {b})"))
            .collect();
        let rows: Vec<sqlx::postgres::PgRow> = sqlx::query(&format!(
            "SELECT kind, count(*) AS n, coalesce(sum(d), 0)::float8 AS total, ARRAY[{}]::int8[] AS buckets
               FROM (SELECT kind, extract(epoch FROM finished_at - started_at)::float8 AS d FROM jobs
                      WHERE finished_at IS NOT NULL AND started_at IS NOT NULL) finished
              GROUP BY kind ORDER BY kind",
            buckets.join(", ")
        ))
        .fetch_all(self.pool())
        .await?;
        use sqlx::Row;
        rows.into_iter()
            .map(|r| {
                Ok(DurationHistogram {
                    kind: r.try_get("kind")?,
                    count: r.try_get("n")?,
                    sum_seconds: r.try_get("total")?,
                    buckets: r.try_get("buckets")?,
                })
            })
            .collect()
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
    /// never backed up).
    pub async fn backup_ages(&self) -> Result<Vec<(String, Option<f64>)>> {
        Ok(sqlx::query_as(
            "SELECT t.slug::text, extract(epoch FROM now() - max(b.finished_at))::float8
               FROM tenants t LEFT JOIN backups b ON b.tenant_id = t.id AND b.status = 'succeeded'
              WHERE t.status = 'active' GROUP BY t.slug ORDER BY t.slug",
        )
        .fetch_all(self.pool())
        .await?)
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
