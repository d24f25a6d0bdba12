//! Backups against real Postgres, `pg_dump`, the local store and an S3-compatible server:
//! round trips with stock tools, faults mid-backup, retention, and tenant deletion.

use crate::support::*;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// Rows every dump/restore must carry through unchanged.
const TRICKY_DATA: &str = r#"
CREATE TABLE edge_cases (id int PRIMARY KEY, doc jsonb, raw bytea, tags text[], note text, amount numeric);
INSERT INTO edge_cases VALUES
  (1, '{"a": [1, 2, {"b": null}], "q": "it''s \"quoted\""}', '\x00ff10'::bytea, ARRAY['x', 'y,z', NULL], E'tab\there\nnewline', 12.50),
  (2, NULL, NULL, NULL, NULL, NULL),
  (3, '[]', ''::bytea, '{}', E'back\\slash and ''quote'' and "double"', -0.001),
  (4, '{"emoji": "🐘", "accent": "café"}', decode('deadbeef', 'hex'), ARRAY['ünïcödé', '日本語'], 'Zürich — naïve façade 🐘', 1e20),
  (5, '"string"', '\x5c'::bytea, ARRAY[E'\\', E'\t', ''], E'\\.\nCOPY-looking line\n\\.', 0);
INSERT INTO users (username, email, password_hash) VALUES ('ann', 'ann@example.com', 'h1'), ('bo', 'bo@example.com', 'h2');
INSERT INTO projects (name, description, owner_id) VALUES ('p1', E'multi\nline', 1), ('p2', NULL, 2);
INSERT INTO tasks (project_id, name, description, assignee_id, status) VALUES (1, 't1', 'x', 1, 'done'), (2, 't2', NULL, NULL, 'todo');
"#;

/// About 75 MB of plain dump that compresses about 2:1: long enough to interrupt mid-stream.
const BULK_DATA: &str = "CREATE TABLE bulk (id int PRIMARY KEY, payload text);
INSERT INTO bulk SELECT g, (SELECT string_agg(md5(random()::text || g || h), '') FROM generate_series(1, 2500) h)
FROM generate_series(1, 1000) g;";

/// md5 of every public table's rows, in a stable order.
async fn checksums(conn: &mut PgConnection) -> BTreeMap<String, String> {
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let mut out = BTreeMap::new();
    for t in tables {
        let sum: String = sqlx::query_scalar(&format!(
            "SELECT md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM \"{t}\" x"
        ))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        out.insert(t, sum);
    }
    out
}

