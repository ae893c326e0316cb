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
    let (asker, m1, _) = Asker::start(new_session().expect("session"), &points, 1).expect("step 1");
    let (responder, m2, _) = Responder::respond(&m1, &mine, 1, k).expect("step 2");
    let (m3, _) = asker.reblind(&m2).expect("step 3");
    let (m4, _, _) = responder.finish(&m3).expect("step 4");
    let results = asker.finish(&m4).expect("results");
    Run {
        results,
        transcript: vec![m1, m2, m3, m4],
    }
}

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
    let (a, m1, _) = Asker::start(new_session().expect("s"), &points, 0).expect("1");
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
    let (asker, m1, _) = Asker::start(new_session().expect("s"), &points, 1).expect("1");
    // Header: 12 magic + 1 kind + 16 session; then group count and sizes.
    let first_point = 29 + 4 + 4;
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
    let (other, o1, _) = Asker::start(new_session().expect("s"), &points, 1).expect("1");
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
    let (counts_asker, m1, _) = Asker::start(new_session().expect("s"), &points, 0).expect("1");
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
    let first_point = 29 + 4 + 4;
    let copy: Vec<u8> = m1[first_point..first_point + 32].to_vec();
    m1[first_point + 32..first_point + 64].copy_from_slice(&copy);
    assert_eq!(
        Responder::respond(&m1, &with_values, 1, 2).err(),
        Some(PsiError::Malformed("a group holds the same point twice"))
    );
    // An asker whose message 3 returns more items than message 2 sent (its
    // own points, or copies), or one item twice, is refused.
    let (asker, m1, _) = Asker::start(new_session().expect("s"), &points, 1).expect("1");
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
    assert_eq!(
        asker
            .finish(&responder.finish(&m3).expect("4").0)
            .expect("released"),
        oracle(&groups, &people, 2)
    );
}

/// A group whose sum is beyond what decryption looks for is not released;
/// the other groups are (no abort, which was one bit about the sum). Here
/// a modified asker replaces the ciphertexts of message 3 with
/// encryptions of large numbers under the responder's key.
#[test]
fn a_sum_beyond_the_bound_drops_its_group_only() {
    use airlock_psi::elgamal::{PublicKey, CIPHERTEXT_LEN};
    let suite = Suite::new("demo", [0x42; 32]);
    let (groups, people) = data();
    let (points, mine) = hashed(&suite, &groups, &people);
    let (asker, m1, _) = Asker::start(new_session().expect("s"), &points, 1).expect("1");
    let (responder, m2, _) = Responder::respond(&m1, &mine, 1, 2).expect("2");
    let pk = PublicKey::from_point(
        airlock_psi::group::decode(&m2[29..61]).expect("the responder's key"),
    );
    let (mut m3, _) = asker.reblind(&m2).expect("3");
    let head = 29 + 1 + 4;
    let size = 32 + CIPHERTEXT_LEN;
    let n = (m3.len() - head) / size;
    // Every other item carries a large value: each group's sum passes the
    // responder's total, so no group is released, and nothing fails.
    for i in (0..n).step_by(2) {
        let at = head + i * size + 32;
        m3[at..at + CIPHERTEXT_LEN].copy_from_slice(&pk.encrypt(1 << 30).expect("enc").encode());
    }
    let (m4, _, _) = responder.finish(&m3).expect("no abort");
    assert!(asker.finish(&m4).expect("released").is_empty());
}
