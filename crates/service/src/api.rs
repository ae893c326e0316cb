//! The hub's REST API: request and response bodies (shared by the server
//! and the CLI's client), and its OpenAPI document.

use airlock_policy::Refusal;
pub use airlock_store::QueryState;
use serde::{Deserialize, Serialize};

/// Body of `POST /v1/collaborations` and `PUT /v1/collaborations/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollaborationText {
    /// The collaboration file (TOML).
    pub toml: String,
    /// The caller's approval of exactly this text: its Ed25519 signature
    /// (hex) of [`airlock_crypto::approval::approval_message`]. Without it
    /// the version waits for the caller's approval like anyone else's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// A member's decision on one collaboration version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Not decided yet: the version is not installed on this member's node.
    Waiting,
    /// Approved with the member's signature.
    Approved,
    /// Refused.
    Refused,
}

/// What a member is asked to approve: the current version of one
/// collaboration, and what changed since the version it last approved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionApproval {
    /// Collaboration name.
    pub collaboration: String,
    /// Collaboration id (part of what is signed).
    pub id: String,
    /// Current version.
    pub version: i64,
    /// SHA-256 of its text (what is signed).
    pub sha256: String,
    /// Whether the caller's approval is asked (it contributes data).
    pub asked: bool,
    /// The caller's decision on it.
    pub mine: Decision,
    /// Every approver's decision on it.
    pub approvers: std::collections::BTreeMap<String, Decision>,
    /// The last version the caller approved, if any.
    pub approved_before: Option<i64>,
    /// SHA-256 of the text the caller's node holds now, as its node says
    /// (`GET .../approval` only): an approval is signed as replacing it.
    #[serde(default)]
    pub replaces_sha256: Option<String>,
    /// Line differences from that version's text (from nothing if none):
    /// lines starting `-` removed, `+` added, ` ` kept.
    pub diff: String,
    /// The full text.
    pub toml: String,
}

/// Body of `POST /v1/collaborations/{name}/approval`: approve (with a
/// signature) or refuse (with a reason) the version whose text hashes to
/// `sha256`, which must still be the current one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDecision {
    /// SHA-256 of the text decided on.
    pub sha256: String,
    /// The signature, to approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The reason, to refuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse: Option<String>,
}

/// A collaboration as a member sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollaborationView {
    /// Name.
    pub name: String,
    /// Id.
    pub id: String,
    /// Current policy version.
    pub version: i64,
    /// SHA-256 of the current file.
    pub sha256: String,
    /// Members and abilities (`member: ability, ability`).
    pub members: Vec<String>,
    /// Configured tables (`alias (owner)`).
    pub tables: Vec<String>,
    /// The current file.
    pub toml: String,
    /// Every version: `[version, sha256, by member, at ms]`.
    pub versions: Vec<(i64, String, String, i64)>,
    /// Nodes that did not take the current version, and why.
    #[serde(default)]
    pub sync_errors: Vec<String>,
    /// Each approver's decision on the current version.
    #[serde(default)]
    pub approvals: std::collections::BTreeMap<String, Decision>,
    /// The current file parsed (the same content as `toml`, as JSON).
    #[serde(default)]
    pub config: serde_json::Value,
}

/// Body of `POST /v1/collaborations/{name}/queries` and `.../check`:
/// `{"sql": ...}`, or `{"template": name or hash, "params": {...}}`, with
/// an optional `"purpose"`.
pub type QueryRequest = airlock_policy::QuerySpec;

/// A template as `GET /v1/collaborations/{name}/templates` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateView {
    /// Name.
    pub name: String,
    /// Content hash (64 hex characters): what owners approve.
    pub hash: String,
    /// Purpose its output serves.
    pub purpose: String,
    /// The SQL with its `$parameters`.
    pub sql: String,
    /// Members who may run it (empty: every member with `query`).
    pub analysts: Vec<String>,
    /// Parameter declarations.
    pub params: serde_json::Value,
    /// Members who approve this exact hash.
    pub approved_by: Vec<String>,
}

