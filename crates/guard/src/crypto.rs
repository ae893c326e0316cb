//! Crypto mode: the query shapes two nodes can compute by private set
//! intersection with no executor, and the [`CryptoFragment`] each node
//! receives. Every query is first checked like any other (rules, k, roles,
//! templates, functions); this decides whether crypto mode can compute it.

use std::collections::HashMap;

use airlock_policy::{Control, Refusal};
use airlock_protocol::{CryptoFragment, CryptoOutput, CryptoRole, CryptoSide, TemplateRun};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::LogicalPlan;

use crate::check::{Checked, TableInfo};
use crate::dp::DpCost;
use crate::{internal, split, GuardError, QueryKind};

/// What a crypto-mode query costs under differential privacy: epsilon and
/// delta as the rules say. Delta always: dummies hide the sizes of the
/// protocol's messages (the overlap's size and both nodes' counts) with
/// (epsilon, delta)-DP. Every group is released (none is chosen by its
/// count, which neither node sees), so the group columns need public keys
/// ([`public_groups`]). Hub and nodes call this one function.
pub fn cost(
    collab: &airlock_policy::Collaboration,
    f: &CryptoFragment,
) -> Result<Option<DpCost>, Refusal> {
    let Some(dp) = airlock_policy::StrictestDp::of(collab, &[&f.asker.table, &f.responder.table])?
    else {
        return Ok(None);
    };
    if dp.delta <= 0.0 {
        return Err(Refusal::new(
            Control::DifferentialPrivacy,
            "in crypto mode, dummies hide the sizes of the protocol's messages with (epsilon, delta)-DP: the rules need a delta above 0",
        ));
    }
    public_groups(collab, f)?;
    Ok(Some(DpCost::of(&dp, true)))
}

