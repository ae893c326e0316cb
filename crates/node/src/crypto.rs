//! Crypto mode on the node: its side of the private set intersection.
//!
//! The node checks the [`CryptoFragment`] against its own rules, reads its
//! own rows (consent applied, normalised, in place), hashes identities to
//! the group (keyed by the collaboration secret, cached in memory), and
//! runs its protocol steps with fresh secrets kept only for the session,
//! each step once, every message tagged for the other node with a key
//! derived from the collaboration secret (the hub cannot forge one). The
//! asker's node
//! turns the released groups into the result; the responder's node
//! applies k itself from its own copy of the policy.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_crypto::{PsiMacKey, PSI_TAG_LEN};
use airlock_policy::{Ability, AggFunction, AnalysisRule, ColumnRole, Control, Mode, Refusal};
use airlock_protocol::{
    CryptoFragment, CryptoOutput, CryptoRole, Predicate, PsiRequest, PsiResponse,
};
use airlock_psi::responder_groups::{self, Padding};
use airlock_psi::{Asker, Responder, Suite};
use base64::Engine as _;
use curve25519_dalek::ristretto::RistrettoPoint;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{col, lit};

use crate::{Node, NodeError};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
fn cast_expr(e: datafusion::logical_expr::Expr) -> datafusion::logical_expr::Expr {
    datafusion::logical_expr::cast(e, DataType::Int64)
}

/// Sessions older than this are dropped.
const SESSION_TTL: Duration = Duration::from_secs(600);
/// Most sessions a node holds at once.
const MAX_SESSIONS: usize = 64;
/// Most cached hashes (identifier to group point).
const MAX_CACHED: usize = 4_000_000;

enum State {
    Asker {
        asker: Box<Asker>,
        fragment: Box<CryptoFragment>,
        labels: Vec<ArrayRef>,
        k: u64,
        /// Step 3 ran: the state now only takes step 4's message, once
        /// (a second re-blinding would let the hub use the asker's secret
        /// as an oracle on points of its choice).
        reblinded: bool,
    },
    Responder {
        responder: Box<Responder>,
        dp: Option<Box<CryptoDp>>,
        /// The digest of the fragment this node checked.
        digest: [u8; 32],
    },
    /// The asker by the responder's groups (its steps are checked in
    /// order, each once, by the protocol's own state).
    GroupedAsker {
        asker: Box<responder_groups::Asker>,
        fragment: Box<CryptoFragment>,
        k: u64,
    },
    /// The responder by its own groups.
    GroupedResponder {
        responder: Box<responder_groups::Responder>,
        dp: Option<Box<CryptoDp>>,
        digest: [u8; 32],
        /// The label of each group, one array per group column.
        labels: Vec<ArrayRef>,
        /// How many groups (the real ones).
        groups: usize,
        k: u64,
    },
}

/// Differential privacy of a crypto-mode query, from the node's own copy
/// of the rules: contribution bounds, the noise of each released value,
/// and the partition selection threshold.
struct CryptoDp {
    /// At most this many rows per person enter its sum.
    max_rows: usize,
    /// A person counts in at most this many groups.
    max_groups: usize,
    /// Clamping bounds of the measure (non-negative).
    bounds: Option<(i64, i64)>,
    count: airlock_privacy::Laplace,
    sum: Option<airlock_privacy::Laplace>,
    rows: Option<airlock_privacy::Laplace>,
    /// Released groups need a noisy count of at least this (grouped
    /// queries); `None`: the one group is always released.
    threshold: Option<i64>,
    /// The mechanism of the dummies, with its share of epsilon and a
    /// quarter of delta: by the responder's groups they hide the overlap's
    /// size and the responder's and the asker's counts, by the asker's
    /// groups the responder's count (message 2's length).
    dummies: Option<(airlock_privacy::Laplace, f64)>,
    /// What the query costs (as the hub debited it).
    cost: airlock_guard::dp::DpCost,
}

/// Which groups a grouped side forms.
enum Groups {
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
    open: Mutex<HashMap<[u8; 16], (Instant, State)>>,
    /// Identifier to group point, under the hash key they were made with
    /// (a new collaboration secret empties it).
    hashes: Mutex<([u8; 32], HashMap<String, RistrettoPoint>)>,
}

fn refuse(table: Option<&str>, column: Option<&str>, why: impl Into<String>) -> NodeError {
    let mut r = Refusal::new(Control::CryptoMode, why);
    if let Some(t) = table {
        r = r.table(t, None);
    }
    if let Some(c) = column {
        r = r.column(c);
    }
    NodeError::Refused(r)
}

