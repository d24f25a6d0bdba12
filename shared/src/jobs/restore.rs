//! `restore`: loads a backup (default: the tenant's newest good one) into a new database on
//! the tenant's server with stock `psql`. The stored object is untrusted until verified, and
//! what it holds is SQL the tenant wrote, so:
//!
//! - the object is first copied into an unlinked temp file, with its size capped at the
//!   recorded size and its SHA-256 compared with the recorded one; only a verified copy is
//!   gunzipped into `psql`, and nothing is created on the server before that (disk: the
//!   compressed size; memory: a copy buffer);
//! - `psql` runs as a login role that is not a superuser and owns only the target database:
//!   a live tenant's own role, or for a deleted tenant its role re-created for the job and
//!   set NOLOGIN afterwards — so a function the tenant wrote never runs with more privilege
//!   than the tenant had; its environment holds only the libpq settings it needs;
//! - the target name can't be one of pgfleet's own (`<namespace>_…`, where tenant databases
//!   live), and an existing database is never overwritten; the only one replaced is this
//!   job's own unfinished target from an earlier attempt, and a target this job already
//!   finished is reported as done.
//!
//! A Neon tenant is restored into a new branch of its project (`--into branch:NAME`): the
//! branch is made (its catalog row first, so a retry adopts it), its copy of the tenant's
//! database is replaced by an empty one through the API, and the verified backup is loaded
//! over the branch's direct URI as the tenant's own role. The branch is marked ready only
//! once loaded; a failed load deletes it.

use super::{Claimed, JobContext, Outcome};
use crate::catalog::{BackupRecord, TenantRecord};
use crate::error::{server_sql_error, JobError, ServerSql};
use crate::message::RestoreSpec;
use crate::pg_tools;
use crate::postgres::{quote_ident, quote_literal};
use crate::secrets::{generate_password, scram_sha256_verifier};
use crate::servers::LibpqEnv;
use crate::status::{BackupStatus, ServerKind, TenantStatus};
use anyhow::{anyhow, Context};
use async_compression::tokio::bufread::GzipDecoder;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
use tracing::info;
use uuid::Uuid;

