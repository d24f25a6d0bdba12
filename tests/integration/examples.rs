//! The publishing examples in `examples/`, run as they are (the way a user would) against
//! the local RabbitMQ: each publishes a signup that a worker turns into an active tenant.
//! `.ci/run` installs their libraries (pika, amqplib).

use crate::support::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Runs an example program with the test's namespace; panics with its output if it fails.
fn run_example(env: &TestEnv, program: &str, script: &str, tenant: &str, hint: &str) {
    let out = Command::new(program)
        .arg(examples_dir().join(script))
        .env("PGFLEET_NAMESPACE", &env.namespace)
        .env("PGFLEET_AMQP_URL", AMQP_URL)
        .env("TENANT", tenant)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} ({hint})"));
    assert!(
        out.status.success(),
        "{script} failed ({hint}):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn python_signup(env: &TestEnv, tenant: &str) {
    run_example(
        env,
        "python3",
        "python/publish_signup.py",
        tenant,
        "pip install pika",
    );
}

#[tokio::test]
async fn python_and_node_signups_become_active_tenants() {
    let env = TestEnv::new();
    let services = env.services().await;
    let _worker = env.spawn_worker("w1", &["--concurrency", "2"], &[]).await;

    python_signup(&env, "from-python");
    run_example(
        &env,
        "node",
        "node/publish_signup.js",
        "from-node",
        "npm ci --prefix examples/node",
    );
    for slug in ["from-python", "from-node"] {
        let tenant = env
            .wait_tenant_active(&services.catalog, slug, Duration::from_secs(60))
            .await;
        assert_eq!(tenant.schema_version, Some(1));
        // The tenant turns active just before its job's outcome is recorded: wait for it.
        let job = env
            .wait_job(
                &services.catalog,
                &format!("signup-{slug}"),
                "succeeded",
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(job.status, JobStatus::Succeeded);
    }

    // A retried signup (same key) is the same job, done once.
    python_signup(&env, "from-python");
    // A later signup, published after it, being done means the duplicate was handled.
    python_signup(&env, "after-retry");
    env.wait_tenant_active(&services.catalog, "after-retry", Duration::from_secs(60))
        .await;
    let jobs = services
        .catalog
        .jobs(None, Some("from-python"), None, 10)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].attempts, 1);
    env.cleanup().await;
}
