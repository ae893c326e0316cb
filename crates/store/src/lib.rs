//! # airlock-store: the hub's durable state
//!
//! The hub keeps everything that must survive a restart here, in SQLite
//! (the default, one file) or PostgreSQL, through sqlx's `Any` driver and
//! one list of migrations that runs unchanged on both:
//!
//! - **API tokens** of members: `alk_<id>_<secret>` (16 and 64 random hex
//!   characters). Only SHA-256 of the secret is stored, compared in
//!   constant time; tokens may expire and be revoked.
//! - **Collaborations**, versioned: every create or apply stores a new row;
//!   the current definition is the highest version.
//! - **Queries** and their lifecycle (see [`QueryState`]), with the released
//!   result's bytes (Arrow IPC). Each transition is a guarded `UPDATE …
//!   WHERE id = ? AND state = <expected>`, so two callers can never both
//!   move a query out of a state (a query is released exactly once), and it
//!   appends its audit entry in the same transaction.
//! - **The audit log**: one append-only, hash-chained [`AuditEntry`] chain
//!   per collaboration name.
//! - **Differential-privacy budgets** ([`Budget`]) of collaborations and of
//!   analysts in them, and a ledger of the debits against them (see
//!   below).
//!
//! ## The audit chain
//!
//! Entries of a chain have `seq` 1, 2, 3, … and
//!
//! ```text
//! hash = hex(SHA-256(prev_hash || "\n" || JSON([collab, seq, at_ms, kind, actor, payload])))
//! ```
//!
//! where `prev_hash` is the previous entry's `hash` as hex text (64 zeros,
//! [`GENESIS_HASH`], for seq 1), `JSON(…)` is compact serde_json text (no
//! whitespace) of that array, and `payload` is in it as a JSON *string*
//! holding the payload's canonical JSON text ([`canonical_json`]: keys
//! sorted, no whitespace), so verifying never re-encodes a payload. Editing,
//! removing, reordering or mixing entries breaks the chain
//! ([`verify_chain`]); removal at the end shows only against a known head
//! ([`verify_chain_with_head`]). An append reads the head and inserts
//! `seq + 1` in one transaction, and `(collab, seq)` is the table's primary
//! key, so concurrent appends never fork a chain: the loser of a race
//! conflicts and its whole transaction is run again.
//!
//! ## Privacy budgets
//!
//! [`Store::set_budget`] sets the (epsilon, delta) a collaboration, or one
//! analyst in it, may spend per period (periods start when the budget is set
//! and repeat every `refresh_period_ms`, if given). [`Store::debit`] spends
//! a query's [`Cost`] in one transaction: it sums the debits of the current
//! periods, and records a new debit (audited as `budget.debited`) only if
//! the cost fits both the collaboration's and the analyst's budget, else
//! fails with [`StoreError::Overspend`]. Amounts are integers (epsilon in
//! units of 1e-9, delta of 1e-18), so sums never drift. Debits take turns:
//! `BEGIN IMMEDIATE` on SQLite, a `SELECT … FOR UPDATE` lock on the
//! collaboration's budget row on PostgreSQL; concurrent debits can never
//! together overspend. Debits are never deleted (nor refunded).
//!
//! ## Backends and durability
//!
//! [`Store::open`] takes `sqlite:PATH` / `sqlite://PATH` (the file is
//! created if missing) or `postgres://USER:PASSWORD@HOST:PORT/DB`. Every
//! SQLite connection runs with `journal_mode=WAL`, `synchronous=FULL` (a
//! committed transaction survives power loss), `foreign_keys=ON` and a 5 s
//! `busy_timeout`, and every writing transaction starts with `BEGIN
//! IMMEDIATE`, so writers queue instead of failing. PostgreSQL runs at its
//! default `READ COMMITTED`; the guarded updates and the primary keys keep
//! the invariants, and transactions that lose a race are retried.
//!
//! The schema is embedded SQL (`migrations/*.sql`) of `TEXT`, `BIGINT` and
//! `BYTEA` columns only; SQLite accepts the name `BYTEA` and stores a blob in
//! such a column unchanged, so the DDL is identical on both. Applied
//! versions are recorded in `schema_migrations`; each migration runs in its
//! own transaction, and reopening a store runs only the ones it lacks. SQL
//! uses `$1, $2, …` placeholders, which SQLite also understands.
//!
//! ```no_run
//! # async fn demo() -> Result<(), airlock_store::StoreError> {
//! use airlock_store::{QueryState, Store};
//! let store = Store::open("sqlite:/var/lib/airlock/hub.db").await?;
//! store.create_collaboration("demo", "c-1", "name = 'demo'", "alice").await?;
//! let q = store.submit_query("demo", "alice", "SELECT 1").await?;
//! store.transition(&q.id, QueryState::Checked, None).await?;
//! store.transition(&q.id, QueryState::Running, None).await?;
//! store.release(&q.id, b"arrow ipc bytes", 1).await?;
//! airlock_store::verify_chain(&store.audit("demo").await?).expect("intact");
//! # Ok(()) }
//! ```

