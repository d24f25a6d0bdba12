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
    /// The default tenant server. An empty catalog is seeded with `url` (or, if none is
    /// given, `DEFAULT_SERVER_URL`); afterwards a given `url` must be the one registered:
    /// a process started with another `PGFLEET_SERVER_URL` is refused rather than silently
    /// pointing existing tenants at another cluster. Moving a server is an explicit command
    /// (`set_server_url`).
    pub async fn ensure_default_server(&self, url: Option<&SecretString>) -> Result<ServerRecord> {
        let existing: Option<(Uuid, String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, display_url, admin_url_ciphertext FROM tenant_servers WHERE is_default",
        )
        .fetch_optional(self.pool())
        .await?;
        match (existing, url) {
            (Some((id, shown, sealed)), Some(url)) => {
                let stored = self
                    .key()?
                    .decrypt_string(&sealed, &Binding::server_admin_url(id))?;
                if stored.expose_secret() != url.expose_secret() {
                    return Err(CatalogError::Conflict(format!(
                        "PGFLEET_SERVER_URL ({}) is not the URL of the default tenant server registered in the catalog ({shown}); \
                         pgfleet does not move existing tenants to another server by a start-up setting. \
                         If the server moved, run `pgfleet server set default --url <URL>`; otherwise fix or unset PGFLEET_SERVER_URL",
                        redact_url(url.expose_secret())
                    )));
                }
            }
            (Some(_), None) => {}
            (None, url) => {
                let url = url
                    .cloned()
                    .unwrap_or_else(|| crate::config::DEFAULT_SERVER_URL.to_owned().into());
                let id = Uuid::now_v7();
                sqlx::query(
                    "INSERT INTO tenant_servers (id, name, display_url, admin_url_ciphertext, is_default)
                     VALUES ($1, 'default', $2, $3, true)
                     ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(redact_url(url.expose_secret()))
                .bind(self.key()?.encrypt_str(&url, &Binding::server_admin_url(id)))
                .execute(self.pool())
                .await?;
            }
        }
        self.default_server().await
    }

    /// Points the server `name` at a new admin URL (the server moved, or its credentials
    /// changed): an explicit operator decision, never a start-up side effect.
    pub async fn set_server_url(&self, name: &str, url: &SecretString) -> Result<ServerRecord> {
        let server = self.server_by_name(name).await?;
        sqlx::query(
            "UPDATE tenant_servers SET display_url = $2, admin_url_ciphertext = $3, updated_at = now() WHERE id = $1",
        )
        .bind(server.id)
        .bind(redact_url(url.expose_secret()))
        .bind(self.key()?.encrypt_str(url, &Binding::server_admin_url(server.id)))
        .execute(self.pool())
        .await?;
        self.server_by_name(name).await
    }

    async fn default_server(&self) -> Result<ServerRecord> {
        sqlx::query_as(
            "SELECT id, name::text, region, display_url, is_default FROM tenant_servers WHERE is_default",
        )
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| CatalogError::NotFound("no default tenant server is registered".into()))
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
