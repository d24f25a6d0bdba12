//! A local stand-in for the Neon API (v2) for pgfleet's tests: the same paths, bodies, status
//! codes and operation life cycle as documented, and each project backed by a real role and
//! database on a local Postgres, so that what pgfleet does with a project (migrations,
//! pg_dump, psql) runs for real. Branches are real copies (`pg_dump | psql`, with
//! `--schema-only` for schema-only branches).
//!
//! Faults, settable while it runs (`set_faults`): `423 Locked` for a project's first calls,
//! a `500` every Nth request (before doing anything), creates whose response is lost (done,
//! then answered `500`), a server-side rate limit answering `429` with `Retry-After`, and
//! slow operations. It records every request, so a test can check the rate pgfleet kept.
//!
//! Local objects are named `<prefix>_<hex>`, so a test's cleanup finds them by prefix.

// Handlers answer errors as ready responses, passed up with `?`.
#![allow(clippy::result_large_err)]

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the fake keeps its projects, and how it behaves.
#[derive(Clone, Debug)]
pub struct FakeNeonConfig {
    /// Superuser URL of the Postgres that backs the projects.
    pub admin_url: String,
    /// Host and port the connection URIs point at (that Postgres, as clients reach it).
    pub pg_host: String,
    pub pg_port: u16,
    /// The one API key accepted.
    pub api_key: String,
    /// Prefix of the local roles and databases.
    pub local_prefix: String,
    /// How long each operation stays `running`.
    pub operation_ms: u64,
    /// Server-side limit (requests a minute, a second), answered with `429`.
    pub rate_limit: Option<(u32, u32)>,
    pub faults: Faults,
}

impl FakeNeonConfig {
    /// Backed by the local Postgres (`postgres@127.0.0.1:5432`).
    pub fn local(api_key: &str, local_prefix: &str) -> Self {
        Self {
            admin_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            pg_host: "127.0.0.1".into(),
            pg_port: 5432,
            api_key: api_key.into(),
            local_prefix: local_prefix.into(),
            operation_ms: 50,
            rate_limit: None,
            faults: Faults::default(),
        }
    }
}

/// Faults to inject; all off by default.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Faults {
    /// Every project's first N calls under `/projects/{id}/…` get `423 Locked`.
    pub locked_first_calls: u32,
    /// Every Nth request gets `500` before anything is done (0: never).
    pub error_every: u32,
    /// The next N creates (`POST /projects`, `POST …/branches`) are done, then answered `500`.
    pub lose_create_responses: u32,
    /// `Retry-After` of a `429`, in seconds.
    pub retry_after_secs: u32,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Logged {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A project as a test sees it.
#[derive(Clone, Debug)]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    pub deleted: bool,
    pub branches: Vec<String>,
}

struct Project {
    id: String,
    name: String,
    region_id: String,
    pg_version: u32,
    created_at: String,
    deleted: bool,
    calls: u32,
    /// Neon role name → (local role, password).
    roles: HashMap<String, (String, String)>,
    branches: Vec<Branch>,
}

struct Branch {
    id: String,
    name: String,
    primary: bool,
    endpoint: String,
    /// Neon database name → (local database, Neon owner role).
    databases: BTreeMap<String, (String, String)>,
}

struct Operation {
    id: String,
    project: String,
    branch: String,
    action: String,
    done_at: Instant,
}

#[derive(Default)]
struct Inner {
    projects: Vec<Project>,
    operations: Vec<Operation>,
    log: Vec<Logged>,
    recent: VecDeque<Instant>,
    requests: u64,
    faults: Faults,
}

struct Shared {
    config: FakeNeonConfig,
    admin: PgPool,
    inner: Mutex<Inner>,
}

type S = State<Arc<Shared>>;

