//! Neon tenants against a local server speaking the Neon API (`fake-neon`), whose projects
//! are real roles and databases on the local Postgres: provisioning under every fault the
//! API can answer with, the rate limit, and every job kind (migrations, backups, restore
//! into a branch, branches, delete) as for self-hosted tenants.

use crate::support::*;
use fake_neon::{FakeNeon, FakeNeonConfig, Faults};
use sqlx::{Connection, PgConnection};
use std::time::{Duration, Instant};

const API_KEY: &str = "neon-test-key-6a0f1c9e3b7d4f52";

async fn start_fake(
    env: &TestEnv,
    operation_ms: u64,
    rate_limit: Option<(u32, u32)>,
    faults: Faults,
) -> FakeNeon {
    let mut config = FakeNeonConfig::local(API_KEY, &format!("{}_neon", env.namespace));
    config.operation_ms = operation_ms;
    config.rate_limit = rate_limit;
    config.faults = faults;
    FakeNeon::start(config).await.expect("start the fake Neon API")
}

/// `pgfleet server add NAME --neon …` against the fake.
async fn add_neon_server(
    env: &TestEnv,
    fake: &FakeNeon,
    name: &str,
    region: &str,
    default: bool,
) -> serde_json::Value {
    let args = vec![
        "server",
        "add",
        name,
        "--neon",
        "--region",
        region,
        "--pg-version",
        "15",
        "--neon-api-url",
        &fake.url,
        "--json",
    ];
    let out = env
        .pgfleet()
        .env("PGFLEET_NEON_API_KEY", API_KEY)
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "server add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if default {
        // New tenants go to the Neon server: the self-hosted `default` takes none.
        env.catalog().await; // registers `default`, as every worker does at start
        cli_ok(env, &["server", "drain", "default"]);
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tenant_json(env: &TestEnv, slug: &str) -> serde_json::Value {
    serde_json::from_str(&cli_ok(env, &["tenant", "show", slug, "--json"])).unwrap()
}

async fn connect_url(url: &str) -> PgConnection {
    PgConnection::connect(url.trim()).await.unwrap()
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

/// Locked projects, internal errors, lost create responses, a server-side rate limit and
/// slow operations all at once: every tenant still gets exactly one project, its URIs and
/// its schema, and nothing secret reaches a log or the CLI's JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_neon_tenant_gets_exactly_one_project_through_every_fault() {
    let env = TestEnv::new();
    let fake = start_fake(
        &env,
        300,
        Some((1_000, 6)),
        Faults {
            locked_first_calls: 2,
            error_every: 7,
            lose_create_responses: 2,
            retry_after_secs: 1,
        },
    )
    .await;
    let server = add_neon_server(&env, &fake, "neon-east", "aws-us-east-2", true).await;
    assert_eq!(server["kind"], "neon");

    // More than the fake's 6 a second, so 429s happen and Retry-After is honoured.
    let worker = env
        .spawn_worker(
            "w",
            &["--concurrency", "6"],
            &[("PGFLEET_NEON_RATE_LIMIT", "600"), ("PGFLEET_NEON_BURST", "10")],
        )
        .await;
    // The worker registered the self-hosted `default` server; the Neon one stays the default.
    let listed = cli_ok(&env, &["server", "list", "--json"]);
    let servers: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let kinds: Vec<&str> = servers.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["postgres", "neon"], "{listed}");
    assert!(!listed.contains(API_KEY), "the API key is never shown: {listed}");

    assert_eq!(servers[0]["status"], "draining");
    let slugs = ["neon-a", "neon-b", "neon-c", "neon-d", "neon-e"];
    for slug in slugs {
        cli_ok(&env, &["tenant", "create", slug]);
    }
    let catalog = env.catalog().await;
    for slug in slugs {
        env.wait_tenant_active(&catalog, slug, Duration::from_secs(120))
            .await;
    }

    let projects = fake.projects();
    assert_eq!(
        projects.len(),
        slugs.len(),
        "one project per tenant, no orphans: {projects:?}"
    );
    for slug in slugs {
        let tenant = tenant_json(&env, slug);
        assert_eq!(tenant["server_kind"], "neon");
        let name = format!("{}_{slug}", env.namespace);
        let ours: Vec<_> = projects.iter().filter(|p| p.name == name).collect();
        assert_eq!(ours.len(), 1, "{slug}: {projects:?}");
        assert_eq!(tenant["neon_project_id"], ours[0].id.as_str());
    }
    // The faults really happened (else this test proves nothing).
    assert_eq!(
        fake.faults().lose_create_responses,
        0,
        "both lost responses were served"
    );
    assert!(fake.answered(423) > 0 && fake.answered(500) > 0 && fake.answered(429) > 0);

    // The pooled URI by default, the direct one on request; both reach the migrated schema.
    let pooled = cli_ok(&env, &["tenant", "url", "neon-a"]);
    let direct = cli_ok(&env, &["tenant", "url", "neon-a", "--direct"]);
    assert!(
        pooled.contains("@localhost:") && direct.contains("@127.0.0.1:"),
        "{pooled} {direct}"
    );
    for url in [&pooled, &direct] {
        let mut conn = connect_url(url).await;
        assert_eq!(
            table_names(&mut conn).await,
            ["_pgfleet_migrations", "projects", "tasks", "users"]
        );
    }

    // No secret in the worker's log or the CLI's JSON: the key, the passwords in the URIs.
    let password = url::Url::parse(direct.trim())
        .unwrap()
        .password()
        .unwrap()
        .to_owned();
    let log = worker.log();
    let shown =
        cli_ok(&env, &["tenant", "show", "neon-a", "--json"]) + &cli_ok(&env, &["jobs", "list", "--json"]);
    for secret in [API_KEY, password.as_str()] {
        assert!(!log.contains(secret), "secret in the worker log");
        assert!(!shown.contains(secret), "secret in --json output");
    }
    drop(worker);
    env.cleanup().await;
}

