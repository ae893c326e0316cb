//! The protocol by the responder's groups against a plaintext oracle, with
//! generated data and padding, and with modified parties that speak its
//! message format.

use std::collections::{BTreeMap, HashMap, HashSet};

use airlock_psi::grouped::{Grouper as Responder, Matcher as Asker, Padding};
use airlock_psi::protocol::new_session;
use airlock_psi::{hash_all, GroupResult, PsiError, Suite};
use curve25519_dalek::ristretto::RistrettoPoint;
use rand::{Rng, SeedableRng};

fn suite() -> Suite {
    Suite::new("collab-1", [9u8; 32])
}

/// Generated data: the asker's people (with a value each), the
/// responder's people with their groups (a person may be in several or
/// none), for a seed.
struct Data {
    asker: Vec<(String, u64)>,
    responder: Vec<(String, Vec<u32>)>,
    groups: usize,
}

fn data(seed: u64) -> Data {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let groups = r.gen_range(1..6);
    let n = r.gen_range(50..400);
    let keep_a: Vec<bool> = (0..n).map(|_| r.gen_bool(0.7)).collect();
    let keep_r: Vec<bool> = (0..n).map(|_| r.gen_bool(0.7)).collect();
    let asker = (0..n)
        .filter(|i| keep_a[*i])
        .map(|i| {
            let v = match r.gen_range(0..4) {
                0 => 0,
                1 => r.gen_range(0..1_000_000),
                2 => (1u64 << 32) + r.gen_range(0..1000),
                _ => r.gen_range(0..100),
            };
            (format!("p{i}@x"), v)
        })
        .collect();
    let responder = (0..n)
        .filter(|i| keep_r[*i])
        .map(|i| {
            let mut gs: Vec<u32> = (0..groups as u32).filter(|_| r.gen_bool(0.4)).collect();
            gs.dedup();
            (format!("p{i}@x"), gs)
        })
        .collect();
    Data {
        asker,
        responder,
        groups,
    }
}

fn oracle(d: &Data, k: u64) -> Vec<GroupResult> {
    let values: HashMap<&str, u64> = d.asker.iter().map(|(p, v)| (p.as_str(), *v)).collect();
    let mut per: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for (p, gs) in &d.responder {
        if let Some(v) = values.get(p.as_str()) {
            for g in gs {
                let e = per.entry(*g).or_default();
                e.0 += 1;
                e.1 += v;
            }
        }
    }
    per.into_iter()
        .filter(|(_, (c, _))| *c >= k)
        .map(|(g, (c, s))| GroupResult {
            group: g,
            count: c,
            sums: vec![s],
        })
        .collect()
}

#[allow(clippy::type_complexity)]
fn hashed(
    d: &Data,
) -> (
    Vec<(RistrettoPoint, Vec<u64>)>,
    Vec<(RistrettoPoint, Vec<u32>)>,
) {
    let s = suite();
    let ids: Vec<&[u8]> = d.asker.iter().map(|(p, _)| p.as_bytes()).collect();
    let a = hash_all(&s, &ids)
        .into_iter()
        .zip(d.asker.iter().map(|(_, v)| vec![*v]))
        .collect();
    let ids: Vec<&[u8]> = d.responder.iter().map(|(p, _)| p.as_bytes()).collect();
    let r = hash_all(&s, &ids)
        .into_iter()
        .zip(d.responder.iter().map(|(_, g)| g.clone()))
        .collect();
    (a, r)
}

fn sorted(mut v: Vec<GroupResult>) -> Vec<GroupResult> {
    v.sort_by_key(|g| g.group);
    v
}

/// Steps 1 to 3, with padding.
fn up_to_tally(
    d: &Data,
    dummies: u64,
    padding: Padding,
    zero_tests: bool,
) -> (Asker, Responder, Vec<Vec<u8>>, usize) {
    let (a, r) = hashed(d);
    let (mut asker, m1, _) =
        Asker::start(new_session().expect("session"), &a, 1, dummies, zero_tests).expect("step 1");
    let (mut responder, m2, _) = Responder::respond(&m1, &r, d.groups, 1, padding).expect("step 2");
    let (m3, matched, _) = asker.match_items(&m2).expect("step 3");
    responder.tally(&m3).expect("tally");
    (asker, responder, vec![m1, m2, m3], matched)
}