/// A running fake; stops when dropped.
pub struct FakeNeon {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeNeon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNeon {
    /// Starts on a free loopback port.
    pub async fn start(config: FakeNeonConfig) -> anyhow::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: FakeNeonConfig, listen: &str) -> anyhow::Result<Self> {
        let admin = PgPoolOptions::new()
            .max_connections(4)
            .connect(&config.admin_url)
            .await?;
        let faults = config.faults.clone();
        let shared = Arc::new(Shared {
            config,
            admin,
            inner: Mutex::new(Inner {
                faults,
                ..Inner::default()
            }),
        });
        let app = Router::new()
            .route("/projects", get(list_projects).post(create_project))
            .route("/projects/{id}", get(get_project).delete(delete_project))
            .route("/projects/{id}/operations", get(list_operations))
            .route("/projects/{id}/operations/{op}", get(get_operation))
            .route("/projects/{id}/connection_uri", get(connection_uri))
            .route("/projects/{id}/branches", get(list_branches).post(create_branch))
            .route("/projects/{id}/branches/{branch}", delete(delete_branch))
            .route(
                "/projects/{id}/branches/{branch}/databases",
                axum::routing::post(create_database),
            )
            .route(
                "/projects/{id}/branches/{branch}/databases/{name}",
                delete(delete_database),
            )
            .layer(axum::middleware::from_fn_with_state(shared.clone(), gate))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, shared, task })
    }

    pub fn set_faults(&self, faults: Faults) {
        self.shared.inner.lock().unwrap().faults = faults;
    }

    /// The faults still pending (lost responses are used up as they are served).
    pub fn faults(&self) -> Faults {
        self.shared.inner.lock().unwrap().faults.clone()
    }

    /// Every project ever created, deleted ones included.
    pub fn projects(&self) -> Vec<ProjectView> {
        let inner = self.shared.inner.lock().unwrap();
        inner
            .projects
            .iter()
            .map(|p| ProjectView {
                id: p.id.clone(),
                name: p.name.clone(),
                deleted: p.deleted,
                branches: p.branches.iter().map(|b| b.name.clone()).collect(),
            })
            .collect()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared.inner.lock().unwrap().log.clone()
    }

    /// The most requests that arrived within any window of `len`.
    pub fn most_in_window(&self, len: Duration) -> usize {
        let times: Vec<Instant> = self.requests().iter().map(|r| r.at).collect();
        let mut most = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= len {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        most
    }

    /// Requests answered with `status`.
    pub fn answered(&self, status: u16) -> usize {
        self.requests().iter().filter(|r| r.status == status).count()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let request_id = format!("fake-{:08x}", rand::thread_rng().gen::<u32>());
    (
        status,
        [("x-neon-ret-request-id", request_id)],
        Json(json!({ "code": status.as_u16().to_string(), "message": message })),
    )
        .into_response()
}

/// Authentication, the request log, and the injected faults, before any handler runs.
async fn gate(State(shared): S, request: Request, next: Next) -> Response {
    let arrived = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", shared.config.api_key));
    let early = {
        let mut inner = shared.inner.lock().unwrap();
        let now = Instant::now();
        inner.requests += 1;
        let n = inner.requests;
        let faults = inner.faults.clone();
        if !authorized {
            Some(error(StatusCode::UNAUTHORIZED, "authentication required"))
        } else if let Some((per_minute, per_second)) = shared.config.rate_limit {
            while inner
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
            {
                inner.recent.pop_front();
            }
            let last_second = inner
                .recent
                .iter()
                .filter(|t| now.duration_since(**t) < Duration::from_secs(1))
                .count();
            if inner.recent.len() >= per_minute as usize || last_second >= per_second as usize {
                let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
                response.headers_mut().insert(
                    "retry-after",
                    faults.retry_after_secs.max(1).to_string().parse().unwrap(),
                );
                Some(response)
            } else {
                inner.recent.push_back(now);
                None
            }
        } else {
            None
        }
        .or_else(|| {
            (faults.error_every > 0 && n % u64::from(faults.error_every) == 0)
                .then(|| error(StatusCode::INTERNAL_SERVER_ERROR, "injected internal error"))
        })
        .or_else(|| {
            let project = path.strip_prefix("/projects/")?.split('/').next()?.to_owned();
            let p = inner.projects.iter_mut().find(|p| p.id == project)?;
            p.calls += 1;
            (p.calls <= faults.locked_first_calls).then(|| {
                error(
                    StatusCode::LOCKED,
                    "project already has running conflicting operations, scheduling of new ones is prohibited",
                )
            })
        })
    };
    let response = match early {
        Some(response) => response,
        None => next.run(request).await,
    };
    shared.inner.lock().unwrap().log.push(Logged {
        at: arrived,
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
    });
    response
}

fn hex(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n).map(|_| format!("{:x}", rng.gen_range(0..16))).collect()
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Shared {
    fn new_operations(&self, inner: &mut Inner, project: &str, branch: &str, actions: &[&str]) -> Vec<Value> {
        let done_at = Instant::now() + Duration::from_millis(self.config.operation_ms);
        actions
            .iter()
            .map(|action| {
                let op = Operation {
                    id: format!("op-{}", hex(12)),
                    project: project.to_owned(),
                    branch: branch.to_owned(),
                    action: (*action).to_owned(),
                    done_at,
                };
                let view = op_json(&op);
                inner.operations.push(op);
                view
            })
            .collect()
    }

    /// Takes the lost-response fault if one is pending.
    fn lose_response(&self) -> bool {
        let mut inner = self.inner.lock().unwrap();
        if inner.faults.lose_create_responses > 0 {
            inner.faults.lose_create_responses -= 1;
            true
        } else {
            false
        }
    }

    async fn sql(&self, sql: &str) -> Result<(), Response> {
        sqlx::raw_sql(sql)
            .execute(&self.admin)
            .await
            .map(|_| ())
            .map_err(|e| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("backing database: {e}"),
                )
            })
    }

    fn uri(&self, role: &str, password: &str, database: &str, pooled: bool) -> String {
        // The pooled URI names the server by another host name, as Neon's `-pooler` host.
        let host = if pooled {
            "localhost"
        } else {
            self.config.pg_host.as_str()
        };
        format!(
            "postgresql://{role}:{password}@{host}:{}/{database}?sslmode=disable",
            self.config.pg_port
        )
    }
}