/// `restore`: a verified backup into a new database (see the module docs).
pub async fn run(ctx: &JobContext, claimed: &Claimed<RestoreSpec>) -> Result<Outcome, JobError> {
    let (job, slug) = (&claimed.job, &claimed.tenant);
    let (backup_id, into) = (claimed.spec.backup, claimed.spec.into.as_str());
    let neon_target = into
        .strip_prefix("branch:")
        .or_else(|| into.strip_prefix("project:"));
    if ctx.namespace.owns_name(into) {
        return Err(JobError::Permanent(anyhow!(
            "database name {into} is reserved: names starting with {}_ are pgfleet's own tenant databases; choose another --into",
            ctx.namespace
        )));
    }
    let tenant = ctx
        .catalog
        .tenant(slug)
        .await?
        .ok_or_else(|| JobError::Permanent(anyhow!("no tenant {slug}")))?;
    if tenant.status == TenantStatus::Deleting {
        return Err(
            anyhow!("tenant {slug} is being deleted; the restore waits until that has finished").into(),
        );
    }
    match (tenant.server_kind, neon_target) {
        (ServerKind::Neon, Some(_)) if into.starts_with("branch:") => {
            let backup = choose_backup(ctx, &tenant, backup_id).await?;
            return restore_into_branch(ctx, claimed, &tenant, &backup, &into["branch:".len()..]).await;
        }
        (ServerKind::Neon, Some(name)) => {
            let backup = choose_backup(ctx, &tenant, backup_id).await?;
            return restore_into_project(ctx, claimed, &tenant, &backup, name).await;
        }
        (ServerKind::Neon, None) => {
            return Err(JobError::Permanent(anyhow!(
                "tenant {slug} is on Neon: restore it into a new branch of its project (--into branch:NAME) or a new project (--into project:NAME)"
            )))
        }
        (ServerKind::Postgres, Some(name)) if into.starts_with("branch:") => {
            if tenant.status != TenantStatus::Active {
                return Err(JobError::permanent(format!(
                    "tenant {slug} is {}; branches are made of active tenants",
                    tenant.status
                )));
            }
            let backup = if claimed.spec.schema_only {
                None
            } else {
                Some(choose_backup(ctx, &tenant, backup_id).await?)
            };
            return super::dev_copy::run(ctx, claimed, &tenant, backup, name).await;
        }
        (ServerKind::Postgres, Some(_)) => {
            return Err(JobError::Permanent(anyhow!(
                "--into {into}: projects are for Neon tenants; tenant {slug} is on a self-hosted server, give a database name (or branch:NAME for a dev copy)"
            )))
        }
        (ServerKind::Postgres, None) => {}
    }
    let backup = choose_backup(ctx, &tenant, backup_id).await?;
    let admin = ctx.servers.admin_pool(tenant.server_id).await?;
    let unfinished = format!("pgfleet restore job {} (incomplete)", job.id);
    let finished = format!(
        "pgfleet restore job {}: tenant {} backup {}",
        job.id, tenant.slug, backup.id
    );
    let outcome = Outcome::new(
        "restored",
        serde_json::json!({ "database": into, "backup_id": backup.id, "key": backup.key, "bytes": backup.bytes }),
    );
    if target_comment(&admin, into).await?.as_deref() == Some(finished.as_str()) {
        info!(
            database = into,
            "already restored by an earlier attempt of this job"
        );
        return Ok(outcome);
    }

    // Verified before anything exists on the server: a tampered object leaves nothing.
    let verified = fetch_verified(ctx, &backup).await?;
    let owner = LoadingRole::prepare(ctx, &admin, &tenant, into).await?;
    prepare_target(&admin, &owner.name, into, &unfinished).await?;
    if let Err(e) = load(ctx, &tenant, &backup, verified, &owner.env).await {
        // A half-loaded database must not pass for a restore.
        let _ = sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(into)
        ))
        .execute(&admin)
        .await;
        return Err(e);
    }
    owner.finish(&admin).await?;
    sqlx::raw_sql(&format!(
        "COMMENT ON DATABASE {} IS {}",
        quote_ident(into),
        quote_literal(&finished)
    ))
    .execute(&admin)
    .await
    .doing("marking the restored database complete")?;
    ctx.servers.flush_wal(tenant.server_id).await?;
    info!(database = into, backup = %backup.id, "restored");
    Ok(outcome)
}

/// A Neon tenant's backup into a new branch of its project (see the module docs).
async fn restore_into_branch(
    ctx: &JobContext,
    claimed: &Claimed<RestoreSpec>,
    tenant: &TenantRecord,
    backup: &BackupRecord,
    name: &str,
) -> Result<Outcome, JobError> {
    use crate::neon::tenants::{delete_branch, ensure_branch, BranchPurpose};
    let purpose = BranchPurpose::Restore { job: claimed.job.id };
    // Verified before anything is made: a tampered object leaves nothing behind.
    let verified = fetch_verified(ctx, backup).await?;
    let (row, _) = ensure_branch(&ctx.catalog, &ctx.servers, tenant, name, purpose).await?;
    let branch_id = row
        .neon_branch_id
        .clone()
        .ok_or_else(|| anyhow!("branch {name} has no Neon id recorded"))?;
    let outcome = Outcome::new(
        "restored",
        serde_json::json!({ "branch": name, "neon_branch_id": branch_id, "backup_id": backup.id, "key": backup.key, "bytes": backup.bytes }),
    );
    if row.ready {
        info!(
            branch = name,
            "already restored by an earlier attempt of this job"
        );
        return Ok(outcome);
    }
    let project = tenant
        .neon_project_id
        .clone()
        .ok_or_else(|| anyhow!("tenant {} has no Neon project", tenant.slug))?;
    let (client, _) = ctx.servers.neon(tenant.server_id).await?;
    let pending = client
        .recreate_database(&project, &branch_id, &tenant.database_name, &tenant.role_name)
        .await?;
    client.wait_operations(&project, &pending).await?;
    let uri = client
        .connection_uri(
            &project,
            Some(&branch_id),
            &tenant.database_name,
            &tenant.role_name,
            false,
        )
        .await?;
    let env = ctx.servers.uri_libpq_env(&uri)?;
    if let Err(e) = load(ctx, tenant, backup, verified, &env).await {
        if matches!(e, JobError::Permanent(_)) {
            // A half-loaded branch must not pass for a restore.
            let _ = delete_branch(&ctx.catalog, &ctx.servers, tenant, name).await;
        }
        return Err(e);
    }
    ctx.catalog.set_branch_ready(row.id, &uri).await?;
    info!(branch = name, backup = %backup.id, "restored into a Neon branch");
    Ok(outcome)
}

