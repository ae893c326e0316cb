//! Analysis templates, owners' approvals, the custom rule and purposes, in
//! process on the demo data: approval by every owner of a table read,
//! static verification at approval, values bound (never spliced),
//! content-hash pinning, revocation, the node's own enforcement, and
//! purpose-specific consent for list outputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::{plain_ctx, rows};

use airlock_cli::cluster::{CliError, Cluster};
use airlock_cli::{data, templates};
use airlock_node::{Node, NodeError};
use airlock_policy::{Collaboration, Control, QuerySpec};
use airlock_protocol::{Fragment, Literal, TemplateRun};

const BUYERS: &str = r#"
[[templates]]
name = "buyers_by_segment"
purpose = "measurement"
sql = """
SELECT a.segment, COUNT(DISTINCT a.email) AS buyers, SUM(p.amount_cents) AS revenue_cents
FROM audience a JOIN purchases p ON a.email = p.email
WHERE a.region = $region AND p.day >= $since
GROUP BY a.segment"""
[templates.params.region]
type = "string"
allowed = ["north", "south", "east", "west"]
[templates.params.since]
type = "date"
min = "2024-01-01"
max = "2030-12-31"
default = "2024-01-01"

[[templates]]
name = "rows_of_a_segment"
purpose = "measurement"
sql = "SELECT a.age_band, a.region FROM audience a WHERE a.segment = $segment"
[templates.params.segment]
type = "string"
allowed = ["sports", "news"]

[[templates]]
name = "filter_on_a_measure"
purpose = "measurement"
sql = """
SELECT a.segment, COUNT(DISTINCT a.email) AS buyers
FROM audience a JOIN purchases p ON a.email = p.email
WHERE p.amount_cents >= $min_cents
GROUP BY a.segment"""
[templates.params.min_cents]
type = "int"
min = 0
max = 100000
"#;

/// The demo data with the audience under a custom rule (approved templates
/// only), a second purpose (`activation`, for which the publisher needs no
/// consent column), list tables, and the templates above.
fn setup(rows: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    data::write_demo(&dir, rows, false).expect("demo data");
    let toml = data::collaboration_toml(false)
        .replace(
            "purposes = [\"measurement\"]",
            "purposes = [\"measurement\", \"activation\"]",
        )
        .replace(
            "rule = { type = \"aggregation\", min_distinct_identities = 50, join_required = false }",
            "rule = { type = \"custom\", min_distinct_identities = 50, templates_only = true }",
        )
        + r#"
[[tables]]
alias = "audience_list"
dataset = "publisher_audience"
identity = "email"
join = ["email"]
dimensions = ["segment"]
rule = { type = "list", list_columns = ["segment"] }

[[tables]]
alias = "buyer_list"
dataset = "advertiser_purchases"
identity = "email"
join = ["email"]
dimensions = ["category"]
rule = { type = "list", list_columns = ["category"] }
"# + BUYERS;
    std::fs::write(dir.join("collaboration.toml"), toml).expect("write");
    (tmp, dir)
}