fn run(d: &Data, k: u64, dummies: u64, padding: Padding) -> (Vec<GroupResult>, usize, Vec<u32>) {
    let (mut asker, mut responder, _, matched) = up_to_tally(d, dummies, padding, true);
    let m4 = responder.zero_tests(k).expect("step 4");
    let m5 = asker.passes(&m4, k).expect("step 5");
    let (m6, passed) = responder.release_passing(&m5).expect("step 6");
    let original: HashMap<u32, u32> = passed.iter().copied().collect();
    let got = asker
        .finish(&m6)
        .expect("results")
        .into_iter()
        .map(|mut g| {
            g.group = original[&g.group];
            g
        })
        .collect();
    (got, matched, passed.into_iter().map(|(_, o)| o).collect())
}

/// Generated data (groups, people in several groups or none, values from
/// 0 to past 2^32), generated k and padding: exactly the plaintext oracle;
/// the groups the responder learns passed are exactly the released ones;
/// the matches the asker sees are the overlap plus the matching dummies.
#[test]
fn releases_exactly_what_the_oracle_says_on_generated_data() {
    for seed in 0..12u64 {
        let d = data(seed);
        let mut r = rand::rngs::StdRng::seed_from_u64(seed + 100);
        let k = r.gen_range(1..30);
        let padding = Padding {
            matched: r.gen_range(0..40),
            unmatched_mine: r.gen_range(0..40),
            unmatched_theirs: r.gen_range(0..40),
            groups: r.gen_range(0..4),
        };
        let (got, matched, passed) = run(&d, k, r.gen_range(0..40), padding);
        let want = oracle(&d, k);
        assert_eq!(sorted(got), want, "seed {seed}, k {k}");
        let want_groups: Vec<u32> = want.iter().map(|g| g.group).collect();
        let mut passed = passed;
        passed.sort();
        assert_eq!(passed, want_groups, "seed {seed}");
        let theirs: HashSet<&str> = d.responder.iter().map(|(p, _)| p.as_str()).collect();
        let overlap = d
            .asker
            .iter()
            .filter(|(p, _)| theirs.contains(p.as_str()))
            .count();
        assert_eq!(matched, overlap + padding.matched as usize, "seed {seed}");
    }
}

/// Under differential privacy every real group is released with the noise
/// the release policy gives, added under encryption: opened exactly.
#[test]
fn release_all_opens_the_noisy_values_exactly() {
    let d = data(7);
    let (mut asker, mut responder, _, _) = up_to_tally(&d, 5, Padding::default(), false);
    let noise = |g: u32| Ok(vec![-(g as i64) * 7 - 3, 1_000 * g as i64 - 50_000]);
    let (m6, pairs) = responder.release_all(&noise).expect("release");
    let original: HashMap<u32, u32> = pairs.iter().copied().collect();
    let got = sorted(
        asker
            .finish(&m6)
            .expect("results")
            .into_iter()
            .map(|mut g| {
                g.group = original[&g.group];
                g
            })
            .collect(),
    );
    assert_eq!(got.len(), d.groups);
    let exact = oracle(&d, 0);
    for g in &got {
        let (c, s) = exact
            .iter()
            .find(|e| e.group == g.group)
            .map_or((0, 0), |e| (e.count as i64, e.sums[0] as i64));
        let n = noise(g.group).expect("noise");
        assert_eq!(g.count as i64, c + n[0]);
        assert_eq!(g.sums[0] as i64, s + n[1]);
    }
}

/// The transcript: no message holds an identifier's hash, and two sessions
/// of the same data share no point.
#[test]
fn no_message_holds_a_hash_and_sessions_share_nothing() {
    let d = data(3);
    let (a, _) = hashed(&d);
    let (_, _, t1, _) = up_to_tally(&d, 3, Padding::default(), true);
    let (_, _, t2, _) = up_to_tally(&d, 3, Padding::default(), true);
    let hashes: Vec<[u8; 32]> = a.iter().map(|(p, _)| p.compress().to_bytes()).collect();
    let chunks = |t: &[Vec<u8>]| -> HashSet<Vec<u8>> {
        t.iter()
            .flat_map(|m| m.windows(32).map(<[u8]>::to_vec).collect::<Vec<_>>())
            .collect()
    };
    let c1 = chunks(&t1);
    for h in &hashes {
        assert!(!c1.contains(h.as_slice()), "a hash in the transcript");
    }
    let c2 = chunks(&t2);
    let shared = t1[1]
        .chunks(32)
        .skip(2)
        .filter(|c| c.len() == 32 && c2.contains(*c))
        .count();
    assert_eq!(shared, 0, "two sessions share points");
}

