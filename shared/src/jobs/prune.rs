//! `prune`: deletes a tenant's backups older than its retention (by the catalog's clock),
//! but never its newest `keep_min` (at least one) successful ones — so a run of failing
//! backups can never prune the last good one. Backups of the tenant's dev copies (asked
//! for with `--backups`) follow the tenant's retention, each copy keeping its own newest
//! `keep_min` while it exists. Two-phase per backup (`pruning`, delete the
//! object, `pruned`), so a replay resumes. Only what this install recorded is deleted:
//! objects under the tenant's prefix that the catalog doesn't know are reported and left
//! alone; unfinished uploads of its jobs that are no longer running, and objects a failed
//! attempt completed but never recorded as good (a worker killed between the upload and
//! the row), are discarded. Nothing
//! outside the tenant's prefix is ever listed or deleted.

use super::{Claimed, JobContext, Outcome};
use crate::catalog::TenantRecord;
use crate::error::JobError;
use crate::message::NoFields;
use crate::slug::TenantSlug;
use crate::status::{BackupStatus, JobStatus, TenantStatus};
use anyhow::{anyhow, Result};
use chrono::Duration;
use std::collections::HashSet;
use tracing::{info, warn};

/// `prune`: the tenant's backups past retention, never the newest keep-min good ones.
pub async fn run(ctx: &JobContext, job: &Claimed<NoFields>) -> Result<Outcome, JobError> {
    let slug = &job.tenant;
    let tenant = ctx
        .catalog
        .tenant(slug)
        .await?
        .ok_or_else(|| JobError::Permanent(anyhow!("no tenant {slug}")))?;
    let report = prune_tenant(ctx, &tenant).await?;
    let summary = if report.is_empty() {
        "nothing to prune"
    } else {
        "pruned"
    };
    Ok(Outcome::new(summary, report.to_json()))
}

#[derive(Debug, Default)]
pub struct PruneReport {
    pub pruned: Vec<String>,
    pub kept: usize,
    /// Objects under the prefix the catalog has no record of: reported, never deleted.
    pub unknown: Vec<String>,
    /// Recorded keys outside the tenant's prefix: skipped.
    pub skipped: Vec<String>,
    pub incomplete_discarded: Vec<String>,
    /// Objects whose row says the attempt failed (never recorded as good): deleted.
    pub failed_discarded: Vec<String>,
    pub interrupted_marked_failed: u64,
}

impl PruneReport {
    pub fn is_empty(&self) -> bool {
        self.pruned.is_empty() && self.incomplete_discarded.is_empty() && self.failed_discarded.is_empty()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "pruned": self.pruned,
            "kept": self.kept,
            "unknown_objects": self.unknown,
            "skipped": self.skipped,
            "incomplete_discarded": self.incomplete_discarded,
            "failed_discarded": self.failed_discarded,
            "interrupted_marked_failed": self.interrupted_marked_failed,
        })
    }
}

/// Prunes one tenant (see the module docs). Ages are the catalog's: a worker's clock
/// never decides what is old.
pub async fn prune_tenant(ctx: &JobContext, tenant: &TenantRecord) -> Result<PruneReport> {
    let slug = TenantSlug::parse(&tenant.slug)?;
    let prefix = ctx.store.tenant_prefix(&ctx.namespace, &slug);
    let cutoff = ctx.catalog.now().await? - Duration::days(i64::from(tenant.retention_days));
    // A live tenant keeps at least one good backup whatever its settings; a deleted
    // tenant's backups all expire with its retention (its final one included).
    let keep_min = match tenant.status {
        TenantStatus::Deleted => 0,
        _ => tenant.keep_min.max(1) as usize,
    };
    let mut report = PruneReport {
        interrupted_marked_failed: ctx.catalog.fail_interrupted_backups(tenant.id, None).await?,
        ..PruneReport::default()
    };

    let backups = ctx.catalog.backups(tenant.id).await?;
    // A dev copy's backups keep its own newest `keep_min` while it exists; once it is
    // deleted they all expire with the tenant's retention.
    let live_branches: HashSet<String> = ctx
        .catalog
        .branches(tenant.id)
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect();
    // Newest first: the first `keep_min` good ones (of the tenant, and of each dev copy) are
    // kept whatever their age.
    let mut good_seen: std::collections::HashMap<Option<&str>, usize> = Default::default();
    for backup in &backups {
        let resume = backup.status == BackupStatus::Pruning;
        let group = backup.branch.as_deref();
        let group_keep = match group {
            Some(name) if !live_branches.contains(name) => 0,
            _ => keep_min,
        };
        let expired = backup.status == BackupStatus::Succeeded && {
            let seen = good_seen.entry(group).or_default();
            *seen += 1;
            *seen > group_keep && backup.created_at < cutoff
        };
        if backup.status == BackupStatus::Succeeded && !expired {
            report.kept += 1;
        }
        if !(resume || expired) {
            continue;
        }
        if let Err(e) = prefix.check(&backup.key) {
            warn!(key = %backup.key, error = %e, "skipping a recorded backup outside the tenant's prefix");
            report.skipped.push(backup.key.clone());
            continue;
        }
        if expired && !ctx.catalog.mark_backup_pruning(backup.id).await? {
            continue;
        }
        ctx.store.delete(&prefix, &backup.key).await?;
        ctx.catalog.mark_backup_pruned(backup.id).await?;
        info!(key = %backup.key, "pruned backup");
        report.pruned.push(backup.key.clone());
    }

    // Objects the catalog has no row for are reported, never deleted: this install did not
    // write them (or lost their record), and only a human may decide about them.
    let known: HashSet<&str> = backups.iter().map(|b| b.key.as_str()).collect();
    // Keys of failed attempts (rows read after `fail_interrupted_backups` above).
    let failed: HashSet<&str> = backups
        .iter()
        .filter(|b| b.status == BackupStatus::Failed)
        .map(|b| b.key.as_str())
        .collect();
    for object in ctx.store.list(&prefix).await? {
        if failed.contains(object.key.as_str()) {
            ctx.store.delete(&prefix, &object.key).await?;
            info!(key = %object.key, "discarded the object of a failed attempt");
            report.failed_discarded.push(object.key);
        } else if !known.contains(object.key.as_str()) {
            warn!(key = %object.key, "an object in the tenant's prefix has no record in the catalog; left alone");
            report.unknown.push(object.key);
        }
    }

    // Unfinished writes of this install's jobs that are no longer running (a dead worker).
    let running_keys: HashSet<&str> = backups
        .iter()
        .filter(|b| b.status == BackupStatus::Running && b.job_status == Some(JobStatus::Running))
        .map(|b| b.key.as_str())
        .collect();
    for incomplete in ctx.store.list_incomplete(&prefix).await? {
        if running_keys.contains(incomplete.key.as_str()) {
            continue;
        }
        match ctx.store.discard_incomplete(&prefix, &incomplete).await {
            Ok(()) => report.incomplete_discarded.push(incomplete.key),
            Err(e) => {
                warn!(key = %incomplete.key, error = %format!("{e:#}"), "could not discard an unfinished write")
            }
        }
    }
    Ok(report)
}
