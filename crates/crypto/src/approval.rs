//! A member's approval key: Ed25519 signatures over the exact content of a
//! collaboration version.
//!
//! A node installs a version that configures its member's datasets only
//! when that member signed it with this key (the node holds the public
//! half, `member_key` in `node.toml`). The hub relays signatures it cannot
//! make; another member cannot make them either.
//!
//! ```
//! use airlock_crypto::approval::{approval_message, verify, MemberKey};
//! let key = MemberKey::generate()?;
//! let msg = approval_message("collab-1", 1, &"ab".repeat(32), None);
//! let sig = key.sign(&msg);
//! assert!(verify(&key.public_hex(), &msg, &sig));
//! assert!(!verify(&key.public_hex(), &approval_message("collab-2", 1, &"ab".repeat(32), None), &sig));
//! assert!(!verify(&key.public_hex(), &approval_message("collab-1", 2, &"ab".repeat(32), None), &sig));
//! assert!(!verify(&key.public_hex(), &approval_message("collab-1", 1, &"ab".repeat(32), Some(&"cd".repeat(32))), &sig));
//! # Ok::<(), airlock_crypto::CryptoError>(())
//! ```

use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::files::write_new_private;
use crate::CryptoError;

/// The bytes a member signs to approve one collaboration version: the
/// collaboration id, the version number, the SHA-256 (hex) of its file's
/// exact text, and the SHA-256 of the text the member's node holds now
/// (`None` if it holds none), which the approved version replaces. A node
/// rebuilds the message with the text it holds itself, so an approval
/// installs only on top of that text: an old approval cannot be replayed
/// to roll the node back, and the version is signed so that one cannot be
/// reused for another version number.
pub fn approval_message(
    collaboration_id: &str,
    version: i64,
    toml_sha256: &str,
    replaces_sha256: Option<&str>,
) -> Vec<u8> {
    format!(
        "airlock/v1/approve-collaboration\n{collaboration_id}\n{version}\n{toml_sha256}\n{}",
        replaces_sha256.unwrap_or("-")
    )
    .into_bytes()
}

/// A member's Ed25519 signing key.
pub struct MemberKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemberKey(public: {}, secret: ..)", self.public_hex())
    }
}

impl MemberKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| CryptoError::NoRandomness("ed25519 key generation".into()))?;
        Self::from_pkcs8(doc.as_ref().to_vec())
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self, CryptoError> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| CryptoError::Certificate("not an Ed25519 PKCS#8 key".into()))?;
        Ok(MemberKey { pair, pkcs8 })
    }

    /// The public half as 64 hex characters (what `member_key` holds).
    pub fn public_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    /// A signature (128 hex characters).
    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.pair.sign(message).as_ref())
    }

    /// Writes the key (PKCS#8, hex) to a new file with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), CryptoError> {
        write_new_private(path, format!("{}\n", hex::encode(&self.pkcs8)).as_bytes())
    }

    /// Reads a key written by [`MemberKey::save`]. Errors name the path and
    /// what is wrong, never the contents.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let key_file = |reason: &str| CryptoError::KeyFile {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => key_file("not found"),
            _ => key_file("cannot read"),
        })?;
        let raw = hex::decode(text.trim())
            .map_err(|_| key_file("not a member key (hexadecimal PKCS#8)"))?;
        Self::from_pkcs8(raw).map_err(|_| key_file("not an Ed25519 member key"))
    }
}

/// Whether `signature_hex` is `public_hex`'s signature of `message`.
/// Malformed keys and signatures are simply not valid.
pub fn verify(public_hex: &str, message: &[u8], signature_hex: &str) -> bool {
    let (Ok(public), Ok(sig)) = (hex::decode(public_hex.trim()), hex::decode(signature_hex)) else {
        return false;
    };
    if public.len() != 32 || sig.len() != 64 {
        return false;
    }
    UnparsedPublicKey::new(&ED25519, public)
        .verify(message, &sig)
        .is_ok()
}

/// Whether `public_hex` is a well-formed Ed25519 public key (64 hex characters).
pub fn is_public_key(public_hex: &str) -> bool {
    hex::decode(public_hex.trim()).is_ok_and(|b| b.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_key_collaboration_and_content() {
        let a = MemberKey::generate().expect("test");
        let b = MemberKey::generate().expect("test");
        let sha = "0".repeat(64);
        let msg = approval_message("c", 1, &sha, None);
        let sig = a.sign(&msg);
        assert!(verify(&a.public_hex(), &msg, &sig));
        assert!(!verify(&b.public_hex(), &msg, &sig), "another member's key");
        assert!(!verify(
            &a.public_hex(),
            &approval_message("c", 1, &"1".repeat(64), None),
            &sig
        ));
        assert!(!verify(
            &a.public_hex(),
            &approval_message("d", 1, &sha, None),
            &sig
        ));
        assert!(
            !verify(&a.public_hex(), &approval_message("c", 2, &sha, None), &sig),
            "another version"
        );
        assert!(
            !verify(
                &a.public_hex(),
                &approval_message("c", 1, &sha, Some(&sha)),
                &sig
            ),
            "on top of another text"
        );
        let mut flipped = sig.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert!(!verify(
            &a.public_hex(),
            &msg,
            std::str::from_utf8(&flipped).expect("test")
        ));
        assert!(!verify(&a.public_hex(), &msg, ""));
        assert!(!verify("zz", &msg, &sig));
    }

    #[test]
    fn a_saved_key_loads_and_signs_the_same() {
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("member.key");
        let k = MemberKey::generate().expect("test");
        k.save(&path).expect("test");
        let back = MemberKey::load(&path).expect("test");
        assert_eq!(back.public_hex(), k.public_hex());
        assert!(matches!(k.save(&path), Err(CryptoError::AlreadyExists(_))));
        std::fs::write(dir.path().join("bad"), "secret-looking-text").expect("test");
        let e = MemberKey::load(&dir.path().join("bad"))
            .expect_err("test")
            .to_string();
        assert!(!e.contains("secret-looking"), "{e}");
    }
}
