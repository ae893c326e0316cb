//! Literals and predicates to and from DataFusion, in one place.
//!
//! The guard turns the filter conjuncts it can push to a node into a
//! [`Predicate`] ([`to_predicate`]); the node turns the predicate it
//! received back into a DataFusion expression ([`predicate_to_expr`]) and
//! runs it over its own data; templates bind parameter values with
//! [`scalar`]. A conversion that drifted between the two sides would make a
//! node run a different filter from the one the guard checked, so both
//! directions live here and a test checks that they invert each other.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::Like;
use datafusion::logical_expr::utils::{conjunction, disjunction};
use datafusion::logical_expr::{binary_expr, lit, BinaryExpr, Expr, Operator};
use datafusion::prelude::Column;

use crate::fragment::{CmpOp, Literal, Predicate};

/// The DataFusion value of a literal.
pub fn scalar(v: &Literal) -> ScalarValue {
    match v {
        Literal::Null => ScalarValue::Null,
        Literal::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Literal::Int(i) => ScalarValue::Int64(Some(*i)),
        Literal::Float(f) => ScalarValue::Float64(Some(*f)),
        Literal::Str(s) => ScalarValue::Utf8(Some(s.clone())),
        Literal::Date(d) => ScalarValue::Date32(Some(*d)),
    }
}

