//! `provision`: a tenant's login role (generated password), its database owned by that role
//! with no PUBLIC access, a connection limit, then the tenant migrations applied as the
//! tenant's role, and the catalog row `active`. Each step checks the actual state first,
//! so a provision interrupted between any two steps completes on the next attempt, and a
//! provision of an active tenant changes nothing.

use super::{Claimed, JobContext, Outcome};
use crate::catalog::{Fence, NewTenant, PlacementError, TenantRecord};
use crate::error::{server_sql_error, CancelReason, JobError, ServerSql};
use crate::message::ProvisionSpec;
use crate::postgres::{quote_ident, quote_literal};
use crate::secrets::{generate_password, scram_sha256_verifier, scram_verifier_matches};
use crate::slug::TenantSlug;
use crate::status::{ServerKind, TenantStatus};
use crate::tenant_migrations;
use anyhow::Context;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tracing::info;

/// Postgres SQLSTATEs for "already exists" races between two provisions of one tenant.
const DUPLICATE_OBJECT: &str = "42710";
const DUPLICATE_DATABASE: &str = "42P04";

/// `provision`: the tenant's role, database and schema (see the module docs).
pub async fn run(ctx: &JobContext, job: &Claimed<ProvisionSpec>) -> Result<Outcome, JobError> {
    provision(
        ctx,
        &job.tenant,
        job.spec.region.as_deref(),
        Some(job.job.fence()),
    )
    .await
}

/// Makes the tenant exist, active, at the newest migration set, outside any job (tests,
/// tools); jobs go through `run`, whose final write is fenced by their lease.
pub async fn provision_tenant(
    ctx: &JobContext,
    slug: &TenantSlug,
    region: Option<&str>,
) -> Result<Outcome, JobError> {
    provision(ctx, slug, region, None).await
}

async fn provision(
    ctx: &JobContext,
    slug: &TenantSlug,
    region: Option<&str>,
    fence: Option<Fence>,
) -> Result<Outcome, JobError> {
    let tenant = ensure_catalog_row(ctx, slug, region).await?;
    if matches!(tenant.status, TenantStatus::Deleted | TenantStatus::Deleting) {
        return Err(JobError::Permanent(anyhow::anyhow!(
            "tenant {slug} is {}; a deleted tenant's slug is not reused",
            tenant.status
        )));
    }
    if matches!(tenant.status, TenantStatus::Suspended | TenantStatus::Moving) {
        // Provisioned already; a suspended role stays locked until `tenant resume`, and a
        // moving tenant is the move's to finish.
        info!(tenant = %slug, status = %tenant.status, "provision: nothing to do");
        return Ok(Outcome::new(
            format!("already provisioned ({})", tenant.status),
            serde_json::json!({ "database": tenant.database_name, "server": tenant.server, "status": tenant.status }),
        ));
    }
    if tenant.server_kind == ServerKind::Neon {
        return provision_neon(ctx, slug, tenant, fence).await;
    }
    let admin = ctx.servers.admin_pool(tenant.server_id).await?;

    // A warm pool database, if the server has one ready: renamed to the tenant's, and the
    // steps below find most of their work done.
    let claimed = if tenant.status == TenantStatus::Provisioning {
        super::warm_pool::claim(ctx, &admin, &tenant).await?
    } else {
        None
    };
    let role_changed = ensure_role(ctx, &admin, &tenant).await?;
    ctx.faults.check("provision.after_role", slug)?;
    let database_created = ensure_database(&admin, &tenant).await?;
    ctx.faults.check("provision.after_database", slug)?;

    let applied = apply_migrations(
        ctx,
        &tenant,
        tenant_migrations::Durability::CallerFlushes,
        claimed.as_ref(),
    )
    .await?;
    ctx.faults.check("provision.after_migrations", slug)?;

    // The steps above commit asynchronously (see `servers`); this one synchronous commit
    // flushes the server's WAL past all of them before the catalog calls the tenant active.
    ctx.servers.flush_wal(tenant.server_id).await?;

    let was_active = activate(ctx, &tenant, &applied, fence).await?;
    if claimed.is_some() {
        ctx.catalog.forget_warm_claim(tenant.id).await?;
    }
    crate::limits::record_size(&ctx.catalog, &admin, &tenant).await;

    let nothing_done =
        was_active && role_changed.is_none() && !database_created && applied.applied.is_empty();
    let summary = if nothing_done {
        "already active"
    } else {
        "provisioned"
    };
    info!(tenant = %slug, summary, migrations = applied.applied.len(), "provision finished");
    Ok(Outcome::new(
        summary,
        serde_json::json!({
            "database": tenant.database_name,
            "role": tenant.role_name,
            "server": tenant.server,
            "role_changes": role_changed,
            "database_created": database_created,
            "warm_pool": claimed.as_ref().map(|w| w.database_name.clone()),
            "migrations_applied": applied.applied,
            "schema_version": applied.schema_version,
        }),
    ))
}

