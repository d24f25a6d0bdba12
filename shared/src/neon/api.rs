//! The Neon API calls pgfleet makes, typed: projects, their operations, connection URIs,
//! branches and a branch's databases. Paths and bodies as documented at
//! https://api-docs.neon.tech/reference (v2).

use super::client::{NeonClient, NeonError};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

/// The operation statuses after which nothing more happens (`failed` is retried by Neon).
const FINAL_STATUSES: [&str; 3] = ["finished", "skipped", "cancelled"];

#[derive(Debug, Clone, Deserialize)]
pub struct Operation {
    pub id: String,
    #[serde(default)]
    pub action: String,
    pub status: String,
}

impl Operation {
    pub fn is_final(&self) -> bool {
        FINAL_STATUSES.contains(&self.status.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Branch {
    pub id: String,
    pub name: String,
}

/// What a project create answered.
#[derive(Debug)]
pub struct CreatedProject {
    pub project: Project,
    pub branch: Option<Branch>,
    pub operations: Vec<Operation>,
}

/// What a branch create answered.
#[derive(Debug)]
pub struct CreatedBranch {
    pub branch: Branch,
    pub operations: Vec<Operation>,
}

/// A new project's settings.
pub struct ProjectSpec<'a> {
    pub name: &'a str,
    pub region_id: &'a str,
    pub pg_version: Option<u32>,
    pub org_id: Option<&'a str>,
    pub role_name: &'a str,
    pub database_name: &'a str,
}

fn field<T: serde::de::DeserializeOwned>(v: &Value, name: &str, what: &str) -> Result<T, NeonError> {
    serde_json::from_value(v.get(name).cloned().unwrap_or(Value::Null)).map_err(|e| NeonError::Unexpected {
        what: what.to_owned(),
        detail: format!("field {name}: {e}"),
    })
}

fn operations(v: &Value) -> Vec<Operation> {
    v.get("operations")
        .cloned()
        .and_then(|ops| serde_json::from_value(ops).ok())
        .unwrap_or_default()
}

fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl NeonClient {
    /// `POST /projects`. A lost response is `maybe_applied`: look for the project by name
    /// before asking again.
    pub async fn create_project(&self, spec: &ProjectSpec<'_>) -> Result<CreatedProject, NeonError> {
        let mut project = json!({
            "name": spec.name,
            "region_id": spec.region_id,
            "branch": { "role_name": spec.role_name, "database_name": spec.database_name },
        });
        if let Some(version) = spec.pg_version {
            project["pg_version"] = json!(version);
        }
        if let Some(org) = spec.org_id {
            project["org_id"] = json!(org);
        }
        let answer = self.post("/projects", json!({ "project": project })).await?;
        Ok(CreatedProject {
            project: field(&answer, "project", "POST /projects")?,
            branch: answer
                .get("branch")
                .cloned()
                .and_then(|b| serde_json::from_value(b).ok()),
            operations: operations(&answer),
        })
    }

    /// Projects whose name is exactly `name` (`GET /projects?search=`, which matches parts
    /// of names and ids).
    pub async fn projects_named(&self, name: &str, org_id: Option<&str>) -> Result<Vec<Project>, NeonError> {
        let mut query = vec![("search", name), ("limit", "400")];
        if let Some(org) = org_id {
            query.push(("org_id", org));
        }
        let answer = self.get("/projects", &query).await?;
        let projects: Vec<Project> = field(&answer, "projects", "GET /projects")?;
        Ok(projects.into_iter().filter(|p| p.name == name).collect())
    }

    /// Whether the project exists (`GET /projects/{id}`).
    pub async fn project_exists(&self, project: &str) -> Result<bool, NeonError> {
        match self.get(&format!("/projects/{}", segment(project)), &[]).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /projects/{id}`; `false` if there was no such project.
    pub async fn delete_project(&self, project: &str) -> Result<bool, NeonError> {
        match self.delete(&format!("/projects/{}", segment(project))).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until every one of `operations` is final (`finished`, `skipped`, `cancelled`),
    /// polling with a growing interval, at most the policy's operation deadline. One
    /// operation is polled by itself; several through the project's operation list (one
    /// request for all of them: the rate limit is the bound on how fast tenants are made).
    pub async fn wait_operations(&self, project: &str, operations: &[Operation]) -> Result<(), NeonError> {
        let mut pending: Vec<Operation> = operations.iter().filter(|o| !o.is_final()).cloned().collect();
        let started = Instant::now();
        let deadline = started + self.policy().operation_deadline;
        let mut interval = Duration::from_millis(100);
        while let Some(first) = pending.first().cloned() {
            if Instant::now() + interval > deadline {
                return Err(NeonError::OperationTimeout {
                    project: project.to_owned(),
                    operation: first.id,
                    action: first.action,
                    status: first.status,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 3 / 2).min(Duration::from_secs(2));
            if pending.len() == 1 {
                let answer = self
                    .get(
                        &format!("/projects/{}/operations/{}", segment(project), segment(&first.id)),
                        &[],
                    )
                    .await?;
                let current: Operation = field(&answer, "operation", "GET /projects/{id}/operations/{op}")?;
                pending = if current.is_final() {
                    Vec::new()
                } else {
                    vec![current]
                };
            } else {
                let listed = self.operations(project).await?;
                // An operation no longer listed (the list shows the newest 100) is polled by
                // itself next time round.
                pending = match pending
                    .iter()
                    .map(|p| listed.iter().find(|l| l.id == p.id).cloned())
                    .collect::<Option<Vec<Operation>>>()
                {
                    Some(now) => now.into_iter().filter(|o| !o.is_final()).collect(),
                    None => pending.into_iter().take(1).collect(),
                };
            }
        }
        Ok(())
    }

    async fn operations(&self, project: &str) -> Result<Vec<Operation>, NeonError> {
        let answer = self
            .get(
                &format!("/projects/{}/operations", segment(project)),
                &[("limit", "100")],
            )
            .await?;
        field(&answer, "operations", "GET /projects/{id}/operations")
    }

    /// Waits until the project has no operation running (after a crash, those of the
    /// create this attempt did not see): the operation list, polled.
    pub async fn wait_project_idle(&self, project: &str) -> Result<(), NeonError> {
        let pending: Vec<Operation> = self
            .operations(project)
            .await?
            .into_iter()
            .filter(|o| !o.is_final())
            .collect();
        self.wait_operations(project, &pending).await
    }

    /// `GET /projects/{id}/connection_uri`: the URI of `role` on `database` (pooled: through
    /// Neon's connection pooler), of the default branch unless `branch` is given.
    pub async fn connection_uri(
        &self,
        project: &str,
        branch: Option<&str>,
        database: &str,
        role: &str,
        pooled: bool,
    ) -> Result<SecretString, NeonError> {
        let mut query = vec![("database_name", database), ("role_name", role)];
        if pooled {
            query.push(("pooled", "true"));
        }
        if let Some(branch) = branch {
            query.push(("branch_id", branch));
        }
        let answer = self
            .get(&format!("/projects/{}/connection_uri", segment(project)), &query)
            .await?;
        let uri: String = field(&answer, "uri", "GET /projects/{id}/connection_uri")?;
        Ok(uri.into())
    }

    /// `POST /projects/{id}/branches` with a read-write endpoint. `schema_only`: the
    /// parent's schema without its data.
    pub async fn create_branch(
        &self,
        project: &str,
        name: &str,
        schema_only: bool,
    ) -> Result<CreatedBranch, NeonError> {
        let mut branch = json!({ "name": name });
        if schema_only {
            branch["init_source"] = json!("schema-only");
        }
        let answer = self
            .post(
                &format!("/projects/{}/branches", segment(project)),
                json!({ "branch": branch, "endpoints": [{ "type": "read_write" }] }),
            )
            .await?;
        Ok(CreatedBranch {
            branch: field(&answer, "branch", "POST /projects/{id}/branches")?,
            operations: operations(&answer),
        })
    }

    /// The project's branches.
    pub async fn branches(&self, project: &str) -> Result<Vec<Branch>, NeonError> {
        let answer = self
            .get(&format!("/projects/{}/branches", segment(project)), &[])
            .await?;
        field(&answer, "branches", "GET /projects/{id}/branches")
    }

    /// `DELETE /projects/{id}/branches/{branch}`; the operations to wait for (none if the
    /// branch was already gone).
    pub async fn delete_branch(&self, project: &str, branch: &str) -> Result<Vec<Operation>, NeonError> {
        match self
            .delete(&format!(
                "/projects/{}/branches/{}",
                segment(project),
                segment(branch)
            ))
            .await
        {
            Ok(answer) => Ok(operations(&answer)),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Replaces `database` on the branch with an empty one owned by `owner` (a restore
    /// into a branch loads the backup there). Operations to wait for.
    pub async fn recreate_database(
        &self,
        project: &str,
        branch: &str,
        database: &str,
        owner: &str,
    ) -> Result<Vec<Operation>, NeonError> {
        let base = format!(
            "/projects/{}/branches/{}/databases",
            segment(project),
            segment(branch)
        );
        let mut pending = match self.delete(&format!("{base}/{}", segment(database))).await {
            Ok(answer) => operations(&answer),
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        self.wait_operations(project, &pending).await?;
        let answer = self
            .post(
                &base,
                json!({ "database": { "name": database, "owner_name": owner } }),
            )
            .await?;
        pending = operations(&answer);
        Ok(pending)
    }
}