impl TemplateView {
    /// The view of `t` in `collab`.
    pub fn new(collab: &airlock_policy::Collaboration, t: &airlock_policy::Template) -> Self {
        let hash = t.hash();
        TemplateView {
            name: t.name.clone(),
            purpose: t.purpose.clone(),
            sql: t.sql.clone(),
            analysts: t.analysts.clone(),
            params: serde_json::to_value(&t.params).unwrap_or_default(),
            approved_by: collab
                .config()
                .members
                .iter()
                .filter(|m| collab.approves(&m.name, &hash))
                .map(|m| m.name.clone())
                .collect(),
            hash,
        }
    }
}

/// Answer to `POST` (approve) and `DELETE` (revoke) on
/// `/v1/collaborations/{name}/templates/{template}/approval`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalView {
    /// Template name.
    pub template: String,
    /// The hash approved or revoked.
    pub hash: String,
    /// The member.
    pub member: String,
    /// Approved (true) or revoked (false).
    pub approved: bool,
    /// Checks static verification passed (0 for a revocation).
    pub checks: usize,
    /// The policy version that records it.
    pub version: i64,
}

/// Progress of a running query.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ProgressView {
    /// Fragments sent to nodes.
    pub fragments_total: u64,
    /// Fragments whose results arrived. (No count of rows: it would
    /// depend on the other members' data.)
    pub fragments_done: u64,
    /// A crypto-mode query's current step, e.g. `step 3/7: advertiser's
    /// node matches the two lists` (fixed by the query's shape and rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// A query's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryView {
    /// Query id.
    pub id: String,
    /// Collaboration name.
    pub collaboration: String,
    /// Who submitted it.
    pub member: String,
    /// Where it is in its lifecycle (`submitted`, `checked`, `running`,
    /// `released`, `refused` or `failed` on the wire).
    pub state: QueryState,
    /// Why it failed.
    pub error: Option<String>,
    /// What kind of failure: the caller's input, or anything else.
    #[serde(default)]
    pub error_kind: Option<FailureKind>,
    /// Why it was refused.
    pub refusal: Option<Refusal>,
    /// The node that refused it, if a node did.
    pub refused_by_node: Option<String>,
    /// Rows released.
    pub rows: Option<i64>,
    /// Progress while running.
    pub progress: Option<ProgressView>,
    /// Where a released result was delivered (the hub then keeps no copy).
    #[serde(default)]
    pub delivery: Option<String>,
}

/// Why a query failed, as a kind the client acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The request was malformed (SQL syntax, an unknown table).
    BadInput,
    /// Anything else.
    Failed,
}

/// A failed query's detail as the hub stores it: the kind and the message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailureDetail {
    /// The kind.
    pub kind: FailureKind,
    /// The message (never a data value).
    pub message: String,
}

impl FailureDetail {
    /// The stored detail of a failed query: this structure as JSON, or
    /// plain text from before it existed (a failure of kind `failed`).
    pub fn parse(detail: &str) -> FailureDetail {
        serde_json::from_str(detail).unwrap_or_else(|_| FailureDetail {
            kind: FailureKind::Failed,
            message: detail.to_string(),
        })
    }

    /// As stored.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| self.message.clone())
    }
}

/// Answer of `.../check`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckView {
    /// The plan per member, as text.
    pub plan: String,
    /// What the query would cost under differential privacy (none: it
    /// spends no budget).
    #[serde(default)]
    pub cost: Option<DpCostView>,
}

/// A privacy cost.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct DpCostView {
    /// Epsilon.
    pub epsilon: f64,
    /// Delta.
    pub delta: f64,
}

/// `GET /v1/collaborations/{name}/audit/verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditVerification {
    /// Entries in the chain.
    pub entries: usize,
    /// The last entry's hash (empty for an empty chain).
    pub head: String,
    /// Whether every entry verifies.
    pub verified: bool,
    /// Where and why it breaks.
    pub broken: Option<String>,
}

/// Body of `POST /v1/datasets/update`: one change to a dataset the caller
/// owns, applied to every collaboration that uses it. (Its location is not
/// here: it is in the owner's node catalog, and a change there reaches
/// every collaboration with no new version.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetUpdate {
    /// The dataset's name, as collaboration files and the owner's catalog
    /// name it.
    pub dataset: String,
    /// New minimum of distinct people per output row of every aggregation
    /// rule on a table over this dataset.
    #[serde(default)]
    pub min_distinct_identities: Option<u64>,
}