/// The literal of a DataFusion value, if it has one (integers up to 64
/// bits signed, floats, strings, booleans, dates; any null is `Null`).
pub fn literal(v: &ScalarValue) -> Option<Literal> {
    if v.is_null() {
        return Some(Literal::Null);
    }
    Some(match v {
        ScalarValue::Boolean(Some(b)) => Literal::Bool(*b),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Literal::Str(s.clone()),
        ScalarValue::Int8(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::Int16(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::Int32(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::Int64(Some(i)) => Literal::Int(*i),
        ScalarValue::UInt8(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::UInt16(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::UInt32(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::Float32(Some(f)) => Literal::Float((*f).into()),
        ScalarValue::Float64(Some(f)) => Literal::Float(*f),
        ScalarValue::Date32(Some(d)) => Literal::Date(*d),
        _ => return None,
    })
}

fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Column(c) => Some(c.name.clone()),
        _ => None,
    }
}

fn cmp(op: Operator) -> Option<(CmpOp, CmpOp)> {
    // (op, op with sides swapped)
    Some(match op {
        Operator::Eq => (CmpOp::Eq, CmpOp::Eq),
        Operator::NotEq => (CmpOp::NotEq, CmpOp::NotEq),
        Operator::Lt => (CmpOp::Lt, CmpOp::Gt),
        Operator::LtEq => (CmpOp::LtEq, CmpOp::GtEq),
        Operator::Gt => (CmpOp::Gt, CmpOp::Lt),
        Operator::GtEq => (CmpOp::GtEq, CmpOp::LtEq),
        _ => return None,
    })
}

fn operator(op: CmpOp) -> Operator {
    match op {
        CmpOp::Eq => Operator::Eq,
        CmpOp::NotEq => Operator::NotEq,
        CmpOp::Lt => Operator::Lt,
        CmpOp::LtEq => Operator::LtEq,
        CmpOp::Gt => Operator::Gt,
        CmpOp::GtEq => Operator::GtEq,
    }
}

/// Converts a filter expression to the declarative predicate a node runs, if
/// it has that form.
pub fn to_predicate(e: &Expr) -> Option<Predicate> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => Some(Predicate::And(vec![
                to_predicate(left)?,
                to_predicate(right)?,
            ])),
            Operator::Or => Some(Predicate::Or(vec![
                to_predicate(left)?,
                to_predicate(right)?,
            ])),
            _ => {
                let (op, swapped) = cmp(*op)?;
                match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), Expr::Literal(v, _)) => Some(Predicate::Compare {
                        column: c.name.clone(),
                        op,
                        value: literal(v)?,
                    }),
                    (Expr::Literal(v, _), Expr::Column(c)) => Some(Predicate::Compare {
                        column: c.name.clone(),
                        op: swapped,
                        value: literal(v)?,
                    }),
                    _ => None,
                }
            }
        },
        Expr::Not(inner) => Some(Predicate::Not(Box::new(to_predicate(inner)?))),
        Expr::IsNull(inner) => Some(Predicate::IsNull {
            column: column_name(inner)?,
            negated: false,
        }),
        Expr::IsNotNull(inner) => Some(Predicate::IsNull {
            column: column_name(inner)?,
            negated: true,
        }),
        Expr::InList(l) => Some(Predicate::InList {
            column: column_name(&l.expr)?,
            values: l
                .list
                .iter()
                .map(|v| match v {
                    Expr::Literal(s, _) => literal(s),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?,
            negated: l.negated,
        }),
        Expr::Like(l) if l.escape_char.is_none() => match l.pattern.as_ref() {
            Expr::Literal(ScalarValue::Utf8(Some(p)) | ScalarValue::Utf8View(Some(p)), _) => {
                Some(Predicate::Like {
                    column: column_name(&l.expr)?,
                    pattern: p.clone(),
                    negated: l.negated,
                    case_insensitive: l.case_insensitive,
                })
            }
            _ => None,
        },
        // A bare boolean column as a filter keeps the rows where it is
        // true, as `IS TRUE` does (NULL and false are dropped by both).
        Expr::Column(c) => Some(Predicate::IsTrue {
            column: c.name.clone(),
        }),
        Expr::IsTrue(inner) => Some(Predicate::IsTrue {
            column: column_name(inner)?,
        }),
        _ => None,
    }
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// The DataFusion expression of a fragment predicate.
pub fn predicate_to_expr(p: &Predicate) -> Expr {
    match p {
        Predicate::And(ps) => conjunction(ps.iter().map(predicate_to_expr)).unwrap_or(lit(true)),
        Predicate::Or(ps) => disjunction(ps.iter().map(predicate_to_expr)).unwrap_or(lit(false)),
        Predicate::Not(p) => Expr::Not(Box::new(predicate_to_expr(p))),
        Predicate::Compare {
            column: c,
            op,
            value,
        } => binary_expr(column(c), operator(*op), lit(scalar(value))),
        Predicate::InList {
            column: c,
            values,
            negated,
        } => column(c).in_list(values.iter().map(|v| lit(scalar(v))).collect(), *negated),
        Predicate::IsNull { column: c, negated } => {
            if *negated {
                column(c).is_not_null()
            } else {
                column(c).is_null()
            }
        }
        Predicate::Like {
            column: c,
            pattern,
            negated,
            case_insensitive,
        } => Expr::Like(Like::new(
            *negated,
            Box::new(column(c)),
            Box::new(lit(pattern.clone())),
            None,
            *case_insensitive,
        )),
        Predicate::IsTrue { column: c } => column(c).is_true(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Predicates of every form over every literal kind, nested to depth 3,
    /// from a fixed seed.
    fn generated(seed: &mut u64, depth: u32) -> Predicate {
        let mut next = |n: u64| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed % n
        };
        let lits = [
            Literal::Null,
            Literal::Bool(true),
            Literal::Int(i64::MIN),
            Literal::Int(-1),
            Literal::Int(i64::MAX),
            Literal::Float(-0.5),
            Literal::Float(f64::MAX),
            Literal::Str(String::new()),
            Literal::Str("north'; --".into()),
            Literal::Date(-719_162),
            Literal::Date(i32::MAX),
        ];
        let c = ["region", "age", "day", "a b"][next(4) as usize].to_string();
        let ops = [
            CmpOp::Eq,
            CmpOp::NotEq,
            CmpOp::Lt,
            CmpOp::LtEq,
            CmpOp::Gt,
            CmpOp::GtEq,
        ];
        let kind = if depth == 0 { next(5) + 3 } else { next(8) };
        match kind {
            0 => Predicate::And(vec![generated(seed, depth - 1), generated(seed, depth - 1)]),
            1 => Predicate::Or(vec![generated(seed, depth - 1), generated(seed, depth - 1)]),
            2 => Predicate::Not(Box::new(generated(seed, depth - 1))),
            3 => Predicate::Compare {
                column: c,
                op: ops[next(6) as usize],
                value: lits[next(lits.len() as u64) as usize].clone(),
            },
            4 => Predicate::InList {
                column: c,
                values: (0..=next(3))
                    .map(|_| lits[next(lits.len() as u64) as usize].clone())
                    .collect(),
                negated: next(2) == 1,
            },
            5 => Predicate::IsNull {
                column: c,
                negated: next(2) == 1,
            },
            6 => Predicate::Like {
                column: c,
                pattern: "%n_rth%".into(),
                negated: next(2) == 1,
                case_insensitive: next(2) == 1,
            },
            _ => Predicate::IsTrue { column: c },
        }
    }

    #[test]
    fn the_two_directions_invert_each_other() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            let p = generated(&mut seed, 3);
            let e = predicate_to_expr(&p);
            assert_eq!(to_predicate(&e).as_ref(), Some(&p), "{e}");
        }
    }

    #[test]
    fn every_literal_round_trips_through_its_scalar() {
        for l in [
            Literal::Null,
            Literal::Bool(false),
            Literal::Int(i64::MIN),
            Literal::Float(f64::MIN_POSITIVE),
            Literal::Str("é".into()),
            Literal::Date(0),
        ] {
            assert_eq!(literal(&scalar(&l)), Some(l));
        }
        assert_eq!(literal(&ScalarValue::UInt64(Some(u64::MAX))), None);
        assert_eq!(literal(&ScalarValue::Int32(None)), Some(Literal::Null));
    }
}
