//! What the job handlers and the fleet service do with a Neon tenant: make its project
//! exist exactly once, fetch and seal its URIs, branch it, delete it.
//!
//! Exactly one project per tenant, whatever fails: the tenant's catalog row (written first)
//! fixes the project's name (the tenant's database name, unique per install); before
//! creating, pgfleet looks for a project of that name and adopts it, so a crash or a lost
//! `POST /projects` response between Neon's create and the catalog write is healed by the
//! next attempt; and a catalog advisory lock per tenant keeps two workers from both finding
//! nothing and both creating. Branches follow the same rule with their catalog row.

use super::api::{Operation, ProjectSpec};
use super::client::NeonClient;
use crate::catalog::{BranchRecord, Catalog, TenantRecord};
use crate::error::JobError;
use crate::servers::TenantServers;
use anyhow::{anyhow, Context};
use tracing::{info, warn};
use uuid::Uuid;

/// Advisory-lock class of "creating a Neon project or branch for this catalog row".
const CREATE_LOCK_CLASS: i32 = 0x4e45_4f4e; // "NEON"

/// Rounds of look-then-create before an attempt gives up (each lost response costs one).
const CREATE_ROUNDS: usize = 4;

/// Held while a project or branch is looked for and created; a session lock on its own
/// catalog connection, released when that connection closes (also if the worker dies).
struct CreateLock(sqlx::pool::PoolConnection<sqlx::Postgres>);

impl CreateLock {
    async fn take(catalog: &Catalog, row: Uuid) -> Result<Self, JobError> {
        let mut conn = catalog
            .pool()
            .acquire()
            .await
            .context("taking a catalog connection for the Neon create lock")?;
        sqlx::query("SELECT set_config('lock_timeout', '300s', false)")
            .execute(&mut *conn)
            .await
            .context("preparing the Neon create lock")?;
        sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
            .bind(CREATE_LOCK_CLASS)
            .bind(row.to_string())
            .execute(&mut *conn)
            .await
            .context("waiting for another worker creating the same Neon project or branch")?;
        Ok(Self(conn))
    }

    /// Closes the connection (which ends the lock) rather than handing it back to the pool
    /// with a session setting and a lock on it.
    async fn release(self) {
        let _ = self.0.close().await;
    }
}

/// The tenant's project: created (or found) once, its operations finished, its direct and
/// pooled URIs sealed in the catalog. Returns the tenant as now recorded.
pub async fn ensure_project(
    catalog: &Catalog,
    servers: &TenantServers,
    tenant: &TenantRecord,
) -> Result<TenantRecord, JobError> {
    let (client, settings) = servers.neon(tenant.server_id).await?;
    let slug =
        crate::slug::TenantSlug::parse(&tenant.slug).map_err(|e| JobError::Permanent(anyhow!("{e}")))?;
    let mut pending: Vec<Operation> = Vec::new();
    let project = match &tenant.neon_project_id {
        Some(project) => project.clone(),
        None => {
            let lock = CreateLock::take(catalog, tenant.id).await?;
            let fresh = catalog
                .tenant(&slug)
                .await?
                .ok_or_else(|| anyhow!("tenant {slug} vanished from the catalog"))?;
            let project = match fresh.neon_project_id {
                Some(project) => project,
                None => {
                    let spec = ProjectSpec {
                        name: &project_name(tenant),
                        region_id: &settings.region_id,
                        pg_version: settings.pg_version,
                        org_id: settings.org_id.as_deref(),
                        role_name: &tenant.role_name,
                        database_name: &tenant.database_name,
                    };
                    let (project, branch, operations) = find_or_create_project(&client, &spec).await?;
                    pending = operations;
                    catalog
                        .set_tenant_neon_project(tenant.id, &project, branch.as_deref())
                        .await?
                        .0
                }
            };
            lock.release().await;
            project
        }
    };
    // What this attempt created, it waits for; what an earlier one did, the project lists.
    if pending.is_empty() {
        client.wait_project_idle(&project).await?;
    } else {
        client.wait_operations(&project, &pending).await?;
    }
    let mut tenant = catalog
        .tenant(&slug)
        .await?
        .ok_or_else(|| anyhow!("tenant {slug} vanished from the catalog"))?;
    if catalog.tenant_uri(&tenant, true)?.is_none() || catalog.tenant_uri(&tenant, false)?.is_none() {
        let direct = client
            .connection_uri(&project, None, &tenant.database_name, &tenant.role_name, false)
            .await?;
        let pooled = client
            .connection_uri(&project, None, &tenant.database_name, &tenant.role_name, true)
            .await?;
        catalog.set_tenant_uris(tenant.id, &direct, &pooled).await?;
        tenant = catalog
            .tenant(&slug)
            .await?
            .ok_or_else(|| anyhow!("tenant {slug} vanished from the catalog"))?;
    }
    Ok(tenant)
}

/// A Neon tenant's project name: its database name (`<namespace>_<slug>`, unique per
/// install), so a project is found again by name after a lost response.
pub fn project_name(tenant: &TenantRecord) -> String {
    tenant.database_name.clone()
}

