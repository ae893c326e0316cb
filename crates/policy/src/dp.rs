//! Differential privacy in the configuration: a table's DP rule and the
//! collaboration's privacy budget.
//!
//! ```toml
//! [privacy]                      # the collaboration's budget
//! epsilon = 3.0                  # per period (or for ever)
//! delta = 1e-6                   # spent only by partition selection
//! refresh_days = 30              # optional
//! analysts = [{ name = "advertiser", epsilon = 2.0 }]   # optional, per analyst
//!
//! [[tables]]
//! alias = "purchases"
//! # ...
//! rule = { type = "aggregation", min_distinct_identities = 50, differential_privacy = {
//!          epsilon = 1.0,                      # what each query reading it costs
//!          max_rows_per_identity = 5, max_groups_per_identity = 2,
//!          bounds = { amount_cents = [0, 50000] },
//!          public_keys = { category = ["books", "games"] } } }
//! ```
//!
//! Instead of `epsilon`, a rule may give AWS Clean Rooms' figure
//! `users_noise_per_query = N`: the per-query epsilon is then
//! `ln(20) * max_groups_per_identity / N`, so that a released count of
//! distinct people alone has a 95% noise interval of about ±N people
//! (see `docs/privacy.md`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The DP option of an aggregation rule, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpRule {
    /// Epsilon each query reading this table costs (and its noise is made for).
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// AWS Clean Rooms' "users noise per query", instead of `epsilon`.
    #[serde(default)]
    pub users_noise_per_query: Option<f64>,
    /// Delta each query spends when its group keys are chosen by DP partition
    /// selection. 0 (the default) means group keys must be public.
    #[serde(default)]
    pub delta: f64,
    /// At most this many rows per person enter an analysis: of each table
    /// before a join (kept by the executor), and after joins.
    #[serde(default = "one")]
    pub max_rows_per_identity: u64,
    /// A person counts in at most this many groups of one analysis.
    #[serde(default = "one")]
    pub max_groups_per_identity: u64,
    /// Clamping bounds `[low, high]` (integers) per measure that may be
    /// summed or averaged.
    #[serde(default)]
    pub bounds: BTreeMap<String, [i64; 2]>,
    /// Public group keys per dimension: grouping by these columns releases
    /// exactly these keys (absent ones as noisy zeros), others never.
    #[serde(default)]
    pub public_keys: BTreeMap<String, Vec<String>>,
}

fn one() -> u64 {
    1
}

/// The largest `users_noise_per_query` or contribution bound accepted.
const MAX_BOUND: u64 = 1_000_000;

/// The strictest of the DP rules of the tables one query reads: the query
/// is bounded and noised for all of them at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrictestDp {
    /// The smallest epsilon per query.
    pub epsilon: f64,
    /// The smallest delta.
    pub delta: f64,
    /// The fewest rows per person.
    pub max_rows: u64,
    /// The fewest groups per person.
    pub max_groups: u64,
}

