//! The protocol against a plaintext oracle, its transcript, and hostile
//! messages.

use std::collections::{BTreeMap, HashSet};

use airlock_psi::protocol::new_session;
use airlock_psi::{hash_all, Asker, GroupResult, PsiError, Responder, Suite};
use curve25519_dalek::ristretto::RistrettoPoint;

/// Asker: people 0..600 in 3 groups by i % 3; responder: people 300..900,
/// person i spending i cents on each of (i % 4 + 1) orders.
fn data() -> (Vec<Vec<String>>, Vec<(String, u64)>) {
    let mut groups = vec![Vec::new(), Vec::new(), Vec::new()];
    for i in 0..600 {
        groups[i % 3].push(format!("person{i}@example.com"));
    }
    let people = (300..900u64)
        .map(|i| (format!("person{i}@example.com"), i * (i % 4 + 1)))
        .collect();
    (groups, people)
}

fn oracle(groups: &[Vec<String>], people: &[(String, u64)], k: u64) -> Vec<GroupResult> {
    let theirs: BTreeMap<&str, u64> = people.iter().map(|(p, s)| (p.as_str(), *s)).collect();
    groups
        .iter()
        .enumerate()
        .filter_map(|(g, ids)| {
            let hits: Vec<u64> = ids
                .iter()
                .filter_map(|i| theirs.get(i.as_str()).copied())
                .collect();
            (hits.len() as u64 >= k).then(|| GroupResult {
                group: g as u32,
                count: hits.len() as u64,
                sums: vec![hits.iter().sum()],
            })
        })
        .collect()
}

struct Run {
    results: Vec<GroupResult>,
    transcript: Vec<Vec<u8>>,
}

/// The asker's groups and the responder's people (with their one value),
/// hashed to the group.
#[allow(clippy::type_complexity)]
fn hashed(
    suite: &Suite,
    groups: &[Vec<String>],
    people: &[(String, u64)],
) -> (Vec<Vec<RistrettoPoint>>, Vec<(RistrettoPoint, Vec<u64>)>) {
    let points = groups
        .iter()
        .map(|g| hash_all(suite, &g.iter().map(|s| s.as_bytes()).collect::<Vec<_>>()))
        .collect();
    let ids: Vec<&[u8]> = people.iter().map(|(p, _)| p.as_bytes()).collect();
    let mine = hash_all(suite, &ids)
        .into_iter()
        .zip(people.iter().map(|(_, s)| vec![*s]))
        .collect();
    (points, mine)
}

fn run(suite: &Suite, groups: &[Vec<String>], people: &[(String, u64)], k: u64) -> Run {
    let (points, mine) = hashed(suite, groups, people);
    let (mut asker, m1, _) =
        Asker::start(new_session().expect("session"), &points, 1).expect("step 1");
    let (responder, m2, _) = Responder::respond(&m1, &mine, 1, k).expect("step 2");
    let (m3, _) = asker.reblind(&m2).expect("step 3");
    let (m4, _, _) = responder.finish(&m3).expect("step 4");
    let results = asker.finish(&m4).expect("results");
    Run {
        results,
        transcript: vec![m1, m2, m3, m4],
    }
}

/// Message 2 padded with dummies: the same results as the oracle, and
/// its length is the responder's people plus the dummies (all the asker
/// learns of the responder's count); a padded message 3 must still answer
/// every item, dummies included.
#[test]
fn dummies_in_message_2_change_its_length_and_nothing_else() {
    let suite = Suite::new("demo", [0x42; 32]);
    let (groups, people) = data();
    let (points, mine) = hashed(&suite, &groups, &people);
    for dummies in [0u64, 1, 37, 500] {
        let (mut asker, m1, _) =
            Asker::start(new_session().expect("session"), &points, 1).expect("step 1");
        let (responder, m2, _) =
            Responder::respond_padded(&m1, &mine, 1, 50, dummies).expect("step 2");
        // Header 29, share and proof 96, values flag 1, then the count.
        let n = u32::from_le_bytes(m2[126..130].try_into().expect("4")) as u64;
        assert_eq!(n, people.len() as u64 + dummies);
        let (m3, _) = asker.reblind(&m2).expect("step 3");
        let (m4, _, _) = responder.finish(&m3).expect("step 4");
        assert_eq!(
            asker.finish(&m4).expect("results"),
            oracle(&groups, &people, 50)
        );
    }
}

