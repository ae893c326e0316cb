//! Crypto-mode sessions: each step's state kept once per session, the
//! hash cache, and the errors every step shares.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use airlock_policy::{Control, Refusal};
use airlock_protocol::CryptoFragment;
use airlock_psi::{grouped, tagged};
use curve25519_dalek::ristretto::RistrettoPoint;
use datafusion::arrow::array::ArrayRef;

use crate::{Node, NodeError};

/// Sessions older than this are dropped.
pub(super) const SESSION_TTL: Duration = Duration::from_secs(600);

/// Most sessions a node holds at once.
pub(super) const MAX_SESSIONS: usize = 64;

/// Most cached hashes (identifier to group point).
pub(super) const MAX_CACHED: usize = 4_000_000;

pub(super) enum State {
    /// The node that matches (its steps are checked in order, each once,
    /// by the protocol's own state).
    Matcher {
        matcher: Box<grouped::Matcher>,
        fragment: Box<CryptoFragment>,
        /// Its noise when the grouper receives the result.
        dp: Option<Box<CryptoDp>>,
        k: u64,
    },
    /// The node that groups.
    Grouper {
        grouper: Box<grouped::Grouper>,
        fragment: Box<CryptoFragment>,
        dp: Option<Box<CryptoDp>>,
        /// The label of each group, one array per group column.
        labels: Vec<ArrayRef>,
        k: u64,
    },
    /// By the asker's groups: the responder's node, which matches and
    /// forms every count.
    TaggedMatcher {
        matcher: Box<tagged::Matcher>,
        fragment: Box<CryptoFragment>,
        dp: Option<Box<CryptoDp>>,
        k: u64,
    },
    /// By the asker's groups: the asker's node, which tags its people with
    /// their groups and opens the released counts.
    TaggedGrouper {
        grouper: Box<tagged::Grouper>,
        fragment: Box<CryptoFragment>,
        labels: Vec<ArrayRef>,
        k: u64,
    },
}

/// Which groups a grouped side forms.
pub(super) enum Groups {
    /// The groups its rows fall in, in order of first appearance; a column
    /// with `Some` keys keeps only rows whose key is listed.
    Seen(Vec<Option<HashSet<String>>>),
    /// Exactly every combination of each column's keys, in order, whether
    /// anyone is in it or not (released groups that do not depend on the
    /// data).
    All(Vec<Vec<String>>),
}

/// The node's crypto-mode sessions and its hash cache.
#[derive(Default)]
pub struct Sessions {
    pub(super) open: Mutex<HashMap<[u8; 16], (Instant, State)>>,
    /// Identifier to group point, under the hash key they were made with
    /// (a new collaboration secret empties it).
    pub(super) hashes: Mutex<([u8; 32], HashMap<String, RistrettoPoint>)>,
}

pub(super) fn refuse(
    table: Option<&str>,
    column: Option<&str>,
    why: impl Into<String>,
) -> NodeError {
    let mut r = Refusal::new(Control::CryptoMode, why);
    if let Some(t) = table {
        r = r.table(t, None);
    }
    if let Some(c) = column {
        r = r.column(c);
    }
    NodeError::Refused(r)
}

pub(super) fn session_id(hex: &str) -> Result<[u8; 16], NodeError> {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>();
    match bytes {
        Some(b) if b.len() == 16 && hex.len() == 32 => {
            let mut out = [0u8; 16];
            out.copy_from_slice(&b);
            Ok(out)
        }
        _ => Err(NodeError::BadFragment(
            "a session id is 32 hex characters".into(),
        )),
    }
}

/// The session id in the header of the asker's first message (after the
/// protocol's magic and the message kind).
pub(super) fn session_of(m1: &[u8]) -> Result<[u8; 16], NodeError> {
    let start = airlock_psi::protocol::MAGIC.len() + 1;
    m1.get(start..start + 16)
        .and_then(|s| <[u8; 16]>::try_from(s).ok())
        .ok_or_else(|| NodeError::BadFragment("a crypto-mode message is truncated".into()))
}

pub(super) fn psi_error(e: airlock_psi::PsiError) -> NodeError {
    NodeError::BadFragment(e.to_string())
}

impl Node {
    pub(super) fn store(&self, session: [u8; 16], state: State) -> Result<(), NodeError> {
        let mut open = self
            .psi
            .open
            .lock()
            .map_err(|_| NodeError::Local("the session table is poisoned".into()))?;
        open.retain(|_, (t, _)| t.elapsed() < SESSION_TTL);
        if open.len() >= MAX_SESSIONS {
            return Err(NodeError::Local(
                "too many crypto-mode queries at once".into(),
            ));
        }
        if open.contains_key(&session) {
            return Err(NodeError::BadFragment("that session exists already".into()));
        }
        open.insert(session, (Instant::now(), state));
        Ok(())
    }

    pub(super) fn take(&self, session: &str) -> Result<State, NodeError> {
        let id = session_id(session)?;
        let mut open = self
            .psi
            .open
            .lock()
            .map_err(|_| NodeError::Local("the session table is poisoned".into()))?;
        open.remove(&id)
            .filter(|(t, _)| t.elapsed() < SESSION_TTL)
            .map(|(_, s)| s)
            .ok_or_else(|| {
                NodeError::BadFragment("no such crypto-mode session on this node".into())
            })
    }
}

/// Differential privacy of a crypto-mode query, from the node's own copy
/// of the rules: contribution bounds and the noise of each released value.
pub(super) struct CryptoDp {
    /// At most this many rows per person enter its sum.
    pub(super) max_rows: usize,
    /// A person counts in at most this many groups.
    pub(super) max_groups: usize,
    /// Clamping bounds of the measure (non-negative).
    pub(super) bounds: Option<(i64, i64)>,
    pub(super) count: airlock_privacy::Laplace,
    pub(super) sum: Option<airlock_privacy::Laplace>,
    pub(super) rows: Option<airlock_privacy::Laplace>,
    /// The mechanism of the dummies, with its share of epsilon and a
    /// quarter of delta: they hide the overlap's size and both nodes'
    /// counts.
    pub(super) dummies: Option<(airlock_privacy::Laplace, f64)>,
    /// What the query costs (as the hub debited it).
    pub(super) cost: airlock_guard::dp::DpCost,
}
