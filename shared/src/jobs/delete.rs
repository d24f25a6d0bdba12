//! `delete`: a final backup, then the tenant's database and role are dropped and the tenant
//! marked `deleted`. Its backups stay until its retention prunes them.
//!
//! Nothing written after the final backup may be lost, and a live database must never drop
//! out of pgfleet's care: the tenant is `deleting` while the job runs, its role gets a
//! password only this attempt knows and its sessions are ended before the dump (so no
//! write can follow it), and if the attempt fails before the database is dropped, the
//! tenant is handed back — its password restored, `active` again — with the job's error.
//! A database missing at delete time is an error, never "deleted with no backup". Safe to
//! replay: a final backup already taken by this job is not taken again.
//!
//! A Neon tenant: the final backup over its direct URI, then `DELETE /projects/{id}` (and
//! of the projects its restores made: they hold its data too). Its
//! role can't be locked out through the API without losing its password, so writes after
//! the dump are possible; they are not lost for good: Neon keeps a deleted project
//! recoverable for 7 days, and the catalog keeps the project id for that.

use super::{backup, provision, Claimed, JobContext, Outcome};
use crate::catalog::{JobRecord, TenantRecord};
use crate::error::{CancelReason, JobError, ServerSql};
use crate::message::NoFields;
use crate::postgres::{quote_ident, quote_literal};
use crate::secrets::{generate_password, scram_sha256_verifier};
use crate::status::{BackupStatus, ServerKind, TenantStatus};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tracing::{info, warn};

/// `delete`: a final backup, then the tenant's database and role dropped.
pub async fn run(ctx: &JobContext, claimed: &Claimed<NoFields>) -> Result<Outcome, JobError> {
    let slug = &claimed.tenant;
    let tenant = ctx
        .catalog
        .tenant(slug)
        .await?
        .ok_or_else(|| JobError::permanent(format!("no tenant {slug}")))?;
    if tenant.status == TenantStatus::Deleted {
        return Ok(Outcome::new("already deleted", serde_json::json!({})));
    }
    if tenant.status == TenantStatus::Moving {
        return Err(JobError::permanent(format!(
            "tenant {slug} is being moved to another server; delete it once the move has ended (`pgfleet jobs list --tenant {slug}`)"
        )));
    }
    if tenant.server_kind == ServerKind::Neon {
        return delete_neon(ctx, claimed, &tenant).await;
    }
    let admin = ctx.servers.admin_pool(tenant.server_id).await?;
    let database_exists = database_exists(&admin, &tenant.database_name).await?;
    let final_backup = ctx.catalog.backups(tenant.id).await?.into_iter().find(|b| {
        b.job_id == Some(claimed.job.id) && b.status == BackupStatus::Succeeded && b.branch.is_none()
    });
    if !database_exists && final_backup.is_none() {
        return Err(JobError::permanent(format!(
            "tenant {slug}'s database {} does not exist on server {}; pgfleet does not mark a tenant deleted without a final backup. \
             Restore the database from a backup (`pgfleet restore {slug} --into …`, then rename it) and run the delete again",
            tenant.database_name, tenant.server
        )));
    }
    if !ctx
        .catalog
        .set_tenant_status(tenant.id, TenantStatus::Deleting, Some(claimed.job.fence()))
        .await?
    {
        return Err(JobError::Cancelled(CancelReason::LeaseLost));
    }
    let result = delete(ctx, claimed, &tenant, &admin, final_backup.map(|b| b.id)).await;
    if let Err(e) = &result {
        let still_there = database_exists
            && self::database_exists(&admin, &tenant.database_name)
                .await
                .unwrap_or(false);
        if still_there && !matches!(e, JobError::Cancelled(_)) {
            hand_back(ctx, claimed, &tenant, &admin).await;
        }
    }
    result
}

/// This job's final backup, if an earlier attempt took it.
async fn own_final_backup(
    ctx: &JobContext,
    claimed: &Claimed<NoFields>,
    tenant: &TenantRecord,
) -> Result<Option<uuid::Uuid>, JobError> {
    Ok(ctx
        .catalog
        .backups(tenant.id)
        .await?
        .into_iter()
        .find(|b| {
            b.job_id == Some(claimed.job.id) && b.status == BackupStatus::Succeeded && b.branch.is_none()
        })
        .map(|b| b.id))
}