/// (project id, default branch id if known, operations to wait for).
async fn find_or_create_project(
    client: &NeonClient,
    spec: &ProjectSpec<'_>,
) -> Result<(String, Option<String>, Vec<Operation>), JobError> {
    for _ in 0..CREATE_ROUNDS {
        let found = client.projects_named(spec.name, spec.org_id).await?;
        match found.as_slice() {
            [one] => {
                info!(project = %one.id, name = spec.name, "adopting the project an earlier attempt created");
                return Ok((one.id.clone(), None, Vec::new()));
            }
            [] => match client.create_project(spec).await {
                Ok(created) => {
                    info!(project = %created.project.id, name = spec.name, "created Neon project");
                    return Ok((
                        created.project.id,
                        created.branch.map(|b| b.id),
                        created.operations,
                    ));
                }
                Err(e) if e.maybe_applied() => {
                    warn!(error = %e, "the project create may have been done; looking for it before asking again");
                }
                Err(e) => return Err(e.into()),
            },
            many => {
                let ids: Vec<&str> = many.iter().map(|p| p.id.as_str()).collect();
                return Err(JobError::permanent(format!(
                    "{} Neon projects are named {} ({}); pgfleet creates one per tenant and can't tell which is the tenant's. \
                     Delete the ones that are not (Neon console or API) and retry",
                    many.len(),
                    spec.name,
                    ids.join(", ")
                )));
            }
        }
    }
    Err(JobError::Other(anyhow!(
        "the Neon project {} could not be created after {CREATE_ROUNDS} tries (responses lost); the job is retried",
        spec.name
    )))
}

/// Deletes the tenant's project (or, if none was recorded, any project of its name an
/// interrupted provision made). Returns the ids deleted.
pub async fn delete_project(servers: &TenantServers, tenant: &TenantRecord) -> Result<Vec<String>, JobError> {
    let (client, settings) = servers.neon(tenant.server_id).await?;
    let projects = match &tenant.neon_project_id {
        Some(project) => vec![project.clone()],
        None => client
            .projects_named(&project_name(tenant), settings.org_id.as_deref())
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect(),
    };
    let mut deleted = Vec::new();
    for project in projects {
        if client.delete_project(&project).await? {
            info!(%project, tenant = %tenant.slug, "deleted Neon project");
        }
        deleted.push(project);
    }
    Ok(deleted)
}

/// Branch names: letters, digits, `.`, `_`, `-`, at most 63, starting with a letter or
/// digit. They go into JSON bodies and catalog rows only, never SQL.
pub fn check_branch_name(name: &str) -> Result<(), JobError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(JobError::permanent(format!(
            "branch name {:?} is not allowed: use letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit)",
            name.chars().take(70).collect::<String>()
        )))
    }
}

/// What kind of branch to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BranchPurpose {
    /// `pgfleet tenant branch`: a copy of the tenant to develop or test against.
    Dev { schema_only: bool },
    /// The target of a restore job: its database is replaced by the backup.
    Restore { job: Uuid },
}

/// Makes the branch exist (with a read-write endpoint) and returns its catalog row and
/// the direct URI of the tenant's role on the tenant's database there. Safe to repeat.
pub async fn ensure_branch(
    catalog: &Catalog,
    servers: &TenantServers,
    tenant: &TenantRecord,
    name: &str,
    purpose: BranchPurpose,
) -> Result<(BranchRecord, secrecy::SecretString), JobError> {
    check_branch_name(name)?;
    let project = tenant.neon_project_id.clone().ok_or_else(|| {
        JobError::permanent(format!(
            "tenant {} has no Neon project yet; provision it first",
            tenant.slug
        ))
    })?;
    let (client, _) = servers.neon(tenant.server_id).await?;
    let row = catalog.ensure_branch_row(tenant.id, name, purpose).await?;
    let lock = CreateLock::take(catalog, row.id).await?;
    let row = catalog
        .branch(tenant.id, name)
        .await?
        .ok_or_else(|| anyhow!("branch {name} vanished from the catalog"))?;
    let mut pending = Vec::new();
    let branch_id = match &row.neon_branch_id {
        Some(id) => id.clone(),
        None => {
            let mut made = None;
            for _ in 0..CREATE_ROUNDS {
                let found: Vec<_> = client
                    .branches(&project)
                    .await?
                    .into_iter()
                    .filter(|b| b.name == name)
                    .collect();
                match found.as_slice() {
                    [one] => {
                        made = Some(one.id.clone());
                        break;
                    }
                    [] => match client
                        .create_branch(&project, name, matches!(purpose, BranchPurpose::Dev { schema_only: true }))
                        .await
                    {
                        Ok(created) => {
                            pending = created.operations;
                            made = Some(created.branch.id);
                            break;
                        }
                        Err(e) if e.maybe_applied() => {
                            warn!(error = %e, "the branch create may have been done; looking for it before asking again")
                        }
                        Err(e) => return Err(e.into()),
                    },
                    _ => {
                        return Err(JobError::permanent(format!(
                            "tenant {}'s project has several branches named {name}; delete the extra ones and retry",
                            tenant.slug
                        )))
                    }
                }
            }
            let id = made.ok_or_else(|| {
                JobError::Other(anyhow!(
                    "the branch {name} could not be created (responses lost); retry"
                ))
            })?;
            catalog.set_branch_id(row.id, &id).await?;
            id
        }
    };
    lock.release().await;
    // What this attempt created, it waits for; what an earlier one did, the project lists.
    if pending.is_empty() {
        client.wait_project_idle(&project).await?;
    } else {
        client.wait_operations(&project, &pending).await?;
    }
    let uri = client
        .connection_uri(
            &project,
            Some(&branch_id),
            &tenant.database_name,
            &tenant.role_name,
            false,
        )
        .await?;
    let row = catalog
        .branch(tenant.id, name)
        .await?
        .ok_or_else(|| anyhow!("branch {name} vanished from the catalog"))?;
    Ok((row, uri))
}

