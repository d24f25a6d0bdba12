//! `TenantSlug`: the one validated form of a tenant name. Every edge (message, CLI, API)
//! parses into it before anything else happens, so no unvalidated name reaches SQL or an
//! object key. Identifiers built from it are quoted anyway (`postgres::quote_ident`).

use std::fmt;

/// A tenant name matching `^[a-z][a-z0-9-]{1,61}[a-z0-9]$`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct TenantSlug(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid tenant slug {shown}: {why} (a slug is 3-63 characters of a-z, 0-9 and '-', starts with a letter and does not end with '-')")]
pub struct InvalidSlug {
    /// The rejected input, escaped and shortened so a hostile value can't mangle a terminal or log.
    shown: String,
    why: &'static str,
}

impl TenantSlug {
    pub fn parse(input: &str) -> Result<Self, InvalidSlug> {
        let refuse = |why| {
            Err(InvalidSlug {
                shown: shown(input),
                why,
            })
        };
        let bytes = input.as_bytes();
        if bytes.len() < 3 {
            return refuse("too short");
        }
        if bytes.len() > 63 {
            return refuse("too long");
        }
        if !bytes[0].is_ascii_lowercase() {
            return refuse("must start with a lowercase letter");
        }
        if bytes[bytes.len() - 1] == b'-' {
            return refuse("must not end with '-'");
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        {
            return refuse("only a-z, 0-9 and '-' are allowed");
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn shown(input: &str) -> String {
    let mut escaped: String = input
        .chars()
        .take(80)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if input.chars().count() > 80 {
        escaped.push('…');
    }
    format!("\"{escaped}\"")
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for TenantSlug {
    type Err = InvalidSlug;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for TenantSlug {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_slugs() {
        for ok in ["acme", "acme-corp", "a1b", "x".repeat(63).as_str()] {
            assert!(TenantSlug::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_hostile_and_malformed_slugs() {
        for bad in [
            "",
            "ab",
            "Acme",
            "1acme",
            "acme-",
            "acme_corp",
            "acme corp",
            "x\"; drop database postgres; --",
            "../../etc",
            "acme/../other",
            "ac\u{0}me",
            "açme",
            &"x".repeat(64),
        ] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn error_escapes_the_input() {
        let err = TenantSlug::parse("a\nb\u{1b}[31m").unwrap_err().to_string();
        assert!(!err.contains('\n') && !err.contains('\u{1b}'), "{err}");
    }
}