/// Where message 1's first point starts: header (12 magic, 1 kind, 16
/// session), key share and proof (96), group count and the first size.
const FIRST_POINT: usize = 29 + 96 + 4 + 4;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn results_equal_the_plaintext_oracle_and_small_groups_are_not_released() {
    let suite = Suite::new("demo", [0x42; 32]);
    let (groups, people) = data();
    let got = run(&suite, &groups, &people, 50).results;
    assert_eq!(got, oracle(&groups, &people, 50));
    assert_eq!(got.len(), 3);
    // A k above every group's overlap releases nothing.
    assert!(run(&suite, &groups, &people, 101).results.is_empty());
    // Counts only.
    let points: Vec<_> = groups
        .iter()
        .map(|g| hash_all(&suite, &g.iter().map(|s| s.as_bytes()).collect::<Vec<_>>()))
        .collect();
    let ids: Vec<&[u8]> = people.iter().map(|(p, _)| p.as_bytes()).collect();
    let mine: Vec<_> = hash_all(&suite, &ids)
        .into_iter()
        .map(|p| (p, Vec::new()))
        .collect();
    let (mut a, m1, _) = Asker::start(new_session().expect("s"), &points, 0).expect("1");
    let (r, m2, _) = Responder::respond(&m1, &mine, 0, 2).expect("2");
    let (m3, _) = a.reblind(&m2).expect("3");
    let (m4, _, _) = r.finish(&m3).expect("4");
    let counts: Vec<(u32, u64, usize)> = a
        .finish(&m4)
        .expect("r")
        .iter()
        .map(|g| (g.group, g.count, g.sums.len()))
        .collect();
    assert_eq!(counts, vec![(0, 100, 0), (1, 100, 0), (2, 100, 0)]);
}

