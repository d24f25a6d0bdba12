//! Tenant servers. `check` (`pgfleet server check NAME`): what a tenant role can reach on a
//! tenant server, and what
//! pgfleet needs there. Every tenant role may connect to any database that grants CONNECT
//! to PUBLIC (Postgres's default for a new database, the `postgres` maintenance database
//! included); only the operator can close those, so the check lists them with the statement
//! that does. Also: the server's version, whether pgfleet's admin role can do its work, and
//! `max_connections` against the sum of the tenants' connection limits.

use super::{Fleet, Result};
use crate::catalog::ServerRecord;
use anyhow::Context;
use serde::Serialize;

/// What `check` found.
#[derive(Debug, Serialize)]
pub struct ServerReport {
    pub server: String,
    pub version: String,
    /// The admin role pgfleet connects as, and whether it may create roles and databases.
    pub admin_role: String,
    pub admin_can_provision: bool,
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
        let catalog = &self.catalog;
        let admin = self.servers.admin_pool(server.id).await?;
        let (version, admin_role, can_provision, max_connections, reserved): (String, String, bool, String, String) =
        sqlx::query_as(
            "SELECT current_setting('server_version'), current_user::text,
                    (SELECT rolsuper OR (rolcreaterole AND rolcreatedb) FROM pg_roles WHERE rolname = current_user),
                    current_setting('max_connections'), current_setting('superuser_reserved_connections')",
        )
        .fetch_one(&admin)
        .await
        .with_context(|| format!("reading the settings of tenant server {}", server.name))?;
        let open: Vec<String> = sqlx::query_scalar(
            "SELECT d.datname::text FROM pg_database d
          WHERE d.datallowconn
            AND EXISTS (SELECT 1 FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                         WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT')
          ORDER BY 1",
        )
        .fetch_all(&admin)
        .await
        .context("listing databases open to PUBLIC")?;
        let server_identifier: Option<String> =
            sqlx::query_scalar("SELECT system_identifier::text FROM pg_control_system()")
                .fetch_one(&admin)
                .await
                .ok();
        let (catalog_database, catalog_identifier) = catalog.database_identity().await?;
        let same_cluster = server_identifier.is_some() && server_identifier == catalog_identifier;
        let tenant_databases = catalog.server_tenant_databases(server.id).await?;
        let (tenants, limits, unlimited) = catalog.server_connection_limits(server.id).await?;

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
            server: server.name.clone(),
            version,
            admin_role,
            admin_can_provision: can_provision,
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
