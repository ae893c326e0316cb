//! Totality: an accepted query cannot fail on any input.
//!
//! A query that fails on one row is an oracle: whether it fails tells the
//! analyst whether some row, perhaps one person joined from another
//! member's table, has a value (ATTACKS 25, 26, 28). So every expression
//! of the plan *as it will run* (after the analyzer's type coercion, which
//! inserts casts) must be total: for every value of every column's type
//! (NULLs, empty strings, the extreme integers, NaN and infinities, any
//! date), its evaluation returns a value.
//!
//! The check walks every expression of every plan node (filters,
//! projections, group keys, join conditions, aggregates, HAVING, ORDER BY,
//! LIMIT) with one rule per expression form:
//!
//! - a *constant* (an expression that reads no column) is evaluated here,
//!   once; if it fails the query is refused: inside a `CASE` it would fail
//!   only on the rows that reach it;
//! - a cast must be one that cannot fail ([`cast_is_total`]); `TRY_CAST`
//!   is total by definition;
//! - integer `+ - *`, unary minus and `abs` are accepted only when the
//!   range of their operands, computed from the column types and the
//!   constants ([`Checker::range`]), proves the result fits its type;
//!   floating point arithmetic is total (infinities and NaN, no error);
//!   decimal and date arithmetic is refused;
//! - division and modulo need a constant divisor that is not 0 (nor -1
//!   when the dividend can be the smallest integer), or floating operands;
//! - each allowed scalar function has its own rule ([`Checker::function`]):
//!   `substr`'s length a constant of at least 0, `replace` never growing
//!   a string, `date_trunc`'s unit a known constant, and so on. A function
//!   without a rule is refused;
//! - regular expression and `LIKE` patterns must be constants that compile;
//! - every other expression form is refused.
//!
//! The aggregates are made total by the rewrite: an integer `SUM`
//! accumulates in `DECIMAL(38, 0)`, which no number of 64-bit values a
//! table can hold overflows (see `rewrite::widen_sums`).

use std::sync::Arc;

use airlock_policy::{Control, Refusal};
use datafusion::arrow::array::RecordBatchOptions;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::physical_expr::create_physical_expr;

mod casts;
mod functions;

use casts::*;
pub(crate) use casts::{cast_is_total, try_cast_is_total};
use functions::*;

type R<T> = Result<T, Refusal>;

/// The most copies of its input texts the computed expressions of one
/// query may make together, over all its plan nodes (`concat` of the same
/// long column many times, several group keys each copying it, or a chain
/// of subqueries each adding one such column, would grow a row past what
/// memory holds only when that row joins: an oracle by exhaustion; red
/// team: 50 subqueries of 8 copies each passed a per-node bound). With
/// texts from fragments cut to 4 KiB (`airlock_exec`), a row's computed
/// text stays under 32 KiB.
pub(crate) const MAX_TEXT_GROWTH: u64 = 8;

/// The most a constant string position or length may be (`substr`,
/// `left`, `right`): far beyond any string, far from overflowing.
const MAX_POSITION: i128 = 1 << 31;

fn oracle(reason: impl Into<String>) -> Refusal {
    Refusal::new(Control::ErrorOracle, reason)
}

