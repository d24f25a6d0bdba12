//! `prune`: deletes a tenant's backups older than its retention, but never its newest
//! `keep_min` successful ones — so a run of failing backups can never prune the last good
//! one. Two-phase per backup (`pruning`, delete the object, `pruned`), so a replay resumes.
//! Objects under the tenant's prefix that the catalog doesn't know are reported and pruned
//! by the same age rule; unfinished uploads of jobs that are no longer running are
//! discarded. Nothing outside the tenant's prefix is ever listed or deleted.

use super::{Claimed, JobContext, Outcome};
use crate::catalog::TenantRecord;
use crate::error::JobError;
use crate::message::NoFields;
use crate::slug::TenantSlug;
use crate::status::{BackupStatus, JobStatus};
use anyhow::{anyhow, Result};
use chrono::{Duration, Utc};
use std::collections::HashSet;
use tracing::info;

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
    pub unknown: Vec<String>,
    pub unknown_pruned: Vec<String>,
    pub incomplete_discarded: Vec<String>,
    pub interrupted_marked_failed: u64,
}

impl PruneReport {
    pub fn is_empty(&self) -> bool {
        self.pruned.is_empty() && self.unknown_pruned.is_empty() && self.incomplete_discarded.is_empty()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "pruned": self.pruned,
            "kept": self.kept,
            "unknown_objects": self.unknown,
            "unknown_pruned": self.unknown_pruned,
            "incomplete_discarded": self.incomplete_discarded,
            "interrupted_marked_failed": self.interrupted_marked_failed,
        })
    }
}

pub async fn prune_tenant(ctx: &JobContext, tenant: &TenantRecord) -> Result<PruneReport> {
    let slug = TenantSlug::parse(&tenant.slug)?;
    let prefix = ctx.store.tenant_prefix(&slug);
    let cutoff = Utc::now() - Duration::days(i64::from(tenant.retention_days));
    let mut report = PruneReport {
        interrupted_marked_failed: ctx.catalog.fail_interrupted_backups(tenant.id, None).await?,
        ..PruneReport::default()
    };

    let backups = ctx.catalog.backups(tenant.id).await?;
    // Newest first: the first `keep_min` good ones are kept whatever their age.
    let mut good_seen = 0usize;
    for backup in &backups {
        let resume = backup.status == BackupStatus::Pruning;
        let expired = backup.status == BackupStatus::Succeeded && {
            good_seen += 1;
            good_seen > tenant.keep_min as usize && backup.created_at < cutoff
        };
        if backup.status == BackupStatus::Succeeded && !expired {
            report.kept += 1;
        }
        if !(resume || expired) {
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

    // Objects the catalog has no good (or pruning) row for.
    let known: HashSet<&str> = backups
        .iter()
        .filter(|b| {
            matches!(
                b.status,
                BackupStatus::Succeeded | BackupStatus::Pruning | BackupStatus::Running
            )
        })
        .map(|b| b.key.as_str())
        .collect();
    for object in ctx.store.list(&prefix).await? {
        if known.contains(object.key.as_str()) || report.pruned.contains(&object.key) {
            continue;
        }
        report.unknown.push(object.key.clone());
        if object.last_modified < cutoff {
            ctx.store.delete(&prefix, &object.key).await?;
            info!(key = %object.key, "pruned an object unknown to the catalog");
            report.unknown_pruned.push(object.key);
        }
    }

    // Unfinished writes whose job is not running any more (its worker died).
    let running_keys: HashSet<&str> = backups
        .iter()
        .filter(|b| b.status == BackupStatus::Running && b.job_status == Some(JobStatus::Running))
        .map(|b| b.key.as_str())
        .collect();
    for incomplete in ctx.store.list_incomplete(&prefix).await? {
        let still_running = running_keys.contains(incomplete.key.as_str());
        if !still_running {
            ctx.store.discard_incomplete(&prefix, &incomplete).await?;
            report.incomplete_discarded.push(incomplete.key);
        }
    }
    Ok(report)
}
