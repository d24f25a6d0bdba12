//! `backup`: `pg_dump` (plain SQL) of the tenant database, gzip on several cores, streamed
//! into the backup store under `<prefix>/<slug>/<UTC time>-<job id>.sql.gz` — no temp file,
//! memory bounded whatever the size. The catalog row turns `succeeded` only after pg_dump
//! exited 0, the compressor finished, the store completed the object and its size matched
//! what was streamed. Earlier attempts of the same job (a killed worker) are cleaned up
//! first; a successful backup is followed by a prune of the tenant. Dev copies whose
//! backups were asked for (`tenant branch … --backups`) are backed up by the same job, each
//! as the copy's own role, to `<prefix>/<slug>/branch-<name>-<UTC time>-<job id>.sql.gz`.

use super::{prune, Claimed, JobContext, Outcome};
use crate::catalog::{BackupStats, JobRecord, TenantRecord};
use crate::compress::{self, Compressed};
use crate::error::{CancelReason, JobError};
use crate::message::{JobKind, NoFields};
use crate::pg_tools;
use crate::slug::TenantSlug;
use crate::store::Stored;
use anyhow::{anyhow, Context};
use secrecy::SecretString;
use std::process::Stdio;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{info, warn};
use uuid::Uuid;

/// `backup`: the tenant (which must be active) into the store, then a prune.
pub async fn run(ctx: &JobContext, job: &Claimed<NoFields>) -> Result<Outcome, JobError> {
    let tenant = super::active_tenant(ctx, &job.tenant, "backed up").await?;
    // Not for delete's final backup: a delete handed back after a failure and retried must
    // dump what the tenant wrote since.
    let backup = match ctx.catalog.succeeded_backup_of_job(job.job.id, None).await? {
        Some(done) => {
            info!(key = %done.key, "an earlier attempt of this job stored and recorded the backup");
            BackupDone::recorded(done)
        }
        None => backup_tenant(ctx, &job.job, &tenant, None).await?,
    };
    let mut details = backup.to_json();
    // Dev copies whose backups were asked for (`tenant branch … --backups`), each once per job.
    let mut branches = Vec::new();
    for branch in ctx.catalog.branches(tenant.id).await? {
        if !branch.backups_enabled || !branch.ready || branch.database_name.is_none() {
            continue;
        }
        let done = match ctx
            .catalog
            .succeeded_backup_of_job(job.job.id, Some(&branch.name))
            .await?
        {
            Some(done) => BackupDone::recorded(done),
            None => store_dump(ctx, &job.job, &tenant, Source::Branch(&branch)).await?,
        };
        let mut one = done.to_json();
        one["branch"] = serde_json::json!(branch.name);
        branches.push(one);
    }
    if !branches.is_empty() {
        details["branches"] = serde_json::json!(branches);
    }
    match prune::prune_tenant(ctx, &tenant).await {
        Ok(report) => details["prune"] = report.to_json(),
        // The backup itself is good; the next prune (or backup) tries again.
        Err(e) => {
            warn!(error = %format!("{e:#}"), "prune after backup failed");
            details["prune_error"] = serde_json::json!(format!("{e:#}"));
        }
    }
    Ok(Outcome::new("backed up", details))
}

/// What one backup stored.
pub struct BackupDone {
    pub id: Uuid,
    pub key: String,
    pub stored: Stored,
    pub raw_bytes: u64,
    pub duration_ms: u64,
    pub pg_dump: String,
}

impl BackupDone {
    /// A backup already recorded as good (by an earlier attempt of the same job).
    fn recorded(backup: crate::catalog::BackupRecord) -> Self {
        Self {
            id: backup.id,
            key: backup.key,
            stored: Stored {
                bytes: backup.bytes.unwrap_or(0) as u64,
                sha256: backup.sha256.unwrap_or_default(),
            },
            raw_bytes: backup.raw_bytes.unwrap_or(0) as u64,
            duration_ms: backup.duration_ms.unwrap_or(0) as u64,
            pg_dump: backup.pg_dump.unwrap_or_default(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "backup_id": self.id,
            "key": self.key,
            "bytes": self.stored.bytes,
            "raw_bytes": self.raw_bytes,
            "sha256": self.stored.sha256,
            "duration_ms": self.duration_ms,
            "pg_dump": self.pg_dump,
        })
    }
}

