//! Provisioning a tenant end to end: from a plain AMQP signup to a database its own role
//! can use, isolated from other tenants, done once however often it is asked.

use crate::support::*;
use pgfleet_shared::jobs::{provision, FaultPoints};
use pgfleet_shared::TenantSlug;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn signup_published_as_plain_amqp_json_becomes_an_active_tenant() {
    let env = TestEnv::new();
    let services = env.services().await;
    let _worker = env.spawn_worker("w1", &["--concurrency", "4"], &[]).await;

    env.publish_raw(
        "provision",
        br#"{"kind": "provision", "tenant": "acme-corp", "key": "signup-8841"}"#,
    )
    .await;
    let tenant = env
        .wait_tenant_active(&services.catalog, "acme-corp", Duration::from_secs(60))
        .await;
    assert_eq!(tenant.schema_version, Some(1));

    // The URL `pgfleet tenant url` prints works for the tenant's own role.
    let (ok, url, err) = env.run_cli(&["tenant", "url", "acme-corp"]);
    assert!(ok, "{err}");
    let mut conn = sqlx::PgConnection::connect(url.trim())
        .await
        .expect("tenant URL connects");
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(user, tenant.role_name);
    let tables = table_names(&mut conn).await;
    for t in ["users", "projects", "tasks", "_pgfleet_migrations"] {
        assert!(tables.contains(&t.to_owned()), "{t} missing from {tables:?}");
    }
    // The tenant can use its schema.
    sqlx::raw_sql("INSERT INTO users (username, email, password_hash) VALUES ('a', 'a@x', 'h')")
        .execute(&mut conn)
        .await
        .unwrap();

    let (ok, json, _) = env.run_cli(&["tenant", "show", "acme-corp", "--json"]);
    assert!(ok);
    let shown: serde_json::Value = serde_json::from_str(&json).unwrap();
    for field in [
        "slug",
        "status",
        "database",
        "server",
        "region",
        "schema_version",
        "created_at",
    ] {
        assert!(shown.get(field).is_some(), "tenant JSON lacks {field}: {shown}");
    }
    assert_eq!(shown["status"], "active");
    let (ok, json, _) = env.run_cli(&["jobs", "list", "--json"]);
    assert!(ok);
    let jobs: serde_json::Value = serde_json::from_str(&json).unwrap();
    let job = &jobs[0];
    for field in [
        "id",
        "kind",
        "tenant",
        "status",
        "attempts",
        "error",
        "created_at",
        "finished_at",
    ] {
        assert!(job.get(field).is_some(), "job JSON lacks {field}: {job}");
    }
    assert_eq!(job["status"], "succeeded");
    drop(conn);
    env.cleanup().await;
}

use sqlx::Connection as _;

#[tokio::test]
async fn a_tenant_role_cannot_connect_to_another_tenants_database() {
    let env = TestEnv::new();
    let ctx = env.job_context(FaultPoints::default()).await;
    let services = env.services().await;
    for slug in ["alpha", "bravo"] {
        provision::provision_tenant(&ctx, &TenantSlug::parse(slug).unwrap(), None)
            .await
            .unwrap();
    }
    let alpha = services
        .catalog
        .tenant(&TenantSlug::parse("alpha").unwrap())
        .await
        .unwrap()
        .unwrap();
    let bravo = services
        .catalog
        .tenant(&TenantSlug::parse("bravo").unwrap())
        .await
        .unwrap()
        .unwrap();

    connect_as(&services, &alpha, &alpha.database_name)
        .await
        .expect("alpha reaches its own database");
    let err = connect_as(&services, &alpha, &bravo.database_name)
        .await
        .expect_err("alpha must not reach bravo's database")
        .to_string();
    assert!(err.contains("permission denied for database"), "{err}");
    // Not even through the maintenance database's PUBLIC default.
    let mut admin = admin().await;
    let public_connect: bool = sqlx::query_scalar("SELECT has_database_privilege($1, $2, 'CONNECT')")
        .bind(&alpha.role_name)
        .bind(&bravo.database_name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(!public_connect);
    drop(admin);
    env.cleanup().await;
}

#[tokio::test]
async fn repeated_signups_and_replayed_handlers_provision_once() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let _worker = env.spawn_worker("w1", &["--concurrency", "4"], &[]).await;

    let body = br#"{"kind":"provision","tenant":"dup-co","key":"signup-dup-1"}"#.to_vec();
    env.publish_raw_many("provision", &[body.clone(), body.clone(), body])
        .await;
    let job = env
        .wait_job(&catalog, "signup-dup-1", "succeeded", Duration::from_secs(60))
        .await;
    // Give the two duplicate deliveries time to be seen (and recognised) by the worker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jobs = catalog.jobs(None, Some("dup-co"), None, 100).await.unwrap();
    assert_eq!(jobs.len(), 1, "one job for three deliveries: {jobs:?}");
    assert_eq!(jobs[0].id, job.id);
    assert_eq!(jobs[0].attempts, 1);
    assert_eq!(
        env.tenant_databases().await,
        [format!("{}_dup-co", env.namespace)]
    );
    assert_eq!(env.tenant_roles().await, [format!("{}_dup-co", env.namespace)]);

    // The handler itself, twice more in a row: nothing changes, it says so.
    let ctx = env.job_context(FaultPoints::default()).await;
    let slug = TenantSlug::parse("dup-co").unwrap();
    for _ in 0..2 {
        let outcome = provision::provision_tenant(&ctx, &slug, None).await.unwrap();
        assert_eq!(outcome.summary, "already active", "{outcome:?}");
    }
    assert_eq!(env.tenant_databases().await.len(), 1);
    assert_eq!(env.tenant_roles().await.len(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn a_provision_interrupted_after_the_role_exists_completes_on_retry() {
    let env = TestEnv::new();
    let (faults, failures) = fail_once_at("provision.after_role");
    let ctx = env.job_context(faults).await;
    let slug = TenantSlug::parse("half-done").unwrap();

    let first = provision::provision_tenant(&ctx, &slug, None).await;
    assert!(first.is_err());
    assert_eq!(
        env.tenant_roles().await.len(),
        1,
        "the role was created before the fault"
    );
    assert!(env.tenant_databases().await.is_empty(), "the database was not");
    let tenant = ctx.catalog.tenant(&slug).await.unwrap().unwrap();
    assert_eq!(tenant.status, TenantStatus::Provisioning);

    let second = provision::provision_tenant(&ctx, &slug, None).await.unwrap();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        2,
        "the fault point was passed again"
    );
    assert_eq!(second.summary, "provisioned");
    assert_eq!(
        second.details["role_changes"],
        serde_json::Value::Null,
        "the role was reused as is"
    );
    assert_eq!(second.details["database_created"], true);
    let tenant = ctx.catalog.tenant(&slug).await.unwrap().unwrap();
    assert_eq!(tenant.status, TenantStatus::Active);
    let services = env.services().await;
    let mut conn = connect_as(&services, &tenant, &tenant.database_name)
        .await
        .unwrap();
    assert!(table_names(&mut conn).await.contains(&"tasks".to_owned()));
    drop(conn);
    env.cleanup().await;
}
