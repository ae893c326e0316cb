//! # airlock-protocol: every value that crosses a boundary
//!
//! What the hub sends a member's node and what comes back, as typed values
//! both sides link without linking each other: the [`Fragment`] (a scan, a
//! one-table analysis, a crypto-mode step), its [`Predicate`]s and
//! [`Literal`]s, the [`TemplateRun`] a fragment carries, opaque bytes as
//! [`Message`], what the hub asks a node when it installs a version and
//! relays the secret ([`admin`]), what a node reports of a delivered result
//! ([`Delivered`]), the typed [`Refusal`] and its status-message codec
//! ([`refusal`]), the audit entries, kind and payload ([`AuditEvent`],
//! [`AuditKind`]), the result metadata keys ([`metadata`]), and, with the
//! `datafusion` feature, the one conversion of literals and predicates to
//! and from DataFusion expressions ([`expr`]) and the Arrow IPC framing of
//! results ([`wire`]).
//!
//! ```text
//!  guard (hub) ── to_predicate ──▶ Fragment (JSON) ──▶ node ── predicate_to_expr ──▶ scan
//!  node ── wire::encode_partitions ──▶ bytes ──▶ wire::decode_partitions ── executor
//! ```
//!
//! No IO: encoding is pure, so the crate is tested alone.

pub mod admin;
pub mod audit;
pub mod delivery;
pub mod fragment;
pub mod refusal;

#[cfg(feature = "datafusion")]
pub mod expr;
#[cfg(feature = "datafusion")]
pub mod wire;

/// Schema metadata keys of a released result: what noise was added (a JSON
/// list of notes, one per noised column) and what the release cost (JSON
/// epsilon and delta). Set by the DP release (`airlock_exec::dp`) and by a crypto-mode
/// node, read by the CLI and the services.
pub mod metadata {
    /// The noise notes of a differentially private result.
    pub const NOISE: &str = "airlock.noise";
    /// The (epsilon, delta) a differentially private result cost.
    pub const DP_COST: &str = "airlock.dp_cost";
}

pub use audit::{AuditEvent, AuditKind};
pub use delivery::Delivered;
pub use fragment::{
    CmpOp, CryptoFragment, CryptoOutput, CryptoRole, CryptoSide, Fragment, FragmentColumn, Literal,
    Message, Predicate, PsiRequest, PsiResponse, ScanDp, ScanFragment, TemplateRun, Treatment,
};
pub use refusal::{Control, Refusal, RuleKind};
