//! Test environment: each test gets its own catalog database, namespace (queues, tenant
//! databases and roles) and secret key, and talks to the real local Postgres and RabbitMQ.
//! Worker processes are the real `pgfleet` binary.

use anyhow::Result;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueDeleteOptions,
};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use pgfleet_shared::catalog::{Catalog, JobRecord, TenantRecord};
use pgfleet_shared::jobs::{FaultPoints, JobContext};
use pgfleet_shared::secrets::SecretKey;
use pgfleet_shared::services::Services;
use pgfleet_shared::tenant_migrations::MigrationSet;
use pgfleet_shared::{Config, JobKind, Namespace, TenantSlug};
use rand::Rng;
use secrecy::ExposeSecret;
use sqlx::{Connection as _, PgConnection};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PGFLEET: &str = env!("CARGO_BIN_EXE_pgfleet");

pub struct TestEnv {
    pub namespace: String,
    pub catalog_url: String,
    pub secret_key: String,
    pub dir: PathBuf,
    pub migrations_dir: Option<PathBuf>,
}

impl TestEnv {
    pub fn new() -> Self {
        let suffix: String = (0..10)
            .map(|_| format!("{:x}", rand::thread_rng().gen_range(0..16)))
            .collect();
        let namespace = format!("it_{suffix}");
        let dir = std::env::temp_dir().join(format!("pgfleet-{namespace}"));
        std::fs::create_dir_all(&dir).expect("create test dir");
        Self {
            catalog_url: format!("postgres://postgres@127.0.0.1:5432/{namespace}_catalog"),
            secret_key: SecretKey::generate().to_base64().expose_secret().to_owned(),
            namespace,
            dir,
            migrations_dir: None,
        }
    }

    /// Uses a tenant migrations folder with the example schema plus `extra` files.
    pub fn with_migrations(mut self, extra: &[(&str, &str)]) -> Self {
        let dir = self.dir.join("tenant-migrations");
        std::fs::create_dir_all(&dir).unwrap();
        for m in MigrationSet::built_in().migrations {
            std::fs::write(dir.join(&m.file_name), &m.sql).unwrap();
        }
        for (name, sql) in extra {
            std::fs::write(dir.join(name), sql).unwrap();
        }
        self.migrations_dir = Some(dir);
        self
    }

    pub fn config(&self) -> Config {
        Config {
            catalog_url: self.catalog_url.clone().into(),
            amqp_url: AMQP_URL.to_owned().into(),
            server_url: ADMIN_URL.to_owned().into(),
            namespace: Namespace::parse(&self.namespace).unwrap(),
            tenant_migrations: self.migrations_dir.clone(),
            tenant_connection_limit: 10,
        }
    }

    pub async fn services(&self) -> Services {
        let key = SecretKey::parse(&self.secret_key).unwrap();
        let services = Services::open(&self.config(), key, 8)
            .await
            .expect("open catalog");
        services
            .catalog
            .register_default_server(&self.config().server_url)
            .await
            .expect("register server");
        services
    }

    pub async fn catalog(&self) -> Catalog {
        self.services().await.catalog
    }

    pub async fn job_context(&self, faults: FaultPoints) -> JobContext {
        let services = self.services().await;
        let (migrations, _) = MigrationSet::load(self.migrations_dir.as_deref()).unwrap();
        services.job_context(&self.config(), migrations, faults)
    }

    /// A `pgfleet` command with this environment's configuration.
    pub fn pgfleet(&self) -> Command {
        let mut cmd = Command::new(PGFLEET);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PGFLEET_CATALOG_URL", &self.catalog_url)
            .env("PGFLEET_AMQP_URL", AMQP_URL)
            .env("PGFLEET_SERVER_URL", ADMIN_URL)
            .env("PGFLEET_NAMESPACE", &self.namespace)
            .env("PGFLEET_SECRET_KEY", &self.secret_key)
            .env("PGFLEET_DATA_DIR", self.dir.join("data"))
            .env("PGFLEET_SWEEP_INTERVAL_MS", "200")
            .env("PGFLEET_BACKOFF_MS", "100")
            .current_dir(&self.dir);
        if let Some(dir) = &self.migrations_dir {
            cmd.env("PGFLEET_TENANT_MIGRATIONS", dir);
        }
        cmd
    }

    /// Runs a CLI command to completion; returns (exit success, stdout, stderr).
    pub fn run_cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.pgfleet().args(args).output().expect("run pgfleet");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts `pgfleet worker` with `args`, logging to a file; waits until it consumes.
    pub async fn spawn_worker(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = self.pgfleet();
        cmd.arg("worker")
            .args(args)
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn worker");
        let worker = WorkerProcess { child, log_path };
        worker
            .wait_for_log("consuming", Duration::from_secs(60))
            .await;
        worker
    }

