//! The records the store returns.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// Which database a [`crate::Store`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A SQLite file (the default).
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

impl Backend {
    /// `"sqlite"` or `"postgres"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The backend a store URL names: `sqlite:…` or `postgres://…`
    /// (`postgresql://…`).
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        let lower = url.get(..14).unwrap_or(url).to_ascii_lowercase();
        if lower.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            // Name the scheme only: the rest may hold a password.
            let scheme = url.split(':').next().unwrap_or_default();
            let scheme: String = scheme.chars().take(20).collect();
            Err(StoreError::BadInput(format!(
                "unsupported store URL scheme {scheme:?}: use sqlite:PATH or postgres://USER:PASSWORD@HOST/DB"
            )))
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A newly issued API token. `token` is shown to its member once and never
/// stored: the store keeps only SHA-256 of its secret part.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The token's public id (the `<id>` in `alk_<id>_<secret>`), used to
    /// revoke it.
    pub id: String,
    /// The whole token, `alk_<id>_<secret>`.
    pub token: String,
    /// The member it authenticates.
    pub member: String,
    /// When it stops working, unix milliseconds; `None` for never.
    pub expires_at_ms: Option<i64>,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .field("member", &self.member)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// One version of a collaboration's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollabRecord {
    /// The collaboration's name (unique in the hub).
    pub name: String,
    /// The collaboration's id, fixed at creation.
    pub id: String,
    /// 1 at creation, one more at each apply.
    pub version: i64,
    /// The definition's TOML text.
    pub toml: String,
    /// Lowercase hex SHA-256 of `toml`.
    pub sha256: String,
    /// The member who created or applied this version.
    pub created_by: String,
    /// When this version was stored, unix milliseconds.
    pub created_at_ms: i64,
}

/// A member's decision on one collaboration version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Collaboration name.
    pub collab: String,
    /// SHA-256 of the version's text the decision is about.
    pub sha256: String,
    /// The deciding member.
    pub member: String,
    /// The version that text had when the member decided.
    pub version: i64,
    /// Approved (with `signature`) or refused (with `reason`).
    pub approved: bool,
    /// The member's Ed25519 signature (hex); empty for a refusal.
    pub signature: String,
    /// Why the member refused (its own words); empty for an approval.
    pub reason: String,
    /// When, unix milliseconds.
    pub at_ms: i64,
}

/// Where a query is in its life.
///
/// `Submitted → Checked → Running → Released`, and from `Submitted`,
/// `Checked` or `Running` to `Refused` or `Failed`. `Released`, `Refused`
/// and `Failed` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryState {
    /// Received from a member, not yet checked.
    Submitted,
    /// Passed the policy checks.
    Checked,
    /// Being executed.
    Running,
    /// Done; its result is stored and may be fetched.
    Released,
    /// Refused by policy.
    Refused,
    /// Failed while checked or run (or the hub restarted meanwhile).
    Failed,
}

impl QueryState {
    /// Every state, in lifecycle order.
    pub const ALL: [QueryState; 6] = [
        QueryState::Submitted,
        QueryState::Checked,
        QueryState::Running,
        QueryState::Released,
        QueryState::Refused,
        QueryState::Failed,
    ];

    /// The lowercase name: `"submitted"`, `"checked"`, …
    pub fn as_str(self) -> &'static str {
        match self {
            QueryState::Submitted => "submitted",
            QueryState::Checked => "checked",
            QueryState::Running => "running",
            QueryState::Released => "released",
            QueryState::Refused => "refused",
            QueryState::Failed => "failed",
        }
    }

    /// Whether the state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            QueryState::Released | QueryState::Refused | QueryState::Failed
        )
    }

    /// Whether a query may move from `self` to `to`.
    pub fn can_become(self, to: QueryState) -> bool {
        use QueryState::*;
        matches!(
            (self, to),
            (Submitted, Checked)
                | (Checked, Running)
                | (Running, Released)
                | (Submitted | Checked | Running, Refused | Failed)
        )
    }
}

impl fmt::Display for QueryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QueryState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueryState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StoreError::BadInput(format!("unknown query state {s:?}")))
    }
}

/// Where a released query's result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultPlace<'a> {
    /// Stored by the hub, to be fetched by members with `receive`.
    Stored,
    /// Deleted at the end of the collaboration's retention period.
    Deleted,
    /// Delivered to a destination of the querier's node (the hub keeps no
    /// copy); the text says where.
    Delivered(&'a str),
}

/// A query and where it is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRecord {
    /// Random id (32 lowercase hex characters).
    pub id: String,
    /// The collaboration (by name) it runs in.
    pub collab: String,
    /// The member who submitted it.
    pub member: String,
    /// The SQL text as submitted.
    pub sql: String,
    /// Its current state.
    pub state: QueryState,
    /// What the last transition said (a refusal's reason, an error), if
    /// anything.
    pub detail: Option<String>,
    /// The result's row count, once released.
    pub rows: Option<i64>,
    /// When it was submitted, unix milliseconds.
    pub created_at_ms: i64,
    /// When its state last changed, unix milliseconds.
    pub updated_at_ms: i64,
}

impl QueryRecord {
    /// Where the result of a released query is (`None` unless released),
    /// read as the store writes it: `release` leaves no detail,
    /// `release_delivered` says where the result went, and the retention
    /// sweep marks [`crate::RESULT_DELETED`].
    pub fn result_place(&self) -> Option<ResultPlace<'_>> {
        (self.state == QueryState::Released).then(|| match self.detail.as_deref() {
            None => ResultPlace::Stored,
            Some(d) if d == crate::RESULT_DELETED => ResultPlace::Deleted,
            Some(d) => ResultPlace::Delivered(d),
        })
    }
}
