//! Delta Lake and PostgreSQL sources, read in place through the node's
//! catalog: the same released rows as over local files (the demo's data
//! put in place by `airlock demo --source`'s own code), consent withdrawn
//! at the source disappearing from the next query, pinned Delta versions,
//! filters pushed into PostgreSQL, nothing of the location on the wire or
//! in a refusal, and every bad catalog entry with its error.
//!
//! PostgreSQL is the one `.ci/postgres.sh` starts
//! (`AIRLOCK_TEST_POSTGRES_URL`), S3 the server `.ci/s3.sh` starts
//! (`AIRLOCK_TEST_S3_ENDPOINT`); with `AIRLOCK_REQUIRE_POSTGRES` or
//! `AIRLOCK_REQUIRE_S3` set, a missing server fails the test instead of
//! skipping it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

mod common;
use common::rows;

use airlock_cli::cluster::{exit_code, Cluster, Tap};
use airlock_cli::data;
#[cfg(feature = "delta")]
use airlock_cli::place::Bucket;
use airlock_cli::place::{self, DemoSource};
#[cfg(feature = "delta")]
use airlock_node::catalog::S3Credentials;
use airlock_node::catalog::{Catalog, Location};
use airlock_node::sources::{write_delta, POSTGRES_ROWS_READ};
use datafusion::arrow::array::{BooleanArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

const QUERIES: &[&str] = &[
    "SELECT a.segment, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment",
    "SELECT a.region, COUNT(DISTINCT p.email) AS buyers, SUM(p.amount_cents) AS revenue_cents FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.region",
    "SELECT category, COUNT(DISTINCT email) AS buyers, SUM(amount_cents) AS revenue_cents FROM purchases GROUP BY category",
    "SELECT a.age_band, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email WHERE a.age_band IN ('25-34', '35-44') AND p.day >= DATE '2025-01-01' GROUP BY a.age_band",
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

fn postgres() -> Option<String> {
    match std::env::var("AIRLOCK_TEST_POSTGRES_URL") {
        Ok(u) => Some(u),
        Err(_) if std::env::var("AIRLOCK_REQUIRE_POSTGRES").is_ok() => {
            panic!("AIRLOCK_REQUIRE_POSTGRES is set but AIRLOCK_TEST_POSTGRES_URL is not")
        }
        Err(_) => {
            eprintln!("no PostgreSQL (AIRLOCK_TEST_POSTGRES_URL): skipped");
            None
        }
    }
}

/// No byte stream that left a node holds any of `secrets`.
fn wire_holds_none(tap: &Tap, secrets: &[&str]) {
    let streams = tap.lock().expect("tap").clone();
    assert!(!streams.is_empty());
    for (member, bytes) in &streams {
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s:?} on the wire from {member}"
            );
        }
    }
}

/// The demo's data in `source` releases what it releases from local files.
#[cfg(feature = "delta")]
async fn demo_in(source: DemoSource, secrets: &[&str]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    data::write_demo(dir, 20_000, true).expect("demo");
    let collab = dir.join("collaboration.toml");
    let local = released(&Cluster::open(&collab, None).await.expect("open")).await;
    let placed = place::place_demo(dir, &source).await.expect("placed");
    assert_eq!(placed.len(), 2);
    assert!(!dir.join("audience.parquet").exists());
    assert!(!dir.join("purchases.parquet").exists());
    let catalog = std::fs::read_to_string(dir.join("catalog.toml")).expect("catalog");
    assert!(
        catalog.contains(&format!("kind = \"{}\"", source.kind())),
        "{catalog}"
    );
    let tap: Tap = Arc::new(Mutex::new(Vec::new()));
    let cluster = Cluster::open(&collab, Some(tap.clone()))
        .await
        .expect("open in place");
    assert_eq!(
        released(&cluster).await,
        local,
        "{} and files differ",
        source.kind()
    );
    let dir_text = dir.to_string_lossy().to_string();
    let mut all = secrets.to_vec();
    all.push(&dir_text);
    wire_holds_none(&tap, &all);
}

#[cfg(feature = "delta")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_tables_release_what_local_files_release() {
    demo_in(DemoSource::Delta(None), &["audience_delta", "_delta_log"]).await;
}

