//! Exponential ElGamal on ristretto255: additively homomorphic encryption
//! of bounded non-negative integers (the responder's per-person sums).
//! `Enc(m) = (rG, mG + rP)`; sums of ciphertexts decrypt to sums of
//! plaintexts; decryption solves a discrete log by baby-step giant-step,
//! so plaintexts are bounded by [`MAX_PLAINTEXT`].
//!
//! Decryption is not an oracle: [`KeyPair::decrypt_within`] walks every
//! giant step up to a bound fixed before it starts (never stopping at the
//! answer), so its time depends on the bound, not on the plaintext, and a
//! plaintext beyond the bound is `None` (the caller does not release it),
//! never an error that ends the query.

use std::collections::HashMap;
use std::sync::OnceLock;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::{RistrettoBasepointTable, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;

use crate::group::{self, Secret};
use crate::PsiError;

/// Baby steps: a table of 2^18 points (about 5 MiB), built once per
/// process (about a second); a decryption up to 2^40 walks 2^22 giant steps.
const BABY: u64 = 1 << 18;
/// Largest plaintext a decryption recovers (2^40 - 1).
pub const MAX_PLAINTEXT: u64 = (1 << 40) - 1;
/// Encoded ciphertext length.
pub const CIPHERTEXT_LEN: usize = 64;

/// A ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ciphertext {
    c1: RistrettoPoint,
    c2: RistrettoPoint,
}

impl Ciphertext {
    /// The encryption of zero with no randomness (the sum of nothing).
    pub fn zero() -> Self {
        Ciphertext {
            c1: RistrettoPoint::identity(),
            c2: RistrettoPoint::identity(),
        }
    }

    /// Homomorphic addition.
    pub fn add(&self, other: &Ciphertext) -> Ciphertext {
        Ciphertext {
            c1: self.c1 + other.c1,
            c2: self.c2 + other.c2,
        }
    }

    /// Encoding.
    pub fn encode(&self) -> [u8; CIPHERTEXT_LEN] {
        let mut out = [0u8; CIPHERTEXT_LEN];
        out[..32].copy_from_slice(&group::encode(&self.c1));
        out[32..].copy_from_slice(&group::encode(&self.c2));
        out
    }

    /// Decoding of a ciphertext from the other side: both points must be
    /// valid and not the identity.
    pub fn decode(bytes: &[u8]) -> Result<Ciphertext, PsiError> {
        if bytes.len() != CIPHERTEXT_LEN {
            return Err(PsiError::Malformed("a ciphertext is not 64 bytes"));
        }
        Ok(Ciphertext {
            c1: group::decode(&bytes[..32])?,
            c2: group::decode(&bytes[32..])?,
        })
    }
}

/// The responder's key pair, fresh for each query.
pub struct KeyPair {
    secret: Secret,
    public: PublicKey,
}

/// A public key with its precomputed multiplication table.
pub struct PublicKey {
    point: RistrettoPoint,
    table: RistrettoBasepointTable,
}

impl PublicKey {
    /// From a point received from the other side.
    pub fn from_point(point: RistrettoPoint) -> Self {
        PublicKey {
            table: RistrettoBasepointTable::create(&point),
            point,
        }
    }

    /// The point.
    pub fn point(&self) -> &RistrettoPoint {
        &self.point
    }

    /// `Enc(m)` with fresh randomness.
    pub fn encrypt(&self, m: u64) -> Result<Ciphertext, PsiError> {
        if m > MAX_PLAINTEXT {
            return Err(PsiError::Bound);
        }
        let r = Secret::fresh()?;
        Ok(Ciphertext {
            c1: RISTRETTO_BASEPOINT_TABLE * r.scalar(),
            c2: RISTRETTO_BASEPOINT_TABLE * &Scalar::from(m) + &self.table * r.scalar(),
        })
    }

    /// The same plaintext under fresh randomness: the holder of the key can
    /// no longer tell which ciphertext it came from.
    pub fn rerandomize(&self, c: &Ciphertext) -> Result<Ciphertext, PsiError> {
        let s = Secret::fresh()?;
        Ok(Ciphertext {
            c1: c.c1 + RISTRETTO_BASEPOINT_TABLE * s.scalar(),
            c2: c.c2 + &self.table * s.scalar(),
        })
    }
}

