//! Each source through hub and node processes (`airlock up`, Arrow Flight
//! over mutual TLS, REST): the demo's data put in place by `airlock demo
//! --source`'s own code releases what local files release; consent
//! withdrawn at the source disappears from the next query with no restart;
//! and no byte between the hub and the nodes, no file of the hub and no
//! audit entry holds a raw email, a location or a credential.
//!
//! S3 is the server `.ci/s3.sh` starts (`AIRLOCK_TEST_S3_ENDPOINT`),
//! PostgreSQL the one `.ci/postgres.sh` starts (`AIRLOCK_TEST_POSTGRES_URL`;
//! each test makes its own database there); with `AIRLOCK_REQUIRE_S3` or
//! `AIRLOCK_REQUIRE_POSTGRES` set a missing server fails the test instead
//! of skipping it. The Delta tests need the `delta` feature.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

mod common;
use common::{demo_emails, find_emails, rows};

use airlock_cli::cluster::Cluster;
use airlock_cli::data;
use airlock_cli::place::{self, Bucket, DemoSource};
use airlock_cli::remote;
use airlock_cli::up::{self, UpOptions};
use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};

const QUERIES: &[&str] = &[
    "SELECT a.segment, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment",
    "SELECT a.region, COUNT(DISTINCT p.email) AS buyers, SUM(p.amount_cents) AS revenue_cents FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.region",
    "SELECT category, COUNT(DISTINCT email) AS buyers, SUM(amount_cents) AS revenue_cents FROM purchases GROUP BY category",
    "SELECT a.age_band, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email WHERE a.age_band IN ('25-34', '35-44') AND p.day >= DATE '2025-01-01' GROUP BY a.age_band",
];

const KEY_ID: &str = "airlock";
const SECRET: &str = "airlock-test-secret-value";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_airlock"))
}

/// The S3 credentials the nodes read from the environment they inherit
/// (each test runs in its own process under nextest).
fn s3_environment() {
    std::env::set_var("AWS_ACCESS_KEY_ID", KEY_ID);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
}

/// A database of its own in the test PostgreSQL, as a URL.
async fn postgres() -> Option<String> {
    use sqlx::Connection;
    let base = match std::env::var("AIRLOCK_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
        _ if std::env::var("AIRLOCK_REQUIRE_POSTGRES").is_ok() => {
            panic!("AIRLOCK_REQUIRE_POSTGRES is set but AIRLOCK_TEST_POSTGRES_URL is not")
        }
        _ => {
            eprintln!("no PostgreSQL (AIRLOCK_TEST_POSTGRES_URL): skipped");
            return None;
        }
    };
    let name = format!("airlock_src_{}", common::run_id());
    let mut admin = sqlx::PgConnection::connect(&base).await.expect("connect");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base.as_str(), String::new()),
    };
    let (server, _) = head.rsplit_once('/').expect("URL has a database");
    Some(format!("{server}/{name}{query}"))
}

