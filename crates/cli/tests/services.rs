//! The hub and nodes as real processes on loopback (`airlock up`): the demo
//! end to end, a wire tap, the authentication matrix, crash safety, and 1:N
//! with policy sync.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_cli::cluster::{CliError, Cluster};
use airlock_cli::up::{self, Running, UpOptions};
use airlock_cli::{data, demo, remote};
use airlock_crypto::pki::Ca;
use airlock_crypto::{CollaborationSecret, PseudonymKey};
use airlock_policy::Control;
use airlock_protocol::{Fragment, FragmentColumn, ScanFragment, Treatment};
use airlock_service::api::QueryState;
use airlock_service::client::{HubClient, Method};
use airlock_service::links::node_server_name;
use airlock_service::proto;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use common::{approve_pending, demo_emails, find_emails, rows, solo_toml};
use datafusion::arrow::array::{Array, AsArray};
use futures::TryStreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_airlock"))
}

async fn start(dir: &Path, rows: usize, tap: Option<PathBuf>) -> Running {
    start_with(dir, rows, tap, None).await
}

async fn start_with(
    dir: &Path,
    rows: usize,
    tap: Option<PathBuf>,
    results_postgres: Option<String>,
) -> Running {
    data::write_demo(dir, rows, true).expect("demo data");
    up::start(&UpOptions {
        dir: dir.to_path_buf(),
        rows,
        wire_tap: tap,
        bin: bin(),
        results_postgres,
        results_s3: None,
        hub_limits: Default::default(),
        node_limits: Default::default(),
    })
    .await
    .expect("airlock up")
}

const OVERLAP: &str = "SELECT a.segment, COUNT(DISTINCT a.email) AS people \
    FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_end_to_end_through_up_with_a_wire_tap() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let tap = tmp.path().join("wire.tap");
    let running = start(&dir, 60_000, Some(tap.clone())).await;
    let local = Cluster::open(&dir.join("collaboration.toml"), None)
        .await
        .expect("in-process cluster");
    let analyst = running.client(&running.info.analyst).expect("client");

    // The canonical analyses release the same rows as the in-process engine.
    for (title, sql) in demo::ANALYSES {
        let remote = remote::query(&analyst, "demo", sql)
            .await
            .unwrap_or_else(|e| panic!("{title}: {e}"));
        let here = local.query("advertiser", sql).await.expect("in process");
        assert!(!rows(&remote.batches).is_empty(), "{title}: rows released");
        assert_eq!(rows(&remote.batches), rows(&here.batches), "{title}");
    }
    // Retention: a result released longer ago than the collaboration's
    // period (30 days by default; here its release time is moved back in
    // the hub's own database) is deleted, not served, and the deletion is
    // in the audit chain.
    let (code, text) = analyst
        .raw(Method::GET, "/v1/collaborations/demo/queries", None)
        .await
        .expect("list");
    assert_eq!(code.as_u16(), 200, "{text}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&text).expect("json");
    let (old, fresh) = (
        listed[0]["id"].as_str().expect("id").to_string(),
        listed[1]["id"].as_str().expect("id").to_string(),
    );
    let db = airlock_store::Store::open(&format!(
        "sqlite:{}",
        up::cluster_dir(&dir).join("hub/hub.db").display()
    ))
    .await
    .expect("hub db");
    let month_ago = airlock_store::now_ms() - 31 * 86_400_000;
    sqlx::query("UPDATE queries SET updated_at_ms = $1 WHERE id = $2")
        .bind(month_ago)
        .bind(&old)
        .execute(db.pool())
        .await
        .expect("age a result");
    let result = |id: String| {
        let analyst = &analyst;
        async move {
            analyst
                .raw(Method::GET, &format!("/v1/queries/{id}/result"), None)
                .await
                .expect("fetch")
        }
    };
    let (code, text) = result(old.clone()).await;
    assert_eq!(code.as_u16(), 410, "{text}");
    assert_eq!(
        result(fresh).await.0.as_u16(),
        200,
        "a fresh result is served"
    );
    let deleted = db
        .audit("demo")
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == "result.deleted" && e.payload.contains(&old))
        .count();
    assert_eq!(deleted, 1);
    // The record of processing: parties, data categories, and every
    // analysis with how it ended, from the verified chain.
    let record = airlock_cli::records::fetch(&analyst, "demo", 0, airlock_store::now_ms())
        .await
        .expect("record");
    let parties: Vec<&str> = record["parties"]
        .as_array()
        .expect("parties")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(parties, vec!["publisher", "advertiser"]);
    assert_eq!(record["recipients"], serde_json::json!(["advertiser"]));
    let outcomes: Vec<&str> = record["analyses"]
        .as_array()
        .expect("analyses")
        .iter()
        .filter_map(|a| a["outcome"].as_str())
        .collect();
    assert_eq!(
        outcomes,
        vec!["released; result deleted after retention", "released"],
        "{record}"
    );
    let md = airlock_cli::records::markdown(&record);
    assert!(md.contains("## Analyses in the period") && md.contains("| advertiser | released |"));
    // A record is never built on a tampered chain.
    let mut chain = db.audit("demo").await.expect("audit");
    chain[1].payload = chain[1].payload.replacen('{', "{\"tampered\": true, ", 1);
    let collab = airlock_policy::Collaboration::from_toml(
        &std::fs::read_to_string(dir.join("collaboration.toml")).expect("toml"),
        "c",
    )
    .expect("collab");
    assert!(airlock_cli::records::build(&collab, &chain, 0, i64::MAX).is_err());
    // The refused ones are refused for the same reason.
    for (what, sql) in demo::REFUSED {
        let remote = remote::query(&analyst, "demo", sql).await;
        let here = local.query("advertiser", sql).await;
        match (remote, here) {
            (
                Err(CliError::Refused { refusal: r, .. }),
                Err(CliError::Refused { refusal: h, .. }),
            ) => assert_eq!(r, h, "{what}"),
            (r, h) => panic!(
                "{what}: expected two refusals, got {:?} / {:?}",
                r.err(),
                h.err()
            ),
        }
    }

    // The binary against the hub: exit 0 with rows, 3 for a refusal.
    let token = &running.info.tokens[&running.info.analyst];
    let cli = |sql: &str| {
        Command::new(bin())
            .args(["query", "--hub", &running.info.hub, "--token", token])
            .arg("--ca")
            .arg(&running.info.ca)
            .args(["--collab", "demo", "--format", "csv", sql])
            .env_remove("AIRLOCK_HUB")
            .output()
            .expect("run airlock")
    };
    let ok = cli(OVERLAP);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("segment,people"));
    let refused = cli("SELECT * FROM audience");
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused [aggregation-required]"));

    // Every byte between the hub and the nodes: no raw email; and the tap
    // did capture the traffic (it holds the keyed pseudonyms of real emails).
    let bytes = std::fs::read(&tap).expect("tap");
    let emails = demo_emails(&dir).await;
    assert!(
        bytes.len() > 50_000,
        "tap holds the traffic ({} bytes)",
        bytes.len()
    );
    let leaked = find_emails(&bytes, &emails);
    assert!(
        leaked.is_empty(),
        "raw emails on the wire: {:?}",
        &leaked[..leaked.len().min(3)]
    );
    let secret = node_secret(&dir, "publisher");
    let key = PseudonymKey::derive(&secret, "demo", "email");
    let tokens: HashSet<[u8; 16]> = emails.iter().map(|e| key.token(e.as_bytes())).collect();
    let seen: HashSet<&[u8]> = bytes
        .windows(16)
        .filter(|w| <[u8; 16]>::try_from(*w).is_ok_and(|t| tokens.contains(&t)))
        .collect();
    let seen = seen.len();
    assert!(
        seen > 100,
        "the tap holds pseudonyms of real emails ({seen})"
    );
    // The secret was generated on one node and sealed to the other: both
    // nodes hold the same one, and it never crossed in the clear.
    let other = node_secret(&dir, "advertiser");
    assert_eq!(secret.to_hex(), other.to_hex());
    assert!(!contains(&bytes, secret.to_hex().as_bytes()));
    drop(running);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The secret a node keeps for the collaboration (one per collaboration).
fn node_secret(dir: &Path, member: &str) -> CollaborationSecret {
    let state = up::cluster_dir(dir)
        .join("nodes")
        .join(member)
        .join("state");
    let mut found = Vec::new();
    for e in std::fs::read_dir(&state).expect("state dir").flatten() {
        let p = e.path().join("secret");
        if p.exists() {
            let toml = std::fs::read_to_string(e.path().join("policy.toml")).expect("policy");
            if toml.contains("name = \"demo\"") {
                found.push(std::fs::read_to_string(p).expect("secret"));
            }
        }
    }
    assert_eq!(found.len(), 1, "one secret for the demo on {member}'s node");
    CollaborationSecret::from_hex(found[0].trim()).expect("hex")
}

/// A Flight client to the publisher's node with the hub's own certificate.
async fn as_hub_to_publisher(running: &Running, dir: &Path) -> FlightServiceClient<Channel> {
    let ca = read(&running.info.ca);
    let hub_dir = up::cluster_dir(dir).join("hub");
    let (cert, key) = (
        read(&hub_dir.join("tls.crt")),
        read(&hub_dir.join("tls.key")),
    );
    flight(
        &running.info.nodes["publisher"],
        "publisher",
        &ca,
        Some((&cert, &key)),
    )
    .await
    .expect("flight")
}