/// The tenant migrations, as the tenant's role: once a rollout has recorded a set, new
/// tenants get exactly that set.
/// `from_pool`: the warm pool entry the database was claimed from. What it held before it
/// was the tenant's is recorded in the catalog's mirror too: when the entry was built to
/// this very set (same digest), that is the set itself and no tenant connection is needed
/// (the refill applied it as the pool's role, NOLOGIN and without PUBLIC access since, so
/// nobody else wrote to it); otherwise the remaining migrations are applied and the
/// database's table read, on one connection.
async fn apply_migrations(
    ctx: &JobContext,
    tenant: &TenantRecord,
    durability: tenant_migrations::Durability,
    from_pool: Option<&crate::catalog::WarmDatabase>,
) -> Result<tenant_migrations::Applied, JobError> {
    let recorded = ctx.catalog.latest_migration_set().await?;
    let set = recorded.as_ref().unwrap_or(&ctx.tenant_migrations);
    if let Some(entry) = from_pool {
        if entry.set_digest.as_deref() == Some(set.digest().as_slice()) {
            let held: Vec<(i64, Vec<u8>)> = set
                .migrations
                .iter()
                .map(|m| (m.version, m.checksum.clone()))
                .collect();
            ctx.catalog.record_tenant_migrations(tenant.id, &held).await?;
            return Ok(tenant_migrations::Applied {
                applied: Vec::new(),
                schema_version: entry.schema_version,
            });
        }
    }
    let mut conn = ctx.servers.connect_as_tenant(tenant).await?;
    let applied = tenant_migrations::apply(
        &mut conn,
        set,
        &mut super::CatalogMirror {
            catalog: &ctx.catalog,
            tenant_id: tenant.id,
        },
        durability,
        tenant_migrations::Timeouts::default(),
    )
    .await?;
    if from_pool.is_some() {
        super::warm_pool::record_claimed_migrations(ctx, tenant, &mut conn).await?;
    }
    let _ = sqlx::Connection::close(conn).await;
    Ok(applied)
}

/// Marks the tenant active at the applied version (fenced by the job); returns whether it
/// already was, at that version.
async fn activate(
    ctx: &JobContext,
    tenant: &TenantRecord,
    applied: &tenant_migrations::Applied,
    fence: Option<Fence>,
) -> Result<bool, JobError> {
    let was_active = tenant.status == TenantStatus::Active && tenant.schema_version == applied.schema_version;
    if !ctx
        .catalog
        .mark_tenant_active(tenant.id, applied.schema_version, fence)
        .await?
    {
        return Err(JobError::Cancelled(CancelReason::LeaseLost));
    }
    Ok(was_active)
}

/// A Neon tenant: its project, then the migrations over its direct URI, then `active`.
async fn provision_neon(
    ctx: &JobContext,
    slug: &TenantSlug,
    tenant: TenantRecord,
    fence: Option<Fence>,
) -> Result<Outcome, JobError> {
    let had_project = tenant.neon_project_id.is_some();
    let tenant = crate::neon::tenants::ensure_project(&ctx.catalog, &ctx.servers, &tenant).await?;
    ctx.faults.check("provision.after_project", slug)?;
    let applied = apply_migrations(ctx, &tenant, tenant_migrations::Durability::OnCommit, None).await?;
    ctx.faults.check("provision.after_migrations", slug)?;
    let was_active = activate(ctx, &tenant, &applied, fence).await?;
    let summary = if was_active && had_project && applied.applied.is_empty() {
        "already active"
    } else {
        "provisioned"
    };
    info!(tenant = %slug, summary, project = tenant.neon_project_id.as_deref().unwrap_or(""), "provision finished");
    Ok(Outcome::new(
        summary,
        serde_json::json!({
            "database": tenant.database_name,
            "role": tenant.role_name,
            "server": tenant.server,
            "neon_project_id": tenant.neon_project_id,
            "project_created": !had_project,
            "migrations_applied": applied.applied,
            "schema_version": applied.schema_version,
        }),
    ))
}

