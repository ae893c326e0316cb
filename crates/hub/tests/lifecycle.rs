//! The hub's control plane alone, without sockets: real in-process nodes
//! behind a `NodeClient` double that records what reaches them, and a
//! ledger double that records (or refuses) debits. Each query is checked
//! once ([`Hub::prepare`]), then run ([`Hub::run`]); a whole lifecycle
//! ([`Hub::settle`]) records its states through a store double.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock_hub::{
    AuditLog, Deliverer, Hub, HubError, Progress, QueryRef, QueryStore, Run, Settled,
};
use airlock_node::Node;
use airlock_policy::{Collaboration, Control, QuerySpec, Refusal};
use airlock_protocol::audit::DeliveredBy;
use airlock_protocol::{AuditEvent, AuditKind, Delivered};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use futures::future::BoxFuture;

mod common;

use common::{collab, write_data, Debits, Nodes, BY_CATEGORY};

struct Setup {
    _tmp: tempfile::TempDir,
    hub: Hub,
    nodes: Nodes,
    log: Arc<Mutex<Vec<String>>>,
}

/// A hub over `hub_collab`; each node opens `node_collab` (its own copy of
/// the rules, which may be stricter than what the hub was told).
async fn setup(hub_collab: Collaboration, node_collab: Collaboration) -> Setup {
    setup_budget(hub_collab, node_collab, 10.0).await
}

/// [`setup`] with nodes whose own ledgers have `node_epsilon` to spend.
async fn setup_budget(
    hub_collab: Collaboration,
    node_collab: Collaboration,
    node_epsilon: f64,
) -> Setup {
    let log = Arc::new(Mutex::new(Vec::new()));
    let tmp = tempfile::tempdir().expect("tempdir");
    write_data(tmp.path());
    let mut nodes = HashMap::new();
    let mut schemas = HashMap::new();
    for member in ["publisher", "advertiser"] {
        // The schemas the hub is told are those of its own copy of the rules.
        let told = Node::open(&hub_collab, tmp.path(), member)
            .await
            .expect("node");
        schemas.extend(told.table_schemas().clone());
        let node = Node::open(&node_collab, tmp.path(), member)
            .await
            .expect("node")
            .with_ledger(Arc::new(common::NodeBudget {
                member: member.to_string(),
                log: log.clone(),
                left: Mutex::new(node_epsilon),
            }));
        nodes.insert(member.to_string(), node);
    }
    let hub = Hub::new(hub_collab, &schemas).expect("hub");
    Setup {
        _tmp: tmp,
        hub,
        nodes: Nodes::new(nodes, log.clone()),
        log,
    }
}

impl Setup {
    /// The advertiser's `sql`, prepared and run in one step; `refuse_debit`
    /// makes the ledger refuse the debit.
    async fn ask(&self, sql: &str, refuse_debit: bool) -> Result<airlock_hub::Released, HubError> {
        self.hub
            .query_spec(
                common::QUERY,
                "advertiser",
                &QuerySpec::sql(sql),
                &self.nodes,
                &ledger(self, refuse_debit),
            )
            .await
    }
}

fn logged(s: &Setup) -> Vec<String> {
    s.log.lock().expect("log").clone()
}

fn ledger(s: &Setup, refuse: bool) -> Debits {
    Debits {
        log: s.log.clone(),
        refuse,
    }
}

