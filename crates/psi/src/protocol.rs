//! The two-party protocol: an *asker* learns per-group overlap counts (and
//! sums of the *responder's* measure over the overlap) of its own groups,
//! and nothing else; the responder computes, applies k, and releases.
//!
//! ```text
//!  asker                                     responder
//!  1. per group: shuffled H(a)^α  ───────▶
//!                                  ◀───────  2. shuffled (H(b)^β, Enc_R(sum_b)), R
//!  3. shuffled (H(b)^βα, ReRand(Enc))  ───▶
//!                                  ◀───────  4. per group with ≥ k: count, Σ
//! ```
//!
//! Every message carries the session id; a message of another session, an
//! invalid or identity point, a truncated list or trailing bytes is an
//! error. α, β and the ElGamal key are fresh for every session.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use curve25519_dalek::ristretto::RistrettoPoint;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::elgamal::{Ciphertext, KeyPair, PublicKey, CIPHERTEXT_LEN};
use crate::group::{self, Secret, POINT_LEN};
use crate::PsiError;

const MAGIC: &[u8; 12] = b"AIRLOCK-PSI1";
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
    /// Given a group's exact count and sums, what is released of it (noisy
    /// values, encoded as `i64` bits in `u64`), or `None` if it is not.
    #[allow(clippy::type_complexity)]
    pub release: &'a (dyn Fn(&GroupResult) -> Result<Option<GroupResult>, PsiError> + Sync),
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

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::from_entropy()
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(kind: u8, session: &SessionId) -> Self {
        let mut v = Vec::new();
        v.extend_from_slice(MAGIC);
        v.push(kind);
        v.extend_from_slice(session);
        Writer(v)
    }
    fn u8(&mut self, x: u8) {
        self.0.push(x);
    }
    fn u32(&mut self, x: usize) {
        self.0.extend_from_slice(&(x as u32).to_le_bytes());
    }
    fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn open(
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
    fn take(&mut self, n: usize) -> Result<&'a [u8], PsiError> {
        if self.b.len() < n {
            return Err(PsiError::Malformed("the message is truncated"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, PsiError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<usize, PsiError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a) as usize)
    }
    fn u64(&mut self) -> Result<u64, PsiError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of items of `size` bytes, checked against what is left.
    fn count(&mut self, size: usize) -> Result<usize, PsiError> {
        let n = self.u32()?;
        if n > MAX_ITEMS || n.saturating_mul(size) > self.b.len() {
            return Err(PsiError::Malformed(
                "the message is truncated or its count is wrong",
            ));
        }
        Ok(n)
    }
    fn end(&self) -> Result<(), PsiError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(PsiError::Malformed("trailing bytes after the message"))
        }
    }
}

fn decode_points(bytes: &[u8]) -> Result<Vec<RistrettoPoint>, PsiError> {
    bytes.par_chunks(POINT_LEN).map(group::decode).collect()
}

/// Most encrypted values per person.
pub const MAX_VALUES: usize = 2;

fn item_size(values: usize) -> usize {
    POINT_LEN + values * CIPHERTEXT_LEN
}

