//! Differential privacy through the guard and its release: refusals of what DP cannot
//! serve, and a falsification test in the style of Google's stochastic
//! tester (neighbouring datasets, output histograms compared against
//! e^epsilon), with a negative control that proves the tester can fail.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use airlock_exec::dp;
use airlock_guard::{Guard, GuardError};
use airlock_policy::{Collaboration, Control};
use airlock_privacy::tester::{self, violations};
use datafusion::arrow::array::{Array, AsArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

const COLLAB: &str = r#"
[collaboration]
name = "dp-test"
secret_file = "k"

[privacy]
epsilon = 100.0

[[members]]
name = "owner"
abilities = ["query", "receive", "provide"]

[[datasets]]
name = "ds"
owner = "owner"

[[tables]]
alias = "t"
dataset = "ds"
identity = "email"
join = ["email"]
dimensions = ["seg", "region"]
measures = { amount = ["sum", "avg", "count", "count_distinct"] }
rule = { type = "aggregation", min_distinct_identities = 2, differential_privacy = { epsilon = 1.0, max_rows_per_identity = 1, max_groups_per_identity = 1, bounds = { amount = [0, 100] }, public_keys = { seg = ["a", "b"] } } }
"#;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("email", DataType::Utf8, false),
        Field::new("seg", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, false),
    ]))
}

/// The collaboration with delta 1e-6: groups may be chosen by partition selection.
fn with_delta() -> String {
    COLLAB.replace("epsilon = 1.0,", "epsilon = 1.0, delta = 1e-6,")
}

fn guard(text: &str) -> Guard {
    let collab = Collaboration::from_toml(text, "c.toml").expect("valid collaboration");
    let schemas = HashMap::from([("t".to_string(), schema())]);
    Guard::new(&collab, &schemas).expect("guard")
}

/// `people` people in segment "a", one row each with amount 50, and one
/// more with amount 100 if `extra`.
fn rows(people: usize, extra: bool) -> RecordBatch {
    let n = people + usize::from(extra);
    let emails: Vec<String> = (0..n).map(|i| format!("p{i}@example.com")).collect();
    let amounts: Vec<i64> = (0..n).map(|i| if i < people { 50 } else { 100 }).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(emails)),
            Arc::new(StringArray::from(vec!["a"; n])),
            Arc::new(StringArray::from(vec!["north"; n])),
            Arc::new(Int64Array::from(amounts)),
        ],
    )
    .expect("batch")
}

/// Runs the lower plan of a DP query on `data` (as the node would).
async fn lower(plan: &LogicalPlan, data: RecordBatch) -> Vec<RecordBatch> {
    let table: Arc<dyn TableProvider> =
        Arc::new(MemTable::try_new(schema(), vec![vec![data]]).expect("table"));
    let plan = airlock_exec::bind_scans(plan, |_| Ok(table.clone())).expect("plan");
    airlock_exec::run(&SessionContext::new(), plan)
        .await
        .expect("lower plan")
        .1
}

/// Histograms of the value of column `col` in group "a" over `n` releases.
fn histogram(
    release: &airlock_guard::dp::DpRelease,
    exact: &[RecordBatch],
    col: usize,
    n: usize,
    bin: i64,
) -> BTreeMap<i64, u64> {
    let mut h = BTreeMap::new();
    for _ in 0..n {
        let b = dp::noisy_aggregate(release, exact.to_vec()).expect("noise");
        let seg = b.column(0).as_string::<i32>();
        let row = (0..b.num_rows())
            .find(|r| seg.value(*r) == "a")
            .expect("group a");
        // Sums of integers are released as DECIMAL(38, 0), counts as Int64.
        let column = datafusion::arrow::compute::cast(b.column(col), &DataType::Int64)
            .expect("an integer value");
        let v = column
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(row);
        *h.entry(v.div_euclid(bin)).or_insert(0) += 1;
    }
    h
}

#[tokio::test]
async fn neighbouring_datasets_stay_within_e_to_the_epsilon() {
    let g = guard(COLLAB);
    let n = 40_000;
    for (sql, col, bin) in [
        ("SELECT seg, COUNT(*) AS n FROM t GROUP BY seg", 1, 1),
        ("SELECT seg, SUM(amount) AS s FROM t GROUP BY seg", 1, 25),
        (
            "SELECT seg, COUNT(DISTINCT email) AS p FROM t GROUP BY seg",
            1,
            1,
        ),
    ] {
        let q = g.check(sql, "owner").await.expect("accepted");
        let release = q.dp.clone().expect("a DP query");
        assert_eq!(release.cost.epsilon, 1.0);
        let without = lower(&q.plan, rows(100, false)).await;
        let with = lower(&q.plan, rows(100, true)).await;
        let ha = histogram(&release, &without, col, n, bin);
        let hb = histogram(&release, &with, col, n, bin);
        let (tested, bad) = violations(&ha, &hb, 1.0, 500);
        assert!(tested >= 3, "{sql}: too few bins tested ({tested})");
        assert!(bad.is_empty(), "{sql}: bins beyond e^epsilon: {bad:?}");
    }
}