fn op_json(op: &Operation) -> Value {
    let status = if Instant::now() >= op.done_at {
        "finished"
    } else {
        "running"
    };
    json!({
        "id": op.id, "project_id": op.project, "branch_id": op.branch, "action": op.action,
        "status": status, "failures_count": 0, "created_at": now_text(), "updated_at": now_text(),
    })
}

fn project_json(p: &Project) -> Value {
    json!({
        "id": p.id, "name": p.name, "region_id": p.region_id, "pg_version": p.pg_version,
        "created_at": p.created_at, "updated_at": p.created_at, "platform_id": "aws",
    })
}

fn branch_json(project: &str, b: &Branch) -> Value {
    json!({ "id": b.id, "project_id": project, "name": b.name, "primary": b.primary, "default": b.primary,
            "current_state": "ready", "created_at": now_text() })
}

#[derive(Deserialize)]
struct CreateProject {
    project: NewProject,
}

#[derive(Deserialize)]
struct NewProject {
    name: Option<String>,
    region_id: Option<String>,
    pg_version: Option<u32>,
    branch: Option<NewProjectBranch>,
}

#[derive(Deserialize)]
struct NewProjectBranch {
    role_name: Option<String>,
    database_name: Option<String>,
}

async fn create_project(State(shared): S, Json(body): Json<CreateProject>) -> Response {
    let p = body.project;
    let id = format!("proj-{}", hex(12));
    let branch_id = format!("br-{}", hex(12));
    let role_name = p
        .branch
        .as_ref()
        .and_then(|b| b.role_name.clone())
        .unwrap_or("neondb_owner".into());
    let database = p
        .branch
        .as_ref()
        .and_then(|b| b.database_name.clone())
        .unwrap_or("neondb".into());
    let prefix = &shared.config.local_prefix;
    let local_role = format!("{prefix}_{}", &id[5..]);
    let local_db = format!("{prefix}_{}", &branch_id[3..]);
    let password = hex(24);
    if let Err(r) = shared
        .sql(&format!(
            "CREATE ROLE {} LOGIN CREATEDB PASSWORD '{password}'",
            quote(&local_role)
        ))
        .await
    {
        return r;
    }
    if let Err(r) = shared
        .sql(&format!(
            "CREATE DATABASE {} OWNER {}",
            quote(&local_db),
            quote(&local_role)
        ))
        .await
    {
        return r;
    }
    let _ = shared
        .sql(&format!(
            "REVOKE ALL ON DATABASE {} FROM PUBLIC",
            quote(&local_db)
        ))
        .await;
    let project = Project {
        id: id.clone(),
        name: p.name.unwrap_or_else(|| id.clone()),
        region_id: p.region_id.unwrap_or("aws-us-east-2".into()),
        pg_version: p.pg_version.unwrap_or(17),
        created_at: now_text(),
        deleted: false,
        calls: 0,
        roles: HashMap::from([(role_name.clone(), (local_role.clone(), password.clone()))]),
        branches: vec![Branch {
            id: branch_id.clone(),
            name: "main".into(),
            primary: true,
            endpoint: format!("ep-{}", hex(10)),
            databases: BTreeMap::from([(database.clone(), (local_db.clone(), role_name.clone()))]),
        }],
    };
    let body = {
        let mut inner = shared.inner.lock().unwrap();
        let operations =
            shared.new_operations(&mut inner, &id, &branch_id, &["create_timeline", "start_compute"]);
        let body = json!({
            "project": project_json(&project),
            "branch": branch_json(&id, &project.branches[0]),
            "roles": [{ "name": role_name, "branch_id": branch_id }],
            "databases": [{ "name": database, "owner_name": role_name, "branch_id": branch_id }],
            "endpoints": [{ "id": project.branches[0].endpoint, "host": shared.config.pg_host, "type": "read_write" }],
            "connection_uris": [{ "connection_uri": shared.uri(&local_role, &password, &local_db, false) }],
            "operations": operations,
        });
        inner.projects.push(project);
        body
    };
    if shared.lose_response() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected: response lost after the project was created",
        );
    }
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn list_projects(State(shared): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let search = q.get("search").cloned().unwrap_or_default();
    let inner = shared.inner.lock().unwrap();
    let projects: Vec<Value> = inner
        .projects
        .iter()
        .filter(|p| !p.deleted && (p.name.contains(&search) || p.id.contains(&search)))
        .map(project_json)
        .collect();
    Json(json!({ "projects": projects, "pagination": { "cursor": "" } })).into_response()
}

