//! Sealed blobs: public-key encryption from node to node through the hub.
//!
//! The hub relays the collaboration secret between members' nodes but must
//! never read it. Each node holds a long-term X25519 key pair
//! ([`NodeKeys`]) and publishes its public key; members compare
//! [`fingerprint`]s out of band. A sender [`seal`]s to the recipient's public
//! key; only the recipient can [`open`] the blob.
//!
//! Construction (ECIES):
//!
//! ```text
//! eph         = fresh X25519 key pair
//! shared      = X25519(eph, recipient_pub)      (all zeros → refused)
//! key         = HKDF-SHA256(ikm = shared, salt = eph_pub || recipient_pub,
//!                           info = "airlock/v1/seal")
//! nonce       = 12 random bytes
//! ciphertext  = ChaCha20-Poly1305(key, nonce, plaintext, aad = context)
//! sealed blob = 0x01 || eph_pub (32) || nonce (12) || ciphertext || tag (16)
//! ```
//!
//! `context` is authenticated but not carried in the blob: it binds the blob
//! to its purpose (for example the collaboration id and the recipient
//! member), so a blob replayed into another collaboration does not open.
//!
//! [`seal`] is anonymous: anyone with the recipient's public key can make a
//! blob that opens. Where the recipient must know *who* sealed (the
//! collaboration secret: a relaying hub must not be able to substitute one
//! of its own), [`seal_from`] also mixes the sender's static key into the
//! key derivation, and [`open_from`] returns the sender's public key, which
//! only the holder of the matching private key can have produced:
//!
//! ```text
//! key         = HKDF-SHA256(ikm = X25519(eph, recipient_pub) || X25519(sender, recipient_pub),
//!                           salt = eph_pub || recipient_pub || sender_pub,
//!                           info = "airlock/v1/seal-from")
//! sealed blob = 0x02 || sender_pub (32) || eph_pub (32) || nonce (12) || ciphertext || tag (16)
//! ```

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::files::write_new_private;
use crate::CryptoError;

/// The format version, the first byte of every sealed blob.
pub const SEAL_VERSION: u8 = 1;

/// Length of an X25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + PUBLIC_KEY_LEN + NONCE_LEN;

/// Bytes a sealed blob adds to its plaintext (version, ephemeral public key,
/// nonce and authentication tag).
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

const SEAL_INFO: &[u8] = b"airlock/v1/seal";

fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|e| CryptoError::NoRandomness(e.to_string()))?;
    Ok(bytes)
}

/// A node's X25519 public key, as published to other members.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKeyBytes([u8; PUBLIC_KEY_LEN]);

impl PublicKeyBytes {
    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Lowercase hex encoding (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let raw = hex::decode(text.trim()).map_err(|_| CryptoError::BadPublicKey)?;
        let bytes: [u8; PUBLIC_KEY_LEN] = raw.try_into().map_err(|_| CryptoError::BadPublicKey)?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for PublicKeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKeyBytes({})", self.to_hex())
    }
}

impl FromStr for PublicKeyBytes {
    type Err = CryptoError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_hex(text)
    }
}

/// A node's long-term X25519 key pair. The secret half is zeroized on drop
/// and never shown by `Debug`.
#[derive(Clone)]
pub struct NodeKeys {
    secret: StaticSecret,
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKeys(public: {}, secret: ..)", self.public())
    }
}

impl NodeKeys {
    /// A fresh key pair from the operating system's CSPRNG; fails (rather
    /// than falling back to anything weaker) if it is unavailable.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self {
            secret: StaticSecret::from(random_bytes::<32>()?),
        })
    }

    /// The public half.
    pub fn public(&self) -> PublicKeyBytes {
        PublicKeyBytes(PublicKey::from(&self.secret).to_bytes())
    }

    /// Writes the secret key as 64 hex characters and a newline to a new file
    /// with mode 0600, creating missing parent folders (mode 0700). Refuses to
    /// overwrite an existing file ([`CryptoError::AlreadyExists`]).
    pub fn save(&self, path: &Path) -> Result<(), CryptoError> {
        let text = format!("{}\n", hex::encode(self.secret.as_bytes()));
        write_new_private(path, text.as_bytes())
    }

    /// Reads a key file written by [`NodeKeys::save`]. Errors name the path
    /// and what is wrong, never the file's contents.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let key_file = |reason: String| CryptoError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => key_file("not found".into()),
            std::io::ErrorKind::InvalidData => key_file("not a text file".into()),
            _ => key_file(format!("cannot read: {e}")),
        })?;
        let malformed = || key_file("must hold exactly 64 hexadecimal characters".into());
        let raw = hex::decode(text.trim()).map_err(|_| malformed())?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| malformed())?;
        Ok(Self {
            secret: StaticSecret::from(bytes),
        })
    }
}

