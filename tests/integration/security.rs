//! The trust boundary, attacked for real: a hostile tenant (functions, its migrations table,
//! its own password verifier), a tampered backup object, a producer with the signup
//! credential, and key rotation under running processes. Each attack must fail for the
//! right reason; where it helps, the test first shows the attack works on the unprotected
//! path (stock tools as superuser), so it can't pass by testing nothing.

use crate::support::*;
use pgfleet_shared::secrets::SecretKey;
use secrecy::ExposeSecret;
use sqlx::{Connection as _, PgConnection};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tenant function that makes a role only when it runs as a superuser, and a table whose
/// CHECK calls it: harmless while the tenant writes rows, an escalation if a restore loads
/// them as a superuser.
fn escalation_sql(role: &str) -> String {
    format!(
        "CREATE FUNCTION pwn() RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
           IF current_setting('is_superuser') = 'on'
              AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{role}') THEN
             EXECUTE 'CREATE ROLE \"{role}\" SUPERUSER LOGIN';
           END IF;
           RETURN true;
         END $$;
         CREATE TABLE booby (id int PRIMARY KEY, CHECK (pwn()));
         INSERT INTO booby SELECT generate_series(1, 3);"
    )
}

async fn role_exists(role: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&mut admin().await)
        .await
        .unwrap()
}

async fn drop_role(role: &str) {
    sqlx::raw_sql(&format!("DROP ROLE IF EXISTS \"{role}\""))
        .execute(&mut admin().await)
        .await
        .unwrap();
}

/// (owner, owner is superuser, owner can log in) of a database.
async fn database_owner(database: &str) -> (String, bool, bool) {
    sqlx::query_as(
        "SELECT r.rolname::text, r.rolsuper, r.rolcanlogin FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
          WHERE d.datname = $1",
    )
    .bind(database)
    .fetch_one(&mut admin().await)
    .await
    .unwrap()
}

async fn database_exists(database: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(&mut admin().await)
        .await
        .unwrap()
}

fn newest_backup_key(env: &TestEnv, slug: &str) -> String {
    let listed: serde_json::Value =
        serde_json::from_str(&cli_ok(env, &["backups", "list", slug, "--json"])).unwrap();
    listed[0]["key"].as_str().unwrap().to_owned()
}