/// A Flight client to a node with the given client identity.
async fn flight(
    url: &str,
    member: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<FlightServiceClient<Channel>, String> {
    airlock_service::install_crypto_provider();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(node_server_name(member));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let ch = Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    Ok(FlightServiceClient::new(ch))
}

async fn hello(client: Result<FlightServiceClient<Channel>, String>) -> Result<(), String> {
    let mut c = client?;
    c.do_action(arrow_flight::Action {
        r#type: proto::action::HELLO.into(),
        body: Vec::new().into(),
    })
    .await
    .map(|_| ())
    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The demo file with another name and only the publisher.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_matrix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let running = start(&dir, 5_000, None).await;
    let info = running.info.clone();
    let ca = read(&info.ca);
    let with = |token: &str| HubClient::new(&info.hub, token, ca.as_bytes()).expect("client");
    let publisher = running.client("publisher").expect("client");
    let advertiser = running.client("advertiser").expect("client");

    // A collaboration the advertiser is not in, with a query in it.
    publisher
        .create(&solo_toml("solo"))
        .await
        .expect("create solo");
    let solo_q = publisher
        .submit(
            "solo",
            "SELECT a.segment, COUNT(DISTINCT a.email) AS n FROM audience a GROUP BY a.segment",
        )
        .await
        .expect("submit");
    let solo_q = publisher.wait(solo_q, |_| {}).await.expect("wait");
    assert_eq!(solo_q.state, QueryState::Released);
    let demo_q = advertiser.submit("demo", OVERLAP).await.expect("submit");
    let demo_q = advertiser.wait(demo_q, |_| {}).await.expect("wait");
    assert_eq!(demo_q.state, QueryState::Released);

    // Tokens: missing, garbage, expired, revoked → 401 on every route.
    let store = airlock_store::Store::open(&format!(
        "sqlite:{}",
        up::cluster_dir(&dir).join("hub/hub.db").display()
    ))
    .await
    .expect("store");
    let expired = store
        .create_token("advertiser", Some(1))
        .await
        .expect("token")
        .token;
    let revoked = store.create_token("advertiser", None).await.expect("token");
    let (code, _) = with(&revoked.token)
        .raw(Method::GET, "/v1/whoami", None)
        .await
        .expect("call");
    assert_eq!(
        code.as_u16(),
        200,
        "a fresh token works before it is revoked"
    );
    assert!(store.revoke_token(&revoked.id).await.expect("revoke"));
    let stored: Vec<String> = sqlx_tokens(&store).await;
    assert!(stored.len() >= 4, "the token rows were read");
    for t in info.tokens.values() {
        let secret = t.rsplit('_').next().expect("secret part");
        assert!(secret.len() >= 32);
        assert!(
            stored.iter().all(|v| !v.contains(secret)),
            "tokens are stored hashed, never as issued"
        );
    }
    let body = serde_json::json!({"sql": OVERLAP});
    let routes: Vec<(Method, String, Option<serde_json::Value>)> = airlock_service::api::ROUTES
        .iter()
        .filter(|(m, p, _)| *p != "/openapi.json" && (*m, *p) != ("post", "/v1/session"))
        .map(|(m, p, _)| {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).expect("method");
            let path = p.replace("{name}", "demo").replace("{id}", &demo_q.id);
            let body = (*m != "get").then(|| body.clone());
            (method, path, body)
        })
        .collect();
    for bad in ["", "garbage", "alk_", "alk_00_00", &expired, &revoked.token] {
        for (m, p, b) in &routes {
            let (code, text) = with(bad).raw(m.clone(), p, b.clone()).await.expect("call");
            assert_eq!(code.as_u16(), 401, "{m} {p} with token {bad:?}: {text}");
            assert!(
                !text.contains("demo") && !text.contains("advertiser"),
                "{text}"
            );
        }
        // Signing in to the console with it is refused the same way.
        let (code, text) = with("")
            .raw(
                Method::POST,
                "/v1/session",
                Some(serde_json::json!({ "token": bad })),
            )
            .await
            .expect("call");
        assert_eq!(code.as_u16(), 401, "sign-in with {bad:?}: {text}");
    }
    // The OpenAPI document is public and lists every route.
    let (code, text) = with("")
        .raw(Method::GET, "/openapi.json", None)
        .await
        .expect("call");
    assert_eq!(code.as_u16(), 200);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    for (m, p, _) in airlock_service::api::ROUTES {
        assert!(doc["paths"][p][m].is_object(), "{m} {p} documented");
    }

    // A budget: none for the demo collaboration; another member's
    // collaboration answers the same 404 as one that does not exist.
    let b = advertiser.budget("demo").await.expect("budget");
    assert_eq!((b.collaboration_left, b.member_left), (None, None));
    let (c1, t1) = advertiser
        .raw(Method::GET, "/v1/collaborations/solo/budget", None)
        .await
        .expect("call");
    let (c2, t2) = advertiser
        .raw(Method::GET, "/v1/collaborations/nope/budget", None)
        .await
        .expect("call");
    assert_eq!((c1.as_u16(), &t1), (404, &t2));
    assert_eq!(c2.as_u16(), 404);

    // Another member's collaboration: the same 404 as one that does not exist.
    let (c1, t1) = advertiser
        .raw(Method::GET, "/v1/collaborations/solo", None)
        .await
        .expect("call");
    let (c2, t2) = advertiser
        .raw(Method::GET, "/v1/collaborations/nope", None)
        .await
        .expect("call");
    assert_eq!(c2.as_u16(), 404);
    assert_eq!((c1.as_u16(), &t1), (404, &t2));
    let (c1, t1) = advertiser
        .raw(
            Method::POST,
            "/v1/collaborations/solo/queries",
            Some(body.clone()),
        )
        .await
        .expect("call");
    assert_eq!((c1.as_u16(), &t1), (404, &t2));
    let (c1, t1) = advertiser
        .raw(Method::GET, "/v1/collaborations/solo/audit", None)
        .await
        .expect("call");
    assert_eq!((c1.as_u16(), &t1), (404, &t2));
    let (c1, t1) = advertiser
        .raw(
            Method::GET,
            &format!("/v1/queries/{}/result", solo_q.id),
            None,
        )
        .await
        .expect("call");
    let (c2, t2) = advertiser
        .raw(Method::GET, "/v1/queries/0123456789abcdef/result", None)
        .await
        .expect("call");
    assert_eq!((c1.as_u16(), &t1), (c2.as_u16(), &t2));
    assert_eq!(c1.as_u16(), 404);
    let list: Vec<serde_json::Value> = advertiser
        .call(Method::GET, "/v1/collaborations", None::<&()>)
        .await
        .expect("list");
    assert_eq!(list.len(), 1, "the advertiser sees only the demo: {list:?}");

    // Abilities: the publisher may neither query the demo nor read its results.
    let (code, text) = publisher
        .raw(
            Method::POST,
            "/v1/collaborations/demo/queries",
            Some(body.clone()),
        )
        .await
        .expect("call");
    assert_eq!(code.as_u16(), 403, "{text}");
    assert!(text.contains("'query' ability"));
    let (code, _) = publisher
        .raw(
            Method::GET,
            &format!("/v1/queries/{}/result", demo_q.id),
            None,
        )
        .await
        .expect("call");
    assert_eq!(code.as_u16(), 404);
    let (code, _) = advertiser
        .raw(
            Method::GET,
            &format!("/v1/queries/{}/result", demo_q.id),
            None,
        )
        .await
        .expect("call");
    assert_eq!(code.as_u16(), 200, "the receiver reads the result");

    // Nodes: only the trusted hub's client certificate gets in.
    let node_url = &info.nodes["publisher"];
    let hub_dir = up::cluster_dir(&dir).join("hub");
    let hub_id = (
        read(&hub_dir.join("tls.crt")),
        read(&hub_dir.join("tls.key")),
    );
    hello(flight(node_url, "publisher", &ca, Some((&hub_id.0, &hub_id.1))).await)
        .await
        .expect("the hub's certificate is accepted");
    let none = hello(flight(node_url, "publisher", &ca, None).await).await;
    assert!(none.is_err(), "no client certificate: {none:?}");
    let other = Ca::generate("another cluster").expect("ca");
    let stranger = other
        .issue("hub", &["localhost", "127.0.0.1", "hub.airlock"])
        .expect("leaf");
    let r = hello(
        flight(
            node_url,
            "publisher",
            &ca,
            Some((&stranger.cert_pem, &stranger.key_pem)),
        )
        .await,
    )
    .await;
    assert!(r.is_err(), "a certificate from another cluster: {r:?}");
    let adv_dir = up::cluster_dir(&dir).join("nodes/advertiser");
    let peer = (
        read(&adv_dir.join("tls.crt")),
        read(&adv_dir.join("tls.key")),
    );
    let r = hello(flight(node_url, "publisher", &ca, Some((&peer.0, &peer.1))).await).await;
    assert!(
        matches!(&r, Err(m) if m.contains("not a trusted hub")),
        "a same-CA certificate that is not the hub's: {r:?}"
    );
    // The hub refuses a node that presents another member's name.
    let wrong = flight(node_url, "advertiser", &ca, Some((&hub_id.0, &hub_id.1))).await;
    assert!(hello(wrong).await.is_err(), "node name is checked");
    store.close().await;
    drop(running);
}

