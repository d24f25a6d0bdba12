//! The backup store: `file://DIR` or `s3://BUCKET/PREFIX` (DESIGN.md "Backup objects").
//! Objects are written from a stream of chunks whose producer reports failure in-band: an
//! `Err` item (or an error from the store) aborts the write, and the object becomes visible
//! under its final key only after the stream ended cleanly and its size was verified. So a
//! failed or interrupted backup never leaves an object under a final key. Keys are built
//! only by `TenantPrefix`, from the namespace and a validated slug
//! (`<prefix>/<namespace>/<slug>/…`), and never leave the tenant's prefix — so installs
//! sharing a bucket or folder never touch each other's objects.

mod local;
mod s3;

use crate::config::Namespace;
use crate::slug::TenantSlug;
use anyhow::{bail, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use uuid::Uuid;

pub use s3::S3Settings;

/// Chunks to store; an `Err` means the producer failed and the write must be abandoned.
pub type ChunkReceiver = mpsc::Receiver<Result<Bytes>>;

/// What a completed write stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub bytes: u64,
    /// Hex SHA-256 of the stored bytes, computed as they streamed.
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub bytes: u64,
    pub last_modified: DateTime<Utc>,
}

/// A write that never completed: an unfinished multipart upload or a leftover temp file.
#[derive(Debug, Clone)]
pub struct Incomplete {
    pub key: String,
    /// Multipart upload id (S3) or temp file name (local).
    pub handle: String,
    pub started: Option<DateTime<Utc>>,
}

pub enum BackupStore {
    Local(local::LocalStore),
    S3(s3::S3Store),
}

impl BackupStore {
    /// Opens `file://DIR` or `s3://BUCKET[/PREFIX]`. S3 uses the standard `AWS_*`
    /// environment (credentials, region, `AWS_ENDPOINT_URL` for S3-compatible stores).
    pub async fn open(url: &str, s3_settings: S3Settings) -> Result<Self> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                bail!("PGFLEET_BACKUP_URL file:// needs a folder, e.g. file://./pgfleet-data/backups");
            }
            return Ok(Self::Local(local::LocalStore::new(path.into())));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("PGFLEET_BACKUP_URL s3:// needs a bucket, e.g. s3://my-backups/pgfleet");
            }
            return Ok(Self::S3(
                s3::S3Store::new(bucket, prefix.trim_matches('/'), s3_settings).await?,
            ));
        }
        bail!("PGFLEET_BACKUP_URL must be file://DIR or s3://BUCKET/PREFIX")
    }

    /// Human-readable location (no credentials are ever part of it).
    pub fn describe(&self) -> String {
        match self {
            Self::Local(l) => format!("file://{}", l.root().display()),
            Self::S3(s) => s.describe(),
        }
    }

    /// The store-wide prefix every key starts with ("" for none).
    fn base_prefix(&self) -> &str {
        match self {
            Self::Local(_) => "",
            Self::S3(s) => s.prefix(),
        }
    }

    /// `<prefix>/<namespace>/<slug>/`: the part of the store one tenant of one install owns.
    pub fn tenant_prefix(&self, namespace: &Namespace, slug: &TenantSlug) -> TenantPrefix {
        let base = match self.base_prefix() {
            "" => String::new(),
            base => format!("{base}/"),
        };
        TenantPrefix {
            current: format!("{base}{namespace}/{slug}/"),
            legacy: format!("{base}{slug}/"),
        }
    }

    /// Streams `chunks` to `key`; see the module docs for when the object appears.
    pub async fn put(&self, key: &str, chunks: ChunkReceiver) -> Result<Stored> {
        match self {
            Self::Local(l) => l.put(key, chunks).await,
            Self::S3(s) => s.put(key, chunks).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        match self {
            Self::Local(l) => l.get(key).await,
            Self::S3(s) => s.get(key).await,
        }
    }

    pub async fn list(&self, prefix: &TenantPrefix) -> Result<Vec<ObjectInfo>> {
        match self {
            Self::Local(l) => l.list(prefix.as_str()).await,
            Self::S3(s) => s.list(prefix.as_str()).await,
        }
    }

    pub async fn delete(&self, prefix: &TenantPrefix, key: &str) -> Result<()> {
        prefix.check(key)?;
        match self {
            Self::Local(l) => l.delete(key).await,
            Self::S3(s) => s.delete(key).await,
        }
    }

    pub async fn list_incomplete(&self, prefix: &TenantPrefix) -> Result<Vec<Incomplete>> {
        match self {
            Self::Local(l) => l.list_incomplete(prefix.as_str()).await,
            Self::S3(s) => s.list_incomplete(prefix.as_str()).await,
        }
    }

    pub async fn discard_incomplete(&self, prefix: &TenantPrefix, incomplete: &Incomplete) -> Result<()> {
        prefix.check(&incomplete.key)?;
        match self {
            Self::Local(l) => l.discard_incomplete(incomplete).await,
            Self::S3(s) => s.discard_incomplete(incomplete).await,
        }
    }
}

