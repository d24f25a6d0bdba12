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

/// Runs `program`, returning (success, stdout + stderr).
fn attempt(dir: &std::path::Path, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} is not installed ({e}); .ci/run installs it"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_chart_lints_renders_and_validates_with_default_and_all_options() {
    let helm = deploy_dir().join("helm");
    let work = std::env::temp_dir().join(format!("pgfleet-chart-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    for (name, extra) in [
        ("default", vec![]),
        ("all-options", vec!["-f", "pgfleet/ci/all-options-values.yaml"]),
    ] {
        let mut lint = vec!["lint", "pgfleet", "--strict"];
        lint.extend(&extra);
        run(&helm, "helm", &lint);
        let mut template = vec!["template", "demo", "pgfleet"];
        template.extend(&extra);
        let rendered = run(&helm, "helm", &template);
        let file = work.join(format!("{name}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        let validated = run(
            &helm,
            "kubernetes-validate",
            &["--strict", file.to_str().unwrap()],
        );
        assert!(
            !validated.contains("ERROR") && validated.contains("passed"),
            "{name}: {validated}"
        );
        run(&helm, "python3", &["check-rendered.py", file.to_str().unwrap()]);
        assert!(!rendered.contains("hunter2") && rendered.contains("secretKeyRef"));
    }
    // The checker catches a KEDA setup that would stop scaling in the middle of a backup.
    let rendered = run(
        &helm,
        "helm",
        &[
            "template",
            "demo",
            "pgfleet",
            "--set",
            "keda.enabled=true",
            "--set",
            "keda.protocol=amqp",
            "--set",
            "keda.cooldownPeriod=300",
        ],
    );
    let file = work.join("amqp.yaml");
    std::fs::write(&file, rendered).unwrap();
    let (ok, said) = attempt(&helm, "python3", &["check-rendered.py", file.to_str().unwrap()]);
    assert!(!ok && said.contains("protocol http"), "{said}");
    // The chart's PrometheusRule carries exactly deploy/prometheus/alerts.yml.
    assert_eq!(
        std::fs::read_to_string(helm.join("pgfleet/files/alerts.yml")).unwrap(),
        std::fs::read_to_string(deploy_dir().join("prometheus/alerts.yml")).unwrap(),
        "copy deploy/prometheus/alerts.yml to deploy/helm/pgfleet/files/alerts.yml"
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_dockerfile_lints_and_installs_client_tools_with_the_script_ci_runs() {
    let docker = deploy_dir().join("docker");
    run(&docker, "hadolint", &["Dockerfile"]);
    let dockerfile = std::fs::read_to_string(docker.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("install-pg-clients.sh --pgdg 14 15 16 17 18"));
    assert!(dockerfile.contains("USER 10001") && dockerfile.contains("HEALTHCHECK"));
    let ci = std::fs::read_to_string(deploy_dir().join("../.ci/run")).unwrap();
    assert!(
        ci.contains("deploy/docker/install-pg-clients.sh"),
        ".ci/run must install client tools with the image's script"
    );
}
