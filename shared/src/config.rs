//! Configuration shared by every pgfleet process. The binary fills it from flags and their
//! `PGFLEET_*` environment twins; tests build it directly. URLs that may carry a password
//! are `SecretString`s, so `Debug` never prints them.

use crate::message::JobKind;
use anyhow::{bail, Result};
use secrecy::SecretString;
use std::path::PathBuf;
use std::time::Duration;

/// Defaults of the configuration (DESIGN.md "Configuration").
pub const DEFAULT_CATALOG_URL: &str = "postgres://postgres@127.0.0.1:5432/pgfleet";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_BACKUP_URL: &str = "file://./pgfleet-data/backups";
pub use crate::migration_set::DEFAULT_TENANT_MIGRATIONS;
pub const DEFAULT_NAMESPACE: &str = "pgfleet";

/// Prefix of every exchange, queue and tenant database/role name of one install, so that
/// installs (and tests) can share a broker and a Postgres server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// 1-24 characters of `a-z`, `0-9`, `_`, starting with a letter: short enough to leave
    /// room for a slug in a 63-byte Postgres identifier, and safe in AMQP names.
    pub fn parse(raw: &str) -> Result<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= 24
            && raw.as_bytes()[0].is_ascii_lowercase()
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            bail!(
                "invalid namespace {raw:?}: use 1-24 characters of a-z, 0-9 and '_', starting with a letter"
            );
        }
        Ok(Self(raw.to_owned()))
    }

    /// The namespace itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` is in this install's share of a server's names (`<namespace>_…`),
    /// where tenant databases and roles live: nothing else (a restore) may take one.
    pub fn owns_name(&self, name: &str) -> bool {
        name.strip_prefix(self.0.as_str())
            .is_some_and(|rest| rest.starts_with('_'))
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A scheduled backup due this long without a good one counts as overdue (metrics,
/// `backup.overdue` notifications): longer than a spread window plus a backlog, short enough
/// to page someone the same night.
pub const BACKUP_OVERDUE_AFTER: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Where pgfleet's own state and the tenant servers are.
pub struct Config {
    pub catalog_url: SecretString,
    pub amqp_url: SecretString,
    /// Admin URL of the default tenant server: seeds an empty catalog; afterwards it must
    /// match the registered one (`None`: whatever is registered).
    pub server_url: Option<SecretString>,
    pub namespace: Namespace,
    /// Folder of tenant migrations; `None` means the default folder if it exists, else
    /// the example schema built into the binary.
    pub tenant_migrations: Option<PathBuf>,
    /// What each new tenant gets (`PGFLEET_TENANT_*`): connection limit, session defaults,
    /// storage quota.
    pub tenant_limits: crate::catalog::TenantLimits,
    /// Backup store: `file://DIR` or `s3://BUCKET/PREFIX`.
    pub backup_url: String,
    /// gzip level of backups (1 fastest … 9 smallest).
    pub backup_gzip_level: u32,
    /// Longest one S3 request may take (connect, send, answer) before it is retried: a
    /// store that stops answering fails the attempt instead of hanging the job.
    pub s3_attempt_timeout: std::time::Duration,
}

/// How a worker process runs jobs.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// The base of `kind_slots`' defaults (`PGFLEET_CONCURRENCY`).
    pub concurrency: usize,
    /// Job slots per kind: each kind has a pool of its own, and its queue's prefetch
    /// matches it, so long jobs of one kind never hold the slots another kind needs.
    pub kind_slots: KindSlots,
    /// How long a claim is valid without renewal; renewed every third of it.
    pub lease: Duration,
    /// Attempts before a job is dead.
    pub max_attempts: i32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often this worker reaps expired leases and re-publishes due jobs.
    pub sweep_interval: Duration,
    /// On shutdown, how long running jobs may take before their leases are handed back.
    pub shutdown_grace: Duration,
    /// A delivery that waits this long for a free slot is handed back to the catalog
    /// (acked, re-published later) so no delivery is held for the length of a job.
    pub defer_after: Duration,
    /// A queued job whose message the broker confirmed is re-published if still not
    /// claimed after this long (doubling with each re-publish): the lost-message safety net.
    pub redispatch_after: Duration,
    /// Deliveries of one message before it goes to `<ns>.dead` unprocessed.
    pub delivery_limit: i64,
    /// Finished jobs, rollouts and dead letters older than this are deleted by the sweep.
    pub history_retention: Duration,
    /// How often the sweep measures tenant databases (`pg_database_size`).
    pub storage_interval: Duration,
    /// Whether this worker posts webhook deliveries (off: e.g. no egress from its network;
    /// another worker delivers them).
    pub deliver_webhooks: bool,
    /// Warm pool size per self-hosted server (a server's own size wins); 0: none.
    pub warm_pool: i32,
    /// Benchmarks only: claimed jobs are recorded as succeeded without running a handler.
    pub noop_jobs: bool,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 8,
            kind_slots: KindSlots::defaults(8, cores()),
            lease: Duration::from_secs(30),
            max_attempts: 5,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            defer_after: Duration::from_secs(60),
            redispatch_after: Duration::from_secs(300),
            delivery_limit: crate::queue::DEFAULT_DELIVERY_LIMIT,
            history_retention: Duration::from_secs(30 * 86_400),
            storage_interval: Duration::from_secs(300),
            deliver_webhooks: true,
            warm_pool: 0,
            noop_jobs: false,
        }
    }
}