fn backups_json(env: &TestEnv, slug: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&cli_ok(env, &["backups", "list", slug, "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The stored bytes of `key`, from whichever store the environment uses.
async fn fetch_object(env: &TestEnv, key: &str) -> Vec<u8> {
    match &env.s3_endpoint {
        Some(endpoint) => s3_client(endpoint)
            .get_object()
            .bucket(env.bucket())
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec(),
        None => std::fs::read(env.dir.join("backups").join(key)).unwrap(),
    }
}

async fn round_trip(env: TestEnv) {
    let _worker = env.spawn_worker("w", &["--concurrency", "2"], &[]).await;
    cli_ok(&env, &["tenant", "create", "roundtrip", "--wait"]);
    let mut conn = tenant_conn(&env, "roundtrip").await;
    sqlx::raw_sql(TRICKY_DATA).execute(&mut conn).await.unwrap();
    let source = checksums(&mut conn).await;
    assert!(source.contains_key("edge_cases") && source.contains_key("tasks"));
    drop(conn);

    cli_ok(&env, &["backup", "roundtrip", "--wait"]);
    let backups = backups_json(&env, "roundtrip");
    assert_eq!(backups.len(), 1);
    let backup = &backups[0];
    assert_eq!(backup["status"], "succeeded");
    let key = backup["key"].as_str().unwrap();
    assert!(
        key.contains("/roundtrip/") || key.starts_with("roundtrip/"),
        "{key}"
    );
    assert!(key.ends_with(".sql.gz"));

    // The recorded size and SHA-256 are those of the stored object.
    let object = fetch_object(&env, key).await;
    assert_eq!(object.len() as i64, backup["bytes"].as_i64().unwrap());
    let sha: String = Sha256::digest(&object)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sha, backup["sha256"].as_str().unwrap());

    // Stock tools: gunzip -c | psql into a fresh database.
    let dump = env.dir.join("dump.sql.gz");
    std::fs::write(&dump, &object).unwrap();
    let by_hand = env.outside_name("by_hand");
    sqlx::raw_sql(&format!("CREATE DATABASE \"{by_hand}\""))
        .execute(&mut admin().await)
        .await
        .unwrap();
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; gunzip -c '{}' | psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d '{by_hand}' >/dev/null",
            dump.display()
        ))
        .status()
        .unwrap();
    assert!(loaded.success());
    assert_eq!(
        checksums(&mut admin_db(&by_hand).await).await,
        source,
        "gunzip | psql restore differs"
    );

    // pgfleet restore.
    let restored = env.outside_name("restored");
    cli_ok(&env, &["restore", "roundtrip", "--into", &restored, "--wait"]);
    assert_eq!(
        checksums(&mut admin_db(&restored).await).await,
        source,
        "pgfleet restore differs"
    );
    // …and it refuses to overwrite.
    let (ok, out, _) = env.run_cli(&["restore", "roundtrip", "--into", &restored, "--wait", "--json"]);
    assert!(!ok);
    assert!(out.contains("already exists"), "{out}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_backup_in_the_local_store_restores_identically() {
    round_trip(TestEnv::new()).await;
}

#[tokio::test]
async fn a_backup_in_s3_restores_identically() {
    round_trip(TestEnv::new().with_s3(shared_s3()).await).await;
}

/// Final objects and unfinished uploads under the env's store.
async fn store_state(env: &TestEnv) -> (Vec<String>, usize) {
    match &env.s3_endpoint {
        Some(endpoint) => {
            let client = s3_client(endpoint);
            let listed = client
                .list_objects_v2()
                .bucket(env.bucket())
                .send()
                .await
                .unwrap();
            let keys = listed
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect();
            let uploads = client
                .list_multipart_uploads()
                .bucket(env.bucket())
                .send()
                .await
                .unwrap();
            (keys, uploads.uploads().len())
        }
        None => {
            let mut keys = Vec::new();
            let mut temps = 0;
            for entry in walk(&env.dir.join("backups")) {
                let name = entry.file_name().unwrap().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    temps += 1;
                } else {
                    keys.push(name);
                }
            }
            (keys, temps)
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Until the job's first attempt has failed and it waits for its retry.
async fn wait_for_failed_attempt(catalog: &pgfleet_shared::catalog::Catalog, key: &str, timeout: Duration) {
    wait_until("the attempt failed", timeout, || async {
        catalog
            .job_by_producer_key(key)
            .await
            .unwrap()
            .is_some_and(|j| j.status == JobStatus::Queued && j.error.is_some())
    })
    .await;
}

async fn backup_rows(env: &TestEnv, slug: &str) -> Vec<String> {
    backups_json(env, slug)
        .iter()
        .map(|b| b["status"].as_str().unwrap().to_owned())
        .collect()
}

/// A tenant with enough data that its backup takes a few seconds.
async fn bulky_tenant(env: &TestEnv, slug: &str) {
    cli_ok(env, &["tenant", "create", slug, "--wait"]);
    let mut conn = tenant_conn(env, slug).await;
    sqlx::raw_sql(BULK_DATA).execute(&mut conn).await.unwrap();
}

/// Starts a backup without waiting and returns its job key once the upload is under way
/// (an unfinished write exists in the store).
async fn start_backup_mid_upload(env: &TestEnv, slug: &str) -> String {
    let key = format!("fault-{slug}");
    cli_ok(env, &["backup", slug, "--key", &key]);
    wait_until("the upload started", Duration::from_secs(60), || async {
        store_state(env).await.1 > 0
    })
    .await;
    key
}

/// After an interrupted attempt: nothing under a final key, no unfinished upload, no
/// succeeded row. After the retry: exactly one good object and no unfinished upload.
async fn assert_clean_failure_then_success(
    env: &TestEnv,
    catalog: &pgfleet_shared::catalog::Catalog,
    slug: &str,
    job_key: &str,
) {
    let (objects, unfinished) = store_state(env).await;
    assert!(
        objects.is_empty(),
        "an object appeared under a final key: {objects:?}"
    );
    assert_eq!(unfinished, 0, "an unfinished upload was left behind");
    assert!(!backup_rows(env, slug).await.contains(&"succeeded".to_owned()));

    let job = env
        .wait_job(catalog, job_key, "succeeded", Duration::from_secs(120))
        .await;
    assert_eq!(job.attempts, 2, "{job:?}");
    let (objects, unfinished) = store_state(env).await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(unfinished, 0);
    let rows = backup_rows(env, slug).await;
    assert_eq!(rows.iter().filter(|s| *s == "succeeded").count(), 1, "{rows:?}");
    let good = &backups_json(env, slug)[0];
    let object = fetch_object(env, good["key"].as_str().unwrap()).await;
    let sha: String = Sha256::digest(&object)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sha, good["sha256"].as_str().unwrap());
}

const SLOW_RETRY: [(&str, &str); 1] = [("PGFLEET_BACKOFF_MS", "4000")];

#[tokio::test]
async fn pg_dump_killed_mid_stream_leaves_nothing_and_the_retry_succeeds() {
    let env = TestEnv::new().with_s3(shared_s3()).await;
    let catalog = env.catalog().await;
    let worker = env.spawn_worker("w", &[], &SLOW_RETRY).await;
    bulky_tenant(&env, "dumpkill").await;
    let key = start_backup_mid_upload(&env, "dumpkill").await;
    let killed = Command::new("pkill")
        .args(["-KILL", "-P", &worker.child.id().to_string(), "pg_dump"])
        .status()
        .unwrap();
    assert!(killed.success(), "no pg_dump child to kill");
    wait_for_failed_attempt(&catalog, &key, Duration::from_secs(60)).await;
    let job = catalog.job_by_producer_key(&key).await.unwrap().unwrap();
    assert!(job.error.as_deref().unwrap().contains("pg_dump"), "{job:?}");
    assert_clean_failure_then_success(&env, &catalog, "dumpkill", &key).await;
    drop(worker);
    env.cleanup().await;
}

#[tokio::test]
async fn the_s3_server_stopping_mid_upload_leaves_nothing_and_the_retry_succeeds() {
    let mut server = S3Server::start();
    let env = TestEnv::new().with_s3(&server).await;
    let catalog = env.catalog().await;
    let _worker = env.spawn_worker("w", &[], &SLOW_RETRY).await;
    bulky_tenant(&env, "s3stop").await;
    let key = start_backup_mid_upload(&env, "s3stop").await;
    server.stop();
    wait_for_failed_attempt(&catalog, &key, Duration::from_secs(120)).await;
    assert!(!backup_rows(&env, "s3stop")
        .await
        .contains(&"succeeded".to_owned()));
    // moto keeps nothing across a restart: bring back an empty server with the bucket.
    server.restart();
    s3_client(&server.endpoint)
        .create_bucket()
        .bucket(env.bucket())
        .send()
        .await
        .unwrap();
    assert_clean_failure_then_success(&env, &catalog, "s3stop", &key).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_worker_killed_mid_backup_leaves_nothing_and_another_finishes() {
    let env = TestEnv::new().with_s3(shared_s3()).await;
    let catalog = env.catalog().await;
    let short_lease = [("PGFLEET_LEASE_SECS", "3")];
    let mut doomed = env.spawn_worker("doomed", &[], &short_lease).await;
    bulky_tenant(&env, "workerkill").await;
    let key = start_backup_mid_upload(&env, "workerkill").await;
    doomed.sigkill();
    // The killed worker's upload is still open on the server; what matters is that nothing
    // is under a final key and no backup is recorded as good.
    let (objects, _) = store_state(&env).await;
    assert!(objects.is_empty(), "{objects:?}");
    assert!(!backup_rows(&env, "workerkill")
        .await
        .contains(&"succeeded".to_owned()));

    // The doomed attempt's short lease is what lets the rescuer take over soon; the
    // rescuer's own lease is the default, so a loaded machine doesn't cost it its lease.
    let _rescuer = env.spawn_worker("rescuer", &[], &[]).await;
    let job = env
        .wait_job(&catalog, &key, "succeeded", Duration::from_secs(120))
        .await;
    assert_eq!(job.attempts, 2);
    let (objects, unfinished) = store_state(&env).await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(unfinished, 0, "the retry aborted the dead attempt's upload");
    let rows = backup_rows(&env, "workerkill").await;
    assert_eq!(rows, ["succeeded", "failed"], "newest first: {rows:?}");
    env.cleanup().await;
}

/// Files of one tenant in the local store.
fn tenant_files(env: &TestEnv, slug: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.dir.join("backups").join(&env.namespace).join(slug))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn prune_keeps_keep_min_and_recent_backups_and_never_the_last_good_one() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let _worker = env.spawn_worker("w", &[], &[("PGFLEET_MAX_ATTEMPTS", "1")]).await;
    for slug in ["keeper", "bystander"] {
        cli_ok(&env, &["tenant", "create", slug, "--wait"]);
    }
    cli_ok(
        &env,
        &[
            "tenant",
            "set",
            "keeper",
            "--retention-days",
            "7",
            "--keep-min",
            "2",
        ],
    );
    for _ in 0..4 {
        cli_ok(&env, &["backup", "keeper", "--wait"]);
    }
    cli_ok(&env, &["backup", "bystander", "--wait"]);
    let bystander_before = tenant_files(&env, "bystander");
    assert_eq!(bystander_before.len(), 1);

    // Age all but the newest keeper backup past retention.
    let keys: Vec<String> = backups_json(&env, "keeper")
        .iter()
        .map(|b| b["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 4);
    let mut cat = admin_db(&format!("{}_catalog", env.namespace)).await;
    sqlx::query("UPDATE backups SET created_at = now() - interval '30 days' WHERE key = ANY($1)")
        .bind(&keys[1..])
        .execute(&mut cat)
        .await
        .unwrap();
    // Objects the catalog doesn't know, old and new: reported, never deleted (this install
    // has no record of writing them).
    let dir = env.dir.join("backups").join(&env.namespace).join("keeper");
    std::fs::write(dir.join("manual-old.sql.gz"), b"x").unwrap();
    std::fs::write(dir.join("manual-new.sql.gz"), b"y").unwrap();
    assert!(Command::new("touch")
        .args(["-d", "30 days ago"])
        .arg(dir.join("manual-old.sql.gz"))
        .status()
        .unwrap()
        .success());

    let out = cli_ok(&env, &["prune", "keeper", "--wait", "--json"]);
    let outcome: serde_json::Value = serde_json::from_str(&out).unwrap();
    let details = &outcome["outcome"]["details"];
    let pruned: Vec<&str> = details["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        pruned,
        [keys[2].as_str(), keys[3].as_str()],
        "the two oldest beyond keep-min 2"
    );
    let unknown = details["unknown_objects"].to_string();
    assert!(
        unknown.contains("manual-old") && unknown.contains("manual-new"),
        "{unknown}"
    );
    let remaining = tenant_files(&env, "keeper");
    let expected_files = {
        let mut v: Vec<String> = keys[..2]
            .iter()
            .map(|k| k.rsplit('/').next().unwrap().to_owned())
            .collect();
        v.push("manual-new.sql.gz".into());
        v.push("manual-old.sql.gz".into());
        v.sort();
        v
    };
    assert_eq!(remaining, expected_files);
    assert_eq!(
        tenant_files(&env, "bystander"),
        bystander_before,
        "another tenant's prefix was touched"
    );

    // Prune again: same result.
    let again: serde_json::Value =
        serde_json::from_str(&cli_ok(&env, &["prune", "keeper", "--wait", "--json"])).unwrap();
    assert_eq!(again["outcome"]["summary"], "nothing to prune");
    assert_eq!(tenant_files(&env, "keeper"), expected_files);

    // Every recent run fails: the newest good backup must survive any retention.
    let role = format!("{}_keeper", env.namespace);
    sqlx::raw_sql(&format!("ALTER ROLE \"{role}\" NOLOGIN"))
        .execute(&mut admin().await)
        .await
        .unwrap();
    for _ in 0..2 {
        let (ok, _, _) = env.run_cli(&["--max-attempts", "1", "backup", "keeper", "--wait"]);
        assert!(!ok, "a backup as a NOLOGIN role must fail");
    }
    sqlx::raw_sql(&format!("ALTER ROLE \"{role}\" LOGIN"))
        .execute(&mut admin().await)
        .await
        .unwrap();
    cli_ok(
        &env,
        &[
            "tenant",
            "set",
            "keeper",
            "--retention-days",
            "0",
            "--keep-min",
            "1",
        ],
    );
    cli_ok(&env, &["prune", "keeper", "--wait"]);
    let statuses: Vec<(String, String)> = backups_json(&env, "keeper")
        .iter()
        .map(|b| {
            (
                b["status"].as_str().unwrap().to_owned(),
                b["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let good: Vec<&(String, String)> = statuses.iter().filter(|(s, _)| s == "succeeded").collect();
    assert_eq!(good.len(), 1, "{statuses:?}");
    assert_eq!(good[0].1, keys[0], "the newest good backup is kept");
    assert!(tenant_files(&env, "keeper").contains(&keys[0].rsplit('/').next().unwrap().to_owned()));
    assert_eq!(
        statuses.iter().filter(|(s, _)| s == "failed").count(),
        2,
        "{statuses:?}"
    );
    drop(catalog);
    env.cleanup().await;
}

#[tokio::test]
async fn tenant_delete_leaves_a_restorable_final_backup() {
    let env = TestEnv::new();
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "leaving", "--wait"]);
    let mut conn = tenant_conn(&env, "leaving").await;
    sqlx::raw_sql(TRICKY_DATA).execute(&mut conn).await.unwrap();
    let source = checksums(&mut conn).await;
    drop(conn);

    cli_ok(&env, &["tenant", "delete", "leaving", "--wait"]);
    let shown: serde_json::Value =
        serde_json::from_str(&cli_ok(&env, &["tenant", "show", "leaving", "--json"])).unwrap();
    assert_eq!(shown["status"], "deleted");
    assert!(env.tenant_databases().await.is_empty());
    assert!(env.tenant_roles().await.is_empty());
    let backups = backups_json(&env, "leaving");
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0]["status"], "succeeded");

    let target = env.outside_name("final");
    cli_ok(&env, &["restore", "leaving", "--into", &target, "--wait"]);
    assert_eq!(checksums(&mut admin_db(&target).await).await, source);
    env.cleanup().await;
}

#[tokio::test]
async fn backup_all_backs_up_every_active_tenant_once() {
    let env = TestEnv::new();
    let _worker = env.spawn_worker("w", &["--concurrency", "4"], &[]).await;
    for slug in ["all-a", "all-b", "all-c"] {
        let (ok, _, err) = env.run_cli(&["tenant", "create", slug, "--wait"]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = env.run_cli(&["backup", "--all", "--wait", "--json"]);
    assert!(ok, "{err}");
    let jobs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(
        jobs.iter()
            .all(|j| j["kind"] == "backup" && j["status"] == "succeeded"),
        "{jobs:?}"
    );
    for slug in ["all-a", "all-b", "all-c"] {
        let rows = backup_rows(&env, slug).await;
        assert_eq!(rows, ["succeeded"], "{slug}");
    }
    env.cleanup().await;
}