mod audit;
mod budget;
mod collabs;
mod error;
mod migrate;
mod model;
mod queries;
mod tokens;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_protocol::AuditEvent;
use serde_json::Value;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};

pub use audit::{
    canonical_json, export_jsonl, parse_jsonl, verify_chain, verify_chain_with_head, AuditEntry,
    ChainBreak, GENESIS_HASH,
};
pub use budget::{Budget, Cost, Remaining};
pub use error::StoreError;
pub use model::{
    ApprovalRecord, Backend, CollabRecord, IssuedToken, QueryRecord, QueryState, ResultPlace,
};
pub use queries::{INTERRUPTED, RESULT_DELETED};

use error::{SqlContext, TxError};

/// How long to wait for a database connection (opening the store retries
/// connecting for this long) before failing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Pragmas every SQLite connection gets, in this order.
const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
];

/// Runs `$body` in a transaction (`$tx` names it inside), committing at the
/// end; if the attempt loses a race, runs it all again. `$body` uses `?` on
/// `Result<_, TxError>` and `Result<_, StoreError>`.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $body:block) => {{
        let store: &$crate::Store = $store;
        let mut attempts: u32 = 0;
        loop {
            let outcome: Result<_, $crate::error::TxError> = async {
                let mut $tx = store.begin().await?;
                let value: Result<_, $crate::error::TxError> = async { Ok($body) }.await;
                match value {
                    Ok(value) => {
                        $crate::error::SqlContext::ctx($tx.commit().await, "commit")?;
                        Ok(value)
                    }
                    // Rolled back here, not when dropped: a connection
                    // back in the pool with its transaction still open
                    // fails the next `BEGIN` on it ("non-zero transaction
                    // depth"), and on SQLite keeps the write lock.
                    Err(e) => {
                        let _ = $tx.rollback().await;
                        Err(e)
                    }
                }
            }
            .await;
            attempts += 1;
            match outcome {
                Ok(value) => break Ok(value),
                Err(err) if err.retry(attempts) => {
                    $crate::error::backoff(attempts).await;
                }
                Err(err) => break Err($crate::StoreError::from(err)),
            }
        }
    }};
}
pub(crate) use in_tx;

/// The hub's durable state: a connection pool to SQLite or PostgreSQL.
/// Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) the store at `url` and brings its schema
    /// up to date.
    ///
    /// `url` is `sqlite:PATH` or `sqlite://PATH` (the file is created if
    /// missing; every connection gets `journal_mode=WAL`,
    /// `synchronous=FULL`, `foreign_keys=ON`, `busy_timeout` 5 s), or
    /// `postgres://…` / `postgresql://…` (sqlx's URL parameters apply, e.g.
    /// `?options=-c%20search_path%3Dmy_schema`). Errors never quote the URL.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let pool = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            for pragma in SQLITE_PRAGMAS {
                                conn.execute(*pragma).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&sqlite_url(url)?)
                    .await
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(10)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect(url)
                    .await
            }
        }
        .map_err(|e| {
            StoreError::Database(format!(
                "cannot open the {backend} store: {}",
                error::describe(&e)
            ))
        })?;
        let store = Store { pool, backend };
        migrate::run(&store).await?;
        Ok(store)
    }

    /// Which database this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying connection pool, for diagnostics and tests. Writing
    /// through it bypasses the store's invariants (guarded transitions, the
    /// audit chain): don't.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection; later calls fail. Waits for connections in
    /// use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Appends an entry to `collab`'s audit chain; `payload` is stored as
    /// canonical JSON text.
    pub async fn append_audit(
        &self,
        collab: &str,
        kind: &str,
        actor: &str,
        payload: Value,
    ) -> Result<AuditEntry, StoreError> {
        check_text("collaboration name", collab)?;
        check_text("audit kind", kind)?;
        check_text("audit actor", actor)?;
        in_tx!(self, |tx| {
            append_audit_in(&mut tx, collab, kind, actor, &payload).await?
        })
    }

    /// Appends `event` by `actor` to `collab`'s audit chain: its kind's
    /// text and its payload ([`AuditEvent`]: every writer of a known kind
    /// goes through here or [`append_event_in`]).
    pub async fn record(
        &self,
        collab: &str,
        actor: &str,
        event: &AuditEvent,
    ) -> Result<AuditEntry, StoreError> {
        self.append_audit(collab, event.kind().as_str(), actor, event.payload())
            .await
    }

    /// `collab`'s audit chain, in seq order (empty if it has none).
    pub async fn audit(&self, collab: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT collab, seq, at_ms, kind, actor, payload, prev_hash, hash \
             FROM audit_log WHERE collab = $1 ORDER BY seq",
        )
        .bind(collab)
        .fetch_all(&self.pool)
        .await
        .ctx("read the audit log")?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(audit_from_row(row)?);
        }
        Ok(out)
    }

    /// Starts a writing transaction (`BEGIN IMMEDIATE` on SQLite).
    async fn begin(&self) -> Result<Transaction<'static, Any>, TxError> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
        .ctx("begin a transaction")
    }
}

