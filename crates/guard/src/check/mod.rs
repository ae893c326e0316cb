//! The check: walk a planned query against every referenced table's rule.
//!
//! The walk follows the plan exactly as DataFusion's SQL planner produced it,
//! before any optimisation. Every plan node and every expression is either
//! allowed and checked, or refused. Each output column carries a *class*
//! (identity, join, dimension, measure) derived from the configured tables
//! through projections, aliases, CTEs and joins, so a column keeps its role
//! whatever it is renamed to.
//!
//! Shape accepted under the aggregation rule:
//!
//! ```text
//!   [Projection | Filter (HAVING) | Sort | Limit | SubqueryAlias | Distinct]*   on released aggregates
//!   Aggregate                                                                exactly one
//!   [Projection | Filter | inner equi-Join | SubqueryAlias | TableScan]*     on rows, never leaves
//! ```
//!
//! Under the list rule there is no aggregate and the output must be the
//! querier's own list columns of rows that join the other member's table.
//!
//! By concern: this module holds the classes, the entry ([`check_plan`]) and
//! the checks of the whole plan; `aggregate` the aggregation rule (the cut,
//! groups, aggregates, what DP can serve, released expressions); `list` the
//! list rule; `rows` the lineage of every row column (scans, projections,
//! joins and their contracts) and the check of row expressions.

use std::collections::HashMap;

use airlock_policy::{
    AggFunction, Collaboration, ColumnRole, ConfiguredTable, Control, Refusal, RuleKind,
    RESERVED_PREFIX,
};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::DFSchema;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Distinct, Expr, JoinType, LogicalPlan, Operator};

use crate::functions::{scalar_allowed, ALL_ARGUMENTS_FREE};

mod aggregate;
mod list;
mod rows;

/// A configured table as the guard sees it.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    pub owner: String,
    pub table: ConfiguredTable,
}

/// One scan of a configured table in the query.
#[derive(Debug, Clone)]
pub struct ScanRef {
    /// Configured table alias.
    pub table: String,
    /// Owning member.
    pub owner: String,
}

/// Where a column of a plan node comes from.
#[derive(Debug, Clone)]
pub(crate) enum Class {
    Identity {
        scan: usize,
        column: String,
    },
    Join {
        scan: usize,
        column: String,
        contract: String,
    },
    /// A dimension, possibly derived from several dimension columns (or none, for constants).
    Dimension {
        sources: Vec<(usize, String)>,
    },
    Measure {
        scan: usize,
        column: String,
    },
}

/// What kind of analysis a checked query is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// Aggregation rule; `k` is the strictest minimum of distinct identities.
    Aggregation {
        /// Minimum distinct identities per output row.
        k: u64,
    },
    /// List rule.
    List,
}

/// Result of a successful check.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Aggregation or list.
    pub kind: QueryKind,
    /// Scans of configured tables, in plan order.
    pub scans: Vec<ScanRef>,
    /// Pairs of scans joined by equality of their identity columns: their
    /// distinct identities per output row are the same people.
    pub identity_joins: Vec<(usize, usize)>,
    /// `(scan, i)`: the aggregate's `i`-th aggregate expression is already
    /// `COUNT(DISTINCT identity)` of that scan.
    pub identity_counts: Vec<(usize, usize)>,
    /// When the tables read are under differential privacy: how.
    pub dp: Option<DpShape>,
    /// The aggregate's shape, for crypto mode.
    pub shape: Option<AggShape>,
}

/// `(scan, column, is the identity)` of a plain column argument.
pub type PlainColumn = (usize, String, bool);

/// An aggregation query's shape: what crypto mode accepts is decided on it.
#[derive(Debug, Clone, Default)]
pub struct AggShape {
    /// Plan nodes above the aggregate other than projections and aliases.
    pub above: Vec<String>,
    /// Each output column of the top projection: the index of the
    /// aggregate's output it is (a plain or renamed column), if it is one.
    pub outputs: Vec<(String, Option<usize>)>,
    /// Group expressions: `(scan, column)` of a plain dimension column.
    pub groups: Vec<Option<(usize, String)>>,
    /// Aggregates: function name, DISTINCT, and the `(scan, column, is
    /// identity)` of a plain column argument.
    pub aggregates: Vec<(String, bool, Option<PlainColumn>)>,
    /// Pairs of scans joined (on any key).
    pub joins: Vec<(usize, usize)>,
}

