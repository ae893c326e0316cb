//! The two-party protocol: an *asker* learns per-group overlap counts (and
//! sums of the *responder's* measure over the overlap) of its own groups,
//! and nothing else; the responder matches, applies k, and releases, but
//! never holds a key that opens a value: the ElGamal key is 2-of-2.
//!
//! ```text
//!  asker                                     responder
//!  1. X_A, PoK(x_A); per group:
//!     shuffled H(a)^α              ───────▶
//!                                  ◀───────  2. X_R, PoK(x_R); shuffled
//!                                               (H(b)^β, Enc_X(v_b)), X = X_A + X_R
//!  3. shuffled (H(b)^βα, ReRand_X(Enc))  ─▶
//!                                  ◀───────  4. per released group: count,
//!                                               Enc_X(Σ + noise), x_R·c1, DLEQ
//!  the asker completes each released sum with x_A and solves its log.
//! ```
//!
//! Every message carries the session id; a message of another session, an
//! invalid or identity point, a proof that does not verify, a truncated
//! list or trailing bytes is an error. α, β and both key shares are fresh
//! for every session; every proof is bound to the session, the sender's
//! role and the step.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use curve25519_dalek::ristretto::RistrettoPoint;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::elgamal::{self, Ciphertext, KeyShare, PublicKey, CIPHERTEXT_LEN, PROOF_LEN};
use crate::group::{self, rng, Secret, POINT_LEN};
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

/// How the responder releases groups under differential privacy.
pub struct Release<'a> {
    /// A person of the overlap counts in at most this many groups.
    pub max_groups_per_person: Option<usize>,
    /// Given a group's index and exact overlap count (the responder never
    /// sees a sum), what is released of it, or `None` if it is not.
    #[allow(clippy::type_complexity)]
    pub release: &'a (dyn Fn(u32, u64) -> Result<Option<Noised>, PsiError> + Sync),
}

/// What the responder releases of one group under differential privacy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Noised {
    /// The noisy count (`i64` bits).
    pub count: u64,
    /// The noise added to each sum, under encryption, before the
    /// responder's partial decryption: the asker only ever opens a noisy
    /// sum.
    pub noise: Vec<i64>,
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

