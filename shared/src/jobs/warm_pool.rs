//! The warm pool: databases made ahead of signups, so a signup renames one instead of
//! creating one (create role, create database, apply the schema — the slow part).
//!
//! - **Refill** (`refill_server`, run by every worker's pool loop; one at a time per server
//!   through a session advisory lock on a catalog connection): keeps the server's pool at
//!   its size (`server set --warm-pool`, else the worker's `PGFLEET_WARM_POOL`; a draining
//!   server's is 0). An entry is a role `<ns>_pool_<hex>` (NOLOGIN once built) owning a
//!   database of the same name with no PUBLIC access, migrated as that role to the newest
//!   recorded set. A ready entry behind the newest set is migrated again (taken out of the
//!   pool meanwhile), so a rollout reaches the pool too. Entries a crashed refill left
//!   half-built are dropped; so are entries beyond the size. Pool databases are not tenants:
//!   no backups, no rollouts jobs, no storage sweep.
//! - **Claim** (`claim`, called by provision before it creates anything): one catalog
//!   statement takes a ready entry on the tenant's server and records the tenant on it
//!   (`FOR UPDATE SKIP LOCKED`: one entry, one tenant). The database and role are renamed
//!   to the tenant's names; provision then goes on as always (its password, limits,
//!   privileges checked, remaining migrations, flush, active) and forgets the entry. A
//!   provision retried after a crash finds the entry it claimed and each rename checks the
//!   actual state first, so nothing is given twice or lost. An empty pool: the provision
//!   creates everything itself, as before.

use super::JobContext;
use crate::catalog::{TenantRecord, WarmDatabase, WarmServer};
use crate::error::{JobError, ServerSql};
use crate::postgres::{quote_ident, quote_literal};
use crate::secrets::{generate_password, scram_sha256_verifier};
use crate::status::ServerKind;
use crate::tenant_migrations;
use anyhow::{Context, Result};
use secrecy::ExposeSecret;
use sqlx::{Connection, PgPool};
use tracing::{info, warn};

/// The refill builds only after signups pause this long (building competes with claims
/// for the server's CPU and I/O), unless the pool is down to `LOW_WATER` of its size.
const REFILL_QUIET_SECS: f64 = 2.0;
const LOW_WATER: f64 = 0.25;

/// Advisory-lock class of a server's refill.
const REFILL_LOCK_CLASS: i32 = 0x5752_4d50; // "WRMP"

/// What one refill pass did on a server.
#[derive(Debug, Default, Clone, Copy)]
pub struct Refill {
    pub created: usize,
    pub migrated: usize,
    pub dropped: usize,
    /// Another worker was refilling the server.
    pub skipped: bool,
}

/// Makes the server's pool its size (see the module docs).
pub async fn refill_server(ctx: &JobContext, server: &WarmServer, default_size: i32) -> Result<Refill> {
    let size = if server.active {
        server.warm_pool.unwrap_or(default_size).max(0)
    } else {
        0
    };
    let mut lock = ctx.catalog.pool().acquire().await?;
    let key = server.id.as_u128() as i32;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(REFILL_LOCK_CLASS)
        .bind(key)
        .fetch_one(&mut *lock)
        .await?;
    if !got {
        return Ok(Refill {
            skipped: true,
            ..Refill::default()
        });
    }
    let result = refill_locked(ctx, server, size).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(REFILL_LOCK_CLASS)
        .bind(key)
        .execute(&mut *lock)
        .await;
    if unlocked.is_err() {
        let _ = lock.detach().close().await;
    }
    result
}