async fn sqlx_tokens(store: &airlock_store::Store) -> Vec<String> {
    use sqlx::Row;
    sqlx::query("SELECT * FROM tokens")
        .fetch_all(store.pool())
        .await
        .expect("tokens")
        .iter()
        .flat_map(|r| {
            (0..r.len())
                .filter_map(|i| r.try_get::<String, _>(i).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_hub_mid_query_never_releases_twice() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let mut running = start(&dir, 200_000, None).await;
    let analyst = running.client("advertiser").expect("client");
    let q = analyst
        .submit("demo", demo::ANALYSES[1].1)
        .await
        .expect("submit");
    let hub_pid = running.info.pids["hub"];
    let killed = Command::new("kill")
        .args(["-9", &hub_pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    println!("killed the hub with the query {}", q.state);

    // Restart the hub on the same configuration and database.
    let up::Started {
        child: mut hub,
        url,
        ..
    } = up::spawn(
        &bin(),
        "hub",
        &[
            "hub",
            "serve",
            "--config",
            &running.info.hub_config.to_string_lossy(),
        ],
    )
    .expect("restart");
    let token = &running.info.tokens["advertiser"];
    let client = HubClient::with_ca_file(&url, token, &running.info.ca).expect("client");
    let after = client.query(&q.id).await.expect("query after restart");
    println!("after the restart the query is {}", after.state);
    assert!(
        matches!(after.state.as_str(), "failed" | "released"),
        "ends failed or released, not {}",
        after.state
    );
    if after.state == QueryState::Failed {
        assert!(after
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("interrupted"));
        let r = client.result(&q.id).await;
        assert!(r.is_err(), "no result for a failed query");
    }
    // The same query resubmitted runs on the restarted hub.
    let again = client
        .submit("demo", demo::ANALYSES[1].1)
        .await
        .expect("submit");
    let again = client.wait(again, |_| {}).await.expect("wait");
    assert_eq!(again.state, QueryState::Released);

    let text = client.audit("demo").await.expect("audit");
    let entries = airlock_store::parse_jsonl(&text).expect("jsonl");
    airlock_store::verify_chain(&entries).expect("the chain verifies after the crash");
    // What the querier reads carries no row counts of fragments (ATTACKS
    // 29): `fragments.ran` holds the number of fragments only, and the
    // query's view has no rows in its progress.
    let ran: Vec<&airlock_store::AuditEntry> = entries
        .iter()
        .filter(|e| e.kind == "fragments.ran")
        .collect();
    assert!(!ran.is_empty(), "fragments.ran entries");
    for e in &ran {
        let payload: serde_json::Value = serde_json::from_str(&e.payload).expect("json");
        let keys: Vec<&String> = payload.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["fragments", "query"], "{}", e.payload);
    }
    for e in &entries {
        assert!(
            !e.payload.contains("rows_streamed"),
            "{}: {}",
            e.kind,
            e.payload
        );
    }
    let (_, view) = client
        .raw(Method::GET, &format!("/v1/queries/{}", again.id), None)
        .await
        .expect("query view");
    // `rows` is the released result's row count (a released aggregate);
    // no progress field counts rows.
    let view: serde_json::Value = serde_json::from_str(&view).expect("json");
    if let Some(p) = view.get("progress").and_then(|p| p.as_object()) {
        assert!(p.keys().all(|k| k.starts_with("fragments_")), "{view}");
    }
    assert!(!view.to_string().contains("rows_streamed"), "{view}");
    let ends: Vec<&str> = entries
        .iter()
        .filter(|e| e.payload.contains(&q.id))
        .map(|e| e.kind.as_str())
        .filter(|k| matches!(*k, "query.released" | "query.failed" | "query.refused"))
        .collect();
    assert_eq!(
        ends.len(),
        1,
        "exactly one end for the interrupted query: {ends:?}"
    );
    // An edited entry is named by `airlock audit verify`.
    let file = tmp.path().join("audit.jsonl");
    std::fs::write(
        &file,
        text.replacen("\"query.submitted\"", "\"query.submittex\"", 1),
    )
    .expect("write");
    let out = Command::new(bin())
        .args(["audit", "verify", "--file"])
        .arg(&file)
        .output()
        .expect("verify");
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    let first = entries
        .iter()
        .find(|e| e.kind == "query.submitted")
        .expect("a submission");
    assert!(msg.contains(&format!("entry {}", first.seq)), "{msg}");
    drop(hub.stdin.take());
    let _ = hub.wait();
    running.stop();
}

/// The scan fragment of the publisher's audience in collaboration `c`.
fn audience_scan(c: &str) -> Fragment {
    Fragment::Scan(ScanFragment {
        collaboration: c.into(),
        query: "0123456789abcdef0123456789abcdef".into(),
        querier: "advertiser".into(),
        table: "audience".into(),
        columns: vec![
            FragmentColumn {
                name: "email".into(),
                treatment: Treatment::Pseudonym {
                    contract: "email".into(),
                },
            },
            FragmentColumn {
                name: "segment".into(),
                treatment: Treatment::Raw,
            },
        ],
        filter: None,
        template: None,
        purpose: None,
        dp: None,
    })
}

async fn tokens_of(
    client: &mut FlightServiceClient<Channel>,
    c: &str,
    version: i64,
) -> Result<HashSet<Vec<u8>>, tonic::Status> {
    let ticket = serde_json::to_vec(&proto::Ticket {
        collaboration: c.into(),
        policy_version: version,
        fragment: audience_scan(c),
    })
    .expect("ticket");
    let stream = client
        .do_get(arrow_flight::Ticket {
            ticket: ticket.into(),
        })
        .await?
        .into_inner()
        .map_err(|s| FlightError::Tonic(Box::new(s)));
    let batches: Vec<_> = FlightRecordBatchStream::new_from_flight_data(stream)
        .try_collect()
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let mut out = HashSet::new();
    for b in batches {
        let col = b.column(0).as_binary::<i32>();
        for i in 0..col.len() {
            out.insert(col.value(i).to_vec());
        }
    }
    Ok(out)
}

/// The publisher's own ledger for the demo, in its node's state.
async fn publisher_ledger(dir: &Path) -> airlock_store::Store {
    let state = up::cluster_dir(dir)
        .join("nodes")
        .join("publisher")
        .join("state");
    let found: Vec<PathBuf> = std::fs::read_dir(&state)
        .expect("state dir")
        .flatten()
        .map(|e| e.path().join(airlock_service::ledger::EMBEDDED_LEDGER))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(found.len(), 1, "one ledger on the publisher's node");
    airlock_store::Store::open(&format!("sqlite:{}", found[0].display()))
        .await
        .expect("ledger")
}

async fn epsilon_left_on(ledger: &airlock_store::Store) -> f64 {
    ledger
        .remaining("demo", None, airlock_store::now_ms())
        .await
        .expect("budget")
        .epsilon
}

/// Under differential privacy, a test double of a hub that skips its own
/// debit and speaks the real protocol (a `DoGet` ticket with the hub's
/// certificate) meets the owner's node's refusal once its budget is
/// spent; a fragment that does not declare its cost is refused outright;
/// and a node killed (`kill -9`) between its debit and its reply keeps
/// the debit when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_node_keeps_its_own_budget_whatever_the_hub_does() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    data::write_demo(&dir, 300_000, true).expect("demo data");
    std::fs::write(
        dir.join("collaboration.toml"),
        data::collaboration_toml_dp(),
    )
    .expect("dp collaboration");
    let mut running = up::start(&UpOptions {
        dir: dir.clone(),
        rows: 300_000,
        wire_tap: None,
        bin: bin(),
        results_postgres: None,
        results_s3: None,
        hub_limits: Default::default(),
        node_limits: Default::default(),
    })
    .await
    .expect("airlock up");
    let ledger = publisher_ledger(&dir).await;
    assert!((epsilon_left_on(&ledger).await - 3.0).abs() < 1e-9);
    let scan = |dp: bool, query: &str| {
        let Fragment::Scan(mut s) = audience_scan("demo") else {
            unreachable!()
        };
        s.query = query.to_string();
        s.dp = dp.then(|| airlock_protocol::ScanDp {
            tables: vec!["audience".into(), "purchases".into()],
            partition_selection: false,
        });
        s
    };
    let ticket = |s: ScanFragment| {
        serde_json::to_vec(&proto::Ticket {
            collaboration: "demo".into(),
            policy_version: 1,
            fragment: Fragment::Scan(s),
        })
        .expect("ticket")
    };
    let get = |client: FlightServiceClient<Channel>, t: Vec<u8>| async move {
        let mut client = client;
        let stream = client
            .do_get(arrow_flight::Ticket { ticket: t.into() })
            .await?
            .into_inner()
            .map_err(|s| FlightError::Tonic(Box::new(s)));
        FlightRecordBatchStream::new_from_flight_data(stream)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| match e {
                FlightError::Tonic(s) => *s,
                other => tonic::Status::internal(other.to_string()),
            })
    };
    let refusal_of = |s: tonic::Status| {
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
        proto::parse_refusal(s.message()).expect("a typed refusal")
    };
    let client = as_hub_to_publisher(&running, &dir).await;
    // No declared cost: refused before any debit.
    let r = refusal_of(
        get(client.clone(), ticket(scan(false, "nodebit00")))
            .await
            .expect_err("undeclared"),
    );
    assert_eq!(r.control, Control::DifferentialPrivacy, "{r}");
    assert!((epsilon_left_on(&ledger).await - 3.0).abs() < 1e-9);
    // A debit, then the node is killed before it replies.
    let pending = tokio::spawn(get(client.clone(), ticket(scan(true, "killed00"))));
    let start = std::time::Instant::now();
    while epsilon_left_on(&ledger).await > 2.0 + 1e-9 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "no debit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert!(running.kill("node publisher"), "the publisher's node");
    assert!(
        pending.await.expect("task").is_err(),
        "the node was killed before it finished its reply"
    );
    assert!((epsilon_left_on(&ledger).await - 2.0).abs() < 1e-9);
    drop(ledger);
    // Back up from the same state directory: the debit is still there,
    // and two more fragments of the double spend the rest; then the node
    // refuses.
    let config = up::cluster_dir(&dir)
        .join("nodes")
        .join("publisher")
        .join("node.toml");
    let mut again = up::spawn(
        &bin(),
        "node publisher",
        &["node", "serve", "--config", &config.to_string_lossy()],
    )
    .expect("the node again");
    let ledger = publisher_ledger(&dir).await;
    assert!((epsilon_left_on(&ledger).await - 2.0).abs() < 1e-9);
    let hub_dir = up::cluster_dir(&dir).join("hub");
    let client = flight(
        &again.url,
        "publisher",
        &read(&running.info.ca),
        Some((
            &read(&hub_dir.join("tls.crt")),
            &read(&hub_dir.join("tls.key")),
        )),
    )
    .await
    .expect("flight");
    for q in ["skip0001", "skip0002"] {
        get(client.clone(), ticket(scan(true, q)))
            .await
            .unwrap_or_else(|e| panic!("{q}: {e:?}"));
    }
    for q in ["skip0003", "skip0004"] {
        let r = refusal_of(
            get(client.clone(), ticket(scan(true, q)))
                .await
                .expect_err("spent"),
        );
        assert_eq!(r.control, Control::PrivacyBudget, "{r}");
        assert_eq!(r.table.as_deref(), Some("audience"), "{r}");
    }
    assert!(epsilon_left_on(&ledger).await.abs() < 1e-9);
    drop(again.child.stdin.take());
    let _ = again.child.wait();
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_collaborations_over_one_dataset_with_policy_sync() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let running = start(&dir, 20_000, None).await;
    let publisher = running.client("publisher").expect("client");
    let advertiser = running.client("advertiser").expect("client");
    let base = data::collaboration_toml(true);
    let names: Vec<String> = (1..=20).map(|i| format!("c{i:02}")).collect();
    for n in &names {
        let v = publisher
            .create(&base.replace("name = \"demo\"", &format!("name = \"{n}\"")))
            .await
            .expect("create");
        let v = advertiser
            .approve(n, Some(&v.sha256))
            .await
            .expect("approve");
        assert!(v.sync_errors.is_empty(), "{n}: {:?}", v.sync_errors);
    }
    // A misconfigured collaboration: its node refuses it; the others go on.
    let broken = base
        .replace("name = \"demo\"", "name = \"broken\"")
        .replace("\"consent\"]", "\"consent\", \"no_such_column\"]");
    let v = publisher.create(&broken).await.expect("stored");
    let seen = advertiser
        .approve("broken", Some(&v.sha256))
        .await
        .expect("approve");
    // The advertiser reads that the publisher's node did not take it; only
    // the publisher reads why.
    assert!(
        seen.sync_errors
            .iter()
            .all(|e| !e.contains("no_such_column"))
            && !seen.sync_errors.is_empty(),
        "{:?}",
        seen.sync_errors
    );
    let v: airlock_service::api::CollaborationView = publisher
        .call(Method::GET, "/v1/collaborations/broken", None::<&()>)
        .await
        .expect("show");
    assert!(
        v.sync_errors.iter().any(|e| e.contains("no_such_column")),
        "{:?}",
        v.sync_errors
    );
    let q = advertiser.submit("broken", OVERLAP).await.expect("submit");
    let q = advertiser.wait(q, |_| {}).await.expect("wait");
    assert_eq!(q.state, QueryState::Failed);
    let mut before = BTreeMap::new();
    for n in &names {
        let r = remote::query(&advertiser, n, OVERLAP).await.expect(n);
        before.insert(n.clone(), rows(&r.batches));
    }
    let first = &before["c01"];
    assert!(
        before.values().all(|r| r == first),
        "same data, same rules, same answer"
    );

    // Each collaboration has its own secret: one email, different pseudonyms.
    let mut node = as_hub_to_publisher(&running, &dir).await;
    let t1 = tokens_of(&mut node, "c01", 1).await.expect("c01");
    let t2 = tokens_of(&mut node, "c02", 1).await.expect("c02");
    assert_eq!(t1.len(), t2.len());
    assert!(
        t1.is_disjoint(&t2),
        "pseudonyms differ between collaborations"
    );

    // One change to the publisher's dataset reaches every collaboration using it.
    // The publisher's client approves each new version it made; each then
    // waits for the advertiser, whose approval brings it to both nodes.
    let updated = publisher
        .update_dataset(&airlock_service::api::DatasetUpdate {
            dataset: "publisher_audience".into(),
            min_distinct_identities: Some(120),
        })
        .await
        .expect("update");
    let mut updated = updated;
    for u in &mut updated {
        assert_eq!(
            u.sync_errors,
            vec![format!(
                "version {} is waiting for the approval of 'advertiser'",
                u.version
            )]
        );
        u.sync_errors = advertiser
            .approve(&u.collaboration, None)
            .await
            .expect("approve")
            .sync_errors;
    }
    let synced: HashSet<&str> = updated
        .iter()
        .filter(|u| u.sync_errors.is_empty() && u.version == 2)
        .map(|u| u.collaboration.as_str())
        .collect();
    for n in names.iter().map(String::as_str).chain(["demo"]) {
        assert!(synced.contains(n), "{n} took version 2: {updated:?}");
    }
    // A fragment planned under the old version is refused by the node.
    let stale = tokens_of(&mut node, "c01", 1)
        .await
        .expect_err("stale version");
    assert_eq!(stale.code(), tonic::Code::PermissionDenied);
    let refusal = proto::parse_refusal(stale.message()).expect("a typed refusal");
    assert_eq!(refusal.control, Control::PolicyVersion);
    tokens_of(&mut node, "c01", 2)
        .await
        .expect("current version runs");
    // The next query applies the new k everywhere.
    let small_before = first
        .iter()
        .filter(|r| {
            r.rsplit(" | ")
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n < 120)
        })
        .count();
    assert!(
        small_before > 0,
        "some groups had fewer than 120 people: {first:?}"
    );
    for n in &names {
        let r = remote::query(&advertiser, n, OVERLAP).await.expect(n);
        let after = rows(&r.batches);
        assert_eq!(after.len(), first.len() - small_before, "{n}: {after:?}");
    }
    // A bad update changes nothing.
    let (code, _) = publisher
        .raw(
            Method::POST,
            "/v1/datasets/update",
            Some(serde_json::json!({"path": "audience.parquet", "min_distinct_identities": 1})),
        )
        .await
        .expect("call");
    assert_eq!(code.as_u16(), 400);
    let v: airlock_service::api::CollaborationView = publisher
        .call(Method::GET, "/v1/collaborations/c07", None::<&()>)
        .await
        .expect("show");
    assert_eq!(v.version, 2);
    drop(running);
}

async fn action(
    client: &mut FlightServiceClient<Channel>,
    kind: &str,
    body: serde_json::Value,
) -> Result<(), tonic::Status> {
    client
        .do_action(arrow_flight::Action {
            r#type: kind.into(),
            body: serde_json::to_vec(&body).expect("json").into(),
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_side_and_node_side_policy_and_secret_attacks_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let running = start(&dir, 5_000, None).await;
    let publisher = running.client("publisher").expect("client");
    let advertiser = running.client("advertiser").expect("client");
    let base = data::collaboration_toml(true);

    // The advertiser may not weaken the publisher's rules.
    let weaker = base.replacen(
        "min_distinct_identities = 50",
        "min_distinct_identities = 2",
        1,
    );
    let (code, text) = advertiser
        .raw(
            Method::PUT,
            "/v1/collaborations/demo",
            Some(serde_json::json!({ "toml": weaker })),
        )
        .await
        .expect("call");
    assert_eq!(code.as_u16(), 403, "{text}");
    assert!(
        text.contains("the datasets, tables and approvals of 'publisher'"),
        "{text}"
    );
    // ... but may change its own table.
    let own = base.replace(
        "measures = { amount_cents = [\"sum\", \"avg\", \"count\"], order_id = [\"count\", \"count_distinct\"] }\nrule = { type = \"aggregation\", min_distinct_identities = 50 }",
        "measures = { amount_cents = [\"sum\", \"avg\", \"count\"], order_id = [\"count\", \"count_distinct\"] }\nrule = { type = \"aggregation\", min_distinct_identities = 60 }",
    );
    assert_ne!(own, base);
    let v = advertiser.apply("demo", &own).await.expect("own change");
    assert_eq!(v.version, 2);
    // It involves the publisher's data, so it waits for the publisher.
    assert_eq!(
        v.sync_errors,
        vec!["version 2 is waiting for the approval of 'publisher'".to_string()]
    );
    let v = publisher
        .approve("demo", Some(&v.sha256))
        .await
        .expect("approve");
    assert_eq!(
        (v.version, v.sync_errors.len()),
        (2, 0),
        "{:?}",
        v.sync_errors
    );

    // A hub that pushes such a change anyway is refused by the owner's node.
    let mut node = as_hub_to_publisher(&running, &dir).await;
    let pushed = action(
        &mut node,
        proto::action::INSTALL,
        serde_json::json!({"version": 3, "toml": weaker, "applied_by": "advertiser"}),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        pushed.code(),
        tonic::Code::PermissionDenied,
        "{}",
        pushed.message()
    );

    // A collaboration file cannot say where a dataset is: a path (inside
    // the data directory or not) is refused by the hub before anything is
    // stored, and the refusal does not echo it.
    for (name, path) in [
        ("up", "../outside.parquet"),
        ("abs", "/etc/passwd"),
        ("inside", "audience.parquet"),
    ] {
        let escape = base
            .replace("name = \"demo\"", &format!("name = \"{name}\""))
            .replace(
                "owner = \"publisher\"\n",
                &format!("owner = \"publisher\"\npath = \"{path}\"\nformat = \"parquet\"\n"),
            );
        assert_ne!(escape, base);
        let (code, text) = publisher
            .raw(
                Method::POST,
                "/v1/collaborations",
                Some(serde_json::json!({ "toml": escape })),
            )
            .await
            .expect("call");
        assert_eq!(code.as_u16(), 400, "{text}");
        assert!(
            text.contains("stays on its owner's node") && !text.contains(path),
            "{path}: {text}"
        );
    }
    // A link inside the data directory to a file outside it is not
    // followed: a catalog entry through it is refused (here in process;
    // the node reads the same catalog code at its start).
    let outside = tmp.path().join("outside.csv");
    std::fs::write(&outside, "email,segment\na@x,s\n").expect("write");
    std::os::unix::fs::symlink(&outside, dir.join("link.parquet")).expect("link");
    std::fs::create_dir_all(dir.join("linked")).expect("dir");
    std::os::unix::fs::symlink(&outside, dir.join("linked/part.parquet")).expect("link");
    let catalog = dir.join("catalog.toml");
    let good_catalog = read(&catalog);
    for path in ["link.parquet", "linked", "linked/*.parquet"] {
        std::fs::write(
            &catalog,
            good_catalog.replace("\"audience.parquet\"", &format!("\"{path}\"")),
        )
        .expect("write");
        match Cluster::open(&dir.join("collaboration.toml"), None).await {
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("dataset 'publisher_audience'") && e.contains("leads outside"),
                    "{e}"
                );
                assert!(!e.contains("link.parquet") && !e.contains("linked"), "{e}");
            }
            Ok(_) => panic!("{path}: opened in process"),
        }
    }
    std::fs::write(&catalog, &good_catalog).expect("write");
    // Ids are unique: a new collaboration cannot take over another's id.
    let hijack = base.replace("name = \"demo\"", "name = \"evil\"\nid = \"demo\"");
    let (code, text) = advertiser
        .raw(
            Method::POST,
            "/v1/collaborations",
            Some(serde_json::json!({ "toml": hijack })),
        )
        .await
        .expect("call");
    assert_eq!(code.as_u16(), 409, "{text}");

    // A secret sealed by a key that is not a pinned peer's is refused, and a
    // node never swaps the secret it holds, even for a pinned peer's.
    let stranger = airlock_crypto::sealing::NodeKeys::generate().expect("keys");
    let publisher_keys = airlock_crypto::sealing::NodeKeys::load(
        &up::cluster_dir(&dir).join("nodes/publisher/x25519.key"),
    )
    .expect("keys");
    let advertiser_keys = airlock_crypto::sealing::NodeKeys::load(
        &up::cluster_dir(&dir).join("nodes/advertiser/x25519.key"),
    )
    .expect("keys");
    let fake = CollaborationSecret::generate().expect("secret");
    let ctx = proto::seal_context("demo", "publisher");
    let by_stranger = airlock_crypto::sealing::seal_from(
        &stranger,
        &publisher_keys.public(),
        &ctx,
        fake.to_hex().as_bytes(),
    )
    .expect("seal");
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    let r = action(
        &mut node,
        proto::action::SECRET_INSTALL,
        serde_json::json!({"collaboration": "demo", "from": "advertiser", "sealed": b64(&by_stranger)}),
    )
    .await
    .expect_err("not pinned");
    assert!(
        r.message().contains("not sealed by the pinned key"),
        "{}",
        r.message()
    );
    let by_peer = airlock_crypto::sealing::seal_from(
        &advertiser_keys,
        &publisher_keys.public(),
        &ctx,
        fake.to_hex().as_bytes(),
    )
    .expect("seal");
    let r = action(
        &mut node,
        proto::action::SECRET_INSTALL,
        serde_json::json!({"collaboration": "demo", "from": "advertiser", "sealed": b64(&by_peer)}),
    )
    .await
    .expect_err("no swap");
    assert!(
        r.message().contains("already holds a different secret"),
        "{}",
        r.message()
    );
    assert_ne!(node_secret(&dir, "publisher").to_hex(), fake.to_hex());
    // Queries still run on the demo.
    let r = remote::query(&advertiser, "demo", OVERLAP)
        .await
        .expect("runs");
    assert!(r.num_rows() > 0 || r.schema.fields().len() == 2);
    drop(running);
}

/// Runs `airlock demo --distributed` with `extra` arguments on 20,000
/// rows; returns its standard output after checking it exited with 0.
fn demo_distributed(extra: &[&str]) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin())
        .args(["demo", "--distributed", "--rows", "20000"])
        .args(extra)
        .arg("--dir")
        .arg(tmp.path().join("d"))
        .env_remove("AIRLOCK_HUB")
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
}

