//! # airlock-crypto: pseudonym keys, sealed secrets and cluster certificates
//!
//! ## Pseudonyms
//!
//! A pseudonym is a keyed hash of an identifier:
//!
//! ```text
//! key   = HKDF-SHA256(ikm = collaboration secret, salt = collaboration id,
//!                     info = "airlock/v1/pseudonym/" + join contract)
//! token = BLAKE3-keyed(key, value)[..16]
//! ```
//!
//! Tokens from two collaborations, or two join contracts, never match. The
//! collaboration secret lives only on contributing members' nodes.
//!
//! ```
//! use airlock_crypto::{CollaborationSecret, PseudonymKey};
//! let secret = CollaborationSecret::from_bytes([7u8; 32]);
//! let key = PseudonymKey::derive(&secret, "demo", "email");
//! assert_eq!(key.token(b"ana@example.com"), key.token(b"ana@example.com"));
//! assert_ne!(key.token(b"ana@example.com"), key.token(b"bo@example.com"));
//! ```
//!
//! ## Sealing ([`sealing`])
//!
//! The collaboration secret travels from node to node through the hub, which
//! relays blobs it cannot open. Each node has a long-term X25519 key pair
//! ([`sealing::NodeKeys`]); a sender seals to the recipient's public key with
//! ECIES (ephemeral X25519, HKDF-SHA256, ChaCha20-Poly1305) and binds the blob
//! to its purpose with a `context` (authenticated, not sent):
//!
//! ```
//! use airlock_crypto::sealing::{open, seal, NodeKeys};
//! let bob = NodeKeys::generate()?;
//! let blob = seal(&bob.public(), b"collab-1/bob", b"the secret")?;
//! assert_eq!(open(&bob, b"collab-1/bob", &blob)?, b"the secret");
//! assert!(open(&bob, b"collab-2/bob", &blob).is_err());
//! # Ok::<(), airlock_crypto::CryptoError>(())
//! ```
//!
//! ## Cluster PKI ([`pki`])
//!
//! Certificates made for the occasion for mutual TLS between a hub and its
//! nodes: a per-cluster CA ([`pki::Ca`], ECDSA P-256) issues leaves usable
//! for both server and client authentication.
//!
//! ```
//! use airlock_crypto::pki::{cert_fingerprint, Ca};
//! let ca = Ca::generate("demo")?;
//! let hub = ca.issue("hub", &["localhost", "127.0.0.1"])?;
//! assert!(cert_fingerprint(&hub.cert_pem)?.starts_with("SHA256:"));
//! # Ok::<(), airlock_crypto::CryptoError>(())
//! ```

use std::path::PathBuf;

use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;

pub mod approval;
mod files;
pub mod pki;
pub mod sealing;

/// Length of a token in bytes.
pub const TOKEN_LEN: usize = 16;

/// Errors of this crate.
#[derive(Debug, Error)]
pub enum CryptoError {
    /// The secret file does not hold 64 hex characters.
    #[error("collaboration secret must be 64 hexadecimal characters")]
    BadSecret,
    /// The operating system's random source failed.
    #[error("no randomness available from the operating system: {0}")]
    NoRandomness(String),
    /// A public key is not 64 hex characters.
    #[error("public key must be 64 hexadecimal characters")]
    BadPublicKey,
    /// The recipient's public key is a low-order point: the shared secret
    /// would be all zeros, so nothing is sealed to it.
    #[error("the recipient public key is a low-order point; refusing to seal to it")]
    LowOrderPublicKey,
    /// Sealing failed (the plaintext is too large for one AEAD message).
    #[error("cannot seal the blob")]
    SealFailed,
    /// A sealed blob could not be opened. Deliberately uniform: truncation, a
    /// wrong version, key or context, and tampering are not told apart.
    #[error("cannot open the sealed blob")]
    CannotOpen,
    /// A node key file is missing, unreadable or malformed.
    #[error("node key file {}: {reason}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never its contents).
        reason: String,
    },
    /// A file that must not be overwritten already exists.
    #[error("refusing to overwrite existing file {}", .0.display())]
    AlreadyExists(PathBuf),
    /// Writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A certificate or certificate key could not be made, parsed or used.
    #[error("certificate error: {0}")]
    Certificate(String),
}

/// The per-collaboration secret shared by contributing nodes.
#[derive(Clone)]
pub struct CollaborationSecret([u8; 32]);

impl std::fmt::Debug for CollaborationSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CollaborationSecret(..)")
    }
}

impl CollaborationSecret {
    /// A fresh secret from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(|e| CryptoError::NoRandomness(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let raw = hex::decode(text.trim()).map_err(|_| CryptoError::BadSecret)?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| CryptoError::BadSecret)?;
        Ok(Self(bytes))
    }

    /// Hex encoding, for the secret file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The key of one join contract in one collaboration.
#[derive(Clone)]
pub struct PseudonymKey([u8; 32]);

