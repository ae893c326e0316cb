//! # airlock-privacy: noise for differentially private releases (no IO)
//!
//! Every noisy value Airlock releases is an integer plus noise drawn by
//! OpenDP's **exact** samplers (`sample_discrete_laplace`,
//! `sample_discrete_gaussian`, Canonne–Kamath–Steinke 2020) over exact
//! rationals: no floating-point Laplace, so no precision attacks
//! (Mironov 2012). Their random bits come from OpenSSL's `RAND_priv_bytes`,
//! a CSPRNG. If randomness cannot be had, sampling fails and nothing is
//! released: every function here returns an error rather than a value
//! without noise.
//!
//! Parameters (`epsilon`, sensitivities) arrive as `f64` from
//! configuration; they are converted to rationals exactly (every finite
//! `f64` is a rational) before any sampling.
//!
//! | mechanism | noise scale | privacy |
//! |---|---|---|
//! | discrete Laplace | `s = Δ₁ / ε` | ε-DP for L1 sensitivity Δ₁ |
//! | discrete Gaussian | `σ` given | ρ-zCDP with `ρ = Δ₂² / (2σ²)` |
//!
//! The sensitivities `Δ₁` of what Airlock releases and the split of a
//! query's epsilon over its draws are in [`contribution`], so executor mode
//! and crypto mode reason from one place.

pub mod contribution;

pub use contribution::{even_share, Contribution};

use dashu::integer::IBig;
use dashu::rational::RBig;
use thiserror::Error;

/// Why a noisy value could not be made. Nothing is released then.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PrivacyError {
    /// A parameter is out of range (named, with the allowed range).
    #[error("{0}")]
    BadParameter(String),
    /// The sampler failed (for example no randomness was available).
    #[error("noise could not be sampled ({0}); nothing is released")]
    Sampling(String),
}

fn rational(name: &str, v: f64) -> Result<RBig, PrivacyError> {
    if !v.is_finite() || v <= 0.0 {
        return Err(PrivacyError::BadParameter(format!(
            "{name} must be a finite number above 0"
        )));
    }
    RBig::try_from(v)
        .map_err(|_| PrivacyError::BadParameter(format!("{name} is not representable")))
}

/// A discrete Laplace mechanism with scale `s = sensitivity / epsilon`.
#[derive(Debug, Clone, PartialEq)]
pub struct Laplace {
    scale: RBig,
    scale_f64: f64,
}

impl Laplace {
    /// The mechanism that makes a query of L1 `sensitivity` ε-DP.
    pub fn for_epsilon(epsilon: f64, sensitivity: f64) -> Result<Laplace, PrivacyError> {
        let scale = rational("sensitivity", sensitivity)? / rational("epsilon", epsilon)?;
        Ok(Laplace {
            scale,
            scale_f64: sensitivity / epsilon,
        })
    }

    /// The noise scale `s`.
    pub fn scale(&self) -> f64 {
        self.scale_f64
    }

    /// `value` plus discrete Laplace noise.
    pub fn release(&self, value: i64) -> Result<i64, PrivacyError> {
        let noise = opendp::traits::samplers::sample_discrete_laplace(self.scale.clone())
            .map_err(|e| PrivacyError::Sampling(e.to_string()))?;
        Ok(saturate(IBig::from(value) + noise))
    }

