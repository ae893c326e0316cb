//! How much one person can move the values a query releases (the L1
//! sensitivities), and how a query's epsilon is shared over its draws.
//!
//! A person's rows are bounded before anything is aggregated: at most
//! `max_groups` groups per person, and at most `max_rows` rows per person
//! over all of them ([`Contribution::per_person`], executor mode and a
//! one-table analysis on a node) or in each of them
//! ([`Contribution::per_group`], crypto mode, where each side bounds its
//! own rows per group). With `rows` the most rows one person can add over
//! all groups:
//!
//! | released value | one person moves it by at most (L1, all groups) |
//! |---|---|
//! | a count of rows | `rows` |
//! | a count of distinct people | `max_groups` (one per group) |
//! | a sum of values clamped to `[lo, hi]` | `rows · max(|lo|, |hi|)` |
//!
//! Each value is noised by its own draw; by basic composition the draws
//! together are epsilon-DP when each is `epsilon / draws`-DP
//! ([`even_share`]). An average is two draws (a sum and a count), and
//! choosing groups by a noisy count of people one more unless that count
//! is itself released.

use crate::PrivacyError;

/// The most one person can add, once their rows are bounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    rows: f64,
    groups: f64,
}

impl Contribution {
    /// At most `max_rows` rows per person in all, in at most `max_groups`
    /// groups.
    pub fn per_person(max_rows: u64, max_groups: u64) -> Contribution {
        Contribution {
            rows: max_rows as f64,
            groups: max_groups as f64,
        }
    }

    /// At most `max_rows` rows per person in each of at most `max_groups`
    /// groups: `max_rows · max_groups` rows in all.
    pub fn per_group(max_rows: u64, max_groups: u64) -> Contribution {
        Contribution {
            rows: max_rows as f64 * max_groups as f64,
            groups: max_groups as f64,
        }
    }

    /// Sensitivity of a count of rows.
    pub fn rows(&self) -> f64 {
        self.rows
    }

    /// Sensitivity of a count of distinct people.
    pub fn people(&self) -> f64 {
        self.groups
    }

    /// Sensitivity of a sum of values clamped to `[lo, hi]` (at least 1, so
    /// a sum of zeros still gets noise).
    pub fn sum(&self, lo: i64, hi: i64) -> f64 {
        let bound = lo.unsigned_abs().max(hi.unsigned_abs()).max(1) as f64;
        self.rows * bound
    }
}

/// Each draw's epsilon when `epsilon` is shared evenly over `draws` draws
/// (basic composition).
pub fn even_share(epsilon: f64, draws: usize) -> Result<f64, PrivacyError> {
    if draws == 0 {
        return Err(PrivacyError::BadParameter(
            "a release with no noisy value has nothing to share epsilon over".into(),
        ));
    }
    Ok(epsilon / draws as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitivities_follow_the_bounding() {
        let p = Contribution::per_person(3, 2);
        assert_eq!((p.rows(), p.people(), p.sum(-5, 4)), (3.0, 2.0, 15.0));
        let g = Contribution::per_group(3, 2);
        assert_eq!((g.rows(), g.people(), g.sum(0, 4)), (6.0, 2.0, 24.0));
        // A sum of zeros still has sensitivity: its noise is not zero.
        assert_eq!(p.sum(0, 0), 3.0);
        // The widest bounds do not overflow.
        assert!(p.sum(i64::MIN, i64::MAX).is_finite());
    }

    #[test]
    fn epsilon_is_shared_evenly_and_never_over_nothing() {
        assert_eq!(even_share(1.0, 4), Ok(0.25));
        assert!(matches!(
            even_share(1.0, 0),
            Err(PrivacyError::BadParameter(_))
        ));
    }
}