fn with_project<T>(shared: &Shared, id: &str, f: impl FnOnce(&mut Project) -> T) -> Result<T, Response> {
    let mut inner = shared.inner.lock().unwrap();
    inner
        .projects
        .iter_mut()
        .find(|p| p.id == id && !p.deleted)
        .map(f)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "project not found"))
}

async fn get_project(State(shared): S, Path(id): Path<String>) -> Response {
    match with_project(&shared, &id, |p| project_json(p)) {
        Ok(p) => Json(json!({ "project": p })).into_response(),
        Err(r) => r,
    }
}

async fn delete_project(State(shared): S, Path(id): Path<String>) -> Response {
    let taken = with_project(&shared, &id, |p| {
        p.deleted = true;
        let databases: Vec<String> = p
            .branches
            .iter()
            .flat_map(|b| b.databases.values().map(|(local, _)| local.clone()))
            .collect();
        let roles: Vec<String> = p.roles.values().map(|(local, _)| local.clone()).collect();
        (project_json(p), databases, roles)
    });
    let (view, databases, roles) = match taken {
        Ok(t) => t,
        Err(r) => return r,
    };
    for db in databases {
        let _ = shared
            .sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(&db)))
            .await;
    }
    for role in roles {
        let _ = shared.sql(&format!("DROP ROLE IF EXISTS {}", quote(&role))).await;
    }
    Json(json!({ "project": view })).into_response()
}

async fn list_operations(State(shared): S, Path(id): Path<String>) -> Response {
    if let Err(r) = with_project(&shared, &id, |_| ()) {
        return r;
    }
    let inner = shared.inner.lock().unwrap();
    let ops: Vec<Value> = inner
        .operations
        .iter()
        .rev()
        .filter(|o| o.project == id)
        .take(100)
        .map(op_json)
        .collect();
    Json(json!({ "operations": ops, "pagination": { "cursor": "" } })).into_response()
}

async fn get_operation(State(shared): S, Path((id, op)): Path<(String, String)>) -> Response {
    let inner = shared.inner.lock().unwrap();
    match inner.operations.iter().find(|o| o.project == id && o.id == op) {
        Some(op) => Json(json!({ "operation": op_json(op) })).into_response(),
        None => error(StatusCode::NOT_FOUND, "operation not found"),
    }
}

