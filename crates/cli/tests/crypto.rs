//! Crypto mode in process: results equal executor mode's on the same data,
//! the transcript holds no raw identifier, unsupported shapes and hostile
//! fragments are refused, and two queries share no blinded value.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

mod common;
use common::{demo_emails, find_emails, rows};

use airlock_cli::cluster::{CliError, Cluster};
use airlock_cli::data;
use airlock_policy::{Collaboration, Control};
use airlock_protocol::{CryptoOutput, CryptoRole, CryptoSide};
use base64::Engine as _;

fn setup(rows: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    data::write_demo(&dir, rows, true).expect("demo");
    let crypto = dir.join("crypto.toml");
    std::fs::write(&crypto, data::collaboration_toml_crypto()).expect("write");
    (tmp, dir.join("collaboration.toml"), crypto)
}

/// (member, SQL) pairs crypto mode computes by the asker's own groups
/// (counts only; the responder's node matches and counts, the asker's
/// tags its people and opens: six steps without DP).
const SHAPES: &[(&str, &str)] = &[
    ("publisher", "SELECT a.segment, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment"),
    ("publisher", "SELECT a.age_band, COUNT(DISTINCT a.email) AS n FROM audience a JOIN purchases p ON a.email = p.email WHERE p.category IN ('home', 'apparel') GROUP BY a.age_band"),
    ("publisher", "SELECT COUNT(DISTINCT a.email) AS overlap FROM audience a JOIN purchases p ON a.email = p.email"),
    ("advertiser", "SELECT p.category, COUNT(DISTINCT p.email) AS in_audience FROM purchases p JOIN audience a ON p.email = a.email GROUP BY p.category"),
];

/// By the responder's (the publisher's) groups, asked by the advertiser.
const BY_PUBLISHER: &[(&str, &str)] = &[
    ("advertiser", "SELECT a.segment, COUNT(DISTINCT p.email) AS buyers FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment"),
    ("advertiser", "SELECT a.segment, COUNT(DISTINCT p.email) AS buyers, SUM(p.amount_cents) AS revenue_cents FROM audience a JOIN purchases p ON a.email = p.email WHERE a.region = 'north' GROUP BY a.segment"),
    ("advertiser", "SELECT a.age_band, AVG(p.amount_cents) AS avg_order, COUNT(DISTINCT a.email) AS n FROM audience a JOIN purchases p ON a.email = p.email WHERE p.category IN ('home', 'apparel') GROUP BY a.age_band"),
    ("advertiser", "SELECT a.age_band, a.region, COUNT(DISTINCT a.email) AS n FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.age_band, a.region"),
    ("advertiser", "SELECT SUM(p.amount_cents) AS revenue, COUNT(DISTINCT p.email) AS buyers FROM purchases p JOIN audience a ON p.email = a.email"),
];

/// The fragment of the publisher asking the sum of the advertiser's
/// amounts by its own segment, as the responder's node would receive it
/// (refused: by the asker's groups crypto mode releases counts only).
fn publisher_asks_by_segment() -> airlock_protocol::CryptoFragment {
    airlock_protocol::CryptoFragment {
        collaboration: "demo".into(),
        query: "0123456789abcdef0123456789abcdef".into(),
        querier: "publisher".into(),
        role: CryptoRole::Responder,
        asker: CryptoSide {
            member: "publisher".into(),
            table: "audience".into(),
            filter: None,
        },
        responder: CryptoSide {
            member: "advertiser".into(),
            table: "purchases".into(),
            filter: None,
        },
        groups_of: CryptoRole::Asker,
        group_columns: vec!["segment".into()],
        measure: Some("amount_cents".into()),
        outputs: vec![("s".into(), CryptoOutput::Sum)],
        template: None,
        purpose: None,
    }
}

/// A request to start a session of `f` (on the node that matches).
fn start_request(f: airlock_protocol::CryptoFragment) -> Vec<u8> {
    serde_json::to_vec(&airlock_protocol::PsiRequest::Start {
        session: "00112233445566778899aabbccddeeff".into(),
        fragment: f,
    })
    .expect("json")
}

/// A request to respond to `f` with a message no member's node made.
fn respond_request(f: airlock_protocol::CryptoFragment) -> Vec<u8> {
    serde_json::to_vec(&airlock_protocol::PsiRequest::Respond {
        fragment: f,
        message: airlock_protocol::Message(
            [airlock_psi::protocol::MAGIC.as_slice(), &[0u8; 64]].concat(),
        ),
    })
    .expect("json")
}