/// `<prefix>/<namespace>/<slug>/`: the only part of the store a tenant's jobs list, write or
/// delete. Keys recorded before namespaces were part of the layout (`<prefix>/<slug>/…`)
/// are still accepted for restoring and pruning what the catalog recorded, never listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPrefix {
    current: String,
    legacy: String,
}

impl TenantPrefix {
    pub fn as_str(&self) -> &str {
        &self.current
    }

    /// `<prefix>/<namespace>/<slug>/<YYYYMMDDTHHMMSSZ>-<job id>.sql.gz`
    pub fn backup_key(&self, started: DateTime<Utc>, job_id: Uuid) -> String {
        format!(
            "{}{}-{job_id}.sql.gz",
            self.current,
            started.format("%Y%m%dT%H%M%SZ")
        )
    }

    /// `<prefix>/<namespace>/<slug>/branch-<name>-<YYYYMMDDTHHMMSSZ>-<job id>.sql.gz`: a
    /// backup of the tenant's dev copy `name` (letters, digits, '_' and '-': no '/').
    pub fn branch_backup_key(&self, branch: &str, started: DateTime<Utc>, job_id: Uuid) -> String {
        format!(
            "{}branch-{branch}-{}-{job_id}.sql.gz",
            self.current,
            started.format("%Y%m%dT%H%M%SZ")
        )
    }

    /// Refuses any key outside this prefix (or one that could climb out of it).
    pub fn check(&self, key: &str) -> Result<()> {
        let inside = |prefix: &str| {
            key.strip_prefix(prefix).is_some_and(|name| {
                !name.is_empty() && !name.contains('/') && !name.contains("..") && !name.contains('\\')
            })
        };
        if inside(&self.current) || inside(&self.legacy) {
            Ok(())
        } else {
            bail!(
                "refusing to touch {key:?}: it is outside the tenant's prefix {:?}",
                self.current
            )
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_tenant_prefix() {
        let prefix = TenantPrefix {
            current: "backups/ns/acme/".into(),
            legacy: "backups/acme/".into(),
        };
        let at = DateTime::parse_from_rfc3339("2026-11-25T01:02:03Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = Uuid::nil();
        let key = prefix.backup_key(at, id);
        assert_eq!(key, format!("backups/ns/acme/20261125T010203Z-{id}.sql.gz"));
        assert!(prefix.check(&key).is_ok());
        assert!(
            prefix.check("backups/acme/20261125T010203Z-x.sql.gz").is_ok(),
            "a recorded key of the old layout"
        );
        for bad in [
            "backups/ns/other/x.sql.gz",
            "backups/other-ns/acme/x.sql.gz",
            "backups/ns/acme/nested/x.sql.gz",
            "backups/acme-other/x.sql.gz",
            "backups/acme/../other/x",
            "backups/acme/sub/x",
            "backups/acme/",
            "backups/acm",
            "other/acme/x",
        ] {
            assert!(prefix.check(bad).is_err(), "{bad}");
        }
    }
}
