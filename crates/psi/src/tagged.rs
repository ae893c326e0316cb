//! The two-party protocol by the *asker's* groups (counts only): the
//! asker's node (the grouper, which receives the result) tags each of its
//! people with its groups under encryption and proves every tag 0 or 1;
//! the responder's node (the matcher) matches without learning a group and
//! forms every group's count itself, from its own matches and the proved
//! tags, so that the asker's node, whatever it runs, never weights what
//! is summed: each of its people adds 0 or 1 to a group's count, and only
//! when the responder's data holds that person (counted twice only with
//! the small chance the check points leave: see [`Matcher::start`]).
//!
//! ```text
//!  matcher (responder)                        grouper (asker)
//!  1. X_M, PoK(x_M); shuffled α·H(b),
//!     with dummies and check points
//!     R_j = r_j·G                  ───────▶
//!                                  ◀───────  2. X_G, PoK(x_G); B = β·G; S:
//!                                               shuffled β·α·H(b) (exactly as
//!                                               many); L:
//!                                               shuffled β·H(a), each with
//!                                               Enc_X(tag_g) for every group g
//!                                               and a proof each is 0 or 1
//!                                               (under DP, their sum at most c)
//!  3. checks that r_j·B is in S for
//!     every check, every proof;
//!     blinds L with α,
//!     finds each in S; per group the sum of
//!     the tags of matched items. No DP: k
//!     zero tests per group, x_M·c1, DLEQ ─▶
//!     DP: Enc(count + noise), x_M·c1, DLEQ ─▶  (opens: done)
//!                                  ◀───────  4. (no DP) per group that passes,
//!                                               a proof per test it is not zero
//!  5. (no DP) per passing group,
//!     Enc(count), x_M·c1, DLEQ     ───────▶  opens.
//! ```
//!
//! With one group (a query grouped by nothing) the items of L carry no
//! tag and the matcher counts its matches: see `tag_size`.
//!
//! Why this shape: in the grouped protocol ([`crate::grouped`]) the
//! grouper forms the group sums from the matcher's per-item counts; when
//! the grouper is the asker, a modified asker node could form a "group"
//! of one chosen item, scale it, or pick the zero tests' offsets, and read
//! one person's membership off the result past k and differential
//! privacy. Here the matcher, which protects its own data, forms the
//! sums, the zero tests and the noise; the grouper's only inputs are tags
//! proved 0 or 1 (under DP, at most c per person), that is its own
//! grouping of its own people.
//!
//! What each side sees, and why it is no more:
//! - The matcher sees |L|
//!   (the grouper's people plus its dummies E) and which items of L match:
//!   the overlap's size exactly (no matching dummies: a dummy the grouper
//!   knows to match could be tagged into a group with a person it targets,
//!   and would count like k - 1 known people). Tags are under the joint
//!   key: it learns no group of any item. It learns which groups passed k
//!   (a bit per group) from the grouper's proofs.
//! - The grouper sees |message 1| (the matcher's people plus its dummies,
//!   plus the check points, whose number is public),
//!   the zero tests it opens (a random point, or the identity for the one
//!   test of a group below k) and the released counts. It never sees which
//!   of its people matched.

