//! `move`: a self-hosted tenant to another server, with its data verified before the
//! catalog points elsewhere, and the old copy dropped only after that.
//!
//! 1. The move is recorded (`tenant_moves`, once per job) and the tenant is `moving`.
//! 2. On the target: the tenant's role (same name and password, NOLOGIN for now, its
//!    limits) and, marked as this job's unfinished copy, its database.
//! 3. Downtime starts: the tenant's role may no longer log in on the source and its
//!    sessions are ended, so nothing is written after the copy starts.
//! 4. `pg_dump | psql`, streamed (no file), both sides through a short-lived "mover" login
//!    that is a member of the tenant's role and acts as it (`SET ROLE`): the copy never runs
//!    with more privilege than the tenant has, and the tenant's role stays locked.
//! 5. Every table's row count and checksum compared on both sides.
//! 6. The target role may log in; the catalog switches the tenant to the target in one
//!    transaction fenced by the job's lease. Downtime ends.
//! 7. The old database and role (and the movers) are dropped; the move is `done`.
//!
//! Interrupted before 6 (a worker killed, a server down), the next attempt starts the copy
//! again from a fresh target database; a failed attempt that still runs its error path hands
//! the tenant back — unlocked, `active` on the source — and removes what it made on the
//! target, so a retry backing off leaves no downtime. After 6 it only finishes step 7.
//! Identifiers come from the catalog and are always quoted.

use super::{Claimed, JobContext, Outcome};
use crate::catalog::{MoveRecord, ServerRecord, TenantRecord};
use crate::error::{server_sql_error, CancelReason, JobError, ServerSql};
use crate::message::MoveSpec;
use crate::pg_tools;
use crate::postgres::{quote_ident, quote_literal};
use crate::secrets::{generate_password, scram_sha256_verifier};
use crate::status::{ServerKind, ServerStatus, TenantStatus};
use anyhow::{anyhow, Context};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, PgPool};
use std::collections::BTreeMap;
use std::time::Instant;
use tracing::{info, warn};
use uuid::Uuid;

/// `move`: see the module docs.
pub async fn run(ctx: &JobContext, claimed: &Claimed<MoveSpec>) -> Result<Outcome, JobError> {
    let (job, slug) = (&claimed.job, &claimed.tenant);
    let started = Instant::now();
    let tenant = ctx
        .catalog
        .tenant(slug)
        .await?
        .ok_or_else(|| JobError::permanent(format!("no tenant {slug}")))?;
    let record = match ctx.catalog.tenant_move(job.id).await? {
        Some(record) => record,
        None => match begin(ctx, claimed, &tenant).await? {
            Begun::Already(outcome) => return Ok(outcome),
            Begun::Recorded(record) => record,
        },
    };
    match record.phase.as_str() {
        "done" => return done_outcome(ctx, &record, "already moved").await,
        "rolled_back" => {
            return Err(JobError::permanent(format!(
                "this move was rolled back: {}",
                record.error.as_deref().unwrap_or("unknown error")
            )))
        }
        "switched" => return finish(ctx, &tenant, &record).await,
        _ => {}
    }
    let from = ctx.catalog.server(record.from_server_id).await?;
    let to = ctx.catalog.server(record.to_server_id).await?;
    if !ctx
        .catalog
        .start_move(job.fence(), tenant.id, from.id, to.id)
        .await?
    {
        return Err(JobError::permanent(format!(
            "tenant {slug} is {}; only an active tenant is moved",
            tenant.status
        )));
    }
    let mover = mover_role(ctx, job.id);
    let copied = copy_and_verify(ctx, claimed, &tenant, &from, &to, &mover).await;
    let verified = match copied {
        Ok(verified) => verified,
        Err(JobError::Cancelled(reason)) => return Err(JobError::Cancelled(reason)),
        Err(e) => {
            let permanent = matches!(e, JobError::Permanent(_));
            let why = format!("{e}");
            if let Err(undo) = roll_back(ctx, &tenant, &record, permanent.then_some(why.as_str())).await {
                warn!(error = %format!("{undo:#}"), "could not undo the unfinished move yet; the next attempt (or the job's end) does");
            }
            return Err(e);
        }
    };
    ctx.faults.check("move.before_switch", slug)?;
    if !ctx.catalog.switch_move(job.fence(), &verified).await? {
        return Err(JobError::Cancelled(CancelReason::LeaseLost));
    }
    info!(tenant = %slug, from = %from.name, to = %to.name, "tenant switched to its new server");
    ctx.faults.check("move.after_switch", slug)?;
    let record = ctx
        .catalog
        .tenant_move(job.id)
        .await?
        .ok_or_else(|| anyhow!("the move's record vanished"))?;
    let tenant = ctx.catalog.tenant(slug).await?.unwrap_or(tenant);
    let outcome = finish(ctx, &tenant, &record).await?;
    info!(tenant = %slug, total_ms = started.elapsed().as_millis() as u64, "move finished");
    Ok(outcome)
}