/// Deletes a branch made by `ensure_branch` (Neon and catalog); `false` if there was none.
pub async fn delete_branch(
    catalog: &Catalog,
    servers: &TenantServers,
    tenant: &TenantRecord,
    name: &str,
) -> Result<bool, JobError> {
    let Some(row) = catalog.branch(tenant.id, name).await? else {
        return Ok(false);
    };
    let (client, _) = servers.neon(tenant.server_id).await?;
    if let Some(project) = &row.neon_project_id {
        // A restore into a project of its own: the whole project goes.
        client.delete_project(project).await?;
    } else if let (Some(project), Some(branch)) = (&tenant.neon_project_id, &row.neon_branch_id) {
        let pending = client.delete_branch(project, branch).await?;
        client.wait_operations(project, &pending).await?;
    }
    catalog.delete_branch_row(row.id).await?;
    Ok(true)
}

/// How long before its catalog row a project found by name may have been created and still
/// be taken for this restore's own (clocks of Neon and the catalog differ).
const ADOPT_CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// The target of a restore into a new project `name` (`--into project:NAME`): its catalog
/// row (`project:NAME`, owned by the restore job) and the project, made once — a project of
/// that name is adopted only if it appeared after this job's row did (a create whose
/// response was lost); an older one is someone else's and refused. Returns the row and the
/// direct URI of the tenant's role and database in it.
pub async fn ensure_restore_project(
    catalog: &Catalog,
    servers: &TenantServers,
    tenant: &TenantRecord,
    name: &str,
    job: Uuid,
) -> Result<(BranchRecord, secrecy::SecretString), JobError> {
    check_branch_name(name)?;
    let row_name = format!("project:{name}");
    let (client, settings) = servers.neon(tenant.server_id).await?;
    catalog
        .ensure_branch_row(tenant.id, &row_name, BranchPurpose::Restore { job })
        .await?;
    let lock = CreateLock::take(catalog, tenant.id).await?;
    let row = catalog
        .branch(tenant.id, &row_name)
        .await?
        .ok_or_else(|| anyhow!("restore target {row_name} vanished from the catalog"))?;
    let mut pending = Vec::new();
    let project = match &row.neon_project_id {
        Some(project) => project.clone(),
        None => {
            let spec = ProjectSpec {
                name,
                region_id: &settings.region_id,
                pg_version: settings.pg_version,
                org_id: settings.org_id.as_deref(),
                role_name: &tenant.role_name,
                database_name: &tenant.database_name,
            };
            let mut made = None;
            for _ in 0..CREATE_ROUNDS {
                let found = client.projects_named(name, spec.org_id).await?;
                match found.as_slice() {
                    [] => match client.create_project(&spec).await {
                        Ok(created) => {
                            pending = created.operations;
                            made = Some(created.project.id);
                            break;
                        }
                        Err(e) if e.maybe_applied() => {
                            warn!(error = %e, "the project create may have been done; looking for it before asking again")
                        }
                        Err(e) => return Err(e.into()),
                    },
                    [one] if one.created_at.is_some_and(|at| at >= row.created_at - ADOPT_CLOCK_SKEW) => {
                        made = Some(one.id.clone());
                        break;
                    }
                    _ => {
                        return Err(JobError::permanent(format!(
                            "a Neon project named {name} already exists; restore never loads into an existing project — choose another --into project:NAME"
                        )))
                    }
                }
            }
            let project = made.ok_or_else(|| {
                JobError::Other(anyhow!(
                    "the project {name} could not be created (responses lost); retry"
                ))
            })?;
            catalog.set_branch_project(row.id, &project).await?;
            project
        }
    };
    lock.release().await;
    // What this attempt created, it waits for; what an earlier one did, the project lists.
    if pending.is_empty() {
        client.wait_project_idle(&project).await?;
    } else {
        client.wait_operations(&project, &pending).await?;
    }
    let uri = client
        .connection_uri(&project, None, &tenant.database_name, &tenant.role_name, false)
        .await?;
    let row = catalog
        .branch(tenant.id, &row_name)
        .await?
        .ok_or_else(|| anyhow!("restore target {row_name} vanished from the catalog"))?;
    Ok((row, uri))
}
