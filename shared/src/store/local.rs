//! `file://DIR`: each object is written to a hidden temp file beside its final name,
//! fsynced, then renamed into place (and the folder fsynced), so a reader never sees a
//! partial object under a final name.

use super::{ChunkReceiver, Incomplete, ObjectInfo, Stored};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncWriteExt};

const TEMP_MARK: &str = ".partial-";

pub struct LocalStore {
    root: PathBuf,
}

/// Removes the temp file unless the write completed (also when the task is cancelled).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub async fn put(&self, key: &str, mut chunks: ChunkReceiver) -> Result<Stored> {
        let path = self.path(key);
        let dir = path.parent().context("object key has no folder")?.to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        let name = path
            .file_name()
            .context("object key has no name")?
            .to_string_lossy();
        let temp = dir.join(format!(".{name}{TEMP_MARK}{}", uuid::Uuid::new_v4().simple()));
        let mut guard = TempGuard(Some(temp.clone()));
        let mut file = tokio::fs::File::create(&temp)
            .await
            .with_context(|| format!("creating {}", temp.display()))?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", temp.display()))?;
        }
        file.flush().await?;
        file.sync_all()
            .await
            .with_context(|| format!("fsync of {}", temp.display()))?;
        let written = file.metadata().await?.len();
        if written != bytes {
            anyhow::bail!("wrote {written} bytes to {} but streamed {bytes}", temp.display());
        }
        drop(file);
        tokio::fs::rename(&temp, &path)
            .await
            .with_context(|| format!("renaming {} into place", temp.display()))?;
        guard.0 = None;
        tokio::fs::File::open(&dir).await?.sync_all().await?;
        Ok(Stored {
            bytes,
            sha256: crate::hex::encode(&hasher.finalize()),
        })
    }

    pub async fn get(&self, key: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        let path = self.path(key);
        let file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("opening backup {}", path.display()))?;
        Ok(Box::new(file))
    }

    /// Objects directly under `prefix` (temp files excluded).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        for (name, meta) in self.entries(prefix).await? {
            if name.starts_with('.') {
                continue;
            }
            out.push(ObjectInfo {
                key: format!("{prefix}{name}"),
                bytes: meta.len(),
                last_modified: modified(&meta),
            });
        }
        Ok(out)
    }

    async fn entries(&self, prefix: &str) -> Result<Vec<(String, std::fs::Metadata)>> {
        let dir = self.path(prefix);
        let mut read = match tokio::fs::read_dir(&dir).await {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        let mut out = Vec::new();
        while let Some(entry) = read.next_entry().await? {
            let meta = entry.metadata().await?;
            if meta.is_file() {
                out.push((entry.file_name().to_string_lossy().into_owned(), meta));
            }
        }
        Ok(out)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {key}")),
        }
    }

    /// Temp files left by writes that never completed (a killed worker).
    pub async fn list_incomplete(&self, prefix: &str) -> Result<Vec<Incomplete>> {
        let mut out = Vec::new();
        for (name, meta) in self.entries(prefix).await? {
            if let Some((final_name, _)) = name.strip_prefix('.').and_then(|n| n.split_once(TEMP_MARK)) {
                out.push(Incomplete {
                    key: format!("{prefix}{final_name}"),
                    handle: name.clone(),
                    started: Some(modified(&meta)),
                });
            }
        }
        Ok(out)
    }

    pub async fn discard_incomplete(&self, incomplete: &Incomplete) -> Result<()> {
        let key_dir = Path::new(&incomplete.key)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = self.root.join(key_dir).join(&incomplete.handle);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {}", path.display())),
        }
    }
}

fn modified(meta: &std::fs::Metadata) -> DateTime<Utc> {
    meta.modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now())
}
