//! A self-hosted tenant's dev/test copy (`pgfleet tenant branch`, a `restore` into
//! `branch:NAME`): a database and a login role of its own on the tenant's server, loaded
//! from a verified backup (the newest good one, or the one asked for) or, schema only, from
//! the live database. The copy's role owns only the copy: it can't reach the tenant's
//! database, and the tenant's role can't reach the copy.
//!
//! The catalog row comes first (names fixed, so a retry finds its own leftovers); the
//! database is marked as this job's unfinished copy until loaded, and the row's sealed URL,
//! written last, marks it ready. Branches are not tenants: scheduled backups skip them.

use super::restore::{fetch_verified, load};
use super::{Claimed, JobContext, Outcome};
use crate::catalog::{BackupRecord, TenantRecord};
use crate::error::{server_sql_error, JobError, ServerSql};
use crate::message::RestoreSpec;
use crate::neon::tenants::BranchPurpose;
use crate::pg_tools;
use crate::postgres::{quote_ident, quote_literal};
use crate::secrets::{generate_password, scram_sha256_verifier};
use anyhow::{anyhow, Context};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tracing::info;

/// Database and role name of a tenant's branch: `<namespace>_<slug>_<name>` (slugs have no
/// `_`, so it is never a tenant's), shortened with a hash past 63 bytes.
pub fn branch_object_name(namespace: &str, slug: &str, name: &str) -> String {
    let full = format!("{namespace}_{slug}_{name}");
    if full.len() <= 63 {
        return full;
    }
    let hash = Sha256::digest(format!("{slug}\0{name}").as_bytes());
    let suffix: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    let keep = 63 - namespace.len() - 1 - 1 - suffix.len();
    let middle: String = format!("{slug}_{name}").chars().take(keep).collect();
    format!("{namespace}_{middle}_{suffix}")
}

fn marker(branch: uuid::Uuid) -> String {
    format!("pgfleet branch {branch} (incomplete)")
}

/// Makes the branch (see the module docs).
pub async fn run(
    ctx: &JobContext,
    claimed: &Claimed<RestoreSpec>,
    tenant: &TenantRecord,
    backup: Option<BackupRecord>,
    name: &str,
) -> Result<Outcome, JobError> {
    let schema_only = claimed.spec.schema_only;
    let object = branch_object_name(ctx.namespace.as_str(), &tenant.slug, name);
    let row = ctx
        .catalog
        .ensure_branch_row(tenant.id, name, BranchPurpose::Dev { schema_only })
        .await
        .map_err(|e| JobError::permanent(format!("{e}")))?;
    ctx.catalog
        .set_branch_place(row.id, tenant.server_id, &object, backup.as_ref().map(|b| b.id))
        .await
        .map_err(|e| JobError::permanent(format!("{e}")))?;
    let outcome = Outcome::new(
        "branched",
        serde_json::json!({
            "branch": name, "database": object, "role": object, "server": tenant.server,
            "schema_only": schema_only, "backup_id": backup.as_ref().map(|b| b.id),
        }),
    );
    if row.ready {
        return Ok(Outcome::new("already branched", outcome.details));
    }
    // One job at a time makes a given branch (two requests for a new name may race): the
    // other is retried once this one is done, and then finds it made.
    let mut lock = ctx
        .catalog
        .pool()
        .acquire()
        .await
        .context("taking a catalog connection for the branch's lock")?
        .detach();
    let id = row.id.as_u128();
    let key = ((id >> 64) as u64 ^ id as u64) as i32;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(BRANCH_LOCK)
        .bind(key)
        .fetch_one(&mut lock)
        .await
        .context("locking the branch")?;
    if !locked {
        let _ = sqlx::Connection::close(lock).await;
        return Err(anyhow!("another job is making branch {name} right now; retried later").into());
    }
    let made = make(ctx, tenant, backup, name, &object, &row, outcome).await;
    // Closing the connection releases the lock.
    let _ = sqlx::Connection::close(lock).await;
    made
}

/// Class of the session advisory lock one branch's job holds ("BRCH").
const BRANCH_LOCK: i32 = 0x4252_4348;

