//! The fragment: the part of a query one member's node runs.
//!
//! A fragment is a value, serialised as JSON, that crosses the boundary between
//! the hub and a node. It is small and declarative so the node can verify it
//! against its own rules without trusting whoever sent it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a node is asked to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fragment {
    /// A whole single-table analysis: the node checks the SQL against its own
    /// rules, runs it, applies its own threshold, and only the aggregate leaves.
    Analysis {
        /// Collaboration name.
        collaboration: String,
        /// The query this fragment is part of, set by the hub when it runs
        /// the query (32 hex characters; a node takes 1 to 64 letters,
        /// digits, `-` or `_`): the key of the node's ledger debit.
        #[serde(default)]
        query: String,
        /// Member who asked.
        querier: String,
        /// The configured table it reads.
        table: String,
        /// The analysis SQL (a template's text when `template` is set).
        sql: String,
        /// The approved template this runs, with its bound parameters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<TemplateRun>,
        /// The purpose the output serves: consent is checked for it alone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purpose: Option<String>,
    },
    /// Scan, filter, project and pseudonymise one configured table; the rows
    /// go to the collaboration's executor.
    Scan(ScanFragment),
}

impl Fragment {
    /// Collaboration name.
    pub fn collaboration(&self) -> &str {
        match self {
            Fragment::Analysis { collaboration, .. } => collaboration,
            Fragment::Scan(s) => &s.collaboration,
        }
    }

    /// The template run, if the query is one.
    pub fn template(&self) -> Option<&TemplateRun> {
        match self {
            Fragment::Analysis { template, .. } => template.as_ref(),
            Fragment::Scan(s) => s.template.as_ref(),
        }
    }

    /// The purpose the query declares, if any.
    pub fn purpose(&self) -> Option<&str> {
        match self {
            Fragment::Analysis { purpose, .. } => purpose.as_deref(),
            Fragment::Scan(s) => s.purpose.as_deref(),
        }
    }

    /// The query this fragment is part of.
    pub fn query(&self) -> &str {
        match self {
            Fragment::Analysis { query, .. } => query,
            Fragment::Scan(s) => &s.query,
        }
    }

    /// The same fragment as part of query `id`.
    pub fn for_query(mut self, id: &str) -> Fragment {
        match &mut self {
            Fragment::Analysis { query, .. } => *query = id.to_string(),
            Fragment::Scan(s) => s.query = id.to_string(),
        }
        self
    }

    /// Configured table read.
    pub fn table(&self) -> &str {
        match self {
            Fragment::Analysis { table, .. } => table,
            Fragment::Scan(s) => &s.table,
        }
    }
}

/// One step of a crypto-mode query, as the hub relays it. The *matcher*
/// is the node of the side not grouped by, the *grouper* the other; the
/// asker's node makes the result. By the responder's groups
/// (`airlock_psi::grouped`) the steps are start, respond, reblind,
/// finish, then without differential privacy check and release, and
/// result; by the asker's groups (`airlock_psi::tagged`) start, respond,
/// reblind (the matcher counts), then without differential privacy check
/// (at the asker's node) and release, and result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum PsiRequest {
    /// Matcher, step 1: `session` is 32 hex characters.
    Start {
        /// Session (query) id.
        session: String,
        /// The query's shape (the matcher's role).
        fragment: CryptoFragment,
    },
    /// Grouper, step 2.
    Respond {
        /// The query's shape (the grouper's role).
        fragment: CryptoFragment,
        /// The matcher's message.
        message: Message,
    },
    /// Matcher, step 3: matches the two lists.
    Reblind {
        /// Session id.
        session: String,
        /// The grouper's message.
        message: Message,
    },
    /// Grouper by the responder's groups, step 4: sums by group under
    /// encryption; answered with the zero tests of k (no differential
    /// privacy) or the release.
    Finish {
        /// Session id.
        session: String,
        /// The matcher's second message.
        message: Message,
    },
    /// Without differential privacy, the node that opens the zero tests
    /// (the matcher by the responder's groups, the asker's by its own):
    /// answered with proofs for the groups that pass k.
    Check {
        /// Session id.
        session: String,
        /// The grouper's zero tests.
        message: Message,
    },
    /// Without differential privacy, the node that made the zero tests:
    /// the other's proofs, answered with the release of the groups that
    /// pass.
    Release {
        /// Session id.
        session: String,
        /// The matcher's proofs.
        message: Message,
    },
    /// Asker: the released groups become the result.
    Result {
        /// Session id.
        session: String,
        /// The other node's release.
        message: Message,
    },
}

