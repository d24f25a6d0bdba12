//! `pgfleet scheduler`: enqueues each active tenant's backups on its own cron schedule (UTC).
//!
//! A tick works out the newest slot of each schedule in use (a fleet shares a handful),
//! asks the catalog for the tenants whose newest handled slot is older — the only ones that
//! can owe a backup — and records their jobs in batches: one statement per batch both
//! advances the tenants and inserts the jobs, so replicas never enqueue a slot twice. Each
//! batch is published with confirms while the next is recorded; a job the broker did not
//! confirm is left to the workers' sweep, never lost. A tick takes at most `max_per_tick`
//! jobs (longest owed first) and the next follows at once while some are left, so a tick's
//! time and memory stay bounded when a whole fleet falls due together.
//!
//! Time comes from a `Clock`, so tests drive the scheduler through slots without sleeping.

use crate::catalog::{Catalog, DueBackup, JobRecord};
use crate::producer::publish_dispatched;
use crate::queue::Publisher;
use crate::schedule;
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

/// Jobs recorded and published per round trip.
const BATCH: usize = 2_000;

/// `SchedulerSettings::max_per_tick` unless configured: at 100,000 tenants a tick that
/// enqueues this many takes about half a second here (bench/scheduler.sh), and back-to-back
/// ticks still enqueue the whole fleet due at once within seconds.
pub const DEFAULT_MAX_PER_TICK: usize = 5_000;

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (tests, benchmarks).
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(start))
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().expect("not poisoned") = to;
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().expect("not poisoned") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("not poisoned")
    }
}

#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// How often schedules are evaluated.
    pub interval: Duration,
    /// Spread a slot's backups over this window (0: all at the slot time).
    pub spread: Duration,
    /// Recorded on every job the scheduler creates.
    pub max_attempts: i32,
    /// Jobs one tick enqueues at most (oldest slot first); the rest stay due and the next
    /// tick starts at once instead of after `interval`. Keeps a tick's time, memory and
    /// transaction sizes bounded however many tenants fall due together.
    pub max_per_tick: usize,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            spread: Duration::ZERO,
            max_attempts: 5,
            max_per_tick: DEFAULT_MAX_PER_TICK,
        }
    }
}

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Tenants whose schedule had a slot not handled yet.
    pub due: usize,
    /// Of those, left for the next tick (over `max_per_tick`; the newest slots).
    pub deferred: usize,
    /// Jobs this tick recorded (another replica may have taken the rest).
    pub enqueued: usize,
    /// Of those, confirmed by the broker (the others wait for the sweep).
    pub published: usize,
    /// Tenants whose stored schedule does not parse (skipped, logged).
    pub invalid: usize,
    /// Reading the schedules and working out what is due.
    pub evaluating: Duration,
    /// Recording the due jobs and publishing them (one batch published while the next is
    /// recorded), until the last batch is confirmed.
    pub enqueueing: Duration,
}

pub struct Scheduler {
    catalog: Catalog,
    publisher: Arc<Publisher>,
    clock: Arc<dyn Clock>,
    settings: SchedulerSettings,
}

impl Scheduler {
    pub fn new(
        catalog: Catalog,
        publisher: Arc<Publisher>,
        clock: Arc<dyn Clock>,
        settings: SchedulerSettings,
    ) -> Self {
        Self {
            catalog,
            publisher,
            clock,
            settings,
        }
    }

    /// Evaluates every schedule at the clock's time and enqueues what is due.
    pub async fn tick(&self) -> Result<TickReport> {
        let now = self.clock.now();
        let started = Instant::now();
        let mut report = TickReport::default();
        let (mut due, owing) = self.due_at(now, &mut report).await?;
        report.due = owing;
        if due.len() > self.settings.max_per_tick {
            // The longest owed first; the rest stay due (their slot is not recorded yet).
            due.sort_unstable_by(|a, b| (a.slot, &a.slug).cmp(&(b.slot, &b.slug)));
            due.truncate(self.settings.max_per_tick);
        }
        report.deferred = report.due.saturating_sub(due.len());
        report.evaluating = started.elapsed();
        // Batch i is published (and its confirm recorded) while batch i + 1 is recorded: the
        // catalog and the broker work at the same time instead of taking turns.
        let mut batches = due.chunks(BATCH);
        let mut in_flight: Vec<JobRecord> = Vec::new();
        loop {
            let next = batches.next();
            let record = async {
                match next {
                    Some(batch) => {
                        self.catalog
                            .enqueue_scheduled_backups(batch, self.settings.max_attempts)
                            .await
                    }
                    None => Ok(Vec::new()),
                }
            };
            let (recorded, published) = tokio::join!(record, self.publish(&in_flight));
            if published? {
                report.published += in_flight.len();
            }
            in_flight = recorded?;
            report.enqueued += in_flight.len();
            if next.is_none() {
                break;
            }
        }
        report.enqueueing = started.elapsed() - report.evaluating;
        if report.enqueued > 0 || report.invalid > 0 {
            info!(at = %now, due = report.due, enqueued = report.enqueued, published = report.published,
                  deferred = report.deferred, invalid = report.invalid, evaluating_ms = report.evaluating.as_millis() as u64,
                  elapsed_ms = started.elapsed().as_millis() as u64, "scheduled backups enqueued");
        }
        Ok(report)
    }

