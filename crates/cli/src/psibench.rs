//! `airlock bench-psi`: crypto mode's private set intersection between two
//! parties on identifier files, timed step by step, with every message sent
//! over a real loopback TCP connection. `bench/psi_vs_openmined.py` runs it
//! side by side with OpenMined PSI on the same identifiers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

use airlock_psi::protocol::new_session;
use airlock_psi::{hash_all, Suite};

use crate::cluster::CliError;

fn read_ids(path: &Path) -> Result<Vec<String>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Sends `bytes` over a loopback TCP connection and returns what arrived
/// and how long the transfer took.
fn over_loopback(bytes: &[u8]) -> Result<(Vec<u8>, f64), CliError> {
    let io = |e: std::io::Error| CliError::Failed(format!("loopback: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let t = Instant::now();
    let reader = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut s, _) = listener.accept()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    });
    let mut s = TcpStream::connect(addr).map_err(io)?;
    s.write_all(bytes).map_err(io)?;
    drop(s);
    let got = reader
        .join()
        .map_err(|_| CliError::Failed("loopback reader panicked".into()))?
        .map_err(io)?;
    Ok((got, t.elapsed().as_secs_f64()))
}

/// Runs the protocol as the nodes run an ungrouped query between an asker
/// holding `asker` and a responder holding `responder`, without
/// differential privacy (k = 2, no dummies): for counts, the responder's
/// side matches and counts, the asker's blinds its people (one group, so
/// untagged; with `groups` above 1 each in one of them in turn, tagged
/// per group) and opens (`airlock_psi::tagged`, five messages); with `sums` (a per-person
/// value of 1 on the asker's side), the asker matches with its values and
/// the responder groups (`airlock_psi::grouped`, six).
/// Prints one JSON object with the overlap and where the time went.
pub fn run(
    asker: &Path,
    responder: &Path,
    sums: bool,
    groups: usize,
) -> Result<serde_json::Value, CliError> {
    let a = read_ids(asker)?;
    let r = read_ids(responder)?;
    let fail = |e: airlock_psi::PsiError| CliError::Failed(e.to_string());
    // The keyed hash of a collaboration with a fresh secret, as the nodes run it.
    let secret = airlock_crypto::CollaborationSecret::generate()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let suite = Suite::new("bench", secret.psi_hash_key("bench"));
    let total = Instant::now();
    let t = Instant::now();
    let a_points = hash_all(&suite, &a.iter().map(|s| s.as_bytes()).collect::<Vec<_>>());
    let r_points = hash_all(&suite, &r.iter().map(|s| s.as_bytes()).collect::<Vec<_>>());
    let hash_s = t.elapsed().as_secs_f64();
    let progress = |what: &str| eprintln!("  {:>7.1}s  {what}", total.elapsed().as_secs_f64());
    progress(&format!(
        "hashed {} + {} identifiers to ristretto255",
        a.len(),
        r.len()
    ));
    let values = usize::from(sums);
    let mut transfer_s = 0.0;
    let mut bytes = 0usize;
    let mut send = |m: Vec<u8>| -> Result<Vec<u8>, CliError> {
        let (got, s) = over_loopback(&m)?;
        transfer_s += s;
        bytes += got.len();
        Ok(got)
    };
    // Seconds of work on each side (all cores), apart from the transfers.
    let (mut matcher_s, mut grouper_s) = (0.0, 0.0);
    let timed = |acc: &mut f64, t: Instant| *acc += t.elapsed().as_secs_f64();
    let k = 2;
    let session = new_session().map_err(fail)?;
    // Bits proved per person of the grouper: the matcher's count of each
    // item by the responder's groups; one per group by the asker's, none
    // for a count by nothing (one group: untagged).
    let groups = groups.max(1);
    let proofs = match (sums, groups) {
        (true, _) => 1,
        (false, 1) => 0,
        (false, g) => g,
    };
    let groups_n = groups;
    let (released, people_n, items) = if sums {
        // A sum of the asker's measure: the asker matches with its values,
        // the responder groups (one group): `airlock_psi::grouped`.
        use airlock_psi::grouped::{Grouper, Matcher, Padding};
        let (people_n, items) = (a_points.len(), r_points.len());
        let people: Vec<_> = a_points.into_iter().map(|p| (p, vec![1; values])).collect();
        let grouped: Vec<_> = r_points.into_iter().map(|p| (p, vec![0u32])).collect();
        let t = Instant::now();
        let (mut matcher, m1, _) =
            Matcher::start(session, &people, values, 0, true).map_err(fail)?;
        timed(&mut matcher_s, t);
        let m1 = send(m1)?;
        progress("1. asker (matcher) blinded, encrypted and sent its identifiers");
        let t = Instant::now();
        let (mut grouper, m2, _) =
            Grouper::respond(&m1, &grouped, 1, values, Padding::default()).map_err(fail)?;
        timed(&mut grouper_s, t);
        let m2 = send(m2)?;
        progress("2. responder (grouper) blinded them again and its own");
        let t = Instant::now();
        let (m3, _, _) = matcher.match_items(&m2).map_err(fail)?;
        timed(&mut matcher_s, t);
        let m3 = send(m3)?;
        progress("3. asker matched and proved each count 0 or 1");
        let t = Instant::now();
        grouper.tally(&m3).map_err(fail)?;
        let m4 = grouper.zero_tests(k).map_err(fail)?;
        timed(&mut grouper_s, t);
        let m4 = send(m4)?;
        progress("4. responder checked the proofs, summed and tested k");
        let t = Instant::now();
        let m5 = matcher.passes(&m4, k).map_err(fail)?;
        timed(&mut matcher_s, t);
        let m5 = send(m5)?;
        let t = Instant::now();
        let (m6, _) = grouper.release_passing(&m5).map_err(fail)?;
        timed(&mut grouper_s, t);
        let m6 = send(m6)?;
        progress("5-6. k proved, released (partially decrypted)");
        let t = Instant::now();
        let out = matcher.finish(&m6).map_err(fail)?;
        timed(&mut matcher_s, t);
        (out, people_n, items)
    } else {
        // Counts: the responder matches and counts, the asker tags its
        // people (one group): `airlock_psi::tagged`.
        use airlock_psi::tagged::{Grouper, Matcher, Padding};
        let (people_n, items) = (r_points.len(), a_points.len());
        let grouped: Vec<_> = a_points
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, vec![(i % groups) as u32]))
            .collect();
        let t = Instant::now();
        let (mut matcher, m1) = Matcher::start(session, &r_points, 0).map_err(fail)?;
        timed(&mut matcher_s, t);
        let m1 = send(m1)?;
        progress("1. responder (matcher) blinded and sent its identifiers");
        let t = Instant::now();
        let (mut grouper, m2) =
            Grouper::respond(&m1, &grouped, groups, None, Padding::default(), true)
                .map_err(fail)?;
        timed(&mut grouper_s, t);
        let m2 = send(m2)?;
        progress(if groups == 1 {
            "2. asker (grouper) blinded them again and its own (one group: no tags)"
        } else {
            "2. asker (grouper) blinded them again and its own, and proved its tags"
        });
        let t = Instant::now();
        let (m3, _) = matcher
            .match_and_count(&m2, k, None, None, None)
            .map_err(fail)?;
        timed(&mut matcher_s, t);
        let m3 = send(m3)?;
        progress("3. responder matched, counted and tested k");
        let t = Instant::now();
        let m4 = grouper.passes(&m3, k).map_err(fail)?;
        timed(&mut grouper_s, t);
        let m4 = send(m4)?;
        let t = Instant::now();
        let (m5, _) = matcher.release_passing(&m4).map_err(fail)?;
        timed(&mut matcher_s, t);
        let m5 = send(m5)?;
        progress("4-5. k proved, released (partially decrypted)");
        let t = Instant::now();
        let out = grouper.finish(&m5).map_err(fail)?;
        timed(&mut grouper_s, t);
        (out, people_n, items)
    };
    let total_s = total.elapsed().as_secs_f64();
    // By the asker's groups the matcher (the responder) hides check points
    // among its items (no dummies here).
    let checks = if sums {
        0
    } else {
        airlock_psi::tagged::checks_for(people_n)
    };
    // The elliptic-curve floor, measured in the same run on one core.
    let rates = airlock_psi::floor::measure(2_000).map_err(fail)?;
    let floor_s = airlock_psi::floor::floor_s(
        &rates,
        people_n,
        items,
        values,
        proofs,
        checks,
        rayon_threads(),
    );
    Ok(serde_json::json!({
        "asker": a.len(),
        "responder": r.len(),
        "groups": groups_n,
        "overlap": released.iter().map(|g| g.count).sum::<u64>(),
        "sum": released.first().and_then(|g| g.sums.first().copied()),
        "total_s": total_s,
        "hash_s": hash_s,
        "matcher_s": matcher_s,
        "grouper_s": grouper_s,
        "transfer_s": transfer_s,
        "bytes": bytes,
        "threads": rayon_threads(),
        "floor_s": floor_s,
        "over_floor": total_s / floor_s,
        "per_core_s": {
            "hash": rates.hash_s,
            "variable_base_mult": rates.variable_s,
            "fixed_base_mult": rates.fixed_s,
        },
    }))
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