fn values_flag(r: &mut Reader<'_>) -> Result<usize, PsiError> {
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
        let t = Instant::now();
        let mut w = Writer::new(1, &session);
        w.u32(points.len());
        for g in points {
            let mut blinded: Vec<[u8; 32]> = g
                .par_iter()
                .map(|p| group::encode(&(p * secret.scalar())))
                .collect();
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
                groups: points.len(),
                values,
            },
            w.0,
            stats,
        ))
    }

    /// Step 3: blinds the responder's blinded identifiers again,
    /// re-randomises every ciphertext under the responder's key, and
    /// shuffles, so the responder cannot tell which of its rows each is.
    pub fn reblind(&self, msg: &[u8]) -> Result<(Vec<u8>, StepStats), PsiError> {
        let (mut r, _) = Reader::open(msg, 2, Some(&self.session))?;
        let pk = PublicKey::from_point(group::decode(r.take(POINT_LEN)?)?);
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
        let mut items: Vec<Vec<u8>> = body
            .par_chunks(size)
            .map(|item| -> Result<Vec<u8>, PsiError> {
                let p = group::decode(&item[..POINT_LEN])?;
                let mut out = group::encode(&(p * self.secret.scalar())).to_vec();
                for c in item[POINT_LEN..].chunks(CIPHERTEXT_LEN) {
                    let c = Ciphertext::decode(c)?;
                    out.extend_from_slice(&pk.rerandomize(&c)?.encode());
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()?;
        let work = t.elapsed().as_secs_f64();
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

    /// Step 4: the released groups.
    pub fn finish(&self, msg: &[u8]) -> Result<Vec<GroupResult>, PsiError> {
        let (mut r, _) = Reader::open(msg, 4, Some(&self.session))?;
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
            for _ in 0..k {
                sums.push(r.u64()?);
            }
            out.push(GroupResult {
                group: group as u32,
                count,
                sums,
            });
        }
        r.end()?;
        Ok(out)
    }
}

/// The responder's side of one session.
pub struct Responder {
    session: SessionId,
    secret: Secret,
    keys: KeyPair,
    asker_groups: Vec<Vec<RistrettoPoint>>,
    values: usize,
    min_count: u64,
    /// Items of message 2: message 3 must return exactly as many.
    sent: usize,
    /// Per value, the bound of every decryption: the sum of that value
    /// over all of the responder's people (no group of an honest asker
    /// exceeds it), rounded up to a power of two so that the time of a
    /// decryption tells only its order of magnitude.
    bounds: Vec<u64>,
}

impl Responder {
    /// Step 2: checks the asker's message, blinds its own hashed identifiers
    /// (`people`: one per person, with `values` per-person numbers, e.g.
    /// the sum of its measure over its rows and its row count) with a
    /// fresh scalar, encrypts each number under a fresh key, and shuffles.
    /// Groups with fewer than `min_count` people in the overlap will not
    /// be released.
    pub fn respond(
        msg: &[u8],
        people: &[(RistrettoPoint, Vec<u64>)],
        values: usize,
        min_count: u64,
    ) -> Result<(Responder, Vec<u8>, StepStats), PsiError> {
        if values > MAX_VALUES || people.iter().any(|(_, v)| v.len() != values) {
            return Err(PsiError::Malformed(
                "every person needs the same number of values",
            ));
        }
        let (mut r, session) = Reader::open(msg, 1, None)?;
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
        let keys = KeyPair::fresh()?;
        let t = Instant::now();
        let blinded: Vec<[u8; 32]> = people
            .par_iter()
            .map(|(p, _)| group::encode(&(p * secret.scalar())))
            .collect();
        let blind_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut items: Vec<Vec<u8>> = blinded
            .into_par_iter()
            .zip(people.par_iter())
            .map(|(b, (_, nums))| -> Result<Vec<u8>, PsiError> {
                let mut out = b.to_vec();
                for v in nums {
                    out.extend_from_slice(&keys.public().encrypt(*v)?.encode());
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()?;
        let crypto_s = t.elapsed().as_secs_f64();
        items.shuffle(&mut rng());
        let mut w = Writer::new(2, &session);
        w.bytes(&group::encode(keys.public().point()));
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
                keys,
                asker_groups,
                values,
                min_count,
                sent: items.len(),
                bounds: (0..values)
                    .map(|v| {
                        let total = people
                            .iter()
                            .fold(0u64, |acc, (_, nums)| acc.saturating_add(nums[v]));
                        total
                            .checked_next_power_of_two()
                            .unwrap_or(u64::MAX)
                            .min(crate::elgamal::MAX_PLAINTEXT)
                    })
                    .collect(),
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
    /// with the twice-blinded identifiers, counts and sums under
    /// encryption per group, decrypts, and releases the groups with at
    /// least `min_count` people (a group whose sum is beyond the decryptable
    /// range is not released). Also returns every such group's count (what
    /// the responder learns, for its own records; not sent).
    pub fn finish(&self, msg: &[u8]) -> Result<(Vec<u8>, Vec<GroupResult>, StepStats), PsiError> {
        self.finish_with(msg, None)
    }

    /// Step 4 with a release policy (differential privacy): each person of
    /// the overlap counts in at most `max_groups_per_person` groups (chosen
    /// at random: the responder sees the same doubly blinded value in every
    /// group the person is in), every group is decrypted, and `release`
    /// decides what of each group is released (noisy values, selection).
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
        let theirs: Vec<([u8; 32], Vec<Ciphertext>)> = body
            .par_chunks(size)
            .map(|item| -> Result<_, PsiError> {
                let p = group::decode(&item[..POINT_LEN])?;
                let cs = item[POINT_LEN..]
                    .chunks(CIPHERTEXT_LEN)
                    .map(Ciphertext::decode)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((group::encode(&p), cs))
            })
            .collect::<Result<_, _>>()?;
        let decode_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mine: Vec<Vec<[u8; 32]>> = self
            .asker_groups
            .iter()
            .map(|g| {
                g.par_iter()
                    .map(|p| group::encode(&(p * self.secret.scalar())))
                    .collect()
            })
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
        let mut crypto_s = 0.0;
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
            // Only released groups are decrypted (under a policy, all: it
            // decides on noisy values).
            // A sum beyond the decryptable range is not released (that
            // group only): an abort of the whole query would tell the
            // asker one bit about the sum.
            let mut plain = Vec::new();
            let mut in_range = true;
            if count >= self.min_count || policy.is_some() {
                let d = Instant::now();
                for (s, bound) in sums.iter().zip(&self.bounds) {
                    match self.keys.decrypt_within(s, *bound) {
                        Some(v) => plain.push(v),
                        None => in_range = false,
                    }
                }
                crypto_s += d.elapsed().as_secs_f64();
            }
            if in_range {
                all.push(GroupResult {
                    group: g as u32,
                    count,
                    sums: plain,
                });
            }
        }
        let match_s = t.elapsed().as_secs_f64() - crypto_s + decode_s;
        let released: Vec<GroupResult> = match policy {
            None => all
                .iter()
                .filter(|g| g.count >= self.min_count)
                .cloned()
                .collect(),
            Some(p) => {
                let mut out = Vec::new();
                for g in &all {
                    if let Some(r) = (p.release)(g)? {
                        out.push(r);
                    }
                }
                out
            }
        };
        let mut w = Writer::new(4, &self.session);
        w.u32(released.len());
        for g in &released {
            w.u32(g.group as usize);
            w.u64(g.count);
            w.u8(g.sums.len() as u8);
            for v in &g.sums {
                w.u64(*v);
            }
        }
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
