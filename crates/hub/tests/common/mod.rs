//! The collaboration and data the hub's tests share: two members, one
//! table each, categories with three, two and one people in both tables.

#![allow(dead_code)] // each test file uses part of it

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use airlock_guard::dp::DpCost;
use airlock_hub::{HubError, Ledger, NodeClient, NodeFailure};
use airlock_node::{Node, NodeError};
use airlock_policy::{Collaboration, Control, Refusal};
use airlock_protocol::wire::Partitions;
use airlock_protocol::{Fragment, PsiRequest, PsiResponse};
use datafusion::arrow::datatypes::SchemaRef;
use futures::future::BoxFuture;

pub const COLLAB: &str = r#"
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

[[datasets]]
name = "shop"
owner = "advertiser"

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

/// The query id the tests run their queries as.
pub const QUERY: &str = "0123456789abcdef0123456789abcdef";

pub const BY_CATEGORY: &str = "SELECT o.category, COUNT(DISTINCT o.email) AS n \
     FROM crm c JOIN orders o ON c.email = o.email GROUP BY o.category";

/// Category `trio` has three people in both tables, `pair` two, `solo` one.
pub fn write_data(dir: &Path) {
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
    std::fs::write(
        dir.join("catalog.toml"),
        "[datasets.crm]\nkind = \"files\"\npath = \"crm.csv\"\nformat = \"csv\"\n\n\
         [datasets.shop]\nkind = \"files\"\npath = \"shop.csv\"\nformat = \"csv\"\n",
    )
    .expect("catalog");
}

/// The orders table's DP rule in [`collab`].
const ORDERS_DP: &str = ", differential_privacy = { epsilon = 1.0, max_rows_per_identity = 1, max_groups_per_identity = 1, bounds = { amount = [0, 100] }, public_keys = { category = [\"trio\", \"pair\", \"solo\"] } }";

/// [`collab`] with both tables under differential privacy (epsilon 1 per
/// query, k 3).
pub fn collab_dp_both() -> Collaboration {
    let text = COLLAB
        .replace(
            "CRM_K",
            "3, differential_privacy = { epsilon = 1.0, max_rows_per_identity = 1, max_groups_per_identity = 1, public_keys = { segment = [\"sports\"] } }",
        )
        .replace(" ORDERS_DP", ORDERS_DP);
    Collaboration::from_toml(&text, "hubtest.toml").expect("collaboration")
}

pub fn collab(crm_k: u64, orders_dp: bool) -> Collaboration {
    let dp = if orders_dp { ORDERS_DP } else { "" };
    let text = COLLAB
        .replace("CRM_K", &crm_k.to_string())
        .replace(" ORDERS_DP", dp);
    Collaboration::from_toml(&text, "hubtest.toml").expect("collaboration")
}

/// The members' nodes, reached by direct calls through the same bytes a
/// remote link carries; every call is recorded.
pub struct Nodes {
    pub nodes: HashMap<String, Node>,
    pub log: Arc<Mutex<Vec<String>>>,
    pub broken: Option<&'static str>,
    /// A node that never answers.
    pub silent: Option<&'static str>,
}

impl Nodes {
    /// `nodes` reached directly, recording each call in `log`; none broken
    /// or silent.
    pub fn new(nodes: HashMap<String, Node>, log: Arc<Mutex<Vec<String>>>) -> Nodes {
        Nodes {
            nodes,
            log,
            broken: None,
            silent: None,
        }
    }
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
            if self.silent == Some(member) {
                std::future::pending::<()>().await;
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
pub struct Debits {
    pub log: Arc<Mutex<Vec<String>>>,
    pub refuse: bool,
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

/// A node's own ledger for the tests: `epsilon` to spend, each debit
/// recorded in the shared log (as `node <member> debit <analyst> <epsilon>`,
/// or `refuse` instead of `debit` once it does not fit).
pub struct NodeBudget {
    pub member: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub left: Mutex<f64>,
}

impl airlock_node::Ledger for NodeBudget {
    fn debit<'a>(
        &'a self,
        analyst: &'a str,
        _query: &'a str,
        _table: &'a str,
        cost: DpCost,
    ) -> BoxFuture<'a, Result<(), airlock_node::DebitError>> {
        Box::pin(async move {
            let mut left = self.left.lock().expect("budget");
            let fits = *left + 1e-12 >= cost.epsilon;
            self.log.lock().expect("log").push(format!(
                "node {} {} {analyst} {}",
                self.member,
                if fits { "debit" } else { "refuse" },
                cost.epsilon
            ));
            if !fits {
                return Err(airlock_node::DebitError::Spent(format!(
                    "the query needs epsilon {} and {:.3} is left",
                    cost.epsilon, *left
                )));
            }
            *left -= cost.epsilon;
            Ok(())
        })
    }
}