/// The audience with consent withdrawn for everyone in `segment`.
fn withdrawn(batches: &[RecordBatch], segment: &str) -> Vec<RecordBatch> {
    batches
        .iter()
        .map(|b| {
            let schema = b.schema();
            let seg = b.column(schema.index_of("segment").expect("segment"));
            let seg = datafusion::arrow::compute::cast(
                seg,
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .expect("cast");
            let seg = seg.as_string::<i32>();
            let ci = schema.index_of("consent").expect("consent");
            let consent = b.column(ci).as_boolean();
            let new: BooleanArray = (0..b.num_rows())
                .map(|i| Some(consent.value(i) && seg.value(i) != segment))
                .collect();
            let mut columns = b.columns().to_vec();
            columns[ci] = Arc::new(new);
            RecordBatch::try_new(schema.clone(), columns).expect("batch")
        })
        .collect()
}

fn parquet_bytes(batches: &[RecordBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w =
        datafusion::parquet::arrow::ArrowWriter::try_new(&mut out, batches[0].schema(), None)
            .expect("writer");
    for b in batches {
        w.write(b).expect("write");
    }
    w.close().expect("close");
    out
}

/// Puts `audience` in place of the publisher's dataset in `source`.
async fn replace_audience(
    dir: &Path,
    source: &DemoSource,
    audience: Vec<RecordBatch>,
    segment: &str,
) {
    match source {
        DemoSource::Files => unreachable!("the file demo is the reference"),
        DemoSource::S3(b) => {
            use object_store::{ObjectStoreExt, PutPayload};
            let store = object_store::aws::AmazonS3Builder::new()
                .with_endpoint(&b.endpoint)
                .with_bucket_name(&b.bucket)
                .with_region("us-east-1")
                .with_allow_http(true)
                .with_access_key_id(KEY_ID)
                .with_secret_access_key(SECRET)
                .build()
                .expect("client");
            store
                .put(
                    &object_store::path::Path::from(format!(
                        "{}/audience/part-0.parquet",
                        b.prefix
                    )),
                    PutPayload::from(parquet_bytes(&audience)),
                )
                .await
                .expect("put");
        }
        DemoSource::Delta(_) => {
            let file: airlock_node::catalog::CatalogFile = toml::from_str(
                &std::fs::read_to_string(dir.join("catalog.toml")).expect("catalog"),
            )
            .expect("catalog toml");
            let location = &file.datasets["publisher_audience"];
            let catalog = airlock_node::catalog::Catalog::new(Default::default(), dir, dir);
            airlock_node::sources::write_delta(location, &catalog, audience)
                .await
                .expect("a new version");
        }
        DemoSource::Postgres(url) => {
            // In place, as an owner's own system would withdraw it.
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query("UPDATE public.audience SET consent = false WHERE segment = $1")
                .bind(segment)
                .execute(&mut conn)
                .await
                .expect("withdraw");
        }
    }
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The demo in `source` through a hub and node processes.
async fn through_processes(source: DemoSource, secrets: &[&str]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let tap = tmp.path().join("wire.tap");
    data::write_demo(&dir, 20_000, true).expect("demo");
    let collab = dir.join("collaboration.toml");
    let local = Cluster::open(&collab, None).await.expect("open");
    let mut reference = Vec::new();
    for sql in QUERIES {
        let r = local.query("advertiser", sql).await.expect("files");
        assert!(r.batches.iter().any(|b| b.num_rows() > 0), "{sql}");
        reference.push(rows(&r.batches));
    }
    drop(local);
    let emails = demo_emails(&dir).await;
    let audience = place::read_parquet(&dir.join("audience.parquet"))
        .await
        .expect("audience");
    place::place_demo(&dir, &source).await.expect("placed");

    let running = up::start(&UpOptions {
        dir: dir.clone(),
        rows: 20_000,
        wire_tap: Some(tap.clone()),
        bin: bin(),
        results_postgres: None,
        results_s3: None,
        hub_limits: Default::default(),
        node_limits: Default::default(),
    })
    .await
    .expect("airlock up");
    let analyst = running.client(&running.info.analyst).expect("client");
    for (sql, want) in QUERIES.iter().zip(&reference) {
        let got = remote::query(&analyst, "demo", sql)
            .await
            .unwrap_or_else(|e| panic!("{} through up: {sql}: {e}", source.kind()));
        assert_eq!(&rows(&got.batches), want, "{}: {sql}", source.kind());
    }

    // Everyone in one released segment withdraws at the source: the next
    // query no longer counts them, and the other segments stay as they were.
    let first = &reference[0];
    let segment = first[0].split(" | ").next().expect("segment").to_string();
    replace_audience(&dir, &source, withdrawn(&audience, &segment), &segment).await;
    let after = remote::query(&analyst, "demo", QUERIES[0])
        .await
        .expect("after withdrawal");
    let want: Vec<String> = first
        .iter()
        .filter(|r| !r.starts_with(&format!("{segment} | ")))
        .cloned()
        .collect();
    assert_eq!(rows(&after.batches), want, "{}: withdrawn", source.kind());

    // Nothing of the data's place or its raw identifiers left the nodes.
    // The data directory (its cluster's own directory, `DIR-cluster`,
    // shares the prefix and is the hub's to name).
    let dir_text = format!("{}/", dir.to_string_lossy());
    let mut secrets = secrets.to_vec();
    secrets.push(&dir_text);
    let wire = std::fs::read(&tap).expect("tap");
    assert!(wire.len() > 10_000, "the tap holds the traffic");
    let leaked = find_emails(&wire, &emails);
    assert!(
        leaked.is_empty(),
        "raw emails on the wire: {:?}",
        &leaked[..leaked.len().min(3)]
    );
    for s in &secrets {
        assert!(!holds(&wire, s), "{s:?} on the wire");
    }
    let hub_dir = up::cluster_dir(&dir).join("hub");
    for (path, bytes) in files_under(&hub_dir) {
        for s in &secrets {
            assert!(!holds(&bytes, s), "{s:?} in the hub's {}", path.display());
        }
    }
    let db = airlock_store::Store::open(&format!("sqlite:{}", hub_dir.join("hub.db").display()))
        .await
        .expect("hub db");
    let chain = db.audit("demo").await.expect("audit");
    assert!(chain.len() > QUERIES.len());
    for e in &chain {
        for s in &secrets {
            assert!(!e.payload.contains(s), "{s:?} in audit entry {}", e.kind);
        }
    }
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_through_hub_and_node_processes() {
    let Some((endpoint, bucket)) = common::s3_server() else {
        return;
    };
    s3_environment();
    let prefix = format!("up-{}", common::run_id());
    let source = DemoSource::S3(Bucket {
        endpoint: endpoint.clone(),
        bucket: bucket.clone(),
        prefix: prefix.clone(),
    });
    through_processes(source, &[&endpoint, &bucket, &prefix, SECRET, "s3://"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tables_through_hub_and_node_processes() {
    let Some(url) = postgres().await else {
        return;
    };
    let db = url.rsplit('/').next().expect("db").to_string();
    through_processes(
        DemoSource::Postgres(url.clone()),
        &[&url, &db, "postgres://", "postgres.url", "public.audience"],
    )
    .await;
}

#[cfg(feature = "delta")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_tables_through_hub_and_node_processes() {
    through_processes(DemoSource::Delta(None), &["audience_delta", "_delta_log"]).await;
}

#[cfg(feature = "delta")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_tables_in_a_bucket_through_hub_and_node_processes() {
    let Some((endpoint, bucket)) = common::s3_server() else {
        return;
    };
    s3_environment();
    let prefix = format!("up-delta-{}", common::run_id());
    let source = DemoSource::Delta(Some(Bucket {
        endpoint: endpoint.clone(),
        bucket: bucket.clone(),
        prefix: prefix.clone(),
    }));
    through_processes(source, &[&endpoint, &bucket, &prefix, SECRET, "_delta_log"]).await;
}

/// `airlock demo --distributed --source ...` from the binary: the same
/// two releases and three refusals as with files.
fn demo_distributed(extra: &[&str]) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin())
        .args(["demo", "--distributed", "--rows", "20000"])
        .args(extra)
        .arg("--dir")
        .arg(tmp.path().join("d"))
        .env_remove("AIRLOCK_HUB")
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("released in").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("-> refused [").count(), 3, "{stdout}");
    stdout
}

/// The released tables of a demo's output (timings left out).
fn released_tables(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('│'))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distributed_demo_runs_on_every_source_from_the_binary() {
    let files = demo_distributed(&[]);
    let want = released_tables(&files);
    assert!(!want.is_empty(), "{files}");
    if let Some((endpoint, bucket)) = common::s3_server() {
        let out = demo_distributed(&[
            "--source",
            "s3",
            "--endpoint",
            &endpoint,
            "--bucket",
            &bucket,
        ]);
        assert!(out.contains("(s3 source)"), "{out}");
        assert_eq!(released_tables(&out), want, "s3");
    }
    if let Some(url) = postgres().await {
        let out = demo_distributed(&["--source", "postgres", "--url", &url]);
        assert!(out.contains("(postgres source)"), "{out}");
        assert!(!out.contains(&url), "the URL is not printed");
        assert_eq!(released_tables(&out), want, "postgres");
    }
    #[cfg(feature = "delta")]
    {
        let out = demo_distributed(&["--source", "delta"]);
        assert!(out.contains("(delta source)"), "{out}");
        assert_eq!(released_tables(&out), want, "delta");
    }
}

/// 1:N: two collaborations name the same registered dataset; the owner
/// moves it (a new place, with everyone in one segment withdrawn) and
/// changes its catalog entry only; both collaborations read the new place
/// at the node's next start, and neither collaboration file changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_dataset_reaches_every_collaboration_by_its_catalog_entry_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    data::write_demo(dir, 20_000, true).expect("demo");
    let first = dir.join("collaboration.toml");
    let second = dir.join("second.toml");
    let text = std::fs::read_to_string(&first).expect("collaboration");
    let renamed = text.replacen("name = \"demo\"", "name = \"second\"", 1);
    assert_ne!(renamed, text, "the demo's collaboration is named demo");
    std::fs::write(&second, &renamed).expect("second");
    let before = [&first, &second].map(|p| std::fs::read(p).expect("read"));
    let mut released = Vec::new();
    for c in [&first, &second] {
        let cluster = Cluster::open(c, None).await.expect("open");
        let r = cluster.query("advertiser", QUERIES[0]).await.expect("q");
        released.push(rows(&r.batches));
    }
    assert_eq!(released[0], released[1]);
    let segment = released[0][0]
        .split(" | ")
        .next()
        .expect("segment")
        .to_string();

    let audience = place::read_parquet(&dir.join("audience.parquet"))
        .await
        .expect("audience");
    std::fs::create_dir_all(dir.join("moved")).expect("dir");
    std::fs::write(
        dir.join("moved/audience-2026.parquet"),
        parquet_bytes(&withdrawn(&audience, &segment)),
    )
    .expect("moved");
    std::fs::remove_file(dir.join("audience.parquet")).expect("old place gone");
    let catalog = std::fs::read_to_string(dir.join("catalog.toml")).expect("catalog");
    let mut file: airlock_node::catalog::CatalogFile = toml::from_str(&catalog).expect("toml");
    file.datasets.insert(
        "publisher_audience".into(),
        airlock_node::catalog::Location::Files {
            path: "moved/audience-2026.parquet".into(),
            format: airlock_node::catalog::DatasetFormat::Parquet,
        },
    );
    file.write_to(dir).expect("catalog");

    let want: Vec<String> = released[0]
        .iter()
        .filter(|r| !r.starts_with(&format!("{segment} | ")))
        .cloned()
        .collect();
    assert!(want.len() < released[0].len());
    for c in [&first, &second] {
        let cluster = Cluster::open(c, None).await.expect("open at the new place");
        let r = cluster.query("advertiser", QUERIES[0]).await.expect("q");
        assert_eq!(rows(&r.batches), want, "{}", c.display());
    }
    let after = [&first, &second].map(|p| std::fs::read(p).expect("read"));
    assert_eq!(before, after, "no collaboration file was edited");
}

/// `airlock bench --source` on small data: it runs each side, checks the
/// two Airlock sides release the same rows (or fails), and prints a ratio
/// per analysis; for PostgreSQL the rows read with and without pushdown.
/// (The figures themselves are the benchmark's, not this test's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_source_runs_against_each_source() {
    let bench = |extra: &[&str]| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = Command::new(bin())
            .args(["bench", "--rows", "100000", "--runs", "1"])
            .args(extra)
            .arg("--dir")
            .arg(tmp.path().join("b"))
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    if let Some((endpoint, bucket)) = common::s3_server() {
        let out = bench(&[
            "--source",
            "s3",
            "--endpoint",
            &endpoint,
            "--bucket",
            &bucket,
        ]);
        assert!(out.matches("x ").count() >= 4, "{out}");
        assert!(
            out.contains("(b) two-member overlap by segment x category, both over s3"),
            "{out}"
        );
    }
    if let Some(url) = postgres().await {
        let out = bench(&["--source", "postgres", "--url", &url]);
        assert!(out.contains("query (rows PostgreSQL sent)"), "{out}");
        let filtered = out
            .lines()
            .find(|l| l.starts_with("(e) overlap with the demo's filters") && l.ends_with('%'))
            .unwrap_or_else(|| panic!("{out}"));
        let n: Vec<u64> = filtered
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(
            n.len() >= 2 && n[0] < n[1],
            "pushed reads fewer rows: {filtered}"
        );
    }
    #[cfg(feature = "delta")]
    {
        let out = bench(&["--source", "delta"]);
        assert!(out.contains("over delta vs its files"), "{out}");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let refused = Command::new(bin())
        .args(["bench", "--source", "files", "--rows", "100", "--dir"])
        .arg(tmp.path().join("b"))
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(2));
}

