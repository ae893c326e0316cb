//! Sources read in place through the node's catalog, against a real
//! S3-compatible server on loopback (`.ci/s3.sh` starts moto's server and
//! sets `AIRLOCK_TEST_S3_ENDPOINT`; with `AIRLOCK_REQUIRE_S3=1` a missing
//! server fails the test instead of skipping it): the same released rows
//! as over local files, consent withdrawn at the source, no location or
//! credential on the wire or in a refusal, and every bad catalog entry.

use std::path::Path;
use std::sync::{Arc, Mutex};

mod common;
use common::rows;

use airlock_cli::cluster::{exit_code, Cluster, Tap};
use airlock_cli::data;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const KEY_ID: &str = "airlock";
const SECRET: &str = "airlock-test-secret-value";

fn store(endpoint: &str, bucket: &str) -> impl ObjectStore {
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_access_key_id(KEY_ID)
        .with_secret_access_key(SECRET)
        .build()
        .expect("client")
}

async fn upload(s: &impl ObjectStore, key: &str, file: &Path) {
    let bytes = std::fs::read(file).expect("read");
    s.put(&ObjectPath::from(key), PutPayload::from(bytes))
        .await
        .expect("put");
}

/// A run's own prefix, so runs sharing a server do not meet.
fn run_prefix() -> String {
    format!("run-{}", common::run_id())
}

fn s3_catalog(endpoint: &str, bucket: &str, prefix: &str, credentials: &str) -> String {
    format!(
        "[datasets.publisher_audience]\nkind = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}/audience.parquet\"\nformat = \"parquet\"\nendpoint = \"{endpoint}\"\nallow_http = true\ncredentials = {credentials}\n\n\
         [datasets.advertiser_purchases]\nkind = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}/purchases/\"\nformat = \"parquet\"\nendpoint = \"{endpoint}\"\nallow_http = true\ncredentials = {credentials}\n"
    )
}

const QUERIES: &[&str] = &[
    "SELECT a.segment, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment",
    "SELECT a.region, COUNT(DISTINCT p.email) AS buyers, SUM(p.amount_cents) AS revenue_cents FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.region",
    "SELECT category, COUNT(DISTINCT email) AS buyers, SUM(amount_cents) AS revenue_cents FROM purchases GROUP BY category",
];