    /// A number of dummies to add to a count that can only grow (dummy
    /// items the other side cannot tell from real ones), for a count of
    /// L1 sensitivity as this mechanism was made for: `shift + noise`
    /// clamped to `[0, 2·shift]`, with `shift = ceil(s·ln(1/delta))`.
    ///
    /// Reasoning: the observed `n + D` is `n + shift` plus discrete Laplace
    /// noise (epsilon-DP) except where the clamp binds; the clamp at 0 binds
    /// with probability `P(noise <= -shift) = q^shift / (1 + q) <= e^(-shift/s)
    /// <= delta` (with `q = e^(-1/s)`), and the one at `2·shift` as often,
    /// so the count is (epsilon, delta)-DP. The clamp is what keeps the
    /// number of dummies non-negative and bounded (memory and time).
    pub fn dummies(&self, delta: f64) -> Result<u64, PrivacyError> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(PrivacyError::BadParameter(
                "delta for dummies must be in (0, 1)".into(),
            ));
        }
        let shift = (self.scale_f64 * (1.0 / delta).ln()).ceil();
        if !shift.is_finite() || shift > (1u64 << 40) as f64 {
            return Err(PrivacyError::BadParameter(
                "too many dummies for this scale and delta".into(),
            ));
        }
        let shift = shift as i64;
        Ok(self.release(shift)?.clamp(0, 2 * shift) as u64)
    }

    /// The partition-selection threshold of a count of people noised by
    /// this mechanism, when each person is in at most `max_groups` groups
    /// and the groups are not public: a group is released only if its
    /// noisy count of people reaches it.
    ///
    /// A group made by one person appears with probability at most
    /// `P(1 + X >= t) <= q^(t-1)` with `q = exp(-1/b)` for the discrete
    /// Laplace of scale `b`, so `t = 1 + ceil(b ln(g / delta))` bounds the
    /// chance that any of that person's `g` groups appears by `delta`. The
    /// threshold is never below `k`, the rule's minimum of people per row.
    /// Executor mode and crypto mode both call this, so the two cannot
    /// release under different thresholds.
    pub fn partition_threshold(&self, max_groups: f64, delta: f64, k: u64) -> i64 {
        let t = 1.0 + (self.scale_f64 * (max_groups / delta).ln()).ceil();
        (t.max(k as f64)).min(i64::MAX as f64) as i64
    }

    /// The half-width `t` of the central 95% interval: `P(|noise| <= t) >= 0.95`.
    /// For the discrete Laplace with `q = exp(-1/s)`,
    /// `P(|X| > t) = 2 q^(t+1) / (1 + q)`.
    ///
    /// Closed form: the smallest `t >= 0` with `(t + 1) ln q <= ln(0.025 (1 + q))`,
    /// that is `t = ceil(s ln(40 / (1 + q))) - 1` with `ln q = -1/s`, then
    /// corrected by one step either way for rounding.
    pub fn interval95(&self) -> u64 {
        let s = self.scale_f64;
        let q = (-1.0 / s).exp();
        let tail = |t: f64| 2.0 * ((t + 1.0) * (-1.0 / s)).exp() / (1.0 + q);
        let estimate = (s * (40.0 / (1.0 + q)).ln()).ceil() - 1.0;
        if !estimate.is_finite() || estimate >= u64::MAX as f64 {
            return u64::MAX;
        }
        let mut t = estimate.max(0.0);
        if t >= 1.0 && tail(t - 1.0) <= 0.05 {
            t -= 1.0;
        }
        if tail(t) > 0.05 {
            t += 1.0;
        }
        t as u64
    }
}

/// A noisy value held to the range of `i64`: clamping is post-processing
/// (it needs no budget), and unlike an error it tells nothing about the
/// exact value.
fn saturate(v: IBig) -> i64 {
    i64::try_from(&v).unwrap_or(if v < IBig::ZERO { i64::MIN } else { i64::MAX })
}

/// A discrete Gaussian mechanism with standard deviation parameter `sigma`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    sigma: RBig,
}

impl Gaussian {
    /// The mechanism with noise parameter `sigma`.
    pub fn with_sigma(sigma: f64) -> Result<Gaussian, PrivacyError> {
        Ok(Gaussian {
            sigma: rational("sigma", sigma)?,
        })
    }

    /// `value` plus discrete Gaussian noise.
    pub fn release(&self, value: i64) -> Result<i64, PrivacyError> {
        let noise = opendp::traits::samplers::sample_discrete_gaussian(self.sigma.clone())
            .map_err(|e| PrivacyError::Sampling(e.to_string()))?;
        Ok(saturate(IBig::from(value) + noise))
    }
}

/// The falsification tester, in the style of Google's stochastic tester:
/// release a mechanism many times on two neighbouring datasets, bin the
/// outputs, and compare the frequencies of each bin against `e^epsilon`.
/// Every DP path's tests call this one copy.
pub mod tester {
    use std::collections::BTreeMap;

    /// For every bin both histograms hit at least `min` times, the ratio of
    /// frequencies (either way) must stay within `e^epsilon`, widened by six
    /// standard errors of the log ratio (a correct mechanism fails a bin
    /// with probability about 1e-9). Returns how many bins were tested and
    /// those that violate it.
    pub fn violations(
        a: &BTreeMap<i64, u64>,
        b: &BTreeMap<i64, u64>,
        epsilon: f64,
        min: u64,
    ) -> (usize, Vec<(i64, f64)>) {
        let mut tested = 0;
        let mut bad = Vec::new();
        for (bin, ca) in a {
            let cb = b.get(bin).copied().unwrap_or(0);
            if *ca < min || cb < min {
                continue;
            }
            tested += 1;
            let (ca, cb) = (*ca as f64, cb as f64);
            let se = (1.0 / ca + 1.0 / cb).sqrt();
            let log_ratio = (ca / cb).ln().abs();
            if log_ratio > epsilon + 6.0 * se {
                bad.push((*bin, log_ratio));
            }
        }
        (tested, bad)
    }

