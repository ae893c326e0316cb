//! # airlock-psi: overlap counts and sums between two nodes, no executor
//!
//! Crypto mode's private set intersection: ECDH-style double blinding on
//! ristretto255 (identifiers hashed to the group per RFC 9380, keyed by
//! the collaboration secret, blinded with fresh per-query scalars) and
//! exponential ElGamal under a 2-of-2 key (each node's share with a
//! Schnorr proof of knowledge, partial decryptions with Chaum-Pedersen
//! proofs). One protocol, [`grouped`], for every query shape: the node of
//! the side not grouped by (the matcher) matches without seeing a group
//! and proves each of its per-item counts 0 or 1 (an OR of two
//! Chaum-Pedersen proofs, checked in batches); the other node (the
//! grouper) sums per group under encryption, k by zero tests, sizes padded
//! with dummies. The asker's node opens the released values: from the
//! grouper's partial decryptions when it matched, from the matcher's
//! (noised) when it grouped. No node opens a per-person value. Semi-honest
//! security, with what a modified node can still do listed in
//! `docs/crypto-mode.md`; see there for the protocol, the checks of each
//! message and its leakage. [`protocol`] holds the framing all messages
//! share.
//!
//! Pure computation, no IO: the node crate feeds identifiers in and the
//! hub (or any transport) carries the opaque messages.

pub mod elgamal;
pub mod floor;
pub mod group;
pub mod grouped;
pub mod protocol;
pub mod tagged;

use thiserror::Error;

pub use group::Suite;
pub use protocol::{GroupResult, SessionId, StepStats};

/// Why a step failed. Never holds a received byte.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PsiError {
    /// The message is not well-formed (a bad point, a truncated list, ...).
    #[error("refused a malformed crypto-mode message: {0}")]
    Malformed(&'static str),
    /// The message belongs to another session (query).
    #[error("refused a crypto-mode message of another query")]
    Replay,
    /// A sum exceeds what exponential ElGamal decrypts here.
    #[error("a sum exceeds 2^40, the bound of crypto mode's encryption")]
    Bound,
    /// The operating system's random source failed.
    #[error("no randomness: {0}")]
    Random(String),
    /// Differential privacy noise could not be drawn.
    #[error("noise: {0}")]
    Noise(String),
}

/// Hashes identifiers to the group, on every core.
pub fn hash_all(suite: &Suite, ids: &[&[u8]]) -> Vec<curve25519_dalek::ristretto::RistrettoPoint> {
    use rayon::prelude::*;
    ids.par_iter().map(|id| suite.hash(id)).collect()
}