/// A Neon tenant: final backup, then its project deleted (see the module docs).
async fn delete_neon(
    ctx: &JobContext,
    claimed: &Claimed<NoFields>,
    tenant: &TenantRecord,
) -> Result<Outcome, JobError> {
    let slug = &claimed.tenant;
    let final_backup = own_final_backup(ctx, claimed, tenant).await?;
    if tenant.neon_project_id.is_none() && final_backup.is_none() {
        return Err(JobError::permanent(format!(
            "tenant {slug} has no Neon project recorded (its provision never finished); pgfleet does not mark a tenant deleted without a final backup. \
             Provision it (`pgfleet tenant create {slug} --wait`) and run the delete again"
        )));
    }
    if !ctx
        .catalog
        .set_tenant_status(tenant.id, TenantStatus::Deleting, Some(claimed.job.fence()))
        .await?
    {
        return Err(JobError::Cancelled(CancelReason::LeaseLost));
    }
    let result = async {
        let final_backup = match final_backup {
            Some(id) => serde_json::json!({ "backup_id": id }),
            None => backup::backup_tenant(ctx, &claimed.job, tenant, None)
                .await?
                .to_json(),
        };
        ctx.faults.check("delete.after_final_backup", slug)?;
        let mut deleted = crate::neon::tenants::delete_project(&ctx.servers, tenant).await?;
        // Projects restores made hold the tenant's data too; its branches went with its project.
        for target in ctx.catalog.branches(tenant.id).await? {
            if let Some(project) = target.neon_project_id.clone() {
                crate::neon::tenants::delete_branch(&ctx.catalog, &ctx.servers, tenant, &target.name).await?;
                deleted.push(project);
            }
        }
        if !ctx
            .catalog
            .set_tenant_status(tenant.id, TenantStatus::Deleted, Some(claimed.job.fence()))
            .await?
        {
            return Err(JobError::Cancelled(CancelReason::LeaseLost));
        }
        info!(tenant = %tenant.slug, "tenant deleted (Neon project deleted)");
        Ok(Outcome::new(
            "deleted",
            serde_json::json!({ "final_backup": final_backup, "neon_projects_deleted": deleted }),
        ))
    }
    .await;
    if let Err(e) = &result {
        if !matches!(e, JobError::Cancelled(_)) && neon_project_still_there(ctx, tenant).await {
            if let Ok(true) = ctx
                .catalog
                .set_tenant_status(tenant.id, TenantStatus::Active, Some(claimed.job.fence()))
                .await
            {
                warn!(tenant = %tenant.slug, "delete failed; the tenant is active again");
            }
        }
    }
    result
}

/// Whether the Neon tenant's project still exists (when unsure: yes, so the tenant is
/// handed back rather than lost).
async fn neon_project_still_there(ctx: &JobContext, tenant: &TenantRecord) -> bool {
    let Some(project) = &tenant.neon_project_id else {
        return true;
    };
    match ctx.servers.neon(tenant.server_id).await {
        Ok((client, _)) => client.project_exists(project).await.unwrap_or(true),
        Err(_) => true,
    }
}

async fn delete(
    ctx: &JobContext,
    claimed: &Claimed<NoFields>,
    tenant: &TenantRecord,
    admin: &PgPool,
    final_backup: Option<uuid::Uuid>,
) -> Result<Outcome, JobError> {
    // (No final backup and no database was refused before anything changed.)
    let final_backup = match final_backup {
        Some(id) => serde_json::json!({ "backup_id": id }),
        None => {
            let password = lock_out(admin, tenant).await?;
            backup::backup_tenant(ctx, &claimed.job, tenant, Some(&password))
                .await?
                .to_json()
        }
    };
    sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(&tenant.database_name)
    ))
    .execute(admin)
    .await
    .doing(format!("dropping database {}", tenant.database_name))?;
    // Its dev copies hold its data too.
    for branch in ctx.catalog.branches(tenant.id).await? {
        if branch.database_name.is_some() {
            super::dev_copy::delete(&ctx.catalog, &ctx.servers, &branch).await?;
        }
    }
    // Databases the role still owns (e.g. restores made with `pgfleet restore`) would make
    // DROP ROLE fail; say which, rather than retrying what can't succeed.
    let still_owned: Vec<String> = sqlx::query_scalar(
        "SELECT d.datname::text FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = $1 ORDER BY 1",
    )
    .bind(&tenant.role_name)
    .fetch_all(admin)
    .await
    .doing("looking for databases the tenant role owns")?;
    if !still_owned.is_empty() {
        return Err(JobError::permanent(format!(
            "the tenant's database was dropped, but its role {} still owns {}; drop those (or change their owner) and run `pgfleet tenant delete {}` again",
            tenant.role_name,
            still_owned.join(", "),
            tenant.slug
        )));
    }
    sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {}", quote_ident(&tenant.role_name)))
        .execute(admin)
        .await
        .doing(format!("dropping role {}", tenant.role_name))?;
    ctx.servers.flush_wal(tenant.server_id).await?;
    if !ctx
        .catalog
        .set_tenant_status(tenant.id, TenantStatus::Deleted, Some(claimed.job.fence()))
        .await?
    {
        return Err(JobError::Cancelled(CancelReason::LeaseLost));
    }
    info!(tenant = %tenant.slug, "tenant deleted");
    Ok(Outcome::new(
        "deleted",
        serde_json::json!({ "final_backup": final_backup, "database": tenant.database_name, "role": tenant.role_name }),
    ))
}