    /// The histogram of `n` draws of `draw`, in bins of `bin`.
    pub fn histogram(n: usize, bin: i64, mut draw: impl FnMut() -> i64) -> BTreeMap<i64, u64> {
        let mut h = BTreeMap::new();
        for _ in 0..n {
            *h.entry(draw().div_euclid(bin)).or_insert(0) += 1;
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closed_form_interval_equals_the_search() {
        for scale in [0.01, 0.3, 1.0, 2.5, 3.0, 7.7, 10.0, 123.4, 1000.0, 54321.0] {
            let l = Laplace::for_epsilon(1.0, scale).expect("mechanism");
            let q = (-1.0 / l.scale()).exp();
            let mut t: u64 = 0;
            while 2.0 * q.powf(t as f64 + 1.0) / (1.0 + q) > 0.05 {
                t += 1;
            }
            assert_eq!(l.interval95(), t, "scale {}", l.scale());
        }
        // Huge scales answer at once, and saturate rather than overflow.
        for scale in [1e8, 2e16, 1e300] {
            let l = Laplace::for_epsilon(1.0, scale).expect("mechanism");
            let t = l.interval95() as f64;
            assert!(
                t >= l.scale() * 2.99 || t == u64::MAX as f64,
                "scale {scale}: {t}"
            );
        }
    }

    /// Dummies added to a count: the observed count on neighbouring data
    /// (one more) stays within e^epsilon in every bin with enough mass; the
    /// dummies are never negative nor past twice the shift; and the tester
    /// catches dummies made for a third of the sensitivity.
    #[test]
    fn dummies_keep_neighbouring_counts_within_e_to_the_epsilon() {
        let n = 40_000;
        let delta: f64 = 1e-6;
        let m = Laplace::for_epsilon(1.0, 3.0).expect("mechanism");
        let shift = (m.scale() * (1.0 / delta).ln()).ceil() as i64;
        let seen = |m: &Laplace, c: i64| {
            tester::histogram(n, 1, || {
                let d = m.dummies(delta).expect("dummies") as i64;
                assert!((0..=2 * shift).contains(&d), "dummies {d} out of range");
                c + d
            })
        };
        let (tested, bad) = tester::violations(&seen(&m, 10), &seen(&m, 13), 1.0, 500);
        assert!(tested >= 3, "{tested} bins tested");
        assert!(bad.is_empty(), "bins beyond e^epsilon: {bad:?}");
        let weak = Laplace::for_epsilon(1.0, 1.0).expect("mechanism");
        let (_, bad) = tester::violations(&seen(&weak, 10), &seen(&weak, 13), 1.0, 500);
        assert!(
            !bad.is_empty(),
            "the tester passed dummies made for a third"
        );
        assert!(m.dummies(0.0).is_err() && m.dummies(1.0).is_err());
    }

    #[test]
    fn a_noisy_value_near_the_ends_saturates() {
        let l = Laplace::for_epsilon(1.0, 1e6).expect("mechanism");
        for _ in 0..50 {
            l.release(i64::MAX).expect("no error at the top");
            l.release(i64::MIN).expect("no error at the bottom");
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        for (e, s) in [
            (0.0, 1.0),
            (-1.0, 1.0),
            (f64::NAN, 1.0),
            (1.0, f64::INFINITY),
            (1.0, 0.0),
        ] {
            assert!(matches!(
                Laplace::for_epsilon(e, s),
                Err(PrivacyError::BadParameter(_))
            ));
        }
        assert!(Gaussian::with_sigma(-2.0).is_err());
    }

    /// Statistical checks with wide margins (the chance of a false failure
    /// is far below one in a million): the noise is centred, has the
    /// discrete Laplace's variance, and the 95% interval covers about 95%.
    #[test]
    fn laplace_noise_has_the_right_distribution() {
        let m = Laplace::for_epsilon(0.5, 5.0).expect("mechanism");
        assert_eq!(m.scale(), 10.0);
        let n = 20_000;
        let draws: Vec<i64> = (0..n)
            .map(|_| m.release(1_000).expect("noise") - 1_000)
            .collect();
        let mean = draws.iter().sum::<i64>() as f64 / n as f64;
        let q: f64 = (-1.0f64 / 10.0).exp();
        let var = 2.0 * q / (1.0 - q).powi(2); // about 199.2
        let emp = draws
            .iter()
            .map(|d| (*d as f64 - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        assert!(mean.abs() < 0.6, "mean {mean}");
        assert!((emp / var - 1.0).abs() < 0.08, "variance {emp} vs {var}");
        let t = m.interval95() as i64;
        let covered = draws.iter().filter(|d| d.abs() <= t).count() as f64 / n as f64;
        assert!(
            (0.94..0.965).contains(&covered),
            "coverage {covered} at t = {t}"
        );
        assert!(draws.iter().any(|d| *d != draws[0]), "noise varies");
    }

    #[test]
    fn gaussian_noise_is_centred_with_its_sigma() {
        let m = Gaussian::with_sigma(4.0).expect("mechanism");
        let n = 20_000;
        let draws: Vec<f64> = (0..n)
            .map(|_| m.release(0).expect("noise") as f64)
            .collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.25, "mean {mean}");
        assert!((var / 16.0 - 1.0).abs() < 0.08, "variance {var}");
    }
}
