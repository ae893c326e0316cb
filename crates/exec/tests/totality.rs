//! The totality generator: random queries from every allowed function,
//! operator, cast and clause, over small tables of extreme and hostile
//! values. Every query the guard accepts must run without error on every
//! table (ATTACKS 25 to 28).
//!
//! `AIRLOCK_TOTALITY_QUERIES` sets how many accepted queries to reach
//! (default 10,000; the documented long run is 100,000, with
//! `cargo nextest run --profile long`), and
//! `AIRLOCK_TOTALITY_SEED` the seed. The negative control turns one
//! totality rule off (the guard's `negative-control` feature, enabled only
//! as this crate's dev-dependency) and shows the harness then finds a
//! failing accepted query. It lives here, not in the guard, because it runs
//! what the guard accepted: the guard only plans.

use std::collections::HashMap;
use std::sync::Arc;

use airlock_policy::Collaboration;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, StringArray, StringViewArray, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use airlock_guard::{negative_control, CheckedQuery, Guard, GuardError};

const COLLAB: &str = r#"
[collaboration]
name = "gen"
secret_file = "k"

[[members]]
name = "pub"
abilities = ["provide"]

[[members]]
name = "adv"
abilities = ["query", "receive", "provide"]

[[datasets]]
name = "pa"
owner = "pub"

[[datasets]]
name = "pp"
owner = "adv"

[[tables]]
alias = "a"
dataset = "pa"
identity = "email"
join = ["email"]
dimensions = ["segment", "region", "age", "small", "score", "born", "flag", "code", "tiny", "ratio"]
rule = { type = "aggregation", min_distinct_identities = 2 }

[[tables]]
alias = "p"
dataset = "pp"
identity = "email"
join = ["email"]
dimensions = ["category", "day", "qty", "at", "units", "rate"]
measures = { amount = ["sum", "avg", "count"], price = ["sum", "avg", "count"], cost = ["sum", "avg", "count"] }
rule = { type = "aggregation", min_distinct_identities = 2 }
"#;

fn schema_a() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("email", DataType::Utf8, true),
        Field::new("segment", DataType::Utf8, true),
        Field::new("region", DataType::Utf8, true),
        Field::new("age", DataType::Int64, true),
        Field::new("small", DataType::Int32, true),
        Field::new("score", DataType::Float64, true),
        Field::new("born", DataType::Date32, true),
        Field::new("flag", DataType::Boolean, true),
        // The wider types sources produce: text views (Parquet), 16-bit
        // integers and 32-bit floats.
        Field::new("code", DataType::Utf8View, true),
        Field::new("tiny", DataType::Int16, true),
        Field::new("ratio", DataType::Float32, true),
    ]))
}

fn schema_p() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("email", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("day", DataType::Date32, true),
        Field::new("qty", DataType::Int64, true),
        Field::new("amount", DataType::Int64, true),
        Field::new("price", DataType::Float64, true),
        // Timestamps (PostgreSQL's `timestamptz`), unsigned integers and
        // decimals (Parquet, Delta), as dimensions and as a measure.
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("units", DataType::UInt64, true),
        Field::new("rate", DataType::Decimal128(10, 2), true),
        Field::new("cost", DataType::Decimal128(38, 2), true),
    ]))
}

const STRINGS: &[Option<&str>] = &[
    Some(""),
    Some("sports"),
    Some("\\"),
    Some("%_"),
    Some("€ß日本"),
    None,
    Some("  x  "),
    Some("[("),
    Some("99"),
    Some("2020-01-01"),
    Some("-9223372036854775808"),
    Some("NaN"),
];
const INTS: &[Option<i64>] = &[
    Some(i64::MIN),
    Some(i64::MAX),
    Some(0),
    Some(-1),
    None,
    Some(1),
    Some(i64::MAX - 1),
    Some(i64::MIN + 1),
    Some(i32::MAX as i64 + 1),
    Some(42),
    Some(-42),
    Some(1 << 40),
];
const SMALLS: &[Option<i32>] = &[
    Some(i32::MIN),
    Some(i32::MAX),
    Some(0),
    Some(-1),
    None,
    Some(1),
    Some(7),
    Some(-7),
    Some(i32::MAX - 1),
    Some(100),
    Some(-100),
    Some(2),
];
const FLOATS: &[Option<f64>] = &[
    Some(f64::NAN),
    Some(f64::INFINITY),
    Some(f64::NEG_INFINITY),
    Some(f64::MAX),
    None,
    Some(-0.0),
    Some(f64::MIN),
    Some(f64::MIN_POSITIVE),
    Some(1e300),
    Some(0.5),
    Some(-2.5),
    Some(9.2e18),
];
const DATES: &[Option<i32>] = &[
    Some(i32::MIN),
    Some(i32::MAX),
    Some(0),
    Some(-1),
    None,
    Some(20_000),
    Some(-719_162),
    Some(2_932_896),
    Some(-100_000_000),
    Some(100_000_000),
    Some(19_000),
    Some(1),
];

const TINIES: &[Option<i16>] = &[
    Some(i16::MIN),
    Some(i16::MAX),
    Some(0),
    Some(-1),
    None,
    Some(1),
    Some(i16::MAX - 1),
    Some(i16::MIN + 1),
    Some(255),
    Some(-256),
    Some(42),
    Some(2),
];
/// Decimal(10, 2) values, unscaled: the extremes of 10 digits.
const DECIMALS_10: &[Option<i128>] = &[
    Some(9_999_999_999),
    Some(-9_999_999_999),
    Some(0),
    Some(-1),
    None,
    Some(1),
    Some(100),
    Some(-100),
    Some(9_999_999_998),
    Some(12_345),
    Some(-50),
    Some(5_000_000_000),
];
const MAX_38: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;
/// Decimal(38, 2) values, unscaled: the extremes of 38 digits.
const DECIMALS_38: &[Option<i128>] = &[Some(MAX_38), Some(MAX_38), Some(-MAX_38), None];

fn decimal(values: Vec<Option<i128>>, precision: u8) -> ArrayRef {
    Arc::new(
        Decimal128Array::from(values)
            .with_precision_and_scale(precision, 2)
            .expect("decimal"),
    )
}