/// A Neon tenant's backup into a new project of its own (`--into project:NAME`), loaded as
/// the tenant's role into the tenant's database name there.
async fn restore_into_project(
    ctx: &JobContext,
    claimed: &Claimed<RestoreSpec>,
    tenant: &TenantRecord,
    backup: &BackupRecord,
    name: &str,
) -> Result<Outcome, JobError> {
    use crate::neon::tenants::{delete_branch, ensure_restore_project};
    let verified = fetch_verified(ctx, backup).await?;
    let (row, uri) = ensure_restore_project(&ctx.catalog, &ctx.servers, tenant, name, claimed.job.id).await?;
    let outcome = Outcome::new(
        "restored",
        serde_json::json!({ "project": name, "neon_project_id": row.neon_project_id, "backup_id": backup.id, "key": backup.key, "bytes": backup.bytes }),
    );
    if row.ready {
        info!(
            project = name,
            "already restored by an earlier attempt of this job"
        );
        return Ok(outcome);
    }
    // An earlier attempt may have loaded part of it: start from an empty database.
    let (client, _) = ctx.servers.neon(tenant.server_id).await?;
    let project = row
        .neon_project_id
        .clone()
        .ok_or_else(|| anyhow!("restore target {name} has no Neon project recorded"))?;
    if has_tables(&uri).await? {
        let branch = client
            .branches(&project)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("project {name} has no branch"))?;
        let pending = client
            .recreate_database(&project, &branch.id, &tenant.database_name, &tenant.role_name)
            .await?;
        client.wait_operations(&project, &pending).await?;
    }
    let uri = client
        .connection_uri(&project, None, &tenant.database_name, &tenant.role_name, false)
        .await?;
    let env = ctx.servers.uri_libpq_env(&uri)?;
    if let Err(e) = load(ctx, tenant, backup, verified, &env).await {
        if matches!(e, JobError::Permanent(_)) {
            let _ = delete_branch(&ctx.catalog, &ctx.servers, tenant, &row.name).await;
        }
        return Err(e);
    }
    ctx.catalog.set_branch_ready(row.id, &uri).await?;
    info!(project = name, backup = %backup.id, "restored into a new Neon project");
    Ok(outcome)
}

/// Whether the database behind `uri` has any table (an earlier attempt's partial load).
async fn has_tables(uri: &secrecy::SecretString) -> Result<bool, JobError> {
    use sqlx::Connection;
    let options = crate::postgres::connect_options(uri.expose_secret())
        .context("the restore target's URI is not a Postgres URL")?;
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .context("connecting to the restore target")?;
    let any: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema'))",
    )
    .fetch_one(&mut conn)
    .await
    .context("looking at the restore target")?;
    let _ = conn.close().await;
    Ok(any)
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
            if backup.status != BackupStatus::Succeeded {
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
            .find(|b| b.status == BackupStatus::Succeeded && b.branch.is_none())
            .ok_or_else(|| {
                JobError::Permanent(anyhow!(
                    "tenant {} has no successful backup to restore",
                    tenant.slug
                ))
            }),
    }
}

