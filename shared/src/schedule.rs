//! Backup schedules: standard 5-field cron expressions, evaluated in UTC, or `off`.

use anyhow::{Context, Result};
use chrono::{DateTime, Timelike, Utc};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The schedule value that turns scheduled backups off for a tenant.
pub const OFF: &str = "off";

/// Parses and validates a cron expression such as `0 0 * * *`; `off` is `None`.
pub fn parse(expression: &str) -> Result<Option<croner::Cron>> {
    if expression.trim().eq_ignore_ascii_case(OFF) {
        return Ok(None);
    }
    expression.parse::<croner::Cron>().map(Some).with_context(|| {
        format!(
            "{expression:?} is not a valid cron schedule (e.g. \"0 3 * * *\" for 03:00 UTC daily, or \"off\")"
        )
    })
}

/// The newest slot of `cron` at or before `now - offset`. A tenant owes a backup for it if
/// it is after the newest slot the tenant's backups were enqueued for: slots missed during
/// downtime collapse into this one. (Independent of the tenant, so a tick works it out once
/// per schedule and offset.)
pub fn newest_slot(cron: &croner::Cron, now: DateTime<Utc>, offset: Duration) -> Option<DateTime<Utc>> {
    let shifted = now - chrono::Duration::from_std(offset).ok()?;
    // croner keeps the sub-second part of the time it searches from (00:00:00.4735 at
    // 00:27:09.4735): a slot must be the same instant at every tick, or each tick finds
    // every tenant's slot "newer" than the one it recorded and advances them all again.
    let slot = cron.find_previous_occurrence(&shifted, true).ok()?;
    slot.with_nanosecond(0)
}

/// Where in a `spread` window a tenant's backups start: fixed per tenant (a hash of the
/// slug), so each tenant keeps even gaps between its backups while the fleet's are spread
/// over the window. Whole seconds.
pub fn spread_offset(slug: &str, spread: Duration) -> Duration {
    let secs = spread.as_secs();
    if secs == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(slug.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    Duration::from_secs(n % secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn validates_cron() {
        assert!(parse("0 0 * * *").unwrap().is_some());
        assert!(parse("*/15 2 * * 1-5").unwrap().is_some());
        assert!(parse("off").unwrap().is_none());
        assert!(parse("61 0 * * *").is_err());
        assert!(parse("nightly").is_err());
    }

    fn due_slot(
        cron: &croner::Cron,
        through: DateTime<Utc>,
        now: DateTime<Utc>,
        offset: Duration,
    ) -> Option<DateTime<Utc>> {
        newest_slot(cron, now, offset).filter(|slot| *slot > through)
    }

    #[test]
    fn owes_one_backup_for_any_number_of_missed_slots() {
        let cron = parse("0 * * * *").unwrap().unwrap();
        let through = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let t = |h, m| Utc.with_ymd_and_hms(2026, 1, 1, h, m, 0).unwrap();
        assert_eq!(due_slot(&cron, through, t(0, 59), Duration::ZERO), None);
        assert_eq!(due_slot(&cron, through, t(1, 0), Duration::ZERO), Some(t(1, 0)));
        // Five slots missed: one backup, for the newest.
        assert_eq!(due_slot(&cron, through, t(5, 30), Duration::ZERO), Some(t(5, 0)));
        // With an offset of 10 minutes the 05:00 slot is due at 05:10.
        let ten = Duration::from_secs(600);
        assert_eq!(due_slot(&cron, t(4, 0), t(5, 9), ten), None);
        assert_eq!(due_slot(&cron, t(4, 0), t(5, 10), ten), Some(t(5, 0)));
    }

    #[test]
    fn a_slot_is_the_same_instant_whenever_it_is_looked_for() {
        let cron = parse("0 * * * *").unwrap().unwrap();
        let at =
            |ms| Utc.with_ymd_and_hms(2026, 1, 1, 0, 27, 9).unwrap() + chrono::Duration::milliseconds(ms);
        let slot = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(newest_slot(&cron, at(473), Duration::ZERO), Some(slot));
        assert_eq!(newest_slot(&cron, at(999), Duration::from_secs(7)), Some(slot));
    }

    #[test]
    fn spread_is_stable_and_covers_the_window() {
        let hour = Duration::from_secs(3600);
        assert_eq!(spread_offset("acme", hour), spread_offset("acme", hour));
        assert_eq!(spread_offset("acme", Duration::ZERO), Duration::ZERO);
        let offsets: Vec<u64> = (0..1000)
            .map(|i| spread_offset(&format!("tenant-{i}"), hour).as_secs())
            .collect();
        assert!(offsets.iter().all(|&o| o < 3600));
        // Every quarter of the window gets a fair share (expected 250 each).
        for q in 0..4 {
            let n = offsets.iter().filter(|&&o| o / 900 == q).count();
            assert!((175..=325).contains(&n), "quarter {q} got {n} of 1000");
        }
    }
}
