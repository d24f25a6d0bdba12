//! A headless Chromium driven over the W3C WebDriver protocol (chromedriver), for the web
//! console's tests: a few JSON calls over HTTP, so no client library is needed. `.ci/run`
//! installs Debian's `chromium` and `chromium-driver`.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    /// Where screenshots go (the test's log folder).
    pub shots: PathBuf,
}

/// The Chromium binary itself (Debian's `/usr/bin/chromium` is a shell wrapper).
fn chromium_binary() -> &'static str {
    [
        "/usr/lib/chromium/chromium",
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("chromium is not installed: apt-get install chromium chromium-driver (.ci/run does)")
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session; screenshots go
    /// to `shots`.
    pub async fn start(shots: PathBuf) -> Self {
        std::fs::create_dir_all(&shots).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: apt-get install chromium-driver (.ci/run does)");
        let base = format!("http://127.0.0.1:{port}");
        pgfleet_shared::neon::client::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--lang=en-US"]
            }
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        Self {
            driver,
            base,
            session,
            http,
            shots,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let value = self.call(method, path, body).await;
        if let Some(error) = value.get("error") {
            panic!("WebDriver {path}: {error}: {}", value["message"]);
        }
        value
    }

    pub async fn goto(&self, url: &str) {
        self.ok(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
        self.page_shot().await;
    }

    /// A screenshot of the page now, numbered, kept if the test fails (`keep_only` at the
    /// end of a passing test removes all but the ones it names).
    pub async fn page_shot(&self) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let path = self.url().await;
        let name: String = path
            .split("/console")
            .nth(1)
            .unwrap_or("page")
            .split('?')
            .next()
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(60)
            .collect();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        self.screenshot(&format!("page-{n:02}{name}")).await;
    }

    /// Removes the page screenshots of a passing test, keeping `keep` (names without .png).
    pub fn keep_only(&self, keep: &[&str]) {
        for entry in std::fs::read_dir(&self.shots).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("page-") && !keep.iter().any(|k| name == format!("{k}.png")) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    pub async fn url(&self) -> String {
        self.ok(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The element `css` selects, if there is one now.
    pub async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.get(ELEMENT).and_then(|e| e.as_str()).map(str::to_owned)
    }

    /// The element `css` selects, waiting for it up to 10 s.
    pub async fn element(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            if Instant::now() > deadline {
                self.screenshot("missing-element").await;
                panic!("no element {css:?} on {}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.ok(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.ok(
            reqwest::Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await;
        self.ok(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// The rendered text of the element `css` selects.
    pub async fn text(&self, css: &str) -> String {
        let e = self.element(css).await;
        self.ok(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` in the page (a function body; `return` gives the value).
    pub async fn eval(&self, script: &str) -> Value {
        self.ok(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The text of an open alert/confirm dialog, if one is open.
    pub async fn alert(&self) -> Option<String> {
        let v = self.call(reqwest::Method::GET, "/alert/text", None).await;
        if v.get("error").is_some() {
            None
        } else {
            v.as_str().map(str::to_owned)
        }
    }

    pub async fn source(&self) -> String {
        self.ok(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The browser's cookies for the current page, as WebDriver describes them.
    pub async fn cookies(&self) -> Vec<Value> {
        self.ok(reqwest::Method::GET, "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `condition` (a JS expression) is true in the page.
    pub async fn wait_until(&self, condition: &str, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(&format!("return !!({condition});")).await == true {
                return;
            }
            if Instant::now() > deadline {
                self.screenshot(&format!("timeout-{}", what.replace(' ', "-")))
                    .await;
                panic!("{what}: not within {timeout:?} on {}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a PNG of the page as `<shots>/<name>.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let png = self.ok(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .unwrap_or_default();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    pub async fn set_window(&self, width: u32, height: u32) {
        self.ok(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session first (Chromium quits with it), then the driver.
        let _ = Command::new("curl")
            .args(["-s", "-m", "10", "-X", "DELETE"])
            .arg(format!("{}/session/{}", self.base, self.session))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
