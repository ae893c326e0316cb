//! The guard alone, on golden files: `refusals.slt` (ATTACKS rows 1 to 17,
//! each refusal by rule, table and column) and `accepted.slt` (accepted
//! queries with the plan each member's node and the executor would run).
//! The collaboration is the demo's, `examples/demo/collaboration.toml`,
//! over the schemas its nodes publish; nothing is built but the guard.
//!
//! A case is comment lines (`#`), the SQL, `----`, then the expected
//! lines. `AIRLOCK_BLESS=1` rewrites the expected lines after a deliberate
//! change (review the diff); a new case may be added with an empty
//! expectation and blessed. The CLI's tests run `refusals.slt` again
//! through real nodes, so the schemas here cannot drift from theirs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use airlock_guard::{Guard, GuardError};
use airlock_policy::Collaboration;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

const DEMO: &str = include_str!("../../../examples/demo/collaboration.toml");

/// The configured tables as the demo's nodes publish them (strings are
/// read from Parquet as `Utf8View`).
fn schemas() -> HashMap<String, SchemaRef> {
    let s = |name: &str, t: DataType| Field::new(name, t, true);
    HashMap::from([
        (
            "audience".to_string(),
            Arc::new(Schema::new(vec![
                s("email", DataType::Utf8View),
                s("segment", DataType::Utf8View),
                s("region", DataType::Utf8View),
                s("age_band", DataType::Utf8View),
                s("consent", DataType::Boolean),
            ])),
        ),
        (
            "purchases".to_string(),
            Arc::new(Schema::new(vec![
                s("email", DataType::Utf8View),
                s("order_id", DataType::Int64),
                s("amount_cents", DataType::Int64),
                s("category", DataType::Utf8View),
                s("day", DataType::Date32),
            ])),
        ),
    ])
}

fn guard() -> Guard {
    let collab = Collaboration::from_toml(DEMO, "collaboration.toml").expect("demo");
    Guard::new(&collab, &schemas()).expect("guard")
}

struct Case {
    comment: String,
    sql: String,
    expected: String,
}

fn parse(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for block in text.split("\n\n") {
        let (mut comment, mut sql, mut expected) = (String::new(), Vec::new(), Vec::new());
        let mut after = false;
        for line in block.lines() {
            if after {
                expected.push(line);
            } else if line.starts_with('#') {
                comment.push_str(line);
                comment.push('\n');
            } else if line == "----" {
                after = true;
            } else if !line.trim().is_empty() {
                sql.push(line);
            }
        }
        if !sql.is_empty() {
            cases.push(Case {
                comment,
                sql: sql.join("\n"),
                expected: expected.join("\n"),
            });
        }
    }
    cases
}

/// Runs every case of `file` through `outcome`; blesses or compares.
async fn golden(file: &str, min_cases: usize, outcome: impl AsyncFn(&str) -> String) {
    let path = Path::new(&manifest_dir()).join("tests").join(file);
    let text = std::fs::read_to_string(&path).expect("golden file");
    let cases = parse(&text);
    assert!(
        cases.len() >= min_cases,
        "{file} has only {} cases",
        cases.len()
    );
    let mut out = String::new();
    let mut failures = Vec::new();
    for case in &cases {
        let got = outcome(&case.sql).await;
        if got != case.expected {
            failures.push(format!(
                "{}\n  expected:\n{}\n  got:\n{}",
                case.sql, case.expected, got
            ));
        }
        out.push_str(&format!("{}{}\n----\n{}\n\n", case.comment, case.sql, got));
    }
    if std::env::var("AIRLOCK_BLESS").is_ok() {
        std::fs::write(&path, out.trim_end().to_string() + "\n").expect("bless");
        return;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases of {file} differ (AIRLOCK_BLESS=1 rewrites them):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The literals of a query longer than two characters: none may appear
/// in a refusal.
fn literals(sql: &str) -> Vec<&str> {
    sql.split('\'')
        .skip(1)
        .step_by(2)
        .filter(|s| s.len() > 2)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_names_its_rule_table_and_column() {
    let guard = guard();
    golden("refusals.slt", 45, async |sql: &str| {
        let got = match guard.check(sql, "advertiser").await {
            Err(GuardError::Refused(r)) => r.to_string(),
            Err(other) => format!("NOT REFUSED: {other}"),
            Ok(_) => "NOT REFUSED: accepted".to_string(),
        };
        for lit in literals(sql) {
            assert!(
                !got.contains(lit),
                "refusal echoes a literal {lit:?}: {got}"
            );
        }
        got
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_queries_split_into_the_expected_plans() {
    let guard = guard();
    golden("accepted.slt", 8, async |sql: &str| {
        match guard.check(sql, "advertiser").await {
            Ok(q) => match guard.split(&q) {
                Ok(plan) => format!("accepted\n{}", plan.to_string().trim_end()),
                Err(e) => format!("NOT SPLIT: {e}"),
            },
            Err(e) => format!("NOT ACCEPTED: {e}"),
        }
    })
    .await;
}

/// This crate's directory in the checkout being tested: cargo and nextest
/// set it when they run the test (a build cache shared between clones
/// holds the path of the clone that compiled it, which may be gone).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

/// Two of the querier's own tables in one join multiply a person's rows by
/// numbers it chooses (red team: a second table over the same file): one
/// of them per query; another member's second table is no such factor.
#[tokio::test]
async fn a_query_reads_at_most_one_of_the_queriers_own_tables() {
    let text = DEMO.to_string()
        + r#"
[[datasets]]
name = "advertiser_copy"
owner = "advertiser"

[[tables]]
alias = "purchases_copy"
dataset = "advertiser_copy"
identity = "email"
join = ["email"]
dimensions = ["category", "day"]
measures = { amount_cents = ["sum", "avg", "count"], order_id = ["count"] }
rule = { type = "aggregation", min_distinct_identities = 50 }
"#;
    let collab = Collaboration::from_toml(&text, "collaboration.toml").expect("valid");
    let mut schemas = schemas();
    schemas.insert("purchases_copy".into(), schemas["purchases"].clone());
    let guard = Guard::new(&collab, &schemas).expect("guard");
    let sql = "SELECT a.segment, COUNT(*) AS c FROM audience a JOIN purchases p ON a.email = p.email JOIN purchases_copy q ON a.email = q.email GROUP BY a.segment";
    match guard.check(sql, "advertiser").await {
        Err(GuardError::Refused(r)) => {
            assert_eq!(r.control, airlock_policy::Control::Join, "{r}");
            assert_eq!(r.table.as_deref(), Some("purchases_copy"), "{r}");
            assert!(
                r.reason.contains("at most one of the querier's own tables"),
                "{r}"
            );
        }
        other => panic!("accepted: {:?}", other.map(|q| q.sql)),
    }
    // Each of them alone with the other member's table is fine.
    for own in ["purchases", "purchases_copy"] {
        let sql = format!("SELECT a.segment, COUNT(DISTINCT a.email) AS n FROM audience a JOIN {own} p ON a.email = p.email GROUP BY a.segment");
        guard.check(&sql, "advertiser").await.expect(own);
    }
}