/// Job slots of one worker, per kind. Defaults, from `PGFLEET_CONCURRENCY` (C): provision
/// and migrate C each; backup C but at most the machine's cores (a backup keeps a core busy
/// compressing: more at once than cores only adds contention, and signups on the same
/// machine wait for CPU — `bench/signups.sh`); restore, delete and prune C/4 (at least 1) —
/// they are rare, and a restore loads a whole database. A kind's pool is its own: a worker
/// whose backup slots are all busy still takes a signup at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindSlots(std::collections::BTreeMap<JobKind, usize>);

/// This machine's cores (as the process may use them).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl KindSlots {
    /// The defaults for `concurrency` on a machine with `cores` cores.
    pub fn defaults(concurrency: usize, cores: usize) -> Self {
        let c = concurrency.max(1);
        Self(
            JobKind::ALL
                .iter()
                .map(|&kind| {
                    let n = match kind {
                        JobKind::Provision | JobKind::Migrate => c,
                        JobKind::Backup => c.min(cores.max(1)),
                        JobKind::Restore | JobKind::Delete | JobKind::Prune | JobKind::Move => (c / 4).max(1),
                    };
                    (kind, n)
                })
                .collect(),
        )
    }

    /// The defaults for `concurrency` on this machine, with `overrides`
    /// (`backup=2,provision=16`) applied.
    pub fn parse(concurrency: usize, overrides: &str) -> Result<Self> {
        Self::parse_for(concurrency, cores(), overrides)
    }

    fn parse_for(concurrency: usize, cores: usize, overrides: &str) -> Result<Self> {
        let mut slots = Self::defaults(concurrency, cores);
        for part in overrides.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((kind, n)) = part.split_once('=') else {
                bail!("PGFLEET_KIND_CONCURRENCY: {part:?} is not KIND=N (e.g. backup=2,provision=16)");
            };
            let Some(kind) = JobKind::parse(kind.trim()) else {
                bail!(
                    "PGFLEET_KIND_CONCURRENCY: unknown job kind {:?}; kinds are {}",
                    kind.trim(),
                    JobKind::choices()
                );
            };
            match n.trim().parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => {
                    slots.0.insert(kind, n);
                }
                _ => bail!(
                    "PGFLEET_KIND_CONCURRENCY: {kind}={} must be a number of slots from 1 to 1000",
                    n.trim()
                ),
            }
        }
        Ok(slots)
    }

    /// Every kind has an entry (`defaults` makes them all; overrides only replace).
    pub fn get(&self, kind: JobKind) -> usize {
        self.0[&kind]
    }

    /// Jobs this worker may run at once, all kinds together.
    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (JobKind, usize)> + '_ {
        self.0.iter().map(|(k, n)| (*k, *n))
    }
}

impl std::fmt::Display for KindSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.iter().map(|(k, n)| format!("{k}={n}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// `90`, `90s`, `15m`, `2h`, `1d`, or sums such as `1h30m`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let err = || format!("{text:?} is not a duration: use e.g. 90s, 15m, 2h or 1h30m");
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err()),
        };
        let n: u64 = digits.parse().map_err(|_| err())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        digits.clear();
    }
    if !digits.is_empty() {
        total = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| total.checked_add(n))
            .ok_or_else(err)?;
    } else if text.trim().is_empty() {
        return Err(err());
    }
    Ok(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_slots_defaults_and_overrides() {
        let slots = KindSlots::defaults(8, 16);
        assert_eq!(slots.get(JobKind::Provision), 8);
        assert_eq!(slots.get(JobKind::Backup), 8);
        assert_eq!(slots.get(JobKind::Restore), 2);
        // Backups at most one per core.
        assert_eq!(KindSlots::defaults(8, 2).get(JobKind::Backup), 2);
        assert_eq!(KindSlots::defaults(8, 2).get(JobKind::Provision), 8);
        assert_eq!(KindSlots::defaults(1, 4).get(JobKind::Prune), 1);
        let slots = KindSlots::parse_for(8, 2, " backup=6, provision=16 ").unwrap();
        assert_eq!(slots.get(JobKind::Backup), 6);
        assert_eq!(slots.get(JobKind::Provision), 16);
        assert_eq!(slots.get(JobKind::Migrate), 8);
        assert_eq!(slots.total(), 6 + 16 + 8 + 2 + 2 + 2 + 2);
        for bad in ["backup", "backups=2", "backup=0", "backup=x"] {
            let err = KindSlots::parse(8, bad).unwrap_err().to_string();
            assert!(err.contains("PGFLEET_KIND_CONCURRENCY"), "{err}");
        }
    }

    #[test]
    fn namespace_validation() {
        assert!(Namespace::parse("pgfleet").is_ok());
        assert!(Namespace::parse("t_1a2b").is_ok());
        for bad in ["", "Pg", "1a", "a.b", "a-b", "a b", &"a".repeat(25)] {
            assert!(Namespace::parse(bad).is_err(), "{bad}");
        }
        let ns = Namespace::parse("pgfleet").unwrap();
        assert!(ns.owns_name("pgfleet_acme") && ns.owns_name("pgfleet_"));
        assert!(
            !ns.owns_name("pgfleet") && !ns.owns_name("pgfleetx_a") && !ns.owns_name("copy_of_pgfleet_a")
        );
    }

    #[test]
    fn parses_durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("10 minutes").is_err());
    }
}