/// Released (category, n) rows, sorted.
fn rows(r: &airlock_hub::Released) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for b in &r.batches {
        let cats = datafusion::arrow::compute::cast(
            b.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .expect("utf8");
        let cats = cats.as_string::<i32>();
        let ns = datafusion::arrow::compute::cast(
            b.column(1),
            &datafusion::arrow::datatypes::DataType::Int64,
        )
        .expect("int64");
        let ns = ns.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            assert!(!ns.is_null(i));
            out.push((cats.value(i).to_string(), ns.value(i)));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_join_sends_one_fragment_per_table_and_releases_only_groups_of_k() {
    let s = setup(collab(3, false), collab(3, false)).await;
    let prepared = s
        .hub
        .prepare("advertiser", &QuerySpec::sql(BY_CATEGORY))
        .await
        .expect("accepted");
    assert_eq!(prepared.member(), "advertiser");
    assert!(prepared.cost().is_none());
    let released = s
        .hub
        .run(common::QUERY, prepared, &s.nodes, &ledger(&s, false))
        .await
        .expect("released");
    // `pair` (2 people) and `solo` (1) are below k = 3.
    assert_eq!(rows(&released), vec![("trio".to_string(), 3)]);
    let mut calls = logged(&s);
    calls.sort();
    assert_eq!(calls, vec!["execute advertiser", "execute publisher"]);
}

#[tokio::test]
async fn a_refused_query_reaches_no_node_and_debits_nothing() {
    let s = setup(collab(3, true), collab(3, true)).await;
    for sql in [
        "SELECT email FROM orders",
        "SELECT c.segment, COUNT(*) FROM crm c GROUP BY c.segment HAVING COUNT(*) > 0 AND c.email = 'x'",
    ] {
        match s.ask(sql, false).await {
            Err(HubError::Refused { node: None, .. }) | Err(HubError::BadInput(_)) => {}
            other => panic!("{sql}: {other:?}"),
        }
    }
    assert!(logged(&s).is_empty(), "{:?}", logged(&s));
    // Nor does a member without the query ability, or a stranger.
    match s
        .hub
        .prepare("publisher", &QuerySpec::sql(BY_CATEGORY))
        .await
    {
        Err(HubError::Refused {
            refusal,
            node: None,
            ..
        }) => assert_eq!(refusal.control, Control::Ability),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.hub.prepare("mallory", &QuerySpec::sql(BY_CATEGORY)).await,
        Err(HubError::BadInput(_))
    ));
}

#[tokio::test]
async fn a_node_enforces_its_own_rules_when_the_hub_was_told_less() {
    // The hub believes the publisher's `segment` is a dimension; the
    // publisher's own node holds rules without it. The node refuses to
    // ship the column, and the refusal names the node.
    let hub = collab(3, false);
    let mut node = hub.config().clone();
    node.tables[0].dimensions.clear();
    let node = Collaboration::validate(node, "node.toml").expect("node's rules");
    let s = setup(hub, node).await;
    let sql = "SELECT c.segment, COUNT(DISTINCT o.email) AS n \
               FROM crm c JOIN orders o ON c.email = o.email GROUP BY c.segment";
    match s.ask(sql, false).await {
        Err(HubError::Refused {
            node: Some(node), ..
        }) => assert_eq!(node, "publisher"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_failed_node_is_named_and_nothing_is_released() {
    let mut s = setup(collab(3, false), collab(3, false)).await;
    s.nodes.broken = Some("publisher");
    match s.ask(BY_CATEGORY, false).await {
        Err(HubError::Failed(m)) => assert!(m.contains("the node of 'publisher' failed"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn under_dp_the_debit_comes_before_any_fragment_and_a_refused_debit_sends_none() {
    let sql = "SELECT category, COUNT(*) AS n FROM orders GROUP BY category";
    let s = setup(collab(3, true), collab(3, true)).await;
    let prepared = s
        .hub
        .prepare("advertiser", &QuerySpec::sql(sql))
        .await
        .expect("accepted");
    assert_eq!(prepared.cost().map(|c| c.epsilon), Some(1.0));
    let released = s
        .hub
        .run(common::QUERY, prepared, &s.nodes, &ledger(&s, false))
        .await
        .expect("released");
    // Every public key is released (noisy), whatever the data.
    assert_eq!(released.num_rows(), 3);
    // The owner's node debits its own ledger too, after the hub's.
    assert_eq!(
        logged(&s),
        vec![
            "debit advertiser 1",
            "execute advertiser",
            "node advertiser debit advertiser 1"
        ]
    );

    let s = setup(collab(3, true), collab(3, true)).await;
    match s.ask(sql, true).await {
        Err(HubError::Refused { refusal, .. }) => {
            assert_eq!(refusal.control, Control::PrivacyBudget)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(logged(&s), vec!["debit advertiser 1"]);
}

/// A ledger that lets every query through without debiting anything: a
/// hub that skips its debit.
struct Skips;

impl airlock_hub::Ledger for Skips {
    fn debit<'a>(
        &'a self,
        _member: &'a str,
        _cost: airlock_guard::dp::DpCost,
    ) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_hub_that_skips_its_debit_meets_each_owners_node_refusal() {
    // The owners' nodes have epsilon 2.5 left; each query costs 1. A hub
    // that never debits gets two releases of the one-table analysis and of
    // the join, then every node refuses on its own ledger, whatever the hub
    // says: repeating a query to average its noise stops at the node.
    let one_table = "SELECT category, COUNT(*) AS n FROM orders GROUP BY category";
    let joined = "SELECT o.category, COUNT(DISTINCT o.email) AS n \
                  FROM crm c JOIN orders o ON c.email = o.email GROUP BY o.category";
    for sql in [one_table, joined] {
        let s = setup_budget(common::collab_dp_both(), common::collab_dp_both(), 2.5).await;
        for i in 0..2 {
            let prepared = s
                .hub
                .prepare("advertiser", &QuerySpec::sql(sql))
                .await
                .expect("accepted");
            s.hub
                .run(common::QUERY, prepared, &s.nodes, &Skips)
                .await
                .unwrap_or_else(|e| panic!("{sql} #{i}: {e}"));
        }
        for _ in 0..3 {
            let prepared = s
                .hub
                .prepare("advertiser", &QuerySpec::sql(sql))
                .await
                .expect("accepted");
            match s.hub.run(common::QUERY, prepared, &s.nodes, &Skips).await {
                Err(HubError::Refused {
                    refusal,
                    node: Some(_),
                }) => {
                    assert_eq!(refusal.control, Control::PrivacyBudget, "{refusal}");
                    assert!(refusal.table.is_some(), "{refusal}");
                    assert!(refusal.reason.contains("owner's node"), "{refusal}");
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        // Each node served the two releases and debited nothing more.
        let nodes: &[&str] = if sql == one_table {
            &["advertiser"]
        } else {
            &["advertiser", "publisher"]
        };
        for n in nodes {
            let debits = logged(&s)
                .iter()
                .filter(|l| l.starts_with(&format!("node {n} debit ")))
                .count();
            assert_eq!(debits, 2, "{n}: {:?}", logged(&s));
        }
    }
}

/// A store that records each write of the lifecycle in the shared log.
struct Records {
    log: Arc<Mutex<Vec<String>>>,
}

impl Records {
    fn push(&self, line: String) -> BoxFuture<'_, Result<(), String>> {
        self.log.lock().expect("log").push(line);
        Box::pin(async { Ok(()) })
    }
}

impl AuditLog for Records {
    fn audit<'a>(
        &'a self,
        collab: &'a str,
        event: AuditEvent,
    ) -> BoxFuture<'a, Result<(), String>> {
        let (kind, payload) = (event.kind(), event.payload());
        self.push(format!("audit {collab} {} {payload}", kind.as_str()))
    }
}

impl QueryStore for Records {
    fn running<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<(), String>> {
        self.push(format!("running {query}"))
    }
    fn release<'a>(
        &'a self,
        query: &'a str,
        result: &'a [u8],
        rows: i64,
    ) -> BoxFuture<'a, Result<(), String>> {
        assert!(!result.is_empty());
        self.push(format!("stored {query} {rows} rows"))
    }
    fn release_delivered<'a>(
        &'a self,
        query: &'a str,
        rows: i64,
        _result_sha256: &'a str,
        detail: &'a str,
        written: &'a DeliveredBy,
    ) -> BoxFuture<'a, Result<(), String>> {
        assert!(matches!(written, DeliveredBy::Written { rows: 2, .. }));
        self.push(format!("delivered {query} {rows} rows: {detail}"))
    }
    fn refused<'a>(
        &'a self,
        query: &'a str,
        refusal: &'a Refusal,
        node: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.push(format!(
            "refused {query} by {node:?}: {:?}",
            refusal.control
        ))
    }
    fn failed<'a>(&'a self, query: &'a str, message: &'a str) -> BoxFuture<'a, Result<(), String>> {
        self.push(format!("failed {query}: {message}"))
    }
}

/// The querier's node as a delivery destination; `faithful` false makes
/// it report other bytes than it was sent.
struct Courier {
    faithful: bool,
}

impl Deliverer for Courier {
    fn deliver<'a>(
        &'a self,
        member: &'a str,
        _collab_id: &'a str,
        _query: &'a str,
        destination: &'a str,
        result: &'a [u8],
    ) -> BoxFuture<'a, Result<Delivered, String>> {
        use sha2::Digest as _;
        assert_eq!(member, "advertiser");
        let sha = if self.faithful {
            hex::encode(sha2::Sha256::digest(result))
        } else {
            "00".repeat(32)
        };
        Box::pin(async move {
            Ok(Delivered {
                destination: destination.to_string(),
                kind: "parquet".into(),
                location: "out/q1.parquet".into(),
                rows: 2,
                result_sha256: sha,
                file_sha256: None,
            })
        })
    }
}

impl Setup {
    /// Prepares the advertiser's `sql` and settles it with `deliver`.
    async fn settle(
        &self,
        sql: &str,
        deliver: Option<&Courier>,
        timeout: std::time::Duration,
    ) -> Settled {
        let prepared = self
            .hub
            .prepare("advertiser", &QuerySpec::sql(sql))
            .await
            .expect("accepted");
        let q = QueryRef {
            id: "q1",
            collab: "hubtest",
            collab_id: "c1",
            member: "advertiser",
        };
        let progress = Progress::default();
        let run = Run {
            nodes: &self.nodes,
            ledger: &ledger(self, false),
            store: &Records {
                log: self.log.clone(),
            },
            deliver: deliver.map(|c| ("out", c as &dyn Deliverer)),
            progress: &progress,
            timeout,
        };
        self.hub.settle(q, prepared, run).await
    }
}

const LONG: std::time::Duration = std::time::Duration::from_secs(600);

/// The log without the node calls (their order is concurrent).
fn writes(s: &Setup) -> Vec<String> {
    logged(s)
        .into_iter()
        .filter(|l| !l.starts_with("execute "))
        .collect()
}

#[tokio::test]
async fn a_settled_query_is_running_then_audited_then_stored_and_never_counts_rows_of_a_fragment() {
    let s = setup(collab(3, false), collab(3, false)).await;
    assert_eq!(s.settle(BY_CATEGORY, None, LONG).await, Settled::Stored);
    let log = logged(&s);
    assert_eq!(log[0], "running q1");
    assert_eq!(
        writes(&s),
        vec![
            "running q1".to_string(),
            r#"audit hubtest fragments.ran {"query":"q1","fragments":0}"#.to_string(),
            // Only `trio` reaches k = 3.
            "stored q1 1 rows".to_string(),
        ]
    );
    assert_eq!(log.len(), 5, "{log:?}");
}

#[tokio::test]
async fn a_delivered_result_is_not_stored_and_a_mismatched_delivery_is_audited_and_stored() {
    let s = setup(collab(3, false), collab(3, false)).await;
    let faithful = Courier { faithful: true };
    assert_eq!(
        s.settle(BY_CATEGORY, Some(&faithful), LONG).await,
        Settled::Delivered
    );
    let w = writes(&s);
    assert_eq!(
        w.last().map(String::as_str),
        Some("delivered q1 1 rows: delivered to the node of 'advertiser' (parquet destination 'out'); the hub keeps no copy")
    );
    assert!(!w.iter().any(|l| l.starts_with("stored")), "{w:?}");

    let s = setup(collab(3, false), collab(3, false)).await;
    let lying = Courier { faithful: false };
    assert_eq!(
        s.settle(BY_CATEGORY, Some(&lying), LONG).await,
        Settled::Stored
    );
    let w = writes(&s);
    assert_eq!(
        w[w.len() - 2..],
        [
            format!(
                "audit hubtest {} {}",
                AuditKind::ResultDeliveryFailed.as_str(),
                r#"{"query":"q1","destination":"out","error":"the node received other bytes than were sent"}"#
            ),
            "stored q1 1 rows".to_string(),
        ]
    );
}

#[tokio::test]
async fn a_refusing_node_a_failing_node_and_a_silent_node_each_settle_once() {
    let hub = collab(3, false);
    let mut node = hub.config().clone();
    node.tables[0].dimensions.clear();
    let node = Collaboration::validate(node, "node.toml").expect("node's rules");
    let s = setup(hub, node).await;
    let sql = "SELECT c.segment, COUNT(DISTINCT o.email) AS n \
               FROM crm c JOIN orders o ON c.email = o.email GROUP BY c.segment";
    assert_eq!(s.settle(sql, None, LONG).await, Settled::Refused);
    assert_eq!(
        writes(&s),
        vec![
            "running q1".to_string(),
            "refused q1 by Some(\"publisher\"): FragmentNotPermitted".to_string()
        ]
    );

    let mut s = setup(collab(3, false), collab(3, false)).await;
    s.nodes.broken = Some("publisher");
    assert_eq!(s.settle(BY_CATEGORY, None, LONG).await, Settled::Failed);
    let w = writes(&s);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[1].starts_with("failed q1: ") && w[1].contains("the node of 'publisher' failed"),
        "{w:?}"
    );

    let mut s = setup(collab(3, false), collab(3, false)).await;
    s.nodes.silent = Some("publisher");
    let short = std::time::Duration::from_secs(1);
    assert_eq!(s.settle(BY_CATEGORY, None, short).await, Settled::Failed);
    let w = writes(&s);
    assert_eq!(
        w,
        vec![
            "running q1".to_string(),
            "failed q1: the query ran longer than 1 s (query_timeout_secs of the hub) and was stopped"
                .to_string()
        ]
    );
}

