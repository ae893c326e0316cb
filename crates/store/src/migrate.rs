//! Embedded schema migrations, the same SQL for SQLite and PostgreSQL.

use sqlx::AnyConnection;
use sqlx::{Any, Connection, Transaction};

use crate::error::{SqlContext, TxError};
use crate::{now_ms, Backend, Store, StoreError};

/// One schema version: its SQL, statements separated by lines ending in `;`.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// Every migration, in order. Never edit one that has shipped: add another.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "privacy budgets",
        sql: include_str!("../migrations/0002_budget.sql"),
    },
    Migration {
        version: 3,
        name: "approvals of collaboration versions",
        sql: include_str!("../migrations/0003_approvals.sql"),
    },
    Migration {
        version: 4,
        name: "tables each query read on a node",
        sql: include_str!("../migrations/0004_fragment_reads.sql"),
    },
];

/// Key of the PostgreSQL advisory lock that serializes migrating hubs.
const PG_MIGRATION_LOCK: i64 = 0x616972_6c6f636b; // "airlock"

/// The statements of a migration: `--` comment lines dropped, split after
/// each line that ends in `;`.
pub(crate) fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let stmt = current.trim().trim_end_matches(';').trim().to_owned();
            out.push(stmt);
            current.clear();
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// Brings the store's schema up to date: creates `schema_migrations` if
/// needed, then runs each migration it lacks in its own transaction.
pub(crate) async fn run(store: &Store) -> Result<(), StoreError> {
    let mut conn = store
        .pool
        .acquire()
        .await
        .ctx("connect to run migrations")?;

    let mut tx = begin(&mut conn, store.backend).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
         version BIGINT NOT NULL PRIMARY KEY, \
         name TEXT NOT NULL, \
         applied_at_ms BIGINT NOT NULL)",
    )
    .persistent(false)
    .execute(&mut *tx)
    .await
    .ctx("create schema_migrations")?;
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await
        .ctx("read schema_migrations")?;
    tx.commit().await.ctx("commit a migration")?;
    let known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
    if let Some(newest) = newest {
        if newest > known {
            return Err(StoreError::Database(format!(
                "the store's schema is version {newest}, newer than this build knows ({known}): \
                 upgrade airlock"
            )));
        }
    }

    for migration in MIGRATIONS {
        let mut tx = begin(&mut conn, store.backend).await?;
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations WHERE version = $1")
                .bind(migration.version)
                .fetch_one(&mut *tx)
                .await
                .ctx("read schema_migrations")?;
        if applied > 0 {
            tx.rollback().await.ctx("end a migration")?;
            continue;
        }
        for stmt in statements(migration.sql) {
            sqlx::query(&stmt)
                .persistent(false)
                .execute(&mut *tx)
                .await
                .ctx("run a schema migration")?;
        }
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .ctx("record a schema migration")?;
        tx.commit().await.ctx("commit a migration")?;
    }
    Ok(())
}

/// Begins a migration transaction on `conn`, holding (on PostgreSQL) the
/// migration advisory lock until it ends, so that hubs opening one database
/// at once migrate one after the other.
async fn begin(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<Transaction<'_, Any>, TxError> {
    let mut tx = match backend {
        Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => conn.begin().await,
    }
    .ctx("begin a migration")?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .ctx("lock the schema for migration")?;
    }
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_split_into_statements() {
        let stmts = statements(MIGRATIONS[0].sql);
        assert!(stmts.len() >= 7, "{stmts:#?}");
        assert!(stmts.iter().all(|s| !s.contains(';') && !s.contains("--")));
        assert!(stmts[0].starts_with("CREATE TABLE tokens"));
    }

    #[test]
    fn migration_versions_increase() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
    }
}