    /// Publishes recorded jobs; whether the broker confirmed them (if not, the sweep will).
    async fn publish(&self, jobs: &[JobRecord]) -> Result<bool> {
        if jobs.is_empty() {
            return Ok(false);
        }
        let jobs: Vec<&JobRecord> = jobs.iter().collect();
        publish_dispatched(&self.catalog, &self.publisher, &jobs).await
    }

    /// The backups due now (with no spread, only this tick's share) and how many tenants owe
    /// one in all.
    async fn due_at(&self, now: DateTime<Utc>, report: &mut TickReport) -> Result<(Vec<DueBackup>, usize)> {
        // Each schedule in use, parsed once, with its newest slot. `None`: off.
        let mut crons: HashMap<String, croner::Cron> = HashMap::new();
        let mut newest: Vec<(String, DateTime<Utc>)> = Vec::new();
        for (expression, tenants) in self.catalog.schedules_in_use().await? {
            match schedule::parse(&expression) {
                Ok(Some(cron)) => {
                    if let Some(slot) = schedule::newest_slot(&cron, now, Duration::ZERO) {
                        newest.push((expression.clone(), slot));
                    }
                    crons.insert(expression, cron);
                }
                Ok(None) => {}
                Err(e) => {
                    report.invalid += tenants as usize;
                    warn!(schedule = %expression, tenants, error = %format!("{e:#}"),
                          "skipping tenants whose backup schedule does not parse; fix it with `pgfleet tenant set`");
                }
            }
        }
        if newest.is_empty() {
            return Ok((Vec::new(), 0));
        }
        // Without a spread every candidate is due at its schedule's newest slot, so the
        // catalog can hand over just this tick's share; with one, offsets are worked out here.
        let spread = !self.settings.spread.is_zero();
        let limit = (!spread).then(|| self.settings.max_per_tick.min(i64::MAX as usize) as i64);
        let candidates = self.catalog.scheduled_tenants(&newest, limit).await?;
        let found = candidates.first().map_or(0, |t| t.candidates as usize);
        let mut slots: HashMap<(String, Duration), Option<DateTime<Utc>>> = HashMap::new();
        let mut due = Vec::new();
        for t in candidates {
            let Some(cron) = crons.get(&t.backup_schedule) else {
                continue;
            };
            let offset = schedule::spread_offset(&t.slug, self.settings.spread);
            let slot = *slots
                .entry((t.backup_schedule.clone(), offset))
                .or_insert_with(|| schedule::newest_slot(cron, now, offset));
            if let Some(slot) = slot.filter(|slot| *slot > t.scheduled_through) {
                due.push(DueBackup {
                    tenant_id: t.id,
                    slug: t.slug,
                    slot,
                    prune_only: t.deleted,
                });
            }
        }
        let owing = if spread { due.len() } else { found };
        Ok((due, owing))
    }

    /// Ticks every `interval` until `shutdown`; a failed tick is logged and retried at the
    /// next one (nothing is lost: the slot stays owed until a tick records it).
    pub async fn run(&self, shutdown: CancellationToken) {
        info!(
            interval_s = self.settings.interval.as_secs_f64(),
            spread_s = self.settings.spread.as_secs(),
            "scheduler running"
        );
        let mut interval = tokio::time::interval(self.settings.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            match self.tick().instrument(info_span!("scheduler_tick")).await {
                // More was due than one tick takes: go on at once.
                Ok(report) if report.deferred > 0 && report.enqueued > 0 => {
                    info!(
                        deferred = report.deferred,
                        "more backups due than one tick takes; ticking again at once"
                    );
                    interval.reset_immediately();
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "scheduler tick failed; retrying at the next tick")
                }
            }
        }
        self.publisher.close().await;
        info!("scheduler stopped");
    }
}
