//! Locating Postgres client tools (`pg_dump`, `psql`) that match a server: `pg_dump` must be
//! at least the server's major version, or it refuses (or, worse, dumps wrongly). Looks in
//! `PGFLEET_PG_BIN`, then Debian's `/usr/lib/postgresql/<major>/bin`, then `PATH`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct PgTool {
    pub path: PathBuf,
    pub major: u32,
    /// As the tool prints it, e.g. "pg_dump (PostgreSQL) 15.20".
    pub version: String,
}

/// Finds `name` with major version ≥ `server_major`, preferring the exact major.
pub async fn find(name: &str, server_major: u32) -> Result<PgTool> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::env::var("PGFLEET_PG_BIN") {
        candidates.push(Path::new(&dir).join(name));
    }
    candidates.push(PathBuf::from(format!(
        "/usr/lib/postgresql/{server_major}/bin/{name}"
    )));
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut majors: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|m| *m > server_major)
            .collect();
        majors.sort_unstable();
        candidates.extend(
            majors
                .into_iter()
                .map(|m| PathBuf::from(format!("/usr/lib/postgresql/{m}/bin/{name}"))),
        );
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join(name)));
    }
    let mut seen = Vec::new();
    for path in candidates {
        if !path.is_file() {
            continue;
        }
        let Ok(tool) = probe(&path).await else { continue };
        if tool.major >= server_major {
            return Ok(tool);
        }
        seen.push(format!("{} ({})", path.display(), tool.version));
    }
    if seen.is_empty() {
        bail!("no {name} found for PostgreSQL {server_major}; install the PostgreSQL {server_major} client tools or set PGFLEET_PG_BIN")
    }
    bail!(
        "the tenant server runs PostgreSQL {server_major} but the only {name} found are older: {}; install the PostgreSQL {server_major} client tools or set PGFLEET_PG_BIN",
        seen.join(", ")
    )
}

/// Reads a child's stderr to the end in the background (so the child never blocks on a
/// full pipe); the text explains a failure.
pub fn collect_stderr(stderr: tokio::process::ChildStderr) -> tokio::task::JoinHandle<String> {
    use tokio::io::AsyncReadExt;
    tokio::spawn(async move {
        let mut stderr = stderr;
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    })
}

async fn probe(path: &Path) -> Result<PgTool> {
    let out = tokio::process::Command::new(path)
        .arg("--version")
        .output()
        .await
        .with_context(|| format!("running {} --version", path.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(PgTool {
        path: path.to_owned(),
        major: parse_major(&version)
            .with_context(|| format!("cannot read the version of {}: {version:?}", path.display()))?,
        version,
    })
}

/// "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)" → 15; "… 9.6.24" → 9.
pub fn parse_major(version: &str) -> Option<u32> {
    let number = version
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits: String = number.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("psql (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("garbage"), None);
    }

    #[tokio::test]
    async fn finds_a_pg_dump_for_the_local_server_and_refuses_a_newer_server() {
        let tool = find("pg_dump", 15).await.expect("the machine has pg_dump 15");
        assert!(tool.major >= 15, "{tool:?}");
        let err = find("pg_dump", 99).await.unwrap_err().to_string();
        assert!(err.contains("PostgreSQL 99") && err.contains("older"), "{err}");
    }
}