/// Rewrites a `sqlite:` URL for sqlx, adding `mode=rwc` (create the file if
/// missing) unless a mode is given.
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .get(7..)
        .ok_or_else(|| StoreError::BadInput("empty SQLite path".into()))?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, params) = match rest.split_once('?') {
        Some((path, params)) => (path, Some(params)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(StoreError::BadInput(
            "a SQLite store URL needs a path: sqlite:PATH".into(),
        ));
    }
    Ok(match params {
        Some(p) if p.split('&').any(|kv| kv.starts_with("mode=")) => format!("sqlite:{path}?{p}"),
        Some(p) if !p.is_empty() => format!("sqlite:{path}?{p}&mode=rwc"),
        _ => format!("sqlite:{path}?mode=rwc"),
    })
}

/// Unix milliseconds now (the clock of every timestamp the store keeps).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Lowercase hex of `n` random bytes.
pub fn random_hex(n: usize) -> Result<String, StoreError> {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).map_err(|e| {
        StoreError::Database(format!("the system's random number generator failed: {e}"))
    })?;
    Ok(hex::encode(bytes))
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Refuses an empty name, or text PostgreSQL cannot store (NUL), the same
/// way on both backends.
pub(crate) fn check_text(what: &str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::BadInput(format!("{what} is empty")));
    }
    check_nul(what, value)
}

/// Refuses text with a NUL character (PostgreSQL cannot store it).
pub(crate) fn check_nul(what: &str, value: &str) -> Result<(), StoreError> {
    if value.contains('\0') {
        return Err(StoreError::BadInput(format!(
            "{what} contains a NUL character"
        )));
    }
    Ok(())
}

/// Appends to `collab`'s chain inside the caller's transaction.
/// Appends `event` inside a transaction (see [`Store::record`]).
pub(crate) async fn append_event_in(
    conn: &mut AnyConnection,
    collab: &str,
    actor: &str,
    event: &AuditEvent,
) -> Result<AuditEntry, TxError> {
    append_audit_in(conn, collab, event.kind().as_str(), actor, &event.payload()).await
}

pub(crate) async fn append_audit_in(
    conn: &mut AnyConnection,
    collab: &str,
    kind: &str,
    actor: &str,
    payload: &Value,
) -> Result<AuditEntry, TxError> {
    let head: Option<(i64, i64, String)> = sqlx::query_as(
        "SELECT seq, at_ms, hash FROM audit_log WHERE collab = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(collab)
    .fetch_optional(&mut *conn)
    .await
    .ctx("read the audit head")?;
    let (seq, at_ms, prev_hash) = match head {
        Some((seq, at_ms, hash)) => (seq + 1, now_ms().max(at_ms), hash),
        None => (1, now_ms(), GENESIS_HASH.to_string()),
    };
    let payload = canonical_json(payload);
    let hash = audit::entry_hash(&prev_hash, collab, seq, at_ms, kind, actor, &payload);
    sqlx::query(
        "INSERT INTO audit_log (collab, seq, at_ms, kind, actor, payload, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(collab)
    .bind(seq)
    .bind(at_ms)
    .bind(kind)
    .bind(actor)
    .bind(&payload)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *conn)
    .await
    .ctx("append an audit entry")?;
    Ok(AuditEntry {
        collab: collab.to_owned(),
        seq,
        at_ms,
        kind: kind.to_owned(),
        actor: actor.to_owned(),
        payload,
        prev_hash,
        hash,
    })
}

fn audit_from_row(row: &sqlx::any::AnyRow) -> Result<AuditEntry, TxError> {
    use sqlx::Row;
    let get = |e| TxError::Sql {
        what: "read an audit entry",
        err: e,
    };
    Ok(AuditEntry {
        collab: row.try_get("collab").map_err(get)?,
        seq: row.try_get("seq").map_err(get)?,
        at_ms: row.try_get("at_ms").map_err(get)?,
        kind: row.try_get("kind").map_err(get)?,
        actor: row.try_get("actor").map_err(get)?,
        payload: row.try_get("payload").map_err(get)?,
        prev_hash: row.try_get("prev_hash").map_err(get)?,
        hash: row.try_get("hash").map_err(get)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        let u = |s| sqlite_url(s).expect("valid");
        assert_eq!(u("sqlite:/a/b.db"), "sqlite:/a/b.db?mode=rwc");
        assert_eq!(u("sqlite:///a/b.db"), "sqlite:/a/b.db?mode=rwc");
        assert_eq!(u("sqlite://rel.db"), "sqlite:rel.db?mode=rwc");
        assert_eq!(
            u("sqlite:rel.db?cache=private"),
            "sqlite:rel.db?cache=private&mode=rwc"
        );
        assert_eq!(u("sqlite:/a.db?mode=ro"), "sqlite:/a.db?mode=ro");
        assert!(sqlite_url("sqlite:").is_err());
        assert!(sqlite_url("sqlite://").is_err());
    }

    #[test]
    fn backends_from_urls() {
        assert_eq!(Backend::from_url("sqlite:x").ok(), Some(Backend::Sqlite));
        assert_eq!(
            Backend::from_url("postgresql://u@h/d").ok(),
            Some(Backend::Postgres)
        );
        let err = Backend::from_url("mysql://root:hunter2@h/d").expect_err("unsupported");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
