//! Servers and Neon branches, as the CLI and the API use them: register a server (self-
//! hosted or Neon), list servers, and a Neon tenant's dev/test branches.

use super::{Fleet, FleetError, Result};
use crate::catalog::{BranchRecord, NewServer, ServerRecord};
use crate::error::JobError;
use crate::neon::tenants::{self, BranchPurpose};
use crate::neon::{NeonClient, NeonSettings, RateLimiter};
use crate::slug::TenantSlug;
use crate::status::{ServerKind, TenantStatus};
use secrecy::{ExposeSecret, SecretString};
use sqlx::ConnectOptions;
use std::sync::Arc;

impl From<JobError> for FleetError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Permanent(e) => FleetError::Conflict(format!("{e:#}")),
            other => FleetError::Other(anyhow::anyhow!("{other}")),
        }
    }
}

/// A branch asked for: ready (Neon, or made earlier) with its URL, or being made by a job.
pub enum BranchMade {
    Ready(BranchRecord, SecretString),
    Enqueued(crate::producer::Enqueued),
}

/// What `server add` registers.
pub enum ServerSpec {
    Postgres {
        url: SecretString,
    },
    Neon {
        settings: NeonSettings,
        api_key: SecretString,
    },
}

impl Fleet {
    /// Registers a tenant server, checked first so a bad one is refused here rather than at
    /// the first signup: a self-hosted server must answer and its admin role must be able
    /// to create roles and databases (the rest of `server check`'s findings come back as
    /// warnings); a Neon key is tried with one `GET /projects`.
    pub async fn add_server(
        &self,
        name: &str,
        region: Option<&str>,
        capacity: Option<i32>,
        spec: ServerSpec,
    ) -> Result<(ServerRecord, Option<super::ServerReport>)> {
        crate::message::validate_server_name(name).map_err(FleetError::Invalid)?;
        if capacity.is_some_and(|c| c < 0) {
            return Err(FleetError::Invalid("--capacity must be 0 or more".into()));
        }
        let mut report = None;
        match &spec {
            ServerSpec::Postgres { url } => {
                let options = crate::postgres::connect_options(url.expose_secret())
                    .map_err(|_| FleetError::Invalid("the URL is not a valid Postgres URL".into()))?
                    .log_statements(tracing::log::LevelFilter::Off);
                let admin = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect_lazy_with(options);
                let found = self.inspect(name, &admin, None).await.map_err(|e| {
                    FleetError::Invalid(format!(
                        "server {name} could not be checked, nothing was registered: {e}"
                    ))
                })?;
                admin.close().await;
                if !found.admin_can_provision || !found.version_supported {
                    return Err(FleetError::Invalid(format!(
                        "server {name} was not registered: {}",
                        found.findings.first().cloned().unwrap_or_default()
                    )));
                }
                report = Some(found);
            }
            ServerSpec::Neon { settings, api_key } => {
                url::Url::parse(&settings.api_url)
                    .map_err(|_| FleetError::Invalid("--neon-api-url is not a URL".into()))?;
                if api_key.expose_secret().trim().is_empty() {
                    return Err(FleetError::Invalid(
                        "a Neon server needs an API key: set PGFLEET_NEON_API_KEY".into(),
                    ));
                }
                let limiter = Arc::new(RateLimiter::new(crate::neon::RateLimits::DEFAULT));
                let client =
                    NeonClient::new(&settings.api_url, api_key.clone(), limiter, Default::default())?;
                client
                    .projects_named("pgfleet-key-check", settings.org_id.as_deref())
                    .await
                    .map_err(|e| FleetError::Invalid(format!("the Neon API refused the key or URL: {e}")))?;
            }
        }
        let new = match &spec {
            ServerSpec::Postgres { url } => NewServer::Postgres { url },
            ServerSpec::Neon { settings, api_key } => NewServer::Neon { settings, api_key },
        };
        let server = self.catalog.add_server(name, region, capacity, new).await?;
        Ok((server, report))
    }

