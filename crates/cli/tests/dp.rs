//! Differential privacy end to end, in process and through the `airlock`
//! binary: the demo's budget (three analyses, the fourth refused), noisy
//! values near the truth, the repeated-query attack (ATTACKS #21), parallel
//! submissions that cannot overspend, and a `kill -9` after the debit that
//! never refunds it; and each owner's node's own ledger, in its own state:
//! deleting the hub's ledger file refills nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use airlock_cli::cluster::{CliError, Cluster};
use airlock_cli::{data, demo};
use airlock_policy::Control;
use airlock_service::ledger::EMBEDDED_LEDGER;
use airlock_store::{now_ms, Store};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;

fn dp_demo(rows: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    data::write_demo(&dir, rows, true).expect("demo data");
    std::fs::write(
        dir.join("collaboration.toml"),
        data::collaboration_toml_dp(),
    )
    .expect("config");
    let file = dir.join("collaboration.toml");
    (tmp, file)
}

fn budget_refusal(e: CliError) -> String {
    match e {
        CliError::Refused { refusal, .. } => {
            assert_eq!(refusal.control, Control::PrivacyBudget, "{refusal}");
            refusal.reason
        }
        other => panic!("expected a budget refusal, got {other}"),
    }
}

/// The own ledger of `member`'s node for the collaboration in `file`, as
/// the in-process nodes keep it.
async fn node_ledger(file: &Path, member: &str) -> Store {
    let collab = airlock_cli::cluster::load_collaboration(file).expect("collaboration");
    let state =
        airlock_cli::cluster::local_node_state(file.parent().expect("dir"), &collab, member)
            .expect("state");
    Store::open(&format!("sqlite:{}", state.join(EMBEDDED_LEDGER).display()))
        .await
        .expect("node ledger")
}

async fn node_epsilon_left(file: &Path, member: &str) -> f64 {
    node_ledger(file, member)
        .await
        .remaining("demo", None, now_ms())
        .await
        .expect("budget")
        .epsilon
}

async fn epsilon_left(file: &Path) -> f64 {
    let dir = file.parent().expect("dir");
    let store = Store::open(&format!("sqlite:{}", dir.join(EMBEDDED_LEDGER).display()))
        .await
        .expect("ledger");
    store
        .remaining("demo", None, now_ms())
        .await
        .expect("budget")
        .epsilon
}

#[tokio::test]
async fn three_analyses_spend_the_budget_and_the_fourth_is_refused() {
    let (_tmp, file) = dp_demo(30_000);
    let dir = file.parent().expect("dir").to_path_buf();
    let cluster = Cluster::open(&file, None).await.expect("open");
    // Analysis 1, compared with the exact counts: every public segment is
    // released, each within five times its 95% noise interval.
    let released = cluster
        .query("advertiser", demo::ANALYSES[0].1)
        .await
        .expect("released");
    let notes: serde_json::Value = serde_json::from_str(
        released
            .schema
            .metadata()
            .get(airlock_protocol::metadata::NOISE)
            .expect("noise described"),
    )
    .expect("json");
    let width = notes[0]["interval95"][0].as_u64().expect("interval") as i64;
    assert!(width > 0);
    let exact = common::plain_ctx(&dir)
        .await
        .sql("SELECT a.segment, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("exact");
    let mut truth = std::collections::HashMap::new();
    for b in &exact {
        let s = b.column(0).as_string_view_opt().map(|a| {
            (0..a.len())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        });
        let s = s.unwrap_or_else(|| {
            let a = b.column(0).as_string::<i32>();
            (0..a.len()).map(|i| a.value(i).to_string()).collect()
        });
        let n = b.column(1).as_primitive::<Int64Type>();
        for (i, seg) in s.into_iter().enumerate() {
            truth.insert(seg, n.value(i));
        }
    }
    let mut seen = 0;
    for b in &released.batches {
        let n = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let seg = datafusion::arrow::util::display::ArrayFormatter::try_new(
                b.column(0).as_ref(),
                &Default::default(),
            )
            .expect("fmt")
            .value(i)
            .to_string();
            let t = truth.get(&seg).copied().unwrap_or(0);
            assert!(
                (n.value(i) - t).abs() <= 5 * width,
                "{seg}: noisy {} vs exact {t} (95% width {width})",
                n.value(i)
            );
            seen += 1;
        }
    }
    assert_eq!(
        seen,
        data::SEGMENTS.len(),
        "every public segment, none other"
    );
    assert!((epsilon_left(&file).await - 2.0).abs() < 1e-9);
    cluster
        .query("advertiser", demo::ANALYSES[1].1)
        .await
        .expect("second");
    cluster
        .query("advertiser", demo::DP_EXTRA.1)
        .await
        .expect("third");
    // Refusals by the guard cost nothing.
    assert!(matches!(
        cluster.query("advertiser", "SELECT * FROM audience").await,
        Err(CliError::Refused { .. })
    ));
    let reason = budget_refusal(
        cluster
            .query("advertiser", demo::ANALYSES[0].1)
            .await
            .expect_err("fourth refused"),
    );
    assert!(
        reason.contains("needs") || reason.contains("need"),
        "{reason}"
    );
    assert!(epsilon_left(&file).await.abs() < 1e-9);
    // The repeated-query attack does not get around it in a new process:
    // the ledger is durable beside the collaboration.
    drop(cluster);
    let again = Cluster::open(&file, None).await.expect("reopen");
    budget_refusal(
        again
            .query("advertiser", demo::ANALYSES[0].1)
            .await
            .expect_err("still refused"),
    );
    let view = again
        .budget("advertiser")
        .await
        .expect("budget")
        .expect("set");
    assert!(view.collaboration_left.expect("left").epsilon.abs() < 1e-9);
}

