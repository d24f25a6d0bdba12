//! The web console, in a real headless Chromium (WebDriver) against the real binary,
//! catalog and broker: an operator signs in, sees the fleet, backs a tenant up from its
//! page and watches the job finish without reloading, retries a dead job, and opens a
//! hostile dead letter that must not run. Then, over plain HTTP, the walls: no POST without
//! a session, a CSRF token, this site's Origin and an admin role.
//!
//! Screenshots of every page visited are kept under `target/tmp/console/<test>/` when a
//! test fails; a passing test keeps the overview's.

use crate::browser::Browser;
use crate::support::*;
use std::path::PathBuf;
use std::time::Duration;

const VIEWER_TOKEN: &str = "viewer-token-7e1d-long-enough-to-pass";

fn shots(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("console")
        .join(test)
}

async fn spawn_console(env: &TestEnv) -> (WorkerProcess, String) {
    let api = env
        .spawn_process(
            "api",
            &["serve", "--listen", "127.0.0.1:0"],
            &[
                ("PGFLEET_API_TOKEN", API_TOKEN),
                ("PGFLEET_CONSOLE_VIEWER_TOKEN", VIEWER_TOKEN),
            ],
            "listening on http://",
        )
        .await;
    let base = api_base_url(&api.log());
    (api, base)
}

