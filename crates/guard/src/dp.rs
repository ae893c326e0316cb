//! Differential privacy: bound each person's contribution, aggregate
//! exactly, then add exact discrete noise and choose which groups exist.
//!
//! A query under DP is split at its aggregate. Below it, the *lower* plan
//! (run by the node for a one-table analysis, by the executor otherwise):
//!
//! ```text
//!  rows (joins, filters) + each identity group's id + clamped measures + random()
//!   ▸ keep at most max_rows_per_identity rows per person (random ones)
//!   ▸ aggregate per (person, group)
//!   ▸ keep at most max_groups_per_identity groups per person (random ones)
//!   ▸ aggregate per group: exact bounded counts and sums
//! ```
//!
//! Then the release (`airlock_exec::dp`, from the [`DpRelease`] made here)
//! adds discrete Laplace noise to every value (OpenDP's
//! exact sampler, CSPRNG bits; see `airlock-privacy`), keeps either the
//! public keys the rules list (every one, absent ones as noisy zeros) or the
//! groups whose noisy count of people passes a threshold made for delta
//! (partition selection), and runs the *upper* plan (the query's own HAVING,
//! ORDER BY, LIMIT and projections, which are post-processing) over the
//! noisy values.
//!
//! Sensitivities, with `m` rows and `g` groups per person
//! (`airlock_privacy::Contribution::per_person`, where the reasoning is): a
//! count `m`, a count of distinct people `g`, a sum `m * max(|low|, |high|)`
//! (L1, over all groups at once). The query's epsilon is split evenly over
//! the noisy values (`airlock_privacy::even_share`; an average is two: a
//! sum and a count; partition selection one more unless the query releases
//! the count of people it uses).

use std::collections::HashMap;
use std::sync::Arc;

use airlock_policy::{Control, Refusal};
use airlock_privacy::{even_share, Contribution, Laplace};
use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::Column;
use datafusion::functions::math::expr_fn::random;
use datafusion::functions_aggregate::expr_fn::{count_distinct, sum};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{
    cast as cast_expr, lit, when, Expr, ExprFunctionExt, LogicalPlan, LogicalPlanBuilder, TryCast,
};
use serde::Serialize;

use crate::check::identity_groups;
use crate::check::{Checked, DpAgg, DpShape, TableInfo};
use crate::rewrite::{carry_identity, HIDDEN_ID};
use crate::upper::Upper;
use crate::GuardError;

/// The largest number of public key combinations one query may release.
const MAX_PUBLIC_ROWS: usize = 100_000;

/// What a query under DP costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DpCost {
    /// Epsilon.
    pub epsilon: f64,
    /// Delta (0 unless the groups are chosen by partition selection).
    pub delta: f64,
}

impl DpCost {
    /// What a query under the strictest DP rules `dp` of the tables it
    /// reads costs: their epsilon, and their delta when its groups are
    /// chosen by partition selection. The one home of the price: the hub's
    /// guard prices a query with it, and each node the fragments it serves
    /// ([`scan_cost`], [`crate::crypto_cost`]).
    pub fn of(dp: &airlock_policy::StrictestDp, partition_selection: bool) -> DpCost {
        DpCost {
            epsilon: dp.epsilon,
            delta: if partition_selection { dp.delta } else { 0.0 },
        }
    }
}

