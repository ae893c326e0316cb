//! `airlock interop aws` from the binary: an AWS rule and template imported
//! into the demo collaboration run there; bad documents write nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use airlock_cli::cluster::Cluster;
use airlock_cli::data;
use airlock_policy::QuerySpec;

fn airlock(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(args)
        .output()
        .expect("run airlock");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture(name: &str) -> PathBuf {
    Path::new(&manifest_dir()).join(format!("../interop/tests/aws/{name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_documents_import_into_a_collaboration_and_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    data::write_demo(dir, 100_000, false).expect("demo");
    let file = dir.join("collaboration.toml");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    // The advertiser's purchases under the AWS aggregation rule, as a
    // second configured table, and the AWS template.
    let block = dir.join("rule.toml");
    let (code, _, err) = airlock(&[
        "interop",
        "aws",
        "import",
        "rule",
        &s(&fixture("aggregation.json")),
        "--alias",
        "aws_purchases",
        "--dataset",
        "advertiser_purchases",
        "--out",
        &s(&block),
    ]);
    assert_eq!(code, 0, "{err}");
    let tblock = dir.join("template.toml");
    let (code, _, err) = airlock(&[
        "interop",
        "aws",
        "import",
        "template",
        &s(&fixture("template.json")),
        "--purpose",
        "measurement",
        "--out",
        &s(&tblock),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("may take only its default value"),
        "notes on stderr: {err}"
    );
    let text = std::fs::read_to_string(&file).expect("collab")
        + "\n"
        + &std::fs::read_to_string(&block).expect("block")
        + "\n"
        + &std::fs::read_to_string(&tblock)
            .expect("template")
            .replace("JOIN purchases p", "JOIN aws_purchases p");
    std::fs::write(&file, text).expect("write");
    for m in ["publisher", "advertiser"] {
        airlock_cli::templates::set_approval_in_file(&file, m, "buyers_by_segment", true)
            .await
            .expect("approve");
    }
    let cluster = Cluster::open(&file, None).await.expect("open");
    let got = cluster
        .query_spec(
            "advertiser",
            &QuerySpec::template("buyers_by_segment", Default::default()),
        )
        .await
        .expect("the imported template runs on the imported rule");
    assert!(got.num_rows() > 0);
    // The imported rule's function list holds: INITCAP is not in it.
    let refused = cluster
        .query(
            "advertiser",
            "SELECT INITCAP(p.category) AS c, COUNT(DISTINCT p.email) FROM aws_purchases p JOIN audience a ON a.email = p.email GROUP BY INITCAP(p.category)",
        )
        .await
        .expect_err("not an allowed function");
    assert!(
        refused.to_string().contains("unknown-function"),
        "{refused}"
    );
    // Exported again, the rule is the AWS document.
    let (code, out, err) = airlock(&[
        "interop",
        "aws",
        "export",
        "rule",
        "--collab",
        &s(&file),
        "--table",
        "aws_purchases",
    ]);
    assert_eq!(code, 0, "{err}");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("aggregation.json")).expect("read"))
            .expect("json");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("json"),
        want
    );

    // Bad documents: a clear error naming the path, exit 2, nothing written.
    for (doc, want) in [
        (
            "{\"v1\": {\"list\": {\"joinColumns\": [\"email\"], \"listCol",
            "EOF while parsing",
        ),
        (
            "{\"v1\": {\"list\": {\"joinColumns\": [\"email\"], \"listColumns\": [], \"x\": 1}}}",
            "v1.list.x: unknown field",
        ),
        (
            "{\"v1\": {\"list\": {\"joinColumns\": 3, \"listColumns\": []}}}",
            "v1.list.joinColumns: invalid type",
        ),
    ] {
        let bad = dir.join("bad.json");
        std::fs::write(&bad, doc).expect("write");
        let out = dir.join("out.toml");
        let (code, stdout, err) = airlock(&[
            "interop",
            "aws",
            "import",
            "rule",
            &s(&bad),
            "--alias",
            "x",
            "--dataset",
            "y",
            "--out",
            &s(&out),
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(want), "{want}: {err}");
        assert!(stdout.is_empty() && !out.exists(), "nothing written");
    }
    let huge = dir.join("huge.json");
    std::fs::write(&huge, vec![b' '; (1 << 20) + 1]).expect("write");
    let (code, _, err) = airlock(&[
        "interop",
        "aws",
        "import",
        "template",
        &s(&huge),
        "--purpose",
        "measurement",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("more than the 1048576 accepted"), "{err}");
}

/// Two members whose schemas and formatting differ: the publisher's
/// `EMAIL_ADDR` is mixed-case with spaces and its phones are written
/// `+44 20 ...`; the advertiser's are lower-case and `0044-20-...`. The
/// schema contract names the canonical keys and their normalisation; each
/// node normalises before pseudonymising, and the people match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_contract_matches_members_with_different_schemas_and_formatting() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut pubs = String::from("EMAIL_ADDR,PHONE_NO,SEG\n");
    let mut advs = String::from("email,phone,category,amount\n");
    for i in 0..12 {
        pubs.push_str(&format!(
            "\"  Person{i}@Example.COM \",+44 20 7946 {i:04},x\n"
        ));
        advs.push_str(&format!(
            "person{i}@example.com,0044-20-7946-{i:04},books,{}\n",
            100 + i
        ));
    }
    std::fs::write(dir.join("pub.csv"), pubs).expect("write");
    std::fs::write(dir.join("adv.csv"), advs).expect("write");
    use airlock_node::catalog::{CatalogFile, DatasetFormat::Csv};
    CatalogFile::files(&[
        ("pub_people", "pub.csv", Csv),
        ("adv_orders", "adv.csv", Csv),
    ])
    .write_to(dir)
    .expect("catalog");
    std::fs::write(dir.join("k"), "22".repeat(32) + "\n").expect("secret");
    let schema = r#"
[schema.keys.email]
type = "string"
normalize = ["trim", "lowercase"]

[schema.keys.phone]
type = "string"
normalize = ["e164"]

[schema.dimensions.segment]
type = "string"
normalize = ["trim", "uppercase"]
"#;
    let config = |with_schema: bool| {
        format!(
            r#"
[collaboration]
name = "contracts"
secret_file = "k"
{}
[[members]]
name = "pub"
abilities = ["provide"]

[[members]]
name = "adv"
abilities = ["query", "receive", "provide"]

[[datasets]]
name = "pub_people"
owner = "pub"

[[datasets]]
name = "adv_orders"
owner = "adv"

[[tables]]
alias = "people"
dataset = "pub_people"
identity = "email"
join = ["email", "phone"]
dimensions = ["segment"]
source_columns = {{ email = "EMAIL_ADDR", phone = "PHONE_NO", segment = "SEG" }}
rule = {{ type = "aggregation", min_distinct_identities = 10 }}

[[tables]]
alias = "orders"
dataset = "adv_orders"
identity = "email"
join = ["email", "phone"]
dimensions = ["category"]
measures = {{ amount = ["sum"] }}
rule = {{ type = "aggregation", min_distinct_identities = 10 }}
{}"#,
            "",
            if with_schema { schema } else { "" }
        )
    };
    let file = dir.join("collaboration.toml");
    let overlap = |on: &'static str| {
        let file = file.clone();
        async move {
            let cluster = Cluster::open(&file, None).await.expect("open");
            let sql = format!(
                "SELECT p.segment, COUNT(DISTINCT p.email) AS people, SUM(o.amount) AS spend FROM people p JOIN orders o ON p.{on} = o.{on} GROUP BY p.segment"
            );
            let released = cluster.query("adv", &sql).await.expect("query");
            common::rows(&released.batches)
        }
    };
    std::fs::write(&file, config(true)).expect("write");
    let want = vec![format!("X | 12 | {}", (100..112).sum::<i64>())];
    assert_eq!(
        overlap("email").await,
        want,
        "emails match after trim and lowercase"
    );
    assert_eq!(overlap("phone").await, want, "phones match in E.164");
    // Without the contract the same people do not match: nothing reaches k.
    std::fs::write(&file, config(false)).expect("write");
    assert!(overlap("email").await.is_empty());
    assert!(overlap("phone").await.is_empty());
    // A bad contract is a configuration error naming what is wrong.
    let bad = config(true).replace(
        "[schema.keys.phone]\ntype = \"string\"",
        "[schema.keys.phone]\ntype = \"int\"",
    );
    std::fs::write(&file, &bad).expect("write");
    let Err(e) = Cluster::open(&file, None).await else {
        panic!("bad contract accepted");
    };
    assert!(
        e.to_string()
            .contains("schema: 'phone': normalize applies to strings only"),
        "{e}"
    );
    let bad = config(true).replace("segment = \"SEG\"", "segment = \"NOPE\"");
    std::fs::write(&file, &bad).expect("write");
    let Err(e) = Cluster::open(&file, None).await else {
        panic!("missing column accepted");
    };
    assert!(
        e.to_string()
            .contains("column 'segment': is read from 'NOPE' (source_columns), which is not a column of dataset 'pub_people'"),
        "{e}"
    );
}

/// This crate's directory in the checkout being tested: cargo and nextest
/// set it when they run the test (a build cache shared between clones
/// holds the path of the clone that compiled it, which may be gone).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