#[cfg(feature = "delta")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_tables_in_a_bucket_release_what_local_files_release() {
    let Some((endpoint, bucket)) = common::s3_server() else {
        return;
    };
    // Each test runs in its own process (nextest), so these are its own.
    std::env::set_var("AWS_ACCESS_KEY_ID", "airlock");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "airlock-test-secret-value");
    let prefix = format!("delta-{}", common::run_id());
    let source = DemoSource::Delta(Some(Bucket {
        endpoint: endpoint.clone(),
        bucket: bucket.clone(),
        prefix: prefix.clone(),
    }));
    demo_in(
        source,
        &[&bucket, &prefix, &endpoint, "airlock-test-secret-value"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tables_release_what_local_files_release_with_filters_pushed_down() {
    let Some(url) = postgres() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    data::write_demo(dir, 20_000, true).expect("demo");
    let collab = dir.join("collaboration.toml");
    let local = released(&Cluster::open(&collab, None).await.expect("open")).await;
    let audience_rows = {
        let b = place::read_parquet(&dir.join("audience.parquet"))
            .await
            .expect("read");
        b.iter().map(RecordBatch::num_rows).sum::<usize>() as u64
    };
    place::place_demo(dir, &DemoSource::Postgres(url.clone()))
        .await
        .expect("placed");
    let tap: Tap = Arc::new(Mutex::new(Vec::new()));
    let cluster = Cluster::open(&collab, Some(tap.clone()))
        .await
        .expect("open over PostgreSQL");
    let before = POSTGRES_ROWS_READ.load(Ordering::Relaxed);
    assert_eq!(
        released(&cluster).await,
        local,
        "PostgreSQL and files differ"
    );
    let pushed = POSTGRES_ROWS_READ.load(Ordering::Relaxed) - before;
    wire_holds_none(
        &tap,
        &[&url, "postgres://", "postgres.url", "public.audience"],
    );
    // The same queries with nothing pushed down read every row of both
    // tables for every query; pushed down, the consent filter and the
    // fourth query's region and day stay in PostgreSQL.
    let plain = Cluster::open_pushdown(&collab, None, false)
        .await
        .expect("open");
    let before = POSTGRES_ROWS_READ.load(Ordering::Relaxed);
    assert_eq!(released(&plain).await, local);
    let unpushed = POSTGRES_ROWS_READ.load(Ordering::Relaxed) - before;
    assert!(
        pushed < unpushed,
        "rows read with pushdown {pushed}, without {unpushed}"
    );
    // Without pushdown, the queries on the audience read it whole.
    assert!(
        unpushed >= 3 * audience_rows,
        "{unpushed} < 3 x {audience_rows}"
    );
}

/// The collaboration of the small consent tests: `pub_people` (email,
/// segment, consent) and `adv_orders` (a local CSV).
const SMALL: &str = r#"
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

const SMALL_SQL: &str = "SELECT p.segment, COUNT(DISTINCT p.email) AS n, SUM(o.amount) AS s FROM people p JOIN orders o ON p.email = o.email GROUP BY p.segment";

fn small_dir(dir: &Path, people_entry: &str) -> std::path::PathBuf {
    let orders: String = std::iter::once("email,category,amount\n".to_string())
        .chain((0..8).map(|i| format!("p{i}@example.com,books,{}\n", 100 + i)))
        .collect();
    std::fs::write(dir.join("orders.csv"), orders).expect("orders");
    std::fs::write(dir.join("k"), "11".repeat(32)).expect("secret");
    write_catalog(dir, people_entry);
    let path = dir.join("c.toml");
    std::fs::write(&path, SMALL).expect("write");
    path
}

fn write_catalog(dir: &Path, people_entry: &str) {
    std::fs::write(
        dir.join("catalog.toml"),
        format!(
            "[datasets.pub_people]\n{people_entry}\n\n[datasets.adv_orders]\nkind = \"files\"\npath = \"orders.csv\"\nformat = \"csv\"\n"
        ),
    )
    .expect("catalog");
}

fn people(withdrawn: usize) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("email", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("consent", DataType::Boolean, false),
        Field::new("score", DataType::Int64, true),
    ]));
    let emails: StringArray = (0..8).map(|i| Some(format!("p{i}@example.com"))).collect();
    let segments: StringArray = (0..8).map(|_| Some("x")).collect();
    let consent: BooleanArray = (0..8).map(|i| Some(i >= withdrawn)).collect();
    let score: Int64Array = (0..8).map(|i| Some(i as i64)).collect();
    vec![RecordBatch::try_new(
        schema,
        vec![
            Arc::new(emails),
            Arc::new(segments),
            Arc::new(consent),
            Arc::new(score),
        ],
    )
    .expect("batch")]
}