/// The catalog row comes first: it fixes the server, names and password before anything
/// exists on the server, so every retry reuses them.
async fn ensure_catalog_row(
    ctx: &JobContext,
    slug: &TenantSlug,
    region: Option<&str>,
) -> Result<TenantRecord, JobError> {
    if let Some(existing) = ctx.catalog.tenant(slug).await? {
        return Ok(existing);
    }
    ctx.faults.check("provision.before_placement", slug)?;
    let name = object_name(ctx.namespace.as_str(), slug);
    let new = NewTenant {
        slug,
        database_name: name.clone(),
        role_name: name,
        password: generate_password(),
        limits: ctx.tenant_limits,
    };
    // An unreachable catalog is retried like any outage; "no server takes it" is final.
    match ctx.catalog.place_tenant(new, region).await {
        Ok(tenant) => Ok(tenant),
        Err(PlacementError::NoServer(why)) => Err(JobError::permanent(why)),
        Err(PlacementError::Catalog(e)) => Err(e.into()),
    }
}

/// Database and role name of a tenant: `<namespace>_<slug>`, so installs sharing a server
/// never collide; when that exceeds Postgres's 63-byte identifiers, a shortened slug plus a
/// hash of the full one keeps it unique.
pub fn object_name(namespace: &str, slug: &TenantSlug) -> String {
    let full = format!("{namespace}_{slug}");
    if full.len() <= 63 {
        return full;
    }
    let hash = Sha256::digest(slug.as_str().as_bytes());
    let suffix: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    let keep = 63 - namespace.len() - 1 - 1 - suffix.len();
    format!("{namespace}_{}_{suffix}", &slug.as_str()[..keep])
}

#[derive(sqlx::FromRow)]
struct RoleState {
    rolcanlogin: bool,
    rolsuper: bool,
    rolcreatedb: bool,
    rolcreaterole: bool,
    rolconnlimit: i32,
    /// `None` when the admin may not read `pg_authid` (not a superuser).
    rolpassword: Option<String>,
}

/// Makes the login role exist with the stored password and limits (login refused while the
/// tenant is suspended), and its session defaults (`limits`). Returns what changed (`None`
/// when nothing did).
pub(crate) async fn ensure_role(
    ctx: &JobContext,
    admin: &PgPool,
    tenant: &TenantRecord,
) -> Result<Option<&'static str>, JobError> {
    let password = ctx.catalog.tenant_password(tenant)?;
    let role = quote_ident(&tenant.role_name);
    let limit = tenant.connection_limit;
    let login = if tenant.suspended_at.is_none() {
        "LOGIN"
    } else {
        "NOLOGIN"
    };
    let settings_changed = |changed: Vec<&'static str>| (!changed.is_empty()).then_some("settings updated");
    let state = match read_role(admin, &tenant.role_name).await? {
        Some(state) => state,
        None => {
            let verifier = verifier_off_runtime(&password).await?;
            // One batch, one transaction: the role never exists without its comment.
            let create = format!(
                "CREATE ROLE {role} WITH {login} NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT {limit} PASSWORD {}; {}",
                quote_literal(verifier.expose_secret()),
                comment_sql("ROLE", &role, &tenant.slug),
            );
            match sqlx::raw_sql(&create).execute(admin).await {
                Ok(_) => {
                    crate::limits::ensure_role_settings(admin, tenant).await?;
                    return Ok(Some("created"));
                }
                // A concurrent provision created it first: check what it made.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(DUPLICATE_OBJECT) => {
                    read_role(admin, &tenant.role_name)
                        .await?
                        .with_context(|| format!("role {} exists and yet is not found", tenant.role_name))?
                }
                Err(e) => return Err(server_sql_error(e, format!("creating role {}", tenant.role_name))),
            }
        }
    };
    // The stored verifier is the tenant's to set (a role may change its own password):
    // checked off the runtime, and a costly one is not computed (see MAX_SCRAM_ITERATIONS).
    let password_ok = match state.rolpassword.clone() {
        Some(stored) => {
            let password = password.clone();
            tokio::task::spawn_blocking(move || scram_verifier_matches(&password, &stored))
                .await
                .context("checking the role's password verifier")?
        }
        None => false,
    };
    let attributes_ok = state.rolcanlogin == tenant.suspended_at.is_none()
        && !state.rolsuper
        && !state.rolcreatedb
        && !state.rolcreaterole
        && state.rolconnlimit == limit;
    if password_ok && attributes_ok {
        return Ok(settings_changed(
            crate::limits::ensure_role_settings(admin, tenant).await?,
        ));
    }
    let verifier = verifier_off_runtime(&password).await?;
    let alter = format!(
        "ALTER ROLE {role} WITH {login} NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT {limit} PASSWORD {}",
        quote_literal(verifier.expose_secret())
    );
    sqlx::raw_sql(&alter)
        .execute(admin)
        .await
        .doing(format!("updating role {}", tenant.role_name))?;
    crate::limits::ensure_role_settings(admin, tenant).await?;
    Ok(Some("updated"))
}