/// Copies the object into a temp file that is unlinked at once (nothing is left behind,
/// whatever happens to this process), reading no more than the recorded size, and checks
/// size and SHA-256 against the catalog. Returns the file, rewound.
pub(super) async fn fetch_verified(
    ctx: &JobContext,
    backup: &BackupRecord,
) -> Result<tokio::fs::File, JobError> {
    let expected_sha = backup
        .sha256
        .clone()
        .ok_or_else(|| JobError::Permanent(anyhow!("backup {} has no recorded checksum", backup.id)))?;
    let expected_bytes = backup
        .bytes
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(|| JobError::Permanent(anyhow!("backup {} has no recorded size", backup.id)))?;
    let mut spool = unlinked_temp_file().await?;
    let object = ctx.store.get(&backup.key).await?;
    // One byte more than recorded is enough to know the object is not what was stored.
    let mut capped = object.take(expected_bytes + 1);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = capped
            .read(&mut buffer)
            .await
            .with_context(|| format!("reading {}", backup.key))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buffer[..n]);
        spool
            .write_all(&buffer[..n])
            .await
            .context("writing the restore's temp copy")?;
    }
    if total != expected_bytes {
        let size = if total > expected_bytes {
            format!("more than {expected_bytes} bytes")
        } else {
            format!("{total} bytes")
        };
        return Err(JobError::Permanent(anyhow!(
            "backup {} failed its checksum: the object is {size}, the catalog recorded {expected_bytes}; it was altered or truncated and was not restored",
            backup.key
        )));
    }
    let actual = crate::hex::encode(&hasher.finalize());
    if actual != expected_sha {
        return Err(JobError::Permanent(anyhow!(
            "backup {} failed its checksum: SHA-256 {actual}, the catalog recorded {expected_sha}; it was altered and was not restored",
            backup.key
        )));
    }
    spool.flush().await.context("writing the restore's temp copy")?;
    spool
        .seek(std::io::SeekFrom::Start(0))
        .await
        .context("rewinding the restore's temp copy")?;
    Ok(spool)
}

async fn unlinked_temp_file() -> Result<tokio::fs::File, JobError> {
    let path = std::env::temp_dir().join(format!("pgfleet-restore-{}", Uuid::new_v4().simple()));
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .await
        .with_context(|| format!("creating a temp file in {}", std::env::temp_dir().display()))?;
    tokio::fs::remove_file(&path)
        .await
        .with_context(|| format!("unlinking {}", path.display()))?;
    Ok(file)
}

/// The non-superuser role `psql` loads as, which owns the target database.
struct LoadingRole {
    name: String,
    env: LibpqEnv,
    /// Set NOLOGIN once loaded (a deleted tenant's role, re-created for the restore).
    disable_after: bool,
}

