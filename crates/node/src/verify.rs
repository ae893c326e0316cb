//! The node's own check of every fragment it receives, whoever sent it.
//!
//! A node does not trust the hub: it refuses a fragment for another
//! collaboration, for a table it does not own, from a querier without the
//! `query` ability, asking for a raw identity or join column, a column that
//! is not configured, or a predicate on anything but a dimension, and any
//! such fragment at all in a crypto-mode collaboration.

use airlock_policy::{
    Ability, AnalysisRule, Collaboration, ColumnRole, Control, Mode, Refusal, RunRefusal,
};
use airlock_protocol::{Fragment, ScanFragment, TemplateRun, Treatment};

use crate::NodeError;

fn refuse(
    control: Control,
    collab: &Collaboration,
    table: &str,
    column: Option<&str>,
    reason: &str,
) -> NodeError {
    let rule = collab.table(table).map(|t| t.rule.kind());
    let mut r = Refusal::new(control, reason).table(table, rule);
    if let Some(c) = column {
        r = r.column(c);
    }
    NodeError::Refused(r)
}

/// A template run admitted by this node's own policy for `querier` (one
/// home: [`Collaboration::admit_run`], with this node's member's approval),
/// refusals naming `table`.
pub(crate) fn admit_run(
    collab: &Collaboration,
    member: &str,
    run: &TemplateRun,
    querier: &str,
    purpose: Option<&str>,
    table: &str,
) -> Result<(), NodeError> {
    match collab.admit_run(run, querier, purpose, Some(member)) {
        Ok(_) => Ok(()),
        Err(RunRefusal::Refused(r)) => {
            let rule = collab.table(table).map(|t| t.rule.kind());
            Err(NodeError::Refused(r.table(table, rule)))
        }
        Err(RunRefusal::BadValues(why)) => Err(NodeError::BadFragment(why)),
    }
}

/// A query id (the key of the node's ledger debits): 1 to 64
/// ASCII letters, digits, `-` or `_` (the hub's are 32 hex characters).
pub(crate) fn query_id(id: &str) -> Result<(), NodeError> {
    if (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(NodeError::BadFragment(
            "the fragment has no query id of 1 to 64 letters, digits, '-' or '_'".into(),
        ))
    }
}

/// Checks that hold for every fragment.
pub(crate) fn common(collab: &Collaboration, member: &str, f: &Fragment) -> Result<(), NodeError> {
    if f.collaboration() != collab.name() {
        return Err(NodeError::BadFragment(
            "the fragment is for another collaboration".into(),
        ));
    }
    query_id(f.query())?;
    // In crypto mode no executor is trusted: this node's rows leave it
    // only through its side of the private set intersection, whatever the
    // hub asks (a scan or analysis fragment would hand them to the hub).
    if collab.config().collaboration.mode == Mode::Crypto {
        return Err(refuse(
            Control::CryptoMode,
            collab,
            f.table(),
            None,
            "this collaboration is in crypto mode: its node answers only crypto-mode steps, no executor fragment",
        ));
    }
    if collab.owner_of(f.table()) != Some(member) {
        return Err(refuse(
            Control::FragmentNotPermitted,
            collab,
            f.table(),
            None,
            "this node does not hold that table",
        ));
    }
    let querier = match f {
        Fragment::Analysis { querier, .. } => querier,
        Fragment::Scan(s) => &s.querier,
    };
    if !collab.has_ability(querier, Ability::Query) {
        return Err(NodeError::Refused(Refusal::new(
            Control::Ability,
            "the querier is not a member with the 'query' ability",
        )));
    }
    collab
        .check_purpose(f.purpose())
        .map_err(NodeError::Refused)?;
    // This member's own rule and its own approvals, from its own copy of
    // the policy: whatever the hub says.
    let Some(table) = collab.table(f.table()) else {
        return Err(NodeError::BadFragment("unknown table".into()));
    };
    if let Err(why) = table.rule.admits(querier, f.template().is_some()) {
        return Err(refuse(Control::CustomRule, collab, f.table(), None, why));
    }
    if let Some(run) = f.template() {
        admit_run(collab, member, run, querier, f.purpose(), f.table())?;
    }
    Ok(())
}

/// Checks a scan fragment against the table's roles and rule.
pub(crate) fn scan(
    collab: &Collaboration,
    member: &str,
    s: &ScanFragment,
) -> Result<(), NodeError> {
    let Some(table) = collab.table(&s.table) else {
        return Err(NodeError::BadFragment("unknown table".into()));
    };
    let t = s.table.as_str();
    let mut carries_identity = false;
    let mut seen = std::collections::HashSet::new();
    for c in &s.columns {
        let name = c.name.as_str();
        if !seen.insert(name) {
            return Err(NodeError::BadFragment("a column is asked for twice".into()));
        }
        match (table.role(name), &c.treatment) {
            (None, _) => {
                return Err(refuse(
                    Control::FragmentNotPermitted,
                    collab,
                    t,
                    Some(name),
                    "not a configured column of this table",
                ))
            }
            (Some(ColumnRole::Identity { .. } | ColumnRole::Join), Treatment::Raw) => {
                return Err(refuse(
                    Control::FragmentNotPermitted,
                    collab,
                    t,
                    Some(name),
                    "identity and join columns leave a node only as pseudonyms",
                ))
            }
            (
                Some(role @ (ColumnRole::Identity { .. } | ColumnRole::Join)),
                Treatment::Pseudonym { contract },
            ) => {
                if *contract != table.contract(name) {
                    return Err(refuse(
                        Control::FragmentNotPermitted,
                        collab,
                        t,
                        Some(name),
                        "wrong join contract for this column",
                    ));
                }
                carries_identity |= matches!(role, ColumnRole::Identity { .. });
            }
            (Some(_), Treatment::Pseudonym { .. }) => {
                return Err(refuse(
                    Control::FragmentNotPermitted,
                    collab,
                    t,
                    Some(name),
                    "only identity and join columns are pseudonymised",
                ))
            }
            (Some(ColumnRole::Dimension | ColumnRole::Measure(_)), Treatment::Raw) => {
                if let AnalysisRule::List { list_columns } = &table.rule {
                    if s.querier != member {
                        return Err(refuse(
                            Control::ListRule,
                            collab,
                            t,
                            Some(name),
                            "under the list rule no raw column leaves for another member's list",
                        ));
                    }
                    if !list_columns.iter().any(|l| l == name) {
                        return Err(refuse(
                            Control::ListRule,
                            collab,
                            t,
                            Some(name),
                            "not a list column of this table",
                        ));
                    }
                }
            }
        }
    }
    if matches!(
        table.rule,
        AnalysisRule::Aggregation { .. } | AnalysisRule::Custom { .. }
    ) && !carries_identity
    {
        return Err(refuse(
            Control::FragmentNotPermitted,
            collab,
            t,
            Some(&table.identity),
            "under the aggregation rule a fragment must carry the identity pseudonym so the threshold can be applied",
        ));
    }
    if let Some(p) = &s.filter {
        for name in p.columns() {
            if table.role(name) != Some(ColumnRole::Dimension) {
                return Err(refuse(
                    Control::RestrictedFilter,
                    collab,
                    t,
                    Some(name),
                    "a node filters only on dimension columns",
                ));
            }
        }
    }
    Ok(())
}