/// What a dataset update did to one collaboration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetUpdated {
    /// Collaboration name.
    pub collaboration: String,
    /// Its new policy version.
    pub version: i64,
    /// Nodes that did not take it, and why.
    pub sync_errors: Vec<String>,
}

/// The machine-readable kind of an error body (`snake_case` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No valid bearer token (401).
    Unauthorized,
    /// No such object, or not visible to the caller (404).
    NotFound,
    /// The caller lacks the ability, or may not make this change (403).
    Forbidden,
    /// The privacy budget does not cover the query (403).
    Budget,
    /// An approval's signature does not verify (403): the caller's input.
    BadApproval,
    /// Static verification refused a template's approval (422).
    ApprovalRefused,
    /// The query was refused by a rule (422, `check`).
    Refused,
    /// Malformed body, invalid file (400).
    BadInput,
    /// The object changed meanwhile (409).
    Conflict,
    /// The collaboration or its nodes are not ready (503).
    NotReady,
    /// The result was delivered, so the hub has no copy (410).
    Delivered,
    /// The result is gone: its retention ran out (410).
    Expired,
    /// A limit of the hub (413, 429).
    Limit,
    /// Anything else (500).
    Failed,
    /// A code this client does not know (a newer hub).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Budget => "budget",
            ErrorCode::BadApproval => "bad_approval",
            ErrorCode::ApprovalRefused => "approval_refused",
            ErrorCode::Refused => "refused",
            ErrorCode::BadInput => "bad_input",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Delivered => "delivered",
            ErrorCode::Expired => "expired",
            ErrorCode::Limit => "limit",
            ErrorCode::Failed => "failed",
            ErrorCode::Unknown => "unknown",
        }
    }
}

/// Every error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable kind.
    pub code: ErrorCode,
    /// Human-readable message (never a data value).
    pub error: String,
}

/// Routes as `(method, path, summary)`: the single list the OpenAPI
/// document is built from and the tests walk.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/openapi.json", "This document (no authentication)."),
    ("get", "/v1/whoami", "The member the bearer token belongs to."),
    ("post", "/v1/session", "Sign in to the console (no authentication): body `{\"token\": ...}`; answers `{member, csrf}` and sets a Secure, HttpOnly, SameSite=Strict session cookie. Calls on a session other than GET need its `csrf` in `x-csrf-token`."),
    ("get", "/v1/session", "The console session's member and CSRF token."),
    ("delete", "/v1/session", "Sign out: the session ends and its cookie is cleared."),
    ("get", "/v1/collaborations", "Collaborations the caller belongs to."),
    ("post", "/v1/collaborations", "Create a collaboration from its file; the caller must be a member. Pushed to the node of every member with `provide` once each of them approved it."),
    ("get", "/v1/approvals", "The collaboration versions waiting for the caller's approval, each with its differences from the version the caller approved before."),
    ("get", "/v1/collaborations/{name}", "A collaboration, its current policy version and history."),
    ("put", "/v1/collaborations/{name}", "Apply a new version of the collaboration file; pushed to the nodes of members with `provide` once each of them approved it, and used from the next query. A member may change only its own datasets and tables."),
    ("get", "/v1/collaborations/{name}/approval", "The current version as the caller is asked to approve it: text, SHA-256, each approver's decision, differences from the version the caller approved before."),
    ("post", "/v1/collaborations/{name}/approval", "Approve the current version (an Ed25519 signature of its id and SHA-256 by the caller's member key, checked against the key its node holds) or refuse it with a reason."),
    ("post", "/v1/collaborations/{name}/check", "Check a query without running it (ability `query`)."),
    ("post", "/v1/collaborations/{name}/queries", "Submit a query (ability `query`); it runs in the background."),
    ("get", "/v1/collaborations/{name}/queries", "Queries of the collaboration submitted by the caller."),
    ("get", "/v1/collaborations/{name}/audit", "The collaboration's audit chain as JSON lines."),
    ("get", "/v1/collaborations/{name}/audit/verify", "The audit chain verified by the hub with the same check as `airlock audit verify`: entries, head, and the first break if any (to trust no hub, run `airlock audit verify` and keep the head)."),
    ("get", "/v1/collaborations/{name}/records", "The record of processing (GDPR Art. 30) built from the definition and the verified audit chain, as `airlock records` builds it; `?format=md` for Markdown, `from_ms`/`to_ms` to bound the analyses listed."),
    ("get", "/v1/collaborations/{name}/budget", "What remains of the collaboration's privacy budget, and of the caller's."),
    ("get", "/v1/collaborations/{name}/export", "The collaboration's public metadata (members, node public keys, table schemas, rules, templates, policy versions) as a document signed by this hub."),
    ("get", "/v1/collaborations/{name}/templates", "The collaboration's analysis templates: hash, purpose, parameters, and who approves each."),
    ("post", "/v1/collaborations/{name}/templates/{template}/approval", "Approves a template (by name or hash) for the caller, after static verification against every rule for every allowed parameter value; 422 with the reasons if it could break one."),
    ("delete", "/v1/collaborations/{name}/templates/{template}/approval", "Revokes the caller's approval of a template."),
    ("post", "/v1/datasets/update", "Change a dataset the caller owns (path, or k of its aggregation rules) in every collaboration that uses it: each gets a new policy version, pushed to its nodes."),
    ("get", "/v1/queries/{id}", "A query's state and progress (its submitter, or a member with `receive`)."),
    ("get", "/v1/queries/{id}/result", "A released result (ability `receive`): an Arrow IPC stream, or with `?format=` `json` (columns, rows and noise notes), `csv` or `parquet`."),
    ("post", "/v1/queries/{id}/cancel", "Asks a running query of the caller's to stop; it fails as cancelled (a budget already debited stays spent)."),
];