/// One step on a node, as the hub relays it: the message it answers.
async fn psi_step(
    node: &airlock_node::Node,
    req: airlock_protocol::PsiRequest,
) -> Result<airlock_protocol::Message, airlock_node::NodeError> {
    let json = serde_json::to_vec(&req).expect("json");
    let bytes = node.psi(&json).await?;
    Ok(
        serde_json::from_slice::<airlock_protocol::PsiResponse>(&bytes)
            .expect("response")
            .message,
    )
}

/// Steps 1 (the asker's node, which matches) and 2 (the responder's,
/// which groups) of a session of `fragment` (the asker's, by the
/// responder's groups): message 2.
async fn up_to_step_2(
    asker: &airlock_node::Node,
    responder: &airlock_node::Node,
    session: &str,
    fragment: &airlock_protocol::CryptoFragment,
) -> airlock_protocol::Message {
    let m1 = psi_step(
        asker,
        airlock_protocol::PsiRequest::Start {
            session: session.to_string(),
            fragment: fragment.clone(),
        },
    )
    .await
    .expect("step 1");
    let mut theirs = fragment.clone();
    theirs.role = CryptoRole::Responder;
    psi_step(
        responder,
        airlock_protocol::PsiRequest::Respond {
            fragment: theirs,
            message: m1,
        },
    )
    .await
    .expect("step 2")
}

fn b64_messages(tap: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    tap.iter()
        .filter_map(|(m, bytes)| {
            let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
            let msg = v["message"].as_str()?;
            Some((
                m.clone(),
                base64::engine::general_purpose::STANDARD.decode(msg).ok()?,
            ))
        })
        .collect()
}