#[tokio::test]
async fn deleting_the_hubs_ledger_file_refills_no_owners_node() {
    // The budget is spent; whoever can write beside the collaboration file
    // deletes the hub's ledger. The hub's side starts afresh, but each
    // owner's node keeps its own ledger in its own state and refuses.
    let (_tmp, file) = dp_demo(3_000);
    let dir = file.parent().expect("dir").to_path_buf();
    let cluster = Cluster::open(&file, None).await.expect("open");
    for _ in 0..3 {
        cluster
            .query("advertiser", demo::ANALYSES[0].1)
            .await
            .expect("released");
    }
    drop(cluster);
    for member in ["publisher", "advertiser"] {
        assert!(node_epsilon_left(&file, member).await.abs() < 1e-9);
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("{EMBEDDED_LEDGER}{suffix}")));
    }
    let again = Cluster::open(&file, None).await.expect("reopen");
    assert!(
        (epsilon_left(&file).await - 3.0).abs() < 1e-9,
        "the hub's is new"
    );
    for sql in [demo::ANALYSES[0].1, demo::ANALYSES[1].1, demo::DP_EXTRA.1] {
        match again.query("advertiser", sql).await {
            Err(CliError::Refused {
                refusal,
                node: Some(node),
            }) => {
                assert_eq!(refusal.control, Control::PrivacyBudget, "{refusal}");
                assert!(refusal.reason.contains("owner's node"), "{refusal}");
                assert!(refusal.table.is_some(), "{refusal}");
                assert!(["publisher", "advertiser"].contains(&node.as_str()));
            }
            other => panic!("{sql}: expected the node's refusal, got {other:?}"),
        }
    }
    for member in ["publisher", "advertiser"] {
        assert!(node_epsilon_left(&file, member).await.abs() < 1e-9);
    }
}

#[tokio::test]
async fn twelve_parallel_first_queries_release_three_and_never_fail() {
    // A new collaboration, no ledger anywhere yet: twelve analysts' first
    // queries at once, as twelve processes. Each opens the hub's ledger
    // and each node's own for the first time; three are released, nine
    // refused for budget, none fails on a conflict, and no ledger spent
    // more than its budget.
    let (_tmp, file) = dp_demo(2_000);
    let children: Vec<std::process::Child> = (0..12)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
                .args(["query", "--collab"])
                .arg(&file)
                .args(["--as", "advertiser", demo::ANALYSES[0].1])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut released = 0;
    for child in children {
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => released += 1,
            Some(3) => assert!(stderr.contains("privacy-budget"), "{stderr}"),
            other => panic!("exit {other:?}: {stderr}"),
        }
    }
    assert_eq!(released, 3, "budget 3, epsilon 1 each");
    assert!(epsilon_left(&file).await.abs() < 1e-9);
    for member in ["publisher", "advertiser"] {
        assert!(node_epsilon_left(&file, member).await.abs() < 1e-9);
    }
}

/// A hub that skips its debit.
struct Skips;

