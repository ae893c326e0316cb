//! The two-party protocol by the *responder's* groups: the asker (the
//! member who asks, e.g. an advertiser with its customers and their spend)
//! learns per-group overlap counts and sums of its own measure over the
//! overlap, by groups of the responder's dimensions (e.g. a publisher's
//! segments), and neither node learns who is in the overlap or in which
//! group: the asker matches but never sees a group, the responder sees the
//! groups but only ciphertexts under the 2-of-2 key.
//!
//! ```text
//!  asker                                     responder
//!  1. X_A, PoK(x_A), αG; shuffled
//!     (α·H(a), Enc_XA(v_a)) + dummies ───────▶
//!                                  ◀───────  2. X_R, PoK(x_R); S: shuffled
//!                                               (β·α·H(a), ReRand_X(lift(Enc))),
//!                                               with D dummy pairs and F extra;
//!                                               L: shuffled β·H(b), with the D
//!                                               dummies' r·G and E extra
//!  3. per item of L, in L's order:
//!     Enc_X(matched) with a proof it
//!     is 0 or 1, Enc_X(v or 0)        ───────▶  checks the proofs, sums
//!                                               per group under X
//!                                  ◀───────  4. (no DP) per group, k zero
//!                                               tests r_t·(count - t), with
//!                                               x_R·c1 and a DLEQ proof
//!  5. per group that passes: for each
//!     test, a proof it is not zero    ───────▶
//!                                  ◀───────  6. per released group:
//!                                               Enc_X(count + noise),
//!                                               Enc_X(Σ + noise), x_R·c1, DLEQ
//! ```
//!
//! Under differential privacy the groups are the rule's public keys, all
//! released with the responder's noise, and step 6 follows step 3
//! directly (no zero tests: no group is chosen by its count).
//!
//! What each side sees, and why it is no more:
//! - The responder sees the asker's item count (plus the asker's dummies),
//!   and ciphertexts under the joint key it cannot open alone. With zero
//!   tests it learns which of its groups passed k (a bit per group, never
//!   a count: the asker's proof reveals a random multiple of `count - t`).
//! - The asker sees |S| = its items + D + F and |L| = the responder's
//!   people + D + E, and which items of L match some item of S: the
//!   overlap plus D (the dummy pairs `(r·G, r·αG)` match like real ones).
//!   D, E and F are drawn by the responder (a shifted, truncated discrete
//!   Laplace: the caller's), so the asker learns neither the overlap's size
//!   nor the responder's count exactly. It cannot tell which of its people
//!   an item of S is (β, and the re-randomisation), nor an item of L's group
//!   (none is sent). Of each released group it opens the count and sums;
//!   of the others, only that they were not released.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::elgamal::{
    self, BitClaim, Ciphertext, KeyShare, PublicKey, BIT_PROOF_LEN, CIPHERTEXT_LEN, NONZERO_LEN,
    PROOF_LEN,
};
use crate::group::{self, rng, Secret, POINT_LEN};
use crate::protocol::{
    decode_items, dummy_item, item_size, proof_context, push_zeros, read_share, values_flag,
    write_share, Reader, SessionId, StepStats, Writer, MAX_GROUPS, MAX_ITEMS, MAX_VALUES,
};
use crate::{GroupResult, PsiError};

/// Most zero tests one message may carry (groups times k).
pub const MAX_ZERO_TESTS: usize = 1_000_000;
/// Most empty groups a grouper may add (by the responder's groups its
/// callers draw about 14; by the asker's groups enough for a power of two).
pub const MAX_EMPTY_GROUPS: usize = 1_000;

/// Message kinds of this protocol (the counts protocol uses 1 to 4).
const M1: u8 = 11;
const M2: u8 = 12;
const M3: u8 = 13;
const M4: u8 = 14;
const M5: u8 = 15;
const M6: u8 = 16;

/// Bytes of an item of message 3 before its values: the count's
/// ciphertext and its proof that it is 0 or 1.
const M3_ITEM: usize = CIPHERTEXT_LEN + BIT_PROOF_LEN;
/// Items of message 3 whose proofs are checked in one batch.
const BIT_BATCH: usize = 1024;

/// How many dummies the responder adds to message 2 (drawn by the caller
/// from its noise: see the module's header for what each hides).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Padding {
    /// Pairs that match like a person of the overlap and count nowhere:
    /// hide the overlap's size from the asker.
    pub matched: u64,
    /// Extra items of L that match nothing: hide the responder's count.
    pub unmatched_mine: u64,
    /// Extra items of S that match nothing: with `matched`, hide the
    /// overlap's size given |S|.
    pub unmatched_theirs: u64,
    /// Groups with nobody in them (their zero tests always fail): hide the
    /// number of the responder's groups.
    pub groups: u64,
}

