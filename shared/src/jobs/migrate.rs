//! `migrate`: applies a rollout's recorded migration set to one tenant — the SQL recorded
//! in the catalog, not whatever is on this worker's disk — as the tenant's role, pending
//! versions in order, each in its own transaction with its bookkeeping row, under the
//! tenant's advisory lock. A rollout caps how many migrations run at once on one server
//! (catalog advisory locks, so the cap holds across any number of workers).

use super::{Claimed, JobContext, Outcome};
use crate::catalog::{TenantRecord, SKIPPED};
use crate::error::JobError;
use crate::message::MigrateSpec;
use crate::slug::TenantSlug;
use crate::status::RolloutStatus;
use crate::tenant_migrations::{self, Durability, Timeouts};
use anyhow::{anyhow, Context};
use sqlx::pool::PoolConnection;
use sqlx::Postgres;
use std::time::Duration;
use uuid::Uuid;

/// Migrations one rollout runs at once on one tenant server, unless `--concurrency` says.
pub const DEFAULT_SERVER_CONCURRENCY: i32 = 8;

/// `migrate`: the rollout's recorded set on the tenant, within the server's slot cap.
pub async fn run(ctx: &JobContext, job: &Claimed<MigrateSpec>) -> Result<Outcome, JobError> {
    let rollout_id = job.spec.rollout;
    let (tenant, timeouts, _slot) = start(ctx, &job.tenant, rollout_id).await?;
    let set = ctx.recorded_set(rollout_id).await?;
    let mut conn = ctx.servers.connect_as_tenant(&tenant).await?;
    // Tenant sessions commit asynchronously, but the last migration commits synchronously:
    // everything is durable before success is reported.
    let applied = tenant_migrations::apply(
        &mut conn,
        &set,
        &mut super::CatalogMirror {
            catalog: &ctx.catalog,
            tenant_id: tenant.id,
        },
        Durability::OnCommit,
        timeouts,
    )
    .await?;
    let _ = sqlx::Connection::close(conn).await;
    let summary = if applied.applied.is_empty() {
        "already at target"
    } else {
        "migrated"
    };
    Ok(Outcome::new(
        summary,
        serde_json::json!({
            "rollout": rollout_id,
            "applied": applied.applied,
            "schema_version": applied.schema_version,
        }),
    ))
}

/// Checks that the rollout isn't halted and the tenant is active, and waits for one of the
/// rollout's slots on the tenant's server: one catalog round trip per try, and a halt
/// while waiting is noticed at the next try.
async fn start(
    ctx: &JobContext,
    slug: &TenantSlug,
    rollout_id: Uuid,
) -> Result<(TenantRecord, Timeouts, ServerSlot), JobError> {
    let mut conn = ctx
        .catalog
        .pool()
        .acquire()
        .await
        .context("taking a catalog connection for the server slot")?;
    loop {
        let found = ctx
            .catalog
            .start_tenant_migration(&mut conn, rollout_id, slug)
            .await
            .context("looking up the rollout and the tenant")?
            .ok_or_else(|| JobError::Permanent(anyhow!("no rollout {rollout_id}")))?;
        if found.rollout_status == RolloutStatus::Halted {
            return Err(JobError::Permanent(anyhow!(
                "{SKIPPED} rollout halted: {}",
                found.halted_reason.unwrap_or_default()
            )));
        }
        let tenant = super::require_active(found.tenant, slug, "migrated")?;
        if let Some(key) = found.slot {
            return Ok((
                tenant,
                found.timeouts,
                ServerSlot {
                    conn: Some(conn),
                    key,
                },
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One of the N per-server migration slots: a session advisory lock held on a catalog
/// connection for the migration's length (released by Postgres if the worker dies).
struct ServerSlot {
    conn: Option<PoolConnection<Postgres>>,
    key: (i32, i32),
}

impl Drop for ServerSlot {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let (class, slot) = self.key;
            // Unlock before the connection goes back to the pool (or close it if we can't).
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                        .bind(class)
                        .bind(slot)
                        .execute(&mut *conn)
                        .await;
                    if unlocked.is_err() {
                        let _ = conn.close().await;
                    }
                });
            } else {
                drop(conn.detach());
            }
        }
    }
}
