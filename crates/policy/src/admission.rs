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
            Some(p) if !self.config.collaboration.purposes.iter().any(|d| d == p) => {
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
        let Some(t) = self.config.templates.iter().find(|t| t.hash() == run.hash) else {
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