fn counted(n: usize) -> Vec<String> {
    let sum: i64 = (100 + (8 - n) as i64..108).sum();
    vec![format!("x | {n} | {sum}")]
}

/// Opening is refused with `want` (exit 2), naming no secret.
async fn refused(collab: &Path, want: &str, secrets: &[&str]) {
    let e = Cluster::open(collab, None).await.err().expect("refused");
    let msg = e.to_string();
    assert!(msg.contains(want), "want {want:?} in {msg:?}");
    for s in secrets {
        assert!(!msg.contains(s), "{s:?} in {msg:?}");
    }
    assert_eq!(exit_code(&e), 2, "{msg}");
}

#[cfg(feature = "delta")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_consent_withdrawn_in_a_new_version_holds_from_the_next_query_and_versions_pin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let entry = "kind = \"delta\"\npath = \"people\"";
    let collab = small_dir(dir, entry);
    let location = Location::Delta {
        path: Some("people".into()),
        bucket: None,
        prefix: String::new(),
        endpoint: None,
        region: None,
        allow_http: false,
        credentials: S3Credentials::Environment,
        version: None,
    };
    let catalog = Catalog::new(Default::default(), dir, dir);
    assert_eq!(
        write_delta(&location, &catalog, people(0))
            .await
            .expect("v0"),
        0
    );
    let cluster = Cluster::open(&collab, None).await.expect("open");
    assert_eq!(
        rows(&cluster.query("adv", SMALL_SQL).await.expect("q").batches),
        counted(8)
    );
    // Two people withdraw, in a new version: the open cluster counts them
    // no more.
    assert_eq!(
        write_delta(&location, &catalog, people(2))
            .await
            .expect("v1"),
        1
    );
    assert_eq!(
        rows(&cluster.query("adv", SMALL_SQL).await.expect("q").batches),
        counted(6)
    );
    // A pinned version is read as it was.
    write_catalog(dir, &format!("{entry}\nversion = 0"));
    let pinned = Cluster::open(&collab, None).await.expect("open pinned");
    assert_eq!(
        rows(&pinned.query("adv", SMALL_SQL).await.expect("q").batches),
        counted(8)
    );

    // Bad entries.
    std::fs::create_dir_all(dir.join("plain")).expect("dir");
    std::fs::write(dir.join("plain/x.parquet"), b"not parquet").expect("file");
    std::fs::create_dir_all(dir.join("outside")).expect("dir");
    let outside = tempfile::tempdir().expect("tempdir");
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path(), dir.join("outlink")).expect("link");
    for (entry, want) in [
        (
            format!("{entry}\nversion = 7"),
            "dataset 'pub_people': (delta source): the version its catalog entry pins does not exist",
        ),
        (
            "kind = \"delta\"\npath = \"plain\"".to_string(),
            "dataset 'pub_people': (delta source): its location holds no Delta table",
        ),
        (
            "kind = \"delta\"\npath = \"gone\"".to_string(),
            "dataset 'pub_people': (delta source): nothing found at its location",
        ),
        (
            "kind = \"delta\"\npath = \"../people\"".to_string(),
            "(delta source): the dataset's path leads outside the directory",
        ),
        #[cfg(unix)]
        (
            "kind = \"delta\"\npath = \"outlink\"".to_string(),
            "(delta source): the dataset's path leads outside the directory",
        ),
        (
            "kind = \"delta\"\npath = \"people\"\nbucket = \"b\"".to_string(),
            "(delta source): its catalog entry names neither or both of path and bucket",
        ),
        (
            "kind = \"delta\"".to_string(),
            "(delta source): its catalog entry names neither or both of path and bucket",
        ),
    ] {
        write_catalog(dir, &entry);
        let secret = outside.path().to_string_lossy().to_string();
        refused(&collab, want, &["plain", "gone", "outlink", &secret]).await;
    }
}