async fn make(
    ctx: &JobContext,
    tenant: &TenantRecord,
    backup: Option<BackupRecord>,
    name: &str,
    object: &str,
    row: &crate::catalog::BranchRecord,
    outcome: Outcome,
) -> Result<Outcome, JobError> {
    if ctx.catalog.branch_uri(row.id).await?.is_some() {
        return Ok(Outcome::new("already branched", outcome.details));
    }
    let admin = ctx.servers.admin_pool(tenant.server_id).await?;
    // A backup is verified before anything is made: a tampered object leaves nothing.
    let verified = match &backup {
        Some(b) => Some(fetch_verified(ctx, b).await?),
        None => None,
    };
    let password = generate_password();
    // Marked with the branch's id: any job making this branch adopts what an earlier made.
    ensure_branch_role(&admin, object, tenant, name, row.id, &password).await?;
    prepare_database(&admin, object, row.id).await?;
    let env = ctx
        .servers
        .role_libpq_env(tenant.server_id, object, &password, object)
        .await?;
    let loaded = match (verified, &backup) {
        (Some(file), Some(b)) => load(ctx, tenant, b, file, &env).await,
        _ => copy_schema(ctx, tenant, object, &env).await,
    };
    if let Err(e) = loaded {
        if matches!(e, JobError::Permanent(_)) {
            let _ = drop_branch_objects(&admin, object).await;
        }
        return Err(e);
    }
    sqlx::raw_sql(&format!(
        "COMMENT ON DATABASE {} IS {}",
        quote_ident(object),
        quote_literal(&format!("pgfleet branch {name} of tenant {}", tenant.slug))
    ))
    .execute(&admin)
    .await
    .doing("marking the branch complete")?;
    ctx.servers.flush_wal(tenant.server_id).await?;
    let url = branch_url(ctx, tenant, object, &password).await?;
    ctx.catalog.set_branch_ready(row.id, &url).await?;
    info!(branch = name, database = %object, "dev copy made");
    Ok(outcome)
}