    /// Makes a dev/test branch of a tenant. Neon: a branch of its project, made here and
    /// returned ready. Self-hosted: a database and role of its own, loaded from a backup (the
    /// newest good one, or `from_backup`) or, `schema_only`, from the live schema — a
    /// `restore` job into `branch:NAME`, returned enqueued.
    pub async fn branch_tenant(
        &self,
        slug: &TenantSlug,
        name: &str,
        schema_only: bool,
        from_backup: Option<uuid::Uuid>,
        backups: bool,
        key: Option<String>,
    ) -> Result<BranchMade> {
        let tenant = self.tenant(slug).await?;
        if tenant.server_kind == ServerKind::Neon {
            if backups {
                return Err(FleetError::Invalid(
                    "--backups is for self-hosted tenants' copies; a Neon branch shares its project's history".into(),
                ));
            }
            if from_backup.is_some() {
                return Err(FleetError::Invalid(
                    "--from-backup is for self-hosted tenants; a Neon branch starts from the project's current state (restore a backup into one with `pgfleet restore SLUG --into branch:NAME`)".into(),
                ));
            }
            let (row, url) = self.create_branch(slug, name, schema_only).await?;
            return Ok(BranchMade::Ready(row, url));
        }
        if tenant.status != TenantStatus::Active {
            return Err(FleetError::Conflict(format!(
                "tenant {slug} is {}, not active",
                tenant.status
            )));
        }
        if schema_only && from_backup.is_some() {
            return Err(FleetError::Invalid(
                "--schema-only copies the live schema; it takes no --from-backup".into(),
            ));
        }
        let into = format!("branch:{name}");
        crate::message::validate_database_name(&into).map_err(|e| FleetError::Invalid(e.to_string()))?;
        // The row first: it fixes the copy's settings before the job makes it.
        let row = self
            .catalog
            .ensure_branch_row(tenant.id, name, tenants::BranchPurpose::Dev { schema_only })
            .await?;
        if backups && !row.backups_enabled {
            self.catalog.set_branch_backups(row.id, true).await?;
        }
        if row.ready {
            let row = self.catalog.branch(tenant.id, name).await?.unwrap_or(row);
            return Ok(BranchMade::Ready(row, self.branch_url(slug, name).await?));
        }
        let spec = crate::message::RestoreSpec {
            backup: from_backup,
            into,
            schema_only,
        };
        Ok(BranchMade::Enqueued(
            self.enqueue(slug.clone(), crate::message::JobSpec::Restore(spec), key)
                .await?,
        ))
    }

    async fn neon_tenant(&self, slug: &TenantSlug) -> Result<crate::catalog::TenantRecord> {
        let tenant = self.tenant(slug).await?;
        if tenant.server_kind != ServerKind::Neon {
            return Err(FleetError::Invalid(format!(
                "tenant {slug} is on self-hosted server {}; branches are for Neon tenants",
                tenant.server
            )));
        }
        if tenant.status != TenantStatus::Active {
            return Err(FleetError::Conflict(format!(
                "tenant {slug} is {}, not active",
                tenant.status
            )));
        }
        Ok(tenant)
    }

    /// Makes a dev/test branch of a Neon tenant (a read-write endpoint; `schema_only`: no
    /// data) and returns it with its URL. Asking again for the same branch returns it.
    pub async fn create_branch(
        &self,
        slug: &TenantSlug,
        name: &str,
        schema_only: bool,
    ) -> Result<(BranchRecord, SecretString)> {
        let tenant = self.neon_tenant(slug).await?;
        let (row, uri) = tenants::ensure_branch(
            &self.catalog,
            &self.servers,
            &tenant,
            name,
            BranchPurpose::Dev { schema_only },
        )
        .await?;
        if !row.ready {
            self.catalog.set_branch_ready(row.id, &uri).await?;
        }
        let row = self
            .catalog
            .branch(tenant.id, name)
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("branch {name} vanished")))?;
        Ok((row, uri))
    }

    /// The URL of a ready branch (a dev branch, or a restore's target once loaded).
    pub async fn branch_url(&self, slug: &TenantSlug, name: &str) -> Result<SecretString> {
        let tenant = self.tenant(slug).await?;
        let branch = self
            .catalog
            .branch(tenant.id, name)
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("tenant {slug} has no branch {name}")))?;
        self.catalog.branch_uri(branch.id).await?.ok_or_else(|| {
            FleetError::Conflict(format!(
                "branch {name} of tenant {slug} is not ready yet (being made or loaded)"
            ))
        })
    }

    pub async fn branches(&self, slug: &TenantSlug) -> Result<Vec<BranchRecord>> {
        let tenant = self.tenant(slug).await?;
        Ok(self.catalog.branches(tenant.id).await?)
    }

    /// Turns backups of a self-hosted tenant's dev copy on or off (they run with the
    /// tenant's backups, under its prefix and retention).
    pub async fn set_branch_backups(
        &self,
        slug: &TenantSlug,
        name: &str,
        enabled: bool,
    ) -> Result<BranchRecord> {
        let tenant = self.tenant(slug).await?;
        let row = self
            .catalog
            .branch(tenant.id, name)
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("tenant {slug} has no branch {name}")))?;
        if row.database_name.is_none() && tenant.server_kind == ServerKind::Neon {
            return Err(FleetError::Invalid(
                "backups are for self-hosted tenants' copies; a Neon branch shares its project's history"
                    .into(),
            ));
        }
        self.catalog.set_branch_backups(row.id, enabled).await?;
        Ok(self.catalog.branch(tenant.id, name).await?.unwrap_or(row))
    }

    /// Deletes a branch pgfleet made (from Neon, or its database and role, and the catalog).
    pub async fn delete_branch(&self, slug: &TenantSlug, name: &str) -> Result<()> {
        let tenant = self.tenant(slug).await?;
        if let Some(row) = self.catalog.branch(tenant.id, name).await? {
            if row.database_name.is_some() {
                crate::jobs::dev_copy::delete(&self.catalog, &self.servers, &row).await?;
                return Ok(());
            }
        }
        if !tenants::delete_branch(&self.catalog, &self.servers, &tenant, name).await? {
            return Err(FleetError::NotFound(format!(
                "tenant {slug} has no branch {name}"
            )));
        }
        Ok(())
    }
}
