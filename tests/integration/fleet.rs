//! Rules the CLI and the API share through the fleet service, and how the runtime treats a
//! catalog outage: decided once, in the library, whichever adapter asks.

use crate::support::*;
use pgfleet_shared::jobs::{provision, FaultPoints};
use pgfleet_shared::worker::{disposition, Disposition};
use pgfleet_shared::TenantSlug;
use std::time::Duration;

#[tokio::test]
async fn the_cli_refuses_to_back_up_a_tenant_that_is_not_active() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    fake_tenants(&catalog, "idle", 3, "0 0 * * *").await;
    sqlx::query("UPDATE tenants SET status = 'deleted' WHERE slug = 'idle-1'")
        .execute(catalog.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE tenants SET status = 'provisioning' WHERE slug = 'idle-2'")
        .execute(catalog.pool())
        .await
        .unwrap();
    for slug in ["idle-1", "idle-2"] {
        let (ok, _, err) = env.run_cli(&["backup", slug]);
        assert!(!ok, "a backup of {slug} was accepted");
        assert!(err.contains("only active tenants are backed up"), "{err}");
    }
    let (ok, _, err) = env.run_cli(&["backup", "no-such-tenant"]);
    assert!(!ok && err.contains("no tenant no-such-tenant"), "{err}");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(catalog.pool())
        .await
        .unwrap();
    assert_eq!(jobs, 0, "nothing was enqueued");

    // `--all` takes the active ones only.
    let (ok, out, err) = env.run_cli(&["backup", "--all", "--json"]);
    assert!(ok, "{err}");
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (job["kind"].as_str(), job["tenant"].as_str()),
        (Some("backup"), Some("idle-3")),
        "{job}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_provision_during_a_catalog_blip_is_retried_not_failed() {
    let mut env = TestEnv::new();
    env.catalog().await; // created and migrated through the real port first
    let proxy = std::sync::Arc::new(TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await);
    env.catalog_url = format!(
        "postgres://postgres@127.0.0.1:{}/{}_catalog",
        proxy.port, env.namespace
    );
    // The catalog goes away exactly when the provision is about to place the tenant.
    let cut_at = proxy.clone();
    let faults = FaultPoints::new(move |point, _| {
        if point == "provision.before_placement" {
            cut_at.cut();
        }
        Ok(())
    });
    let ctx = env.job_context(faults).await;
    let slug = TenantSlug::parse("blipped").unwrap();
    let err = provision::provision_tenant(&ctx, &slug, None)
        .await
        .expect_err("the catalog was unreachable");
    assert!(
        !err.is_permanent(),
        "a catalog outage failed the signup for good: {err}"
    );
    assert!(
        matches!(
            disposition(Err(err), 1, 5, Duration::from_secs(2)),
            Disposition::Retry { .. }
        ),
        "the runtime would not retry it"
    );

    // Once the catalog is back, the retry provisions the tenant.
    proxy.restore();
    let ctx = env.job_context(FaultPoints::default()).await;
    provision::provision_tenant(&ctx, &slug, None).await.unwrap();
    env.wait_tenant_active(&ctx.catalog, "blipped", Duration::from_secs(5))
        .await;
    env.cleanup().await;
}