async fn connection_uri(
    State(shared): S,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (Some(database), Some(role)) = (q.get("database_name"), q.get("role_name")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "database_name and role_name are required",
        );
    };
    let pooled = q.get("pooled").is_some_and(|v| v == "true");
    let found = with_project(&shared, &id, |p| {
        let branch = match q.get("branch_id") {
            Some(b) => p.branches.iter().find(|x| &x.id == b)?,
            None => p.branches.iter().find(|x| x.primary)?,
        };
        let (local_db, _) = branch.databases.get(database)?.clone();
        let (local_role, password) = p.roles.get(role)?.clone();
        Some((local_role, password, local_db))
    });
    match found {
        Ok(Some((role, password, db))) => {
            Json(json!({ "uri": shared.uri(&role, &password, &db, pooled) })).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no such branch, database or role"),
        Err(r) => r,
    }
}

async fn list_branches(State(shared): S, Path(id): Path<String>) -> Response {
    match with_project(&shared, &id, |p| {
        p.branches
            .iter()
            .map(|b| branch_json(&p.id, b))
            .collect::<Vec<_>>()
    }) {
        Ok(branches) => Json(json!({ "branches": branches })).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
struct CreateBranch {
    #[serde(default)]
    branch: NewBranch,
}

#[derive(Deserialize, Default)]
struct NewBranch {
    name: Option<String>,
    init_source: Option<String>,
}

async fn create_branch(
    State(shared): S,
    Path(id): Path<String>,
    body: Option<Json<CreateBranch>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let branch_id = format!("br-{}", hex(12));
    let schema_only = body.branch.init_source.as_deref() == Some("schema-only");
    let parent = with_project(&shared, &id, |p| {
        let primary = p.branches.iter().find(|b| b.primary).expect("a primary branch");
        (
            primary.databases.clone(),
            p.roles.values().next().map(|r| r.0.clone()).unwrap_or_default(),
        )
    });
    let (databases, local_role) = match parent {
        Ok(found) => found,
        Err(r) => return r,
    };
    let prefix = &shared.config.local_prefix;
    let mut copies = BTreeMap::new();
    for (i, (name, (source, owner))) in databases.iter().enumerate() {
        let local = format!("{prefix}_{}_{i}", &branch_id[3..]);
        // A copy through pg_dump | psql: a template copy would have to end the parent's
        // sessions, and Neon branches without touching them.
        if let Err(r) = shared
            .sql(&format!(
                "CREATE DATABASE {} OWNER {}",
                quote(&local),
                quote(&local_role)
            ))
            .await
        {
            return r;
        }
        if let Err(message) = copy_database(&shared.config, source, &local, schema_only).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, &message);
        }
        copies.insert(name.clone(), (local, owner.clone()));
    }
    let branch = Branch {
        id: branch_id.clone(),
        name: body.branch.name.unwrap_or_else(|| branch_id.clone()),
        primary: false,
        endpoint: format!("ep-{}", hex(10)),
        databases: copies,
    };
    let response = {
        let mut inner = shared.inner.lock().unwrap();
        let operations =
            shared.new_operations(&mut inner, &id, &branch_id, &["create_branch", "start_compute"]);
        let Some(project) = inner.projects.iter_mut().find(|p| p.id == id) else {
            return error(StatusCode::NOT_FOUND, "project not found");
        };
        let view = branch_json(&id, &branch);
        let endpoint = json!({ "id": branch.endpoint, "host": shared.config.pg_host, "type": "read_write", "branch_id": branch_id });
        project.branches.push(branch);
        json!({ "branch": view, "endpoints": [endpoint], "operations": operations })
    };
    if shared.lose_response() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected: response lost after the branch was created",
        );
    }
    (StatusCode::CREATED, Json(response)).into_response()
}

async fn copy_database(
    config: &FakeNeonConfig,
    source: &str,
    target: &str,
    schema_only: bool,
) -> Result<(), String> {
    let bin = "/usr/lib/postgresql/15/bin";
    let host = ["-h", "127.0.0.1", "-U", "postgres"];
    let dump = tokio::process::Command::new(format!("{bin}/pg_dump"))
        .args(host)
        .args(if schema_only {
            &["--schema-only"][..]
        } else {
            &[][..]
        })
        .args(["-d", source])
        .env("PGPORT", config.pg_port.to_string())
        .output()
        .await
        .map_err(|e| format!("pg_dump: {e}"))?;
    if !dump.status.success() {
        return Err(format!("pg_dump: {}", String::from_utf8_lossy(&dump.stderr)));
    }
    let mut psql = tokio::process::Command::new(format!("{bin}/psql"))
        .args(host)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target])
        .env("PGPORT", config.pg_port.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("psql: {e}"))?;
    use tokio::io::AsyncWriteExt;
    let mut stdin = psql.stdin.take().unwrap();
    stdin.write_all(&dump.stdout).await.map_err(|e| e.to_string())?;
    drop(stdin);
    let status = psql.wait().await.map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("psql failed loading the schema".into());
    }
    Ok(())
}

