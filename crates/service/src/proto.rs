//! What travels between the hub and a node over Arrow Flight.
//!
//! | call | body (JSON) | answer |
//! |---|---|---|
//! | `DoGet` | [`Ticket`]: collaboration id, policy version, fragment | Flight data: the fragment's rows |
//! | `DoAction hello` | none | [`Hello`] |
//! | `DoAction install` | [`Install`] | [`Installed`] |
//! | `DoAction secret.generate` | [`SecretGenerate`] | [`SealedSecrets`] |
//! | `DoAction secret.install` | [`SecretInstall`] | `{}` |
//! | `DoAction deliver` | [`Deliver`] | [`Delivered`] |
//! | `DoAction psi` | [`Psi`] | `airlock_protocol::PsiResponse` |
//!
//! The envelopes (`Ticket`, `Psi`, `Deliver`) are this transport's; the
//! values in them are `airlock_protocol`'s.
//!
//! A refusal travels as gRPC status `PERMISSION_DENIED` whose message is
//! [`REFUSAL_PREFIX`] followed by the [`airlock_protocol::Refusal`] as JSON.

use airlock_protocol::Fragment;
use serde::{Deserialize, Serialize};

pub use airlock_protocol::refusal::REFUSAL_PREFIX;

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
    /// The result as framed Arrow IPC streams.
    pub result: airlock_protocol::Message,
}

/// What a node wrote (one type for the node, the hub and the audit chain).
pub use airlock_protocol::Delivered;

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

/// The install and secret-relay messages (one type for the hub and the
/// node: `airlock_protocol::admin`).
pub use airlock_protocol::admin::{
    seal_context, Hello, Install, Installed, InstalledSummary, Recipient, SealedSecrets,
    SecretGenerate, SecretInstall,
};

/// The refusal codec of a status message (one home, `airlock_protocol::refusal`).
pub use airlock_protocol::refusal::{
    from_status_message as parse_refusal, status_message as refusal_message,
};
