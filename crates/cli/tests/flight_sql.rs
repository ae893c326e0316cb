//! The hub's Flight SQL endpoint against real hub and node processes
//! (`airlock up`): its metadata calls from Rust's Flight SQL client, then
//! `flight_sql.py` with ADBC from PyPI (`.ci/python.sh` makes its virtual
//! environment; `AIRLOCK_TEST_PYTHON` names its interpreter), checked
//! against what `airlock query` releases for the same queries.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use airlock_cli::cluster::CliError;
use airlock_cli::up::Running;
use airlock_cli::{data, demo, remote};
use airlock_service::client::HubClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use common::client_rooms;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use futures::TryStreamExt;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const OVERLAP: &str = "SELECT a.segment, COUNT(DISTINCT a.email) AS people \
    FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment";
const OVERLAP_QUALIFIED: &str = "SELECT a.segment, COUNT(DISTINCT a.email) AS people \
    FROM demo.audience a JOIN airlock.demo.purchases p ON a.email = p.email GROUP BY a.segment";

/// The interpreter of the virtual environment with ADBC, or `None` (the
/// Python half is skipped, loudly; with `AIRLOCK_REQUIRE_PYTHON=1` it fails).
fn python() -> Option<PathBuf> {
    match std::env::var("AIRLOCK_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert_ne!(
                std::env::var("AIRLOCK_REQUIRE_PYTHON").as_deref(),
                Ok("1"),
                "AIRLOCK_REQUIRE_PYTHON=1 but AIRLOCK_TEST_PYTHON is not set (bash .ci/python.sh)"
            );
            eprintln!("NOTE: AIRLOCK_TEST_PYTHON is not set: the ADBC half did not run");
            None
        }
    }
}

/// Rows as sorted lists of JSON values, as `flight_sql.py` compares them.
fn json_rows(batches: &[RecordBatch]) -> Vec<serde_json::Value> {
    let mut buf = Vec::new();
    {
        let mut w = datafusion::arrow::json::ArrayWriter::new(&mut buf);
        for b in batches {
            w.write(b).expect("json");
        }
        w.finish().expect("json");
    }
    let objects: Vec<serde_json::Map<String, serde_json::Value>> = if buf.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&buf).expect("rows")
    };
    let mut rows: Vec<serde_json::Value> = objects
        .into_iter()
        .map(|o| serde_json::Value::Array(o.into_iter().map(|(_, v)| v).collect()))
        .collect();
    rows.sort_by_key(|r| r.to_string());
    rows
}

async fn channel(running: &Running) -> tonic::transport::Channel {
    try_channel(running).await.expect("connect")
}

async fn try_channel(
    running: &Running,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let url = running.info.flight_sql.replace("grpc+tls://", "https://");
    let ca = std::fs::read_to_string(&running.info.ca).expect("ca");
    Endpoint::from_shared(url)
        .expect("url")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("127.0.0.1"),
        )
        .expect("tls")
        .connect()
        .await
}

async fn flight_client(
    running: &Running,
    token: &str,
) -> FlightSqlServiceClient<tonic::transport::Channel> {
    let mut c = FlightSqlServiceClient::new(channel(running).await);
    c.set_token(token.to_string());
    c
}

async fn collect(
    c: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    info: arrow_flight::FlightInfo,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for ep in info.endpoint {
        let ticket = ep.ticket.expect("ticket");
        let stream = c.do_get(ticket).await.expect("do_get");
        out.extend(stream.try_collect::<Vec<_>>().await.expect("batches"));
    }
    out
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name(column).expect("column");
        let col =
            datafusion::arrow::compute::cast(col, &datafusion::arrow::datatypes::DataType::Utf8)
                .expect("utf8");
        let a = col.as_string::<i32>();
        out.extend((0..a.len()).map(|i| a.value(i).to_string()));
    }
    out
}

fn with_name(toml: &str, name: &str) -> String {
    toml.replacen("name = \"demo\"", &format!("name = \"{name}\""), 1)
}