/// A step's answer: the next message, or (after `result`) the released
/// rows as Arrow IPC.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsiResponse {
    /// The bytes.
    pub message: Message,
}

/// Opaque bytes that cross a hop: one crypto-mode message (blinded points,
/// ciphertexts, tags; the hub relays them without reading them), a sealed
/// secret, a schema frame. Typed here, base64 in JSON on the wire: no hop
/// encodes or decodes by hand.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Message(pub Vec<u8>);

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Message({} bytes)", self.0.len())
    }
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Message)
            .map_err(|_| {
                serde::de::Error::custom(
                    "bytes (a crypto-mode message, a sealed secret, a schema) are not base64",
                )
            })
    }
}

/// What a node's side of a crypto-mode query is: the query's shape as
/// the guard accepted it, which each node checks against its own rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoFragment {
    /// Collaboration name.
    pub collaboration: String,
    /// The query this step is part of (see [`Fragment::query`]).
    #[serde(default)]
    pub query: String,
    /// Member who asked (the asker).
    pub querier: String,
    /// Which side this node plays.
    pub role: CryptoRole,
    /// The asker's table: grouped, its people blinded per group.
    pub asker: CryptoSide,
    /// The responder's table: its people and per-person sums.
    pub responder: CryptoSide,
    /// Whose dimensions are grouped by: the asker's (the counts protocol,
    /// the measure is the responder's) or the responder's (the protocol by
    /// the responder's groups, the measure is the asker's).
    #[serde(default, skip_serializing_if = "CryptoRole::is_asker")]
    pub groups_of: CryptoRole,
    /// The dimension columns grouped by, of the `groups_of` side's table.
    pub group_columns: Vec<String>,
    /// The measure summed or averaged, if any, of the other side's table.
    pub measure: Option<String>,
    /// Output columns in order: names and what each is.
    pub outputs: Vec<(String, CryptoOutput)>,
    /// The approved template the query runs, if it is a template run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRun>,
    /// The purpose the output serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// A node's role in a crypto-mode query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CryptoRole {
    /// The member who asked: learns only the released aggregates.
    #[default]
    Asker,
    /// The other member: computes, applies k, releases.
    Responder,
}

impl CryptoRole {
    /// Whether this is the asker.
    pub fn is_asker(&self) -> bool {
        *self == CryptoRole::Asker
    }
}

impl CryptoFragment {
    /// The side whose table is grouped by.
    pub fn grouped_side(&self) -> &CryptoSide {
        match self.groups_of {
            CryptoRole::Asker => &self.asker,
            CryptoRole::Responder => &self.responder,
        }
    }

    /// The side whose measure is summed (the other one).
    pub fn measure_side(&self) -> &CryptoSide {
        match self.groups_of {
            CryptoRole::Asker => &self.responder,
            CryptoRole::Responder => &self.asker,
        }
    }
}

/// One side of a crypto-mode query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoSide {
    /// The member.
    pub member: String,
    /// Its configured table.
    pub table: String,
    /// Rows kept, evaluated on its node.
    pub filter: Option<Predicate>,
}

/// An output column of a crypto-mode query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CryptoOutput {
    /// The i-th group column.
    Group(usize),
    /// People in the overlap (`COUNT(DISTINCT identity)`).
    Count,
    /// `SUM` of the measure over the overlap.
    Sum,
    /// `AVG` of the measure over the overlap's rows.
    Avg,
}

/// Scan fragment of one configured table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanFragment {
    /// Collaboration name.
    pub collaboration: String,
    /// The query this fragment is part of (see [`Fragment::query`]).
    #[serde(default)]
    pub query: String,
    /// Member who asked.
    pub querier: String,
    /// Configured table (alias).
    pub table: String,
    /// Columns that leave the node, in order, with their treatment.
    pub columns: Vec<FragmentColumn>,
    /// Rows kept; evaluated on the node before anything leaves.
    pub filter: Option<Predicate>,
    /// The approved template the query runs, if it is a template run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRun>,
    /// The purpose the output serves: consent is checked for it alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Under differential privacy: what the node needs to price the query
    /// from its own copy of the rules, before it reads a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<ScanDp>,
}

/// What a scan fragment of a query under differential privacy declares,
/// so that the node prices the query itself (`airlock_guard::dp::scan_cost`,
/// the one function the hub's guard prices it with too): the configured
/// tables the query reads, and whether its groups are chosen by partition
/// selection (which spends delta). The node checks that its own table is
/// among them, that another member's table is too (a query over one
/// member's tables runs on its node) and that every one is configured
/// under differential privacy. It cannot check that the query reads them:
/// against a dishonest hub the declaration bounds the price from below
/// (the smallest epsilon configured for a table named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanDp {
    /// Every configured table the query reads (aliases).
    pub tables: Vec<String>,
    /// Whether the released groups are chosen by their noisy counts.
    pub partition_selection: bool,
}