/// What a scan fragment of `table` costs, priced by a node from its own
/// copy of the rules and what the fragment declares: the tables its query
/// reads (which must include `table`, each configured once, all under
/// differential privacy) and whether it selects partitions. A refusal
/// names the table.
pub fn scan_cost(
    collab: &airlock_policy::Collaboration,
    table: &str,
    declared: &airlock_protocol::ScanDp,
) -> Result<DpCost, Refusal> {
    let refuse = |why: &str| {
        let rule = collab.table(table).map(|t| t.rule.kind());
        Refusal::new(Control::DifferentialPrivacy, why).table(table, rule)
    };
    if !declared.tables.iter().any(|t| t == table) {
        return Err(refuse(
            "the fragment's query does not declare this table among those it reads",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if !declared.tables.iter().all(|t| seen.insert(t.as_str())) {
        return Err(refuse("the fragment's query declares a table twice"));
    }
    // A query over this owner's tables alone is an analysis the node runs
    // itself, adding the noise; as scans its rows would leave exact.
    let owner = collab.owner_of(table);
    if declared.tables.iter().all(|t| collab.owner_of(t) == owner) {
        return Err(refuse(
            "under differential privacy a query over one member's tables alone runs on that member's node (which adds the noise); its rows do not leave as scan fragments",
        ));
    }
    let tables: Vec<&str> = declared.tables.iter().map(String::as_str).collect();
    match airlock_policy::StrictestDp::of(collab, &tables)? {
        Some(dp) => Ok(DpCost::of(&dp, declared.partition_selection)),
        None => Err(refuse(
            "the fragment declares a privacy cost, but no table its query reads is under differential privacy",
        )),
    }
}

/// One noisy value per group.
#[derive(Debug, Clone)]
struct Slot {
    mechanism: Laplace,
}

/// How one of the aggregate's outputs is released.
#[derive(Debug, Clone)]
pub enum Output {
    /// A noisy integer: the value of one slot, raised to `floor` (0 for
    /// counts and sums of non-negative bounds, post-processing that needs
    /// no budget).
    Value {
        /// The slot.
        slot: usize,
        /// The least value released.
        floor: i64,
    },
    /// A noisy sum over a noisy count, clamped to the bounds.
    Avg {
        /// The slot of the sum.
        sum: usize,
        /// The slot of the count.
        count: usize,
        /// The lower bound of the measure.
        lo: i64,
        /// The upper bound of the measure.
        hi: i64,
    },
}

/// How the groups that exist are chosen.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every combination of the public keys, in order.
    Public(Vec<Vec<String>>),
    /// Groups whose noisy count of people (a slot) reaches `threshold`.
    Threshold {
        /// The slot of the count of people.
        slot: usize,
        /// The least noisy count released.
        threshold: i64,
    },
}

/// Everything needed to release a DP query's result from its lower plan's
/// exact, bounded aggregates.
#[derive(Debug, Clone)]
pub struct DpRelease {
    /// What the query costs.
    pub cost: DpCost,
    groups: usize,
    slots: Vec<Slot>,
    outputs: Vec<Output>,
    selection: Selection,
    /// The lower plan's output (what an empty result has).
    lower_schema: SchemaRef,
    /// The query's steps above the aggregate, over the noisy rows.
    upper: Upper,
    /// Per aggregate output: the name it has in the released result.
    names: Vec<String>,
    /// At most this many rows per person are kept (the smallest
    /// `max_rows_per_identity` of the tables read): after the join by the
    /// lower plan, and before it by the executor in each fragment.
    pub rows_per_person: u64,
}

impl DpRelease {
    /// Whether the released groups are chosen by their noisy counts
    /// (partition selection, which spends delta).
    pub fn partition_selection(&self) -> bool {
        matches!(self.selection, Selection::Threshold { .. })
    }
}

/// The type DP sums accumulate in.
const WIDE: DataType = DataType::Decimal128(38, 0);

fn wide(v: i128) -> Expr {
    lit(datafusion::common::ScalarValue::Decimal128(Some(v), 38, 0))
}

fn hidden(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

fn dp_refusal(reason: impl Into<String>) -> GuardError {
    GuardError::Refused(Refusal::new(Control::DifferentialPrivacy, reason))
}

fn internal(e: impl std::fmt::Display) -> GuardError {
    GuardError::Internal(e.to_string())
}

/// Rewrites the checked `plan` under DP: returns the lower plan (exact
/// bounded aggregates: the group columns, then one Int64 column per slot)
/// and how to release it. `k` is the strictest minimum of people per group,
/// enforced on the noisy count when the groups are chosen by partition
/// selection.
pub(crate) fn rewrite(
    plan: &LogicalPlan,
    shape: &DpShape,
    checked: &Checked,
    tables: &HashMap<String, TableInfo>,
    k: u64,
) -> std::result::Result<(LogicalPlan, DpRelease), GuardError> {
    let mut found = None;
    plan.apply(|n| {
        if let LogicalPlan::Aggregate(a) = n {
            found = Some(a.clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(internal)?;
    let agg = found.ok_or_else(|| internal("no aggregate under differential privacy"))?;
    let n_groups = agg.group_expr.len();
    let group_of = identity_groups(checked.scans.len(), &checked.identity_joins);
    let mut roots = group_of.clone();
    roots.sort_unstable();
    roots.dedup();

    // ---- slots and their sensitivities (`airlock_privacy::contribution`)
    let person = Contribution::per_person(shape.max_rows, shape.max_groups);
    let mut sensitivities: Vec<f64> = Vec::new();
    let mut outputs = Vec::new();
    // (slot, how the lower plan computes it)
    enum Lower {
        RowSum(usize),   // sum of per-row value column x_j
        NotNull(usize),  // sum of per-row indicator n_j
        Distinct(usize), // count of distinct ids of a root
    }
    let mut lower_slots: Vec<Lower> = Vec::new();
    let mut new_slot = |lower: Lower, sensitivity: f64, lower_slots: &mut Vec<Lower>| {
        lower_slots.push(lower);
        sensitivities.push(sensitivity);
        lower_slots.len() - 1
    };
    for (j, a) in shape.aggs.iter().enumerate() {
        outputs.push(match a {
            DpAgg::Count { .. } => Output::Value {
                slot: new_slot(Lower::RowSum(j), person.rows(), &mut lower_slots),
                floor: 0,
            },
            DpAgg::Distinct { scan } => Output::Value {
                slot: new_slot(
                    Lower::Distinct(group_of[*scan]),
                    person.people(),
                    &mut lower_slots,
                ),
                floor: 0,
            },
            DpAgg::Sum { lo, hi, .. } => Output::Value {
                slot: new_slot(Lower::RowSum(j), person.sum(*lo, *hi), &mut lower_slots),
                floor: if *lo >= 0 { 0 } else { i64::MIN },
            },
            DpAgg::Avg { lo, hi, .. } => Output::Avg {
                sum: new_slot(Lower::RowSum(j), person.sum(*lo, *hi), &mut lower_slots),
                count: new_slot(Lower::NotNull(j), person.rows(), &mut lower_slots),
                lo: *lo,
                hi: *hi,
            },
        });
    }
    let selection_slot = match (&shape.public_keys, n_groups) {
        (Some(_), _) | (None, 0) => None,
        (None, _) => {
            let root = roots[0];
            let reuse = lower_slots
                .iter()
                .position(|l| matches!(l, Lower::Distinct(r) if *r == root));
            Some(match reuse {
                Some(s) => s,
                None => new_slot(Lower::Distinct(root), person.people(), &mut lower_slots),
            })
        }
    };
    let epsilon_each = even_share(shape.epsilon, sensitivities.len())
        .map_err(|e| dp_refusal(format!("the DP parameters are unusable: {e}")))?;
    let slots = sensitivities
        .iter()
        .map(|s| {
            Laplace::for_epsilon(epsilon_each, *s)
                .map(|mechanism| Slot { mechanism })
                .map_err(|e| dp_refusal(format!("the DP parameters are unusable: {e}")))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;

    // ---- the selection
    let agg_schema = agg.schema.clone();
    let selection = match (&shape.public_keys, selection_slot) {
        (Some(keys), _) => {
            let mut combos: Vec<Vec<String>> = vec![Vec::new()];
            for (i, list) in keys.iter().enumerate() {
                // Each key once: a key listed twice would be released twice,
                // with two draws of noise (the configuration refuses it too).
                let mut seen = std::collections::HashSet::new();
                let list: Vec<String> = list.iter().filter(|k| seen.insert(*k)).cloned().collect();
                let ty = agg_schema.field(i).data_type();
                let strings: ArrayRef = Arc::new(StringArray::from(list.clone()));
                let typed = cast(&strings, ty).map_err(|_| {
                    dp_refusal(format!(
                        "a public key of group column {} does not have the column's type",
                        i + 1
                    ))
                })?;
                if typed.null_count() > 0 {
                    return Err(dp_refusal(format!(
                        "a public key of group column {} does not have the column's type",
                        i + 1
                    )));
                }
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        list.clone().into_iter().map(move |k| {
                            let mut c = c.clone();
                            c.push(k);
                            c
                        })
                    })
                    .collect();
                if combos.len() > MAX_PUBLIC_ROWS {
                    return Err(dp_refusal(format!(
                        "the public keys of the grouped columns combine to more than {MAX_PUBLIC_ROWS} groups"
                    )));
                }
            }
            Selection::Public(combos)
        }
        (None, Some(slot)) => {
            // A person in at most g groups: see `Laplace::partition_threshold`.
            let threshold =
                slots[slot]
                    .mechanism
                    .partition_threshold(person.people(), shape.delta, k);
            Selection::Threshold { slot, threshold }
        }
        (None, None) => Selection::Public(vec![Vec::new()]),
    };
    let cost = DpCost::of(
        &airlock_policy::StrictestDp {
            epsilon: shape.epsilon,
            delta: shape.delta,
            max_rows: shape.max_rows,
            max_groups: shape.max_groups,
        },
        matches!(selection, Selection::Threshold { .. }),
    );

    // ---- the lower plan
    let mut scans = 0;
    let input = carry_identity(&agg.input, &mut scans, tables).map_err(internal)?;
    let id = |r: usize| format!("{HIDDEN_ID}{r}");
    let gname = |i: usize| format!("__airlock_g{i}");
    let mut exprs: Vec<Expr> = agg
        .group_expr
        .iter()
        .enumerate()
        .map(|(i, e)| e.clone().alias(gname(i)))
        .collect();
    for r in &roots {
        exprs.push(hidden(&id(*r)));
    }
    for (j, a) in shape.aggs.iter().enumerate() {
        let indicator = |e: &Expr| {
            when(e.clone().is_null(), lit(0i64))
                .otherwise(lit(1i64))
                .map_err(internal)
        };
        match a {
            DpAgg::Count { arg } => {
                let x = match arg {
                    Some(e) => indicator(e)?,
                    None => lit(1i64),
                };
                exprs.push(x.alias(format!("__airlock_x{j}")));
            }
            DpAgg::Distinct { .. } => {}
            DpAgg::Sum { arg, lo, hi } | DpAgg::Avg { arg, lo, hi } => {
                // TRY_CAST: a value beyond DECIMAL(38, 0) becomes NULL
                // (left out) rather than failing the query, which one row
                // could cause. The clamped values are summed in 128 bits:
                // at most max_rows values of at most 2^63 per person, so no
                // sum wraps around and the sensitivity bound holds.
                let v = Expr::TryCast(TryCast::new(Box::new(arg.clone()), WIDE));
                let (lo, hi) = (wide(i128::from(*lo)), wide(i128::from(*hi)));
                let clamped = when(v.clone().lt(lo.clone()), lo)
                    .when(v.clone().gt(hi.clone()), hi)
                    .otherwise(v)
                    .map_err(internal)?;
                exprs.push(clamped.alias(format!("__airlock_x{j}")));
                exprs.push(indicator(arg)?.alias(format!("__airlock_n{j}")));
            }
        }
    }
    exprs.push(random().alias("__airlock_r"));
    let mut b = LogicalPlanBuilder::from(input)
        .project(exprs)
        .map_err(internal)?;
    // At most max_rows random rows per person, for each identity group.
    for r in &roots {
        b = keep_random(b, &id(*r), &format!("__airlock_rn{r}"), shape.max_rows)?;
    }
    // Per (person, group).
    let mut keys: Vec<Expr> = (0..n_groups).map(|i| hidden(&gname(i))).collect();
    keys.extend(roots.iter().map(|r| hidden(&id(*r))));
    let mut per_person = Vec::new();
    for (j, a) in shape.aggs.iter().enumerate() {
        match a {
            DpAgg::Distinct { .. } => {}
            DpAgg::Count { .. } | DpAgg::Sum { .. } => {
                per_person
                    .push(sum(hidden(&format!("__airlock_x{j}"))).alias(format!("__airlock_x{j}")));
            }
            DpAgg::Avg { .. } => {
                per_person
                    .push(sum(hidden(&format!("__airlock_x{j}"))).alias(format!("__airlock_x{j}")));
                per_person
                    .push(sum(hidden(&format!("__airlock_n{j}"))).alias(format!("__airlock_n{j}")));
            }
        }
    }
    b = b.aggregate(keys, per_person).map_err(internal)?;
    let mut with_random: Vec<Expr> = b.schema().columns().into_iter().map(Expr::Column).collect();
    with_random.push(random().alias("__airlock_r"));
    b = b.project(with_random).map_err(internal)?;
    // At most max_groups random groups per person.
    for r in &roots {
        b = keep_random(b, &id(*r), &format!("__airlock_gn{r}"), shape.max_groups)?;
    }
    // Per group.
    let per_group: Vec<Expr> = lower_slots
        .iter()
        .enumerate()
        .map(|(s, l)| {
            let e = match l {
                Lower::RowSum(j) => sum(hidden(&format!("__airlock_x{j}"))),
                Lower::NotNull(j) => sum(hidden(&format!("__airlock_n{j}"))),
                Lower::Distinct(r) => count_distinct(hidden(&id(*r))),
            };
            e.alias(format!("__airlock_s{s}"))
        })
        .collect();
    let group_keys: Vec<Expr> = (0..n_groups).map(|i| hidden(&gname(i))).collect();
    b = b.aggregate(group_keys, per_group).map_err(internal)?;
    let mut out: Vec<Expr> = (0..n_groups).map(|i| hidden(&gname(i))).collect();
    // Each exact value held to Int64's range (clamping a sum is 1-Lipschitz:
    // the sensitivity stays), then cast, which cannot fail.
    for s in 0..lower_slots.len() {
        let v = cast_expr(hidden(&format!("__airlock_s{s}")), WIDE);
        let (min, max) = (wide(i64::MIN.into()), wide(i64::MAX.into()));
        let held = when(v.clone().lt(min.clone()), min)
            .when(v.clone().gt(max.clone()), max)
            .otherwise(v)
            .map_err(internal)?;
        out.push(
            Expr::TryCast(TryCast::new(Box::new(held), DataType::Int64))
                .alias(format!("__airlock_s{s}")),
        );
    }
    let lower = b.project(out).and_then(|b| b.build()).map_err(internal)?;

    // ---- the upper plan: the aggregate replaced by the placeholder table
    let (_, upper) = Upper::cut(plan, &agg_schema, |n| {
        matches!(n, LogicalPlan::Aggregate(_))
    })
    .map_err(internal)?;
    let names = output_names(upper.plan(), &agg_schema, n_groups);
    let lower_schema: SchemaRef = Arc::new(lower.schema().as_arrow().clone());
    Ok((
        lower,
        DpRelease {
            cost,
            groups: n_groups,
            slots,
            outputs,
            selection,
            lower_schema,
            upper,
            names,
            rows_per_person: shape.max_rows,
        },
    ))
}

/// Keeps at most `limit` rows per value of column `person`, chosen by the
/// random column `__airlock_r` (row number `rn` over it, then a filter).
fn keep_random(
    b: LogicalPlanBuilder,
    person: &str,
    rn: &str,
    limit: u64,
) -> std::result::Result<LogicalPlanBuilder, GuardError> {
    let w = row_number()
        .partition_by(vec![hidden(person)])
        .order_by(vec![hidden("__airlock_r").sort(true, false)])
        .build()
        .map_err(internal)?
        .alias(rn);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    b.window(vec![w])
        .and_then(|b| b.filter(hidden(rn).lt_eq(lit(limit))))
        .map_err(internal)
}

/// The name each aggregate output has in the released result, following
/// the upper plan's first projection where it renames it.
fn output_names(
    upper: &LogicalPlan,
    agg_schema: &datafusion::common::DFSchema,
    groups: usize,
) -> Vec<String> {
    let mut names: Vec<String> = agg_schema
        .fields()
        .iter()
        .skip(groups)
        .map(|f| f.name().clone())
        .collect();
    let mut node = upper;
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                for (i, e) in p.expr.iter().enumerate() {
                    let mut inner = e;
                    while let Expr::Alias(a) = inner {
                        inner = &a.expr;
                    }
                    if let Expr::Column(c) = inner {
                        if let Some(pos) = names.iter().position(|n| n == &c.name) {
                            let (_, f) = p.schema.qualified_field(i);
                            names[pos] = f.name().clone();
                        }
                    }
                }
                return names;
            }
            LogicalPlan::Sort(s) => node = &s.input,
            LogicalPlan::Limit(l) => node = &l.input,
            LogicalPlan::Filter(f) => node = &f.input,
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            _ => return names,
        }
    }
}

/// A description of the noise on one released column.
#[derive(Debug, Clone, Serialize)]
pub struct NoiseNote {
    /// The column.
    pub column: String,
    /// How its values were made.
    pub mechanism: String,
    /// The discrete Laplace scale (for an average: of its sum).
    pub scale: f64,
    /// Half-width of the central 95% interval of the noise (for an
    /// average: of its sum and of its count).
    pub interval95: Vec<u64>,
}

impl DpRelease {
    /// How many group columns the lower plan's result starts with.
    pub fn group_count(&self) -> usize {
        self.groups
    }

    /// How many noisy values each group has (one Int64 column each, after
    /// the group columns).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The mechanism that releases slot `i`.
    pub fn mechanism(&self, i: usize) -> &Laplace {
        &self.slots[i].mechanism
    }

    /// How each of the aggregate's outputs is made from the slots.
    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    /// How the groups that exist are chosen.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// The lower plan's output schema (what an empty result has).
    pub fn lower_schema(&self) -> &SchemaRef {
        &self.lower_schema
    }

    /// The query's steps above the aggregate, over the noisy rows.
    pub fn upper(&self) -> &Upper {
        &self.upper
    }

    /// The noise on each released aggregate.
    pub fn notes(&self) -> Vec<NoiseNote> {
        self.outputs
            .iter()
            .zip(&self.names)
            .map(|(o, name)| match o {
                Output::Value { slot, .. } => NoiseNote {
                    column: name.clone(),
                    mechanism: "discrete Laplace".into(),
                    scale: self.slots[*slot].mechanism.scale(),
                    interval95: vec![self.slots[*slot].mechanism.interval95()],
                },
                Output::Avg { sum, count, .. } => NoiseNote {
                    column: name.clone(),
                    mechanism: "noisy sum / noisy count (discrete Laplace on each)".into(),
                    scale: self.slots[*sum].mechanism.scale(),
                    interval95: vec![
                        self.slots[*sum].mechanism.interval95(),
                        self.slots[*count].mechanism.interval95(),
                    ],
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_protocol::ScanDp;

    /// Two owners with a DP table each (epsilon 1 and 0.5, delta 1e-7 and
    /// 1e-6), and a third table of the first owner without DP.
    fn collab() -> airlock_policy::Collaboration {
        let dp = |e: f64, d: f64, key: &str| {
            format!(
                "differential_privacy = {{ epsilon = {e}, delta = {d}, public_keys = {{ {key} = [\"x\"] }} }}"
            )
        };
        let text = format!(
            r#"
[collaboration]
name = "c"
secret_file = "k"

[privacy]
epsilon = 10.0
delta = 1e-5

[[members]]
name = "a"
abilities = ["query", "receive", "provide"]

[[members]]
name = "b"
abilities = ["provide"]

[[datasets]]
name = "da"
owner = "a"

[[datasets]]
name = "da2"
owner = "a"

[[datasets]]
name = "db"
owner = "b"

[[tables]]
alias = "ta"
dataset = "da"
identity = "email"
join = ["email"]
dimensions = ["s"]
rule = {{ type = "aggregation", min_distinct_identities = 5, {} }}

[[tables]]
alias = "ta2"
dataset = "da2"
identity = "email"
join = ["email"]
dimensions = ["s"]
rule = {{ type = "aggregation", min_distinct_identities = 5 }}

[[tables]]
alias = "tb"
dataset = "db"
identity = "email"
join = ["email"]
dimensions = ["r"]
rule = {{ type = "aggregation", min_distinct_identities = 5, {} }}
"#,
            dp(1.0, 1e-7, "s"),
            dp(0.5, 1e-6, "r")
        );
        airlock_policy::Collaboration::from_toml(&text, "c.toml").expect("collaboration")
    }

    fn declared(tables: &[&str], partition_selection: bool) -> ScanDp {
        ScanDp {
            tables: tables.iter().map(|t| t.to_string()).collect(),
            partition_selection,
        }
    }

    #[test]
    fn a_node_prices_what_the_fragment_declares_by_its_own_rules() {
        let c = collab();
        // The strictest of the two: epsilon 0.5; delta only with selection.
        let cost = scan_cost(&c, "ta", &declared(&["ta", "tb"], false)).expect("priced");
        assert_eq!((cost.epsilon, cost.delta), (0.5, 0.0));
        let cost = scan_cost(&c, "tb", &declared(&["ta", "tb"], true)).expect("priced");
        assert_eq!((cost.epsilon, cost.delta), (0.5, 1e-7));
    }

    #[test]
    fn every_malformed_declaration_is_refused_by_name() {
        let c = collab();
        for (table, tables) in [
            ("ta", &[][..]),                  // nothing declared
            ("ta", &["tb"][..]),              // its own table missing
            ("ta", &["ta", "tb", "ta"][..]),  // a table twice
            ("ta", &["ta", "nope"][..]),      // not configured
            ("ta", &["ta", "ta2", "tb"][..]), // a table without DP mixed in
            ("ta", &["ta"][..]),              // one owner's tables alone
            ("ta", &["ta", "ta2"][..]),       // one owner's tables alone
        ] {
            for selection in [false, true] {
                let r = scan_cost(&c, table, &declared(tables, selection))
                    .expect_err(&format!("{tables:?} refused"));
                assert!(
                    matches!(
                        r.control,
                        Control::DifferentialPrivacy | Control::UnsupportedPlan
                    ),
                    "{tables:?}: {r}"
                );
            }
        }
    }
}
