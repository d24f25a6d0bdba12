//! The HTTP API (`pgfleet serve`, and `pgfleet up`) against the real binary, catalog,
//! broker and workers: authentication, validation, jobs tracked to their end, metrics.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

async fn get_json(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> (StatusCode, Value) {
    let response = client.post(url).json(body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `GET /v1/jobs/{id}` until the job ends; returns it.
async fn wait_job_over_http(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, job) = get_json(client, &format!("{base}/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if ["succeeded", "failed", "dead"].contains(&job["status"].as_str().unwrap()) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

fn schema_keys(openapi: &Value, schema: &str) -> BTreeSet<String> {
    keys(&openapi["components"]["schemas"][schema]["properties"])
}

#[tokio::test]
async fn v1_needs_the_right_bearer_token_and_probes_do_not() {
    let env = TestEnv::new();
    let (api, base) = env.spawn_api("api").await;

    let anonymous = http(None);
    let response = anonymous.get(format!("{base}/v1/tenants")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("missing bearer token"),
        "{body}"
    );

    for wrong in [
        "nope",
        &API_TOKEN[..API_TOKEN.len() - 1],
        &format!("{API_TOKEN}x"),
    ] {
        let (status, body) = get_json(&http(Some(wrong)), &format!("{base}/v1/tenants")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "token {wrong:?}");
        assert_eq!(body["error"], "invalid bearer token");
    }
    // Not a bearer token at all.
    let response = anonymous
        .get(format!("{base}/v1/jobs"))
        .header("authorization", format!("Basic {API_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (status, body) = get_json(&http(Some(API_TOKEN)), &format!("{base}/v1/tenants")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([]));

    // Probes, metrics and the API description need no token.
    let (status, body) = get_json(&anonymous, &format!("{base}/healthz")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = get_json(&anonymous, &format!("{base}/readyz")).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"catalog": "ok", "broker": "ok"}))
    );
    let (status, openapi) = get_json(&anonymous, &format!("{base}/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(openapi["openapi"], "3.1.0");
    let paths = keys(&openapi["paths"]);
    for path in [
        "/v1/tenants",
        "/v1/tenants/{slug}",
        "/v1/tenants/{slug}/backups",
        "/v1/migrations",
        "/v1/rollouts/{id}",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains(path), "openapi.json lacks {path}");
    }

    // The token never reaches the log.
    assert!(!api.log().contains(API_TOKEN), "the API token is in the log");
    drop(api);
    env.cleanup().await;
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_token() {
    let env = TestEnv::new();
    let (ok, _, err) = env.run_cli(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(
        err.contains("PGFLEET_API_TOKEN") && err.contains("--insecure-dev"),
        "{err}"
    );

    let out = env
        .pgfleet()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("PGFLEET_API_TOKEN", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("too short"), "{err}");
    env.cleanup().await;
}

#[tokio::test]
async fn bad_input_gets_a_json_400_and_records_nothing() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let (_api, base) = env.spawn_api("api").await;
    let client = http(Some(API_TOKEN));
    let tenants = format!("{base}/v1/tenants");

    let hostile = [
        json!({"slug": "acme'; DROP TABLE tenants; --"}),
        json!({"slug": "../../etc/passwd"}),
        json!({"slug": "Acme"}),
        json!({"slug": "a\u{0}b-tenant"}),
        json!({"slug": ""}),
        json!({}),
        json!({"slug": 42}),
        json!({"slug": "good-slug", "region": "eu west; DROP"}),
        json!({"slug": "good-slug", "regoin": "eu-1"}),
        json!({"slug": "good-slug", "key": ""}),
    ];
    for body in &hostile {
        let (status, answer) = post_json(&client, &tenants, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
    let (_, answer) = post_json(&client, &tenants, &hostile[0]).await;
    assert!(
        answer["error"].as_str().unwrap().contains("invalid tenant slug"),
        "{answer}"
    );
    let (_, answer) = post_json(&client, &tenants, &hostile[8]).await;
    assert!(
        answer["error"].as_str().unwrap().contains("unknown field"),
        "{answer}"
    );

    // Malformed JSON.
    for raw in ["{\"slug\": ", "not json", "[1, 2]"] {
        let response = client.post(&tenants).body(raw).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{raw}");
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["error"].as_str().unwrap().contains("malformed JSON"),
            "{answer}"
        );
    }

    // An oversized body is refused before it is read whole.
    let huge = json!({"slug": "big-tenant", "key": "k".repeat(100 * 1024)});
    let (status, answer) = post_json(&client, &tenants, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        answer["error"].as_str().unwrap().contains("larger than"),
        "{answer}"
    );

    // Paths: hostile slugs, bad ids, unknown things.
    let (status, answer) = get_json(&client, &format!("{tenants}/acme%27%3B%20DROP")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, _) = post_json(&client, &format!("{tenants}/UPPER/backups"), &json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, answer) = get_json(&client, &format!("{tenants}/no-such-tenant")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"], "no tenant no-such-tenant");
    let (status, _) = post_json(&client, &format!("{tenants}/no-such-tenant/backups"), &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = get_json(&client, &format!("{base}/v1/jobs/not-a-uuid")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, _) = get_json(&client, &format!("{base}/v1/jobs/{}", uuid::Uuid::nil())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get_json(&client, &format!("{base}/v1/jobs?status=bogus")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, answer) = get_json(&client, &format!("{base}/v1/jobs?limit=many")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"].as_str().unwrap().contains("invalid query"),
        "{answer}"
    );
    let (status, answer) = get_json(&client, &format!("{base}/v1/nothing-here")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(answer["error"].is_string());
    let response = client.delete(&tenants).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Nothing was recorded or created.
    assert!(catalog.jobs(None, None, None, 100).await.unwrap().is_empty());
    assert!(catalog.tenants().await.unwrap().is_empty());
    assert!(env.tenant_databases().await.is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn jobs_enqueued_over_http_are_tracked_to_succeeded() {
    let env = TestEnv::new().with_migrations(&[]);
    let (_api, base) = env.spawn_api("api").await;
    let _worker = env.spawn_worker("w1", &["--concurrency", "4"], &[]).await;
    let client = http(Some(API_TOKEN));

    // Provision: 202 with the job, where to follow it, and the same job for the same key.
    let response = client
        .post(format!("{base}/v1/tenants"))
        .header("idempotency-key", "signup-77")
        .json(&json!({"slug": "http-acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    let job_id = accepted["job_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/jobs/{job_id}"));
    assert_eq!(accepted["created"], true);
    assert_eq!(accepted["job"]["kind"], "provision");
    assert_eq!(accepted["job"]["key"], "signup-77");
    let (status, again) = post_json(
        &client,
        &format!("{base}/v1/tenants"),
        &json!({"slug": "http-acme", "key": "signup-77"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (again["job_id"].as_str().unwrap(), &again["created"]),
        (job_id.as_str(), &json!(false))
    );

    let job = wait_job_over_http(&client, &base, &job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");

    // The tenant, in the same JSON as the CLI's `--json`.
    let (status, tenant) = get_json(&client, &format!("{base}/v1/tenants/http-acme")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&tenant["status"], &tenant["schema_version"]),
        (&json!("active"), &json!(1))
    );
    let (ok, cli, err) = env.run_cli(&["tenant", "show", "http-acme", "--json"]);
    assert!(ok, "{err}");
    let cli: Value = serde_json::from_str(&cli).unwrap();
    assert_eq!(tenant, cli);
    let (ok, cli_job, _) = env.run_cli(&["jobs", "show", &job_id, "--json"]);
    assert!(ok);
    assert_eq!(job, serde_json::from_str::<Value>(&cli_job).unwrap());
    let (_, listed) = get_json(&client, &format!("{base}/v1/tenants?status=active")).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (_, listed) = get_json(&client, &format!("{base}/v1/tenants?status=deleted")).await;
    assert_eq!(listed, json!([]));

    // A backup.
    let (status, accepted) = post_json(
        &client,
        &format!("{base}/v1/tenants/http-acme/backups"),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let backup_job = wait_job_over_http(&client, &base, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(backup_job["status"], "succeeded", "{backup_job}");
    let (_, backups) = get_json(&client, &format!("{base}/v1/tenants/http-acme/backups")).await;
    let backups = backups.as_array().unwrap().clone();
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0]["status"], "succeeded");

    // A rollout of a migration added after the tenant was created (the API reads the
    // folder at each request): dry run, the real thing, then nothing left to do.
    std::fs::write(
        env.migrations_dir.as_ref().unwrap().join("2_add_tags.sql"),
        "ALTER TABLE projects ADD COLUMN tags text[] NOT NULL DEFAULT '{}';",
    )
    .unwrap();
    let (status, dry) = post_json(
        &client,
        &format!("{base}/v1/migrations"),
        &json!({"dry_run": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["rollout"], Value::Null);
    assert_eq!(dry["plan"]["to_migrate"][0]["tenant"], "http-acme");
    assert_eq!(dry["plan"]["target_version"], 2);
    let (status, started) = post_json(
        &client,
        &format!("{base}/v1/migrations"),
        &json!({"concurrency": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let rollout_id = started["rollout_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let rollout = loop {
        let (status, r) = get_json(&client, &format!("{base}/v1/rollouts/{rollout_id}")).await;
        assert_eq!(status, StatusCode::OK);
        if r["status"] != "running" {
            break r;
        }
        assert!(Instant::now() < deadline, "rollout did not end: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (&rollout["status"], &rollout["succeeded"]),
        (&json!("done"), &json!(1)),
        "{rollout}"
    );
    assert_eq!(rollout["per_tenant"][0]["schema_version"], 2);
    let (status, again) = post_json(&client, &format!("{base}/v1/migrations"), &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&again["rollout"], &again["plan"]["up_to_date"]),
        (&Value::Null, &json!(1))
    );

    let (_, jobs) = get_json(&client, &format!("{base}/v1/jobs?tenant=http-acme")).await;
    let kinds: BTreeSet<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["provision", "backup", "migrate"]));

    // The OpenAPI document names exactly the fields the API sends.
    let (_, openapi) = get_json(&http(None), &format!("{base}/openapi.json")).await;
    assert_eq!(schema_keys(&openapi, "Tenant"), keys(&tenant));
    assert_eq!(schema_keys(&openapi, "Job"), keys(&job));
    assert_eq!(schema_keys(&openapi, "Backup"), keys(&backups[0]));
    assert_eq!(schema_keys(&openapi, "Accepted"), keys(&accepted));
    let mut rollout_fields = keys(&rollout);
    rollout_fields.remove("per_tenant");
    assert_eq!(schema_keys(&openapi, "Rollout"), rollout_fields);
    env.cleanup().await;
}

/// The value of the one sample named `series` (name and labels, exactly).
pub(crate) fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(if value == "+Inf" {
            f64::INFINITY
        } else {
            value.parse().unwrap()
        })
    })
}

#[tokio::test]
async fn metrics_expose_fleet_series_that_move_with_jobs() {
    let env = TestEnv::new();
    let ns = env.namespace.clone();
    let (_api, base) = env.spawn_api("api").await;
    let mut worker = env.spawn_worker("w1", &["--concurrency", "2"], &[]).await;
    let client = http(Some(API_TOKEN));
    let metrics_url = format!("{base}/metrics");
    let scrape = || async {
        let response = http(None).get(&metrics_url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        response.text().await.unwrap()
    };

    let before = scrape().await;
    for line in before.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("pgfleet_"), "unprefixed series: {line}");
    }
    assert_eq!(sample(&before, "pgfleet_catalog_up"), Some(1.0));
    assert_eq!(sample(&before, "pgfleet_broker_up"), Some(1.0));
    assert_eq!(
        sample(&before, r#"pgfleet_jobs{kind="provision",status="succeeded"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&before, r#"pgfleet_jobs{kind="backup",status="dead"}"#),
        Some(0.0)
    );
    assert!(before.contains("# TYPE pgfleet_job_duration_seconds histogram"));
    let consumers = format!(r#"pgfleet_queue_consumers{{queue="{ns}.provision"}}"#);
    assert_eq!(sample(&before, &consumers), Some(1.0));

    // A tenant: provision counted, its duration observed, never backed up yet.
    let (_, accepted) = post_json(
        &client,
        &format!("{base}/v1/tenants"),
        &json!({"slug": "metered"}),
    )
    .await;
    let job = wait_job_over_http(&client, &base, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded");
    let after_provision = scrape().await;
    assert_eq!(
        sample(
            &after_provision,
            r#"pgfleet_jobs{kind="provision",status="succeeded"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after_provision,
            r#"pgfleet_job_duration_seconds_count{kind="provision"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after_provision,
            r#"pgfleet_job_duration_seconds_bucket{kind="provision",le="+Inf"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&after_provision, r#"pgfleet_tenants{status="active"}"#),
        Some(1.0)
    );
    let age = r#"pgfleet_backup_oldest_age_seconds{tenant="metered"}"#;
    assert_eq!(sample(&after_provision, age), Some(f64::INFINITY));
    assert_eq!(
        sample(&after_provision, "pgfleet_backup_never_tenants"),
        Some(1.0)
    );
    assert_eq!(
        sample(&after_provision, r#"pgfleet_backup_age_tenants{le="3600"}"#),
        Some(0.0)
    );

    // A backup: the age becomes a real, small number.
    let (_, accepted) = post_json(&client, &format!("{base}/v1/tenants/metered/backups"), &json!({})).await;
    let job = wait_job_over_http(&client, &base, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let after_backup = scrape().await;
    let seconds = sample(&after_backup, age).unwrap();
    assert!((0.0..60.0).contains(&seconds), "backup age {seconds}");
    assert_eq!(sample(&after_backup, "pgfleet_backup_never_tenants"), Some(0.0));
    assert_eq!(
        sample(&after_backup, r#"pgfleet_backup_age_tenants{le="3600"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&after_backup, r#"pgfleet_jobs{kind="backup",status="succeeded"}"#),
        Some(1.0)
    );

    // Queue depth: with no worker, published jobs wait in the queue.
    assert!(worker.terminate().success());
    env.publish_raw_many(
        "prune",
        &(0..3)
            .map(|i| format!(r#"{{"kind":"prune","tenant":"metered","key":"p{i}"}}"#).into_bytes())
            .collect::<Vec<_>>(),
    )
    .await;
    let idle = scrape().await;
    assert_eq!(
        sample(&idle, &format!(r#"pgfleet_queue_messages{{queue="{ns}.prune"}}"#)),
        Some(3.0)
    );
    assert_eq!(sample(&idle, &consumers), Some(0.0));
    env.cleanup().await;
}

#[tokio::test]
async fn up_runs_worker_scheduler_and_api_together() {
    let env = TestEnv::new();
    let up = env
        .spawn_process("up", &["up", "--listen", "127.0.0.1:0"], &[], "consuming")
        .await;
    up.wait_for_log("scheduler running", Duration::from_secs(30))
        .await;
    up.wait_for_log("listening on http://", Duration::from_secs(30))
        .await;
    let base = api_base_url(&up.log());

    // No token configured: `up` generated one into the data dir.
    let token = std::fs::read_to_string(env.dir.join("data").join("api.token")).unwrap();
    let token = token.trim();
    assert!(token.len() >= 32);
    let (status, _) = get_json(&http(None), &format!("{base}/v1/tenants")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let client = http(Some(token));
    let (status, accepted) = post_json(
        &client,
        &format!("{base}/v1/tenants"),
        &json!({"slug": "all-in-one"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let job = wait_job_over_http(&client, &base, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(!up.log().contains(token), "the generated token is in the log");
    // SIGTERM stops all three parts cleanly.
    let mut up = up;
    assert!(up.terminate().success(), "{}", up.log());
    assert!(up.log().contains("HTTP API stopped") && up.log().contains("scheduler stopped"));
    env.cleanup().await;
}

#[tokio::test]
async fn the_api_scheduler_and_read_commands_run_without_the_secret_key() {
    let env = TestEnv::new();
    let services = env.services().await;
    let _worker = env.spawn_worker("w1", &[], &[]).await;
    let (ok, _, err) = env.run_cli(&["tenant", "create", "keyless", "--wait"]);
    assert!(ok, "{err}");

    // Without PGFLEET_SECRET_KEY (and no key file): reads and enqueues work…
    let without_key = |args: &[&str]| {
        let out = env
            .pgfleet()
            .env_remove("PGFLEET_SECRET_KEY")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = without_key(&["tenant", "show", "keyless", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["status"], "active");
    let (ok, _, err) = without_key(&["backup", "keyless", "--wait"]);
    assert!(ok, "{err}");
    // …and what needs a credential says what is missing.
    let (ok, out, err) = without_key(&["tenant", "url", "keyless"]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("PGFLEET_SECRET_KEY"), "{err}");

    let mut api = env.pgfleet();
    api.env_remove("PGFLEET_SECRET_KEY")
        .env("PGFLEET_API_TOKEN", API_TOKEN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(env.dir.join("keyless-api.log")).unwrap());
    let api = WorkerProcess {
        child: api.spawn().unwrap(),
        log_path: env.dir.join("keyless-api.log"),
    };
    api.wait_for_log("listening on http://", Duration::from_secs(30))
        .await;
    let base = api_base_url(&api.log());
    let (status, tenant) = get_json(&http(Some(API_TOKEN)), &format!("{base}/v1/tenants/keyless")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tenant["status"], "active");
    drop(api);
    drop(services);
    env.cleanup().await;
}

#[tokio::test]
async fn tenants_are_listed_a_page_at_a_time() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    fake_tenants(&catalog, "paged", 5, "0 0 * * *").await;
    let (_api, base) = env.spawn_api("api").await;
    let client = http(Some(API_TOKEN));

    let mut url = format!("{base}/v1/tenants?limit=2");
    let mut pages = Vec::new();
    loop {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let next = response
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let page: Vec<Value> = response.json().await.unwrap();
        pages.push(
            page.iter()
                .map(|t| t["slug"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>(),
        );
        let Some(next) = next else { break };
        let path = next.trim_start_matches('<').split('>').next().unwrap().to_owned();
        assert!(next.ends_with(r#"rel="next""#), "{next}");
        url = format!("{base}{path}");
    }
    assert_eq!(
        pages,
        [
            vec!["paged-1", "paged-2"],
            vec!["paged-3", "paged-4"],
            vec!["paged-5"]
        ]
    );
    let (status, _) = get_json(&client, &format!("{base}/v1/tenants?after=NOT%20A%20SLUG")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get_json(&client, &format!("{base}/v1/tenants?status=bogus")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    env.cleanup().await;
}

#[tokio::test]
async fn without_the_broker_the_api_is_not_ready_but_loses_no_job() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    // A broker address nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let api = env
        .spawn_process(
            "api",
            &["serve", "--listen", "127.0.0.1:0"],
            &[
                ("PGFLEET_API_TOKEN", API_TOKEN),
                (
                    "PGFLEET_AMQP_URL",
                    &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
                ),
            ],
            "listening on http://",
        )
        .await;
    let base = api_base_url(&api.log());
    let (status, body) = get_json(&http(None), &format!("{base}/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"catalog": "ok", "broker": "unreachable"}));
    let metrics = http(None)
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("pgfleet_broker_up 0") && metrics.contains("pgfleet_catalog_up 1"),
        "{metrics}"
    );

    // The signup is accepted and recorded, marked for a worker's sweep to publish.
    let (status, accepted) = post_json(
        &http(Some(API_TOKEN)),
        &format!("{base}/v1/tenants"),
        &json!({"slug": "while-down"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(
        (&accepted["created"], &accepted["published"]),
        (&json!(true), &json!(false))
    );
    let job = catalog
        .job(accepted["job_id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.status, JobStatus::Queued);

    // A worker (with the real broker) finds it through its sweep and provisions the tenant.
    let _worker = env.spawn_worker("w", &[], &[]).await;
    let tenant = env
        .wait_tenant_active(&catalog, "while-down", Duration::from_secs(60))
        .await;
    assert_eq!(tenant.schema_version, Some(1));
    drop(api);
    env.cleanup().await;
}