/// One output column of a scan fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FragmentColumn {
    /// Column name in the configured table.
    pub name: String,
    /// How it leaves the node.
    pub treatment: Treatment,
}

/// How a column leaves the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "as", rename_all = "snake_case")]
pub enum Treatment {
    /// As stored (dimensions and measures only).
    Raw,
    /// As a keyed-hash token under the collaboration key of a join contract.
    Pseudonym {
        /// The join contract.
        contract: String,
    },
}

/// A literal in a predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Literal {
    /// NULL.
    Null,
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Floating point.
    Float(f64),
    /// String.
    Str(String),
    /// Date, as days since 1970-01-01.
    Date(i32),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
}

/// A row predicate over dimension columns and literals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicate {
    /// All hold.
    And(Vec<Predicate>),
    /// Any holds.
    Or(Vec<Predicate>),
    /// Does not hold.
    Not(Box<Predicate>),
    /// `column op value`.
    Compare {
        /// Column.
        column: String,
        /// Operator.
        op: CmpOp,
        /// Literal.
        value: Literal,
    },
    /// `column [NOT] IN (values)`.
    InList {
        /// Column.
        column: String,
        /// Values.
        values: Vec<Literal>,
        /// NOT IN.
        negated: bool,
    },
    /// `column IS [NOT] NULL`.
    IsNull {
        /// Column.
        column: String,
        /// IS NOT NULL.
        negated: bool,
    },
    /// `column [NOT] [I]LIKE pattern`.
    Like {
        /// Column.
        column: String,
        /// Pattern.
        pattern: String,
        /// NOT LIKE.
        negated: bool,
        /// ILIKE.
        case_insensitive: bool,
    },
    /// A boolean column used as a predicate.
    IsTrue {
        /// Column.
        column: String,
    },
}

impl Predicate {
    /// Every column the predicate reads.
    pub fn columns(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_columns(&mut out);
        out
    }

    fn collect_columns<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Predicate::And(ps) | Predicate::Or(ps) => {
                ps.iter().for_each(|p| p.collect_columns(out))
            }
            Predicate::Not(p) => p.collect_columns(out),
            Predicate::Compare { column, .. }
            | Predicate::InList { column, .. }
            | Predicate::IsNull { column, .. }
            | Predicate::Like { column, .. }
            | Predicate::IsTrue { column } => out.push(column),
        }
    }
}

/// A run of an approved template: what a fragment carries so each node can
/// check the approval and re-plan the template itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRun {
    /// Template name.
    pub name: String,
    /// Its content hash (64 hex characters).
    pub hash: String,
    /// Bound parameter values, every declared parameter present.
    pub params: BTreeMap<String, Literal>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_round_trips_as_json() {
        let f = Fragment::Scan(ScanFragment {
            collaboration: "demo".into(),
            query: "00112233445566778899aabbccddeeff".into(),
            querier: "advertiser".into(),
            table: "audience".into(),
            columns: vec![
                FragmentColumn {
                    name: "email".into(),
                    treatment: Treatment::Pseudonym {
                        contract: "email".into(),
                    },
                },
                FragmentColumn {
                    name: "segment".into(),
                    treatment: Treatment::Raw,
                },
            ],
            filter: Some(Predicate::And(vec![
                Predicate::Compare {
                    column: "region".into(),
                    op: CmpOp::Eq,
                    value: Literal::Str("north".into()),
                },
                Predicate::Not(Box::new(Predicate::IsNull {
                    column: "age_band".into(),
                    negated: false,
                })),
            ])),
            template: None,
            purpose: Some("measurement".into()),
            dp: Some(ScanDp {
                tables: vec!["audience".into(), "purchases".into()],
                partition_selection: false,
            }),
        });
        let json = serde_json::to_string(&f).expect("serialise");
        let back: Fragment = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, f);
        let smuggled = json.replacen("\"filter\"", "\"limit\":1,\"filter\"", 1);
        assert!(
            serde_json::from_str::<Fragment>(&smuggled).is_err(),
            "unknown fields are refused"
        );
        if let Fragment::Scan(s) = &back {
            assert_eq!(
                s.filter.as_ref().map(Predicate::columns),
                Some(vec!["region", "age_band"])
            );
        }
    }
}
