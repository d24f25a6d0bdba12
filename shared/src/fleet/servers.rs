//! Tenant servers. `check` (`pgfleet server check NAME`): what a tenant role can reach on a
//! tenant server, and what
//! pgfleet needs there. Every tenant role may connect to any database that grants CONNECT
//! to PUBLIC (Postgres's default for a new database, the `postgres` maintenance database
//! included); only the operator can close those, so the check lists them with the statement
//! that does. Also: the server's version, whether pgfleet's admin role can do its work, and
//! `max_connections` against the sum of the tenants' connection limits.

use super::FleetError;
use super::{Fleet, Result};
use crate::catalog::ServerRecord;
use crate::status::ServerStatus;
use anyhow::Context;
use serde::Serialize;

/// The oldest PostgreSQL major pgfleet manages tenants on.
pub const MIN_SERVER_MAJOR: u32 = 14;

/// What `check` found.
#[derive(Debug, Serialize)]
pub struct ServerReport {
    pub server: String,
    pub version: String,
    /// The admin role pgfleet connects as, and whether it may create roles and databases.
    pub admin_role: String,
    pub admin_can_provision: bool,
    /// Whether its major version is one pgfleet supports (`MIN_SERVER_MAJOR` or newer).
    pub version_supported: bool,
    /// Databases every tenant role can connect to (PUBLIC has CONNECT), tenant databases
    /// excluded (pgfleet revokes PUBLIC on those).
    pub reachable_by_every_tenant: Vec<ReachableDatabase>,
    pub max_connections: i32,
    pub reserved_connections: i32,
    /// Sum of the connection limits of the tenants on this server (unlimited ones: not counted).
    pub tenant_connection_limits: i64,
    pub tenants: i64,
    pub tenants_unlimited: i64,
    /// Problems in plain words, each with what to do.
    pub findings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ReachableDatabase {
    pub name: String,
    /// Why it matters: `catalog` (pgfleet's own), `maintenance`, `template` or `other`.
    pub kind: &'static str,
    /// The statement that closes it.
    pub fix: String,
}

impl Fleet {
    /// Points server `name` at a new admin URL (checked: it must be a Postgres URL).
    pub async fn set_server_url(&self, name: &str, url: &secrecy::SecretString) -> Result<ServerRecord> {
        use secrecy::ExposeSecret;
        crate::postgres::connect_options(url.expose_secret())
            .map_err(|_| super::FleetError::Invalid("--url is not a valid Postgres URL".into()))?;
        Ok(self.catalog.set_server_url(name, url).await?)
    }

    /// The report on server `name` (see the module docs).
    pub async fn check_server(&self, name: &str) -> Result<ServerReport> {
        let server = self.catalog.server_by_name(name).await?;
        self.check(&server).await
    }

    async fn check(&self, server: &ServerRecord) -> Result<ServerReport> {
        let admin = self.servers.admin_pool(server.id).await?;
        self.inspect(&server.name, &admin, Some(server.id)).await
    }