async fn refill_locked(ctx: &JobContext, server: &WarmServer, size: i32) -> Result<Refill> {
    let mut done = Refill::default();
    ctx.catalog.forget_finished_warm_claims().await?;
    let admin = ctx.servers.admin_pool(server.id).await?;
    let recorded = ctx.catalog.latest_migration_set().await?;
    let set = recorded.as_ref().unwrap_or(&ctx.tenant_migrations);
    let newest = set.target_version();

    let mut ready = 0;
    for entry in ctx.catalog.warm_databases(server.id).await? {
        match entry.status.as_str() {
            // Left by a refill that died (this pass holds the server's refill lock).
            "creating" | "dropping" => {
                drop_entry(ctx, &admin, &entry).await?;
                done.dropped += 1;
            }
            "ready" if entry.schema_version < newest => {
                if !ctx.catalog.take_warm_database(entry.id, "creating").await? {
                    continue; // claimed meanwhile
                }
                match build(ctx, &admin, &entry, set, false).await {
                    Ok(()) => {
                        done.migrated += 1;
                        ready += 1;
                    }
                    Err(e) => {
                        warn!(server = %server.name, database = %entry.database_name, error = %format!("{e:#}"),
                              "warm pool: migrating a pool database failed; dropping it");
                        drop_entry(ctx, &admin, &entry).await?;
                        done.dropped += 1;
                    }
                }
            }
            "ready" => ready += 1,
            _ => {}
        }
    }
    let excess = (ready - size).max(0) as usize;
    let missing = (size - ready).max(0);
    ctx.catalog
        .record_warm_state(server.id, size, missing > 0)
        .await?;
    let mut shrunk = 0;
    for entry in ctx.catalog.warm_databases(server.id).await? {
        if shrunk >= excess {
            break;
        }
        if entry.status == "ready" && ctx.catalog.take_warm_database(entry.id, "dropping").await? {
            drop_entry(ctx, &admin, &entry).await?;
            done.dropped += 1;
            shrunk += 1;
        }
    }
    if missing > 0 && f64::from(ready) > f64::from(size) * LOW_WATER {
        let since_claim = ctx.catalog.since_last_warm_claim(server.id).await?;
        if since_claim.is_some_and(|s| s < REFILL_QUIET_SECS) {
            return Ok(done); // signups are arriving: build in the next pause
        }
    }
    for _ in 0..missing {
        let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let name = format!("{}_pool_{suffix}", ctx.namespace);
        let id = ctx.catalog.insert_warm_database(server.id, &name, &name).await?;
        let entry = WarmDatabase {
            id,
            server_id: server.id,
            database_name: name.clone(),
            role_name: name,
            status: "creating".into(),
            schema_version: None,
            tenant_id: None,
            set_digest: None,
        };
        if let Err(e) = build(ctx, &admin, &entry, set, true).await {
            drop_entry(ctx, &admin, &entry).await?;
            return Err(e.context(format!("building pool database {}", entry.database_name)));
        }
        done.created += 1;
    }
    if missing > 0 {
        ctx.catalog.record_warm_state(server.id, size, false).await?;
        info!(server = %server.name, created = done.created, size, "warm pool refilled");
    }
    Ok(done)
}

/// Creates (`create`) or re-migrates an entry: a login role with a throwaway password,
/// its database, the migrations applied as that role, then NOLOGIN and `ready`.
async fn build(
    ctx: &JobContext,
    admin: &PgPool,
    entry: &WarmDatabase,
    set: &crate::migration_set::MigrationSet,
    create: bool,
) -> Result<()> {
    let password = generate_password();
    let verifier = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || scram_sha256_verifier(&password)).await?
    };
    let role = quote_ident(&entry.role_name);
    let database = quote_ident(&entry.database_name);
    let pool_comment = quote_literal("pgfleet warm pool (unclaimed)");
    if create {
        sqlx::raw_sql(&format!(
            "CREATE ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}; COMMENT ON ROLE {role} IS {pool_comment}",
            quote_literal(verifier.expose_secret())
        ))
        .execute(admin)
        .await
        .context("creating the pool role")?;
        sqlx::raw_sql(&format!("CREATE DATABASE {database} OWNER {role}"))
            .execute(admin)
            .await
            .context("creating the pool database")?;
        sqlx::raw_sql(&format!(
            "REVOKE ALL ON DATABASE {database} FROM PUBLIC; COMMENT ON DATABASE {database} IS {pool_comment}"
        ))
        .execute(admin)
        .await
        .context("revoking PUBLIC access to the pool database")?;
    } else {
        sqlx::raw_sql(&format!(
            "ALTER ROLE {role} WITH LOGIN PASSWORD {}",
            quote_literal(verifier.expose_secret())
        ))
        .execute(admin)
        .await
        .context("letting the pool role log in")?;
    }
    let options = ctx
        .servers
        .role_options(entry.server_id, &entry.role_name, &password, &entry.database_name)
        .await?;
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .context("connecting as the pool role")?;
    let applied = tenant_migrations::apply(
        &mut conn,
        set,
        &mut NoMirror,
        tenant_migrations::Durability::OnCommit,
        tenant_migrations::Timeouts::default(),
    )
    .await;
    let _ = conn.close().await;
    let applied = applied.context("applying the tenant migrations to the pool database")?;
    sqlx::raw_sql(&format!("ALTER ROLE {role} WITH NOLOGIN"))
        .execute(admin)
        .await
        .context("locking the pool role")?;
    ctx.catalog
        .warm_database_ready(entry.id, applied.schema_version, &set.digest())
        .await?;
    Ok(())
}

