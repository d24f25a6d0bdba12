//! Connections to tenant servers: for self-hosted servers an admin pool per server, built
//! on first use from the catalog's encrypted admin URL; for Neon servers a Neon API client
//! per server (sharing one rate limiter per account); and for both, connections as a
//! tenant's own role (a Neon tenant's: its direct URI). Statement logging is off on these
//! connections: role DDL carries password verifiers.
//!
//! These sessions run with `synchronous_commit = off`: a provision makes several small
//! commits, each of which would otherwise wait for its own WAL fsync. Before anything is
//! reported as done, the handler calls `flush_wal`, whose synchronous commit flushes the
//! WAL past every earlier commit, so durability at the point of reporting is unchanged.

use crate::catalog::{Catalog, TenantRecord};
use crate::neon::{NeonClient, NeonLimits, NeonSettings, RateLimiter};
use crate::status::ServerKind;
use anyhow::{anyhow, Context, Result};
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

/// Admin pools and Neon clients per tenant server; cheap to clone.
#[derive(Clone)]
pub struct TenantServers {
    catalog: Catalog,
    max_admin_connections: u32,
    servers: Arc<Mutex<HashMap<Uuid, Arc<Server>>>>,
    neon_limits: NeonLimits,
    neon: Arc<Mutex<NeonClients>>,
}

#[derive(Default)]
struct NeonClients {
    by_server: HashMap<Uuid, (NeonClient, NeonSettings)>,
    /// One limiter per account (API URL and key), shared by every server registered with it.
    limiters: HashMap<[u8; 32], Arc<RateLimiter>>,
}

impl TenantServers {
    pub fn new(catalog: Catalog, max_admin_connections: u32) -> Self {
        Self::with_neon_limits(catalog, max_admin_connections, NeonLimits::default())
    }

    pub fn with_neon_limits(catalog: Catalog, max_admin_connections: u32, neon_limits: NeonLimits) -> Self {
        Self {
            catalog,
            max_admin_connections,
            servers: Arc::default(),
            neon_limits,
            neon: Arc::default(),
        }
    }

    /// The Neon client (and settings) of a Neon server.
    pub async fn neon(&self, server_id: Uuid) -> Result<(NeonClient, NeonSettings)> {
        let mut clients = self.neon.lock().await;
        if let Some(found) = clients.by_server.get(&server_id) {
            return Ok(found.clone());
        }
        let server = self.catalog.server(server_id).await?;
        let settings = server
            .neon
            .map(|s| s.0)
            .ok_or_else(|| anyhow!("tenant server {} is not a Neon server", server.name))?;
        let key = self.catalog.server_api_key(server_id).await?;
        let account = {
            use sha2::Digest;
            let mut hash = sha2::Sha256::new();
            hash.update(settings.api_url.as_bytes());
            hash.update([0]);
            hash.update(key.expose_secret().as_bytes());
            <[u8; 32]>::from(hash.finalize())
        };
        let limits = self.neon_limits;
        let limiter = clients
            .limiters
            .entry(account)
            .or_insert_with(|| Arc::new(RateLimiter::new(limits.rate)))
            .clone();
        let client = NeonClient::new(&settings.api_url, key, limiter, limits.retry)?;
        clients
            .by_server
            .insert(server_id, (client.clone(), settings.clone()));
        Ok((client, settings))
    }

