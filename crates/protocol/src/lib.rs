//! # airlock-protocol: every value that crosses a boundary
//!
//! What the hub sends a member's node and what comes back, as typed values
//! both sides link without linking each other: the [`Fragment`] (a scan, a
//! crypto-mode step), its [`Predicate`]s and [`Literal`]s, the
//! [`TemplateRun`] a fragment carries, and, with the `datafusion` feature,
//! the one conversion of literals and predicates to and from DataFusion
//! expressions ([`expr`]) and the Arrow IPC framing of results ([`wire`]).
//!
//! ```text
//!  guard (hub) ── to_predicate ──▶ Fragment (JSON) ──▶ node ── predicate_to_expr ──▶ scan
//!  node ── wire::encode_partitions ──▶ bytes ──▶ wire::decode_partitions ── executor
//! ```
//!
//! No IO: encoding is pure, so the crate is tested alone.

pub mod fragment;

#[cfg(feature = "datafusion")]
pub mod expr;
#[cfg(feature = "datafusion")]
pub mod wire;

pub use fragment::{
    CmpOp, CryptoFragment, CryptoOutput, CryptoRole, CryptoSide, Fragment, FragmentColumn, Literal,
    Predicate, PsiRequest, PsiResponse, ScanFragment, TemplateRun, Treatment,
};
