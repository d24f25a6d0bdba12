//! Jobs in the catalog: the claim/lease/fence protocol of DESIGN.md "Job lifecycle".
//! Every time is the catalog server's `now()`, so workers' clocks never need to agree, and
//! every outcome write is fenced by the lease epoch (`WHERE id = $1 AND epoch = $2`).
//!
//! Claims commit synchronously (an acked delivery must never lose its job). Outcome writes
//! commit asynchronously (`set_config('synchronous_commit', 'off', true)` in the statement):
//! one lost in a catalog crash only means the lease expires and the job — idempotent by
//! contract — runs again, and it saves a WAL flush per job.

use super::error::{CatalogError, Result};
use super::Catalog;
use crate::message::{JobKind, JobRequest, JobSpec};
use crate::slug::TenantSlug;
use crate::status::JobStatus;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Postgres;
use std::time::Duration;
use uuid::Uuid;

/// A job as the catalog holds it: what to do (`kind`, `tenant`, `payload`), where it is
/// (`status`, `attempts`, `run_after`) and who runs it (`lease_owner`, fenced by `epoch`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRecord {
    pub id: Uuid,
    pub idempotency_key: String,
    pub kind: JobKind,
    pub tenant: String,
    pub payload: Value,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_after: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub epoch: i64,
    pub error: Option<String>,
    pub outcome: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRecord {
    /// Succeeded, failed or dead.
    pub fn is_finished(&self) -> bool {
        self.status.is_finished()
    }

    /// The request this job was created from, as pgfleet publishes it (naming the job).
    pub fn request(&self) -> anyhow::Result<JobRequest> {
        let spec: JobSpec = serde_json::from_value(self.payload.clone())
            .with_context(|| format!("job {} has a payload this version cannot read", self.id))?;
        Ok(JobRequest {
            tenant: TenantSlug::parse(&self.tenant)?,
            key: None,
            spec,
            job: Some(self.id),
        })
    }

    /// The idempotency key as its producer gave it (`None`: pgfleet chose it).
    pub fn producer_key(&self) -> Option<&str> {
        self.idempotency_key.strip_prefix(PRODUCER_KEY_PREFIX)
    }

    /// The key to show: the producer's own, or the one pgfleet gave the job.
    pub fn shown_key(&self) -> &str {
        self.producer_key().unwrap_or(&self.idempotency_key)
    }
}

/// The lease a side-effect write is made under: the write takes effect only while that job
/// is still `running` at that epoch, so a worker that lost its lease can't record what it
/// did after another worker took the job over (`FENCED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub job_id: Uuid,
    pub epoch: i64,
}

impl JobRecord {
    /// This attempt's fence.
    pub fn fence(&self) -> Fence {
        Fence {
            job_id: self.id,
            epoch: self.epoch,
        }
    }
}

/// SQL condition of a fenced write, with the fence's job id and epoch bound as `$a`, `$b`
/// (`fenced_by(a, b)`); a `None` fence (work outside a job: tests, tools) is always true.
pub(super) fn fenced_by(job_param: usize, epoch_param: usize) -> String {
    format!(
        "(${job_param}::uuid IS NULL OR EXISTS (SELECT 1 FROM jobs fence WHERE fence.id = ${job_param}
                                             AND fence.epoch = ${epoch_param} AND fence.status = 'running'))"
    )
}

/// Keys producers give are stored under this prefix; pgfleet's own (`backup:<slug>:<slot>`,
/// `migrate:<rollout>:<slug>`, `amqp:<message id>`, `auto:<id>`) never start with it, so
/// no producer can take — and so pre-empt — one of them.
pub const PRODUCER_KEY_PREFIX: &str = "key:";

/// The stored form of a producer's idempotency key.
pub fn producer_key(key: &str) -> String {
    format!("{PRODUCER_KEY_PREFIX}{key}")
}

