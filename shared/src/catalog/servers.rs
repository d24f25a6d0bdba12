//! Tenant servers in the catalog: the Postgres servers tenant databases live on, and Neon
//! accounts (one project per tenant). Admin URLs and API keys are stored encrypted;
//! `display_url` is the redacted form shown to users.

use super::error::{CatalogError, Result};
use super::Catalog;
use crate::neon::NeonSettings;
use crate::secrets::{redact_url, Binding};
use crate::status::ServerKind;
use secrecy::{ExposeSecret, SecretString};
use sqlx::types::Json;
use uuid::Uuid;

/// A tenant server (its admin URL or API key stays encrypted; `display_url` is redacted).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServerRecord {
    pub id: Uuid,
    pub name: String,
    pub kind: ServerKind,
    pub region: Option<String>,
    pub display_url: String,
    pub is_default: bool,
    /// Neon servers: the API URL, region and project settings.
    pub neon: Option<Json<NeonSettings>>,
    /// Tenants on it that are not deleted (filled by `servers` only).
    #[sqlx(default)]
    pub tenants: Option<i64>,
}

const SELECT_SERVER: &str =
    "SELECT id, name::text AS name, kind, region, display_url, is_default, neon FROM tenant_servers";

/// A server to register (`pgfleet server add`).
pub enum NewServer<'a> {
    Postgres {
        url: &'a SecretString,
    },
    Neon {
        settings: &'a NeonSettings,
        api_key: &'a SecretString,
    },
}

impl Catalog {
    /// The default tenant server. An empty catalog is seeded with a self-hosted server named
    /// `default` at `url` (or, if none is given, `DEFAULT_SERVER_URL`); afterwards a given
    /// `url` must be the one registered for `default` (which need not stay the default:
    /// `server add --default` moves that, e.g. to a Neon server):
    /// a process started with another `PGFLEET_SERVER_URL` is refused rather than silently
    /// pointing existing tenants at another cluster. Moving a server is an explicit command
    /// (`set_server_url`).
    pub async fn ensure_default_server(&self, url: Option<&SecretString>) -> Result<ServerRecord> {
        let existing: Option<(Uuid, String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, display_url, admin_url_ciphertext FROM tenant_servers
              WHERE name = 'default' AND admin_url_ciphertext IS NOT NULL",
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
                     VALUES ($1, 'default', $2, $3, NOT EXISTS (SELECT 1 FROM tenant_servers WHERE is_default))
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
        if server.kind != ServerKind::Postgres {
            return Err(CatalogError::Conflict(format!(
                "tenant server {name:?} is a Neon server: it has no admin URL"
            )));
        }
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

    /// Registers a server. `make_default` moves the default to it (new tenants without a
    /// region of their own then go there). Refused if the name is taken.
    pub async fn add_server(
        &self,
        name: &str,
        region: Option<&str>,
        server: NewServer<'_>,
        make_default: bool,
    ) -> Result<ServerRecord> {
        let id = Uuid::now_v7();
        let key = self.key()?;
        let (kind, display, admin, api_key, neon) = match server {
            NewServer::Postgres { url } => (
                ServerKind::Postgres,
                redact_url(url.expose_secret()),
                Some(key.encrypt_str(url, &Binding::server_admin_url(id))),
                None,
                None,
            ),
            NewServer::Neon { settings, api_key } => (
                ServerKind::Neon,
                format!("neon {} {}", redact_url(&settings.api_url), settings.region_id),
                None,
                Some(key.encrypt_str(api_key, &Binding::server_api_key(id))),
                Some(Json(settings.clone())),
            ),
        };
        let mut tx = self.pool().begin().await?;
        if make_default {
            sqlx::query("UPDATE tenant_servers SET is_default = false, updated_at = now() WHERE is_default")
                .execute(&mut *tx)
                .await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO tenant_servers (id, name, kind, region, display_url, admin_url_ciphertext, api_key_ciphertext, neon, is_default)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(kind)
        .bind(region)
        .bind(display)
        .bind(admin)
        .bind(api_key)
        .bind(neon)
        .bind(make_default)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(CatalogError::Conflict(format!(
                "a tenant server named {name:?} is already registered; choose another name (`pgfleet server list` shows them)"
            )));
        }
        tx.commit().await?;
        self.server_by_name(name).await
    }

    /// Every registered server with its number of tenants (not deleted), by name.
    pub async fn servers(&self) -> Result<Vec<ServerRecord>> {
        Ok(sqlx::query_as(
            "SELECT s.id, s.name::text AS name, s.kind, s.region, s.display_url, s.is_default, s.neon,
                    (SELECT count(*) FROM tenants t WHERE t.server_id = s.id AND t.status <> 'deleted') AS tenants
               FROM tenant_servers s ORDER BY s.name",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// A server by id, or `NotFound`.
    pub async fn server(&self, id: Uuid) -> Result<ServerRecord> {
        sqlx::query_as(&format!("{SELECT_SERVER} WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("tenant server {id} is not in the catalog")))
    }

    /// The decrypted API key of a Neon server (for its requests' header; never for printing).
    pub async fn server_api_key(&self, server_id: Uuid) -> Result<SecretString> {
        let sealed: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT api_key_ciphertext FROM tenant_servers WHERE id = $1")
                .bind(server_id)
                .fetch_optional(self.pool())
                .await?
                .flatten();
        let sealed = sealed.ok_or_else(|| {
            CatalogError::NotFound(format!("tenant server {server_id} is not a Neon server"))
        })?;
        Ok(self
            .key()?
            .decrypt_string(&sealed, &Binding::server_api_key(server_id))?)
    }

    async fn default_server(&self) -> Result<ServerRecord> {
        sqlx::query_as(&format!("{SELECT_SERVER} WHERE is_default"))
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| CatalogError::NotFound("no default tenant server is registered".into()))
    }

    /// A server by name, or `NotFound`.
    pub async fn server_by_name(&self, name: &str) -> Result<ServerRecord> {
        sqlx::query_as(&format!("{SELECT_SERVER} WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("tenant server {name:?} is not registered")))
    }

    /// The server for a new tenant: one registered for `region` if there is one, else the
    /// default; `None` when no server is registered at all.
    pub async fn server_for_region(&self, region: Option<&str>) -> Result<Option<ServerRecord>> {
        let found: Option<ServerRecord> = sqlx::query_as(
            "SELECT id, name::text AS name, kind, region, display_url, is_default, neon FROM tenant_servers
             WHERE ($1::text IS NOT NULL AND region = $1) OR is_default
             ORDER BY (region = $1) DESC NULLS LAST, name LIMIT 1",
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
        let sealed: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT admin_url_ciphertext FROM tenant_servers WHERE id = $1")
                .bind(server_id)
                .fetch_optional(self.pool())
                .await?
                .ok_or_else(|| {
                    CatalogError::NotFound(format!("tenant server {server_id} is not in the catalog"))
                })?;
        let sealed = sealed.ok_or_else(|| {
            CatalogError::Conflict(format!(
                "tenant server {server_id} is a Neon server: it has no admin URL"
            ))
        })?;
        Ok(self
            .key()?
            .decrypt_string(&sealed, &Binding::server_admin_url(server_id))?)
    }
}