/// The fingerprint of a node public key, for out-of-band comparison:
/// `"x25519:SHA256:"` followed by the first 16 bytes of SHA-256 over the 32
/// raw key bytes, as lowercase hex pairs joined by colons, e.g.
/// `x25519:SHA256:3b:1f:…:a0` (16 pairs).
pub fn fingerprint(public: &PublicKeyBytes) -> String {
    let digest = Sha256::digest(public.0);
    let pairs: Vec<String> = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("x25519:SHA256:{}", pairs.join(":"))
}

/// The AEAD key for one blob, from the X25519 shared secret.
fn blob_cipher(
    shared: &[u8; 32],
    eph_pub: &[u8; PUBLIC_KEY_LEN],
    recipient: &[u8; PUBLIC_KEY_LEN],
) -> ChaCha20Poly1305 {
    let mut salt = [0u8; 2 * PUBLIC_KEY_LEN];
    salt[..PUBLIC_KEY_LEN].copy_from_slice(eph_pub);
    salt[PUBLIC_KEY_LEN..].copy_from_slice(recipient);
    derive_cipher(shared, &salt, SEAL_INFO)
}

/// ChaCha20-Poly1305 keyed by HKDF-SHA256(ikm, salt, info); the key bytes
/// are wiped once the cipher holds them.
fn derive_cipher(ikm: &[u8], salt: &[u8], info: &[u8]) -> ChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    if hk.expand(info, &mut key).is_err() {
        unreachable!("HKDF output length 32 is always valid");
    }
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
    key.fill(0);
    cipher
}

/// Seals `plaintext` to `recipient`, bound to `context` (see the
/// [module docs](self) for the construction and format).
///
/// Fails with [`CryptoError::LowOrderPublicKey`] if the recipient key is a
/// low-order point (the shared secret would be all zeros).
pub fn seal(
    recipient: &PublicKeyBytes,
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let eph = StaticSecret::from(random_bytes::<32>()?);
    let eph_pub = PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&PublicKey::from(recipient.0));
    if !shared.was_contributory() {
        return Err(CryptoError::LowOrderPublicKey);
    }
    let nonce = random_bytes::<NONCE_LEN>()?;
    let cipher = blob_cipher(shared.as_bytes(), &eph_pub, &recipient.0);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: context,
            },
        )
        .map_err(|_| CryptoError::SealFailed)?;
    let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&eph_pub);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens a blob sealed to `keys` with the same `context`.
///
/// Every failure (truncated or empty input, unknown version, another
/// recipient, another context, any tampering) gives the same
/// [`CryptoError::CannotOpen`], so the error is no oracle.
pub fn open(keys: &NodeKeys, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD || sealed[0] != SEAL_VERSION {
        return Err(CryptoError::CannotOpen);
    }
    let mut eph_pub = [0u8; PUBLIC_KEY_LEN];
    eph_pub.copy_from_slice(&sealed[1..1 + PUBLIC_KEY_LEN]);
    let nonce = &sealed[1 + PUBLIC_KEY_LEN..HEADER_LEN];
    let shared = keys.secret.diffie_hellman(&PublicKey::from(eph_pub));
    if !shared.was_contributory() {
        return Err(CryptoError::CannotOpen);
    }
    let cipher = blob_cipher(shared.as_bytes(), &eph_pub, &keys.public().0);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &sealed[HEADER_LEN..],
                aad: context,
            },
        )
        .map_err(|_| CryptoError::CannotOpen)
}

/// Format version of sender-authenticated blobs ([`seal_from`]).
pub const SEAL_FROM_VERSION: u8 = 2;

