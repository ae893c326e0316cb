//! Exponential ElGamal on ristretto255: additively homomorphic encryption
//! of bounded integers (the responder's per-person sums).
//! `Enc(m) = (rG, mG + rP)`; sums of ciphertexts decrypt to sums of
//! plaintexts; decryption solves a discrete log by baby-step giant-step,
//! so plaintexts are bounded by [`MAX_PLAINTEXT`].
//!
//! The key is 2-of-2: each node holds a [`KeyShare`] (with a Schnorr proof
//! of knowledge), the public key is their sum, and a ciphertext opens only
//! with a partial decryption from each (checked by a Chaum-Pedersen
//! proof). Only released group values are ever partially decrypted, and
//! only the node that receives the result completes a decryption; a value
//! beyond the bound is `None` (not released), never an error.

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

    /// The plaintext plus `m` (negative allowed), e.g. noise added under
    /// encryption by the data's owner.
    pub fn plus(&self, m: i64) -> Ciphertext {
        let s = if m < 0 {
            -Scalar::from(m.unsigned_abs())
        } else {
            Scalar::from(m as u64)
        };
        Ciphertext {
            c1: self.c1,
            c2: self.c2 + RISTRETTO_BASEPOINT_TABLE * &s,
        }
    }

    /// The plaintext times a scalar (for a zero test, `r·(C - t)`: the
    /// decryption is the identity exactly when the plaintext of `C` is `t`,
    /// and a uniformly random point otherwise).
    pub fn scale(&self, s: &Scalar) -> Ciphertext {
        Ciphertext {
            c1: self.c1 * s,
            c2: self.c2 * s,
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

/// One node's share of the query's 2-of-2 key, fresh for each query.
/// The joint key is the sum of both shares' points; a ciphertext under it
/// decrypts only with a partial decryption from each node, so the node
/// that sees which items match never holds a key that opens one of them
/// (Private Join and Compute's rule).
pub struct KeyShare {
    secret: Secret,
    point: RistrettoPoint,
}

/// A public key with its precomputed multiplication table.
pub struct PublicKey {
    point: RistrettoPoint,
    encoded: [u8; 32],
    table: RistrettoBasepointTable,
}

impl PublicKey {
    /// From a point received from the other side.
    pub fn from_point(point: RistrettoPoint) -> Self {
        PublicKey {
            table: RistrettoBasepointTable::create(&point),
            encoded: group::encode(&point),
            point,
        }
    }

    /// The point.
    pub fn point(&self) -> &RistrettoPoint {
        &self.point
    }

    /// `Enc(m) = (r·G, m·G + r·X)` with fresh `r`, encoded: both points are
    /// computed at half their value and doubled and encoded in one batch
    /// (see [`half`]).
    pub fn encrypt_encoded(&self, m: u64) -> Result<[u8; CIPHERTEXT_LEN], PsiError> {
        if m > MAX_PLAINTEXT {
            return Err(PsiError::Bound);
        }
        let h = half();
        let r = Secret::fresh()?;
        let rh = r.scalar() * h;
        let e = RistrettoPoint::double_and_compress_batch(&[
            RISTRETTO_BASEPOINT_TABLE * &rh,
            RISTRETTO_BASEPOINT_TABLE * &(Scalar::from(m) * h) + &self.table * &rh,
        ]);
        let mut out = [0u8; CIPHERTEXT_LEN];
        out[..32].copy_from_slice(e[0].as_bytes());
        out[32..].copy_from_slice(e[1].as_bytes());
        Ok(out)
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

/// Encoded length of a proof (Schnorr or Chaum-Pedersen): two scalars or
/// a point and a scalar.
pub const PROOF_LEN: usize = 64;

/// A Fiat-Shamir challenge: SHA-512 of a domain tag, the caller's context
/// (protocol, session, role) and the points, reduced to a scalar.
fn challenge(tag: &[u8], context: &[u8], points: &[&RistrettoPoint]) -> Scalar {
    let encoded: Vec<[u8; 32]> = points.iter().map(|p| group::encode(p)).collect();
    let parts: Vec<&[u8]> = encoded.iter().map(|e| &e[..]).collect();
    challenge_of_bytes(tag, context, &parts)
}

/// [`challenge`] of points already encoded (the bytes sent): the same
/// hash, without encoding them again.
fn challenge_of_bytes(tag: &[u8], context: &[u8], parts: &[&[u8]]) -> Scalar {
    use sha2::{Digest, Sha512};
    let mut h = Sha512::new();
    h.update((tag.len() as u32).to_le_bytes());
    h.update(tag);
    h.update((context.len() as u32).to_le_bytes());
    h.update(context);
    for p in parts {
        h.update(p);
    }
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&h.finalize());
    Scalar::from_bytes_mod_order_wide(&wide)
}

fn scalar(bytes: &[u8]) -> Result<Scalar, PsiError> {
    let mut a = [0u8; 32];
    a.copy_from_slice(bytes);
    Option::from(Scalar::from_canonical_bytes(a))
        .ok_or(PsiError::Malformed("a proof holds a non-canonical scalar"))
}

const SCHNORR: &[u8] = b"AIRLOCK-PSI-V3 key share";
const DLEQ: &[u8] = b"AIRLOCK-PSI-V3 partial decryption";

impl KeyShare {
    /// A fresh share.
    pub fn fresh() -> Result<KeyShare, PsiError> {
        let secret = Secret::fresh()?;
        let point = RISTRETTO_BASEPOINT_TABLE * secret.scalar();
        Ok(KeyShare { secret, point })
    }

    /// The share's public point.
    pub fn point(&self) -> &RistrettoPoint {
        &self.point
    }

    /// A Schnorr proof that this node knows the share's secret, bound to
    /// `context`. Without it, the node that sends its share second could
    /// send `Y - X_other` for a `Y` whose secret it knows and so hold the
    /// whole joint key.
    pub fn prove(&self, context: &[u8]) -> Result<[u8; PROOF_LEN], PsiError> {
        let k = Secret::fresh()?;
        let r = RISTRETTO_BASEPOINT_TABLE * k.scalar();
        let c = challenge(SCHNORR, context, &[&self.point, &r]);
        let s = k.scalar() + c * self.secret.scalar();
        let mut out = [0u8; PROOF_LEN];
        out[..32].copy_from_slice(&group::encode(&r));
        out[32..].copy_from_slice(s.as_bytes());
        Ok(out)
    }

    /// The joint key of this share and the other node's (whose proof the
    /// caller checked with [`verify_share`]).
    pub fn joint(&self, theirs: &RistrettoPoint) -> PublicKey {
        PublicKey::from_point(self.point + theirs)
    }

    /// This share's partial decryption `x·c1` of `c`, with a
    /// Chaum-Pedersen proof that it used the secret of [`Self::point`].
    pub fn partial(
        &self,
        c: &Ciphertext,
        context: &[u8],
    ) -> Result<(RistrettoPoint, [u8; PROOF_LEN]), PsiError> {
        let d = c.c1 * self.secret.scalar();
        let k = Secret::fresh()?;
        let a1 = RISTRETTO_BASEPOINT_TABLE * k.scalar();
        let a2 = c.c1 * k.scalar();
        let ch = challenge(DLEQ, context, &[&self.point, &c.c1, &d, &a1, &a2]);
        let s = k.scalar() + ch * self.secret.scalar();
        let mut out = [0u8; PROOF_LEN];
        out[..32].copy_from_slice(ch.as_bytes());
        out[32..].copy_from_slice(s.as_bytes());
        Ok((d, out))
    }

    /// A ciphertext under the other node's share alone, moved under the
    /// joint key: `(c1, c2 + x·c1)`. The plaintext and the randomness stay
    /// as they were, so whoever made `c` would still recognise it: the
    /// caller re-randomises before it lets the ciphertext go.
    pub fn lift(&self, c: &Ciphertext) -> Ciphertext {
        Ciphertext {
            c1: c.c1,
            c2: c.c2 + c.c1 * self.secret.scalar(),
        }
    }

    /// `m·G` of `c`, from the other node's checked partial decryption and
    /// this share's.
    pub fn complete(&self, c: &Ciphertext, theirs: &RistrettoPoint) -> RistrettoPoint {
        c.c2 - theirs - c.c1 * self.secret.scalar()
    }
}

/// Checks the other node's proof of knowledge of its share.
pub fn verify_share(point: &RistrettoPoint, proof: &[u8], context: &[u8]) -> Result<(), PsiError> {
    let bad = PsiError::Malformed("a key share's proof of knowledge does not verify");
    if proof.len() != PROOF_LEN {
        return Err(bad);
    }
    let r = group::decode(&proof[..32])?;
    let s = scalar(&proof[32..])?;
    let c = challenge(SCHNORR, context, &[point, &r]);
    if RISTRETTO_BASEPOINT_TABLE * &s == r + point * c {
        Ok(())
    } else {
        Err(bad)
    }
}

/// Checks the other node's partial decryption `d` of `c` under its share
/// `point`.
pub fn verify_partial(
    point: &RistrettoPoint,
    c: &Ciphertext,
    d: &RistrettoPoint,
    proof: &[u8],
    context: &[u8],
) -> Result<(), PsiError> {
    let bad = PsiError::Malformed("a partial decryption's proof does not verify");
    if proof.len() != PROOF_LEN {
        return Err(bad);
    }
    let ch = scalar(&proof[..32])?;
    let s = scalar(&proof[32..])?;
    let a1 = RISTRETTO_BASEPOINT_TABLE * &s - point * ch;
    let a2 = c.c1 * s - d * ch;
    if challenge(DLEQ, context, &[point, &c.c1, d, &a1, &a2]) == ch {
        Ok(())
    } else {
        Err(bad)
    }
}

/// Encoded length of a proof that a decryption is not the identity: the
/// point `C` and three scalars.
pub const NONZERO_LEN: usize = 128;

const NONZERO: &[u8] = b"AIRLOCK-PSI-V3 not zero";

impl KeyShare {
    /// A proof that the plaintext point `M = c2 - d - x·c1` of `c` is not
    /// the identity, where `d` is the other node's (checked) partial
    /// decryption and `x` this share's secret, revealing nothing else
    /// about `M`: `None` if it is the identity.
    ///
    /// The prover picks a fresh `s` and sends `C = -s·M` with a proof of
    /// knowledge of `(a, b) = (s·x, -s)` such that `C = a·c1 + b·W` (with
    /// `W = c2 - d`) and `O = a·G + b·X`. The second relation forces
    /// `a = -b·x`, so `C = b·(W - x·c1) = b·M`, and `C` is not the identity
    /// only if `M` is not (the verifier checks `C`); `C` is a uniformly
    /// random multiple of `M`, which tells nothing of `M` (Camenisch and
    /// Shoup's proof of inequality of discrete logarithms). Unlike a
    /// partial decryption of `c`, it lets the other node, which made `c`
    /// as `r·(count - t)`, learn nothing of `count`.
    pub fn prove_nonzero(
        &self,
        c: &Ciphertext,
        theirs: &RistrettoPoint,
        context: &[u8],
    ) -> Result<Option<[u8; NONZERO_LEN]>, PsiError> {
        let w = c.c2 - theirs;
        let m = w - c.c1 * self.secret.scalar();
        if m == RistrettoPoint::identity() {
            return Ok(None);
        }
        let s = Secret::fresh()?;
        let a = s.scalar() * self.secret.scalar();
        let b = -s.scalar();
        let big_c = m * b;
        let (ka, kb) = (Secret::fresh()?, Secret::fresh()?);
        let t1 = c.c1 * ka.scalar() + w * kb.scalar();
        let t2 = RISTRETTO_BASEPOINT_TABLE * ka.scalar() + self.point * kb.scalar();
        let e = challenge(
            NONZERO,
            context,
            &[&self.point, &c.c1, &w, &big_c, &t1, &t2],
        );
        let ua = ka.scalar() + e * a;
        let ub = kb.scalar() + e * b;
        let mut out = [0u8; NONZERO_LEN];
        out[..32].copy_from_slice(&group::encode(&big_c));
        out[32..64].copy_from_slice(e.as_bytes());
        out[64..96].copy_from_slice(ua.as_bytes());
        out[96..].copy_from_slice(ub.as_bytes());
        Ok(Some(out))
    }
}

/// Checks the other node's proof ([`KeyShare::prove_nonzero`]) that the
/// plaintext of `c` is not zero, where `d` is this node's own partial
/// decryption of `c` and `point` the other node's share.
pub fn verify_nonzero(
    point: &RistrettoPoint,
    c: &Ciphertext,
    d: &RistrettoPoint,
    proof: &[u8],
    context: &[u8],
) -> Result<(), PsiError> {
    let bad = PsiError::Malformed("a proof that a zero test failed does not verify");
    if proof.len() != NONZERO_LEN {
        return Err(bad);
    }
    // `decode` refuses the identity: a `C` of the identity proves nothing.
    let big_c = group::decode(&proof[..32])?;
    let e = scalar(&proof[32..64])?;
    let ua = scalar(&proof[64..96])?;
    let ub = scalar(&proof[96..])?;
    let w = c.c2 - d;
    let t1 = c.c1 * ua + w * ub - big_c * e;
    let t2 = RISTRETTO_BASEPOINT_TABLE * &ua + point * ub;
    if challenge(NONZERO, context, &[point, &c.c1, &w, &big_c, &t1, &t2]) == e {
        Ok(())
    } else {
        Err(bad)
    }
}

/// Encoded length of a proof that a ciphertext holds 0 or 1
/// ([`PublicKey::encrypt_bit`]): four commitment points and three scalars.
pub const BIT_PROOF_LEN: usize = 224;

const BIT: &[u8] = b"AIRLOCK-PSI-V3 zero or one";
const SMALL: &[u8] = b"AIRLOCK-PSI-V3 small value";

/// One count of a message and its proof that it is 0 or 1, to check
/// with [`PublicKey::verify_bits`].
pub struct BitClaim<'a> {
    /// What the proof is bound to (session, step, item).
    pub context: Vec<u8>,
    /// The ciphertext as sent.
    pub sent: &'a [u8],
    /// The ciphertext decoded.
    pub ciphertext: Ciphertext,
    /// The proof as sent.
    pub proof: &'a [u8],
}

/// `1/2` in the scalar field: points computed at half their scalar can be
/// doubled and encoded in a batch, for less than encoding each alone
/// (about 0.5 µs a point in large batches, 1.8 µs in batches of six and
/// 2.7 µs in pairs, against 3.5 µs alone on this machine). Inverted once:
/// an inversion per encryption took 9% of the tagging's time.
fn half() -> Scalar {
    static HALF: std::sync::LazyLock<Scalar> =
        std::sync::LazyLock::new(|| Scalar::from(2u8).invert());
    *HALF
}

impl PublicKey {
    /// `Enc(b)` of a bit, encoded, with a proof that it encrypts 0 or 1
    /// and nothing else, bound to `context` (session, step and item), that
    /// tells nothing of which (Cramer, Damgård and Schoenmakers' OR of two
    /// Chaum-Pedersen proofs).
    ///
    /// The statement for `j` in {0, 1} is that `(c1, c2 - j·G)` is an
    /// encryption of zero, `log_G c1 = log_X (c2 - j·G)`. For `j = b` the
    /// prover commits `(w·G, w·X)` for a fresh `w`; for the other `j` it
    /// simulates: it draws `e_j` and `u` and sets the commitments to
    /// `(u·G, u·X + e_j·(j - b)·G)`, which is `z_j·G - e_j·c1` and
    /// `z_j·X - e_j·(c2 - j·G)` for `z_j = u + e_j·r`. With the challenge
    /// `e` of all of it, `e_b = e - e_j` and `z_b = w + e_b·r`. The
    /// verifier checks `e_0 + e_1 = e` and both pairs of equations; a
    /// prover that knows neither opening cannot answer both challenges
    /// (special soundness), and both branches are distributed alike
    /// (honest-verifier zero knowledge), so the proof tells nothing of `b`.
    /// Every step is constant time in `b`: each multiplication is by a
    /// fixed-base table, and the branches are placed by conditional
    /// selection.
    pub fn encrypt_bit(
        &self,
        bit: bool,
        context: &[u8],
    ) -> Result<([u8; CIPHERTEXT_LEN], [u8; BIT_PROOF_LEN]), PsiError> {
        let (ct, proof, _) = self.encrypt_bit_keeping(bit, context)?;
        Ok((ct, proof))
    }

    /// [`Self::encrypt_bit`], also returning the encryption's randomness
    /// `r` (for a later proof about a sum of such ciphertexts,
    /// [`Self::prove_small`]).
    #[allow(clippy::type_complexity)]
    pub fn encrypt_bit_keeping(
        &self,
        bit: bool,
        context: &[u8],
    ) -> Result<([u8; CIPHERTEXT_LEN], [u8; BIT_PROOF_LEN], Scalar), PsiError> {
        use subtle::{Choice, ConditionallySelectable};
        let g = RISTRETTO_BASEPOINT_TABLE;
        let b = Choice::from(bit as u8);
        let h = half();
        let (r, w, u, e_sim) = (
            Secret::fresh()?,
            Secret::fresh()?,
            Secret::fresh()?,
            Secret::fresh()?,
        );
        let (r, w, u, e_sim) = (r.scalar(), w.scalar(), u.scalar(), e_sim.scalar());
        // `j - b` for the simulated `j`: +1 when b = 0, -1 when b = 1.
        let sign = Scalar::conditional_select(&Scalar::ONE, &-Scalar::ONE, b);
        let half_g = g * &h;
        let bit_half = RistrettoPoint::conditional_select(&RistrettoPoint::identity(), &half_g, b);
        let real = (g * &(w * h), &self.table * &(w * h));
        let sim = (
            g * &(u * h),
            &self.table * &(u * h) + g * &(e_sim * sign * h),
        );
        // The branch of `b` is the real one.
        let a0 = RistrettoPoint::conditional_select(&real.0, &sim.0, b);
        let b0 = RistrettoPoint::conditional_select(&real.1, &sim.1, b);
        let a1 = RistrettoPoint::conditional_select(&sim.0, &real.0, b);
        let b1 = RistrettoPoint::conditional_select(&sim.1, &real.1, b);
        let encoded = RistrettoPoint::double_and_compress_batch(&[
            g * &(r * h),
            &self.table * &(r * h) + bit_half,
            a0,
            b0,
            a1,
            b1,
        ]);
        let mut ct = [0u8; CIPHERTEXT_LEN];
        ct[..32].copy_from_slice(encoded[0].as_bytes());
        ct[32..].copy_from_slice(encoded[1].as_bytes());
        let mut proof = [0u8; BIT_PROOF_LEN];
        for (i, e) in encoded[2..].iter().enumerate() {
            proof[i * 32..(i + 1) * 32].copy_from_slice(e.as_bytes());
        }
        let e = challenge_of_bytes(BIT, context, &[&self.encoded, &ct, &proof[..128]]);
        let e_real = e - e_sim;
        let z_real = w + e_real * r;
        let z_sim = u + e_sim * r;
        let e0 = Scalar::conditional_select(&e_real, e_sim, b);
        let z0 = Scalar::conditional_select(&z_real, &z_sim, b);
        let z1 = Scalar::conditional_select(&z_sim, &z_real, b);
        proof[128..160].copy_from_slice(e0.as_bytes());
        proof[160..192].copy_from_slice(z0.as_bytes());
        proof[192..].copy_from_slice(z1.as_bytes());
        Ok((ct, proof, *r))
    }

    /// A proof that `c = (r·G, m·G + r·X)` encrypts some `j` in `0..n`
    /// (here `m`), telling nothing of which: Cramer, Damgård and
    /// Schoenmakers' OR of `n` Chaum-Pedersen statements "`(c1, c2 - j·G)`
    /// encrypts zero", as [`Self::encrypt_bit`] for two. Every branch but
    /// `m`'s is simulated (`z_j`, `e_j` drawn, commitments
    /// `z_j·G - e_j·c1`, `z_j·X - e_j·(c2 - j·G)`); `m`'s commits
    /// `(w·G, w·X)` and answers `e_m = e - Σ e_j`, `z_m = w + e_m·r`. The
    /// proof is every `(e_j, z_j)`: the verifier recomputes the
    /// commitments and checks that the challenge of all of them is
    /// `Σ e_j`. Each branch costs the same work whichever is real.
    pub fn prove_small(
        &self,
        c: &Ciphertext,
        r: &Scalar,
        m: usize,
        n: usize,
        context: &[u8],
    ) -> Result<Vec<u8>, PsiError> {
        if m >= n {
            return Err(PsiError::Malformed(
                "a value out of the range it is proved in",
            ));
        }
        let g = RISTRETTO_BASEPOINT_TABLE;
        let w = Secret::fresh()?;
        let mut es = Vec::with_capacity(n);
        let mut zs = Vec::with_capacity(n);
        let mut commits = Vec::with_capacity(2 * n);
        for j in 0..n {
            let (e, z) = (*Secret::fresh()?.scalar(), *Secret::fresh()?.scalar());
            let shifted = c.c2 - g * &Scalar::from(j as u64);
            let sim = (g * &z - c.c1 * e, &self.table * &z - shifted * e);
            let real = (g * w.scalar(), &self.table * w.scalar());
            let (a, b) = if j == m { real } else { sim };
            commits.push(a);
            commits.push(b);
            es.push(e);
            zs.push(z);
        }
        let refs: Vec<&RistrettoPoint> = [&self.point, &c.c1, &c.c2]
            .into_iter()
            .chain(commits.iter())
            .collect();
        let e = challenge(SMALL, context, &refs);
        let others: Scalar = es
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != m)
            .map(|(_, e)| e)
            .sum();
        es[m] = e - others;
        zs[m] = w.scalar() + es[m] * r;
        let mut out = Vec::with_capacity(64 * n);
        for (e, z) in es.iter().zip(&zs) {
            out.extend_from_slice(e.as_bytes());
            out.extend_from_slice(z.as_bytes());
        }
        Ok(out)
    }

    /// Checks a proof of [`Self::prove_small`] that `c` encrypts some value
    /// in `0..n`.
    pub fn verify_small(
        &self,
        c: &Ciphertext,
        n: usize,
        proof: &[u8],
        context: &[u8],
    ) -> Result<(), PsiError> {
        use curve25519_dalek::traits::VartimeMultiscalarMul;
        let bad = PsiError::Malformed("a proof that a value is in its range does not verify");
        if proof.len() != 64 * n || n == 0 {
            return Err(bad);
        }
        let mut commits = Vec::with_capacity(2 * n);
        let mut sum = Scalar::ZERO;
        let base = curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
        for (j, pair) in proof.chunks(64).enumerate() {
            let e = scalar(&pair[..32])?;
            let z = scalar(&pair[32..])?;
            sum += e;
            let shifted = c.c2 - base * Scalar::from(j as u64);
            commits.push(RistrettoPoint::vartime_multiscalar_mul(
                [z, -e],
                [base, c.c1],
            ));
            commits.push(RistrettoPoint::vartime_multiscalar_mul(
                [z, -e],
                [self.point, shifted],
            ));
        }
        let refs: Vec<&RistrettoPoint> = [&self.point, &c.c1, &c.c2]
            .into_iter()
            .chain(commits.iter())
            .collect();
        if challenge(SMALL, context, &refs) == sum {
            Ok(())
        } else {
            Err(bad)
        }
    }

    /// Checks a batch of proofs of [`Self::encrypt_bit`] under this key:
    /// each item is its context, its ciphertext as sent, the ciphertext
    /// decoded, and its proof. All of them are checked at once, as one
    /// multi-scalar multiplication that is the identity when every proof
    /// holds: each equation is weighted by a fresh random 128-bit scalar,
    /// so a batch with a false proof passes with probability 2^-128.
    pub fn verify_bits(&self, items: &[BitClaim<'_>]) -> Result<(), PsiError> {
        use curve25519_dalek::traits::VartimeMultiscalarMul;
        use rand::Rng;
        let bad = PsiError::Malformed("a proof that a count is 0 or 1 does not verify");
        let mut rng = crate::group::rng();
        let mut scalars = Vec::with_capacity(6 * items.len() + 2);
        let mut points = Vec::with_capacity(6 * items.len() + 2);
        let (mut on_g, mut on_x) = (Scalar::ZERO, Scalar::ZERO);
        for BitClaim {
            context,
            sent: ct,
            ciphertext: c,
            proof,
        } in items
        {
            if proof.len() != BIT_PROOF_LEN || ct.len() != CIPHERTEXT_LEN {
                return Err(bad);
            }
            let a0 = group::decode(&proof[..32])?;
            let b0 = group::decode(&proof[32..64])?;
            let a1 = group::decode(&proof[64..96])?;
            let b1 = group::decode(&proof[96..128])?;
            let e0 = scalar(&proof[128..160])?;
            let z0 = scalar(&proof[160..192])?;
            let z1 = scalar(&proof[192..])?;
            let e = challenge_of_bytes(BIT, context, &[&self.encoded, ct, &proof[..128]]);
            let e1 = e - e0;
            let [p0, p1, s0, s1]: [Scalar; 4] =
                std::array::from_fn(|_| Scalar::from(rng.gen::<u128>()));
            // p_j·(z_j·G - A_j - e_j·c1) + s_j·(z_j·X - B_j - e_j·(c2 - j·G)) = 0
            on_g += p0 * z0 + p1 * z1 + s1 * e1;
            on_x += s0 * z0 + s1 * z1;
            scalars.extend([
                -p0,
                -p1,
                -s0,
                -s1,
                -(p0 * e0 + p1 * e1),
                -(s0 * e0 + s1 * e1),
            ]);
            points.extend([a0, a1, b0, b1, c.c1, c.c2]);
        }
        scalars.extend([on_g, on_x]);
        points.extend([
            curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT,
            self.point,
        ]);
        if RistrettoPoint::vartime_multiscalar_mul(&scalars, &points) == RistrettoPoint::identity()
        {
            Ok(())
        } else {
            Err(bad)
        }
    }
}

/// The first 8 bytes of an encoding, the baby-step table's key (a hit is
/// confirmed by one multiplication, so a shared prefix cannot give a wrong
/// answer).
fn key(c: &curve25519_dalek::ristretto::CompressedRistretto) -> u64 {
    let b = c.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Points are compressed in batches (one field inversion per batch):
/// `double_and_compress_batch` of halves gives the encodings of the
/// points themselves.
const BATCH: usize = 1024;

/// The keys of `start + i·step` for `i` in `0..n`, from their halves.
fn keys_of_run(start: RistrettoPoint, step: RistrettoPoint, n: usize) -> Vec<u64> {
    let half = Scalar::from(2u64).invert();
    let (mut h, step_h) = (start * half, step * half);
    let mut out = Vec::with_capacity(n);
    let mut batch = Vec::with_capacity(BATCH);
    while out.len() < n {
        batch.clear();
        for _ in 0..BATCH.min(n - out.len()) {
            batch.push(h);
            h += step_h;
        }
        out.extend(
            RistrettoPoint::double_and_compress_batch(&batch)
                .iter()
                .map(key),
        );
    }
    out
}

fn baby_steps() -> &'static HashMap<u64, u32> {
    static TABLE: OnceLock<HashMap<u64, u32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let g = RISTRETTO_BASEPOINT_TABLE.basepoint();
        let keys = keys_of_run(RistrettoPoint::identity(), g, BABY as usize);
        let mut map = HashMap::with_capacity(BABY as usize);
        for (j, k) in keys.into_iter().enumerate() {
            map.entry(k).or_insert(j as u32);
        }
        map
    })
}