#[test]
fn demo_distributed_runs_from_the_binary() {
    let stdout = demo_distributed(&[]);
    assert!(stdout.contains("hub https://127.0.0.1:"), "{stdout}");
    assert_eq!(stdout.matches("released in").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("-> refused [").count(), 3, "{stdout}");
}

/// The DP demo against a hub and nodes as processes: the hub's store keeps
/// the budget, each analysis is debited there before it runs, and the
/// fourth is refused for budget.
#[test]
fn dp_demo_distributed_spends_the_hubs_budget() {
    let stdout = demo_distributed(&["--dp"]);
    assert_eq!(stdout.matches("released in").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("95% of noise within").count(), 3, "{stdout}");
    assert!(
        stdout.contains("privacy budget left in 'demo': collaboration epsilon 0.000"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("-> refused [privacy-budget]").count(),
        1,
        "{stdout}"
    );
}

/// A fresh schema in the test PostgreSQL, as a URL; `None` (with a loud
/// note) when none is configured, a failure when one is required.
async fn postgres_url() -> Option<String> {
    let base = match std::env::var("AIRLOCK_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
        _ => {
            assert_ne!(
                std::env::var("AIRLOCK_REQUIRE_POSTGRES").as_deref(),
                Ok("1"),
                "AIRLOCK_REQUIRE_POSTGRES=1 but AIRLOCK_TEST_POSTGRES_URL is not set"
            );
            eprintln!("NOTE: AIRLOCK_TEST_POSTGRES_URL is not set: the hub-on-PostgreSQL test did not run");
            return None;
        }
    };
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut suffix = [0u8; 8];
    getrandom::getrandom(&mut suffix).expect("random");
    let schema = format!("hub_test_{}", hex::encode(suffix));
    let mut admin = sqlx::AnyConnection::connect(&base).await.expect("connect");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_on_postgres_runs_the_demo() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let running = start(&dir, 20_000, None).await;
    // A second hub with the same certificate (the nodes trust it), its
    // state in PostgreSQL.
    let store = airlock_store::Store::open(&url)
        .await
        .expect("postgres store");
    assert_eq!(store.backend(), airlock_store::Backend::Postgres);
    let publisher = store
        .create_token("publisher", None)
        .await
        .expect("token")
        .token;
    let advertiser = store
        .create_token("advertiser", None)
        .await
        .expect("token")
        .token;
    store.close().await;
    let up::Started {
        child: mut hub,
        url: hub_url,
        ..
    } = up::spawn(
        &bin(),
        "postgres hub",
        &[
            "hub",
            "serve",
            "--config",
            &running.info.hub_config.to_string_lossy(),
            "--database",
            &url,
        ],
    )
    .expect("hub on postgres");
    let ca = read(&running.info.ca);
    // Each member signs its approvals with its own key, as through the
    // first hub: nodes install nothing on a hub's word alone.
    let keyed = |token: &str, member: &str| {
        HubClient::new(&hub_url, token, ca.as_bytes())
            .expect("client")
            .with_key_file(&running.info.keys[member])
            .expect("member key")
    };
    let p = keyed(&publisher, "publisher");
    let a = keyed(&advertiser, "advertiser");
    // The nodes already hold `demo` from the first hub; this hub's copy
    // is a new collaboration over the same datasets (1:N, no copy).
    let toml = read(&dir.join("collaboration.toml")).replacen(
        "[collaboration]\nname = \"demo\"",
        "[collaboration]\nname = \"demo_pg\"",
        1,
    );
    assert!(toml.contains("name = \"demo_pg\""));
    let v = p.create(&toml).await.expect("create on postgres");
    assert!(
        v.sync_errors
            .iter()
            .all(|e| e.contains("waiting for the approval of 'advertiser'")),
        "{:?}",
        v.sync_errors
    );
    approve_pending(&[&p, &a], "demo_pg").await;
    let remote = remote::query(&a, "demo_pg", OVERLAP)
        .await
        .expect("released");
    let local = Cluster::open(&dir.join("collaboration.toml"), None)
        .await
        .expect("local")
        .query("advertiser", OVERLAP)
        .await
        .expect("in process");
    assert_eq!(rows(&remote.batches), rows(&local.batches));
    let entries =
        airlock_store::parse_jsonl(&a.audit("demo_pg").await.expect("audit")).expect("jsonl");
    airlock_store::verify_chain(&entries).expect("verifies");
    assert!(entries.iter().any(|e| e.kind == "query.released"));
    drop(hub.stdin.take());
    let _ = hub.wait();
    drop(running);
}

/// The template-approval flow through the hub: a data owner puts its table
/// under the custom rule, an analyst proposes templates, each owner
/// approves (the hub verifies first) or is refused with the reasons, the
/// approved run releases what the in-process engine releases, and a
/// revocation holds from the next query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_approved_and_run_through_the_hub() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let mut running = start(&dir, 60_000, None).await;
    let publisher = running.client("publisher").expect("client");
    let advertiser = running.client("advertiser").expect("client");
    let current = |c: &HubClient| {
        let c = c.clone();
        async move {
            let (code, text) = c
                .raw(Method::GET, "/v1/collaborations/demo", None)
                .await
                .expect("show");
            assert_eq!(code.as_u16(), 200, "{text}");
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            v["toml"].as_str().expect("toml").to_string()
        }
    };
    // The publisher restricts its own table to approved templates.
    let custom = current(&publisher).await.replacen(
        "rule = { type = \"aggregation\", min_distinct_identities = 50, join_required = true }",
        "rule = { type = \"custom\", min_distinct_identities = 50, join_required = true, templates_only = true }",
        1,
    );
    publisher
        .apply("demo", &custom)
        .await
        .expect("publisher applies");
    approve_pending(&[&publisher, &advertiser], "demo").await;
    // The analyst proposes two templates.
    let proposed = current(&advertiser).await
        + r#"
[[templates]]
name = "overlap_in_region"
purpose = "measurement"
sql = "SELECT a.segment, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email WHERE a.region = $region GROUP BY a.segment"
params = { region = { type = "string", allowed = ["north", "south"] } }

[[templates]]
name = "emails_please"
purpose = "measurement"
sql = "SELECT a.email FROM audience a JOIN purchases p ON a.email = p.email WHERE p.category = $category"
params = { category = { type = "string", allowed = ["home"] } }
"#;
    advertiser
        .apply("demo", &proposed)
        .await
        .expect("analyst proposes");
    approve_pending(&[&publisher, &advertiser], "demo").await;
    let run = airlock_policy::QuerySpec::template(
        "overlap_in_region",
        BTreeMap::from([("region".to_string(), "north".to_string())]),
    );
    let refused_for = |r: Result<_, CliError>| match r {
        Err(CliError::Refused { refusal, .. }) => refusal.control,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got a result"),
    };
    assert_eq!(
        refused_for(remote::query(&advertiser, "demo", OVERLAP).await),
        Control::CustomRule
    );
    assert_eq!(
        refused_for(remote::query_spec(&advertiser, "demo", &run).await),
        Control::TemplateApproval
    );
    // Static verification refuses the template that outputs identities.
    let e = publisher
        .approval("demo", "emails_please", true)
        .await
        .map_err(remote::cli_error)
        .expect_err("refused");
    match e {
        CliError::Refused { refusal, .. } => {
            assert_eq!(refusal.control, Control::TemplateApproval);
            assert!(refusal.reason.contains("aggregation-required"), "{refusal}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    // Both owners approve the good one.
    let p = publisher
        .approval("demo", "overlap_in_region", true)
        .await
        .expect("publisher approves");
    assert!(p.approved && p.checks == 2, "{p:?}");
    approve_pending(&[&publisher, &advertiser], "demo").await;
    assert_eq!(
        refused_for(remote::query_spec(&advertiser, "demo", &run).await),
        Control::TemplateApproval,
        "the advertiser owns purchases and has not approved yet"
    );
    advertiser
        .approval("demo", "overlap_in_region", true)
        .await
        .expect("advertiser approves");
    approve_pending(&[&publisher, &advertiser], "demo").await;
    let listed = advertiser.templates("demo").await.expect("list");
    let t = listed
        .iter()
        .find(|t| t.name == "overlap_in_region")
        .expect("listed");
    assert_eq!(t.approved_by, vec!["publisher", "advertiser"]);
    let remote_rows = remote::query_spec(&advertiser, "demo", &run)
        .await
        .expect("approved template runs on the hub");
    // The same run in process over the same policy.
    std::fs::write(dir.join("hub-policy.toml"), current(&advertiser).await).expect("write");
    let local = Cluster::open(&dir.join("hub-policy.toml"), None)
        .await
        .expect("in process");
    let here = local
        .query_spec("advertiser", &run)
        .await
        .expect("in process");
    assert!(!rows(&remote_rows.batches).is_empty());
    assert_eq!(rows(&remote_rows.batches), rows(&here.batches));
    // Approvals and the refused one are in the audit chain.
    let db = airlock_store::Store::open(&format!(
        "sqlite:{}",
        up::cluster_dir(&dir).join("hub/hub.db").display()
    ))
    .await
    .expect("hub db");
    let kinds: Vec<String> = db
        .audit("demo")
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("template."))
        .collect();
    assert_eq!(
        kinds,
        vec![
            "template.approval_refused",
            "template.approved",
            "template.approved"
        ]
    );
    // The record of processing lists the templates, the approvals, and
    // the template run among the analyses.
    let record = airlock_cli::records::fetch(&advertiser, "demo", 0, airlock_store::now_ms())
        .await
        .expect("record");
    assert_eq!(
        record["templates"][0]["approved_by"],
        serde_json::json!(["publisher", "advertiser"])
    );
    assert_eq!(
        record["template_approvals"].as_array().map(Vec::len),
        Some(3)
    );
    assert!(record["analyses"]
        .as_array()
        .expect("analyses")
        .iter()
        .any(|a| a["sql"] == "template overlap_in_region (region=north)"
            && a["outcome"] == "released"));
    // A revocation holds from the next query.
    let r = publisher
        .approval("demo", "overlap_in_region", false)
        .await
        .expect("revoke");
    assert!(!r.approved);
    approve_pending(&[&publisher, &advertiser], "demo").await;
    assert_eq!(
        refused_for(remote::query_spec(&advertiser, "demo", &run).await),
        Control::TemplateApproval
    );
    // Only the caller's own approvals change: the advertiser cannot
    // approve for the publisher by applying a file.
    let forged = airlock_policy::template::edit_approval(
        &current(&advertiser).await,
        "publisher",
        &t.hash,
        true,
    )
    .expect("edit");
    let e = advertiser
        .apply("demo", &forged)
        .await
        .expect_err("forged approval");
    assert!(e.to_string().contains("approvals of 'publisher'"), "{e}");
    running.stop();
}

/// `collab export`: the collaboration's public metadata signed by the hub;
/// `collab import` verifies it against the hub's fingerprint and refuses a
/// tampered document, another signer, or a missing trust anchor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collaboration_metadata_is_exported_signed_and_tampering_is_refused() {
    use airlock_service::metadata;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let mut running = start(&dir, 5_000, None).await;
    let analyst = running.client(&running.info.analyst).expect("client");
    let doc = analyst.export_metadata("demo").await.expect("export");
    let cfg =
        airlock_service::config::HubConfig::load(&running.info.hub_config).expect("hub config");
    let cert = std::fs::read_to_string(&cfg.tls.cert).expect("hub cert");
    let fp = airlock_crypto::pki::cert_fingerprint(&cert).expect("fingerprint");
    assert_eq!(doc.fingerprint, fp);
    let text = serde_json::to_string_pretty(&doc).expect("json");
    let meta = metadata::verify(&text, std::slice::from_ref(&fp)).expect("verifies");
    assert_eq!(meta.collaboration, "demo");
    assert_eq!(
        meta.members
            .iter()
            .map(|m| (m.name.as_str(), m.node.is_some()))
            .collect::<Vec<_>>(),
        vec![("publisher", true), ("advertiser", true)]
    );
    let audience = meta
        .tables
        .iter()
        .find(|t| t.alias == "audience")
        .expect("table");
    assert!(
        audience.columns.iter().any(|(n, _)| n == "segment"),
        "{audience:?}"
    );
    assert!(!text.contains("@example.com"), "no data values in metadata");
    // The file in it is the hub's current version, and it validates.
    airlock_policy::Collaboration::from_toml(&meta.toml, "imported").expect("valid");

    // Tampering anywhere in the signed part, a re-signed document from
    // another key, an untrusted fingerprint, or a broken envelope: refused.
    let weaker = doc.signed.replacen(
        "min_distinct_identities = 50",
        "min_distinct_identities = 2",
        1,
    );
    assert_ne!(weaker, doc.signed);
    let mut tampered = doc.clone();
    tampered.signed = weaker.clone();
    let e = metadata::verify(
        &serde_json::to_string(&tampered).expect("json"),
        std::slice::from_ref(&fp),
    )
    .expect_err("tampered");
    assert!(e.contains("signature: does not verify"), "{e}");
    let ca = Ca::generate("elsewhere").expect("ca");
    let other = ca.issue("hub", &["localhost"]).expect("cert");
    let mut resigned = doc.clone();
    resigned.signed = weaker;
    resigned.certificate = other.cert_pem.clone();
    resigned.fingerprint = airlock_crypto::pki::cert_fingerprint(&other.cert_pem).expect("fp");
    resigned.signature = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(
            airlock_crypto::pki::sign(&other.key_pem, resigned.signed.as_bytes()).expect("sign"),
        )
    };
    let e = metadata::verify(
        &serde_json::to_string(&resigned).expect("json"),
        std::slice::from_ref(&fp),
    )
    .expect_err("another signer");
    assert!(e.contains("not trusted here"), "{e}");
    let mut lying = resigned.clone();
    lying.fingerprint = fp.clone();
    let e = metadata::verify(
        &serde_json::to_string(&lying).expect("json"),
        std::slice::from_ref(&fp),
    )
    .expect_err("fingerprint of another certificate");
    assert!(
        e.contains("fingerprint: does not match the certificate"),
        "{e}"
    );
    assert!(metadata::verify(&text, &[])
        .expect_err("no trust")
        .contains("fingerprint to trust"));
    for (bad, want) in [
        (text[..text.len() / 2].to_string(), "EOF while parsing"),
        (
            text.replacen("\"format\"", "\"extra\": 1, \"format\"", 1),
            "document: extra: unknown field",
        ),
        (
            text.replacen(metadata::FORMAT, "airlock.collaboration-metadata/v9", 1),
            "format: expected",
        ),
    ] {
        let e = metadata::verify(&bad, std::slice::from_ref(&fp)).expect_err(want);
        assert!(e.contains(want), "{want}: {e}");
    }
    // The binary: import verifies, writes the file, and exits 2 on a
    // tampered document without writing anything.
    let good = tmp.path().join("meta.json");
    std::fs::write(&good, &text).expect("write");
    let toml_out = tmp.path().join("imported.toml");
    let out = Command::new(bin())
        .args(["collab", "import"])
        .arg(&good)
        .args(["--trust-hub", &fp, "--toml-out"])
        .arg(&toml_out)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&toml_out).expect("written"),
        meta.toml
    );
    let bad = tmp.path().join("tampered.json");
    std::fs::write(&bad, serde_json::to_string(&tampered).expect("json")).expect("write");
    let bad_out = tmp.path().join("never.toml");
    let out = Command::new(bin())
        .args(["collab", "import"])
        .arg(&bad)
        .args(["--trust-hub", &fp, "--toml-out"])
        .arg(&bad_out)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(!bad_out.exists(), "nothing written");
    running.stop();
}

