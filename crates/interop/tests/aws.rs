//! AWS Clean Rooms documents, written to the shapes of its API reference
//! (`tests/aws/*.json`), round-trip through Airlock's rules and templates;
//! what cannot be mapped is refused with its JSON path, and what AWS cannot
//! express is refused by name on export.

use std::collections::BTreeMap;

use airlock_interop::aws::{self, TableSpec};
use airlock_policy::{AnalysisRule, Collaboration, ConfiguredTable};

fn doc(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/aws/{name}", manifest_dir())).expect("fixture")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("json")
}

fn spec(alias: &str, dataset: &str) -> TableSpec {
    TableSpec {
        alias: alias.into(),
        dataset: dataset.into(),
        ..TableSpec::default()
    }
}

/// The imported table placed in a collaboration file validates.
fn validates(t: &ConfiguredTable) {
    #[derive(serde::Serialize)]
    struct Tables<'a> {
        tables: Vec<&'a ConfiguredTable>,
    }
    let block = toml::to_string(&Tables { tables: vec![t] }).expect("toml");
    let text = format!(
        "[collaboration]\nname = \"c\"\nsecret_file = \"k\"\n\n[[members]]\nname = \"m\"\nabilities = [\"query\", \"provide\"]\n\n[[datasets]]\nname = \"{}\"\nowner = \"m\"\n\n{block}",
        t.dataset
    );
    Collaboration::from_toml(&text, "c.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
}

#[test]
fn aggregation_and_list_rules_round_trip() {
    for (file, alias) in [
        ("aggregation.json", "purchases"),
        ("list.json", "audience_list"),
    ] {
        let text = doc(file);
        let imported = aws::import_rule(&text, &spec(alias, "ds")).expect(file);
        validates(&imported.value);
        let exported = aws::export_rule(&imported.value).expect("export");
        let back = serde_json::to_value(&exported.value).expect("json");
        assert_eq!(back, json(&text), "{file}");
    }
    let agg = aws::import_rule(&doc("aggregation.json"), &spec("purchases", "ds"))
        .expect("import")
        .value;
    assert_eq!(agg.identity, "email");
    assert_eq!(agg.min_distinct_identities(), Some(50));
    assert!(agg.rule.join_required());
    assert_eq!(
        agg.rule.scalar_functions(),
        Some(
            &[
                "lower".to_string(),
                "upper".into(),
                "trim".into(),
                "round".into()
            ][..]
        )
    );
    // The bare `{"v1": ...}` policy is accepted as well.
    let bare = serde_json::to_string(&json(&doc("list.json"))["analysisRulePolicy"]).expect("json");
    assert!(aws::import_rule(&bare, &spec("l", "ds")).is_ok());
}

#[test]
fn a_template_round_trips_with_its_parameters() {
    let text = doc("template.json");
    let imported = aws::import_template(&text, "measurement").expect("import");
    let t = &imported.value;
    assert!(
        t.sql.contains("a.region = $region AND p.day >= $since"),
        "{}",
        t.sql
    );
    assert!(imported
        .notes
        .iter()
        .any(|n| n.contains("parameter 'region' may take only its default value")));
    let exported = aws::export_template(t, false).expect("export");
    assert_eq!(
        serde_json::to_value(&exported.value).expect("json"),
        json(&text)
    );
    // Widened in Airlock, the template is no longer expressible as is.
    let mut wide = t.clone();
    if let Some(p) = wide.params.get_mut("region") {
        p.allowed
            .push(airlock_policy::template::Written::Str("south".into()));
    }
    let e = aws::export_template(&wide, false).expect_err("wider");
    assert!(
        e[0].contains("params.region: AWS cannot limit a parameter's values"),
        "{e:?}"
    );
    let accepted = aws::export_template(&wide, true).expect("accepted");
    assert!(accepted
        .notes
        .iter()
        .any(|n| n.starts_with("accepted wider: params.region")));
}

#[test]
fn a_custom_rule_imports_with_what_aws_leaves_unsaid_and_is_refused_on_export() {
    let text = doc("custom.json");
    let mut s = spec("audience", "ds");
    let e = aws::import_rule(&text, &s).expect_err("needs accounts, k, identity");
    assert!(
        e.iter()
            .any(|m| m.contains("allowedAnalysisProviders[0]: no member is mapped")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("set no minimum of distinct people")),
        "{e:?}"
    );
    s.accounts = BTreeMap::from([("444455556666".to_string(), "m".to_string())]);
    s.min_distinct_identities = Some(50);
    s.identity = Some("email".into());
    s.join = vec!["email".into()];
    s.dimensions = vec!["segment".into()];
    let imported = aws::import_rule(&text, &s).expect("import");
    validates(&imported.value);
    match &imported.value.rule {
        AnalysisRule::Custom {
            templates_only,
            analysts,
            min_distinct_identities,
            ..
        } => {
            assert!(*templates_only);
            assert_eq!(analysts, &vec!["m".to_string()]);
            assert_eq!(*min_distinct_identities, 50);
        }
        other => panic!("{other:?}"),
    }
    let e = aws::export_rule(&imported.value).expect_err("k cannot be expressed");
    assert!(e[0].contains("rule.min_distinct_identities"), "{e:?}");
    // A disallowed output column given as a dimension is refused.
    s.dimensions.push("email".into());
    let e = aws::import_rule(&text, &s).expect_err("email is output");
    assert!(
        e.iter().any(|m| m.contains("disallowedOutputColumns[0]")),
        "{e:?}"
    );
}