    /// Publishes a raw message to `<ns>.jobs` with plain AMQP, as any application would.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        self.publish_raw_many(routing_key, &[body.to_vec()]).await;
    }

    pub async fn publish_raw_many(&self, routing_key: &str, bodies: &[Vec<u8>]) {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let exchange = format!("{}.jobs", self.namespace);
        for body in bodies {
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack());
        }
        let _ = conn.close(200, "bye".into()).await;
    }

    /// Drains `<ns>.dead`: (body, x-pgfleet-reason header) of each message.
    pub async fn drain_dead_letters(&self) -> Vec<(Vec<u8>, Option<String>)> {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let queue = format!("{}.dead", self.namespace);
        let mut out = Vec::new();
        while let Some(msg) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let reason = msg
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get(pgfleet_shared::queue::REASON_HEADER).cloned())
                .and_then(|v| match v {
                    lapin::types::AMQPValue::LongString(s) => {
                        Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                    }
                    _ => None,
                });
            out.push((msg.delivery.data.clone(), reason));
        }
        let _ = conn.close(200, "bye".into()).await;
        out
    }

    pub async fn wait_tenant_active(
        &self,
        catalog: &Catalog,
        slug: &str,
        timeout: Duration,
    ) -> TenantRecord {
        let slug = TenantSlug::parse(slug).unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = catalog.tenant(&slug).await.unwrap() {
                if t.status == "active" {
                    return t;
                }
            }
            assert!(
                Instant::now() < deadline,
                "tenant {slug} not active within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_job(
        &self,
        catalog: &Catalog,
        key: &str,
        status: &str,
        timeout: Duration,
    ) -> JobRecord {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(job) = catalog.job_by_key(key).await.unwrap() {
                if job.status == status {
                    return job;
                }
            }
            assert!(
                Instant::now() < deadline,
                "job {key} not {status} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Databases on the server whose name starts with this namespace's prefix.
    pub async fn tenant_databases(&self) -> Vec<String> {
        let mut admin = admin().await;
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) AND datname <> $2 ORDER BY 1")
            .bind(format!("{}_", self.namespace))
            .bind(format!("{}_catalog", self.namespace))
            .fetch_all(&mut admin)
            .await
            .unwrap()
    }

    pub async fn tenant_roles(&self) -> Vec<String> {
        let mut admin = admin().await;
        sqlx::query_scalar(
            "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1",
        )
        .bind(format!("{}_", self.namespace))
        .fetch_all(&mut admin)
        .await
        .unwrap()
    }

    /// Drops everything this test created: tenant databases and roles, the catalog, queues.
    pub async fn cleanup(self) {
        let mut admin = admin().await;
        let mut databases = self.tenant_databases().await;
        databases.push(format!("{}_catalog", self.namespace));
        for db in databases {
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
        for role in self.tenant_roles().await {
            let _ = sqlx::raw_sql(&format!("DROP ROLE IF EXISTS \"{role}\""))
                .execute(&mut admin)
                .await;
        }
        if let Ok(conn) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await {
            if let Ok(channel) = conn.create_channel().await {
                let ns = Namespace::parse(&self.namespace).unwrap();
                let mut queues: Vec<String> =
                    JobKind::ALL.iter().map(|k| ns.kind_queue(*k)).collect();
                queues.push(ns.dead());
                queues.push(ns.unroutable());
                for q in &queues {
                    let _ = channel
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                for x in [ns.jobs_exchange(), ns.dead(), ns.unroutable()] {
                    let _ = channel
                        .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
            }
            let _ = conn.close(200, "bye".into()).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Declares the topology as every pgfleet process does at start (for tests that publish
/// before an in-process worker has connected).
pub async fn declare_topology(ns: &Namespace) {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    pgfleet_shared::queue::declare_topology(&conn.create_channel().await.unwrap(), ns)
        .await
        .unwrap();
    let _ = conn.close(200, "bye".into()).await;
}

pub async fn admin() -> PgConnection {
    PgConnection::connect(ADMIN_URL)
        .await
        .expect("connect to local Postgres as postgres")
}

/// Connects as a tenant's role to `database`.
pub async fn connect_as(
    env_services: &Services,
    tenant: &TenantRecord,
    database: &str,
) -> Result<PgConnection> {
    let options = env_services
        .servers
        .tenant_options(tenant)
        .await?
        .database(database);
    Ok(PgConnection::connect_with(&options).await?)
}

pub struct WorkerProcess {
    pub child: Child,
    pub log_path: PathBuf,
}

impl WorkerProcess {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if Instant::now() > deadline {
                panic!(
                    "worker log has no {needle:?} within {timeout:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for worker")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn table_names(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}