/// Pool databases are not tenants: nothing to mirror into `tenant_migrations` (a claim
/// records what the database holds for its tenant).
struct NoMirror;

impl tenant_migrations::AppliedSink for NoMirror {
    fn committed(
        &mut self,
        _: Vec<(i64, Vec<u8>)>,
    ) -> futures_util::future::BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

async fn drop_entry(ctx: &JobContext, admin: &PgPool, entry: &WarmDatabase) -> Result<()> {
    sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(&entry.database_name)
    ))
    .execute(admin)
    .await
    .context("dropping a pool database")?;
    sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {}", quote_ident(&entry.role_name)))
        .execute(admin)
        .await
        .context("dropping a pool role")?;
    ctx.catalog.delete_warm_database(entry.id).await?;
    Ok(())
}

/// Takes a pool database for the tenant, if its server's pool has one, and gives it the
/// tenant's names (see the module docs). `None`: provision creates everything itself.
pub async fn claim(
    ctx: &JobContext,
    admin: &PgPool,
    tenant: &TenantRecord,
) -> Result<Option<WarmDatabase>, JobError> {
    if tenant.server_kind != ServerKind::Postgres {
        return Ok(None);
    }
    let Some(entry) = ctx
        .catalog
        .claim_warm_database(tenant.id, tenant.server_id)
        .await?
    else {
        return Ok(None);
    };
    let slug = crate::slug::TenantSlug::parse(&tenant.slug).map_err(|e| JobError::Permanent(e.into()))?;
    ctx.faults.check("provision.after_claim", &slug)?;
    let exists = |sql: &'static str, name: String| {
        let admin = admin.clone();
        async move {
            sqlx::query_scalar::<_, bool>(sql)
                .bind(name)
                .fetch_one(&admin)
                .await
        }
    };
    const DATABASE: &str = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)";
    const ROLE: &str = "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)";
    let comment = quote_literal(&format!("pgfleet tenant {}", tenant.slug));
    if !exists(DATABASE, tenant.database_name.clone())
        .await
        .doing("reading the tenant database")?
        && exists(DATABASE, entry.database_name.clone())
            .await
            .doing("reading the pool database")?
    {
        let from = quote_ident(&entry.database_name);
        let to = quote_ident(&tenant.database_name);
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&entry.database_name)
            .execute(admin)
            .await
            .doing("closing sessions on the pool database")?;
        sqlx::raw_sql(&format!(
            "ALTER DATABASE {from} RENAME TO {to}; COMMENT ON DATABASE {to} IS {comment}"
        ))
        .execute(admin)
        .await
        .doing("renaming the pool database to the tenant's")?;
    }
    ctx.faults.check("provision.after_claim_rename", &slug)?;
    if !exists(ROLE, tenant.role_name.clone())
        .await
        .doing("reading the tenant role")?
        && exists(ROLE, entry.role_name.clone())
            .await
            .doing("reading the pool role")?
    {
        let from = quote_ident(&entry.role_name);
        let to = quote_ident(&tenant.role_name);
        sqlx::raw_sql(&format!(
            "ALTER ROLE {from} RENAME TO {to}; COMMENT ON ROLE {to} IS {comment}"
        ))
        .execute(admin)
        .await
        .doing("renaming the pool role to the tenant's")?;
    }
    Ok(Some(entry))
}

/// After a claim: the catalog's mirror of the tenant's migrations gets what the pool
/// database already held (applied before it was the tenant's), read on `conn` (the
/// tenant's, just used for its migrations).
pub async fn record_claimed_migrations(
    ctx: &JobContext,
    tenant: &TenantRecord,
    conn: &mut sqlx::PgConnection,
) -> Result<(), JobError> {
    let applied: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM _pgfleet_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await
            .doing("reading the claimed database's migrations")?;
    ctx.catalog.record_tenant_migrations(tenant.id, &applied).await?;
    Ok(())
}
