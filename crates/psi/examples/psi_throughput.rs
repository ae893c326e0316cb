//! Times the protocol in one process on `N` x `N` identifiers with half of
//! them in common: `cargo run --release -p airlock-psi --example psi_throughput -- 100000 [sums]`.
//! Prints one JSON line with where the time went.

use std::time::Instant;

use airlock_psi::protocol::new_session;
use airlock_psi::{hash_all, Asker, Responder, Suite};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let sums = args.next().as_deref() == Some("sums");
    let suite = Suite::new("bench", [0x42; 32]);
    let asker_ids: Vec<String> = (0..n).map(|i| format!("person{i}@example.com")).collect();
    let responder_ids: Vec<String> = (n / 2..n + n / 2)
        .map(|i| format!("person{i}@example.com"))
        .collect();
    let total = Instant::now();
    let t = Instant::now();
    let a_points = hash_all(
        &suite,
        &asker_ids.iter().map(|s| s.as_bytes()).collect::<Vec<_>>(),
    );
    let r_points = hash_all(
        &suite,
        &responder_ids
            .iter()
            .map(|s| s.as_bytes())
            .collect::<Vec<_>>(),
    );
    let hash_s = t.elapsed().as_secs_f64();
    let values = usize::from(sums);
    let people: Vec<_> = r_points
        .into_iter()
        .map(|p| (p, vec![100; values]))
        .collect();
    let (mut asker, m1, s1) =
        Asker::start(new_session().expect("session"), &[a_points], values).expect("1");
    let (responder, m2, s2) = Responder::respond(&m1, &people, values, 2).expect("2");
    let (m3, s3) = asker.reblind(&m2).expect("3");
    let (m4, _, s4) = responder.finish(&m3).expect("4");
    let out = asker.finish(&m4).expect("results");
    let total_s = total.elapsed().as_secs_f64();
    println!(
        "{{\"n\": {n}, \"sums\": {sums}, \"overlap\": {}, \"total_s\": {total_s:.3}, \"hash_s\": {hash_s:.3}, \"blind_s\": {:.3}, \"crypto_s\": {:.3}, \"match_s\": {:.3}, \"bytes\": {}}}",
        out.first().map(|g| g.count).unwrap_or(0),
        s1.blind_s + s2.blind_s + s3.blind_s + s4.blind_s,
        s1.crypto_s + s2.crypto_s + s3.crypto_s + s4.crypto_s,
        s1.match_s + s2.match_s + s3.match_s + s4.match_s,
        s1.bytes + s2.bytes + s3.bytes + s4.bytes,
    );
}