impl LoadingRole {
    async fn prepare(
        ctx: &JobContext,
        admin: &PgPool,
        tenant: &TenantRecord,
        into: &str,
    ) -> Result<Self, JobError> {
        if tenant.status != TenantStatus::Deleted {
            return Ok(Self {
                name: tenant.role_name.clone(),
                env: ctx.servers.tenant_libpq_env(tenant, into).await?,
                disable_after: false,
            });
        }
        // The tenant's role is gone: re-create it (never a superuser, whatever it was) with a
        // password only this job knows, for as long as the load takes.
        let password = generate_password();
        let verifier = scram_sha256_verifier(&password);
        let role = quote_ident(&tenant.role_name);
        let attributes = format!(
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 2 PASSWORD {}",
            quote_literal(verifier.expose_secret())
        );
        let comment = quote_literal(&format!(
            "pgfleet: owner of restores of deleted tenant {}",
            tenant.slug
        ));
        let created = sqlx::raw_sql(&format!(
            "CREATE ROLE {role} WITH {attributes}; COMMENT ON ROLE {role} IS {comment}"
        ))
        .execute(admin)
        .await;
        match created {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42710") => {
                sqlx::raw_sql(&format!("ALTER ROLE {role} WITH {attributes}"))
                    .execute(admin)
                    .await
                    .doing(format!("preparing role {} for the restore", tenant.role_name))?;
            }
            Err(e) => {
                return Err(server_sql_error(
                    e,
                    format!("creating role {} for the restore", tenant.role_name),
                ))
            }
        }
        Ok(Self {
            name: tenant.role_name.clone(),
            env: ctx
                .servers
                .role_libpq_env(tenant.server_id, &tenant.role_name, &password, into)
                .await?,
            disable_after: true,
        })
    }

    async fn finish(&self, admin: &PgPool) -> Result<(), JobError> {
        if self.disable_after {
            sqlx::raw_sql(&format!(
                "ALTER ROLE {} WITH NOLOGIN PASSWORD NULL",
                quote_ident(&self.name)
            ))
            .execute(admin)
            .await
            .doing(format!("disabling role {} after the restore", self.name))?;
        }
        Ok(())
    }
}

async fn target_comment(admin: &PgPool, into: &str) -> Result<Option<String>, JobError> {
    let existing: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(into)
    .fetch_optional(admin)
    .await
    .doing("looking for the target database")?;
    Ok(existing.flatten())
}

/// Creates the target database owned by `owner`, refusing one that exists unless it is this
/// job's own unfinished attempt (recognised by its comment), which is dropped and made again.
async fn prepare_target(admin: &PgPool, owner: &str, into: &str, marker: &str) -> Result<(), JobError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(into)
        .fetch_one(admin)
        .await
        .doing("looking for the target database")?;
    let target = quote_ident(into);
    if exists {
        if target_comment(admin, into).await?.as_deref() != Some(marker) {
            return Err(JobError::Permanent(anyhow!(
                "database {into} already exists; restore never overwrites a database — choose a new name with --into, or drop it first"
            )));
        }
        sqlx::raw_sql(&format!("DROP DATABASE {target} WITH (FORCE)"))
            .execute(admin)
            .await
            .doing("dropping this job's unfinished restore target")?;
    }
    sqlx::raw_sql(&format!("CREATE DATABASE {target} OWNER {}", quote_ident(owner)))
        .execute(admin)
        .await
        .doing(format!("creating database {into}"))?;
    sqlx::raw_sql(&format!(
        "REVOKE ALL ON DATABASE {target} FROM PUBLIC; COMMENT ON DATABASE {target} IS {}",
        quote_literal(marker)
    ))
    .execute(admin)
    .await
    .doing("preparing the target database")?;
    Ok(())
}

/// Streams the verified copy → gunzip → `psql -v ON_ERROR_STOP=1` as the loading role.
pub(super) async fn load(
    ctx: &JobContext,
    tenant: &TenantRecord,
    backup: &BackupRecord,
    verified: tokio::fs::File,
    env: &LibpqEnv,
) -> Result<(), JobError> {
    let major = ctx.servers.tenant_server_major(tenant).await?;
    let psql = pg_tools::find("psql", major).await.map_err(JobError::Permanent)?;
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

    let mut decoder = GzipDecoder::new(BufReader::new(verified));
    decoder.multiple_members(true);
    let copied = tokio::io::copy(&mut decoder, &mut stdin).await;
    drop(stdin);
    let status = child.wait().await.context("waiting for psql")?;
    let stderr = stderr_task.await.unwrap_or_default();
    if !status.success() {
        return Err(JobError::Permanent(anyhow!(
            "psql failed ({status}) loading {}: {}",
            backup.key,
            stderr.trim()
        )));
    }
    copied.with_context(|| format!("streaming {} into psql", backup.key))?;
    Ok(())
}