/// Plain DataFusion's rows of the Parquet files under `url` (a local
/// directory, or `s3://` with the test's client registered).
async fn parquet_rows(ctx: &datafusion::prelude::SessionContext, url: &str) -> Vec<String> {
    let batches = ctx
        .read_parquet(url, Default::default())
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .collect()
        .await
        .expect("rows");
    rows(&batches)
}

/// Released results delivered by the advertiser's node process to its S3
/// bucket (`objects`: one Parquet object, created once, its hash read back
/// from the store) and, with the `delta` feature, to Delta tables on its
/// disk (`lake`) and in the bucket (`lake-s3`): the rows the in-process
/// engine releases, the audit entry naming the object or version only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_delivered_to_s3_and_delta_by_the_members_own_node() {
    let Some((endpoint, bucket)) = common::s3_server() else {
        return;
    };
    s3_environment();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    data::write_demo(&dir, 20_000, true).expect("demo");
    let local = Cluster::open(&dir.join("collaboration.toml"), None)
        .await
        .expect("open");
    let want = rows(
        &local
            .query("advertiser", QUERIES[0])
            .await
            .expect("q")
            .batches,
    );
    let prefix = format!("results-{}", common::run_id());
    let running = up::start(&UpOptions {
        dir: dir.clone(),
        rows: 20_000,
        wire_tap: None,
        bin: bin(),
        results_postgres: None,
        results_s3: Some(Bucket {
            endpoint: endpoint.clone(),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
        }),
        hub_limits: Default::default(),
        node_limits: Default::default(),
    })
    .await
    .expect("airlock up");
    let analyst = running.client(&running.info.analyst).expect("client");
    let hub_dir = up::cluster_dir(&dir).join("hub");
    let db = airlock_store::Store::open(&format!("sqlite:{}", hub_dir.join("hub.db").display()))
        .await
        .expect("hub db");
    let secrets: Vec<String> = vec![
        endpoint.clone(),
        bucket.clone(),
        prefix.clone(),
        SECRET.into(),
    ];
    let deliver = |dest: &'static str| {
        let (analyst, db, secrets) = (&analyst, &db, &secrets);
        async move {
            let spec = airlock_policy::QuerySpec {
                deliver: Some(dest.into()),
                ..airlock_policy::QuerySpec::sql(QUERIES[0])
            };
            let said = remote::deliver(analyst, "demo", &spec)
                .await
                .unwrap_or_else(|e| panic!("{dest}: {e}"));
            assert!(said.contains(&format!("destination '{dest}'")), "{said}");
            let entry = db
                .audit("demo")
                .await
                .expect("audit")
                .into_iter()
                .filter(|e| e.kind == "result.delivered")
                .map(|e| serde_json::from_str::<serde_json::Value>(&e.payload).expect("json"))
                .rfind(|p| p["destination"] == dest)
                .expect("audited");
            let text = entry.to_string();
            for s in secrets {
                assert!(!text.contains(s.as_str()), "{s:?} in {text}");
            }
            entry
        }
    };
    let ctx = datafusion::prelude::SessionContext::new();
    let store = Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_bucket_name(&bucket)
            .with_region("us-east-1")
            .with_allow_http(true)
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .build()
            .expect("client"),
    );
    ctx.register_object_store(
        &url::Url::parse(&format!("s3://{bucket}")).expect("url"),
        store.clone(),
    );

    let entry = deliver("objects").await;
    assert_eq!(entry["kind"], "s3");
    let object = entry["location"].as_str().expect("location").to_string();
    assert!(
        !object.contains('/') && object.ends_with(".parquet"),
        "{object}"
    );
    let key = format!("{prefix}/results/advertiser/{object}");
    let bytes = {
        use object_store::ObjectStoreExt;
        store
            .get(&object_store::path::Path::from(key.as_str()))
            .await
            .expect("the object")
            .bytes()
            .await
            .expect("bytes")
    };
    assert_eq!(
        entry["file_sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    assert_eq!(
        parquet_rows(&ctx, &format!("s3://{bucket}/{key}")).await,
        want
    );

    #[cfg(feature = "delta")]
    {
        // Each delivery appends one version, with the query's id per row.
        for (dest, url) in [
            (
                "lake",
                format!(
                    "{}/",
                    up::cluster_dir(&dir)
                        .join("nodes/advertiser/results-delta")
                        .display()
                ),
            ),
            (
                "lake-s3",
                format!("s3://{bucket}/{prefix}/results-delta/advertiser/"),
            ),
        ] {
            let entry = deliver(dest).await;
            assert_eq!(entry["kind"], "delta");
            assert_eq!(entry["location"], "version 0", "{dest}");
            let got = parquet_rows(&ctx, &url).await;
            let id = entry["query"].as_str().expect("id");
            assert_eq!(got.len(), want.len(), "{dest}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, &format!("{id} | {w}"), "{dest}");
            }
            let again = deliver(dest).await;
            assert_eq!(again["location"], "version 1", "{dest}");
        }
    }
    drop(running);
}