/// `gunzip -c FILE | psql` as the superuser into `database`: what a restore must not be.
fn load_by_hand_as_superuser(file: &std::path::Path, database: &str) {
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "gunzip -c '{}' | /usr/lib/postgresql/15/bin/psql -X -q -h 127.0.0.1 -U postgres -d '{database}' >/dev/null 2>&1",
            file.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn restores_never_run_tenant_functions_as_a_superuser() {
    let env = TestEnv::new();
    let _worker = env.spawn_worker("w", &[], &[]).await;
    let live_role = format!("{}_pwned_live", env.namespace);
    let deleted_role = format!("{}_pwned_deleted", env.namespace);
    for (slug, role) in [("live-one", &live_role), ("gone-one", &deleted_role)] {
        cli_ok(&env, &["tenant", "create", slug, "--wait"]);
        let mut conn = tenant_conn(&env, slug).await;
        sqlx::raw_sql(&escalation_sql(role))
            .execute(&mut conn)
            .await
            .unwrap();
        cli_ok(&env, &["backup", slug, "--wait"]);
        assert!(!role_exists(role).await, "the tenant itself can't make the role");
    }

    // The attack is real: the same backup loaded by hand as a superuser makes the role.
    let key = newest_backup_key(&env, "live-one");
    let by_hand = env.outside_name("by_hand");
    sqlx::raw_sql(&format!("CREATE DATABASE \"{by_hand}\""))
        .execute(&mut admin().await)
        .await
        .unwrap();
    load_by_hand_as_superuser(&env.dir.join("backups").join(&key), &by_hand);
    assert!(
        role_exists(&live_role).await,
        "control: a superuser load runs pwn()"
    );
    drop_role(&live_role).await;

    // A live tenant's restore loads as the tenant's own role.
    let live_copy = env.outside_name("live_copy");
    cli_ok(&env, &["restore", "live-one", "--into", &live_copy, "--wait"]);
    assert!(
        !role_exists(&live_role).await,
        "a live-tenant restore ran pwn() as a superuser"
    );
    let (owner, superuser, _) = database_owner(&live_copy).await;
    assert_eq!(owner, format!("{}_live-one", env.namespace));
    assert!(!superuser);

    // A deleted tenant's restore loads as its role, re-created without privileges, then
    // left unable to log in.
    cli_ok(&env, &["tenant", "delete", "gone-one", "--wait"]);
    let gone_copy = env.outside_name("gone_copy");
    cli_ok(&env, &["restore", "gone-one", "--into", &gone_copy, "--wait"]);
    assert!(
        !role_exists(&deleted_role).await,
        "a deleted-tenant restore ran pwn() as a superuser"
    );
    let (owner, superuser, can_login) = database_owner(&gone_copy).await;
    assert_eq!(owner, format!("{}_gone-one", env.namespace));
    assert!(
        !superuser && !can_login,
        "{owner}: superuser {superuser}, login {can_login}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM booby")
        .fetch_one(&mut admin_db(&gone_copy).await)
        .await
        .unwrap();
    assert_eq!(rows, 3, "the data came back");
    env.cleanup().await;
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[tokio::test]
async fn a_tampered_backup_object_never_reaches_psql() {
    let env = TestEnv::new();
    let _worker = env.spawn_worker("w", &[], &[("PGFLEET_MAX_ATTEMPTS", "1")]).await;
    cli_ok(&env, &["tenant", "create", "victim", "--wait"]);
    cli_ok(&env, &["backup", "victim", "--wait"]);
    let object = env.dir.join("backups").join(newest_backup_key(&env, "victim"));
    let original = std::fs::read(&object).unwrap();
    let marker = env.dir.join("pwned-marker");
    let evil = gzip(format!("\\! touch {}\n", marker.display()).as_bytes());

    // The attack is real: stock psql runs the object's shell command.
    let control = env.dir.join("control.sql.gz");
    std::fs::write(&control, &evil).unwrap();
    load_by_hand_as_superuser(&control, "postgres");
    assert!(marker.exists(), "control: psql runs \\! from the object");
    std::fs::remove_file(&marker).unwrap();

    let with_trailer = [original.clone(), b"\n\\! touch /nonexistent".to_vec()].concat();
    for (what, replacement) in [("shell command", evil), ("extra bytes", with_trailer)] {
        std::fs::write(&object, &replacement).unwrap();
        let target = env.outside_name("tampered");
        let (ok, out, err) = env.run_cli(&["restore", "victim", "--into", &target, "--wait", "--json"]);
        assert!(!ok, "{what}: a tampered object was restored\n{out}\n{err}");
        let job: serde_json::Value = serde_json::from_str(&out).unwrap();
        let error = job["error"].as_str().unwrap_or_default();
        assert!(error.contains("failed its checksum"), "{what}: {error}");
        assert_eq!(job["status"], "failed", "{what}: verification failures are final");
        assert!(!marker.exists(), "{what}: the object's shell command ran");
        assert!(
            !database_exists(&target).await,
            "{what}: a target database was left"
        );
    }
    // The genuine object still restores.
    std::fs::write(&object, &original).unwrap();
    cli_ok(
        &env,
        &[
            "restore",
            "victim",
            "--into",
            &env.outside_name("genuine"),
            "--wait",
        ],
    );
    env.cleanup().await;
}

#[tokio::test]
async fn client_tools_get_only_the_environment_they_need() {
    let env = TestEnv::new();
    // A pg_dump that records its environment, then is the real one.
    let bin = env.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let seen = env.dir.join("pg_dump.env");
    let wrapper = bin.join("pg_dump");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n/usr/bin/env > '{}'\nexec /usr/lib/postgresql/15/bin/pg_dump \"$@\"\n",
            seen.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _worker = env
        .spawn_worker(
            "w",
            &[],
            &[
                ("PGFLEET_PG_BIN", bin.to_str().unwrap()),
                ("AWS_SECRET_ACCESS_KEY", "cloud-secret-value"),
            ],
        )
        .await;
    cli_ok(&env, &["tenant", "create", "envcheck", "--wait"]);
    cli_ok(&env, &["backup", "envcheck", "--wait"]);
    let environment = std::fs::read_to_string(&seen).unwrap();
    let names: Vec<&str> = environment.lines().filter_map(|l| l.split('=').next()).collect();
    for secret in [
        "PGFLEET_SECRET_KEY",
        "PGFLEET_CATALOG_URL",
        "PGFLEET_AMQP_URL",
        "PGFLEET_SERVER_URL",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(!names.contains(&secret), "{secret} reached pg_dump: {names:?}");
    }
    assert!(!environment.contains(&env.secret_key) && !environment.contains("cloud-secret-value"));
    for needed in ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"] {
        assert!(names.contains(&needed), "{needed} missing: {names:?}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_forged_bookkeeping_row_fails_only_its_own_tenant() {
    let env = TestEnv::new().with_migrations(&[]);
    let _worker = env.spawn_worker("w", &["--concurrency", "4"], &[]).await;
    for slug in ["forger", "honest-a", "honest-b"] {
        cli_ok(&env, &["tenant", "create", slug, "--wait"]);
    }
    let mut forger = tenant_conn(&env, "forger").await;
    sqlx::raw_sql("INSERT INTO _pgfleet_migrations (version, name, checksum) VALUES (99, 'forged', '\\x00')")
        .execute(&mut forger)
        .await
        .unwrap();

    let migrations = env.migrations_dir.clone().unwrap();
    std::fs::write(
        migrations.join("2_nickname.sql"),
        "ALTER TABLE users ADD COLUMN nickname text;",
    )
    .unwrap();
    let (ok, out, err) = env.run_cli(&["migrate", "--all", "--wait", "--json"]);
    assert!(!ok, "the forger's tenant fails, so the rollout reports a failure");
    let rollout: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}\n{err}"));
    assert_eq!(rollout["succeeded"], 2, "{rollout}");
    let forger_result = rollout["per_tenant"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "forger")
        .unwrap();
    assert!(
        forger_result["error"].as_str().unwrap().contains("version 99"),
        "{forger_result}"
    );

    // The forged row never became the fleet's: the next rollout is not blocked by drift.
    let catalog = env.catalog().await;
    let mirrored: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_migrations WHERE version = 99")
        .fetch_one(catalog.pool())
        .await
        .unwrap();
    assert_eq!(mirrored, 0);
    std::fs::write(
        migrations.join("3_bio.sql"),
        "ALTER TABLE users ADD COLUMN bio text;",
    )
    .unwrap();
    let (_, out, err) = env.run_cli(&["migrate", "--all", "--wait", "--json"]);
    assert!(!err.contains("drift") && !err.contains("missing"), "{err}");
    let rollout: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}\n{err}"));
    assert_eq!(rollout["succeeded"], 2, "{rollout}");
    for slug in ["honest-a", "honest-b"] {
        let shown: serde_json::Value =
            serde_json::from_str(&cli_ok(&env, &["tenant", "show", slug, "--json"])).unwrap();
        assert_eq!(shown["schema_version"], 3, "{slug}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_huge_iteration_password_verifier_costs_its_provision_nothing() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let _worker = env.spawn_worker("w", &["--concurrency", "2"], &[]).await;
    cli_ok(&env, &["tenant", "create", "slowpoke", "--wait"]);
    // Any well-formed verifier with 2^31-1 rounds; checking a password against it would
    // take the better part of an hour of CPU. The tenant can set it itself (`ALTER ROLE
    // CURRENT_USER PASSWORD '<verifier>'`), but then the *server* first spends that hour
    // checking it against the empty password, uninterruptibly (README, "Security model");
    // so the test writes the same stored value directly.
    let hostile = "SCRAM-SHA-256$2147483647:c2FsdHNhbHRzYWx0c2FsdA==$\
                   AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let role = format!("{}_slowpoke", env.namespace);
    sqlx::query("UPDATE pg_authid SET rolpassword = $2 WHERE rolname = $1")
        .bind(&role)
        .bind(hostile)
        .execute(&mut admin().await)
        .await
        .unwrap();
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&role)
        .fetch_one(&mut admin().await)
        .await
        .unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$2147483647:"), "{stored}");

    // A repeated provision (a retried signup) and another tenant's, side by side.
    let started = Instant::now();
    env.publish_raw(
        "provision",
        br#"{"kind": "provision", "tenant": "slowpoke", "key": "again"}"#,
    )
    .await;
    env.publish_raw(
        "provision",
        br#"{"kind": "provision", "tenant": "neighbour", "key": "n1"}"#,
    )
    .await;
    env.wait_job(&catalog, "again", "succeeded", Duration::from_secs(60))
        .await;
    env.wait_job(&catalog, "n1", "succeeded", Duration::from_secs(60))
        .await;
    assert!(started.elapsed() < Duration::from_secs(60));
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&role)
        .fetch_one(&mut admin().await)
        .await
        .unwrap();
    assert!(
        stored.starts_with("SCRAM-SHA-256$4096:"),
        "the password was set again: {stored}"
    );
    tenant_conn(&env, "slowpoke").await;
    env.cleanup().await;
}

async fn columns(env: &TestEnv, slug: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'users' ORDER BY 1",
    )
    .fetch_all(&mut tenant_conn(env, slug).await)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrations_that_escape_their_transaction_are_refused_before_any_tenant_changes() {
    let env = TestEnv::new().with_migrations(&[]);
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "steady", "--wait"]);
    let before = columns(&env, "steady").await;
    let migrations = env.migrations_dir.clone().unwrap();
    let refused = [
        (
            "2_commits.sql",
            "ALTER TABLE users ADD COLUMN a int;\nCOMMIT;\nALTER TABLE users ADD COLUMN b int;\n",
            "line 2",
        ),
        (
            "2_savepoint.sql",
            "SAVEPOINT s;\nALTER TABLE users ADD COLUMN a int;\n",
            "line 1",
        ),
        (
            "2_concurrently.sql",
            "ALTER TABLE users ADD COLUMN a int;\nCREATE INDEX CONCURRENTLY users_a ON users (a);\n",
            "no-transaction",
        ),
    ];
    for (file, sql, expected) in refused {
        std::fs::write(migrations.join(file), sql).unwrap();
        let (ok, out, err) = env.run_cli(&["migrate", "--all", "--wait"]);
        assert!(!ok, "{file} was accepted\n{out}");
        assert!(err.contains(file) && err.contains(expected), "{file}: {err}");
        std::fs::remove_file(migrations.join(file)).unwrap();
    }
    let catalog = env.catalog().await;
    assert!(
        catalog.rollouts(10).await.unwrap().is_empty(),
        "nothing was recorded"
    );
    assert_eq!(columns(&env, "steady").await, before, "no tenant changed");

    // The opt-out: the same index in a file of its own, marked, runs outside a transaction.
    std::fs::write(
        migrations.join("2_index.sql"),
        "-- pgfleet:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_email_lower ON users (lower(email));\n",
    )
    .unwrap();
    cli_ok(&env, &["migrate", "--all", "--wait"]);
    let indexed: bool = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_email_lower'::regclass",
    )
    .fetch_one(&mut tenant_conn(&env, "steady").await)
    .await
    .unwrap();
    assert!(indexed);
    env.cleanup().await;
}