/// What the responder's partial decryption of value `value` of released
/// group `group` is bound to (step 4).
fn partial_context(session: &SessionId, group: usize, value: usize) -> Vec<u8> {
    proof_context(session, 1, 4, (group * MAX_VALUES + value) as u32)
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
    pub(crate) fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
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
    pub(crate) fn u64(&mut self) -> Result<u64, PsiError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
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

pub(crate) fn decode_points(bytes: &[u8]) -> Result<Vec<RistrettoPoint>, PsiError> {
    bytes.par_chunks(POINT_LEN).map(group::decode).collect()
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

/// The asker's side of one session.
pub struct Asker {
    session: SessionId,
    secret: Secret,
    share: KeyShare,
    /// The responder's share, once message 2 is read.
    theirs: Option<RistrettoPoint>,
    groups: usize,
    /// Encrypted values per person the query needs (0 for counts only).
    values: usize,
}

impl Asker {
    /// Step 1: blinds each group's hashed identifiers (`points[g]`, one per
    /// distinct person of group g) with a fresh scalar and shuffles them.
    /// `values` is how many encrypted numbers per person the query needs
    /// from the responder (0 for counts, 1 for a sum, 2 for an average):
    /// message 2 must carry exactly that many (a responder that sends
    /// values a count does not need is refused).
    pub fn start(
        session: SessionId,
        points: &[Vec<RistrettoPoint>],
        values: usize,
    ) -> Result<(Asker, Vec<u8>, StepStats), PsiError> {
        if values > MAX_VALUES || points.len() > MAX_GROUPS {
            return Err(PsiError::Malformed(
                "too many groups or values for one query",
            ));
        }
        let secret = Secret::fresh()?;
        let share = KeyShare::fresh()?;
        let t = Instant::now();
        let mut w = Writer::new(1, &session);
        write_share(&mut w, &share, &session, 0, 1)?;
        w.u32(points.len());
        for g in points {
            let mut blinded = group::multiply_all(g, &secret);
            blinded.shuffle(&mut rng());
            w.u32(blinded.len());
            for b in &blinded {
                w.bytes(b);
            }
        }
        let stats = StepStats {
            blind_s: t.elapsed().as_secs_f64(),
            bytes: w.0.len(),
            ..StepStats::default()
        };
        Ok((
            Asker {
                session,
                secret,
                share,
                theirs: None,
                groups: points.len(),
                values,
            },
            w.0,
            stats,
        ))
    }

    /// Step 3: checks the responder's key share, blinds the responder's
    /// blinded identifiers again, re-randomises every ciphertext under the
    /// joint key, and shuffles, so the responder cannot tell which of its
    /// rows each is (and cannot open one: it holds half the key).
    pub fn reblind(&mut self, msg: &[u8]) -> Result<(Vec<u8>, StepStats), PsiError> {
        let (mut r, _) = Reader::open(msg, 2, Some(&self.session))?;
        let theirs = read_share(&mut r, &self.session, 1, 2)?;
        let pk: PublicKey = self.share.joint(&theirs);
        let values = values_flag(&mut r)?;
        if values != self.values {
            return Err(PsiError::Malformed(
                "message 2 carries other values than the query needs",
            ));
        }
        let size = item_size(values);
        let n = r.count(size)?;
        let body = r.take(n * size)?;
        r.end()?;
        let t = Instant::now();
        let points: Vec<RistrettoPoint> = body
            .par_chunks(size)
            .map(|item| group::decode(&item[..POINT_LEN]))
            .collect::<Result<_, _>>()?;
        let mut items: Vec<Vec<u8>> = group::multiply_all(&points, &self.secret)
            .into_par_iter()
            .zip(body.par_chunks(size))
            .map(|(b, item)| -> Result<Vec<u8>, PsiError> {
                let mut out = b.to_vec();
                for c in item[POINT_LEN..].chunks(CIPHERTEXT_LEN) {
                    let c = Ciphertext::decode(c)?;
                    out.extend_from_slice(&pk.rerandomize(&c)?.encode());
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()?;
        let work = t.elapsed().as_secs_f64();
        self.theirs = Some(theirs);
        items.shuffle(&mut rng());
        let mut w = Writer::new(3, &self.session);
        w.u8(values as u8);
        w.u32(items.len());
        for i in &items {
            w.bytes(i);
        }
        // Blinding and re-randomisation run together per item: split the
        // time by their share of scalar multiplications (1, and 2 per value).
        let share = 1.0 / (1.0 + 2.0 * values as f64);
        Ok((
            w.0.clone(),
            StepStats {
                blind_s: work * share,
                crypto_s: work * (1.0 - share),
                bytes: w.0.len(),
                ..StepStats::default()
            },
        ))
    }

    /// Step 4: the released groups. Each sum is checked (the responder's
    /// partial decryption must carry a valid proof for its share) and
    /// opened with this node's share; a sum whose value is beyond
    /// [`elgamal::MAX_PLAINTEXT`] either way is not released (its group is
    /// dropped). Values are `i64` bits (noisy sums may be negative).
    pub fn finish(&self, msg: &[u8]) -> Result<Vec<GroupResult>, PsiError> {
        let (mut r, _) = Reader::open(msg, 4, Some(&self.session))?;
        let theirs = self
            .theirs
            .ok_or(PsiError::Malformed("message 2 has not been read"))?;
        let n = r.u32()?;
        if n > self.groups {
            return Err(PsiError::Malformed("more released groups than were sent"));
        }
        let mut out = Vec::with_capacity(n);
        let mut seen = HashSet::new();
        for _ in 0..n {
            let group = r.u32()?;
            if group >= self.groups || !seen.insert(group) {
                return Err(PsiError::Malformed(
                    "a released group the asker did not send",
                ));
            }
            let count = r.u64()?;
            let k = values_flag(&mut r)?;
            if k != self.values {
                return Err(PsiError::Malformed(
                    "a released group carries other values than the query needs",
                ));
            }
            let mut sums = Vec::with_capacity(k);
            for v in 0..k {
                let c = Ciphertext::decode(r.take(CIPHERTEXT_LEN)?)?;
                let d = group::decode(r.take(POINT_LEN)?)?;
                let proof = r.take(PROOF_LEN)?;
                let context = partial_context(&self.session, group, v);
                elgamal::verify_partial(&theirs, &c, &d, proof, &context)?;
                sums.push(elgamal::dlog_signed(
                    &self.share.complete(&c, &d),
                    elgamal::MAX_PLAINTEXT,
                ));
            }
            if sums.iter().all(Option::is_some) {
                out.push(GroupResult {
                    group: group as u32,
                    count,
                    sums: sums.into_iter().flatten().map(|v| v as u64).collect(),
                });
            }
        }
        r.end()?;
        Ok(out)
    }
}

/// The responder's side of one session.
pub struct Responder {
    session: SessionId,
    secret: Secret,
    share: KeyShare,
    /// The joint key (the asker's share and this node's).
    joint: PublicKey,
    asker_groups: Vec<Vec<RistrettoPoint>>,
    values: usize,
    min_count: u64,
    /// Items of message 2: message 3 must return exactly as many.
    sent: usize,
}

impl Responder {
    /// Step 2: checks the asker's message (its key share's proof, its
    /// groups), blinds its own hashed identifiers (`people`: one per
    /// person, with `values` per-person numbers, e.g. the sum of its
    /// measure over its rows and its row count) with a fresh scalar,
    /// encrypts each number under the joint key of the asker's share and
    /// a fresh share of its own, and shuffles.
    /// Groups with fewer than `min_count` people in the overlap will not
    /// be released.
    pub fn respond(
        msg: &[u8],
        people: &[(RistrettoPoint, Vec<u64>)],
        values: usize,
        min_count: u64,
    ) -> Result<(Responder, Vec<u8>, StepStats), PsiError> {
        Self::respond_padded(msg, people, values, min_count, 0)
    }

    /// [`Self::respond`] with `dummies` more items in message 2 (random
    /// points with encryptions of zero, shuffled in), so that its length
    /// tells the asker the number of this node's people only up to the
    /// dummies' noise: they match nothing, so nothing else changes. The
    /// caller draws `dummies` (a shifted, truncated discrete Laplace).
    pub fn respond_padded(
        msg: &[u8],
        people: &[(RistrettoPoint, Vec<u64>)],
        values: usize,
        min_count: u64,
        dummies: u64,
    ) -> Result<(Responder, Vec<u8>, StepStats), PsiError> {
        if people.len() as u64 + dummies > MAX_ITEMS as u64 {
            return Err(PsiError::Malformed("more items than a query may send"));
        }
        if values > MAX_VALUES || people.iter().any(|(_, v)| v.len() != values) {
            return Err(PsiError::Malformed(
                "every person needs the same number of values",
            ));
        }
        let (mut r, session) = Reader::open(msg, 1, None)?;
        let asker_share = read_share(&mut r, &session, 0, 1)?;
        let groups = r.count(4)?;
        if groups > MAX_GROUPS {
            return Err(PsiError::Malformed("more groups than a query may send"));
        }
        let mut asker_groups = Vec::with_capacity(groups);
        let mut total = 0usize;
        for _ in 0..groups {
            let n = r.count(POINT_LEN)?;
            total = total.saturating_add(n);
            if total > MAX_ITEMS {
                return Err(PsiError::Malformed("more items than a query may send"));
            }
            let bytes = r.take(n * POINT_LEN)?;
            // An honest asker sends each person once per group; a point
            // sent twice is an attempt to count one person k times.
            let distinct: HashSet<&[u8]> = bytes.chunks(POINT_LEN).collect();
            if distinct.len() != n {
                return Err(PsiError::Malformed("a group holds the same point twice"));
            }
            asker_groups.push(decode_points(bytes)?);
        }
        r.end()?;
        let secret = Secret::fresh()?;
        let share = KeyShare::fresh()?;
        let joint = share.joint(&asker_share);
        let t = Instant::now();
        let points: Vec<RistrettoPoint> = people.iter().map(|(p, _)| *p).collect();
        let blinded = group::multiply_all(&points, &secret);
        let blind_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut items: Vec<Vec<u8>> = blinded
            .into_par_iter()
            .zip(people.par_iter())
            .map(|(b, (_, nums))| -> Result<Vec<u8>, PsiError> {
                let mut out = b.to_vec();
                for v in nums {
                    out.extend_from_slice(&joint.encrypt_encoded(*v)?);
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()?;
        for _ in 0..dummies {
            items.push(dummy_item(&joint, values)?);
        }
        let crypto_s = t.elapsed().as_secs_f64();
        items.shuffle(&mut rng());
        let mut w = Writer::new(2, &session);
        write_share(&mut w, &share, &session, 1, 2)?;
        w.u8(values as u8);
        w.u32(items.len());
        for i in &items {
            w.bytes(i);
        }
        let bytes = w.0.len();
        Ok((
            Responder {
                session,
                secret,
                share,
                joint,
                asker_groups,
                values,
                min_count,
                sent: items.len(),
            },
            w.0,
            StepStats {
                blind_s,
                crypto_s,
                bytes,
                ..StepStats::default()
            },
        ))
    }

    /// Step 4: blinds the asker's groups with its own scalar, matches them
    /// with the twice-blinded identifiers, counts (in the clear: the
    /// responder learns every group's overlap count) and sums under the
    /// joint key per group, and releases the groups with at least
    /// `min_count` people: count, each sum's ciphertext and this node's
    /// partial decryption of it with its proof. Also returns every group's
    /// count (what the responder learns; it never learns a sum).
    pub fn finish(&self, msg: &[u8]) -> Result<(Vec<u8>, Vec<GroupResult>, StepStats), PsiError> {
        self.finish_with(msg, None)
    }

    /// Step 4 with a release policy (differential privacy): each person of
    /// the overlap counts in at most `max_groups_per_person` groups (chosen
    /// at random: the responder sees the same doubly blinded value in every
    /// group the person is in), and `release` decides from each group's
    /// exact count what is released: a noisy count and the noise added to
    /// each sum under encryption before it is partially decrypted.
    pub fn finish_with(
        &self,
        msg: &[u8],
        policy: Option<&Release<'_>>,
    ) -> Result<(Vec<u8>, Vec<GroupResult>, StepStats), PsiError> {
        let (mut r, _) = Reader::open(msg, 3, Some(&self.session))?;
        let values = values_flag(&mut r)?;
        if values != self.values {
            return Err(PsiError::Malformed(
                "the message does not carry what was sent",
            ));
        }
        let size = item_size(values);
        let n = r.count(size)?;
        // Exactly what message 2 sent, each once: an asker that returns
        // more (copies, or points of its own) could make one person count
        // k times or test identifiers it guesses.
        if n != self.sent {
            return Err(PsiError::Malformed(
                "message 3 does not return exactly the items of message 2",
            ));
        }
        let body = r.take(n * size)?;
        r.end()?;
        let t = Instant::now();
        // Decode (and check) every point and ciphertext first.
        let theirs = decode_items(body, size)?;
        let decode_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mine: Vec<Vec<[u8; 32]>> = self
            .asker_groups
            .iter()
            .map(|g| group::multiply_all(g, &self.secret))
            .collect();
        let blind_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let index: HashMap<[u8; 32], Vec<Ciphertext>> = theirs.into_iter().collect();
        // Encodings are canonical, so fewer keys than items is a point
        // returned twice.
        if index.len() != n {
            return Err(PsiError::Malformed("message 3 holds the same point twice"));
        }
        // Under a release policy, a person of the overlap in more than the
        // allowed number of groups keeps a random choice of them.
        let mut dropped: HashSet<(usize, [u8; 32])> = HashSet::new();
        if let Some(cap) = policy.and_then(|p| p.max_groups_per_person) {
            let mut groups_of: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
            for (g, points) in mine.iter().enumerate() {
                let unique: HashSet<&[u8; 32]> =
                    points.iter().filter(|p| index.contains_key(*p)).collect();
                for p in unique {
                    groups_of.entry(*p).or_default().push(g);
                }
            }
            let mut r = rng();
            for (p, mut gs) in groups_of {
                if gs.len() > cap {
                    gs.shuffle(&mut r);
                    for g in &gs[cap..] {
                        dropped.insert((*g, p));
                    }
                }
            }
        }
        let mut all = Vec::with_capacity(mine.len());
        let mut sums_of = Vec::with_capacity(mine.len());
        for (g, points) in mine.iter().enumerate() {
            let mut count = 0u64;
            let mut sums = vec![Ciphertext::zero(); values];
            let mut seen = HashSet::with_capacity(points.len());
            for p in points {
                if !seen.insert(*p) || dropped.contains(&(g, *p)) {
                    continue; // the asker sent a person twice: counted once
                }
                if let Some(cs) = index.get(p) {
                    count += 1;
                    for (s, c) in sums.iter_mut().zip(cs) {
                        *s = s.add(c);
                    }
                }
            }
            all.push(GroupResult {
                group: g as u32,
                count,
                sums: Vec::new(),
            });
            sums_of.push(sums);
        }
        let match_s = t.elapsed().as_secs_f64() + decode_s;
        // What is released of each group: its count (noisy under a policy)
        // and the noise for each sum.
        let mut released: Vec<(u32, Noised)> = Vec::new();
        for g in &all {
            match policy {
                None if g.count >= self.min_count => released.push((
                    g.group,
                    Noised {
                        count: g.count,
                        noise: vec![0; values],
                    },
                )),
                None => {}
                Some(p) => {
                    if let Some(n) = (p.release)(g.group, g.count)? {
                        if n.noise.len() != values {
                            return Err(PsiError::Noise(
                                "the release policy gave noise for other values".into(),
                            ));
                        }
                        released.push((g.group, n));
                    }
                }
            }
        }
        let t = Instant::now();
        let mut w = Writer::new(4, &self.session);
        w.u32(released.len());
        for (g, n) in &released {
            w.u32(*g as usize);
            w.u64(n.count);
            w.u8(values as u8);
            for (v, (sum, noise)) in sums_of[*g as usize].iter().zip(&n.noise).enumerate() {
                // Re-randomised: a sum of no items is not the identity,
                // and the asker's own re-randomisations do not add up to it.
                let c = self.joint.rerandomize(&sum.plus(*noise))?;
                let context = partial_context(&self.session, *g as usize, v);
                let (d, proof) = self.share.partial(&c, &context)?;
                w.bytes(&c.encode());
                w.bytes(&group::encode(&d));
                w.bytes(&proof);
            }
        }
        let crypto_s = t.elapsed().as_secs_f64();
        let bytes = w.0.len();
        Ok((
            w.0,
            all,
            StepStats {
                blind_s,
                crypto_s,
                match_s,
                bytes,
            },
        ))
    }
}
