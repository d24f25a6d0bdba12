//! Locating Postgres client tools (`pg_dump`, `psql`) that match a server: `pg_dump` must be
//! at least the server's major version, or it refuses (or, worse, dumps wrongly). Looks in
//! `PGFLEET_PG_BIN`, then Debian's `/usr/lib/postgresql/<major>/bin`, then `PATH`.
//!
//! Tools older than the minor releases that fix CVE-2025-8715 are refused: before them,
//! `pg_dump` could write an object name that `psql` runs as a meta-command (`\!` runs a
//! shell) when the dump is restored, so a tenant could name a table to run code on the
//! worker. Fixed releases write `\restrict` into every dump, which such names can't escape.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct PgTool {
    pub path: PathBuf,
    pub major: u32,
    /// As the tool prints it, e.g. "pg_dump (PostgreSQL) 15.20".
    pub version: String,
}

/// The first minor release of each major that fixes CVE-2025-8715 (August 2025).
const FIXED_RELEASES: [(u32, u32); 5] = [(13, 22), (14, 19), (15, 14), (16, 10), (17, 6)];
/// Majors from this one on were released with the fix.
const FIRST_FIXED_MAJOR: u32 = 18;

/// Why a tool's version is refused, if it is (see the module docs).
pub fn unsafe_version(version: &str) -> Option<String> {
    let (major, minor) = parse_version(version)?;
    if major >= FIRST_FIXED_MAJOR {
        return None;
    }
    let Some((_, fixed)) = FIXED_RELEASES.iter().find(|(m, _)| *m == major) else {
        return Some(format!(
            "PostgreSQL {major} client tools have no fix for CVE-2025-8715; use 13.22, 14.19, 15.14, 16.10, 17.6 or newer"
        ));
    };
    match minor {
        Some(minor) if minor >= *fixed => None,
        _ => Some(format!(
            "it predates the fix for CVE-2025-8715 (a dump could run shell commands on restore); upgrade to {major}.{fixed} or newer"
        )),
    }
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
    find_among(name, server_major, candidates).await
}

/// `find` over an explicit list of candidate paths, in order of preference.
pub async fn find_among(name: &str, server_major: u32, candidates: Vec<PathBuf>) -> Result<PgTool> {
    let mut older = Vec::new();
    let mut unsafe_found = Vec::new();
    for path in candidates {
        if !path.is_file() {
            continue;
        }
        let Ok(tool) = probe(&path).await else { continue };
        if tool.major < server_major {
            older.push(format!("{} ({})", path.display(), tool.version));
            continue;
        }
        if let Some(why) = unsafe_version(&tool.version) {
            unsafe_found.push(format!("{} ({}): {why}", path.display(), tool.version));
            continue;
        }
        return Ok(tool);
    }
    if !unsafe_found.is_empty() {
        bail!(
            "refusing to run {name}: {}; install current PostgreSQL {server_major} client tools or set PGFLEET_PG_BIN",
            unsafe_found.join("; ")
        )
    }
    if older.is_empty() {
        bail!("no {name} found for PostgreSQL {server_major}; install the PostgreSQL {server_major} client tools or set PGFLEET_PG_BIN")
    }
    bail!(
        "the tenant server runs PostgreSQL {server_major} but the only {name} found are older: {}; install the PostgreSQL {server_major} client tools or set PGFLEET_PG_BIN",
        older.join(", ")
    )
}

/// How a `pg_dump | psql` pipe ended when it did not succeed.
#[derive(Debug)]
pub enum PipeError {
    /// pg_dump failed (the source: worth retrying), with its stderr.
    Dump(String),
    /// psql failed loading (what was dumped does not load: not worth retrying), with its stderr.
    Load(String),
    /// Starting the tools or moving the bytes failed.
    Other(anyhow::Error),
}