/// A node built without the `delta` feature refuses a Delta entry by name
/// and says how to get it; it writes no Delta table either.
#[cfg(not(feature = "delta"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_delta_feature_a_delta_entry_is_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let entry = "kind = \"delta\"\npath = \"people\"";
    let collab = small_dir(dir, entry);
    refused(
        &collab,
        "dataset 'pub_people': (delta source): this node was built without Delta Lake support",
        &[],
    )
    .await;
    let catalog = Catalog::new(Default::default(), dir, dir);
    let location: Location = toml::from_str(entry).expect("entry");
    let e = write_delta(&location, &catalog, people(0))
        .await
        .expect_err("no Delta writer");
    assert!(e.public.contains("without Delta Lake support"), "{e:?}");
    assert!(!dir.join("people").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_consent_withdrawn_holds_from_the_next_query_and_bad_entries_are_named() {
    use sqlx::{Connection, Executor};
    let Some(url) = postgres() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let table = format!("people_{}", common::run_id());
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    conn.execute(
        format!("CREATE TABLE public.{table} (email text NOT NULL, segment text, consent boolean, day date, seen timestamptz, amount numeric)").as_str(),
    )
    .await
    .expect("create");
    for i in 0..8 {
        // Infinite dates and timestamps read as null, never fail a scan.
        let day = if i == 3 {
            "'infinity'"
        } else {
            "DATE '2024-01-01'"
        };
        conn.execute(
            format!("INSERT INTO public.{table} VALUES ('p{i}@example.com', 'x', true, {day}, '-infinity', 1.5)")
                .as_str(),
        )
        .await
        .expect("insert");
    }
    std::env::set_var("AIRLOCK_TEST_PEOPLE_URL", &url);
    let entry = format!("kind = \"postgres\"\ntable = \"public.{table}\"\nconnection = {{ env = \"AIRLOCK_TEST_PEOPLE_URL\" }}");
    let collab = small_dir(dir, &entry);
    let cluster = Cluster::open(&collab, None).await.expect("open");
    assert_eq!(
        rows(&cluster.query("adv", SMALL_SQL).await.expect("q").batches),
        counted(8)
    );
    // Every column read whole: infinite dates and timestamps as null,
    // numeric as its text, no scan failing on a stored value.
    {
        use airlock_node::catalog::PostgresUrl;
        use airlock_node::sources::{PostgresSource, Source};
        let source = PostgresSource::new(
            &PostgresUrl::Env("AIRLOCK_TEST_PEOPLE_URL".into()),
            &format!("public.{table}"),
            dir,
            true,
        );
        let ctx = datafusion::prelude::SessionContext::new();
        let provider = source.open(&ctx).await.expect("open the table");
        let df = ctx.read_table(provider).expect("table");
        let got = rows(
            &df.filter(datafusion::prelude::col("email").in_list(
                vec![
                    datafusion::prelude::lit("p3@example.com"),
                    datafusion::prelude::lit("p4@example.com"),
                ],
                false,
            ))
            .expect("filter")
            .sort(vec![datafusion::prelude::col("email").sort(true, false)])
            .expect("sort")
            .collect()
            .await
            .expect("scan"),
        );
        assert_eq!(
            got,
            vec![
                "p3@example.com | x | true | NULL | NULL | 1.5".to_string(),
                "p4@example.com | x | true | 2024-01-01 | NULL | 1.5".to_string(),
            ]
        );
    }
    conn.execute(
        format!("UPDATE public.{table} SET consent = false WHERE email IN ('p0@example.com', 'p1@example.com')").as_str(),
    )
    .await
    .expect("withdraw");
    assert_eq!(
        rows(&cluster.query("adv", SMALL_SQL).await.expect("q").batches),
        counted(6)
    );
    // The connection string may come from a file beside the catalog.
    std::fs::write(dir.join("pg.url"), format!("{url}\n")).expect("url file");
    write_catalog(
        dir,
        &format!("kind = \"postgres\"\ntable = \"{table}\"\nconnection = {{ file = \"pg.url\" }}"),
    );
    let by_file = Cluster::open(&collab, None).await.expect("open by file");
    assert_eq!(
        rows(&by_file.query("adv", SMALL_SQL).await.expect("q").batches),
        counted(6)
    );

    // TLS, when the connection string asks for it (the test server has
    // Debian's self-signed certificate): `require` encrypts and reads;
    // `verify-full` against a CA that did not sign the server's
    // certificate is refused before any row is read.
    let sep = if url.contains('?') { '&' } else { '?' };
    std::env::set_var("AIRLOCK_TEST_TLS_URL", format!("{url}{sep}sslmode=require"));
    write_catalog(
        dir,
        &format!("kind = \"postgres\"\ntable = \"{table}\"\nconnection = {{ env = \"AIRLOCK_TEST_TLS_URL\" }}"),
    );
    let tls = Cluster::open(&collab, None).await.expect("open over TLS");
    assert_eq!(
        rows(&tls.query("adv", SMALL_SQL).await.expect("q").batches),
        counted(6)
    );
    let other_ca = airlock_crypto::pki::Ca::generate("not-the-servers")
        .expect("ca")
        .cert_pem();
    std::fs::write(dir.join("other-ca.pem"), other_ca).expect("ca");
    std::env::set_var(
        "AIRLOCK_TEST_TLS_WRONG_CA_URL",
        format!(
            "{url}{sep}sslmode=verify-full&sslrootcert={}",
            dir.join("other-ca.pem").display()
        ),
    );

    // A view without the segment column the collaboration uses.
    conn.execute(
        format!("CREATE VIEW public.{table}_v AS SELECT email, consent FROM public.{table}")
            .as_str(),
    )
    .await
    .expect("view");
    let wrong_password = {
        let mut u = url::Url::parse(&url).expect("url");
        u.set_password(Some("not-the-password")).expect("password");
        u.to_string()
    };
    std::env::set_var("AIRLOCK_TEST_WRONG_URL", &wrong_password);
    let unreachable = {
        let mut u = url::Url::parse(&url).expect("url");
        u.set_port(Some(9)).expect("port");
        u.to_string()
    };
    std::env::set_var("AIRLOCK_TEST_UNREACHABLE_URL", &unreachable);
    std::env::set_var(
        "AIRLOCK_TEST_GARBLED_URL",
        "postgres://a:secret-garble@[::1",
    );
    let with = |table: &str, connection: &str| {
        format!("kind = \"postgres\"\ntable = \"{table}\"\nconnection = {connection}")
    };
    let env = "{ env = \"AIRLOCK_TEST_PEOPLE_URL\" }";
    for (entry, want) in [
        (
            with(&format!("public.{table}_v"), env),
            "column 'segment': is not a column of dataset 'pub_people'",
        ),
        (
            with("public.no_such_table", env),
            "dataset 'pub_people': (postgres source): nothing found at its location",
        ),
        (
            with(&table, "{ env = \"AIRLOCK_TEST_WRONG_URL\" }"),
            "dataset 'pub_people': (postgres source): its database refused the node's credentials",
        ),
        (
            with(&table, "{ env = \"AIRLOCK_UNSET_URL\" }"),
            "dataset 'pub_people': (postgres source): its credentials are missing",
        ),
        (
            with(&table, "{ file = \"no-such.url\" }"),
            "(postgres source): its credentials are missing",
        ),
        (
            with(&table, "{ env = \"AIRLOCK_TEST_UNREACHABLE_URL\" }"),
            "(postgres source): the node cannot reach its location",
        ),
        (
            with(&table, "{ env = \"AIRLOCK_TEST_TLS_WRONG_CA_URL\" }"),
            "(postgres source): the node cannot reach its location",
        ),
        (
            with(&table, "{ env = \"AIRLOCK_TEST_GARBLED_URL\" }"),
            "(postgres source): its connection string is not valid",
        ),
    ] {
        write_catalog(dir, &entry);
        refused(
            &collab,
            want,
            &[
                "airlock-test",
                "not-the-password",
                "secret-garble",
                "127.0.0.1",
                "no-such",
            ],
        )
        .await;
    }
    conn.execute(format!("DROP VIEW public.{table}_v; DROP TABLE public.{table}").as_str())
        .await
        .expect("drop");
}
