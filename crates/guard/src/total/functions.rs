//! The totality rule of each scalar function: the arguments (positions,
//! lengths, units, patterns) for which it cannot fail on any row.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Checker<'_> {
    pub(super) fn function(&self, e: &Expr, name: &str, args: &[Expr]) -> R<()> {
        #[cfg(feature = "negative-control")]
        if crate::negative_control::skipped(name) {
            return Ok(());
        }
        let position = |i: usize, min: i128| -> R<()> {
            let Some(a) = args.get(i) else { return Ok(()) };
            match self.constant_int(a) {
                Some(None) => Ok(()),
                Some(Some(v)) if (min..=MAX_POSITION).contains(&v) => Ok(()),
                _ => Err(oracle(format!(
                    "argument {} of {name} must be a constant between {min} and {MAX_POSITION}",
                    i + 1
                ))),
            }
        };
        match name {
            "lower" | "upper" | "trim" | "btrim" | "ltrim" | "rtrim" | "initcap" | "length"
            | "char_length" | "character_length" | "octet_length" | "concat" | "concat_ws"
            | "coalesce" | "nullif" | "starts_with" | "ends_with" | "strpos" | "greatest"
            | "least" => Ok(()),
            "substr" | "substring" => {
                position(1, -MAX_POSITION)?;
                position(2, 0)
            }
            "left" | "right" => position(1, -MAX_POSITION),
            "replace" => {
                let (Some(Some(Some(from))), Some(Some(to))) = (
                    args.get(1).map(|a| self.constant_string(a)),
                    args.get(2).map(|a| self.constant_string(a)),
                ) else {
                    return Err(oracle(
                        "replace needs constant texts to find and to put in their place",
                    ));
                };
                let to = to.unwrap_or_default();
                if from.is_empty() || to.len() > from.len() {
                    return Err(oracle(
                        "replace may not make a text longer (the text put in place of another must be no longer than it, and not replace the empty text)",
                    ));
                }
                Ok(())
            }
            "abs" => {
                let ty = self.ty(e)?;
                if type_range(&ty).is_some() {
                    self.fits(e, &ty, "abs")
                } else if is_float(&ty) {
                    Ok(())
                } else {
                    Err(oracle(format!(
                        "abs of {ty} values is not allowed; cast to DOUBLE"
                    )))
                }
            }
            "round" | "floor" | "ceil" => {
                let ty = self.ty(args.first().ok_or_else(|| oracle("missing argument"))?)?;
                if !is_float(&ty) {
                    return Err(oracle(format!(
                        "{name} of {ty} values is not allowed; cast to DOUBLE"
                    )));
                }
                if name != "round" && args.len() > 1 {
                    return Err(oracle(format!("{name} takes one argument")));
                }
                // The engine reads round's places as a 32-bit integer.
                match args.get(1).map(|a| self.constant_int(a)) {
                    None | Some(Some(None)) => Ok(()),
                    Some(Some(Some(v))) if i32::try_from(v).is_ok() => Ok(()),
                    _ => Err(oracle(
                        "argument 2 of round must be a constant 32-bit integer",
                    )),
                }
            }
            "date_trunc" | "date_part" => {
                let unit = args.first().and_then(|a| self.constant_string(a));
                let known = match (name, &unit) {
                    ("date_trunc", Some(Some(u))) => {
                        DATE_TRUNC_UNITS.contains(&u.to_ascii_lowercase().as_str())
                    }
                    ("date_part", Some(Some(u))) => {
                        DATE_PART_UNITS.contains(&u.to_ascii_lowercase().as_str())
                    }
                    _ => false,
                };
                if !known {
                    return Err(oracle(format!(
                        "the unit of {name} must be a constant, one of the units it knows"
                    )));
                }
                let arg = args.get(1).ok_or_else(|| oracle("missing argument"))?;
                let ty = self.ty(arg)?;
                // date_part of a date beyond chrono's years is NULL: fine
                // where the value may be NULL anyway, a failure where the
                // plan says it cannot be.
                // (`make_total` holds its DATE argument to chrono's range.)
                let nullable = arg.nullable(self.schema).unwrap_or(false);
                if matches!(ty, DataType::Date32) && name == "date_part" && !nullable {
                    Err(oracle(
                        "date_part of a DATE that cannot be NULL can fail on one value",
                    ))
                } else if matches!(ty, DataType::Date32) && name == "date_part" {
                    Ok(())
                } else {
                    Err(oracle(format!(
                        "{name} of {ty} values can fail on one value; date_part is allowed on DATE values (date_trunc converts to a timestamp, which overflows)"
                    )))
                }
            }
            other => Err(oracle(format!(
                "function {other} has no rule showing it never fails"
            ))),
        }
    }
}

