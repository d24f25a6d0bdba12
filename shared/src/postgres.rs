//! Postgres helpers: quoting identifiers and literals, and connect options for Postgres
//! URLs (catalog, tenant servers), with pgfleet's one default
//! on top of libpq's: a URL that names no `sslmode` gets `prefer` (TLS when the server
//! offers it), except on loopback, where TLS protects nothing and would cost every tenant
//! connection a handshake — there it is `disable`. Set `sslmode` in the URL (or
//! `PGSSLMODE`) to choose; `require`, `verify-ca`, `verify-full` and `sslrootcert` work.

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use std::str::FromStr;

/// Parses `url` into connect options with the default above.
pub fn connect_options(url: &str) -> Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(url).context("not a valid Postgres URL")?;
    Ok(if ssl_mode_chosen(url) {
        options
    } else if is_loopback(url) {
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options.ssl_mode(PgSslMode::Prefer)
    })
}

/// The `sslmode` libpq tools (pg_dump, psql) should get, if the URL names none.
pub fn default_tool_ssl_mode(url: &str) -> Option<&'static str> {
    (!ssl_mode_chosen(url) && is_loopback(url)).then_some("disable")
}

fn ssl_mode_chosen(url: &str) -> bool {
    let in_url = url::Url::parse(url)
        .map(|u| u.query_pairs().any(|(k, _)| k == "sslmode"))
        .unwrap_or(false);
    in_url || std::env::var_os("PGSSLMODE").is_some()
}

fn is_loopback(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    // `?host=/run/postgresql` (a Unix socket) wins over the URL's host.
    if let Some((_, host)) = parsed.query_pairs().find(|(k, _)| k == "host") {
        return host.starts_with('/') || host == "localhost" || host_is_loopback(&host);
    }
    match parsed.host() {
        // `postgres:` is not a "special" scheme, so the url crate leaves IPs as domains.
        Some(url::Host::Domain(d)) => d == "localhost" || host_is_loopback(d),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => true,
    }
}

fn host_is_loopback(host: &str) -> bool {
    host.trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Quotes a Postgres identifier (doubling embedded quotes), as `quote_ident` does.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a Postgres string literal (doubling quotes; `E''` when it holds backslashes).
pub fn quote_literal(value: &str) -> String {
    let body = value.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// Whether a server's SQL error is one no retry can fix (see `error::JobError`'s `From<sqlx::Error>`).
pub fn statement_is_at_fault(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            ["42", "22", "23", "2B"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> PgSslMode {
        // Debug of the options shows the mode; compare through a fresh parse instead.
        let options = connect_options(url).unwrap();
        options.get_ssl_mode()
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
    }

    #[test]
    fn tls_by_default_except_on_loopback() {
        assert!(matches!(mode("postgres://u@127.0.0.1/db"), PgSslMode::Disable));
        assert!(matches!(mode("postgres://u@localhost/db"), PgSslMode::Disable));
        assert!(matches!(mode("postgres://u@[::1]:5432/db"), PgSslMode::Disable));
        assert!(matches!(
            mode("postgres://u@db.example.com/db"),
            PgSslMode::Prefer
        ));
        assert!(matches!(mode("postgres://u@10.0.0.5/db"), PgSslMode::Prefer));
        assert!(matches!(
            mode("postgres://u@127.0.0.1/db?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode("postgres://u@db.example.com/db?sslmode=verify-full"),
            PgSslMode::VerifyFull
        ));
        assert_eq!(
            default_tool_ssl_mode("postgres://u@127.0.0.1/db"),
            Some("disable")
        );
        assert_eq!(
            default_tool_ssl_mode("postgres://u@127.0.0.1/db?sslmode=require"),
            None
        );
        assert_eq!(default_tool_ssl_mode("postgres://u@db.example.com/db"), None);
    }
}
