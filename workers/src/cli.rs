//! Command-line interface: flags with `PGFLEET_*` environment twins (DESIGN.md
//! "Configuration"). Values of secret-bearing flags are never shown in `--help`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use pgfleet_shared::config::{DEFAULT_AMQP_URL, DEFAULT_BACKUP_URL, DEFAULT_CATALOG_URL, DEFAULT_NAMESPACE};
use pgfleet_shared::scheduler::SchedulerSettings;
use pgfleet_shared::secrets::{KeySource, Keyring};
use pgfleet_shared::status::JobStatus;
use pgfleet_shared::{Config, KindSlots, Namespace, TenantSlug, WorkerSettings};
use std::path::PathBuf;
use std::time::Duration;

/// pgfleet: a control plane for database-per-tenant PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "pgfleet", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct GlobalArgs {
    /// Catalog database (created if missing, migrated on start).
    #[arg(long, global = true, env = "PGFLEET_CATALOG_URL", default_value = DEFAULT_CATALOG_URL, hide_env_values = true, hide_default_value = true)]
    pub catalog_url: String,
    /// RabbitMQ URL.
    #[arg(long, global = true, env = "PGFLEET_AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true, hide_default_value = true)]
    pub amqp_url: String,
    /// Admin URL of the default tenant server. Seeds an empty catalog (default: the local
    /// Postgres); afterwards it must match the registered one — `pgfleet server set default
    /// --url` moves a server.
    #[arg(long, global = true, env = "PGFLEET_SERVER_URL", hide_env_values = true)]
    pub server_url: Option<String>,
    /// Prefix of every exchange, queue, tenant database and role of this install.
    #[arg(long, global = true, env = "PGFLEET_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Folder of tenant schema migrations (`<version>_<name>.sql`). Default: `migrations/tenant`
    /// if it exists, else the built-in example schema.
    #[arg(long, global = true, env = "PGFLEET_TENANT_MIGRATIONS")]
    pub tenant_migrations: Option<PathBuf>,
    /// Base64 key (32 bytes) encrypting credentials in the catalog. Default: the key file.
    #[arg(long, global = true, env = "PGFLEET_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Other keys accepted for decryption only, comma-separated: the previous key during a
    /// rotation (see `pgfleet secret-key rotate`), or the next one while it is rolled out.
    #[arg(
        long,
        global = true,
        env = "PGFLEET_SECRET_KEY_PREVIOUS",
        hide_env_values = true
    )]
    pub secret_key_previous: Option<String>,
    /// File holding the secret key. Default: `<data dir>/secret.key` (created by `up`).
    #[arg(long, global = true, env = "PGFLEET_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// Local state of `pgfleet up`: the generated secret key, local backups.
    #[arg(long, global = true, env = "PGFLEET_DATA_DIR", default_value = "pgfleet-data")]
    pub data_dir: PathBuf,
    /// Backup store: file://DIR or s3://BUCKET/PREFIX (standard AWS_* variables; AWS_ENDPOINT_URL
    /// for S3-compatible stores).
    #[arg(long, global = true, env = "PGFLEET_BACKUP_URL", default_value = DEFAULT_BACKUP_URL)]
    pub backup_url: String,
    /// gzip level of backups: 1 (fastest) … 9 (smallest).
    #[arg(long, global = true, env = "PGFLEET_BACKUP_GZIP_LEVEL", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub backup_gzip_level: u32,
    /// Longest one S3 request may take before it is retried (a part of up to 8 MiB at first).
    #[arg(long, global = true, env = "PGFLEET_S3_ATTEMPT_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub s3_attempt_timeout: std::time::Duration,
    /// Attempts before a job is dead (recorded on each job when it is created).
    #[arg(long, global = true, env = "PGFLEET_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: i32,
    /// Connection limit of each new tenant role.
    #[arg(
        long,
        global = true,
        env = "PGFLEET_TENANT_CONNECTION_LIMIT",
        default_value_t = 20
    )]
    pub tenant_connection_limit: i32,
    /// `statement_timeout` of each new tenant role (e.g. 30s, 500ms; off: the server's).
    #[arg(long, global = true, env = "PGFLEET_TENANT_STATEMENT_TIMEOUT", default_value = "off", value_parser = pgfleet_shared::limits::parse_timeout_ms)]
    pub tenant_statement_timeout: ::std::option::Option<i32>,
    /// `idle_in_transaction_session_timeout` of each new tenant role (e.g. 5m; off).
    #[arg(long, global = true, env = "PGFLEET_TENANT_IDLE_IN_TRANSACTION_TIMEOUT", default_value = "off", value_parser = pgfleet_shared::limits::parse_timeout_ms)]
    pub tenant_idle_in_transaction_timeout: ::std::option::Option<i32>,
    /// `work_mem` of each new tenant role (e.g. 16MB; off).
    #[arg(long, global = true, env = "PGFLEET_TENANT_WORK_MEM", default_value = "off", value_parser = pgfleet_shared::limits::parse_work_mem_kb)]
    pub tenant_work_mem: ::std::option::Option<i32>,
    /// Storage quota of each new tenant (e.g. 10GB; off): reported when exceeded, never enforced.
    #[arg(long, global = true, env = "PGFLEET_TENANT_STORAGE_QUOTA", default_value = "off", value_parser = parse_quota)]
    pub tenant_storage_quota: ::std::option::Option<i64>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "PGFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Everything in one process: migrate the catalog, run the worker pool, the backup
    /// scheduler and the HTTP API. Works with no configuration on a machine with local
    /// Postgres and RabbitMQ (the API token is generated into the data dir if not set).
    Up {
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        api: ServeArgs,
        #[command(flatten)]
        scheduler: SchedulerArgs,
    },
    /// Run a worker: consume jobs and run them.
    Worker(WorkerArgs),
    /// Run the HTTP API.
    Serve(ServeArgs),
    /// Run the backup scheduler: enqueue each active tenant's backups on its cron schedule
    /// (UTC). Any number of replicas may run; each slot is enqueued once.
    Scheduler(SchedulerArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Inspect jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Inspect tenant servers.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Exit 0 if a health URL answers 2xx within 3 s (the container healthcheck).
    Probe {
        #[arg(env = "PGFLEET_PROBE_URL", default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
    /// Messages that could not be processed: list, replay as a new job, or discard.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Failure notifications: webhooks on job failed/dead, rollout halted, backup overdue.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Back up one tenant or all active tenants (pg_dump | gzip into the backup store).
    Backup {
        /// Tenant to back up.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        slug: Option<TenantSlug>,
        /// Every active tenant.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        enqueue: EnqueueArgs,
    },
    /// Inspect backups.
    #[command(subcommand)]
    Backups(BackupsCommand),
    /// Delete backups past retention (never the newest keep-min good ones).
    Prune {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        slug: Option<TenantSlug>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        enqueue: EnqueueArgs,
    },
    /// Roll the tenant migrations folder out to every tenant (or one): records the set in
    /// the catalog and enqueues one `migrate` job per tenant not at the target version.
    Migrate {
        /// Every active tenant.
        #[arg(long, required_unless_present = "tenant", conflicts_with = "tenant")]
        all: bool,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<TenantSlug>,
        /// Block until the rollout ends, showing progress; exit 0 only if every tenant succeeded.
        #[arg(long)]
        wait: bool,
        /// Migrations running at once on one tenant server, whatever the number of workers.
        #[arg(long, default_value_t = pgfleet_shared::jobs::migrate::DEFAULT_SERVER_CONCURRENCY)]
        concurrency: i32,
        /// Migrate this many tenants first; the rest only if all of them succeed.
        #[arg(long, default_value_t = 0)]
        canary: usize,
        /// Halt the rollout once this many tenants failed (jobs not yet started are skipped).
        #[arg(long)]
        max_failures: Option<i32>,
        /// Show what would be migrated, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long a tenant's migration waits for a lock (e.g. held by one of the tenant's
        /// sessions) before that tenant fails and is retried; 0: for ever.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        lock_timeout: std::time::Duration,
        /// Longest a migration statement may run; 0: no limit.
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        statement_timeout: std::time::Duration,
        #[arg(long)]
        json: bool,
    },
    /// Inspect rollouts.
    #[command(subcommand)]
    Rollouts(RolloutsCommand),
    /// Restore a tenant's backup into a new database on the tenant's server.
    Restore {
        slug: TenantSlug,
        /// Backup id (default: the newest good one).
        #[arg(long)]
        backup: Option<uuid::Uuid>,
        /// Name of the new database (refused if it exists).
        #[arg(long)]
        into: String,
        #[command(flatten)]
        enqueue: EnqueueArgs,
    },
    /// Print a new random secret key (for PGFLEET_SECRET_KEY); `rotate` re-seals every
    /// stored credential with the current key.
    SecretKey {
        #[command(subcommand)]
        action: Option<SecretKeyCommand>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Job slots per kind, from which the defaults of `--kind-concurrency` follow:
    /// provision, backup and migrate this many each, restore, delete and prune a quarter.
    #[arg(long, env = "PGFLEET_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Slots of particular kinds, e.g. `backup=2,provision=16`. Each kind has a pool of its
    /// own (and its queue's prefetch matches it): a signup never waits for a backup's slot.
    #[arg(long, env = "PGFLEET_KIND_CONCURRENCY", default_value = "")]
    pub kind_concurrency: String,
    /// Seconds a job's lease lasts without renewal (renewed every third of it).
    #[arg(long, env = "PGFLEET_LEASE_SECS", default_value_t = 30)]
    pub lease_secs: u64,
    /// First retry delay in milliseconds (doubles per attempt, with jitter).
    #[arg(long, env = "PGFLEET_BACKOFF_MS", default_value_t = 2000)]
    pub backoff_ms: u64,
    /// Milliseconds between sweeps (expired leases, unpublished jobs).
    #[arg(long, env = "PGFLEET_SWEEP_INTERVAL_MS", default_value_t = 2000)]
    pub sweep_interval_ms: u64,
    /// Seconds running jobs may take to finish on shutdown before their leases are handed back.
    #[arg(long, env = "PGFLEET_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Serve the worker's probes here (`GET /healthz`, and `GET /readyz`: 503 while it does
    /// not consume, e.g. with the catalog unreachable). `pgfleet up` reports them in the
    /// API's `/readyz` instead.
    #[arg(long, env = "PGFLEET_HEALTH_LISTEN")]
    pub health_listen: Option<std::net::SocketAddr>,
    /// Milliseconds a delivery may wait for a free job slot before it is handed back to
    /// the catalog (and re-published by a sweep).
    #[arg(long, env = "PGFLEET_DEFER_AFTER_MS", default_value_t = 60_000)]
    pub defer_after_ms: u64,
    /// Deliveries of one message (as RabbitMQ counts them) after which it goes to the
    /// dead-letter queue unprocessed: the guard against a message that crashes workers.
    #[arg(long, env = "PGFLEET_DELIVERY_LIMIT", default_value_t = pgfleet_shared::queue::DEFAULT_DELIVERY_LIMIT)]
    pub delivery_limit: i64,
    /// Finished jobs, rollouts and dead letters older than this are deleted (e.g. 30d, 12h).
    #[arg(long, env = "PGFLEET_HISTORY_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub history_retention: Duration,
    /// Warm pool: databases kept ready on each self-hosted server so a signup renames one
    /// instead of creating one (0: none). A server's own `server set --warm-pool` wins.
    #[arg(long, env = "PGFLEET_WARM_POOL", default_value_t = 0)]
    pub warm_pool: i32,
    /// How often each worker measures the tenants' databases (storage figures and quotas).
    #[arg(long, env = "PGFLEET_STORAGE_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub storage_interval: Duration,
    /// Whether this worker posts webhook notifications (off: another worker does, e.g. when
    /// this one's network has no egress).
    #[arg(long, env = "PGFLEET_DELIVER_WEBHOOKS", default_value_t = true, action = clap::ArgAction::Set)]
    pub deliver_webhooks: bool,
    /// Benchmarks only (`bench/noop-jobs.sh`): every job this worker claims is recorded as
    /// succeeded without running its handler, so what is measured is the runtime's own
    /// work. Refused outside a benchmark namespace (`bench_…`).
    #[arg(long, hide = true)]
    pub noop_jobs: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address the HTTP API listens on (port 0: any free port, logged at start).
    #[arg(long, env = "PGFLEET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Bearer token every /v1 request must present (at least 16 characters).
    #[arg(long, env = "PGFLEET_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Bearer token `/metrics` requires (at least 16 characters). Without one, `/metrics` is
    /// open: it lists every tenant's slug with its backup age, and job and queue figures.
    #[arg(long, env = "PGFLEET_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// `/metrics` also exports `pgfleet_tenant_last_backup_age_seconds{tenant}`, one series
    /// per active tenant (by default only the distribution and the 10 oldest).
    #[arg(long, env = "PGFLEET_METRICS_PER_TENANT")]
    pub metrics_per_tenant: bool,
    /// Serve without a token. Development only: anyone who reaches the port controls the fleet.
    #[arg(long)]
    pub insecure_dev: bool,
    /// Another token that signs in to the web console (`/console`) as admin (the API token
    /// does too).
    #[arg(long, env = "PGFLEET_CONSOLE_TOKEN", hide_env_values = true)]
    pub console_token: Option<String>,
    /// A token that signs in to the web console as a viewer: sees everything, acts on nothing.
    #[arg(long, env = "PGFLEET_CONSOLE_VIEWER_TOKEN", hide_env_values = true)]
    pub console_viewer_token: Option<String>,
    /// Mark the console's session cookie `Secure` (true/false). Unset: when the request came
    /// through a TLS-terminating proxy (`X-Forwarded-Proto: https`).
    #[arg(long, env = "PGFLEET_CONSOLE_SECURE_COOKIE", action = clap::ArgAction::Set)]
    pub console_secure_cookie: Option<bool>,
}

#[derive(Args, Debug, Clone)]
pub struct SchedulerArgs {
    /// Spread each slot's backups over this window (e.g. 30m, 2h) instead of starting them
    /// all at the slot time; each tenant keeps a fixed place in the window.
    #[arg(long, env = "PGFLEET_SCHEDULE_SPREAD", default_value = "0s", value_parser = parse_duration)]
    pub spread: std::time::Duration,
    /// How often schedules are evaluated.
    #[arg(long, env = "PGFLEET_SCHEDULE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub schedule_interval: std::time::Duration,
    /// Backups one tick enqueues at most (longest owed first); a tick that leaves some
    /// due is followed by the next at once.
    #[arg(long, env = "PGFLEET_SCHEDULE_MAX_PER_TICK", default_value_t = pgfleet_shared::scheduler::DEFAULT_MAX_PER_TICK as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_per_tick: u32,
}

/// A storage quota (`off`: none).
pub fn parse_quota(raw: &str) -> Result<Option<i64>, String> {
    if raw.trim() == "off" {
        return Ok(None);
    }
    pgfleet_shared::limits::parse_size(raw).map(Some)
}

fn parse_on_off(raw: &str) -> Result<bool, String> {
    match raw {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{raw:?}: use on or off")),
    }
}

/// A capacity: a number of tenants, or `none`.
fn parse_capacity(raw: &str) -> Result<Option<i32>, String> {
    if raw == "none" {
        return Ok(None);
    }
    raw.parse::<i32>()
        .ok()
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(|| format!("{raw:?} is not a capacity: a number of tenants (0 or more), or none"))
}

fn parse_warm_pool(raw: &str) -> Result<Option<i32>, String> {
    if raw == "default" {
        return Ok(None);
    }
    raw.parse::<i32>()
        .ok()
        .filter(|n| (0..=1000).contains(n))
        .map(Some)
        .ok_or_else(|| format!("{raw:?} is not a pool size: 0 to 1000, or default"))
}

fn parse_optional_region(raw: &str) -> Result<Option<String>, String> {
    if raw == "none" {
        return Ok(None);
    }
    parse_region(raw).map(Some)
}

fn parse_region(raw: &str) -> Result<String, String> {
    pgfleet_shared::message::validate_region(raw)
        .map(|()| raw.to_owned())
        .map_err(|e| e.to_string())
}

impl GlobalArgs {
    pub fn config(&self) -> anyhow::Result<Config> {
        Ok(Config {
            catalog_url: self.catalog_url.clone().into(),
            amqp_url: self.amqp_url.clone().into(),
            server_url: self.server_url.clone().map(Into::into),
            namespace: Namespace::parse(&self.namespace)?,
            tenant_migrations: self.tenant_migrations.clone(),
            tenant_limits: pgfleet_shared::catalog::TenantLimits {
                connection_limit: self.tenant_connection_limit,
                statement_timeout_ms: self.tenant_statement_timeout,
                idle_in_transaction_timeout_ms: self.tenant_idle_in_transaction_timeout,
                work_mem_kb: self.tenant_work_mem,
                storage_quota_bytes: self.tenant_storage_quota,
            },
            backup_url: self.backup_url.clone(),
            backup_gzip_level: self.backup_gzip_level,
            s3_attempt_timeout: self.s3_attempt_timeout,
        })
    }

    fn key_source(&self) -> KeySource<'_> {
        KeySource {
            key: self.secret_key.as_deref(),
            previous: self.secret_key_previous.as_deref(),
            file: self
                .secret_key_file
                .clone()
                .unwrap_or_else(|| self.data_dir.join("secret.key")),
        }
    }

    /// The keyring; `create` (for `up`) makes the key file if there is none.
    pub fn keyring(&self, create: bool) -> anyhow::Result<Keyring> {
        let source = self.key_source();
        let (keyring, created) = source.load(create)?;
        if created {
            tracing::warn!(path = %source.file.display(), "generated a new secret key; keep this file (or set PGFLEET_SECRET_KEY from it): without it the tenants' stored credentials cannot be read");
        }
        Ok(keyring)
    }

    /// The keyring if one is configured, for processes and commands that work without it.
    pub fn optional_keyring(&self) -> anyhow::Result<Option<Keyring>> {
        self.key_source().load_optional()
    }

    pub fn max_attempts(&self) -> i32 {
        self.max_attempts.max(1)
    }
}

impl WorkerArgs {
    pub fn settings(&self, g: &GlobalArgs) -> anyhow::Result<WorkerSettings> {
        if self.noop_jobs && !g.namespace.starts_with("bench_") {
            anyhow::bail!(
                "--noop-jobs records every job as succeeded without running it; it is for benchmark namespaces (bench_…) only"
            );
        }
        Ok(WorkerSettings {
            concurrency: self.concurrency.max(1),
            kind_slots: KindSlots::parse(self.concurrency, &self.kind_concurrency)?,
            lease: Duration::from_secs(self.lease_secs.max(3)),
            max_attempts: g.max_attempts(),
            backoff_base: Duration::from_millis(self.backoff_ms),
            sweep_interval: Duration::from_millis(self.sweep_interval_ms.max(100)),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            defer_after: Duration::from_millis(self.defer_after_ms.max(100)),
            delivery_limit: self.delivery_limit.max(1),
            history_retention: self.history_retention.max(Duration::from_secs(60)),
            storage_interval: self.storage_interval.max(Duration::from_secs(1)),
            deliver_webhooks: self.deliver_webhooks,
            warm_pool: self.warm_pool.max(0),
            noop_jobs: self.noop_jobs,
            ..WorkerSettings::default()
        })
    }
}

impl SchedulerArgs {
    pub fn settings(&self, g: &GlobalArgs) -> SchedulerSettings {
        SchedulerSettings {
            interval: self.schedule_interval.max(Duration::from_secs(1)),
            spread: self.spread,
            max_attempts: g.max_attempts(),
            max_per_tick: self.max_per_tick as usize,
        }
    }
}

pub use pgfleet_shared::config::parse_duration;

#[derive(Args, Debug, Clone)]
pub struct EnqueueArgs {
    /// Block until the job(s) end; exit 0 only if all succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Idempotency key (single-tenant commands): the same key always means the same job.
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Register a tenant server: a self-hosted Postgres (`--url`, its admin URL) or a Neon
    /// account and region (`--neon --region …`, the API key from PGFLEET_NEON_API_KEY), on
    /// which every tenant gets a Neon project of its own.
    Add {
        name: String,
        /// Admin URL of a self-hosted server (stored encrypted, shown redacted); also from
        /// `--url` or PGFLEET_NEW_SERVER_URL, which keep it out of the process list.
        #[arg(conflicts_with_all = ["neon", "url"])]
        admin_url: Option<String>,
        #[arg(
            long,
            env = "PGFLEET_NEW_SERVER_URL",
            hide_env_values = true,
            conflicts_with = "neon"
        )]
        url: Option<String>,
        /// Tenants it may hold (default: no limit). Placement fills the server with the
        /// most free places first.
        #[arg(long)]
        capacity: Option<i32>,
        /// A Neon server: tenants placed on it get one Neon project each.
        #[arg(long)]
        neon: bool,
        /// Region: tenants created with `--region R` are placed on a server of region R.
        /// For Neon, the Neon region id (e.g. aws-us-east-2), required.
        #[arg(long, value_parser = parse_region, required_if_eq("neon", "true"))]
        region: Option<String>,
        /// Postgres major version of new Neon projects (default: Neon's).
        #[arg(long, requires = "neon")]
        pg_version: Option<u32>,
        /// Neon organisation id (needed with a personal API key).
        #[arg(long, requires = "neon")]
        org: Option<String>,
        /// Neon API base URL (tests, private deployments).
        #[arg(long, env = "PGFLEET_NEON_API_URL", default_value = pgfleet_shared::neon::DEFAULT_API_URL, requires = "neon")]
        neon_api_url: String,
        /// Neon API key (stored encrypted in the catalog; never shown).
        #[arg(long, env = "PGFLEET_NEON_API_KEY", hide_env_values = true, requires = "neon")]
        neon_api_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List tenant servers (self-hosted and Neon): tenants, capacity, status, version.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a tenant server: `--url` points it at a new admin URL (the server moved, or
    /// its admin credentials changed; tenants keep their names and passwords), `--capacity`
    /// (a number, or `none`), `--region` (or `none`).
    Set {
        name: String,
        /// New admin URL (stored encrypted, shown redacted).
        #[arg(long, env = "PGFLEET_NEW_SERVER_URL", hide_env_values = true)]
        url: Option<String>,
        #[arg(long, value_parser = parse_capacity)]
        capacity: Option<::std::option::Option<i32>>,
        #[arg(long, value_parser = parse_optional_region)]
        region: Option<::std::option::Option<String>>,
        /// Databases kept ready for signups on this server (`default`: the workers'
        /// PGFLEET_WARM_POOL).
        #[arg(long, value_parser = parse_warm_pool)]
        warm_pool: Option<::std::option::Option<i32>>,
        #[arg(long)]
        json: bool,
    },
    /// Stop placing new tenants on a server; its tenants stay (move them with `tenant move`).
    Drain {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Place new tenants on a drained server again.
    Undrain {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a server that holds no tenant (drain it and move its tenants off first).
    Remove { name: String },
    /// What a tenant role can reach on the server (databases open to PUBLIC, the catalog if
    /// co-located), whether pgfleet's admin role can provision, and max_connections against
    /// the tenants' connection limits. Exits 1 if anything needs attention.
    Check {
        /// Server name (`default` for PGFLEET_SERVER_URL's).
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeadLettersCommand {
    /// Dead letters, newest first, with their reasons.
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Publish a dead letter again as a new job if it can be understood now; forget it.
    Replay {
        id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Forget a dead letter.
    Discard { id: uuid::Uuid },
}

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Register a receiver. Prints its signing secret once (HMAC-SHA256 over
    /// `<timestamp>.<body>`, in `X-Pgfleet-Signature: t=…,v1=…`).
    Add {
        /// Receiver URL (stored sealed; shown as scheme://host/… only). Also from
        /// PGFLEET_WEBHOOK_URL, which keeps it out of the process list.
        #[arg(env = "PGFLEET_WEBHOOK_URL", hide_env_values = true)]
        url: String,
        /// Events, comma-separated (default: all): job.failed, job.dead, rollout.halted,
        /// backup.overdue.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// `json` (the event) or `slack` (a message for Slack's incoming webhooks).
        #[arg(long, default_value = "json")]
        format: String,
        #[arg(long)]
        json: bool,
    },
    /// List webhooks.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a webhook (and its pending deliveries).
    Remove { id: uuid::Uuid },
    /// Delivery attempts, newest first.
    Deliveries {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretKeyCommand {
    /// Re-seal every stored credential with PGFLEET_SECRET_KEY (opening old ones with
    /// PGFLEET_SECRET_KEY_PREVIOUS), in batches, beside running processes; then retire the
    /// previous keys, so no process can start with one of them. Safe to re-run.
    Rotate {
        /// Rows per transaction.
        #[arg(long, default_value_t = 500)]
        batch: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RolloutsCommand {
    /// Rollouts, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One rollout with its per-tenant results.
    Show {
        id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Halts a running rollout: jobs not started are skipped, running ones finish.
    Halt {
        id: uuid::Uuid,
        /// Recorded as the rollout's halt reason.
        #[arg(long, default_value = "halted by an operator")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Resumes a halted rollout: the tenants its halt skipped get new jobs (a canary that
    /// failed is passed); tenants that failed stay failed (`pgfleet migrate --tenant`).
    Resume {
        id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackupsCommand {
    /// A tenant's backups, newest first.
    List {
        slug: TenantSlug,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Provision a tenant: role, database, schema.
    Create {
        slug: TenantSlug,
        /// Region: picks the tenant server registered for it (else the default server).
        #[arg(long, value_parser = parse_region)]
        region: Option<String>,
        /// Idempotency key: the same key always means the same job.
        #[arg(long)]
        key: Option<String>,
        /// Block until the job ends; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        /// At most this many (by slug); with more left, the next page's `--cursor` is
        /// printed to stderr. Without it: every tenant.
        #[arg(long)]
        limit: Option<i64>,
        /// Start after the page that printed this cursor.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one tenant.
    Show {
        slug: TenantSlug,
        #[arg(long)]
        json: bool,
    },
    /// Print the tenant's own connection URL (contains its password). For a Neon tenant:
    /// the pooled URI (for applications); `--direct` for the direct one (migrations, dumps).
    Url {
        slug: TenantSlug,
        #[arg(long)]
        direct: bool,
        /// A Neon tenant's branch (made by `tenant branch` or a restore) instead.
        #[arg(long, conflicts_with = "direct")]
        branch: Option<String>,
    },
    /// Make a dev/test copy of a tenant and print its connection URL (contains the
    /// password). Self-hosted: a database and a role of its own on the tenant's server,
    /// from the newest good backup (or `--from-backup`), or `--schema-only` from the live
    /// schema; waits for the job. Neon: a branch of its project with a read-write endpoint.
    /// Asking again for the same name prints it again.
    Branch {
        slug: TenantSlug,
        #[arg(long)]
        name: String,
        /// The tenant's schema without its data.
        #[arg(long, conflicts_with = "from_backup")]
        schema_only: bool,
        /// Backup id to copy (self-hosted; default: the newest good one).
        #[arg(long)]
        from_backup: Option<uuid::Uuid>,
        /// Back the copy up with its tenant (scheduled and requested backups; off by default).
        #[arg(long)]
        backups: bool,
        /// Print the branch as JSON (with its `url`).
        #[arg(long)]
        json: bool,
    },
    /// List a tenant's branches made by pgfleet (dev copies, Neon restore targets).
    Branches {
        slug: TenantSlug,
        #[arg(long)]
        json: bool,
    },
    /// Turn backups of a dev copy on or off (they run with the tenant's backups).
    BranchSet {
        slug: TenantSlug,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_on_off, action = clap::ArgAction::Set)]
        backups: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete a branch made by `tenant branch` (or a restore).
    BranchDelete {
        slug: TenantSlug,
        #[arg(long)]
        name: String,
    },
    /// Move a self-hosted tenant to another server: logins blocked, sessions ended, pg_dump
    /// streamed into the target, every table verified, the catalog switched, the old copy
    /// dropped. Prints the downtime.
    Move {
        slug: TenantSlug,
        /// Target server.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        enqueue: EnqueueArgs,
    },
    /// Suspend a tenant: its role may not log in, its sessions end, scheduled backups stop.
    Suspend {
        slug: TenantSlug,
        #[arg(long)]
        json: bool,
    },
    /// Resume a suspended tenant (and bring its schema up to date if a rollout moved on).
    Resume {
        slug: TenantSlug,
        #[arg(long)]
        json: bool,
    },
    /// Change a tenant's backup settings and limits.
    Set {
        slug: TenantSlug,
        /// Connection limit of its role (-1: none).
        #[arg(long, allow_negative_numbers = true)]
        connection_limit: Option<i32>,
        /// Its role's statement_timeout (e.g. 30s, 500ms; off).
        #[arg(long, value_parser = pgfleet_shared::limits::parse_timeout_ms)]
        statement_timeout: Option<::std::option::Option<i32>>,
        /// Its role's idle_in_transaction_session_timeout (e.g. 5m; off).
        #[arg(long, value_parser = pgfleet_shared::limits::parse_timeout_ms)]
        idle_in_transaction_timeout: Option<::std::option::Option<i32>>,
        /// Its role's work_mem (e.g. 16MB; off).
        #[arg(long, value_parser = pgfleet_shared::limits::parse_work_mem_kb)]
        work_mem: Option<::std::option::Option<i32>>,
        /// Storage quota (e.g. 10GB; off): reported when exceeded, never enforced.
        #[arg(long, value_parser = parse_quota)]
        storage_quota: Option<::std::option::Option<i64>>,
        /// Backup schedule, cron syntax in UTC (e.g. "0 3 * * *"), or "off".
        #[arg(long)]
        backup_schedule: Option<String>,
        /// Days backups are kept.
        #[arg(long)]
        retention_days: Option<i32>,
        /// Newest good backups always kept, whatever their age.
        #[arg(long)]
        keep_min: Option<i32>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a tenant: a final backup, then its database and role are dropped.
    Delete {
        slug: TenantSlug,
        #[command(flatten)]
        enqueue: EnqueueArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Only jobs in this status (queued, running, succeeded, failed, dead).
        #[arg(long)]
        status: Option<JobStatus>,
        /// Only jobs of this tenant.
        #[arg(long)]
        tenant: Option<TenantSlug>,
        /// At most this many, newest first; with more left, the next page's `--cursor` is
        /// printed to stderr.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Start after the page that printed this cursor.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one job.
    Show {
        id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Retry a failed or dead job: a new job with the same request (asking twice gives the
    /// same one).
    Retry {
        id: uuid::Uuid,
        /// Block until the new job ends; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued job (not started yet).
    Cancel {
        id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
}