/// 60 people on both sides; group 0 has everyone, group 1 only three.
fn one_small_group() -> Data {
    Data {
        asker: (0..60).map(|i| (format!("p{i}@x"), i)).collect(),
        responder: (0..60)
            .map(|i| (format!("p{i}@x"), if i < 3 { vec![0, 1] } else { vec![0] }))
            .collect(),
        groups: 2,
    }
}

/// The index of the first group message 5 says passed (after the 29-byte
/// header and the count).
fn first_passing(m5: &[u8]) -> u32 {
    u32::from_le_bytes(m5[33..37].try_into().expect("4"))
}

/// A modified asker that claims a group below k passed (with proofs made
/// for another group, or replayed from a passing group) is refused.
#[test]
fn an_asker_cannot_pass_a_group_below_k() {
    let d = one_small_group();
    let k = 10;
    let (mut asker, mut responder, _, _) = up_to_tally(&d, 0, Padding::default(), true);
    let m4 = responder.zero_tests(k).expect("step 4");
    let m5 = asker.passes(&m4, k).expect("step 5");
    // m5: header 29, u32 count, then (u32 group, k proofs) per group.
    let head = 12 + 1 + 16;
    assert_eq!(
        u32::from_le_bytes(m5[head..head + 4].try_into().expect("4")),
        1
    );
    // Replay the passing group's proofs as the other group's.
    let passing = first_passing(&m5);
    let mut forged = m5.clone();
    forged[head + 4..head + 8].copy_from_slice(&(1 - passing).to_le_bytes());
    assert!(matches!(
        responder.release_passing(&forged),
        Err(PsiError::Malformed(_))
    ));
    // The state moved on: even the honest message is refused now.
    assert!(responder.release_passing(&m5).is_err());
    // A fresh session: claiming both groups with group 0's proofs twice.
    let (mut asker, mut responder, _, _) = up_to_tally(&d, 0, Padding::default(), true);
    let m4 = responder.zero_tests(k).expect("step 4");
    let m5 = asker.passes(&m4, k).expect("step 5");
    let passing = first_passing(&m5);
    let mut both = m5[..head].to_vec();
    both.extend_from_slice(&2u32.to_le_bytes());
    both.extend_from_slice(&m5[head + 4..]);
    let mut second = m5[head + 4..].to_vec();
    second[..4].copy_from_slice(&(1 - passing).to_le_bytes());
    both.extend_from_slice(&second);
    assert!(responder.release_passing(&both).is_err());
}

/// A modified responder that releases a group that did not pass, or tests
/// another k than the asker's rules say, or answers step 3 with fewer
/// items than the asker sent, is refused by the asker.
#[test]
fn an_asker_refuses_what_a_modified_responder_sends() {
    let d = one_small_group();
    let k = 10;
    // Releasing everything after the zero tests: group 1 did not pass.
    let (mut asker, mut responder, _, _) = up_to_tally(&d, 0, Padding::default(), true);
    let m4 = responder.zero_tests(k).expect("step 4");
    let m5 = asker.passes(&m4, k).expect("step 5");
    let passing = first_passing(&m5);
    // A release of the group that failed (checked before anything else of
    // the message).
    let mut cheat = m4[..29].to_vec();
    cheat[12] = 16;
    cheat.extend_from_slice(&1u32.to_le_bytes());
    cheat.extend_from_slice(&(1 - passing).to_le_bytes());
    cheat.extend_from_slice(&[1u8; 1 + 2 * (64 + 32 + 64)]);
    assert!(matches!(
        asker.finish(&cheat),
        Err(PsiError::Malformed(m)) if m.contains("did not pass")
    ));
    // A release right after step 3, skipping the zero tests (as under DP):
    // refused by an asker whose rules have no DP.
    let (mut asker, mut responder, _, _) = up_to_tally(&d, 0, Padding::default(), true);
    let (m6, _) = responder.release_all(&|_| Ok(vec![0, 0])).expect("release");
    assert!(matches!(
        asker.finish(&m6),
        Err(PsiError::Malformed(m)) if m.contains("out of order")
    ));
    // Zero tests for a smaller k than the asker's rules.
    let (mut asker, mut responder, _, _) = up_to_tally(&d, 0, Padding::default(), true);
    let m4 = responder.zero_tests(3).expect("step 4");
    assert!(matches!(asker.passes(&m4, k), Err(PsiError::Malformed(_))));
    // Message 2 dropping one of the asker's items.
    let (a, r) = hashed(&d);
    let (mut asker, m1, _) = Asker::start(new_session().expect("s"), &a, 1, 0, true).expect("1");
    let head = 12 + 1 + 16 + 32 + 64 + 32 + 1;
    let item = 32 + 64;
    let mut short = m1[..head].to_vec();
    short.extend_from_slice(&((a.len() - 1) as u32).to_le_bytes());
    short.extend_from_slice(&m1[head + 4 + item..]);
    let (_, m2, _) = Responder::respond(&short, &r, 2, 1, Padding::default()).expect("2");
    assert!(matches!(
        asker.match_items(&m2),
        Err(PsiError::Malformed(_))
    ));
}