/// Result destinations: the querier's own node writes the released result
/// to Parquet, CSV or its own PostgreSQL; the hub deletes its copy once the
/// node confirms the content hash, and audits the delivery; a failed
/// delivery leaves the result fetchable and is audited too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_results_are_delivered_by_the_members_own_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let pg = postgres_url().await;
    let mut running = start_with(&dir, 60_000, None, pg.clone()).await;
    let analyst = running.client(&running.info.analyst).expect("client");
    let local = Cluster::open(&dir.join("collaboration.toml"), None)
        .await
        .expect("in process");
    let want = rows(
        &local
            .query("advertiser", OVERLAP)
            .await
            .expect("local")
            .batches,
    );
    let db = airlock_store::Store::open(&format!(
        "sqlite:{}",
        up::cluster_dir(&dir).join("hub/hub.db").display()
    ))
    .await
    .expect("hub db");
    let delivered = |kind: &'static str| {
        let db = db.clone();
        async move {
            db.audit("demo")
                .await
                .expect("audit")
                .into_iter()
                .filter(|e| e.kind == "result.delivered")
                .map(|e| serde_json::from_str::<serde_json::Value>(&e.payload).expect("json"))
                .rfind(|p| p["kind"] == kind)
                .expect("a delivery of that kind")
        }
    };
    let spec = |dest: &str| airlock_policy::QuerySpec {
        deliver: Some(dest.into()),
        ..airlock_policy::QuerySpec::sql(OVERLAP)
    };
    // Parquet under the advertiser's node.
    // On failure, say why from the audit chain.
    let deliver = |dest: &'static str| {
        let (analyst, db) = (&analyst, &db);
        async move {
            match remote::deliver(analyst, "demo", &spec(dest)).await {
                Ok(said) => said,
                Err(e) => {
                    let why: Vec<String> = db
                        .audit("demo")
                        .await
                        .expect("audit")
                        .into_iter()
                        .filter(|e| e.kind == "result.delivery_failed")
                        .map(|e| e.payload)
                        .collect();
                    panic!("{dest}: {e}: {why:?}");
                }
            }
        }
    };
    let said = deliver("files").await;
    assert!(
        said.contains("delivered to the node of 'advertiser' (parquet destination 'files')"),
        "{said}"
    );
    let p = delivered("parquet").await;
    // The audit chain names the file within the destination, not the
    // node's directory.
    let name = p["location"].as_str().expect("location");
    assert!(!name.contains('/') && name.ends_with(".parquet"), "{name}");
    let file = up::cluster_dir(&dir)
        .join("nodes/advertiser/results")
        .join(name);
    let bytes = std::fs::read(&file).expect("file");
    assert_eq!(
        p["file_sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    let ctx = datafusion::prelude::SessionContext::new();
    let got = ctx
        .read_parquet(file.to_string_lossy().as_ref(), Default::default())
        .await
        .expect("parquet")
        .collect()
        .await
        .expect("rows");
    assert_eq!(rows(&got), want);
    // The hub kept no copy.
    let id = p["query"].as_str().expect("id").to_string();
    let (code, text) = analyst
        .raw(Method::GET, &format!("/v1/queries/{id}/result"), None)
        .await
        .expect("fetch");
    assert_eq!(code.as_u16(), 410, "{text}");
    assert!(text.contains("delivered"), "{text}");
    assert!(db.result(&id).await.expect("read").is_none());
    // CSV.
    deliver("csv").await;
    let c = delivered("csv").await;
    let csv = std::fs::read_to_string(
        up::cluster_dir(&dir)
            .join("nodes/advertiser/results-csv")
            .join(c["location"].as_str().expect("location")),
    )
    .expect("csv");
    assert!(csv.starts_with("segment,people\n"), "{csv}");
    assert_eq!(csv.lines().count(), want.len() + 1);
    // The member's own PostgreSQL.
    if let Some(url) = &pg {
        deliver("warehouse").await;
        let w = delivered("postgres").await;
        assert_eq!(w["location"], "table airlock_results_advertiser");
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM airlock_results_advertiser WHERE airlock_query_id = $1",
        )
        .bind(w["query"].as_str().expect("id"))
        .fetch_one(&mut conn)
        .await
        .expect("count");
        assert_eq!(n as usize, want.len());
        let (people,): (i64,) =
            sqlx::query_as("SELECT SUM(people)::BIGINT FROM airlock_results_advertiser")
                .fetch_one(&mut conn)
                .await
                .expect("sum");
        let expected: i64 = want
            .iter()
            .map(|r| {
                r.rsplit(" | ")
                    .next()
                    .expect("cell")
                    .parse::<i64>()
                    .expect("int")
            })
            .sum();
        assert_eq!(people, expected);
    }
    // A destination the node does not have: released, not delivered, the
    // result stays fetchable, and the failure is audited.
    let e = remote::deliver(&analyst, "demo", &spec("nowhere"))
        .await
        .expect_err("no such destination");
    assert!(e.to_string().contains("the delivery failed"), "{e}");
    let failed = db
        .audit("demo")
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == "result.delivery_failed")
        .count();
    assert_eq!(failed, 1);
    // The publisher has no query ability; a member without a node cannot
    // ask for delivery (none here), and the binary needs --hub for it.
    let out = Command::new(bin())
        .args(["query", "--collab"])
        .arg(dir.join("collaboration.toml"))
        .args(["--as", "advertiser", "--deliver", "files", OVERLAP])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--deliver needs --hub"));
    running.stop();
}