async fn delete_branch(State(shared): S, Path((id, branch)): Path<(String, String)>) -> Response {
    let taken = with_project(&shared, &id, |p| {
        let at = p.branches.iter().position(|b| b.id == branch)?;
        if p.branches[at].primary {
            return Some(Err(()));
        }
        Some(Ok(p.branches.remove(at)))
    });
    let removed = match taken {
        Ok(Some(Ok(b))) => b,
        Ok(Some(Err(()))) => return error(StatusCode::BAD_REQUEST, "the default branch can't be deleted"),
        Ok(None) => return error(StatusCode::NOT_FOUND, "branch not found"),
        Err(r) => return r,
    };
    for (local, _) in removed.databases.values() {
        let _ = shared
            .sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(local)))
            .await;
    }
    let operations = {
        let mut inner = shared.inner.lock().unwrap();
        shared.new_operations(&mut inner, &id, &removed.id, &["delete_timeline"])
    };
    Json(json!({ "branch": branch_json(&id, &removed), "operations": operations })).into_response()
}

#[derive(Deserialize)]
struct CreateDatabase {
    database: NewDatabase,
}

#[derive(Deserialize)]
struct NewDatabase {
    name: String,
    owner_name: String,
}

async fn create_database(
    State(shared): S,
    Path((id, branch)): Path<(String, String)>,
    Json(body): Json<CreateDatabase>,
) -> Response {
    let prefix = shared.config.local_prefix.clone();
    let found = with_project(&shared, &id, |p| {
        let (local_role, _) = p.roles.get(&body.database.owner_name)?.clone();
        let b = p.branches.iter().find(|b| b.id == branch)?;
        Some((local_role, b.databases.contains_key(&body.database.name)))
    });
    let local_role = match found {
        Ok(Some((_, true))) => return error(StatusCode::CONFLICT, "database already exists"),
        Ok(Some((role, false))) => role,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such branch or owner role"),
        Err(r) => return r,
    };
    let local = format!("{prefix}_{}_{}", &branch[3..], hex(4));
    if let Err(r) = shared
        .sql(&format!(
            "CREATE DATABASE {} OWNER {}",
            quote(&local),
            quote(&local_role)
        ))
        .await
    {
        return r;
    }
    let operations = {
        let mut inner = shared.inner.lock().unwrap();
        let operations = shared.new_operations(&mut inner, &id, &branch, &["apply_config"]);
        if let Some(b) = inner
            .projects
            .iter_mut()
            .find(|p| p.id == id)
            .and_then(|p| p.branches.iter_mut().find(|b| b.id == branch))
        {
            b.databases.insert(
                body.database.name.clone(),
                (local, body.database.owner_name.clone()),
            );
        }
        operations
    };
    (
        StatusCode::CREATED,
        Json(json!({ "database": { "name": body.database.name, "owner_name": body.database.owner_name, "branch_id": branch }, "operations": operations })),
    )
        .into_response()
}

async fn delete_database(
    State(shared): S,
    Path((id, branch, name)): Path<(String, String, String)>,
) -> Response {
    let taken = with_project(&shared, &id, |p| {
        p.branches
            .iter_mut()
            .find(|b| b.id == branch)
            .map(|b| b.databases.remove(&name))
    });
    let local = match taken {
        Ok(Some(Some((local, _)))) => local,
        Ok(_) => return error(StatusCode::NOT_FOUND, "database not found"),
        Err(r) => return r,
    };
    let _ = shared
        .sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(&local)))
        .await;
    let operations = {
        let mut inner = shared.inner.lock().unwrap();
        shared.new_operations(&mut inner, &id, &branch, &["apply_config"])
    };
    Json(json!({ "database": { "name": name }, "operations": operations })).into_response()
}