const SEAL_FROM_INFO: &[u8] = b"airlock/v1/seal-from";
const FROM_HEADER_LEN: usize = 1 + 2 * PUBLIC_KEY_LEN + NONCE_LEN;

fn from_cipher(
    ikm: &[u8; 64],
    eph_pub: &[u8; PUBLIC_KEY_LEN],
    recipient: &[u8; PUBLIC_KEY_LEN],
    sender: &[u8; PUBLIC_KEY_LEN],
) -> ChaCha20Poly1305 {
    let mut salt = [0u8; 3 * PUBLIC_KEY_LEN];
    salt[..PUBLIC_KEY_LEN].copy_from_slice(eph_pub);
    salt[PUBLIC_KEY_LEN..2 * PUBLIC_KEY_LEN].copy_from_slice(recipient);
    salt[2 * PUBLIC_KEY_LEN..].copy_from_slice(sender);
    derive_cipher(ikm, &salt, SEAL_FROM_INFO)
}

/// Seals `plaintext` from `sender` to `recipient`, bound to `context`; the
/// recipient learns, from [`open_from`], that the holder of `sender`'s
/// private key sealed it.
pub fn seal_from(
    sender: &NodeKeys,
    recipient: &PublicKeyBytes,
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let eph = StaticSecret::from(random_bytes::<32>()?);
    let eph_pub = PublicKey::from(&eph).to_bytes();
    let r = PublicKey::from(recipient.0);
    let e_shared = eph.diffie_hellman(&r);
    let s_shared = sender.secret.diffie_hellman(&r);
    if !e_shared.was_contributory() || !s_shared.was_contributory() {
        return Err(CryptoError::LowOrderPublicKey);
    }
    let mut ikm = [0u8; 64];
    ikm[..32].copy_from_slice(e_shared.as_bytes());
    ikm[32..].copy_from_slice(s_shared.as_bytes());
    let sender_pub = sender.public().0;
    let cipher = from_cipher(&ikm, &eph_pub, &recipient.0, &sender_pub);
    ikm.fill(0);
    let nonce = random_bytes::<NONCE_LEN>()?;
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: context,
            },
        )
        .map_err(|_| CryptoError::SealFailed)?;
    let mut out = Vec::with_capacity(FROM_HEADER_LEN + ciphertext.len());
    out.push(SEAL_FROM_VERSION);
    out.extend_from_slice(&sender_pub);
    out.extend_from_slice(&eph_pub);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens a blob made by [`seal_from`] for `keys` with the same `context`;
