//! The protocol by the asker's groups against a plaintext oracle, with
//! generated data and padding, and with a modified grouper (the asker's
//! node) that speaks its message format.

use std::collections::{BTreeMap, HashSet};

use airlock_psi::protocol::new_session;
use airlock_psi::tagged::{Grouper, Matcher, Padding};
use airlock_psi::{hash_all, GroupResult, Suite};
use curve25519_dalek::ristretto::RistrettoPoint;
use rand::{Rng, SeedableRng};

/// The matcher's people and the grouper's people with their groups.
struct Data {
    matcher: Vec<String>,
    grouper: Vec<(String, Vec<u32>)>,
    groups: usize,
}

fn data(seed: u64, max_groups: usize) -> Data {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let groups = r.gen_range(1..6);
    let n = r.gen_range(50..300);
    let matcher = (0..n)
        .filter(|_| r.gen_bool(0.7))
        .map(|i| format!("p{i}@x"))
        .collect();
    let keep: Vec<bool> = (0..n).map(|_| r.gen_bool(0.7)).collect();
    let mut grouper = Vec::new();
    for i in (0..n).filter(|i| keep[*i]) {
        let mut gs: Vec<u32> = (0..groups as u32).filter(|_| r.gen_bool(0.4)).collect();
        gs.truncate(max_groups);
        grouper.push((format!("p{i}@x"), gs));
    }
    Data {
        matcher,
        grouper,
        groups,
    }
}

fn oracle(d: &Data, k: u64) -> Vec<GroupResult> {
    let theirs: HashSet<&str> = d.matcher.iter().map(String::as_str).collect();
    let mut per: BTreeMap<u32, u64> = BTreeMap::new();
    for (p, gs) in &d.grouper {
        if theirs.contains(p.as_str()) {
            for g in gs {
                *per.entry(*g).or_default() += 1;
            }
        }
    }
    per.into_iter()
        .filter(|(_, c)| *c >= k)
        .map(|(g, c)| GroupResult {
            group: g,
            count: c,
            sums: Vec::new(),
        })
        .collect()
}

#[allow(clippy::type_complexity)]
fn hashed(d: &Data) -> (Vec<RistrettoPoint>, Vec<(RistrettoPoint, Vec<u32>)>) {
    let s = Suite::new("collab-1", [9u8; 32]);
    let ids: Vec<&[u8]> = d.matcher.iter().map(|p| p.as_bytes()).collect();
    let m = hash_all(&s, &ids);
    let ids: Vec<&[u8]> = d.grouper.iter().map(|(p, _)| p.as_bytes()).collect();
    let g = hash_all(&s, &ids)
        .into_iter()
        .zip(d.grouper.iter().map(|(_, g)| g.clone()))
        .collect();
    (m, g)
}

fn sorted(mut v: Vec<GroupResult>) -> Vec<GroupResult> {
    v.sort_by_key(|g| g.group);
    v
}

/// Generated data, k and padding: the grouper opens exactly the plaintext
/// oracle, and the matcher's count of matched items is the overlap.
#[test]
fn releases_exactly_what_the_oracle_says_on_generated_data() {
    for seed in 0..10u64 {
        let d = data(seed, 99);
        let mut r = rand::rngs::StdRng::seed_from_u64(seed + 50);
        let k = r.gen_range(1..25);
        let padding = Padding {
            unmatched_mine: r.gen_range(0..30),
            groups: r.gen_range(0..4),
        };
        let (m, g) = hashed(&d);
        let (mut matcher, m1) =
            Matcher::start(new_session().expect("s"), &m, r.gen_range(0..30)).expect("1");
        let (mut grouper, m2) =
            Grouper::respond(&m1, &g, d.groups, None, padding, true).expect("2");
        let (m3, matched) = matcher
            .match_and_count(&m2, k, None, None, None)
            .expect("3");
        let m4 = grouper.passes(&m3, k).expect("4");
        let (m5, passed) = matcher.release_passing(&m4).expect("5");
        let got = sorted(grouper.finish(&m5).expect("result"));
        let want = oracle(&d, k);
        assert_eq!(got, want, "seed {seed}, k {k}");
        // The matcher learns which groups passed: the released ones and
        // no empty group.
        assert_eq!(passed.len(), want.len(), "seed {seed}");
        // With one group (untagged) a person in no group is sent as a
        // random point and does not match.
        let untagged = d.groups + padding.groups as usize == 1;
        let theirs: HashSet<&str> = d.matcher.iter().map(String::as_str).collect();
        let overlap = d
            .grouper
            .iter()
            .filter(|(p, gs)| theirs.contains(p.as_str()) && !(untagged && gs.is_empty()))
            .count();
        assert_eq!(matched, overlap, "seed {seed}");
    }
}