/// Crypto mode between two node processes: the hub only relays blinded
/// points and ciphertexts (the wire tap between hub and nodes holds no
/// raw email), and the released tables equal executor mode's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_mode_runs_between_two_node_processes_with_no_executor() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let tap = tmp.path().join("wire.tap");
    data::write_demo(&dir, 60_000, true).expect("demo data");
    let executor = Cluster::open(&dir.join("collaboration.toml"), None)
        .await
        .expect("executor mode");
    std::fs::write(
        dir.join("collaboration.toml"),
        data::collaboration_toml_crypto(),
    )
    .expect("write");
    let mut running = up::start(&UpOptions {
        dir: dir.clone(),
        rows: 60_000,
        wire_tap: Some(tap.clone()),
        bin: bin(),
        results_postgres: None,
        results_s3: None,
        hub_limits: Default::default(),
        node_limits: Default::default(),
    })
    .await
    .expect("airlock up");
    for (member, title, sql) in demo::CRYPTO_ANALYSES {
        let client = running.client(member).expect("client");
        let got = remote::query(&client, "demo", sql)
            .await
            .unwrap_or_else(|e| panic!("{title}: {e}"));
        let want = executor.query("advertiser", sql).await.expect("executor");
        assert!(!rows(&want.batches).is_empty(), "{title}");
        assert_eq!(rows(&got.batches), rows(&want.batches), "{title}");
    }
    // A shape crypto mode cannot compute is refused by the hub.
    let analyst = running.client("publisher").expect("client");
    let shape = remote::query(
        &analyst,
        "demo",
        "SELECT a.segment, COUNT(*) FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment",
    )
    .await;
    assert!(
        matches!(shape, Err(CliError::Refused { refusal, .. }) if refusal.control == Control::CryptoMode)
    );
    running.stop();
    let emails = demo_emails(&dir).await;
    let bytes = std::fs::read(&tap).expect("tap");
    assert!(bytes.len() > 100_000, "the tap recorded the exchange");
    assert!(
        contains(&bytes, b"\"step\":\"respond\""),
        "crypto steps went through the hub"
    );
    let found = find_emails(&bytes, &emails);
    assert!(
        found.is_empty(),
        "raw emails between hub and nodes: {found:?}"
    );
}