/// returns the sender's public key (check it against the pinned one) and
/// the plaintext. Every failure is the same [`CryptoError::CannotOpen`].
pub fn open_from(
    keys: &NodeKeys,
    context: &[u8],
    sealed: &[u8],
) -> Result<(PublicKeyBytes, Vec<u8>), CryptoError> {
    if sealed.len() < FROM_HEADER_LEN + TAG_LEN || sealed[0] != SEAL_FROM_VERSION {
        return Err(CryptoError::CannotOpen);
    }
    let mut sender = [0u8; PUBLIC_KEY_LEN];
    sender.copy_from_slice(&sealed[1..1 + PUBLIC_KEY_LEN]);
    let mut eph_pub = [0u8; PUBLIC_KEY_LEN];
    eph_pub.copy_from_slice(&sealed[1 + PUBLIC_KEY_LEN..1 + 2 * PUBLIC_KEY_LEN]);
    let nonce = &sealed[1 + 2 * PUBLIC_KEY_LEN..FROM_HEADER_LEN];
    let e_shared = keys.secret.diffie_hellman(&PublicKey::from(eph_pub));
    let s_shared = keys.secret.diffie_hellman(&PublicKey::from(sender));
    if !e_shared.was_contributory() || !s_shared.was_contributory() {
        return Err(CryptoError::CannotOpen);
    }
    let mut ikm = [0u8; 64];
    ikm[..32].copy_from_slice(e_shared.as_bytes());
    ikm[32..].copy_from_slice(s_shared.as_bytes());
    let cipher = from_cipher(&ikm, &eph_pub, &keys.public().0, &sender);
    ikm.fill(0);
    let plain = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &sealed[FROM_HEADER_LEN..],
                aad: context,
            },
        )
        .map_err(|_| CryptoError::CannotOpen)?;
    Ok((PublicKeyBytes(sender), plain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn seal_from_authenticates_the_sender() {
        let alice = NodeKeys::generate().expect("keys");
        let bob = NodeKeys::generate().expect("keys");
        let hub = NodeKeys::generate().expect("keys");
        let blob = seal_from(&alice, &bob.public(), b"c/bob", b"secret").expect("seal");
        let (from, plain) = open_from(&bob, b"c/bob", &blob).expect("open");
        assert_eq!(from, alice.public());
        assert_eq!(plain, b"secret");
        // A relay that swaps in its own sender key, or forges the header,
        // cannot make the blob open as someone else's.
        let mut swapped = blob.clone();
        swapped[1..33].copy_from_slice(hub.public().as_bytes());
        assert!(open_from(&bob, b"c/bob", &swapped).is_err());
        let forged = seal_from(&hub, &bob.public(), b"c/bob", b"mine").expect("seal");
        let (from, _) = open_from(&bob, b"c/bob", &forged).expect("opens");
        assert_ne!(from, alice.public(), "the forger is named, not alice");
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(open_from(&bob, b"c/bob", &bad).is_err(), "byte {i}");
        }
        assert!(open_from(&bob, b"c/eve", &blob).is_err());
        assert!(open_from(&hub, b"c/bob", &blob).is_err());
        assert!(open_from(&bob, b"c/bob", &blob[..blob.len() - 1]).is_err());
        assert!(open(&bob, b"c/bob", &blob).is_err(), "formats do not mix");
    }

    fn is_cannot_open(r: Result<Vec<u8>, CryptoError>) -> bool {
        matches!(r, Err(CryptoError::CannotOpen))
    }

    #[test]
    fn round_trip() {
        let keys = NodeKeys::generate().expect("keys");
        for plaintext in [&b""[..], b"x", &[0xab; 1000]] {
            let blob = seal(&keys.public(), b"collab/bob", plaintext).expect("seal");
            assert_eq!(blob.len(), plaintext.len() + SEAL_OVERHEAD);
            assert_eq!(blob[0], SEAL_VERSION);
            assert_eq!(open(&keys, b"collab/bob", &blob).expect("open"), plaintext);
        }
    }

    #[test]
    fn wrong_recipient_or_context_fails() {
        let bob = NodeKeys::generate().expect("keys");
        let eve = NodeKeys::generate().expect("keys");
        let blob = seal(&bob.public(), b"collab-1/bob", b"secret").expect("seal");
        assert!(is_cannot_open(open(&eve, b"collab-1/bob", &blob)));
        assert!(is_cannot_open(open(&bob, b"collab-2/bob", &blob)));
        assert!(is_cannot_open(open(&bob, b"", &blob)));
    }

    #[test]
    fn every_single_byte_flip_fails() {
        let keys = NodeKeys::generate().expect("keys");
        let blob = seal(&keys.public(), b"ctx", b"the collaboration secret").expect("seal");
        for i in 0..blob.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = blob.clone();
                bad[i] ^= bit;
                assert!(is_cannot_open(open(&keys, b"ctx", &bad)), "byte {i}");
            }
        }
    }

    #[test]
    fn truncations_empty_and_wrong_version_fail() {
        let keys = NodeKeys::generate().expect("keys");
        let blob = seal(&keys.public(), b"ctx", b"secret").expect("seal");
        for len in 0..blob.len() {
            assert!(
                is_cannot_open(open(&keys, b"ctx", &blob[..len])),
                "len {len}"
            );
        }
        let mut extended = blob.clone();
        extended.push(0);
        assert!(is_cannot_open(open(&keys, b"ctx", &extended)));
        for version in [0u8, 2, 0xff] {
            let mut bad = blob.clone();
            bad[0] = version;
            assert!(is_cannot_open(open(&keys, b"ctx", &bad)));
        }
        assert_eq!(
            CryptoError::CannotOpen.to_string(),
            "cannot open the sealed blob"
        );
    }

    #[test]
    fn seals_are_randomized() {
        let keys = NodeKeys::generate().expect("keys");
        let a = seal(&keys.public(), b"ctx", b"same").expect("seal");
        let b = seal(&keys.public(), b"ctx", b"same").expect("seal");
        assert_ne!(a, b);
        assert_ne!(a[1..33], b[1..33], "fresh ephemeral key");
        assert_ne!(a[33..45], b[33..45], "fresh nonce");
    }

    #[test]
    fn low_order_public_keys_are_refused() {
        // The all-zero point and another small-order point on Curve25519.
        let zero = PublicKeyBytes::from_bytes([0; 32]);
        let mut one = [0u8; 32];
        one[0] = 1;
        for key in [zero, PublicKeyBytes::from_bytes(one)] {
            assert!(matches!(
                seal(&key, b"ctx", b"secret"),
                Err(CryptoError::LowOrderPublicKey)
            ));
        }
        // A blob whose ephemeral key is low-order does not open either.
        let keys = NodeKeys::generate().expect("keys");
        let mut blob = seal(&keys.public(), b"ctx", b"secret").expect("seal");
        blob[1..33].fill(0);
        assert!(is_cannot_open(open(&keys, b"ctx", &blob)));
    }

    #[test]
    fn public_key_hex_round_trip_and_errors() {
        let keys = NodeKeys::generate().expect("keys");
        let public = keys.public();
        let hex = public.to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex, public.to_hex());
        assert_eq!(
            PublicKeyBytes::from_hex(&format!(" {hex}\n")).expect("parse"),
            public
        );
        assert_eq!(hex.parse::<PublicKeyBytes>().expect("parse"), public);
        assert!(matches!(
            PublicKeyBytes::from_hex("abcd"),
            Err(CryptoError::BadPublicKey)
        ));
        assert!(PublicKeyBytes::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn save_load_round_trip_mode_and_no_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/node.key");
        let keys = NodeKeys::generate().expect("keys");
        keys.save(&path).expect("save");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = NodeKeys::load(&path).expect("load");
        assert_eq!(loaded.public(), keys.public());
        let blob = seal(&keys.public(), b"ctx", b"secret").expect("seal");
        assert_eq!(open(&loaded, b"ctx", &blob).expect("open"), b"secret");

        let other = NodeKeys::generate().expect("keys");
        assert!(matches!(
            other.save(&path),
            Err(CryptoError::AlreadyExists(_))
        ));
        assert_eq!(
            NodeKeys::load(&path).expect("load").public(),
            keys.public(),
            "the existing key is untouched"
        );
        // Debug never shows the secret.
        let secret_hex = std::fs::read_to_string(&path).expect("read");
        assert!(!format!("{keys:?}").contains(secret_hex.trim()));
    }

    #[test]
    fn load_errors_name_the_path_not_the_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.key");
        let err = NodeKeys::load(&missing).expect_err("missing");
        assert!(err.to_string().contains("missing.key"), "{err}");
        assert!(err.to_string().contains("not found"), "{err}");

        let bad = dir.path().join("bad.key");
        let contents = "deadbeef-not-a-key-0123456789";
        std::fs::write(&bad, contents).expect("write");
        let err = NodeKeys::load(&bad).expect_err("malformed");
        let text = err.to_string();
        assert!(text.contains("bad.key"), "{text}");
        assert!(text.contains("64 hexadecimal"), "{text}");
        assert!(!text.contains(contents), "{text}");
    }

    #[test]
    fn fingerprint_is_stable_and_distinct() {
        let a = NodeKeys::generate().expect("keys").public();
        let b = NodeKeys::generate().expect("keys").public();
        let fa = fingerprint(&a);
        assert_eq!(fa, fingerprint(&a));
        assert_ne!(fa, fingerprint(&b));
        let hex_part = fa.strip_prefix("x25519:SHA256:").expect("prefix");
        let pairs: Vec<&str> = hex_part.split(':').collect();
        assert_eq!(pairs.len(), 16);
        assert!(pairs
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit())));
        // A known answer: SHA-256 of 32 zero bytes begins 66687aadf862bd77.
        assert!(fingerprint(&PublicKeyBytes::from_bytes([0; 32]))
            .starts_with("x25519:SHA256:66:68:7a:ad:f8:62:bd:77:"));
    }
}