/// A Neon tenant beside a self-hosted one, through every job kind: a rollout reaches both,
/// backups are the same objects, dev branches (with and without data), a restore into a
/// branch holds the backup's data and not what came after, delete leaves no project.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neon_tenant_goes_through_every_job_kind_like_a_self_hosted_one() {
    let env = TestEnv::new().with_migrations(&[]);
    let fake = start_fake(&env, 50, None, Faults::default()).await;
    // Placed by region: Neon for aws-us-east-2, the self-hosted default for the rest.
    add_neon_server(&env, &fake, "neon-east", "aws-us-east-2", false).await;
    let _worker = env.spawn_worker("w", &["--concurrency", "4"], &[]).await;
    cli_ok(
        &env,
        &[
            "tenant",
            "create",
            "cloudy",
            "--region",
            "aws-us-east-2",
            "--wait",
        ],
    );
    cli_ok(&env, &["tenant", "create", "homely", "--wait"]);
    assert_eq!(tenant_json(&env, "cloudy")["server"], "neon-east");
    assert_eq!(tenant_json(&env, "homely")["server"], "default");
    let project = tenant_json(&env, "cloudy")["neon_project_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let direct = cli_ok(&env, &["tenant", "url", "cloudy", "--direct"]);
    let mut conn = connect_url(&direct).await;
    sqlx::raw_sql(
        "INSERT INTO users (username, email, password_hash) VALUES ('before', 'b@example.com', 'x')",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    // A rollout over the mixed fleet reaches both tenants.
    std::fs::write(
        env.migrations_dir.as_ref().unwrap().join("0100_add_notes.sql"),
        "ALTER TABLE users ADD COLUMN notes text;",
    )
    .unwrap();
    cli_ok(&env, &["migrate", "--all", "--wait"]);
    for slug in ["cloudy", "homely"] {
        assert_eq!(tenant_json(&env, slug)["schema_version"], 100, "{slug}");
    }
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'notes'").await,
        1
    );

    // Backups of both go through the same path into their own prefixes.
    cli_ok(&env, &["backup", "--all", "--wait"]);
    let backups: Vec<serde_json::Value> =
        serde_json::from_str(&cli_ok(&env, &["backups", "list", "cloudy", "--json"])).unwrap();
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0]["status"], "succeeded");
    let key = backups[0]["key"].as_str().unwrap();
    assert!(key.contains("/cloudy/"), "{key}");
    let dump = std::process::Command::new("gunzip")
        .arg("-c")
        .arg(env.dir.join("backups").join(key))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&dump.stdout).contains("before"),
        "the dump holds the tenant's rows"
    );

    sqlx::raw_sql(
        "INSERT INTO users (username, email, password_hash) VALUES ('after', 'a@example.com', 'x')",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    // Dev branches: a full copy, and the schema alone.
    let full = cli_ok(&env, &["tenant", "branch", "cloudy", "--name", "dev-full"]);
    let bare = cli_ok(
        &env,
        &[
            "tenant",
            "branch",
            "cloudy",
            "--name",
            "dev-bare",
            "--schema-only",
        ],
    );
    assert_eq!(
        count(&mut connect_url(&full).await, "SELECT count(*) FROM users").await,
        2
    );
    let mut bare_conn = connect_url(&bare).await;
    assert_eq!(count(&mut bare_conn, "SELECT count(*) FROM users").await, 0);
    assert!(table_names(&mut bare_conn).await.contains(&"tasks".to_owned()));
    drop(bare_conn);
    // Asking again gives the same branch, not a second one.
    assert_eq!(
        cli_ok(&env, &["tenant", "branch", "cloudy", "--name", "dev-full"]),
        full
    );
    let refused = env.run_cli(&["tenant", "branch", "cloudy", "--name", "bad name'; DROP"]);
    assert!(!refused.0 && refused.2.contains("not allowed"), "{refused:?}");

    // Restore into a new branch: the backup's rows, not what came after it.
    cli_ok(
        &env,
        &["restore", "cloudy", "--into", "branch:yesterday", "--wait"],
    );
    let restored = cli_ok(&env, &["tenant", "url", "cloudy", "--branch", "yesterday"]);
    let mut restored_conn = connect_url(&restored).await;
    let names: Vec<String> = sqlx::query_scalar("SELECT username FROM users ORDER BY 1")
        .fetch_all(&mut restored_conn)
        .await
        .unwrap();
    assert_eq!(names, ["before"]);
    drop(restored_conn);
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM users").await,
        2,
        "the tenant itself is untouched"
    );
    // … or into a new project of its own.
    cli_ok(
        &env,
        &["restore", "cloudy", "--into", "project:cloudy-archive", "--wait"],
    );
    let archived = cli_ok(
        &env,
        &["tenant", "url", "cloudy", "--branch", "project:cloudy-archive"],
    );
    let names: Vec<String> = sqlx::query_scalar("SELECT username FROM users ORDER BY 1")
        .fetch_all(&mut connect_url(&archived).await)
        .await
        .unwrap();
    assert_eq!(names, ["before"]);
    assert!(fake
        .projects()
        .iter()
        .any(|p| p.name == "cloudy-archive" && !p.deleted));
    let refused = env.run_cli(&["restore", "cloudy", "--into", "plain_db", "--wait"]);
    assert!(!refused.0, "a Neon tenant's restore target must say branch:");

    let branches: Vec<serde_json::Value> =
        serde_json::from_str(&cli_ok(&env, &["tenant", "branches", "cloudy", "--json"])).unwrap();
    let names: Vec<&str> = branches.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["dev-full", "dev-bare", "yesterday", "project:cloudy-archive"]
    );
    cli_ok(&env, &["tenant", "branch-delete", "cloudy", "--name", "dev-bare"]);
    let on_neon = fake
        .projects()
        .into_iter()
        .find(|p| p.id == project)
        .unwrap()
        .branches;
    assert_eq!(on_neon, ["main", "dev-full", "yesterday"]);
    drop(conn);

    // Delete: a final backup, then the project (and the restore's) is gone; the catalog keeps its id.
    cli_ok(&env, &["tenant", "delete", "cloudy", "--wait"]);
    let tenant = tenant_json(&env, "cloudy");
    assert_eq!(tenant["status"], "deleted");
    assert_eq!(tenant["neon_project_id"], project.as_str());
    assert!(fake.projects().iter().all(|p| p.deleted), "no project left");
    let backups: Vec<serde_json::Value> =
        serde_json::from_str(&cli_ok(&env, &["backups", "list", "cloudy", "--json"])).unwrap();
    assert_eq!(backups.len(), 2, "the final backup was taken");
    assert!(
        PgConnection::connect(direct.trim()).await.is_err(),
        "the project's database is gone"
    );
    env.cleanup().await;
}

