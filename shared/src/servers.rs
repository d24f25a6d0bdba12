//! Connections to tenant servers (the self-hosted provider): an admin pool per server, built
//! on first use from the catalog's encrypted admin URL, and connections as a tenant's own
//! role. Statement logging is off on these connections: role DDL carries password verifiers.
//!
//! These sessions run with `synchronous_commit = off`: a provision makes several small
//! commits, each of which would otherwise wait for its own WAL fsync. Before anything is
//! reported as done, the handler calls `flush_wal`, whose synchronous commit flushes the
//! WAL past every earlier commit, so durability at the point of reporting is unchanged.

use crate::catalog::{Catalog, TenantRecord};
use anyhow::{Context, Result};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use uuid::Uuid;

struct Server {
    admin: PgPool,
    options: PgConnectOptions,
}

/// Admin pools per tenant server; cheap to clone.
#[derive(Clone)]
pub struct TenantServers {
    catalog: Catalog,
    max_admin_connections: u32,
    servers: Arc<Mutex<HashMap<Uuid, Arc<Server>>>>,
}

impl TenantServers {
    pub fn new(catalog: Catalog, max_admin_connections: u32) -> Self {
        Self {
            catalog,
            max_admin_connections,
            servers: Arc::default(),
        }
    }

    async fn server(&self, server_id: Uuid) -> Result<Arc<Server>> {
        let mut servers = self.servers.lock().await;
        if let Some(server) = servers.get(&server_id) {
            return Ok(server.clone());
        }
        let url = self.catalog.server_admin_url(server_id).await?;
        let options = crate::postgres::connect_options(url.expose_secret())
            .with_context(|| {
                format!("the admin URL of tenant server {server_id} is not a valid Postgres URL")
            })?
            .log_statements(tracing::log::LevelFilter::Off)
            .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(60))
            .options([("synchronous_commit", "off")]);
        let admin = PgPoolOptions::new()
            .max_connections(self.max_admin_connections)
            .acquire_timeout(Duration::from_secs(30))
            .idle_timeout(Duration::from_secs(120))
            .connect_lazy_with(options.clone());
        let server = Arc::new(Server { admin, options });
        servers.insert(server_id, server.clone());
        Ok(server)
    }

    /// Pool of admin connections to the server's maintenance database.
    pub async fn admin_pool(&self, server_id: Uuid) -> Result<PgPool> {
        Ok(self.server(server_id).await?.admin.clone())
    }

    /// Makes every commit made so far on the server durable (one synchronous commit
    /// flushes the WAL up to its own record, which follows all earlier ones).
    pub async fn flush_wal(&self, server_id: Uuid) -> Result<()> {
        let admin = self.admin_pool(server_id).await?;
        sqlx::raw_sql("BEGIN; SET LOCAL synchronous_commit = on; SELECT txid_current(); COMMIT;")
            .execute(&admin)
            .await
            .context("flushing the tenant server's WAL")?;
        Ok(())
    }

    /// Connect options for the tenant's own role on its own database.
    pub async fn tenant_options(&self, tenant: &TenantRecord) -> Result<PgConnectOptions> {
        let server = self.server(tenant.server_id).await?;
        let password = self.catalog.tenant_password(tenant)?;
        Ok(server
            .options
            .clone()
            .username(&tenant.role_name)
            .password(password.expose_secret())
            .database(&tenant.database_name))
    }

    /// A connection as the tenant's role to its database.
    pub async fn connect_as_tenant(&self, tenant: &TenantRecord) -> Result<PgConnection> {
        let options = self.tenant_options(tenant).await?;
        PgConnection::connect_with(&options).await.with_context(|| {
            format!(
                "connecting to database {} as tenant role {}",
                tenant.database_name, tenant.role_name
            )
        })
    }

    /// Major version of the server (e.g. 15), to pick matching client tools.
    pub async fn server_major(&self, server_id: Uuid) -> Result<u32> {
        let admin = self.admin_pool(server_id).await?;
        let num: String = sqlx::query_scalar("SHOW server_version_num")
            .fetch_one(&admin)
            .await
            .context("reading the tenant server's version")?;
        Ok(num.parse::<u32>().context("unexpected server_version_num")? / 10_000)
    }

    /// libpq environment (`PGHOST`, `PGPASSWORD`, …) for a client tool connecting as the
    /// tenant's role to `database`. Passing the password in the environment keeps it out of
    /// the process list, where a command-line argument or URL would show it.
    pub async fn tenant_libpq_env(&self, tenant: &TenantRecord, database: &str) -> Result<LibpqEnv> {
        let admin = self.catalog.server_admin_url(tenant.server_id).await?;
        let password = self.catalog.tenant_password(tenant)?;
        libpq_env(
            admin.expose_secret(),
            Some((&tenant.role_name, password.expose_secret())),
            database,
        )
    }

    /// libpq environment for a client tool connecting as `role` (with `password`) to
    /// `database` on the server.
    pub async fn role_libpq_env(
        &self,
        server_id: Uuid,
        role: &str,
        password: &SecretString,
        database: &str,
    ) -> Result<LibpqEnv> {
        let admin = self.catalog.server_admin_url(server_id).await?;
        libpq_env(
            admin.expose_secret(),
            Some((role, password.expose_secret())),
            database,
        )
    }

    /// The tenant's own connection URL (with its password): for `pgfleet tenant url` only.
    pub async fn tenant_url(&self, tenant: &TenantRecord) -> Result<secrecy::SecretString> {
        let admin = self.catalog.server_admin_url(tenant.server_id).await?;
        let mut url =
            url::Url::parse(admin.expose_secret()).context("the server's admin URL is not a URL")?;
        let password = self.catalog.tenant_password(tenant)?;
        url.set_username(&tenant.role_name)
            .map_err(|_| anyhow::anyhow!("cannot put the role name in the server URL"))?;
        url.set_password(Some(password.expose_secret()))
            .map_err(|_| anyhow::anyhow!("cannot put the password in the server URL"))?;
        url.set_path(&format!("/{}", tenant.database_name));
        Ok(url.to_string().into())
    }
}