/// Visible text of the page's main element.
async fn main_text(b: &Browser) -> String {
    b.text("main").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_sees_the_fleet_and_acts_on_it_live() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "acme", "--wait"]);
    let (_api, base) = spawn_console(&env).await;
    let b = Browser::start(shots("operator")).await;

    // Not signed in: the sign-in page; a wrong token is refused.
    b.goto(&format!("{base}/console/tenants/acme")).await;
    assert!(b.url().await.contains("/console/login"), "{}", b.url().await);
    b.type_into("#token", "not-the-token-but-long-enough").await;
    b.click("button[type=submit]").await;
    assert!(b.text("#sign-in-error").await.contains("not valid"));
    b.type_into("#token", API_TOKEN).await;
    b.type_into("#operator", "Ada <b>Lovelace</b>").await;
    b.click("button[type=submit]").await;
    // Back where the operator was going, signed in under the name given (escaped).
    assert!(
        b.url().await.ends_with("/console/tenants/acme"),
        "{}",
        b.url().await
    );
    assert!(b
        .text("header .who")
        .await
        .contains("Ada <b>Lovelace</b> · admin"));
    let cookies = b.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "pgfleet_console")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    assert_eq!(session["secure"], false, "plain http: no Secure flag");

    // The overview: the tenant counted, the queues with their consumers.
    b.goto(&format!("{base}/console")).await;
    let overview = main_text(&b).await;
    assert!(
        overview.contains("Tenants") && overview.contains("active"),
        "{overview}"
    );
    assert!(
        overview.contains("Queues") && overview.contains("dead"),
        "{overview}"
    );
    assert!(b
        .source()
        .await
        .contains(&format!("title=\"{}.backup\"", env.namespace)));
    assert!(overview.contains("Jobs in the last hour"), "{overview}");
    b.screenshot("overview").await;

    // The tenant list's search finds it.
    b.goto(&format!("{base}/console/tenants?q=cm")).await;
    b.click("a[href='/console/tenants/acme']").await;
    assert!(main_text(&b).await.contains("Tenant acme"));

    // Back it up from its page with no worker running: the job waits, queued.
    drop(worker);
    b.click("a.button[href*='tenant-backup']").await;
    b.page_shot().await;
    assert!(b.text("#confirm-text").await.contains("Back up tenant acme now"));
    b.click("#confirm").await;
    b.page_shot().await;
    assert!(b.url().await.contains("/console/tenants/acme?notice="));
    let notice = b.text(".notice").await;
    assert!(notice.contains("Done: queued backup job"), "{notice}");
    let backup_row =
        "[...document.querySelectorAll('#tenant-jobs tr')].find(r => r.textContent.includes('backup'))";
    b.wait_until(
        &format!("{backup_row}?.textContent.includes('queued')"),
        Duration::from_secs(10),
        "backup queued",
    )
    .await;
    // A worker comes back; the page follows the job to `succeeded` without a reload.
    b.eval("window.__same_page = 'yes'; return 1;").await;
    let worker = env.spawn_worker("w2", &[], &[]).await;
    b.wait_until(
        &format!("{backup_row}?.textContent.includes('succeeded')"),
        Duration::from_secs(60),
        "backup succeeded live",
    )
    .await;
    b.wait_until(
        "document.querySelector('#tenant-backups').textContent.includes('succeeded')",
        Duration::from_secs(20),
        "backup listed",
    )
    .await;
    assert_eq!(
        b.eval("return window.__same_page;").await,
        "yes",
        "the page was reloaded"
    );
    assert!(b.text("#live-status").await.contains("Live"));

    // A hidden tab polls nothing; shown again, it catches up.
    let refreshes =
        "return performance.getEntriesByType('resource').filter(e => e.initiatorType === 'fetch').length;";
    let set_visibility = |state: &str| {
        format!(
            "Object.defineProperty(document, 'visibilityState', {{configurable: true, get: () => '{state}'}});
             document.dispatchEvent(new Event('visibilitychange')); return 1;"
        )
    };
    b.eval(&set_visibility("hidden")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hidden_at = b.eval(refreshes).await.as_u64().unwrap();
    assert!(hidden_at > 0, "the page never refreshed itself");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        b.eval(refreshes).await.as_u64().unwrap(),
        hidden_at,
        "a hidden tab kept polling"
    );
    assert!(b.text("#live-status").await.contains("paused"));
    b.eval(&set_visibility("visible")).await;
    b.wait_until(
        &format!("(function() {{ {refreshes} }})() > {hidden_at}"),
        Duration::from_secs(5),
        "polling resumed",
    )
    .await;

    // A dead job (its worker died on its last attempt): retried from its page.
    let dead_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (id, idempotency_key, kind, tenant, payload, status, attempts, max_attempts, error)
         VALUES ($1, 'key:console-dead', 'backup', 'acme', '{\"kind\": \"backup\"}', 'queued', 5, 5,
                 'interrupted: its worker stopped')",
    )
    .bind(dead_id)
    .execute(catalog.pool())
    .await
    .unwrap();
    env.wait_job(&catalog, "console-dead", "dead", Duration::from_secs(60))
        .await;
    b.goto(&format!("{base}/console/jobs?status=dead")).await;
    b.click(&format!("a[href='/console/jobs/{dead_id}']")).await;
    assert!(b.text("#job-facts").await.contains("dead"));
    b.click("a.button[href*='job-retry']").await;
    assert!(b.text("#confirm-text").await.contains(&dead_id.to_string()));
    b.click("#confirm").await;
    b.page_shot().await;
    let notice = b.text(".notice").await;
    assert!(notice.contains(&format!("to retry job {dead_id}")), "{notice}");
    b.wait_until(
        "document.querySelector('#job-facts .job-status').textContent.includes('succeeded')",
        Duration::from_secs(60),
        "retry succeeded live",
    )
    .await;
    let retried: String = sqlx::query_scalar("SELECT status FROM jobs WHERE idempotency_key = $1")
        .bind(format!("retry:{dead_id}"))
        .fetch_one(catalog.pool())
        .await
        .unwrap();
    assert_eq!(retried, "succeeded");

    // A hostile message: dead-lettered, shown as text, nothing of it runs.
    let hostile = r#"<script>window.__pwned=1;alert(1)</script><img src=x onerror="window.__pwned=2;alert(2)"><b>bold</b>"#;
    env.publish_raw("backup", hostile.as_bytes()).await;
    // (The dead job above has a dead letter of its own: find this one by its body.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let letter: uuid::Uuid = loop {
        let found: Option<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM dead_letters WHERE body = $1")
            .bind(hostile.as_bytes())
            .fetch_optional(catalog.pool())
            .await
            .unwrap();
        if let Some(id) = found {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hostile message was not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    b.goto(&format!("{base}/console/dead-letters")).await;
    b.click(&format!("a[href='/console/dead-letters/{letter}']"))
        .await;
    b.page_shot().await;
    assert_eq!(b.text("#dead-letter-body").await, hostile);
    assert!(!b.text("#dead-letter-reason").await.is_empty());
    assert_eq!(b.eval("return typeof window.__pwned;").await, "undefined");
    assert_eq!(
        b.eval("return document.querySelectorAll('#dead-letter-body *').length;")
            .await,
        0
    );
    assert_eq!(b.alert().await, None, "a dialog opened: script ran");
    assert!(b.source().await.contains("&lt;script&gt;"));

    // Every action is on record, with who did it.
    b.goto(&format!("{base}/console/activity")).await;
    let activity = main_text(&b).await;
    assert!(
        activity.contains("tenant-backup") && activity.contains("job-retry"),
        "{activity}"
    );
    assert!(activity.contains("Ada <b>Lovelace</b> (admin)"), "{activity}");

    // A phone-sized window still shows the navigation and the tables.
    b.set_window(390, 844).await;
    b.goto(&format!("{base}/console/tenants")).await;
    assert!(b.text("nav").await.contains("Dead letters"));

    drop(worker);
    b.keep_only(&["overview"]);
    drop(b);
    env.cleanup().await;
}