/// Gives the tenant's role a password only this attempt knows and ends every session on its
/// database, so nothing can be written after the final dump. Returns the password. (LOGIN:
/// a suspended tenant's final dump logs in too; a hand-back makes it NOLOGIN again.)
async fn lock_out(admin: &PgPool, tenant: &TenantRecord) -> Result<secrecy::SecretString, JobError> {
    let password = generate_password();
    let verifier = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || scram_sha256_verifier(&password))
            .await
            .map_err(|e| JobError::Other(e.into()))?
    };
    sqlx::raw_sql(&format!(
        "ALTER ROLE {} WITH LOGIN PASSWORD {}",
        quote_ident(&tenant.role_name),
        quote_literal(verifier.expose_secret())
    ))
    .execute(admin)
    .await
    .doing(format!(
        "locking role {} out for the final backup",
        tenant.role_name
    ))?;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&tenant.database_name)
        .execute(admin)
        .await
        .doing("ending the tenant's sessions")?;
    Ok(password)
}

/// The delete failed with the database still there: the tenant goes back to `active` with
/// its own password, so it keeps its backups, schedules and users until a delete succeeds.
async fn hand_back(ctx: &JobContext, claimed: &Claimed<NoFields>, tenant: &TenantRecord, admin: &PgPool) {
    if let Err(e) = provision::ensure_role(ctx, admin, tenant).await {
        warn!(error = %e, "could not restore the tenant role's password after a failed delete; a provision of the tenant restores it");
    }
    match ctx
        .catalog
        .set_tenant_status(tenant.id, TenantStatus::Active, Some(claimed.job.fence()))
        .await
    {
        Ok(true) => warn!(tenant = %tenant.slug, "delete failed; the tenant is active again"),
        Ok(false) => {}
        Err(e) => {
            warn!(error = %format!("{e:#}"), "could not mark the tenant active again after a failed delete")
        }
    }
}

/// A delete job gave up without its handler running to the end (every attempt's worker
/// was killed, so the failure path never ran): a tenant it left `deleting` with its database
/// still there is handed back — its own password restored, `active` again. Called where the
/// job turns `dead` at a claim.
pub async fn give_up(ctx: &JobContext, job: &JobRecord) -> anyhow::Result<()> {
    let slug = crate::slug::TenantSlug::parse(&job.tenant)?;
    let Some(tenant) = ctx.catalog.tenant(&slug).await? else {
        return Ok(());
    };
    if tenant.status != TenantStatus::Deleting {
        return Ok(());
    }
    if tenant.server_kind == ServerKind::Neon {
        // The project's deletion is the last step: if it is gone, only the final mark was lost.
        let status = if neon_project_still_there(ctx, &tenant).await {
            TenantStatus::Active
        } else {
            TenantStatus::Deleted
        };
        ctx.catalog.set_tenant_status(tenant.id, status, None).await?;
        warn!(tenant = %tenant.slug, job_id = %job.id, %status, "the delete gave up");
        return Ok(());
    }
    let admin = ctx.servers.admin_pool(tenant.server_id).await?;
    if !database_exists(&admin, &tenant.database_name).await? {
        return Ok(()); // dropped: only the final step (marking it deleted) was lost
    }
    provision::ensure_role(ctx, &admin, &tenant).await?;
    if ctx
        .catalog
        .set_tenant_status(tenant.id, TenantStatus::Active, None)
        .await?
    {
        warn!(tenant = %tenant.slug, job_id = %job.id, "the delete gave up; the tenant is active again");
    }
    Ok(())
}

async fn database_exists(admin: &PgPool, database: &str) -> Result<bool, JobError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(admin)
        .await
        .doing("looking for the tenant database")
}
