//! Tenant servers in the catalog: the Postgres servers tenant databases live on, and Neon
//! accounts (one project per tenant). Admin URLs and API keys are stored encrypted;
//! `display_url` is the redacted form shown to users.

use super::error::{CatalogError, Result};
use super::Catalog;
use crate::neon::NeonSettings;
use crate::secrets::{redact_url, Binding};
use crate::status::{ServerKind, ServerStatus};
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
    /// Neon servers: the API URL, region and project settings.
    pub neon: Option<Json<NeonSettings>>,
    /// Tenants (not deleted) it may hold; `None`: no limit.
    pub capacity: Option<i32>,
    pub status: ServerStatus,
    /// Tenants on it that are not deleted, plus those being moved to it.
    pub tenants: i64,
    /// Warm pool: the size its refill last worked to (`None`: none ran yet), claimable
    /// entries, entries being built, migrated or dropped, and since when it has been short.
    pub warm_target: Option<i32>,
    pub warm_ready: i64,
    pub warm_building: i64,
    pub warm_short_since: Option<chrono::DateTime<chrono::Utc>>,
}

impl ServerRecord {
    /// Tenants it can still take (`None`: no limit).
    pub fn free(&self) -> Option<i64> {
        self.capacity.map(|c| (i64::from(c) - self.tenants).max(0))
    }
}

/// `tenants` counts the server's tenants that are not deleted, and those on their way to it
/// (an unfinished move's target): a place promised to a move is not given to a signup.
const SELECT_SERVER: &str =
    "SELECT s.id, s.name::text AS name, s.kind, s.region, s.display_url, s.neon, s.capacity, s.status,
        (SELECT count(*) FROM tenants t WHERE t.server_id = s.id AND t.status <> 'deleted')
        + (SELECT count(*) FROM tenant_moves m WHERE m.to_server_id = s.id AND m.phase = 'copying') AS tenants,
        s.warm_target, s.warm_short_since,
        (SELECT count(*) FROM warm_databases w WHERE w.server_id = s.id AND w.status = 'ready') AS warm_ready,
        (SELECT count(*) FROM warm_databases w WHERE w.server_id = s.id AND w.status IN ('creating', 'dropping')) AS warm_building
   FROM tenant_servers s";