/// A fresh SCRAM verifier, computed on a blocking thread (thousands of PBKDF2 rounds).
async fn verifier_off_runtime(password: &secrecy::SecretString) -> Result<secrecy::SecretString, JobError> {
    let password = password.clone();
    Ok(
        tokio::task::spawn_blocking(move || scram_sha256_verifier(&password))
            .await
            .context("computing the role's password verifier")?,
    )
}

async fn read_role(admin: &PgPool, role: &str) -> Result<Option<RoleState>, JobError> {
    let with_password = sqlx::query_as::<_, RoleState>(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolconnlimit, rolpassword FROM pg_authid WHERE rolname = $1",
    )
    .bind(role)
    .fetch_optional(admin)
    .await;
    match with_password {
        Ok(state) => Ok(state),
        // Not a superuser (e.g. a managed service's admin role): no password to compare,
        // so the password is set again, which is harmless.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => Ok(sqlx::query_as::<_, RoleState>(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolconnlimit, NULL::text AS rolpassword
             FROM pg_roles WHERE rolname = $1",
        )
        .bind(role)
        .fetch_optional(admin)
        .await
        .doing("reading the tenant role")?),
        Err(e) => Err(server_sql_error(e, "reading the tenant role")),
    }
}

fn comment_sql(object: &str, quoted_name: &str, slug: &str) -> String {
    format!(
        "COMMENT ON {object} {quoted_name} IS {}",
        quote_literal(&format!("pgfleet tenant {slug}"))
    )
}

/// Makes the database exist, owned by the tenant role, with no PUBLIC privileges.
/// Returns whether it was created. A database of that name owned by anyone else is never
/// adopted.
async fn ensure_database(admin: &PgPool, tenant: &TenantRecord) -> Result<bool, JobError> {
    let database = quote_ident(&tenant.database_name);
    let mut created = false;
    let mut owner = database_owner(admin, &tenant.database_name).await?;
    if owner.is_none() {
        let create = format!(
            "CREATE DATABASE {database} OWNER {}",
            quote_ident(&tenant.role_name)
        );
        match sqlx::raw_sql(&create).execute(admin).await {
            Ok(_) => {
                created = true;
                owner = Some(tenant.role_name.clone());
            }
            // A concurrent provision created it first: check what it made.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(DUPLICATE_DATABASE) => {
                owner = database_owner(admin, &tenant.database_name).await?;
            }
            Err(e) => {
                return Err(server_sql_error(
                    e,
                    format!("creating database {}", tenant.database_name),
                ))
            }
        }
    }
    match owner {
        Some(owner) if owner == tenant.role_name => {}
        None => return Err(anyhow::anyhow!("database {} vanished while being created", tenant.database_name).into()),
        Some(owner) => {
            return Err(JobError::Permanent(anyhow::anyhow!(
                "database {} already exists and is owned by {owner}, not by the tenant role {}; pgfleet never adopts a database it did not create — rename or drop it, then retry",
                tenant.database_name,
                tenant.role_name
            )))
        }
    }
    // A new database has the default privileges (PUBLIC may connect); an existing one is
    // checked. Comment and revoke go in one batch: one transaction, one commit.
    let public_has_access: bool = created
        || sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                            WHERE d.datname = $1 AND a.grantee = 0)",
        )
        .bind(&tenant.database_name)
        .fetch_one(admin)
        .await
        .doing("reading the tenant database's privileges")?;
    if public_has_access {
        let mut sql = format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC");
        if created {
            sql = format!("{sql}; {}", comment_sql("DATABASE", &database, &tenant.slug));
        }
        sqlx::raw_sql(&sql)
            .execute(admin)
            .await
            .doing("revoking PUBLIC access to the tenant database")?;
    }
    Ok(created)
}

async fn database_owner(admin: &PgPool, database: &str) -> Result<Option<String>, JobError> {
    sqlx::query_scalar("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1")
        .bind(database)
        .fetch_optional(admin)
        .await
        .doing("reading the tenant database")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_fit_postgres_identifiers() {
        let short = TenantSlug::parse("acme-corp").unwrap();
        assert_eq!(object_name("pgfleet", &short), "pgfleet_acme-corp");
        let long_a = TenantSlug::parse(&format!("a{}", "b".repeat(62))).unwrap();
        let long_b = TenantSlug::parse(&format!("a{}c", "b".repeat(61))).unwrap();
        let (a, b) = (object_name("pgfleet", &long_a), object_name("pgfleet", &long_b));
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
    }
}