/// `pg_dump <dump_args>` (with `dump_env`) streamed into `psql -X -q -v ON_ERROR_STOP=1
/// --single-transaction` (with `load_env`), no file in between; `prefix` is written to psql
/// before the dump (e.g. a `SET ROLE`). Each child gets only its libpq environment. Returns
/// the bytes copied.
pub async fn pipe_dump_into_psql(
    pg_dump: &PgTool,
    dump_args: &[&str],
    dump_env: &crate::servers::LibpqEnv,
    psql: &PgTool,
    load_env: &crate::servers::LibpqEnv,
    prefix: &str,
) -> std::result::Result<u64, PipeError> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let spawn =
        |tool: &PgTool, args: &[&str], env: &crate::servers::LibpqEnv, stdin: Stdio, stdout: Stdio| {
            let mut cmd = tokio::process::Command::new(&tool.path);
            cmd.args(args)
                .stdin(stdin)
                .stdout(stdout)
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            env.apply(&mut cmd);
            cmd.spawn()
                .with_context(|| format!("starting {}", tool.path.display()))
                .map_err(PipeError::Other)
        };
    let mut dump = spawn(pg_dump, dump_args, dump_env, Stdio::null(), Stdio::piped())?;
    let load_args = [
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "--no-password",
    ];
    let mut load = spawn(psql, &load_args, load_env, Stdio::piped(), Stdio::null())?;
    let (Some(dump_err), Some(load_err), Some(mut dump_out), Some(mut load_in)) = (
        dump.stderr.take(),
        load.stderr.take(),
        dump.stdout.take(),
        load.stdin.take(),
    ) else {
        return Err(PipeError::Other(anyhow::anyhow!("pg_dump or psql has no pipes")));
    };
    let (dump_err, load_err) = (collect_stderr(dump_err), collect_stderr(load_err));
    let copied = async {
        load_in.write_all(prefix.as_bytes()).await?;
        let n = tokio::io::copy(&mut dump_out, &mut load_in).await?;
        load_in.shutdown().await?;
        Ok::<u64, std::io::Error>(n)
    }
    .await;
    drop(load_in);
    let dump_status = dump
        .wait()
        .await
        .context("waiting for pg_dump")
        .map_err(PipeError::Other)?;
    let load_status = load
        .wait()
        .await
        .context("waiting for psql")
        .map_err(PipeError::Other)?;
    let (dump_err, load_err) = (
        dump_err.await.unwrap_or_default(),
        load_err.await.unwrap_or_default(),
    );
    if !dump_status.success() {
        return Err(PipeError::Dump(format!("{dump_status}: {}", dump_err.trim())));
    }
    if !load_status.success() {
        return Err(PipeError::Load(format!("{load_status}: {}", load_err.trim())));
    }
    copied
        .context("streaming the dump into psql")
        .map_err(PipeError::Other)
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
        .env_clear()
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
    parse_version(version).map(|(major, _)| major)
}

/// (major, minor): "… 15.20 (Debian …)" → (15, Some(20)); "… 17beta1" → (17, None);
/// "… 9.6.24" → (9, Some(6)).
fn parse_version(version: &str) -> Option<(u32, Option<u32>)> {
    let number = version
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut parts = number.split('.');
    let digits = |s: &str| -> Option<u32> {
        let d: String = s.chars().take_while(char::is_ascii_digit).collect();
        d.parse().ok()
    };
    let major_part = parts.next()?;
    let major = digits(major_part)?;
    let release = major_part.chars().all(|c| c.is_ascii_digit());
    let minor = if release {
        parts.next().and_then(digits)
    } else {
        None
    };
    Some((major, minor))
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

    #[test]
    fn tools_before_the_cve_2025_8715_fix_are_refused() {
        for ok in [
            "pg_dump (PostgreSQL) 15.14",
            "psql (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)",
            "pg_dump (PostgreSQL) 16.10",
            "pg_dump (PostgreSQL) 17.6",
            "pg_dump (PostgreSQL) 13.22",
            "pg_dump (PostgreSQL) 18.0",
            "pg_dump (PostgreSQL) 19devel",
        ] {
            assert_eq!(unsafe_version(ok), None, "{ok}");
        }
        for bad in [
            "pg_dump (PostgreSQL) 15.13",
            "psql (PostgreSQL) 16.9",
            "pg_dump (PostgreSQL) 17.5 (Ubuntu 17.5-1)",
            "pg_dump (PostgreSQL) 17beta1",
            "pg_dump (PostgreSQL) 12.22",
            "pg_dump (PostgreSQL) 9.6.24",
        ] {
            assert!(unsafe_version(bad).is_some(), "{bad} accepted");
        }
    }

    /// A real executable that reports an unfixed version is skipped, and the error names it.
    #[tokio::test]
    async fn an_unfixed_pg_dump_is_refused_naming_its_version() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pgfleet-fake-tools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("pg_dump");
        std::fs::write(&fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 15.13'\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = find_among("pg_dump", 15, vec![fake.clone()])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("15.13") && err.contains("CVE-2025-8715"), "{err}");
        // With a fixed tool after it, the fixed one is chosen.
        let real = find("pg_dump", 15).await.unwrap().path;
        let chosen = find_among("pg_dump", 15, vec![fake, real.clone()]).await.unwrap();
        assert_eq!(chosen.path, real);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn finds_a_pg_dump_for_the_local_server_and_refuses_a_newer_server() {
        let tool = find("pg_dump", 15).await.expect("the machine has pg_dump 15");
        assert!(tool.major >= 15, "{tool:?}");
        let err = find("pg_dump", 99).await.unwrap_err().to_string();
        assert!(err.contains("PostgreSQL 99") && err.contains("older"), "{err}");
    }
}