/// The giant steps a decryption up to `bound` walks at most.
pub fn giant_steps(bound: u64) -> u64 {
    bound.min(MAX_PLAINTEXT) / BABY + 1
}

/// `m` with `|m| <= bound` (at most [`MAX_PLAINTEXT`]) such that
/// `point = m·G`, or `None`. It stops at the answer: only the node that
/// receives the result decrypts, and only released values (a sum with its
/// owner's noise already added), so its time tells nothing that the value
/// does not.
pub fn dlog_signed(point: &RistrettoPoint, bound: u64) -> Option<i64> {
    let bound = bound.min(MAX_PLAINTEXT);
    let table = baby_steps();
    let giant = RISTRETTO_BASEPOINT_TABLE * &Scalar::from(BABY);
    let steps = giant_steps(bound);
    let mut done = 0u64;
    let (mut up, mut down) = (*point, -point);
    // Batches grow from 16 giant steps: a small value is found at once,
    // a large one with one inversion per 1024 points.
    let mut batch = 16u64;
    while done < steps {
        let n = (steps - done).min(batch);
        batch = (batch * 2).min(BATCH as u64);
        for (start, sign) in [(up, 1i64), (down, -1i64)] {
            for (i, k) in keys_of_run(start, -giant, n as usize).iter().enumerate() {
                let Some(j) = table.get(k) else { continue };
                let m = (done + i as u64) * BABY + u64::from(*j);
                let s = Scalar::from(m);
                let s = if sign < 0 { -s } else { s };
                if m <= bound && RISTRETTO_BASEPOINT_TABLE * &s == *point {
                    return Some(sign * m as i64);
                }
            }
        }
        up -= giant * Scalar::from(n);
        down -= giant * Scalar::from(n);
        done += n;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(a: &KeyShare, b: &KeyShare, c: &Ciphertext, bound: u64) -> Option<i64> {
        let (d, proof) = b.partial(c, b"ctx").expect("partial");
        verify_partial(b.point(), c, &d, &proof, b"ctx").expect("proof");
        dlog_signed(&a.complete(c, &d), bound)
    }

    #[test]
    fn half_is_the_inverse_of_two() {
        assert_eq!(half() * Scalar::from(2u8), Scalar::ONE);
    }

    #[test]
    fn sums_under_the_joint_key_open_only_with_both_shares() {
        let (a, b) = (KeyShare::fresh().expect("a"), KeyShare::fresh().expect("b"));
        let pa = a.prove(b"ctx").expect("proof");
        verify_share(a.point(), &pa, b"ctx").expect("a's proof");
        assert!(verify_share(a.point(), &pa, b"other").is_err(), "context");
        assert!(verify_share(b.point(), &pa, b"ctx").is_err(), "other share");
        let key = a.joint(b.point());
        assert_eq!(key.point(), b.joint(a.point()).point());
        let values = [0u64, 1, 12_345, 70_000, 3_000_000];
        let bound = 1 << 22;
        let mut sum = Ciphertext::zero();
        for v in values {
            let c = Ciphertext::decode(&key.encrypt_encoded(v).expect("enc")).expect("decode");
            assert_eq!(open(&a, &b, &c, bound), Some(v as i64));
            let r = key.rerandomize(&c).expect("rerand");
            assert_ne!(r, c, "re-randomised");
            sum = sum.add(&r);
        }
        let total = values.iter().sum::<u64>() as i64;
        assert_eq!(open(&a, &b, &sum, bound), Some(total));
        assert_eq!(open(&b, &a, &sum, bound), Some(total), "either order");
        // One share alone opens nothing: its own partial decryption is not
        // the plaintext.
        let (da, _) = a.partial(&sum, b"ctx").expect("partial");
        assert_eq!(dlog_signed(&(sum.c2 - da), bound), None);
        // Noise under encryption, negative results, bounds.
        assert_eq!(open(&a, &b, &sum.plus(-total - 7), bound), Some(-7));
        assert_eq!(open(&a, &b, &sum.plus(5), bound), Some(total + 5));
        let big =
            Ciphertext::decode(&key.encrypt_encoded(5_000_000).expect("enc")).expect("decode");
        assert_eq!(open(&a, &b, &big, 4_999_999), None);
        assert_eq!(open(&a, &b, &big, 5_000_000), Some(5_000_000));
        // A partial decryption made with another secret, or for another
        // ciphertext, does not verify.
        let (d, proof) = a.partial(&sum, b"ctx").expect("partial");
        assert!(verify_partial(b.point(), &sum, &d, &proof, b"ctx").is_err());
        assert!(verify_partial(a.point(), &big, &d, &proof, b"ctx").is_err());
        assert!(verify_partial(a.point(), &sum, &(d + d), &proof, b"ctx").is_err());
        assert!(verify_partial(a.point(), &sum, &d, &proof, b"ctx2").is_err());
        let back = Ciphertext::decode(&sum.encode()).expect("decode");
        assert_eq!(back, sum);
        assert!(key.encrypt_encoded(MAX_PLAINTEXT + 1).is_err());
        assert_eq!(giant_steps(1 << 23), 33);
        assert_eq!(giant_steps(u64::MAX), MAX_PLAINTEXT / BABY + 1);
        assert!(Ciphertext::decode(&[0u8; 64]).is_err(), "identity points");
    }

    /// Proofs that a count is 0 or 1: honest ones verify in a batch and
    /// open to their bit; every way to make another plaintext pass (shift
    /// or scale the ciphertext, re-randomise it, move its proof to another
    /// item or key, flip any byte of the item) is refused, also when the
    /// bad item is one of many.
    #[test]
    fn a_count_proved_zero_or_one_is_zero_or_one() {
        let (a, b) = (KeyShare::fresh().expect("a"), KeyShare::fresh().expect("b"));
        let key = a.joint(b.point());
        let ctx = |i: usize| format!("item {i}").into_bytes();
        let made: Vec<([u8; CIPHERTEXT_LEN], [u8; BIT_PROOF_LEN])> = (0..40)
            .map(|i| key.encrypt_bit(i % 3 == 0, &ctx(i)).expect("bit"))
            .collect();
        let claims =
            |made: &[([u8; CIPHERTEXT_LEN], [u8; BIT_PROOF_LEN])]| -> Result<(), PsiError> {
                let decoded: Vec<Ciphertext> = made
                    .iter()
                    .map(|(c, _)| Ciphertext::decode(c))
                    .collect::<Result<_, _>>()?;
                let items: Vec<BitClaim<'_>> = made
                    .iter()
                    .zip(&decoded)
                    .enumerate()
                    .map(|(i, ((c, p), d))| BitClaim {
                        context: ctx(i),
                        sent: &c[..],
                        ciphertext: *d,
                        proof: &p[..],
                    })
                    .collect();
                key.verify_bits(&items)
            };
        claims(&made).expect("honest proofs");
        for (i, (c, _)) in made.iter().enumerate() {
            let c = Ciphertext::decode(c).expect("decode");
            assert_eq!(open(&a, &b, &c, 4), Some((i % 3 == 0) as i64));
        }
        // Another plaintext with the proof of 0 or 1.
        let with = |i: usize, f: &dyn Fn(&Ciphertext) -> Ciphertext| {
            let mut m = made.clone();
            m[i].0 = f(&Ciphertext::decode(&m[i].0).expect("decode")).encode();
            m
        };
        for i in [0, 1, 39] {
            assert!(claims(&with(i, &|c| c.plus(1))).is_err(), "shifted up");
            assert!(claims(&with(i, &|c| c.plus(-1))).is_err(), "shifted down");
            assert!(
                claims(&with(i, &|c| c.scale(&Scalar::from(10u8)))).is_err(),
                "scaled"
            );
            assert!(
                claims(&with(i, &|c| key.rerandomize(c).expect("rerand"))).is_err(),
                "re-randomised"
            );
        }
        // A proof moved to another item, or made under another key.
        let mut swapped = made.clone();
        swapped.swap(3, 4);
        assert!(claims(&swapped).is_err(), "moved");
        let other = KeyShare::fresh().expect("c").joint(b.point());
        let mut foreign = made.clone();
        foreign[5] = other.encrypt_bit(true, &ctx(5)).expect("bit");
        assert!(claims(&foreign).is_err(), "another key");
        // Every byte of an item flipped.
        for byte in 0..CIPHERTEXT_LEN + BIT_PROOF_LEN {
            let mut m = made.clone();
            if byte < CIPHERTEXT_LEN {
                m[7].0[byte] ^= 1 << (byte % 8);
            } else {
                m[7].1[byte - CIPHERTEXT_LEN] ^= 1 << (byte % 8);
            }
            assert!(claims(&m).is_err(), "byte {byte}");
        }
    }
}
