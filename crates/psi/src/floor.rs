//! The elliptic-curve floor of the protocol on this machine: how fast one
//! core hashes to the group, multiplies a variable point and multiplies a
//! fixed point with a precomputed table, with the backend in use, and what
//! the protocol needs of each. Benchmarks report their time as a ratio to
//! it (measured in the same run), never as a timed assertion.

use std::time::Instant;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::RistrettoPoint;

use crate::group::{Secret, Suite};
use crate::PsiError;

/// Seconds per operation on one core.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Hashing one identifier to the group.
    pub hash_s: f64,
    /// One variable-base scalar multiplication.
    pub variable_s: f64,
    /// One fixed-base scalar multiplication (precomputed table).
    pub fixed_s: f64,
}

/// Measures [`Rates`] on the calling thread over `n` operations of each.
pub fn measure(n: usize) -> Result<Rates, PsiError> {
    let n = n.max(1);
    let suite = Suite::new("floor", [7; 32]);
    let s = Secret::fresh()?;
    let t = Instant::now();
    let mut p = RistrettoPoint::default();
    for i in 0..n {
        p += suite.hash(format!("person{i}@example.com").as_bytes());
    }
    let hash_s = t.elapsed().as_secs_f64() / n as f64;
    let t = Instant::now();
    for _ in 0..n {
        p *= s.scalar();
    }
    let variable_s = t.elapsed().as_secs_f64() / n as f64;
    let t = Instant::now();
    let mut q = RistrettoPoint::default();
    for _ in 0..n {
        q += RISTRETTO_BASEPOINT_TABLE * s.scalar();
    }
    let fixed_s = t.elapsed().as_secs_f64() / n as f64;
    // Keep the results alive so the loops are not optimised away.
    std::hint::black_box((p, q));
    Ok(Rates {
        hash_s,
        variable_s,
        fixed_s,
    })
}

/// What a session between a matcher with `m` people (with `values`
/// encrypted numbers each) and a grouper with `g` people needs at the
/// least: every identifier hashed once; each party's points blinded by
/// both (2·(m + g) variable-base multiplications, the floor of any protocol
/// of this family); per value and person of the matcher an encryption (two
/// fixed-base multiplications and one by the small plaintext, counted as
/// fixed-base) and a re-randomisation (two fixed-base); and `proofs` bits
/// per person of the grouper, each encrypted with its proof that it is 0
/// or 1 (seven fixed-base multiplications,
/// [`crate::elgamal::PublicKey::encrypt_bit`]): one by the responder's
/// groups (the matcher's count of each item), one per group by the
/// asker's, none for a count by nothing. By the asker's groups the
/// matcher also hides `checks` check points in its list
/// ([`crate::tagged::checks_for`]): each made and checked (`r_j·G`, and
/// `r_j·B` with a table of B: two fixed-base multiplications) and
/// re-blinded in S (one variable-base). Returns the seconds on `cores`
/// cores.
pub fn floor_s(
    rates: &Rates,
    m: usize,
    g: usize,
    values: usize,
    proofs: usize,
    checks: usize,
    cores: usize,
) -> f64 {
    let (m, g, v, p, c) = (
        m as f64,
        g as f64,
        values as f64,
        proofs as f64,
        checks as f64,
    );
    let work = (m + g) * rates.hash_s
        + 2.0 * (m + g) * rates.variable_s
        + 5.0 * v * m * rates.fixed_s
        + 7.0 * p * g * rates.fixed_s
        + c * (rates.variable_s + 2.0 * rates.fixed_s);
    work / cores.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_adds_up_what_the_protocol_needs() {
        let rates = Rates {
            hash_s: 1.0,
            variable_s: 10.0,
            fixed_s: 100.0,
        };
        // 3 + 2·3·10 = 63 for a count by nothing; + 7·2·100 = 1400 with
        // a proved bit per person of the grouper; + 5·1·100 = 500 for one
        // value of the matcher's one person.
        assert_eq!(floor_s(&rates, 1, 2, 0, 0, 0, 1), 63.0);
        assert_eq!(floor_s(&rates, 1, 2, 0, 1, 0, 1), 1463.0);
        assert_eq!(floor_s(&rates, 1, 2, 1, 1, 0, 1), 1963.0);
        assert_eq!(floor_s(&rates, 1, 2, 1, 1, 0, 2), 981.5);
        // + 10 + 2·100 for one check point.
        assert_eq!(floor_s(&rates, 1, 2, 0, 0, 1, 1), 273.0);
        let measured = measure(20).expect("rates");
        assert!(measured.hash_s > 0.0 && measured.variable_s > 0.0 && measured.fixed_s > 0.0);
    }
}