/// A dataset that is a directory of files, open in one cluster: a file
/// rewritten in place (everyone in one segment withdrawing) holds from the
/// next query, and so does a file removed and another added (DataFusion's
/// own listing and footer caches would serve the old ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_dataset_is_read_afresh_at_every_query() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    data::write_demo(dir, 20_000, true).expect("demo");
    let audience = place::read_parquet(&dir.join("audience.parquet"))
        .await
        .expect("audience");
    std::fs::create_dir_all(dir.join("audience")).expect("dir");
    std::fs::rename(
        dir.join("audience.parquet"),
        dir.join("audience/part-0.parquet"),
    )
    .expect("move");
    let catalog = std::fs::read_to_string(dir.join("catalog.toml")).expect("catalog");
    let mut file: airlock_node::catalog::CatalogFile = toml::from_str(&catalog).expect("toml");
    file.datasets.insert(
        "publisher_audience".into(),
        airlock_node::catalog::Location::Files {
            path: "audience/".into(),
            format: airlock_node::catalog::DatasetFormat::Parquet,
        },
    );
    file.write_to(dir).expect("catalog");
    let cluster = Cluster::open(&dir.join("collaboration.toml"), None)
        .await
        .expect("open");
    let query = || async {
        rows(
            &cluster
                .query("advertiser", QUERIES[0])
                .await
                .expect("query")
                .batches,
        )
    };
    let reference = query().await;
    let segment = reference[0]
        .split(" | ")
        .next()
        .expect("segment")
        .to_string();
    let want: Vec<String> = reference
        .iter()
        .filter(|r| !r.starts_with(&format!("{segment} | ")))
        .cloned()
        .collect();
    std::fs::write(
        dir.join("audience/part-0.parquet"),
        parquet_bytes(&withdrawn(&audience, &segment)),
    )
    .expect("rewrite");
    assert_eq!(query().await, want, "a rewritten file");
    std::fs::remove_file(dir.join("audience/part-0.parquet")).expect("remove");
    std::fs::write(
        dir.join("audience/part-1.parquet"),
        parquet_bytes(&audience),
    )
    .expect("add");
    assert_eq!(query().await, reference, "a file removed, another added");
}