/// Under differential privacy every group is released (none is chosen by
/// its count: neither node sees one): the group columns need public keys
/// in the grouped table's rule, and these are the groups, one list per
/// column. `None` without differential privacy. Hub and nodes call this
/// one function.
pub fn public_groups(
    collab: &airlock_policy::Collaboration,
    f: &CryptoFragment,
) -> Result<Option<Vec<Vec<String>>>, Refusal> {
    let table = &f.grouped_side().table;
    let Some(rule) = collab.table(table).and_then(|t| t.dp()) else {
        return Ok(None);
    };
    f.group_columns
        .iter()
        .map(|g| {
            rule.public_keys.get(g).cloned().ok_or_else(|| {
                Refusal::new(
                    Control::DifferentialPrivacy,
                    "under differential privacy, crypto mode releases every group: the group column needs public keys in the rule",
                )
                .table(table, None)
                .column(g)
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Whose measure crypto mode may sum: the matcher's (the side not grouped
/// by), which is the asker's. The other member's values would reach the
/// sums through the asker's node, which re-pairs each of them with a match
/// (the grouper's message 2) and could replace them (a verifiable shuffle
/// is not built), so by the asker's groups, or with a measure of the
/// responder's, a query is refused. Hub and nodes call this one function.
pub fn orientation(f: &CryptoFragment) -> Result<(), Refusal> {
    if f.measure.is_some() && f.groups_of == CryptoRole::Asker {
        return Err(Refusal::new(
            Control::CryptoMode,
            format!("{SHAPES}; a SUM or AVG must be of the asking member's measure, by the other member's dimensions or none (the other member's values would pass through the asking member's node, which could replace them)"),
        ));
    }
    Ok(())
}

const SHAPES: &str = "crypto mode supports only the overlap count (COUNT(DISTINCT identity) over an equality join on the identity), the same grouped by dimensions of one member's table, and SUM or AVG of a measure of the asking member's table over the overlap, grouped by the other member's dimensions or not at all";

fn refuse(why: &str) -> GuardError {
    GuardError::Refused(Refusal::new(
        Control::CryptoMode,
        format!("{SHAPES}; {why}"),
    ))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn shape(
    state: &datafusion::execution::SessionState,
    tables: &HashMap<String, TableInfo>,
    collaboration: &str,
    checked: &Checked,
    plan: &LogicalPlan,
    querier: &str,
    run: Option<&TemplateRun>,
    purpose: Option<&str>,
) -> Result<CryptoFragment, GuardError> {
    let (QueryKind::Aggregation { .. }, Some(shape)) = (checked.kind, &checked.shape) else {
        return Err(refuse("it is not an aggregation"));
    };
    let [a, b] = checked.scans.as_slice() else {
        return Err(refuse(
            "it must read exactly two tables, one of each member",
        ));
    };
    if a.owner == b.owner {
        return Err(refuse("the two tables must belong to two members"));
    }
    let (asker, responder) = if a.owner == querier {
        (0usize, 1usize)
    } else if b.owner == querier {
        (1, 0)
    } else {
        return Err(refuse("the asking member must own one of the two tables"));
    };
    let joined = |x: usize, y: usize| {
        checked.identity_joins.contains(&(x, y)) || checked.identity_joins.contains(&(y, x))
    };
    if shape.joins.len() != 1 || !joined(0, 1) {
        return Err(refuse(
            "the two tables must be joined once, on their identity",
        ));
    }
    if !shape.above.is_empty() {
        return Err(refuse(&format!(
            "{} is not supported",
            shape.above.join(", ")
        )));
    }
    // All groups on one side: the asker's (the counts protocol, summing
    // the responder's measure) or the responder's (the protocol by the
    // responder's groups, summing the asker's measure). Ungrouped, the
    // measure's side decides.
    let mut group_scan = None;
    let mut group_columns = Vec::new();
    for g in &shape.groups {
        match g {
            Some((scan, column)) if group_scan.is_none_or(|s| s == *scan) => {
                group_scan = Some(*scan);
                group_columns.push(column.clone());
            }
            _ => {
                return Err(refuse(
                    "it groups by something other than dimension columns of one member's table",
                ))
            }
        }
    }
    let mut measure: Option<(usize, String)> = None;
    let mut aggs = Vec::new();
    for (name, distinct, arg) in &shape.aggregates {
        let out = match (name.as_str(), distinct, arg) {
            ("count", true, Some((_, _, true))) => CryptoOutput::Count,
            ("sum" | "avg", false, Some((scan, column, false)))
                if group_scan.is_none_or(|g| g != *scan) =>
            {
                if measure.as_ref().is_some_and(|m| m != &(*scan, column.clone())) {
                    return Err(refuse("it sums or averages more than one measure"));
                }
                measure = Some((*scan, column.clone()));
                if name == "sum" {
                    CryptoOutput::Sum
                } else {
                    CryptoOutput::Avg
                }
            }
            _ => {
                return Err(refuse(&format!(
                "{} is not COUNT(DISTINCT identity) or a SUM or AVG of a measure of the table not grouped by",
                name.to_uppercase()
            )))
            }
        };
        aggs.push(out);
    }
    // The side not grouped by matches, the other groups; the measure
    // must be the matcher's ([`orientation`]).
    let groups_of = match (group_scan, &measure) {
        (Some(s), _) if s == asker => CryptoRole::Asker,
        (Some(_), _) => CryptoRole::Responder,
        (None, Some((s, _))) if *s == asker => CryptoRole::Responder,
        (None, _) => CryptoRole::Asker,
    };
    let measure = measure.map(|(_, m)| m);
    let n_groups = shape.groups.len();
    let mut outputs = Vec::new();
    for (name, idx) in &shape.outputs {
        let out = match idx {
            Some(i) if *i < n_groups => CryptoOutput::Group(*i),
            Some(i) => *aggs
                .get(i - n_groups)
                .ok_or_else(|| refuse("an output is not an aggregate"))?,
            None => {
                return Err(refuse(
                    "its outputs must be the grouped columns and the aggregates themselves",
                ))
            }
        };
        outputs.push((name.clone(), out));
    }
    // Each table's own conditions, as its node applies them; none may
    // span both tables (no executor could evaluate it).
    let (splits, executor) =
        split::split(state, plan, tables, collaboration, querier).map_err(internal)?;
    let mut across = false;
    let _ = executor.apply(|n| {
        let cross = match n {
            LogicalPlan::Filter(_) => true,
            LogicalPlan::Join(j) => j.on.len() != 1 || j.filter.is_some(),
            _ => false,
        };
        if cross {
            across = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if across {
        return Err(refuse("a condition involves both tables"));
    }
    let side = |scan: usize| -> Result<CryptoSide, GuardError> {
        let s = &checked.scans[scan];
        let filter = splits
            .iter()
            .find(|x| x.fragment.table == s.table)
            .ok_or_else(|| GuardError::Internal("a table of the query was not split".into()))?
            .fragment
            .filter
            .clone();
        Ok(CryptoSide {
            member: s.owner.clone(),
            table: s.table.clone(),
            filter,
        })
    };
    let fragment = CryptoFragment {
        collaboration: collaboration.to_string(),
        query: String::new(),
        querier: querier.to_string(),
        role: CryptoRole::Asker,
        asker: side(asker)?,
        responder: side(responder)?,
        groups_of,
        group_columns,
        measure,
        outputs,
        template: run.cloned(),
        purpose: purpose.map(str::to_string),
    };
    orientation(&fragment).map_err(GuardError::Refused)?;
    Ok(fragment)
}
