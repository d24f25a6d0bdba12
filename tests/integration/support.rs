//! Test environment: each test gets its own catalog database, namespace (queues, tenant
//! databases and roles) and secret key, and talks to the real local Postgres and RabbitMQ.
//! Worker processes are the real `pgfleet` binary.

use anyhow::Result;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use pgfleet_shared::catalog::{Catalog, JobRecord, TenantRecord};
use pgfleet_shared::jobs::{FaultPoints, JobContext};
use pgfleet_shared::migration_set::MigrationSet;
use pgfleet_shared::secrets::SecretKey;
use pgfleet_shared::services::Services;
pub use pgfleet_shared::status::{JobStatus, RolloutStatus, TenantStatus};
use pgfleet_shared::{Config, JobKind, Namespace, TenantSlug};
use rand::Rng;
use secrecy::ExposeSecret;
use sqlx::{Connection as _, PgConnection};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// A second Postgres cluster for fleet tests (placement, moves): `.ci/run` starts it
/// (`pg_createcluster 15 fleet2 --port 5433`).
pub const SECOND_URL: &str = "postgres://postgres@127.0.0.1:5433/postgres";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PGFLEET: &str = env!("CARGO_BIN_EXE_pgfleet");

pub struct TestEnv {
    pub namespace: String,
    pub catalog_url: String,
    pub secret_key: String,
    pub dir: PathBuf,
    pub migrations_dir: Option<PathBuf>,
    pub backup_url: String,
    /// Endpoint of the S3-compatible server when `backup_url` is `s3://…`.
    pub s3_endpoint: Option<String>,
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
            backup_url: format!("file://{}", dir.join("backups").display()),
            namespace,
            dir,
            migrations_dir: None,
            s3_endpoint: None,
        }
    }

    /// Backups go to a fresh bucket on `server` (an S3-compatible server on loopback).
    pub async fn with_s3(mut self, server: &S3Server) -> Self {
        let bucket = self.namespace.replace('_', "-");
        s3_client(&server.endpoint)
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create test bucket");
        self.backup_url = format!("s3://{bucket}/backups");
        self.s3_endpoint = Some(server.endpoint.clone());
        self
    }

    pub fn bucket(&self) -> String {
        self.namespace.replace('_', "-")
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
            server_url: Some(ADMIN_URL.to_owned().into()),
            namespace: Namespace::parse(&self.namespace).unwrap(),
            tenant_migrations: self.migrations_dir.clone(),
            tenant_limits: pgfleet_shared::catalog::TenantLimits {
                connection_limit: 10,
                ..Default::default()
            },
            backup_url: self.backup_url.clone(),
            backup_gzip_level: 3,
            s3_attempt_timeout: Duration::from_secs(120),
        }
    }

    pub async fn services(&self) -> Services {
        let key = SecretKey::parse(&self.secret_key).unwrap();
        let services = Services::open(&self.config(), key, 8)
            .await
            .expect("open catalog");
        services
            .catalog
            .ensure_default_server(None)
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
        if self.s3_endpoint.is_some() {
            set_shared_s3_env();
        }
        services
            .job_context(&self.config(), migrations, faults)
            .await
            .expect("job context")
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
        cmd.env("PGFLEET_BACKUP_URL", &self.backup_url);
        if let Some(endpoint) = &self.s3_endpoint {
            cmd.env("AWS_ENDPOINT_URL", endpoint)
                .env("AWS_ACCESS_KEY_ID", S3_KEY)
                .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
                .env("AWS_REGION", "us-east-1");
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
    pub async fn spawn_worker(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> WorkerProcess {
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = self.pgfleet();
        cmd.arg("worker").args(args).stdout(Stdio::null()).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn worker");
        let worker = WorkerProcess { child, log_path };
        worker.wait_for_log("consuming", Duration::from_secs(60)).await;
        worker
    }

    /// Starts a long-running `pgfleet` command (`args`, e.g. `["serve", …]`), logging to a
    /// file; waits until its log says `ready`.
    pub async fn spawn_process(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ready: &str,
    ) -> WorkerProcess {
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = self.pgfleet();
        cmd.args(args).stdout(Stdio::null()).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn pgfleet");
        let process = WorkerProcess { child, log_path };
        process.wait_for_log(ready, Duration::from_secs(60)).await;
        process
    }

    /// Starts `pgfleet serve` on a free port with `API_TOKEN`; returns it and its base URL.
    pub async fn spawn_api(&self, name: &str) -> (WorkerProcess, String) {
        let process = self
            .spawn_process(
                name,
                &["serve", "--listen", "127.0.0.1:0"],
                &[("PGFLEET_API_TOKEN", API_TOKEN)],
                "listening on http://",
            )
            .await;
        let base = api_base_url(&process.log());
        (process, base)
    }

    /// Publishes a raw message to `<ns>.jobs` with plain AMQP, as any application would.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        self.publish_raw_many(routing_key, &[body.to_vec()]).await;
    }

    pub async fn publish_raw_many(&self, routing_key: &str, bodies: &[Vec<u8>]) {
        let exchange = format!("{}.jobs", self.namespace);
        publish_as(AMQP_URL, &exchange, routing_key, bodies)
            .await
            .expect("the broker confirms the message");
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

    pub async fn wait_tenant_active(&self, catalog: &Catalog, slug: &str, timeout: Duration) -> TenantRecord {
        let slug = TenantSlug::parse(slug).unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = catalog.tenant(&slug).await.unwrap() {
                if t.status == TenantStatus::Active {
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

    /// Waits until the job with `key` (a producer's key, or one pgfleet gave its own job,
    /// e.g. `migrate:<rollout>:<slug>`) is in `status`.
    pub async fn wait_job(&self, catalog: &Catalog, key: &str, status: &str, timeout: Duration) -> JobRecord {
        let deadline = Instant::now() + timeout;
        loop {
            let found = match catalog.job_by_producer_key(key).await.unwrap() {
                Some(job) => Some(job),
                None => catalog.job_by_key(key).await.unwrap(),
            };
            if let Some(job) = found {
                if job.status.as_str() == status {
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

    /// A database name outside pgfleet's reserved `<namespace>_…` names (restore targets,
    /// databases made by hand), still dropped by `cleanup`: `rt_<namespace suffix>_<name>`.
    pub fn outside_name(&self, name: &str) -> String {
        format!("{}_{name}", self.outside_prefix())
    }

    fn outside_prefix(&self) -> String {
        self.namespace.replacen("it_", "rt_", 1)
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
        sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1")
            .bind(format!("{}_", self.namespace))
            .fetch_all(&mut admin)
            .await
            .unwrap()
    }

    /// Drops everything this test created: tenant databases and roles, the catalog, queues.
    pub async fn cleanup(self) {
        if let Ok(mut second) = PgConnection::connect(SECOND_URL).await {
            let prefix = format!("{}_", self.namespace);
            let dbs: Vec<String> =
                sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)")
                    .bind(&prefix)
                    .fetch_all(&mut second)
                    .await
                    .unwrap_or_default();
            for db in dbs {
                let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                    .execute(&mut second)
                    .await;
            }
            let roles: Vec<String> =
                sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1)")
                    .bind(&prefix)
                    .fetch_all(&mut second)
                    .await
                    .unwrap_or_default();
            for role in roles {
                let _ = sqlx::raw_sql(&format!("DROP ROLE IF EXISTS \"{role}\""))
                    .execute(&mut second)
                    .await;
            }
        }
        let mut admin = admin().await;
        let mut databases = self.tenant_databases().await;
        databases.push(format!("{}_catalog", self.namespace));
        databases.extend(
            sqlx::query_scalar::<_, String>(
                "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)",
            )
            .bind(format!("{}_", self.outside_prefix()))
            .fetch_all(&mut admin)
            .await
            .unwrap_or_default(),
        );
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
                let mut queues: Vec<String> = JobKind::ALL.iter().map(|k| ns.kind_queue(*k)).collect();
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

/// Publishes `bodies` to `exchange` with publisher confirms, connecting with `url` (its
/// user and password); `Err` with the broker's words if it refuses or nacks one.
pub async fn publish_as(
    url: &str,
    exchange: &str,
    routing_key: &str,
    bodies: &[Vec<u8>],
) -> Result<(), String> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        for body in bodies {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2),
                )
                .await?
                .await?;
            if !confirm.is_ack() {
                return Ok(false);
            }
        }
        Ok::<_, lapin::Error>(true)
    }
    .await;
    let _ = conn.close(200, "bye".into()).await;
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err("nacked by the broker".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Declares the topology as every pgfleet process does at start (for tests that publish
/// before an in-process worker has connected).
pub async fn declare_topology(ns: &Namespace) {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    pgfleet_shared::queue::declare_topology(&conn, ns).await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
}

/// Fault points that fail the first time `point` is reached; the counter says how often it was.
pub fn fail_once_at(point: &'static str) -> (FaultPoints, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reached.clone();
    let faults = FaultPoints::new(move |at, _| {
        if at == point && counter.fetch_add(1, Ordering::SeqCst) == 0 {
            anyhow::bail!("simulated failure at {point}");
        }
        Ok(())
    });
    (faults, reached)
}

/// Bearer token of the APIs tests start.
pub const API_TOKEN: &str = "test-token-5f0c2a9e-but-long-enough";

/// `http://127.0.0.1:PORT` from a log line "… listening on http://127.0.0.1:PORT".
pub fn api_base_url(log: &str) -> String {
    let start = log.find("listening on http://").expect("API address in the log") + "listening on ".len();
    let url: String = log[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.'))
        .collect();
    url
}

/// An HTTP client sending `token` (if any) as the bearer token.
pub fn http(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
    }
    pgfleet_shared::neon::client::install_crypto_provider();
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub const S3_KEY: &str = "testing";
pub const S3_SECRET: &str = "testing";

/// A local S3-compatible server (moto) on its own loopback port. It dies with the test
/// process (a watchdog shell kills it), or on `stop`.
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub endpoint: String,
}

impl S3Server {
    pub fn start() -> Self {
        let port = free_port();
        let mut server = Self {
            child: None,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        server.restart();
        server
    }

    /// (Re)starts the server on the same port. moto keeps its state in memory, so a
    /// restarted server is empty.
    pub fn restart(&mut self) {
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server not found: install it with `pip install \"moto[server]\"` (.ci/run does)");
        let watchdog = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; kill {} 2>/dev/null",
            std::process::id(),
            child.id()
        );
        let _ = Command::new("sh")
            .args(["-c", &watchdog])
            .stdout(Stdio::null())
            .spawn();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One S3 server shared by the tests that need no private one.
pub fn shared_s3() -> &'static S3Server {
    static SERVER: std::sync::OnceLock<S3Server> = std::sync::OnceLock::new();
    SERVER.get_or_init(S3Server::start)
}

/// In-process stores read the standard AWS variables; all in-process users share one server.
fn set_shared_s3_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ENDPOINT_URL", &shared_s3().endpoint);
        std::env::set_var("AWS_ACCESS_KEY_ID", S3_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", S3_SECRET);
        std::env::set_var("AWS_REGION", "us-east-1");
    });
}

pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(S3_KEY, S3_SECRET, None, None, "test"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Inserts `n` active tenants `<prefix>-<i>` with `schedule`, as catalog rows only.
pub async fn fake_tenants(catalog: &Catalog, prefix: &str, n: i32, schedule: &str) -> Vec<String> {
    let server = catalog.server_by_name("default").await.unwrap();
    sqlx::query(
        "INSERT INTO tenants (slug, status, server_id, database_name, role_name, password_ciphertext,
                              connection_limit, backup_schedule)
         SELECT $1 || '-' || i, 'active', $2, 'fake_db_' || $1 || i, 'fake_role_' || $1 || i, '\\x00', 10, $3
           FROM generate_series(1, $4) AS i",
    )
    .bind(prefix)
    .bind(server.id)
    .bind(schedule)
    .bind(n)
    .execute(catalog.pool())
    .await
    .unwrap();
    (1..=n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Messages ready in `queue`.
pub async fn queue_depth(queue: &str) -> u32 {
    queue_counts(queue).await.0
}

/// (messages ready, consumers) of `queue`.
pub async fn queue_counts(queue: &str) -> (u32, u32) {
    try_queue_counts(queue)
        .await
        .unwrap_or_else(|| panic!("queue {queue} does not exist"))
}

/// (messages ready, consumers) of `queue`, or `None` if it doesn't exist (right now).
pub async fn try_queue_counts(queue: &str) -> Option<(u32, u32)> {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await;
    let _ = conn.close(200, "bye".into()).await;
    declared.ok().map(|d| (d.message_count(), d.consumer_count()))
}

/// A connection as the tenant's own role, through the URL `pgfleet tenant url` prints.
pub async fn tenant_conn(env: &TestEnv, slug: &str) -> PgConnection {
    let (ok, url, err) = env.run_cli(&["tenant", "url", slug]);
    assert!(ok, "{err}");
    PgConnection::connect(url.trim()).await.unwrap()
}

/// The local server's `database`, as the superuser.
pub async fn admin_db(database: &str) -> PgConnection {
    PgConnection::connect(&format!("postgres://postgres@127.0.0.1:5432/{database}"))
        .await
        .unwrap()
}

/// Runs a CLI command that must succeed; returns its stdout.
pub fn cli_ok(env: &TestEnv, args: &[&str]) -> String {
    let (ok, out, err) = env.run_cli(args);
    assert!(ok, "pgfleet {args:?} failed:\n{out}\n{err}");
    out
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
                panic!("worker log has no {needle:?} within {timeout:?}:\n{}", self.log());
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
    sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        .fetch_all(conn)
        .await
        .unwrap()
}

/// A TCP proxy on a loopback port in front of `target` (e.g. the catalog's Postgres), that
/// a test can cut — every open connection is dropped and new ones are refused — or
/// black-hole — connections stay open but nothing is forwarded either way, as when a
/// network path dies silently — and restore, to make a real outage on a real connection.
pub struct TcpProxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    cut: std::sync::atomic::AtomicBool,
    /// Cancelled to drop every forwarded connection; replaced on restore.
    connections: std::sync::Mutex<tokio_util::sync::CancellationToken>,
    /// Cancelled to stop forwarding (connections kept open); replaced on restore.
    hole: std::sync::Mutex<tokio_util::sync::CancellationToken>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(ProxyState {
            cut: false.into(),
            connections: std::sync::Mutex::new(tokio_util::sync::CancellationToken::new()),
            hole: std::sync::Mutex::new(tokio_util::sync::CancellationToken::new()),
        });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if shared.cut.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the client sees its connection closed
                }
                let stop = shared.connections.lock().unwrap().clone();
                let hole = shared.hole.lock().unwrap().clone();
                tokio::spawn(async move {
                    if hole.is_cancelled() {
                        // Accepted, never answered.
                        stop.cancelled().await;
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = stop.cancelled() => {}
                        _ = hole.cancelled() => stop.cancelled().await,
                    }
                });
            }
        });
        Self { port, state }
    }

    /// Drops every connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.state.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        Self::renew(&self.state.connections);
    }

    /// Keeps every connection open but forwards nothing, on them or on new ones, until
    /// `restore`.
    pub fn black_hole(&self) {
        self.state.hole.lock().unwrap().cancel();
    }

    /// Forwards again; black-holed connections are dropped (their peers see them close).
    pub fn restore(&self) {
        self.state.cut.store(false, std::sync::atomic::Ordering::SeqCst);
        if self.state.hole.lock().unwrap().is_cancelled() {
            *self.state.hole.lock().unwrap() = tokio_util::sync::CancellationToken::new();
            Self::renew(&self.state.connections);
        }
    }

    fn renew(token: &std::sync::Mutex<tokio_util::sync::CancellationToken>) {
        let mut token = token.lock().unwrap();
        token.cancel();
        *token = tokio_util::sync::CancellationToken::new();
    }
}

/// An S3-compatible gateway in front of `upstream` that lacks `ListMultipartUploads` (it
/// answers 501 NotImplemented, as several gateways do) and forwards everything else.
/// Dropping it stops it: then nothing answers on its port.
pub struct S3Gateway {
    pub endpoint: String,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl S3Gateway {
    pub async fn start(upstream: &str) -> Self {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (upstream, counter) = (upstream.to_owned(), refused.clone());
        pgfleet_shared::neon::client::install_crypto_provider();
        let client = reqwest::Client::new();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (upstream, counter, client) = (upstream.clone(), counter.clone(), client.clone());
            async move {
                let query = uri.query().unwrap_or_default();
                let lists_uploads = method == Method::GET && query.split('&').any(|p| p == "uploads" || p.starts_with("uploads="));
                if lists_uploads {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NotImplemented</Code>\
                               <Message>A header you provided implies functionality that is not implemented</Message></Error>";
                    return (StatusCode::NOT_IMPLEMENTED, HeaderMap::new(), Bytes::from(xml));
                }
                let url = format!("{upstream}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
                let mut forwarded = client.request(method, url).body(body);
                for (name, value) in &headers {
                    if name != "host" && name != "content-length" {
                        forwarded = forwarded.header(name, value);
                    }
                }
                match forwarded.send().await {
                    Ok(answer) => {
                        let status = answer.status();
                        let mut headers = HeaderMap::new();
                        for (name, value) in answer.headers() {
                            if name != "transfer-encoding" {
                                headers.insert(name.clone(), value.clone());
                            }
                        }
                        let body = answer.bytes().await.unwrap_or_default();
                        (status, headers, body)
                    }
                    Err(_) => (StatusCode::BAD_GATEWAY, HeaderMap::new(), Bytes::new()),
                }
            }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            endpoint,
            refused,
            server,
        }
    }

    /// `ListMultipartUploads` calls refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for S3Gateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Publishes one message with `headers` to `<ns>.jobs`.
pub async fn publish_with_headers(
    env: &TestEnv,
    routing_key: &str,
    body: &[u8],
    headers: lapin::types::FieldTable,
) {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = channel
        .basic_publish(
            format!("{}.jobs", env.namespace).as_str().into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let _ = conn.close(200, "bye".into()).await;
}

/// A backup job of `slug` with `key`, recorded and claimed as a worker would (owner
/// "test"), for tests that run a handler in process.
pub async fn claim_backup(catalog: &Catalog, slug: &TenantSlug, key: &str) -> JobRecord {
    let request = pgfleet_shared::JobRequest {
        tenant: slug.clone(),
        key: Some(key.into()),
        spec: pgfleet_shared::JobSpec::Backup(pgfleet_shared::message::NoFields {}),
        job: None,
    };
    let new = pgfleet_shared::catalog::NewJob::from_request(&request, None, 3);
    match catalog
        .claim_job(&new, "test", Duration::from_secs(60))
        .await
        .unwrap()
    {
        pgfleet_shared::catalog::ClaimOutcome::Claimed(job) => job,
        other => panic!("not claimed: {other:?}"),
    }
}

/// The second cluster's `database`, as the superuser; a clear failure if it is not running.
pub async fn second_db(database: &str) -> PgConnection {
    PgConnection::connect(&format!("postgres://postgres@127.0.0.1:5433/{database}"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the second Postgres cluster (127.0.0.1:5433) is not reachable ({e}); \
                 `.ci/run` starts it, or: pg_createcluster 15 fleet2 --port 5433 --start -- --auth-host=trust --auth-local=trust"
            )
        })
}