impl Padding {
    fn total(&self) -> u64 {
        self.matched
            .saturating_add(self.unmatched_mine)
            .saturating_add(self.unmatched_theirs)
    }
}

/// A uniformly random point (its discrete log known to nobody after this).
pub(crate) fn random_scalar() -> Result<Scalar, PsiError> {
    Ok(*Secret::fresh()?.scalar())
}

/// What a proof of step `step` about item `item` is bound to; the steps
/// of this protocol are its message kinds, distinct from the counts
/// protocol's.
pub(crate) fn context(
    session: &SessionId,
    role: u8,
    step: u8,
    item: usize,
) -> Result<Vec<u8>, PsiError> {
    let item = u32::try_from(item).map_err(|_| PsiError::Malformed("too many items"))?;
    Ok(proof_context(session, role, step, item))
}

/// The asker's side of one session.
pub struct Matcher {
    session: SessionId,
    secret: Secret,
    share: KeyShare,
    values: usize,
    /// Items message 1 sent (with the asker's dummies).
    sent: usize,
    theirs: Option<RistrettoPoint>,
    /// Items of L the responder sent (message 3 returns one per item).
    positions: usize,
    /// The groups whose zero tests all failed to be zero, once message 4
    /// is read (the only groups message 6 may release).
    passing: Option<HashSet<u32>>,
    /// Whether k is applied by zero tests (no differential privacy): then
    /// a release that skips them is refused.
    zero_tests: bool,
    /// Each step once, in order.
    step: u8,
}

