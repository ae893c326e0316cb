//! Errors of the store, and the internal error of one transaction attempt.

use std::time::Duration;

use thiserror::Error;

/// Errors of the store.
///
/// [`StoreError::Database`] messages never include the values of SQL
/// parameters (they may be customer data): they name the operation that
/// failed and the database's own message, which quotes no values, except for
/// PostgreSQL data exceptions (SQLSTATE class 22), which can quote a value
/// and are reported by their code only.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The thing to create already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A query cannot move between these states (the move is not allowed, or
    /// another caller moved the query first).
    #[error("a query cannot go from {from} to {to}")]
    BadTransition {
        /// The query's state when the move was tried.
        from: String,
        /// The state asked for.
        to: String,
    },
    /// An argument or an input text is not acceptable.
    #[error("bad input: {0}")]
    BadInput(String),
    /// The database failed (or could not be opened).
    #[error("database error: {0}")]
    Database(String),
    /// A privacy-budget debit does not fit what is left of a budget in its
    /// current period (nothing was recorded). When both the collaboration's
    /// and the analyst's budget are too small, the collaboration's is
    /// reported.
    #[error("{}", overspend_message(*needed_epsilon, *left_epsilon, *needed_delta, *left_delta, scope))]
    Overspend {
        /// The epsilon the query needs.
        needed_epsilon: f64,
        /// The epsilon left in the budget named by `scope`.
        left_epsilon: f64,
        /// The delta the query needs.
        needed_delta: f64,
        /// The delta left in the budget named by `scope`.
        left_delta: f64,
        /// Which budget is too small: `"collaboration"` or `"analyst"`.
        scope: &'static str,
    },
}

// The only floating-point fields (of `Overspend`) are always finite: they
// are computed from the ledger's integer amounts, never NaN, so equality is
// reflexive.
impl Eq for StoreError {}

/// The message of [`StoreError::Overspend`]: names epsilon if it does not
/// fit, else delta.
fn overspend_message(
    needed_epsilon: f64,
    left_epsilon: f64,
    needed_delta: f64,
    left_delta: f64,
    scope: &str,
) -> String {
    let whose = match scope {
        "analyst" => "the analyst's budget",
        _ => "the collaboration's budget",
    };
    if needed_epsilon > left_epsilon {
        format!(
            "the query needs epsilon {needed_epsilon:.3} and {whose} has {left_epsilon:.3} left"
        )
    } else {
        format!("the query needs delta {needed_delta:e} and {whose} has {left_delta:e} left")
    }
}

/// How often a transaction that lost a race (a UNIQUE conflict, a
/// serialization failure, a busy SQLite file) is tried in all.
pub(crate) const MAX_ATTEMPTS: u32 = 100;

/// The error of one attempt at a transaction: either final, or from the
/// database (and then perhaps worth another attempt).
#[derive(Debug)]
pub(crate) enum TxError {
    Store(StoreError),
    Sql {
        what: &'static str,
        err: sqlx::Error,
    },
}

impl From<StoreError> for TxError {
    fn from(err: StoreError) -> Self {
        TxError::Store(err)
    }
}

impl From<TxError> for StoreError {
    fn from(err: TxError) -> Self {
        match err {
            TxError::Store(err) => err,
            TxError::Sql { what, err } => {
                StoreError::Database(format!("{what}: {}", describe(&err)))
            }
        }
    }
}

impl TxError {
    /// Whether the transaction, tried `attempts` times so far, lost a race
    /// and should be run again: a conflict (UNIQUE violation, serialization
    /// failure, deadlock) up to [`MAX_ATTEMPTS`] in all; a busy SQLite file,
    /// which already waited out its `busy_timeout`, up to 3.
    pub(crate) fn retry(&self, attempts: u32) -> bool {
        let TxError::Sql {
            err: sqlx::Error::Database(db),
            ..
        } = self
        else {
            return false;
        };
        match db.code().as_deref() {
            // PostgreSQL: unique_violation, serialization_failure, deadlock_detected;
            // SQLite: CONSTRAINT_PRIMARYKEY, CONSTRAINT_UNIQUE.
            Some("23505" | "40001" | "40P01" | "1555" | "2067") => attempts < MAX_ATTEMPTS,
            // SQLite: BUSY, LOCKED and their extended codes.
            Some("5" | "6" | "261" | "262" | "517" | "773") => attempts < 3,
            _ => false,
        }
    }
}

/// Attaches what was being done to a database error.
pub(crate) trait SqlContext<T> {
    /// Names the operation, for the message of the resulting error.
    fn ctx(self, what: &'static str) -> Result<T, TxError>;
}

impl<T> SqlContext<T> for Result<T, sqlx::Error> {
    fn ctx(self, what: &'static str) -> Result<T, TxError> {
        self.map_err(|err| TxError::Sql { what, err })
    }
}

/// A message for a database error that quotes no parameter values.
pub(crate) fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if code.starts_with("22") && code.len() == 5 {
                // PostgreSQL data exceptions may quote the offending value.
                return format!("invalid data (SQLSTATE {code}; details withheld)");
            }
            let mut out = db.message().to_owned();
            if let Some(constraint) = db.constraint() {
                out.push_str(&format!(" (constraint {constraint})"));
            }
            if !code.is_empty() {
                out.push_str(&format!(" [code {code}]"));
            }
            out
        }
        sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".into(),
        sqlx::Error::PoolClosed => "the store is closed".into(),
        sqlx::Error::Io(e) => format!("I/O error: {e}"),
        sqlx::Error::RowNotFound => "an expected row is missing".into(),
        sqlx::Error::ColumnNotFound(c) => format!("column {c} is missing"),
        sqlx::Error::ColumnDecode { index, .. } => format!("cannot decode column {index}"),
        sqlx::Error::Decode(_) => "cannot decode a value".into(),
        other => other.to_string(),
    }
}

/// Sleeps a little before another attempt, longer after each, with jitter.
pub(crate) async fn backoff(attempt: u32) {
    let cap_ms = 1u64 << attempt.min(6); // 2, 4, … 64 ms
    let mut byte = [0u8; 2];
    let jitter = match getrandom::getrandom(&mut byte) {
        Ok(()) => u64::from(u16::from_le_bytes(byte)) % (cap_ms + 1),
        Err(_) => cap_ms / 2,
    };
    tokio::time::sleep(Duration::from_millis(jitter.max(1))).await;
}