#[test]
fn what_cannot_be_mapped_is_refused_with_its_path() {
    let agg = doc("aggregation.json");
    let cases = [
        (agg.replacen("\"SUM\"", "\"SUM_DISTINCT\"", 1), "analysisRulePolicy.v1.aggregation.aggregateColumns[0].function: Airlock has no SUM_DISTINCT"),
        (agg.replace("[\"AND\"]", "[\"AND\", \"OR\"]"), "analysisRulePolicy.v1.aggregation.allowedJoinOperators[1]"),
        (agg.replace("\"NOT_ALLOWED\"", "\"ALLOWED\""), "analysisRulePolicy.v1.aggregation.additionalAnalyses"),
        (agg.replace(
            "{ \"columnName\": \"email\", \"minimum\": 50, \"type\": \"COUNT_DISTINCT\" }",
            "{ \"columnName\": \"email\", \"minimum\": 50, \"type\": \"COUNT_DISTINCT\" }, { \"columnName\": \"order_id\", \"minimum\": 10, \"type\": \"COUNT_DISTINCT\" }",
        ), "outputConstraints[1]: Airlock has one privacy unit per table"),
        (agg.replace("\"minimum\": 50", "\"minimum\": -1"), "analysisRulePolicy.v1.aggregation.outputConstraints[0].minimum: invalid value"),
        (agg.replace("\"AGGREGATION\"", "\"LIST\""), "analysisRuleType: does not match"),
        (agg.replace("\"email\", \"order_id\"], \"function\": \"COUNT_DISTINCT\"", "\"email\"], \"function\": \"SUM\""), "the privacy unit may only be counted"),
    ];
    for (text, want) in cases {
        let e = aws::import_rule(&text, &spec("p", "ds")).expect_err(want);
        assert!(e.iter().any(|m| m.contains(want)), "{want}: {e:?}");
    }
    let t = doc("template.json");
    for (text, want) in [
        (
            t.replace("\"DATE\"", "\"TIMESTAMP\""),
            "analysisParameters[1].type: TIMESTAMP has no Airlock parameter type",
        ),
        (
            t.replace(", \"defaultValue\": \"north\"", ""),
            "analysisParameters[0].defaultValue: Airlock verifies every value",
        ),
        (
            t.replace("\"text\":", "\"artifacts\": {}, \"text\":"),
            "source.artifacts: unknown field",
        ),
        (
            t.replace("\"SQL\"", "\"PYSPARK\""),
            "format: unknown variant `PYSPARK`",
        ),
        (t[..t.len() / 2].to_string(), "EOF while parsing"),
    ] {
        let e = aws::import_template(&text, "measurement").expect_err(want);
        assert!(e[0].contains(want), "{want}: {e:?}");
    }
}

#[test]
fn what_aws_cannot_express_is_refused_by_name_on_export() {
    let mut t = aws::import_rule(&doc("aggregation.json"), &spec("p", "ds"))
        .expect("import")
        .value;
    t.contracts.insert("email".into(), "hashed_email".into());
    if let AnalysisRule::Aggregation {
        differential_privacy,
        ..
    } = &mut t.rule
    {
        *differential_privacy = Some(
            toml::from_str("epsilon = 1.0\ndelta = 1e-7\nmax_rows_per_identity = 1\nmax_groups_per_identity = 1")
                .expect("dp"),
        );
    }
    let e = aws::export_rule(&t).expect_err("refused");
    assert!(
        e.iter()
            .any(|m| m.contains("contracts.email: AWS has no join contracts")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.contains("rule.differential_privacy")),
        "{e:?}"
    );
    // Functions AWS does not list only narrow the AWS rule: a note.
    let mut f = aws::import_rule(&doc("aggregation.json"), &spec("p", "ds"))
        .expect("import")
        .value;
    if let AnalysisRule::Aggregation {
        scalar_functions, ..
    } = &mut f.rule
    {
        *scalar_functions = Some(vec!["lower".into(), "left".into()]);
    }
    let out = aws::export_rule(&f).expect("export");
    assert!(
        out.notes[0].contains("left out (the AWS rule is narrower): left"),
        "{:?}",
        out.notes
    );
}

/// This crate's directory in the checkout being tested: cargo and nextest
/// set it when they run the test (a build cache shared between clones
/// holds the path of the clone that compiled it, which may be gone).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
