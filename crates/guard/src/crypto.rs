//! Crypto mode: the query shapes two nodes can compute by private set
//! intersection with no executor, and the [`CryptoFragment`] each node
//! receives. Every query is first checked like any other (rules, k, roles,
//! templates, functions); this decides whether crypto mode can compute it.

use std::collections::HashMap;

use airlock_policy::{
    Control, CryptoFragment, CryptoOutput, CryptoRole, CryptoSide, Refusal, TemplateRun,
};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::LogicalPlan;

use crate::check::{Checked, TableInfo};
use crate::dp::DpCost;
use crate::{internal, split, GuardError, QueryKind};

/// What a crypto-mode query costs under differential privacy: epsilon as
/// the rules say; delta when its groups are chosen by partition selection
/// (the responder cannot see group names, so grouped queries always are).
pub(crate) fn cost(
    collab: &airlock_policy::Collaboration,
    f: &CryptoFragment,
) -> Result<Option<DpCost>, GuardError> {
    let Some(dp) = airlock_policy::StrictestDp::of(collab, &[&f.asker.table, &f.responder.table])?
    else {
        return Ok(None);
    };
    if !f.group_columns.is_empty() && dp.delta <= 0.0 {
        return Err(GuardError::Refused(Refusal::new(
            Control::DifferentialPrivacy,
            "in crypto mode the responder cannot see group names, so released groups are chosen by partition selection: the rules need a delta above 0",
        )));
    }
    Ok(Some(DpCost {
        epsilon: dp.epsilon,
        delta: if f.group_columns.is_empty() {
            0.0
        } else {
            dp.delta
        },
    }))
}

const SHAPES: &str = "crypto mode supports only the overlap count (COUNT(DISTINCT identity) over an equality join on the identity), the same grouped by dimensions of the asking member's own table, and SUM or AVG of the other member's measure over the overlap, grouped the same way";

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
    let mut group_columns = Vec::new();
    for g in &shape.groups {
        match g {
            Some((scan, column)) if *scan == asker => group_columns.push(column.clone()),
            _ => return Err(refuse(
                "it groups by something other than a dimension column of the asking member's table",
            )),
        }
    }
    let mut measure: Option<String> = None;
    let mut aggs = Vec::new();
    for (name, distinct, arg) in &shape.aggregates {
        let out = match (name.as_str(), distinct, arg) {
            ("count", true, Some((_, _, true))) => CryptoOutput::Count,
            ("sum" | "avg", false, Some((scan, column, false))) if *scan == responder => {
                if measure.as_ref().is_some_and(|m| m != column) {
                    return Err(refuse("it sums or averages more than one measure"));
                }
                measure = Some(column.clone());
                if name == "sum" {
                    CryptoOutput::Sum
                } else {
                    CryptoOutput::Avg
                }
            }
            _ => {
                return Err(refuse(&format!(
                "{} is not COUNT(DISTINCT identity) or a SUM or AVG of the other member's measure",
                name.to_uppercase()
            )))
            }
        };
        aggs.push(out);
    }
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
    Ok(CryptoFragment {
        collaboration: collaboration.to_string(),
        querier: querier.to_string(),
        role: CryptoRole::Asker,
        asker: side(asker)?,
        responder: side(responder)?,
        group_columns,
        measure,
        outputs,
        template: run.cloned(),
        purpose: purpose.map(str::to_string),
    })
}
