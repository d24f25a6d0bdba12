//! TLS to Postgres: URLs that ask for it (`sslmode=require`) get encrypted catalog, admin
//! and tenant connections; loopback URLs that say nothing get none (pgfleet's default).
//! The local server has `ssl = on` (Debian's snakeoil certificate).

use crate::support::*;
use pgfleet_shared::jobs::{provision, FaultPoints};
use pgfleet_shared::secrets::SecretKey;
use pgfleet_shared::services::Services;
use pgfleet_shared::TenantSlug;
use secrecy::ExposeSecret;
use sqlx::PgConnection;

async fn uses_tls(conn: &mut PgConnection) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn connections_are_encrypted_when_the_urls_require_it() {
    let env = TestEnv::new();
    let mut config = env.config();
    config.catalog_url = format!("{}?sslmode=require", env.catalog_url).into();
    config.server_url = Some(format!("{ADMIN_URL}?sslmode=require").into());
    let services = Services::open(&config, SecretKey::parse(&env.secret_key).unwrap(), 4)
        .await
        .unwrap();
    let server = services
        .catalog
        .ensure_default_server(config.server_url.as_ref())
        .await
        .unwrap()
        .expect("a fresh catalog is seeded with the default server");
    let (migrations, _) = pgfleet_shared::migration_set::MigrationSet::load(None).unwrap();
    let ctx = services
        .job_context(&config, migrations, FaultPoints::default())
        .await
        .unwrap();
    let slug = TenantSlug::parse("encrypted").unwrap();
    provision::provision_tenant(&ctx, &slug, None).await.unwrap();

    let mut catalog_conn = services.catalog.pool().acquire().await.unwrap();
    assert!(uses_tls(&mut catalog_conn).await, "catalog connection");
    let admin = services.servers.admin_pool(server.id).await.unwrap();
    assert!(
        uses_tls(&mut admin.acquire().await.unwrap()).await,
        "admin connection"
    );
    let tenant = services.catalog.tenant(&slug).await.unwrap().unwrap();
    let mut tenant_conn = services.servers.connect_as_tenant(&tenant).await.unwrap();
    assert!(uses_tls(&mut tenant_conn).await, "tenant connection");
    // The URL `tenant url` prints keeps the server's sslmode.
    let url = services.servers.tenant_url(&tenant, false).await.unwrap();
    assert!(url.expose_secret().contains("sslmode=require"));

    // pg_dump gets the same mode: a backup over TLS succeeds.
    let backup_job = claim_backup(&services.catalog, &slug, "tls-backup").await;
    let outcome = pgfleet_shared::jobs::run(&ctx, &backup_job).await.unwrap();
    assert_eq!(outcome.summary, "backed up", "{outcome:?}");

    // Loopback URLs without sslmode: no TLS (nothing to protect on loopback).
    let plain = env.services().await;
    assert!(!uses_tls(&mut plain.catalog.pool().acquire().await.unwrap()).await);
    drop((catalog_conn, tenant_conn));
    env.cleanup().await;
}