fn file(dir: &Path) -> PathBuf {
    dir.join("collaboration.toml")
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn refusal(e: CliError) -> airlock_policy::Refusal {
    match e {
        CliError::Refused { refusal, .. } => refusal,
        other => panic!("expected a refusal, got: {other}"),
    }
}

async fn run(dir: &Path, spec: &QuerySpec) -> Result<Vec<String>, CliError> {
    let cluster = Cluster::open(&file(dir), None).await?;
    let released = cluster.query_spec("advertiser", spec).await?;
    Ok(rows(&released.batches))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_runs_only_once_every_owner_approved_its_exact_text() {
    let (_tmp, dir) = setup(200_000);
    let north = QuerySpec::template("buyers_by_segment", params(&[("region", "north")]));

    // The custom rule: no ad hoc SQL on the audience.
    let adhoc = run(
        &dir,
        &QuerySpec::sql("SELECT a.segment, COUNT(DISTINCT a.email) FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment"),
    )
    .await
    .expect_err("ad hoc SQL");
    let r = refusal(adhoc);
    assert_eq!(r.control, Control::CustomRule);
    assert_eq!(r.table.as_deref(), Some("audience"));

    // Nobody approved yet: refused, naming the owner.
    let r = refusal(run(&dir, &north).await.expect_err("unapproved"));
    assert_eq!(r.control, Control::TemplateApproval);
    assert!(r.reason.contains("'publisher'"), "{r}");

    // The publisher approves: static verification covers every region and
    // both ends of the date range, for the one analyst.
    let said = templates::set_approval_in_file(&file(&dir), "publisher", "buyers_by_segment", true)
        .await
        .expect("publisher approves");
    assert!(said.contains("passed 8 checks"), "{said}");
    let r = refusal(
        run(&dir, &north)
            .await
            .expect_err("advertiser has not approved"),
    );
    assert_eq!(r.control, Control::TemplateApproval);
    assert!(r.reason.contains("'advertiser'"), "{r}");
    templates::set_approval_in_file(&file(&dir), "advertiser", "buyers_by_segment", true)
        .await
        .expect("advertiser approves");

    // Approved by both: the released rows are the oracle's, with the values
    // bound and the threshold written out by hand.
    let got = run(&dir, &north).await.expect("approved template runs");
    let ctx = plain_ctx(&dir).await;
    let want = ctx
        .sql(
            "SELECT a.segment, COUNT(DISTINCT a.email) AS buyers, SUM(p.amount_cents) AS revenue_cents \
             FROM audience a JOIN purchases p ON a.email = p.email \
             WHERE a.region = 'north' AND p.day >= DATE '2024-01-01' GROUP BY a.segment \
             HAVING COUNT(DISTINCT a.email) >= 50 AND COUNT(DISTINCT p.email) >= 50",
        )
        .await
        .expect("oracle")
        .collect()
        .await
        .expect("oracle rows");
    assert_eq!(got, rows(&want));
    assert!(!got.is_empty(), "the oracle releases some rows");

    // Values are bound, never spliced: injection attempts are bad input
    // naming the parameter, and the value is not echoed.
    for (name, value) in [
        ("region", "north' OR '1'='1"),
        ("region", "north'; DROP TABLE audience; --"),
        ("since", "2024-01-01' OR 1=1 --"),
        ("since", "DATE '2024-01-01'"),
    ] {
        let spec = QuerySpec::template(
            "buyers_by_segment",
            params(&[("region", "north"), (name, value)]),
        );
        match run(&dir, &spec).await {
            Err(CliError::BadInput(m)) => {
                assert!(m.contains(&format!("parameter '{name}'")), "{m}");
                assert!(
                    !m.contains("OR") && !m.contains("DROP"),
                    "value echoed: {m}"
                );
            }
            other => panic!("{name}={value}: expected bad input, got {other:?}"),
        }
    }
    let unknown = QuerySpec::template(
        "buyers_by_segment",
        params(&[("region", "north"), ("limit", "1")]),
    );
    assert!(
        matches!(run(&dir, &unknown).await, Err(CliError::BadInput(m)) if m.contains("no parameter 'limit'"))
    );
    let with_sql = QuerySpec {
        sql: Some("SELECT 1".into()),
        ..north.clone()
    };
    assert!(matches!(
        run(&dir, &with_sql).await,
        Err(CliError::BadInput(_))
    ));
    let with_params = QuerySpec {
        params: params(&[("region", "north")]),
        ..QuerySpec::sql("SELECT category, COUNT(DISTINCT email) FROM purchases GROUP BY category")
    };
    assert!(matches!(
        run(&dir, &with_params).await,
        Err(CliError::BadInput(_))
    ));
    let placeholder = QuerySpec::sql(
        "SELECT category, COUNT(DISTINCT email) FROM purchases WHERE category = $c GROUP BY category",
    );
    assert!(
        matches!(run(&dir, &placeholder).await, Err(CliError::BadInput(m)) if m.contains("only in analysis templates"))
    );

    // A changed text is a new template: the old approvals approve nothing.
    let text = std::fs::read_to_string(file(&dir)).expect("read");
    let edited = text.replace("p.day >= $since", "p.day > $since");
    assert_ne!(text, edited);
    std::fs::write(file(&dir), &edited).expect("write");
    let r = refusal(run(&dir, &north).await.expect_err("changed text"));
    assert_eq!(r.control, Control::TemplateApproval);
    std::fs::write(file(&dir), &text).expect("restore");
    run(&dir, &north)
        .await
        .expect("the approved text runs again");

    // Revocation holds from the next query.
    templates::set_approval_in_file(&file(&dir), "publisher", "buyers_by_segment", false)
        .await
        .expect("revoke");
    let r = refusal(run(&dir, &north).await.expect_err("revoked"));
    assert_eq!(r.control, Control::TemplateApproval);
    assert!(r.reason.contains("'publisher'"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_is_refused_with_reasons_when_a_template_could_break_a_rule() {
    let (_tmp, dir) = setup(5_000);
    let before = std::fs::read(file(&dir)).expect("read");
    for (template, control) in [
        ("rows_of_a_segment", "aggregation-required"),
        ("filter_on_a_measure", "restricted-filter"),
    ] {
        let e = templates::set_approval_in_file(&file(&dir), "publisher", template, true)
            .await
            .expect_err("refused");
        let r = refusal(e);
        assert_eq!(r.control, Control::TemplateApproval);
        assert!(r.reason.contains(control), "{template}: {r}");
        assert!(r.reason.contains("run by 'advertiser'"), "{r}");
        assert_eq!(
            std::fs::read(file(&dir)).expect("read"),
            before,
            "nothing changed"
        );
    }
    // Template text that does not match its declaration, or does not plan.
    for (sql, want) in [
        (
            "SELECT a.segment, COUNT(DISTINCT a.email) AS n FROM audience a JOIN purchases p ON a.email = p.email WHERE a.region = $regoin GROUP BY a.segment",
            "uses $regoin, which it does not declare",
        ),
        (
            "SELECT a.segment, COUNT(DISTINCT a.email) AS n FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment",
            "declares parameter 'region' but its SQL never uses $region",
        ),
        ("SELEC a.segment FROM audience a WHERE a.region = $region", "does not plan"),
        // The same totality check as any query (ATTACKS 25): a branch
        // that fails on one value, an implicit cast, a self-join.
        (
            "SELECT a.segment, COUNT(DISTINCT a.email) AS n FROM audience a JOIN purchases p ON a.email = p.email WHERE CASE WHEN a.region = $region THEN substr(p.category, 1, -1) ELSE 'x' END = 'x' GROUP BY a.segment",
            "error-oracle",
        ),
        (
            "SELECT a.segment, COUNT(DISTINCT a.email) AS n FROM audience a JOIN purchases p ON a.email = p.email WHERE (CASE WHEN a.region = $region THEN a.age_band ELSE '99' END) > 30 GROUP BY a.segment",
            "error-oracle",
        ),
        (
            "SELECT a.segment, COUNT(DISTINCT a.email) AS n FROM audience a JOIN purchases p ON a.email = p.email JOIN purchases q ON q.email = a.email WHERE a.region = $region GROUP BY a.segment",
            "a table may be read once per query",
        ),
    ] {
        let text = String::from_utf8(before.clone()).expect("utf8").replace(
            "[[templates]]\nname = \"rows_of_a_segment\"",
            &format!(
                "[[templates]]\nname = \"odd\"\npurpose = \"measurement\"\nsql = \"{sql}\"\nparams.region = {{ type = \"string\", allowed = [\"north\"] }}\n\n[[templates]]\nname = \"rows_of_a_segment\""
            ),
        );
        std::fs::write(file(&dir), &text).expect("write");
        let e = templates::set_approval_in_file(&file(&dir), "publisher", "odd", true)
            .await
            .expect_err("refused");
        let r = refusal(e);
        assert!(r.reason.contains(want), "{want}: {r}");
        assert_eq!(std::fs::read_to_string(file(&dir)).expect("read"), text, "nothing changed");
    }
    std::fs::write(file(&dir), &before).expect("restore");
    // Bad input at approval: unknown template, a member who owns nothing.
    assert!(matches!(
        templates::set_approval_in_file(&file(&dir), "publisher", "nope", true).await,
        Err(CliError::BadInput(m)) if m.contains("no template named 'nope'")
    ));
    assert!(matches!(
        templates::set_approval_in_file(&file(&dir), "stranger", "buyers_by_segment", true).await,
        Err(CliError::BadInput(m)) if m.contains("not a member")
    ));
    assert_eq!(
        std::fs::read(file(&dir)).expect("read"),
        before,
        "nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_enforces_its_own_approval_and_custom_rule() {
    let (_tmp, dir) = setup(5_000);
    templates::set_approval_in_file(&file(&dir), "advertiser", "buyers_by_segment", true)
        .await
        .expect("advertiser approves");
    let text = std::fs::read_to_string(file(&dir)).expect("read");
    let collab = Collaboration::from_toml(&text, "c.toml").expect("valid");
    let node = Node::open(&collab, &dir, "publisher").await.expect("node");
    let t = collab.template("buyers_by_segment").expect("template");
    let run = TemplateRun {
        name: t.name.clone(),
        hash: t.hash(),
        params: BTreeMap::from([
            ("region".to_string(), Literal::Str("north".into())),
            ("since".to_string(), Literal::Date(19_723)),
        ]),
    };
    let scan = |template: Option<TemplateRun>| {
        Fragment::Scan(airlock_protocol::ScanFragment {
            collaboration: "demo".into(),
            query: "0123456789abcdef0123456789abcdef".into(),
            querier: "advertiser".into(),
            table: "audience".into(),
            columns: vec![airlock_protocol::FragmentColumn {
                name: "email".into(),
                treatment: airlock_protocol::Treatment::Pseudonym {
                    contract: "email".into(),
                },
            }],
            filter: None,
            template,
            purpose: None,
            dp: None,
        })
    };
    // As if the hub were wrong: a scan with no template, then a run of a
    // template this node's member never approved.
    for (fragment, control) in [
        (scan(None), Control::CustomRule),
        (scan(Some(run.clone())), Control::TemplateApproval),
    ] {
        match node.run(&fragment).await {
            Err(NodeError::Refused(r)) => assert_eq!(r.control, control, "{r}"),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
    // A run with a value the template does not allow is bad, even approved.
    templates::set_approval_in_file(&file(&dir), "publisher", "buyers_by_segment", true)
        .await
        .expect("publisher approves");
    let text = std::fs::read_to_string(file(&dir)).expect("read");
    let collab = Collaboration::from_toml(&text, "c.toml").expect("valid");
    let node = Node::open(&collab, &dir, "publisher").await.expect("node");
    node.run(&scan(Some(run.clone())))
        .await
        .expect("approved run scans");
    let mut bad = run;
    bad.params
        .insert("region".into(), Literal::Str("atlantis".into()));
    assert!(matches!(
        node.run(&scan(Some(bad))).await,
        Err(NodeError::BadFragment(m)) if m.contains("parameter 'region'")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_output_names_its_purpose_and_consent_is_checked_for_it() {
    let (_tmp, dir) = setup(20_000);
    let sql = "SELECT b.category FROM buyer_list b JOIN audience_list a ON a.email = b.email";
    let r = refusal(
        run(&dir, &QuerySpec::sql(sql))
            .await
            .expect_err("no purpose"),
    );
    assert_eq!(r.control, Control::Purpose);
    let with = |purpose: &str| QuerySpec {
        purpose: Some(purpose.into()),
        ..QuerySpec::sql(sql)
    };
    let r = refusal(
        run(&dir, &with("resale"))
            .await
            .expect_err("undeclared purpose"),
    );
    assert_eq!(r.control, Control::Purpose);
    assert!(!r.reason.is_empty());

    // The publisher's consent column applies to measurement only: the
    // activation list counts people without it, the measurement list not.
    let measurement = run(&dir, &with("measurement"))
        .await
        .expect("measurement list");
    let activation = run(&dir, &with("activation"))
        .await
        .expect("activation list");
    let ctx = plain_ctx(&dir).await;
    let count = |table: &'static str| {
        let ctx = ctx.clone();
        async move {
            let b = ctx
                .sql(&format!(
                    "SELECT COUNT(*) FROM purchases b JOIN {table} a ON a.email = b.email"
                ))
                .await
                .expect("oracle")
                .collect()
                .await
                .expect("rows");
            rows(&b)[0].parse::<usize>().expect("count")
        }
    };
    assert_eq!(measurement.len(), count("audience").await);
    assert_eq!(activation.len(), count("audience_all").await);
    assert!(activation.len() > measurement.len());
}

/// What the guard or a node decided about a template run.
#[derive(Debug, PartialEq)]
enum Decision {
    Admitted,
    Refused(Control),
    Bad,
}

/// The hub's guard and the publisher's node decide every template run
/// alike: generated over the analysts a template names, the querier, the
/// run's hash, its values, the purpose it gives and the owners' approvals.
/// Both call `Collaboration::admit_run` and `check_purpose`; a second copy
/// of either on one side would make a case here disagree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_and_the_node_decide_every_template_run_alike() {
    let (_tmp, dir) = setup(2_000);
    let base = std::fs::read_to_string(file(&dir)).expect("read")
        + "\n[[members]]\nname = \"agency\"\nabilities = [\"query\"]\n";
    let mut cases = 0;
    let mut seen = std::collections::BTreeSet::new();
    for analysts in ["", "analysts = [\"advertiser\"]\n"] {
        for publisher_approves in [true, false] {
            let text = base.replacen(
                "name = \"buyers_by_segment\"\npurpose = \"measurement\"\n",
                &format!("name = \"buyers_by_segment\"\npurpose = \"measurement\"\n{analysts}"),
                1,
            );
            std::fs::write(file(&dir), text).expect("write");
            let mut approvers = vec!["advertiser"];
            if publisher_approves {
                approvers.push("publisher");
            }
            for m in approvers {
                templates::set_approval_in_file(&file(&dir), m, "buyers_by_segment", true)
                    .await
                    .expect("approve");
            }
            let text = std::fs::read_to_string(file(&dir)).expect("read");
            let collab = Collaboration::from_toml(&text, "c.toml").expect("valid");
            let publisher = Node::open(&collab, &dir, "publisher").await.expect("node");
            let advertiser = Node::open(&collab, &dir, "advertiser").await.expect("node");
            let mut schemas = publisher.table_schemas().clone();
            schemas.extend(advertiser.table_schemas().clone());
            let guard = airlock_guard::Guard::new(&collab, &schemas).expect("guard");
            let t = collab.template("buyers_by_segment").expect("template");
            for querier in ["advertiser", "agency"] {
                for hash in [t.hash(), "0".repeat(64)] {
                    for region in ["north", "atlantis"] {
                        for purpose in [None, Some("measurement"), Some("activation"), Some("x")] {
                            let run = TemplateRun {
                                name: t.name.clone(),
                                hash: hash.clone(),
                                params: BTreeMap::from([
                                    ("region".to_string(), Literal::Str(region.into())),
                                    ("since".to_string(), Literal::Date(19_723)),
                                ]),
                            };
                            let hub = match guard
                                .check_run(&t.sql, Some(&run), purpose, querier, true)
                                .await
                            {
                                Ok(_) => Decision::Admitted,
                                Err(airlock_guard::GuardError::Refused(r)) => {
                                    Decision::Refused(r.control)
                                }
                                Err(airlock_guard::GuardError::BadInput(_)) => Decision::Bad,
                                Err(e) => panic!("the guard failed: {e}"),
                            };
                            let fragment = Fragment::Scan(airlock_protocol::ScanFragment {
                                collaboration: "demo".into(),
                                query: "0123456789abcdef0123456789abcdef".into(),
                                querier: querier.into(),
                                table: "audience".into(),
                                columns: vec![airlock_protocol::FragmentColumn {
                                    name: "email".into(),
                                    treatment: airlock_protocol::Treatment::Pseudonym {
                                        contract: "email".into(),
                                    },
                                }],
                                filter: None,
                                template: Some(run),
                                purpose: purpose.map(str::to_string),
                                dp: None,
                            });
                            let node = match publisher.run(&fragment).await {
                                Ok(_) => Decision::Admitted,
                                Err(NodeError::Refused(r)) => Decision::Refused(r.control),
                                Err(NodeError::BadFragment(_)) => Decision::Bad,
                                Err(e) => panic!("the node failed: {e}"),
                            };
                            let case = format!(
                                "analysts {analysts:?}, publisher approves {publisher_approves}, \
                                 querier {querier}, hash {}, region {region}, purpose {purpose:?}",
                                &hash[..8]
                            );
                            assert_eq!(hub, node, "{case}");
                            seen.insert(format!("{hub:?}"));
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 2 * 2 * 2 * 2 * 2 * 4);
    // Every way a run can end was reached.
    let want = [
        "Admitted",
        "Bad",
        "Refused(CustomRule)",
        "Refused(Purpose)",
        "Refused(TemplateApproval)",
    ];
    assert_eq!(
        seen,
        want.iter().map(|s| s.to_string()).collect(),
        "{seen:?}"
    );
}