fn no_redirects() -> reqwest::Client {
    pgfleet_shared::neon::client::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Signs in over HTTP; returns the `Cookie` header value and the whole `Set-Cookie`.
async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    extra: Option<(&str, &str)>,
) -> (String, String) {
    let mut request = http.post(format!("{base}/console/login")).form(&[
        ("token", token),
        ("operator", "eve"),
        ("next", "/console"),
    ]);
    if let Some((k, v)) = extra {
        request = request.header(k, v);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 303, "sign-in with a good token redirects");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    (cookie, set)
}

/// GET a console page with a session cookie.
async fn get_as(http: &reqwest::Client, url: String, cookie: &str) -> reqwest::Response {
    http.get(url).header("cookie", cookie).send().await.unwrap()
}

/// The CSRF token in a page's forms.
fn csrf_in(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

async fn backup_jobs(catalog: &pgfleet_shared::catalog::Catalog) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'backup' AND tenant = 'shield'")
        .fetch_one(catalog.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_actions_need_a_session_a_csrf_token_this_origin_and_an_admin() {
    let env = TestEnv::new();
    let catalog = env.catalog().await;
    let _worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "shield", "--wait"]);
    let password = cli_ok(&env, &["tenant", "url", "shield"]);
    let password = password
        .trim()
        .split("://")
        .nth(1)
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .to_owned();
    let (_api, base) = spawn_console(&env).await;
    let http = no_redirects();
    let form = |csrf: &str| {
        vec![
            ("action", "tenant-backup".to_owned()),
            ("target", "shield".to_owned()),
            ("nonce", "6f1c7a52-1f0e-4a4e-9a57-0d6ad9d1c111".to_owned()),
            ("csrf", csrf.to_owned()),
        ]
    };

    // No session: a POST is refused, a page sends to sign-in, a bad token stays out.
    let r = http
        .post(format!("{base}/console/actions"))
        .form(&form("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(format!("{base}/console/tenants")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/console/login?next="));
    let r = http
        .post(format!("{base}/console/login"))
        .form(&[("token", "wrong-token-but-long-enough"), ("operator", "mallory")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());

    // The session cookie: HttpOnly, SameSite=Strict, scoped to the console; Secure behind TLS.
    let (cookie, set) = sign_in(&http, &base, API_TOKEN, None).await;
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    let (_, behind_tls) = sign_in(&http, &base, API_TOKEN, Some(("x-forwarded-proto", "https"))).await;
    assert!(behind_tls.contains("; Secure"), "{behind_tls}");

    // Signed in, but no CSRF token, a wrong one, or another site's Origin: refused, nothing done.
    let post = |fields: Vec<(&'static str, String)>, origin: Option<String>| {
        let mut r = http
            .post(format!("{base}/console/actions"))
            .header("cookie", &cookie)
            .form(&fields);
        if let Some(origin) = origin {
            r = r.header("origin", origin);
        }
        r.send()
    };
    let without: Vec<_> = form("").into_iter().filter(|(k, _)| *k != "csrf").collect();
    assert_eq!(post(without, None).await.unwrap().status(), 403);
    assert_eq!(post(form("forged"), None).await.unwrap().status(), 403);
    let page = get_as(
        &http,
        format!("{base}/console/confirm?action=tenant-backup&target=shield"),
        &cookie,
    )
    .await;
    let headers = page.headers().clone();
    let page = page.text().await.unwrap();
    let csrf = csrf_in(&page);
    assert_eq!(
        post(form(&csrf), Some("https://evil.example".into()))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(backup_jobs(&catalog).await, 0, "a refused POST did something");
    // The headers that keep injected markup inert and the console out of frames.
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");

    // With everything right it runs, once even if the form is sent twice.
    for _ in 0..2 {
        let r = post(form(&csrf), Some(base.clone())).await.unwrap();
        assert_eq!(r.status(), 303);
        assert!(r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/console/tenants/shield?notice="));
    }
    assert_eq!(backup_jobs(&catalog).await, 1);

    // No secret on any page: not the tenant's password.
    for path in [
        "/console",
        "/console/tenants",
        "/console/tenants/shield",
        "/console/jobs",
    ] {
        let body = get_as(&http, format!("{base}{path}"), &cookie)
            .await
            .text()
            .await
            .unwrap();
        assert!(body.contains("shield") || path == "/console", "{path}");
        assert!(!body.contains(&password), "{path} shows the tenant's password");
    }

    // A viewer sees but can't act: no form on the confirmation page, a POST refused and recorded.
    let (viewer, _) = sign_in(&http, &base, VIEWER_TOKEN, None).await;
    let page = get_as(
        &http,
        format!("{base}/console/confirm?action=tenant-suspend&target=shield"),
        &viewer,
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        page.contains("signed in as a viewer") && !page.contains("name=\"action\""),
        "{page}"
    );
    let viewer_csrf = csrf_in(&page); // the sign-out form's
    let mut fields = form(&viewer_csrf);
    fields[0].1 = "tenant-suspend".into();
    let r = http
        .post(format!("{base}/console/actions"))
        .header("cookie", &viewer)
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let status: String = sqlx::query_scalar("SELECT status FROM tenants WHERE slug = 'shield'")
        .fetch_one(catalog.pool())
        .await
        .unwrap();
    assert_eq!(status, "active");
    let refused: i64 =
        sqlx::query_scalar("SELECT count(*) FROM console_actions WHERE role = 'viewer' AND NOT ok")
            .fetch_one(catalog.pool())
            .await
            .unwrap();
    assert_eq!(refused, 1);

    // Signing out ends the session for good (the cookie, replayed, no longer works).
    let r = http
        .post(format!("{base}/console/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = get_as(&http, format!("{base}/console"), &cookie).await;
    assert_eq!(r.status(), 303, "a signed-out session still works");
    env.cleanup().await;
}

/// Goes to an action's confirmation page, checks what it says, confirms; returns the notice.
async fn confirm_action(b: &Browser, link: &str, says: &str) -> String {
    b.click(link).await;
    b.page_shot().await;
    let text = b.text("#confirm-text").await;
    assert!(
        text.contains(says),
        "the confirmation says {text:?}, not {says:?}"
    );
    b.click("#confirm").await;
    b.page_shot().await;
    b.text(".notice").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_action_does_what_its_confirmation_says() {
    let env = TestEnv::new().with_migrations(&[]);
    let catalog = env.catalog().await;
    let worker = env.spawn_worker("w", &[], &[]).await;
    cli_ok(&env, &["tenant", "create", "orbit", "--wait"]);
    cli_ok(&env, &["backup", "orbit", "--wait"]);
    env.publish_raw("backup", b"{not json").await;
    let (_api, base) = spawn_console(&env).await;
    let b = Browser::start(shots("actions")).await;
    b.goto(&format!("{base}/console/login")).await;
    b.type_into("#token", API_TOKEN).await;
    b.type_into("#operator", "Grace").await;
    b.click("button[type=submit]").await;
    let status_of = |slug: &'static str| {
        let pool = catalog.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM tenants WHERE slug = $1")
                .bind(slug)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };

    // Restore the backup into a new database, following the job live to its end.
    let into = env.outside_name("console_copy");
    b.goto(&format!("{base}/console/tenants/orbit")).await;
    b.click("a.button[href*='tenant-restore']").await;
    assert!(b.text("#confirm-text").await.contains("into a new database"));
    b.type_into("#into", &into).await;
    b.click("#confirm").await;
    assert!(b.text(".notice").await.contains(&format!("into database {into}")));
    b.wait_until(
        "document.querySelector('#job-facts .job-status').textContent.includes('succeeded')",
        Duration::from_secs(60),
        "restore succeeded",
    )
    .await;
    let restored: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&into)
        .fetch_one(&mut admin().await)
        .await
        .unwrap();
    assert!(restored, "no database {into}");

    // Suspend, then resume.
    b.goto(&format!("{base}/console/tenants/orbit")).await;
    let notice = confirm_action(&b, "a.button[href*='tenant-suspend']", "Suspend tenant orbit").await;
    assert!(notice.contains("suspended tenant orbit"), "{notice}");
    assert_eq!(status_of("orbit").await, "suspended");
    let notice = confirm_action(&b, "a.button[href*='tenant-resume']", "Resume tenant orbit").await;
    assert!(notice.contains("resumed tenant orbit"), "{notice}");
    assert_eq!(status_of("orbit").await, "active");

    // A dead letter that still can't be understood: replay refused (and said so), discard works.
    b.goto(&format!("{base}/console/dead-letters")).await;
    b.click("a[href^='/console/dead-letters/']").await;
    let notice = confirm_action(&b, "a.button[href*='dead-letter-replay']", "Publish").await;
    assert!(
        notice.starts_with("Refused:") && notice.contains("still can't be understood"),
        "{notice}"
    );
    b.goto(&format!("{base}/console/dead-letters")).await;
    b.click("a[href^='/console/dead-letters/']").await;
    let notice = confirm_action(&b, "a.button[href*='dead-letter-discard']", "Forget").await;
    assert!(notice.contains("discarded dead letter"), "{notice}");
    assert_eq!(catalog.dead_letter_count().await.unwrap(), 0);

    // No worker: a backup stays queued and is cancelled; a rollout is halted, then resumed.
    drop(worker);
    let queued: serde_json::Value =
        serde_json::from_str(&cli_ok(&env, &["backup", "orbit", "--json"])).unwrap();
    let queued_id = queued["id"].as_str().unwrap().to_owned();
    b.goto(&format!("{base}/console/jobs/{queued_id}")).await;
    let notice = confirm_action(&b, "a.button[href*='job-cancel']", "Cancel job").await;
    assert!(notice.contains(&format!("cancelled job {queued_id}")), "{notice}");
    assert!(b.text("#job-facts").await.contains("cancelled: by operator"));

    std::fs::write(
        env.migrations_dir.as_ref().unwrap().join("2_notes.sql"),
        "CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL);",
    )
    .unwrap();
    let started: serde_json::Value =
        serde_json::from_str(&cli_ok(&env, &["migrate", "--all", "--json"])).unwrap();
    let rollout = started["id"].as_str().unwrap().to_owned();
    b.goto(&format!("{base}/console/rollouts/{rollout}")).await;
    let notice = confirm_action(
        &b,
        "a.button[href*='rollout-halt']",
        "Halt the rollout to version 2",
    )
    .await;
    assert!(notice.contains("halted rollout"), "{notice}");
    let facts = b.text("#rollout-facts").await;
    assert!(
        facts.contains("halted") && facts.contains("halted by Grace from the console"),
        "{facts}"
    );
    let _worker = env.spawn_worker("w2", &[], &[]).await;
    let notice = confirm_action(&b, "a.button[href*='rollout-resume']", "get new jobs").await;
    assert!(notice.contains("1 new jobs"), "{notice}");
    b.wait_until(
        "document.querySelector('#rollout-facts').textContent.includes('done')",
        Duration::from_secs(60),
        "rollout done live",
    )
    .await;
    let version: Option<i64> = sqlx::query_scalar("SELECT schema_version FROM tenants WHERE slug = 'orbit'")
        .fetch_one(catalog.pool())
        .await
        .unwrap();
    assert_eq!(version, Some(2));

    // Every one of them is on record under the operator's name.
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT action FROM console_actions WHERE operator = 'Grace' ORDER BY at")
            .fetch_all(catalog.pool())
            .await
            .unwrap();
    assert_eq!(
        recorded,
        [
            "tenant-restore",
            "tenant-suspend",
            "tenant-resume",
            "dead-letter-replay",
            "dead-letter-discard",
            "job-cancel",
            "rollout-halt",
            "rollout-resume"
        ]
    );
    b.keep_only(&[]);
    drop(b);
    env.cleanup().await;
}