    /// The report on the server behind `admin` (`server_id`: its tenants, once registered).
    pub(super) async fn inspect(
        &self,
        name: &str,
        admin: &sqlx::PgPool,
        server_id: Option<uuid::Uuid>,
    ) -> Result<ServerReport> {
        let catalog = &self.catalog;
        let (version, admin_role, can_provision, max_connections, reserved): (String, String, bool, String, String) =
        sqlx::query_as(
            "SELECT current_setting('server_version'), current_user::text,
                    (SELECT rolsuper OR (rolcreaterole AND rolcreatedb) FROM pg_roles WHERE rolname = current_user),
                    current_setting('max_connections'), current_setting('superuser_reserved_connections')",
        )
        .fetch_one(admin)
        .await
        .with_context(|| format!("reading the settings of tenant server {name}"))?;
        let open: Vec<String> = sqlx::query_scalar(
            "SELECT d.datname::text FROM pg_database d
          WHERE d.datallowconn
            AND EXISTS (SELECT 1 FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                         WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT')
          ORDER BY 1",
        )
        .fetch_all(admin)
        .await
        .context("listing databases open to PUBLIC")?;
        let server_identifier: Option<String> =
            sqlx::query_scalar("SELECT system_identifier::text FROM pg_control_system()")
                .fetch_one(admin)
                .await
                .ok();
        let (catalog_database, catalog_identifier) = catalog.database_identity().await?;
        let same_cluster = server_identifier.is_some() && server_identifier == catalog_identifier;
        let (tenant_databases, (tenants, limits, unlimited)) = match server_id {
            Some(id) => (
                catalog.server_tenant_databases(id).await?,
                catalog.server_connection_limits(id).await?,
            ),
            None => (Vec::new(), (0, None, 0)),
        };

        let reachable: Vec<ReachableDatabase> = open
            .into_iter()
            .filter(|name| !tenant_databases.contains(name))
            .map(|name| {
                let kind = if same_cluster && name == catalog_database {
                    "catalog"
                } else if name == "postgres" {
                    "maintenance"
                } else if name.starts_with("template") {
                    "template"
                } else {
                    "other"
                };
                let fix = format!(
                "REVOKE CONNECT ON DATABASE {} FROM PUBLIC; -- then GRANT CONNECT to the roles that need it",
                crate::postgres::quote_ident(&name)
            );
                ReachableDatabase { name, kind, fix }
            })
            .collect();

        let max_connections: i32 = max_connections.parse().unwrap_or(0);
        let reserved_connections: i32 = reserved.parse().unwrap_or(0);
        let tenant_connection_limits = limits.unwrap_or(0);
        let mut findings = Vec::new();
        let major: u32 = version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let version_supported = major >= MIN_SERVER_MAJOR;
        if !version_supported {
            findings.push(format!(
                "PostgreSQL {version} is too old: pgfleet needs {MIN_SERVER_MAJOR} or newer (it drops databases WITH (FORCE) and relies on the predefined role pg_database_owner)"
            ));
        }
        if !can_provision {
            findings.push(format!(
            "the admin role {admin_role} can't create roles and databases: give it CREATEROLE and CREATEDB (or use a superuser)"
        ));
        }
        if !reachable.is_empty() {
            let names: Vec<&str> = reachable.iter().map(|d| d.name.as_str()).collect();
            findings.push(format!(
                "every tenant role can connect to {}; revoke PUBLIC's CONNECT on them (see `fix`)",
                names.join(", ")
            ));
        }
        let usable = i64::from(max_connections - reserved_connections);
        if tenant_connection_limits > usable || unlimited > 0 {
            findings.push(format!(
            "tenants may open {tenant_connection_limits} connections{} but the server accepts {usable} (max_connections {max_connections} − {reserved_connections} reserved): one busy tenant can starve the others; lower PGFLEET_TENANT_CONNECTION_LIMIT or raise max_connections",
            if unlimited > 0 { format!(" plus {unlimited} without a limit") } else { String::new() },
        ));
        }
        Ok(ServerReport {
            server: name.to_owned(),
            version,
            admin_role,
            admin_can_provision: can_provision,
            version_supported,
            reachable_by_every_tenant: reachable,
            max_connections,
            reserved_connections,
            tenant_connection_limits,
            tenants,
            tenants_unlimited: unlimited,
            findings,
        })
    }
}

/// A server as `server list` shows it: the catalog's record and what the server says.
#[derive(Debug)]
pub struct ServerState {
    pub record: ServerRecord,
    /// The server's version (`None`: it did not answer within a few seconds).
    pub version: Option<String>,
}

/// What `server set` changes; `None` leaves one as it is.
#[derive(Debug, Default)]
pub struct ServerChanges {
    pub url: Option<secrecy::SecretString>,
    /// `Some(None)`: no limit.
    pub capacity: Option<Option<i32>>,
    /// `Some(None)`: no region.
    pub region: Option<Option<String>>,
    pub status: Option<ServerStatus>,
    /// Warm pool size of this server; `Some(None)`: the workers' `PGFLEET_WARM_POOL`.
    pub warm_pool: Option<Option<i32>>,
}

impl Fleet {
    /// Every server with its tenants, capacity, status and version (asked of each server,
    /// a few seconds at most each, all at once).
    pub async fn servers(&self) -> Result<Vec<ServerState>> {
        let records = self.catalog.servers().await?;
        let versions = futures_util::future::join_all(records.iter().map(|s| self.server_version(s))).await;
        Ok(records
            .into_iter()
            .zip(versions)
            .map(|(record, version)| ServerState { record, version })
            .collect())
    }

    async fn server_version(&self, server: &ServerRecord) -> Option<String> {
        if let Some(neon) = &server.neon {
            return Some(
                neon.0
                    .pg_version
                    .map_or_else(|| "neon".to_owned(), |v| format!("neon {v}")),
            );
        }
        let admin = self.servers.admin_pool(server.id).await.ok()?;
        let ask = sqlx::query_scalar::<_, String>("SHOW server_version").fetch_one(&admin);
        tokio::time::timeout(std::time::Duration::from_secs(5), ask)
            .await
            .ok()?
            .ok()
    }

    /// Changes a server (see `ServerChanges`); a server being removed can't be changed.
    pub async fn set_server(&self, name: &str, changes: ServerChanges) -> Result<ServerRecord> {
        if changes
            .warm_pool
            .flatten()
            .is_some_and(|n| !(0..=1000).contains(&n))
        {
            return Err(FleetError::Invalid("--warm-pool must be 0 to 1000".into()));
        }
        if changes.capacity.flatten().is_some_and(|c| c < 0) {
            return Err(FleetError::Invalid("--capacity must be 0 or more".into()));
        }
        if let Some(Some(region)) = &changes.region {
            crate::message::validate_region(region).map_err(|e| FleetError::Invalid(e.to_string()))?;
        }
        if changes.status == Some(ServerStatus::Removed) {
            return Err(FleetError::Invalid(
                "use `pgfleet server remove` to remove a server".into(),
            ));
        }
        if let Some(url) = &changes.url {
            self.set_server_url(name, url).await?;
        }
        let server = self.catalog.server_by_name(name).await?;
        if server.status == ServerStatus::Removed {
            return Err(FleetError::NotFound(format!(
                "tenant server {name:?} is not registered"
            )));
        }
        if let Some(size) = changes.warm_pool {
            if server.kind != crate::status::ServerKind::Postgres {
                return Err(FleetError::Invalid(format!(
                    "{name} is a Neon server: the warm pool is for self-hosted servers"
                )));
            }
            self.catalog.set_server_warm_pool(server.id, size).await?;
        }
        Ok(self
            .catalog
            .update_server(
                name,
                changes.capacity,
                changes.region.as_ref().map(|r| r.as_deref()),
                changes.status,
            )
            .await?)
    }

    /// Removes a server that holds no tenant (see `Catalog::remove_server`).
    pub async fn remove_server(&self, name: &str) -> Result<()> {
        Ok(self.catalog.remove_server(name).await?)
    }
}