impl Matcher {
    /// Step 1: blinds each person's hashed identifier with a fresh scalar α,
    /// encrypts its `values` numbers (e.g. its sum of a measure and its row
    /// count) under this node's fresh key share alone, adds `dummies`
    /// random items (hiding its count from the responder), and shuffles.
    /// Also sends `α·G`, with which the responder makes its matching
    /// dummies. With `zero_tests` (no differential privacy), only groups
    /// that passed the zero tests of step 5 may be released.
    pub fn start(
        session: SessionId,
        people: &[(RistrettoPoint, Vec<u64>)],
        values: usize,
        dummies: u64,
        zero_tests: bool,
    ) -> Result<(Matcher, Vec<u8>, StepStats), PsiError> {
        let total = (people.len() as u64).saturating_add(dummies);
        if values > MAX_VALUES
            || people.iter().any(|(_, v)| v.len() != values)
            || total > MAX_ITEMS as u64
        {
            return Err(PsiError::Malformed(
                "too many people, or not the same number of values for each",
            ));
        }
        let secret = Secret::fresh()?;
        let share = KeyShare::fresh()?;
        let mine = PublicKey::from_point(*share.point());
        let t = Instant::now();
        let points: Vec<RistrettoPoint> = people.iter().map(|(p, _)| *p).collect();
        let mut items: Vec<Vec<u8>> = group::multiply_all(&points, &secret)
            .into_par_iter()
            .zip(people.par_iter())
            .map(|(b, (_, nums))| -> Result<Vec<u8>, PsiError> {
                let mut out = b.to_vec();
                for v in nums {
                    out.extend_from_slice(&mine.encrypt_encoded(*v)?);
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()?;
        for _ in 0..dummies {
            items.push(dummy_item(&mine, values)?);
        }
        items.shuffle(&mut rng());
        let mut w = Writer::new(M1, &session);
        write_share(&mut w, &share, &session, 0, M1)?;
        w.bytes(&group::encode(
            &(RISTRETTO_BASEPOINT_TABLE * secret.scalar()),
        ));
        w.u8(values as u8);
        w.u32(items.len());
        for i in &items {
            w.bytes(i);
        }
        let stats = StepStats {
            blind_s: t.elapsed().as_secs_f64(),
            bytes: w.0.len(),
            ..StepStats::default()
        };
        Ok((
            Matcher {
                session,
                secret,
                share,
                values,
                sent: items.len(),
                theirs: None,
                positions: 0,
                passing: None,
                zero_tests,
                step: 1,
            },
            w.0,
            stats,
        ))
    }

    fn joint(&self) -> Result<PublicKey, PsiError> {
        let theirs = self
            .theirs
            .ok_or(PsiError::Malformed("message 2 has not been read"))?;
        Ok(self.share.joint(&theirs))
    }

    fn next(&mut self, from: u8, to: u8) -> Result<(), PsiError> {
        if self.step != from {
            return Err(PsiError::Malformed("a step out of order, or run twice"));
        }
        self.step = to;
        Ok(())
    }

    /// Step 3: checks the responder's key share, blinds every item of L with
    /// α and looks it up in S; for each item of L, in L's order, sends
    /// `Enc(1)` and the matched item's values re-randomised, or `Enc(0)`
    /// and encryptions of zero: all fresh under the joint key, so the
    /// responder, which knows each item's group, cannot tell which matched.
    /// Each count carries a proof that it is 0 or 1
    /// ([`PublicKey::encrypt_bit`]), which tells nothing of which.
    /// Returns the message and how many items matched (the overlap plus the
    /// responder's matching dummies: what this node learns).
    pub fn match_items(&mut self, msg: &[u8]) -> Result<(Vec<u8>, usize, StepStats), PsiError> {
        self.next(1, 3)?;
        let (mut r, _) = Reader::open(msg, M2, Some(&self.session))?;
        let theirs = read_share(&mut r, &self.session, 1, M2)?;
        self.theirs = Some(theirs);
        let pk = self.joint()?;
        if values_flag(&mut r)? != self.values {
            return Err(PsiError::Malformed(
                "message 2 carries other values than the query needs",
            ));
        }
        let size = item_size(self.values);
        let n = r.count(size)?;
        if n < self.sent {
            return Err(PsiError::Malformed(
                "message 2 returns fewer items than message 1 sent",
            ));
        }
        let s_bytes = r.take(n * size)?;
        let l = r.count(POINT_LEN)?;
        let l_bytes = r.take(l * POINT_LEN)?;
        r.end()?;
        let t = Instant::now();
        // Every point and ciphertext is checked before any matching: an
        // invalid one that only a match would reach would tell the
        // responder, by the asker's error, that it matched.
        let s = decode_items(s_bytes, size)?;
        let index: HashMap<[u8; 32], Vec<Ciphertext>> = s.into_iter().collect();
        if index.len() != n {
            return Err(PsiError::Malformed("message 2 holds the same point twice"));
        }
        let l_points = group::decode_multiply_all(l_bytes, &self.secret)?;
        if l_points.iter().collect::<HashSet<_>>().len() != l {
            return Err(PsiError::Malformed("message 2 holds the same point twice"));
        }
        let blind_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let values = self.values;
        let session = self.session;
        // Each count comes with a proof that it is 0 or 1: without it, an
        // asker could weight the item of a person it targets (with `Enc(k)`
        // or powers of two) and read that person's groups off the released
        // counts, or defeat the count's sensitivity under DP.
        let out: Vec<(bool, Vec<u8>)> = l_points
            .par_iter()
            .enumerate()
            .map(|(i, p)| -> Result<(bool, Vec<u8>), PsiError> {
                let mut out = Vec::with_capacity(M3_ITEM + values * CIPHERTEXT_LEN);
                let found = index.get(p);
                let (ct, proof) = pk.encrypt_bit(found.is_some(), &context(&session, 0, M3, i)?)?;
                out.extend_from_slice(&ct);
                out.extend_from_slice(&proof);
                // The same work whether it matched or not (the responder
                // sees how long this step takes): a re-randomisation of the
                // matched values, or of the identity, which is a fresh
                // encryption of zero.
                for v in 0..values {
                    let c = found.map_or_else(Ciphertext::zero, |cs| cs[v]);
                    out.extend_from_slice(&pk.rerandomize(&c)?.encode());
                }
                Ok((found.is_some(), out))
            })
            .collect::<Result<_, _>>()?;
        let matched = out.iter().filter(|(m, _)| *m).count();
        self.positions = l;
        let mut w = Writer::new(M3, &self.session);
        w.u8(values as u8);
        w.u32(l);
        for (_, o) in &out {
            w.bytes(o);
        }
        let stats = StepStats {
            blind_s,
            crypto_s: t.elapsed().as_secs_f64(),
            bytes: w.0.len(),
            ..StepStats::default()
        };
        Ok((w.0, matched, stats))
    }

    /// Step 5 (no differential privacy): opens each of the responder's zero
    /// tests (checking its partial decryption's proof); a group passes when
    /// none of its `k` tests opens to zero, that is when its count is at
    /// least `k` (this node's own k, which the message must use). For each
    /// passing group, sends a proof for each test that it is not zero,
    /// which reveals nothing else of the count.
    pub fn passes(&mut self, msg: &[u8], k: u64) -> Result<Vec<u8>, PsiError> {
        self.next(3, 5)?;
        let theirs = self
            .theirs
            .ok_or(PsiError::Malformed("message 2 has not been read"))?;
        let (mut r, _) = Reader::open(msg, M4, Some(&self.session))?;
        let groups = r.u32()?;
        let tests = r.u32()?;
        if tests as u64 != k || k == 0 {
            return Err(PsiError::Malformed(
                "message 4 tests another k than this node's rules say",
            ));
        }
        // Every real group holds an item of L, and the empty ones are few.
        if groups > MAX_GROUPS * 2
            || groups > self.positions.saturating_add(MAX_EMPTY_GROUPS)
            || groups.saturating_mul(tests) > MAX_ZERO_TESTS
        {
            return Err(PsiError::Malformed("more zero tests than a query may have"));
        }
        let each = CIPHERTEXT_LEN + POINT_LEN + PROOF_LEN;
        let body = r.take(groups * tests * each)?;
        r.end()?;
        let mut w = Writer::new(M5, &self.session);
        let passing = open_zero_tests(
            &mut w,
            body,
            tests,
            &self.share,
            &theirs,
            (&self.session, 1, M4),
            (0, M5),
        )?;
        self.passing = Some(passing.iter().map(|g| *g as u32).collect());
        Ok(w.0)
    }

    /// Step 6: the released groups (index of the responder's group, count,
    /// sums), each checked (the responder's partial decryption must carry
    /// a valid proof) and opened with this node's share. Without
    /// differential privacy only groups that passed step 5 may be released;
    /// a value beyond [`elgamal::MAX_PLAINTEXT`] either way drops its group.
    /// Values are `i64` bits (noisy ones may be negative).
    pub fn finish(&mut self, msg: &[u8]) -> Result<Vec<GroupResult>, PsiError> {
        match (self.step, self.zero_tests) {
            (5, true) | (3, false) => self.step = 6,
            _ => return Err(PsiError::Malformed("a step out of order, or run twice")),
        }
        let theirs = self
            .theirs
            .ok_or(PsiError::Malformed("message 2 has not been read"))?;
        let (mut r, _) = Reader::open(msg, M6, Some(&self.session))?;
        let n = r.u32()?;
        if n > MAX_GROUPS {
            return Err(PsiError::Malformed(
                "more released groups than a query may have",
            ));
        }
        let mut out = Vec::with_capacity(n);
        let mut seen = HashSet::new();
        for _ in 0..n {
            let group = r.u32()?;
            let allowed = self
                .passing
                .as_ref()
                .is_none_or(|p| p.contains(&(group as u32)));
            if !seen.insert(group) || !allowed {
                return Err(PsiError::Malformed(
                    "a released group that did not pass the zero tests, or twice",
                ));
            }
            if values_flag(&mut r)? != self.values {
                return Err(PsiError::Malformed(
                    "a released group carries other values than the query needs",
                ));
            }
            let opened = open_values(
                &mut r,
                &self.share,
                &theirs,
                |v| context(&self.session, 1, M6, group * (MAX_VALUES + 1) + v),
                self.values,
            )?;
            if let Some(all) = opened {
                out.push(GroupResult {
                    group: group as u32,
                    count: all[0] as u64,
                    sums: all[1..].iter().map(|v| *v as u64).collect(),
                });
            }
        }
        r.end()?;
        Ok(out)
    }
}

/// A secret random order of `groups` groups, the first `real` of them the
/// caller's and the rest empty: `order[caller's index]` is the index in
/// the messages, `original[index in the messages]` the caller's index
/// (`None` for an empty group), so the indices the other node sees tell
/// nothing of the order of the groups in this node's rows, nor which are
/// empty.
#[allow(clippy::type_complexity)]
pub(crate) fn secret_order(groups: usize, real: usize) -> (Vec<u32>, Vec<Option<u32>>) {
    let mut order: Vec<u32> = (0..groups as u32).collect();
    order.shuffle(&mut rng());
    let mut original = vec![None; groups];
    for (g, wire) in order.iter().enumerate() {
        if g < real {
            original[*wire as usize] = Some(g as u32);
        }
    }
    (order, original)
}

/// For each group's count ciphertext, `tests` zero tests `r_t·(count - t)`
/// for `t` in `0..tests` with fresh `r_t`, shuffled, each with `share`'s
/// partial decryption and its proof (bound to `session`, `role`, `step`
/// and the test's index), written to `w` after the number of groups and
/// of tests. The opener finds a zero among a group's tests exactly when
/// its count is below `tests`, and nothing else (a non-zero test is a
/// uniformly random point). Returns the tests and partial decryptions, to
/// check the opener's proofs that they are not zero.
#[allow(clippy::type_complexity)]
pub(crate) fn make_zero_tests(
    w: &mut Writer,
    share: &KeyShare,
    counts: &[Ciphertext],
    tests: usize,
    session: &SessionId,
    role: u8,
    step: u8,
) -> Result<Vec<Vec<(Ciphertext, RistrettoPoint)>>, PsiError> {
    let made: Vec<Vec<(Ciphertext, RistrettoPoint, [u8; PROOF_LEN])>> = counts
        .par_iter()
        .enumerate()
        .map(|(g, count)| -> Result<_, PsiError> {
            let mut zs: Vec<Ciphertext> = (0..tests)
                .map(|t| Ok(count.plus(-(t as i64)).scale(&random_scalar()?)))
                .collect::<Result<_, PsiError>>()?;
            zs.shuffle(&mut rng());
            zs.into_iter()
                .enumerate()
                .map(|(t, z)| {
                    let (d, proof) =
                        share.partial(&z, &context(session, role, step, g * tests + t)?)?;
                    Ok((z, d, proof))
                })
                .collect()
        })
        .collect::<Result<_, _>>()?;
    w.u32(counts.len());
    w.u32(tests);
    for g in &made {
        for (z, d, proof) in g {
            w.bytes(&z.encode());
            w.bytes(&group::encode(d));
            w.bytes(proof);
        }
    }
    Ok(made
        .into_iter()
        .map(|g| g.into_iter().map(|(z, d, _)| (z, d)).collect())
        .collect())
}

/// Opens the zero tests of [`make_zero_tests`] in `body` (`tests` per
/// group), checking each partial decryption (made by `theirs` under
/// `made_by`: session, role, step); writes to `w` the groups none of whose
/// tests is zero, each with a proof per test that it is not zero (bound
/// to `proved_as`: this node's role and step), and returns them. Every
/// test is checked and opened (no early exit: the time does not depend on
/// which is zero).
pub(crate) fn open_zero_tests(
    w: &mut Writer,
    body: &[u8],
    tests: usize,
    share: &KeyShare,
    theirs: &RistrettoPoint,
    made_by: (&SessionId, u8, u8),
    proved_as: (u8, u8),
) -> Result<Vec<usize>, PsiError> {
    let each = CIPHERTEXT_LEN + POINT_LEN + PROOF_LEN;
    let (session, role, step) = made_by;
    body.par_chunks(tests * each)
        .enumerate()
        .map(|(g, chunk)| -> Result<Option<Vec<u8>>, PsiError> {
            let mut proofs = Vec::with_capacity(tests * NONZERO_LEN);
            let mut pass = true;
            for (t, z) in chunk.chunks(each).enumerate() {
                let i = g * tests + t;
                let c = Ciphertext::decode(&z[..CIPHERTEXT_LEN])?;
                let d = group::decode(&z[CIPHERTEXT_LEN..CIPHERTEXT_LEN + POINT_LEN])?;
                let proof = &z[CIPHERTEXT_LEN + POINT_LEN..];
                elgamal::verify_partial(theirs, &c, &d, proof, &context(session, role, step, i)?)?;
                match share.prove_nonzero(
                    &c,
                    &d,
                    &context(session, proved_as.0, proved_as.1, i)?,
                )? {
                    Some(p) => proofs.extend_from_slice(&p),
                    None => pass = false,
                }
            }
            Ok(pass.then_some(proofs))
        })
        .collect::<Result<Vec<_>, PsiError>>()
        .map(|results| {
            let passing: Vec<(usize, Vec<u8>)> = results
                .into_iter()
                .enumerate()
                .filter_map(|(g, p)| p.map(|p| (g, p)))
                .collect();
            w.u32(passing.len());
            for (g, p) in &passing {
                w.u32(*g);
                w.bytes(p);
            }
            passing.into_iter().map(|(g, _)| g).collect()
        })
}

/// Checks the opener's proofs (each bound to `session`, `role`, `step` and
/// the test's index) that every one of group `g`'s zero tests is not zero.
pub(crate) fn check_nonzero(
    theirs: &RistrettoPoint,
    tests: &[(Ciphertext, RistrettoPoint)],
    proofs: &[u8],
    g: usize,
    (session, role, step): (&SessionId, u8, u8),
) -> Result<(), PsiError> {
    let n = tests.len();
    for (t, (p, (z, d))) in proofs.chunks(NONZERO_LEN).zip(tests).enumerate() {
        elgamal::verify_nonzero(theirs, z, d, p, &context(session, role, step, g * n + t)?)?;
    }
    Ok(())
}

/// Reads the count and `values` values of one group, each a ciphertext
/// with the other node's partial decryption and its proof (bound to
/// `context(v)`), checks every proof, and opens each with `share`. `None`
/// when a value is beyond [`elgamal::MAX_PLAINTEXT`] either way (the group
/// is not released; every value is still read and checked).
fn open_values(
    r: &mut Reader<'_>,
    share: &KeyShare,
    theirs: &RistrettoPoint,
    context: impl Fn(usize) -> Result<Vec<u8>, PsiError>,
    values: usize,
) -> Result<Option<Vec<i64>>, PsiError> {
    let mut opened = Vec::with_capacity(1 + values);
    for v in 0..=values {
        let c = Ciphertext::decode(r.take(CIPHERTEXT_LEN)?)?;
        let d = group::decode(r.take(POINT_LEN)?)?;
        let proof = r.take(PROOF_LEN)?;
        elgamal::verify_partial(theirs, &c, &d, proof, &context(v)?)?;
        opened.push(elgamal::dlog_signed(
            &share.complete(&c, &d),
            elgamal::MAX_PLAINTEXT,
        ));
    }
    Ok(opened.into_iter().collect())
}

/// The grouper's side of one session.
pub struct Grouper {
    session: SessionId,
    share: KeyShare,
    asker_share: RistrettoPoint,
    joint: PublicKey,
    values: usize,
    /// The groups of each item of L, in L's order (none for dummies), by
    /// their index in the messages.
    tags: Vec<Vec<u32>>,
    /// Groups, real and empty.
    groups: usize,
    /// For each group's index in the messages, the caller's index of the
    /// group, or `None` for an empty one: a secret random order, so the
    /// indices the asker sees tell nothing of the order of the groups in
    /// the responder's rows, nor which are empty.
    original: Vec<Option<u32>>,
    /// Per group, the count's and each value's sum under the joint key,
    /// once message 3 is read.
    sums: Vec<Vec<Ciphertext>>,
    /// The zero tests of message 4 and this node's partial decryptions.
    tests: Vec<Vec<(Ciphertext, RistrettoPoint)>>,
    step: u8,
}

impl Grouper {
    /// Step 2: checks the asker's message (its key share's proof, distinct
    /// items, the values the query needs), blinds the asker's items again
    /// with a fresh β and moves their ciphertexts under the joint key
    /// (re-randomised), blinds its own people (`people`: hashed identifier
    /// and the indices of the groups it is in, of `groups`), adds the
    /// dummies of `padding`, and shuffles both lists.
    pub fn respond(
        msg: &[u8],
        people: &[(RistrettoPoint, Vec<u32>)],
        groups: usize,
        values: usize,
        padding: Padding,
    ) -> Result<(Grouper, Vec<u8>, StepStats), PsiError> {
        let real = groups;
        let groups = groups.saturating_add(padding.groups as usize);
        if padding.groups as usize > MAX_EMPTY_GROUPS
            || groups > MAX_GROUPS * 2
            || real > MAX_GROUPS
            || people
                .iter()
                .any(|(_, g)| g.iter().any(|g| *g as usize >= real))
        {
            return Err(PsiError::Malformed(
                "a person in a group that does not exist",
            ));
        }
        let (mut r, session) = Reader::open(msg, M1, None)?;
        let asker_share = read_share(&mut r, &session, 0, M1)?;
        let alpha_g = group::decode(r.take(POINT_LEN)?)?;
        if values_flag(&mut r)? != values {
            return Err(PsiError::Malformed(
                "message 1 carries other values than the query needs",
            ));
        }
        let size = item_size(values);
        let n = r.count(size)?;
        let body = r.take(n * size)?;
        r.end()?;
        let extra = padding.total();
        if (n as u64)
            .saturating_add(extra)
            .max((people.len() as u64).saturating_add(extra))
            > MAX_ITEMS as u64
        {
            return Err(PsiError::Malformed("more items than a query may send"));
        }
        // A person sent twice would count twice.
        if body
            .chunks(size)
            .map(|i| &i[..POINT_LEN])
            .collect::<HashSet<_>>()
            .len()
            != n
        {
            return Err(PsiError::Malformed("message 1 holds the same point twice"));
        }
        let share = KeyShare::fresh()?;
        let joint = share.joint(&asker_share);
        let beta = Secret::fresh()?;
        let t = Instant::now();
        let points: Vec<RistrettoPoint> = body
            .par_chunks(size)
            .map(|item| group::decode(&item[..POINT_LEN]))
            .collect::<Result<_, _>>()?;
        let mut s: Vec<Vec<u8>> = group::multiply_all(&points, &beta)
            .into_par_iter()
            .zip(body.par_chunks(size))
            .map(|(b, item)| -> Result<Vec<u8>, PsiError> {
                let mut out = b.to_vec();
                for c in item[POINT_LEN..].chunks(CIPHERTEXT_LEN) {
                    let c = share.lift(&Ciphertext::decode(c)?);
                    out.extend_from_slice(&joint.rerandomize(&c)?.encode());
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()?;
        let (order, original) = secret_order(groups, real);
        let points: Vec<RistrettoPoint> = people.iter().map(|(p, _)| *p).collect();
        let mut l: Vec<([u8; 32], Vec<u32>)> = group::multiply_all(&points, &beta)
            .into_par_iter()
            .zip(people.par_iter())
            .map(|(b, (_, g))| {
                let wire = g.iter().map(|g| order[*g as usize]).collect();
                (b, wire)
            })
            .collect();
        let blind_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..padding.matched {
            // `(r·G, r·αG)`: the asker's `α·(r·G)` finds `r·αG` in S.
            let r = random_scalar()?;
            let mut item = group::encode(&(alpha_g * r)).to_vec();
            push_zeros(&mut item, &joint, values)?;
            s.push(item);
            l.push((group::encode(&(RISTRETTO_BASEPOINT_TABLE * &r)), Vec::new()));
        }
        for _ in 0..padding.unmatched_theirs {
            s.push(dummy_item(&joint, values)?);
        }
        for _ in 0..padding.unmatched_mine {
            l.push((group::encode(&group::random_point()?), Vec::new()));
        }
        let mut rng = rng();
        s.shuffle(&mut rng);
        l.shuffle(&mut rng);
        let mut w = Writer::new(M2, &session);
        write_share(&mut w, &share, &session, 1, M2)?;
        w.u8(values as u8);
        w.u32(s.len());
        for i in &s {
            w.bytes(i);
        }
        w.u32(l.len());
        for (p, _) in &l {
            w.bytes(p);
        }
        let crypto_s = t.elapsed().as_secs_f64();
        let bytes = w.0.len();
        Ok((
            Grouper {
                session,
                share,
                asker_share,
                joint,
                values,
                tags: l.into_iter().map(|(_, g)| g).collect(),
                groups,
                original,
                sums: Vec::new(),
                tests: Vec::new(),
                step: 2,
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

    fn next(&mut self, from: u8, to: u8) -> Result<(), PsiError> {
        if self.step != from {
            return Err(PsiError::Malformed("a step out of order, or run twice"));
        }
        self.step = to;
        Ok(())
    }

    /// Step 3's message: exactly one entry per item of L, each count with
    /// a proof that it is 0 or 1 (checked in batches before anything is
    /// summed: an asker cannot weight one person's item to read its groups
    /// off the counts, nor exceed a count's sensitivity of one per person
    /// and group under DP); sums, under the
    /// joint key, the count and each value per group (this node cannot
    /// open one: it holds half the key). A group's sum is re-randomised,
    /// so the asker cannot recognise its own ciphertexts in it.
    pub fn tally(&mut self, msg: &[u8]) -> Result<StepStats, PsiError> {
        self.next(2, 3)?;
        let (mut r, _) = Reader::open(msg, M3, Some(&self.session))?;
        if values_flag(&mut r)? != self.values {
            return Err(PsiError::Malformed(
                "message 3 carries other values than the query needs",
            ));
        }
        let size = M3_ITEM + self.values * CIPHERTEXT_LEN;
        let n = r.count(size)?;
        if n != self.tags.len() {
            return Err(PsiError::Malformed(
                "message 3 does not answer exactly the items of message 2",
            ));
        }
        let body = r.take(n * size)?;
        r.end()?;
        let t = Instant::now();
        let session = self.session;
        let joint = &self.joint;
        // Each chunk's counts are checked to be 0 or 1 in one batch.
        let items: Vec<Vec<Ciphertext>> = body
            .par_chunks(size * BIT_BATCH)
            .enumerate()
            .map(|(chunk, bytes)| -> Result<Vec<Vec<Ciphertext>>, PsiError> {
                let mut claims = Vec::with_capacity(BIT_BATCH);
                let mut cts = Vec::with_capacity(BIT_BATCH);
                for (j, item) in bytes.chunks(size).enumerate() {
                    let count = &item[..CIPHERTEXT_LEN];
                    let proof = &item[CIPHERTEXT_LEN..M3_ITEM];
                    let c = Ciphertext::decode(count)?;
                    let ctx = context(&session, 0, M3, chunk * BIT_BATCH + j)?;
                    claims.push(BitClaim {
                        context: ctx,
                        sent: count,
                        ciphertext: c,
                        proof,
                    });
                    let mut cs = vec![c];
                    for v in item[M3_ITEM..].chunks(CIPHERTEXT_LEN) {
                        cs.push(Ciphertext::decode(v)?);
                    }
                    cts.push(cs);
                }
                joint.verify_bits(&claims)?;
                Ok(cts)
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        let mut sums = vec![vec![Ciphertext::zero(); 1 + self.values]; self.groups];
        for (tags, cs) in self.tags.iter().zip(&items) {
            for g in tags {
                for (s, c) in sums[*g as usize].iter_mut().zip(cs) {
                    *s = s.add(c);
                }
            }
        }
        self.sums = sums
            .par_iter()
            .map(|cs| cs.iter().map(|c| self.joint.rerandomize(c)).collect())
            .collect::<Result<_, _>>()?;
        Ok(StepStats {
            match_s: t.elapsed().as_secs_f64(),
            ..StepStats::default()
        })
    }

    /// Step 4 (no differential privacy): for each group, `k` zero tests
    /// `r_t·(count - t)` for `t` in `0..k` with fresh `r_t`, shuffled, each
    /// with this node's partial decryption and its proof: the asker finds a
    /// zero among them exactly when the group's count is below `k`, and
    /// nothing else (a non-zero test is a uniformly random point).
    pub fn zero_tests(&mut self, k: u64) -> Result<Vec<u8>, PsiError> {
        self.next(3, 4)?;
        let tests = usize::try_from(k).map_err(|_| PsiError::Malformed("k is too large"))?;
        if tests == 0 || self.groups.saturating_mul(tests) > MAX_ZERO_TESTS {
            return Err(PsiError::Malformed("more zero tests than a query may have"));
        }
        let counts: Vec<Ciphertext> = self.sums.iter().map(|cs| cs[0]).collect();
        let mut w = Writer::new(M4, &self.session);
        self.tests = make_zero_tests(&mut w, &self.share, &counts, tests, &self.session, 1, M4)?;
        Ok(w.0)
    }

    /// Step 6 after step 5: checks the matcher's proofs that every zero
    /// test of each group it names is not zero (so its count is at least
    /// k), and releases those groups to the matcher: count and sums under
    /// the joint key, with this node's partial decryption and proof.
    /// Returns the message and the released groups (what this node learns:
    /// which groups passed), each as (index in the messages, caller's
    /// index).
    #[allow(clippy::type_complexity)]
    pub fn release_passing(&mut self, msg: &[u8]) -> Result<(Vec<u8>, Vec<(u32, u32)>), PsiError> {
        self.next(4, 6)?;
        let pairs = self.passed(msg)?;
        let released: Vec<(u32, Vec<i64>)> = pairs
            .iter()
            .map(|(g, _)| (*g, vec![0; 1 + self.values]))
            .collect();
        Ok((self.release(&released)?, pairs))
    }

    fn real_groups(&self) -> Vec<(u32, u32)> {
        self.original
            .iter()
            .enumerate()
            .filter_map(|(g, o)| o.map(|o| (g as u32, o)))
            .collect()
    }

    /// Checks message 5: the matcher's proofs that every zero test of
    /// each group it names is not zero. Returns those groups as (index in
    /// the messages, caller's index).
    fn passed(&mut self, msg: &[u8]) -> Result<Vec<(u32, u32)>, PsiError> {
        let (mut r, _) = Reader::open(msg, M5, Some(&self.session))?;
        let n = r.u32()?;
        if n > self.groups {
            return Err(PsiError::Malformed("more passing groups than were tested"));
        }
        let tests = self.tests.first().map_or(0, Vec::len);
        let mut passed = Vec::with_capacity(n);
        let mut seen = HashSet::new();
        for _ in 0..n {
            let g = r.u32()?;
            if g >= self.groups || !seen.insert(g) {
                return Err(PsiError::Malformed("a passing group that was not tested"));
            }
            let proofs = r.take(tests * NONZERO_LEN)?;
            check_nonzero(
                &self.asker_share,
                &self.tests[g],
                proofs,
                g,
                (&self.session, 0, M5),
            )?;
            passed.push(g);
        }
        r.end()?;
        // An empty group has nobody: no honest proof can pass it.
        let pairs = passed
            .iter()
            .map(|g| {
                self.original[*g]
                    .map(|o| (*g as u32, o))
                    .ok_or(PsiError::Malformed(
                        "a group with nobody passed its zero tests",
                    ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(pairs)
    }

    /// Step 6 under differential privacy, right after step 3: every real
    /// group is released, its count and each sum with the noise `noise(g)`
    /// gives (one for the count, then one per value) added under
    /// encryption: the asker only ever opens noisy values. Returns the
    /// message and the groups as (index in the messages, caller's index).
    #[allow(clippy::type_complexity)]
    pub fn release_all(
        &mut self,
        noise: &(dyn Fn(u32) -> Result<Vec<i64>, PsiError> + Sync),
    ) -> Result<(Vec<u8>, Vec<(u32, u32)>), PsiError> {
        self.next(3, 6)?;
        let pairs = self.real_groups();
        let released: Vec<(u32, Vec<i64>)> = pairs
            .iter()
            .map(|(g, o)| {
                let n = noise(*o)?;
                if n.len() != 1 + self.values {
                    return Err(PsiError::Noise(
                        "the release policy gave noise for other values".into(),
                    ));
                }
                Ok((*g, n))
            })
            .collect::<Result<_, _>>()?;
        Ok((self.release(&released)?, pairs))
    }

    fn release(&self, groups: &[(u32, Vec<i64>)]) -> Result<Vec<u8>, PsiError> {
        let session = self.session;
        let parts: Vec<Vec<u8>> = groups
            .par_iter()
            .map(|(g, noise)| -> Result<Vec<u8>, PsiError> {
                let mut out = Vec::new();
                out.extend_from_slice(&g.to_le_bytes());
                out.push(self.values as u8);
                for (v, (c, e)) in self.sums[*g as usize].iter().zip(noise).enumerate() {
                    let c = self.joint.rerandomize(&c.plus(*e))?;
                    let ctx = context(&session, 1, M6, *g as usize * (MAX_VALUES + 1) + v)?;
                    let (d, proof) = self.share.partial(&c, &ctx)?;
                    out.extend_from_slice(&c.encode());
                    out.extend_from_slice(&group::encode(&d));
                    out.extend_from_slice(&proof);
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()?;
        let mut w = Writer::new(M6, &self.session);
        w.u32(parts.len());
        for p in &parts {
            w.bytes(p);
        }
        Ok(w.0)
    }
}