/// Publishes one message as `user`; `Err` if the broker refuses it.
async fn publish_as_user(
    user: &str,
    password: &str,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
) -> Result<(), String> {
    let url = format!("amqp://{user}:{password}@127.0.0.1:5672/%2f");
    publish_as(&url, exchange, routing_key, &[body.to_vec()]).await
}

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl").arg("-q").args(args).status().unwrap();
    assert!(status.success(), "rabbitmqctl {args:?}");
}

#[tokio::test]
async fn the_signup_credential_can_only_create_tenants() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "precious", "--wait"]);
    let app = format!("app_{}", env.namespace);
    let password = "app-password-1";
    // Exactly the documented setup.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/rabbitmq/least-privilege.sh"
    );
    let monitor = format!("mon_{}", env.namespace);
    let status = Command::new(script)
        .env("NAMESPACE", &env.namespace)
        .env("APP_USER", &app)
        .env("APP_PASSWORD", password)
        .env("MONITOR_USER", &monitor)
        .env("MONITOR_PASSWORD", "monitor-password-1")
        .env("APPLY_POLICY", "1")
        .status()
        .unwrap();
    assert!(status.success());
    // The operator policy is on pgfleet's queues (and everything below still works under it);
    // the monitoring user may read figures, nothing else.
    let policies = Command::new("rabbitmqctl")
        .args(["-q", "list_policies"])
        .output()
        .unwrap();
    let policies = String::from_utf8_lossy(&policies.stdout);
    assert!(
        policies.contains(&format!("{}-queues", env.namespace)) && policies.contains("\"delivery-limit\":50"),
        "{policies}"
    );
    let users = Command::new("rabbitmqctl")
        .args(["-q", "list_users"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&users.stdout)
        .lines()
        .any(|l| l.starts_with(&monitor) && l.contains("monitoring")));
    let exchange = format!("{}.jobs", env.namespace);

    let signup = br#"{"kind": "provision", "tenant": "newcomer", "key": "signup-1"}"#;
    publish_as_user(&app, password, &exchange, "provision", signup)
        .await
        .expect("the app may publish a signup");
    env.wait_tenant_active(&catalog, "newcomer", Duration::from_secs(60))
        .await;

    let delete = br#"{"kind": "delete", "tenant": "precious"}"#;
    let refused = publish_as_user(&app, password, &exchange, "delete", delete).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("ACCESS_REFUSED") || e.contains("403")),
        "the broker accepted a delete from the app user: {refused:?}"
    );
    // Not through a provision-keyed message either: its kind must match its routing key.
    publish_as_user(&app, password, &exchange, "provision", delete)
        .await
        .unwrap();
    rabbitmqctl(&["delete_user", &app]);
    rabbitmqctl(&["delete_user", &monitor]);
    rabbitmqctl(&["clear_policy", &format!("{}-queues", env.namespace)]);

    // A key that looks like one of pgfleet's own can't pre-empt it: producers' keys live
    // in their own namespace.
    let slot_key = pgfleet_shared::catalog::scheduled_backup_key("precious", &chrono::Utc::now());
    env.publish_raw(
        "provision",
        format!(r#"{{"kind": "provision", "tenant": "precious", "key": "{slot_key}"}}"#).as_bytes(),
    )
    .await;
    env.wait_job(&catalog, &slot_key, "succeeded", Duration::from_secs(60))
        .await;
    assert!(
        catalog.job_by_key(&slot_key).await.unwrap().is_none(),
        "the scheduler's key is still free"
    );

    // A key reused for another tenant is a dead letter, never the other tenant's job.
    env.publish_raw(
        "provision",
        br#"{"kind": "provision", "tenant": "intruder", "key": "signup-1"}"#,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Draining takes the messages: keep what each round finds (the two may arrive apart).
    let mut dead = Vec::new();
    loop {
        dead.extend(env.drain_dead_letters().await);
        if dead.len() >= 2 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reasons: Vec<String> = dead.iter().filter_map(|(_, r)| r.clone()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("does not match routing key")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("already belongs to another job")),
        "{reasons:?}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&cli_ok(&env, &["tenant", "show", "precious", "--json"])).unwrap();
    assert_eq!(shown["status"], "active");
    let (ok, _, err) = env.run_cli(&["tenant", "show", "intruder"]);
    assert!(!ok, "{err}");

    // Restore targets can never take one of pgfleet's own names (a future tenant's).
    let reserved = format!("{}_future-tenant", env.namespace);
    let (ok, _, err) = env.run_cli(&["restore", "precious", "--into", &reserved]);
    assert!(!ok && err.contains("reserved"), "{err}");
    let reserved_plain = format!("{}_future", env.namespace);
    env.publish_raw(
        "restore",
        format!(r#"{{"kind": "restore", "tenant": "precious", "into": "{reserved_plain}", "key": "r1"}}"#)
            .as_bytes(),
    )
    .await;
    let job = env
        .wait_job(&catalog, "r1", "failed", Duration::from_secs(60))
        .await;
    assert!(job.error.unwrap().contains("reserved"));
    assert!(!database_exists(&reserved_plain).await);
    env.cleanup().await;
}

#[tokio::test]
async fn api_idempotency_keys_are_never_someone_elses_job() {
    let env = TestEnv::new();
    let (_api, base) = env.spawn_api("api").await;
    let client = http(Some(API_TOKEN));
    let post = |path: &str, body: serde_json::Value| {
        let request = client.post(format!("{base}{path}")).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, first) = post(
        "/v1/tenants",
        serde_json::json!({"slug": "owner-a", "key": "k-1"}),
    )
    .await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = post(
        "/v1/tenants",
        serde_json::json!({"slug": "owner-a", "key": "k-1"}),
    )
    .await;
    assert_eq!((status.as_u16(), &again["job_id"]), (202, &first["job_id"]));
    let (status, other) = post(
        "/v1/tenants",
        serde_json::json!({"slug": "owner-b", "key": "k-1"}),
    )
    .await;
    assert_eq!(status, 409, "{other}");
    assert!(
        other["error"].as_str().unwrap().contains("already used"),
        "{other}"
    );
    assert!(
        other.get("job").is_none(),
        "the other tenant's job was disclosed: {other}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn tenant_roles_cannot_reach_the_catalog_and_server_check_reports_what_they_can() {
    let env = TestEnv::new();
    let services = env.services().await;
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "curious", "--wait"]);
    let tenant = services
        .catalog
        .tenant(&pgfleet_shared::TenantSlug::parse("curious").unwrap())
        .await
        .unwrap()
        .unwrap();
    let catalog_db = format!("{}_catalog", env.namespace);
    let err = connect_as(&services, &tenant, &catalog_db)
        .await
        .expect_err("a tenant role reached the catalog database")
        .to_string();
    assert!(err.contains("permission denied for database"), "{err}");

    let (_, out, err) = env.run_cli(&["server", "check", "default", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}\n{err}"));
    let reachable: Vec<&str> = report["reachable_by_every_tenant"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    // What the server really allows, asked as the tenant itself (for the databases other
    // tests don't create and drop meanwhile).
    let mut as_tenant = connect_as(&services, &tenant, &tenant.database_name)
        .await
        .unwrap();
    for database in ["postgres", "template1", catalog_db.as_str()] {
        let can: bool = sqlx::query_scalar("SELECT has_database_privilege($1, 'CONNECT')")
            .bind(database)
            .fetch_one(&mut as_tenant)
            .await
            .unwrap();
        assert_eq!(reachable.contains(&database), can, "{database}: {report}");
    }
    assert!(!reachable.contains(&catalog_db.as_str()));
    assert!(!reachable
        .iter()
        .any(|d| d.starts_with(&format!("{}_", env.namespace))));
    assert!(
        report["findings"]
            .to_string()
            .contains("every tenant role can connect"),
        "{report}"
    );
    assert_eq!(report["tenants"], 1);
    env.cleanup().await;
}

#[tokio::test]
async fn metrics_can_require_their_own_token() {
    let env = TestEnv::new();
    let metrics_token = "metrics-token-0123456789";
    let api = env
        .spawn_process(
            "api",
            &["serve", "--listen", "127.0.0.1:0"],
            &[
                ("PGFLEET_API_TOKEN", API_TOKEN),
                ("PGFLEET_METRICS_TOKEN", metrics_token),
            ],
            "listening on http://",
        )
        .await;
    let base = api_base_url(&api.log());
    let scrape = |token: Option<&str>| {
        let client = http(token);
        let url = format!("{base}/metrics");
        async move { client.get(url).send().await.unwrap() }
    };
    assert_eq!(scrape(None).await.status(), 401);
    assert_eq!(
        scrape(Some(API_TOKEN)).await.status(),
        401,
        "the API token is not the metrics token"
    );
    let ok = scrape(Some(metrics_token)).await;
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("pgfleet_catalog_up 1"));
    assert_eq!(
        http(None)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(!api.log().contains(metrics_token));
    env.cleanup().await;
}

/// `tenant url` with the given keys; returns (success, stdout, stderr).
fn tenant_url_with(env: &TestEnv, slug: &str, key: &str, previous: Option<&str>) -> (bool, String, String) {
    let mut cmd = env.pgfleet();
    cmd.args(["tenant", "url", slug]).env("PGFLEET_SECRET_KEY", key);
    if let Some(previous) = previous {
        cmd.env("PGFLEET_SECRET_KEY_PREVIOUS", previous);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn secret_keys_rotate_under_running_processes() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let old_key = env.secret_key.clone();
    let new_key = SecretKey::generate().to_base64().expose_secret().to_owned();
    let (_api, base) = env.spawn_api("api").await;
    let mut old_worker = env.spawn_worker("old", &[], &[]).await;
    for slug in ["rot-a", "rot-b"] {
        cli_ok(&env, &["tenant", "create", slug, "--wait"]);
    }

    // Roll the workers onto the new key, the old one still accepted.
    let both = [
        ("PGFLEET_SECRET_KEY", new_key.as_str()),
        ("PGFLEET_SECRET_KEY_PREVIOUS", old_key.as_str()),
    ];
    let _new_worker = env.spawn_worker("new", &[], &both).await;
    old_worker.terminate();

    // Rotate while the API takes a signup.
    let mut rotate = env.pgfleet();
    rotate
        .args(["secret-key", "rotate", "--batch", "1", "--json"])
        .envs(both);
    let rotation = std::thread::spawn(move || rotate.output().unwrap());
    let (status, accepted) = {
        let response = http(Some(API_TOKEN))
            .post(format!("{base}/v1/tenants"))
            .json(&serde_json::json!({"slug": "rot-c"}))
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 202, "{accepted}");
    let rotated = rotation.join().unwrap();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&rotated.stdout).unwrap();
    assert!(
        report["resealed"]["tenant passwords"].as_u64().unwrap() >= 2,
        "{report}"
    );
    env.wait_tenant_active(&catalog, "rot-c", Duration::from_secs(60))
        .await;

    // Every credential is sealed with the new key, and opens with the new key alone.
    let new_id = SecretKey::parse(&new_key).unwrap().id();
    let sealed: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT password_ciphertext FROM tenants UNION ALL SELECT admin_url_ciphertext FROM tenant_servers",
    )
    .fetch_all(catalog.pool())
    .await
    .unwrap();
    assert_eq!(sealed.len(), 4);
    assert!(sealed.iter().all(|s| s.starts_with(&new_id.sealed_header())));
    for slug in ["rot-a", "rot-b", "rot-c"] {
        let (ok, url, err) = tenant_url_with(&env, slug, &new_key, None);
        assert!(ok, "{slug}: {err}");
        PgConnection::connect(url.trim()).await.unwrap();
    }
    // The running worker still works (it reads the re-sealed rows).
    let backup = env
        .pgfleet()
        .args(["backup", "rot-a", "--wait"])
        .env("PGFLEET_SECRET_KEY", &new_key)
        .output()
        .unwrap();
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );

    // The retired key can no longer start a process: alone it opens nothing, and as the
    // current key (even with the new one accepted) it is refused by name.
    for (previous, expected) in [(None, "does not match"), (Some(new_key.as_str()), "retired")] {
        let mut stale = env.pgfleet();
        stale.args(["worker"]).env("PGFLEET_SECRET_KEY", &old_key);
        if let Some(previous) = previous {
            stale.env("PGFLEET_SECRET_KEY_PREVIOUS", previous);
        }
        let out = stale.output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains(&old_key) && !err.contains(&new_key));
    }

    // A ciphertext moved to another row does not open there.
    sqlx::query(
        "UPDATE tenants t SET password_ciphertext = o.password_ciphertext
           FROM tenants o WHERE t.slug = 'rot-a' AND o.slug = 'rot-b'",
    )
    .execute(catalog.pool())
    .await
    .unwrap();
    let (ok, _, err) = tenant_url_with(&env, "rot-a", &new_key, None);
    assert!(!ok && err.contains("does not belong to this row"), "{err}");
    env.cleanup().await;
}