/// The branch's login role: its own password, the tenant's connection limit, nothing more.
async fn ensure_branch_role(
    admin: &PgPool,
    role: &str,
    tenant: &TenantRecord,
    name: &str,
    job: uuid::Uuid,
    password: &secrecy::SecretString,
) -> Result<(), JobError> {
    let comment = format!("pgfleet branch {name} of tenant {} ({job})", tenant.slug);
    let existing: Option<Option<String>> =
        sqlx::query_scalar("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(admin)
            .await
            .doing("looking for the branch's role")?;
    let password = password.clone();
    let verifier = tokio::task::spawn_blocking(move || scram_sha256_verifier(&password))
        .await
        .context("computing the branch role's password verifier")?;
    let attributes = format!(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT {} PASSWORD {}",
        tenant.connection_limit,
        quote_literal(verifier.expose_secret())
    );
    let role_q = quote_ident(role);
    match existing {
        None => sqlx::raw_sql(&format!(
            "CREATE ROLE {role_q} WITH {attributes}; COMMENT ON ROLE {role_q} IS {}",
            quote_literal(&comment)
        ))
        .execute(admin)
        .await
        .map_err(|e| server_sql_error(e, format!("creating role {role}")))
        .map(|_| ()),
        Some(Some(c)) if c == comment => sqlx::raw_sql(&format!("ALTER ROLE {role_q} WITH {attributes}"))
            .execute(admin)
            .await
            .doing(format!("updating role {role}"))
            .map(|_| ()),
        Some(_) => Err(JobError::permanent(format!(
            "a role named {role} already exists on the server and pgfleet did not make it for this branch; choose another branch name"
        ))),
    }
}

/// A fresh, empty database owned by the branch role; an earlier attempt's is dropped first.
async fn prepare_database(admin: &PgPool, database: &str, job: uuid::Uuid) -> Result<(), JobError> {
    let existing: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_optional(admin)
    .await
    .doing("looking for the branch's database")?;
    let db = quote_ident(database);
    match existing {
        None => {}
        Some(Some(c)) if c == marker(job) => {
            sqlx::raw_sql(&format!("DROP DATABASE {db} WITH (FORCE)"))
                .execute(admin)
                .await
                .doing("dropping an earlier attempt's branch database")?;
        }
        Some(_) => {
            return Err(JobError::permanent(format!(
                "a database named {database} already exists on the server; pgfleet never overwrites it — choose another branch name"
            )))
        }
    }
    sqlx::raw_sql(&format!("CREATE DATABASE {db} OWNER {db}"))
        .execute(admin)
        .await
        .doing(format!("creating database {database}"))?;
    sqlx::raw_sql(&format!(
        "REVOKE ALL ON DATABASE {db} FROM PUBLIC; COMMENT ON DATABASE {db} IS {}",
        quote_literal(&marker(job))
    ))
    .execute(admin)
    .await
    .doing("preparing the branch database")?;
    Ok(())
}

/// `pg_dump --schema-only` of the live tenant (as the tenant) into `psql` as the branch role.
async fn copy_schema(
    ctx: &JobContext,
    tenant: &TenantRecord,
    database: &str,
    branch_env: &crate::servers::LibpqEnv,
) -> Result<(), JobError> {
    let major = ctx.servers.tenant_server_major(tenant).await?;
    let pg_dump = pg_tools::find("pg_dump", major)
        .await
        .map_err(JobError::Permanent)?;
    let psql = pg_tools::find("psql", major).await.map_err(JobError::Permanent)?;
    let tenant_env = ctx
        .servers
        .tenant_libpq_env(tenant, &tenant.database_name)
        .await?;
    let dump_args = ["--schema-only", "--no-owner", "--no-privileges", "--no-password"];
    match pg_tools::pipe_dump_into_psql(&pg_dump, &dump_args, &tenant_env, &psql, branch_env, "").await {
        Ok(_) => Ok(()),
        Err(pg_tools::PipeError::Dump(why)) => Err(anyhow!("pg_dump --schema-only failed ({why})").into()),
        Err(pg_tools::PipeError::Load(why)) => Err(JobError::permanent(format!(
            "loading the schema into {database} failed ({why})"
        ))),
        Err(pg_tools::PipeError::Other(e)) => Err(e.into()),
    }
}

async fn branch_url(
    ctx: &JobContext,
    tenant: &TenantRecord,
    object: &str,
    password: &secrecy::SecretString,
) -> Result<secrecy::SecretString, JobError> {
    let admin = ctx.catalog.server_admin_url(tenant.server_id).await?;
    let mut url = url::Url::parse(admin.expose_secret()).context("the server's admin URL is not a URL")?;
    url.set_username(object)
        .map_err(|_| anyhow!("cannot put the role name in the server URL"))?;
    url.set_password(Some(password.expose_secret()))
        .map_err(|_| anyhow!("cannot put the password in the server URL"))?;
    url.set_path(&format!("/{object}"));
    Ok(url.to_string().into())
}

/// Drops a branch's database and role (a failed load, `tenant branch-delete`, the tenant's
/// delete).
pub async fn drop_branch_objects(admin: &PgPool, object: &str) -> Result<(), JobError> {
    let name = quote_ident(object);
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(admin)
        .await
        .doing(format!("dropping database {object}"))?;
    sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {name}"))
        .execute(admin)
        .await
        .doing(format!("dropping role {object}"))?;
    Ok(())
}

/// Deletes a self-hosted branch: its database and role, then its row.
pub async fn delete(
    catalog: &crate::catalog::Catalog,
    servers: &crate::servers::TenantServers,
    branch: &crate::catalog::BranchRecord,
) -> Result<(), JobError> {
    if let (Some(server), Some(object)) = (branch.server_id, &branch.database_name) {
        let admin = servers.admin_pool(server).await?;
        drop_branch_objects(&admin, object).await?;
        servers.flush_wal(server).await?;
    }
    catalog.delete_branch_row(branch.id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::branch_object_name;

    #[test]
    fn branch_names_fit_and_never_look_like_a_tenant() {
        assert_eq!(branch_object_name("pgfleet", "acme", "dev"), "pgfleet_acme_dev");
        let slug = format!("a{}", "b".repeat(50));
        let (a, b) = (
            branch_object_name("pgfleet", &slug, "pr-1"),
            branch_object_name("pgfleet", &slug, "pr-2"),
        );
        assert!(a.len() <= 63 && b.len() <= 63 && a != b, "{a} {b}");
        // Tenant names are `<namespace>_<slug>` and slugs have no '_': a branch always has two.
        assert!(a.matches('_').count() >= 2, "{a}");
    }
}
