//! The collaboration and data the hub's tests share: two members, one
//! table each, categories with three, two and one people in both tables.

#![allow(dead_code)] // each test file uses part of it

use std::path::Path;

use airlock_policy::Collaboration;

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

pub fn collab(crm_k: u64, orders_dp: bool) -> Collaboration {
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
