//! The warm pool in the catalog (`warm_databases`): entries a refill creates per server,
//! the claim a provision makes (one row lock: an entry goes to one tenant, and a tenant
//! whose provision is retried finds the entry it claimed), and the pool's state per server
//! for `server list` and `/metrics`.

use super::error::Result;
use super::Catalog;
use uuid::Uuid;

/// One pool database.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WarmDatabase {
    pub id: Uuid,
    pub server_id: Uuid,
    pub database_name: String,
    pub role_name: String,
    pub status: String,
    pub schema_version: Option<i64>,
    pub tenant_id: Option<Uuid>,
    /// `MigrationSet::digest` of the set it was built or last migrated to.
    pub set_digest: Option<Vec<u8>>,
}

/// A self-hosted server as the refill sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WarmServer {
    pub id: Uuid,
    pub name: String,
    /// The server's own pool size, if set (`server set --warm-pool`).
    pub warm_pool: Option<i32>,
    /// `active` servers keep a pool; draining ones drop theirs.
    pub active: bool,
    /// Whether it has pool entries now (a pool switched off is still emptied).
    pub has_entries: bool,
}

const WARM_COLUMNS: &str =
    "id, server_id, database_name, role_name, status, schema_version, tenant_id, set_digest";

impl Catalog {
    /// Self-hosted servers not removed.
    pub async fn warm_servers(&self) -> Result<Vec<WarmServer>> {
        Ok(sqlx::query_as(
            "SELECT s.id, s.name::text AS name, s.warm_pool, s.status = 'active' AS active,
                    EXISTS (SELECT 1 FROM warm_databases w WHERE w.server_id = s.id) AS has_entries
               FROM tenant_servers s WHERE s.kind = 'postgres' AND s.status <> 'removed' ORDER BY s.name",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// The entry this tenant claimed before (a retried provision), else a ready one on its
    /// server (the newest schema first) claimed for it now. `None`: the pool is empty.
    pub async fn claim_warm_database(
        &self,
        tenant_id: Uuid,
        server_id: Uuid,
    ) -> Result<Option<WarmDatabase>> {
        if let Some(mine) = sqlx::query_as(&format!(
            "SELECT {WARM_COLUMNS} FROM warm_databases WHERE tenant_id = $1"
        ))
        .bind(tenant_id)
        .fetch_optional(self.pool())
        .await?
        {
            return Ok(Some(mine));
        }
        Ok(sqlx::query_as(&format!(
            "WITH taken AS (
                UPDATE warm_databases SET status = 'claimed', tenant_id = $1, claimed_at = now()
                 WHERE id = (SELECT id FROM warm_databases WHERE server_id = $2 AND status = 'ready'
                              ORDER BY schema_version DESC NULLS LAST, ready_at LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING {WARM_COLUMNS}),
             touched AS (
                UPDATE tenant_servers SET warm_claimed_at = now() WHERE id = $2 AND EXISTS (SELECT 1 FROM taken))
             SELECT * FROM taken"
        ))
        .bind(tenant_id)
        .bind(server_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// The tenant is active on its claimed entry: the entry is no longer the pool's.
    pub async fn forget_warm_claim(&self, tenant_id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM warm_databases WHERE tenant_id = $1")
            .bind(tenant_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The server's entries, oldest first.
    pub async fn warm_databases(&self, server_id: Uuid) -> Result<Vec<WarmDatabase>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {WARM_COLUMNS} FROM warm_databases WHERE server_id = $1 ORDER BY created_at"
        ))
        .bind(server_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Records a new entry being created.
    pub async fn insert_warm_database(&self, server_id: Uuid, database: &str, role: &str) -> Result<Uuid> {
        Ok(sqlx::query_scalar(
            "INSERT INTO warm_databases (server_id, database_name, role_name) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(server_id)
        .bind(database)
        .bind(role)
        .fetch_one(self.pool())
        .await?)
    }

    /// Takes a ready entry out of the pool for the refill (to migrate it: `creating`, or to
    /// drop it: `dropping`), unless a claim has it. Whether it was taken.
    pub async fn take_warm_database(&self, id: Uuid, to: &str) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE warm_databases SET status = $2
              WHERE id = (SELECT id FROM warm_databases WHERE id = $1 AND status = 'ready' FOR UPDATE SKIP LOCKED)",
        )
        .bind(id)
        .bind(to)
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1)
    }

    /// The entry is built (or migrated) to `version` and claimable.
    pub async fn warm_database_ready(&self, id: Uuid, version: Option<i64>, set_digest: &[u8]) -> Result<()> {
        sqlx::query(
            "UPDATE warm_databases SET status = 'ready', schema_version = $2, set_digest = $3, ready_at = now()
              WHERE id = $1",
        )
        .bind(id)
        .bind(version)
        .bind(set_digest)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn delete_warm_database(&self, id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM warm_databases WHERE id = $1 AND status <> 'claimed'")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Claimed entries whose tenant is past provisioning (its provision finished, or it
    /// was deleted) are forgotten; returns how many.
    pub async fn forget_finished_warm_claims(&self) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM warm_databases w USING tenants t
              WHERE w.tenant_id = t.id AND t.status <> 'provisioning'",
        )
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// What the refill last worked to on the server, and whether the pool is short of it
    /// (`warm_short_since` keeps the first time it was found short).
    pub async fn record_warm_state(&self, server_id: Uuid, target: i32, short: bool) -> Result<()> {
        sqlx::query(
            "UPDATE tenant_servers SET warm_target = $2,
                    warm_short_since = CASE WHEN $3 THEN coalesce(warm_short_since, now()) END
              WHERE id = $1",
        )
        .bind(server_id)
        .bind(target)
        .bind(short)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Seconds since the last claim on the server (`None`: never claimed).
    pub async fn since_last_warm_claim(&self, server_id: Uuid) -> Result<Option<f64>> {
        Ok(sqlx::query_scalar(
            "SELECT extract(epoch FROM now() - warm_claimed_at)::float8 FROM tenant_servers WHERE id = $1",
        )
        .bind(server_id)
        .fetch_one(self.pool())
        .await?)
    }

    /// Sets (or, with `None`, clears) a server's own pool size.
    pub async fn set_server_warm_pool(&self, server_id: Uuid, size: Option<i32>) -> Result<()> {
        sqlx::query("UPDATE tenant_servers SET warm_pool = $2 WHERE id = $1")
            .bind(server_id)
            .bind(size)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