/// Runs `shapes` in crypto mode and in executor mode on the demo data of
/// `n` audience rows: the same rows; and nothing that left a node holds a
/// raw email. Returns the crypto-mode cluster.
async fn same_as_executor_mode(n: usize, shapes: &[(&str, &str)], steps: usize) -> Cluster {
    let (tmp, plain, crypto) = setup(n);
    let executor = Cluster::open(&plain, None).await.expect("executor mode");
    let tap = Arc::new(Mutex::new(Vec::new()));
    let psi = Cluster::open(&crypto, Some(tap.clone()))
        .await
        .expect("crypto mode");
    for (member, sql) in shapes {
        let got = psi
            .query(member, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        // The executor-mode oracle (its querier is the advertiser; the
        // result does not depend on who asks).
        let want = executor.query("advertiser", sql).await.expect("executor");
        assert!(
            !rows(&want.batches).is_empty(),
            "{sql}: the oracle releases rows"
        );
        assert_eq!(rows(&got.batches), rows(&want.batches), "{sql}");
        assert_eq!(got.schema.fields().len(), want.schema.fields().len());
    }
    // Nothing that left a node holds a raw email; every message of every
    // step was recorded.
    let emails = demo_emails(plain.parent().expect("dir")).await;
    let tapped = tap.lock().expect("tap").clone();
    let messages = b64_messages(&tapped);
    assert!(messages.len() >= shapes.len() * steps, "{}", messages.len());
    for (member, m) in &messages {
        let found = find_emails(m, &emails);
        assert!(
            found.is_empty(),
            "the node of {member} sent an email: {found:?}"
        );
    }
    drop(tmp);
    psi
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_mode_releases_what_executor_mode_releases_with_no_executor() {
    let psi = same_as_executor_mode(30_000, SHAPES, 6).await;
    // The hub's plan says there is no executor.
    let plan = psi.check("publisher", SHAPES[1].1).await.expect("check");
    assert!(plan.starts_with("crypto mode: no executor"), "{plan}");
}

/// The canonical analysis: the advertiser's counts, sums and averages by
/// the publisher's segments (seven steps: with zero tests for k).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_the_publishers_groups_crypto_mode_releases_what_executor_mode_releases() {
    same_as_executor_mode(80_000, BY_PUBLISHER, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_queries_share_no_blinded_value() {
    let (_tmp, _plain, crypto) = setup(10_000);
    let chunks = |tap: &[(String, Vec<u8>)]| -> HashSet<Vec<u8>> {
        b64_messages(tap)
            .into_iter()
            .filter(|(_, m)| m.starts_with(airlock_psi::protocol::MAGIC))
            .flat_map(|(_, m)| {
                m[29..]
                    .chunks(32)
                    .filter(|c| c.len() == 32)
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut seen = Vec::new();
    for _ in 0..2 {
        let tap = Arc::new(Mutex::new(Vec::new()));
        let psi = Cluster::open(&crypto, Some(tap.clone()))
            .await
            .expect("open");
        psi.query("publisher", SHAPES[0].1).await.expect("query");
        seen.push(chunks(&tap.lock().expect("tap")));
    }
    assert!(seen[0].len() > 1000);
    assert!(
        seen[0].is_disjoint(&seen[1]),
        "a blinded value appeared in two queries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_shapes_and_hostile_fragments_are_refused() {
    let (_tmp, _plain, crypto) = setup(5_000);
    let psi = Cluster::open(&crypto, None).await.expect("open");
    for (member, sql, why) in [
        ("advertiser", "SELECT p.category, SUM(p.amount_cents) FROM purchases p JOIN audience a ON p.email = a.email GROUP BY p.category", "SUM is not COUNT(DISTINCT identity) or a SUM or AVG of a measure of the table not grouped by"),
        ("advertiser", "SELECT a.segment, p.category, COUNT(DISTINCT p.email) FROM purchases p JOIN audience a ON p.email = a.email GROUP BY a.segment, p.category", "dimension columns of one member's table"),
        ("publisher", "SELECT a.segment, COUNT(DISTINCT a.email) AS n FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment ORDER BY n DESC", "ORDER BY is not supported"),
        ("publisher", "SELECT a.segment, COUNT(*) FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment", "COUNT is not"),
        ("advertiser", "SELECT category, COUNT(DISTINCT email) FROM purchases GROUP BY category", "exactly two tables"),
        ("publisher", "SELECT a.segment, COUNT(DISTINCT p.email) AS buyers, SUM(p.amount_cents) AS revenue_cents FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment", "must be of the asking member's measure"),
        ("publisher", "SELECT a.age_band, AVG(p.amount_cents) AS avg_order FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.age_band", "must be of the asking member's measure"),
        ("publisher", "SELECT SUM(p.amount_cents) AS revenue FROM audience a JOIN purchases p ON a.email = p.email", "must be of the asking member's measure"),
        ("publisher", "SELECT a.segment, COUNT(DISTINCT a.email) AS n FROM audience a JOIN purchases p ON a.email = p.email WHERE a.region = p.category GROUP BY a.segment", "a condition involves both tables"),
    ] {
        match psi.query(member, sql).await {
            Err(CliError::Refused { refusal, .. }) => {
                assert_eq!(refusal.control, Control::CryptoMode, "{sql}: {refusal}");
                assert!(refusal.reason.contains(why), "{sql}: {refusal}");
            }
            other => panic!("{sql}: expected a refusal, got {:?}", other.map(|r| r.num_rows())),
        }
    }
    // A node checks a fragment sent to it directly, whatever the hub says.
    let text = std::fs::read_to_string(&crypto).expect("read");
    let collab = Collaboration::from_toml(&text, "c").expect("valid");
    let dir = crypto.parent().expect("dir");
    let advertiser = airlock_node::Node::open(&collab, dir, "advertiser")
        .await
        .expect("node");
    let base = publisher_asks_by_segment();
    // The advertiser asking by the publisher's segments, as its own node
    // (the matcher) receives it.
    let by_publisher = airlock_protocol::CryptoFragment {
        querier: "advertiser".into(),
        role: CryptoRole::Asker,
        asker: CryptoSide {
            member: "advertiser".into(),
            table: "purchases".into(),
            filter: None,
        },
        responder: CryptoSide {
            member: "publisher".into(),
            table: "audience".into(),
            filter: None,
        },
        groups_of: CryptoRole::Responder,
        group_columns: vec!["segment".into()],
        measure: Some("amount_cents".into()),
        outputs: vec![
            ("segment".into(), CryptoOutput::Group(0)),
            ("n".into(), CryptoOutput::Count),
            ("s".into(), CryptoOutput::Sum),
        ],
        ..base.clone()
    };
    let mut category = by_publisher.clone();
    category.measure = Some("category".into());
    let mut not_a_member = by_publisher.clone();
    not_a_member.querier = "stranger".into();
    let mut wrong_side = by_publisher.clone();
    wrong_side.asker.table = "audience".into();
    let mut order_id_sum = by_publisher.clone();
    order_id_sum.measure = Some("order_id".into());
    // The publisher asking a sum of the advertiser's amounts by its own
    // segments, sent to the advertiser's node (which would match) as if the
    // hub allowed it.
    for (f, want) in [
        (category, "not a measure of this table"),
        (
            not_a_member,
            "the asker is not a member with the 'query' ability",
        ),
        (wrong_side, "this node does not hold that side of the query"),
        (
            order_id_sum,
            "the rule does not allow this aggregate on the measure",
        ),
        (base.clone(), "must be of the asking member's measure"),
    ] {
        match advertiser.psi(&start_request(f)).await {
            Err(airlock_node::NodeError::Refused(r)) => {
                assert!(r.reason.contains(want), "{want}: {r}")
            }
            other => panic!("{want}: {:?}", other.map(|_| ())),
        }
    }
    // A well-formed fragment with a message no member's node made (the
    // hub's own) is a clear error.
    let publisher = airlock_node::Node::open(&collab, dir, "publisher")
        .await
        .expect("node");
    let mut grouping = by_publisher.clone();
    grouping.role = CryptoRole::Responder;
    match publisher.psi(&respond_request(grouping)).await {
        Err(airlock_node::NodeError::BadFragment(m)) => {
            assert!(m.contains("not authenticated"), "{m}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // No executor fragment at all in crypto mode: a hub that asks a node
    // for a scan (its rows, pseudonymised) is refused by the node.
    let scan = airlock_protocol::Fragment::Scan(airlock_protocol::ScanFragment {
        collaboration: "demo".into(),
        query: "0123456789abcdef0123456789abcdef".into(),
        querier: "publisher".into(),
        table: "purchases".into(),
        columns: vec![airlock_protocol::FragmentColumn {
            name: "category".into(),
            treatment: airlock_protocol::Treatment::Raw,
        }],
        filter: None,
        template: None,
        purpose: None,
        dp: None,
    });
    match advertiser.run(&scan).await {
        Err(airlock_node::NodeError::Refused(r)) => {
            assert_eq!(r.control, Control::CryptoMode, "{r}");
            assert!(r.reason.contains("no executor fragment"), "{r}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // The matcher's state runs step 3 once: a hub that calls it again (to
    // use its secret on points of its choice) is refused. The publisher
    // asks counts by its own segments: the advertiser's node matches.
    let mut asking = base.clone();
    asking.measure = None;
    asking.outputs = vec![("n".into(), CryptoOutput::Count)];
    let session = "00112233445566778899aabbccddeeff";
    let answer = |bytes: Vec<u8>| -> airlock_protocol::Message {
        serde_json::from_slice::<airlock_protocol::PsiResponse>(&bytes)
            .expect("response")
            .message
    };
    let m1 = answer(
        advertiser
            .psi(&start_request(asking.clone()))
            .await
            .expect("step 1"),
    );
    let mut grouping = asking.clone();
    grouping.role = CryptoRole::Asker;
    // The hub alters a message, or relays it for another query (another
    // fragment): the other node refuses it as not authenticated.
    let mut altered = m1.0.clone();
    altered[40] ^= 1;
    let mut other_query = grouping.clone();
    other_query.group_columns = vec!["region".into()];
    for (fragment, message) in [
        (grouping.clone(), airlock_protocol::Message(altered)),
        (other_query, m1.clone()),
    ] {
        let r = publisher
            .psi(
                &serde_json::to_vec(&airlock_protocol::PsiRequest::Respond { fragment, message })
                    .expect("json"),
            )
            .await;
        match r {
            Err(airlock_node::NodeError::BadFragment(m)) => {
                assert!(
                    m.contains("message 1 of this crypto-mode query is not authenticated"),
                    "{m}"
                )
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
    let m2 = answer(
        publisher
            .psi(
                &serde_json::to_vec(&airlock_protocol::PsiRequest::Respond {
                    fragment: grouping,
                    message: m1,
                })
                .expect("json"),
            )
            .await
            .expect("step 2"),
    );
    let reblind = serde_json::to_vec(&airlock_protocol::PsiRequest::Reblind {
        session: session.into(),
        message: m2,
    })
    .expect("json");
    advertiser.psi(&reblind).await.expect("step 3");
    match advertiser.psi(&reblind).await {
        Err(airlock_node::NodeError::BadFragment(m)) => {
            assert!(m.contains("run twice"), "{m}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // By the responder's groups: the responder's node checks the groups
    // (dimensions of its own table only), and each node runs each of its
    // steps once, in order, whatever the hub relays.
    let mut by_email = by_publisher.clone();
    by_email.role = CryptoRole::Responder;
    by_email.group_columns = vec!["email".into()];
    match psi_step(
        &publisher,
        airlock_protocol::PsiRequest::Respond {
            fragment: by_email,
            message: airlock_protocol::Message::default(),
        },
    )
    .await
    {
        Err(airlock_node::NodeError::Refused(r)) => {
            assert!(
                r.reason.contains("only dimensions may be grouped by"),
                "{r}"
            )
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    let session = "ffeeddccbbaa99887766554433221100".to_string();
    let step_err =
        |r: Result<airlock_protocol::Message, airlock_node::NodeError>, want: &str| match r {
            Err(airlock_node::NodeError::BadFragment(m)) => {
                assert!(m.contains(want), "{want}: {m}")
            }
            other => panic!("{want}: {:?}", other.map(|_| ())),
        };
    let m2 = up_to_step_2(&advertiser, &publisher, &session, &by_publisher).await;
    let m3 = psi_step(
        &advertiser,
        airlock_protocol::PsiRequest::Reblind {
            session: session.clone(),
            message: m2.clone(),
        },
    )
    .await
    .expect("step 3");
    let m4 = psi_step(
        &publisher,
        airlock_protocol::PsiRequest::Finish {
            session: session.clone(),
            message: m3,
        },
    )
    .await
    .expect("step 4");
    // The zero tests relayed as the asker's proofs, or as the release.
    step_err(
        psi_step(
            &publisher,
            airlock_protocol::PsiRequest::Release {
                session: session.clone(),
                message: m4.clone(),
            },
        )
        .await,
        "message 5 of this crypto-mode query is not authenticated",
    );
    step_err(
        psi_step(
            &advertiser,
            airlock_protocol::PsiRequest::Result {
                session: session.clone(),
                message: m4.clone(),
            },
        )
        .await,
        "message 6 of this crypto-mode query is not authenticated",
    );
    // A refused step ends the session on that node (its state is taken).
    step_err(
        psi_step(
            &advertiser,
            airlock_protocol::PsiRequest::Check {
                session: session.clone(),
                message: m4,
            },
        )
        .await,
        "no such crypto-mode session",
    );
    // Step 3 again on a fresh session: refused by the protocol's state.
    let again = "0123456789abcdef0123456789abcdef".to_string();
    let m2 = up_to_step_2(&advertiser, &publisher, &again, &by_publisher).await;
    let reblind = airlock_protocol::PsiRequest::Reblind {
        session: again.clone(),
        message: m2,
    };
    psi_step(&advertiser, reblind.clone())
        .await
        .expect("step 3");
    step_err(
        psi_step(&advertiser, reblind).await,
        "step out of order, or run twice",
    );
    // Crypto mode is configured for a pair, with aggregates only.
    let three = text.replacen(
        "[[datasets]]",
        "[[members]]\nname = \"third\"\nabilities = [\"provide\"]\n\n[[datasets]]",
        1,
    );
    let e = Collaboration::from_toml(&three, "c").expect_err("three providers");
    assert!(
        e.to_string()
            .contains("crypto mode is for a pair of members"),
        "{e}"
    );
    let negative = data::collaboration_toml_dp()
        .replacen(
            "purposes = [\"measurement\"]",
            "purposes = [\"measurement\"]\nmode = \"crypto\"",
            1,
        )
        .replace("amount_cents = [0, 30000]", "amount_cents = [-100, 30000]");
    let e = Collaboration::from_toml(&negative, "c").expect_err("negative bound");
    assert!(
        e.to_string()
            .contains("crypto mode sums non-negative values"),
        "{e}"
    );
}

/// Under differential privacy crypto mode bounds each person's
/// contribution on the responder's node, adds exact discrete Laplace noise
/// to every released value, chooses groups by partition selection, and
/// spends the budget before any node reads a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_differential_privacy_crypto_mode_adds_noise_and_spends_the_budget() {
    let (_tmp, plain, _crypto) = setup(30_000);
    let dir = plain.parent().expect("dir").to_path_buf();
    let dp = data::collaboration_toml_dp()
        .replacen(
            "purposes = [\"measurement\"]",
            "purposes = [\"measurement\"]\nmode = \"crypto\"",
            1,
        )
        .replacen(
            "name = \"publisher\"\nabilities = [\"provide\"]",
            "name = \"publisher\"\nabilities = [\"query\", \"receive\", \"provide\"]",
            1,
        );
    let file = dir.join("crypto-dp.toml");
    std::fs::write(&file, dp).expect("write");
    let exact = Cluster::open(&plain, None).await.expect("executor mode");
    let psi = Cluster::open(&file, None)
        .await
        .expect("crypto mode with DP");
    let by_segment = "SELECT a.segment, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment";
    let counts = |batches: &[datafusion::arrow::record_batch::RecordBatch]| {
        rows(batches)
            .into_iter()
            .map(|r| {
                let (k, v) = r.rsplit_once(" | ").expect("two columns");
                (k.to_string(), v.parse::<i64>().expect("count"))
            })
            .collect::<std::collections::BTreeMap<String, i64>>()
    };
    let want = counts(
        &exact
            .query("advertiser", by_segment)
            .await
            .expect("exact")
            .batches,
    );
    let got = counts(
        &psi.query("publisher", by_segment)
            .await
            .expect("noisy")
            .batches,
    );
    assert_eq!(
        got.len(),
        want.len(),
        "every segment is large enough to be selected"
    );
    let mut differs = 0;
    for (segment, noisy) in &got {
        let e = want[segment];
        // Scale 9 (3 groups per person at epsilon 1/3: the count and
        // two shares of dummies): 180 is 20 scales.
        assert!((noisy - e).abs() <= 180, "{segment}: {noisy} vs {e}");
        differs += usize::from(*noisy != e);
    }
    assert!(differs > 0, "noise was added");
    // A filtered count by the same public segments, noisy; the result
    // says how noisy it is, for the CLI's footer.
    let north = psi
        .query(
            "publisher",
            "SELECT a.segment, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email WHERE a.region = 'north' GROUP BY a.segment",
        )
        .await
        .expect("noisy filtered count");
    let footer = airlock_cli::output::noise_footer(&north).expect("noise metadata");
    assert!(footer.contains("people"), "{footer}");
    assert!(footer.contains("cost: epsilon 1"), "{footer}");
    assert_eq!(
        rows(&north.batches).len(),
        want.len(),
        "every public segment"
    );
    // Sums by the asker's own groups are refused (before any debit).
    match psi
        .query(
            "publisher",
            "SELECT a.segment, AVG(p.amount_cents) AS avg_order FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment",
        )
        .await
    {
        Err(CliError::Refused { refusal, .. }) => {
            assert_eq!(refusal.control, Control::CryptoMode, "{refusal}")
        }
        other => panic!("{:?}", other.map(|r| r.num_rows())),
    }
    // Without groups, the one count is always released.
    let total = psi
        .query(
            "publisher",
            "SELECT COUNT(DISTINCT a.email) AS overlap FROM audience a JOIN purchases p ON a.email = p.email",
        )
        .await
        .expect("noisy total");
    let noisy: i64 = rows(&total.batches)[0].parse().expect("int");
    let e: i64 = want.values().sum();
    assert!((noisy - e).abs() <= 180, "{noisy} vs {e}");
    // Three queries at epsilon 1 spent the budget of 3: the fourth is refused.
    match psi.query("publisher", by_segment).await {
        Err(CliError::Refused { refusal, .. }) => {
            assert_eq!(refusal.control, Control::PrivacyBudget, "{refusal}")
        }
        other => panic!(
            "expected a budget refusal, got {:?}",
            other.map(|r| r.num_rows())
        ),
    }
}

/// By the publisher's segments under differential privacy, asked by the
/// advertiser: every public segment is released (none chosen by its
/// count), counts and sums noisy within their scales, with the cost and
/// the noise in the result's metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_the_publishers_segments_under_dp_every_public_segment_is_released_noisy() {
    let (_tmp, plain, _crypto) = setup(60_000);
    let dir = plain.parent().expect("dir").to_path_buf();
    let dp = data::collaboration_toml_dp().replacen(
        "purposes = [\"measurement\"]",
        "purposes = [\"measurement\"]\nmode = \"crypto\"",
        1,
    );
    let file = dir.join("crypto-dp.toml");
    std::fs::write(&file, dp).expect("write");
    let exact = Cluster::open(&plain, None).await.expect("executor mode");
    let psi = Cluster::open(&file, None)
        .await
        .expect("crypto mode with DP");
    let sql = "SELECT a.segment, COUNT(DISTINCT p.email) AS buyers, SUM(p.amount_cents) AS revenue FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment";
    let parse = |batches: &[datafusion::arrow::record_batch::RecordBatch]| {
        rows(batches)
            .into_iter()
            .map(|r| {
                let parts: Vec<&str> = r.split(" | ").collect();
                let n = |i: usize| parts[i].parse::<i64>().expect("int");
                (parts[0].to_string(), (n(1), n(2)))
            })
            .collect::<std::collections::BTreeMap<String, (i64, i64)>>()
    };
    // Executor mode's exact values (DP also keeps at most 3 rows per
    // person and clamps them, which moves a sum by far less than the
    // margin below).
    let want = parse(&exact.query("advertiser", sql).await.expect("exact").batches);
    let got = psi.query("advertiser", sql).await.expect("noisy");
    let footer = airlock_cli::output::noise_footer(&got).expect("noise metadata");
    assert!(footer.contains("cost: epsilon 1"), "{footer}");
    let got = parse(&got.batches);
    let segments: Vec<&str> = data::SEGMENTS.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        got.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut s = segments.clone();
            s.sort();
            s
        },
        "every public segment is released"
    );
    // Epsilon 1 over the count, the sum and three shares of dummies: 0.2
    // each; the count's sensitivity is 3 groups (scale 15), the sum's
    // 3 x 3 x 30000 (scale 1.35e6). 20 scales either way.
    let mut differs = 0;
    for (segment, (n, s)) in &got {
        let (en, es) = want.get(segment).copied().unwrap_or((0, 0));
        assert!((n - en).abs() <= 300, "{segment}: count {n} vs {en}");
        assert!((s - es).abs() <= 27_000_000, "{segment}: sum {s} vs {es}");
        differs += usize::from(*n != en);
    }
    assert!(differs > 0, "noise was added");
}

/// Records the progress a crypto-mode query reports, relaying to the
/// in-process nodes.
struct Steps<'a> {
    nodes: &'a airlock_cli::cluster::LocalNodes,
    seen: Mutex<Vec<Option<airlock_hub::CryptoStep>>>,
}

impl airlock_hub::NodeClient for Steps<'_> {
    fn execute<'a>(
        &'a self,
        member: &'a str,
        fragment: &'a airlock_protocol::Fragment,
    ) -> futures::future::BoxFuture<
        'a,
        Result<
            (
                datafusion::arrow::datatypes::SchemaRef,
                airlock_protocol::wire::Partitions,
            ),
            airlock_hub::NodeFailure,
        >,
    > {
        self.nodes.execute(member, fragment)
    }
    fn psi<'a>(
        &'a self,
        member: &'a str,
        request: &'a airlock_protocol::PsiRequest,
    ) -> futures::future::BoxFuture<
        'a,
        Result<airlock_protocol::PsiResponse, airlock_hub::NodeFailure>,
    > {
        self.nodes.psi(member, request)
    }
    fn crypto_step(&self, step: Option<&airlock_hub::CryptoStep>) {
        self.seen.lock().expect("steps").push(step.cloned());
    }
}

/// Progress of a crypto-mode query, in process as through the hub: every
/// step is announced before it runs, numbered of a total known from the
/// start, naming the node that runs it, and the end is announced; the
/// sequence is the same on other data (nothing in it depends on data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_names_each_step_and_is_the_same_on_other_data() {
    let queries = [
        // By the publisher's own groups: the advertiser's node matches
        // (odd steps), the publisher's groups and opens (even steps).
        (SHAPES[0], 6, "advertiser"),
        (BY_PUBLISHER[0], 7, "advertiser"),
    ];
    let mut runs = Vec::new();
    for n in [3_000, 7_000] {
        let (_tmp, _plain, crypto) = setup(n);
        let psi = Cluster::open(&crypto, None).await.expect("open");
        let mut per_query = Vec::new();
        for ((member, sql), total, asker) in queries {
            let steps = Steps {
                nodes: &psi.nodes,
                seen: Mutex::new(Vec::new()),
            };
            psi.hub
                .query_spec(
                    "0123456789abcdef0123456789abcdef",
                    member,
                    &airlock_policy::QuerySpec::sql(sql),
                    &steps,
                    &airlock_hub::NoLedger,
                )
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let seen = steps.seen.into_inner().expect("steps");
            assert_eq!(seen.len(), total + 1, "{sql}: {seen:?}");
            assert_eq!(seen.last(), Some(&None), "the end is announced");
            for (i, s) in seen[..total].iter().enumerate() {
                let s = s.as_ref().expect("a step");
                assert_eq!((s.index, s.total), (i + 1, total));
                // The matcher runs the odd steps, the grouper the even.
                assert_eq!(s.member == asker, i % 2 == 0, "{s}");
                assert!(s
                    .to_string()
                    .starts_with(&format!("step {}/{total}: ", i + 1)));
            }
            per_query.push(seen);
        }
        runs.push(per_query);
    }
    assert_eq!(runs[0], runs[1], "the steps do not depend on the data");
}

/// A crypto-mode node admits a template run by the same rules as the hub
/// (`Collaboration::admit_run`): the run's hash, the analysts the template
/// names, its purpose, its values, and this node's own approval, whatever
/// the hub says. Before one home, a crypto-mode node skipped the analysts
/// and the purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crypto_node_admits_a_template_run_as_the_hub_does() {
    let (_tmp, _plain, crypto) = setup(2_000);
    let template = |analyst: &str| {
        format!(
            r#"
[[templates]]
name = "overlap_by_segment"
purpose = "measurement"
analysts = ["{analyst}"]
sql = "SELECT a.segment, COUNT(DISTINCT a.email) AS n FROM audience a JOIN purchases p ON a.email = p.email WHERE a.region = $region GROUP BY a.segment"
[templates.params.region]
type = "string"
allowed = ["north", "south"]
"#
        )
    };
    // Two purposes, so a run can name a declared one that is not the
    // template's.
    let base = std::fs::read_to_string(&crypto).expect("read").replacen(
        "purposes = [\"measurement\"]",
        "purposes = [\"measurement\", \"activation\"]",
        1,
    );
    assert!(base.contains("\"activation\"]"));
    // The querier (the asker) is the publisher: one template names it, the
    // other names only the advertiser. Each is approved by the advertiser,
    // whose node answers.
    let policy = |analyst: &str, approve: bool| {
        let text = base.clone() + &template(analyst);
        let hash = Collaboration::from_toml(&text, "c")
            .expect("valid")
            .template("overlap_by_segment")
            .expect("template")
            .hash();
        let text = if approve {
            text + &format!("\n[approvals]\nadvertiser = [\"{hash}\"]\n")
        } else {
            text
        };
        (text, hash)
    };
    let (unapproved, hash) = policy("publisher", false);
    let (approved, _) = policy("publisher", true);
    let (other, other_hash) = policy("advertiser", true);
    let dir = crypto.parent().expect("dir");
    let fragment = |hash: &str, region: &str, purpose: Option<&str>| {
        let mut f = publisher_asks_by_segment();
        f.measure = None;
        f.outputs = vec![("n".into(), CryptoOutput::Count)];
        f.template = Some(airlock_protocol::TemplateRun {
            name: "overlap_by_segment".into(),
            hash: hash.to_string(),
            params: std::collections::BTreeMap::from([(
                "region".to_string(),
                airlock_protocol::Literal::Str(region.into()),
            )]),
        });
        f.purpose = purpose.map(str::to_string);
        f
    };
    /// Policy text, run hash, region, purpose, the refusal expected.
    type Case<'a> = (
        &'a String,
        &'a String,
        &'a str,
        Option<&'a str>,
        Option<Control>,
    );
    let cases: [Case; 6] = [
        (
            &unapproved,
            &hash,
            "north",
            None,
            Some(Control::TemplateApproval),
        ),
        (
            &approved,
            &other_hash,
            "north",
            None,
            Some(Control::TemplateApproval),
        ),
        (
            &other,
            &other_hash,
            "north",
            None,
            Some(Control::CustomRule),
        ),
        (
            &approved,
            &hash,
            "north",
            Some("activation"),
            Some(Control::Purpose),
        ),
        (&approved, &hash, "atlantis", None, None),
        // Admitted: the advertiser's node (which matches) sends message 1.
        (&approved, &hash, "north", Some("measurement"), None),
    ];
    for (text, hash, region, purpose, want) in cases {
        let collab = Collaboration::from_toml(text, "c").expect("valid");
        let node = airlock_node::Node::open(&collab, dir, "advertiser")
            .await
            .expect("node");
        let got = node
            .psi(&start_request(fragment(hash, region, purpose)))
            .await;
        let case = format!("{} {region} {purpose:?}", &hash[..8]);
        match (got, want) {
            (Err(airlock_node::NodeError::Refused(r)), Some(c)) => {
                assert_eq!(r.control, c, "{case}: {r}");
                assert_eq!(r.table.as_deref(), Some("purchases"), "{case}: {r}");
            }
            (Err(airlock_node::NodeError::BadFragment(m)), None) if region == "atlantis" => {
                assert!(m.contains("parameter 'region'"), "{case}: {m}")
            }
            (Ok(_), None) if region != "atlantis" => {}
            (other, _) => panic!("{case}: {:?}", other.map(|_| ())),
        }
    }
}
