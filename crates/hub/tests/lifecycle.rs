//! The hub's control plane alone, without sockets: real in-process nodes
//! behind a `NodeClient` double that records what reaches them, and a
//! ledger double that records (or refuses) debits. Each query is checked
//! once ([`Hub::prepare`]), then run ([`Hub::run`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use airlock_guard::dp::DpCost;
use airlock_hub::{Hub, HubError, Ledger, NodeClient, NodeFailure};
use airlock_node::{Node, NodeError};
use airlock_policy::{Collaboration, Control, QuerySpec, Refusal};
use airlock_protocol::wire::Partitions;
use airlock_protocol::{Fragment, PsiRequest, PsiResponse};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use futures::future::BoxFuture;

const COLLAB: &str = r#"
[collaboration]
name = "hubtest"
secret_file = "k"

[privacy]
epsilon = 10.0

[[members]]
name = "publisher"
abilities = ["provide"]

[[members]]
name = "advertiser"
abilities = ["query", "receive", "provide"]

[[datasets]]
name = "crm"
owner = "publisher"
path = "crm.csv"
format = "csv"

[[datasets]]
name = "shop"
owner = "advertiser"
path = "shop.csv"
format = "csv"

[[tables]]
alias = "crm"
dataset = "crm"
identity = "email"
join = ["email"]
dimensions = ["segment"]
rule = { type = "aggregation", min_distinct_identities = CRM_K }

[[tables]]
alias = "orders"
dataset = "shop"
identity = "email"
join = ["email"]
dimensions = ["category"]
measures = { amount = ["sum", "count"] }
rule = { type = "aggregation", min_distinct_identities = 3 ORDERS_DP }
"#;

const BY_CATEGORY: &str = "SELECT o.category, COUNT(DISTINCT o.email) AS n \
     FROM crm c JOIN orders o ON c.email = o.email GROUP BY o.category";

/// Category `trio` has three people in both tables, `pair` two, `solo` one.
fn write_data(dir: &Path) {
    let mut crm = String::from("email,segment\n");
    let mut shop = String::from("email,category,amount\n");
    for (who, category) in [
        ("t1", "trio"),
        ("t2", "trio"),
        ("t3", "trio"),
        ("p1", "pair"),
        ("p2", "pair"),
        ("s1", "solo"),
    ] {
        crm.push_str(&format!("{who}@example.com,sports\n"));
        shop.push_str(&format!("{who}@example.com,{category},10\n"));
    }
    std::fs::write(dir.join("crm.csv"), crm).expect("crm");
    std::fs::write(dir.join("shop.csv"), shop).expect("shop");
    std::fs::write(dir.join("k"), "ab".repeat(32)).expect("secret");
}

fn collab(crm_k: u64, orders_dp: bool) -> Collaboration {
    let dp = if orders_dp {
        ", differential_privacy = { epsilon = 1.0, max_rows_per_identity = 1, max_groups_per_identity = 1, bounds = { amount = [0, 100] }, public_keys = { category = [\"trio\", \"pair\", \"solo\"] } }"
    } else {
        ""
    };
    let text = COLLAB
        .replace("CRM_K", &crm_k.to_string())
        .replace(" ORDERS_DP", dp);
    Collaboration::from_toml(&text, "hubtest.toml").expect("collaboration")
}

/// The members' nodes, reached by direct calls through the same bytes a
/// remote link carries; every call is recorded.
struct Nodes {
    nodes: HashMap<String, Node>,
    log: Arc<Mutex<Vec<String>>>,
    broken: Option<&'static str>,
}

impl NodeClient for Nodes {
    fn execute<'a>(
        &'a self,
        member: &'a str,
        fragment: &'a Fragment,
    ) -> BoxFuture<'a, Result<(SchemaRef, Partitions), NodeFailure>> {
        Box::pin(async move {
            self.log
                .lock()
                .expect("log")
                .push(format!("execute {member}"));
            if self.broken == Some(member) {
                return Err(NodeFailure::Failed("its disk is unreadable".into()));
            }
            let node = self.nodes.get(member).expect("a node per provider");
            let json = serde_json::to_vec(fragment).expect("encode");
            match node.execute(&json).await {
                Ok(bytes) => airlock_protocol::wire::decode_partitions(bytes)
                    .map_err(|_| NodeFailure::Failed("unreadable".into())),
                Err(NodeError::Refused(r)) => Err(NodeFailure::Refused(r)),
                Err(e) => Err(NodeFailure::Failed(e.to_string())),
            }
        })
    }

    fn psi<'a>(
        &'a self,
        _member: &'a str,
        _request: &'a PsiRequest,
    ) -> BoxFuture<'a, Result<PsiResponse, NodeFailure>> {
        Box::pin(async { Err(NodeFailure::Failed("not a crypto-mode test".into())) })
    }
}

/// A ledger that records each debit in the shared log, and refuses them
/// all when `refuse` is set.
struct Debits {
    log: Arc<Mutex<Vec<String>>>,
    refuse: bool,
}

impl Ledger for Debits {
    fn debit<'a>(&'a self, member: &'a str, cost: DpCost) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(async move {
            self.log
                .lock()
                .expect("log")
                .push(format!("debit {member} {}", cost.epsilon));
            if self.refuse {
                return Err(HubError::Refused {
                    refusal: Refusal::new(Control::PrivacyBudget, "the budget is spent"),
                    node: None,
                });
            }
            Ok(())
        })
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    hub: Hub,
    nodes: Nodes,
    log: Arc<Mutex<Vec<String>>>,
}

/// A hub over `hub_collab`; each node opens `node_collab` (its own copy of
/// the rules, which may be stricter than what the hub was told).
async fn setup(hub_collab: Collaboration, node_collab: Collaboration) -> Setup {
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
            .expect("node");
        nodes.insert(member.to_string(), node);
    }
    let hub = Hub::new(hub_collab, &schemas).expect("hub");
    let log = Arc::new(Mutex::new(Vec::new()));
    Setup {
        _tmp: tmp,
        hub,
        nodes: Nodes {
            nodes,
            log: log.clone(),
            broken: None,
        },
        log,
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
        .run(prepared, &s.nodes, &ledger(&s, false))
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
        match s
            .hub
            .query_spec(
                "advertiser",
                &QuerySpec::sql(sql),
                &s.nodes,
                &ledger(&s, false),
            )
            .await
        {
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
    match s
        .hub
        .query_spec(
            "advertiser",
            &QuerySpec::sql(sql),
            &s.nodes,
            &ledger(&s, false),
        )
        .await
    {
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
    match s
        .hub
        .query_spec(
            "advertiser",
            &QuerySpec::sql(BY_CATEGORY),
            &s.nodes,
            &ledger(&s, false),
        )
        .await
    {
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
        .run(prepared, &s.nodes, &ledger(&s, false))
        .await
        .expect("released");
    // Every public key is released (noisy), whatever the data.
    assert_eq!(released.num_rows(), 3);
    assert_eq!(logged(&s), vec!["debit advertiser 1", "execute advertiser"]);

    let s = setup(collab(3, true), collab(3, true)).await;
    match s
        .hub
        .query_spec(
            "advertiser",
            &QuerySpec::sql(sql),
            &s.nodes,
            &ledger(&s, true),
        )
        .await
    {
        Err(HubError::Refused { refusal, .. }) => {
            assert_eq!(refusal.control, Control::PrivacyBudget)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(logged(&s), vec!["debit advertiser 1"]);
}