async fn start(dir: &Path) -> Running {
    common::up_demo(dir, 60_000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_serves_metadata_queries_templates_and_refusals_to_rust_and_python() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let running = start(&dir).await;
    assert!(
        running.info.flight_sql.starts_with("grpc+tls://127.0.0.1:"),
        "{}",
        running.info.flight_sql
    );
    let publisher = running.client("publisher").expect("client");
    let advertiser = running.client("advertiser").expect("client");
    // The template on demo approved by both owners; demo_dp; the
    // publisher's solo collaboration (the advertiser is not in it).
    client_rooms(&publisher, &advertiser, &[&publisher, &advertiser]).await;

    // What `airlock query` releases: the reference.
    let overlap = remote::query(&advertiser, "demo", OVERLAP)
        .await
        .expect("overlap");
    let template = remote::query_spec(
        &advertiser,
        "demo",
        &airlock_policy::QuerySpec::template(
            "overlap_in_region",
            BTreeMap::from([("region".to_string(), "north".to_string())]),
        ),
    )
    .await
    .expect("template");
    let refusal = match remote::query(&advertiser, "demo", "SELECT * FROM audience").await {
        Err(CliError::Refused { refusal, .. }) => refusal,
        other => panic!("expected a refusal, got {:?}", other.map(|r| r.num_rows())),
    };

    // Rust's Flight SQL client: the metadata calls.
    let token = running.info.tokens["advertiser"].clone();
    let mut c = flight_client(&running, &token).await;
    let info = c.get_catalogs().await.expect("catalogs");
    assert_eq!(
        strings(&collect(&mut c, info).await, "catalog_name"),
        ["airlock"]
    );
    let info = c
        .get_db_schemas(CommandGetDbSchemas::default())
        .await
        .expect("schemas");
    let mut schemas = strings(&collect(&mut c, info).await, "db_schema_name");
    schemas.sort();
    assert_eq!(schemas, ["demo", "demo_dp"], "only the advertiser's");
    let info = c
        .get_tables(CommandGetTables {
            db_schema_filter_pattern: Some("demo".into()),
            include_schema: true,
            ..Default::default()
        })
        .await
        .expect("tables");
    let tables = collect(&mut c, info).await;
    assert_eq!(strings(&tables, "table_name"), ["audience", "purchases"]);
    let show: airlock_service::api::CollaborationView = advertiser
        .call(
            airlock_service::client::Method::GET,
            "/v1/collaborations/demo",
            None::<&()>,
        )
        .await
        .expect("show");
    let demo_collab = airlock_policy::Collaboration::from_toml(&show.toml, "demo").expect("demo");
    let mut columns = serde_json::Map::new();
    for b in &tables {
        let names = b
            .column_by_name("table_name")
            .expect("names")
            .as_string::<i32>();
        let schemas = b
            .column_by_name("table_schema")
            .expect("schemas")
            .as_binary::<i32>();
        for i in 0..b.num_rows() {
            let schema =
                datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer(schemas.value(i))
                    .expect("schema");
            let table = demo_collab
                .config()
                .tables
                .iter()
                .find(|t| t.alias == names.value(i))
                .expect("configured");
            let mut got: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            let mut want = table.columns();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{}: configured columns only", names.value(i));
            columns.insert(names.value(i).to_string(), serde_json::json!(want));
        }
    }
    let info = c
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .expect("sql info");
    assert_eq!(
        collect(&mut c, info)
            .await
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        2
    );
    // A statement through Rust's client: the same rows.
    let info = c
        .execute(OVERLAP_QUALIFIED.to_string(), None)
        .await
        .expect("execute");
    assert_eq!(
        json_rows(&collect(&mut c, info).await),
        json_rows(&overlap.batches)
    );
    // PollFlightInfo: the first poll submits and answers at once; later
    // polls report progress in [0, 1) until the query's FlightInfo comes.
    {
        use arrow_flight::flight_service_client::FlightServiceClient;
        use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
        use prost::Message;
        let mut raw = FlightServiceClient::new(channel(&running).await);
        let authed = |d: arrow_flight::FlightDescriptor| {
            let mut r = tonic::Request::new(d);
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
            r
        };
        let cmd = CommandStatementQuery {
            query: OVERLAP_QUALIFIED.into(),
            transaction_id: None,
        };
        let first = raw
            .poll_flight_info(authed(arrow_flight::FlightDescriptor::new_cmd(
                cmd.as_any().encode_to_vec(),
            )))
            .await
            .expect("first poll")
            .into_inner();
        assert_eq!(first.progress, Some(0.0), "{first:?}");
        assert!(first.info.expect("info so far").endpoint.is_empty());
        let mut next = first.flight_descriptor.expect("poll again");
        let info = loop {
            let p = raw
                .poll_flight_info(authed(next.clone()))
                .await
                .expect("poll")
                .into_inner();
            let progress = p.progress.expect("progress");
            let info = p.info.expect("info so far");
            if p.flight_descriptor.is_none() {
                assert_eq!(progress, 1.0);
                break info;
            }
            assert!(info.endpoint.is_empty(), "no endpoint before the end");
            assert!((0.0..1.0).contains(&progress), "{progress}");
            next = p.flight_descriptor.expect("poll again");
        };
        assert_eq!(
            json_rows(&collect(&mut c, info).await),
            json_rows(&overlap.batches)
        );
        // Another member cannot poll the advertiser's query.
        let publisher_token = running.info.tokens["publisher"].clone();
        let mut r = tonic::Request::new(next);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {publisher_token}").parse().expect("header"),
        );
        let e = raw
            .poll_flight_info(r)
            .await
            .expect_err("not the publisher's");
        assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    }
    // The other member's collaboration, a nonexistent one, a wrong token.
    let e = c
        .execute("SELECT COUNT(*) FROM solo.audience".into(), None)
        .await
        .expect_err("not the advertiser's");
    let e2 = c
        .execute("SELECT COUNT(*) FROM nosuch.audience".into(), None)
        .await
        .expect_err("no such");
    assert_eq!(e.to_string(), e2.to_string());
    // A statement nested far deeper than the guard allows, larger than
    // its text limit, or just under it: refused, and the hub still serves.
    for terms in [500_000, 30_000] {
        let deep = format!(
            "SELECT COUNT(*) FROM demo.audience WHERE {} = 0",
            vec!["1"; terms].join("+")
        );
        let e = c.execute(deep, None).await.expect_err("refused");
        assert!(
            e.to_string().contains("limit") || e.to_string().contains("deep"),
            "{terms}: {e}"
        );
    }
    let info = c
        .execute(OVERLAP_QUALIFIED.to_string(), None)
        .await
        .expect("the hub still serves");
    assert_eq!(
        json_rows(&collect(&mut c, info).await),
        json_rows(&overlap.batches)
    );
    let mut bad = flight_client(&running, "wrong").await;
    let e = bad.get_catalogs().await.expect_err("wrong token");
    assert!(e.to_string().contains("bearer token"), "{e}");

    // Cancelling the call cancels the query: a crypto-mode query (seconds
    // long) whose call is dropped while it runs fails as cancelled.
    let v = publisher
        .create(&with_name(
            &data::collaboration_toml_crypto(),
            "demo_crypto",
        ))
        .await
        .expect("create crypto");
    advertiser
        .approve("demo_crypto", Some(&v.sha256))
        .await
        .expect("approve crypto");
    let mut slow = flight_client(&running, &token).await;
    slow.set_header("x-airlock-collaboration", "demo_crypto");
    let sql = demo::CRYPTO_ANALYSES[0].2.to_string();
    let call = tokio::spawn(async move { slow.execute(sql, None).await.map(drop) });
    let queries = |c: HubClient| async move {
        let qs: Vec<airlock_service::api::QueryView> = c
            .call(
                airlock_service::client::Method::GET,
                "/v1/collaborations/demo_crypto/queries",
                None::<&()>,
            )
            .await
            .expect("queries");
        qs
    };
    let started = std::time::Instant::now();
    loop {
        let qs = queries(advertiser.clone()).await;
        if qs
            .iter()
            .any(|q| q.state == airlock_service::api::QueryState::Running)
        {
            break;
        }
        assert!(qs
            .iter()
            .all(|q| q.state != airlock_service::api::QueryState::Released));
        assert!(started.elapsed().as_secs() < 120, "never ran: {qs:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    call.abort();
    let ended = loop {
        let qs = queries(advertiser.clone()).await;
        if let Some(q) = qs
            .iter()
            .find(|q| q.state == airlock_service::api::QueryState::Failed)
        {
            break q.clone();
        }
        assert!(
            qs.iter()
                .all(|q| q.state != airlock_service::api::QueryState::Released),
            "released after its call was cancelled: {qs:?}"
        );
        assert!(started.elapsed().as_secs() < 300, "not cancelled: {qs:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        ended.error.as_deref(),
        Some(airlock_hub::CANCELLED),
        "{ended:?}"
    );

    // One address holds at most max_connections_per_address (64) open
    // connections to the Flight SQL port; one more is closed at once.
    let addr = running.info.flight_sql.replace("grpc+tls://", "");
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(tokio::net::TcpStream::connect(&addr).await.expect("tcp"));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let over = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let Ok(ch) = try_channel(&running).await else {
            return false;
        };
        let mut c = FlightSqlServiceClient::new(ch);
        c.set_token(token.clone());
        c.get_catalogs().await.is_ok()
    })
    .await;
    assert!(!matches!(over, Ok(true)), "a 65th connection was served");
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut c = flight_client(&running, &token).await;
    c.get_catalogs()
        .await
        .expect("served again once they closed");

    // The Python half: ADBC from PyPI.
    let Some(python) = python() else { return };
    let dp_queries: Vec<String> = demo::ANALYSES
        .iter()
        .map(|(_, sql)| sql.to_string())
        .chain([demo::DP_EXTRA.1.to_string()])
        .collect();
    let cfg = serde_json::json!({
        "url": running.info.flight_sql,
        "ca": running.info.ca,
        "tokens": running.info.tokens,
        "mine": ["demo", "demo_crypto", "demo_dp"],
        "columns": columns,
        "overlap": OVERLAP,
        "overlap_qualified": OVERLAP_QUALIFIED,
        "overlap_rows": json_rows(&overlap.batches),
        "template_rows": json_rows(&template.batches),
        "refusal": refusal,
        "dp_queries": dp_queries,
    });
    let cfg_path = tmp.path().join("flight_sql.json");
    std::fs::write(&cfg_path, cfg.to_string()).expect("cfg");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flight_sql.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&cfg_path)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "flight_sql.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all Flight SQL checks passed"), "{stdout}");
}
