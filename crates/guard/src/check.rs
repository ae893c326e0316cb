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
        .config
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
    plan.apply_with_subqueries(|node| {
        let found = match node {
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
            e.apply(|x| {
                let found = match x {
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
                };
                if found.is_some() {
                    refusal = found;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
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

    // ---------------------------------------------------------------- aggregation

    fn check_aggregation(&mut self, plan: &LogicalPlan) -> R<QueryKind> {
        let mut node = plan;
        let mut shape = AggShape::default();
        let mut top_projection: Option<&datafusion::logical_expr::Projection> = None;
        let agg = loop {
            match node {
                LogicalPlan::Projection(p) => {
                    p.expr.iter().try_for_each(check_released_expr)?;
                    if top_projection.is_none() {
                        top_projection = Some(p);
                    } else {
                        shape.above.push("a nested projection".into());
                    }
                    node = &p.input;
                }
                LogicalPlan::Filter(f) => {
                    check_released_expr(&f.predicate)?;
                    shape.above.push("HAVING".into());
                    node = &f.input;
                }
                LogicalPlan::Sort(s) => {
                    s.expr.iter().try_for_each(|e| check_released_expr(&e.expr))?;
                    shape.above.push("ORDER BY".into());
                    node = &s.input;
                }
                LogicalPlan::Limit(l) => {
                    for e in l.skip.iter().chain(l.fetch.iter()) {
                        check_released_expr(e)?;
                    }
                    shape.above.push("LIMIT".into());
                    node = &l.input;
                }
                LogicalPlan::SubqueryAlias(a) => node = &a.input,
                LogicalPlan::Distinct(Distinct::All(input)) => {
                    shape.above.push("DISTINCT".into());
                    node = input;
                }
                LogicalPlan::Aggregate(a) => break a,
                LogicalPlan::Distinct(Distinct::On(_)) => {
                    return Err(Refusal::new(
                        Control::UnsupportedPlan,
                        "DISTINCT ON is not allowed: it selects individual rows",
                    ))
                }
                _ => {
                    return Err(Refusal::new(
                        Control::NestedAggregation,
                        "an aggregate must be the last step over the joined rows; joining or reading an aggregated subquery is not allowed",
                    ))
                }
            }
        };
        let input = self.lineage(&agg.input)?;
        let schema = agg.input.schema();
        for g in &agg.group_expr {
            self.check_group(g, &input, schema)?;
        }
        let plain = |e: &Expr| -> Option<(usize, String, bool)> {
            let Expr::Column(c) = peel(e) else {
                return None;
            };
            let idx = schema.index_of_column(c).ok()?;
            match &input[idx] {
                Class::Dimension { sources } if sources.len() == 1 => {
                    Some((sources[0].0, sources[0].1.clone(), false))
                }
                Class::Measure { scan, column } => Some((*scan, column.clone(), false)),
                Class::Identity { scan, column } => Some((*scan, column.clone(), true)),
                _ => None,
            }
        };
        shape.groups = agg
            .group_expr
            .iter()
            .map(|g| plain(g).filter(|(_, _, id)| !id).map(|(s, c, _)| (s, c)))
            .collect();
        shape.aggregates = agg
            .aggr_expr
            .iter()
            .map(|a| {
                let inner = match a {
                    Expr::Alias(x) => x.expr.as_ref(),
                    other => other,
                };
                match inner {
                    Expr::AggregateFunction(af) => (
                        af.func.name().to_ascii_lowercase(),
                        af.params.distinct,
                        af.params.args.first().and_then(plain),
                    ),
                    _ => (String::new(), false, None),
                }
            })
            .collect();
        let agg_schema = agg.schema.clone();
        shape.outputs = match top_projection {
            Some(p) => p
                .expr
                .iter()
                .zip(p.schema.fields())
                .map(|(e, f)| {
                    let inner = match e {
                        Expr::Alias(x) => x.expr.as_ref(),
                        other => other,
                    };
                    let idx = match inner {
                        Expr::Column(c) => agg_schema.index_of_column(c).ok(),
                        _ => None,
                    };
                    (f.name().clone(), idx)
                })
                .collect(),
            None => agg_schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name().clone(), Some(i)))
                .collect(),
        };
        for (i, a) in agg.aggr_expr.iter().enumerate() {
            self.check_aggregate(a, &input, schema)?;
            if let Some(scan) = distinct_identity_count(a, &input, schema) {
                self.identity_counts.push((scan, i));
            }
        }
        if self.scans.is_empty() {
            return Err(Refusal::new(
                Control::UnsupportedPlan,
                "a query must read at least one configured table",
            ));
        }
        for (i, s) in self.scans.iter().enumerate() {
            let info = &self.tables[&s.table];
            match &info.table.rule {
                rule @ (airlock_policy::AnalysisRule::Aggregation { .. }
                | airlock_policy::AnalysisRule::Custom { .. }) => {
                    if rule.join_required() && !self.joined_with_other_owner(i) {
                        return Err(Refusal::new(
                            Control::JoinRequired,
                            "this table may only be read joined with another member's table",
                        )
                        .table(&s.table, Some(rule.kind())));
                    }
                }
                airlock_policy::AnalysisRule::List { .. } => {
                    return Err(Refusal::new(
                        Control::ListRule,
                        "aggregates are not allowed on a table under the list rule",
                    )
                    .table(&s.table, Some(RuleKind::List)))
                }
            }
        }
        let k = airlock_policy::strictest_k(self.scanned_tables());
        self.dp = self.dp_shape(agg, &input, schema)?;
        shape.joins = self.joins.clone();
        self.shape = Some(shape);
        Ok(QueryKind::Aggregation { k })
    }

    /// Under differential privacy (every table read has a DP rule, or none
    /// does): the aggregates with their clamping bounds, the group keys'
    /// public sets, and the query's parameters.
    fn dp_shape(
        &self,
        agg: &datafusion::logical_expr::Aggregate,
        input: &[Class],
        schema: &DFSchema,
    ) -> R<Option<DpShape>> {
        let Some(strictest) = airlock_policy::StrictestDp::over(self.scanned_tables())? else {
            return Ok(None);
        };
        let airlock_policy::StrictestDp {
            epsilon,
            delta,
            max_rows,
            max_groups,
        } = strictest;
        let mut aggs = Vec::new();
        for a in &agg.aggr_expr {
            let inner = match a {
                Expr::Alias(x) => x.expr.as_ref(),
                other => other,
            };
            let Expr::AggregateFunction(af) = inner else {
                return Err(internal("unexpected aggregate expression"));
            };
            let name = af.func.name().to_ascii_lowercase();
            let arg = af.params.args.first().map(|a| peel(a).clone());
            let measure = |arg: &Option<Expr>| -> R<(Expr, i64, i64)> {
                let Some(Expr::Column(c)) = arg else {
                    return Err(internal("an aggregate without a column"));
                };
                let idx = schema.index_of_column(c).map_err(internal)?;
                let Class::Measure { scan, column } = &input[idx] else {
                    return Err(internal("a sum over a column that is not a measure"));
                };
                let rule = self.info(*scan).table.dp();
                match rule.and_then(|r| r.bounds.get(column)) {
                    Some([lo, hi]) => Ok((Expr::Column(c.clone()), *lo, *hi)),
                    None => Err(self.refuse_at(
                        Control::DifferentialPrivacy,
                        *scan,
                        column,
                        "under differential privacy a summed or averaged measure needs clamping bounds in the rule",
                    )),
                }
            };
            aggs.push(match (name.as_str(), af.params.distinct) {
                ("count", true) => match distinct_identity_count(a, input, schema) {
                    Some(scan) => DpAgg::Distinct { scan },
                    None => {
                        return Err(Refusal::new(
                            Control::DifferentialPrivacy,
                            "under differential privacy COUNT(DISTINCT ...) is allowed only on the identity column",
                        ))
                    }
                },
                ("count", false) => DpAgg::Count {
                    arg: arg.filter(|e| matches!(e, Expr::Column(_))),
                },
                ("sum", false) => {
                    let (arg, lo, hi) = measure(&arg)?;
                    DpAgg::Sum { arg, lo, hi }
                }
                ("avg" | "mean", false) => {
                    let (arg, lo, hi) = measure(&arg)?;
                    DpAgg::Avg { arg, lo, hi }
                }
                _ => {
                    return Err(Refusal::new(
                        Control::DifferentialPrivacy,
                        format!("{} is not supported under differential privacy", name.to_uppercase()),
                    ))
                }
            });
        }
        // Public keys: every group expression is a dimension whose table's
        // rule lists its keys.
        let mut public = Some(Vec::new());
        for g in &agg.group_expr {
            let keys = match g {
                Expr::Column(c) => schema
                    .index_of_column(c)
                    .ok()
                    .and_then(|i| match &input[i] {
                        Class::Dimension { sources } if sources.len() == 1 => {
                            let (scan, column) = &sources[0];
                            self.info(*scan)
                                .table
                                .dp()
                                .and_then(|r| r.public_keys.get(column))
                                .cloned()
                        }
                        _ => None,
                    }),
                _ => None,
            };
            match (keys, public.as_mut()) {
                (Some(k), Some(p)) => p.push(k),
                _ => public = None,
            }
        }
        if public.is_none() && delta <= 0.0 {
            return Err(Refusal::new(
                Control::DifferentialPrivacy,
                "under differential privacy, group keys must be public (listed in the rule's public_keys) unless every table read allows partition selection with a delta above 0",
            ));
        }
        // One person's rows are bounded per identity. Joined on another
        // column (a household, say), one person's row can link to many
        // people's rows of the other table, and no per-identity bound holds
        // for the joined rows: refused (ATTACKS: DP joins off the identity).
        let mut roots = identity_groups(self.scans.len(), &self.identity_joins);
        roots.sort_unstable();
        roots.dedup();
        if roots.len() > 1 {
            return Err(Refusal::new(
                Control::DifferentialPrivacy,
                "under differential privacy every table must be joined on its identity column (with a join on another column one person's rows can reach many people, and their contribution has no bound)",
            ));
        }
        Ok(Some(DpShape {
            aggs,
            public_keys: public,
            epsilon,
            delta,
            max_rows,
            max_groups,
        }))
    }

    /// Whether `scan` is inner-joined, directly or through other scans
    /// (`a1 JOIN a2 JOIN p`), with a scan of another member's table.
    fn joined_with_other_owner(&self, scan: usize) -> bool {
        let component = identity_groups(self.scans.len(), &self.joins);
        (0..self.scans.len()).any(|other| {
            component[other] == component[scan] && self.scans[other].owner != self.scans[scan].owner
        })
    }

    fn check_group(&self, g: &Expr, input: &[Class], schema: &DFSchema) -> R<()> {
        if let Expr::GroupingSet(_) = g {
            return Err(Refusal::new(
                Control::UnsupportedPlan,
                "GROUPING SETS, CUBE and ROLLUP are not allowed",
            ));
        }
        match self.classify(g, input, schema, Use::Group)? {
            Class::Identity { scan, column } | Class::Join { scan, column, .. } => Err(self
                .refuse_at(
                    Control::IdentityOutput,
                    scan,
                    &column,
                    "identity and join columns can never be grouped by or output",
                )),
            Class::Measure { scan, column } => Err(self.refuse_at(
                Control::ColumnRole,
                scan,
                &column,
                "a measure cannot be used as a dimension; aggregate it with an allowed function",
            )),
            Class::Dimension { .. } => Ok(()),
        }
    }

    /// The first configured column an expression reads, to name it in a refusal.
    fn locate(&self, e: &Expr, input: &[Class], schema: &DFSchema) -> Option<(usize, String)> {
        // In tree order (not `column_refs`, a hash set) so messages are stable.
        let mut columns = Vec::new();
        let _ = e.apply(|x| {
            if let Expr::Column(c) = x {
                columns.push(c.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        columns.iter().find_map(|c| {
            let idx = schema.index_of_column(c).ok()?;
            match &input[idx] {
                Class::Identity { scan, column }
                | Class::Join { scan, column, .. }
                | Class::Measure { scan, column } => Some((*scan, column.clone())),
                Class::Dimension { sources } => sources.first().cloned(),
            }
        })
    }

    /// Names the table and column an aggregate reads in a refusal.
    fn name_subject(&self, r: Refusal, e: &Expr, input: &[Class], schema: &DFSchema) -> Refusal {
        match self.locate(e, input, schema) {
            Some((scan, column)) => {
                let rule = self.info(scan).table.rule.kind();
                r.table(&self.scans[scan].table, Some(rule)).column(column)
            }
            None => r,
        }
    }

    fn check_aggregate(&self, e: &Expr, input: &[Class], schema: &DFSchema) -> R<()> {
        self.check_aggregate_inner(e, input, schema).map_err(|r| {
            if r.table.is_some() {
                r
            } else {
                self.name_subject(r, e, input, schema)
            }
        })
    }

    fn check_aggregate_inner(&self, e: &Expr, input: &[Class], schema: &DFSchema) -> R<()> {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(af) = inner else {
            return Err(internal("unexpected aggregate expression"));
        };
        let name = af.func.name().to_ascii_lowercase();
        let p = &af.params;
        if p.filter.is_some() || !p.order_by.is_empty() {
            return Err(Refusal::new(
                Control::ExpressionInAggregate,
                "FILTER and ORDER BY inside an aggregate are not allowed",
            ));
        }
        let fun = match (name.as_str(), p.distinct) {
            ("count", false) => AggFunction::Count,
            ("count", true) => AggFunction::CountDistinct,
            ("sum", false) => AggFunction::Sum,
            ("avg" | "mean", false) => AggFunction::Avg,
            ("sum" | "avg" | "mean", true) => {
                return Err(Refusal::new(
                    Control::DisallowedAggregate,
                    format!("{} DISTINCT is not allowed", name.to_uppercase()),
                ))
            }
            _ => {
                return Err(Refusal::new(
                    Control::DisallowedAggregate,
                    format!(
                        "{} is not an allowed aggregate; allowed are COUNT, COUNT DISTINCT, SUM and AVG as each rule lists them",
                        name.to_uppercase()
                    ),
                ))
            }
        };
        let [arg] = p.args.as_slice() else {
            return Err(Refusal::new(
                Control::ExpressionInAggregate,
                "aggregates take exactly one column",
            ));
        };
        match peel(arg) {
            Expr::Literal(..) if fun == AggFunction::Count => Ok(()),
            Expr::Column(c) => {
                let idx = schema.index_of_column(c).map_err(internal)?;
                match &input[idx] {
                    Class::Identity { scan, column } => {
                        if matches!(fun, AggFunction::Count | AggFunction::CountDistinct) {
                            Ok(())
                        } else {
                            Err(self.refuse_at(
                                Control::DisallowedAggregate,
                                *scan,
                                column,
                                "the identity column may only be counted",
                            ))
                        }
                    }
                    Class::Join { scan, column, .. } => Err(self.refuse_at(
                        Control::DisallowedAggregate,
                        *scan,
                        column,
                        "join columns cannot be aggregated",
                    )),
                    Class::Dimension { sources } => match sources.first() {
                        Some((scan, column)) => Err(self.refuse_at(
                            Control::DisallowedAggregate,
                            *scan,
                            column,
                            "aggregates apply to measures; count people with COUNT(DISTINCT identity)",
                        )),
                        None => Err(Refusal::new(
                            Control::ExpressionInAggregate,
                            "only a measure column may be aggregated",
                        )),
                    },
                    Class::Measure { scan, column } => {
                        let allowed = match self.info(*scan).table.role(column) {
                            Some(ColumnRole::Measure(f)) => f.contains(&fun),
                            _ => false,
                        };
                        if allowed {
                            Ok(())
                        } else {
                            Err(self.refuse_at(
                                Control::DisallowedAggregate,
                                *scan,
                                column,
                                &format!("{} is not allowed on this measure", fun.name()),
                            ))
                        }
                    }
                }
            }
            _ => Err(Refusal::new(
                Control::ExpressionInAggregate,
                "expressions inside aggregates are not allowed; aggregate a plain measure column",
            )),
        }
    }

    // ---------------------------------------------------------------- list

    fn check_list(&mut self, plan: &LogicalPlan) -> R<QueryKind> {
        let out = self.lineage(plan)?;
        if self.scans.is_empty() {
            return Err(Refusal::new(
                Control::UnsupportedPlan,
                "a query must read at least one configured table",
            ));
        }
        for s in &self.scans {
            let info = &self.tables[&s.table];
            if info.table.rule.kind() != RuleKind::List {
                return Err(Refusal::new(
                    Control::AggregationRequired,
                    "this table may only be read through aggregates",
                )
                .table(&s.table, Some(info.table.rule.kind())));
            }
        }
        for class in &out {
            match class {
                Class::Identity { scan, column } | Class::Join { scan, column, .. } => {
                    return Err(self.refuse_at(
                        Control::IdentityOutput,
                        *scan,
                        column,
                        "identity and join columns can never be output",
                    ))
                }
                Class::Measure { scan, column } => {
                    return Err(self.refuse_at(
                        Control::ListRule,
                        *scan,
                        column,
                        "measures cannot be listed",
                    ))
                }
                Class::Dimension { sources } => {
                    for (scan, column) in sources {
                        let s = &self.scans[*scan];
                        if s.owner != self.querier {
                            return Err(self.refuse_at(
                                Control::ListRule,
                                *scan,
                                column,
                                "only the querier's own table's list columns may be output",
                            ));
                        }
                        let listed = matches!(&self.info(*scan).table.rule,
                            airlock_policy::AnalysisRule::List { list_columns } if list_columns.contains(column));
                        if !listed {
                            return Err(self.refuse_at(
                                Control::ListRule,
                                *scan,
                                column,
                                "not a list column of this table",
                            ));
                        }
                    }
                }
            }
        }
        let joined = (0..self.scans.len())
            .any(|i| self.scans[i].owner == self.querier && self.joined_with_other_owner(i));
        if !joined {
            return Err(Refusal::new(
                Control::ListRule,
                "a list query must inner-join the querier's own table with another member's table on join columns",
            ));
        }
        Ok(QueryKind::List)
    }

    // ---------------------------------------------------------------- rows

    /// Checks a plan that runs on rows (below the aggregate) and returns the
    /// class of each of its output columns.
    fn lineage(&mut self, plan: &LogicalPlan) -> R<Vec<Class>> {
        match plan {
            LogicalPlan::TableScan(s) => {
                let name = s.table_name.table().to_string();
                let info = match (s.table_name.schema(), self.tables.get(&name)) {
                    (None, Some(info)) => info,
                    _ => return Err(Refusal::new(
                        Control::Metadata,
                        "only configured tables may be read (no system tables or table functions)",
                    )
                    .table(s.table_name.to_string(), None)),
                };
                let scan = self.scans.len();
                self.scans.push(ScanRef {
                    table: name.clone(),
                    owner: info.owner.clone(),
                });
                s.projected_schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let column = f.name().clone();
                        match info.table.role(&column) {
                            Some(ColumnRole::Identity { .. }) => {
                                Ok(Class::Identity { scan, column })
                            }
                            Some(ColumnRole::Join) => Ok(Class::Join {
                                scan,
                                contract: info.table.contract(&column),
                                column,
                            }),
                            Some(ColumnRole::Dimension) => Ok(Class::Dimension {
                                sources: vec![(scan, column)],
                            }),
                            Some(ColumnRole::Measure(_)) => Ok(Class::Measure { scan, column }),
                            None => Err(Refusal::new(Control::ColumnRole, "column has no role")
                                .table(&name, Some(info.table.rule.kind()))
                                .column(column)),
                        }
                    })
                    .collect()
            }
            LogicalPlan::Projection(p) => {
                let input = self.lineage(&p.input)?;
                p.expr
                    .iter()
                    .map(|e| self.classify(e, &input, p.input.schema(), Use::Expression))
                    .collect()
            }
            LogicalPlan::Filter(f) => {
                let input = self.lineage(&f.input)?;
                self.check_row_expr(&f.predicate, &input, f.input.schema(), Use::Filter)?;
                Ok(input)
            }
            LogicalPlan::SubqueryAlias(a) => self.lineage(&a.input),
            LogicalPlan::Join(j) => {
                let left = self.lineage(&j.left)?;
                let right = self.lineage(&j.right)?;
                if j.join_type != JoinType::Inner {
                    return Err(Refusal::new(
                        Control::Join,
                        format!("only inner joins are allowed (found {})", j.join_type),
                    ));
                }
                // The SQL planner leaves `ON a = b` in the join filter; the
                // optimizer later turns it into equi-join keys. Accept only a
                // conjunction of column equalities, one side from each input.
                let mut pairs: Vec<(Expr, Expr)> = j.on.clone();
                if let Some(filter) = &j.filter {
                    for c in split_conjunction(filter) {
                        let Expr::BinaryExpr(b) = c else {
                            return Err(Refusal::new(
                                Control::Join,
                                "join conditions other than equality of join columns are not allowed",
                            ));
                        };
                        let (Operator::Eq, Expr::Column(l), Expr::Column(r)) =
                            (b.op, b.left.as_ref(), b.right.as_ref())
                        else {
                            return Err(Refusal::new(
                                Control::Join,
                                "join conditions other than equality of join columns are not allowed",
                            ));
                        };
                        let in_left =
                            |c: &datafusion::common::Column| j.left.schema().has_column(c);
                        let in_right =
                            |c: &datafusion::common::Column| j.right.schema().has_column(c);
                        if in_left(l) && in_right(r) {
                            pairs.push((b.left.as_ref().clone(), b.right.as_ref().clone()));
                        } else if in_left(r) && in_right(l) {
                            pairs.push((b.right.as_ref().clone(), b.left.as_ref().clone()));
                        } else {
                            return Err(Refusal::new(
                                Control::Join,
                                "a join condition must compare a column of each side",
                            ));
                        }
                    }
                }
                if pairs.is_empty() {
                    return Err(Refusal::new(
                        Control::Join,
                        "cross joins are not allowed; join with = on join columns",
                    ));
                }
                for (l, r) in &pairs {
                    let lc = join_key(l, &left, j.left.schema())?;
                    let rc = join_key(r, &right, j.right.schema())?;
                    let (ls, lcontract) = self.join_contract(lc)?;
                    let (rs, rcontract) = self.join_contract(rc)?;
                    if lcontract != rcontract {
                        return Err(Refusal::new(
                            Control::Join,
                            "the two join columns belong to different join contracts and can never match",
                        ));
                    }
                    self.joins.push((ls, rs));
                    if matches!(lc, Class::Identity { .. }) && matches!(rc, Class::Identity { .. })
                    {
                        self.identity_joins.push((ls, rs));
                    }
                }
                Ok(left.into_iter().chain(right).collect())
            }
            LogicalPlan::Sort(s) if self.list_mode => {
                let input = self.lineage(&s.input)?;
                for e in &s.expr {
                    self.check_row_expr(&e.expr, &input, s.input.schema(), Use::Filter)?;
                }
                Ok(input)
            }
            LogicalPlan::Limit(l) if self.list_mode => self.lineage(&l.input),
            LogicalPlan::Distinct(Distinct::All(input)) if self.list_mode => self.lineage(input),
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => Err(Refusal::new(
                Control::NestedAggregation,
                "ORDER BY or LIMIT before the aggregate would select individual rows",
            )),
            LogicalPlan::Distinct(Distinct::On(_)) => Err(Refusal::new(
                Control::UnsupportedPlan,
                "DISTINCT ON is not allowed: it selects individual rows",
            )),
            LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => Err(Refusal::new(
                Control::NestedAggregation,
                "aggregating an aggregate (or DISTINCT below an aggregate) is not allowed",
            )),
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => Err(Refusal::new(
                Control::UnsupportedPlan,
                "inline rows (VALUES, SELECT without FROM) are not allowed",
            )),
            other => Err(Refusal::new(
                Control::UnsupportedPlan,
                format!("{} is not allowed", node_name(other)),
            )),
        }
    }

    fn join_contract(&self, class: &Class) -> R<(usize, String)> {
        match class {
            Class::Join { scan, contract, .. } => Ok((*scan, contract.clone())),
            Class::Identity { scan, column } => {
                let info = self.info(*scan);
                if info.table.join.iter().any(|j| j == column) {
                    Ok((*scan, info.table.contract(column)))
                } else {
                    Err(self.refuse_at(
                        Control::Join,
                        *scan,
                        column,
                        "this identity column is not a join column",
                    ))
                }
            }
            Class::Dimension { sources } => match sources.first() {
                Some((scan, column)) => Err(self.refuse_at(
                    Control::Join,
                    *scan,
                    column,
                    "joins are allowed only on join columns",
                )),
                None => Err(Refusal::new(
                    Control::Join,
                    "joins are allowed only on join columns",
                )),
            },
            Class::Measure { scan, column } => Err(self.refuse_at(
                Control::Join,
                *scan,
                column,
                "joins are allowed only on join columns",
            )),
        }
    }

    /// Class of an expression producing a column (projection item or group key).
    fn classify(&self, e: &Expr, input: &[Class], schema: &DFSchema, usage: Use) -> R<Class> {
        match e {
            Expr::Alias(a) => self.classify(&a.expr, input, schema, usage),
            Expr::Column(c) => {
                let idx = schema.index_of_column(c).map_err(internal)?;
                Ok(input[idx].clone())
            }
            other => {
                let sources = self.check_row_expr(other, input, schema, usage)?;
                Ok(Class::Dimension { sources })
            }
        }
    }

    /// Checks an expression evaluated on rows: every column it reads must be a
    /// dimension, every function allowed, and nothing may fail on one value.
    /// Returns the dimension columns it reads.
    fn check_row_expr(
        &self,
        e: &Expr,
        input: &[Class],
        schema: &DFSchema,
        usage: Use,
    ) -> R<Vec<(usize, String)>> {
        let mut sources = Vec::new();
        let mut refusal = None;
        e.apply(|x| {
            let found: Option<Refusal> = match x {
                Expr::Column(c) => match schema.index_of_column(c) {
                    Err(err) => Some(internal(err)),
                    Ok(idx) => match &input[idx] {
                        Class::Dimension { sources: s } => {
                            sources.extend(s.iter().cloned());
                            None
                        }
                        Class::Identity { scan, column } | Class::Join { scan, column, .. } => {
                            Some(match usage {
                                Use::Filter => self.refuse_at(
                                    Control::RestrictedFilter,
                                    *scan,
                                    column,
                                    "identity and join columns cannot be filtered on",
                                ),
                                Use::Expression | Use::Group => self.refuse_at(
                                    Control::IdentityInExpression,
                                    *scan,
                                    column,
                                    "identity and join columns cannot be used in expressions",
                                ),
                            })
                        }
                        Class::Measure { scan, column } => Some(match usage {
                            Use::Filter => self.refuse_at(
                                Control::RestrictedFilter,
                                *scan,
                                column,
                                "measures cannot be filtered on",
                            ),
                            Use::Group => self.refuse_at(
                                Control::ColumnRole,
                                *scan,
                                column,
                                "a measure cannot be used as a dimension; aggregate it with an allowed function",
                            ),
                            Use::Expression => self.refuse_at(
                                Control::ExpressionInAggregate,
                                *scan,
                                column,
                                "expressions on measures are not allowed; aggregate the plain column",
                            ),
                        }),
                    },
                },
                Expr::Literal(..)
                | Expr::Alias(_)
                | Expr::Not(_)
                | Expr::IsNull(_)
                | Expr::IsNotNull(_)
                | Expr::IsTrue(_)
                | Expr::IsFalse(_)
                | Expr::IsUnknown(_)
                | Expr::IsNotTrue(_)
                | Expr::IsNotFalse(_)
                | Expr::IsNotUnknown(_)
                | Expr::Negative(_)
                | Expr::Between(_)
                | Expr::Case(_)
                | Expr::InList(_)
                | Expr::Like(_)
                | Expr::TryCast(_) => None,
                // Whether an operator or a cast can fail on a value is
                // the totality check's question (`total.rs`).
                Expr::BinaryExpr(_) | Expr::Cast(_) => None,
                Expr::ScalarFunction(f) => {
                    let name = f.func.name().to_ascii_lowercase();
                    if !scalar_allowed(&name) {
                        Some(Refusal::new(
                            Control::UnknownFunction,
                            format!("function {name} is not on the allowlist"),
                        ))
                    } else if !ALL_ARGUMENTS_FREE.contains(&name.as_str())
                        && f.args.iter().filter(|a| !a.column_refs().is_empty()).count() > 1
                    {
                        Some(Refusal::new(
                            Control::ErrorOracle,
                            format!("only one argument of {name} may read a column"),
                        ))
                    } else {
                        None
                    }
                }
                Expr::AggregateFunction(_) => Some(Refusal::new(
                    Control::NestedAggregation,
                    "aggregates are not allowed here",
                )),
                Expr::WindowFunction(_) => Some(Refusal::new(
                    Control::WindowFunction,
                    "window functions are not allowed",
                )),
                other => Some(Refusal::new(
                    Control::UnsupportedPlan,
                    format!("expression {} is not allowed", other.variant_name()),
                )),
            };
            if found.is_some() {
                refusal = found;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(internal)?;
        match refusal {
            Some(r) => Err(r),
            None => Ok(sources),
        }
    }
}

/// The scan whose identity `e` counts, if `e` is `COUNT(DISTINCT identity)`.
fn distinct_identity_count(e: &Expr, input: &[Class], schema: &DFSchema) -> Option<usize> {
    let inner = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(af) = inner else {
        return None;
    };
    let p = &af.params;
    if !af.func.name().eq_ignore_ascii_case("count") || !p.distinct || p.filter.is_some() {
        return None;
    }
    let [arg] = p.args.as_slice() else {
        return None;
    };
    let Expr::Column(c) = peel(arg) else {
        return None;
    };
    match input.get(schema.index_of_column(c).ok()?)? {
        Class::Identity { scan, .. } => Some(*scan),
        _ => None,
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

fn join_key<'c>(e: &Expr, input: &'c [Class], schema: &DFSchema) -> R<&'c Class> {
    match peel(e) {
        Expr::Column(c) => {
            let idx = schema.index_of_column(c).map_err(internal)?;
            Ok(&input[idx])
        }
        _ => Err(Refusal::new(
            Control::Join,
            "join keys must be plain join columns compared with =",
        )),
    }
}

/// Checks an expression over released aggregates (above the aggregate).
fn check_released_expr(e: &Expr) -> R<()> {
    let mut refusal = None;
    e.apply(|x| {
        let found = match x {
            Expr::ScalarFunction(f) if !scalar_allowed(f.func.name()) => Some(Refusal::new(
                Control::UnknownFunction,
                format!("function {} is not on the allowlist", f.func.name()),
            )),
            Expr::Column(_)
            | Expr::Literal(..)
            | Expr::Alias(_)
            | Expr::BinaryExpr(_)
            | Expr::Not(_)
            | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::IsTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsUnknown(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNotFalse(_)
            | Expr::IsNotUnknown(_)
            | Expr::Negative(_)
            | Expr::Between(_)
            | Expr::Case(_)
            | Expr::InList(_)
            | Expr::Like(_)
            | Expr::Cast(_)
            | Expr::TryCast(_)
            | Expr::ScalarFunction(_) => None,
            Expr::AggregateFunction(_) => Some(Refusal::new(
                Control::NestedAggregation,
                "aggregates are allowed only in the aggregate step",
            )),
            other => Some(Refusal::new(
                Control::UnsupportedPlan,
                format!("expression {} is not allowed", other.variant_name()),
            )),
        };
        if found.is_some() {
            refusal = found;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(internal)?;
    match refusal {
        Some(r) => Err(r),
        None => Ok(()),
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
