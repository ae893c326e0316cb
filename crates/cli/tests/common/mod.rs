//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{ParquetReadOptions, SessionContext};

/// Plain DataFusion over the demo files: `audience_all` is every audience
/// row, `audience` only the people who consented (as the collaboration
/// declares for its purpose), `purchases` every order.
pub async fn plain_ctx(dir: &Path) -> SessionContext {
    let ctx = SessionContext::new();
    for (name, file) in [
        ("audience_all", "audience.parquet"),
        ("purchases", "purchases.parquet"),
    ] {
        ctx.register_parquet(
            name,
            dir.join(file).to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await
        .expect("register");
    }
    ctx.sql("CREATE VIEW audience AS SELECT * FROM audience_all WHERE consent")
        .await
        .expect("consented view");
    ctx
}

/// Rows as sorted strings; floats rounded so summation order does not matter.
pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let opts = FormatOptions::default();
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(i) {
                        "NULL".to_string()
                    } else if c.data_type() == &DataType::Float64 {
                        let v = c
                            .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                            .value(i);
                        format!("{v:.6}")
                    } else {
                        ArrayFormatter::try_new(c.as_ref(), &opts)
                            .expect("formatter")
                            .value(i)
                            .to_string()
                    }
                })
                .collect();
            out.push(cells.join(" | "));
        }
    }
    out.sort();
    out
}

pub fn find_emails(bytes: &[u8], emails: &HashSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for (pos, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'@') {
        for start in pos.saturating_sub(48)..pos {
            for end in pos + 1..(pos + 24).min(bytes.len()) {
                if let Ok(s) = std::str::from_utf8(&bytes[start..=end]) {
                    if emails.contains(s) {
                        found.push(s.to_string());
                    }
                }
            }
        }
    }
    found
}

/// Every email in the demo data at `dir`.
pub async fn demo_emails(dir: &Path) -> HashSet<String> {
    let ctx = plain_ctx(dir).await;
    let batches = ctx
        .sql("SELECT email FROM audience_all UNION SELECT email FROM purchases")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("emails");
    let mut out = HashSet::new();
    for b in &batches {
        let col = b.column(0);
        let f = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default()).expect("fmt");
        for i in 0..col.len() {
            out.insert(f.value(i).to_string());
        }
    }
    out
}

/// The S3-compatible server `.ci/s3.sh` starts, as (endpoint, bucket);
/// `None` (with a note) without one, a failure when `AIRLOCK_REQUIRE_S3`
/// is set.
pub fn s3_server() -> Option<(String, String)> {
    match std::env::var("AIRLOCK_TEST_S3_ENDPOINT") {
        Ok(e) => Some((
            e,
            std::env::var("AIRLOCK_TEST_S3_BUCKET").unwrap_or_else(|_| "airlock-test".into()),
        )),
        Err(_) if std::env::var("AIRLOCK_REQUIRE_S3").is_ok() => {
            panic!("AIRLOCK_REQUIRE_S3 is set but AIRLOCK_TEST_S3_ENDPOINT is not (run .ci/s3.sh)")
        }
        Err(_) => {
            eprintln!("no S3-compatible server (AIRLOCK_TEST_S3_ENDPOINT): skipped");
            None
        }
    }
}

/// A run's own random suffix, so runs sharing a server do not meet.
pub fn run_id() -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).expect("random");
    hex::encode(b)
}

/// Each client approves the current version of `name` if its approval is
/// asked and not given yet.
pub async fn approve_pending(clients: &[&airlock_service::client::HubClient], name: &str) {
    for c in clients {
        let v = c.review(name).await.expect("review");
        if v.asked && v.mine == airlock_service::api::Decision::Waiting {
            let done = c.approve(name, Some(&v.sha256)).await.expect("approve");
            assert_eq!(done.version, v.version);
        }
    }
}

/// A collaboration of the publisher alone over its demo audience.
pub fn solo_toml(name: &str) -> String {
    format!(
        r#"[collaboration]
name = "{name}"
secret_file = "unused.key"

[[members]]
name = "publisher"
abilities = ["provide", "query", "receive"]

[[datasets]]
name = "publisher_audience"
owner = "publisher"

[[tables]]
alias = "audience"
dataset = "publisher_audience"
identity = "email"
join = ["email"]
dimensions = ["segment", "region"]
rule = {{ type = "aggregation", min_distinct_identities = 50 }}
"#
    )
}

/// Starts real hub and node processes (`airlock up`) over demo data of
/// `rows` audience rows written into `dir`.
pub async fn up_demo(dir: &Path, rows: usize) -> airlock_cli::up::Running {
    airlock_cli::data::write_demo(dir, rows, true).expect("demo data");
    airlock_cli::up::start(&airlock_cli::up::UpOptions {
        dir: dir.to_path_buf(),
        rows,
        wire_tap: None,
        bin: std::path::PathBuf::from(env!("CARGO_BIN_EXE_airlock")),
        results_postgres: None,
        results_s3: None,
        hub_limits: Default::default(),
        node_limits: Default::default(),
    })
    .await
    .expect("airlock up")
}

/// The template `overlap_in_region` of the client tests (a region chosen
/// from `north`, `south`).
pub const OVERLAP_IN_REGION: &str = r#"
[[templates]]
name = "overlap_in_region"
purpose = "measurement"
sql = "SELECT a.segment, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email WHERE a.region = $region GROUP BY a.segment"
params = { region = { type = "string", allowed = ["north", "south"] } }
"#;

/// The rooms the client tests (Flight SQL, the console) use, beside the
/// demo: [`OVERLAP_IN_REGION`] added to `demo` and approved by each of
/// `template_approvers` (each new version approved by both owners);
/// `demo_dp`, the demo under differential privacy; and `solo`, the
/// publisher's alone.
pub async fn client_rooms(
    publisher: &airlock_service::client::HubClient,
    advertiser: &airlock_service::client::HubClient,
    template_approvers: &[&airlock_service::client::HubClient],
) {
    let show: airlock_service::api::CollaborationView = advertiser
        .call(
            airlock_service::client::Method::GET,
            "/v1/collaborations/demo",
            None::<&()>,
        )
        .await
        .expect("show");
    advertiser
        .apply("demo", &(show.toml + OVERLAP_IN_REGION))
        .await
        .expect("apply");
    approve_pending(&[publisher, advertiser], "demo").await;
    for c in template_approvers {
        c.approval("demo", "overlap_in_region", true)
            .await
            .expect("template approval");
        approve_pending(&[publisher, advertiser], "demo").await;
    }
    let dp = airlock_cli::data::collaboration_toml_dp().replacen(
        "name = \"demo\"",
        "name = \"demo_dp\"",
        1,
    );
    let v = publisher.create(&dp).await.expect("create dp");
    advertiser
        .approve("demo_dp", Some(&v.sha256))
        .await
        .expect("approve dp");
    publisher.create(&solo_toml("solo")).await.expect("solo");
}
