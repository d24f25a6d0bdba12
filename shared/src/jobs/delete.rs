//! `delete`: a final backup, then the tenant's database and role are dropped and the tenant
//! marked `deleted`. Its backups stay until retention prunes them. Safe to replay: a final
//! backup already taken by this job is not taken again, and drops are `IF EXISTS`.

use super::{backup, Claimed, JobContext, Outcome};
use crate::error::{JobError, ServerSql};
use crate::message::NoFields;
use crate::postgres::quote_ident;
use crate::status::{BackupStatus, TenantStatus};
use anyhow::anyhow;
use tracing::info;

/// `delete`: a final backup, then the tenant's database and role dropped.
pub async fn run(ctx: &JobContext, claimed: &Claimed<NoFields>) -> Result<Outcome, JobError> {
    let (job, slug) = (&claimed.job, &claimed.tenant);
    let tenant = ctx
        .catalog
        .tenant(slug)
        .await?
        .ok_or_else(|| JobError::Permanent(anyhow!("no tenant {slug}")))?;
    if tenant.status == TenantStatus::Deleted {
        return Ok(Outcome::new("already deleted", serde_json::json!({})));
    }
    let admin = ctx.servers.admin_pool(tenant.server_id).await?;
    ctx.catalog
        .set_tenant_status(tenant.id, TenantStatus::Deleting)
        .await?;

    let database_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&tenant.database_name)
            .fetch_one(&admin)
            .await
            .doing("looking for the tenant database")?;
    let already_backed_up = ctx
        .catalog
        .backups(tenant.id)
        .await?
        .into_iter()
        .find(|b| b.job_id == Some(job.id) && b.status == BackupStatus::Succeeded);
    let final_backup = match (already_backed_up, database_exists) {
        (Some(b), _) => Some(serde_json::json!({ "backup_id": b.id, "key": b.key, "bytes": b.bytes })),
        (None, true) => Some(backup::backup_tenant(ctx, job, &tenant).await?.to_json()),
        (None, false) => None,
    };

    sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(&tenant.database_name)
    ))
    .execute(&admin)
    .await
    .doing(format!("dropping database {}", tenant.database_name))?;
    // Databases the role still owns (e.g. restores made with `pgfleet restore`) would make
    // DROP ROLE fail; say which, rather than retrying what can't succeed.
    let still_owned: Vec<String> = sqlx::query_scalar(
        "SELECT d.datname::text FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = $1 ORDER BY 1",
    )
    .bind(&tenant.role_name)
    .fetch_all(&admin)
    .await
    .doing("looking for databases the tenant role owns")?;
    if !still_owned.is_empty() {
        return Err(JobError::Permanent(anyhow!(
            "the tenant's database was dropped, but its role {} still owns {}; drop those (or change their owner) and run `pgfleet tenant delete {slug}` again",
            tenant.role_name,
            still_owned.join(", ")
        )));
    }
    sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {}", quote_ident(&tenant.role_name)))
        .execute(&admin)
        .await
        .doing(format!("dropping role {}", tenant.role_name))?;
    ctx.servers.flush_wal(tenant.server_id).await?;
    ctx.catalog
        .set_tenant_status(tenant.id, TenantStatus::Deleted)
        .await?;
    info!(tenant = %slug, "tenant deleted");
    Ok(Outcome::new(
        "deleted",
        serde_json::json!({ "final_backup": final_backup, "database": tenant.database_name, "role": tenant.role_name }),
    ))
}
