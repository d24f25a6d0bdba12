//! The warm pool against the real server and catalog: signups at once claim distinct pool
//! databases and the rest fall back to a cold provision; a provision that dies between its
//! claim and activation finishes on the same entry, giving it to no one else; pool
//! databases follow a rollout's newest set; and a worker keeps the pool at its size,
//! visible in `server list`, and empties it when the size goes to 0.

use crate::support::*;
use pgfleet_shared::jobs::{provision, warm_pool, FaultPoints, JobContext};
use pgfleet_shared::TenantSlug;
use sqlx::Connection as _;
use std::time::Duration;

async fn default_server(ctx: &JobContext) -> pgfleet_shared::catalog::WarmServer {
    ctx.catalog
        .warm_servers()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == "default")
        .expect("the default server")
}

async fn ready_entries(ctx: &JobContext) -> Vec<pgfleet_shared::catalog::WarmDatabase> {
    let server = default_server(ctx).await;
    ctx.catalog
        .warm_databases(server.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.status == "ready")
        .collect()
}

async fn database_exists(name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut admin().await)
        .await
        .unwrap()
}

/// The tenant works: its role logs in to its database and finds the schema.
async fn tenant_works(env: &TestEnv, slug: &str) {
    let mut conn = tenant_conn(env, slug).await;
    let tables = table_names(&mut conn).await;
    assert!(tables.contains(&"users".to_owned()), "{slug}: {tables:?}");
    let who: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(who, format!("{}_{slug}", env.namespace));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signups_each_get_their_own_pool_database_or_a_cold_one() {
    let env = TestEnv::new();
    let ctx = env.job_context(FaultPoints::default()).await;
    let server = default_server(&ctx).await;
    let refill = warm_pool::refill_server(&ctx, &server, 3).await.unwrap();
    assert_eq!(refill.created, 3);
    let pool: Vec<String> = ready_entries(&ctx)
        .await
        .into_iter()
        .map(|e| e.database_name)
        .collect();
    assert_eq!(pool.len(), 3);
    // One entry without the digest of the set it holds (as built before the digest was
    // recorded): its claim checks the database over a tenant connection; the others are
    // recorded from the set.
    sqlx::query("UPDATE warm_databases SET set_digest = NULL WHERE database_name = $1")
        .bind(&pool[0])
        .execute(ctx.catalog.pool())
        .await
        .unwrap();

    // Eight signups at once against a pool of three.
    let slugs: Vec<String> = (0..8).map(|i| format!("rush-{i}")).collect();
    let outcomes = futures_util::future::join_all(slugs.iter().map(|s| {
        let ctx = ctx.clone();
        let slug = TenantSlug::parse(s).unwrap();
        async move { provision::provision_tenant(&ctx, &slug, None).await.unwrap() }
    }))
    .await;
    let mut claimed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.details["warm_pool"].as_str().map(str::to_owned))
        .collect();
    claimed.sort();
    let mut expected = pool.clone();
    expected.sort();
    assert_eq!(claimed, expected, "each pool database went to exactly one tenant");
    for slug in &slugs {
        tenant_works(&env, slug).await;
    }
    for name in &pool {
        assert!(
            !database_exists(name).await,
            "{name} still exists under its pool name"
        );
    }
    // The claims are forgotten; the catalog's mirror of each claimed tenant's migrations is whole.
    assert!(ctx.catalog.warm_databases(server.id).await.unwrap().is_empty());
    let mirrored: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM tenants t LEFT JOIN tenant_migrations m ON m.tenant_id = t.id GROUP BY t.id",
    )
    .fetch_all(ctx.catalog.pool())
    .await
    .unwrap();
    assert_eq!(
        mirrored,
        vec![1; 8],
        "every tenant's applied migration is in the catalog"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provision_killed_after_its_claim_finishes_on_the_same_entry() {
    let env = TestEnv::new();
    let plain = env.job_context(FaultPoints::default()).await;
    let server = default_server(&plain).await;
    warm_pool::refill_server(&plain, &server, 2).await.unwrap();
    for point in ["provision.after_claim", "provision.after_claim_rename"] {
        let slug = TenantSlug::parse(&format!("crash-{}", point.len())).unwrap();
        let (faults, reached) = fail_once_at(point);
        let ctx = JobContext {
            faults,
            ..plain.clone()
        };
        assert!(
            provision::provision_tenant(&ctx, &slug, None).await.is_err(),
            "{point}"
        );
        // The entry is the tenant's now: the other one stays in the pool, untouched.
        let claimed: Vec<_> = plain
            .catalog
            .warm_databases(server.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.status == "claimed")
            .collect();
        assert_eq!(claimed.len(), 1, "{point}");
        let entry = claimed[0].database_name.clone();
        let outcome = provision::provision_tenant(&ctx, &slug, None).await.unwrap();
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 2, "{point}");
        assert_eq!(
            outcome.details["warm_pool"],
            entry.as_str(),
            "{point}: retried on another entry"
        );
        tenant_works(&env, slug.as_str()).await;
        assert!(!database_exists(&entry).await);
        // Refill tops the pool up again — once signups pause (2 s after the last claim),
        // not while they arrive.
        // (The claim's time is set to now, as a signup arriving right now would, so that
        // how long the steps above took on a loaded machine does not matter.)
        sqlx::query("UPDATE tenant_servers SET warm_claimed_at = now() WHERE id = $1")
            .bind(server.id)
            .execute(plain.catalog.pool())
            .await
            .unwrap();
        let busy = warm_pool::refill_server(&plain, &server, 2).await.unwrap();
        assert_eq!(busy.created, 0, "built while signups were arriving: {busy:?}");
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let quiet = warm_pool::refill_server(&plain, &server, 2).await.unwrap();
        assert_eq!(quiet.created, 1, "{quiet:?}");
        assert_eq!(ready_entries(&plain).await.len(), 2);
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_databases_follow_a_rollout_and_a_claimed_one_is_never_behind() {
    let env = TestEnv::new().with_migrations(&[]);
    let ctx = env.job_context(FaultPoints::default()).await;
    let server = default_server(&ctx).await;
    // One tenant (a rollout needs one), then a pool of two at version 1 — the server's own
    // size, so the worker started below keeps it too.
    provision::provision_tenant(&ctx, &TenantSlug::parse("first").unwrap(), None)
        .await
        .unwrap();
    ctx.catalog
        .set_server_warm_pool(server.id, Some(2))
        .await
        .unwrap();
    let server = default_server(&ctx).await;
    warm_pool::refill_server(&ctx, &server, 0).await.unwrap();
    assert!(ready_entries(&ctx)
        .await
        .iter()
        .all(|e| e.schema_version == Some(1)));

    std::fs::write(
        env.migrations_dir.as_ref().unwrap().join("2_notes.sql"),
        "CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL);",
    )
    .unwrap();
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["migrate", "--all", "--wait"]);
    // The next refill (the worker's or this one) migrates the pool to the new set.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        warm_pool::refill_server(&ctx, &server, 0).await.unwrap();
        let entries = ready_entries(&ctx).await;
        if entries.len() == 2 && entries.iter().all(|e| e.schema_version == Some(2)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pool not at version 2: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let outcome = provision::provision_tenant(&ctx, &TenantSlug::parse("second").unwrap(), None)
        .await
        .unwrap();
    assert!(outcome.details["warm_pool"].is_string(), "{}", outcome.details);
    assert_eq!(outcome.details["schema_version"], 2);
    let mut conn = tenant_conn(&env, "second").await;
    assert!(table_names(&mut conn).await.contains(&"notes".to_owned()));
    // The catalog's mirror of the claimed tenant's migrations is what its database holds.
    let held: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM _pgfleet_migrations ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mirrored: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT m.version, m.checksum FROM tenant_migrations m JOIN tenants t ON t.id = m.tenant_id
          WHERE t.slug = 'second' ORDER BY 1",
    )
    .fetch_all(ctx.catalog.pool())
    .await
    .unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!(mirrored, held);
    conn.close().await.unwrap();
    env.cleanup().await;
}

/// A server's `warm_pool` in `server list --json`.
fn pool_of(env: &TestEnv, server: &str) -> serde_json::Value {
    let out = cli_ok(env, &["server", "list", "--json"]);
    let servers: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let server = servers.iter().find(|s| s["name"] == server).expect("the server");
    server["warm_pool"].clone()
}

/// Waits until the default server's pool has `want_ready` ready entries and none being built.
async fn wait_for_pool(env: &TestEnv, want_ready: i64) -> serde_json::Value {
    wait_for_pool_of(env, "default", want_ready).await
}

async fn wait_for_pool_of(env: &TestEnv, server: &str, want_ready: i64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pool = pool_of(env, server);
        if pool["ready"] == want_ready && pool["building"] == 0 {
            return pool;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pool never reached {want_ready}: {pool}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_the_pool_at_its_size_and_empties_it_at_zero() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let _worker = env.spawn_worker("w", &[], &[("PGFLEET_WARM_POOL", "2")]).await;
    let pool = wait_for_pool(&env, 2).await;
    assert_eq!(pool["size"], 2);
    assert!(pool["short_since"].is_null(), "{pool}");

    // A signup takes one; the pool is topped up again.
    let job: serde_json::Value =
        serde_json::from_str(&cli_ok(&env, &["tenant", "create", "warm", "--wait", "--json"])).unwrap();
    assert!(job["outcome"]["details"]["warm_pool"].is_string(), "{job}");
    tenant_works(&env, "warm").await;
    wait_for_pool(&env, 2).await;

    // This server's own size wins over the worker's: 0 empties it.
    cli_ok(&env, &["server", "set", "default", "--warm-pool", "0"]);
    let pool = wait_for_pool(&env, 0).await;
    assert_eq!(pool["size"], 0);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1")
        .bind(format!("{}\\_pool\\_%", env.namespace))
        .fetch_one(&mut admin().await)
        .await
        .unwrap();
    assert_eq!(left, 0, "pool databases left on the server");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM warm_databases")
        .fetch_one(catalog.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);

    // A server with a pool is not removed until draining has emptied it.
    // (Its size set over the API this time.)
    cli_ok(&env, &["server", "add", "second", SECOND_URL]);
    let (_api, base) = env.spawn_api("api").await;
    let patched: serde_json::Value = http(Some(API_TOKEN))
        .patch(format!("{base}/v1/servers/second"))
        .json(&serde_json::json!({"warm_pool": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(patched["warm_pool"].is_object(), "{patched}");
    wait_for_pool_of(&env, "second", 1).await;
    let (ok, _, err) = env.run_cli(&["server", "remove", "second"]);
    assert!(!ok && err.contains("warm pool databases"), "{err}");
    cli_ok(&env, &["server", "drain", "second"]);
    wait_for_pool_of(&env, "second", 0).await;
    cli_ok(&env, &["server", "remove", "second"]);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1")
        .bind(format!("{}\\_pool\\_%", env.namespace))
        .fetch_one(&mut second_db("postgres").await)
        .await
        .unwrap();
    assert_eq!(left, 0, "pool databases left on the drained server");
    env.cleanup().await;
}