/// A modified asker that sends a person twice, other values than the
/// query needs, or runs a step twice, is refused.
#[test]
fn a_responder_refuses_what_a_modified_asker_sends() {
    let d = data(1);
    let (mut a, r) = hashed(&d);
    a.push(a[0].clone());
    let (_, m1, _) = Asker::start(new_session().expect("s"), &a, 1, 0, true).expect("1");
    assert!(Responder::respond(&m1, &r, d.groups, 1, Padding::default()).is_err());
    let (a, _) = hashed(&d);
    let (_, m1, _) = Asker::start(new_session().expect("s"), &a, 1, 0, true).expect("1");
    assert!(Responder::respond(&m1, &r, d.groups, 0, Padding::default()).is_err());
    let (mut asker, mut responder, t, _) = up_to_tally(&d, 0, Padding::default(), true);
    assert!(responder.tally(&t[2]).is_err(), "tally twice");
    assert!(asker.match_items(&t[1]).is_err(), "step 3 twice");
}

/// Steps 1 to 3 of a fresh session on `d`: the responder before its tally
/// and message 3.
fn up_to_step_3(d: &Data) -> (Responder, Vec<u8>) {
    let (a, r) = hashed(d);
    let (mut asker, m1, _) = Asker::start(new_session().expect("s"), &a, 1, 0, true).expect("1");
    let (responder, m2, _) =
        Responder::respond(&m1, &r, d.groups, 1, Padding::default()).expect("2");
    let (m3, _, _) = asker.match_items(&m2).expect("3");
    (responder, m3)
}

/// Where item `i` of message 3 starts (header 29, u8 values, u32 items,
/// then per item the count, its proof and one value).
fn m3_item(i: usize) -> usize {
    use airlock_psi::elgamal::{BIT_PROOF_LEN, CIPHERTEXT_LEN};
    29 + 1 + 4 + i * (CIPHERTEXT_LEN + BIT_PROOF_LEN + CIPHERTEXT_LEN)
}