/// What remains of a privacy budget.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BudgetLeft {
    /// Epsilon left.
    pub epsilon: f64,
    /// Delta left.
    pub delta: f64,
    /// When the budget is fresh again (unix ms), if it refreshes.
    pub period_ends_ms: Option<i64>,
}

/// `GET /v1/collaborations/{name}/budget`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BudgetView {
    /// The collaboration.
    pub collaboration: String,
    /// The caller.
    pub member: String,
    /// What the whole collaboration may still spend; `None` without a budget.
    pub collaboration_left: Option<BudgetLeft>,
    /// What the caller may still spend (the tighter of the collaboration's
    /// and its own budget).
    pub member_left: Option<BudgetLeft>,
}

impl BudgetView {
    /// From the store's answers.
    pub fn new(
        collab: &str,
        member: &str,
        whole: Option<airlock_store::Remaining>,
        mine: Option<airlock_store::Remaining>,
    ) -> Self {
        let left = |r: airlock_store::Remaining| BudgetLeft {
            epsilon: r.epsilon,
            delta: r.delta,
            period_ends_ms: r.period_ends_ms,
        };
        BudgetView {
            collaboration: collab.to_string(),
            member: member.to_string(),
            collaboration_left: whole.map(left),
            member_left: mine.map(left),
        }
    }
}

