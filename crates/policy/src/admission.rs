//! Decisions the hub's guard and every node both make, in one place.
//!
//! The guard checks a query before anything is sent; each node checks its
//! own part again from its own copy of the policy, whatever the hub says.
//! Two copies of a decision would drift (one already had: a crypto-mode node
//! ran a template for an analyst the template did not name), so each lives
//! here once and both sides call it:
//!
//! - [`strictest_k`]: the fewest distinct people per released row, the
//!   largest of the tables' minimums;
//! - [`Collaboration::check_purpose`]: a purpose the collaboration declares;
//! - [`Collaboration::admit_run`]: a template run's template by hash, the
//!   member's approval, the analysts it names, its purpose, the values it
//!   admits.
//!
//! The strictest of the DP rules is [`crate::StrictestDp`], and the
//! partition-selection threshold `airlock_privacy::partition_threshold`.

use airlock_protocol::TemplateRun;

use crate::{Collaboration, ConfiguredTable, Control, Refusal, Template};

/// The fewest distinct people per released row when no rule says more.
pub const DEFAULT_MIN_DISTINCT: u64 = 2;

/// The k a query over `tables` releases under: the largest of their
/// `min_distinct_identities` (tables under the list rule have none), and
/// [`DEFAULT_MIN_DISTINCT`] if none has one.
pub fn strictest_k<'a>(tables: impl IntoIterator<Item = &'a ConfiguredTable>) -> u64 {
    tables
        .into_iter()
        .filter_map(ConfiguredTable::min_distinct_identities)
        .max()
        .unwrap_or(DEFAULT_MIN_DISTINCT)
}

/// Why a template run is not admitted.
#[derive(Debug, Clone, PartialEq)]
pub enum RunRefusal {
    /// A rule refuses it (no such template, no approval, an analyst the
    /// template does not name).
    Refused(Refusal),
    /// Its values are not the template's parameters (the caller's input).
    BadValues(String),
}