    /// The Neon tenant's direct URI (migrations, pg_dump, psql), or a clear error.
    fn neon_direct_uri(&self, tenant: &TenantRecord) -> Result<SecretString> {
        self.catalog.tenant_uri(tenant, true)?.ok_or_else(|| {
            anyhow!(
                "tenant {}'s Neon project has no connection URI recorded yet; its provision has not finished",
                tenant.slug
            )
        })
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
        if tenant.server_kind == ServerKind::Neon {
            let uri = self.neon_direct_uri(tenant)?;
            return Ok(crate::postgres::connect_options(uri.expose_secret())
                .with_context(|| format!("tenant {}'s Neon URI is not a valid Postgres URL", tenant.slug))?
                .log_statements(tracing::log::LevelFilter::Off)
                .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(60)));
        }
        let server = self.server(tenant.server_id).await?;
        let password = self.catalog.tenant_password(tenant)?;
        Ok(server
            .options
            .clone()
            .username(&tenant.role_name)
            .password(password.expose_secret())
            .database(&tenant.database_name))
    }

    /// Connect options for `role` (with `password`) on `database` of a self-hosted server.
    pub async fn role_options(
        &self,
        server_id: Uuid,
        role: &str,
        password: &SecretString,
        database: &str,
    ) -> Result<PgConnectOptions> {
        let server = self.server(server_id).await?;
        Ok(server
            .options
            .clone()
            .username(role)
            .password(password.expose_secret())
            .database(database))
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

    /// Major version of the tenant's server (e.g. 15), to pick matching client tools.
    pub async fn tenant_server_major(&self, tenant: &TenantRecord) -> Result<u32> {
        let num: String = if tenant.server_kind == ServerKind::Neon {
            let mut conn = self.connect_as_tenant(tenant).await?;
            let num = sqlx::query_scalar("SHOW server_version_num")
                .fetch_one(&mut conn)
                .await
                .context("reading the tenant's Postgres version")?;
            let _ = conn.close().await;
            num
        } else {
            let admin = self.admin_pool(tenant.server_id).await?;
            sqlx::query_scalar("SHOW server_version_num")
                .fetch_one(&admin)
                .await
                .context("reading the tenant server's version")?
        };
        Ok(num.parse::<u32>().context("unexpected server_version_num")? / 10_000)
    }

    /// libpq environment (`PGHOST`, `PGPASSWORD`, …) for a client tool connecting as the
    /// tenant's role to `database`. Passing the password in the environment keeps it out of
    /// the process list, where a command-line argument or URL would show it.
    pub async fn tenant_libpq_env(&self, tenant: &TenantRecord, database: &str) -> Result<LibpqEnv> {
        if tenant.server_kind == ServerKind::Neon {
            // The URI names the database as the tenant's server knows it.
            let _ = database;
            return self.uri_libpq_env(&self.neon_direct_uri(tenant)?);
        }
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

    /// libpq environment for a client tool connecting with `uri` (a Neon tenant's or
    /// branch's: login, host and database all from the URI).
    pub fn uri_libpq_env(&self, uri: &SecretString) -> Result<LibpqEnv> {
        let parsed = url::Url::parse(uri.expose_secret()).context("a Neon connection URI is not a URL")?;
        let database =
            url::form_urlencoded::parse(format!("x={}", parsed.path().trim_start_matches('/')).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
        libpq_env(uri.expose_secret(), None, &database)
    }

    /// The tenant's own connection URL (with its password): for `pgfleet tenant url` only.
    /// A Neon tenant's is the pooled one unless `direct` (pgfleet itself uses the direct one
    /// for migrations and dumps); a self-hosted server has one URL.
    pub async fn tenant_url(&self, tenant: &TenantRecord, direct: bool) -> Result<secrecy::SecretString> {
        if tenant.server_kind == ServerKind::Neon {
            return self.catalog.tenant_uri(tenant, direct)?.ok_or_else(|| {
                anyhow!(
                    "tenant {} has no connection URI yet; its provision has not finished",
                    tenant.slug
                )
            });
        }
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
            // Neon's URIs: SCRAM channel binding, and the endpoint id for clients without SNI.
            "channel_binding" => vars.push(("PGCHANNELBINDING", v.into_owned())),
            "options" => vars.push(("PGOPTIONS", v.into_owned())),
            "host" => vars[0].1 = v.into_owned(),
            _ => {}
        }
    }
    Ok(LibpqEnv(vars))
}