impl StrictestDp {
    /// Over the rules of `tables` in `collab`: `None` if none of them has a
    /// DP rule; a refusal if only some do, or if one is not configured.
    pub fn of(
        collab: &crate::Collaboration,
        tables: &[&str],
    ) -> Result<Option<StrictestDp>, crate::Refusal> {
        let tables = tables
            .iter()
            .map(|t| {
                collab.table(t).ok_or_else(|| {
                    crate::Refusal::new(
                        crate::Control::UnsupportedPlan,
                        "the query reads a table the collaboration does not configure",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::over(tables)
    }

    /// Over the rules of `tables`: `None` if none of them has a DP rule; a
    /// refusal naming the first without one if only some do. Every value
    /// is the strictest of the rules': the smallest epsilon, delta and
    /// contribution bounds.
    pub fn over<'a>(
        tables: impl IntoIterator<Item = &'a crate::ConfiguredTable>,
    ) -> Result<Option<StrictestDp>, crate::Refusal> {
        let tables: Vec<&crate::ConfiguredTable> = tables.into_iter().collect();
        let rules: Vec<Option<&DpRule>> = tables.iter().map(|t| t.dp()).collect();
        if rules.iter().all(Option::is_none) {
            return Ok(None);
        }
        if let Some(i) = rules.iter().position(Option::is_none) {
            return Err(crate::Refusal::new(
                crate::Control::DifferentialPrivacy,
                "this table has no differential privacy rule but is read together with tables that do; every table of a DP query needs one",
            )
            .table(&tables[i].alias, Some(tables[i].rule.kind())));
        }
        let rules: Vec<&DpRule> = rules.into_iter().flatten().collect();
        let min =
            |f: &dyn Fn(&DpRule) -> f64| rules.iter().map(|r| f(r)).fold(f64::INFINITY, f64::min);
        Ok(Some(StrictestDp {
            epsilon: min(&|r| r.query_epsilon()),
            delta: min(&|r| r.delta),
            max_rows: rules
                .iter()
                .map(|r| r.max_rows_per_identity)
                .min()
                .unwrap_or(1)
                .max(1),
            max_groups: rules
                .iter()
                .map(|r| r.max_groups_per_identity)
                .min()
                .unwrap_or(1)
                .max(1),
        }))
    }
}

impl DpRule {
    /// The per-query epsilon, from `epsilon` or mapped from
    /// `users_noise_per_query`.
    pub fn query_epsilon(&self) -> f64 {
        match (self.epsilon, self.users_noise_per_query) {
            (Some(e), _) => e,
            (None, Some(n)) => users_noise_to_epsilon(n, self.max_groups_per_identity),
            (None, None) => f64::NAN,
        }
    }

    /// Problems with this rule, given the table's measures and dimensions.
    pub(crate) fn problems(
        &self,
        measures: &BTreeMap<String, Vec<crate::AggFunction>>,
        dimensions: &[String],
    ) -> Vec<(Option<String>, String)> {
        let mut out = Vec::new();
        let mut add = |c: Option<&str>, m: String| out.push((c.map(str::to_string), m));
        match (self.epsilon, self.users_noise_per_query) {
            (Some(_), Some(_)) => add(
                None,
                "differential_privacy: give either epsilon or users_noise_per_query, not both"
                    .into(),
            ),
            (None, None) => add(
                None,
                "differential_privacy: epsilon (or users_noise_per_query) is required".into(),
            ),
            (Some(e), None) if !(e.is_finite() && e > 0.0 && e <= 100.0) => add(
                None,
                "differential_privacy.epsilon must be above 0 and at most 100".into(),
            ),
            (None, Some(n)) if !(n.is_finite() && n >= 1.0 && n <= MAX_BOUND as f64) => add(
                None,
                format!(
                    "differential_privacy.users_noise_per_query must be between 1 and {MAX_BOUND}"
                ),
            ),
            _ => {}
        }
        if !(self.delta.is_finite() && (0.0..0.01).contains(&self.delta)) {
            add(
                None,
                "differential_privacy.delta must be at least 0 and below 0.01".into(),
            );
        }
        for (name, v) in [
            ("max_rows_per_identity", self.max_rows_per_identity),
            ("max_groups_per_identity", self.max_groups_per_identity),
        ] {
            if v == 0 || v > MAX_BOUND {
                add(
                    None,
                    format!("differential_privacy.{name} must be between 1 and {MAX_BOUND}"),
                );
            }
        }
        for (col, [lo, hi]) in &self.bounds {
            match measures.get(col) {
                None => add(
                    Some(col),
                    "differential_privacy.bounds names a column that is not a measure".into(),
                ),
                Some(_) if lo > hi => add(
                    Some(col),
                    "differential_privacy.bounds: low is above high".into(),
                ),
                Some(_) if lo.unsigned_abs().max(hi.unsigned_abs()) > 1u64 << 40 => add(
                    Some(col),
                    "differential_privacy.bounds must lie within ±2^40".into(),
                ),
                Some(_) => {}
            }
        }
        for (col, funcs) in measures {
            let needs = funcs
                .iter()
                .any(|f| matches!(f, crate::AggFunction::Sum | crate::AggFunction::Avg));
            if needs && !self.bounds.contains_key(col) {
                add(
                    Some(col),
                    "differential_privacy: a measure that may be summed or averaged needs bounds = [low, high]".into(),
                );
            }
        }
        for (col, keys) in &self.public_keys {
            if !dimensions.contains(col) {
                add(
                    Some(col),
                    "differential_privacy.public_keys names a column that is not a dimension"
                        .into(),
                );
            } else if keys.is_empty() || keys.len() > 10_000 {
                add(
                    Some(col),
                    "differential_privacy.public_keys must list between 1 and 10000 keys".into(),
                );
            } else if keys.iter().collect::<std::collections::BTreeSet<_>>().len() != keys.len() {
                // A key listed twice would be released twice, with two draws of noise.
                add(
                    Some(col),
                    "differential_privacy.public_keys lists a key twice".into(),
                );
            }
        }
        out
    }
}

/// AWS Clean Rooms' "users noise per query" `n` mapped to a per-query
/// epsilon: the discrete Laplace noise on a count of distinct people (L1
/// sensitivity `groups`) has a 95% half-width of about `scale * ln(20)`,
/// so `epsilon = ln(20) * groups / n` makes that half-width `n`.
pub fn users_noise_to_epsilon(n: f64, groups: u64) -> f64 {
    20f64.ln() * groups as f64 / n
}

/// The collaboration's privacy budget, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    /// Epsilon that may be spent in total (per period).
    pub epsilon: f64,
    /// Delta that may be spent in total (per period).
    #[serde(default)]
    pub delta: f64,
    /// The budget is fresh again every this many days; never if absent.
    #[serde(default)]
    pub refresh_days: Option<u32>,
    /// Budgets of single analysts, within the collaboration's.
    #[serde(default)]
    pub analysts: Vec<AnalystBudget>,
}

/// One analyst's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalystBudget {
    /// The member.
    pub name: String,
    /// Epsilon that member may spend (per period).
    pub epsilon: f64,
    /// Delta that member may spend (per period).
    #[serde(default)]
    pub delta: f64,
}

impl PrivacySection {
    /// The refresh period in milliseconds, if any.
    pub fn refresh_period_ms(&self) -> Option<i64> {
        self.refresh_days.map(|d| i64::from(d) * 86_400_000)
    }

    pub(crate) fn problems(&self, members: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let eps_ok = |e: f64| e.is_finite() && (0.0..=1e6).contains(&e);
        let delta_ok = |d: f64| d.is_finite() && (0.0..1.0).contains(&d);
        if !eps_ok(self.epsilon) {
            out.push("privacy.epsilon must be between 0 and 1000000".to_string());
        }
        if !delta_ok(self.delta) {
            out.push("privacy.delta must be at least 0 and below 1".to_string());
        }
        if self.refresh_days == Some(0) {
            out.push("privacy.refresh_days must be at least 1".to_string());
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &self.analysts {
            if !members.contains(&a.name) {
                out.push(format!(
                    "privacy.analysts: '{}' is not a declared member",
                    a.name
                ));
            }
            if !seen.insert(a.name.as_str()) {
                out.push(format!("privacy.analysts: '{}' listed twice", a.name));
            }
            if !eps_ok(a.epsilon) || !delta_ok(a.delta) {
                out.push(format!(
                    "privacy.analysts: '{}' needs 0 <= epsilon <= 1000000 and 0 <= delta < 1",
                    a.name
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_noise_maps_to_epsilon() {
        let e = users_noise_to_epsilon(20f64.ln(), 1);
        assert!((e - 1.0).abs() < 1e-12);
        assert!((users_noise_to_epsilon(10.0, 2) - 0.599_146_454_710_805).abs() < 1e-9);
    }
}