async fn released(cluster: &Cluster) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for sql in QUERIES {
        let r = cluster
            .query("advertiser", sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut got = rows(&r.batches);
        got.sort();
        assert!(!got.is_empty(), "{sql}: nothing released");
        out.push(got);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_sources_release_what_local_files_release_and_keep_their_location_on_the_node() {
    let Some((endpoint, bucket)) = common::s3_server() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    data::write_demo(dir, 20_000, true).expect("demo");
    let collab = dir.join("collaboration.toml");
    let local = released(&Cluster::open(&collab, None).await.expect("open")).await;

    // The same files, in the bucket; the purchases as a prefix of parts.
    let s = store(&endpoint, &bucket);
    let prefix = run_prefix();
    upload(
        &s,
        &format!("{prefix}/audience.parquet"),
        &dir.join("audience.parquet"),
    )
    .await;
    upload(
        &s,
        &format!("{prefix}/purchases/part-0.parquet"),
        &dir.join("purchases.parquet"),
    )
    .await;
    std::fs::write(
        dir.join("aws.ini"),
        format!("[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"),
    )
    .expect("credentials");
    let good = s3_catalog(
        &endpoint,
        &bucket,
        &prefix,
        "{ file = { path = \"aws.ini\" } }",
    );
    std::fs::write(dir.join("catalog.toml"), &good).expect("catalog");
    // Local copies gone: the rows can only come from the store.
    std::fs::remove_file(dir.join("audience.parquet")).expect("rm");
    std::fs::remove_file(dir.join("purchases.parquet")).expect("rm");

    let tap: Tap = Arc::new(Mutex::new(Vec::new()));
    let cluster = Cluster::open(&collab, Some(tap.clone()))
        .await
        .expect("open over S3");
    assert_eq!(released(&cluster).await, local, "S3 and local files differ");
    // Nothing of where the data is, or of its credentials, is on the wire.
    let streams = tap.lock().expect("tap").clone();
    assert!(!streams.is_empty());
    for (member, bytes) in &streams {
        for secret in [
            bucket.as_str(),
            prefix.as_str(),
            endpoint.as_str(),
            SECRET,
            "aws.ini",
        ] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret:?} on the wire from {member}"
            );
        }
    }

    // Bad entries: each refusal names the dataset and the kind of problem,
    // and nothing of the location or the credentials.
    let unreachable = "http://127.0.0.1:9";
    let cases = [
        (
            good.replace(&format!("{prefix}/purchases/"), &format!("{prefix}/nothing-here/")),
            "dataset 'advertiser_purchases': (s3 source): nothing found at its location",
        ),
        (
            good.replace(&format!("{prefix}/audience.parquet"), &format!("{prefix}/gone.parquet")),
            "dataset 'publisher_audience': (s3 source): nothing found at its location",
        ),
        (
            s3_catalog(&endpoint, &bucket, &prefix, "{ variables = { access_key_id = \"AIRLOCK_UNSET_KEY_ID\", secret_access_key = \"AIRLOCK_UNSET_SECRET\" } }"),
            "dataset 'publisher_audience': (s3 source): its credentials are missing",
        ),
        (
            s3_catalog(&endpoint, &bucket, &prefix, "{ file = { path = \"no-such.ini\" } }"),
            "(s3 source): its credentials are missing",
        ),
        (
            good.replace("allow_http = true\n", ""),
            "(s3 source): its endpoint is http:// and allow_http is not set",
        ),
        (
            good.replace(&endpoint, unreachable),
            "(s3 source): the node cannot reach its location",
        ),
        (
            good.replacen("format = \"parquet\"", "format = \"csv\"", 1),
            "dataset 'publisher_audience': (s3 source): its data cannot be read as CSV with a header",
        ),
    ];
    for (text, want) in cases {
        assert_ne!(text, good, "{want}");
        std::fs::write(dir.join("catalog.toml"), &text).expect("write");
        let e = Cluster::open(&collab, None).await.err().expect("refused");
        let msg = e.to_string();
        assert!(msg.contains(want), "want {want:?} in {msg:?}");
        for secret in [
            bucket.as_str(),
            prefix.as_str(),
            "127.0.0.1",
            SECRET,
            "aws.ini",
            "no-such",
            "AIRLOCK_UNSET",
        ] {
            assert!(!msg.contains(secret), "{secret:?} in {msg:?}");
        }
        assert_eq!(exit_code(&e), 2, "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_withdrawn_in_the_bucket_holds_from_the_next_query() {
    let Some((endpoint, bucket)) = common::s3_server() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let s = store(&endpoint, &bucket);
    let prefix = run_prefix();
    let people = |withdrawn: usize| {
        let mut text = String::from("email,segment,consent\n");
        for i in 0..8 {
            text.push_str(&format!("p{i}@example.com,x,{}\n", i >= withdrawn));
        }
        text
    };
    let put = |text: String| {
        let s = &s;
        let key = format!("{prefix}/people/part-0.csv");
        async move {
            s.put(&ObjectPath::from(key), PutPayload::from(text.into_bytes()))
                .await
                .expect("put");
        }
    };
    put(people(0)).await;
    let orders: String = std::iter::once("email,category,amount\n".to_string())
        .chain((0..8).map(|i| format!("p{i}@example.com,books,{}\n", 100 + i)))
        .collect();
    std::fs::write(dir.join("orders.csv"), orders).expect("orders");
    std::fs::write(dir.join("k"), "11".repeat(32)).expect("secret");
    std::fs::write(
        dir.join("catalog.toml"),
        format!(
            "[datasets.pub_people]\nkind = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}/people/\"\nformat = \"csv\"\nendpoint = \"{endpoint}\"\nallow_http = true\ncredentials = {{ variables = {{ access_key_id = \"AIRLOCK_TEST_KEY\", secret_access_key = \"AIRLOCK_TEST_SECRET\" }} }}\n\n\
             [datasets.adv_orders]\nkind = \"files\"\npath = \"orders.csv\"\nformat = \"csv\"\n"
        ),
    )
    .expect("catalog");
    // Each test runs in its own process (nextest), so this is its own.
    std::env::set_var("AIRLOCK_TEST_KEY", KEY_ID);
    std::env::set_var("AIRLOCK_TEST_SECRET", SECRET);
    let config = r#"
[collaboration]
name = "consent"
secret_file = "k"
purposes = ["measurement"]

[[members]]
name = "pub"
abilities = ["provide"]

[[members]]
name = "adv"
abilities = ["query", "receive", "provide"]

[[datasets]]
name = "pub_people"
owner = "pub"
consent = { measurement = { column = "consent" } }

[[datasets]]
name = "adv_orders"
owner = "adv"

[[tables]]
alias = "people"
dataset = "pub_people"
identity = "email"
join = ["email"]
dimensions = ["segment"]
rule = { type = "aggregation", min_distinct_identities = 3 }

[[tables]]
alias = "orders"
dataset = "adv_orders"
identity = "email"
join = ["email"]
dimensions = ["category"]
measures = { amount = ["sum"] }
rule = { type = "aggregation", min_distinct_identities = 3 }
"#;
    let path = dir.join("c.toml");
    std::fs::write(&path, config).expect("write");
    let cluster = Cluster::open(&path, None).await.expect("open");
    let sql = "SELECT p.segment, COUNT(DISTINCT p.email) AS n, SUM(o.amount) AS s FROM people p JOIN orders o ON p.email = o.email GROUP BY p.segment";
    let before = rows(&cluster.query("adv", sql).await.expect("query").batches);
    assert_eq!(before, vec![format!("x | 8 | {}", (100..108).sum::<i64>())]);
    // Two people withdraw, in the bucket: the same open cluster counts
    // them no more.
    put(people(2)).await;
    let after = rows(&cluster.query("adv", sql).await.expect("query").batches);
    assert_eq!(after, vec![format!("x | 6 | {}", (102..108).sum::<i64>())]);
}