#[test]
fn the_tester_catches_a_mechanism_with_too_little_noise() {
    // Noise made for epsilon 2 claimed as epsilon 1: the tester must see it.
    let m = airlock_privacy::Laplace::for_epsilon(2.0, 1.0).expect("mechanism");
    let draw = |v: i64| tester::histogram(40_000, 1, || m.release(v).expect("noise"));
    let (tested, bad) = violations(&draw(100), &draw(101), 1.0, 500);
    assert!(tested >= 2, "bins tested: {tested}");
    assert!(!bad.is_empty(), "a too-weak mechanism passed the tester");
}

fn refusal(e: GuardError) -> airlock_policy::Refusal {
    match e {
        GuardError::Refused(r) => r,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn what_dp_cannot_serve_is_refused_by_name() {
    let g = guard(COLLAB);
    // Groups that are not public, with no delta for partition selection.
    let r = refusal(
        g.check("SELECT region, COUNT(*) FROM t GROUP BY region", "owner")
            .await
            .expect_err("refused"),
    );
    assert_eq!(r.control, Control::DifferentialPrivacy);
    assert!(r.reason.contains("public"), "{r}");
    // COUNT DISTINCT of something other than the identity.
    let r = refusal(
        g.check(
            "SELECT seg, COUNT(DISTINCT amount) FROM t GROUP BY seg",
            "owner",
        )
        .await
        .expect_err("refused"),
    );
    assert_eq!(r.control, Control::DifferentialPrivacy);
    // MIN is not an allowed aggregate at all.
    let r = refusal(
        g.check("SELECT seg, MIN(amount) FROM t GROUP BY seg", "owner")
            .await
            .expect_err("refused"),
    );
    assert_eq!(r.control, Control::DisallowedAggregate);
    // With a delta, partition selection serves the same query and costs it.
    let g = guard(&with_delta());
    let q = g
        .check(
            "SELECT region, COUNT(*) AS n FROM t GROUP BY region",
            "owner",
        )
        .await
        .expect("accepted with partition selection");
    let cost = q.dp.expect("dp").cost;
    assert_eq!((cost.epsilon, cost.delta), (1.0, 1e-6));
}

#[tokio::test]
async fn public_keys_are_all_released_and_rare_keys_never() {
    let g = guard(COLLAB);
    let q = g
        .check(
            "SELECT seg, COUNT(*) AS n FROM t GROUP BY seg ORDER BY seg",
            "owner",
        )
        .await
        .expect("accepted");
    // Data with a key outside the public list ("zz").
    let mut data = rows(30, false);
    let extra = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec!["rare@example.com"])),
            Arc::new(StringArray::from(vec!["zz"])),
            Arc::new(StringArray::from(vec!["north"])),
            Arc::new(Int64Array::from(vec![1])),
        ],
    )
    .expect("batch");
    data = datafusion::arrow::compute::concat_batches(&schema(), &[data, extra]).expect("concat");
    let exact = lower(&q.plan, data).await;
    let release = q.dp.expect("dp");
    let (schema, batches) = dp::release(&release, exact).await.expect("released");
    assert!(schema
        .metadata()
        .contains_key(airlock_protocol::metadata::NOISE));
    let segs: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(segs, vec!["a", "b"], "exactly the public keys, in order");
    assert!(batches.iter().all(|b| b.column(1).null_count() == 0));
}

#[tokio::test]
async fn partition_selection_releases_the_count_it_tested() {
    // epsilon 1, one group per person, delta 1e-6: threshold 1 + ceil(ln 1e6) = 15.
    let g = guard(&with_delta());
    let q = g
        .check(
            "SELECT region, COUNT(DISTINCT email) AS p FROM t GROUP BY region",
            "owner",
        )
        .await
        .expect("accepted");
    let exact = lower(&q.plan, rows(15, false)).await;
    let release = q.dp.expect("dp");
    let (mut released, mut withheld) = (0, 0);
    for _ in 0..3_000 {
        let b = dp::noisy_aggregate(&release, exact.clone()).expect("noise");
        if b.num_rows() == 0 {
            withheld += 1;
            continue;
        }
        released += 1;
        let p = b
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0);
        // A second, independent draw would fall below the threshold in
        // about half of the releases.
        assert!(p >= 15, "released {p}, below the threshold it passed");
    }
    assert!(released > 500 && withheld > 500, "{released} / {withheld}");
}

#[tokio::test]
async fn an_empty_input_releases_noisy_zeros_or_no_group() {
    // Public keys: every key comes out (as noise around 0), whether the
    // lower plan returned an empty batch or no batch at all.
    let g = guard(COLLAB);
    let q = g
        .check(
            "SELECT seg, COUNT(*) AS n, SUM(amount) AS s FROM t WHERE region = 'nowhere' GROUP BY seg",
            "owner",
        )
        .await
        .expect("accepted");
    let release = q.dp.clone().expect("a DP query");
    let exact = lower(&q.plan, rows(30, false)).await;
    for input in [exact, Vec::new()] {
        let (_, batches) = dp::release(&release, input).await.expect("released");
        let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(n, 2, "both public keys, as noisy zeros");
    }
    // Partition selection: no group, and no error.
    let g = guard(&with_delta());
    let q = g
        .check(
            "SELECT region, COUNT(DISTINCT email) AS p FROM t WHERE seg = 'z' GROUP BY region",
            "owner",
        )
        .await
        .expect("accepted");
    let release = q.dp.clone().expect("a DP query");
    for input in [lower(&q.plan, rows(30, false)).await, Vec::new()] {
        let (_, batches) = dp::release(&release, input).await.expect("released");
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    }
}