/// Units `date_trunc` accepts.
pub(super) const DATE_TRUNC_UNITS: &[&str] = &[
    "microsecond",
    "millisecond",
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "quarter",
    "year",
];
/// Units `date_part` accepts.
pub(super) const DATE_PART_UNITS: &[&str] = &[
    "year", "quarter", "month", "week", "day", "dow", "doy", "hour", "minute", "second",
];

/// The longest LIKE pattern: the engine compiles a pattern to a regular
/// expression, which fails beyond its size limit (10 MiB compiled; about
/// 11,000 `_` with ILIKE), and only on a row that reaches it.
pub(super) const MAX_LIKE_PATTERN: usize = 1_000;

pub(super) fn like_pattern(pattern: &Option<Option<String>>) -> R<()> {
    match pattern {
        Some(Some(p)) if p.chars().count() > MAX_LIKE_PATTERN => Err(oracle(format!(
            "a LIKE pattern may have at most {MAX_LIKE_PATTERN} characters"
        ))),
        Some(_) => Ok(()),
        None => Err(oracle("a LIKE pattern must be a constant text")),
    }
}

pub(super) fn interval(
    op: Operator,
    (a, b): (i128, i128),
    (c, d): (i128, i128),
) -> Option<(i128, i128)> {
    match op {
        Operator::Plus => Some((a.checked_add(c)?, b.checked_add(d)?)),
        Operator::Minus => Some((a.checked_sub(d)?, b.checked_sub(c)?)),
        Operator::Multiply => {
            let p = [
                a.checked_mul(c)?,
                a.checked_mul(d)?,
                b.checked_mul(c)?,
                b.checked_mul(d)?,
            ];
            Some((*p.iter().min()?, *p.iter().max()?))
        }
        _ => None,
    }
}

/// The largest compiled program a pattern may have (the regex crate's own
/// default is 10 MiB).
pub(super) const REGEX_SIZE_LIMIT: usize = 8 * 1024;

pub(super) fn regex_compiles(pattern: &str, case_insensitive: bool) -> bool {
    // DataFusion compiles the pattern with the regex crate's defaults;
    // compiling it here with the same crate decides whether it would fail.
    // It compiles only when a row reaches the expression, so a pattern
    // that is slow to compile (`.{10000}`: a big program) under a CASE
    // branch only one person takes shows that person in the query's
    // time. Only small programs are admitted: their compile time is far
    // below the noise of a query's.
    let flagged = if case_insensitive {
        format!("(?i){pattern}")
    } else {
        pattern.to_string()
    };
    let small = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .is_ok()
    };
    small(pattern) && small(&flagged)
}

/// The days (since 1970-01-01) of the dates `date_part` can read: about
/// 197,000 years either way, inside chrono's range.
pub(super) const DATE_PART_DAYS: (i32, i32) = (-72_000_000, 72_000_000);

#[cfg(test)]
mod regex_tests {
    use super::regex_compiles;

    #[test]
    fn only_small_patterns_that_compile_are_admitted() {
        for ok in [
            "\\d+",
            "a.*",
            "^[a-z0-9.]+@example\\.com$",
            "north|south",
            "^a",
            "(?x) a b",
        ] {
            assert!(regex_compiles(ok, false), "{ok}");
            assert!(regex_compiles(ok, true), "{ok}");
        }
        // Fail to compile, or compile slowly to a big program (the timing
        // class): every counted repetition of a wide class.
        for bad in [
            "(",
            ".{10000}",
            ".{1000}",
            "\\w{500}",
            "[a-z]{2000}",
            "(a|b){3000}",
        ] {
            assert!(!regex_compiles(bad, false), "{bad}");
        }
    }
}