enum Begun {
    Already(Outcome),
    Recorded(MoveRecord),
}

/// The first attempt: checks the request and records the move.
async fn begin(
    ctx: &JobContext,
    claimed: &Claimed<MoveSpec>,
    tenant: &TenantRecord,
) -> Result<Begun, JobError> {
    let slug = &claimed.tenant;
    let to = match ctx.catalog.server_by_name(&claimed.spec.to).await {
        Ok(server) if server.status != ServerStatus::Removed => server,
        Ok(_) | Err(crate::catalog::CatalogError::NotFound(_)) => {
            return Err(JobError::permanent(format!(
                "no tenant server named {:?} is registered (`pgfleet server list` shows them)",
                claimed.spec.to
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if tenant.server_id == to.id {
        return Ok(Begun::Already(Outcome::new(
            "already there",
            serde_json::json!({ "server": to.name }),
        )));
    }
    if tenant.server_kind != ServerKind::Postgres || to.kind != ServerKind::Postgres {
        return Err(JobError::permanent(format!(
            "tenant {slug} is on {} ({}) and the target {} is {}: moves are between self-hosted servers",
            tenant.server, tenant.server_kind, to.name, to.kind
        )));
    }
    if tenant.status != TenantStatus::Active {
        return Err(JobError::permanent(format!(
            "tenant {slug} is {}; only an active tenant is moved",
            tenant.status
        )));
    }
    if to.status != ServerStatus::Active {
        return Err(JobError::permanent(format!(
            "server {} is {}: it takes no new tenants",
            to.name, to.status
        )));
    }
    if to.free() == Some(0) {
        return Err(JobError::permanent(format!(
            "server {} is full ({} tenants, capacity {}); raise its capacity or choose another",
            to.name,
            to.tenants,
            to.capacity.unwrap_or(0)
        )));
    }
    let (source_major, target_major) = (
        server_major(ctx, tenant.server_id).await?,
        server_major(ctx, to.id).await?,
    );
    if target_major < source_major {
        return Err(JobError::permanent(format!(
            "server {} runs PostgreSQL {target_major}, older than {}'s {source_major}: a dump does not load into an older major version",
            to.name, tenant.server
        )));
    }
    match ctx
        .catalog
        .start_move(claimed.job.fence(), tenant.id, tenant.server_id, to.id)
        .await
    {
        Ok(true) => {}
        Ok(false) => return Err(JobError::Cancelled(CancelReason::LeaseLost)),
        Err(crate::catalog::CatalogError::Conflict(why)) => return Err(JobError::permanent(why)),
        Err(e) => return Err(e.into()),
    }
    let record = ctx
        .catalog
        .tenant_move(claimed.job.id)
        .await?
        .ok_or_else(|| anyhow!("the move's record vanished"))?;
    Ok(Begun::Recorded(record))
}

async fn server_major(ctx: &JobContext, server_id: Uuid) -> Result<u32, JobError> {
    let admin = ctx.servers.admin_pool(server_id).await?;
    let num: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(&admin)
        .await
        .doing("reading the server's version")?;
    Ok(num.parse::<u32>().context("unexpected server_version_num")? / 10_000)
}

/// The mover login of this job (`<namespace>_mv_<job>`): tenant names never contain `_`
/// after the namespace's, so it can't be a tenant's.
fn mover_role(ctx: &JobContext, job: Uuid) -> String {
    format!("{}_mv_{}", ctx.namespace, &job.simple().to_string()[..16])
}

/// The comment marking the target database as this job's (unfinished) copy.
fn copy_marker(job: Uuid) -> String {
    format!("pgfleet move job {job} (incomplete)")
}

/// Steps 2–5 of the module docs; returns what was verified.
async fn copy_and_verify(
    ctx: &JobContext,
    claimed: &Claimed<MoveSpec>,
    tenant: &TenantRecord,
    from: &ServerRecord,
    to: &ServerRecord,
    mover: &str,
) -> Result<serde_json::Value, JobError> {
    let slug = &claimed.tenant;
    let job = claimed.job.id;
    let source = ctx.servers.admin_pool(from.id).await?;
    let target = ctx.servers.admin_pool(to.id).await?;

    ensure_target_role(ctx, &target, tenant, job).await?;
    ctx.faults.check("move.after_target_role", slug)?;

    // Downtime starts: no new session of the tenant on the source, and none left.
    sqlx::raw_sql(&format!(
        "ALTER ROLE {} WITH NOLOGIN",
        quote_ident(&tenant.role_name)
    ))
    .execute(&source)
    .await
    .doing("blocking the tenant's logins on the source")?;
    ctx.catalog.move_blocked(job).await?;
    end_sessions(&source, &tenant.role_name).await?;
    ctx.faults.check("move.after_block", slug)?;

    prepare_target_database(&target, tenant, job).await?;
    let password = generate_password();
    ensure_mover(&source, mover, &tenant.role_name, &password).await?;
    ensure_mover(&target, mover, &tenant.role_name, &password).await?;
    let source_env = ctx
        .servers
        .role_libpq_env(from.id, mover, &password, &tenant.database_name)
        .await?;
    let target_env = ctx
        .servers
        .role_libpq_env(to.id, mover, &password, &tenant.database_name)
        .await?;
    let copied_bytes = stream_copy(ctx, tenant, from, to, &source_env, &target_env).await?;
    ctx.faults.check("move.after_copy", slug)?;

    let source_sums = table_sums(ctx, from.id, mover, &password, tenant).await?;
    let target_sums = table_sums(ctx, to.id, mover, &password, tenant).await?;
    if source_sums != target_sums {
        let differing: Vec<&String> = source_sums
            .keys()
            .chain(target_sums.keys())
            .filter(|t| source_sums.get(*t) != target_sums.get(*t))
            .take(5)
            .collect();
        return Err(JobError::permanent(format!(
            "the copy on {} does not match the source (tables differing: {}); the move was rolled back",
            to.name,
            differing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let rows: i64 = source_sums.values().map(|(n, _)| *n).sum();

    // The copy is the tenant's database now: its final comment, and its role may log in.
    sqlx::raw_sql(&format!(
        "COMMENT ON DATABASE {} IS {}; ALTER ROLE {} WITH LOGIN",
        quote_ident(&tenant.database_name),
        quote_literal(&format!("pgfleet tenant {}", tenant.slug)),
        quote_ident(&tenant.role_name)
    ))
    .execute(&target)
    .await
    .doing("opening the copy to the tenant")?;
    drop_role(&target, mover).await?;
    ctx.servers.flush_wal(to.id).await?;
    Ok(serde_json::json!({ "tables": source_sums.len(), "rows": rows, "bytes_copied": copied_bytes }))
}

/// The tenant's role on the target: same name and password, NOLOGIN until the switch, its
/// limits. A role of that name that this job did not make is never adopted.
async fn ensure_target_role(
    ctx: &JobContext,
    target: &PgPool,
    tenant: &TenantRecord,
    job: Uuid,
) -> Result<(), JobError> {
    let role = quote_ident(&tenant.role_name);
    let marker = format!("pgfleet tenant {} (move job {job})", tenant.slug);
    let existing: Option<Option<String>> =
        sqlx::query_scalar("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1")
            .bind(&tenant.role_name)
            .fetch_optional(target)
            .await
            .doing("looking for the tenant's role on the target")?;
    let password = ctx.catalog.tenant_password(tenant)?;
    let verifier = tokio::task::spawn_blocking(move || scram_sha256_verifier(&password))
        .await
        .context("computing the role's password verifier")?;
    let attributes = format!(
        "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT {} PASSWORD {}",
        tenant.connection_limit,
        quote_literal(verifier.expose_secret())
    );
    match existing {
        None => {
            let create = format!(
                "CREATE ROLE {role} WITH {attributes}; COMMENT ON ROLE {role} IS {}",
                quote_literal(&marker)
            );
            match sqlx::raw_sql(&create).execute(target).await {
                Ok(_) => {}
                Err(e) => return Err(server_sql_error(e, format!("creating role {} on the target", tenant.role_name))),
            }
        }
        Some(Some(comment)) if comment == marker => {
            sqlx::raw_sql(&format!("ALTER ROLE {role} WITH {attributes}"))
                .execute(target)
                .await
                .doing("updating the tenant's role on the target")?;
        }
        Some(_) => {
            return Err(JobError::permanent(format!(
                "a role named {} already exists on the target server and pgfleet did not make it for this move; pgfleet never adopts it — drop or rename it, then move again",
                tenant.role_name
            )))
        }
    }
    crate::limits::ensure_settings_of(target, &tenant.role_name, &tenant.limits()).await?;
    Ok(())
}

/// A fresh, empty target database owned by the tenant's role. An earlier attempt's copy of
/// this job is dropped first; any other database of that name is refused.
async fn prepare_target_database(target: &PgPool, tenant: &TenantRecord, job: Uuid) -> Result<(), JobError> {
    let database = quote_ident(&tenant.database_name);
    let marker = copy_marker(job);
    let existing: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(&tenant.database_name)
    .fetch_optional(target)
    .await
    .doing("looking for the tenant's database on the target")?;
    let ours = |c: &str| c == marker || c == format!("pgfleet tenant {}", tenant.slug);
    match existing {
        None => {}
        Some(Some(comment)) if comment == marker => {
            sqlx::raw_sql(&format!("DROP DATABASE {database} WITH (FORCE)"))
                .execute(target)
                .await
                .doing("dropping an earlier attempt's copy")?;
        }
        // An attempt that opened its copy and died before the switch: the source is still
        // locked, so copying again gives the same data.
        Some(Some(comment)) if ours(&comment) && owned_by(target, &tenant.database_name, &tenant.role_name).await? => {
            sqlx::raw_sql(&format!("DROP DATABASE {database} WITH (FORCE)"))
                .execute(target)
                .await
                .doing("dropping an earlier attempt's copy")?;
        }
        Some(_) => {
            return Err(JobError::permanent(format!(
                "a database named {} already exists on the target server; pgfleet never overwrites it — drop or rename it, then move again",
                tenant.database_name
            )))
        }
    }
    sqlx::raw_sql(&format!(
        "CREATE DATABASE {database} OWNER {}",
        quote_ident(&tenant.role_name)
    ))
    .execute(target)
    .await
    .doing("creating the tenant's database on the target")?;
    sqlx::raw_sql(&format!(
        "REVOKE ALL ON DATABASE {database} FROM PUBLIC; COMMENT ON DATABASE {database} IS {}",
        quote_literal(&marker)
    ))
    .execute(target)
    .await
    .doing("preparing the tenant's database on the target")?;
    Ok(())
}

async fn owned_by(admin: &PgPool, database: &str, role: &str) -> Result<bool, JobError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND pg_get_userbyid(datdba) = $2)",
    )
    .bind(database)
    .bind(role)
    .fetch_one(admin)
    .await
    .doing("reading the database's owner")
}

/// The mover login: a member of the tenant's role with a password only this attempt knows.
async fn ensure_mover(
    admin: &PgPool,
    mover: &str,
    tenant_role: &str,
    password: &SecretString,
) -> Result<(), JobError> {
    let password = password.clone();
    let verifier = tokio::task::spawn_blocking(move || scram_sha256_verifier(&password))
        .await
        .context("computing the mover's password verifier")?;
    let attributes = format!(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT 4 PASSWORD {}",
        quote_literal(verifier.expose_secret())
    );
    let mover_q = quote_ident(mover);
    let created = sqlx::raw_sql(&format!(
        "CREATE ROLE {mover_q} WITH {attributes}; COMMENT ON ROLE {mover_q} IS 'pgfleet move: temporary'"
    ))
    .execute(admin)
    .await;
    match created {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42710") => {
            sqlx::raw_sql(&format!("ALTER ROLE {mover_q} WITH {attributes}"))
                .execute(admin)
                .await
                .doing("preparing the move's login")?;
        }
        Err(e) => return Err(server_sql_error(e, "creating the move's login")),
    }
    sqlx::raw_sql(&format!("GRANT {} TO {mover_q}", quote_ident(tenant_role)))
        .execute(admin)
        .await
        .doing("letting the move's login act as the tenant")?;
    Ok(())
}

async fn drop_role(admin: &PgPool, role: &str) -> Result<(), JobError> {
    sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {}", quote_ident(role)))
        .execute(admin)
        .await
        .doing(format!("dropping role {role}"))?;
    Ok(())
}

async fn end_sessions(admin: &PgPool, role: &str) -> Result<(), JobError> {
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()")
        .bind(role)
        .execute(admin)
        .await
        .doing("ending the tenant's sessions")?;
    Ok(())
}

/// `pg_dump` (as the tenant, through the mover) piped into `psql` on the target (likewise),
/// in one transaction. Returns the bytes copied.
async fn stream_copy(
    ctx: &JobContext,
    tenant: &TenantRecord,
    from: &ServerRecord,
    to: &ServerRecord,
    source_env: &crate::servers::LibpqEnv,
    target_env: &crate::servers::LibpqEnv,
) -> Result<u64, JobError> {
    let pg_dump = pg_tools::find("pg_dump", server_major(ctx, from.id).await?)
        .await
        .map_err(JobError::Permanent)?;
    let psql = pg_tools::find("psql", server_major(ctx, to.id).await?)
        .await
        .map_err(JobError::Permanent)?;
    let role = format!("--role={}", tenant.role_name);
    let dump_args = [
        "--format=plain",
        "--no-owner",
        "--no-privileges",
        "--no-password",
        "--lock-wait-timeout=60000",
        role.as_str(),
    ];
    // psql logs in as the mover; everything it loads is made as (and owned by) the tenant.
    let set_role = format!("SET ROLE {};\n", quote_ident(&tenant.role_name));
    match pg_tools::pipe_dump_into_psql(&pg_dump, &dump_args, source_env, &psql, target_env, &set_role).await
    {
        Ok(bytes) => Ok(bytes),
        Err(pg_tools::PipeError::Dump(why)) => Err(anyhow!("pg_dump of the tenant failed ({why})").into()),
        Err(pg_tools::PipeError::Load(why)) => Err(JobError::permanent(format!(
            "loading the copy on {} failed ({why})",
            to.name
        ))),
        Err(pg_tools::PipeError::Other(e)) => Err(e.into()),
    }
}

/// Row count and an order-independent checksum (sum of each row's MD5) of every table, as
/// the tenant sees it, through the mover.
async fn table_sums(
    ctx: &JobContext,
    server_id: Uuid,
    mover: &str,
    password: &SecretString,
    tenant: &TenantRecord,
) -> Result<BTreeMap<String, (i64, String)>, JobError> {
    let admin = ctx.servers.admin_pool(server_id).await?;
    let options: sqlx::postgres::PgConnectOptions = (*admin.connect_options())
        .clone()
        .username(mover)
        .password(password.expose_secret())
        .database(&tenant.database_name);
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .context("connecting to verify the copy")?;
    // One statement per query: `raw_sql` on a bare connection makes this future non-Send.
    for setting in [
        format!("SET ROLE {}", quote_ident(&tenant.role_name)),
        "SET search_path = ''".to_owned(),
        "SET statement_timeout = 0".to_owned(),
    ] {
        sqlx::query(&setting)
            .execute(&mut conn)
            .await
            .doing("preparing the verification session")?;
    }
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
          ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await
    .doing("listing the tenant's tables")?;
    let mut sums = BTreeMap::new();
    for (schema, table) in tables {
        let name = format!("{}.{}", quote_ident(&schema), quote_ident(&table));
        let (rows, sum): (i64, String) = sqlx::query_as(&format!(
            "SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 15))::bit(60)::bigint), 0)::text FROM ONLY {name} t"
        ))
        .fetch_one(&mut conn)
        .await
        .doing(format!("checksumming {name}"))?;
        sums.insert(name, (rows, sum));
    }
    let _ = conn.close().await;
    Ok(sums)
}

/// Step 7: the old database and role go, then the move is `done`.
async fn finish(ctx: &JobContext, tenant: &TenantRecord, record: &MoveRecord) -> Result<Outcome, JobError> {
    let source = ctx.servers.admin_pool(record.from_server_id).await?;
    let mover = mover_role(ctx, record.job_id);
    sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(&tenant.database_name)
    ))
    .execute(&source)
    .await
    .doing("dropping the old copy")?;
    drop_role(&source, &mover).await?;
    let target = ctx.servers.admin_pool(record.to_server_id).await?;
    drop_role(&target, &mover).await?;
    // The old role may still own databases there (e.g. restores): it stays, locked.
    let still_owned: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = $1)",
    )
    .bind(&tenant.role_name)
    .fetch_one(&source)
    .await
    .doing("looking for databases the old role owns")?;
    if still_owned {
        warn!(role = %tenant.role_name, "the old role still owns databases on the old server (restores?); it stays there, unable to log in");
    } else {
        drop_role(&source, &tenant.role_name).await?;
    }
    ctx.servers.flush_wal(record.from_server_id).await?;
    crate::limits::record_size(&ctx.catalog, &target, tenant).await;
    ctx.catalog.finish_move(record.job_id).await?;
    let record = ctx
        .catalog
        .tenant_move(record.job_id)
        .await?
        .unwrap_or_else(|| record.clone());
    done_outcome(ctx, &record, "moved").await
}

async fn done_outcome(ctx: &JobContext, record: &MoveRecord, summary: &str) -> Result<Outcome, JobError> {
    let from = ctx.catalog.server(record.from_server_id).await?;
    let to = ctx.catalog.server(record.to_server_id).await?;
    Ok(Outcome::new(
        summary,
        serde_json::json!({
            "from": from.name,
            "to": to.name,
            "downtime_ms": record.downtime_ms,
            "verified": record.verified,
        }),
    ))
}

/// Undoes an unfinished move: what this job made on the target goes, the source role may
/// log in again, and the tenant is active there. `error`: the move is over for good.
async fn roll_back(
    ctx: &JobContext,
    tenant: &TenantRecord,
    record: &MoveRecord,
    error: Option<&str>,
) -> anyhow::Result<()> {
    let target = ctx.servers.admin_pool(record.to_server_id).await?;
    let source = ctx.servers.admin_pool(record.from_server_id).await?;
    let mover = mover_role(ctx, record.job_id);
    let marker = copy_marker(record.job_id);
    let comment: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(&tenant.database_name)
    .fetch_optional(&target)
    .await?;
    let final_comment = format!("pgfleet tenant {}", tenant.slug);
    if let Some(Some(c)) = comment {
        if c == marker
            || (c == final_comment && owned_by(&target, &tenant.database_name, &tenant.role_name).await?)
        {
            sqlx::raw_sql(&format!(
                "DROP DATABASE {} WITH (FORCE)",
                quote_ident(&tenant.database_name)
            ))
            .execute(&target)
            .await?;
        }
    }
    let role_marker = format!("pgfleet tenant {} (move job {})", tenant.slug, record.job_id);
    let role_comment: Option<Option<String>> =
        sqlx::query_scalar("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1")
            .bind(&tenant.role_name)
            .fetch_optional(&target)
            .await?;
    drop_role(&target, &mover).await?;
    if role_comment.flatten().as_deref() == Some(role_marker.as_str()) {
        drop_role(&target, &tenant.role_name).await?;
    }
    drop_role(&source, &mover).await?;
    // The source role as the catalog says it should be (LOGIN unless suspended).
    super::provision::ensure_role(ctx, &source, tenant).await?;
    ctx.servers.flush_wal(record.from_server_id).await?;
    ctx.catalog
        .roll_back_move(record.job_id, tenant.id, error)
        .await?;
    warn!(tenant = %tenant.slug, "the unfinished move was undone; the tenant is active on its old server");
    Ok(())
}

/// A move job gave up without its handler running to the end (every attempt's worker was
/// killed): before the switch, the move is undone; after it, the old copy is dropped.
pub async fn give_up(ctx: &JobContext, job: &crate::catalog::JobRecord) -> anyhow::Result<()> {
    let Some(record) = ctx.catalog.tenant_move(job.id).await? else {
        return Ok(());
    };
    let tenant = ctx
        .catalog
        .tenant_by_id(record.tenant_id)
        .await?
        .ok_or_else(|| anyhow!("the moved tenant vanished"))?;
    match record.phase.as_str() {
        "copying" => {
            let why = job.error.clone().unwrap_or_else(|| "out of attempts".into());
            roll_back(ctx, &tenant, &record, Some(&why)).await
        }
        "switched" => {
            finish(ctx, &tenant, &record).await.map_err(|e| anyhow!("{e}"))?;
            Ok(())
        }
        _ => Ok(()),
    }
}
