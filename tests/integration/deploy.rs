//! The operating surface in `deploy/`: alert rules pass their `promtool` tests, and the
//! alerts and the Grafana dashboard use only series a real pgfleet exports.

use crate::support::*;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Runs a tool that `.ci/run` installs; its output on failure.
fn run(dir: &std::path::Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} is not installed ({e}); .ci/run installs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

/// `pgfleet_*` names a file's expressions use (histogram suffixes folded into the family).
fn series_named_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("pgfleet_") {
        let start = i + at;
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(text.len() - start);
        let before = if start == 0 { b' ' } else { bytes[start - 1] };
        if !(before.is_ascii_alphanumeric() || before == b'_') {
            let name = &text[start..end];
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(family.to_owned());
        }
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_pass_their_tests_and_dashboards_use_only_exported_series() {
    let prometheus = deploy_dir().join("prometheus");
    run(&prometheus, "promtool", &["check", "rules", "alerts.yml"]);
    let tested = run(&prometheus, "promtool", &["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    let env = TestEnv::new();
    let _catalog = env.catalog().await;
    let _worker = env.spawn_worker("w", &[], &[]).await;
    let api = env
        .spawn_process(
            "api",
            &["serve", "--listen", "127.0.0.1:0"],
            &[
                ("PGFLEET_API_TOKEN", API_TOKEN),
                ("PGFLEET_METRICS_PER_TENANT", "true"),
            ],
            "listening on http://",
        )
        .await;
    let base = api_base_url(&api.log());
    let scraped = http(None)
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported: BTreeSet<String> = scraped
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    for file in ["prometheus/alerts.yml", "grafana/pgfleet.json"] {
        let text = std::fs::read_to_string(deploy_dir().join(file)).unwrap();
        let used = series_named_in(&text);
        assert!(used.len() >= 5, "{file}: {used:?}");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses series pgfleet does not export: {unknown:?}"
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy_dir().join("grafana/pgfleet.json")).unwrap())
            .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
    drop(api);
    env.cleanup().await;
}