pub(super) const JOB_COLUMNS: &str = "id, idempotency_key, kind, tenant::text AS tenant, payload, status, attempts, max_attempts,
    run_after, lease_owner, lease_expires_at, epoch, error, outcome, created_at, updated_at, started_at, finished_at";

/// A job to record: from a producer, or from a delivered message at claim time.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    /// The stored idempotency key (see `PRODUCER_KEY_PREFIX`).
    pub key: String,
    pub kind: JobKind,
    pub tenant: TenantSlug,
    pub payload: Value,
    pub max_attempts: i32,
    /// The message named a job pgfleet recorded (`id`): it is claimed by id, never inserted.
    pub recorded: bool,
}

impl NewJob {
    /// `fallback_key` (already in stored form, e.g. `amqp:<message id>`) is used when the
    /// request has no key; else a fresh one.
    pub fn from_request(req: &JobRequest, fallback_key: Option<String>, max_attempts: i32) -> Self {
        let id = req.job.unwrap_or_else(Uuid::now_v7);
        Self {
            id,
            key: req
                .key
                .as_deref()
                .map(producer_key)
                .or(fallback_key)
                .unwrap_or_else(|| format!("auto:{id}")),
            kind: req.kind(),
            tenant: req.tenant.clone(),
            payload: serde_json::to_value(&req.spec).expect("a job spec always serializes"),
            max_attempts,
            recorded: req.job.is_some(),
        }
    }

    /// Whether `job` is the job this request asks for (same kind, tenant and parameters):
    /// a key reused for anything else must be refused, never answered with that job.
    pub fn matches(&self, job: &JobRecord) -> bool {
        job.kind == self.kind
            && job.tenant.eq_ignore_ascii_case(self.tenant.as_str())
            && job.payload == self.payload
    }
}

/// A message that could not be processed, as recorded (its body is untrusted bytes).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetterRecord {
    pub id: Uuid,
    pub queue: String,
    pub routing_key: Option<String>,
    pub reason: String,
    pub body: Vec<u8>,
    pub job_id: Option<Uuid>,
    pub received_at: DateTime<Utc>,
}

/// What a claim found.
#[derive(Debug)]
pub enum ClaimOutcome {
    /// This worker now holds the lease (`epoch` is its fencing token).
    Claimed(JobRecord),
    /// Already succeeded, failed or dead: nothing to do.
    Finished(JobRecord),
    /// Another worker holds a live lease.
    HeldElsewhere(JobRecord),
    /// Waiting for its retry time; the sweep dispatches it then.
    NotDue(JobRecord),
    /// The idempotency key (or job id) belongs to a job of another kind or tenant.
    KeyConflict(JobRecord),
    /// The message names a job id this catalog has no record of.
    UnknownJob,
    /// Its attempts were used up (its workers kept dying); it is now `dead`.
    Exhausted(JobRecord),
}

/// Where new jobs' messages are: delivered already (a claim recording the job of the message
/// in hand), about to be published by the caller (recorded as dispatched but unconfirmed until
/// `confirm_dispatched`), or left for whoever publishes them next (a worker's sweep, a
/// rollout's caller).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Dispatch {
    Delivered,
    Publishing,
    Later,
}

/// The one statement that records jobs: `rows` yields `(id, key, kind, tenant, payload,
/// max_attempts)` (a `VALUES`, an `unnest`, a `SELECT` from a CTE of the caller's); the
/// first job of a key wins (`on_conflict`: `DO NOTHING`, or a `DO UPDATE`); the recorded
/// rows are returned with `returning`.
pub(super) fn insert_jobs_sql(rows: &str, dispatch: Dispatch, on_conflict: &str, returning: bool) -> String {
    let (dispatched_at, dispatch_count, confirmed) = match dispatch {
        Dispatch::Delivered => ("now()", "1", "true"),
        Dispatch::Publishing => ("now()", "1", "false"),
        Dispatch::Later => ("NULL::timestamptz", "0", "true"),
    };
    let returning = if returning {
        format!("RETURNING {JOB_COLUMNS}")
    } else {
        String::new()
    };
    format!(
        "INSERT INTO jobs (id, idempotency_key, kind, tenant, payload, max_attempts, dispatched_at, dispatch_count,
                           dispatch_confirmed)
         SELECT id, key, kind, tenant, payload, max_attempts, {dispatched_at}, {dispatch_count}, {confirmed}
           FROM ({rows}) AS new_jobs (id, key, kind, tenant, payload, max_attempts)
         ON CONFLICT (idempotency_key) {on_conflict}
         {returning}"
    )
}

