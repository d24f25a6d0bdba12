//! A fleet of self-hosted servers (issue 14), across two real Postgres clusters (5432 and
//! the second cluster on 5433): placement by free capacity with drain and region, server
//! checks, suspend/resume, per-tenant limits and storage, dev copies, and moves — including
//! a worker SIGKILLed at every step of a move.

use crate::support::*;
use chrono::Utc;
use pgfleet_shared::queue::Publisher;
use pgfleet_shared::scheduler::{ManualClock, Scheduler, SchedulerSettings};
use pgfleet_shared::Namespace;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use std::sync::Arc;
use std::time::Duration;

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn tenant_json(env: &TestEnv, slug: &str) -> Value {
    json_of(&cli_ok(env, &["tenant", "show", slug, "--json"]))
}

/// Registers the second cluster as server `second`.
fn add_second(env: &TestEnv, extra: &[&str]) -> Value {
    let mut args = vec!["server", "add", "second", SECOND_URL, "--json"];
    args.extend_from_slice(extra);
    json_of(&cli_ok(env, &args))
}

async fn databases_on(conn: &mut PgConnection, prefix: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1")
        .bind(prefix)
        .fetch_all(conn)
        .await
        .unwrap()
}

async fn roles_on(conn: &mut PgConnection, prefix: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1")
        .bind(prefix)
        .fetch_all(conn)
        .await
        .unwrap()
}

/// Every table's rows, as one digest per table (what a user compares after a move).
async fn content(conn: &mut PgConnection) -> Vec<(String, i64, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let (n, digest): (i64, Option<String>) = sqlx::query_as(&format!(
            "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"
        ))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        out.push((table, n, digest.unwrap_or_default()));
    }
    out
}

