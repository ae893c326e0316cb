//! Differential privacy of a crypto-mode query from the node's own rules:
//! the epsilon split, the noise of each value and the dummies.

use airlock_policy::{Control, Refusal};
use airlock_protocol::{CryptoFragment, CryptoOutput, CryptoRole};

use super::session::*;
use crate::{Node, NodeError};

impl Node {
    /// The query's differential privacy, if both tables have a DP rule in
    /// this node's own policy.
    pub(super) fn crypto_dp(&self, f: &CryptoFragment) -> Result<Option<CryptoDp>, NodeError> {
        let Some(strictest) =
            airlock_policy::StrictestDp::of(&self.collab, &[&f.asker.table, &f.responder.table])?
        else {
            return Ok(None);
        };
        // First: it refuses rules this query cannot run under (a delta of 0).
        let cost = airlock_guard::crypto_cost(&self.collab, f)?.ok_or(NodeError::Execution)?;
        let (epsilon, delta) = (strictest.epsilon, strictest.delta);
        let (max_rows, max_groups) = (strictest.max_rows, strictest.max_groups);
        let avg = f.outputs.iter().any(|(_, o)| *o == CryptoOutput::Avg);
        let bounds = match &f.measure {
            None => None,
            Some(m) => {
                let rule = self
                    .collab
                    .table(&f.measure_side().table)
                    .and_then(|t| t.dp())
                    .ok_or(NodeError::Execution)?;
                match rule.bounds.get(m) {
                    Some([lo, hi]) if *lo >= 0 => Some((*lo, *hi)),
                    _ => {
                        return Err(NodeError::Refused(
                            Refusal::new(
                                Control::DifferentialPrivacy,
                                "under differential privacy a summed measure needs non-negative clamping bounds in the rule",
                            )
                            .table(&f.measure_side().table, None)
                            .column(m),
                        ))
                    }
                }
            }
        };
        // Epsilon split evenly over the noisy values of each group and the
        // dummies. By the responder's groups three more: one person moves
        // the observed overlap (matched and unmatched dummies of S, one
        // each) and the matcher's count (its own dummies); the dummies of L
        // hide the grouper's count, which a person of the overlap leaves as
        // the matched dummies make it look. By the asker's groups two more:
        // the dummies of message 1 (the responder's count) and of L (the
        // asker's); the overlap's size is not hidden there (no matching
        // dummies, `airlock_psi::tagged`).
        let dummy_shares = match f.groups_of {
            CryptoRole::Responder => 3,
            CryptoRole::Asker => 2,
        };
        let n =
            1 + usize::from(bounds.is_some()) + usize::from(bounds.is_some() && avg) + dummy_shares;
        let each =
            airlock_privacy::even_share(epsilon, n).map_err(|e| NodeError::Local(e.to_string()))?;
        // Each side bounds its own rows in each group
        // (`airlock_privacy::contribution` has the reasoning).
        let person = airlock_privacy::Contribution::per_group(max_rows, max_groups);
        let noise = |sensitivity: f64| {
            airlock_privacy::Laplace::for_epsilon(each, sensitivity)
                .map_err(|e| NodeError::Local(e.to_string()))
        };
        let count = noise(person.people())?;
        let sum = match bounds {
            Some((lo, hi)) => Some(noise(person.sum(lo, hi))?),
            None => None,
        };
        let rows = if bounds.is_some() && avg {
            Some(noise(person.rows())?)
        } else {
            None
        };
        // Four draws of a quarter of delta each (the matcher's dummies and
        // the grouper's three kinds).
        let dummies = Some((noise(1.0)?, delta / 4.0));
        Ok(Some(CryptoDp {
            dummies,
            cost,
            max_rows: usize::try_from(max_rows).unwrap_or(usize::MAX),
            max_groups: max_groups as usize,
            bounds,
            count,
            sum,
            rows,
        }))
    }

