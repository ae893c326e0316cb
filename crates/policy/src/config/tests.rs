//! The validation's tests: every problem named by file, table and column.

use super::*;

const GOOD: &str = r#"
[collaboration]
name = "demo"
secret_file = "collaboration.key"

[[members]]
name = "publisher"
abilities = ["provide"]

[[members]]
name = "advertiser"
abilities = ["query", "receive", "provide"]

[[datasets]]
name = "audience_ds"
owner = "publisher"

[[tables]]
alias = "audience"
dataset = "audience_ds"
identity = "email"
join = ["email"]
dimensions = ["segment", "region"]
rule = { type = "aggregation", min_distinct_identities = 50 }
"#;

fn errors(text: &str) -> Vec<String> {
    match Collaboration::from_toml(text, "c.toml") {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn good_config_loads() {
    let c = Collaboration::from_toml(GOOD, "c.toml").expect("valid");
    assert_eq!(c.owner_of("audience"), Some("publisher"));
    assert_eq!(
        c.table("audience").map(|t| t.contract("email")),
        Some("email".into())
    );
    assert!(c.has_ability("advertiser", Ability::Query));
    assert!(!c.has_ability("publisher", Ability::Query));
}

#[test]
fn bad_inputs_are_named() {
    let cases = [
        (GOOD.replace("min_distinct_identities = 50", "min_distinct_identities = 1"),
         "c.toml: table 'audience': min_distinct_identities must be at least 2 (got 1)"),
        (GOOD.replace("[\"segment\", \"region\"]", "[\"segment\", \"email\"]"),
         "c.toml: table 'audience', column 'email': conflicting roles: a column cannot be both identity and dimension"),
        (GOOD.replace("owner = \"publisher\"", "owner = \"nobody\""),
         "c.toml: dataset 'audience_ds': dataset owner 'nobody' is not a declared member"),
        (GOOD.replace("dataset = \"audience_ds\"", "dataset = \"missing\""),
         "c.toml: table 'audience': dataset 'missing' is not declared"),
        (GOOD.replace("alias = \"audience\"", "alias = \"Audience\""),
         "c.toml: table 'Audience': alias must be a lowercase SQL identifier ([a-z_][a-z0-9_]*)"),
        (GOOD.replace("abilities = [\"provide\"]", "abilities = [\"query\"]"),
         "c.toml: dataset 'audience_ds': dataset owner 'publisher' lacks the 'provide' ability"),
        (GOOD.replace("join = [\"email\"]", "join = [\"email\", \"segment\"]"),
         "c.toml: table 'audience', column 'segment': conflicting roles: a column cannot be both join and dimension"),
    ];
    for (text, want) in cases {
        let got = errors(&text);
        assert!(got.iter().any(|g| g == want), "want {want:?}, got {got:?}");
    }
}

#[test]
fn bad_differential_privacy_settings_are_named() {
    let dp = |rule: &str, privacy: &str| {
        let text = GOOD
            .replace(
                "dimensions = [\"segment\", \"region\"]",
                "dimensions = [\"segment\", \"region\"]\nmeasures = { spend = [\"sum\"] }",
            )
            .replace(
                "min_distinct_identities = 50 }",
                &format!("min_distinct_identities = 50, differential_privacy = {{ {rule} }} }}"),
            )
            .replace(
                "[[members]]\nname = \"publisher\"",
                &format!("{privacy}\n[[members]]\nname = \"publisher\""),
            );
        errors(&text)
    };
    let ok_rule = "epsilon = 1.0, bounds = { spend = [0, 100] }";
    let budget = "[privacy]\nepsilon = 3.0\n";
    assert!(dp(ok_rule, budget).is_empty(), "{:?}", dp(ok_rule, budget));
    let cases = [
        ("epsilon = 0.0, bounds = { spend = [0, 100] }", budget,
         "c.toml: table 'audience': differential_privacy.epsilon must be above 0 and at most 100"),
        ("epsilon = 1.0, users_noise_per_query = 10.0, bounds = { spend = [0, 100] }", budget,
         "c.toml: table 'audience': differential_privacy: give either epsilon or users_noise_per_query, not both"),
        ("bounds = { spend = [0, 100] }", budget,
         "c.toml: table 'audience': differential_privacy: epsilon (or users_noise_per_query) is required"),
        ("epsilon = 1.0", budget,
         "c.toml: table 'audience', column 'spend': differential_privacy: a measure that may be summed or averaged needs bounds = [low, high]"),
        ("epsilon = 1.0, bounds = { spend = [100, 0] }", budget,
         "c.toml: table 'audience', column 'spend': differential_privacy.bounds: low is above high"),
        ("epsilon = 1.0, bounds = { spend = [0, 100], segment = [0, 1] }", budget,
         "c.toml: table 'audience', column 'segment': differential_privacy.bounds names a column that is not a measure"),
        ("epsilon = 1.0, bounds = { spend = [0, 100] }, public_keys = { spend = [\"a\"] }", budget,
         "c.toml: table 'audience', column 'spend': differential_privacy.public_keys names a column that is not a dimension"),
        ("epsilon = 1.0, bounds = { spend = [0, 100] }, public_keys = { segment = [] }", budget,
         "c.toml: table 'audience', column 'segment': differential_privacy.public_keys must list between 1 and 10000 keys"),
        ("epsilon = 1.0, delta = 0.5, bounds = { spend = [0, 100] }", budget,
         "c.toml: table 'audience': differential_privacy.delta must be at least 0 and below 0.01"),
        ("epsilon = 1.0, max_rows_per_identity = 0, bounds = { spend = [0, 100] }", budget,
         "c.toml: table 'audience': differential_privacy.max_rows_per_identity must be between 1 and 1000000"),
        ("epsilon = 1.0, bounds = { spend = [0, 100] }, public_keys = { segment = [\"a\", \"b\", \"a\"] }", budget,
         "c.toml: table 'audience', column 'segment': differential_privacy.public_keys lists a key twice"),
        (ok_rule, "",
         "c.toml: table 'audience': the rule uses differential_privacy but the collaboration has no [privacy] budget"),
        (ok_rule, "[privacy]\nepsilon = -1.0\n",
         "c.toml: privacy.epsilon must be between 0 and 1000000"),
        (ok_rule, "[privacy]\nepsilon = 3.0\nrefresh_days = 0\n",
         "c.toml: privacy.refresh_days must be at least 1"),
        (ok_rule, "[privacy]\nepsilon = 3.0\nanalysts = [{ name = \"nobody\", epsilon = 1.0 }]\n",
         "c.toml: privacy.analysts: 'nobody' is not a declared member"),
    ];
    for (rule, privacy, want) in cases {
        let got = dp(rule, privacy);
        assert!(got.iter().any(|g| g == want), "want {want:?}, got {got:?}");
    }
    let got = dp("epsilon = 1.0, colour = 1", budget);
    assert!(got[0].contains("unknown field `colour`"), "{got:?}");
}

#[test]
fn bad_consent_sources_are_named() {
    let with = |purposes: &str, consent: &str| {
        let text = GOOD
            .replace(
                "secret_file = \"collaboration.key\"",
                &format!("secret_file = \"collaboration.key\"\npurposes = {purposes}"),
            )
            .replace(
                "name = \"audience_ds\"\nowner = \"publisher\"",
                &format!("name = \"audience_ds\"\nowner = \"publisher\"\nconsent = {consent}"),
            );
        errors(&text)
    };
    assert!(with(
        "[\"measurement\"]",
        "{ measurement = { column = \"consent\" } }"
    )
    .is_empty());
    let cases = [
        ("[\"measurement\"]", "{ activation = { column = \"consent\" } }",
         "c.toml: dataset 'audience_ds': consent is given for purpose 'activation', which the collaboration does not declare"),
        ("[\"measurement\"]", "{ measurement = { column = \"consent\", suppression_dataset = \"x\" } }",
         "c.toml: dataset 'audience_ds': consent for 'measurement' needs exactly one of column or suppression_dataset"),
        ("[\"measurement\"]", "{ measurement = { suppression_dataset = \"audience_ds\" } }",
         "c.toml: dataset 'audience_ds': consent for 'measurement': suppression_dataset 'audience_ds' is not another dataset of the same owner"),
        ("[\"Measure ment\"]", "{}",
         "c.toml: purpose 'Measure ment' must be a lowercase identifier"),
        ("[\"m\", \"m\"]", "{}", "c.toml: purpose 'm' declared twice"),
        ("[]\nretention_days = 0", "{}",
         "c.toml: collaboration.retention_days must be between 1 and 3650"),
        ("[]\nretention_days = 5000", "{}",
         "c.toml: collaboration.retention_days must be between 1 and 3650"),
    ];
    for (purposes, consent, want) in cases {
        let got = with(purposes, consent);
        assert!(got.iter().any(|g| g == want), "want {want:?}, got {got:?}");
    }
}

#[test]
fn the_privacy_budget_belongs_to_no_single_member() {
    let with = |eps: &str| {
        let text = GOOD.replace(
            "[[members]]\nname = \"publisher\"",
            &format!("[privacy]\nepsilon = {eps}\n\n[[members]]\nname = \"publisher\""),
        );
        Collaboration::from_toml(&text, "c.toml").expect("valid")
    };
    let (small, large) = (with("1.0"), with("100.0"));
    assert_eq!(
        small.changes_beyond(&large, "advertiser"),
        vec!["the privacy budget".to_string()]
    );
    assert!(small.changes_beyond(&with("1.0"), "advertiser").is_empty());
}

#[test]
fn custom_rules_templates_and_approvals_are_checked_by_name() {
    let custom = |rule: &str| {
        GOOD.replace(
            "rule = { type = \"aggregation\", min_distinct_identities = 50 }",
            rule,
        )
    };
    let got = errors(&custom(
        "rule = { type = \"custom\", min_distinct_identities = 50 }",
    ));
    assert_eq!(
        got,
        vec!["c.toml: table 'audience': custom rule must set templates_only, name its analysts, or both"]
    );
    let got = errors(&custom(
        "rule = { type = \"custom\", min_distinct_identities = 1, analysts = [\"publisher\"] }",
    ));
    assert!(
        got.iter()
            .any(|g| g.contains("min_distinct_identities must be at least 2")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|g| g.contains("analyst 'publisher' is not a member with the 'query' ability")),
        "{got:?}"
    );
    let ok =
        custom("rule = { type = \"custom\", min_distinct_identities = 50, templates_only = true }");
    let c = Collaboration::from_toml(&ok, "c.toml").expect("valid");
    let rule = &c.table("audience").expect("table").rule;
    assert!(rule.admits("advertiser", true).is_ok());
    assert!(rule.admits("advertiser", false).is_err());
    assert_eq!(rule.kind(), RuleKind::Custom);

    // Templates: an undeclared purpose, a duplicate; approvals: a
    // stranger, a malformed hash, a hash twice.
    let h = "ab".repeat(32);
    let text = format!(
        "{ok}\n[[templates]]\nname = \"t\"\npurpose = \"resale\"\nsql = \"SELECT 1\"\n\n[[templates]]\nname = \"t\"\npurpose = \"resale\"\nsql = \"SELECT 2\"\n\n[approvals]\nstranger = []\npublisher = [\"XYZ\", \"{h}\", \"{h}\"]\n"
    );
    let got = errors(&text);
    for want in [
        "template 't' declared twice",
        "template 't': purpose 'resale' is not one of the collaboration's purposes",
        "approvals are given for 'stranger', who is not a member",
        "approvals of 'publisher': an approval must be a template hash",
        "approvals of 'publisher': a template hash is listed twice",
    ] {
        assert!(got.iter().any(|g| g.contains(want)), "{want}: {got:?}");
    }
    // A member's approvals are its own.
    let with = |approvals: &str| {
        Collaboration::from_toml(&format!("{ok}\n[approvals]\n{approvals}\n"), "c.toml")
            .expect("valid")
    };
    let (before, after) = (
        with("advertiser = []"),
        with(&format!("publisher = [\"{h}\"]")),
    );
    assert_eq!(
        before.changes_beyond(&after, "advertiser"),
        vec!["the datasets, tables and approvals of 'publisher'".to_string()]
    );
    assert!(before.changes_beyond(&after, "publisher").is_empty());
}

#[test]
fn schema_contract_errors_are_named() {
    let text = GOOD.replace(
        "rule = { type = \"aggregation\", min_distinct_identities = 50 }",
        "source_columns = { email = \"EMAIL\", segment = \"EMAIL\", colour = \"C\" }\nrule = { type = \"aggregation\", min_distinct_identities = 50 }",
    ) + "\n[schema.keys.phone]\ntype = \"int\"\nnormalize = [\"e164\"]\n\n[schema.keys.region]\ntype = \"string\"\n\n[schema.dimensions.region]\ntype = \"string\"\n";
    let got = errors(&text);
    for want in [
        "schema: 'phone': normalize applies to strings only",
        "schema: 'region' is declared as both a key and a dimension",
        "table 'audience', column 'email': a join column must be one of the schema's keys",
        "table 'audience', column 'region': a schema key cannot be a dimension",
        "table 'audience', column 'colour': source_columns names a column the table does not configure",
        "source_columns maps two columns to the same dataset column",
    ] {
        assert!(got.iter().any(|g| g.contains(want)), "{want}: {got:?}");
    }
    let unknown = errors(
        &(GOOD.to_string()
            + "\n[schema.keys.email]\ntype = \"string\"\nnormalize = [\"soundex\"]\n"),
    );
    assert!(
        unknown[0].contains("unknown variant `soundex`"),
        "{unknown:?}"
    );
}

#[test]
fn syntax_and_unknown_fields_are_errors() {
    let got = errors("[collaboration\nname=");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("c.toml: not a valid collaboration file"),
        "{got:?}"
    );
    let ds = "name = \"audience_ds\"\nowner = \"publisher\"";
    let got = errors(&GOOD.replace(ds, &format!("{ds}\ncolour = 1")));
    assert!(got[0].contains("unknown field `colour`"), "{got:?}");
}

#[test]
fn a_location_in_the_shared_file_is_refused_and_points_to_the_catalog() {
    // A path or format in the collaboration file would show the owner's
    // storage to every member and the hub: it belongs in the catalog.
    let ds = "name = \"audience_ds\"\nowner = \"publisher\"";
    for extra in [
        "path = \"audience.parquet\"",
        "format = \"parquet\"",
        "path = \"s3://bucket/audience/\"\nformat = \"parquet\"",
    ] {
        let got = errors(&GOOD.replace(ds, &format!("{ds}\n{extra}")));
        assert!(!got.is_empty(), "{extra}");
        for e in &got {
            assert!(
                e.contains("dataset 'audience_ds'")
                    && e.contains("stays on its owner's node")
                    && e.contains("[datasets.audience_ds]"),
                "{e}"
            );
            assert!(
                !e.contains("bucket") && !e.contains("audience.parquet"),
                "{e}"
            );
        }
    }
}

#[test]
fn measure_conflicts_and_list_rules() {
    let text = GOOD.replace(
        "rule = { type = \"aggregation\", min_distinct_identities = 50 }",
        "measures = { segment = [\"sum\"], spend = [] }\nrule = { type = \"list\", list_columns = [\"age\"] }",
    );
    let got = errors(&text);
    assert!(
        got.iter()
            .any(|g| g.contains("column 'segment': conflicting roles: a measure")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|g| g.contains("column 'spend': measure allows no aggregate function")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|g| g.contains("column 'age': list column must be a dimension")),
        "{got:?}"
    );
}