/// One group (a query grouped by nothing, or one public key under DP):
/// the items of L carry no tag, the matcher counts its matches, and a
/// person of the grouper in no group (under DP, one whose value is not
/// the public key) counts nowhere; with or without noise the grouper
/// opens exactly the oracle's count.
#[test]
fn one_group_is_untagged_and_counts_only_its_members() {
    for seed in 0..6u64 {
        let mut d = data(seed, 1);
        d.groups = 1;
        for (i, (_, gs)) in d.grouper.iter_mut().enumerate() {
            *gs = if i % 3 == 0 { vec![] } else { vec![0] };
        }
        let (m, g) = hashed(&d);
        let exact = oracle(&d, 0).first().map_or(0, |e| e.count as i64);
        // Without DP: k zero tests.
        let (mut matcher, m1) = Matcher::start(new_session().expect("s"), &m, 3).expect("1");
        let (mut grouper, m2) =
            Grouper::respond(&m1, &g, 1, None, Padding::default(), true).expect("2");
        // L is points alone.
        let (_, _, l) = lists_of_m2(&m2);
        assert_eq!(u32_at(&m2, l - 4), g.len());
        assert_eq!(m2.len(), l + 32 * g.len());
        let k = 2;
        let (m3, matched) = matcher
            .match_and_count(&m2, k, None, None, None)
            .expect("3");
        assert_eq!(matched as i64, exact, "seed {seed}");
        let m4 = grouper.passes(&m3, k).expect("4");
        let (m5, _) = matcher.release_passing(&m4).expect("5");
        let got = grouper.finish(&m5).expect("result");
        assert_eq!(got, oracle(&d, k), "seed {seed}");
        // With DP: the count plus the matcher's noise.
        let (mut matcher, m1) = Matcher::start(new_session().expect("s"), &m, 3).expect("1");
        let (mut grouper, m2) =
            Grouper::respond(&m1, &g, 1, Some(1), Padding::default(), false).expect("2");
        let noise = || Ok(17);
        let (m5, _) = matcher
            .match_and_count(&m2, 0, Some(1), Some(1), Some(&noise))
            .expect("3");
        let got = grouper.finish(&m5).expect("result");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].count as i64, exact + 17, "seed {seed}");
    }
}

/// Under differential privacy every group (empty ones too) is released
/// with the matcher's noise: the grouper opens exactly count + noise; tags
/// are proved to add up to at most c per person.
#[test]
fn under_dp_every_group_opens_to_its_count_plus_the_matchers_noise() {
    let d = data(4, 2);
    let (m, g) = hashed(&d);
    let (mut matcher, m1) = Matcher::start(new_session().expect("s"), &m, 5).expect("1");
    let (mut grouper, m2) =
        Grouper::respond(&m1, &g, d.groups, Some(2), Padding::default(), false).expect("2");
    let noise = || Ok(-41);
    let (m5, _) = matcher
        .match_and_count(&m2, 0, Some(2), Some(d.groups), Some(&noise))
        .expect("3");
    let got = sorted(grouper.finish(&m5).expect("result"));
    assert_eq!(got.len(), d.groups);
    let exact = oracle(&d, 0);
    for g in &got {
        let c = exact
            .iter()
            .find(|e| e.group == g.group)
            .map_or(0, |e| e.count as i64);
        assert_eq!(g.count as i64, c - 41);
    }
}

fn u32_at(m: &[u8], at: usize) -> usize {
    u32::from_le_bytes(m[at..at + 4].try_into().expect("u32")) as usize
}