fn session_id(hex: &str) -> Result<[u8; 16], NodeError> {
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

fn decode(message: &str) -> Result<Vec<u8>, NodeError> {
    B64.decode(message.as_bytes())
        .map_err(|_| NodeError::BadFragment("a crypto-mode message is not base64".into()))
}

/// A protocol message and its tag, as the hub relays it.
fn sealed(key: &PsiMacKey, from: CryptoRole, step: u8, digest: &[u8; 32], m: Vec<u8>) -> Vec<u8> {
    let tag = key.tag(&mac_context(from, step, digest), &m);
    let mut out = m;
    out.extend_from_slice(&tag);
    out
}

/// The message of the other node, if its tag verifies: sent by `from` at
/// `step` of the query with `digest`, under this collaboration's key.
fn opened(
    key: &PsiMacKey,
    from: CryptoRole,
    step: u8,
    digest: &[u8; 32],
    message: &str,
) -> Result<Vec<u8>, NodeError> {
    let mut bytes = decode(message)?;
    if bytes.len() < PSI_TAG_LEN {
        return Err(NodeError::BadFragment(
            "a crypto-mode message carries no tag".into(),
        ));
    }
    let tag = bytes.split_off(bytes.len() - PSI_TAG_LEN);
    if !key.verify(&mac_context(from, step, digest), &bytes, &tag) {
        return Err(NodeError::BadFragment(format!(
            "message {step} of this crypto-mode query is not authenticated by the other member's node"
        )));
    }
    Ok(bytes)
}

/// The digest of a query's fragment as both nodes hold it (the role set to
/// the asker's): messages are authenticated for this query only.
fn fragment_digest(f: &CryptoFragment) -> Result<[u8; 32], NodeError> {
    use sha2::Digest as _;
    let mut same = f.clone();
    same.role = CryptoRole::Asker;
    let json = serde_json::to_vec(&same).map_err(|e| NodeError::Local(e.to_string()))?;
    Ok(sha2::Sha256::digest(&json).into())
}

/// What a message's tag covers besides the message (whose header holds
/// the step and the session): who sent it, the step, and the query.
fn mac_context(from: CryptoRole, step: u8, digest: &[u8; 32]) -> Vec<u8> {
    let mut c = b"airlock/v1/psi-message".to_vec();
    c.push(match from {
        CryptoRole::Asker => b'A',
        CryptoRole::Responder => b'R',
    });
    c.push(step);
    c.extend_from_slice(digest);
    c
}

/// How many encrypted numbers per person a query needs from the
/// responder: none for counts, its measure's sum, and for an average also
/// its row count. Both sides compute it from the fragment they checked.
fn values_needed(f: &CryptoFragment) -> usize {
    let avg = f.outputs.iter().any(|(_, o)| *o == CryptoOutput::Avg);
    match (&f.measure, avg) {
        (None, _) => 0,
        (Some(_), false) => 1,
        (Some(_), true) => 2,
    }
}

/// The responder's last message by its own groups: the protocol's
/// message, then the labels of the released groups (Arrow IPC: the group
/// index, then one column per group column), under the same tag.
/// `groups` are (index in the protocol's messages, index of `labels`).
fn with_labels(
    m6: Vec<u8>,
    labels: &[ArrayRef],
    groups: &[(u32, u32)],
) -> Result<Vec<u8>, NodeError> {
    let idx = UInt32Array::from(groups.iter().map(|(_, o)| *o).collect::<Vec<_>>());
    let wire = UInt32Array::from(groups.iter().map(|(w, _)| *w).collect::<Vec<_>>());
    let mut fields = vec![Field::new("group", DataType::UInt32, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(wire)];
    for (i, l) in labels.iter().enumerate() {
        let a = take(l, &idx, None).map_err(|_| NodeError::Execution)?;
        fields.push(Field::new(format!("l{i}"), a.data_type().clone(), true));
        columns.push(a);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|_| NodeError::Execution)?;
    let ipc = airlock_protocol::wire::encode_batches(&schema, &[batch])
        .map_err(|_| NodeError::Local("could not encode the labels".into()))?;
    let mut out = Vec::with_capacity(4 + m6.len() + ipc.len());
    out.extend_from_slice(&(m6.len() as u32).to_le_bytes());
    out.extend_from_slice(&m6);
    out.extend_from_slice(&ipc);
    Ok(out)
}

/// The protocol's message and the labels (group indices, and one array per
/// of the `columns` group columns) of [`with_labels`].
#[allow(clippy::type_complexity)]
fn without_labels(
    bytes: &[u8],
    columns: usize,
) -> Result<(&[u8], (Vec<u32>, Vec<ArrayRef>)), NodeError> {
    let bad = || NodeError::BadFragment("the responder's release is malformed".into());
    let len = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(bad)?;
    let m6 = bytes.get(4..4 + len).ok_or_else(bad)?;
    let (schema, partitions) =
        airlock_protocol::wire::decode_partitions(bytes[4 + len..].to_vec()).map_err(|_| bad())?;
    if schema.fields().len() != columns + 1 || schema.field(0).data_type() != &DataType::UInt32 {
        return Err(bad());
    }
    let batches: Vec<RecordBatch> = partitions.into_iter().flatten().collect();
    let whole = datafusion::arrow::compute::concat_batches(&schema, &batches).map_err(|_| bad())?;
    let groups = whole
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
    if groups.null_count() > 0 {
        return Err(bad());
    }
    Ok((
        m6,
        (groups.values().to_vec(), whole.columns()[1..].to_vec()),
    ))
}

/// The session id in the header of the asker's first message (after the
/// protocol's magic and the message kind).
fn session_of(m1: &[u8]) -> Result<[u8; 16], NodeError> {
    let start = airlock_psi::protocol::MAGIC.len() + 1;
    m1.get(start..start + 16)
        .and_then(|s| <[u8; 16]>::try_from(s).ok())
        .ok_or_else(|| NodeError::BadFragment("a crypto-mode message is truncated".into()))
}

fn psi_error(e: airlock_psi::PsiError) -> NodeError {
    NodeError::BadFragment(e.to_string())
}

impl Node {
    /// The strictest k of the two tables, from this node's own policy.
    fn crypto_k(&self, f: &CryptoFragment) -> u64 {
        airlock_policy::strictest_k(
            [&f.asker.table, &f.responder.table]
                .iter()
                .filter_map(|t| self.collab.table(t)),
        )
    }

    /// The query's differential privacy, if both tables have a DP rule in
    /// this node's own policy.
    fn crypto_dp(&self, f: &CryptoFragment) -> Result<Option<CryptoDp>, NodeError> {
        let Some(strictest) =
            airlock_policy::StrictestDp::of(&self.collab, &[&f.asker.table, &f.responder.table])?
        else {
            return Ok(None);
        };
        // First: it refuses rules this query cannot run under (a delta of 0).
        let cost = airlock_guard::crypto_cost(&self.collab, f)?.ok_or(NodeError::Execution)?;
        let (epsilon, delta) = (strictest.epsilon, strictest.delta);
        let (max_rows, max_groups) = (strictest.max_rows, strictest.max_groups);
        let avg = f.outputs.iter().any(|(_, o)| *o == CryptoOutput::Avg);
        let bounds = match &f.measure {
            None => None,
            Some(m) => {
                let rule = self
                    .collab
                    .table(&f.measure_side().table)
                    .and_then(|t| t.dp())
                    .ok_or(NodeError::Execution)?;
                match rule.bounds.get(m) {
                    Some([lo, hi]) if *lo >= 0 => Some((*lo, *hi)),
                    _ => {
                        return Err(NodeError::Refused(
                            Refusal::new(
                                Control::DifferentialPrivacy,
                                "under differential privacy a summed measure needs non-negative clamping bounds in the rule",
                            )
                            .table(&f.measure_side().table, None)
                            .column(m),
                        ))
                    }
                }
            }
        };
        // Epsilon split evenly over the noisy values of each group and the
        // dummies: by the responder's groups three more, since one person
        // moves the observed overlap (matched and unmatched dummies of S,
        // one each) and the asker's count (its own dummies); the dummies
        // of L hide the responder's count, which a person of the overlap
        // leaves as the matched dummies make it look. By the asker's
        // groups one more: the dummies of message 2, which hide the
        // responder's count (each of its people is one item).
        let by_responder = f.groups_of == CryptoRole::Responder;
        let n = 1
            + usize::from(bounds.is_some())
            + usize::from(bounds.is_some() && avg)
            + if by_responder { 3 } else { 1 };
        let each = epsilon / n as f64;
        let (g, m) = (max_groups as f64, max_rows as f64);
        let noise = |sensitivity: f64| {
            airlock_privacy::Laplace::for_epsilon(each, sensitivity)
                .map_err(|e| NodeError::Local(e.to_string()))
        };
        let count = noise(g)?;
        let sum = match bounds {
            Some((_, hi)) => Some(noise(g * m * (hi.max(1)) as f64)?),
            None => None,
        };
        let rows = if bounds.is_some() && avg {
            Some(noise(g * m)?)
        } else {
            None
        };
        // By the responder's groups, three draws of a quarter of delta
        // each; by the asker's groups, one of a quarter, and partition
        // selection takes the rest (three quarters).
        let dummies = Some((noise(1.0)?, delta / 4.0));
        let selection_delta = delta * 0.75;
        let threshold = if f.group_columns.is_empty() || by_responder {
            None
        } else {
            // As in executor mode, with its share of delta.
            Some(count.partition_threshold(g, selection_delta, self.crypto_k(f)))
        };
        Ok(Some(CryptoDp {
            dummies,
            cost,
            max_rows: usize::try_from(max_rows).unwrap_or(usize::MAX),
            max_groups: max_groups as usize,
            bounds,
            count,
            sum,
            rows,
            threshold,
        }))
    }

    /// Checks a crypto fragment against this node's own rules.
    fn verify_crypto(&self, f: &CryptoFragment, role: CryptoRole) -> Result<(), NodeError> {
        let c = &self.collab;
        if c.config.collaboration.mode != Mode::Crypto {
            return Err(refuse(
                None,
                None,
                "this collaboration is not in crypto mode",
            ));
        }
        if f.collaboration != c.name() || f.role != role {
            return Err(NodeError::BadFragment(
                "the fragment is for another collaboration or role".into(),
            ));
        }
        if f.querier != f.asker.member || !c.has_ability(&f.querier, Ability::Query) {
            return Err(NodeError::Refused(Refusal::new(
                Control::Ability,
                "the asker is not a member with the 'query' ability",
            )));
        }
        let mine = match role {
            CryptoRole::Asker => &f.asker,
            CryptoRole::Responder => &f.responder,
        };
        let other = match role {
            CryptoRole::Asker => &f.responder,
            CryptoRole::Responder => &f.asker,
        };
        if mine.member != self.member
            || c.owner_of(&mine.table) != Some(self.member.as_str())
            || c.owner_of(&other.table) != Some(other.member.as_str())
            || other.member == self.member
        {
            return Err(refuse(
                Some(&mine.table),
                None,
                "this node does not hold that side of the query",
            ));
        }
        let table = c
            .table(&mine.table)
            .ok_or_else(|| NodeError::BadFragment("unknown table".into()))?;
        if matches!(table.rule, AnalysisRule::List { .. }) {
            return Err(refuse(
                Some(&mine.table),
                None,
                "a list rule releases no aggregates",
            ));
        }
        table
            .rule
            .admits(&f.querier, f.template.is_some())
            .map_err(|why| refuse(Some(&mine.table), None, why))?;
        if let Some(run) = &f.template {
            crate::verify::admit_run(
                c,
                &self.member,
                run,
                &f.querier,
                f.purpose.as_deref(),
                &mine.table,
            )?;
        }
        c.check_purpose(f.purpose.as_deref())
            .map_err(NodeError::Refused)?;
        let dimension = |col: &str| matches!(table.role(col), Some(ColumnRole::Dimension));
        for col in mine.filter.iter().flat_map(Predicate::columns) {
            if !dimension(col) {
                return Err(refuse(
                    Some(&mine.table),
                    Some(col),
                    "only dimensions may be filtered",
                ));
            }
        }
        // The node whose table is grouped by checks the groups; the other
        // checks the measure.
        match role == f.groups_of {
            true => {
                for g in &f.group_columns {
                    if !dimension(g) {
                        return Err(refuse(
                            Some(&mine.table),
                            Some(g),
                            "only dimensions may be grouped by",
                        ));
                    }
                }
            }
            false => {
                if let Some(m) = &f.measure {
                    let Some(ColumnRole::Measure(fs)) = table.role(m) else {
                        return Err(refuse(
                            Some(&mine.table),
                            Some(m),
                            "not a measure of this table",
                        ));
                    };
                    for (_, o) in &f.outputs {
                        let need = match o {
                            CryptoOutput::Sum => Some(AggFunction::Sum),
                            CryptoOutput::Avg => Some(AggFunction::Avg),
                            _ => None,
                        };
                        if let Some(n) = need {
                            if !fs.contains(&n) {
                                return Err(NodeError::Refused(
                                    Refusal::new(
                                        Control::DisallowedAggregate,
                                        "the rule does not allow this aggregate on the measure",
                                    )
                                    .table(&mine.table, Some(table.rule.kind()))
                                    .column(m),
                                ));
                            }
                        }
                    }
                } else if f
                    .outputs
                    .iter()
                    .any(|(_, o)| matches!(o, CryptoOutput::Sum | CryptoOutput::Avg))
                {
                    return Err(NodeError::BadFragment("a sum without a measure".into()));
                }
            }
        }
        Ok(())
    }

    /// This node's rows of `table` for a crypto query, consent applied.
    async fn crypto_rows(
        &self,
        f: &CryptoFragment,
        table: &str,
        filter: &Option<Predicate>,
        columns: Vec<datafusion::logical_expr::Expr>,
        group_identity: bool,
    ) -> Result<Vec<RecordBatch>, NodeError> {
        let view = self
            .view(f.purpose.as_deref(), table)
            .ok_or(NodeError::Execution)?;
        let mut df = self
            .ctx
            .read_table(view.clone())
            .map_err(|_| NodeError::Execution)?;
        if let Some(p) = filter {
            df = df
                .filter(airlock_protocol::expr::predicate_to_expr(p))
                .map_err(|_| NodeError::Execution)?;
        }
        let identity = &self
            .collab
            .table(table)
            .ok_or(NodeError::Execution)?
            .identity;
        df = df
            .filter(col(identity.as_str()).is_not_null())
            .map_err(|_| NodeError::Execution)?;
        if group_identity {
            df = df
                .aggregate(vec![col(identity.as_str())], columns)
                .map_err(|_| NodeError::Execution)?;
        } else {
            df = df.select(columns).map_err(|_| NodeError::Execution)?;
        }
        df.collect().await.map_err(|_| NodeError::Execution)
    }

    /// The hash key derived from the collaboration secret, which only the
    /// members' nodes hold.
    fn psi_hash_key(&self) -> Result<[u8; 32], NodeError> {
        self.derive_from_secret(|s| s.psi_hash_key(self.collab.id()))
    }

    /// A key derived from the collaboration secret, once it is delivered.
    fn derive_from_secret<T>(
        &self,
        derive: impl FnOnce(&airlock_crypto::CollaborationSecret) -> T,
    ) -> Result<T, NodeError> {
        let secret = self
            .secret
            .read()
            .map_err(|_| NodeError::Local("the secret lock is poisoned".into()))?;
        match secret.as_ref() {
            Some(s) => Ok(derive(s)),
            None => Err(NodeError::Local(
                "the collaboration secret has not been delivered to this node yet".into(),
            )),
        }
    }

    /// The key authenticating messages between the members' nodes.
    fn psi_mac_key(&self) -> Result<PsiMacKey, NodeError> {
        self.derive_from_secret(|s| s.psi_mac_key(self.collab.id()))
    }

    /// Hashes identifiers to the group (keyed), through the node's cache.
    fn hash_ids(&self, ids: &[&str]) -> Result<Vec<RistrettoPoint>, NodeError> {
        let key = self.psi_hash_key()?;
        let suite = Suite::new(self.collab.id(), key);
        let cached: Vec<Option<RistrettoPoint>> = match self.psi.hashes.lock() {
            Ok(mut c) => {
                if c.0 != key {
                    *c = (key, HashMap::new());
                }
                ids.iter().map(|i| c.1.get(*i).copied()).collect()
            }
            Err(_) => vec![None; ids.len()],
        };
        let missing: Vec<&[u8]> = ids
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(i, _)| i.as_bytes())
            .collect();
        let mut fresh = airlock_psi::hash_all(&suite, &missing).into_iter();
        let mut out = Vec::with_capacity(ids.len());
        let mut add = Vec::new();
        for (id, c) in ids.iter().zip(cached) {
            match c {
                Some(p) => out.push(p),
                None => {
                    let p = fresh.next().unwrap_or_default();
                    add.push(((*id).to_string(), p));
                    out.push(p);
                }
            }
        }
        if let Ok(mut c) = self.psi.hashes.lock() {
            if c.0 != key || c.1.len() + add.len() > MAX_CACHED {
                *c = (key, HashMap::new());
            }
            c.1.extend(add);
        }
        Ok(out)
    }

    fn store(&self, session: [u8; 16], state: State) -> Result<(), NodeError> {
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

    fn take(&self, session: &str) -> Result<State, NodeError> {
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

    /// Runs one step of a crypto-mode query (JSON [`PsiRequest`] in, JSON
    /// [`PsiResponse`] out): the node's whole crypto-mode interface. Each
    /// step runs once, in order: the session's state is taken out, and put
    /// back only if a step follows.
    pub async fn psi(&self, request: &[u8]) -> Result<Vec<u8>, NodeError> {
        let req: PsiRequest = serde_json::from_slice(request)
            .map_err(|e| NodeError::BadFragment(format!("not a crypto-mode step: {e}")))?;
        let key = self.psi_mac_key()?;
        use CryptoRole::{Asker as A, Responder as R};
        let wrong = |what: &str| {
            NodeError::BadFragment(format!(
                "this node is not the {what} of that session, or that step has run"
            ))
        };
        let out = match req {
            PsiRequest::Start { session, fragment } => {
                let digest = fragment_digest(&fragment)?;
                let m1 = match fragment.groups_of {
                    A => self.psi_start(&session, fragment).await?,
                    R => self.psi_start_grouped(&session, fragment).await?,
                };
                sealed(&key, A, 1, &digest, m1)
            }
            PsiRequest::Respond { fragment, message } => {
                // The node's own rules first: a refusal names the rule.
                self.verify_crypto(&fragment, CryptoRole::Responder)?;
                let digest = fragment_digest(&fragment)?;
                let m1 = opened(&key, A, 1, &digest, &message)?;
                let m2 = match fragment.groups_of {
                    A => self.psi_respond(fragment, &m1, digest).await?,
                    R => self.psi_respond_grouped(fragment, &m1, digest).await?,
                };
                sealed(&key, R, 2, &digest, m2)
            }
            PsiRequest::Reblind { session, message } => match self.take(&session)? {
                State::Asker {
                    mut asker,
                    fragment,
                    labels,
                    k,
                    reblinded: false,
                } => {
                    let digest = fragment_digest(&fragment)?;
                    let m2 = opened(&key, R, 2, &digest, &message)?;
                    let (m3, _) = asker.reblind(&m2).map_err(psi_error)?;
                    let m3 = sealed(&key, A, 3, &digest, m3);
                    self.store(
                        session_id(&session)?,
                        State::Asker {
                            asker,
                            fragment,
                            labels,
                            k,
                            reblinded: true,
                        },
                    )?;
                    m3
                }
                State::GroupedAsker {
                    mut asker,
                    fragment,
                    k,
                } => {
                    let digest = fragment_digest(&fragment)?;
                    let m2 = opened(&key, R, 2, &digest, &message)?;
                    let (m3, _, _) = asker.match_items(&m2).map_err(psi_error)?;
                    self.store(
                        session_id(&session)?,
                        State::GroupedAsker { asker, fragment, k },
                    )?;
                    sealed(&key, A, 3, &digest, m3)
                }
                _ => return Err(wrong("asker")),
            },
            PsiRequest::Finish { session, message } => match self.take(&session)? {
                State::Responder {
                    responder,
                    dp,
                    digest,
                } => {
                    let m3 = opened(&key, A, 3, &digest, &message)?;
                    let m4 = match dp {
                        None => responder.finish(&m3).map_err(psi_error)?.0,
                        Some(dp) => {
                            let release = |_: u32, count: u64| dp.release(count);
                            let policy = airlock_psi::Release {
                                max_groups_per_person: Some(dp.max_groups),
                                release: &release,
                            };
                            responder
                                .finish_with(&m3, Some(&policy))
                                .map_err(psi_error)?
                                .0
                        }
                    };
                    sealed(&key, R, 4, &digest, m4)
                }
                State::GroupedResponder {
                    mut responder,
                    dp,
                    digest,
                    labels,
                    groups,
                    k,
                } => {
                    let m3 = opened(&key, A, 3, &digest, &message)?;
                    responder.tally(&m3).map_err(psi_error)?;
                    match dp {
                        // Under differential privacy every (public) group
                        // is released with noise: no zero tests.
                        Some(dp) => {
                            let noise = |_: u32| dp.noise_all();
                            let (m6, all) = responder.release_all(&noise).map_err(psi_error)?;
                            debug_assert_eq!(all.len(), groups);
                            sealed(&key, R, 6, &digest, with_labels(m6, &labels, &all)?)
                        }
                        None => {
                            let m4 = responder.zero_tests(k).map_err(psi_error)?;
                            self.store(
                                session_id(&session)?,
                                State::GroupedResponder {
                                    responder,
                                    dp: None,
                                    digest,
                                    labels,
                                    groups,
                                    k,
                                },
                            )?;
                            sealed(&key, R, 4, &digest, m4)
                        }
                    }
                }
                _ => return Err(wrong("responder")),
            },
            PsiRequest::Check { session, message } => {
                let State::GroupedAsker {
                    mut asker,
                    fragment,
                    k,
                } = self.take(&session)?
                else {
                    return Err(wrong("asker"));
                };
                let digest = fragment_digest(&fragment)?;
                let m4 = opened(&key, R, 4, &digest, &message)?;
                let m5 = asker.passes(&m4, k).map_err(psi_error)?;
                self.store(
                    session_id(&session)?,
                    State::GroupedAsker { asker, fragment, k },
                )?;
                sealed(&key, A, 5, &digest, m5)
            }
            PsiRequest::Release { session, message } => {
                let State::GroupedResponder {
                    mut responder,
                    digest,
                    labels,
                    ..
                } = self.take(&session)?
                else {
                    return Err(wrong("responder"));
                };
                let m5 = opened(&key, A, 5, &digest, &message)?;
                let (m6, passed) = responder.release_passing(&m5).map_err(psi_error)?;
                sealed(&key, R, 6, &digest, with_labels(m6, &labels, &passed)?)
            }
            PsiRequest::Result { session, message } => match self.take(&session)? {
                State::Asker {
                    asker,
                    fragment,
                    labels,
                    k,
                    reblinded: true,
                } => {
                    let m4 = opened(&key, R, 4, &fragment_digest(&fragment)?, &message)?;
                    let groups = asker.finish(&m4).map_err(psi_error)?;
                    self.psi_result(&fragment, &labels, k, &groups)?
                }
                State::GroupedAsker {
                    mut asker,
                    fragment,
                    k,
                } => {
                    let m6 = opened(&key, R, 6, &fragment_digest(&fragment)?, &message)?;
                    let (m6, labels) = without_labels(&m6, fragment.group_columns.len())?;
                    let groups = asker.finish(m6).map_err(psi_error)?;
                    // Each released group by its row in the labels sent.
                    let rows: HashMap<u32, u32> = labels
                        .0
                        .iter()
                        .enumerate()
                        .map(|(row, g)| (*g, row as u32))
                        .collect();
                    let groups = groups
                        .into_iter()
                        .map(|mut g| {
                            g.group = *rows.get(&g.group).ok_or_else(|| {
                                NodeError::BadFragment(
                                    "the responder released a group without its labels".into(),
                                )
                            })?;
                            Ok(g)
                        })
                        .collect::<Result<Vec<_>, NodeError>>()?;
                    self.psi_result(&fragment, &labels.1, k, &groups)?
                }
                _ => return Err(wrong("asker")),
            },
        };
        serde_json::to_vec(&PsiResponse {
            message: B64.encode(out),
        })
        .map_err(|e| NodeError::Local(e.to_string()))
    }

    async fn psi_start(&self, session: &str, f: CryptoFragment) -> Result<Vec<u8>, NodeError> {
        self.verify_crypto(&f, CryptoRole::Asker)?;
        let id = session_id(session)?;
        let table = self
            .collab
            .table(&f.asker.table)
            .ok_or(NodeError::Execution)?;
        // Under differential privacy, a group column with public keys in
        // this table's rule releases those keys only: others never leave.
        let public: Vec<Option<HashSet<String>>> = match (self.crypto_dp(&f)?, table.dp()) {
            (Some(_), Some(rule)) => f
                .group_columns
                .iter()
                .map(|g| rule.public_keys.get(g).map(|l| l.iter().cloned().collect()))
                .collect(),
            _ => vec![None; f.group_columns.len()],
        };
        let (labels, members) = self.group_rows(&f, &f.asker, Groups::Seen(public)).await?;
        let points: Vec<Vec<RistrettoPoint>> = members
            .iter()
            .map(|m| {
                let ids: Vec<&str> = m.iter().map(String::as_str).collect();
                self.hash_ids(&ids)
            })
            .collect::<Result<_, _>>()?;
        let (asker, m1, _) = Asker::start(id, &points, values_needed(&f)).map_err(psi_error)?;
        let k = self.crypto_k(&f);
        self.store(
            id,
            State::Asker {
                asker: Box::new(asker),
                fragment: Box::new(f),
                labels,
                k,
                reblinded: false,
            },
        )?;
        Ok(m1)
    }

    /// The people of `side` (this node's table) per group of the query's
    /// group columns: each group's distinct people and, per group column,
    /// each group's label.
    async fn group_rows(
        &self,
        f: &CryptoFragment,
        side: &airlock_protocol::CryptoSide,
        groups: Groups,
    ) -> Result<(Vec<ArrayRef>, Vec<HashSet<String>>), NodeError> {
        let table = self.collab.table(&side.table).ok_or(NodeError::Execution)?;
        let mut columns: Vec<_> = f.group_columns.iter().map(|g| col(g.as_str())).collect();
        columns.push(col(table.identity.as_str()));
        let batches = self
            .crypto_rows(f, &side.table, &side.filter, columns, false)
            .await?;
        // Distinct people per group: groups in order of first appearance
        // (one row kept per group for its labels), or exactly the listed
        // ones, whether anyone is in them or not.
        let n = f.group_columns.len();
        let opts = FormatOptions::default();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut members: Vec<HashSet<String>> = Vec::new();
        let mut firsts: Vec<(usize, u32)> = Vec::new();
        let (public, all) = match groups {
            Groups::Seen(public) => (public, None),
            Groups::All(lists) => {
                let mut combos: Vec<Vec<String>> = vec![Vec::new()];
                for l in &lists {
                    if combos.len().saturating_mul(l.len()) > airlock_psi::protocol::MAX_GROUPS {
                        return Err(refuse(
                            Some(&side.table),
                            None,
                            "the public keys of the group columns make more groups than a query may have",
                        ));
                    }
                    combos = combos
                        .iter()
                        .flat_map(|c| {
                            l.iter().map(move |k| {
                                let mut c = c.clone();
                                c.push(k.clone());
                                c
                            })
                        })
                        .collect();
                }
                for (g, c) in combos.iter().enumerate() {
                    index.insert(c.join("\u{1f}"), g);
                }
                members = vec![HashSet::new(); combos.len()];
                (vec![None; n], Some(combos))
            }
        };
        for (b_i, b) in batches.iter().enumerate() {
            let fmts = b.columns()[..n]
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| NodeError::Execution)?;
            let ids = cast(b.column(n), &DataType::Utf8).map_err(|_| NodeError::Execution)?;
            let ids = ids.as_string::<i32>();
            for row in 0..b.num_rows() {
                let key: Vec<String> = fmts
                    .iter()
                    .zip(b.columns())
                    .map(|(f, c)| {
                        if c.is_null(row) {
                            "\u{0}NULL".to_string()
                        } else {
                            f.value(row).to_string()
                        }
                    })
                    .collect();
                let listed = key
                    .iter()
                    .zip(&public)
                    .all(|(k, p)| p.as_ref().is_none_or(|p| p.contains(k)));
                if !listed {
                    continue;
                }
                let key = key.join("\u{1f}");
                let g = match (&all, index.get(&key)) {
                    (_, Some(g)) => *g,
                    (Some(_), None) => continue, // not a public key: never leaves
                    (None, None) => {
                        members.push(HashSet::new());
                        firsts.push((b_i, row as u32));
                        index.insert(key, members.len() - 1);
                        members.len() - 1
                    }
                };
                members[g].insert(ids.value(row).to_string());
            }
        }
        let mut labels = Vec::with_capacity(n);
        if let Some(combos) = all {
            let schema = self.schemas.get(&side.table).ok_or(NodeError::Execution)?;
            for (c, name) in f.group_columns.iter().enumerate() {
                let keys = datafusion::arrow::array::StringArray::from(
                    combos.iter().map(|k| k[c].as_str()).collect::<Vec<_>>(),
                );
                let field = schema
                    .field_with_name(name)
                    .map_err(|_| NodeError::Execution)?;
                labels.push(cast(&keys, field.data_type()).map_err(|_| {
                    refuse(
                        Some(&side.table),
                        Some(name),
                        "a public key is not a value of the column's type",
                    )
                })?);
            }
            return Ok((labels, members));
        }
        for c in 0..n {
            let parts: Vec<ArrayRef> = batches.iter().map(|b| b.column(c).clone()).collect();
            let all = if parts.is_empty() {
                datafusion::arrow::array::new_empty_array(&DataType::Utf8)
            } else {
                datafusion::arrow::compute::concat(
                    &parts.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
                )
                .map_err(|_| NodeError::Execution)?
            };
            let offsets: Vec<usize> = batches
                .iter()
                .scan(0usize, |acc, b| {
                    let start = *acc;
                    *acc += b.num_rows();
                    Some(start)
                })
                .collect();
            let idx = UInt32Array::from(
                firsts
                    .iter()
                    .map(|(b, r)| (offsets[*b] + *r as usize) as u32)
                    .collect::<Vec<_>>(),
            );
            labels.push(take(&all, &idx, None).map_err(|_| NodeError::Execution)?);
        }
        Ok((labels, members))
    }

    /// The dummies' mechanism: under differential privacy the query's
    /// (its share of epsilon, a quarter of delta); without, a discrete
    /// Laplace of scale k (one query's counts are uncertain by about k;
    /// repeated queries average it away, which only differential privacy
    /// bounds) and delta 1e-9.
    fn dummy_noise(
        &self,
        f: &CryptoFragment,
        dp: Option<&CryptoDp>,
    ) -> Result<(airlock_privacy::Laplace, f64), NodeError> {
        match dp.and_then(|d| d.dummies.clone()) {
            Some(d) => Ok(d),
            None => Ok((
                airlock_privacy::Laplace::for_epsilon(1.0, self.crypto_k(f) as f64)
                    .map_err(|e| NodeError::Local(e.to_string()))?,
                1e-9,
            )),
        }
    }

    /// By the responder's groups, the asker's step 1: its people with the
    /// values of its own measure, hashed, blinded and encrypted, with
    /// dummies.
    async fn psi_start_grouped(
        &self,
        session: &str,
        f: CryptoFragment,
    ) -> Result<Vec<u8>, NodeError> {
        self.verify_crypto(&f, CryptoRole::Asker)?;
        let id = session_id(session)?;
        let dp = self.crypto_dp(&f)?;
        let (ids, nums) = self.people_with_values(&f, dp.as_ref()).await?;
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let people: Vec<(RistrettoPoint, Vec<u64>)> =
            self.hash_ids(&refs)?.into_iter().zip(nums).collect();
        let noise = self.dummy_noise(&f, dp.as_ref())?;
        let dummies = noise
            .0
            .dummies(noise.1)
            .map_err(|e| NodeError::Local(e.to_string()))?;
        let (asker, m1, _) =
            responder_groups::Asker::start(id, &people, values_needed(&f), dummies, dp.is_none())
                .map_err(psi_error)?;
        let k = self.crypto_k(&f);
        self.store(
            id,
            State::GroupedAsker {
                asker: Box::new(asker),
                fragment: Box::new(f),
                k,
            },
        )?;
        Ok(m1)
    }

    /// By its own groups, the responder's step 2: its people per group
    /// (under differential privacy exactly the public groups, each person in
    /// at most the rule's number of them), hashed and blinded, with dummies.
    async fn psi_respond_grouped(
        &self,
        mut f: CryptoFragment,
        m1: &[u8],
        digest: [u8; 32],
    ) -> Result<Vec<u8>, NodeError> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        // Checked by the caller, before the message's tag.
        f.role = CryptoRole::Responder;
        let dp = self.crypto_dp(&f)?;
        let groups = match (&dp, airlock_guard::crypto_public_groups(&self.collab, &f)?) {
            (Some(_), Some(lists)) => Groups::All(lists),
            (Some(_), None) => {
                return Err(NodeError::Refused(
                    Refusal::new(
                        Control::DifferentialPrivacy,
                        "under differential privacy, crypto mode by the responder's groups releases every group: the responder's table needs a rule with public keys",
                    )
                    .table(&f.responder.table, None),
                ))
            }
            (None, _) => Groups::Seen(vec![None; f.group_columns.len()]),
        };
        let (labels, members) = self.group_rows(&f, &f.responder, groups).await?;
        let mut of: HashMap<&str, Vec<u32>> = HashMap::new();
        for (g, m) in members.iter().enumerate() {
            for id in m {
                of.entry(id.as_str()).or_default().push(g as u32);
            }
        }
        if let Some(dp) = &dp {
            let mut rng = rand::rngs::StdRng::from_entropy();
            for gs in of.values_mut() {
                if gs.len() > dp.max_groups {
                    gs.shuffle(&mut rng);
                    gs.truncate(dp.max_groups);
                }
            }
        }
        let ids: Vec<&str> = of.keys().copied().collect();
        let people: Vec<(RistrettoPoint, Vec<u32>)> = self
            .hash_ids(&ids)?
            .into_iter()
            .zip(ids.iter().map(|i| of[i].clone()))
            .collect();
        let noise = self.dummy_noise(&f, dp.as_ref())?;
        let draw = || {
            noise
                .0
                .dummies(noise.1)
                .map_err(|e| NodeError::Local(e.to_string()))
        };
        let padding = Padding {
            matched: draw()?,
            unmatched_mine: draw()?,
            unmatched_theirs: draw()?,
            // Under differential privacy the groups are public. Without,
            // empty groups hide their exact number (scale 1, about 14 on
            // average: each costs k zero tests and their proofs).
            groups: match dp {
                Some(_) => 0,
                None => airlock_privacy::Laplace::for_epsilon(1.0, 1.0)
                    .and_then(|m| m.dummies(1e-6))
                    .map_err(|e| NodeError::Local(e.to_string()))?,
            },
        };
        let (responder, m2, _) = responder_groups::Responder::respond(
            m1,
            &people,
            members.len(),
            values_needed(&f),
            padding,
        )
        .map_err(psi_error)?;
        let id = session_of(m1)?;
        let k = self.crypto_k(&f);
        self.store(
            id,
            State::GroupedResponder {
                responder: Box::new(responder),
                dp: dp.map(Box::new),
                digest,
                labels,
                groups: members.len(),
                k,
            },
        )?;
        Ok(m2)
    }

    async fn psi_respond(
        &self,
        mut f: CryptoFragment,
        m1: &[u8],
        digest: [u8; 32],
    ) -> Result<Vec<u8>, NodeError> {
        // Checked by the caller, before the message's tag.
        f.role = CryptoRole::Responder;
        let values = values_needed(&f);
        let dp = self.crypto_dp(&f)?;
        let (ids, nums) = self.people_with_values(&f, dp.as_ref()).await?;
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let points = self.hash_ids(&id_refs)?;
        let people: Vec<(RistrettoPoint, Vec<u64>)> = points.into_iter().zip(nums).collect();
        let k = self.crypto_k(&f);
        // Dummies hide the exact number of this node's people after the
        // asker's filter (the length of message 2), as by the responder's
        // groups.
        let noise = self.dummy_noise(&f, dp.as_ref())?;
        let dummies = noise
            .0
            .dummies(noise.1)
            .map_err(|e| NodeError::Local(e.to_string()))?;
        let (responder, m2, _) =
            Responder::respond_padded(m1, &people, values, k, dummies).map_err(psi_error)?;
        let id = session_of(m1)?;
        self.store(
            id,
            State::Responder {
                responder: Box::new(responder),
                dp: dp.map(Box::new),
                digest,
            },
        )?;
        Ok(m2)
    }

    /// The people of the measure's side (this node's) with the values the
    /// query needs: exact per-person sums, or under differential privacy
    /// bounded ones.
    async fn people_with_values(
        &self,
        f: &CryptoFragment,
        dp: Option<&CryptoDp>,
    ) -> Result<(Vec<String>, Vec<Vec<u64>>), NodeError> {
        let values = values_needed(f);
        let table = &f.measure_side().table;
        let mut aggs = Vec::new();
        if let Some(m) = &f.measure {
            let field = self
                .schemas
                .get(table)
                .and_then(|s| s.field_with_name(m).ok().cloned())
                .ok_or(NodeError::Execution)?;
            if !field.data_type().is_integer() {
                return Err(refuse(
                    Some(table),
                    Some(m),
                    "crypto mode sums integer measures only (e.g. cents)",
                ));
            }
            aggs.push(sum(col(m.as_str())).alias("s"));
        }
        aggs.push(count(lit(1)).alias("n"));
        match dp {
            Some(dp) => self.bounded_people(f, dp, values).await,
            None => self.summed_people(f, aggs, values).await,
        }
    }

    /// Each person's exact sum and row count (no differential privacy).
    async fn summed_people(
        &self,
        f: &CryptoFragment,
        aggs: Vec<datafusion::logical_expr::Expr>,
        values: usize,
    ) -> Result<(Vec<String>, Vec<Vec<u64>>), NodeError> {
        let batches = self
            .crypto_rows(
                f,
                &f.measure_side().table,
                &f.measure_side().filter,
                aggs,
                true,
            )
            .await?;
        let mut ids: Vec<String> = Vec::new();
        let mut nums: Vec<Vec<u64>> = Vec::new();
        for b in &batches {
            let id = cast(b.column(0), &DataType::Utf8).map_err(|_| NodeError::Execution)?;
            let id = id.as_string::<i32>();
            let s = if values > 0 {
                Some(cast(b.column(1), &DataType::Int64).map_err(|_| NodeError::Execution)?)
            } else {
                None
            };
            let n = cast(b.column(b.num_columns() - 1), &DataType::Int64)
                .map_err(|_| NodeError::Execution)?;
            let n = n.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for row in 0..b.num_rows() {
                ids.push(id.value(row).to_string());
                let mut v = Vec::with_capacity(values);
                if let Some(s) = &s {
                    let s = s.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                    let total = if s.is_null(row) { 0 } else { s.value(row) };
                    let total = u64::try_from(total).map_err(|_| {
                        refuse(
                            Some(&f.measure_side().table),
                            f.measure.as_deref(),
                            "crypto mode sums non-negative measures; a person's total is negative",
                        )
                    })?;
                    v.push(total);
                    if values == 2 {
                        v.push(u64::try_from(n.value(row)).unwrap_or(0));
                    }
                }
                nums.push(v);
            }
        }
        Ok((ids, nums))
    }

    /// Under differential privacy: each person's sum over at most
    /// `max_rows` of its rows chosen at random, each value clamped to the
    /// rule's bounds, and the number of rows used.
    async fn bounded_people(
        &self,
        f: &CryptoFragment,
        dp: &CryptoDp,
        values: usize,
    ) -> Result<(Vec<String>, Vec<Vec<u64>>), NodeError> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let table = self
            .collab
            .table(&f.measure_side().table)
            .ok_or(NodeError::Execution)?;
        let mut columns = vec![col(table.identity.as_str())];
        if let Some(m) = &f.measure {
            columns.push(cast_expr(col(m.as_str())));
        }
        let batches = self
            .crypto_rows(
                f,
                &f.measure_side().table,
                &f.measure_side().filter,
                columns,
                false,
            )
            .await?;
        let mut people: HashMap<String, Vec<i64>> = HashMap::new();
        for b in &batches {
            let id = cast(b.column(0), &DataType::Utf8).map_err(|_| NodeError::Execution)?;
            let id = id.as_string::<i32>();
            let v = if b.num_columns() > 1 {
                Some(cast(b.column(1), &DataType::Int64).map_err(|_| NodeError::Execution)?)
            } else {
                None
            };
            for row in 0..b.num_rows() {
                let value = match &v {
                    Some(v) => {
                        let v = v.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                        if v.is_null(row) {
                            0
                        } else {
                            v.value(row)
                        }
                    }
                    None => 0,
                };
                people
                    .entry(id.value(row).to_string())
                    .or_default()
                    .push(value);
            }
        }
        let mut rng = rand::rngs::StdRng::from_entropy();
        let mut ids = Vec::with_capacity(people.len());
        let mut nums = Vec::with_capacity(people.len());
        for (id, mut rows) in people {
            if rows.len() > dp.max_rows {
                rows.shuffle(&mut rng);
                rows.truncate(dp.max_rows);
            }
            let mut v = Vec::with_capacity(values);
            if let Some((lo, hi)) = dp.bounds {
                let total: i64 = rows.iter().map(|x| (*x).clamp(lo, hi)).sum();
                v.push(u64::try_from(total).unwrap_or(0));
                if values == 2 {
                    v.push(rows.len() as u64);
                }
            }
            ids.push(id);
            nums.push(v);
        }
        Ok((ids, nums))
    }

    fn psi_result(
        &self,
        f: &CryptoFragment,
        labels: &[ArrayRef],
        k: u64,
        groups: &[airlock_psi::GroupResult],
    ) -> Result<Vec<u8>, NodeError> {
        // Under differential privacy the values are noisy (`i64` bits) and
        // the responder chose the groups by partition selection; otherwise
        // the asker's node applies its own k too.
        let dp = self.crypto_dp(f)?;
        let released: Vec<&airlock_psi::GroupResult> = groups
            .iter()
            .filter(|g| dp.is_some() || g.count >= k)
            .collect();
        // Noisy values travel as i64 bits; exact ones are small enough
        // that the same reading holds.
        let bounds = dp.as_ref().and_then(|d| d.bounds);
        let idx = UInt32Array::from(released.iter().map(|g| g.group).collect::<Vec<_>>());
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (name, o) in &f.outputs {
            let (field, array): (Field, ArrayRef) = match o {
                CryptoOutput::Group(i) => {
                    let l = labels.get(*i).ok_or(NodeError::Execution)?;
                    let a = take(l, &idx, None).map_err(|_| NodeError::Execution)?;
                    (Field::new(name, a.data_type().clone(), true), a)
                }
                CryptoOutput::Count => (
                    Field::new(name, DataType::Int64, false),
                    Arc::new(Int64Array::from(
                        released.iter().map(|g| g.count as i64).collect::<Vec<_>>(),
                    )),
                ),
                CryptoOutput::Sum => (
                    Field::new(name, DataType::Int64, true),
                    Arc::new(Int64Array::from(
                        released
                            .iter()
                            .map(|g| g.sums.first().map(|s| *s as i64))
                            .collect::<Vec<_>>(),
                    )),
                ),
                CryptoOutput::Avg => (
                    Field::new(name, DataType::Float64, true),
                    Arc::new(Float64Array::from(
                        released
                            .iter()
                            .map(|g| match g.sums.as_slice() {
                                [s, n] if (*n as i64) > 0 => {
                                    let avg = (*s as i64) as f64 / (*n as i64) as f64;
                                    // A noisy sum over a noisy count, clamped.
                                    Some(match bounds {
                                        Some((lo, hi)) => avg.clamp(lo as f64, hi as f64),
                                        None => avg,
                                    })
                                }
                                _ => None,
                            })
                            .collect::<Vec<_>>(),
                    )),
                ),
            };
            fields.push(field);
            columns.push(array);
        }
        // Under differential privacy the result says how noisy each
        // column is and what it cost, as executor-mode releases do.
        let mut metadata = HashMap::new();
        if let Some(dp) = &dp {
            let note = |column: &str,
                        mechanism: &str,
                        m: &airlock_privacy::Laplace,
                        also: Option<&airlock_privacy::Laplace>| {
                airlock_guard::dp::NoiseNote {
                    column: column.to_string(),
                    mechanism: mechanism.to_string(),
                    scale: m.scale(),
                    interval95: std::iter::once(m.interval95())
                        .chain(also.map(airlock_privacy::Laplace::interval95))
                        .collect(),
                }
            };
            let mut notes = Vec::new();
            for (name, o) in &f.outputs {
                match (o, &dp.sum, &dp.rows) {
                    (CryptoOutput::Count, _, _) => {
                        notes.push(note(name, "discrete Laplace", &dp.count, None))
                    }
                    (CryptoOutput::Sum, Some(s), _) => {
                        notes.push(note(name, "discrete Laplace", s, None))
                    }
                    (CryptoOutput::Avg, Some(s), Some(r)) => notes.push(note(
                        name,
                        "noisy sum / noisy count (discrete Laplace on each)",
                        s,
                        Some(r),
                    )),
                    _ => {}
                }
            }
            let json = |e: serde_json::Error| NodeError::Local(e.to_string());
            metadata.insert(
                airlock_protocol::metadata::NOISE.to_string(),
                serde_json::to_string(&notes).map_err(json)?,
            );
            metadata.insert(
                airlock_protocol::metadata::DP_COST.to_string(),
                serde_json::to_string(&dp.cost).map_err(json)?,
            );
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
        let batch =
            RecordBatch::try_new(schema.clone(), columns).map_err(|_| NodeError::Execution)?;
        airlock_protocol::wire::encode_batches(&schema, &[batch])
            .map_err(|_| NodeError::Local("could not encode the result".into()))
    }
}

impl CryptoDp {
    /// By the responder's groups, the noise of one released group: its
    /// count's, then one per value the query needs (the measure's sum, and
    /// for an average the row count), all added under encryption.
    fn noise_all(&self) -> Result<Vec<i64>, airlock_psi::PsiError> {
        let count = self
            .count
            .release(0)
            .map_err(|e| airlock_psi::PsiError::Noise(e.to_string()))?;
        Ok(std::iter::once(count).chain(self.value_noise()?).collect())
    }

    /// What is released of one group, from its exact overlap count: a
    /// noisy count (`i64` bits) if it passes the threshold, and the noise
    /// the responder adds to each sum under encryption (the responder never
    /// sees a sum; the asker opens only noisy ones). There is a mechanism
    /// for each value the query needs (`values_needed`): the measure's sum,
    /// and for an average the row count.
    fn release(&self, count: u64) -> Result<Option<airlock_psi::Noised>, airlock_psi::PsiError> {
        let noise = |e: airlock_privacy::PrivacyError| airlock_psi::PsiError::Noise(e.to_string());
        let count = self
            .count
            .release(i64::try_from(count).unwrap_or(i64::MAX))
            .map_err(noise)?;
        if self.threshold.is_some_and(|t| count < t) {
            return Ok(None);
        }
        Ok(Some(airlock_psi::Noised {
            count: count as u64,
            noise: self.value_noise()?,
        }))
    }

    /// The noise added under encryption to each value the query needs (the
    /// measure's sum, and for an average the row count).
    fn value_noise(&self) -> Result<Vec<i64>, airlock_psi::PsiError> {
        self.sum
            .iter()
            .chain(self.rows.iter())
            .map(|m| {
                m.release(0)
                    .map_err(|e| airlock_psi::PsiError::Noise(e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_privacy::tester::{histogram, violations};

    /// A crypto-mode DP release as `crypto_dp` builds it for one group per
    /// person and one row per person (g = m = 1), a measure bounded by
    /// `[0, hi]` and epsilon 1 per value; the sum's noise is made for
    /// sensitivity `made_for`.
    fn release_of(hi: i64, made_for: i64) -> CryptoDp {
        let noise = |s: i64| airlock_privacy::Laplace::for_epsilon(1.0, s as f64).expect("noise");
        CryptoDp {
            max_rows: 1,
            max_groups: 1,
            bounds: Some((0, hi)),
            count: noise(1),
            sum: Some(noise(made_for)),
            rows: None,
            threshold: None,
            dummies: None,
            cost: airlock_guard::dp::DpCost {
                epsilon: 2.0,
                delta: 0.0,
            },
        }
    }

    /// The noised path of crypto mode, through the stochastic tester: the
    /// responder's release of a group from its exact count, and the noise
    /// it adds to a sum under encryption (the protocol adds it exactly,
    /// `crates/psi/tests/protocol.rs`), on neighbouring data (one person
    /// more, whose value is the bound), stay within e^epsilon; and the
    /// tester catches noise made for a third of the sensitivity.
    #[test]
    fn crypto_releases_on_neighbouring_data_stay_within_e_to_the_epsilon() {
        let n = 40_000;
        let hi = 60;
        let dp = release_of(hi, hi);
        let draw = |dp: &CryptoDp| dp.release(0).expect("noise").expect("released");
        let count = |c: i64| histogram(n, 1, || c + draw(&dp).count as i64);
        let (tested, bad) = violations(&count(100), &count(101), 1.0, 500);
        assert!(tested >= 3, "count: {tested} bins tested");
        assert!(bad.is_empty(), "count: bins beyond e^epsilon: {bad:?}");
        // The count the release reports is its own input plus noise.
        let direct = histogram(n, 1, || {
            dp.release(101).expect("n").expect("r").count as i64
        });
        let (tested, bad) = violations(&count(100), &direct, 1.0, 500);
        assert!(tested >= 3 && bad.is_empty(), "direct count: {bad:?}");
        let sum = |dp: &CryptoDp, s: i64| histogram(n, hi / 2, || s + draw(dp).noise[0]);
        let (tested, bad) = violations(&sum(&dp, 5_000), &sum(&dp, 5_000 + hi), 1.0, 500);
        assert!(tested >= 3, "sum: {tested} bins tested");
        assert!(bad.is_empty(), "sum: bins beyond e^epsilon: {bad:?}");
        let weak = release_of(hi, hi / 3);
        let (_, bad) = violations(&sum(&weak, 5_000), &sum(&weak, 5_000 + hi), 1.0, 500);
        assert!(!bad.is_empty(), "the tester passed noise made for hi / 3");
    }
}
