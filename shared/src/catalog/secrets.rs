//! Key rotation: re-seals every stored credential that is not sealed with the current key
//! (or not yet bound to its row) in batches, each its own short transaction, so it runs
//! beside live workers and APIs and resumes where it stopped if interrupted. Once nothing
//! is left under another key, the keyring's previous keys are recorded as retired: a
//! process that starts with one of them as its current key is refused.

use super::error::Result;
use super::{Catalog, KEY_CHECK_SETTING, RETIRED_KEYS_SETTING};
use crate::secrets::{Binding, KeyId};
use anyhow::Context;
use uuid::Uuid;

/// What `rotate_secrets` did.
#[derive(Debug, Default)]
pub struct RotationReport {
    pub current: Option<KeyId>,
    /// (what, how many) re-sealed with the current key.
    pub resealed: Vec<(&'static str, u64)>,
    /// Keys retired by this run (the keyring's previous keys).
    pub retired: Vec<KeyId>,
}

/// A table with one encrypted column, keyed by a uuid `id`.
struct SealedColumn {
    what: &'static str,
    table: &'static str,
    column: &'static str,
    binding: fn(Uuid) -> Binding,
}

const SEALED_COLUMNS: [SealedColumn; 8] = [
    SealedColumn {
        what: "tenant passwords",
        table: "tenants",
        column: "password_ciphertext",
        binding: Binding::tenant_password,
    },
    SealedColumn {
        what: "server admin URLs",
        table: "tenant_servers",
        column: "admin_url_ciphertext",
        binding: Binding::server_admin_url,
    },
    SealedColumn {
        what: "Neon API keys",
        table: "tenant_servers",
        column: "api_key_ciphertext",
        binding: Binding::server_api_key,
    },
    SealedColumn {
        what: "Neon direct URIs",
        table: "tenants",
        column: "direct_uri_ciphertext",
        binding: Binding::tenant_direct_uri,
    },
    SealedColumn {
        what: "Neon pooled URIs",
        table: "tenants",
        column: "pooled_uri_ciphertext",
        binding: Binding::tenant_pooled_uri,
    },
    SealedColumn {
        what: "Neon branch URIs",
        table: "tenant_branches",
        column: "uri_ciphertext",
        binding: Binding::branch_uri,
    },
    SealedColumn {
        what: "webhook URLs",
        table: "webhooks",
        column: "url_ciphertext",
        binding: Binding::webhook_url,
    },
    SealedColumn {
        what: "webhook signing secrets",
        table: "webhooks",
        column: "secret_ciphertext",
        binding: Binding::webhook_secret,
    },
];

impl Catalog {
    /// Re-seals every credential with the current key, `batch` rows per transaction, then
    /// retires the previous keys. Safe to run while other processes work, and to re-run.
    pub async fn rotate_secrets(&self, batch: i64) -> Result<RotationReport> {
        let keyring = self.key()?;
        let header = keyring.current_id().sealed_header();
        let mut report = RotationReport {
            current: Some(keyring.current_id()),
            ..RotationReport::default()
        };
        // A second pass catches rows another process sealed with an old key meanwhile.
        for _ in 0..3 {
            let mut moved = 0;
            for column in &SEALED_COLUMNS {
                let n = self.reseal_column(column, &header, batch).await?;
                moved += n;
                match report.resealed.iter_mut().find(|(what, _)| *what == column.what) {
                    Some((_, total)) => *total += n,
                    None => report.resealed.push((column.what, n)),
                }
            }
            moved += self.reseal_key_check(&header).await?;
            if moved == 0 {
                break;
            }
        }
        report.retired = keyring.previous_ids();
        if !report.retired.is_empty() {
            let mut retired = self.retired_key_ids().await?;
            for id in &report.retired {
                if !retired.contains(id) {
                    retired.push(*id);
                }
            }
            let bytes: Vec<u8> = retired.iter().flat_map(|id| id.as_bytes().to_vec()).collect();
            sqlx::query(
                "INSERT INTO settings (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            )
            .bind(RETIRED_KEYS_SETTING)
            .bind(bytes)
            .execute(self.pool())
            .await?;
        }
        Ok(report)
    }

    async fn reseal_column(&self, c: &SealedColumn, header: &[u8], batch: i64) -> Result<u64> {
        let keyring = self.key()?;
        let mut total = 0u64;
        let mut after = Uuid::nil();
        loop {
            let mut tx = self.pool().begin().await?;
            let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(&format!(
                "SELECT id, {col} FROM {table}
                  WHERE {col} IS NOT NULL AND substring({col} FROM 1 FOR $1) IS DISTINCT FROM $2 AND id > $3
                  ORDER BY id LIMIT $4 FOR UPDATE",
                col = c.column,
                table = c.table
            ))
            .bind(header.len() as i32)
            .bind(header)
            .bind(after)
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
            let Some((last, _)) = rows.last() else {
                return Ok(total);
            };
            after = *last;
            let mut ids = Vec::with_capacity(rows.len());
            let mut sealed = Vec::with_capacity(rows.len());
            for (id, old) in &rows {
                let binding = (c.binding)(*id);
                let plain = keyring
                    .decrypt(old, &binding)
                    .with_context(|| format!("re-sealing {} row {id}", c.table))?;
                ids.push(*id);
                sealed.push(keyring.encrypt(&plain, &binding));
            }
            sqlx::query(&format!(
                "UPDATE {table} t SET {col} = x.sealed FROM unnest($1::uuid[], $2::bytea[]) AS x(id, sealed)
                  WHERE t.id = x.id",
                col = c.column,
                table = c.table
            ))
            .bind(&ids)
            .bind(&sealed)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            total += rows.len() as u64;
        }
    }

    async fn reseal_key_check(&self, header: &[u8]) -> Result<u64> {
        let keyring = self.key()?;
        let binding = Binding::setting(KEY_CHECK_SETTING);
        let mut tx = self.pool().begin().await?;
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1 FOR UPDATE")
                .bind(KEY_CHECK_SETTING)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(stored) = stored.filter(|v| !v.starts_with(header)) else {
            return Ok(0);
        };
        let plain = keyring
            .decrypt(&stored, &binding)
            .context("re-sealing the key check")?;
        sqlx::query("UPDATE settings SET value = $2, updated_at = now() WHERE name = $1")
            .bind(KEY_CHECK_SETTING)
            .bind(keyring.encrypt(&plain, &binding))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(1)
    }
}