impl Collaboration {
    /// A purpose, if given, must be one the collaboration declares.
    pub fn check_purpose(&self, purpose: Option<&str>) -> Result<(), Refusal> {
        match purpose {
            Some(p) if !self.config().collaboration.purposes.iter().any(|d| d == p) => {
                Err(Refusal::new(
                    Control::Purpose,
                    format!(
                        "'{}' is not one of the collaboration's purposes",
                        p.chars().take(64).collect::<String>()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The template `run` is of, admitted for `querier`, checked in this
    /// order: the template with the run's hash; whose analysts (if it names
    /// any) include `querier`; whose purpose is `purpose` if one is given
    /// (a template serves its own purpose and no other: the purpose decides
    /// which consent applies on each node); whose parameters the run's
    /// values fit; approved by `approver` if given (a node passes its own
    /// member; the hub's guard checks every owner's approval last, after
    /// planning, so the two refuse the same run for the same reason).
    pub fn admit_run(
        &self,
        run: &TemplateRun,
        querier: &str,
        purpose: Option<&str>,
        approver: Option<&str>,
    ) -> Result<&Template, RunRefusal> {
        let refused = |control, why: String| RunRefusal::Refused(Refusal::new(control, why));
        let Some(t) = self
            .config()
            .templates
            .iter()
            .find(|t| t.hash() == run.hash)
        else {
            return Err(refused(
                Control::TemplateApproval,
                format!(
                    "no template of this collaboration has the hash of the run of '{}'",
                    run.name.chars().take(64).collect::<String>()
                ),
            ));
        };
        if !t.analysts.is_empty() && !t.analysts.iter().any(|a| a == querier) {
            return Err(refused(
                Control::CustomRule,
                format!(
                    "template '{}' may be run only by the analysts it names",
                    t.name
                ),
            ));
        }
        if purpose.is_some_and(|p| p != t.purpose) {
            return Err(refused(
                Control::Purpose,
                format!(
                    "template '{}' serves the purpose '{}' and no other",
                    t.name, t.purpose
                ),
            ));
        }
        t.admits(run).map_err(RunRefusal::BadValues)?;
        if let Some(member) = approver {
            if !self.approves(member, &run.hash) {
                return Err(refused(
                    Control::TemplateApproval,
                    "this node's member has not approved the template at this hash".into(),
                ));
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use airlock_protocol::Literal;

    use super::*;

    const TEXT: &str = r#"
[collaboration]
name = "demo"
secret_file = "collaboration.key"
purposes = ["measurement", "activation"]

[[members]]
name = "publisher"
abilities = ["provide"]

[[members]]
name = "advertiser"
abilities = ["query", "provide"]

[[members]]
name = "agency"
abilities = ["query"]

[[datasets]]
name = "a"
owner = "publisher"

[[datasets]]
name = "p"
owner = "advertiser"

[[tables]]
alias = "audience"
dataset = "a"
identity = "email"
join = ["email"]
dimensions = ["segment"]
rule = { type = "aggregation", min_distinct_identities = 50 }

[[tables]]
alias = "purchases"
dataset = "p"
identity = "email"
join = ["email"]
dimensions = ["category"]
rule = { type = "aggregation", min_distinct_identities = 10 }

[[tables]]
alias = "audience_list"
dataset = "a"
identity = "email"
join = ["email"]
dimensions = ["segment"]
rule = { type = "list", list_columns = ["segment"] }

[[templates]]
name = "by_segment"
purpose = "measurement"
analysts = ["advertiser"]
sql = "SELECT a.segment, COUNT(DISTINCT a.email) FROM audience a WHERE a.segment = $segment GROUP BY a.segment"
[templates.params.segment]
type = "string"
allowed = ["sports", "news"]
"#;

    fn collab() -> Collaboration {
        Collaboration::from_toml(TEXT, "c.toml").expect("valid")
    }

    #[test]
    fn k_is_the_largest_minimum_of_the_tables_read() {
        let c = collab();
        let t = |names: &[&str]| strictest_k(names.iter().map(|n| c.table(n).expect("configured")));
        assert_eq!(t(&["audience", "purchases"]), 50);
        assert_eq!(t(&["purchases"]), 10);
        assert_eq!(t(&["audience_list"]), DEFAULT_MIN_DISTINCT);
        assert_eq!(t(&[]), DEFAULT_MIN_DISTINCT);
    }

    #[test]
    fn only_declared_purposes_pass() {
        let c = collab();
        assert!(c.check_purpose(None).is_ok());
        assert!(c.check_purpose(Some("activation")).is_ok());
        let r = c.check_purpose(Some("resale")).expect_err("undeclared");
        assert_eq!(r.control, Control::Purpose);
    }

    #[test]
    fn a_run_is_admitted_only_when_every_check_passes_and_in_order() {
        let mut c = collab();
        let t = c.template("by_segment").expect("template").clone();
        let run = |hash: &str, segment: &str| TemplateRun {
            name: "by_segment".into(),
            hash: hash.into(),
            params: BTreeMap::from([("segment".into(), Literal::Str(segment.into()))]),
        };
        let good = run(&t.hash(), "sports");
        let outcome = |c: &Collaboration, r: &TemplateRun, q: &str, p: Option<&str>, a| match c
            .admit_run(r, q, p, a)
        {
            Ok(_) => "admitted".to_string(),
            Err(RunRefusal::Refused(r)) => format!("{:?}", r.control),
            Err(RunRefusal::BadValues(_)) => "bad".to_string(),
        };
        let m = Some("measurement");
        assert_eq!(outcome(&c, &good, "advertiser", m, None), "admitted");
        assert_eq!(outcome(&c, &good, "advertiser", None, None), "admitted");
        // The member's approval is checked when asked for, and last.
        assert_eq!(
            outcome(&c, &good, "advertiser", m, Some("publisher")),
            "TemplateApproval"
        );
        assert_eq!(
            outcome(
                &c,
                &run(&t.hash(), "politics"),
                "advertiser",
                m,
                Some("publisher")
            ),
            "bad"
        );
        // A validated collaboration is not edited: a new one is validated.
        let mut config = c.config().clone();
        config.approvals.insert("publisher".into(), vec![t.hash()]);
        c = Collaboration::validate(config, c.file()).expect("still valid");
        assert_eq!(
            outcome(&c, &good, "advertiser", m, Some("publisher")),
            "admitted"
        );
        // Hash, then analysts, then purpose, then values.
        let wrong = run(&"0".repeat(64), "politics");
        assert_eq!(
            outcome(&c, &wrong, "agency", Some("activation"), None),
            "TemplateApproval"
        );
        let bad = run(&t.hash(), "politics");
        assert_eq!(
            outcome(&c, &bad, "agency", Some("activation"), None),
            "CustomRule"
        );
        assert_eq!(
            outcome(&c, &bad, "advertiser", Some("activation"), None),
            "Purpose"
        );
        assert_eq!(outcome(&c, &bad, "advertiser", m, None), "bad");
    }

    #[test]
    fn the_strictest_dp_names_the_table_without_a_rule() {
        let text = TEXT.replacen(
            "rule = { type = \"aggregation\", min_distinct_identities = 50 }",
            "rule = { type = \"aggregation\", min_distinct_identities = 50, differential_privacy = { epsilon = 1.0 } }",
            1,
        )
        .replacen("[[members]]", "[privacy]\nepsilon = 3.0\n\n[[members]]", 1);
        let c = Collaboration::from_toml(&text, "c.toml").expect("valid");
        let r = crate::StrictestDp::of(&c, &["audience", "purchases"]).expect_err("mixed");
        assert_eq!(r.control, Control::DifferentialPrivacy);
        assert_eq!(r.table.as_deref(), Some("purchases"));
        let one = crate::StrictestDp::of(&c, &["audience"])
            .expect("one rule")
            .expect("dp");
        assert_eq!(one.epsilon, 1.0);
        assert_eq!(crate::StrictestDp::of(&c, &["purchases"]), Ok(None));
    }
}
