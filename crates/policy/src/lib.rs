//! # airlock-policy: the vocabulary of a collaboration
//!
//! Pure types and checks, no IO: the collaboration configuration (members,
//! abilities, datasets, configured tables, column roles, analysis rules), the
//! typed [`Refusal`] every guard and node returns (defined in
//! `airlock-protocol`, which every boundary links), templates, and the
//! differential privacy rules. What crosses the boundary between the hub and
//! a member's node (the fragment) is `airlock-protocol`'s.
//!
//! ```text
//!  collaboration.toml ──parse──▶ CollaborationConfig ──validate──▶ Collaboration
//!                                                                  │
//!            guard (hub) ──── Fragment (JSON) ────▶ node (member) ─┘ both check
//! ```
//!
//! Loading files and checking that datasets exist is the node's job (it is IO);
//! everything here can be tested alone and fast.

pub mod admission;
pub mod config;
pub mod dp;
pub mod template;

pub use admission::{strictest_k, RunRefusal, DEFAULT_MIN_DISTINCT};
pub use airlock_protocol::refusal::{Control, Refusal};
pub use config::{
    Ability, AggFunction, AnalysisRule, CanonicalColumn, CanonicalType, Collaboration,
    CollaborationConfig, ColumnRole, ConfigError, ConfigErrors, ConfiguredTable, ConsentSource,
    Dataset, Member, Mode, Normalize, RuleKind, SchemaSection, SCALAR_FUNCTIONS,
};
pub use dp::{users_noise_to_epsilon, AnalystBudget, DpRule, PrivacySection, StrictestDp};
pub use template::{ParamSpec, ParamType, QuerySpec, Template, Written};

/// Prefix reserved for columns Airlock adds to a plan; user SQL may not use it.
pub const RESERVED_PREFIX: &str = "__airlock";
