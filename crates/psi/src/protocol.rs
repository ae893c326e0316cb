//! What every crypto-mode message shares: the framing (magic, message
//! kind, session id; counted lists checked against what is left, no
//! trailing bytes), the checked decoding of points and ciphertexts, key
//! shares with their proofs of knowledge, and proofs' contexts. The
//! protocol itself is in the `grouped` module.
//!
//! Every message carries the session id; a message of another session, an
//! invalid or identity point, a proof that does not verify, a truncated
//! list or trailing bytes is an error. Every proof is bound to the
//! session, the sender's role and the step.

use curve25519_dalek::ristretto::RistrettoPoint;
use rayon::prelude::*;

use crate::elgamal::{self, Ciphertext, KeyShare, PublicKey, CIPHERTEXT_LEN, PROOF_LEN};
use crate::group::{self, POINT_LEN};
use crate::PsiError;

/// The first bytes of every message (the protocol and its version).
pub const MAGIC: &[u8; 12] = b"AIRLOCK-PSI3";
/// Most items a message may hold.
pub const MAX_ITEMS: usize = 50_000_000;
/// Most groups the asker may send.
pub const MAX_GROUPS: usize = 100_000;

/// A session (query) id.
pub type SessionId = [u8; 16];

/// A fresh random session id.
pub fn new_session() -> Result<SessionId, PsiError> {
    let mut s = [0u8; 16];
    getrandom::getrandom(&mut s).map_err(|e| PsiError::Random(e.to_string()))?;
    Ok(s)
}

/// Where the time of one step went, and what it sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    /// Scalar multiplications (blinding), seconds.
    pub blind_s: f64,
    /// Encryption, re-randomisation and decryption, seconds.
    pub crypto_s: f64,
    /// Matching and summing, seconds.
    pub match_s: f64,
    /// Bytes of the message produced.
    pub bytes: usize,
}

/// What a proof is bound to: the protocol, the session, the prover's
/// role (0 asker, 1 responder), the step and the item it is about.
pub(crate) fn proof_context(session: &SessionId, role: u8, step: u8, item: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(MAGIC.len() + 16 + 6);
    c.extend_from_slice(MAGIC);
    c.extend_from_slice(session);
    c.push(role);
    c.push(step);
    c.extend_from_slice(&item.to_le_bytes());
    c
}

/// Reads the other node's key share and checks its proof of knowledge.
pub(crate) fn read_share(
    r: &mut Reader<'_>,
    session: &SessionId,
    role: u8,
    step: u8,
) -> Result<RistrettoPoint, PsiError> {
    let point = group::decode(r.take(POINT_LEN)?)?;
    elgamal::verify_share(
        &point,
        r.take(PROOF_LEN)?,
        &proof_context(session, role, step, 0),
    )?;
    Ok(point)
}

pub(crate) fn write_share(
    w: &mut Writer,
    share: &KeyShare,
    session: &SessionId,
    role: u8,
    step: u8,
) -> Result<(), PsiError> {
    w.bytes(&group::encode(share.point()));
    w.bytes(&share.prove(&proof_context(session, role, step, 0))?);
    Ok(())
}

/// One released group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupResult {
    /// The asker's group index.
    pub group: u32,
    /// People in the overlap.
    pub count: u64,
    /// Sums over the overlap of each of the responder's per-person values
    /// (e.g. a measure's sum and the person's row count), in order.
    pub sums: Vec<u64>,
}

pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn new(kind: u8, session: &SessionId) -> Self {
        let mut v = Vec::new();
        v.extend_from_slice(MAGIC);
        v.push(kind);
        v.extend_from_slice(session);
        Writer(v)
    }
    pub(crate) fn u8(&mut self, x: u8) {
        self.0.push(x);
    }
    pub(crate) fn u32(&mut self, x: usize) {
        self.0.extend_from_slice(&(x as u32).to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
}

pub(crate) struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn open(
        bytes: &'a [u8],
        kind: u8,
        session: Option<&SessionId>,
    ) -> Result<(Self, SessionId), PsiError> {
        let head = MAGIC.len() + 1 + 16;
        if bytes.len() < head || &bytes[..MAGIC.len()] != MAGIC {
            return Err(PsiError::Malformed("not a message of this protocol"));
        }
        if bytes[MAGIC.len()] != kind {
            return Err(PsiError::Malformed("a message of another step"));
        }
        let mut s = [0u8; 16];
        s.copy_from_slice(&bytes[MAGIC.len() + 1..head]);
        if let Some(want) = session {
            if *want != s {
                return Err(PsiError::Replay);
            }
        }
        Ok((Reader { b: &bytes[head..] }, s))
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], PsiError> {
        if self.b.len() < n {
            return Err(PsiError::Malformed("the message is truncated"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, PsiError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<usize, PsiError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a) as usize)
    }
    /// A count of items of `size` bytes, checked against what is left.
    pub(crate) fn count(&mut self, size: usize) -> Result<usize, PsiError> {
        let n = self.u32()?;
        if n > MAX_ITEMS || n.saturating_mul(size) > self.b.len() {
            return Err(PsiError::Malformed(
                "the message is truncated or its count is wrong",
            ));
        }
        Ok(n)
    }
    pub(crate) fn end(&self) -> Result<(), PsiError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(PsiError::Malformed("trailing bytes after the message"))
        }
    }
}

/// Items of `size` bytes (a point, then ciphertexts), every point and
/// ciphertext checked, each point in its canonical encoding.
#[allow(clippy::type_complexity)]
pub(crate) fn decode_items(
    bytes: &[u8],
    size: usize,
) -> Result<Vec<([u8; 32], Vec<Ciphertext>)>, PsiError> {
    bytes
        .par_chunks(size)
        .map(|item| -> Result<_, PsiError> {
            let p = group::decode(&item[..POINT_LEN])?;
            let cs = item[POINT_LEN..]
                .chunks(CIPHERTEXT_LEN)
                .map(Ciphertext::decode)
                .collect::<Result<Vec<_>, _>>()?;
            Ok((group::encode(&p), cs))
        })
        .collect()
}

/// Most encrypted values per person.
pub const MAX_VALUES: usize = 2;

/// Appends `values` fresh encryptions of zero under `key` to `out`.
pub(crate) fn push_zeros(
    out: &mut Vec<u8>,
    key: &PublicKey,
    values: usize,
) -> Result<(), PsiError> {
    for _ in 0..values {
        out.extend_from_slice(&key.encrypt_encoded(0)?);
    }
    Ok(())
}

/// A dummy item: a random point (no one's identifier hashes to it) with
/// `values` encryptions of zero under `key`.
pub(crate) fn dummy_item(key: &PublicKey, values: usize) -> Result<Vec<u8>, PsiError> {
    let mut out = group::encode(&group::random_point()?).to_vec();
    push_zeros(&mut out, key, values)?;
    Ok(out)
}

pub(crate) fn item_size(values: usize) -> usize {
    POINT_LEN + values * CIPHERTEXT_LEN
}

pub(crate) fn values_flag(r: &mut Reader<'_>) -> Result<usize, PsiError> {
    let v = r.u8()? as usize;
    if v > MAX_VALUES {
        return Err(PsiError::Malformed("bad count of encrypted values"));
    }
    Ok(v)
}