/// Environment variables for a libpq client; holds a password, so no `Debug`.
pub struct LibpqEnv(Vec<(&'static str, String)>);

/// Settings of this process's environment a client tool keeps: TLS choices the operator
/// made for libpq as a whole. Everything else (the catalog URL, the secret key, cloud
/// credentials, `PGPASSFILE`, …) is withheld.
const PASSED_THROUGH: [&str; 7] = [
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLCRL",
    "PGSSLNEGOTIATION",
    "PGGSSENCMODE",
];

impl LibpqEnv {
    /// Gives `cmd` this environment and nothing else of the worker's: a child (and anything
    /// a restored dump could make it run) never sees pgfleet's own secrets.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        cmd.env_clear();
        for var in PASSED_THROUGH {
            if let Ok(value) = std::env::var(var) {
                cmd.env(var, value);
            }
        }
        for (k, v) in &self.0 {
            cmd.env(k, v);
        }
    }
}

fn libpq_env(admin_url: &str, login: Option<(&str, &str)>, database: &str) -> Result<LibpqEnv> {
    let url = url::Url::parse(admin_url).context("the server's admin URL is not a URL")?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let mut vars = vec![
        (
            "PGHOST",
            url.host_str()
                .unwrap_or("localhost")
                .trim_matches(['[', ']'])
                .to_owned(),
        ),
        ("PGPORT", url.port().unwrap_or(5432).to_string()),
        ("PGDATABASE", database.to_owned()),
        ("PGAPPNAME", "pgfleet".to_owned()),
    ];
    match login {
        Some((user, password)) => {
            vars.push(("PGUSER", user.to_owned()));
            vars.push(("PGPASSWORD", password.to_owned()));
        }
        None => {
            if !url.username().is_empty() {
                vars.push(("PGUSER", decode(url.username())));
            }
            if let Some(password) = url.password() {
                vars.push(("PGPASSWORD", decode(password)));
            }
        }
    }
    if let Some(mode) = crate::postgres::default_tool_ssl_mode(admin_url) {
        vars.push(("PGSSLMODE", mode.to_owned()));
    }
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "sslmode" => vars.push(("PGSSLMODE", v.into_owned())),
            "sslrootcert" => vars.push(("PGSSLROOTCERT", v.into_owned())),
            "host" => vars[0].1 = v.into_owned(),
            _ => {}
        }
    }
    Ok(LibpqEnv(vars))
}