impl airlock_hub::Ledger for Skips {
    fn debit<'a>(
        &'a self,
        _member: &'a str,
        _cost: airlock_guard::dp::DpCost,
    ) -> futures::future::BoxFuture<'a, Result<(), airlock_hub::HubError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn twelve_parallel_queries_of_a_hub_that_skips_its_debit_stop_at_the_nodes() {
    // No hub ledger at all: twelve queries at once reach the nodes, whose
    // own ledgers (real ones, in their state) each take exactly three. A
    // query is released only if both nodes took it (each node takes the
    // first three to reach it, not always the same three): at most three.
    let (_tmp, file) = dp_demo(2_000);
    let cluster = Cluster::open(&file, None).await.expect("open");
    let spec = airlock_policy::QuerySpec::sql(demo::ANALYSES[0].1);
    let runs = (0..12).map(|i| {
        let (cluster, spec) = (&cluster, &spec);
        async move {
            let prepared = cluster
                .hub
                .prepare("advertiser", spec)
                .await
                .expect("accepted");
            cluster
                .hub
                .run(&format!("skip{i:04}"), prepared, &cluster.nodes, &Skips)
                .await
        }
    });
    let results = futures::future::join_all(runs).await;
    let released = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        (1..=3).contains(&released),
        "the nodes' budget is 3, epsilon 1 each: {released}"
    );
    for r in results.into_iter().filter_map(Result::err) {
        match r {
            CliError::Refused {
                refusal,
                node: Some(_),
            } => assert_eq!(refusal.control, Control::PrivacyBudget, "{refusal}"),
            other => panic!("expected a node's budget refusal, got {other}"),
        }
    }
    for member in ["publisher", "advertiser"] {
        assert!(node_epsilon_left(&file, member).await.abs() < 1e-9);
        let debits: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM privacy_debits WHERE nano_epsilon > 0")
                .fetch_one(node_ledger(&file, member).await.pool())
                .await
                .expect("count");
        assert_eq!(debits, 3, "{member}'s node took three");
    }
    // The hub's own ledger was never touched.
    assert!((epsilon_left(&file).await - 3.0).abs() < 1e-9);
}

#[tokio::test]
async fn twelve_first_opens_of_a_new_ledger_all_succeed() {
    // Twelve first queries at once on a new budget: each opens the ledger,
    // one creates it, none fails (ATTACKS 32: it never overspent, and it
    // must not fail either).
    let (_tmp, file) = dp_demo(2_000);
    let ledger = file.parent().expect("dir").join(EMBEDDED_LEDGER);
    let _ = std::fs::remove_file(&ledger);
    // Twelve processes at once, as twelve analysts' first commands would.
    let children: Vec<std::process::Child> = (0..12)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
                .args(["budget", "show", "--collab"])
                .arg(&file)
                .args(["--as", "advertiser"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let opened = futures::future::join_all((0..12).map(|_| Cluster::open(&file, None))).await;
    for r in &opened {
        assert!(r.is_ok(), "{:?}", r.as_ref().err());
    }
    assert!((epsilon_left(&file).await - 3.0).abs() < 1e-9);
}

#[tokio::test]
async fn parallel_queries_cannot_overspend() {
    let (_tmp, file) = dp_demo(5_000);
    let cluster = Cluster::open(&file, None).await.expect("open");
    let sql = demo::ANALYSES[0].1;
    let results = futures::future::join_all((0..6).map(|_| cluster.query("advertiser", sql))).await;
    let released = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(released, 3, "budget 3, epsilon 1 each");
    for r in results.into_iter().filter_map(Result::err) {
        budget_refusal(r);
    }
}

#[tokio::test]
async fn kill_9_after_the_debit_never_refunds_it() {
    let (_tmp, file) = dp_demo(400_000);
    // Register the ledger first, as any earlier run would have.
    drop(Cluster::open(&file, None).await.expect("open"));
    let ledger = Store::open(&format!(
        "sqlite:{}",
        file.parent().expect("dir").join(EMBEDDED_LEDGER).display()
    ))
    .await
    .expect("ledger");
    let left = |ledger: &Store| {
        let ledger = ledger.clone();
        async move {
            ledger
                .remaining("demo", None, now_ms())
                .await
                .expect("remaining")
                .epsilon
        }
    };
    // The node runs in the same process: its own ledger is the one
    // watched, so the kill comes between the node's debit and its reply.
    let node = node_ledger(&file, "publisher").await;
    // Up to three tries (the budget allows three): a try whose query
    // happened to finish before the kill still must leave its debit, and
    // at least one try must kill the process before it released anything.
    let mut killed_before_release = false;
    for attempt in 0..3 {
        let before = left(&ledger).await;
        assert!((before - (3.0 - attempt as f64)).abs() < 1e-9, "{before}");
        let node_before = left(&node).await;
        assert!((node_before - before).abs() < 1e-9, "{node_before}");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(["query", "--collab"])
            .arg(&file)
            .args(["--as", "advertiser", demo::ANALYSES[1].1])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let start = Instant::now();
        while left(&node).await > node_before - 1e-9 {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the query never debited"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.kill().expect("kill -9");
        let out = child.wait_with_output().expect("wait");
        let after = left(&ledger).await;
        assert!((after - (before - 1.0)).abs() < 1e-9, "{before} -> {after}");
        let node_after = left(&node).await;
        assert!(
            (node_after - (node_before - 1.0)).abs() < 1e-9,
            "the node's: {node_before} -> {node_after}"
        );
        if out.stdout.is_empty() {
            killed_before_release = true;
            break;
        }
    }
    assert!(
        killed_before_release,
        "no try killed the process between its debit and its release"
    );
}