/// Where message 2's parts start: (S after its u32 length, B = β·G, L
/// after its u32 length), after the header 29, share 96 and u32 groups.
fn lists_of_m2(m2: &[u8]) -> (usize, usize, usize) {
    let s = 29 + 96 + 4 + 4;
    let b = s + 32 * u32_at(m2, s - 4);
    (s, b, b + 32 + 4)
}

/// Item `i`'s tag for group `g` in message 2 (`groups` groups, no cap).
fn tag_at(m2: &[u8], groups: usize, i: usize, g: usize) -> usize {
    lists_of_m2(m2).2 + i * (32 + groups * 288) + 32 + g * 288
}

/// A modified grouper (the asker's node): a tag of 2 (its own encryption
/// of another value, or a valid tag doubled), a tag moved to another
/// item, a person in more groups than the rule allows, a group claimed to
/// pass k whose test opened to zero, or a release opened twice: each is
/// refused, before anything is summed or released.
#[test]
fn the_matcher_refuses_what_a_modified_grouper_sends() {
    let d = data(9, 99);
    let (m, g) = hashed(&d);
    let fresh = |cap: Option<usize>| {
        let (matcher, m1) = Matcher::start(new_session().expect("s"), &m, 0).expect("1");
        let (grouper, m2) =
            Grouper::respond(&m1, &g, d.groups, cap, Padding::default(), true).expect("2");
        (matcher, grouper, m2)
    };
    // A tag's ciphertext replaced by the sum of two valid tags (a person
    // counted twice in a group), or swapped with another item's.
    let (mut matcher, _, m2) = fresh(None);
    let a = tag_at(&m2, d.groups, 0, 0);
    let b = tag_at(&m2, d.groups, 1, 0);
    let mut moved = m2.clone();
    moved[a..a + 64].copy_from_slice(&m2[b..b + 64]);
    assert!(matcher
        .match_and_count(&moved, 2, None, None, None)
        .is_err());
    let (mut matcher, _, m2) = fresh(None);
    let mut bit = m2.clone();
    bit[a + 100] ^= 1;
    assert!(matcher.match_and_count(&bit, 2, None, None, None).is_err());
    // A grouper that tags more groups per person than the matcher's rule
    // allows (it made its proofs without a cap, or with a larger one).
    let (mut matcher, _, m2) = fresh(Some(99));
    assert!(matcher
        .match_and_count(&m2, 2, Some(1), None, None)
        .is_err());
    // With a cap the honest grouper refuses a person in too many groups.
    if d.grouper.iter().any(|(_, gs)| gs.len() > 1) && d.groups > 1 {
        let (_, m1) = Matcher::start(new_session().expect("s"), &m, 0).expect("1");
        assert!(Grouper::respond(&m1, &g, d.groups, Some(1), Padding::default(), true).is_err());
    }
    // A group below k claimed to pass: its proofs cannot be made; a
    // grouper that copies another group's proofs is refused.
    let k = 10_000;
    let (mut matcher, mut grouper, m2) = fresh(None);
    let (m3, _) = matcher
        .match_and_count(&m2, k, None, None, None)
        .expect("3");
    let m4 = grouper.passes(&m3, k).expect("4");
    assert_eq!(u32::from_le_bytes(m4[29..33].try_into().expect("n")), 0);
    let mut forged = m4[..29].to_vec();
    forged.extend_from_slice(&1u32.to_le_bytes());
    forged.extend_from_slice(&0u32.to_le_bytes());
    forged.extend(std::iter::repeat_n(7u8, 128 * k as usize));
    assert!(matcher.release_passing(&forged).is_err());
    // The matcher's release steps run once.
    assert!(matcher.release_passing(&m4).is_err());
}