/// Every request of every job in a worker goes through one limiter: however many tenants
/// are provisioned at once, no second and no minute holds more requests than configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_exceeds_its_neon_request_rate() {
    let env = TestEnv::new();
    let fake = start_fake(&env, 50, None, Faults::default()).await;
    add_neon_server(&env, &fake, "neon-east", "aws-us-east-2", true).await;
    let _worker = env
        .spawn_worker(
            "w",
            &["--concurrency", "8"],
            &[("PGFLEET_NEON_RATE_LIMIT", "25"), ("PGFLEET_NEON_BURST", "3")],
        )
        .await;
    let from = fake.requests().len();
    let slugs = ["rate-a", "rate-b", "rate-c", "rate-d", "rate-e", "rate-f"];
    for slug in slugs {
        cli_ok(&env, &["tenant", "create", slug]);
    }
    let catalog = env.catalog().await;
    for slug in slugs {
        env.wait_tenant_active(&catalog, slug, Duration::from_secs(180))
            .await;
    }
    let requests = fake.requests()[from..].to_vec();
    assert!(
        requests.len() > 25,
        "enough requests to meet the minute limit: {}",
        requests.len()
    );
    let most_in = |len: Duration| {
        let times: Vec<Instant> = requests.iter().map(|r| r.at).collect();
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| t.duration_since(times[i]) < len)
                    .count()
            })
            .max()
            .unwrap_or(0)
    };
    assert!(
        most_in(Duration::from_secs(1)) <= 3,
        "burst {}",
        most_in(Duration::from_secs(1))
    );
    assert!(
        most_in(Duration::from_secs(60)) <= 25,
        "minute {}",
        most_in(Duration::from_secs(60))
    );
    env.cleanup().await;
}

/// A worker killed after Neon made the project (while its operations still run): the next
/// worker finishes the same project — one project, no orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_its_project_is_made_leaves_one_project() {
    let env = TestEnv::new();
    let fake = start_fake(&env, 4_000, None, Faults::default()).await;
    add_neon_server(&env, &fake, "neon-east", "aws-us-east-2", true).await;
    let mut first = env.spawn_worker("w1", &["--lease-secs", "3"], &[]).await;
    cli_ok(&env, &["tenant", "create", "crashy"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.projects().is_empty() {
        assert!(Instant::now() < deadline, "no project was created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.sigkill();
    let catalog = env.catalog().await;
    let tenant = catalog
        .tenant(&pgfleet_shared::TenantSlug::parse("crashy").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tenant.status, TenantStatus::Provisioning, "killed before the end");
    let _second = env.spawn_worker("w2", &["--lease-secs", "3"], &[]).await;
    env.wait_tenant_active(&catalog, "crashy", Duration::from_secs(90))
        .await;
    let projects = fake.projects();
    assert_eq!(projects.len(), 1, "{projects:?}");
    assert_eq!(
        tenant_json(&env, "crashy")["neon_project_id"],
        projects[0].id.as_str()
    );
    env.cleanup().await;
}