/// One aggregate of a query under differential privacy.
#[derive(Debug, Clone)]
pub(crate) enum DpAgg {
    /// `COUNT(*)` (`arg` is `None`) or `COUNT(column)`.
    Count { arg: Option<Expr> },
    /// `COUNT(DISTINCT identity)` of a scan.
    Distinct { scan: usize },
    /// `SUM(measure)` clamped to `[lo, hi]`.
    Sum { arg: Expr, lo: i64, hi: i64 },
    /// `AVG(measure)` clamped to `[lo, hi]`.
    Avg { arg: Expr, lo: i64, hi: i64 },
}

/// What the DP rewrite needs from the check.
#[derive(Debug, Clone)]
pub struct DpShape {
    pub(crate) aggs: Vec<DpAgg>,
    /// Per group expression its public keys; `None` when the groups must be
    /// chosen by DP partition selection.
    pub(crate) public_keys: Option<Vec<Vec<String>>>,
    /// The per-query epsilon (the smallest of the tables read).
    pub epsilon: f64,
    /// The delta partition selection may spend (the smallest of the tables read).
    pub delta: f64,
    pub(crate) max_rows: u64,
    pub(crate) max_groups: u64,
}

type R<T> = Result<T, Refusal>;

pub(crate) struct Checker<'a> {
    tables: &'a HashMap<String, TableInfo>,
    querier: &'a str,
    scans: Vec<ScanRef>,
    joins: Vec<(usize, usize)>,
    identity_joins: Vec<(usize, usize)>,
    identity_counts: Vec<(usize, usize)>,
    list_mode: bool,
    dp: Option<DpShape>,
    shape: Option<AggShape>,
}

fn internal(what: impl std::fmt::Display) -> Refusal {
    Refusal::new(
        Control::UnsupportedPlan,
        format!("the query could not be checked ({what})"),
    )
}