/// A modified grouper that does not return exactly message 1 re-blinded
/// with the β of its B: the attack the check points stop is copying items
/// of message 1 under another scalar γ (with `γ·H(t)` in L, a target t
/// counts twice). S must hold exactly as many items as message 1, so each
/// copy drops an item; dropping half the list drops some of the hidden
/// check points (all but certainly: each item is one with probability
/// 1/9), and the matcher refuses before it matches. So it does for extra
/// items, a B of another scalar, or S re-blinded under another.
#[test]
fn the_matcher_refuses_a_grouper_that_copies_or_drops_its_items() {
    use curve25519_dalek::ristretto::CompressedRistretto;
    use curve25519_dalek::scalar::Scalar;
    let mut d = data(11, 99);
    d.matcher = (0..1000).map(|i| format!("p{i}@x")).collect();
    let (m, g) = hashed(&d);
    let fresh = || {
        let (matcher, m1) = Matcher::start(new_session().expect("s"), &m, 0).expect("1");
        let (_, m2) =
            Grouper::respond(&m1, &g, d.groups, None, Padding::default(), true).expect("2");
        (matcher, m2)
    };
    let times = |bytes: &[u8], k: &Scalar| -> [u8; 32] {
        let p = CompressedRistretto::from_slice(bytes)
            .expect("32")
            .decompress()
            .expect("point");
        (p * k).compress().to_bytes()
    };
    let gamma = Scalar::from(7u64);
    // The honest message passes.
    let (mut matcher, m2) = fresh();
    assert!(matcher.match_and_count(&m2, 2, None, None, None).is_ok());
    // Half of S replaced by copies of the other half under γ.
    let (mut matcher, m2) = fresh();
    let (s, _, _) = lists_of_m2(&m2);
    let n = u32_at(&m2, s - 4);
    assert!(n > 200, "a list long enough to hold checks in both halves");
    let mut copied = m2.clone();
    for i in 0..n / 2 {
        let from = s + 32 * (n / 2 + i);
        let c = times(&m2[from..from + 32], &gamma);
        copied[s + 32 * i..s + 32 * (i + 1)].copy_from_slice(&c);
    }
    let err = matcher
        .match_and_count(&copied, 2, None, None, None)
        .expect_err("copies refused");
    assert!(err.to_string().contains("does not return"), "{err}");
    // S under another scalar (every item γ·β·x), B not.
    let (mut matcher, m2) = fresh();
    let mut other = m2.clone();
    for i in 0..n {
        let at = s + 32 * i;
        let c = times(&m2[at..at + 32], &gamma);
        other[at..at + 32].copy_from_slice(&c);
    }
    assert!(matcher
        .match_and_count(&other, 2, None, None, None)
        .is_err());
    // B of another scalar.
    let (mut matcher, m2) = fresh();
    let (_, b, _) = lists_of_m2(&m2);
    let mut other = m2.clone();
    let c = times(&m2[b..b + 32], &gamma);
    other[b..b + 32].copy_from_slice(&c);
    assert!(matcher
        .match_and_count(&other, 2, None, None, None)
        .is_err());
    // One more item in S than message 1 sent (the count field and a copy).
    let (mut matcher, m2) = fresh();
    let mut longer = m2[..s - 4].to_vec();
    longer.extend_from_slice(&((n + 1) as u32).to_le_bytes());
    longer.extend_from_slice(&m2[s..s + 32 * n]);
    longer.extend_from_slice(&times(&m2[s..s + 32], &gamma));
    longer.extend_from_slice(&m2[s + 32 * n..]);
    let err = matcher
        .match_and_count(&longer, 2, None, None, None)
        .expect_err("an extra item refused");
    assert!(err.to_string().contains("number of items"), "{err}");
}

/// No 32-byte value of one session's messages appears in another's: the
/// blinding scalars and key shares are fresh.
#[test]
fn two_sessions_share_no_value() {
    let d = data(2, 99);
    let (m, g) = hashed(&d);
    let chunks = || {
        let (_, m1) = Matcher::start(new_session().expect("s"), &m, 3).expect("1");
        let (_, m2) =
            Grouper::respond(&m1, &g, d.groups, None, Padding::default(), true).expect("2");
        [m1, m2]
            .iter()
            .flat_map(|x| x[29..].chunks(32).map(<[u8]>::to_vec).collect::<Vec<_>>())
            .filter(|c| c.len() == 32 && c.iter().filter(|b| **b == 0).count() < 8)
            .collect::<HashSet<_>>()
    };
    let (a, b) = (chunks(), chunks());
    assert!(a.len() > 100);
    assert!(a.is_disjoint(&b));
}