impl KeyPair {
    /// A fresh key pair.
    pub fn fresh() -> Result<KeyPair, PsiError> {
        let secret = Secret::fresh()?;
        let point = RISTRETTO_BASEPOINT_TABLE * secret.scalar();
        Ok(KeyPair {
            secret,
            public: PublicKey::from_point(point),
        })
    }

    /// The public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Decrypts a ciphertext whose plaintext the caller knows cannot
    /// honestly exceed `bound` (at most [`MAX_PLAINTEXT`]); `None` if it
    /// does. Every giant step up to `bound` runs whatever the plaintext.
    pub fn decrypt_within(&self, c: &Ciphertext, bound: u64) -> Option<u64> {
        let m = c.c2 - c.c1 * self.secret.scalar();
        dlog_within(&m, bound.min(MAX_PLAINTEXT))
    }
}

/// The giant steps a decryption up to `bound` walks.
pub fn giant_steps(bound: u64) -> u64 {
    bound.min(MAX_PLAINTEXT) / BABY + 1
}

/// The first 8 bytes of a point's encoding, the baby-step table's key (a
/// hit is confirmed by one multiplication, so a shared prefix cannot give
/// a wrong answer).
fn key(p: &RistrettoPoint) -> u64 {
    let b = p.compress().to_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn baby_steps() -> &'static HashMap<u64, u32> {
    static TABLE: OnceLock<HashMap<u64, u32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let g = RISTRETTO_BASEPOINT_TABLE.basepoint();
        let mut map = HashMap::with_capacity(BABY as usize);
        let mut p = RistrettoPoint::identity();
        for j in 0..BABY as u32 {
            map.entry(key(&p)).or_insert(j);
            p += g;
        }
        map
    })
}

/// `m <= bound` such that `point = m·G`, walking every giant step up to
/// `bound` (no early exit).
fn dlog_within(point: &RistrettoPoint, bound: u64) -> Option<u64> {
    let table = baby_steps();
    let giant = RISTRETTO_BASEPOINT_TABLE * &Scalar::from(BABY);
    let mut q = *point;
    let mut found = None;
    for i in 0..giant_steps(bound) {
        if let Some(j) = table.get(&key(&q)) {
            let m = i * BABY + u64::from(*j);
            if found.is_none()
                && m <= bound
                && RISTRETTO_BASEPOINT_TABLE * &Scalar::from(m) == *point
            {
                found = Some(m);
            }
        }
        q -= giant;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_of_ciphertexts_decrypt_to_sums() {
        let k = KeyPair::fresh().expect("key");
        let values = [0u64, 1, 12_345, 70_000, 3_000_000];
        let bound = 1 << 22;
        let mut sum = Ciphertext::zero();
        for v in values {
            let c = k.public().encrypt(v).expect("enc");
            assert_eq!(k.decrypt_within(&c, bound), Some(v));
            let r = k.public().rerandomize(&c).expect("rerand");
            assert_ne!(r, c, "re-randomised");
            assert_eq!(k.decrypt_within(&r, bound), Some(v));
            sum = sum.add(&r);
        }
        assert_eq!(k.decrypt_within(&sum, bound), Some(values.iter().sum()));
        let back = Ciphertext::decode(&sum.encode()).expect("decode");
        assert_eq!(back, sum);
        assert!(k.public().encrypt(MAX_PLAINTEXT + 1).is_err());
        // Within a bound: the same answers, and None above it.
        let c = k.public().encrypt(5_000_000).expect("enc");
        assert_eq!(k.decrypt_within(&c, 5_000_000), Some(5_000_000));
        assert_eq!(k.decrypt_within(&c, 4_999_999), None);
        assert_eq!(k.decrypt_within(&c, 1 << 23), Some(5_000_000));
        assert_eq!(giant_steps(1 << 23), 33);
        assert_eq!(giant_steps(u64::MAX), MAX_PLAINTEXT / BABY + 1);
        assert!(Ciphertext::decode(&[0u8; 64]).is_err(), "identity points");
    }
}