/// A modified asker that makes an item of message 3 count other than 0 or
/// 1 (to weight a person it targets and read the person's groups off the
/// released counts, or to defeat the count's sensitivity under DP) is
/// refused by the responder before it sums anything: weighted with `k` or
/// a power of two, negated, scaled, doubled, re-used at another position,
/// or with any byte of its count or proof changed, at generated items.
#[test]
fn a_responder_refuses_a_count_that_is_not_zero_or_one() {
    use airlock_psi::elgamal::{Ciphertext, BIT_PROOF_LEN, CIPHERTEXT_LEN};
    use curve25519_dalek::scalar::Scalar;
    let d = one_small_group();
    let honest = || up_to_step_3(&d);
    let at = m3_item;
    type Forge = Box<dyn Fn(&mut Vec<u8>)>;
    let count = move |f: fn(&Ciphertext) -> Ciphertext, i: usize| -> Forge {
        Box::new(move |m: &mut Vec<u8>| {
            let c = Ciphertext::decode(&m[at(i)..at(i) + CIPHERTEXT_LEN]).expect("ct");
            m[at(i)..at(i) + CIPHERTEXT_LEN].copy_from_slice(&f(&c).encode());
        })
    };
    let items = d.responder.len();
    let mut gen = rand::rngs::StdRng::seed_from_u64(12);
    let mut tries: Vec<(String, bool, Forge)> = Vec::new();
    for _ in 0..6 {
        let i = gen.gen_range(0..items);
        tries.push((format!("k at {i}"), true, count(|c| c.plus(9), i)));
        tries.push((format!("2^20 at {i}"), true, count(|c| c.plus(1 << 20), i)));
        tries.push((format!("minus one at {i}"), true, count(|c| c.plus(-1), i)));
        tries.push((
            format!("negated at {i}"),
            true,
            count(|c| c.scale(&-Scalar::ONE), i),
        ));
        tries.push((
            format!("scaled at {i}"),
            true,
            count(|c| c.scale(&Scalar::from(7u8)), i),
        ));
        tries.push((format!("doubled at {i}"), true, count(|c| c.add(c), i)));
        let j = (i + 1 + gen.gen_range(0..items - 1)) % items;
        tries.push((
            format!("item {j}'s count and proof at {i}"),
            true,
            Box::new(move |m: &mut Vec<u8>| {
                let from = m[at(j)..at(j) + CIPHERTEXT_LEN + BIT_PROOF_LEN].to_vec();
                m[at(i)..at(i) + from.len()].copy_from_slice(&from);
            }),
        ));
        let byte = gen.gen_range(0..CIPHERTEXT_LEN + BIT_PROOF_LEN);
        let bit = gen.gen_range(0..8);
        // A changed byte may also make a point or scalar invalid.
        tries.push((
            format!("byte {byte} of {i}"),
            false,
            Box::new(move |m: &mut Vec<u8>| m[at(i) + byte] ^= 1 << bit),
        ));
    }
    for (what, proof_fails, forge) in &tries {
        let (mut responder, mut m3) = honest();
        forge(&mut m3);
        match responder.tally(&m3) {
            Err(PsiError::Malformed(m)) => {
                assert!(
                    !proof_fails || m.contains("0 or 1"),
                    "{what}: refused for {m}"
                )
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // The same sessions, unmodified, pass.
    let (mut responder, m3) = honest();
    responder.tally(&m3).expect("honest message 3");
}

/// The proofs of message 3 are checked in batches of 1,024: a forgery in
/// a later batch, in the last (partial) one, or proofs swapped across a
/// batch boundary, are refused as in the first.
#[test]
fn a_forged_count_is_refused_in_every_batch() {
    use airlock_psi::elgamal::{Ciphertext, BIT_PROOF_LEN, CIPHERTEXT_LEN};
    let d = Data {
        asker: (0..900).map(|i| (format!("p{i}@x"), i)).collect(),
        responder: (0..2_600)
            .map(|i| (format!("p{}@x", i * 3), vec![(i % 2) as u32]))
            .collect(),
        groups: 2,
    };
    let honest = || up_to_step_3(&d);
    let at = m3_item;
    let last = d.responder.len() - 1;
    let refused = |what: &str, forge: &dyn Fn(&mut Vec<u8>)| {
        let (mut responder, mut m3) = honest();
        forge(&mut m3);
        match responder.tally(&m3) {
            Err(PsiError::Malformed(m)) => assert!(m.contains("0 or 1"), "{what}: {m}"),
            other => panic!("{what}: {other:?}"),
        }
    };
    for i in [1_024 + 7, 2_047, 2_048, last] {
        refused(&format!("weighted at {i}"), &|m| {
            let c = Ciphertext::decode(&m[at(i)..at(i) + CIPHERTEXT_LEN]).expect("ct");
            m[at(i)..at(i) + CIPHERTEXT_LEN].copy_from_slice(&c.plus(5).encode());
        });
    }
    refused("swapped across batches", &|m| {
        let n = CIPHERTEXT_LEN + BIT_PROOF_LEN;
        let x = m[at(1_023)..at(1_023) + n].to_vec();
        let y = m[at(1_024)..at(1_024) + n].to_vec();
        m[at(1_023)..at(1_023) + n].copy_from_slice(&y);
        m[at(1_024)..at(1_024) + n].copy_from_slice(&x);
    });
    let (mut responder, m3) = honest();
    responder.tally(&m3).expect("honest message 3");
}

/// The key is 2-of-2 and neither share can be chosen against the other: a
/// grouper that sends `Y - X_M` as its share (so that it would hold the
/// whole joint key `Y` and open every count of message 3) cannot prove
/// knowledge of it, nor can a share and proof of another query, or the
/// matcher's own reflected; the matcher's share is checked likewise, and a
/// proof with a non-canonical scalar is refused.
#[test]
fn a_key_share_without_its_proof_is_refused() {
    use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
    use curve25519_dalek::scalar::Scalar;
    let d = data(5);
    let (a, r) = hashed(&d);
    let start = || Asker::start(new_session().expect("s"), &a, 1, 0, true).expect("1");
    let y = RISTRETTO_BASEPOINT_TABLE * &Scalar::from(123_456_789u64);
    let refused = Some(PsiError::Malformed(
        "a key share's proof of knowledge does not verify",
    ));
    let (_, o1, _) = start();
    let (_, o2, _) = Responder::respond(&o1, &r, d.groups, 1, Padding::default()).expect("2");
    for case in ["rogue", "replayed", "reflected"] {
        let (mut asker, m1, _) = start();
        let (_, m2, _) = Responder::respond(&m1, &r, d.groups, 1, Padding::default()).expect("2");
        let mut forged = m2.clone();
        match case {
            "rogue" => {
                let x_m = airlock_psi::group::decode(&m1[29..61]).expect("the matcher's share");
                forged[29..61].copy_from_slice(&airlock_psi::group::encode(&(y - x_m)));
            }
            // The share and proof of another query's message 2.
            "replayed" => forged[29..29 + 96].copy_from_slice(&o2[29..29 + 96]),
            // The matcher's own share and proof sent back as the grouper's.
            _ => forged[29..29 + 96].copy_from_slice(&m1[29..29 + 96]),
        }
        assert_eq!(asker.match_items(&forged).err(), refused, "{case}");
    }
    let (_, m1, _) = start();
    let mut rogue1 = m1.clone();
    rogue1[29..61].copy_from_slice(&airlock_psi::group::encode(&y));
    assert_eq!(
        Responder::respond(&rogue1, &r, d.groups, 1, Padding::default()).err(),
        refused
    );
    let (mut asker, m1, _) = start();
    let (_, m2, _) = Responder::respond(&m1, &r, d.groups, 1, Padding::default()).expect("2");
    let mut noncanonical = m2.clone();
    noncanonical[29 + 64..29 + 96].fill(0xff);
    assert_eq!(
        asker.match_items(&noncanonical).err(),
        Some(PsiError::Malformed("a proof holds a non-canonical scalar"))
    );
}

/// The grouper's noise reaches the matcher exactly, and a value beyond
/// what decryption looks for drops its group only (no abort, which would
/// be one bit about the sum): for noise from a generator (zero, ±1, random
/// of every magnitude up to 2^32 either way), every group opens to its
/// exact count and sum plus the noise.
#[test]
fn noise_added_under_encryption_opens_exactly_and_out_of_range_drops_the_group() {
    use rand::Rng;
    let d = data(11);
    let exact = oracle(&d, 0);
    let mut rng = rand::thread_rng();
    let open = |noise: Vec<i64>| {
        let (mut asker, mut responder, _, _) = up_to_tally(&d, 0, Padding::default(), false);
        let (m6, pairs) = responder
            .release_all(&|_| Ok(noise.clone()))
            .expect("release");
        let original: HashMap<u32, u32> = pairs.iter().copied().collect();
        sorted(
            asker
                .finish(&m6)
                .expect("results")
                .into_iter()
                .map(|mut g| {
                    g.group = original[&g.group];
                    g
                })
                .collect(),
        )
    };
    for round in 0..10 {
        let noise: Vec<i64> = (0..2)
            .map(|_| match round {
                0 => 0,
                1 => 1,
                2 => -1,
                _ => {
                    let bits = rng.gen_range(0..=32);
                    let v = rng.gen_range(0..=(1i64 << bits));
                    if rng.gen_bool(0.5) {
                        -v
                    } else {
                        v
                    }
                }
            })
            .collect();
        let got = open(noise.clone());
        assert_eq!(got.len(), d.groups, "noise {noise:?}");
        for g in &got {
            let (c, s) = exact
                .iter()
                .find(|e| e.group == g.group)
                .map_or((0, 0), |e| (e.count as i64, e.sums[0] as i64));
            assert_eq!(g.count as i64, c + noise[0], "noise {noise:?}");
            assert_eq!(g.sums[0] as i64, s + noise[1], "noise {noise:?}");
        }
    }
    // Beyond the range: every group's count is out, none is released, and
    // the step still completes.
    assert!(open(vec![1 << 41, 0]).is_empty());
}