/// Why no server could take a new tenant.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("{0}")]
    NoServer(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Class of the transaction-scoped advisory lock that serialises placements ("PLAC"), so
/// two signups never both take a server's last free place.
const PLACEMENT_LOCK: i32 = 0x504c_4143;

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
    /// The server named `default`. An empty catalog is seeded with a self-hosted server named
    /// `default` at `url` (or, if none is given, `DEFAULT_SERVER_URL`); afterwards a given
    /// `url` must be the one registered for `default` (placement treats it like any other
    /// server: `pgfleet server drain default` stops new tenants going there):
    /// a process started with another `PGFLEET_SERVER_URL` is refused rather than silently
    /// pointing existing tenants at another cluster. Moving a server is an explicit command
    /// (`set_server_url`).
    /// Once `default` was removed (`server remove default`), it is not seeded again.
    pub async fn ensure_default_server(&self, url: Option<&SecretString>) -> Result<Option<ServerRecord>> {
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
                     SELECT $1, 'default', $2, $3, true
                      WHERE NOT EXISTS (SELECT 1 FROM tenant_servers WHERE name LIKE 'default.removed.%')
                     ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(redact_url(url.expose_secret()))
                .bind(self.key()?.encrypt_str(&url, &Binding::server_admin_url(id)))
                .execute(self.pool())
                .await?;
            }
        }
        match self.default_server().await {
            Ok(server) => Ok(Some(server)),
            Err(CatalogError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
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

    /// Registers a server. Refused if the name is taken.
    pub async fn add_server(
        &self,
        name: &str,
        region: Option<&str>,
        capacity: Option<i32>,
        server: NewServer<'_>,
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
        let inserted = sqlx::query(
            "INSERT INTO tenant_servers (id, name, kind, region, display_url, admin_url_ciphertext, api_key_ciphertext, neon, capacity)
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
        .bind(capacity)
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(CatalogError::Conflict(format!(
                "a tenant server named {name:?} is already registered; choose another name (`pgfleet server list` shows them)"
            )));
        }
        self.server_by_name(name).await
    }

    /// Every registered server (not removed) with its number of tenants, by name.
    pub async fn servers(&self) -> Result<Vec<ServerRecord>> {
        Ok(sqlx::query_as(&format!(
            "{SELECT_SERVER} WHERE s.status <> 'removed' ORDER BY s.name"
        ))
        .fetch_all(self.pool())
        .await?)
    }

    /// Changes a server's capacity (`Some(None)`: no limit), region (`Some(None)`: none) or
    /// status (active or draining); `None` leaves one as it is.
    pub async fn update_server(
        &self,
        name: &str,
        capacity: Option<Option<i32>>,
        region: Option<Option<&str>>,
        status: Option<ServerStatus>,
    ) -> Result<ServerRecord> {
        let server = self.server_by_name(name).await?;
        sqlx::query(
            "UPDATE tenant_servers SET capacity = CASE WHEN $2 THEN $3 ELSE capacity END,
                    region = CASE WHEN $4 THEN $5 ELSE region END,
                    status = coalesce($6, status), updated_at = now()
              WHERE id = $1",
        )
        .bind(server.id)
        .bind(capacity.is_some())
        .bind(capacity.flatten())
        .bind(region.is_some())
        .bind(region.flatten())
        .bind(status)
        .execute(self.pool())
        .await?;
        self.server(server.id).await
    }

    /// Removes an empty server: its row is deleted, or kept as `removed` (renamed, so the
    /// name is free again) when deleted tenants' records still point at it. Refused while
    /// it holds a tenant that is not deleted.
    pub async fn remove_server(&self, name: &str) -> Result<()> {
        let server = self.server_by_name(name).await?;
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind(PLACEMENT_LOCK)
            .execute(&mut *tx)
            .await?;
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT slug::text FROM tenants WHERE server_id = $1 AND status <> 'deleted' ORDER BY tenants.slug LIMIT 5",
        )
        .bind(server.id)
        .fetch_all(&mut *tx)
        .await?;
        if !live.is_empty() {
            return Err(CatalogError::Conflict(format!(
                "server {name} still holds tenants ({}{}); drain it (`pgfleet server drain {name}`) and move them off (`pgfleet tenant move SLUG --to OTHER`) first",
                live.join(", "),
                if server.tenants > 5 { format!(" and {} more", server.tenants - 5) } else { String::new() }
            )));
        }
        let branches: Vec<String> = sqlx::query_scalar(
            "SELECT database_name FROM tenant_branches WHERE server_id = $1 AND database_name IS NOT NULL ORDER BY 1 LIMIT 5",
        )
        .bind(server.id)
        .fetch_all(&mut *tx)
        .await?;
        if !branches.is_empty() {
            return Err(CatalogError::Conflict(format!(
                "server {name} still holds tenants' dev copies ({}); delete them first (`pgfleet tenant branch-delete SLUG --name NAME`)",
                branches.join(", ")
            )));
        }
        let warm: i64 = sqlx::query_scalar("SELECT count(*) FROM warm_databases WHERE server_id = $1")
            .bind(server.id)
            .fetch_one(&mut *tx)
            .await?;
        if warm > 0 {
            return Err(CatalogError::Conflict(format!(
                "server {name} still holds {warm} warm pool databases; drain it (`pgfleet server drain {name}`): a worker's refill empties a draining server's pool within seconds"
            )));
        }
        let moves: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tenant_moves WHERE (from_server_id = $1 OR to_server_id = $1) AND phase IN ('copying', 'switched')",
        )
        .bind(server.id)
        .fetch_one(&mut *tx)
        .await?;
        if moves > 0 {
            return Err(CatalogError::Conflict(format!(
                "a tenant move to or from server {name} is unfinished; wait for it (`pgfleet jobs list --status running`)"
            )));
        }
        let referenced: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tenants WHERE server_id = $1)
                 OR EXISTS (SELECT 1 FROM tenant_moves WHERE from_server_id = $1 OR to_server_id = $1)
                 OR EXISTS (SELECT 1 FROM tenant_branches WHERE server_id = $1)",
        )
        .bind(server.id)
        .fetch_one(&mut *tx)
        .await?;
        if referenced {
            sqlx::query(
                "UPDATE tenant_servers SET status = 'removed', is_default = false,
                        name = left(name, 40) || '.removed.' || left(id::text, 8), updated_at = now()
                  WHERE id = $1",
            )
            .bind(server.id)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query("DELETE FROM tenant_servers WHERE id = $1")
                .bind(server.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a new tenant on the server chosen for it, once: the tenant in `region` (any
    /// region if `None`) goes to the active, not full server with the most free places
    /// (no capacity: unlimited; ties: fewest tenants, then name). Placements are serialised,
    /// so two signups never both take a server's last place. A tenant already recorded is
    /// returned as it is: a retried provision never places it again.
    pub async fn place_tenant(
        &self,
        new: super::NewTenant<'_>,
        region: Option<&str>,
    ) -> std::result::Result<super::TenantRecord, PlacementError> {
        if let Some(existing) = self.tenant(new.slug).await? {
            return Ok(existing);
        }
        let mut tx = self.pool().begin().await.map_err(CatalogError::from)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind(PLACEMENT_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(CatalogError::from)?;
        let candidates: Vec<ServerRecord> = sqlx::query_as(&format!(
            "{SELECT_SERVER} WHERE s.status <> 'removed' AND ($1::text IS NULL OR s.region = $1) ORDER BY s.name"
        ))
        .bind(region)
        .fetch_all(&mut *tx)
        .await
        .map_err(CatalogError::from)?;
        let chosen = choose_server(&candidates, region).map_err(PlacementError::NoServer)?;
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO tenants (id, slug, region, server_id, database_name, role_name, password_ciphertext, connection_limit,
                                  statement_timeout_ms, idle_in_transaction_timeout_ms, work_mem_kb, storage_quota_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (slug) DO NOTHING",
        )
        .bind(id)
        .bind(new.slug.as_str())
        .bind(region)
        .bind(chosen.id)
        .bind(&new.database_name)
        .bind(&new.role_name)
        .bind(self.key()?.encrypt_str(&new.password, &Binding::tenant_password(id)))
        .bind(new.limits.connection_limit)
        .bind(new.limits.statement_timeout_ms)
        .bind(new.limits.idle_in_transaction_timeout_ms)
        .bind(new.limits.work_mem_kb)
        .bind(new.limits.storage_quota_bytes)
        .execute(&mut *tx)
        .await
        .map_err(CatalogError::from)?;
        tx.commit().await.map_err(CatalogError::from)?;
        self.tenant(new.slug).await?.ok_or_else(|| {
            PlacementError::Catalog(CatalogError::NotFound(format!(
                "tenant {} vanished from the catalog right after insert",
                new.slug
            )))
        })
    }

    /// A server by id, or `NotFound`.
    pub async fn server(&self, id: Uuid) -> Result<ServerRecord> {
        sqlx::query_as(&format!("{SELECT_SERVER} WHERE s.id = $1"))
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
        sqlx::query_as(&format!("{SELECT_SERVER} WHERE s.name = 'default'"))
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| CatalogError::NotFound("no default tenant server is registered".into()))
    }

    /// A server by name, or `NotFound`.
    pub async fn server_by_name(&self, name: &str) -> Result<ServerRecord> {
        sqlx::query_as(&format!("{SELECT_SERVER} WHERE s.name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("tenant server {name:?} is not registered")))
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

    /// (id, database) of the server's tenants that are live (active, suspended, moving).
    pub async fn server_tenant_ids(&self, server_id: Uuid) -> Result<Vec<(Uuid, String)>> {
        Ok(sqlx::query_as(
            "SELECT id, database_name FROM tenants WHERE server_id = $1 AND status IN ('active', 'suspended', 'moving')",
        )
        .bind(server_id)
        .fetch_all(self.pool())
        .await?)
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

/// The server a new tenant goes to among `candidates` (see `place_tenant`), or why none.
fn choose_server(
    candidates: &[ServerRecord],
    region: Option<&str>,
) -> std::result::Result<ServerRecord, String> {
    let mut best: Option<&ServerRecord> = None;
    for s in candidates {
        if s.status != ServerStatus::Active || s.free() == Some(0) {
            continue;
        }
        let rank = |s: &ServerRecord| (std::cmp::Reverse(s.free().unwrap_or(i64::MAX)), s.tenants);
        if best.is_none_or(|b| rank(s) < rank(b)) {
            best = Some(s);
        }
    }
    if let Some(best) = best {
        return Ok(best.clone());
    }
    let place = region.map(|r| format!(" in region {r}")).unwrap_or_default();
    if candidates.is_empty() {
        return Err(format!(
            "no tenant server is registered{place}; register one with `pgfleet server add NAME URL{}`",
            region.map(|r| format!(" --region {r}")).unwrap_or_default()
        ));
    }
    let states: Vec<String> = candidates
        .iter()
        .map(|s| match s.status {
            ServerStatus::Active => format!("{} full at {} tenants", s.name, s.tenants),
            other => format!("{} {other}", s.name),
        })
        .collect();
    Err(format!(
        "no tenant server{place} takes new tenants ({}); raise a capacity (`pgfleet server set NAME --capacity N`) or add a server",
        states.join(", ")
    ))
}