/// Backs up one tenant for `job` (also used by `delete` for its final backup, with the
/// password it locked the tenant's role with as `login`).
pub async fn backup_tenant(
    ctx: &JobContext,
    job: &JobRecord,
    tenant: &TenantRecord,
    login: Option<&SecretString>,
) -> Result<BackupDone, JobError> {
    store_dump(ctx, job, tenant, Source::Tenant { login }).await
}

/// What one backup dumps: the tenant's database, or one of its dev copies (under the
/// tenant's prefix, as the copy's own role).
enum Source<'a> {
    Tenant { login: Option<&'a SecretString> },
    Branch(&'a crate::catalog::BranchRecord),
}

async fn store_dump(
    ctx: &JobContext,
    job: &JobRecord,
    tenant: &TenantRecord,
    source: Source<'_>,
) -> Result<BackupDone, JobError> {
    let slug = TenantSlug::parse(&tenant.slug).map_err(|e| JobError::Permanent(e.into()))?;
    let prefix = ctx.store.tenant_prefix(&ctx.namespace, &slug);
    let branch = match &source {
        Source::Branch(b) => Some(b.name.as_str()),
        Source::Tenant { .. } => None,
    };
    // Dumps of one job run one after another: any unfinished one of this job is a leftover.
    discard_own_leftovers(ctx, job.id, &prefix).await?;
    let env = match &source {
        Source::Tenant {
            login: Some(password),
        } => {
            ctx.servers
                .role_libpq_env(
                    tenant.server_id,
                    &tenant.role_name,
                    password,
                    &tenant.database_name,
                )
                .await?
        }
        Source::Tenant { login: None } => {
            ctx.servers
                .tenant_libpq_env(tenant, &tenant.database_name)
                .await?
        }
        Source::Branch(b) => {
            let uri = ctx
                .catalog
                .branch_uri(b.id)
                .await?
                .ok_or_else(|| anyhow!("branch {} is not ready", b.name))?;
            ctx.servers.uri_libpq_env(&uri)?
        }
    };

    // The catalog's time, not this worker's: backups are ordered and aged by it.
    let started_at = ctx.catalog.now().await?;
    let started = Instant::now();
    let key = match branch {
        Some(name) => prefix.branch_backup_key(name, started_at, job.id),
        None => prefix.backup_key(started_at, job.id),
    };
    prefix.check(&key).map_err(JobError::Permanent)?;
    // A retry within the same second reuses its failed row (the key is the same): its id.
    let id = match ctx
        .catalog
        .insert_backup(Uuid::now_v7(), tenant.id, job.fence(), &key, started_at, branch)
        .await
    {
        Ok(id) => id,
        Err(_) if !ctx.catalog.holds_lease(job.fence()).await? => {
            return Err(JobError::Cancelled(CancelReason::LeaseLost))
        }
        Err(e) => return Err(e.into()),
    };

    match dump_to_store(ctx, job.kind, tenant, &key, &env).await {
        Ok((stored, compressed, pg_dump)) => {
            let duration_ms = started.elapsed().as_millis() as u64;
            let recorded = ctx
                .catalog
                .finish_backup_succeeded(
                    id,
                    job.fence(),
                    &BackupStats {
                        bytes: stored.bytes,
                        raw_bytes: compressed.raw_bytes,
                        sha256: &stored.sha256,
                        pg_dump: &pg_dump,
                        duration_ms,
                    },
                )
                .await?;
            if !recorded {
                // Another worker owns the job now: this attempt's object is not recorded as
                // good. Remove it (the new owner may have looked for leftovers already); if
                // that fails too, the next prune removes it by its failed row.
                warn!(
                    key,
                    "the job was taken over while its object was stored; discarding it"
                );
                if let Err(e) = ctx.store.delete(&prefix, &key).await {
                    warn!(key, error = %format!("{e:#}"), "could not discard the unrecorded object");
                }
                let _ = ctx
                    .catalog
                    .finish_backup_failed(id, "taken over by another worker")
                    .await;
                return Err(JobError::Cancelled(CancelReason::LeaseLost));
            }
            info!(
                key,
                bytes = stored.bytes,
                raw_bytes = compressed.raw_bytes,
                duration_ms,
                "backup stored"
            );
            Ok(BackupDone {
                id,
                key,
                stored,
                raw_bytes: compressed.raw_bytes,
                duration_ms,
                pg_dump,
            })
        }
        Err(e) => {
            let message = format!("{e:#}");
            if let Err(record) = ctx.catalog.finish_backup_failed(id, &message).await {
                warn!(error = %format!("{record:#}"), "could not record the failed backup");
            }
            Err(e)
        }
    }
}

/// An earlier attempt of this job may have died mid-upload: abort its unfinished upload
/// (or temp file) and fail its row, so nothing of it lingers.
async fn discard_own_leftovers(
    ctx: &JobContext,
    job_id: Uuid,
    prefix: &crate::store::TenantPrefix,
) -> Result<(), JobError> {
    let suffix = format!("-{job_id}.sql.gz");
    for incomplete in ctx.store.list_incomplete(prefix).await? {
        if incomplete.key.ends_with(&suffix) {
            info!(key = %incomplete.key, "discarding an unfinished upload of an earlier attempt");
            ctx.store.discard_incomplete(prefix, &incomplete).await?;
        }
    }
    // An earlier attempt may also have completed its object and died before recording it.
    for (id, key) in ctx.catalog.own_running_backups(job_id).await? {
        info!(%key, "discarding the unrecorded object of an earlier attempt");
        ctx.store.delete(prefix, &key).await?;
        ctx.catalog.fail_own_running_backup(id).await?;
    }
    Ok(())
}

async fn dump_to_store(
    ctx: &JobContext,
    kind: JobKind,
    tenant: &TenantRecord,
    key: &str,
    env: &crate::servers::LibpqEnv,
) -> Result<(Stored, Compressed, String), JobError> {
    let major = ctx.servers.tenant_server_major(tenant).await?;
    let pg_dump = pg_tools::find("pg_dump", major)
        .await
        .map_err(JobError::Permanent)?;
    // Scheduled and requested backups are bulk work; a delete's final backup is not (a
    // person waits for the delete). Bulk work steps aside for a signup also before it
    // starts `pg_dump`, whose schema queries are a burst of work on the server.
    let yield_to = (kind == JobKind::Backup).then(|| ctx.priority.clone());
    if let Some(priority) = &yield_to {
        priority.bulk_turn().await;
    }
    let mut cmd = tokio::process::Command::new(&pg_dump.path);
    // --no-owner/--no-privileges: plain SQL that `gunzip -c | psql` loads into any database
    // as any user (the objects then belong to whoever restores them).
    cmd.args([
        "--format=plain",
        "--no-owner",
        "--no-privileges",
        "--no-password",
        "--lock-wait-timeout=60000",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    env.apply(&mut cmd);
    // pg_dump at the background threads' lower CPU priority: a signup on this machine
    // goes first (see compress::background).
    // SAFETY: setpriority is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpriority(libc::PRIO_PROCESS, 0, compress::background::NICE);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", pg_dump.path.display()))?;
    let stdout = child.stdout.take().context("pg_dump has no stdout")?;
    let stderr_task = pg_tools::collect_stderr(child.stderr.take().context("pg_dump has no stderr")?);

    let (tx, rx) = mpsc::channel(4);
    let gzip = ctx.gzip;
    let producer = async move {
        let compressed = compress::gzip_stream(stdout, gzip, yield_to.as_ref(), &tx).await;
        // Only after pg_dump exits 0 may the stream end cleanly: that is what lets the
        // store make the object visible.
        let verdict = match compressed {
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(e)
            }
            Ok(compressed) => {
                let status = child.wait().await.context("waiting for pg_dump")?;
                let stderr = stderr_task.await.unwrap_or_default();
                if status.success() {
                    Ok(compressed)
                } else {
                    Err(anyhow!("pg_dump failed ({status}): {}", tail(&stderr, 2000)))
                }
            }
        };
        if let Err(e) = &verdict {
            let _ = tx.send(Err(anyhow!("{e:#}"))).await;
        }
        verdict
    };
    let (produced, stored) = tokio::join!(producer, ctx.store.put(key, rx));
    match (produced, stored) {
        (Ok(compressed), Ok(stored)) => {
            if stored.bytes != compressed.compressed_bytes {
                return Err(anyhow!(
                    "stored {} bytes but the compressor produced {}",
                    stored.bytes,
                    compressed.compressed_bytes
                )
                .into());
            }
            Ok((stored, compressed, pg_dump.version))
        }
        (Err(produced), Err(stored)) if format!("{produced:#}").contains("stopped reading") => Err(stored
            .context(format!("storing the backup of {}", tenant.slug))
            .into()),
        // Otherwise the producer's own error (pg_dump's message) explains most.
        (Err(e), _) => Err(e.context(format!("backing up {}", tenant.slug)).into()),
        (Ok(_), Err(e)) => Err(e.context(format!("storing the backup of {}", tenant.slug)).into()),
    }
}

fn tail(text: &str, max: usize) -> &str {
    let text = text.trim();
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    &text[start..]
}