/// The OpenAPI 3.1 document of the REST API.
pub fn openapi() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary) in ROUTES {
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| serde_json::json!({}));
        let mut op = serde_json::json!({
            "summary": summary,
            "responses": {
                "200": {"description": "OK"},
                "401": {"description": "Missing, unknown, expired or revoked token", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "400": {"description": "Malformed body or invalid file; the message names what is wrong", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "403": {"description": "The caller lacks the ability, or may not make this change", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "404": {"description": "No such object, or not visible to the caller (the same answer)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if *path == "/openapi.json" {
            op["security"] = serde_json::json!([]);
        }
        let params: Vec<serde_json::Value> = ["name", "id", "template"]
            .iter()
            .filter(|p| path.contains(&format!("{{{p}}}")))
            .map(|p| serde_json::json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = serde_json::Value::Array(params);
        }
        let body = match (*method, *path) {
            ("post", "/v1/collaborations") | ("put", "/v1/collaborations/{name}") => {
                Some("CollaborationText")
            }
            ("post", p) if p.ends_with("/approval") && !p.contains("/templates/") => {
                Some("ApprovalDecision")
            }
            ("post", p) if p.ends_with("/check") || p.ends_with("/queries") => Some("QueryRequest"),
            ("post", "/v1/datasets/update") => Some("DatasetUpdate"),
            _ => None,
        };
        if let Some(schema) = body {
            op["requestBody"] = serde_json::json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
            });
        }
        if *path == "/v1/session" && *method == "post" {
            op["security"] = serde_json::json!([]);
            op["requestBody"] = serde_json::json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}, "additionalProperties": false}}}});
        }
        if path.ends_with("/result") {
            if let Some(p) = op["parameters"].as_array_mut() {
                p.push(serde_json::json!({"name": "format", "in": "query", "required": false, "schema": {"type": "string", "enum": ["arrow", "json", "csv", "parquet"]}}));
            }
            op["responses"]["200"] = serde_json::json!({
                "description": "Arrow IPC stream (default), JSON, CSV or Parquet",
                "content": {"application/vnd.apache.arrow.stream": {}, "application/json": {}, "text/csv": {}, "application/vnd.apache.parquet": {}}
            });
        }
        if path.ends_with("/records") {
            if let Some(p) = op["parameters"].as_array_mut() {
                p.push(serde_json::json!({"name": "format", "in": "query", "required": false, "schema": {"type": "string", "enum": ["json", "md"]}}));
                p.push(serde_json::json!({"name": "from_ms", "in": "query", "required": false, "schema": {"type": "integer"}}));
                p.push(serde_json::json!({"name": "to_ms", "in": "query", "required": false, "schema": {"type": "integer"}}));
            }
        }
        entry[*method] = op;
    }
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "Airlock hub", "version": env!("CARGO_PKG_VERSION")},
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}, "session": {"type": "apiKey", "in": "cookie", "name": "__Host-airlock-session"}},
            "schemas": {
                "Error": {"type": "object", "required": ["code", "error"], "properties": {"code": {"type": "string"}, "error": {"type": "string"}}},
                "CollaborationText": {"type": "object", "required": ["toml"], "properties": {"toml": {"type": "string"}, "approval": {"type": "string", "description": "the caller's Ed25519 signature (hex) of its approval of exactly this text"}}, "additionalProperties": false},
                "ApprovalDecision": {"type": "object", "required": ["sha256"], "description": "Either signature (approve) or refuse (a reason).", "properties": {"sha256": {"type": "string"}, "signature": {"type": "string"}, "refuse": {"type": "string"}}, "additionalProperties": false},
                "DatasetUpdate": {"type": "object", "required": ["dataset"], "properties": {"dataset": {"type": "string"}, "min_distinct_identities": {"type": "integer", "minimum": 2}}, "additionalProperties": false},
                "QueryRequest": {"type": "object", "description": "Either sql, or template (a name or hash) with params.", "properties": {"sql": {"type": "string"}, "template": {"type": "string"}, "params": {"type": "object", "additionalProperties": {"type": "string"}}, "purpose": {"type": "string"}}, "additionalProperties": false}
            }
        }
    })
}

/// The line differences from `old` to `new`: each line of either, in
/// order, prefixed `-` (only in `old`), `+` (only in `new`) or ` ` (both).
/// Longest common subsequence; past 4 million line pairs every old line is
/// shown removed and every new line added.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut out = String::new();
    let mut push = |mark: char, line: &str| {
        out.push(mark);
        out.push_str(line);
        out.push('\n');
    };
    if a.len().saturating_mul(b.len()) > 4_000_000 {
        a.iter().for_each(|l| push('-', l));
        b.iter().for_each(|l| push('+', l));
        return out;
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let w = b.len() + 1;
    let mut lcs = vec![0u32; (a.len() + 1) * w];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i * w + j] = if a[i] == b[j] {
                lcs[(i + 1) * w + j + 1] + 1
            } else {
                lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            push(' ', a[i]);
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i * w + j + 1] > lcs[(i + 1) * w + j]) {
            push('+', b[j]);
            j += 1;
        } else {
            push('-', a[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod diff_tests {
    use super::line_diff;

    #[test]
    fn a_diff_marks_removed_added_and_kept_lines() {
        assert_eq!(line_diff("a\nb\nc\n", "a\nx\nc\n"), " a\n-b\n+x\n c\n");
        assert_eq!(line_diff("", "k = 2\n"), "+k = 2\n");
        assert_eq!(line_diff("k = 2\n", ""), "-k = 2\n");
        assert_eq!(line_diff("same\n", "same\n"), " same\n");
    }
}