#[test]
fn the_transcript_holds_no_identifier_no_measure_and_no_value_of_another_query() {
    let suite = Suite::new("demo", [0x42; 32]);
    let (groups, people) = data();
    let one = run(&suite, &groups, &people, 50);
    let two = run(&suite, &groups, &people, 50);
    for (i, m) in one.transcript.iter().enumerate() {
        assert!(
            !contains(m, b"@example.com"),
            "message {} holds an identifier",
            i + 1
        );
        assert!(
            !contains(m, b"person"),
            "message {} holds an identifier",
            i + 1
        );
        if i < 3 {
            for (_, s) in people.iter().filter(|(_, s)| *s > 1000) {
                assert!(
                    !contains(m, &s.to_le_bytes()),
                    "message {} holds a plaintext sum",
                    i + 1
                );
            }
        }
    }
    // No 32-byte value (blinded point or ciphertext half) of one query's
    // messages 1-3 appears in the other's.
    let values = |r: &Run| -> HashSet<Vec<u8>> {
        r.transcript[..3]
            .iter()
            .flat_map(|m| {
                m[29..]
                    .chunks(32)
                    .filter(|c| c.len() == 32)
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (a, b) = (values(&one), values(&two));
    assert!(a.len() > 2000);
    assert!(
        a.is_disjoint(&b),
        "a blinded value was reused across queries"
    );
}

#[test]
fn hostile_messages_are_refused_not_panicked_on() {
    let suite = Suite::new("demo", [0x42; 32]);
    let (groups, people) = data();
    let (points, mine) = hashed(&suite, &groups, &people);
    let (mut asker, m1, _) = Asker::start(new_session().expect("s"), &points, 1).expect("1");
    // Header: 12 magic + 1 kind + 16 session; the asker's key share and its
    // proof; then group count and sizes.
    let first_point = FIRST_POINT;
    let mut identity = m1.clone();
    identity[first_point..first_point + 32].fill(0);
    assert_eq!(
        Responder::respond(&identity, &mine, 1, 2).err(),
        Some(PsiError::Malformed("a point is the identity"))
    );
    let mut random = m1.clone();
    random[first_point..first_point + 32].fill(0xee);
    assert!(matches!(
        Responder::respond(&random, &mine, 1, 2),
        Err(PsiError::Malformed(_))
    ));
    for cut in [5, 30, first_point + 10, m1.len() - 1] {
        assert!(
            matches!(
                Responder::respond(&m1[..cut], &mine, 1, 2),
                Err(PsiError::Malformed(_))
            ),
            "truncated at {cut}"
        );
    }
    let mut longer = m1.clone();
    longer.push(0);
    assert_eq!(
        Responder::respond(&longer, &mine, 1, 2).err(),
        Some(PsiError::Malformed("trailing bytes after the message"))
    );
    let (responder, m2, _) = Responder::respond(&m1, &mine, 1, 2).expect("2");
    // A message of another query is refused at every step.
    let (mut other, o1, _) = Asker::start(new_session().expect("s"), &points, 1).expect("1");
    let (other_r, o2, _) = Responder::respond(&o1, &mine, 1, 2).expect("2");
    assert_eq!(asker.reblind(&o2).err(), Some(PsiError::Replay));
    let (o3, _) = other.reblind(&o2).expect("3");
    assert_eq!(responder.finish(&o3).err(), Some(PsiError::Replay));
    let (o4, _, _) = other_r.finish(&o3).expect("4");
    assert_eq!(asker.finish(&o4).err(), Some(PsiError::Replay));
    // A message of the wrong step, and a bad ciphertext.
    assert!(matches!(asker.reblind(&m1), Err(PsiError::Malformed(_))));
    let (mut m3, _) = asker.reblind(&m2).expect("3");
    let ct = 29 + 1 + 4 + 32;
    m3[ct..ct + 32].fill(0);
    assert!(matches!(responder.finish(&m3), Err(PsiError::Malformed(_))));
}

/// What the hub and a cheaply modified party (speaking the real message
/// format) try, and what each side now refuses (issue 12, points 2-4).
#[test]
fn modified_parties_are_refused_by_the_checks_of_each_message() {
    let suite = Suite::new("demo", [0x42; 32]);
    let (groups, people) = data();
    let (points, with_values) = hashed(&suite, &groups, &people);
    // A responder that attaches values to a counts-only query (to learn
    // the intersection from unique values) is refused by the asker.
    let (mut counts_asker, m1, _) = Asker::start(new_session().expect("s"), &points, 0).expect("1");
    let (_, m2, _) = Responder::respond(&m1, &with_values, 1, 2).expect("2");
    assert_eq!(
        counts_asker.reblind(&m2).err(),
        Some(PsiError::Malformed(
            "message 2 carries other values than the query needs"
        ))
    );
    // An asker that repeats one point in a group (one person counted k
    // times) is refused by the responder.
    let (_, mut m1, _) = Asker::start(new_session().expect("s"), &points, 1).expect("1");
    let first_point = FIRST_POINT;
    let copy: Vec<u8> = m1[first_point..first_point + 32].to_vec();
    m1[first_point + 32..first_point + 64].copy_from_slice(&copy);
    assert_eq!(
        Responder::respond(&m1, &with_values, 1, 2).err(),
        Some(PsiError::Malformed("a group holds the same point twice"))
    );
    // An asker whose message 3 returns more items than message 2 sent (its
    // own points, or copies), or one item twice, is refused.
    let (mut asker, m1, _) = Asker::start(new_session().expect("s"), &points, 1).expect("1");
    let (responder, m2, _) = Responder::respond(&m1, &with_values, 1, 2).expect("2");
    let (m3, _) = asker.reblind(&m2).expect("3");
    let head = 29 + 1;
    let n = u32::from_le_bytes(m3[head..head + 4].try_into().expect("4 bytes")) as usize;
    let size = 32 + 64;
    let body = &m3[head + 4..];
    assert_eq!(body.len(), n * size);
    let mut more = m3[..head].to_vec();
    more.extend_from_slice(&((n + 1) as u32).to_le_bytes());
    more.extend_from_slice(body);
    more.extend_from_slice(&body[..size]);
    assert_eq!(
        responder.finish(&more).err(),
        Some(PsiError::Malformed(
            "message 3 does not return exactly the items of message 2"
        ))
    );
    let mut twice = m3.clone();
    let second = head + 4 + size;
    let first_item = twice[head + 4..head + 4 + size].to_vec();
    twice[second..second + size].copy_from_slice(&first_item);
    assert_eq!(
        responder.finish(&twice).err(),
        Some(PsiError::Malformed("message 3 holds the same point twice"))
    );
    // The honest message still works after those refusals.
    let honest_m4 = responder.finish(&m3).expect("4").0;
    // A responder that changes its partial decryption of a released sum
    // (to make the asker open something else) is refused: the proof binds
    // it to its share and the ciphertext.
    let d_at = 29 + 4 + 4 + 8 + 1 + 64;
    let mut altered = honest_m4.clone();
    let other_d = m2[29..61].to_vec();
    altered[d_at..d_at + 32].copy_from_slice(&other_d);
    assert_eq!(
        asker.finish(&altered).err(),
        Some(PsiError::Malformed(
            "a partial decryption's proof does not verify"
        ))
    );
    assert_eq!(
        asker.finish(&honest_m4).expect("released"),
        oracle(&groups, &people, 2)
    );
    assert_eq!(
        asker
            .finish(&responder.finish(&m3).expect("4").0)
            .expect("released"),
        oracle(&groups, &people, 2)
    );
}

/// The key is 2-of-2 and neither share can be chosen against the other:
/// a responder that sends `Y - X_A` as its share (so that it would hold
/// the whole joint key `Y` and open every returned ciphertext, issue 12
/// point 1) cannot prove knowledge of it, and a proof of another query or
/// role does not verify either.
#[test]
fn a_key_share_without_its_proof_is_refused() {
    use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
    use curve25519_dalek::scalar::Scalar;
    let suite = Suite::new("demo", [0x42; 32]);
    let (groups, people) = data();
    let (points, mine) = hashed(&suite, &groups, &people);
    let (mut asker, m1, _) = Asker::start(new_session().expect("s"), &points, 1).expect("1");
    let (_, m2, _) = Responder::respond(&m1, &mine, 1, 2).expect("2");
    let x_a = airlock_psi::group::decode(&m1[29..61]).expect("the asker's share");
    let y = RISTRETTO_BASEPOINT_TABLE * &Scalar::from(123_456_789u64);
    let mut rogue = m2.clone();
    rogue[29..61].copy_from_slice(&airlock_psi::group::encode(&(y - x_a)));
    let refused = Some(PsiError::Malformed(
        "a key share's proof of knowledge does not verify",
    ));
    assert_eq!(asker.reblind(&rogue).err(), refused);
    // The share and proof of another query's message 2.
    let (_, o1, _) = Asker::start(new_session().expect("s"), &points, 1).expect("1");
    let (_, o2, _) = Responder::respond(&o1, &mine, 1, 2).expect("2");
    let mut replayed = m2.clone();
    replayed[29..29 + 96].copy_from_slice(&o2[29..29 + 96]);
    assert_eq!(asker.reblind(&replayed).err(), refused);
    // The asker's own share and proof sent back as the responder's.
    let mut reflected = m2.clone();
    reflected[29..29 + 96].copy_from_slice(&m1[29..29 + 96]);
    assert_eq!(asker.reblind(&reflected).err(), refused);
    // Likewise the responder checks the asker's share.
    let mut rogue1 = m1.clone();
    rogue1[29..61].copy_from_slice(&airlock_psi::group::encode(&y));
    assert_eq!(Responder::respond(&rogue1, &mine, 1, 2).err(), refused);
    // A proof whose response is not a canonical scalar.
    let mut noncanonical = m2.clone();
    noncanonical[29 + 64..29 + 96].fill(0xff);
    assert_eq!(
        asker.reblind(&noncanonical).err(),
        Some(PsiError::Malformed("a proof holds a non-canonical scalar"))
    );
    assert!(asker.reblind(&m2).is_ok(), "the honest message still works");
}

/// A session up to message 3 on the test data, with one value per person.
#[allow(clippy::type_complexity)]
fn up_to_message_3() -> (Vec<GroupResult>, Asker, Responder, Vec<u8>) {
    let suite = Suite::new("demo", [0x42; 32]);
    let (groups, people) = data();
    let (points, mine) = hashed(&suite, &groups, &people);
    let (mut asker, m1, _) = Asker::start(new_session().expect("s"), &points, 1).expect("1");
    let (responder, m2, _) = Responder::respond(&m1, &mine, 1, 2).expect("2");
    let (m3, _) = asker.reblind(&m2).expect("3");
    (oracle(&groups, &people, 0), asker, responder, m3)
}

/// Step 4 under a release policy that releases every group with its count
/// plus `extra` and adds `noise[g]` to group g's sum under encryption;
/// also returns what the responder learned.
fn noised(
    responder: &Responder,
    m3: &[u8],
    noise: &[i64],
    extra: u64,
) -> (Vec<u8>, Vec<GroupResult>) {
    use airlock_psi::protocol::Noised;
    let release = |g: u32, count: u64| -> Result<Option<Noised>, PsiError> {
        Ok(Some(Noised {
            count: count + extra,
            noise: vec![noise[g as usize]],
        }))
    };
    let policy = airlock_psi::Release {
        max_groups_per_person: None,
        release: &release,
    };
    let (m4, learned, _) = responder.finish_with(m3, Some(&policy)).expect("4");
    (m4, learned)
}

/// `exact` with `extra` on every count and `noise[g]` on group g's sum.
fn plus_noise(exact: &[GroupResult], noise: &[i64], extra: u64) -> Vec<GroupResult> {
    exact
        .iter()
        .map(|g| GroupResult {
            group: g.group,
            count: g.count + extra,
            sums: vec![(g.sums[0] as i64 + noise[g.group as usize]) as u64],
        })
        .collect()
}

/// A group whose sum is beyond what decryption looks for is not released;
/// the other groups are (no abort, which would be one bit about the sum).
/// Here the responder's release policy adds noise beyond the range to the
/// first group's sum, under encryption; the asker opens only noisy sums.
#[test]
fn a_sum_beyond_the_bound_drops_its_group_only() {
    let (exact, asker, responder, m3) = up_to_message_3();
    let noise = [1 << 41, -3, -3];
    let (m4, learned) = noised(&responder, &m3, &noise, 0);
    assert!(
        learned.iter().all(|g| g.sums.is_empty()),
        "the responder never learns a sum"
    );
    let mut want = plus_noise(&exact, &noise, 0);
    want.retain(|g| g.group != 0);
    assert_eq!(asker.finish(&m4).expect("released"), want);
}

/// The noise the responder adds under encryption reaches the asker
/// exactly: for noise values from a generator (zero, ±1, random of every
/// magnitude up to 2^32 either way, per group), every released sum opens
/// to its exact sum plus that group's noise, and the counts are what the
/// policy released.
#[test]
fn noise_added_under_encryption_opens_exactly() {
    use rand::Rng;
    let (exact, asker, responder, m3) = up_to_message_3();
    let mut rng = rand::thread_rng();
    for round in 0..24 {
        let noise: Vec<i64> = (0..exact.len())
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
        let (m4, _) = noised(&responder, &m3, &noise, 1000);
        let got = asker.finish(&m4).expect("released");
        assert_eq!(got, plus_noise(&exact, &noise, 1000), "noise {noise:?}");
    }
}