/// A tenant with rows in every example table and a table of its own.
async fn tenant_with_data(env: &TestEnv, slug: &str, rows: i32) {
    cli_ok(env, &["tenant", "create", slug, "--wait"]);
    let mut conn = tenant_conn(env, slug).await;
    sqlx::raw_sql(&format!(
        "INSERT INTO users (username, email, password_hash)
           SELECT 'u' || g, 'u' || g || '@example.com', md5(g::text) FROM generate_series(1, {rows}) g;
         CREATE TABLE notes (id bigserial PRIMARY KEY, body text, at timestamptz DEFAULT now());
         INSERT INTO notes (body) SELECT repeat(md5(g::text), 3) FROM generate_series(1, {rows}) g;"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_spreads_by_capacity_and_respects_drain_region_and_full_servers() {
    let env = TestEnv::new();
    let catalog = env.catalog().await; // registers `default` (5432), as a worker does
    let _ = second_db("postgres").await;
    cli_ok(
        &env,
        &["server", "set", "default", "--capacity", "2", "--region", "us"],
    );
    let second = add_second(&env, &["--capacity", "4", "--region", "us"]);
    assert_eq!(second["capacity"], 4);
    assert_eq!(second["status"], "active");

    let _worker = env.spawn_worker("w", &["--concurrency", "4"], &[]).await;
    for i in 1..=6 {
        cli_ok(&env, &["tenant", "create", &format!("spread-{i}"), "--wait"]);
    }
    let servers = json_of(&cli_ok(&env, &["server", "list", "--json"]));
    let count = |name: &str| {
        servers
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["tenants"].as_i64().unwrap())
            .unwrap()
    };
    assert_eq!((count("default"), count("second")), (2, 4), "{servers}");
    for s in servers.as_array().unwrap() {
        assert!(s["version"].as_str().unwrap().starts_with("15"), "{s}");
        assert_eq!(s["free"], 0);
    }
    // The databases are where the catalog says.
    let mut on_second = second_db("postgres").await;
    let prefix = format!("{}_", env.namespace);
    let second_dbs = databases_on(&mut on_second, &prefix).await;
    assert_eq!(second_dbs.len(), 4, "{second_dbs:?}");
    for db in &second_dbs {
        let slug = db.trim_start_matches(&prefix);
        assert_eq!(tenant_json(&env, slug)["server"], "second");
    }

    // Full everywhere: a clear, permanent error naming the servers; nothing is made.
    let (ok, out, _) = env.run_cli(&["tenant", "create", "no-room", "--wait", "--json"]);
    assert!(!ok);
    let job = json_of(&out);
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("default full at 2") && error.contains("second full at 4"),
        "{error}"
    );
    // A region with no server: named in the error.
    let (ok, out, _) = env.run_cli(&[
        "tenant", "create", "far-away", "--region", "eu", "--wait", "--json",
    ]);
    assert!(!ok);
    assert!(
        json_of(&out)["error"].as_str().unwrap().contains("in region eu"),
        "{out}"
    );

    // Draining: never placed on, even with room.
    cli_ok(&env, &["server", "set", "second", "--capacity", "20"]);
    cli_ok(&env, &["server", "drain", "second"]);
    cli_ok(&env, &["server", "set", "default", "--capacity", "3"]);
    cli_ok(&env, &["tenant", "create", "after-drain", "--wait"]);
    assert_eq!(tenant_json(&env, "after-drain")["server"], "default");
    cli_ok(&env, &["server", "undrain", "second"]);
    cli_ok(&env, &["tenant", "create", "after-undrain", "--wait"]);
    assert_eq!(tenant_json(&env, "after-undrain")["server"], "second");

    // Signups at once never overfill a server: 10 provisions for 3 free places.
    cli_ok(&env, &["server", "set", "second", "--capacity", "7"]);
    let slugs: Vec<String> = (1..=10).map(|i| format!("rush-{i}")).collect();
    let bodies: Vec<Vec<u8>> = slugs
        .iter()
        .map(|s| {
            serde_json::to_vec(&serde_json::json!({"kind": "provision", "tenant": s, "key": s})).unwrap()
        })
        .collect();
    env.publish_raw_many("provision", &bodies).await;
    let mut placed = 0;
    for slug in &slugs {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let job = catalog.job_by_producer_key(slug).await.unwrap();
            if let Some(job) = job.filter(|j| j.is_finished()) {
                placed += usize::from(job.status == JobStatus::Succeeded);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{slug} did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(placed, 2, "only the free places are taken");
    let servers = json_of(&cli_ok(&env, &["server", "list", "--json"]));
    for s in servers.as_array().unwrap() {
        assert!(s["tenants"].as_i64() <= s["capacity"].as_i64(), "{s}");
    }

    // A server with tenants can't be removed; an empty one can, and its name is free again.
    let (ok, _, err) = env.run_cli(&["server", "remove", "second"]);
    assert!(!ok && err.contains("still holds tenants"), "{err}");
    drop(on_second);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_server_checks_it_and_says_what_is_missing() {
    let env = TestEnv::new();
    let _catalog = env.catalog().await;
    let mut second = second_db("postgres").await;
    let weak = format!("{}_weak", env.namespace);
    sqlx::raw_sql(&format!("CREATE ROLE {weak} LOGIN"))
        .execute(&mut second)
        .await
        .unwrap();

    // Unreachable: refused, nothing registered.
    let (ok, _, err) = env.run_cli(&[
        "server",
        "add",
        "nowhere",
        "postgres://postgres@127.0.0.1:1/postgres",
    ]);
    assert!(!ok && err.contains("could not be checked"), "{err}");
    // A role that can't create roles and databases: refused, saying so.
    let url = format!("postgres://{weak}:hunter2secret@127.0.0.1:5433/postgres");
    let (ok, out, err) = env.run_cli(&["server", "add", "weak", &url]);
    assert!(!ok && err.contains("CREATEROLE and CREATEDB"), "{err}");
    assert!(!out.contains("hunter2secret") && !err.contains("hunter2secret"));
    let listed = cli_ok(&env, &["server", "list", "--json"]);
    assert!(
        !listed.contains("nowhere") && !listed.contains("weak"),
        "{listed}"
    );

    // A good one: registered, its URL shown redacted, warnings for what needs attention.
    let out = env
        .pgfleet()
        .args(["server", "add", "second", "--capacity", "50", "--json"])
        .env(
            "PGFLEET_NEW_SERVER_URL",
            SECOND_URL.replace("postgres@", "postgres:s3cretpw@"),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!stdout.contains("s3cretpw") && !stderr.contains("s3cretpw"));
    assert!(
        stderr.contains("warning:") && stderr.contains("revoke PUBLIC"),
        "{stderr}"
    );
    let (ok, _, err) = env.run_cli(&["server", "add", "second", SECOND_URL]);
    assert!(!ok && err.contains("already registered"), "{err}");

    // An empty server is removed; its name can be used again.
    cli_ok(&env, &["server", "remove", "second"]);
    assert!(!cli_ok(&env, &["server", "list"]).contains("second"));
    add_second(&env, &[]);
    sqlx::raw_sql(&format!("DROP ROLE {weak}"))
        .execute(&mut second)
        .await
        .unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_blocks_logins_and_backups_and_resume_restores_them() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "sleepy", "--wait"]);
    cli_ok(
        &env,
        &["tenant", "set", "sleepy", "--backup-schedule", "* * * * *"],
    );
    let url = cli_ok(&env, &["tenant", "url", "sleepy"]).trim().to_owned();
    let mut session = PgConnection::connect(&url).await.unwrap();

    let suspended = json_of(&cli_ok(&env, &["tenant", "suspend", "sleepy", "--json"]));
    assert_eq!(suspended["status"], "suspended");
    assert!(suspended["suspended_at"].is_string());
    // The open session was ended, and no new one gets in.
    assert!(sqlx::query("SELECT 1").execute(&mut session).await.is_err());
    let refused = PgConnection::connect(&url).await.unwrap_err().to_string();
    assert!(refused.contains("not permitted to log in"), "{refused}");
    // Idempotent; visible in the catalog's role record; backups refused.
    cli_ok(&env, &["tenant", "suspend", "sleepy"]);
    let mut admin = admin().await;
    let can_login: bool = sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
        .bind(format!("{}_sleepy", env.namespace))
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(!can_login);
    // A provision (a replayed signup) leaves it locked.
    cli_ok(&env, &["tenant", "create", "sleepy", "--wait"]);
    assert!(PgConnection::connect(&url).await.is_err());

    // The scheduler skips it while suspended.
    let clock = Arc::new(ManualClock::new(Utc::now() + chrono::Duration::minutes(3)));
    let publisher = Publisher::new(
        AMQP_URL.to_owned().into(),
        Namespace::parse(&env.namespace).unwrap(),
        "t",
    );
    let scheduler = Scheduler::new(
        catalog.clone(),
        Arc::new(publisher),
        clock.clone(),
        SchedulerSettings::default(),
    );
    assert_eq!(scheduler.tick().await.unwrap().enqueued, 0);

    let resumed = json_of(&cli_ok(&env, &["tenant", "resume", "sleepy", "--json"]));
    assert_eq!(resumed["status"], "active");
    cli_ok(&env, &["tenant", "resume", "sleepy"]);
    let mut back = PgConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut back).await.unwrap();
    assert_eq!(scheduler.tick().await.unwrap().enqueued, 1);

    // A suspended tenant can still be deleted (its final backup logs in for the dump).
    cli_ok(&env, &["tenant", "suspend", "sleepy"]);
    let deleted = json_of(&cli_ok(&env, &["tenant", "delete", "sleepy", "--wait", "--json"]));
    assert_eq!(deleted["status"], "succeeded", "{deleted}");
    env.cleanup().await;
}

