//! `restore`: streams a backup (default: the tenant's newest good one) from the store,
//! verifies its SHA-256 as it streams, gunzips it and feeds it to stock `psql` connected to
//! a new database. For a live tenant the database is owned by, and loaded as, the tenant's
//! role (so the tenant can use its restored copy); for a deleted tenant, whose role is gone,
//! by the server admin. An existing database is never overwritten; the only one replaced is
//! this job's own unfinished target from an earlier attempt.

use super::{JobContext, Outcome};
use crate::catalog::{BackupRecord, JobRecord, TenantRecord};
use crate::error::JobError;
use crate::pg_tools;
use crate::slug::{quote_ident, quote_literal, TenantSlug};
use anyhow::{anyhow, Context};
use async_compression::tokio::bufread::GzipDecoder;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};
use tracing::info;
use uuid::Uuid;

pub async fn run(
    ctx: &JobContext,
    job: &JobRecord,
    slug: &TenantSlug,
    backup_id: Option<Uuid>,
    into: &str,
) -> Result<Outcome, JobError> {
    let tenant = ctx
        .catalog
        .tenant(slug)
        .await?
        .ok_or_else(|| JobError::Permanent(anyhow!("no tenant {slug}")))?;
    let backup = choose_backup(ctx, &tenant, backup_id).await?;
    let admin = ctx.servers.admin_pool(tenant.server_id).await?;
    let marker = format!("pgfleet restore job {} (incomplete)", job.id);

    prepare_target(&admin, &tenant, into, &marker).await?;
    let loaded = load(ctx, &tenant, &backup, into).await;
    if let Err(e) = loaded {
        // A half-loaded database must not pass for a restore.
        let _ = sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(into)
        ))
        .execute(&admin)
        .await;
        return Err(e);
    }
    let done = format!("pgfleet restore of tenant {} backup {}", tenant.slug, backup.id);
    sqlx::raw_sql(&format!(
        "COMMENT ON DATABASE {} IS {}",
        quote_ident(into),
        quote_literal(&done)
    ))
    .execute(&admin)
    .await
    .context("marking the restored database complete")?;
    ctx.servers.flush_wal(tenant.server_id).await?;
    info!(database = into, backup = %backup.id, "restored");
    Ok(Outcome::new(
        "restored",
        serde_json::json!({ "database": into, "backup_id": backup.id, "key": backup.key, "bytes": backup.bytes }),
    ))
}

async fn choose_backup(
    ctx: &JobContext,
    tenant: &TenantRecord,
    id: Option<Uuid>,
) -> Result<BackupRecord, JobError> {
    match id {
        Some(id) => {
            let backup = ctx
                .catalog
                .backup(id)
                .await?
                .filter(|b| b.tenant_id == tenant.id)
                .ok_or_else(|| JobError::Permanent(anyhow!("tenant {} has no backup {id}", tenant.slug)))?;
            if backup.status != "succeeded" {
                return Err(JobError::Permanent(anyhow!(
                    "backup {id} is {}, not restorable",
                    backup.status
                )));
            }
            Ok(backup)
        }
        None => ctx
            .catalog
            .backups(tenant.id)
            .await?
            .into_iter()
            .find(|b| b.status == "succeeded")
            .ok_or_else(|| {
                JobError::Permanent(anyhow!(
                    "tenant {} has no successful backup to restore",
                    tenant.slug
                ))
            }),
    }
}

/// Creates the target database, refusing one that exists unless it is this job's own
/// unfinished attempt (recognised by its comment), which is dropped and made again.
async fn prepare_target(
    admin: &PgPool,
    tenant: &TenantRecord,
    into: &str,
    marker: &str,
) -> Result<(), JobError> {
    let existing: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(into)
    .fetch_optional(admin)
    .await
    .context("looking for the target database")?;
    let target = quote_ident(into);
    match existing {
        None => {}
        Some(Some(comment)) if comment == marker => {
            sqlx::raw_sql(&format!("DROP DATABASE {target} WITH (FORCE)"))
                .execute(admin)
                .await
                .context("dropping this job's unfinished restore target")?;
        }
        Some(_) => {
            return Err(JobError::Permanent(anyhow!(
                "database {into} already exists; restore never overwrites a database — choose a new name with --into, or drop it first"
            )))
        }
    }
    let owner = if restores_as_tenant(tenant) {
        format!(" OWNER {}", quote_ident(&tenant.role_name))
    } else {
        String::new()
    };
    sqlx::raw_sql(&format!("CREATE DATABASE {target}{owner}"))
        .execute(admin)
        .await
        .with_context(|| format!("creating database {into}"))?;
    sqlx::raw_sql(&format!(
        "REVOKE ALL ON DATABASE {target} FROM PUBLIC; COMMENT ON DATABASE {target} IS {}",
        quote_literal(marker)
    ))
    .execute(admin)
    .await
    .context("preparing the target database")?;
    Ok(())
}

fn restores_as_tenant(tenant: &TenantRecord) -> bool {
    !matches!(tenant.status.as_str(), "deleted" | "deleting")
}

/// Streams store → SHA-256 check → gunzip → `psql -v ON_ERROR_STOP=1`.
async fn load(
    ctx: &JobContext,
    tenant: &TenantRecord,
    backup: &BackupRecord,
    into: &str,
) -> Result<(), JobError> {
    let expected = backup
        .sha256
        .clone()
        .ok_or_else(|| JobError::Permanent(anyhow!("backup {} has no recorded checksum", backup.id)))?;
    let major = ctx.servers.server_major(tenant.server_id).await?;
    let psql = pg_tools::find("psql", major).await.map_err(JobError::Permanent)?;
    let env = if restores_as_tenant(tenant) {
        ctx.servers.tenant_libpq_env(tenant, into).await?
    } else {
        ctx.servers.admin_libpq_env(tenant.server_id, into).await?
    };
    let mut cmd = tokio::process::Command::new(&psql.path);
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    env.apply(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", psql.path.display()))?;
    let mut stdin = child.stdin.take().context("psql has no stdin")?;
    let stderr_task = pg_tools::collect_stderr(child.stderr.take().context("psql has no stderr")?);

    let object = ctx.store.get(&backup.key).await?;
    let mut hashing = HashingReader::new(object);
    let copied = {
        let mut decoder = GzipDecoder::new(BufReader::new(&mut hashing));
        decoder.multiple_members(true);
        let copied = tokio::io::copy(&mut decoder, &mut stdin).await;
        // The decoder stops at the end of the gzip data; anything after it still counts
        // for the checksum.
        let mut rest = Vec::new();
        copied.and(decoder.into_inner().read_to_end(&mut rest).await)
    };
    drop(stdin);
    let status = child.wait().await.context("waiting for psql")?;
    let stderr = stderr_task.await.unwrap_or_default();
    let actual = hashing.finish();
    if actual != expected {
        return Err(JobError::Permanent(anyhow!(
            "backup {} is corrupt: its SHA-256 is {actual}, the catalog recorded {expected}",
            backup.key
        )));
    }
    copied.with_context(|| format!("streaming {} into psql", backup.key))?;
    if !status.success() {
        return Err(JobError::Permanent(anyhow!(
            "psql failed ({status}) loading {}: {}",
            backup.key,
            stderr.trim()
        )));
    }
    Ok(())
}

/// Passes bytes through while hashing them.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn finish(self) -> String {
        crate::store::hex(&self.hasher.finalize())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let new = buf.filled()[before..].to_vec();
            self.hasher.update(&new);
        }
        poll
    }
}