/// A cancel, before the run waits or while a node is silent, stops the run
/// and fails the query once as cancelled; the store sees no release.
#[tokio::test]
async fn a_cancelled_query_fails_as_cancelled_whenever_the_cancel_comes() {
    for early in [true, false] {
        let mut s = setup(collab(3, false), collab(3, false)).await;
        s.nodes.silent = Some("publisher");
        let prepared = s
            .hub
            .prepare("advertiser", &QuerySpec::sql(BY_CATEGORY))
            .await
            .expect("accepted");
        let progress = std::sync::Arc::new(Progress::default());
        if early {
            progress.cancel();
        } else {
            let p = progress.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                p.cancel();
            });
        }
        let run = Run {
            nodes: &s.nodes,
            ledger: &ledger(&s, false),
            store: &Records { log: s.log.clone() },
            deliver: None,
            progress: &progress,
            timeout: LONG,
        };
        let q = QueryRef {
            id: "q1",
            collab: "hubtest",
            collab_id: "c1",
            member: "advertiser",
        };
        assert_eq!(s.hub.settle(q, prepared, run).await, Settled::Failed);
        assert_eq!(
            writes(&s),
            vec![
                "running q1".to_string(),
                format!("failed q1: {}", airlock_hub::CANCELLED)
            ],
            "early: {early}"
        );
    }
}
