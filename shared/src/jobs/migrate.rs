//! `migrate`: applies a rollout's recorded migration set to one tenant — the SQL recorded
//! in the catalog, not whatever is on this worker's disk — as the tenant's role, pending
//! versions in order, each in its own transaction with its bookkeeping row, under the
//! tenant's advisory lock. A rollout caps how many migrations run at once on one server
//! (catalog advisory locks, so the cap holds across any number of workers).

use super::{JobContext, Outcome};
use crate::catalog::{JobRecord, SKIPPED};
use crate::error::JobError;
use crate::slug::TenantSlug;
use crate::tenant_migrations::{self, Durability};
use anyhow::{anyhow, Context};
use sqlx::pool::PoolConnection;
use sqlx::Postgres;
use std::time::Duration;
use uuid::Uuid;

/// Migrations one rollout runs at once on one tenant server, unless `--concurrency` says.
pub const DEFAULT_SERVER_CONCURRENCY: i32 = 8;

pub async fn run(
    ctx: &JobContext,
    _job: &JobRecord,
    slug: &TenantSlug,
    rollout_id: Uuid,
) -> Result<Outcome, JobError> {
    let (status, halted_reason, server_concurrency) = ctx
        .catalog
        .rollout_header(rollout_id)
        .await?
        .ok_or_else(|| JobError::Permanent(anyhow!("no rollout {rollout_id}")))?;
    if status == "halted" {
        return Err(JobError::Permanent(anyhow!(
            "{SKIPPED} rollout halted: {}",
            halted_reason.unwrap_or_default()
        )));
    }
    let tenant = super::active_tenant(ctx, slug, "migrated").await?;
    let set = ctx.recorded_set(rollout_id).await?;
    let _slot = ServerSlot::acquire(ctx, tenant.server_id, server_concurrency).await?;
    let mut conn = ctx.servers.connect_as_tenant(&tenant).await?;
    // Tenant sessions commit asynchronously, but the last migration commits synchronously:
    // everything is durable before success is reported.
    let applied = tenant_migrations::apply(
        &mut conn,
        &set,
        Some((&ctx.catalog, tenant.id)),
        Durability::OnCommit,
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

/// One of the N per-server migration slots: a session advisory lock held on a catalog
/// connection for the migration's length (released by Postgres if the worker dies).
struct ServerSlot {
    conn: Option<PoolConnection<Postgres>>,
    key: (i32, i32),
}

impl ServerSlot {
    async fn acquire(ctx: &JobContext, server_id: Uuid, slots: i32) -> Result<Self, JobError> {
        // Namespace of these locks: the first 4 bytes of the server id.
        let class = i32::from_be_bytes(server_id.as_bytes()[..4].try_into().expect("4 bytes"));
        let mut conn = ctx
            .catalog
            .pool()
            .acquire()
            .await
            .context("taking a catalog connection for the server slot")?;
        loop {
            // One round trip tries the slots in order and stops at the first it gets (the
            // filter runs row by row under the LIMIT, so no second lock is taken).
            let got: Option<i32> = sqlx::query_scalar(
                "SELECT slot FROM generate_series(0, $2 - 1) AS slot WHERE pg_try_advisory_lock($1, slot) LIMIT 1",
            )
            .bind(class)
            .bind(slots.max(1))
            .fetch_optional(&mut *conn)
            .await
            .context("taking a server slot")?;
            if let Some(slot) = got {
                return Ok(Self {
                    conn: Some(conn),
                    key: (class, slot),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
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