/// Walks `e` top-down and returns the first refusal `find` reports for it
/// or one of its children (the shape of every expression allowlist here).
fn first_refusal(e: &Expr, mut find: impl FnMut(&Expr) -> Option<Refusal>) -> R<()> {
    let mut refusal = None;
    e.apply(|x| {
        refusal = find(x);
        Ok(if refusal.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })
    .map_err(internal)?;
    refusal.map_or(Ok(()), Err)
}

fn node_name(plan: &LogicalPlan) -> String {
    let display = plan.display().to_string();
    display
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("plan node")
        .to_string()
}

pub(crate) fn build_tables(collab: &Collaboration) -> HashMap<String, TableInfo> {
    collab
        .config()
        .tables
        .iter()
        .filter_map(|t| {
            collab.owner_of(&t.alias).map(|owner| {
                (
                    t.alias.clone(),
                    TableInfo {
                        owner: owner.to_string(),
                        table: t.clone(),
                    },
                )
            })
        })
        .collect()
}

/// Checks `plan` for `querier`.
pub(crate) fn check_plan(
    tables: &HashMap<String, TableInfo>,
    querier: &str,
    plan: &LogicalPlan,
) -> R<Checked> {
    global_checks(plan)?;
    let mut has_aggregate = false;
    plan.apply(|n| {
        if matches!(n, LogicalPlan::Aggregate(_)) {
            has_aggregate = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(internal)?;
    let mut c = Checker {
        tables,
        querier,
        scans: Vec::new(),
        joins: Vec::new(),
        identity_joins: Vec::new(),
        identity_counts: Vec::new(),
        list_mode: !has_aggregate,
        dp: None,
        shape: None,
    };
    let kind = if has_aggregate {
        c.check_aggregation(plan)?
    } else {
        c.check_list(plan)?
    };
    // The querier's own tables, two in one join, multiply each person's
    // rows by factors it chooses, as a self-join would (red team: a second
    // table over the same file): at most one of them per query.
    if let Some(second) = c.scans.iter().filter(|s| s.owner == querier).nth(1) {
        return Err(Refusal::new(
            Control::Join,
            "a query may read at most one of the querier's own tables: two of them joined on a person multiply that person's rows by numbers the querier chooses, and the size of that join would depend on who is in the other tables",
        )
        .table(second.table.clone(), None));
    }
    Ok(Checked {
        kind,
        scans: c.scans,
        identity_joins: c.identity_joins,
        identity_counts: c.identity_counts,
        dp: c.dp,
        shape: c.shape,
    })
}

/// Refusals that hold wherever they appear: set operations, windows,
/// subqueries in expressions, reserved names.
fn global_checks(plan: &LogicalPlan) -> R<()> {
    let mut refusal: Option<Refusal> = None;
    let mut scanned: Vec<String> = Vec::new();
    plan.apply_with_subqueries(|node| {
        let found = match node {
            // A table read twice (a self-join, a CTE used twice) joins each
            // person's rows with themselves: one person with n rows makes
            // n^2 (n^3 with three copies), so the size of the join, hence
            // its time and whether it fits the executor's memory, would
            // show whether that person is in another member's table
            // (red team, ATTACKS 32).
            LogicalPlan::TableScan(s) => {
                let name = s.table_name.table().to_string();
                if scanned.contains(&name) {
                    Some(
                        Refusal::new(
                            Control::Join,
                            "a table may be read once per query: a join of a table with itself multiplies each person's rows, and the size of that join would depend on who is in the other tables",
                        )
                        .table(name, None),
                    )
                } else {
                    scanned.push(name);
                    None
                }
            }
            LogicalPlan::Union(_) => Some(Refusal::new(
                Control::SetOperation,
                "UNION, INTERSECT and EXCEPT are not allowed: each branch would be a separate release",
            )),
            LogicalPlan::Window(_) => Some(Refusal::new(
                Control::WindowFunction,
                "window functions are not allowed",
            )),
            LogicalPlan::SubqueryAlias(a) if a.alias.table().starts_with(RESERVED_PREFIX) => {
                Some(Refusal::new(
                    Control::ReservedName,
                    "names starting with __airlock are reserved",
                ))
            }
            _ => None,
        };
        if found.is_some() {
            refusal = found;
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|e| {
            let found = first_refusal(e, |x| match x {
                    Expr::Alias(a) if a.name.starts_with(RESERVED_PREFIX) => Some(Refusal::new(
                        Control::ReservedName,
                        "names starting with __airlock are reserved",
                    )),
                    Expr::WindowFunction(_) => Some(Refusal::new(
                        Control::WindowFunction,
                        "window functions are not allowed",
                    )),
                    Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::SetComparison(_)
                    | Expr::OuterReferenceColumn(..) => Some(Refusal::new(
                        Control::Subquery,
                        "subqueries inside expressions (EXISTS, IN (SELECT ...), scalar subqueries) are not allowed; use a join or a CTE",
                    )),
                    Expr::Placeholder(_) | Expr::ScalarVariable(..) => Some(Refusal::new(
                        Control::UnsupportedPlan,
                        "placeholders and session variables are not allowed",
                    )),
                    _ => None,
            });
            match found {
                Ok(()) => Ok(TreeNodeRecursion::Continue),
                Err(r) => {
                    refusal = Some(r);
                    Ok(TreeNodeRecursion::Stop)
                }
            }
        })
    })
    .map_err(internal)?;
    match refusal {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

/// Where an expression is used: decides which control a bad column breaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Filter,
    Expression,
    Group,
}

impl Checker<'_> {
    fn info(&self, scan: usize) -> &TableInfo {
        &self.tables[&self.scans[scan].table]
    }

    /// The configured table of each scan, in order.
    fn scanned_tables(&self) -> impl Iterator<Item = &ConfiguredTable> + '_ {
        (0..self.scans.len()).map(|i| &self.info(i).table)
    }

    fn refuse_at(&self, control: Control, scan: usize, column: &str, reason: &str) -> Refusal {
        let info = self.info(scan);
        Refusal::new(control, reason)
            .table(&self.scans[scan].table, Some(info.table.rule.kind()))
            .column(column)
    }
}

/// The expression under the casts type coercion wraps around it (whether
/// each cast is total is the totality check's question).
pub(crate) fn peel(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(c) => peel(&c.expr),
        other => other,
    }
}

/// For each scan, the representative of its identity group: scans joined
/// on their identity columns count the same people (union-find).
pub(crate) fn identity_groups(scans: usize, joins: &[(usize, usize)]) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..scans).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for &(a, b) in joins {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        parent[ra] = rb;
    }
    (0..scans).map(|i| root(&mut parent, i)).collect()
}