/// The role's connection limit and its role-level settings (`pg_db_role_setting`).
async fn role_settings(conn: &mut PgConnection, role: &str) -> (i32, Vec<String>) {
    let limit: i32 = sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let config: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
          WHERE r.rolname = $1 AND s.setdatabase = 0 ORDER BY 1",
    )
    .bind(role)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    (limit, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_set_from_defaults_changed_per_tenant_and_reasserted() {
    let env = TestEnv::new();
    let _catalog = env.catalog().await;
    let defaults = [
        ("PGFLEET_TENANT_CONNECTION_LIMIT", "7"),
        ("PGFLEET_TENANT_STATEMENT_TIMEOUT", "45s"),
        ("PGFLEET_TENANT_WORK_MEM", "8MB"),
        ("PGFLEET_STORAGE_INTERVAL", "1s"),
    ];
    let _worker = env.spawn_worker("w", &[], &defaults).await;
    cli_ok(&env, &["tenant", "create", "capped", "--wait"]);
    let role = format!("{}_capped", env.namespace);
    let mut admin = admin().await;
    assert_eq!(
        role_settings(&mut admin, &role).await,
        (
            7,
            vec!["statement_timeout=45000".to_owned(), "work_mem=8192".to_owned()]
        )
    );

    let changed = json_of(&cli_ok(
        &env,
        &[
            "tenant",
            "set",
            "capped",
            "--connection-limit",
            "3",
            "--statement-timeout",
            "2s",
            "--idle-in-transaction-timeout",
            "1m",
            "--work-mem",
            "off",
            "--storage-quota",
            "1kB",
            "--json",
        ],
    ));
    assert_eq!(changed["limits"]["connection_limit"], 3);
    assert_eq!(changed["limits"]["statement_timeout_ms"], 2000);
    assert_eq!(
        role_settings(&mut admin, &role).await,
        (
            3,
            vec![
                "idle_in_transaction_session_timeout=60000".to_owned(),
                "statement_timeout=2000".to_owned()
            ]
        )
    );
    let mut conn = tenant_conn(&env, "capped").await;
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(timeout, "2s");
    // The tenant lifts its own default; the next provision puts it back.
    sqlx::raw_sql(&format!("ALTER ROLE \"{role}\" SET statement_timeout = 0"))
        .execute(&mut conn)
        .await
        .unwrap();
    cli_ok(&env, &["tenant", "create", "capped", "--wait"]);
    assert!(role_settings(&mut admin, &role)
        .await
        .1
        .contains(&"statement_timeout=2000".to_owned()));

    // Storage: measured, shown, reported past the quota (nothing deleted).
    let shown = tenant_json(&env, "capped");
    assert!(shown["storage_bytes"].as_i64().unwrap() > 1_000_000, "{shown}");
    assert_eq!(shown["over_storage_quota"], true);
    let (api, base) = env.spawn_api("api").await;
    let metrics = http(None)
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("pgfleet_tenant_storage_over_quota_bytes{tenant=\"capped\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("pgfleet_tenants{status=\"suspended\"} 0"));

    // Bad values: refused with the same words from the CLI and the API.
    let (ok, _, err) = env.run_cli(&["tenant", "set", "capped", "--work-mem", "1kB"]);
    assert!(!ok && err.contains("64kB"), "{err}");
    let answer = http(Some(API_TOKEN))
        .patch(format!("{base}/v1/tenants/capped"))
        .json(&serde_json::json!({"work_mem_kb": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer.text().await.unwrap().contains("64kB"));
    let answer = http(Some(API_TOKEN))
        .patch(format!("{base}/v1/tenants/capped"))
        .json(&serde_json::json!({"statement_timeout_ms": null, "connection_limit": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        role_settings(&mut admin, &role).await,
        (5, vec!["idle_in_transaction_session_timeout=60000".to_owned()])
    );
    drop(api);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_has_the_parents_data_and_credentials_of_its_own() {
    let env = TestEnv::new();
    let _catalog = env.catalog().await;
    let _worker = env.spawn_worker("w", &[], &[]).await;
    tenant_with_data(&env, "parent", 50).await;
    let first = json_of(&cli_ok(&env, &["backup", "parent", "--wait", "--json"]));
    let first_backup = first["outcome"]["details"]["backup_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut parent = tenant_conn(&env, "parent").await;
    sqlx::query("INSERT INTO notes (body) VALUES ('after the first backup')")
        .execute(&mut parent)
        .await
        .unwrap();
    cli_ok(&env, &["backup", "parent", "--wait"]);

    // From the newest backup: the parent's data, its own role.
    let made = json_of(&cli_ok(
        &env,
        &["tenant", "branch", "parent", "--name", "dev", "--json"],
    ));
    let url = made["url"].as_str().unwrap().to_owned();
    let mut dev = PgConnection::connect(&url).await.unwrap();
    let (me, notes): (String, i64) =
        sqlx::query_as("SELECT current_user::text, (SELECT count(*) FROM notes)")
            .fetch_one(&mut dev)
            .await
            .unwrap();
    assert_ne!(me, format!("{}_parent", env.namespace));
    assert_eq!(notes, 51);
    // Asking again prints the same branch.
    let again = json_of(&cli_ok(
        &env,
        &["tenant", "branch", "parent", "--name", "dev", "--json"],
    ));
    assert_eq!(again["url"], made["url"]);
    // Its credentials reach only the copy; the tenant's reach only the tenant.
    // (Trust auth on the test servers: these connect by role; the database's CONNECT
    // privilege is what keeps each role out of the other's database.)
    let on_database = |url: &str, db: &str| format!("{}/{db}", url.rsplit_once('/').unwrap().0);
    let parent_db = on_database(&url, &format!("{}_parent", env.namespace));
    assert!(
        PgConnection::connect(&parent_db).await.is_err(),
        "the branch role reached the tenant"
    );
    let tenant_url = cli_ok(&env, &["tenant", "url", "parent"]).trim().to_owned();
    let into_branch = on_database(&tenant_url, &me);
    assert!(
        PgConnection::connect(&into_branch).await.is_err(),
        "the tenant reached its branch"
    );

    // From a given backup, and schema only.
    let old = json_of(&cli_ok(
        &env,
        &[
            "tenant",
            "branch",
            "parent",
            "--name",
            "old",
            "--from-backup",
            &first_backup,
            "--json",
        ],
    ));
    let mut old = PgConnection::connect(old["url"].as_str().unwrap()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut old)
        .await
        .unwrap();
    assert_eq!(n, 50);
    let bare = json_of(&cli_ok(
        &env,
        &[
            "tenant",
            "branch",
            "parent",
            "--name",
            "bare",
            "--schema-only",
            "--json",
        ],
    ));
    let mut bare = PgConnection::connect(bare["url"].as_str().unwrap())
        .await
        .unwrap();
    let (users, notes): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM notes)")
            .fetch_one(&mut bare)
            .await
            .unwrap();
    assert_eq!((users, notes), (0, 0));
    drop((dev, old, bare));

    // Listed under the parent; deletable; the parent's delete takes the rest.
    let listed = json_of(&cli_ok(&env, &["tenant", "branches", "parent", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    cli_ok(&env, &["tenant", "branch-delete", "parent", "--name", "old"]);
    let mut admin = admin().await;
    let prefix = format!("{}_parent_", env.namespace);
    assert_eq!(
        databases_on(&mut admin, &prefix).await,
        vec![format!("{prefix}bare"), format!("{prefix}dev")]
    );

    // Copies are not backed up unless asked; asked, they are backed up with their tenant,
    // as themselves, under the tenant's prefix, without counting as the tenant's backups.
    let backups = |env: &TestEnv| json_of(&cli_ok(env, &["backups", "list", "parent", "--json"]));
    assert!(backups(&env)
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["branch"].is_null()));
    let set = json_of(&cli_ok(
        &env,
        &[
            "tenant",
            "branch-set",
            "parent",
            "--name",
            "dev",
            "--backups",
            "on",
            "--json",
        ],
    ));
    assert_eq!(set[0]["backups"], true, "{set}");
    let job = json_of(&cli_ok(&env, &["backup", "parent", "--wait", "--json"]));
    let copies = job["outcome"]["details"]["branches"].as_array().unwrap().clone();
    assert_eq!(copies.len(), 1, "only the copy asked for: {job}");
    assert_eq!(copies[0]["branch"], "dev");
    let key = copies[0]["key"].as_str().unwrap().to_owned();
    assert!(
        key.contains(&format!("{}/parent/branch-dev-", env.namespace)),
        "{key}"
    );
    let listed = backups(&env);
    let of_dev: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["branch"] == "dev")
        .collect();
    assert_eq!(of_dev.len(), 1);
    assert_eq!(of_dev[0]["status"], "succeeded");
    // The copy's backup is the copy's data, restorable with stock tools.
    let object = env.dir.join("backups").join(key.trim_start_matches('/'));
    let sql = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gunzip -c '{}' | grep -c 'after the first backup'",
            object.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sql.stdout).trim(),
        "1",
        "{}",
        object.display()
    );
    // Once the copy is deleted, its backups expire with the tenant's retention; the
    // tenant's newest good one stays.
    cli_ok(&env, &["tenant", "branch-delete", "parent", "--name", "dev"]);
    cli_ok(&env, &["tenant", "set", "parent", "--retention-days", "0"]);
    cli_ok(&env, &["prune", "parent", "--wait"]);
    let listed = backups(&env);
    let statuses = |branch: Option<&str>| -> Vec<String> {
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["branch"].as_str() == branch)
            .map(|b| b["status"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(statuses(Some("dev")), vec!["pruned"]);
    assert_eq!(
        statuses(None).iter().filter(|s| *s == "succeeded").count(),
        1,
        "{listed}"
    );
    assert!(!object.exists());

    cli_ok(&env, &["tenant", "delete", "parent", "--wait"]);
    assert!(databases_on(&mut admin, &prefix).await.is_empty());
    assert!(roles_on(&mut admin, &prefix).await.is_empty());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_copies_verifies_switches_and_drops_the_old_copy() {
    let env = TestEnv::new();
    let _catalog = env.catalog().await;
    add_second(&env, &[]);
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["server", "drain", "second"]);
    tenant_with_data(&env, "mover", 2_000).await;
    let database = format!("{}_mover", env.namespace);
    let before = content(&mut admin_db(&database).await).await;

    // A draining target is refused at once.
    let (ok, _, err) = env.run_cli(&["tenant", "move", "mover", "--to", "second"]);
    assert!(!ok && err.contains("draining"), "{err}");
    cli_ok(&env, &["server", "undrain", "second"]);

    let out = env
        .pgfleet()
        .args(["tenant", "move", "mover", "--to", "second", "--wait", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let job = json_of(&String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("downtime"), "{stderr}");
    let details = &job["outcome"]["details"];
    assert!(details["downtime_ms"].as_i64().unwrap() >= 0, "{job}");
    // users, projects, tasks, the migrations table and the tenant's own notes.
    assert_eq!(details["verified"]["tables"], 5, "{job}");

    assert_eq!(tenant_json(&env, "mover")["server"], "second");
    assert_eq!(content(&mut second_db(&database).await).await, before);
    // The old copy and role are gone; no helper role is left anywhere.
    let mut old = admin().await;
    let prefix = format!("{}_", env.namespace);
    assert!(databases_on(&mut old, &prefix)
        .await
        .iter()
        .all(|d| d != &database));
    assert!(
        roles_on(&mut old, &prefix).await.is_empty(),
        "{:?}",
        roles_on(&mut old, &prefix).await
    );
    assert_eq!(
        roles_on(&mut second_db("postgres").await, &prefix).await,
        vec![database.clone()]
    );
    // The tenant's own URL leads to the new server, with its old password.
    let mut conn = tenant_conn(&env, "mover").await;
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(port, 5433);
    sqlx::query("INSERT INTO notes (body) VALUES ('written after the move')")
        .execute(&mut conn)
        .await
        .unwrap();
    // And life goes on there: a backup of the moved tenant.
    cli_ok(&env, &["backup", "mover", "--wait"]);

    // A target that already has a database of the tenant's name: refused, rolled back.
    cli_ok(&env, &["tenant", "create", "blocked", "--wait"]);
    let mut other = second_db("postgres").await;
    let squatter = format!("{}_blocked", env.namespace);
    sqlx::raw_sql(&format!("CREATE DATABASE \"{squatter}\""))
        .execute(&mut other)
        .await
        .unwrap();
    let (ok, out, _) = env.run_cli(&["tenant", "move", "blocked", "--to", "second", "--wait", "--json"]);
    assert!(!ok);
    assert!(
        json_of(&out)["error"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{out}"
    );
    let shown = tenant_json(&env, "blocked");
    assert_eq!(
        (shown["status"].as_str(), shown["server"].as_str()),
        (Some("active"), Some("default"))
    );
    let mut conn = tenant_conn(&env, "blocked").await;
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    assert!(
        roles_on(&mut other, &squatter).await.is_empty(),
        "the target role was left behind"
    );
    sqlx::raw_sql(&format!("DROP DATABASE \"{squatter}\""))
        .execute(&mut other)
        .await
        .unwrap();
    env.cleanup().await;
}

/// The steps of a move, in order (its fault points).
const MOVE_STEPS: [&str; 5] = [
    "move.after_target_role",
    "move.after_block",
    "move.after_copy",
    "move.before_switch",
    "move.after_switch",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_killed_at_every_step_finishes_with_identical_data_and_no_leftovers() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    add_second(&env, &[]);
    let prefix = format!("{}_", env.namespace);
    let lease = [("PGFLEET_LEASE_SECS", "3")];
    {
        let _setup = env.spawn_worker("setup", &[], &lease).await;
        cli_ok(&env, &["server", "drain", "second"]);
        for (i, _) in MOVE_STEPS.iter().enumerate() {
            tenant_with_data(&env, &format!("killed-{i}"), 500).await;
        }
        cli_ok(&env, &["server", "undrain", "second"]);
    }
    for (i, step) in MOVE_STEPS.iter().enumerate() {
        let slug = format!("killed-{i}");
        let database = format!("{prefix}{slug}");
        let before = content(&mut admin_db(&database).await).await;
        let mut doomed = env
            .spawn_worker(
                &format!("doomed-{i}"),
                &[],
                &[lease[0], ("PGFLEET_TEST_STALL_AT", step)],
            )
            .await;
        let key = format!("move-{slug}");
        cli_ok(&env, &["tenant", "move", &slug, "--to", "second", "--key", &key]);
        doomed
            .wait_for_log("stalled at fault point", Duration::from_secs(60))
            .await;
        doomed.sigkill();
        let rescuer = env.spawn_worker(&format!("rescuer-{i}"), &[], &lease).await;
        let job = env
            .wait_job(&catalog, &key, "succeeded", Duration::from_secs(90))
            .await;
        drop(rescuer);
        assert!(job.attempts >= 2, "{step}: the move was not retried");
        let shown = tenant_json(&env, &slug);
        assert_eq!(
            (shown["server"].as_str(), shown["status"].as_str()),
            (Some("second"), Some("active")),
            "{step}"
        );
        assert_eq!(
            content(&mut second_db(&database).await).await,
            before,
            "{step}: data differs"
        );
        let mut old = admin().await;
        assert!(
            !databases_on(&mut old, &prefix).await.contains(&database),
            "{step}: the old copy was left"
        );
        let leftovers: Vec<String> = roles_on(&mut old, &prefix)
            .await
            .into_iter()
            .chain(roles_on(&mut second_db("postgres").await, &prefix).await)
            .filter(|r| r.contains("_mv_"))
            .collect();
        assert!(leftovers.is_empty(), "{step}: helper roles left: {leftovers:?}");
        let mut conn = tenant_conn(&env, &slug).await;
        sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_runs_out_of_attempts_is_rolled_back_with_the_tenant_working() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    add_second(&env, &[]);
    let lease = ("PGFLEET_LEASE_SECS", "3");
    let prefix = format!("{}_", env.namespace);
    {
        let _setup = env.spawn_worker("setup", &[], &[lease]).await;
        cli_ok(&env, &["server", "drain", "second"]);
        tenant_with_data(&env, "stuck", 200).await;
        cli_ok(&env, &["server", "undrain", "second"]);
    }
    let database = format!("{prefix}stuck");
    let before = content(&mut admin_db(&database).await).await;
    // One attempt only, and its worker dies after the tenant's logins were blocked.
    let mut doomed = env
        .spawn_worker(
            "doomed",
            &[],
            &[lease, ("PGFLEET_TEST_STALL_AT", "move.after_copy")],
        )
        .await;
    let out = env
        .pgfleet()
        .args(["tenant", "move", "stuck", "--to", "second", "--key", "one-shot"])
        .env("PGFLEET_MAX_ATTEMPTS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    doomed
        .wait_for_log("stalled at fault point", Duration::from_secs(60))
        .await;
    doomed.sigkill();
    let _rescuer = env.spawn_worker("rescuer", &[], &[lease]).await;
    env.wait_job(&catalog, "one-shot", "dead", Duration::from_secs(60))
        .await;
    // Rolled back: on its old server, logins open, the same data, nothing on the target.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tenant_json(&env, "stuck")["status"] != "active" {
        assert!(
            std::time::Instant::now() < deadline,
            "the tenant was not handed back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(tenant_json(&env, "stuck")["server"], "default");
    let mut conn = tenant_conn(&env, "stuck").await;
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    assert_eq!(content(&mut admin_db(&database).await).await, before);
    let mut target = second_db("postgres").await;
    assert!(databases_on(&mut target, &prefix).await.is_empty());
    assert!(roles_on(&mut target, &prefix).await.is_empty());
    assert!(roles_on(&mut admin().await, &prefix)
        .await
        .iter()
        .all(|r| !r.contains("_mv_")));
    env.cleanup().await;
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn job_over_http(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, job) = call(
            client,
            reqwest::Method::GET,
            &format!("{base}/v1/jobs/{id}"),
            None,
        )
        .await;
        if ["succeeded", "failed", "dead"].contains(&job["status"].as_str().unwrap_or("")) {
            return job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} did not end: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every fleet operation over HTTP, with the CLI's validation and the documented shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_manages_servers_moves_suspends_and_branches() {
    use reqwest::Method;
    let env = TestEnv::new();
    let _catalog = env.catalog().await;
    let _worker = env.spawn_worker("w", &[], &[]).await;
    let (_api, base) = env.spawn_api("api").await;
    let client = http(Some(API_TOKEN));
    let (_, openapi) = call(&http(None), Method::GET, &format!("{base}/openapi.json"), None).await;
    let properties = |schema: &str| -> std::collections::BTreeSet<String> {
        openapi["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };

    // Servers: bad input refused as the CLI refuses it; a good one added, checked, listed.
    let (status, answer) = call(
        &client,
        Method::POST,
        &format!("{base}/v1/servers"),
        Some(serde_json::json!({"name": "bad name!", "url": SECOND_URL})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("not allowed"));
    let (status, added) = call(
        &client,
        Method::POST,
        &format!("{base}/v1/servers"),
        Some(serde_json::json!({"name": "second", "url": SECOND_URL, "capacity": 10, "region": "us"})),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    assert!(added["warnings"].is_array());
    let (status, listed) = call(&client, Method::GET, &format!("{base}/v1/servers"), None).await;
    assert_eq!(status, 200);
    for server in listed.as_array().unwrap() {
        let shown: std::collections::BTreeSet<String> = server.as_object().unwrap().keys().cloned().collect();
        assert_eq!(shown, properties("Server"), "{server}");
    }
    let (status, drained) = call(
        &client,
        Method::PATCH,
        &format!("{base}/v1/servers/second"),
        Some(serde_json::json!({"status": "draining", "capacity": null})),
    )
    .await;
    assert_eq!(
        (status, drained["status"].as_str(), drained["capacity"].is_null()),
        (200, Some("draining"), true),
        "{drained}"
    );
    let (status, _) = call(
        &client,
        Method::PATCH,
        &format!("{base}/v1/servers/second"),
        Some(serde_json::json!({"status": "removed"})),
    )
    .await;
    assert_eq!(status, 400);

    // A tenant: suspended and resumed, moved, branched.
    let (status, created) = call(
        &client,
        Method::POST,
        &format!("{base}/v1/tenants"),
        Some(serde_json::json!({"slug": "webby"})),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        job_over_http(&client, &base, created["job_id"].as_str().unwrap()).await["status"],
        "succeeded"
    );
    let (status, suspended) = call(
        &client,
        Method::POST,
        &format!("{base}/v1/tenants/webby/suspend"),
        None,
    )
    .await;
    assert_eq!((status, suspended["status"].as_str()), (200, Some("suspended")));
    let (status, moved) = call(
        &client,
        Method::POST,
        &format!("{base}/v1/tenants/webby/move"),
        Some(serde_json::json!({"to": "second"})),
    )
    .await;
    assert_eq!(status, 409, "a suspended tenant is not moved: {moved}");
    let (status, resumed) = call(
        &client,
        Method::POST,
        &format!("{base}/v1/tenants/webby/resume"),
        None,
    )
    .await;
    assert_eq!((status, resumed["status"].as_str()), (200, Some("active")));
    let (status, moved) = call(
        &client,
        Method::POST,
        &format!("{base}/v1/tenants/webby/move"),
        Some(serde_json::json!({"to": "second"})),
    )
    .await;
    assert_eq!(status, 409, "second is draining: {moved}");
    call(
        &client,
        Method::PATCH,
        &format!("{base}/v1/servers/second"),
        Some(serde_json::json!({"status": "active"})),
    )
    .await;
    let (status, moved) = call(
        &client,
        Method::POST,
        &format!("{base}/v1/tenants/webby/move"),
        Some(serde_json::json!({"to": "second"})),
    )
    .await;
    assert_eq!(status, 202, "{moved}");
    let job = job_over_http(&client, &base, moved["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, tenant) = call(&client, Method::GET, &format!("{base}/v1/tenants/webby"), None).await;
    assert_eq!(tenant["server"], "second");

    let (status, branch) = call(
        &client,
        Method::POST,
        &format!("{base}/v1/tenants/webby/branches"),
        Some(serde_json::json!({"name": "qa", "schema_only": true})),
    )
    .await;
    assert_eq!(status, 202, "{branch}");
    assert_eq!(
        job_over_http(&client, &base, branch["job_id"].as_str().unwrap()).await["status"],
        "succeeded"
    );
    let (status, branches) = call(
        &client,
        Method::GET,
        &format!("{base}/v1/tenants/webby/branches"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let first = &branches[0];
    let shown: std::collections::BTreeSet<String> = first.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        shown.iter().filter(|k| *k != "url").count(),
        properties("Branch").len() - 1,
        "{first}"
    );
    let (status, patched) = call(
        &client,
        Method::PATCH,
        &format!("{base}/v1/tenants/webby/branches/qa"),
        Some(serde_json::json!({"backups": true})),
    )
    .await;
    assert_eq!(
        (status, patched["backups"].as_bool()),
        (200, Some(true)),
        "{patched}"
    );
    let (status, url) = call(
        &client,
        Method::GET,
        &format!("{base}/v1/tenants/webby/branches/qa/url"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    PgConnection::connect(url["url"].as_str().unwrap()).await.unwrap();
    let (status, _) = call(
        &client,
        Method::DELETE,
        &format!("{base}/v1/tenants/webby/branches/qa"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        &client,
        Method::DELETE,
        &format!("{base}/v1/servers/second"),
        None,
    )
    .await;
    assert_eq!(status, 409, "second holds webby");
    env.cleanup().await;
}
