//! # airlock-crypto: pseudonym keys and tokens
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

use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;

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

impl PseudonymKey {
    /// Derives the key for `contract` in the collaboration `collaboration_id`.
    pub fn derive(secret: &CollaborationSecret, collaboration_id: &str, contract: &str) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(collaboration_id.as_bytes()), &secret.0);
        let mut key = [0u8; 32];
        let info = format!("airlock/v1/pseudonym/{contract}");
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        if hk.expand(info.as_bytes(), &mut key).is_err() {
            unreachable!("HKDF output length 32 is always valid");
        }
        Self(key)
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
    fn secret_hex_round_trip_and_errors() {
        let s = CollaborationSecret::generate().expect("os randomness");
        let back = CollaborationSecret::from_hex(&format!("  {}\n", s.to_hex())).expect("parse");
        assert_eq!(back.0, s.0);
        assert!(CollaborationSecret::from_hex("abcd").is_err());
        assert!(CollaborationSecret::from_hex(&"zz".repeat(32)).is_err());
    }
}