/// One job's row for `insert_jobs_sql`, bound with `bind_new_job`.
const ONE_JOB: &str = "VALUES ($1::uuid, $2::text, $3::text, $4::citext, $5::jsonb, $6::int)";

/// New jobs recorded as claimed by the worker their messages were delivered to (owner `$7`,
/// lease `$8` seconds): what `insert_jobs_sql` + `claim_sql` do, in one statement for many.
/// A job whose key is taken is not returned.
const INSERT_CLAIMED: &str = "INSERT INTO jobs (id, idempotency_key, kind, tenant, payload, max_attempts, dispatched_at,
                       dispatch_count, dispatch_confirmed, status, attempts, lease_owner, lease_expires_at, epoch, started_at)
     SELECT id, key, kind, tenant, payload, max_attempts, now(), 1, true, 'running', 1, $7,
            now() + make_interval(secs => $8), 1, now()
       FROM unnest($1::uuid[], $2::text[], $3::text[], $4::citext[], $5::jsonb[], $6::int[])
            AS new_jobs (id, key, kind, tenant, payload, max_attempts)
     ON CONFLICT (idempotency_key) DO NOTHING
     RETURNING ";

/// The claim: a new lease (owner `$4`, `$5` seconds) and fencing epoch on the job `lookup`
/// finds, which must have kind `$2` and tenant `$3`; `claimable` adds the conditions under
/// which taking it is right without looking first.
fn claim_sql(lookup: &str, claimable: bool) -> String {
    let conditions = if claimable {
        "AND attempts < max_attempts
         AND ((status = 'queued' AND run_after <= now())
              OR (status = 'running' AND coalesce(lease_expires_at <= now(), true)))"
    } else {
        ""
    };
    format!(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $4,
                lease_expires_at = now() + make_interval(secs => $5), epoch = epoch + 1,
                started_at = coalesce(started_at, now()), updated_at = now()
          WHERE {lookup} AND kind = $2 AND tenant = $3::citext {conditions}
          RETURNING {JOB_COLUMNS}"
    )
}

/// Binds `$1..$6` of a jobs insert.
fn bind_new_job<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    new: &'q NewJob,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(new.id)
        .bind(&new.key)
        .bind(new.kind.as_str())
        .bind(new.tenant.as_str())
        .bind(&new.payload)
        .bind(new.max_attempts)
}