#[tokio::test]
async fn dp_refuses_joins_off_the_identity() {
    // With a join on a household column, one person's row reaches every
    // row of the household: no per-identity bound holds, so it is refused.
    let text = r#"
[collaboration]
name = "dp-join"
secret_file = "k"

[privacy]
epsilon = 10.0

[[members]]
name = "one"
abilities = ["query", "receive", "provide"]

[[members]]
name = "two"
abilities = ["provide"]

[[datasets]]
name = "d1"
owner = "one"

[[datasets]]
name = "d2"
owner = "two"

[[tables]]
alias = "a"
dataset = "d1"
identity = "email"
join = ["email", "hh"]
dimensions = ["seg"]
rule = { type = "aggregation", min_distinct_identities = 2, differential_privacy = { epsilon = 1.0, max_rows_per_identity = 1, max_groups_per_identity = 1, public_keys = { seg = ["a", "b"] } } }

[[tables]]
alias = "b"
dataset = "d2"
identity = "email"
join = ["email", "hh"]
dimensions = ["region"]
rule = { type = "aggregation", min_distinct_identities = 2, differential_privacy = { epsilon = 1.0, max_rows_per_identity = 1, max_groups_per_identity = 1 } }
"#;
    let collab = Collaboration::from_toml(text, "c.toml").expect("valid collaboration");
    let schema = |dim: &str| -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("email", DataType::Utf8, false),
            Field::new("hh", DataType::Utf8, false),
            Field::new(dim, DataType::Utf8, false),
        ]))
    };
    let schemas = HashMap::from([
        ("a".to_string(), schema("seg")),
        ("b".to_string(), schema("region")),
    ]);
    let g = Guard::new(&collab, &schemas).expect("guard");
    let e = g
        .check(
            "SELECT a.seg, COUNT(*) AS n FROM a JOIN b ON a.hh = b.hh GROUP BY a.seg",
            "one",
        )
        .await
        .expect_err("refused");
    let r = refusal(e);
    assert_eq!(r.control, Control::DifferentialPrivacy, "{r}");
    assert!(r.reason.contains("identity"), "{r}");
    // Joined on the identity, the same query is served.
    g.check(
        "SELECT a.seg, COUNT(*) AS n FROM a JOIN b ON a.email = b.email GROUP BY a.seg",
        "one",
    )
    .await
    .expect("accepted on the identity");
}

#[tokio::test]
async fn an_owner_requires_dp_for_every_query_that_reads_its_table() {
    // The owner's table is under DP; the querier's own table is not (it
    // could be filled with k - 1 known people and a target). Every query
    // reading the owner's table must then be a DP query: refused, naming
    // the querier's table, until that table has a DP rule too.
    let text = r#"
[collaboration]
name = "dp-owner"
secret_file = "k"

[privacy]
epsilon = 10.0

[[members]]
name = "owner"
abilities = ["provide"]

[[members]]
name = "querier"
abilities = ["query", "receive", "provide"]

[[datasets]]
name = "d1"
owner = "owner"

[[datasets]]
name = "d2"
owner = "querier"

[[tables]]
alias = "a"
dataset = "d1"
identity = "email"
join = ["email"]
dimensions = ["seg"]
rule = { type = "aggregation", min_distinct_identities = 50, differential_privacy = { epsilon = 1.0, max_rows_per_identity = 1, max_groups_per_identity = 1, public_keys = { seg = ["a", "b"] } } }

[[tables]]
alias = "b"
dataset = "d2"
identity = "email"
join = ["email"]
dimensions = ["marker"]
rule = { type = "aggregation", min_distinct_identities = 50 }
"#;
    let collab = Collaboration::from_toml(text, "c.toml").expect("valid collaboration");
    let schema = |dim: &str| -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("email", DataType::Utf8, false),
            Field::new(dim, DataType::Utf8, false),
        ]))
    };
    let schemas = HashMap::from([
        ("a".to_string(), schema("seg")),
        ("b".to_string(), schema("marker")),
    ]);
    let g = Guard::new(&collab, &schemas).expect("guard");
    for sql in [
        "SELECT a.seg, COUNT(DISTINCT a.email) AS n FROM a JOIN b ON a.email = b.email GROUP BY a.seg",
        "SELECT COUNT(*) AS n FROM a JOIN b ON a.email = b.email WHERE b.marker = 'x'",
    ] {
        let r = refusal(g.check(sql, "querier").await.expect_err("refused"));
        assert_eq!(r.control, Control::DifferentialPrivacy, "{sql}: {r}");
        assert_eq!(r.table.as_deref(), Some("b"), "{sql}: {r}");
    }
}
