//! Per-tenant limits on a self-hosted server: the role's connection limit and its session
//! defaults (`ALTER ROLE … SET`, stored in `pg_db_role_setting`), made so from the catalog
//! by every provision, `tenant set` and move. Values are integers from the catalog, never
//! text a user typed.

use crate::catalog::{TenantLimits, TenantRecord};
use crate::error::{JobError, ServerSql};
use crate::postgres::quote_ident;
use sqlx::PgPool;

/// The role-level settings pgfleet manages, with the catalog's value for each
/// (`None`: not set, the server's default applies).
fn wanted(limits: &TenantLimits) -> [(&'static str, Option<i64>); 3] {
    [
        ("statement_timeout", limits.statement_timeout_ms.map(i64::from)),
        (
            "idle_in_transaction_session_timeout",
            limits.idle_in_transaction_timeout_ms.map(i64::from),
        ),
        ("work_mem", limits.work_mem_kb.map(i64::from)),
    ]
}

/// Makes the role's managed settings match the tenant's limits (its connection limit is
/// `provision::ensure_role`'s). Returns the names of the settings it changed.
pub async fn ensure_role_settings(
    admin: &PgPool,
    tenant: &TenantRecord,
) -> Result<Vec<&'static str>, JobError> {
    ensure_settings_of(admin, &tenant.role_name, &tenant.limits()).await
}

/// `ensure_role_settings` for any role (a move's target role).
pub async fn ensure_settings_of(
    admin: &PgPool,
    role: &str,
    limits: &TenantLimits,
) -> Result<Vec<&'static str>, JobError> {
    let current: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
          WHERE r.rolname = $1 AND s.setdatabase = 0",
    )
    .bind(role)
    .fetch_all(admin)
    .await
    .doing("reading the tenant role's settings")?;
    let (changed, statements) = settings_statements(role, limits, &current);
    if !statements.is_empty() {
        sqlx::raw_sql(&statements.join("; "))
            .execute(admin)
            .await
            .doing("setting the tenant role's limits")?;
    }
    Ok(changed)
}

/// The settings that differ from `current` (`name=value` entries) and the statements that
/// make them so.
fn settings_statements(
    role: &str,
    limits: &TenantLimits,
    current: &[String],
) -> (Vec<&'static str>, Vec<String>) {
    let mut statements = Vec::new();
    let mut changed = Vec::new();
    for (name, value) in wanted(limits) {
        let prefix = format!("{name}=");
        let now = current.iter().find_map(|c| c.strip_prefix(prefix.as_str()));
        let want = value.map(|v| v.to_string());
        if now == want.as_deref() {
            continue;
        }
        changed.push(name);
        statements.push(match want {
            Some(v) => format!("ALTER ROLE {} SET {name} = {v}", quote_ident(role)),
            None => format!("ALTER ROLE {} RESET {name}", quote_ident(role)),
        });
    }
    (changed, statements)
}

/// Measures every live self-hosted tenant's database (`pg_database_size`), one query per
/// server, and records the sizes (for `/metrics` and quotas). Returns how many were
/// measured; a server that does not answer is skipped with a warning.
pub async fn measure_all(
    catalog: &crate::catalog::Catalog,
    servers: &crate::servers::TenantServers,
) -> anyhow::Result<usize> {
    use crate::status::ServerKind;
    let mut measured = 0;
    for server in catalog.servers().await? {
        if server.kind != ServerKind::Postgres || server.tenants == 0 {
            continue;
        }
        let ids = catalog.server_tenant_ids(server.id).await?;
        let names: Vec<String> = ids.iter().map(|(_, db)| db.clone()).collect();
        let admin = servers.admin_pool(server.id).await?;
        let sizes: Vec<(String, i64)> = match sqlx::query_as(
            "SELECT datname::text, pg_database_size(oid) FROM pg_database WHERE datname = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&admin)
        .await
        {
            Ok(sizes) => sizes,
            Err(e) => {
                tracing::warn!(server = %server.name, error = %e, "could not measure the server's tenant databases");
                continue;
            }
        };
        let id_of: std::collections::HashMap<&str, uuid::Uuid> =
            ids.iter().map(|(id, db)| (db.as_str(), *id)).collect();
        let by_id: Vec<(uuid::Uuid, i64)> = sizes
            .iter()
            .filter_map(|(db, bytes)| id_of.get(db.as_str()).map(|id| (*id, *bytes)))
            .collect();
        measured += by_id.len();
        catalog.record_storage(&by_id).await?;
    }
    Ok(measured)
}

/// Measures one tenant's database and records it (after a provision or a move, so a new
/// figure does not wait for the next sweep). A failure is only logged: the sweep retries.
pub async fn record_size(catalog: &crate::catalog::Catalog, admin: &PgPool, tenant: &TenantRecord) {
    let size: Result<Option<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT pg_database_size(oid) FROM pg_database WHERE datname = $1")
            .bind(&tenant.database_name)
            .fetch_optional(admin)
            .await;
    match size {
        Ok(Some(bytes)) => {
            if let Err(e) = catalog.record_storage(&[(tenant.id, bytes)]).await {
                tracing::warn!(error = %e, "could not record the tenant's storage");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not measure the tenant's database"),
    }
}

/// A size such as `64MB`, `10GB`, `512kB` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<i64, String> {
    let err = || format!("{text:?} is not a size: use e.g. 512kB, 64MB or 10GB");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: i64 = digits.parse().map_err(|_| err())?;
    let factor: i64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1 << 10,
        "mb" | "m" => 1 << 20,
        "gb" | "g" => 1 << 30,
        "tb" | "t" => 1 << 40,
        _ => return Err(err()),
    };
    n.checked_mul(factor).ok_or_else(err)
}

/// A duration in milliseconds for a session setting (`0` or `off`: not set), from the
/// forms `parse_duration` takes or `NNNms`.
pub fn parse_timeout_ms(text: &str) -> Result<Option<i32>, String> {
    let t = text.trim();
    if t == "off" || t == "0" {
        return Ok(None);
    }
    let ms: u128 = match t.strip_suffix("ms") {
        Some(n) => n
            .parse()
            .map_err(|_| format!("{text:?} is not a duration: use e.g. 500ms, 30s, 5m or off"))?,
        None => crate::config::parse_duration(t)?.as_millis(),
    };
    if ms == 0 {
        return Ok(None);
    }
    i32::try_from(ms)
        .map(Some)
        .map_err(|_| format!("{text:?} is too long for a Postgres timeout (at most 24 days)"))
}

/// `work_mem` in kB from a size (`off`: not set); Postgres's range is 64 kB … 2 TB.
pub fn parse_work_mem_kb(text: &str) -> Result<Option<i32>, String> {
    if text.trim() == "off" {
        return Ok(None);
    }
    let kb = parse_size(text)? / 1024;
    if kb < 64 {
        return Err(format!("work_mem {text:?} is below Postgres's minimum of 64kB"));
    }
    i32::try_from(kb)
        .map(Some)
        .map_err(|_| format!("work_mem {text:?} is above Postgres's maximum"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_and_timeouts() {
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("10GB"), Ok(10 << 30));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("'; DROP ROLE x; --").is_err());
        assert_eq!(parse_timeout_ms("30s"), Ok(Some(30_000)));
        assert_eq!(parse_timeout_ms("250ms"), Ok(Some(250)));
        assert_eq!(parse_timeout_ms("off"), Ok(None));
        assert!(parse_timeout_ms("40d").is_err());
        assert_eq!(parse_work_mem_kb("64MB"), Ok(Some(65_536)));
        assert!(parse_work_mem_kb("1kB").is_err());
    }
}