impl CollaborationSecret {
    /// A 32-byte key for one use (`info`) in collaboration
    /// `collaboration_id`: HKDF-SHA256 with the collaboration id as salt.
    /// Every key the members' nodes derive from the secret comes from here.
    fn derive(&self, collaboration_id: &str, info: &str) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(collaboration_id.as_bytes()), &self.0);
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        if hk.expand(info.as_bytes(), &mut key).is_err() {
            unreachable!("HKDF output length 32 is always valid");
        }
        key
    }

    /// The key of crypto mode's hash to the group (`airlock/v1/psi-hash`):
    /// only the members' nodes hold it, so the hub (which relays the
    /// messages) cannot hash identifiers it guesses.
    pub fn psi_hash_key(&self, collaboration_id: &str) -> [u8; 32] {
        self.derive(collaboration_id, "airlock/v1/psi-hash")
    }

    /// The key that authenticates crypto mode's messages between the two
    /// members' nodes (`airlock/v1/psi-mac`).
    pub fn psi_mac_key(&self, collaboration_id: &str) -> PsiMacKey {
        PsiMacKey(self.derive(collaboration_id, "airlock/v1/psi-mac"))
    }
}

/// Authenticates crypto mode's messages end to end between the members'
/// nodes: the hub, which relays them, holds no collaboration secret, so it
/// can neither forge nor alter a message, nor play a party.
#[derive(Clone)]
pub struct PsiMacKey([u8; 32]);

/// Length of a [`PsiMacKey`] tag.
pub const PSI_TAG_LEN: usize = 32;

impl PsiMacKey {
    /// The tag of `message` in `context` (who sent it, at which step, for
    /// which query): BLAKE3 keyed over the context's length, the context
    /// and the message.
    pub fn tag(&self, context: &[u8], message: &[u8]) -> [u8; PSI_TAG_LEN] {
        *self.keyed(context, message).as_bytes()
    }

    fn keyed(&self, context: &[u8], message: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(&(context.len() as u64).to_le_bytes());
        h.update(context);
        h.update(message);
        h.finalize()
    }

    /// Whether `tag` is the tag of `message` in `context` (compared in
    /// constant time).
    pub fn verify(&self, context: &[u8], message: &[u8], tag: &[u8]) -> bool {
        let Ok(tag) = <[u8; PSI_TAG_LEN]>::try_from(tag) else {
            return false;
        };
        // blake3::Hash compares in constant time.
        self.keyed(context, message) == blake3::Hash::from(tag)
    }
}

impl PseudonymKey {
    /// Derives the key for `contract` in the collaboration `collaboration_id`.
    pub fn derive(secret: &CollaborationSecret, collaboration_id: &str, contract: &str) -> Self {
        Self(secret.derive(
            collaboration_id,
            &format!("airlock/v1/pseudonym/{contract}"),
        ))
    }

    /// The 16-byte token of a value.
    pub fn token(&self, value: &[u8]) -> [u8; TOKEN_LEN] {
        let hash = blake3::keyed_hash(&self.0, value);
        let mut out = [0u8; TOKEN_LEN];
        out.copy_from_slice(&hash.as_bytes()[..TOKEN_LEN]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_across_collaborations_and_contracts() {
        let s = CollaborationSecret::from_bytes([1; 32]);
        let a = PseudonymKey::derive(&s, "collab-a", "email");
        let b = PseudonymKey::derive(&s, "collab-b", "email");
        let c = PseudonymKey::derive(&s, "collab-a", "phone");
        let v = b"ana@example.com";
        assert_ne!(a.token(v), b.token(v));
        assert_ne!(a.token(v), c.token(v));
        let other = PseudonymKey::derive(
            &CollaborationSecret::from_bytes([2; 32]),
            "collab-a",
            "email",
        );
        assert_ne!(a.token(v), other.token(v));
    }

    #[test]
    fn a_psi_tag_verifies_only_for_its_key_context_and_message() {
        let s = CollaborationSecret::from_bytes([3; 32]);
        let k = s.psi_mac_key("c");
        let t = k.tag(b"A1", b"message");
        assert!(k.verify(b"A1", b"message", &t));
        assert!(!k.verify(b"A2", b"message", &t), "another step");
        assert!(!k.verify(b"A1", b"messagf", &t), "another message");
        assert!(!k.verify(b"A1", b"message", &t[..31]), "a short tag");
        assert!(
            !s.psi_mac_key("d").verify(b"A1", b"message", &t),
            "another collaboration"
        );
        // The context's length is covered: moving a byte across the
        // boundary is another tag.
        assert_ne!(k.tag(b"A1m", b"essage"), t);
        assert_ne!(s.psi_hash_key("c"), s.psi_hash_key("d"));
    }

    #[test]
    fn secret_hex_round_trip_and_errors() {
        let s = CollaborationSecret::generate().expect("os randomness");
        let back = CollaborationSecret::from_hex(&format!("  {}\n", s.to_hex())).expect("parse");
        assert_eq!(back.0, s.0);
        assert!(CollaborationSecret::from_hex("abcd").is_err());
        assert!(CollaborationSecret::from_hex(&"zz".repeat(32)).is_err());
    }
}