/// The `hello` of a node, as the hub's certificate sees it.
async fn node_hello(node: &mut FlightServiceClient<Channel>) -> proto::Hello {
    let mut s = node
        .do_action(arrow_flight::Action {
            r#type: proto::action::HELLO.into(),
            body: Vec::new().into(),
        })
        .await
        .expect("hello")
        .into_inner();
    let r = s.message().await.expect("answer").expect("one message");
    serde_json::from_slice(&r.body).expect("hello json")
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// ATTACKS 30: a member creates a collaboration over another member's data
/// with weaker rules. Nothing runs until the owner approves that exact text
/// with its own key; the owner's node checks the signature itself, whatever
/// the hub sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collaboration_over_another_members_data_waits_for_that_members_approval() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let running = start(&dir, 5_000, None).await;
    let publisher = running.client("publisher").expect("client");
    let advertiser = running.client("advertiser").expect("client");
    let steal = data::collaboration_toml(false)
        .replace("name = \"demo\"", "name = \"steal\"")
        .replacen(
            "min_distinct_identities = 50",
            "min_distinct_identities = 2",
            1,
        );
    let cells = "SELECT segment, region, age_band, COUNT(*) AS n FROM audience GROUP BY 1, 2, 3";

    // The advertiser creates it (approving it itself, with its own key).
    let v = advertiser.create(&steal).await.expect("stored");
    assert_eq!(
        v.approvals["advertiser"],
        airlock_service::api::Decision::Approved
    );
    assert_eq!(
        v.approvals["publisher"],
        airlock_service::api::Decision::Waiting
    );
    assert!(
        v.sync_errors
            .iter()
            .any(|e| e.contains("waiting for the approval of 'publisher'")),
        "{:?}",
        v.sync_errors
    );
    let q = advertiser.submit("steal", cells).await.expect("submit");
    let q = advertiser.wait(q, |_| {}).await.expect("wait");
    assert_eq!(q.state, QueryState::Failed, "{q:?}");
    assert!(
        q.error
            .as_deref()
            .unwrap_or("")
            .contains("waiting for the approval of 'publisher'"),
        "{q:?}"
    );
    let (code, _) = advertiser
        .raw(Method::GET, &format!("/v1/queries/{}/result", q.id), None)
        .await
        .expect("call");
    assert_ne!(code.as_u16(), 200, "nothing released");
    let mut node = as_hub_to_publisher(&running, &dir).await;
    assert!(
        !node_hello(&mut node)
            .await
            .collaborations
            .iter()
            .any(|c| c.name == "steal"),
        "the publisher's node never installed it"
    );

    // The publisher sees what it is asked to approve, with the whole file
    // as the difference (it approved no earlier version of it).
    let asked = publisher.approvals().await.expect("approvals");
    let listed = asked
        .iter()
        .find(|a| a.collaboration == "steal")
        .expect("steal waits for the publisher");
    assert!(
        listed.diff.is_empty() && listed.toml.is_empty(),
        "the list is a summary"
    );
    let view = publisher.review("steal").await.expect("review");
    assert_eq!(
        (view.sha256.as_str(), view.version),
        (listed.sha256.as_str(), 1)
    );
    assert_eq!(view.sha256, sha256_hex(&steal));
    assert_eq!(view.approved_before, None);
    assert!(
        view.diff
            .contains("+rule = { type = \"aggregation\", min_distinct_identities = 2"),
        "{}",
        view.diff
    );
    assert!(
        !advertiser
            .approvals()
            .await
            .expect("list")
            .iter()
            .any(|a| a.collaboration == "steal"),
        "nothing waits for the advertiser"
    );

    // A hub that pushes it anyway: with no approval, with the advertiser's
    // signature in the publisher's place, with garbage, the node refuses.
    let adv_key =
        airlock_crypto::approval::MemberKey::load(&running.info.keys["advertiser"]).expect("key");
    let pub_key =
        airlock_crypto::approval::MemberKey::load(&running.info.keys["publisher"]).expect("key");
    let message = airlock_crypto::approval::approval_message("steal", 1, &sha256_hex(&steal), None);
    for approvals in [
        serde_json::json!({}),
        serde_json::json!({"advertiser": adv_key.sign(&message)}),
        serde_json::json!({"publisher": adv_key.sign(&message)}),
        serde_json::json!({"publisher": "00".repeat(64)}),
        serde_json::json!({"publisher": "not hex"}),
        serde_json::json!({"publisher": pub_key.sign(&airlock_crypto::approval::approval_message("demo", 1, &sha256_hex(&steal), None))}),
    ] {
        let pushed = action(
            &mut node,
            proto::action::INSTALL,
            serde_json::json!({"version": 1, "toml": steal, "applied_by": "publisher", "approvals": approvals}),
        )
        .await
        .expect_err("refused");
        assert_eq!(
            pushed.code(),
            tonic::Code::PermissionDenied,
            "{approvals}: {}",
            pushed.message()
        );
    }
    assert!(!node_hello(&mut node)
        .await
        .collaborations
        .iter()
        .any(|c| c.name == "steal"));
    // Through the hub, a signature by another key is refused before it is stored.
    let (code, text) = publisher
        .raw(
            Method::POST,
            "/v1/collaborations/steal/approval",
            Some(serde_json::json!({"sha256": sha256_hex(&steal), "signature": adv_key.sign(&message)})),
        )
        .await
        .expect("call");
    assert_eq!(code.as_u16(), 403, "{text}");
    assert!(text.contains("\"bad_approval\""), "{text}");
    // The CLI reports it as the caller's bad input (exit 2), naming the key.
    let wrong = HubClient::with_ca_file(
        &running.info.hub,
        &running.info.tokens["publisher"],
        &running.info.ca,
    )
    .expect("client")
    .with_key_file(&running.info.keys["advertiser"])
    .expect("key");
    let e = wrong
        .approve("steal", Some(&sha256_hex(&steal)))
        .await
        .expect_err("wrong key");
    match remote::cli_error(e) {
        CliError::BadInput(m) => {
            assert!(m.contains("member key of 'publisher'"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // A decision on a text other than the current one is refused.
    let (code, text) = publisher
        .raw(
            Method::POST,
            "/v1/collaborations/steal/approval",
            Some(serde_json::json!({"sha256": "0".repeat(64), "refuse": "no"})),
        )
        .await
        .expect("call");
    assert_eq!(code.as_u16(), 409, "{text}");

    // The publisher refuses: still nothing runs, and the reason is shown.
    let v = publisher
        .refuse("steal", &view.sha256, "k = 2 on our audience")
        .await
        .expect("refuse");
    assert_eq!(
        v.approvals["publisher"],
        airlock_service::api::Decision::Refused
    );
    let r = remote::query(&advertiser, "steal", cells).await;
    assert!(r.is_err(), "refused: nothing runs");

    // The publisher approves the text it reviewed: now its node installs
    // it and the query runs (the publisher chose to allow k = 2 here).
    let v = publisher
        .approve("steal", Some(&view.sha256))
        .await
        .expect("approve");
    assert!(v.sync_errors.is_empty(), "{:?}", v.sync_errors);
    let r = remote::query(&advertiser, "steal", cells)
        .await
        .expect("runs after approval");
    assert!(r.num_rows() > 0);

    // The advertiser changes its own table after the approval: the new
    // version waits for the publisher again, and the node keeps version 1.
    let changed = steal.replace(
        "rule = { type = \"aggregation\", min_distinct_identities = 50 }",
        "rule = { type = \"aggregation\", min_distinct_identities = 60 }",
    );
    assert_ne!(changed, steal);
    let v = advertiser.apply("steal", &changed).await.expect("stored");
    assert_eq!(v.version, 2);
    assert_eq!(
        v.approvals["publisher"],
        airlock_service::api::Decision::Waiting
    );
    assert!(remote::query(&advertiser, "steal", cells).await.is_err());
    let held = node_hello(&mut node).await;
    let steal_held = held
        .collaborations
        .iter()
        .find(|c| c.name == "steal")
        .expect("v1 held");
    assert_eq!(steal_held.version, 1);
    // A hub replaying the publisher's approval of version 1 for version 2:
    let replay = action(
        &mut node,
        proto::action::INSTALL,
        serde_json::json!({"version": 2, "toml": changed, "applied_by": "publisher",
            "approvals": {"publisher": pub_key.sign(&message)}}),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        replay.code(),
        tonic::Code::PermissionDenied,
        "{}",
        replay.message()
    );
    // Red-team regressions. The version-1 text and signature replayed as
    // version 3 (a rollback over a later version) is refused: the version
    // is part of what is signed.
    let rollback = action(
        &mut node,
        proto::action::INSTALL,
        serde_json::json!({"version": 3, "toml": steal, "applied_by": "publisher",
            "approvals": {"publisher": pub_key.sign(&message)}}),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        rollback.code(),
        tonic::Code::PermissionDenied,
        "{}",
        rollback.message()
    );
    // A version in which the publisher contributes nothing (its dataset
    // given to the advertiser, its `provide` taken), pushed at the largest
    // version to lock the collaboration: refused, version 1 stays.
    let squat = steal
        .replacen("abilities = [\"provide\"]", "abilities = [\"receive\"]", 1)
        .replacen("owner = \"publisher\"", "owner = \"advertiser\"", 1);
    assert_ne!(squat, steal);
    let pushed = action(
        &mut node,
        proto::action::INSTALL,
        serde_json::json!({"version": i64::MAX, "toml": squat, "applied_by": "advertiser", "approvals": {}}),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        pushed.code(),
        tonic::Code::PermissionDenied,
        "{}",
        pushed.message()
    );
    assert_eq!(
        node_hello(&mut node)
            .await
            .collaborations
            .iter()
            .find(|c| c.name == "steal")
            .map(|c| c.version),
        Some(1)
    );
    // The secret is sealed to no member that does not contribute data.
    for who in ["publisher", "nobody"] {
        let r = action(
            &mut node,
            proto::action::SECRET_GENERATE,
            serde_json::json!({"collaboration": "steal", "recipients": [{"member": who, "x25519": "00".repeat(32)}]}),
        )
        .await
        .expect_err("refused");
        assert!(
            r.message().contains("not another contributing member"),
            "{}",
            r.message()
        );
    }
    let review = publisher.review("steal").await.expect("review");
    assert_eq!(review.approved_before, Some(1));
    assert!(
        review
            .diff
            .contains("-rule = { type = \"aggregation\", min_distinct_identities = 50 }"),
        "{}",
        review.diff
    );
    assert!(
        review
            .diff
            .contains("+rule = { type = \"aggregation\", min_distinct_identities = 60 }"),
        "{}",
        review.diff
    );

    // Applying the approved text again makes version 3, which waits: an
    // approval is of one version, never reused.
    let v = advertiser.apply("steal", &steal).await.expect("stored");
    assert_eq!(v.version, 3);
    assert_eq!(
        v.approvals["publisher"],
        airlock_service::api::Decision::Waiting
    );
    // A dataset update naming the publisher's dataset is refused.
    let (code, text) = advertiser
        .raw(
            Method::POST,
            "/v1/datasets/update",
            Some(
                serde_json::json!({"dataset": "publisher_audience", "min_distinct_identities": 2}),
            ),
        )
        .await
        .expect("call");
    assert_eq!(code.as_u16(), 403, "{text}");
    assert!(text.contains("belongs to 'publisher'"), "{text}");
    // An approval installs only on top of the text the node holds (red
    // team N1): two versions the publisher signed on top of version 1 (a
    // hub that collects signatures), the first installs, the second, a
    // looser one, no longer does.
    let message_on_v1 = |version: i64, text: &str| {
        airlock_crypto::approval::approval_message(
            "steal",
            version,
            &sha256_hex(text),
            Some(&sha256_hex(&steal)),
        )
    };
    let first = action(
        &mut node,
        proto::action::INSTALL,
        serde_json::json!({"version": 50, "toml": changed, "applied_by": "publisher",
            "approvals": {"publisher": pub_key.sign(&message_on_v1(50, &changed))}}),
    )
    .await;
    assert!(first.is_ok(), "{first:?}");
    // A version that changes what belongs to no member (here, a privacy
    // budget added: it would refill the node's own ledger) is refused by
    // the node itself, even signed by its member on top of what it holds.
    let budgeted = format!("{changed}\n[privacy]\nepsilon = 100.0\n");
    let on_changed = airlock_crypto::approval::approval_message(
        "steal",
        55,
        &sha256_hex(&budgeted),
        Some(&sha256_hex(&changed)),
    );
    let shared = action(
        &mut node,
        proto::action::INSTALL,
        serde_json::json!({"version": 55, "toml": budgeted, "applied_by": "publisher",
            "approvals": {"publisher": pub_key.sign(&on_changed)}}),
    )
    .await
    .expect_err("a shared part changed");
    assert_eq!(shared.code(), tonic::Code::PermissionDenied, "{shared:?}");
    assert!(
        shared.message().contains("the privacy budget"),
        "{shared:?}"
    );
    let looser = steal.replace(
        "rule = { type = \"aggregation\", min_distinct_identities = 50 }",
        "rule = { type = \"aggregation\", min_distinct_identities = 3 }",
    );
    assert_ne!(looser, steal);
    let second = action(
        &mut node,
        proto::action::INSTALL,
        serde_json::json!({"version": 60, "toml": looser, "applied_by": "publisher",
            "approvals": {"publisher": pub_key.sign(&message_on_v1(60, &looser))}}),
    )
    .await
    .expect_err("not on top of what the node holds");
    assert_eq!(
        second.code(),
        tonic::Code::PermissionDenied,
        "{}",
        second.message()
    );
    // The audit chain records each decision.
    let audit = advertiser.audit("steal").await.expect("audit");
    for kind in ["collaboration.approved", "collaboration.refused"] {
        assert!(audit.contains(kind), "{kind}");
    }
    drop(running);
}

async fn start_limited(
    dir: &Path,
    hub_limits: airlock_service::config::HubLimits,
    node_limits: airlock_service::config::NodeLimits,
) -> Running {
    data::write_demo(dir, 5_000, true).expect("demo data");
    up::start(&UpOptions {
        dir: dir.to_path_buf(),
        rows: 5_000,
        wire_tap: None,
        bin: bin(),
        results_postgres: None,
        results_s3: None,
        hub_limits,
        node_limits,
    })
    .await
    .expect("airlock up")
}

/// A tiny xorshift, for reproducible garbage.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Bodies no route expects: random bytes, deep nesting, wrong types,
/// hostile queries, invalid UTF-8.
fn hostile_bodies() -> Vec<Vec<u8>> {
    let mut g = Garbage(0x9e37_79b9_7f4a_7c15);
    let mut out: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        b"{\"toml\": 5}".to_vec(),
        b"{\"sql\": null, \"template\": 7}".to_vec(),
        b"{\"sha256\": \"x\", \"signature\": \"y\", \"refuse\": \"z\"}".to_vec(),
        b"1e999999".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        "[".repeat(60_000).into_bytes(),
        format!("{{\"toml\": \"{}\"}}", "[a.".repeat(20_000)).into_bytes(),
        format!(
            "{{\"sql\": \"SELECT COUNT(*) FROM audience WHERE {}\"}}",
            vec!["segment = 'x'"; 1_000].join(" OR ")
        )
        .into_bytes(),
        format!(
            "{{\"sql\": \"SELECT {}1{}\"}}",
            "(".repeat(5_000),
            ")".repeat(5_000)
        )
        .into_bytes(),
        format!(
            "{{\"path\": \"audience.parquet\", \"min_distinct_identities\": {}}}",
            u64::MAX
        )
        .into_bytes(),
        format!("{{\"toml\": \"{}\"}}", "\\u0000".repeat(1000)).into_bytes(),
    ];
    for n in [1, 7, 100, 1_000, 10_000] {
        out.push(g.bytes(n));
    }
    out
}

/// ATTACKS 32: no request from any token holder ends the hub or a node.
/// Every route gets every hostile body (and an oversized one), each node's
/// every action gets them with the hub's own certificate; afterwards both
/// still answer and a query still runs. Each limit refuses by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_end_no_process_and_every_limit_refuses_by_name() {
    use airlock_service::config::{HubLimits, NodeLimits, QueryLimits};
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let hub_limits = HubLimits {
        max_request_bytes: 64 * 1024,
        query: QueryLimits {
            max_sql_bytes: 2_000,
            ..QueryLimits::default()
        },
        ..HubLimits::default()
    };
    let running = start_limited(&dir, hub_limits, NodeLimits::default()).await;
    let advertiser = running.client("advertiser").expect("client");
    let publisher = running.client("publisher").expect("client");

    let mut sent = 0;
    for (method, path, _) in airlock_service::api::ROUTES {
        let path = path
            .replace("{name}", "demo")
            .replace("{template}", "t")
            .replace("{id}", &"0".repeat(32));
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        for body in hostile_bodies() {
            for who in [&advertiser, &publisher] {
                let code = who.raw_bytes(method.clone(), &path, body.clone()).await;
                let code =
                    code.unwrap_or_else(|e| panic!("{method} {path}: the hub did not answer: {e}"));
                assert!(
                    code.as_u16() < 500 || code.as_u16() == 503,
                    "{method} {path}: {code}"
                );
                sent += 1;
            }
        }
        // Over the body limit: 413, naming it (routes that read a body;
        // template approvals, a cancel and a sign-out read none).
        if method != Method::GET
            && method != Method::DELETE
            && !path.contains("/templates/")
            && !path.ends_with("/cancel")
        {
            let (code, text) = advertiser
                .raw(
                    method.clone(),
                    &path,
                    Some(serde_json::json!({"toml": "x".repeat(70 * 1024)})),
                )
                .await
                .expect("answer");
            assert_eq!(code.as_u16(), 413, "{method} {path}: {text}");
            assert!(text.contains("max_request_bytes"), "{text}");
        }
    }
    assert!(sent > 500, "{sent} hostile requests");

    // Straight to the publisher's node, as the hub: every action, garbage.
    let mut node = as_hub_to_publisher(&running, &dir).await;
    for kind in [
        "hello",
        "install",
        "secret.generate",
        "secret.install",
        "deliver",
        "psi",
        "nope",
    ] {
        for body in hostile_bodies() {
            let _ = node
                .do_action(arrow_flight::Action {
                    r#type: kind.into(),
                    body: body.into(),
                })
                .await;
        }
    }
    for body in hostile_bodies() {
        let _ = node
            .do_get(arrow_flight::Ticket {
                ticket: body.into(),
            })
            .await;
    }
    assert_eq!(
        node_hello(&mut node).await.member,
        "publisher",
        "the node still answers"
    );

    // The SQL length limit of hub.toml refuses by name.
    let long = format!(
        "SELECT COUNT(*) FROM audience a JOIN purchases p ON a.email = p.email WHERE {}",
        vec!["a.segment = 'x'"; 200].join(" OR ")
    );
    match remote::query(&advertiser, "demo", &long).await {
        Err(CliError::Refused { refusal, .. }) => {
            assert_eq!(refusal.control, Control::Limit);
            assert!(refusal.reason.contains("max_sql_bytes"), "{refusal}");
        }
        other => panic!(
            "expected a limit refusal, got {:?}",
            other.map(|r| r.num_rows())
        ),
    }
    // The processes still answer, and a query still runs.
    let r = remote::query(&advertiser, "demo", OVERLAP)
        .await
        .expect("still runs");
    assert_eq!(r.schema.fields().len(), 2);
    let v: airlock_service::api::CollaborationView = advertiser
        .call(Method::GET, "/v1/collaborations/demo", None::<&()>)
        .await
        .expect("show");
    assert_eq!(v.version, 1, "no hostile body changed the collaboration");
    drop(running);

    // No query beyond max_concurrent_queries_per_member: 429, by name.
    let dir2 = tmp.path().join("demo2");
    let running = start_limited(
        &dir2,
        HubLimits {
            max_concurrent_queries_per_member: 0,
            ..HubLimits::default()
        },
        NodeLimits::default(),
    )
    .await;
    let advertiser = running.client("advertiser").expect("client");
    let (code, text) = advertiser
        .raw(
            Method::POST,
            "/v1/collaborations/demo/queries",
            Some(serde_json::json!({"sql": OVERLAP})),
        )
        .await
        .expect("answer");
    assert_eq!(code.as_u16(), 429, "{text}");
    assert!(text.contains("max_concurrent_queries_per_member"), "{text}");
    drop(running);

    // No version beyond max_versions_per_collaboration: 409, by name, and
    // the collaboration stays at the version it had.
    let dir6 = tmp.path().join("demo6");
    let running = start_limited(
        &dir6,
        HubLimits {
            max_versions_per_collaboration: 2,
            ..HubLimits::default()
        },
        NodeLimits::default(),
    )
    .await;
    let advertiser = running.client("advertiser").expect("client");
    let base = data::collaboration_toml(true);
    let own = |k: u32| {
        base.replace(
            "measures = { amount_cents = [\"sum\", \"avg\", \"count\"], order_id = [\"count\", \"count_distinct\"] }\nrule = { type = \"aggregation\", min_distinct_identities = 50 }",
            &format!("measures = {{ amount_cents = [\"sum\", \"avg\", \"count\"], order_id = [\"count\", \"count_distinct\"] }}\nrule = {{ type = \"aggregation\", min_distinct_identities = {k} }}"),
        )
    };
    assert_ne!(own(60), base);
    let put = |toml: String| {
        let advertiser = &advertiser;
        async move {
            advertiser
                .raw(
                    Method::PUT,
                    "/v1/collaborations/demo",
                    Some(serde_json::json!({ "toml": toml })),
                )
                .await
                .expect("answer")
        }
    };
    let (code, text) = put(own(60)).await;
    assert_eq!(code.as_u16(), 200, "{text}");
    let (code, text) = put(own(70)).await;
    assert_eq!(code.as_u16(), 409, "{text}");
    assert!(text.contains("max_versions_per_collaboration"), "{text}");
    let (_, text) = advertiser
        .raw(Method::GET, "/v1/collaborations/demo", None)
        .await
        .expect("answer");
    let view: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(view["version"], 2, "{text}");
    // A hub.toml that sets a limit to 0 is refused at load, by name.
    let cfg = std::fs::read_to_string(&running.info.hub_config).expect("hub.toml");
    let zero = cfg.replace(
        "max_versions_per_collaboration = 2",
        "max_versions_per_collaboration = 0",
    );
    assert_ne!(zero, cfg, "{cfg}");
    let zero_path = running.info.hub_config.with_file_name("hub-zero.toml");
    std::fs::write(&zero_path, zero).expect("write");
    let e = airlock_service::config::HubConfig::load(&zero_path).expect_err("a limit of 0");
    assert!(
        e.to_string()
            .contains("[limits] max_versions_per_collaboration must be at least 1"),
        "{e}"
    );
    drop(running);

    // A query running longer than query_timeout_secs is stopped, by name.
    let dir3 = tmp.path().join("demo3");
    let running = start_limited(
        &dir3,
        HubLimits {
            query_timeout_secs: 0,
            ..HubLimits::default()
        },
        NodeLimits::default(),
    )
    .await;
    let advertiser = running.client("advertiser").expect("client");
    let q = advertiser.submit("demo", OVERLAP).await.expect("submit");
    let q = advertiser.wait(q, |_| {}).await.expect("wait");
    assert_eq!(q.state, QueryState::Failed);
    assert!(
        q.error
            .as_deref()
            .unwrap_or("")
            .contains("query_timeout_secs"),
        "{q:?}"
    );
    drop(running);

    // The executor's memory pool and the node's rows per fragment.
    let dir4 = tmp.path().join("demo4");
    let running = start_limited(
        &dir4,
        HubLimits {
            executor_memory_bytes: 1024,
            ..HubLimits::default()
        },
        NodeLimits {
            max_rows_per_fragment: 1_000_000,
            ..NodeLimits::default()
        },
    )
    .await;
    let advertiser = running.client("advertiser").expect("client");
    let e = remote::query(&advertiser, "demo", OVERLAP)
        .await
        .expect_err("over the pool");
    assert!(e.to_string().contains("executor_memory_bytes"), "{e}");
    drop(running);
    let dir5 = tmp.path().join("demo5");
    let running = start_limited(
        &dir5,
        HubLimits::default(),
        NodeLimits {
            max_rows_per_fragment: 100,
            ..NodeLimits::default()
        },
    )
    .await;
    let advertiser = running.client("advertiser").expect("client");
    match remote::query(&advertiser, "demo", OVERLAP).await {
        Err(CliError::Refused { refusal, .. }) => {
            assert_eq!(refusal.control, Control::Limit);
            assert!(
                refusal.reason.contains("max_rows_per_fragment"),
                "{refusal}"
            );
        }
        other => panic!(
            "expected a limit refusal, got {:?}",
            other.map(|r| r.num_rows())
        ),
    }
    drop(running);
}

/// Connections that never finish a TLS handshake, or hold the hub's port
/// idle, from one address (red team: 20,000 of them made every query fail
/// and kept members out): the node closes them after its handshake
/// timeout and takes at most 256 handshakes at once, the hub keeps at most
/// `max_connections_per_address` from one address; queries from elsewhere
/// run meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_lock_no_one_out() {
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpSocket, TcpStream};
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let hub_limits = airlock_service::config::HubLimits {
        max_connections_per_address: 16,
        ..Default::default()
    };
    let running = start_limited(&dir, hub_limits, Default::default()).await;
    let port = |url: &str| -> u16 {
        url.rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("port")
    };
    let hub_port = port(&running.info.hub);
    let node_port = port(&running.info.nodes["publisher"]);
    // From 127.0.0.2: a different address than the members' clients.
    async fn open(to: u16, n: usize) -> Vec<TcpStream> {
        let mut out = Vec::new();
        for _ in 0..n {
            let s = TcpSocket::new_v4().expect("socket");
            s.bind(SocketAddr::from(([127, 0, 0, 2], 0))).expect("bind");
            if let Ok(c) = s.connect(SocketAddr::from(([127, 0, 0, 1], to))).await {
                out.push(c);
            }
        }
        out
    }
    // Open: a read that waits; closed: end of stream or a reset.
    async fn still_open(conns: &mut [TcpStream]) -> usize {
        let mut n = 0;
        for c in conns.iter_mut() {
            let mut b = [0u8; 1];
            if tokio::time::timeout(Duration::from_millis(50), c.read(&mut b))
                .await
                .is_err()
            {
                n += 1;
            }
        }
        n
    }
    let mut hub_conns = open(hub_port, 100).await;
    let mut node_conns = open(node_port, 400).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hub_open = still_open(&mut hub_conns).await;
    assert!(
        hub_open <= 16,
        "{hub_open} connections from one address held open on the hub"
    );
    let node_open = still_open(&mut node_conns).await;
    assert!(
        (1..=256).contains(&node_open),
        "{node_open} handshakes under way on the node"
    );
    // A member's query runs meanwhile.
    let advertiser = running.client("advertiser").expect("client");
    remote::query(&advertiser, "demo", OVERLAP)
        .await
        .expect("a query while idle connections are held");
    // Past the handshake timeout, the node has closed every one of them.
    tokio::time::sleep(airlock_service::tls_accept::HANDSHAKE_TIMEOUT + Duration::from_secs(2))
        .await;
    assert_eq!(
        still_open(&mut node_conns).await,
        0,
        "handshakes never finished stay open"
    );
}
