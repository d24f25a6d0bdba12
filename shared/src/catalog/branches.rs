//! Branches of Neon tenants' projects that pgfleet made: dev/test branches (`pgfleet
//! tenant branch`) and restore targets. The row is written before the branch exists, so a
//! retried create adopts its own branch; the URI is sealed like every credential.

use super::error::{CatalogError, Result};
use super::Catalog;
use crate::neon::tenants::BranchPurpose;
use crate::secrets::Binding;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BranchRecord {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    /// `dev` or `restore`.
    pub purpose: String,
    pub schema_only: bool,
    pub job_id: Option<Uuid>,
    pub neon_branch_id: Option<String>,
    /// A restore into a new project (`project:NAME`): that project.
    pub neon_project_id: Option<String>,
    /// Dev branches: made; restore targets: loaded.
    pub ready: bool,
    /// Self-hosted tenants' branches: the database (and role, of the same name) and the
    /// backup it was loaded from.
    pub database_name: Option<String>,
    pub backup_id: Option<Uuid>,
    pub server_id: Option<Uuid>,
    /// Backed up with its tenant (asked for with `--backups`); off by default.
    pub backups_enabled: bool,
    pub created_at: DateTime<Utc>,
}

const SELECT_BRANCH: &str =
    "SELECT id, tenant_id, name, purpose, schema_only, job_id, neon_branch_id, neon_project_id,
        uri_ciphertext IS NOT NULL AS ready, created_at, database_name, backup_id, server_id, backups_enabled FROM tenant_branches";

impl Catalog {
    /// The branch's row, made if missing. A row of that name made for something else (a
    /// dev branch of the other kind, another restore job) is refused: names are unique
    /// per tenant.
    pub async fn ensure_branch_row(
        &self,
        tenant_id: Uuid,
        name: &str,
        purpose: BranchPurpose,
    ) -> Result<BranchRecord> {
        let (kind, schema_only, job) = match purpose {
            BranchPurpose::Dev { schema_only } => ("dev", schema_only, None),
            BranchPurpose::Restore { job } => ("restore", false, Some(job)),
        };
        sqlx::query(
            "INSERT INTO tenant_branches (id, tenant_id, name, purpose, schema_only, job_id)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(name)
        .bind(kind)
        .bind(schema_only)
        .bind(job)
        .execute(self.pool())
        .await?;
        let row = self
            .branch(tenant_id, name)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("branch {name} vanished right after insert")))?;
        if row.purpose != kind || row.schema_only != schema_only || row.job_id != job {
            return Err(CatalogError::Conflict(format!(
                "the tenant already has a branch named {name} ({}{}); choose another name, or delete it with `pgfleet tenant branch-delete`",
                row.purpose,
                if row.schema_only { ", schema only" } else { "" }
            )));
        }
        Ok(row)
    }

    pub async fn branch(&self, tenant_id: Uuid, name: &str) -> Result<Option<BranchRecord>> {
        Ok(
            sqlx::query_as(&format!("{SELECT_BRANCH} WHERE tenant_id = $1 AND name = $2"))
                .bind(tenant_id)
                .bind(name)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// The tenant's branches, oldest first.
    pub async fn branches(&self, tenant_id: Uuid) -> Result<Vec<BranchRecord>> {
        Ok(sqlx::query_as(&format!(
            "{SELECT_BRANCH} WHERE tenant_id = $1 ORDER BY created_at, name"
        ))
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Where a self-hosted tenant's branch lives: its server, and its database and role
    /// (`object`); the backup it was made from.
    pub async fn set_branch_place(
        &self,
        id: Uuid,
        server_id: Uuid,
        object: &str,
        backup_id: Option<Uuid>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE tenant_branches SET server_id = $2, database_name = $3, role_name = $3, backup_id = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(server_id)
        .bind(object)
        .bind(backup_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Whether the branch is backed up with its tenant.
    pub async fn set_branch_backups(&self, id: Uuid, enabled: bool) -> Result<()> {
        sqlx::query("UPDATE tenant_branches SET backups_enabled = $2 WHERE id = $1")
            .bind(id)
            .bind(enabled)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn set_branch_id(&self, id: Uuid, neon_branch_id: &str) -> Result<()> {
        sqlx::query("UPDATE tenant_branches SET neon_branch_id = $2 WHERE id = $1")
            .bind(id)
            .bind(neon_branch_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn set_branch_project(&self, id: Uuid, neon_project_id: &str) -> Result<()> {
        sqlx::query("UPDATE tenant_branches SET neon_project_id = $2 WHERE id = $1")
            .bind(id)
            .bind(neon_project_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Seals the branch's URI, which marks it ready (a restore target: loaded).
    pub async fn set_branch_ready(&self, id: Uuid, uri: &SecretString) -> Result<()> {
        sqlx::query("UPDATE tenant_branches SET uri_ciphertext = $2 WHERE id = $1")
            .bind(id)
            .bind(self.key()?.encrypt_str(uri, &Binding::branch_uri(id)))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The branch's sealed URI (`None` until it is ready).
    pub async fn branch_uri(&self, id: Uuid) -> Result<Option<SecretString>> {
        let sealed: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT uri_ciphertext FROM tenant_branches WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?
                .flatten();
        sealed
            .map(|s| Ok(self.key()?.decrypt_string(&s, &Binding::branch_uri(id))?))
            .transpose()
    }

    pub async fn delete_branch_row(&self, id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM tenant_branches WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