/// Checks that every expression of `plan` (and of every plan below it) is
/// total.
pub(crate) fn check_plan(plan: &LogicalPlan) -> R<()> {
    let mut refusal = None;
    // Copies made by the computed expressions of every node, all together
    // (a column passed on is not copied).
    let mut copies = 0u64;
    let patterns = std::cell::Cell::new(0usize);
    plan.apply_with_subqueries(|node| {
        let schema = input_schema(node);
        let inputs: Vec<Measure> = node.inputs().into_iter().flat_map(measures).collect();
        let checker = Checker {
            schema: &schema,
            inputs: &inputs,
            patterns: &patterns,
        };
        let _ = node.apply_expressions(|e| {
            let plain = matches!(e.clone().unalias(), Expr::Column(_));
            if !plain {
                copies = copies.saturating_add(checker.measure(e).growth);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if copies > MAX_TEXT_GROWTH {
            refusal = Some(oracle(format!(
                "the expressions of one query may copy their input texts at most {MAX_TEXT_GROWTH} times together (concat of long columns can exhaust memory on one row)"
            )));
            return Ok(TreeNodeRecursion::Stop);
        }
        let result = node.apply_expressions(|e| match checker.check(e) {
            Ok(()) => Ok(TreeNodeRecursion::Continue),
            Err(r) => {
                refusal = Some(r);
                Ok(TreeNodeRecursion::Stop)
            }
        });
        match (result, &refusal) {
            (_, Some(_)) => Ok(TreeNodeRecursion::Stop),
            (Err(e), None) => {
                refusal = Some(oracle(format!(
                    "an expression could not be checked for failures ({})",
                    e.strip_backtrace()
                )));
                Ok(TreeNodeRecursion::Stop)
            }
            (Ok(_), None) => Ok(TreeNodeRecursion::Continue),
        }
    })
    .map_err(|e| oracle(format!("the plan could not be checked ({e})")))?;
    match refusal {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

/// A constant part of `plan` that fails when evaluated: the query is bad
/// input (it fails whatever the data), found before it runs.
pub(crate) fn failing_constant(plan: &LogicalPlan) -> bool {
    let mut fails = false;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|x| {
                if is_constant(x)
                    && !matches!(x, Expr::Literal(..))
                    && (evaluate(x).is_none() || wraps(x))
                {
                    fails = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
        .map(|r| if fails { TreeNodeRecursion::Stop } else { r })
    });
    fails
}

/// The columns a node's expressions read: its inputs' schemas, in order.
fn input_schema(plan: &LogicalPlan) -> DFSchema {
    let mut schema = DFSchema::empty();
    for input in plan.inputs() {
        schema.merge(input.schema());
    }
    schema
}

/// Whether `e` reads no column and computes nothing over rows.
fn is_constant(e: &Expr) -> bool {
    let mut constant = true;
    let _ = e.apply(|x| {
        if matches!(
            x,
            Expr::Column(_)
                | Expr::OuterReferenceColumn(..)
                | Expr::AggregateFunction(_)
                | Expr::WindowFunction(_)
                | Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::SetComparison(_)
                | Expr::Placeholder(_)
                | Expr::ScalarVariable(..)
                | Expr::GroupingSet(_)
                | Expr::Unnest(_)
        ) {
            constant = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        if let Expr::ScalarFunction(f) = x {
            if f.func.signature().volatility != datafusion::logical_expr::Volatility::Immutable {
                constant = false;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    constant
}

/// Evaluates a constant expression; `None` if it fails.
fn evaluate(e: &Expr) -> Option<ScalarValue> {
    if let Expr::Literal(v, _) = e {
        return Some(v.clone());
    }
    // The engine can panic on some constants (an `IN` list of decimal
    // functions, evaluated over an empty batch while it is planned: the
    // 100,000-query generator run found one); a constant that panics is
    // one that fails, so the query is bad input, never a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| evaluate_unguarded(e)))
        .ok()
        .flatten()
}

fn evaluate_unguarded(e: &Expr) -> Option<ScalarValue> {
    let physical = create_physical_expr(
        e,
        &DFSchema::empty(),
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
    .ok()?;
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .ok()?;
    let value = physical.evaluate(&batch).ok()?;
    let array = value.into_array(1).ok()?;
    ScalarValue::try_from_array(&array, 0).ok()
}

/// An integer of any width, exactly.
fn scalar_i128(v: &ScalarValue) -> Option<i128> {
    Some(match v {
        ScalarValue::Int8(Some(x)) => (*x).into(),
        ScalarValue::Int16(Some(x)) => (*x).into(),
        ScalarValue::Int32(Some(x)) => (*x).into(),
        ScalarValue::Int64(Some(x)) => (*x).into(),
        ScalarValue::UInt8(Some(x)) => (*x).into(),
        ScalarValue::UInt16(Some(x)) => (*x).into(),
        ScalarValue::UInt32(Some(x)) => (*x).into(),
        ScalarValue::UInt64(Some(x)) => (*x).into(),
        _ => return None,
    })
}

/// Whether a constant integer `+ - *` or negation evaluates to something
/// other than its exact value: the engine's arithmetic wraps on overflow,
/// so `9223372036854775807 + 1` would silently be the smallest Int64.
fn wraps(e: &Expr) -> bool {
    let exact = match e {
        Expr::BinaryExpr(b) => {
            let (Some(l), Some(r)) = (
                evaluate(&b.left).as_ref().and_then(scalar_i128),
                evaluate(&b.right).as_ref().and_then(scalar_i128),
            ) else {
                return false;
            };
            match b.op {
                Operator::Plus => l.checked_add(r),
                Operator::Minus => l.checked_sub(r),
                Operator::Multiply => l.checked_mul(r),
                _ => return false,
            }
        }
        Expr::Negative(x) => match evaluate(x).as_ref().and_then(scalar_i128) {
            Some(v) => v.checked_neg(),
            None => return false,
        },
        _ => return false,
    };
    match evaluate(e).as_ref().and_then(scalar_i128) {
        Some(got) => exact != Some(got),
        None => false,
    }
}

struct Checker<'a> {
    schema: &'a DFSchema,
    /// Per column of `schema`: its measure through the plan below.
    inputs: &'a [Measure],
    /// Characters of the LIKE and regular-expression patterns checked so
    /// far in the query ([`MAX_QUERY_PATTERNS`]).
    patterns: &'a std::cell::Cell<usize>,
}

/// The longest constant text or binary a query may hold, as written or as
/// computed from constants (red team: five nested `replace` of a short
/// literal made a million characters, and `btrim` of a 4 KiB value by it
/// took 2 s only on joined rows). Values from fragments are cut to the
/// same length.
const MAX_CONSTANT_BYTES: usize = 4096;

/// Whether a constant is a text or binary longer than
/// [`MAX_CONSTANT_BYTES`].
fn too_long(v: &ScalarValue) -> bool {
    match v {
        ScalarValue::Utf8(Some(t))
        | ScalarValue::LargeUtf8(Some(t))
        | ScalarValue::Utf8View(Some(t)) => t.len() > MAX_CONSTANT_BYTES,
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b))
        | ScalarValue::FixedSizeBinary(_, Some(b)) => b.len() > MAX_CONSTANT_BYTES,
        ScalarValue::Dictionary(_, inner) => too_long(inner),
        _ => false,
    }
}

/// The most characters the LIKE and regular-expression patterns of one
/// query may have together: matching a 4 KiB text against twenty patterns
/// of 1,000 characters took seconds in the executor only on the rows that
/// reached them, which a filter on another member's column decides (red
/// team: 3.3 s with a person in the other table, 0.06 s without).
const MAX_QUERY_PATTERNS: usize = 1_000;

/// What a column's value can grow to: copies of input text, and the size
/// of its expression written out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measure {
    growth: u64,
    size: u64,
}

/// The most parts an output column's expression may have once the
/// expressions it reads through projections are written in place.
const MAX_INLINED_SIZE: u64 = 100_000;

/// The measure of each output column of `plan`.
fn measures(plan: &LogicalPlan) -> Vec<Measure> {
    let inputs: Vec<Measure> = plan.inputs().into_iter().flat_map(measures).collect();
    let one = Measure { growth: 1, size: 1 };
    let schema = input_schema(plan);
    let unused = std::cell::Cell::new(0);
    let checker = Checker {
        schema: &schema,
        inputs: &inputs,
        patterns: &unused,
    };
    match plan {
        LogicalPlan::Projection(p) => p.expr.iter().map(|e| checker.measure(e)).collect(),
        LogicalPlan::Aggregate(a) => a
            .group_expr
            .iter()
            .map(|e| checker.measure(e))
            .chain(a.aggr_expr.iter().map(|e| Measure {
                growth: 0,
                size: checker.measure(e).size,
            }))
            .collect(),
        LogicalPlan::Join(_) => inputs,
        LogicalPlan::TableScan(_) => vec![one; plan.schema().fields().len()],
        _ if inputs.len() == plan.schema().fields().len() => inputs,
        _ => vec![one; plan.schema().fields().len()],
    }
}

impl Checker<'_> {
    /// Counts a pattern's characters toward the query's
    /// [`MAX_QUERY_PATTERNS`].
    fn count_pattern(&self, p: &Option<Option<String>>) -> R<()> {
        let length = match p {
            Some(Some(text)) => text.chars().count(),
            _ => 0,
        };
        let total = self.patterns.get().saturating_add(length);
        self.patterns.set(total);
        if total > MAX_QUERY_PATTERNS {
            return Err(oracle(format!(
                "the LIKE and regular-expression patterns of one query may have at most {MAX_QUERY_PATTERNS} characters together (matching long texts against many patterns takes seconds, only on the rows that reach them)"
            )));
        }
        Ok(())
    }

    fn ty(&self, e: &Expr) -> R<DataType> {
        e.get_type(self.schema).map_err(|err| {
            oracle(format!(
                "the type of an expression is unknown ({})",
                err.strip_backtrace()
            ))
        })
    }

    /// Checks `e` and every expression inside it.
    fn check(&self, e: &Expr) -> R<()> {
        if is_constant(e) {
            // Every part on its own: the engine may evaluate a constant
            // part that a short-circuit here would skip (the optimizer
            // folds each constant it finds).
            let (mut fails, mut long) = (false, false);
            let _ = e.apply(|x| {
                let value = match x {
                    Expr::Literal(v, _) => Some(v.clone()),
                    _ => evaluate(x),
                };
                if value.is_none() || (!matches!(x, Expr::Literal(..)) && wraps(x)) {
                    fails = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                if value.as_ref().is_some_and(too_long) {
                    long = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            });
            return match (fails, long) {
                (false, false) => Ok(()),
                (true, _) => Err(Refusal::new(
                    Control::ErrorOracle,
                    "a constant expression in the query fails when evaluated; a query must not fail on any row",
                )),
                (false, true) => Err(Refusal::new(
                    Control::Limit,
                    format!("a constant text or binary may have at most {MAX_CONSTANT_BYTES} bytes, written or computed (a longer one makes the work or memory of each row it meets large, and only joined rows meet some)"),
                )),
            };
        }
        self.node(e)?;
        let m = self.measure(e);
        if m.size > MAX_INLINED_SIZE {
            return Err(Refusal::new(
                Control::Limit,
                format!("an expression would have more than {MAX_INLINED_SIZE} parts once the columns it reads through subqueries are written in place"),
            ));
        }
        if m.growth > MAX_TEXT_GROWTH {
            return Err(oracle(format!(
                "a text expression may copy its input more than {MAX_TEXT_GROWTH} times (concat of long columns can exhaust memory on one row)"
            )));
        }
        let mut result = Ok(());
        e.apply_children(|c| match self.check(c) {
            Ok(()) => Ok(TreeNodeRecursion::Continue),
            Err(r) => {
                result = Err(r);
                Ok(TreeNodeRecursion::Stop)
            }
        })
        .map_err(|err| oracle(err.strip_backtrace()))?;
        result
    }

    /// How many times `e`'s value can hold the text of the columns it
    /// reads (constants add a fixed length, not a factor), and how large it
    /// is with the expressions of the columns it reads written in place
    /// (what the optimizer makes of projections over projections).
    fn measure(&self, e: &Expr) -> Measure {
        if is_constant(e) {
            return Measure { growth: 0, size: 1 };
        }
        if let Expr::Column(c) = e {
            return self
                .schema
                .index_of_column(c)
                .ok()
                .and_then(|i| self.inputs.get(i).copied())
                .unwrap_or(Measure { growth: 1, size: 1 });
        }
        let mut parts = Vec::new();
        let _ = e.apply_children(|c| {
            parts.push(self.measure(c));
            Ok(TreeNodeRecursion::Continue)
        });
        let size = parts.iter().fold(1u64, |a, m| a.saturating_add(m.size));
        let sum = parts.iter().fold(0u64, |a, m| a.saturating_add(m.growth));
        let max = parts.iter().map(|m| m.growth).max().unwrap_or(0);
        let growth = match e {
            Expr::BinaryExpr(b) if b.op == Operator::StringConcat => sum,
            Expr::ScalarFunction(f) => match f.func.name() {
                "concat" => sum,
                // The separator goes between every two arguments.
                "concat_ws" => {
                    let sep = parts.first().map(|m| m.growth).unwrap_or(0);
                    sum.saturating_add(sep.saturating_mul(parts.len() as u64))
                }
                // Case mapping can turn one character into three.
                "upper" | "lower" | "initcap" => max.saturating_mul(3),
                _ => max,
            },
            // Numbers, booleans and dates are short whatever they hold.
            _ if !self.ty(e).map(|t| is_string(&t)).unwrap_or(true) => 0,
            _ => max,
        };
        Measure { growth, size }
    }

    /// The constant value of `e`, if it is a constant.
    fn constant(&self, e: &Expr) -> Option<ScalarValue> {
        if is_constant(e) {
            evaluate(e)
        } else {
            None
        }
    }

    fn constant_int(&self, e: &Expr) -> Option<Option<i128>> {
        let v = self.constant(e)?;
        if v.is_null() {
            return Some(None);
        }
        let v = v.cast_to(&DataType::Int64).ok()?;
        match v {
            ScalarValue::Int64(Some(x)) => Some(Some(x.into())),
            _ => None,
        }
    }

    fn constant_string(&self, e: &Expr) -> Option<Option<String>> {
        let v = self.constant(e)?;
        if v.is_null() {
            return Some(None);
        }
        match v {
            ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => Some(s),
            _ => None,
        }
    }

    /// Bounds on the values of an integer expression, from its type and the
    /// constants in it; `None` if it is not an integer.
    fn range(&self, e: &Expr) -> Option<(i128, i128)> {
        let ty = self.ty(e).ok()?;
        let full = type_range(&ty)?;
        if let Some(c) = self.constant_int(e) {
            return Some(match c {
                Some(v) => (v, v),
                None => full,
            });
        }
        let derived = self.computed_range(e);
        Some(match derived {
            Some((lo, hi)) => (lo.max(full.0), hi.min(full.1)),
            None => full,
        })
    }

    /// Bounds on an integer expression's values computed from its
    /// operands' ranges, before they are held to its type; `None` when they
    /// cannot be computed (or overflow 128 bits).
    fn computed_range(&self, e: &Expr) -> Option<(i128, i128)> {
        match e {
            Expr::Alias(a) => self.range(&a.expr),
            Expr::Cast(c) => self.range(&c.expr),
            Expr::Negative(x) => self
                .range(x)
                .and_then(|(lo, hi)| Some((hi.checked_neg()?, lo.checked_neg()?))),
            Expr::BinaryExpr(b) => {
                let (l, r) = (self.range(&b.left)?, self.range(&b.right)?);
                interval(b.op, l, r)
            }
            Expr::ScalarFunction(f) if f.func.name() == "abs" => {
                let (lo, hi) = self.range(f.args.first()?)?;
                let m = lo.checked_abs()?.max(hi.checked_abs()?);
                Some((
                    if lo <= 0 && hi >= 0 {
                        0
                    } else {
                        lo.abs().min(hi.abs())
                    },
                    m,
                ))
            }
            Expr::Case(c) => {
                let mut hull: Option<(i128, i128)> = None;
                let branches = c
                    .when_then_expr
                    .iter()
                    .map(|(_, t)| t.as_ref())
                    .chain(c.else_expr.as_deref());
                for t in branches {
                    let (lo, hi) = self.range(t)?;
                    hull = Some(match hull {
                        None => (lo, hi),
                        Some((a, b)) => (a.min(lo), b.max(hi)),
                    });
                }
                hull
            }
            _ => None,
        }
    }

    /// The rule for one expression node (its children are checked apart).
    fn node(&self, e: &Expr) -> R<()> {
        match e {
            Expr::Column(_)
            | Expr::Literal(..)
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
            | Expr::Between(_)
            | Expr::Case(_)
            | Expr::InList(_) => Ok(()),
            Expr::AggregateFunction(f) => {
                let name = f.func.name().to_ascii_lowercase();
                match (name.as_str(), f.params.args.as_slice()) {
                    ("sum" | "avg", [arg])
                        if !crate::rewrite::sum_is_exact(&name, arg, self.schema) =>
                    {
                        Err(oracle(format!(
                            "{} of {} values can overflow on one value (no type holds every sum of them)",
                            name.to_ascii_uppercase(),
                            self.ty(arg)?
                        )))
                    }
                    _ => Ok(()),
                }
            }
            Expr::TryCast(c) => {
                let from = self.ty(&c.expr)?;
                let to = c.field.data_type();
                if try_cast_is_total(&from, to) {
                    Ok(())
                } else {
                    Err(oracle(format!(
                        "TRY_CAST from {from} to {to} can fail on one value (it is not supported, or it formats values that may have no text)"
                    )))
                }
            }
            Expr::Negative(x) => {
                let ty = self.ty(x)?;
                if is_float(&ty)
                    || matches!(ty, DataType::Decimal128(..) | DataType::Decimal256(..))
                {
                    return Ok(());
                }
                self.fits(e, &ty, "a unary minus")
            }
            Expr::Cast(c) => {
                let from = self.ty(&c.expr)?;
                let to = c.field.data_type();
                if cast_is_total(&from, to) {
                    Ok(())
                } else {
                    Err(oracle(format!(
                        "a cast from {from} to {to} can fail on one value (it may be inserted to compare values of different types); compare values of the same type or use TRY_CAST"
                    )))
                }
            }
            Expr::Like(l) if l.escape_char.is_some() => {
                Err(oracle("LIKE ... ESCAPE is not allowed"))
            }
            Expr::Like(l) => {
                let p = self.constant_string(&l.pattern);
                like_pattern(&p)?;
                self.count_pattern(&p)
            }
            Expr::BinaryExpr(b) => self.binary(e, b),
            Expr::ScalarFunction(f) => self.function(e, f.func.name(), &f.args),
            other => Err(oracle(format!(
                "the expression {} cannot be shown never to fail",
                other.variant_name()
            ))),
        }
    }

    fn fits(&self, e: &Expr, ty: &DataType, what: &str) -> R<()> {
        match self.derived_range(e) {
            Some(_) => Ok(()),
            None => Err(oracle(format!(
                "{what} on {ty} values can overflow on one value; cast the operands to DOUBLE"
            ))),
        }
    }

    /// The range of an arithmetic node computed from its operands (as
    /// [`Checker::range`] computes it), if it fits the node's type (`None`
    /// when it may overflow).
    fn derived_range(&self, e: &Expr) -> Option<(i128, i128)> {
        let (tlo, thi) = type_range(&self.ty(e).ok()?)?;
        let (lo, hi) = self.computed_range(e)?;
        (tlo <= lo && hi <= thi).then_some((lo, hi))
    }

    fn binary(&self, e: &Expr, b: &datafusion::logical_expr::BinaryExpr) -> R<()> {
        use Operator::*;
        match b.op {
            Eq | NotEq | Lt | LtEq | Gt | GtEq | IsDistinctFrom | IsNotDistinctFrom | And | Or
            | StringConcat => Ok(()),
            Plus | Minus | Multiply => {
                let ty = self.ty(e)?;
                if is_float(&ty) {
                    Ok(())
                } else if type_range(&ty).is_some() {
                    self.fits(e, &ty, &format!("'{}'", b.op))
                } else {
                    Err(oracle(format!(
                        "'{}' on {ty} values can overflow or fail on one value; cast the operands to DOUBLE",
                        b.op
                    )))
                }
            }
            Divide | Modulo => {
                let ty = self.ty(e)?;
                let (lt, rt) = (self.ty(&b.left)?, self.ty(&b.right)?);
                if is_float(&lt) && is_float(&rt) {
                    return Ok(());
                }
                if type_range(&ty).is_some() {
                    if let (Some(Some(d)), Some((lo, _))) =
                        (self.constant_int(&b.right), self.range(&b.left))
                    {
                        let min = type_range(&ty).map(|(m, _)| m).unwrap_or(0);
                        if d != 0 && !(d == -1 && lo <= min) {
                            return Ok(());
                        }
                    }
                }
                Err(oracle(format!(
                    "'{}' fails on one value when the divisor can be 0; divide by a constant other than 0, or cast both operands to DOUBLE",
                    b.op
                )))
            }
            RegexMatch | RegexIMatch | RegexNotMatch | RegexNotIMatch => {
                let pattern = self.constant_string(&b.right);
                self.count_pattern(&pattern)?;
                match pattern {
                    Some(Some(p))
                        if regex_compiles(&p, matches!(b.op, RegexIMatch | RegexNotIMatch)) =>
                    {
                        Ok(())
                    }
                    Some(None) => Ok(()),
                    _ => Err(oracle(
                        "a regular expression pattern must be a constant that compiles to a small program (at most 8 KiB: a bigger one takes longer to compile exactly when a row reaches it)",
                    )),
                }
            }
            LikeMatch | ILikeMatch | NotLikeMatch | NotILikeMatch => {
                let p = self.constant_string(&b.right);
                like_pattern(&p)?;
                self.count_pattern(&p)
            }
            other => Err(oracle(format!("the operator '{other}' is not allowed"))),
        }
    }
}

/// Rewrites the functions that have a total variant into it, keeping every
/// output name: `date_part(unit, d)` of a DATE reads
/// `CASE WHEN d BETWEEN lo AND hi THEN d END`, a date chrono can convert
/// (else NULL), so it neither fails nor returns NULL where the plan says
/// it cannot. Runs after type coercion and before the check, so the check
/// sees (and passes) what runs.
pub(crate) fn make_total(plan: LogicalPlan) -> datafusion::common::Result<LogicalPlan> {
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::expr_rewriter::NamePreserver;
    use datafusion::logical_expr::{lit, when};
    let rewritten = plan.transform_up_with_subqueries(|node| {
        let schema = input_schema(&node);
        let names = NamePreserver::new(&node);
        let node = node.map_expressions(|e| {
            let saved = names.save(&e);
            let t = e.transform_up(|x| {
                let Expr::ScalarFunction(f) = &x else {
                    return Ok(Transformed::no(x));
                };
                if f.func.name() != "date_part" || f.args.len() != 2 {
                    return Ok(Transformed::no(x));
                }
                let d = &f.args[1];
                if d.get_type(&schema)? != DataType::Date32 {
                    return Ok(Transformed::no(x));
                }
                let (lo, hi) = DATE_PART_DAYS;
                let inside = d.clone().between(
                    lit(ScalarValue::Date32(Some(lo))),
                    lit(ScalarValue::Date32(Some(hi))),
                );
                let held = when(inside, d.clone()).end()?;
                let mut g = f.clone();
                g.args[1] = held;
                Ok(Transformed::yes(Expr::ScalarFunction(g)))
            })?;
            Ok(if t.transformed {
                Transformed::yes(saved.restore(t.data))
            } else {
                t
            })
        })?;
        if node.transformed {
            Ok(Transformed::yes(node.data.recompute_schema()?))
        } else {
            Ok(node)
        }
    })?;
    Ok(rewritten.data)
}
