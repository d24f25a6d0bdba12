//! Tenant servers in the catalog: the Postgres servers tenant databases live on. Admin URLs
//! are stored encrypted; `display_url` is the redacted form shown to users.

use super::error::{CatalogError, Result};
use super::Catalog;
use crate::secrets::{redact_url, Binding};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

/// A tenant server (its admin URL stays encrypted; `display_url` is redacted).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServerRecord {
    pub id: Uuid,
    pub name: String,
    pub region: Option<String>,
    pub display_url: String,
    pub is_default: bool,
}

impl Catalog {
    /// Registers (or updates) the server named `default` from `PGFLEET_SERVER_URL`.
    pub async fn register_default_server(&self, admin_url: &SecretString) -> Result<ServerRecord> {
        let display = redact_url(admin_url.expose_secret());
        let existing: Option<(Uuid, Vec<u8>)> =
            sqlx::query_as("SELECT id, admin_url_ciphertext FROM tenant_servers WHERE name = 'default'")
                .fetch_optional(self.pool())
                .await?;
        let key = self.key()?;
        match existing {
            Some((id, sealed)) => {
                let unchanged = key
                    .decrypt_string(&sealed, &Binding::server_admin_url(id))
                    .is_ok_and(|stored| stored.expose_secret() == admin_url.expose_secret());
                if !unchanged {
                    sqlx::query(
                        "UPDATE tenant_servers SET display_url = $2, admin_url_ciphertext = $3, updated_at = now()
                          WHERE id = $1",
                    )
                    .bind(id)
                    .bind(&display)
                    .bind(key.encrypt_str(admin_url, &Binding::server_admin_url(id)))
                    .execute(self.pool())
                    .await?;
                }
            }
            None => {
                let id = Uuid::now_v7();
                sqlx::query(
                    "INSERT INTO tenant_servers (id, name, display_url, admin_url_ciphertext, is_default)
                     VALUES ($1, 'default', $2, $3, true)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(id)
                .bind(&display)
                .bind(key.encrypt_str(admin_url, &Binding::server_admin_url(id)))
                .execute(self.pool())
                .await?;
            }
        }
        self.server_by_name("default").await
    }

    /// A server by name, or `NotFound`.
    pub async fn server_by_name(&self, name: &str) -> Result<ServerRecord> {
        sqlx::query_as(
            "SELECT id, name::text, region, display_url, is_default FROM tenant_servers WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| CatalogError::NotFound(format!("tenant server {name:?} is not registered")))
    }

    /// The server for a new tenant: one registered for `region` if there is one, else the
    /// default; `None` when no server is registered at all.
    pub async fn server_for_region(&self, region: Option<&str>) -> Result<Option<ServerRecord>> {
        let found: Option<ServerRecord> = sqlx::query_as(
            "SELECT id, name::text, region, display_url, is_default FROM tenant_servers
             WHERE ($1::text IS NOT NULL AND region = $1) OR is_default
             ORDER BY (region = $1) DESC NULLS LAST LIMIT 1",
        )
        .bind(region)
        .fetch_optional(self.pool())
        .await?;
        Ok(found)
    }

    /// The catalog database's name and its cluster's system identifier (`None` when the
    /// catalog's role may not read it): to tell whether a tenant server is the same cluster.
    pub async fn database_identity(&self) -> Result<(String, Option<String>)> {
        let name: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(self.pool())
            .await?;
        let identifier: Option<String> =
            sqlx::query_scalar("SELECT system_identifier::text FROM pg_control_system()")
                .fetch_one(self.pool())
                .await
                .ok();
        Ok((name, identifier))
    }

    /// Databases of the server's tenants that are not deleted.
    pub async fn server_tenant_databases(&self, server_id: Uuid) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT database_name FROM tenants WHERE server_id = $1 AND status <> 'deleted'",
        )
        .bind(server_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// (tenants, sum of their connection limits, tenants without a limit) of the server's
    /// provisioning and active tenants.
    pub async fn server_connection_limits(&self, server_id: Uuid) -> Result<(i64, Option<i64>, i64)> {
        Ok(sqlx::query_as(
            "SELECT count(*), sum(connection_limit) FILTER (WHERE connection_limit >= 0),
                    count(*) FILTER (WHERE connection_limit < 0)
               FROM tenants WHERE server_id = $1 AND status IN ('provisioning', 'active')",
        )
        .bind(server_id)
        .fetch_one(self.pool())
        .await?)
    }

    /// The decrypted admin URL of a server (for connecting to it; never for printing).
    pub async fn server_admin_url(&self, server_id: Uuid) -> Result<SecretString> {
        let sealed: Vec<u8> =
            sqlx::query_scalar("SELECT admin_url_ciphertext FROM tenant_servers WHERE id = $1")
                .bind(server_id)
                .fetch_optional(self.pool())
                .await?
                .ok_or_else(|| {
                    CatalogError::NotFound(format!("tenant server {server_id} is not in the catalog"))
                })?;
        Ok(self
            .key()?
            .decrypt_string(&sealed, &Binding::server_admin_url(server_id))?)
    }
}