/// Binds `$1..$6` of a many-jobs statement (`unnest` of ids, keys, kinds, tenants,
/// payloads, max attempts), the arrays counterpart of `bind_new_job`.
fn bind_new_jobs<'q, O>(
    query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    news: &'q [NewJob],
) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(news.iter().map(|n| n.id).collect::<Vec<Uuid>>())
        .bind(news.iter().map(|n| n.key.as_str()).collect::<Vec<&str>>())
        .bind(news.iter().map(|n| n.kind.as_str()).collect::<Vec<&str>>())
        .bind(news.iter().map(|n| n.tenant.as_str()).collect::<Vec<&str>>())
        .bind(news.iter().map(|n| &n.payload).collect::<Vec<&Value>>())
        .bind(news.iter().map(|n| n.max_attempts).collect::<Vec<i32>>())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Catalog {
    /// Records jobs from a producer (CLI, API, `--all`); same key => the existing job,
    /// unchanged. Two statements per call, whatever the number of jobs. Returns each job, in
    /// input order, and whether this call created it.
    pub async fn insert_jobs(&self, news: &[NewJob]) -> Result<Vec<(JobRecord, bool)>> {
        if news.is_empty() {
            return Ok(Vec::new());
        }
        let sql = insert_jobs_sql(
            "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::int[])",
            Dispatch::Publishing,
            "DO NOTHING",
            true,
        );
        let created: Vec<JobRecord> = bind_new_jobs(sqlx::query_as(&sql), news)
            .fetch_all(self.pool())
            .await?;
        let keys: Vec<&str> = news.iter().map(|n| n.key.as_str()).collect();
        let mut by_key: std::collections::HashMap<String, (JobRecord, bool)> = created
            .into_iter()
            .map(|j| (j.idempotency_key.clone(), (j, true)))
            .collect();
        let existing: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| !by_key.contains_key(*k))
            .collect();
        if !existing.is_empty() {
            let found: Vec<JobRecord> = sqlx::query_as(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = ANY($1)"
            ))
            .bind(&existing)
            .fetch_all(self.pool())
            .await?;
            by_key.extend(found.into_iter().map(|j| (j.idempotency_key.clone(), (j, false))));
        }
        keys.iter()
            .map(|k| {
                by_key
                    .get(*k)
                    .cloned()
                    .ok_or_else(|| CatalogError::NotFound(format!("job {k} vanished after insert")))
            })
            .collect()
    }

    /// Records (if new) and claims the job of a delivered message: a new job in one
    /// statement, anything else in one transaction. A message naming a recorded job
    /// (`new.recorded`) is claimed by id and never recorded.
    pub async fn claim_job(&self, new: &NewJob, owner: &str, lease: Duration) -> Result<ClaimOutcome> {
        if !new.recorded {
            if let Some(job) = self
                .claim_new_jobs(std::slice::from_ref(new), owner, lease)
                .await?
                .pop()
            {
                return Ok(ClaimOutcome::Claimed(job));
            }
        }
        self.claim_existing_job(new, owner, lease).await
    }

    /// New jobs (first deliveries of applications' messages) recorded already claimed by
    /// `owner`, in one statement; a job whose key is taken is left out (`claim_existing_job`
    /// sorts it out). Two messages with one key in `news`: the first is recorded.
    pub async fn claim_new_jobs(
        &self,
        news: &[NewJob],
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<JobRecord>> {
        let sql = format!("{INSERT_CLAIMED}{JOB_COLUMNS}");
        Ok(bind_new_jobs(sqlx::query_as(&sql), news)
            .bind(owner)
            .bind(secs(lease))
            .fetch_all(self.pool())
            .await?)
    }

    /// Claims a job that is (or may be) recorded already: a rollout's, a retry, a CLI's, a
    /// redelivery. Finished, held, not due, out of attempts or a key conflict: says which.
    pub async fn claim_existing_job(
        &self,
        new: &NewJob,
        owner: &str,
        lease: Duration,
    ) -> Result<ClaimOutcome> {
        let (lookup, value) = if new.recorded {
            ("id = $1::uuid", new.id.to_string())
        } else {
            ("idempotency_key = $1", new.key.clone())
        };
        // Fast path, one statement: the job is recorded (a rollout's, a retry, a CLI's) and
        // claimable. Anything else (finished, held, not due, out of attempts, a key
        // conflict, a racing insert) takes the transaction below, which sorts it out.
        let claimed: Option<JobRecord> = sqlx::query_as(&claim_sql(lookup, true))
            .bind(&value)
            .bind(new.kind.as_str())
            .bind(new.tenant.as_str())
            .bind(owner)
            .bind(secs(lease))
            .fetch_optional(self.pool())
            .await?;
        if let Some(job) = claimed {
            return Ok(ClaimOutcome::Claimed(job));
        }
        let mut tx = self.pool().begin().await?;
        if !new.recorded {
            bind_new_job(
                sqlx::query(&insert_jobs_sql(
                    ONE_JOB,
                    Dispatch::Delivered,
                    "DO NOTHING",
                    false,
                )),
                new,
            )
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS}, coalesce(lease_expires_at > now(), false) AS lease_live, run_after <= now() AS due
             FROM jobs WHERE {lookup} FOR UPDATE"
        ))
        .bind(&value)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(ClaimOutcome::UnknownJob);
        };
        let (job, lease_live, due): (JobRecord, bool, bool) = {
            use sqlx::{FromRow, Row};
            (
                JobRecord::from_row(&row)?,
                row.try_get("lease_live")?,
                row.try_get("due")?,
            )
        };
        if job.kind != new.kind || !job.tenant.eq_ignore_ascii_case(new.tenant.as_str()) {
            return Ok(ClaimOutcome::KeyConflict(job));
        }
        let outcome = match job.status {
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Dead => ClaimOutcome::Finished(job),
            JobStatus::Running if lease_live => ClaimOutcome::HeldElsewhere(job),
            JobStatus::Queued if !due => ClaimOutcome::NotDue(job),
            _ if job.attempts >= job.max_attempts => {
                let dead: JobRecord = sqlx::query_as(&format!(
                    "UPDATE jobs SET status = 'dead', finished_at = now(), updated_at = now(),
                            lease_owner = NULL, lease_expires_at = NULL, epoch = epoch + 1,
                            error = format('gave up after %s attempts; last error: %s', attempts, coalesce(error, 'none recorded'))
                     WHERE id = $1 RETURNING {JOB_COLUMNS}"
                ))
                .bind(job.id)
                .fetch_one(&mut *tx)
                .await?;
                ClaimOutcome::Exhausted(dead)
            }
            _ => {
                let claimed: JobRecord = sqlx::query_as(&claim_sql("id = $1", false))
                    .bind(job.id)
                    .bind(job.kind)
                    .bind(&job.tenant)
                    .bind(owner)
                    .bind(secs(lease))
                    .fetch_one(&mut *tx)
                    .await?;
                ClaimOutcome::Claimed(claimed)
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// A delivery waited too long for a free slot: make sure the job is recorded as queued
    /// and undispatched so the sweep publishes it again, instead of holding the delivery.
    pub async fn defer_job(&self, new: &NewJob) -> Result<()> {
        if new.recorded {
            sqlx::query("UPDATE jobs SET dispatched_at = NULL WHERE id = $1 AND status = 'queued'")
                .bind(new.id)
                .execute(self.pool())
                .await?;
            return Ok(());
        }
        bind_new_job(
            sqlx::query(&insert_jobs_sql(
                ONE_JOB,
                Dispatch::Later,
                "DO UPDATE SET dispatched_at = NULL WHERE jobs.status = 'queued'",
                false,
            )),
            new,
        )
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Whether the fence's job is still `running` at its epoch.
    pub async fn holds_lease(&self, fence: Fence) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND epoch = $2 AND status = 'running')",
        )
        .bind(fence.job_id)
        .bind(fence.epoch)
        .fetch_one(self.pool())
        .await?)
    }

    /// Extends the lease; `false` means it was lost (reaped, or the job was handed back).
    pub async fn renew_lease(&self, id: Uuid, epoch: i64, lease: Duration) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3)
             WHERE id = $1 AND epoch = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(epoch)
        .bind(secs(lease))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records successes — `(job, epoch, outcome)` — in one statement, each fenced by its
    /// epoch; returns the (job, epoch) pairs written (one missing lost its lease and nothing
    /// was written for it).
    pub async fn finish_succeeded(&self, done: &[(Uuid, i64, Value)]) -> Result<Vec<(Uuid, i64)>> {
        let ids: Vec<Uuid> = done.iter().map(|d| d.0).collect();
        let epochs: Vec<i64> = done.iter().map(|d| d.1).collect();
        let outcomes: Vec<&Value> = done.iter().map(|d| &d.2).collect();
        Ok(sqlx::query_as(
            "UPDATE jobs SET status = 'succeeded', outcome = f.outcome, error = NULL, lease_owner = NULL,
                    lease_expires_at = NULL, finished_at = now(), updated_at = now()
               FROM unnest($1::uuid[], $2::bigint[], $3::jsonb[]) AS f (id, epoch, outcome),
                    (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
              WHERE jobs.id = f.id AND jobs.epoch = f.epoch AND jobs.status = 'running'
             RETURNING jobs.id, f.epoch",
        )
        .bind(&ids)
        .bind(&epochs)
        .bind(&outcomes)
        .fetch_all(self.pool())
        .await?)
    }

    /// Fenced terminal failure: `status` is `failed` (permanent error) or `dead` (out of attempts).
    pub async fn finish_unsuccessful(
        &self,
        id: Uuid,
        epoch: i64,
        status: JobStatus,
        error: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = $3, error = $4, lease_owner = NULL, lease_expires_at = NULL,
                    finished_at = now(), updated_at = now()
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
             WHERE id = $1 AND epoch = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(epoch)
        .bind(status)
        .bind(error)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fenced: back to `queued` after `delay`; the sweep publishes it when due.
    pub async fn schedule_retry(&self, id: Uuid, epoch: i64, error: &str, delay: Duration) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', error = $3, run_after = now() + make_interval(secs => $4),
                    lease_owner = NULL, lease_expires_at = NULL, dispatched_at = NULL, updated_at = now()
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
             WHERE id = $1 AND epoch = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(epoch)
        .bind(error)
        .bind(secs(delay))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fenced: a shutting-down worker gives the job back without spending an attempt.
    pub async fn hand_back(&self, id: Uuid, epoch: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = greatest(attempts - 1, 0), run_after = now(),
                    lease_owner = NULL, lease_expires_at = NULL, epoch = epoch + 1, dispatched_at = NULL,
                    updated_at = now()
             WHERE id = $1 AND epoch = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(epoch)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Cancels a job that has not started: `failed` with `cancelled: <why>`. `None` if it
    /// is not `queued` (any more).
    pub async fn cancel_job(&self, id: Uuid, why: &str) -> Result<Option<JobRecord>> {
        Ok(sqlx::query_as(&format!(
            "UPDATE jobs SET status = 'failed', error = 'cancelled: ' || $2, finished_at = now(), updated_at = now()
              WHERE id = $1 AND status = 'queued' RETURNING {JOB_COLUMNS}"
        ))
        .bind(id)
        .bind(why)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Requeues running jobs whose lease expired (their worker died); returns (id, lost owner).
    pub async fn reap_expired_leases(&self) -> Result<Vec<(Uuid, Option<String>)>> {
        let rows = sqlx::query_as(
            "WITH expired AS (
                SELECT id, lease_owner FROM jobs
                WHERE status = 'running' AND lease_expires_at < now()
                FOR UPDATE SKIP LOCKED)
             UPDATE jobs j SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                    epoch = j.epoch + 1, run_after = now(), dispatched_at = NULL, updated_at = now(),
                    error = format('lease of worker %s expired (it crashed or lost the catalog)', e.lease_owner)
             FROM expired e WHERE j.id = e.id
             RETURNING j.id, e.lease_owner",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Takes up to `limit` queued jobs that are due and not (recently) published, recording
    /// them as dispatched, unconfirmed, in one short statement; the caller publishes them
    /// afterwards (no transaction waits on the broker), confirms them with
    /// `confirm_dispatched` and hands back the ones it could not publish with
    /// `mark_undispatched_many`. The re-publish interval of a confirmed message doubles per
    /// dispatch so a long queue is not flooded with copies; a dispatch never confirmed (its
    /// publisher died in between) is taken again after `unconfirmed_after`.
    pub async fn take_due_jobs(
        &self,
        limit: i64,
        redispatch_after: Duration,
        unconfirmed_after: Duration,
    ) -> Result<Vec<JobRecord>> {
        // Published in the order they became due, then as recorded (a rollout's jobs: by
        // tenant slug), so a backlog is worked off first come, first served.
        Ok(sqlx::query_as(&format!(
            "WITH taken AS (
              UPDATE jobs SET dispatched_at = now(), dispatch_count = dispatch_count + 1, dispatch_confirmed = false,
                    updated_at = now()
              WHERE id IN (
                SELECT id FROM jobs
                 WHERE status = 'queued' AND run_after <= now()
                   AND (dispatched_at IS NULL
                        OR (NOT dispatch_confirmed AND dispatched_at < now() - make_interval(secs => $3))
                        OR dispatched_at < now() - make_interval(secs => $2 * power(2, least(greatest(dispatch_count - 1, 0), 6))))
                 ORDER BY run_after, created_at, tenant
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED)
              RETURNING {JOB_COLUMNS})
             SELECT * FROM taken ORDER BY run_after, created_at, tenant"
        ))
        .bind(limit)
        .bind(secs(redispatch_after))
        .bind(secs(unconfirmed_after))
        .fetch_all(self.pool())
        .await?)
    }

    /// The broker confirmed these jobs' messages: they are queued there.
    pub async fn confirm_dispatched(&self, ids: &[Uuid]) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET dispatch_confirmed = true WHERE id = ANY($1) AND NOT dispatch_confirmed",
        )
        .bind(ids)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// One job by id.
    pub async fn job(&self, id: Uuid) -> Result<Option<JobRecord>> {
        Ok(
            sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
                .bind(id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// The job a producer created with `key` (its own key, as it gave it).
    pub async fn job_by_producer_key(&self, key: &str) -> Result<Option<JobRecord>> {
        self.job_by_key(&producer_key(key)).await
    }

    /// The job with this stored idempotency key.
    pub async fn job_by_key(&self, key: &str) -> Result<Option<JobRecord>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = $1"
        ))
        .bind(key)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Newest first; optionally only one status and/or one tenant.
    pub async fn jobs(
        &self,
        status: Option<JobStatus>,
        tenant: Option<&str>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<JobRecord>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR tenant = $2::citext)
               AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(status)
        .bind(tenant)
        .bind(limit)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .fetch_all(self.pool())
        .await?)
    }

    /// Records a dead-lettered message (its body capped at 64 KiB) with the reason.
    pub async fn record_dead_letter(
        &self,
        queue: &str,
        routing_key: Option<&str>,
        reason: &str,
        body: &[u8],
        job_id: Option<Uuid>,
    ) -> Result<()> {
        const MAX_BODY: usize = 64 * 1024;
        sqlx::query(
            "INSERT INTO dead_letters (queue, reason, body, job_id, routing_key) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(queue)
        .bind(reason)
        .bind(&body[..body.len().min(MAX_BODY)])
        .bind(job_id)
        .bind(routing_key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Recorded dead letters, newest first (at most `limit`).
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetterRecord>> {
        Ok(sqlx::query_as(
            "SELECT id, queue, routing_key, reason, body, job_id, received_at FROM dead_letters
              ORDER BY received_at DESC, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetterRecord>> {
        Ok(sqlx::query_as(
            "SELECT id, queue, routing_key, reason, body, job_id, received_at FROM dead_letters WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Deletes a dead letter's record; `false` if there was none.
    pub async fn delete_dead_letter(&self, id: Uuid) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM dead_letters WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?
            .rows_affected()
            == 1)
    }

    /// Reasons of every recorded dead letter, oldest first.
    pub async fn dead_letter_reasons(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT reason FROM dead_letters ORDER BY received_at")
                .fetch_all(self.pool())
                .await?,
        )
    }
}