use std::collections::HashSet;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::{RistrettoBasepointTable, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::elgamal::{
    self, BitClaim, Ciphertext, KeyShare, PublicKey, BIT_PROOF_LEN, CIPHERTEXT_LEN, NONZERO_LEN,
    PROOF_LEN,
};
use crate::group::{self, rng, Secret, POINT_LEN};
use crate::grouped::{
    check_nonzero, context, make_zero_tests, open_zero_tests, secret_order, MAX_EMPTY_GROUPS,
    MAX_ZERO_TESTS,
};
use crate::protocol::{read_share, write_share, Reader, SessionId, Writer, MAX_GROUPS, MAX_ITEMS};
use crate::{GroupResult, PsiError};

const M1: u8 = 21;
const M2: u8 = 22;
const M3: u8 = 23;
const M4: u8 = 24;
const M5: u8 = 25;
/// What the proofs of a person's tags adding up to at most c are bound to.
const CAP: u8 = 26;

/// Most tags one message may carry (items of L times groups).
pub const MAX_TAGS: usize = 20_000_000;
/// Items of L whose tag proofs are checked in one batch.
const TAG_BATCH: usize = 256;

/// Bytes of an item of L. With one group, every person of the grouper is
/// in it (the query groups by nothing, or its one group holds everyone),
/// so a tag would be 1 for each real item and 0 for each dummy, which
/// matches nothing: the item is its point alone, and the matcher counts
/// its matches (the count it learns anyway) as that group's.
fn tag_size(groups: usize, cap: Option<usize>) -> usize {
    if groups == 1 {
        return POINT_LEN;
    }
    POINT_LEN + groups * (CIPHERTEXT_LEN + BIT_PROOF_LEN) + cap.map_or(0, |c| 64 * (c + 1))
}

/// The per-person bound the tags are proved under: `Some(c)` when a person
/// may be in at most `c` groups and there are more than `c` groups (with
/// `c` at least the number of groups, no proof is needed).
fn cap_for(cap: Option<usize>, groups: usize) -> Option<usize> {
    cap.filter(|c| *c < groups)
}

/// How many check points the matcher hides among the `n` items of
/// message 1 (its people and dummies): an eighth, and at least 16.
/// Public: a function of the length of message 1.
pub fn checks_for(n: usize) -> usize {
    (n / 8).max(16)
}

/// The matcher's side (the responder's node).
pub struct Matcher {
    session: SessionId,
    secret: Secret,
    /// The check points' discrete logarithms r_j (`R_j = r_j·G`).
    checks: Vec<Secret>,
    share: KeyShare,
    theirs: Option<RistrettoPoint>,
    /// Items message 1 sent (people, dummies and check points): S must
    /// hold exactly as many.
    sent: usize,
    /// Per group, its count under the joint key (step 3).
    counts: Vec<Ciphertext>,
    tests: Vec<Vec<(Ciphertext, RistrettoPoint)>>,
    step: u8,
}

impl Matcher {
    /// Step 1: blinds its people's hashed identifiers with a fresh α, adds
    /// `dummies` random points (hiding its count from the grouper) and
    /// [`checks_for`] random check points `R_j = r_j·G`, and shuffles.
    ///
    /// Why the checks: the grouper re-blinds this list into S, shuffled,
    /// which nobody can compare with message 1. A modified grouper could
    /// put `γ·x` beside `β·x` for items x of message 1, and `γ·H(t)`
    /// beside `β·H(t)` in L, so that a person t it targets counts twice
    /// (or w times, past k and past the noise's sensitivity). S must hold
    /// exactly as many items as message 1, so every such copy takes the
    /// place of an item it drops; the grouper cannot tell a check point
    /// from a person (under Diffie-Hellman both look like random points to
    /// it), and it sends `B = β·G`, so the matcher finds `r_j·B = β·R_j`
    /// in S for every check (`B` tells it nothing of `β·H(a)`: deciding
    /// that would be deciding Diffie-Hellman). Each dropped item
    /// is a check with probability about 1/9, and the grouper cannot find
    /// the target's item: copying d items w times passes with probability
    /// about (8/9)^(d·(w−1)) and holds the target with probability d/N
    /// (N the length of message 1), at best about 3/N per query for a
    /// target counted twice. Not a proof of a shuffle, which would make
    /// it zero (`docs/crypto-mode.md`). A check point never matches (no item of L is
    /// `α^-1·β·R_j` but by chance), so the checks cost no count.
    pub fn start(
        session: SessionId,
        people: &[RistrettoPoint],
        dummies: u64,
    ) -> Result<(Matcher, Vec<u8>), PsiError> {
        let n = (people.len() as u64).saturating_add(dummies);
        if n.saturating_add(checks_for(n as usize) as u64) > MAX_ITEMS as u64 {
            return Err(PsiError::Malformed("more items than a query may send"));
        }
        let secret = Secret::fresh()?;
        let share = KeyShare::fresh()?;
        let mut items = group::multiply_all(people, &secret);
        for _ in 0..dummies {
            items.push(group::encode(&group::random_point()?));
        }
        let checks: Vec<Secret> = (0..checks_for(items.len()))
            .map(|_| Secret::fresh())
            .collect::<Result<_, _>>()?;
        items.extend(group::base_multiply_all(RISTRETTO_BASEPOINT_TABLE, &checks));
        items.shuffle(&mut rng());
        let mut w = Writer::new(M1, &session);
        write_share(&mut w, &share, &session, 1, M1)?;
        w.u32(items.len());
        for i in &items {
            w.bytes(i);
        }
        Ok((
            Matcher {
                session,
                secret,
                checks,
                share,
                theirs: None,
                sent: items.len(),
                counts: Vec::new(),
                tests: Vec::new(),
                step: 1,
            },
            w.0,
        ))
    }

    /// Step 3: checks the grouper's share and every tag's proof (0 or 1;
    /// with `cap`, the tags of an item add up to at most `cap`: this node's
    /// own rule), all before matching; blinds each item of L with α and
    /// looks it up in S; sums per group the tags of the matched items
    /// (the same work for an item that matched as for one that did not).
    /// `groups` is the number of groups this node expects (under
    /// differential privacy, the public ones), or `None`.
    ///
    /// Without differential privacy (`noise` is `None`), sends `k` zero
    /// tests per group; with, every group's count plus `noise()` (this
    /// node's), re-randomised and partially decrypted: the release.
    /// Returns the message and how many items of L matched (what this node
    /// learns).
    #[allow(clippy::type_complexity)]
    pub fn match_and_count(
        &mut self,
        msg: &[u8],
        k: u64,
        cap: Option<usize>,
        groups: Option<usize>,
        noise: Option<&(dyn Fn() -> Result<i64, PsiError> + Sync)>,
    ) -> Result<(Vec<u8>, usize), PsiError> {
        if self.step != 1 {
            return Err(PsiError::Malformed("a step out of order, or run twice"));
        }
        self.step = 3;
        let (mut r, _) = Reader::open(msg, M2, Some(&self.session))?;
        let theirs = read_share(&mut r, &self.session, 0, M2)?;
        self.theirs = Some(theirs);
        let pk = self.share.joint(&theirs);
        let n_groups = r.u32()?;
        if n_groups == 0
            || n_groups > MAX_GROUPS + MAX_EMPTY_GROUPS
            || groups.is_some_and(|g| g != n_groups)
        {
            return Err(PsiError::Malformed(
                "message 2 tags another number of groups than the query has",
            ));
        }
        let cap = cap_for(cap, n_groups);
        let n_s = r.count(POINT_LEN)?;
        if n_s != self.sent {
            return Err(PsiError::Malformed(
                "message 2 returns another number of items than message 1 sent",
            ));
        }
        let s_bytes = r.take(n_s * POINT_LEN)?;
        let b = RistrettoBasepointTable::create(&group::decode(r.take(POINT_LEN)?)?);
        let size = tag_size(n_groups, cap);
        let n_l = r.count(size)?;
        if n_l.saturating_mul(n_groups) > MAX_TAGS {
            return Err(PsiError::Malformed("more tags than a query may send"));
        }
        let l_bytes = r.take(n_l * size)?;
        r.end()?;
        // Every point, tag and proof is checked before any matching: an
        // error only a match would reach would tell the grouper it matched.
        let s: HashSet<[u8; 32]> = s_bytes
            .par_chunks(POINT_LEN)
            // A point that decodes is its canonical encoding: checked, not
            // encoded again.
            .map(|p| group::decode(p).map(|_| group::bytes(p)))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .collect();
        if s.len() != n_s {
            return Err(PsiError::Malformed("message 2 holds the same point twice"));
        }
        // Every check point re-blinded, found in S (see `start`).
        if !group::base_multiply_all(&b, &self.checks)
            .iter()
            .all(|p| s.contains(p))
        {
            return Err(PsiError::Malformed(
                "message 2 does not return the items of message 1",
            ));
        }
        let session = self.session;
        let one = Ciphertext::zero().plus(1);
        let tags: Vec<Vec<Ciphertext>> = l_bytes
            .par_chunks(size * TAG_BATCH)
            .enumerate()
            .map(|(chunk, bytes)| -> Result<Vec<Vec<Ciphertext>>, PsiError> {
                let mut claims = Vec::with_capacity(TAG_BATCH * n_groups);
                let mut out = Vec::with_capacity(TAG_BATCH);
                for (j, item) in bytes.chunks(size).enumerate() {
                    if n_groups == 1 {
                        // Untagged (see `tag_size`): each item counts 1,
                        // in the clear until the re-randomisation below.
                        out.push(vec![one]);
                        continue;
                    }
                    let i = chunk * TAG_BATCH + j;
                    let mut cts = Vec::with_capacity(n_groups);
                    for g in 0..n_groups {
                        let at = POINT_LEN + g * (CIPHERTEXT_LEN + BIT_PROOF_LEN);
                        let sent = &item[at..at + CIPHERTEXT_LEN];
                        let c = Ciphertext::decode(sent)?;
                        claims.push(BitClaim {
                            context: context(&session, 0, M2, i * n_groups + g)?,
                            sent,
                            ciphertext: c,
                            proof: &item[at + CIPHERTEXT_LEN..at + CIPHERTEXT_LEN + BIT_PROOF_LEN],
                        });
                        cts.push(c);
                    }
                    if let Some(c) = cap {
                        let total = cts.iter().fold(Ciphertext::zero(), |a, t| a.add(t));
                        let at = POINT_LEN + n_groups * (CIPHERTEXT_LEN + BIT_PROOF_LEN);
                        pk.verify_small(
                            &total,
                            c + 1,
                            &item[at..],
                            &context(&session, 0, CAP, i)?,
                        )?;
                    }
                    out.push(cts);
                }
                if !claims.is_empty() {
                    pk.verify_bits(&claims)?;
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        let points: Vec<u8> = l_bytes
            .chunks(size)
            .flat_map(|i| i[..POINT_LEN].iter().copied())
            .collect();
        let blinded = group::decode_multiply_all(&points, &self.secret)?;
        if blinded.iter().collect::<HashSet<_>>().len() != n_l {
            return Err(PsiError::Malformed("message 2 holds the same point twice"));
        }
        let zero = Ciphertext::zero();
        let mut counts = vec![Ciphertext::zero(); n_groups];
        let mut matched = 0;
        for (b, cts) in blinded.iter().zip(&tags) {
            let hit = s.contains(b);
            matched += usize::from(hit);
            for (sum, t) in counts.iter_mut().zip(cts) {
                *sum = sum.add(if hit { t } else { &zero });
            }
        }
        // Re-randomised: the grouper made the tags and knows their
        // randomness.
        self.counts = counts
            .par_iter()
            .map(|c| pk.rerandomize(c))
            .collect::<Result<_, _>>()?;
        match noise {
            Some(noise) => {
                self.step = 5;
                let all: Vec<(usize, i64)> = (0..n_groups)
                    .map(|g| Ok((g, noise()?)))
                    .collect::<Result<_, PsiError>>()?;
                Ok((self.release(&pk, &all)?, matched))
            }
            None => {
                let tests =
                    usize::try_from(k).map_err(|_| PsiError::Malformed("k is too large"))?;
                if tests == 0 || n_groups.saturating_mul(tests) > MAX_ZERO_TESTS {
                    return Err(PsiError::Malformed("more zero tests than a query may have"));
                }
                let mut w = Writer::new(M3, &self.session);
                self.tests = make_zero_tests(
                    &mut w,
                    &self.share,
                    &self.counts,
                    tests,
                    &self.session,
                    1,
                    M3,
                )?;
                Ok((w.0, matched))
            }
        }
    }

    /// Step 5 (no differential privacy): checks the grouper's proofs that
    /// every zero test of each group it names is not zero, and releases
    /// those groups' counts, partially decrypted. Returns the message and
    /// the groups that passed (what this node learns).
    pub fn release_passing(&mut self, msg: &[u8]) -> Result<(Vec<u8>, Vec<u32>), PsiError> {
        if self.step != 3 || self.tests.is_empty() {
            return Err(PsiError::Malformed("a step out of order, or run twice"));
        }
        self.step = 5;
        let theirs = self
            .theirs
            .ok_or(PsiError::Malformed("message 2 has not been read"))?;
        let (mut r, _) = Reader::open(msg, M4, Some(&self.session))?;
        let n = r.u32()?;
        if n > self.counts.len() {
            return Err(PsiError::Malformed("more passing groups than were tested"));
        }
        let tests = self.tests[0].len();
        let mut passed = Vec::with_capacity(n);
        let mut seen = HashSet::new();
        for _ in 0..n {
            let g = r.u32()?;
            if g >= self.counts.len() || !seen.insert(g) {
                return Err(PsiError::Malformed("a passing group that was not tested"));
            }
            let proofs = r.take(tests * NONZERO_LEN)?;
            check_nonzero(&theirs, &self.tests[g], proofs, g, (&self.session, 0, M4))?;
            passed.push((g, 0i64));
        }
        r.end()?;
        let pk = self.share.joint(&theirs);
        let msg = self.release(&pk, &passed)?;
        Ok((msg, passed.iter().map(|(g, _)| *g as u32).collect()))
    }

    fn release(&self, pk: &PublicKey, groups: &[(usize, i64)]) -> Result<Vec<u8>, PsiError> {
        let session = self.session;
        let parts: Vec<Vec<u8>> = groups
            .par_iter()
            .map(|(g, noise)| -> Result<Vec<u8>, PsiError> {
                let c = pk.rerandomize(&self.counts[*g].plus(*noise))?;
                let (d, proof) = self.share.partial(&c, &context(&session, 1, M5, *g)?)?;
                let mut out = (*g as u32).to_le_bytes().to_vec();
                out.extend_from_slice(&c.encode());
                out.extend_from_slice(&group::encode(&d));
                out.extend_from_slice(&proof);
                Ok(out)
            })
            .collect::<Result<_, _>>()?;
        let mut w = Writer::new(M5, &self.session);
        w.u32(parts.len());
        for p in &parts {
            w.bytes(p);
        }
        Ok(w.0)
    }
}

/// The grouper's side (the asker's node, which receives the result).
pub struct Grouper {
    session: SessionId,
    share: KeyShare,
    theirs: RistrettoPoint,
    /// For each group's index in the messages, the caller's index, or
    /// `None` for an empty group (a secret random order).
    original: Vec<Option<u32>>,
    passing: Option<HashSet<usize>>,
    zero_tests: bool,
    step: u8,
}

/// How many dummies the grouper adds to message 2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Padding {
    /// Items of L that match nothing (no tag set): hide the grouper's count.
    pub unmatched_mine: u64,
    /// Groups with nobody in them: hide the number of the grouper's groups.
    pub groups: u64,
}

impl Grouper {
    /// Step 2: checks the matcher's share; blinds its items again with a
    /// fresh β (S) and its own people (`people`: hashed identifier and the
    /// caller's indices of the groups it is in, of `groups`) with β (L),
    /// each with a tag per group (1 where it is in the group) encrypted
    /// under the joint key with a proof that it is 0 or 1, and with `cap`
    /// a proof that its tags add up to at most `cap` (a person in more
    /// groups is an error: the caller drops extra groups first). Adds the
    /// dummies of `padding` and shuffles both lists and the groups' order.
    /// With `zero_tests` (no differential privacy) only groups that passed
    /// them may be released.
    pub fn respond(
        msg: &[u8],
        people: &[(RistrettoPoint, Vec<u32>)],
        groups: usize,
        cap: Option<usize>,
        padding: Padding,
        zero_tests: bool,
    ) -> Result<(Grouper, Vec<u8>), PsiError> {
        let real = groups;
        let groups = groups.saturating_add(padding.groups as usize);
        if padding.groups as usize > MAX_EMPTY_GROUPS
            || real == 0
            || real > MAX_GROUPS
            || people
                .iter()
                .any(|(_, g)| g.iter().any(|g| *g as usize >= real))
        {
            return Err(PsiError::Malformed(
                "a person in a group that does not exist",
            ));
        }
        let cap = cap_for(cap, groups);
        if people.iter().any(|(_, g)| {
            g.iter().collect::<HashSet<_>>().len() != g.len() || cap.is_some_and(|c| g.len() > c)
        }) {
            return Err(PsiError::Malformed(
                "a person in a group twice, or in more groups than the rule allows",
            ));
        }
        let (mut r, session) = Reader::open(msg, M1, None)?;
        let theirs = read_share(&mut r, &session, 1, M1)?;
        let n = r.count(POINT_LEN)?;
        let body = r.take(n * POINT_LEN)?;
        r.end()?;
        let total_l = (people.len() as u64).saturating_add(padding.unmatched_mine);
        if total_l > MAX_ITEMS as u64 || total_l.saturating_mul(groups as u64) > MAX_TAGS as u64 {
            return Err(PsiError::Malformed("more items than a query may send"));
        }
        if body.chunks(POINT_LEN).collect::<HashSet<_>>().len() != n {
            return Err(PsiError::Malformed("message 1 holds the same point twice"));
        }
        let share = KeyShare::fresh()?;
        let pk = share.joint(&theirs);
        let beta = Secret::fresh()?;
        let mut s = group::decode_multiply_all(body, &beta)?;
        s.shuffle(&mut rng());

        let (order, original) = secret_order(groups, real);
        let points: Vec<RistrettoPoint> = people.iter().map(|(p, _)| *p).collect();
        let mut l: Vec<([u8; 32], Vec<bool>)> = group::multiply_all(&points, &beta)
            .into_iter()
            .zip(people)
            .map(|(b, (_, gs))| -> Result<_, PsiError> {
                let mut tags = vec![false; groups];
                for g in gs {
                    tags[order[*g as usize] as usize] = true;
                }
                // Untagged (one group), a person in no group (under DP,
                // one whose value is not the public key) would count:
                // it is sent as a random point, which matches nothing,
                // so |L| stays the same.
                if groups == 1 && gs.is_empty() {
                    return Ok((group::encode(&group::random_point()?), tags));
                }
                Ok((b, tags))
            })
            .collect::<Result<_, _>>()?;
        for _ in 0..padding.unmatched_mine {
            l.push((group::encode(&group::random_point()?), vec![false; groups]));
        }
        l.shuffle(&mut rng());
        let items: Vec<Vec<u8>> = l
            .par_iter()
            .enumerate()
            .map(|(i, (p, tags))| -> Result<Vec<u8>, PsiError> {
                let mut out = Vec::with_capacity(tag_size(groups, cap));
                out.extend_from_slice(p);
                if groups == 1 {
                    // Untagged: see `tag_size`.
                    return Ok(out);
                }
                let mut total = Ciphertext::zero();
                let mut randomness = Scalar::ZERO;
                for (g, t) in tags.iter().enumerate() {
                    let (ct, proof, r) =
                        pk.encrypt_bit_keeping(*t, &context(&session, 0, M2, i * groups + g)?)?;
                    out.extend_from_slice(&ct);
                    out.extend_from_slice(&proof);
                    total = total.add(&Ciphertext::decode(&ct)?);
                    randomness += r;
                }
                if let Some(c) = cap {
                    let m = tags.iter().filter(|t| **t).count();
                    out.extend_from_slice(&pk.prove_small(
                        &total,
                        &randomness,
                        m,
                        c + 1,
                        &context(&session, 0, CAP, i)?,
                    )?);
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()?;
        let mut w = Writer::new(M2, &session);
        write_share(&mut w, &share, &session, 0, M2)?;
        w.u32(groups);
        w.u32(s.len());
        for p in &s {
            w.bytes(p);
        }
        w.bytes(&group::encode(&(RISTRETTO_BASEPOINT_TABLE * beta.scalar())));
        w.u32(items.len());
        for i in &items {
            w.bytes(i);
        }
        Ok((
            Grouper {
                session,
                share,
                theirs,
                original,
                passing: None,
                zero_tests,
                step: 2,
            },
            w.0,
        ))
    }

    /// Step 4 (no differential privacy): opens each of the matcher's zero
    /// tests (checking its partial decryption's proof); a group passes when
    /// none of its `k` tests (this node's own k, which the message must
    /// use) opens to zero. For each passing group, a proof per test that it
    /// is not zero, which reveals nothing else of the count.
    pub fn passes(&mut self, msg: &[u8], k: u64) -> Result<Vec<u8>, PsiError> {
        if self.step != 2 || !self.zero_tests {
            return Err(PsiError::Malformed("a step out of order, or run twice"));
        }
        self.step = 4;
        let (mut r, _) = Reader::open(msg, M3, Some(&self.session))?;
        let groups = r.u32()?;
        let tests = r.u32()?;
        if tests as u64 != k || k == 0 || groups != self.original.len() {
            return Err(PsiError::Malformed(
                "message 3 tests another k or other groups than this node's",
            ));
        }
        let each = CIPHERTEXT_LEN + POINT_LEN + PROOF_LEN;
        let body = r.take(groups * tests * each)?;
        r.end()?;
        let mut w = Writer::new(M4, &self.session);
        let passing = open_zero_tests(
            &mut w,
            body,
            tests,
            &self.share,
            &self.theirs,
            (&self.session, 1, M3),
            (0, M4),
        )?;
        self.passing = Some(passing.into_iter().collect());
        Ok(w.0)
    }

    /// The last step: the released groups' counts, each partial decryption
    /// checked and opened with this node's share; without differential
    /// privacy only groups that passed step 4 may be released, each once;
    /// a count beyond [`elgamal::MAX_PLAINTEXT`] either way is not
    /// released. Returns the groups by the caller's index (counts as `i64`
    /// bits: noisy ones may be negative); an empty group is never reported.
    pub fn finish(&mut self, msg: &[u8]) -> Result<Vec<GroupResult>, PsiError> {
        match (self.step, self.zero_tests) {
            (4, true) | (2, false) => self.step = 5,
            _ => return Err(PsiError::Malformed("a step out of order, or run twice")),
        }
        let (mut r, _) = Reader::open(msg, M5, Some(&self.session))?;
        let n = r.u32()?;
        if n > self.original.len() || (!self.zero_tests && n != self.original.len()) {
            return Err(PsiError::Malformed(
                "the release holds other groups than were tagged",
            ));
        }
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let g = r.u32()?;
            let allowed = self.passing.as_ref().is_none_or(|p| p.contains(&g));
            if g >= self.original.len() || !seen.insert(g) || !allowed {
                return Err(PsiError::Malformed(
                    "a released group that did not pass the zero tests, or twice",
                ));
            }
            let c = Ciphertext::decode(r.take(CIPHERTEXT_LEN)?)?;
            let d = group::decode(r.take(POINT_LEN)?)?;
            let proof = r.take(PROOF_LEN)?;
            elgamal::verify_partial(
                &self.theirs,
                &c,
                &d,
                proof,
                &context(&self.session, 1, M5, g)?,
            )?;
            let count = elgamal::dlog_signed(&self.share.complete(&c, &d), elgamal::MAX_PLAINTEXT);
            if let (Some(count), Some(original)) = (count, self.original[g]) {
                out.push(GroupResult {
                    group: original,
                    count: count as u64,
                    sums: Vec::new(),
                });
            }
        }
        r.end()?;
        Ok(out)
    }
}