    /// The dummies' mechanism: under differential privacy the query's
    /// (its share of epsilon, a quarter of delta); without, a discrete
    /// Laplace of scale k (one query's counts are uncertain by about k;
    /// repeated queries average it away, which only differential privacy
    /// bounds) and delta 1e-9.
    pub(super) fn dummy_noise(
        &self,
        f: &CryptoFragment,
        dp: Option<&CryptoDp>,
    ) -> Result<(airlock_privacy::Laplace, f64), NodeError> {
        match dp.and_then(|d| d.dummies.clone()) {
            Some(d) => Ok(d),
            None => Ok((
                airlock_privacy::Laplace::for_epsilon(1.0, self.crypto_k(f) as f64)
                    .map_err(|e| NodeError::Local(e.to_string()))?,
                1e-9,
            )),
        }
    }
}

impl CryptoDp {
    /// The noise of one released group: its
    /// count's, then one per value the query needs (the measure's sum, and
    /// for an average the row count), all added under encryption.
    pub(super) fn noise_all(&self) -> Result<Vec<i64>, airlock_psi::PsiError> {
        let count = self
            .count
            .release(0)
            .map_err(|e| airlock_psi::PsiError::Noise(e.to_string()))?;
        Ok(std::iter::once(count).chain(self.value_noise()?).collect())
    }

    /// The noise added under encryption to each value the query needs (the
    /// measure's sum, and for an average the row count).
    pub(super) fn value_noise(&self) -> Result<Vec<i64>, airlock_psi::PsiError> {
        self.sum
            .iter()
            .chain(self.rows.iter())
            .map(|m| {
                m.release(0)
                    .map_err(|e| airlock_psi::PsiError::Noise(e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_privacy::tester::{histogram, violations};

    /// A crypto-mode DP release as `crypto_dp` builds it for one group per
    /// person and one row per person (g = m = 1), a measure bounded by
    /// `[0, hi]` and epsilon 1 per value; the sum's noise is made for
    /// sensitivity `made_for`.
    fn release_of(hi: i64, made_for: i64) -> CryptoDp {
        let noise = |s: i64| airlock_privacy::Laplace::for_epsilon(1.0, s as f64).expect("noise");
        CryptoDp {
            max_rows: 1,
            max_groups: 1,
            bounds: Some((0, hi)),
            count: noise(1),
            sum: Some(noise(made_for)),
            rows: None,
            dummies: None,
            cost: airlock_guard::dp::DpCost {
                epsilon: 2.0,
                delta: 0.0,
            },
        }
    }

    /// The noised path of crypto mode, through the stochastic tester: the
    /// responder's release of a group from its exact count, and the noise
    /// it adds to a sum under encryption (the protocol adds it exactly,
    /// `crates/psi/tests/protocol.rs`), on neighbouring data (one person
    /// more, whose value is the bound), stay within e^epsilon; and the
    /// tester catches noise made for a third of the sensitivity.
    #[test]
    fn crypto_releases_on_neighbouring_data_stay_within_e_to_the_epsilon() {
        let n = 40_000;
        let hi = 60;
        let dp = release_of(hi, hi);
        let draw = |dp: &CryptoDp| dp.noise_all().expect("noise");
        let count = |c: i64| histogram(n, 1, || c + draw(&dp)[0]);
        let (tested, bad) = violations(&count(100), &count(101), 1.0, 500);
        assert!(tested >= 3, "count: {tested} bins tested");
        assert!(bad.is_empty(), "count: bins beyond e^epsilon: {bad:?}");
        let sum = |dp: &CryptoDp, s: i64| histogram(n, hi / 2, || s + draw(dp)[1]);
        let (tested, bad) = violations(&sum(&dp, 5_000), &sum(&dp, 5_000 + hi), 1.0, 500);
        assert!(tested >= 3, "sum: {tested} bins tested");
        assert!(bad.is_empty(), "sum: bins beyond e^epsilon: {bad:?}");
        let weak = release_of(hi, hi / 3);
        let (_, bad) = violations(&sum(&weak, 5_000), &sum(&weak, 5_000 + hi), 1.0, 500);
        assert!(!bad.is_empty(), "the tester passed noise made for hi / 3");
    }
}