/// Table `a` and `p` of `n` rows each, value `i` of each column shifted by
/// `shift` so that rows mix extremes differently; every email appears in
/// both tables (and twice in `p`), so the join reaches every value.
fn tables(n: usize, shift: usize) -> (RecordBatch, RecordBatch) {
    let pick = |i: usize, k: usize, len: usize| (i * k + shift) % len;
    let emails: Vec<String> = (0..n).map(|i| format!("p{}@x", i % 6)).collect();
    let a = RecordBatch::try_new(
        schema_a(),
        vec![
            Arc::new(StringArray::from(emails.clone())) as ArrayRef,
            Arc::new(StringArray::from(
                (0..n).map(|i| STRINGS[pick(i, 1, 12)]).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                (0..n).map(|i| STRINGS[pick(i, 5, 12)]).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                (0..n).map(|i| INTS[pick(i, 1, 12)]).collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(
                (0..n).map(|i| SMALLS[pick(i, 7, 12)]).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                (0..n).map(|i| FLOATS[pick(i, 1, 12)]).collect::<Vec<_>>(),
            )),
            Arc::new(Date32Array::from(
                (0..n).map(|i| DATES[pick(i, 1, 12)]).collect::<Vec<_>>(),
            )),
            Arc::new(BooleanArray::from(
                (0..n)
                    .map(|i| [Some(true), Some(false), None][i % 3])
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringViewArray::from(
                (0..n).map(|i| STRINGS[pick(i, 11, 12)]).collect::<Vec<_>>(),
            )),
            Arc::new(Int16Array::from(
                (0..n).map(|i| TINIES[pick(i, 5, 12)]).collect::<Vec<_>>(),
            )),
            Arc::new(Float32Array::from(
                (0..n)
                    .map(|i| FLOATS[pick(i, 5, 12)].map(|f| f as f32))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("table a");
    let m = 2 * n;
    let p = RecordBatch::try_new(
        schema_p(),
        vec![
            Arc::new(StringArray::from(
                (0..m).map(|i| format!("p{}@x", i % 6)).collect::<Vec<_>>(),
            )) as ArrayRef,
            Arc::new(StringArray::from(
                (0..m).map(|i| STRINGS[pick(i, 7, 12)]).collect::<Vec<_>>(),
            )),
            Arc::new(Date32Array::from(
                (0..m).map(|i| DATES[pick(i, 5, 12)]).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                (0..m).map(|i| INTS[pick(i, 5, 12)]).collect::<Vec<_>>(),
            )),
            // Measures: huge values so that sums overflow 64 bits.
            Arc::new(Int64Array::from(
                (0..m)
                    .map(|i| [Some(i64::MAX), Some(i64::MIN), Some(i64::MAX), None][i % 4])
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                (0..m).map(|i| FLOATS[pick(i, 7, 12)]).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(
                    (0..m).map(|i| INTS[pick(i, 11, 12)]).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(UInt64Array::from(
                (0..m)
                    .map(|i| {
                        [
                            Some(u64::MAX),
                            Some(0),
                            None,
                            Some(1),
                            Some(u64::MAX - 1),
                            Some(1 << 63),
                        ][i % 6]
                    })
                    .collect::<Vec<_>>(),
            )),
            decimal((0..m).map(|i| DECIMALS_10[pick(i, 5, 12)]).collect(), 10),
            // The widest decimal measure: sums of two overflow 128 bits.
            decimal((0..m).map(|i| DECIMALS_38[i % 4]).collect(), 38),
        ],
    )
    .expect("table p");
    (a, p)
}

/// A small seeded generator (xorshift64*), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Text,
    Int,
    Small,
    Float,
    Date,
    Bool,
}

const TYPES: [Ty; 6] = [Ty::Text, Ty::Int, Ty::Small, Ty::Float, Ty::Date, Ty::Bool];

const TEXT_LITERALS: &[&str] = &[
    "''",
    "'sports'",
    "'\\'",
    "'%'",
    "'a%'",
    "'[('",
    "'€'",
    "'99'",
    "'2020-01-01'",
    "'x'",
    "'-1'",
    "NULL",
];
const INT_LITERALS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "30",
    "9223372036854775807",
    "(-9223372036854775807 - 1)",
    "-5",
    "2147483647",
    "100",
    "NULL",
    "4294967296",
    "2147483648",
];

/// Row expressions of type `ty` over the columns of `a` and `p`.
fn row_expr(r: &mut Rng, ty: Ty, depth: usize) -> String {
    if depth == 0 || r.below(4) == 0 {
        return leaf(r, ty);
    }
    let d = depth - 1;
    match ty {
        Ty::Text => match r.below(20) {
            0 => format!(
                "{}({})",
                r.pick(&["lower", "upper", "trim", "btrim", "ltrim", "rtrim", "initcap"]),
                row_expr(r, Ty::Text, d)
            ),
            1 => format!(
                "substr({}, {})",
                row_expr(r, Ty::Text, d),
                r.pick(INT_LITERALS)
            ),
            2 => format!(
                "substr({}, {}, {})",
                row_expr(r, Ty::Text, d),
                r.pick(INT_LITERALS),
                r.pick(INT_LITERALS)
            ),
            3 => format!(
                "{}({}, {})",
                r.pick(&["left", "right"]),
                row_expr(r, Ty::Text, d),
                r.pick(INT_LITERALS)
            ),
            4 => format!("concat({}, {})", any_expr(r, d), any_expr(r, d)),
            5 => format!(
                "concat_ws({}, {}, {})",
                r.pick(TEXT_LITERALS),
                row_expr(r, Ty::Text, d),
                any_expr(r, d)
            ),
            6 => format!(
                "coalesce({}, {})",
                row_expr(r, Ty::Text, d),
                row_expr(r, Ty::Text, d)
            ),
            7 => format!("nullif({}, {})", row_expr(r, Ty::Text, d), any_expr(r, d)),
            8 => format!(
                "replace({}, {}, {})",
                row_expr(r, Ty::Text, d),
                r.pick(TEXT_LITERALS),
                r.pick(TEXT_LITERALS)
            ),
            9 => format!(
                "replace({}, {}, {})",
                row_expr(r, Ty::Text, d),
                row_expr(r, Ty::Text, d),
                r.pick(TEXT_LITERALS)
            ),
            10 => format!("CAST({} AS VARCHAR)", any_expr(r, d)),
            11 => format!("({} || {})", row_expr(r, Ty::Text, d), any_expr(r, d)),
            12 => format!(
                "{}({}, {})",
                r.pick(&["greatest", "least"]),
                row_expr(r, Ty::Text, d),
                any_expr(r, d)
            ),
            13 => format!(
                "CASE WHEN {} THEN {} ELSE {} END",
                row_expr(r, Ty::Bool, d),
                row_expr(r, Ty::Text, d),
                row_expr(r, Ty::Text, d)
            ),
            14 => format!(
                "btrim({}, {})",
                row_expr(r, Ty::Text, d),
                r.pick(TEXT_LITERALS)
            ),
            15 => format!(
                "substr({}, {}, {})",
                row_expr(r, Ty::Text, d),
                row_expr(r, Ty::Int, d),
                r.pick(INT_LITERALS)
            ),
            16 => format!("TRY_CAST({} AS VARCHAR)", any_expr(r, d)),
            17 => format!("CAST({} AS VARCHAR)", row_expr(r, Ty::Date, d)),
            18 => format!(
                "left({}, {})",
                row_expr(r, Ty::Text, d),
                row_expr(r, Ty::Int, d)
            ),
            _ => format!(
                "CASE {} WHEN {} THEN {} END",
                row_expr(r, Ty::Text, d),
                r.pick(TEXT_LITERALS),
                row_expr(r, Ty::Text, d)
            ),
        },
        Ty::Int => match r.below(20) {
            0..=2 => format!(
                "({} {} {})",
                row_expr(r, Ty::Int, d),
                r.pick(&["+", "-", "*"]),
                row_expr(r, Ty::Int, d)
            ),
            3 => format!(
                "({} {} {})",
                row_expr(r, Ty::Small, d),
                r.pick(&["+", "-", "*"]),
                r.pick(INT_LITERALS)
            ),
            4 => format!("(-{})", row_expr(r, Ty::Int, d)),
            5 => format!("abs({})", row_expr(r, Ty::Int, d)),
            6 => format!(
                "({} {} {})",
                row_expr(r, Ty::Int, d),
                r.pick(&["/", "%"]),
                r.pick(INT_LITERALS)
            ),
            7 => format!(
                "({} {} {})",
                row_expr(r, Ty::Int, d),
                r.pick(&["/", "%"]),
                row_expr(r, Ty::Int, d)
            ),
            8 => format!(
                "{}({})",
                r.pick(&["length", "char_length", "character_length", "octet_length"]),
                row_expr(r, Ty::Text, d)
            ),
            9 => format!(
                "strpos({}, {})",
                row_expr(r, Ty::Text, d),
                r.pick(TEXT_LITERALS)
            ),
            10 => format!("CAST({} AS BIGINT)", any_expr(r, d)),
            11 => format!("TRY_CAST({} AS BIGINT)", any_expr(r, d)),
            12 => format!(
                "CASE WHEN {} THEN {} ELSE {} END",
                row_expr(r, Ty::Bool, d),
                row_expr(r, Ty::Int, d),
                r.pick(INT_LITERALS)
            ),
            13 => format!(
                "coalesce({}, {})",
                row_expr(r, Ty::Int, d),
                row_expr(r, Ty::Int, d)
            ),
            14 => format!(
                "{}({}, {})",
                r.pick(&["greatest", "least"]),
                row_expr(r, Ty::Int, d),
                any_expr(r, d)
            ),
            15 => format!(
                "nullif({}, {})",
                row_expr(r, Ty::Int, d),
                row_expr(r, Ty::Int, d)
            ),
            16 => format!(
                "date_part({}, {})",
                r.pick(&["'year'", "'month'", "'day'", "'dow'", "'epoch'", "'nope'"]),
                row_expr(r, Ty::Date, d)
            ),
            17 => format!(
                "(CAST({} AS BIGINT) + {})",
                row_expr(r, Ty::Small, d),
                r.pick(INT_LITERALS)
            ),
            18 => format!("abs({})", row_expr(r, Ty::Small, d)),
            _ => format!("(-{})", row_expr(r, Ty::Small, d)),
        },
        Ty::Small => match r.below(5) {
            0 => format!("CAST({} AS INT)", any_expr(r, d)),
            1 => format!(
                "({} + {})",
                row_expr(r, Ty::Small, d),
                row_expr(r, Ty::Small, d)
            ),
            2 => format!(
                "CASE WHEN {} THEN {} END",
                row_expr(r, Ty::Bool, d),
                row_expr(r, Ty::Small, d)
            ),
            _ => leaf(r, Ty::Small),
        },
        Ty::Float => match r.below(14) {
            12 => format!(
                "TRY_CAST({} AS {})",
                any_expr(r, d),
                r.pick(&[
                    "DECIMAL(10, 2)",
                    "DECIMAL(10, -2)",
                    "DECIMAL(38, 38)",
                    "DECIMAL(38, 0)"
                ])
            ),
            13 => format!(
                "CAST({} AS {})",
                any_expr(r, d),
                r.pick(&["DECIMAL(38, 2)", "DECIMAL(20, 0)", "DECIMAL(5, 1)"])
            ),
            0..=1 => format!(
                "({} {} {})",
                row_expr(r, Ty::Float, d),
                r.pick(&["+", "-", "*", "/", "%"]),
                any_expr(r, d)
            ),
            2 => format!(
                "{}({})",
                r.pick(&["round", "floor", "ceil", "abs"]),
                row_expr(r, Ty::Float, d)
            ),
            3 => format!(
                "{}({}, {})",
                r.pick(&["round", "round", "ceil", "floor"]),
                row_expr(r, Ty::Float, d),
                r.pick(INT_LITERALS)
            ),
            4 => format!(
                "{}({})",
                r.pick(&["round", "floor", "ceil"]),
                row_expr(r, Ty::Int, d)
            ),
            5 => format!("CAST({} AS DOUBLE)", any_expr(r, d)),
            6 => format!("TRY_CAST({} AS DOUBLE)", any_expr(r, d)),
            7 => format!("(-{})", row_expr(r, Ty::Float, d)),
            8 => format!(
                "CASE WHEN {} THEN {} ELSE {} END",
                row_expr(r, Ty::Bool, d),
                row_expr(r, Ty::Float, d),
                row_expr(r, Ty::Float, d)
            ),
            9 => format!(
                "(CAST({} AS DOUBLE) / {})",
                row_expr(r, Ty::Int, d),
                row_expr(r, Ty::Int, d)
            ),
            10 => format!(
                "{}({}, {})",
                r.pick(&["greatest", "least"]),
                row_expr(r, Ty::Float, d),
                any_expr(r, d)
            ),
            _ => format!("(CAST({} AS DOUBLE) * 1e300)", row_expr(r, Ty::Int, d)),
        },
        Ty::Date => match r.below(6) {
            0 => format!(
                "date_trunc({}, {})",
                r.pick(&["'month'", "'year'", "'day'", "'week'", "'nope'"]),
                row_expr(r, Ty::Date, d)
            ),
            1 => format!(
                "CASE WHEN {} THEN {} ELSE DATE '2020-01-01' END",
                row_expr(r, Ty::Bool, d),
                row_expr(r, Ty::Date, d)
            ),
            2 => format!("CAST({} AS DATE)", any_expr(r, d)),
            3 => format!("({} + INTERVAL '1 day')", row_expr(r, Ty::Date, d)),
            4 => format!(
                "coalesce({}, {})",
                row_expr(r, Ty::Date, d),
                row_expr(r, Ty::Date, d)
            ),
            _ => leaf(r, Ty::Date),
        },
        Ty::Bool => match r.below(18) {
            16 => format!("TRY_CAST({} AS BOOLEAN)", any_expr(r, d)),
            17 => format!(
                "({} LIKE {} ESCAPE '!')",
                row_expr(r, Ty::Text, d),
                r.pick(TEXT_LITERALS)
            ),
            0..=2 => format!(
                "({} {} {})",
                any_expr(r, d),
                r.pick(&["=", "<>", "<", "<=", ">", ">=", "IS DISTINCT FROM"]),
                any_expr(r, d)
            ),
            3 => format!(
                "({} {} {})",
                row_expr(r, Ty::Bool, d),
                r.pick(&["AND", "OR"]),
                row_expr(r, Ty::Bool, d)
            ),
            4 => format!("(NOT {})", row_expr(r, Ty::Bool, d)),
            5 => format!("({} IS {})", any_expr(r, d), r.pick(&["NULL", "NOT NULL"])),
            6 => format!(
                "({} {} {})",
                row_expr(r, Ty::Text, d),
                r.pick(&["LIKE", "ILIKE", "NOT LIKE"]),
                r.pick(TEXT_LITERALS)
            ),
            7 => format!(
                "({} LIKE {})",
                row_expr(r, Ty::Text, d),
                row_expr(r, Ty::Text, d)
            ),
            8 => format!(
                "({} {} {})",
                row_expr(r, Ty::Text, d),
                r.pick(&["~", "~*", "!~", "!~*"]),
                r.pick(&["'a.*'", "'[('", "'('", "'x'", "'\\d+'"])
            ),
            9 => format!(
                "({} ~ {})",
                row_expr(r, Ty::Text, d),
                row_expr(r, Ty::Text, d)
            ),
            10 => format!(
                "({} IN ({}, {}))",
                any_expr(r, d),
                any_expr(r, d),
                r.pick(INT_LITERALS)
            ),
            11 => format!(
                "({} BETWEEN {} AND {})",
                any_expr(r, d),
                r.pick(INT_LITERALS),
                r.pick(TEXT_LITERALS)
            ),
            12 => format!(
                "{}({}, {})",
                r.pick(&["starts_with", "ends_with"]),
                row_expr(r, Ty::Text, d),
                r.pick(TEXT_LITERALS)
            ),
            13 => format!(
                "({} {} {})",
                row_expr(r, Ty::Text, d),
                r.pick(&["=", ">"]),
                r.pick(INT_LITERALS)
            ),
            14 => format!(
                "({} = {})",
                row_expr(r, Ty::Date, d),
                r.pick(&[
                    "'2020-01-01'",
                    "'x'",
                    "DATE '1999-01-01'",
                    "TIMESTAMP '2020-01-01 00:00:00'"
                ])
            ),
            _ => format!(
                "(CASE WHEN {} THEN {} ELSE {} END)",
                row_expr(r, Ty::Bool, d),
                row_expr(r, Ty::Bool, d),
                row_expr(r, Ty::Bool, d)
            ),
        },
    }
}

fn any_expr(r: &mut Rng, depth: usize) -> String {
    let ty = TYPES[r.below(TYPES.len())];
    row_expr(r, ty, depth)
}

fn leaf(r: &mut Rng, ty: Ty) -> String {
    match ty {
        Ty::Text => r
            .pick(&[
                "a.segment",
                "a.region",
                "p.category",
                "a.segment",
                "'x'",
                "''",
                "a.region",
                "a.code",
            ])
            .to_string(),
        Ty::Int => r
            .pick(&[
                "a.age",
                "p.qty",
                "a.age",
                "1",
                "-1",
                "9223372036854775807",
                "0",
                "p.units",
            ])
            .to_string(),
        Ty::Small => r
            .pick(&["a.small", "a.small", "CAST(1 AS INT)", "a.tiny"])
            .to_string(),
        Ty::Float => r
            .pick(&[
                "a.score",
                "a.score",
                "0.0",
                "1e308",
                "CAST('NaN' AS DOUBLE)",
                "a.ratio",
                "p.rate",
                "p.cost",
                "CAST(1.5 AS DECIMAL(10, 2))",
            ])
            .to_string(),
        Ty::Date => r
            .pick(&["a.born", "p.day", "DATE '2020-02-29'", "p.at"])
            .to_string(),
        Ty::Bool => r
            .pick(&[
                "a.flag",
                "TRUE",
                "(a.segment = p.category)",
                "(a.age > p.qty)",
            ])
            .to_string(),
    }
}

/// An expression over the released aggregates (HAVING, ORDER BY, SELECT).
fn released_expr(r: &mut Rng) -> String {
    let agg = |r: &mut Rng| {
        r.pick(&[
            "COUNT(*)",
            "COUNT(DISTINCT a.email)",
            "SUM(p.amount)",
            "AVG(p.amount)",
            "SUM(p.price)",
            "COUNT(p.amount)",
            "AVG(p.price)",
            "SUM(p.cost)",
            "AVG(p.cost)",
        ])
        .to_string()
    };
    match r.below(8) {
        0 => format!(
            "{} {} {}",
            agg(r),
            r.pick(&["+", "-", "*", "/", "%"]),
            r.pick(INT_LITERALS)
        ),
        1 => format!("1 / ({} - 11)", agg(r)),
        2 => format!("CAST({} AS DOUBLE) / {}", agg(r), agg(r)),
        3 => format!("{} {} {}", agg(r), r.pick(&["+", "-", "*"]), agg(r)),
        4 => format!("abs({})", agg(r)),
        5 => format!("CAST({} AS INT)", agg(r)),
        6 => format!("round(CAST({} AS DOUBLE), 2)", agg(r)),
        _ => agg(r),
    }
}

/// One random query over `a` joined with `p` (or one of them).
fn query(r: &mut Rng) -> String {
    let depth = 1 + r.below(3);
    let dim_ty = [Ty::Text, Ty::Int, Ty::Small, Ty::Float, Ty::Date, Ty::Bool][r.below(6)];
    let g = row_expr(r, dim_ty, depth);
    let w = row_expr(r, Ty::Bool, depth);
    let aggs = r.pick(&[
        "COUNT(DISTINCT a.email) AS n",
        "COUNT(*) AS n, SUM(p.amount) AS s",
        "SUM(p.amount) AS s, AVG(p.amount) AS m, SUM(p.price) AS f",
        "COUNT(DISTINCT a.email) AS n, AVG(p.price) AS m",
        "SUM(p.cost) AS s, AVG(p.cost) AS m, COUNT(p.cost) AS c",
    ]);
    let join = "FROM a JOIN p ON a.email = p.email";
    match r.below(9) {
        0 => format!("SELECT {g} AS g, {aggs} {join} WHERE {w} GROUP BY 1"),
        1 => format!("SELECT {aggs} {join} WHERE {w}"),
        2 => format!(
            "SELECT {g} AS g, {aggs} {join} GROUP BY 1 HAVING {} > 0",
            released_expr(r)
        ),
        3 => format!(
            "SELECT {g} AS g, {} AS v {join} WHERE {w} GROUP BY 1 ORDER BY v LIMIT 3",
            released_expr(r)
        ),
        4 => format!(
            "WITH x AS (SELECT a.email, {g} AS g FROM a WHERE {}) SELECT x.g, COUNT(DISTINCT x.email) AS n FROM x JOIN p ON x.email = p.email GROUP BY x.g",
            row_expr(r, Ty::Bool, depth).replace("p.", "a.")
        ),
        5 => format!("SELECT {g} AS g, {aggs} {join} WHERE {w} GROUP BY {g}"),
        6 => format!(
            "SELECT {aggs} {join} WHERE {w} HAVING {} IS NOT NULL",
            released_expr(r)
        ),
        7 => {
            let gp = row_expr(r, dim_ty, depth).replace("a.", "p.");
            format!("SELECT {gp} AS g, COUNT(DISTINCT p.email) AS n, SUM(p.amount) AS s FROM p GROUP BY 1")
        }
        _ => format!(
            "SELECT {g} AS g, COUNT(*) AS n {join} WHERE {w} GROUP BY 1 HAVING {}",
            row_expr(r, Ty::Bool, 1).replace("a.", "MIN(a.").replace("p.", "MIN(p.")
        ),
    }
}

/// Runs a checked query's plans (lower, then the steps above the
/// aggregate) over real tables; returns the released rows.
async fn execute(
    q: &CheckedQuery,
    a: &RecordBatch,
    p: &RecordBatch,
) -> Result<Vec<RecordBatch>, String> {
    let ta: Arc<dyn TableProvider> =
        Arc::new(MemTable::try_new(a.schema(), vec![vec![a.clone()]]).map_err(|e| e.to_string())?);
    let tp: Arc<dyn TableProvider> =
        Arc::new(MemTable::try_new(p.schema(), vec![vec![p.clone()]]).map_err(|e| e.to_string())?);
    let plan = airlock_exec::bind_scans(&q.plan, |s| {
        Ok(if s.table_name.table() == "a" {
            ta.clone()
        } else {
            tp.clone()
        })
    })
    .map_err(|e| e.to_string())?;
    let (schema, batches) = airlock_exec::run(&SessionContext::new(), plan)
        .await
        .map_err(|e| match e {
            airlock_exec::RunFailure::Plan(e) => format!("plan: {}", e.strip_backtrace()),
            airlock_exec::RunFailure::Run(e) => format!("run: {}", e.strip_backtrace()),
        })?;
    let (_, out) = airlock_exec::finish(q.dp.as_ref(), q.upper.as_ref(), batches, schema)
        .await
        .map_err(|e| format!("release: {e}"))?;
    Ok(out)
}

async fn run(q: &CheckedQuery, a: &RecordBatch, p: &RecordBatch) -> Result<(), String> {
    execute(q, a, p).await.map(|_| ())
}

struct Outcome {
    accepted: usize,
    refused: usize,
    failures: Vec<(String, String)>,
}

/// Generates queries from `seed` until `want` are accepted (or ten times
/// as many were tried), running each accepted one on three fillings.
async fn generate(seed: u64, want: usize, stop_at_failure: bool) -> Outcome {
    let collab = Collaboration::from_toml(COLLAB, "gen.toml").expect("collaboration");
    let schemas = HashMap::from([("a".to_string(), schema_a()), ("p".to_string(), schema_p())]);
    let guard = Guard::new(&collab, &schemas).expect("guard");
    let fillings = [tables(12, 0), tables(12, 5), tables(24, 3), tables(0, 0)];
    let mut rng = Rng(seed | 1);
    let mut out = Outcome {
        accepted: 0,
        refused: 0,
        failures: Vec::new(),
    };
    let mut tried = 0;
    while out.accepted < want && tried < want * 10 {
        tried += 1;
        let sql = query(&mut rng);
        CHECKING.lock().map(|mut c| c.clone_from(&sql)).ok();
        let q = match guard.check(&sql, "adv").await {
            Ok(q) => q,
            Err(GuardError::Refused(_)) | Err(GuardError::BadInput(_)) => {
                out.refused += 1;
                continue;
            }
            Err(GuardError::Internal(m)) => {
                out.failures.push((sql, format!("internal: {m}")));
                continue;
            }
        };
        out.accepted += 1;
        // Each query on two of the fillings, rotating, and the empty one.
        for (a, p) in [&fillings[tried % 3], &fillings[3]] {
            if let Err(e) = run(&q, a, p).await {
                out.failures.push((sql.clone(), e));
                break;
            }
        }
        if stop_at_failure && !out.failures.is_empty() {
            break;
        }
    }
    out
}

fn count_from_env(default: usize) -> usize {
    std::env::var("AIRLOCK_TOTALITY_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed_from_env() -> u64 {
    std::env::var("AIRLOCK_TOTALITY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005e_eda1_10c4)
}

/// The query being checked, for [`record_caught_panics`].
static CHECKING: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
/// Queries during whose check the engine panicked (the guard catches such
/// a panic and takes the query as bad input).
static PANICKED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records the query being checked whenever a panic happens (then prints
/// it as before), so a run can say which queries made the engine panic.
fn record_caught_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let (Ok(sql), Ok(mut all)) = (CHECKING.lock(), PANICKED.lock()) {
            all.push(sql.clone());
        }
        previous(info);
    }));
}

#[tokio::test]
async fn every_accepted_query_runs_on_every_table() {
    let want = count_from_env(10_000);
    let seed = seed_from_env();
    record_caught_panics();
    let out = generate(seed, want, false).await;
    if let Ok(all) = PANICKED.lock() {
        eprintln!(
            "{} queries made the engine panic while checked (caught: bad input)",
            all.len()
        );
        for sql in all.iter().take(10) {
            eprintln!("PANICKED: {sql}");
        }
    }
    eprintln!(
        "totality generator (seed {seed}): {} accepted and run, {} refused, {} failures",
        out.accepted,
        out.refused,
        out.failures.len()
    );
    for (sql, e) in out.failures.iter().take(10) {
        eprintln!("FAILED: {sql}\n   -> {e}");
    }
    assert!(
        out.failures.is_empty(),
        "{} accepted queries failed",
        out.failures.len()
    );
    assert_eq!(
        out.accepted, want,
        "the generator reached too few accepted queries"
    );
}

/// The query of the 100,000-query run during whose check DataFusion
/// panicked (`in_list` evaluating a constant list over a decimal
/// function): the guard takes it as bad input, and nothing panics out.
#[tokio::test]
async fn the_constant_the_engine_panicked_on_is_bad_input() {
    let collab = Collaboration::from_toml(COLLAB, "gen.toml").expect("collaboration");
    let schemas = HashMap::from([("a".to_string(), schema_a()), ("p".to_string(), schema_p())]);
    let guard = Guard::new(&collab, &schemas).expect("guard");
    let sql = "SELECT COUNT(DISTINCT a.email) AS n, AVG(p.price) AS m FROM a JOIN p ON a.email = p.email \
         WHERE (9223372036854775807 IN (least(ceil(CAST(1.5 AS DECIMAL(10, 2))), CAST(1e308 AS INT)), 2147483648))";
    match guard.check(sql, "adv").await {
        Err(GuardError::BadInput(_)) | Err(GuardError::Refused(_)) => {}
        Err(GuardError::Internal(m)) => panic!("internal: {m}"),
        Ok(_) => panic!("accepted a constant that fails"),
    }
}

/// Every cast and `TRY_CAST` from every column type to every target type,
/// in a filter and as a group key: each one the guard accepts runs on
/// every filling (the random generator reaches a given pair rarely).
#[tokio::test]
async fn every_accepted_cast_between_any_two_types_runs() {
    let collab = Collaboration::from_toml(COLLAB, "gen.toml").expect("collaboration");
    let schemas = HashMap::from([("a".to_string(), schema_a()), ("p".to_string(), schema_p())]);
    let guard = Guard::new(&collab, &schemas).expect("guard");
    let fillings = [tables(12, 0), tables(12, 5), tables(24, 3), tables(0, 0)];
    let columns = [
        "a.segment",
        "a.code",
        "a.age",
        "a.small",
        "a.tiny",
        "p.units",
        "a.score",
        "a.ratio",
        "p.rate",
        "a.born",
        "p.at",
        "a.flag",
        "'x'",
        "'-1e400'",
    ];
    let targets = [
        "VARCHAR",
        "BIGINT",
        "INT",
        "SMALLINT",
        "TINYINT",
        "INT UNSIGNED",
        "BIGINT UNSIGNED",
        "DOUBLE",
        "REAL",
        "DATE",
        "TIMESTAMP",
        "BOOLEAN",
        "DECIMAL(10, 2)",
        "DECIMAL(10, -2)",
        "DECIMAL(38, 38)",
        "DECIMAL(38, 0)",
        "DECIMAL(76, 2)",
        "DECIMAL(3, 0)",
    ];
    let (mut accepted, mut failures) = (0, Vec::new());
    for c in columns {
        for t in targets {
            for cast in ["CAST", "TRY_CAST"] {
                for sql in [
                    format!("SELECT COUNT(DISTINCT a.email) AS n FROM a JOIN p ON a.email = p.email WHERE {cast}({c} AS {t}) IS NULL"),
                    format!("SELECT {cast}({c} AS {t}) AS g, COUNT(DISTINCT a.email) AS n FROM a JOIN p ON a.email = p.email GROUP BY 1"),
                ] {
                    let Ok(q) = guard.check(&sql, "adv").await else { continue };
                    accepted += 1;
                    for (a, p) in &fillings {
                        if let Err(e) = run(&q, a, p).await {
                            failures.push(format!("{sql}\n   -> {e}"));
                            break;
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "casts: {accepted} accepted of {}",
        columns.len() * targets.len() * 4
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        accepted > 100,
        "too few casts accepted to mean anything: {accepted}"
    );
}

#[tokio::test]
async fn the_generator_finds_a_non_total_function() {
    // With substr's rule off (as before this check existed), the harness
    // must find an accepted query that fails: substr with a negative
    // length inside a CASE.
    negative_control::skip_rule(Some("substr"));
    let out = generate(seed_from_env(), 5_000, true).await;
    negative_control::skip_rule(None);
    assert!(
        !out.failures.is_empty(),
        "no failure found in {} accepted queries with substr's rule off",
        out.accepted
    );
}

/// Four people in segment "big", one in "small" (suppressed at k = 2).
fn groups_of_four_and_one() -> (RecordBatch, RecordBatch) {
    let (a, p) = tables(5, 0);
    let segments: ArrayRef = Arc::new(StringArray::from(vec!["big", "big", "big", "big", "small"]));
    let emails: ArrayRef = Arc::new(StringArray::from(
        (0..5).map(|i| format!("p{i}@x")).collect::<Vec<_>>(),
    ));
    let mut columns = a.columns().to_vec();
    columns[0] = emails;
    columns[1] = segments;
    let a = RecordBatch::try_new(a.schema(), columns).expect("table a");
    (a, p)
}

async fn released(guard: &Guard, sql: &str, a: &RecordBatch, p: &RecordBatch) -> Vec<String> {
    let q = guard.check(sql, "adv").await.expect("accepted");
    let out = execute(&q, a, p).await.expect("released");
    let mut lines: Vec<String> = datafusion::arrow::util::pretty::pretty_format_batches(&out)
        .expect("format")
        .to_string()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn the_analysts_having_sees_only_groups_that_passed_k() {
    let collab = Collaboration::from_toml(COLLAB, "gen.toml").expect("collaboration");
    let schemas = HashMap::from([("a".to_string(), schema_a()), ("p".to_string(), schema_p())]);
    let guard = Guard::new(&collab, &schemas).expect("guard");
    let having = |s: &str| {
        format!("SELECT a.segment AS g, COUNT(DISTINCT a.email) AS n FROM a JOIN p ON a.email = p.email GROUP BY 1 HAVING {s}")
    };
    // The plan: the threshold sits directly on the aggregate in the lower
    // plan; the analyst's HAVING is only in the upper plan, run apart.
    let q = guard
        .check(&having("COUNT(DISTINCT a.email) = 7"), "adv")
        .await
        .expect("accepted");
    let lower = q.plan.display_indent().to_string();
    assert!(lower.contains(">= Int64(2)"), "{lower}");
    assert!(
        !lower.contains("Int64(7)"),
        "the analyst's HAVING reached the lower plan:\n{lower}"
    );
    let upper = q
        .upper
        .as_ref()
        .expect("upper steps")
        .plan()
        .display_indent()
        .to_string();
    assert!(
        upper.contains("Filter") && upper.contains("Int64(7)"),
        "{upper}"
    );

    // Probing the suppressed group's size: every probe gives the same
    // answer (no row, no error) except the one matching a released group.
    let (a, p) = groups_of_four_and_one();
    let mut answers = Vec::new();
    for size in 0..=6 {
        let sql = having(&format!("COUNT(DISTINCT a.email) = {size}"));
        answers.push((size, released(&guard, &sql, &a, &p).await));
    }
    let empty = &answers[0].1;
    for (size, answer) in &answers {
        if *size == 4 {
            assert!(
                answer.iter().any(|l| l.contains("big")),
                "size 4: {answer:?}"
            );
        } else {
            assert_eq!(answer, empty, "size {size} is distinguishable");
        }
    }
    // An expression that would blow up on the suppressed group (1 person)
    // runs on released rows only.
    let sql = having("1.0 / (CAST(COUNT(DISTINCT a.email) AS DOUBLE) - 1) > 0");
    let answer = released(&guard, &sql, &a, &p).await;
    assert!(
        answer.iter().any(|l| l.contains("big")) && !answer.iter().any(|l| l.contains("small"))
    );
}

/// Sums and averages of the widest values a table can hold are exact
/// (DataFusion's own `SUM` of `Int64` and of decimals wraps around, and its
/// `AVG` of a 38-digit decimal fails), and a sum no type holds is refused.
#[tokio::test]
async fn sums_and_averages_of_the_widest_values_are_exact() {
    use datafusion::arrow::array::{Array, Decimal256Array};
    use datafusion::arrow::datatypes::i256;
    let collab = Collaboration::from_toml(COLLAB, "gen.toml").expect("collaboration");
    let schemas = HashMap::from([("a".to_string(), schema_a()), ("p".to_string(), schema_p())]);
    let guard = Guard::new(&collab, &schemas).expect("guard");
    let (a, p) = tables(12, 0);
    let q = guard
        .check(
            "SELECT SUM(p.cost) AS s, AVG(p.cost) AS m, SUM(p.amount) AS t FROM p",
            "adv",
        )
        .await
        .expect("accepted");
    let out = execute(&q, &a, &p).await.expect("runs");
    let row = &out[0];
    // 24 rows: cost repeats (MAX, MAX, -MAX, NULL), amount (i64::MAX,
    // i64::MIN, i64::MAX, NULL).
    let cost = row
        .column(0)
        .as_any()
        .downcast_ref::<Decimal256Array>()
        .expect("DECIMAL(76, 2)");
    assert_eq!(cost.value(0), i256::from_i128(MAX_38) * i256::from_i128(6));
    let avg = row
        .column(1)
        .as_any()
        .downcast_ref::<Decimal256Array>()
        .expect("DECIMAL(76, 6)");
    assert_eq!(
        avg.value(0),
        i256::from_i128(MAX_38 / 3) * i256::from_i128(10_000)
    );
    let amount = row
        .column(2)
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .expect("DECIMAL(38, 0)");
    assert_eq!(
        amount.value(0),
        6 * (2 * i128::from(i64::MAX) + i128::from(i64::MIN))
    );

    // An 18-digit decimal measure sums in 38 digits, exactly.
    let mut fields = schema_p().fields().to_vec();
    fields[9] = Arc::new(Field::new("cost", DataType::Decimal128(18, 2), true));
    let schema18 = Arc::new(Schema::new(fields));
    let max18 = 999_999_999_999_999_999_i128;
    let mut columns = p.columns().to_vec();
    columns[9] = decimal(
        (0..24)
            .map(|i| [Some(max18), Some(max18), None][i % 3])
            .collect(),
        18,
    );
    let p18 = RecordBatch::try_new(schema18.clone(), columns).expect("p");
    let schemas18 = HashMap::from([("a".to_string(), schema_a()), ("p".to_string(), schema18)]);
    let guard18 = Guard::new(&collab, &schemas18).expect("guard");
    let q = guard18
        .check("SELECT SUM(p.cost) AS s, AVG(p.cost) AS m FROM p", "adv")
        .await
        .expect("accepted");
    let out = execute(&q, &a, &p18).await.expect("runs");
    let sum = out[0]
        .column(0)
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .expect("DECIMAL(38, 2)");
    assert_eq!(
        (sum.value(0), sum.data_type()),
        (16 * max18, &DataType::Decimal128(38, 2))
    );
    let avg = out[0]
        .column(1)
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .expect("DECIMAL(38, 6)");
    assert_eq!(avg.value(0), max18 * 10_000);

    // A decimal of 70 digits: no type holds every sum of such values.
    let mut fields = schema_p().fields().to_vec();
    fields[9] = Arc::new(Field::new("cost", DataType::Decimal256(70, 2), true));
    let wide = HashMap::from([
        ("a".to_string(), schema_a()),
        ("p".to_string(), Arc::new(Schema::new(fields))),
    ]);
    let guard = Guard::new(&collab, &wide).expect("guard");
    for agg in ["SUM", "AVG"] {
        match guard
            .check(&format!("SELECT {agg}(p.cost) AS s FROM p"), "adv")
            .await
        {
            Err(GuardError::Refused(r)) => assert!(r.reason.contains("can overflow"), "{r}"),
            other => panic!("{agg} of DECIMAL(70, 2): {:?}", other.map(|q| q.sql)),
        }
    }
}

#[tokio::test]
async fn constant_integer_arithmetic_that_wraps_is_bad_input() {
    let collab = Collaboration::from_toml(COLLAB, "gen.toml").expect("collaboration");
    let schemas = HashMap::from([("a".to_string(), schema_a()), ("p".to_string(), schema_p())]);
    let guard = Guard::new(&collab, &schemas).expect("guard");
    let q = |cond: &str| {
        format!(
            "SELECT COUNT(DISTINCT a.email) AS n FROM a JOIN p ON a.email = p.email WHERE {cond}"
        )
    };
    for cond in [
        "9223372036854775807 + 1 > 0",
        "-9223372036854775807 - 2 < 0",
        "4611686018427387904 * 2 > 0",
        "CAST(127 AS TINYINT) + CAST(1 AS TINYINT) > 0",
        "a.age + (9223372036854775807 + 1) > 0",
    ] {
        match guard.check(&q(cond), "adv").await {
            Err(GuardError::BadInput(_)) => {}
            other => panic!("{cond}: {:?}", other.map(|c| c.sql)),
        }
    }
    // Exact constants stay accepted.
    for cond in ["9223372036854775806 + 1 > 0", "-(3) < 0", "2 * 3 = 6"] {
        assert!(guard.check(&q(cond), "adv").await.is_ok(), "{cond}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sizes_are_refused_by_a_limit_not_a_crash() {
    use airlock_policy::Control;
    let collab = Collaboration::from_toml(COLLAB, "gen.toml").expect("collaboration");
    let schemas = HashMap::from([("a".to_string(), schema_a()), ("p".to_string(), schema_p())]);
    let guard = Arc::new(Guard::new(&collab, &schemas).expect("guard"));
    let chain = |n: usize, term: &str, op: &str| {
        let terms = vec![term; n].join(op);
        format!(
            "SELECT COUNT(DISTINCT a.email) AS n FROM a JOIN p ON a.email = p.email WHERE {terms}"
        )
    };
    let cases = [
        chain(300, "a.age = 1", " OR "),
        chain(1_000, "a.segment = 'x'", " OR "),
        chain(5_000, "a.age=1", " OR "),
        chain(4_000, "a.segment = 'x'", " OR "),
        chain(3_000, "a.age", " + ").replace("WHERE a.age", "WHERE 0 < a.age"),
        format!(
            "SELECT COUNT(*) AS n FROM a WHERE {}a.age = 1{}",
            "(".repeat(2_000),
            ")".repeat(2_000)
        ),
        format!(
            "SELECT COUNT(*) AS n FROM a WHERE {}a.segment{} = 'x'",
            "CAST(".repeat(47),
            " AS VARCHAR)".repeat(47)
        ),
        format!(
            "SELECT COUNT(*) AS n FROM a WHERE a.segment IN ({})",
            vec!["'x'"; 21_000].join(",")
        ),
    ];
    for sql in cases {
        let g = guard.clone();
        let len = sql.len();
        // On a runtime worker thread (2 MiB stack), as in the services.
        let result = tokio::spawn(async move { g.check(&sql, "adv").await })
            .await
            .expect("the check returns (no crash)");
        match result {
            Err(GuardError::Refused(r)) => {
                assert_eq!(r.control, Control::Limit, "{len} bytes: {r}");
                assert!(r.reason.contains("max_"), "names its limit: {r}");
            }
            Err(GuardError::BadInput(m)) => {
                assert!(
                    m.contains("recursion") || m.contains("limit"),
                    "{len} bytes: {m}"
                )
            }
            other => panic!("{len} bytes: not refused: {:?}", other.map(|q| q.sql.len())),
        }
    }
    // Growth: one row's text copied many times (an oracle by memory
    // exhaustion when that row joins), in one expression or through
    // nested subqueries that the optimizer would write out in place.
    let copies = vec!["a.segment"; 40].join(", ");
    let mut nested = "SELECT a.email, a.segment AS s0 FROM a".to_string();
    for i in 1..=22 {
        nested = format!(
            "SELECT email, concat(s{j}, s{j}) AS s{i} FROM ({nested})",
            j = i - 1
        );
    }
    for (sql, control) in [
        (format!("SELECT COUNT(DISTINCT a.email) AS n FROM a JOIN p ON a.email = p.email WHERE length(concat({copies})) > 0"), Control::ErrorOracle),
        (format!("SELECT COUNT(DISTINCT x.email) AS n FROM ({nested}) x JOIN p ON x.email = p.email WHERE length(x.s22) > 0"), Control::ErrorOracle),
        (format!("SELECT COUNT(DISTINCT x.email) AS n FROM ({}) x JOIN p ON x.email = p.email WHERE x.s22 > 0", nested.replace("concat(", "(").replace(", s", " + s").replace("a.segment AS s0", "a.age AS s0")), Control::Limit),
    ] {
        let g = guard.clone();
        let result = tokio::spawn(async move { g.check(&sql, "adv").await }).await.expect("returns");
        match result {
            Err(GuardError::Refused(r)) => assert!(r.control == control || r.control == Control::Limit, "{r}"),
            other => panic!("not refused: {:?}", other.map(|q| q.sql.len())),
        }
    }
    // A LIKE pattern too long to compile fails only on a row reaching it.
    let sql = format!(
        "SELECT COUNT(DISTINCT a.email) AS n FROM a JOIN p ON a.email = p.email WHERE a.segment ILIKE '{}'",
        "_".repeat(12_000)
    );
    match guard.check(&sql, "adv").await {
        Err(GuardError::Refused(r)) => assert_eq!(r.control, Control::ErrorOracle, "{r}"),
        other => panic!("long LIKE not refused: {:?}", other.map(|q| q.sql.len())),
    }
    // A long flat list is no danger, and passes.
    let sql = format!(
        "SELECT COUNT(DISTINCT a.email) AS n FROM a JOIN p ON a.email = p.email WHERE a.segment IN ({})",
        vec!["'x'"; 10_000].join(",")
    );
    guard
        .check(&sql, "adv")
        .await
        .expect("a flat IN list of 10,000 values");
}
