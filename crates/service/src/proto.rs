//! What travels between the hub and a node over Arrow Flight.
//!
//! | call | body (JSON) | answer |
//! |---|---|---|
//! | `DoGet` | [`Ticket`]: collaboration id, policy version, fragment | Flight data: the fragment's rows |
//! | `DoAction hello` | none | [`Hello`] |
//! | `DoAction install` | [`Install`] | [`Installed`] |
//! | `DoAction secret.generate` | [`SecretGenerate`] | [`SealedSecrets`] |
//! | `DoAction secret.install` | [`SecretInstall`] | `{}` |
//!
//! A refusal travels as gRPC status `PERMISSION_DENIED` whose message is
//! [`REFUSAL_PREFIX`] followed by the [`Refusal`] as JSON.

use std::collections::BTreeMap;

use airlock_policy::Refusal;
use airlock_protocol::Fragment;
use serde::{Deserialize, Serialize};

/// Prefix of a status message that carries a typed refusal.
pub const REFUSAL_PREFIX: &str = "airlock-refusal:";

/// Action names.
pub mod action {
    /// Who the node is.
    pub const HELLO: &str = "hello";
    /// Install (or update) a collaboration's policy on the node.
    pub const INSTALL: &str = "install";
    /// Generate (or reuse) the collaboration secret and seal it to peers.
    pub const SECRET_GENERATE: &str = "secret.generate";
    /// Open a sealed collaboration secret and keep it.
    pub const SECRET_INSTALL: &str = "secret.install";
    /// Write a released result to one of the node's destinations.
    pub const DELIVER: &str = "deliver";
    /// One step of a crypto-mode query.
    pub const PSI: &str = "psi";
}

/// A crypto-mode step for a collaboration installed on the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Psi {
    /// Collaboration id.
    pub collaboration: String,
    /// The policy version the query was planned under.
    pub policy_version: i64,
    /// The step.
    pub request: airlock_protocol::PsiRequest,
}

/// A released result for the node's member, to write to a destination.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deliver {
    /// Collaboration id.
    pub collaboration: String,
    /// The query (32 hex characters).
    pub query: String,
    /// A destination named in the node's configuration.
    pub destination: String,
    /// The result as framed Arrow IPC streams (base64).
    pub result: String,
}

/// What a node wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivered {
    /// The destination.
    pub destination: String,
    /// `parquet`, `csv` or `postgres`.
    pub kind: String,
    /// The file written, or `table` in the member's database.
    pub location: String,
    /// Rows written.
    pub rows: u64,
    /// SHA-256 of the result bytes received.
    pub result_sha256: String,
    /// SHA-256 of the file written (files only).
    pub file_sha256: Option<String>,
}

/// A `DoGet` ticket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    /// Collaboration id.
    pub collaboration: String,
    /// The policy version the fragment was planned under.
    pub policy_version: i64,
    /// The fragment.
    pub fragment: Fragment,
}

/// A collaboration as a node holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstalledSummary {
    /// Collaboration id.
    pub id: String,
    /// Collaboration name.
    pub name: String,
    /// Policy version held.
    pub version: i64,
    /// SHA-256 of the text held (what the next approval replaces).
    #[serde(default)]
    pub sha256: String,
    /// Whether the collaboration secret is present.
    pub has_secret: bool,
}

/// A node's answer to `hello`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The member the node serves.
    pub member: String,
    /// The node's X25519 public key (hex).
    pub x25519: String,
    /// Its fingerprint, to compare out of band.
    pub fingerprint: String,
    /// The public key (hex Ed25519) the node checks its member's approvals
    /// against, if it has one.
    #[serde(default)]
    pub member_key: Option<String>,
    /// Collaborations installed.
    pub collaborations: Vec<InstalledSummary>,
}

/// Install a collaboration's policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    /// Policy version (increases with every change).
    pub version: i64,
    /// The collaboration file.
    pub toml: String,
    /// The member who applied this version (as the hub authenticated it;
    /// a node trusts it for nothing).
    pub applied_by: String,
    /// Each approving member's Ed25519 signature (hex) of
    /// [`airlock_crypto::approval::approval_message`] over this version's
    /// id and text. A node installs the version only with a valid
    /// signature by its own member's key.
    #[serde(default)]
    pub approvals: BTreeMap<String, String>,
}

/// A node's answer to `install`: its configured tables' schemas (Arrow IPC
/// schema messages, base64), the only metadata that leaves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Installed {
    /// Collaboration id.
    pub id: String,
    /// Policy version now held.
    pub version: i64,
    /// Schema per configured table alias.
    pub schemas: BTreeMap<String, String>,
    /// Whether the collaboration secret is present.
    pub has_secret: bool,
}

/// A recipient of the collaboration secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// Member.
    pub member: String,
    /// X25519 public key (hex), as that member's node announced it.
    pub x25519: String,
}

/// Ask a node to seal the collaboration secret to its peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretGenerate {
    /// Collaboration id.
    pub collaboration: String,
    /// Who receives it.
    pub recipients: Vec<Recipient>,
}

/// Sealed secrets per member (base64).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedSecrets {
    /// Member → sealed blob.
    pub sealed: BTreeMap<String, String>,
}

/// Deliver a sealed secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretInstall {
    /// Collaboration id.
    pub collaboration: String,
    /// The member whose node sealed it (its key must be pinned).
    pub from: String,
    /// Sealed blob (base64).
    pub sealed: String,
}

/// The context a collaboration secret is sealed under: binds the blob to one
/// collaboration and one recipient.
pub fn seal_context(collaboration_id: &str, recipient: &str) -> Vec<u8> {
    format!("airlock/v1/collaboration-secret/{collaboration_id}/{recipient}").into_bytes()
}

/// Encodes a refusal as a status message.
pub fn refusal_message(r: &Refusal) -> String {
    format!(
        "{REFUSAL_PREFIX}{}",
        serde_json::to_string(r).unwrap_or_default()
    )
}

/// Decodes a refusal from a status message.
pub fn parse_refusal(message: &str) -> Option<Refusal> {
    serde_json::from_str(message.strip_prefix(REFUSAL_PREFIX)?).ok()
}
